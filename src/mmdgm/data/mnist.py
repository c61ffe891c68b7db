"""MNIST from the four standard IDX files in `root/mnist` (plain or .gz)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mmdgm.data.base import MultimodalDataset
from mmdgm.data.errors import DataFileError, MissingDataError
from mmdgm.data.idx import read_idx
from mmdgm.data.registry import DATASETS

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


SPLITS = ("train", "test")
GENERATED_SPLITS = ("train", "val", "test")  # procedural datasets draw a validation split too


def check_split(split: str, splits: tuple[str, ...] = SPLITS) -> None:
    """`split` must be one of `splits`; a 'val' that a dataset cannot make names those that can."""
    if split not in splits:
        extra = ("; a 'val' split is drawn by the procedural datasets (synthetic-captions, synthetic-*-digits) "
                 "and held out by `arrays` (val_fraction)" if split == "val" else "")
        raise ValueError(f"unknown split {split!r}; this dataset has {', '.join(map(repr, splits))}{extra}")


def find_file(directory: Path, stem: str) -> Path | None:
    """`directory/stem` or `directory/stem.gz`, whichever exists."""
    for path in (directory / stem, directory / f"{stem}.gz"):
        if path.is_file():
            return path
    return None


def load_mnist(split: str, root: Path) -> tuple[np.ndarray, np.ndarray]:
    """MNIST images (N, 28, 28) uint8 and labels (N,) uint8 of `split` under `root/mnist`."""
    check_split(split)
    directory = Path(root) / "mnist"
    paths = [find_file(directory, stem) for stem in FILES[split]]
    missing = [stem for stem, p in zip(FILES[split], paths) if p is None]
    if missing:
        raise MissingDataError("mnist", missing, str(directory))
    images, labels = read_idx(paths[0]), read_idx(paths[1])
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataFileError(
            f"{paths[0]}: expected uint8 (N, 28, 28), got {images.dtype} {images.shape}"
        )
    if labels.dtype != np.uint8 or labels.shape != images.shape[:1]:
        raise DataFileError(
            f"{paths[1]}: expected uint8 ({images.shape[0]},) labels, "
            f"got {labels.dtype} {labels.shape}"
        )
    if labels.size and labels.max() > 9:
        raise DataFileError(f"{paths[1]}: label {labels.max()} is not a digit")
    return images, labels


@DATASETS.register("mnist")
def build(split: str, root: Path, seed: int = 0) -> MultimodalDataset:
    """Real MNIST: modality "mnist" of shape (1, 28, 28). `seed` is unused (no randomness)."""
    images, labels = load_mnist(split, root)
    return MultimodalDataset(
        {"mnist": torch.from_numpy(images).unsqueeze(1)},
        torch.from_numpy(labels.astype(np.int64)),
        name="mnist",
    )
