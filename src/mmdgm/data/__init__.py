"""Datasets: real loaders, procedural stand-ins, pairings and masks."""

from mmdgm.data import arrays, mnist, multimnist, paired, procedural, svhn, twoview  # noqa: F401  (register builders)
from mmdgm.data.base import MultimodalDataset
from mmdgm.data.registry import DATASETS

__all__ = ["DATASETS", "MultimodalDataset"]
