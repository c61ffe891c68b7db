import numpy as np
import pytest
import scipy.io
import torch

from mmdgm.data import DATASETS
from mmdgm.data.errors import DataFileError, MissingDataError
from mmdgm.data.svhn import read_svhn_mat


def _write(path, n=12):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
    y = (np.arange(n) % 10 + 1).reshape(n, 1).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(path, {"X": x, "y": y})
    return x, y


def test_read_maps_layout_and_label_ten_to_zero(tmp_path):
    x, y = _write(tmp_path / "svhn" / "test_32x32.mat")
    images, labels = read_svhn_mat(tmp_path / "svhn" / "test_32x32.mat")
    assert images.shape == (12, 3, 32, 32) and images.dtype == np.uint8
    assert np.array_equal(images[5], x[..., 5].transpose(2, 0, 1))
    assert labels.tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2]


def test_builder(tmp_path):
    _write(tmp_path / "svhn" / "train_32x32.mat")
    ds = DATASETS.get("svhn")("train", tmp_path)
    assert ds.shapes == {"svhn": (3, 32, 32)} and len(ds) == 12
    assert ds.labels[9] == 0
    assert ds.batch(torch.arange(3)).data["svhn"].max() <= 1


def test_corrupt_file(tmp_path):
    path = tmp_path / "svhn" / "train_32x32.mat"
    _write(path)
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(DataFileError):
        read_svhn_mat(path)
    path.write_bytes(b"not a mat file at all" * 20)
    with pytest.raises(DataFileError):
        read_svhn_mat(path)


def test_bad_contents(tmp_path):
    path = tmp_path / "a.mat"
    scipy.io.savemat(path, {"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.array([[0], [3]])})
    with pytest.raises(DataFileError, match="1..10"):
        read_svhn_mat(path)
    scipy.io.savemat(path, {"X": np.zeros((28, 28, 2), np.uint8), "y": np.array([[1], [3]])})
    with pytest.raises(DataFileError, match="X must be"):
        read_svhn_mat(path)


def test_missing_names_fetch_command(tmp_path):
    with pytest.raises(MissingDataError, match="mmdgm data get svhn"):
        DATASETS.get("svhn")("test", tmp_path)
