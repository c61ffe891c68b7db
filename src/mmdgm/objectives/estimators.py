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


def iwae_stl(lw: Tensor, strata_mask: Tensor | None = None) -> Tensor:
    """'Sticking the landing' IWAE surrogate (Roeder et al. 2017; Tucker et al. 2019 §2):
    sum_k w~_k lw_k per stratum, w~ = softmax_k(lw) without gradient.

    With `lw` computed with the encoder's parameters detached in log q, decoders and prior
    get the IWAE gradient sum_k w~_k dlw_k, and encoders only the path gradient
    sum_k w~_k (dlw_k/dz)(dz_k/dphi): the score term is dropped, which is unbiased for K = 1
    and biased for K > 1. This is the gradient the official MMVAE code trains with in its
    `m_dreg_looser` objective (its DReG hook sits on a tensor outside the loss graph), so
    every published MMVAE number was produced with it. The value is not the bound.
    """
    with torch.no_grad():
        w = torch.softmax(lw, dim=1)
    return stratum_mean((w * lw).sum(1), strata_mask)


def dreg(lw: Tensor, z: Tensor, strata_mask: Tensor | None = None) -> Tensor:
    """Doubly reparameterised IWAE surrogate (Tucker et al. 2019, eq. 5; MMVAE App. C).

    Requirements on the caller: `lw` was computed from the reparameterised samples `z`
    (shape (S, K, B, ...)) with the *encoder's* distribution parameters detached in
    log q(z | x), so that the encoder receives gradient only through z.

    With normalised weights w~ = softmax_k(lw) (no gradient), the returned surrogate is
    sum_k w~_k lw_k, and a hook on z multiplies the gradient reaching z by w~_k. Hence
    the decoder and prior get sum_k w~_k d lw_k (the IWAE gradient) and the encoder
    gets sum_k w~_k^2 (d lw_k / d z_k)(d z_k / d phi) (the DReG gradient). The value
    returned is not the bound; report `iwae(lw.detach())` for that. Each call adds a hook:
    call it once per graph. For a mixture proposal shared across strata (MMVAE) this rule is
    biased when K > 1; use `dreg_mixture` there.
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


def responsibilities(log_q_components: Tensor, strata_mask: Tensor | None) -> Tensor:
    """log r_m(z_jk) = log q_m - log sum_{observed m'} q_m', shape (S, S, K, B)."""
    S, _, _, B = log_q_components.shape
    mask = torch.ones(S, B, dtype=torch.bool, device=log_q_components.device) if strata_mask is None else strata_mask
    log_r = torch.where(mask[:, None, None, :], log_q_components, torch.full_like(log_q_components, -math.inf))
    return log_r - torch.logsumexp(log_r, 0, keepdim=True)


def mixture_weights(lw: Tensor, log_r: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """`dreg_mixture`'s weights from detached (S, K, B) log-weights and (S, S, K, B) log
    responsibilities: w~ (S, K, B), F [m, j, k, b] and log(c / w~) (S, K, B), the last
    computed in log space: logsumexp_m [log r_m + log(1 - F_m) + log(F_m / w~)]."""
    S, K, B = lw.shape
    lse = torch.logsumexp(lw, 1)
    w = torch.exp(lw - lse[:, None])
    others = torch.eye(K, dtype=torch.bool, device=lw.device)[None, :, :, None]
    slots = lw[:, None, :, :].expand(S, K, K, B)
    log_rest = torch.logsumexp(slots.masked_fill(others, -math.inf), 2)  # [m, k]
    log_denominator = torch.logaddexp(log_rest[:, None], lw[None])  # [m, j, k]
    F = torch.exp(lw[None] - log_denominator)
    log_c_over_w = torch.logsumexp(log_r + (log_rest[:, None] - log_denominator) + (lse[None, :, None] - log_denominator), 0)
    return w, F, log_c_over_w


def dreg_mixture(
    lw: Tensor, z: Tensor, log_q_components: Tensor, strata_mask: Tensor | None = None
) -> Tensor:
    """DReG for MMVAE's stratified mixture bound (eq. 3), unbiased for every K (see Precision).

    Stratum s draws z_sk ~ q_s but weighs against the mixture q_mix = (1/S) sum_m q_m.
    The score term -sum_k w~_sk d/dphi log q_mix(z_sk) is then not the one Tucker et al.'s
    identity removes (that needs the score of the sampling density q_s), so `dreg` alone is
    biased for K > 1. Writing d log q_mix = sum_j r_j d log q_j with responsibilities
    r_j = q_j / (S q_mix) and using q_m r_j = q_j r_m, the score term of stratum m, slot k,
    becomes an expectation under q_j, reparameterised with the sample z_jk (independent of
    stratum m's other samples). The encoder gradient of stratum j is then
        sum_k [ (w~_jk - c_jk) dlw/dz - sum_m F_mk(z_jk) dr_m/dz ] dz_jk/dphi_j,
        F_mk(z) = e^lw(z) / (e^lw(z) + sum_{k' != k} e^lw(z_mk')),  c_jk = sum_m F(1 - F) r_m,
    evaluated at z = z_jk. With S = 1 it is Tucker et al.'s w~^2 rule; with K = 1 it is the
    path-only ("sticking the landing") gradient, which is unbiased there.

    Args:
        lw: (S, K, B) log-weights computed from `z` with detached encoder parameters.
        z: (S, K, B, D) the tensor `lw` was computed from; a hook rescales its gradient.
        log_q_components: (S, S, K, B), entry [m, j, k, b] = log q_m(z_jkb) with detached
            encoder parameters, computed from the same samples through a *different* tensor
            than `z` (e.g. the tensor `z` is a view of), so that its gradient is not rescaled.
        strata_mask: (S, B) observed strata; responsibilities run over observed ones only.
    Returns (B,) whose value is sum_k w~ lw (as `dreg`) and whose gradient is the above.

    Precision: the hook multiplies the w~ dlw/dz that reaches z by (w~ - c)/w~, with c/w~
    computed in log space (finite whatever w~). The result is exact to rounding wherever w~
    is a normal float (lw within ~87 nats of its stratum's log-sum-exp in float32, ~708 in
    float64), loses precision gradually where w~ is subnormal, and drops the -c dlw/dz term
    of a sample whose w~ is exactly 0 (more than ~103 / ~745 nats below). How often that
    happens in training is measured by `benchmarks/dreg_precision.py`.
    """
    S, K, B = lw.shape
    if log_q_components.shape != (S, S, K, B):
        raise ValueError(f"log_q_components must have shape {(S, S, K, B)}, got {tuple(log_q_components.shape)}")
    if not z.requires_grad:
        raise ValueError("dreg_mixture needs reparameterised samples z that require grad")
    log_r = responsibilities(log_q_components, strata_mask)
    with torch.no_grad():
        w, F, log_c_over_w = mixture_weights(lw.detach(), log_r.detach())
        # clamped (half < finfo.max / e, never inf) only where w~ is exactly 0, so that 0 * half stays 0
        half = torch.exp(log_c_over_w.clamp(max=2 * (math.log(torch.finfo(lw.dtype).max) - 1)) / 2)
    extra = (None,) * (z.dim() - lw.dim())
    z.register_hook(lambda grad: grad - (grad * half[(...,) + extra]) * half[(...,) + extra])
    score = (F * torch.exp(log_r)).sum(0)
    per_sample = w * lw - (score - score.detach())
    return stratum_mean(per_sample.sum(1), strata_mask)


ESTIMATORS = {
    "elbo": elbo, "iwae": iwae, "iwae_stl": iwae_stl, "dreg": dreg, "dreg_mixture": dreg_mixture, "cubo": cubo,
}
