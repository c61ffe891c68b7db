"""SVHN cropped digits from `root/svhn/{train,test}_32x32.mat`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io
import torch

from mmdgm.data.base import MultimodalDataset
from mmdgm.data.errors import DataFileError, MissingDataError
from mmdgm.data.mnist import check_split
from mmdgm.data.registry import DATASETS


def read_svhn_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) int64 in 0..9 from an SVHN .mat file.

    SVHN stores X as (32, 32, 3, N) and labels 1..10, where 10 means the digit 0.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        mat = scipy.io.loadmat(path, variable_names=["X", "y"])
    except Exception as e:
        raise DataFileError(f"{path}: not a readable .mat file ({type(e).__name__}: {e})") from e
    if "X" not in mat or "y" not in mat:
        raise DataFileError(
            f"{path}: expected variables 'X' and 'y', "
            f"found {sorted(k for k in mat if not k.startswith('__'))}"
        )
    x, y = mat["X"], mat["y"]
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        raise DataFileError(f"{path}: X must be uint8 (32, 32, 3, N), got {x.dtype} {x.shape}")
    y = np.asarray(y).reshape(-1)
    if y.shape != (x.shape[3],):
        raise DataFileError(f"{path}: {y.size} labels for {x.shape[3]} images")
    if y.size and (y.min() < 1 or y.max() > 10):
        raise DataFileError(f"{path}: labels must lie in 1..10, found {y.min()}..{y.max()}")
    images = np.ascontiguousarray(x.transpose(3, 2, 0, 1))
    return images, (y.astype(np.int64) % 10)


@DATASETS.register("svhn")
def build(split: str, root: Path, seed: int = 0) -> MultimodalDataset:
    """Real SVHN: modality "svhn" of shape (3, 32, 32). `seed` is unused (no randomness)."""
    check_split(split)
    path = Path(root) / "svhn" / f"{split}_32x32.mat"
    if not path.is_file():
        raise MissingDataError("svhn", [path.name], str(path.parent))
    images, labels = read_svhn_mat(path)
    return MultimodalDataset(
        {"svhn": torch.from_numpy(images)}, torch.from_numpy(labels), name="svhn"
    )
