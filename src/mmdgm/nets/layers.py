"""Shared building blocks."""

from __future__ import annotations

import torch
from torch import Tensor, nn

ACTIVATIONS = {"relu": nn.ReLU, "elu": nn.ELU, "softplus": nn.Softplus, "leaky_relu": nn.LeakyReLU}


def activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; known: {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def mlp(sizes: list[int], act: str = "relu", final_act: bool = False) -> nn.Sequential:
    """Linear layers of the given sizes with `act` between them (and after the last if asked)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2 or final_act:
            layers.append(activation(act))
    return nn.Sequential(*layers)


class LeadingDims(nn.Module):
    """Applies a module on (N, D) to inputs (..., D), restoring the leading dimensions."""

    def __init__(self, body: nn.Module, out_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.body = body
        self.out_shape = tuple(out_shape)

    def forward(self, z: Tensor) -> Tensor:
        lead = z.shape[:-1]
        out = self.body(z.reshape(-1, z.shape[-1]))
        return out.reshape(*lead, *self.out_shape)


class ClampedSigmoid(nn.Module):
    """sigmoid clamped to [eps, 1 - eps] (MMVAE's image decoders)."""

    def __init__(self, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return torch.sigmoid(x).clamp(self.eps, 1 - self.eps)
