"""Modality specifications: every modality is named, never positional."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

KINDS = ("image", "vector", "text")


@dataclass(frozen=True)
class Modality:
    """What a model needs to know about one modality.

    Attributes:
        name: the key of this modality in every batch.
        shape: shape of one sample, e.g. (1, 28, 28) or (3, 32, 32).
        kind: "image", "vector" or "text".
        likelihood: name of the decoder's output distribution (see `mmdgm.distributions`).
        llik_scale: factor on log p(x_m | z) (MMVAE uses 3072/784 for MNIST).
        encoder / decoder: network names in `mmdgm.nets.NETWORKS`.
        likelihood_scale: fixed scale of the output distribution (0.75 in MMVAE).
        net_options: keyword options passed to both networks (e.g. hidden sizes).
        encoder_options / decoder_options: options of one network, merged over `net_options`.
    """

    name: str
    shape: tuple[int, ...]
    kind: str = "image"
    likelihood: str = "laplace"
    llik_scale: float = 1.0
    encoder: str = "mlp"
    decoder: str = "mlp"
    likelihood_scale: float = 0.75
    net_options: dict[str, Any] = field(default_factory=dict)
    encoder_options: dict[str, Any] = field(default_factory=dict)
    decoder_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ValueError(f"modality name {self.name!r} must be a Python identifier")
        if self.kind not in KINDS:
            raise ValueError(f"modality {self.name!r}: kind {self.kind!r} is not one of {KINDS}")
        if not self.shape or any(int(s) <= 0 for s in self.shape):
            raise ValueError(f"modality {self.name!r}: shape {self.shape!r} must be positive")
        if self.likelihood_scale <= 0 or self.llik_scale <= 0:
            raise ValueError(f"modality {self.name!r}: likelihood scales must be positive")
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))

    @property
    def encoder_kwargs(self) -> dict[str, Any]:
        """Keyword options of the encoder network: `net_options` updated by `encoder_options`."""
        return {**self.net_options, **self.encoder_options}

    @property
    def decoder_kwargs(self) -> dict[str, Any]:
        """Keyword options of the decoder network: `net_options` updated by `decoder_options`."""
        return {**self.net_options, **self.decoder_options}

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n
