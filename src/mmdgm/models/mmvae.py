"""MMVAE: the mixture-of-experts multimodal VAE (Shi et al., NeurIPS 2019)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from mmdgm.batch import Batch
from mmdgm.distributions import MixtureOfExperts
from mmdgm.models.base import MODELS, ModelOutput, MultimodalVAE, at_least, pooled_bound
from mmdgm.objectives import dreg, dreg_mixture, elbo, iwae, iwae_stl
from mmdgm.registry import nearest


@dataclass
class StratifiedSample:
    """K draws from each observed expert and their log-weights.

    base: (M, K, B, D) reparameterised samples; z: a view of `base` that `lw` was
    computed from (DReG hooks it); lw: (M, K, B); mask: (M, B) observed strata;
    q: the mixture used as the density in `lw` (with detached parameters for DReG).
    """

    base: Tensor
    z: Tensor
    lw: Tensor
    mask: Tensor
    q: MixtureOfExperts


def tight(lw: Tensor, strata_mask: Tensor) -> tuple[Tensor, Tensor]:
    """Pool the (M, K, B) log-weights of the observed strata into one stratum (1, M*K, B).

    Missing strata get the most negative float (zero weight, finite products). Returns the
    pooled log-weights and the per-sample correction log(M / |O_b|) that turns a mean over
    M*K samples into a mean over the |O_b|*K observed ones.
    """
    m, k, b = lw.shape
    floor = torch.finfo(lw.dtype).min
    pooled = torch.where(strata_mask[:, None, :], lw, torch.full_like(lw, floor)).reshape(1, m * k, b)
    correction = math.log(m) - strata_mask.sum(0).to(lw.dtype).log()
    return pooled, correction


def tight_iwae(lw: Tensor, strata_mask: Tensor) -> Tensor:
    """IWAE over all observed samples pooled (the tight MoE bound), shape (B,)."""
    pooled, correction = tight(lw, strata_mask)
    return iwae(pooled) + correction


SURROGATES = {
    "dreg": lambda s: dreg_mixture(s.lw, s.z, s.q.component_log_probs(s.base), s.mask),
    "dreg_naive": lambda s: dreg(s.lw, s.z, s.mask),
    "stl_looser": lambda s: iwae_stl(s.lw, s.mask),
    "iwae": lambda s: iwae(s.lw, s.mask),
    "iwae_tight": lambda s: tight_iwae(s.lw, s.mask),
    "elbo": lambda s: elbo(s.lw, s.mask),
}
DETACHED_Q = ("dreg", "dreg_naive", "stl_looser")


@MODELS.register("mmvae")
class MMVAE(MultimodalVAE):
    """Mixture-of-experts posterior q(z | x_1:M) = (1/M) sum_m q(z | x_m) (paper §3).

    Every modality's K samples are decoded by every decoder. Log-weights of the samples
    of stratum r (paper eq. 3, official code):
        lw_r = log p(z) + sum_d s_d log p(x_d | z) - log (1/M) sum_m q(z | x_m),  z ~ q(z | x_r).
    Objectives (`objective`), all but the last two on the looser IWAE bound of eq. (3);
    they differ in the encoder gradient (docs/objectives.md compares them):
        "dreg"        DReG corrected for the mixture proposal (`dreg_mixture`): unbiased;
        "dreg_naive"  Tucker et al.'s per-stratum w~^2 rule, as the paper describes it;
                      biased for K > 1 under the stratified mixture;
        "stl_looser"  the w~-weighted path gradient without score term (`iwae_stl`): what
                      the official code's `m_dreg_looser` actually trains with, i.e. the
                      gradient behind every published MMVAE number; biased for K > 1;
        "iwae"        plain reparameterised gradients;
        "iwae_tight"  one IWAE over all M*K samples (the tight bound, used at test time);
        "elbo"        the stratified MoE ELBO (left side of the inequality after eq. 3).
    The default is `iwae`: it learned best in the estimator study at K=2 (docs/objectives.md);
    larger K is not yet measured. The paper configs use `stl_looser`, the published gradient.
    With partially observed samples the mixture, the strata and the likelihood terms run
    over the observed modalities only (a sample needs at least one).
    """

    def __init__(self, *args, K: int = 30, objective: str = "iwae", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if objective not in SURROGATES:
            raise ValueError(f"unknown MMVAE objective {objective!r}{nearest(objective, list(SURROGATES))}")
        at_least("K", K, 1)
        self.K = K
        self.objective = objective

    def encode(self, batch: Batch, modalities: list[str] | None = None) -> MixtureOfExperts:
        names = self.check_names(modalities)
        batch = batch.zero_missing()
        experts = [self.posterior(n, batch.data[n]) for n in names]
        mask = torch.stack([batch.mask[n] for n in names])
        return MixtureOfExperts(experts, mask)

    def stratified_sample(
        self, batch: Batch, K: int, detach_q: bool = False, q: MixtureOfExperts | None = None
    ) -> StratifiedSample:
        """K draws per expert of `q` (default `encode(batch)`) and their log-weights; with
        `detach_q` the mixture density uses detached encoder parameters (the DReG requirement)."""
        q = self.encode(batch) if q is None else q
        base = torch.stack([e.rsample((K,)) for e in q.experts])
        z = base.view_as(base)
        density = MixtureOfExperts([e.detach() for e in q.experts], q.mask) if detach_q else q
        lw = self.prior().log_prob(z).sum(-1) + self.log_likelihood_terms(batch, z) - density.log_prob(z)
        return StratifiedSample(base, z, lw, q.mask, density)

    def forward(self, batch: Batch) -> ModelOutput:
        """Loss of the configured objective; without grad, DReG falls back to its IWAE value."""
        batch.validate(self.modalities)
        batch = batch.zero_missing()
        objective = self.objective if torch.is_grad_enabled() else "iwae"
        s = self.stratified_sample(batch, self.K, detach_q=objective in DETACHED_Q)
        per_point = SURROGATES[objective](s)
        loss = -per_point.mean()
        with torch.no_grad():
            looser = iwae(s.lw, s.mask).mean()
            metrics = {
                "loss": float(-looser) if objective in DETACHED_Q else float(loss),
                "iwae_looser": float(looser),
                "iwae_tight": float(tight_iwae(s.lw, s.mask).mean()),
                "elbo": float(elbo(s.lw, s.mask).mean()),
            }
        return ModelOutput(loss, metrics, per_point)

    def repaired_bounds(self, batch: Batch, J: Tensor, K: int, estimator: str = "iwae") -> Tensor:
        """`bound` of every re-paired tuple (base contract) at the cost of one bound of `batch`.

        K draws per expert of every row are decoded once by every decoder and shared by all
        tuples that hold that row's item of the expert's modality. Tuple t = (x_1^(J_1t), ...,
        x_M^(J_Mt)) pools the draws z of its M strata (z ~ q(z | x_r^(J_rt)) for stratum r)
        with the tight MoE log-weights of eq. (3) under its own mixture:
            lw = log p(z) + sum_d s_d log p(x_d^(J_dt) | z) - log (1/M) sum_m q(z | x_m^(J_mt)).
        Each tuple's estimate has the default's distribution; tuples sharing an item share its
        draws, so their estimates are correlated (each is still an IWAE / CUBO estimate)."""
        self.check_complete(batch)
        names = self.names
        q = self.encode(batch)
        base = torch.stack([e.rsample((K,)) for e in q.experts])  # (M, K, n, D)
        flat = J.reshape(len(names), -1)  # (M, T)
        tuple_q = MixtureOfExperts([e.select(rows) for e, rows in zip(q.experts, flat)])
        log_weights = []
        for r in range(len(names)):
            z = base[r][:, flat[r]]  # (K, T, D): the draws of each tuple's stratum r
            lw = self.prior().log_prob(z).sum(-1) - tuple_q.log_prob(z)
            for d, name in enumerate(names):
                spec = self.modalities[name]
                params = self.decoders[name](base[r])[:, flat[r]]
                lik = self.lik_cls[name](params, spec.likelihood_scale)
                lw = lw + spec.llik_scale * lik.log_prob_sum(batch.data[name][flat[d]], len(spec.shape))
            log_weights.append(lw)
        lw = torch.cat(log_weights, 0)  # (M * K, T)
        return pooled_bound(lw, torch.full(lw.shape[1:], lw.shape[0], device=lw.device), estimator)

    def joint_log_weights(self, batch: Batch, K: int, proposal: MixtureOfExperts | None = None) -> tuple[Tensor, Tensor]:
        """K draws per observed expert of the MoE posterior, pooled (the tight bound's weights)."""
        s = self.stratified_sample(batch, K, q=proposal)
        return tight(s.lw, s.mask)[0][0], s.mask.sum(0) * K
