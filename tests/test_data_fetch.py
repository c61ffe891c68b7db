import hashlib
import io

import pytest

from mmdgm.data import fetch
from mmdgm.data.errors import DataFileError, FetchError


def test_download_file_url(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"digits" * 1000)
    dest = tmp_path / "out" / "file.bin"
    fetch.download(src.as_uri(), dest, hashlib.md5(src.read_bytes()).hexdigest())
    assert dest.read_bytes() == src.read_bytes()
    assert [p.name for p in dest.parent.iterdir()] == ["file.bin"]


def test_checksum_mismatch_leaves_nothing(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"corrupted")
    out = tmp_path / "out"
    with pytest.raises(DataFileError, match="checksum mismatch"):
        fetch.download(src.as_uri(), out / "file.bin", "0" * 32)
    assert list(out.iterdir()) == []


class _Response(io.BytesIO):
    headers: dict = {}


def test_interrupted_download_leaves_nothing(tmp_path):
    class Broken(_Response):
        def read(self, size=-1):
            raise ConnectionResetError("connection reset")

    with pytest.raises(ConnectionResetError):
        fetch.download(
            "https://example.invalid/x", tmp_path / "x", "0" * 32, opener=lambda url: Broken()
        )
    assert list(tmp_path.iterdir()) == []


def test_mnist_urls_fall_back_and_fail_cleanly(tmp_path):
    calls = []

    def opener(url):
        calls.append(url)
        return _Response(b"wrong bytes")

    with pytest.raises(FetchError, match="checksum mismatch"):
        fetch.mnist_from_urls(tmp_path, opener=opener, bases=("a/", "b/"))
    assert calls == ["a/train-images-idx3-ubyte.gz", "b/train-images-idx3-ubyte.gz"]
    assert list(tmp_path.iterdir()) == []


def test_present_files_are_kept(tmp_path, monkeypatch):
    files = (fetch.RemoteFile("a.bin", hashlib.md5(b"a").hexdigest()),)
    (tmp_path / "svhn").mkdir()
    (tmp_path / "svhn" / "a.bin").write_bytes(b"a")
    monkeypatch.setattr(fetch, "SVHN_FILES", files)
    monkeypatch.setattr(fetch, "svhn_from_urls", lambda directory: pytest.fail("tried to download"))
    assert fetch.get("svhn", tmp_path) == [tmp_path / "svhn" / "a.bin"]


def test_unknown_dataset(tmp_path):
    with pytest.raises(ValueError, match="mnist, svhn"):
        fetch.get("cub", tmp_path)
