"""The dataset registry: builders `(split, root, **options) -> MultimodalDataset`."""

from mmdgm.registry import Registry

DATASETS: Registry = Registry("dataset")
