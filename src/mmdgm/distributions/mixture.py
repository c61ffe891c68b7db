"""Uniform mixture of factorised experts over the observed components of each sample."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from mmdgm.distributions.base import Distribution


def absent_to_standard(expert: Distribution, present: Tensor) -> Distribution:
    """The expert with loc 0 and scale 1 in the rows where it is absent, so that no value of
    an absent row (even NaN) can reach a density, a sample or a gradient."""
    rows = present[:, None]
    loc = torch.where(rows, expert.loc, torch.zeros_like(expert.loc))
    scale = expert.scale
    if isinstance(scale, Tensor):
        scale = torch.where(rows, scale, torch.ones_like(scale))
    return type(expert)(loc, scale)


class MixtureOfExperts:
    """q(z | x) = (1 / |O_b|) sum_{m in O_b} q_m(z | x_m), O_b the observed experts of sample b.

    Args:
        experts: M distributions with parameters of shape (B, D).
        mask: (M, B) boolean presence of each expert for each sample (all True if None).
    """

    def __init__(self, experts: list[Distribution], mask: Tensor | None = None) -> None:
        b = experts[0].loc.shape[0]
        device = experts[0].loc.device
        self.mask = torch.ones(len(experts), b, dtype=torch.bool, device=device) if mask is None else mask
        if self.mask.shape != (len(experts), b):
            raise ValueError(f"mixture mask must have shape ({len(experts)}, {b})")
        if not self.mask.any(0).all():
            raise ValueError("every sample needs at least one observed expert")
        self.experts = [absent_to_standard(e, m) for e, m in zip(experts, self.mask)]

    @property
    def mean(self) -> Tensor:
        locs = torch.stack([e.mean for e in self.experts])
        w = self.mask[..., None]
        return torch.where(w, locs, torch.zeros_like(locs)).sum(0) / w.sum(0)

    def component_log_probs(self, z: Tensor) -> Tensor:
        """(M, *z.shape[:-1]) log-density of z (..., B, D) under each expert."""
        return torch.stack([e.log_prob(z).sum(-1) for e in self.experts])

    def log_prob(self, z: Tensor) -> Tensor:
        """log q(z | x) for z of shape (..., B, D); missing experts are left out."""
        lp = self.component_log_probs(z)
        mask = self.mask.view(self.mask.shape[0], *([1] * (lp.dim() - 2)), -1)
        lp = torch.where(mask, lp, torch.full_like(lp, -math.inf))
        return torch.logsumexp(lp, 0) - self.mask.sum(0).to(lp.dtype).log()

    def sample(self, sample_shape: tuple[int, ...] = ()) -> Tensor:
        """Draws (*sample_shape, B, D): an observed expert is picked uniformly per draw."""
        with torch.no_grad():
            draws = torch.stack([e.rsample(sample_shape) for e in self.experts])
            probs = self.mask.T.to(draws.dtype)
            n = math.prod(sample_shape) if sample_shape else 1
            pick = torch.multinomial(probs, n, replacement=True).T.reshape(*sample_shape, -1)
            return torch.gather(draws, 0, pick[None, ..., None].expand(1, *draws.shape[1:]))[0]
