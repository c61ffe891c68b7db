"""Product of Gaussian experts (Wu & Goodman 2018, §2; Hinton 2002).

A product of diagonal Gaussians N(mu_i, var_i) is, once normalised, the Gaussian with
precision T = sum_i T_i (T_i = 1 / var_i) and mean mu = sum_i T_i mu_i / T. The weights
T_i / T are a softmax of the log-precisions, so the product is computed from
log-precisions with `logsumexp`: experts whose variances differ by many orders of
magnitude neither overflow nor lose the small ones.

Missing experts are removed with `torch.where` (never multiplied by zero), so their
parameters receive exactly zero gradient even when they hold NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from mmdgm.distributions.base import Distribution, Normal


def gaussian_or_error(expert: Distribution, role: str = "expert") -> Normal:
    """`expert` itself if it is Gaussian; a TypeError naming the problem otherwise."""
    if not isinstance(expert, Normal):
        raise TypeError(
            f"a product of experts needs Gaussian (Normal) experts, got a {type(expert).__name__} {role}: "
            f"the product of {type(expert).__name__} densities has no closed form; use posterior 'normal'"
        )
    return expert


def product_of_gaussians(
    locs: Tensor,
    scales: Tensor,
    mask: Tensor | None = None,
    prior_expert: bool | Normal = True,
) -> Normal:
    """The normalised product of M diagonal Gaussian experts, per sample.

    Args:
        locs, scales: (M, B, D) expert means and standard deviations (scales broadcast).
        mask: (M, B) boolean, True where expert m is observed for sample b (None: all).
        prior_expert: True adds the N(0, I) expert, a `Normal` with parameters
            broadcastable to (B, D) adds that expert, False adds none. The prior expert is
            always observed.
    Returns `Normal` with parameters (B, D): var = 1 / sum_i T_i, loc = var * sum_i T_i mu_i
    over the observed experts (and the prior expert).
    Raises ValueError if a sample has no expert at all (no observed one and no prior).
    """
    if locs.dim() != 3:
        raise ValueError(f"product_of_gaussians expects (M, B, D) expert parameters, got shape {tuple(locs.shape)}")
    scales = scales.expand_as(locs)
    if mask is not None:
        if mask.shape != locs.shape[:2]:
            raise ValueError(f"expert mask must have shape {tuple(locs.shape[:2])}, got {tuple(mask.shape)}")
        observed = mask[..., None]
        # clean absent experts before any arithmetic: a NaN there would otherwise turn the
        # zero gradient of the unselected branch into NaN (0 / NaN)
        scales = torch.where(observed, scales, torch.ones_like(scales))
        locs = torch.where(observed, locs, torch.zeros_like(locs))
    log_precision = -2 * scales.log()
    if mask is not None:
        log_precision = torch.where(observed, log_precision, torch.full_like(log_precision, -math.inf))
    if prior_expert is not False:
        prior = Normal(torch.zeros_like(locs[0]), torch.ones_like(locs[0])) if prior_expert is True else prior_expert
        prior = gaussian_or_error(prior, "prior expert")
        prior_loc = prior.loc.expand_as(locs[0])
        prior_log_precision = (-2 * torch.as_tensor(prior.scale, dtype=locs.dtype, device=locs.device).log()).expand_as(locs[0])
        locs = torch.cat([locs, prior_loc[None]])
        log_precision = torch.cat([log_precision, prior_log_precision[None]])
    elif mask is not None and not mask.any(0).all():
        rows = torch.nonzero(~mask.any(0)).flatten()[:5].tolist()
        raise ValueError(f"samples {rows} have no observed expert and no prior expert: their product is undefined")
    log_total = torch.logsumexp(log_precision, 0)
    weights = torch.exp(log_precision - log_total)
    return Normal((weights * locs).sum(0), torch.exp(-0.5 * log_total))


def product_of_experts(
    experts: Sequence[Distribution], mask: Tensor | None = None, prior_expert: bool | Normal = True
) -> Normal:
    """`product_of_gaussians` over a list of (B, D) experts; TypeError for non-Gaussian ones."""
    gaussians = [gaussian_or_error(e) for e in experts]
    locs = torch.stack([g.loc for g in gaussians])
    scales = torch.stack([g._scale_tensor() for g in gaussians])
    return product_of_gaussians(locs, scales, mask, prior_expert)
