"""Encoder and decoder networks, registered by name."""

from mmdgm.nets import conv, mlp, sentence, text  # noqa: F401  (registration)
from mmdgm.nets.registry import DECODERS, ENCODERS

__all__ = ["DECODERS", "ENCODERS"]
