"""Multimodal generative models, registered by name in `MODELS`."""

from mmdgm.models import mmvae  # noqa: F401  (registration)
from mmdgm.models.base import MODELS, ModelOutput, MultimodalVAE

__all__ = ["MODELS", "ModelOutput", "MultimodalVAE"]
