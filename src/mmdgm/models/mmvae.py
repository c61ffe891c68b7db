"""MMVAE: the mixture-of-experts multimodal VAE (Shi et al., NeurIPS 2019)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from mmdgm.batch import Batch
from mmdgm.distributions import MixtureOfExperts
from mmdgm.models.base import MODELS, ModelOutput, MultimodalVAE
from mmdgm.objectives import dreg, elbo, iwae
from mmdgm.registry import nearest



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


def tight_dreg(lw: Tensor, z: Tensor, strata_mask: Tensor) -> Tensor:
    """DReG surrogate of the tight bound (weights normalised over all M*K samples)."""
    return dreg(tight(lw, strata_mask)[0], z.reshape(1, -1, *z.shape[2:]))


SURROGATES = {
    "dreg": dreg,
    "iwae": lambda lw, z, mask: iwae(lw, mask),
    "elbo": lambda lw, z, mask: elbo(lw, mask),
    "dreg_tight": tight_dreg,
    "iwae_tight": lambda lw, z, mask: tight_iwae(lw, mask),
}


@MODELS.register("mmvae")
class MMVAE(MultimodalVAE):
    """Mixture-of-experts posterior q(z | x_1:M) = (1/M) sum_m q(z | x_m) (paper §3).

    Every modality's K samples are decoded by every decoder. Log-weights of the samples
    of stratum r (MMVAE code, paper eq. 3):
        lw_r = log p(z) + sum_d s_d log p(x_d | z) - log (1/M) sum_m q(z | x_m),  z ~ q(z | x_r).
    Objectives (`objective`):
        "dreg"       looser IWAE of eq. (3) with the DReG gradient (the published setting),
        "iwae"       looser IWAE of eq. (3), the plain reparameterised gradient,
        "dreg_tight" / "iwae_tight"  one IWAE over all M*K samples (tight bound),
        "elbo"       the stratified MoE ELBO (left side of the inequality below eq. 3).
    With partially observed samples the mixture, the strata and the likelihood terms run
    over the observed modalities only (a sample needs at least one).
    """

    def __init__(self, *args, K: int = 30, objective: str = "dreg", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if objective not in SURROGATES:
            raise ValueError(f"unknown MMVAE objective {objective!r}{nearest(objective, list(SURROGATES))}")
        if len(self.modalities) < 2:
            raise ValueError("MMVAE needs at least two modalities")
        if K < 1:
            raise ValueError(f"K must be >= 1, got {K}")
        self.K = K
        self.objective = objective

    def encode(self, batch: Batch, modalities: list[str] | None = None) -> MixtureOfExperts:
        names = self.check_names(modalities)
        experts = [self.posterior(n, batch.data[n]) for n in names]
        mask = torch.stack([batch.mask[n] for n in names])
        return MixtureOfExperts(experts, mask)

    def log_weights(self, batch: Batch, K: int, detach_q: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        """Stratified samples Z (M, K, B, D) and their log-weights lw (M, K, B), plus the
        (M, B) strata mask. With `detach_q` the mixture density uses detached encoder
        parameters (the DReG requirement)."""
        q = self.encode(batch)
        z = torch.stack([e.rsample((K,)) for e in q.experts])
        q_density = MixtureOfExperts([e.detach() for e in q.experts], q.mask) if detach_q else q
        lw = self.prior().log_prob(z).sum(-1) + self.log_likelihood_terms(batch, z) - q_density.log_prob(z)
        return z, lw, q.mask

    def forward(self, batch: Batch) -> ModelOutput:
        """Loss of the configured objective; without grad, DReG falls back to its IWAE value."""
        batch.validate(self.modalities)
        batch = batch.zero_missing()
        objective = self.objective if torch.is_grad_enabled() else self.objective.replace("dreg", "iwae")
        z, lw, mask = self.log_weights(batch, self.K, detach_q=objective.startswith("dreg"))
        loss = -SURROGATES[objective](lw, z, mask).mean()
        with torch.no_grad():
            metrics = {
                "loss": float(loss),
                "iwae_looser": float(iwae(lw, mask).mean()),
                "iwae_tight": float(tight_iwae(lw, mask).mean()),
                "elbo": float(elbo(lw, mask).mean()),
            }
        return ModelOutput(loss, metrics)

    @torch.no_grad()
    def log_likelihood(self, batch: Batch, K: int = 1000, chunk: int = 100) -> Tensor:
        """Tight IWAE estimate of log p(x_observed) with K samples per observed modality
        (stratified MoE proposal), accumulated over chunks of samples."""
        batch.validate(self.modalities)
        batch = batch.zero_missing()
        total, n = None, 0
        while n < K:
            k = min(chunk, K - n)
            _, lw, mask = self.log_weights(batch, k)
            pooled, _ = tight(lw, mask)
            part = torch.logsumexp(pooled[0], 0)
            total = part if total is None else torch.logaddexp(total, part)
            n += k
        return total - (mask.sum(0).to(total.dtype) * K).log()
