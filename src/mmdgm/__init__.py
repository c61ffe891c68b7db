"""mmdgm: multimodal deep generative models."""

from mmdgm.batch import Batch
from mmdgm.modalities import Modality

__all__ = ["Batch", "Modality"]
__version__ = "0.1.0"
