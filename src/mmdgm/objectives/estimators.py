"""Estimators as functions of log-weights.

A log-weight is lw = log p(x, z) - log q(z | x) for z ~ q(z | x). Every function takes
`lw` of shape (S, K, B): S strata (MMVAE's stratified sampling over modalities, eq. 3;
S = 1 for a single proposal), K samples per stratum and B data points, plus an optional
(S, B) boolean `strata_mask` that drops strata (a missing modality in MMVAE). The bound
of each data point is the average over its kept strata of the per-stratum estimate.
Functions return the per-data-point value, shape (B,).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def log_mean_exp(x: Tensor, dim: int) -> Tensor:
    """log(mean(exp(x))) along `dim`, computed stably."""
    return torch.logsumexp(x, dim=dim) - math.log(x.shape[dim])


def stratum_mean(values: Tensor, strata_mask: Tensor | None) -> Tensor:
    """Mean over the first (strata) dimension of (S, B) `values`, over kept strata only."""
    if strata_mask is None:
        return values.mean(0)
    kept = strata_mask.sum(0).clamp_min(1)
    return torch.where(strata_mask, values, torch.zeros_like(values)).sum(0) / kept


def elbo(lw: Tensor, strata_mask: Tensor | None = None) -> Tensor:
    """ELBO, MMVAE eq. (1): E_q[lw], averaged over the K samples."""
    return stratum_mean(lw.mean(1), strata_mask)


def iwae(lw: Tensor, strata_mask: Tensor | None = None) -> Tensor:
    """IWAE bound, MMVAE eq. (2) per stratum: log (1/K) sum_k exp lw_k.

    With S > 1 strata this is the stratified MoE bound of MMVAE eq. (3) (the "looser"
    one). The tight bound is `iwae(lw.reshape(1, S * K, B))`.
    """
    return stratum_mean(log_mean_exp(lw, 1), strata_mask)


def cubo(lw: Tensor, strata_mask: Tensor | None = None, n: float = 2.0) -> Tensor:
    """CUBO_n upper bound (Dieng et al. 2017; "Relating by contrasting" eq. 5):
    (1/n) log (1/K) sum_k exp(n lw_k). An upper bound on log p(x) in expectation only
    asymptotically in K (it is biased for finite K, but always >= the IWAE estimate).
    """
    return stratum_mean(log_mean_exp(n * lw, 1) / n, strata_mask)


def dreg(lw: Tensor, z: Tensor, strata_mask: Tensor | None = None) -> Tensor:
    """Doubly reparameterised IWAE surrogate (Tucker et al. 2019, eq. 5; MMVAE App. C).

    Requirements on the caller: `lw` was computed from the reparameterised samples `z`
    (shape (S, K, B, ...)) with the *encoder's* distribution parameters detached in
    log q(z | x), so that the encoder receives gradient only through z.

    With normalised weights w~ = softmax_k(lw) (no gradient), the returned surrogate is
    sum_k w~_k lw_k, and a hook on z multiplies the gradient reaching z by w~_k. Hence
    the decoder and prior get sum_k w~_k d lw_k (the IWAE gradient) and the encoder
    gets sum_k w~_k^2 (d lw_k / d z_k)(d z_k / d phi) (the DReG gradient). The value
    returned is not the bound; report `iwae(lw.detach())` for that.
    """
    if not z.requires_grad:
        raise ValueError("dreg needs reparameterised samples z that require grad")
    if lw.shape != z.shape[: lw.dim()]:
        raise ValueError(f"dreg: lw shape {tuple(lw.shape)} does not lead z shape {tuple(z.shape)}")
    with torch.no_grad():
        w = torch.softmax(lw, dim=1)
    extra = (None,) * (z.dim() - lw.dim())
    z.register_hook(lambda grad: grad * w[(...,) + extra])
    return stratum_mean((w * lw).sum(1), strata_mask)


ESTIMATORS = {"elbo": elbo, "iwae": iwae, "dreg": dreg, "cubo": cubo}
