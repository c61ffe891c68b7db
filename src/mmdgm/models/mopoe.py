"""MoPoE-VAE: a mixture of products of experts (Sutter, Daunhawer & Vogt, ICLR 2021)."""

from __future__ import annotations

import itertools

import torch
from torch import Tensor

from mmdgm.batch import Batch, BatchError, repaired_batch
from mmdgm.distributions import MixtureOfExperts, Normal
from mmdgm.distributions.product import product_of_gaussians
from mmdgm.models.base import MODELS, ModelOutput, MultimodalVAE, at_least, pooled_bound
from mmdgm.models.mmvae import tight
from mmdgm.models.mvae import require_gaussian, tuple_experts, unimodal_experts
from mmdgm.objectives.estimators import stratum_mean


def nonempty_subsets(names: list[str]) -> list[tuple[str, ...]]:
    """The 2^M - 1 non-empty subsets of `names`, by size, then in the order of `names`."""
    return [c for r in range(1, len(names) + 1) for c in itertools.combinations(names, r)]


def subset_mask(subsets: list[tuple[str, ...]], names: list[str], observed: Tensor) -> tuple[Tensor, Tensor]:
    """(S, M) membership of each subset and (S, B) validity: a subset is a component for
    sample b iff all its members are observed, so sample b has 2^|O_b| - 1 components."""
    member = torch.tensor([[n in s for n in names] for s in subsets], device=observed.device)
    valid = (observed[None] | ~member[..., None]).all(1)
    return member, valid


@MODELS.register("mopoe")
class MoPoE(MultimodalVAE):
    """Joint posterior q(z | X) = 1/|P_b| sum_{X_k in P_b} q~(z | X_k), with P_b the
    non-empty subsets of sample b's observed modalities and q~(z | X_k) the product of
    the unimodal Gaussian experts in X_k (paper §3, eqs. 5-6 as we recall the numbering;
    with `prior_expert` the prior joins every product, as in some of the authors' code).

    Objective (the paper's, eq. 7 with its KL upper bound, Lemma in §3 / App. A as we recall):
        L = (1/|P_b|) sum_{X_k in P_b} ( E_{q~(z|X_k)}[ sum_{m in O_b} s_m log p(x_m | z) ]
                                          - beta KL(q~(z | X_k) || p(z)) ),
    i.e. the reconstruction expectation under the mixture is estimated exactly stratified
    over its components (K draws from each, every draw decodes every observed modality)
    and KL(mixture || prior) is replaced by the average of the subset KLs (analytic),
    which is >= it by convexity. At beta = 1, L is the mean of the subset ELBOs: a lower
    bound on both the mixture's ELBO and log p(x_observed). Samples draw a subset
    uniformly, then z from its product (`encode(...).sample()`).

    Cost: 2^M - 1 products and K (2^M - 1) B latents per decoder.
    Metrics: "loss", "elbo" (L at beta = 1), "rec", "kl" (the subset-averaged terms).
    """

    def __init__(self, *args, K: int = 1, beta: float = 1.0, prior_expert: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        require_gaussian(self, "MoPoE")
        at_least("K", K, 1)
        at_least("beta", beta, 0)
        self.K = K
        self.beta = beta
        self.prior_expert = prior_expert

    def encode(self, batch: Batch, modalities: list[str] | None = None) -> MixtureOfExperts:
        """Uniform mixture of the products over the non-empty subsets of the observed members
        of `modalities`, per sample; components are `Normal`s with (B, D) parameters."""
        names = self.check_names(modalities)
        batch = batch.zero_missing()
        locs, scales, observed = unimodal_experts(self, batch, names)
        none = ~observed.any(0)
        if none.any():
            rows = torch.nonzero(none).flatten()[:5].tolist()
            raise BatchError(f"samples {rows} observe none of {names}: their MoPoE posterior is undefined")
        return self.mixture_of_products(locs, scales, observed, names)

    def mixture_of_products(self, locs: Tensor, scales: Tensor, observed: Tensor, names: list[str]) -> MixtureOfExperts:
        """The mixture over the non-empty subsets of `names` of the products of their
        experts (M, B, D), the subsets with an unobserved member (M, B) left out."""
        subsets = nonempty_subsets(names)
        member, valid = subset_mask(subsets, names, observed)
        s, m, b = len(subsets), len(names), locs.shape[1]
        stacked = member[:, :, None].expand(s, m, b).transpose(0, 1).reshape(m, s * b)
        prior = self.prior() if self.prior_expert else False
        poe = product_of_gaussians(
            locs[:, None].expand(m, s, *locs.shape[1:]).reshape(m, s * b, -1),
            scales[:, None].expand(m, s, *scales.shape[1:]).reshape(m, s * b, -1),
            stacked,
            prior_expert=prior,
        )
        loc, scale = poe.loc.view(s, b, -1), poe.scale.view(s, b, -1)
        return MixtureOfExperts([Normal(loc[k], scale[k]) for k in range(s)], valid)

    def forward(self, batch: Batch) -> ModelOutput:
        """Negative subset-averaged bound (class docstring); the same bound without grad."""
        batch.validate(self.modalities)
        batch = batch.zero_missing()
        q = self.encode(batch)
        components = Normal(torch.stack([c.loc for c in q.experts]), torch.stack([c.scale for c in q.experts]))
        z = components.rsample((self.K,))
        rec = self.log_likelihood_terms(batch, z).mean(0)
        kl = components.kl(self.prior()).sum(-1)
        per_point = stratum_mean(rec - self.beta * kl, q.mask)
        loss = -per_point.mean()
        with torch.no_grad():
            rec_mean, kl_mean = stratum_mean(rec, q.mask).mean(), stratum_mean(kl, q.mask).mean()
            metrics = {
                "loss": float(loss.detach()),
                "elbo": float(rec_mean - kl_mean),
                "rec": float(rec_mean),
                "kl": float(kl_mean),
            }
        return ModelOutput(loss, metrics, per_point)

    def repaired_bounds(self, batch: Batch, J: Tensor, K: int, estimator: str = "iwae") -> Tensor:
        """`bound` of every re-paired tuple (base contract), each row's items encoded once: a
        tuple's mixture of products is built from its items' experts, gathered from the rows
        they come from; draws and decoding are the tuple's own. Equal to the default draw
        for draw."""
        self.check_complete(batch)
        locs, scales = tuple_experts(self, batch, J)
        q = self.mixture_of_products(locs, scales, torch.ones(locs.shape[:2], dtype=torch.bool, device=locs.device),
                                     self.names)
        return pooled_bound(*self.joint_log_weights(repaired_batch(batch, self.names, J), K, q), estimator)

    def joint_log_weights(self, batch: Batch, K: int, proposal=None) -> tuple[Tensor, Tensor]:
        """K draws from each of a sample's mixture components, pooled (as MMVAE's tight bound)."""
        q = self.joint_proposal(batch) if proposal is None else proposal
        components = Normal(torch.stack([c.loc for c in q.experts]), torch.stack([c.scale for c in q.experts]))
        z = components.rsample((K,)).transpose(0, 1)
        lw = self.prior().log_prob(z).sum(-1) + self.log_likelihood_terms(batch, z) - q.log_prob(z)
        return tight(lw, q.mask)[0][0], q.mask.sum(0) * K
