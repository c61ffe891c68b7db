"""Datasets: real loaders, procedural stand-ins, pairings and masks."""

from mmdgm.data import (  # noqa: F401  (register builders)
    arrays, cub, mnist, mnist_text, multimnist, paired, procedural, svhn, synthetic_captions, threeview, twoview,
)
from mmdgm.data.base import MultimodalDataset
from mmdgm.data.registry import DATASETS

__all__ = ["DATASETS", "MultimodalDataset"]
