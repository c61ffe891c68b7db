import gzip

import numpy as np
import pytest

from mmdgm.data import DATASETS
from mmdgm.data.errors import DataFileError, MissingDataError
from mmdgm.data.idx import read_idx, write_idx


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("dtype", ["u1", "i1", ">i2", ">i4", ">f4", ">f8"])
def test_round_trip(tmp_path, suffix, dtype):
    a = (np.arange(60) - 20).astype(dtype).reshape(3, 4, 5)
    path = write_idx(tmp_path / f"a.idx{suffix}", a)
    b = read_idx(path)
    assert b.shape == a.shape and np.array_equal(a, b)


def test_header_layout(tmp_path):
    raw = write_idx(tmp_path / "l", np.array([1, 2, 3], np.uint8)).read_bytes()
    assert raw == bytes([0, 0, 8, 1, 0, 0, 0, 3, 1, 2, 3])


def test_truncated_file(tmp_path):
    path = write_idx(tmp_path / "x", np.zeros((4, 28, 28), np.uint8))
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataFileError, match="truncated or corrupt"):
        read_idx(path)


def test_wrong_magic_and_dtype(tmp_path):
    path = tmp_path / "x"
    path.write_bytes(bytes([1, 0, 8, 1, 0, 0, 0, 1, 7]))
    with pytest.raises(DataFileError, match="magic"):
        read_idx(path)
    path.write_bytes(bytes([0, 0, 0x42, 1, 0, 0, 0, 1, 7]))
    with pytest.raises(DataFileError, match="dtype code"):
        read_idx(path)


def test_corrupt_gzip(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(bytes([0, 0, 8, 1, 0, 0, 0, 9]) + bytes(9))[:-6])
    with pytest.raises(DataFileError):
        read_idx(path)


def _write_mnist(root, split, n, gz):
    prefix = "train" if split == "train" else "t10k"
    rng = np.random.default_rng(0)
    suffix = ".gz" if gz else ""
    write_idx(
        root / "mnist" / f"{prefix}-images-idx3-ubyte{suffix}",
        rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
    )
    write_idx(
        root / "mnist" / f"{prefix}-labels-idx1-ubyte{suffix}", np.arange(n, dtype=np.uint8) % 10
    )


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_builder(tmp_path, gz):
    _write_mnist(tmp_path, "test", 30, gz)
    ds = DATASETS.get("mnist")("test", tmp_path)
    assert len(ds) == 30 and ds.shapes == {"mnist": (1, 28, 28)}
    batch = ds.batch(np.arange(4))
    assert 0 <= batch.data["mnist"].min() and batch.data["mnist"].max() <= 1
    assert batch.labels.tolist() == [0, 1, 2, 3]


def test_missing_mnist_names_the_fetch_command(tmp_path):
    with pytest.raises(MissingDataError, match="mmdgm data get mnist"):
        DATASETS.get("mnist")("train", tmp_path)


def test_mnist_label_count_mismatch(tmp_path):
    _write_mnist(tmp_path, "train", 10, False)
    write_idx(tmp_path / "mnist" / "train-labels-idx1-ubyte", np.zeros(9, np.uint8))
    with pytest.raises(DataFileError):
        DATASETS.get("mnist")("train", tmp_path)
