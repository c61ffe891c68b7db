"""mmJSD: multimodal learning with a Jensen-Shannon regulariser and a dynamic prior
(Sutter, Daunhawer & Vogt, NeurIPS 2020)."""

from __future__ import annotations

import torch
from torch import Tensor

from mmdgm.batch import Batch, repaired_batch
from mmdgm.distributions import MixtureOfExperts, Normal
from mmdgm.distributions.product import product_of_gaussians
from mmdgm.models.base import MODELS, ModelOutput, MultimodalVAE, at_least, pooled_bound
from mmdgm.models.mmvae import tight
from mmdgm.models.mvae import require_gaussian, unimodal_experts
from mmdgm.objectives.estimators import stratum_mean
from mmdgm.registry import nearest


def geometric_mean(locs: Tensor, scales: Tensor, mask: Tensor, prior: Normal) -> Normal:
    """Weighted geometric mean prod_j q_j^{pi_j} / Z of the observed experts and the prior,
    pi_j = 1 / (|O_b| + 1) (the paper's Lemma for Gaussians: precision sum_j pi_j T_j):
    the product's mean, with its variance times |O_b| + 1."""
    poe = product_of_gaussians(locs, scales, mask, prior_expert=prior)
    n = mask.sum(0).to(locs.dtype)[:, None] + 1
    return Normal(poe.loc, poe.scale * n.sqrt())


def product(locs: Tensor, scales: Tensor, mask: Tensor, prior: Normal) -> Normal:
    """Unweighted product of the observed experts and the prior (MVAE's PoE)."""
    return product_of_gaussians(locs, scales, mask, prior_expert=prior)


DYNAMIC_PRIORS = {"geometric": geometric_mean, "product": product}


@MODELS.register("mmjsd")
class MMJSD(MultimodalVAE):
    """Unimodal posteriors q_j(z | x_j); joint posterior their uniform mixture; a dynamic
    prior f = f({q_j}_{j in O_b}, p(z)) regularises them with a Jensen-Shannon divergence.

    Objective (paper eq. 9 with the JS of eq. 8 and the dynamic prior of Def. 2 / Lemma 2,
    numbering as we recall it), per data point with observed modalities O_b, n = |O_b|:
        L = (1/n) sum_{j in O_b} E_{q_j(z|x_j)}[ sum_{m in O_b} s_m log p(x_m | z) ]
            - beta JS_pi,   JS_pi = sum_{j in O_b + {prior}} pi_j KL(q_j || f),  pi_j = 1/(n + 1),
    where q_{prior} = p(z). The first term is E_{q(z|X)}[log p(X | z)] for the mixture
    q(z | X) = (1/n) sum_j q_j, estimated stratified (K draws per expert, each decoding
    every observed modality). `dynamic_prior`: "geometric" (default; the weighted geometric
    mean prod_j q_j^{pi_j}, as in the authors' code) or "product" (prod_j q_j, a PoE).
    The modality-specific latent spaces of the paper's §4 variant are not implemented.

    Metrics: "loss", "mmjsd" (L at beta = 1, the training objective), "rec", "jsd", and
    "elbo" = E_q[log p(x, z) - log q(z | X)] for the mixture posterior (stratified, K draws
    per expert), an ordinary lower bound on log p(x_observed).
    """

    def __init__(self, *args, K: int = 1, beta: float = 1.0, dynamic_prior: str = "geometric", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        require_gaussian(self, "mmJSD")
        if dynamic_prior not in DYNAMIC_PRIORS:
            raise ValueError(
                f"unknown mmJSD dynamic_prior {dynamic_prior!r}{nearest(dynamic_prior, list(DYNAMIC_PRIORS))}"
            )
        at_least("K", K, 1)
        at_least("beta", beta, 0)
        self.K = K
        self.beta = beta
        self.dynamic_prior = dynamic_prior

    def encode(self, batch: Batch, modalities: list[str] | None = None) -> MixtureOfExperts:
        """The uniform mixture of the observed members' unimodal posteriors (as MMVAE)."""
        names = self.check_names(modalities)
        batch = batch.zero_missing()
        return MixtureOfExperts([self.posterior(n, batch.data[n]) for n in names], torch.stack([batch.mask[n] for n in names]))

    def dynamic(self, locs: Tensor, scales: Tensor, observed: Tensor) -> Normal:
        """The dynamic prior f({q_j}_{j in O_b}, p(z)), parameters (B, D)."""
        return DYNAMIC_PRIORS[self.dynamic_prior](locs, scales, observed, self.prior())

    def jsd(self, locs: Tensor, scales: Tensor, observed: Tensor) -> Tensor:
        """JS_pi of the observed unimodal posteriors and the prior around the dynamic prior, (B,)."""
        f = self.dynamic(locs, scales, observed)
        kl_experts = Normal(locs, scales).kl(f).sum(-1)
        kl_prior = self.prior().kl(f).sum(-1)
        kl_sum = torch.where(observed, kl_experts, torch.zeros_like(kl_experts)).sum(0) + kl_prior
        return kl_sum / (observed.sum(0).to(kl_sum.dtype) + 1)

    def forward(self, batch: Batch) -> ModelOutput:
        """Negative mmJSD objective (class docstring); the same objective without grad."""
        batch.validate(self.modalities)
        batch = batch.zero_missing()
        locs, scales, observed = unimodal_experts(self, batch, self.names)
        z = Normal(locs, scales).rsample((self.K,))
        log_px = self.log_likelihood_terms(batch, z)
        rec = stratum_mean(log_px.mean(0), observed)
        jsd = self.jsd(locs, scales, observed)
        per_point = rec - self.beta * jsd
        loss = -per_point.mean()
        with torch.no_grad():
            q = MixtureOfExperts([Normal(locs[j], scales[j]) for j in range(len(self.names))], observed)
            lw = self.prior().log_prob(z).sum(-1) + log_px - q.log_prob(z)
            metrics = {
                "loss": float(loss.detach()),
                "mmjsd": float((rec - jsd).mean()),
                "rec": float(rec.mean()),
                "jsd": float(jsd.mean()),
                "elbo": float(stratum_mean(lw.mean(0), observed).mean()),
            }
        return ModelOutput(loss, metrics, per_point)

    def repaired_bounds(self, batch: Batch, J: Tensor, K: int, estimator: str = "iwae") -> Tensor:
        """`bound` of every re-paired tuple (base contract), each row's items encoded once: a
        tuple's mixture takes its items' posteriors from the rows they come from; draws and
        decoding are the tuple's own. Equal to the default draw for draw."""
        self.check_complete(batch)
        q = self.encode(batch)
        flat = J.reshape(len(self.names), -1)
        tuple_q = MixtureOfExperts([e.select(rows) for e, rows in zip(q.experts, flat)])
        return pooled_bound(*self.joint_log_weights(repaired_batch(batch, self.names, J), K, tuple_q), estimator)

    def joint_log_weights(self, batch: Batch, K: int, proposal=None) -> tuple[Tensor, Tensor]:
        """K draws per observed expert of the mixture posterior, pooled (as MMVAE's tight bound)."""
        q = self.joint_proposal(batch) if proposal is None else proposal
        z = torch.stack([e.rsample((K,)) for e in q.experts])
        lw = self.prior().log_prob(z).sum(-1) + self.log_likelihood_terms(batch, z) - q.log_prob(z)
        return tight(lw, q.mask)[0][0], q.mask.sum(0) * K
