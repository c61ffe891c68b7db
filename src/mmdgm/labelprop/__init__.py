"""Label propagation by thresholding a model's PMI, and the siamese baseline."""

from mmdgm.labelprop.pipeline import Plan, label_propagation

__all__ = ["Plan", "label_propagation"]
