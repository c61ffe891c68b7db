"""Discriminator networks of adversarial models, spectrally normalised throughout (Miyato
et al. 2018), with LeakyReLU(0.2) as in the MMALI authors' networks.

`X_FEATURES` maps a name to a builder (shape, features, hidden) -> network from an
observation of `shape` to a `features`-vector: "mlp" (flatten, one hidden layer of
`hidden` units, 400 in the authors' MNIST discriminator) or "conv" (4x4 stride-2
convolutions of width 32 for 32x32 images, the authors' SVHN discriminator; `hidden` unused).
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from mmdgm.registry import Registry

X_FEATURES: Registry = Registry("discriminator feature network")


def sn_linear(n_in: int, n_out: int) -> nn.Module:
    return spectral_norm(nn.Linear(n_in, n_out))


def leaky() -> nn.Module:
    return nn.LeakyReLU(0.2)


@X_FEATURES.register("mlp")
def mlp_features(shape: tuple[int, ...], features: int, hidden: int = 400) -> nn.Module:
    """Flatten -> SN-linear(hidden) -> SN-linear(features), LeakyReLU after each."""
    return nn.Sequential(nn.Flatten(), sn_linear(math.prod(shape), hidden), leaky(), sn_linear(hidden, features), leaky())


@X_FEATURES.register("conv")
def conv_features(shape: tuple[int, ...], features: int, hidden: int = 0, width: int = 32) -> nn.Module:
    """Three SN 4x4 stride-2 convolutions (width, 2 width, 4 width) and a 4x4 one to
    `features` (the authors' SVHN discriminator); needs 32x32 images."""
    if len(shape) != 3 or shape[1:] != (32, 32):
        raise ValueError(f"the conv discriminator needs (C, 32, 32) images, got shape {shape}")
    w = width
    return nn.Sequential(
        spectral_norm(nn.Conv2d(shape[0], w, 4, 2, 1)), leaky(),
        spectral_norm(nn.Conv2d(w, 2 * w, 4, 2, 1)), leaky(),
        spectral_norm(nn.Conv2d(2 * w, 4 * w, 4, 2, 1)), leaky(),
        spectral_norm(nn.Conv2d(4 * w, features, 4, 1, 0)), leaky(),
        nn.Flatten(),
    )


class XZDiscriminator(nn.Module):
    """Logits of a tuple (x_1..x_K, z): per-observation features and z features
    (SN-MLP 256-256), concatenated, then SN-MLP 1024-1024-`out_dim`. K = 1 for MMALI's
    per-modality discriminators, K = M for the joint-discriminator variant."""

    def __init__(
        self, shapes: list[tuple[int, ...]], latent_dim: int, out_dim: int, kinds: list[str], features: int = 256,
        hidden: int = 1024, x_hidden: int = 400,
    ) -> None:
        super().__init__()
        self.x_features = nn.ModuleList(
            [X_FEATURES.get(k)(s, features, x_hidden) for s, k in zip(shapes, kinds, strict=True)]
        )
        self.z_features = nn.Sequential(sn_linear(latent_dim, features), leaky(), sn_linear(features, features), leaky())
        self.head = nn.Sequential(
            sn_linear(features * (len(shapes) + 1), hidden), leaky(), sn_linear(hidden, hidden), leaky(),
            sn_linear(hidden, out_dim),
        )

    def forward(self, xs: list[Tensor], z: Tensor) -> Tensor:
        h = [f(x) for f, x in zip(self.x_features, xs, strict=True)]
        return self.head(torch.cat([*h, self.z_features(z)], -1))


class DotProductCritic(nn.Module):
    """T(x_1..x_M) = sum_{i<j} <f_i(x_i), f_j(x_j)>: the dependence critic of log
    q(X) / prod_m q(x_m) as a dot product of per-modality features (for M = 2 a single
    dot product)."""

    def __init__(self, shapes: list[tuple[int, ...]], kinds: list[str], features: int = 256, x_hidden: int = 400) -> None:
        super().__init__()
        if len(shapes) < 2:
            raise ValueError("a dependence critic needs at least two modalities")
        self.features = nn.ModuleList(
            [
                nn.Sequential(X_FEATURES.get(k)(s, features, x_hidden), sn_linear(features, features))
                for s, k in zip(shapes, kinds, strict=True)
            ]
        )

    def forward(self, xs: list[Tensor]) -> Tensor:
        h = [f(x) for f, x in zip(self.features, xs, strict=True)]
        return sum((a * b).sum(-1) for a, b in itertools.combinations(h, 2))
