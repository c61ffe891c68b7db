"""MLP encoders/decoders: the MMVAE MNIST networks and a generic vector network."""

from __future__ import annotations

import math

from torch import Tensor, nn

from mmdgm.nets.layers import ClampedSigmoid, LeadingDims, mlp
from mmdgm.nets.registry import DECODERS, ENCODERS

OUTPUTS = {"sigmoid": ClampedSigmoid, "identity": nn.Identity}


class MLPEncoder(nn.Module):
    """Flatten -> hidden layers (none: a linear encoder) -> two linear heads (loc, raw scale)."""

    def __init__(self, shape: tuple[int, ...], latent_dim: int, hidden: list[int], act: str) -> None:
        super().__init__()
        sizes = [math.prod(shape), *hidden]
        self.body = nn.Sequential(nn.Flatten(), mlp(sizes, act, final_act=True))
        self.loc = nn.Linear(sizes[-1], latent_dim)
        self.raw_scale = nn.Linear(sizes[-1], latent_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.body(x)
        return self.loc(h), self.raw_scale(h)


def mlp_decoder(shape: tuple[int, ...], latent_dim: int, hidden: list[int], act: str, output: str) -> nn.Module:
    if output not in OUTPUTS:
        raise ValueError(f"unknown decoder output {output!r}; known: {sorted(OUTPUTS)}")
    body = nn.Sequential(mlp([latent_dim, *hidden, math.prod(shape)], act), OUTPUTS[output]())
    return LeadingDims(body, shape)


@ENCODERS.register("mnist-mlp")
def mnist_encoder(shape: tuple[int, ...], latent_dim: int, hidden: int = 400) -> nn.Module:
    """MMVAE MNIST encoder: 784-400 (ReLU), then loc and scale heads."""
    return MLPEncoder(shape, latent_dim, [hidden], "relu")


@DECODERS.register("mnist-mlp")
def mnist_decoder(shape: tuple[int, ...], latent_dim: int, hidden: int = 400) -> nn.Module:
    """MMVAE MNIST decoder: D-400 (ReLU)-784, clamped sigmoid mean."""
    return mlp_decoder(shape, latent_dim, [hidden], "relu", "sigmoid")


@ENCODERS.register("mlp")
def generic_encoder(
    shape: tuple[int, ...], latent_dim: int, hidden: tuple[int, ...] = (512, 256), act: str = "relu"
) -> nn.Module:
    """Generic MLP encoder for vectors (e.g. CUB features: hidden=(1024, 512, 256), act=elu; hidden=() is linear)."""
    return MLPEncoder(shape, latent_dim, list(hidden), act)


@DECODERS.register("mlp")
def generic_decoder(
    shape: tuple[int, ...],
    latent_dim: int,
    hidden: tuple[int, ...] = (256, 512),
    act: str = "relu",
    output: str = "identity",
) -> nn.Module:
    """Generic MLP decoder (hidden=() is linear); `output` is "identity" or "sigmoid" (clamped)."""
    return mlp_decoder(shape, latent_dim, list(hidden), act, output)
