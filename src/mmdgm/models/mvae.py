"""MVAE: the product-of-experts multimodal VAE (Wu & Goodman, NeurIPS 2018)."""

from __future__ import annotations

import itertools

import torch
from torch import Tensor

from mmdgm.batch import Batch, repaired_batch
from mmdgm.distributions import Normal
from mmdgm.distributions.product import product_of_gaussians
from mmdgm.models.base import MODELS, ModelOutput, MultimodalVAE, at_least, pooled_bound
from mmdgm.objectives.estimators import log_mean_exp


def require_gaussian(model: MultimodalVAE, method: str) -> None:
    """Product-of-experts models need Gaussian posteriors and prior (closed-form products)."""
    for role, cls in (("posterior", model.posterior_cls), ("prior", model.prior_cls)):
        if cls is not Normal:
            raise ValueError(
                f"{method} needs a Gaussian {role} (model.{role}: normal), got {cls.__name__}: "
                "a product of non-Gaussian experts has no closed form"
            )


def unimodal_experts(model: MultimodalVAE, batch: Batch, names: list[str]) -> tuple[Tensor, Tensor, Tensor]:
    """Stacked q(z | x_m) parameters (M, B, D) and the (M, B) presence mask of `names`."""
    posteriors = [model.posterior(n, batch.data[n]) for n in names]
    locs = torch.stack([q.loc for q in posteriors])
    scales = torch.stack([q.scale for q in posteriors])
    return locs, scales, torch.stack([batch.mask[n] for n in names])


def tuple_experts(model: MultimodalVAE, batch: Batch, J: Tensor) -> tuple[Tensor, Tensor]:
    """The experts (M, T, D) of the T re-paired tuples of the index matrix J (M, R, n): each
    row's items encoded once, tuple t's expert m taken from row J[m].flatten()[t]."""
    flat = J.reshape(len(model.names), -1)
    locs, scales, _ = unimodal_experts(model, batch, model.names)
    picked = torch.arange(len(model.names), device=flat.device)[:, None]
    return locs[picked, flat], scales[picked, flat]


@MODELS.register("mvae")
class MVAE(MultimodalVAE):
    """Joint posterior q(z | x_S) ∝ p(z) prod_{m in S} q~(z | x_m), a product of Gaussian
    experts that includes the prior expert (paper §2, eq. 4 as we recall the numbering; the
    unimodal networks give the experts q~).

    Objective (sub-sampled training, paper §3, "ELBO(x_1..N) + sum_i ELBO(x_i) + sum_j
    ELBO(X_j)"; eq. 5 as we recall the numbering), per data point:
        L = sum_{S in terms} L_S,  terms = {all} + {{m}: m} + `n_subsets` random subsets
            (only when M > 2; uniform over the subsets of size 2..M-1, torch's RNG),
        L_S = log (1/K) sum_k exp( sum_{m in S} s_m log p(x_m | z_k)
                                   + beta (log p(z_k) - log q(z_k | x_S)) ),  z_k ~ q(z | x_S),
    i.e. the ELBO (K = 1) or the IWAE bound (K > 1, Burda et al.) of the subset, with the
    KL part weighted by beta = min(1, step / annealing_steps) (1 when annealing_steps = 0;
    the paper's KL annealing). Only the subset's own modalities are reconstructed.

    Partial observation: the joint term uses the product over each sample's observed
    modalities; every other term counts only for samples where all its modalities are
    observed (selected with torch.where, so missing networks get zero gradient).
    Metrics: "loss", "elbo" and "iwae" (the joint term at beta = 1, bounds on
    log p(x_observed)), "kl_weight".
    """

    def __init__(self, *args, K: int = 1, annealing_steps: int = 0, n_subsets: int = 1, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        require_gaussian(self, "MVAE")
        at_least("K", K, 1)
        if annealing_steps < 0 or n_subsets < 0:
            raise ValueError(f"annealing_steps and n_subsets must be >= 0, got {annealing_steps}, {n_subsets}")
        self.K = K
        self.annealing_steps = annealing_steps
        self.n_subsets = n_subsets
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        m = len(self.modalities)
        self.middle_subsets = [list(c) for r in range(2, m) for c in itertools.combinations(self.names, r)]

    def kl_weight(self) -> float:
        """beta of the current training step (linear warm-up from 0 to 1)."""
        if self.annealing_steps == 0:
            return 1.0
        return min(1.0, int(self.step) / self.annealing_steps)

    def objective_is_bound(self) -> bool:
        """Not while beta < 1: with KL annealing the objective is no bound on log p."""
        return self.annealing_steps == 0

    def partial_subsets(self) -> list[list[str]]:
        """The subset terms besides the joint one: each modality alone, then `n_subsets`
        distinct random subsets of size 2..M-1 (none when M = 2)."""
        picks = torch.randperm(len(self.middle_subsets))[: self.n_subsets].tolist() if self.middle_subsets else []
        return [[n] for n in self.names] + [self.middle_subsets[i] for i in picks]

    def encode(self, batch: Batch, modalities: list[str] | None = None) -> Normal:
        """PoE of the prior and the observed members of `modalities` (the prior where none is)."""
        names = self.check_names(modalities)
        batch = batch.zero_missing()
        locs, scales, mask = unimodal_experts(self, batch, names)
        return product_of_gaussians(locs, scales, mask, prior_expert=self.prior())

    def log_weights(self, batch: Batch, names: list[str], q: Normal, K: int, beta: float) -> tuple[Tensor, Tensor]:
        """(K, B) log-weights of z ~ q at KL weight beta and at beta = 1, reconstructing `names`."""
        z = q.rsample((K,))
        rec = torch.zeros(z.shape[:-1], dtype=z.dtype, device=z.device)
        for n in names:
            lp = self.likelihood(n, z).log_prob_sum(batch.data[n], len(self.modalities[n].shape))
            rec = rec + torch.where(batch.mask[n], lp * self.modalities[n].llik_scale, torch.zeros_like(lp))
        log_ratio = self.prior().log_prob(z).sum(-1) - q.log_prob(z).sum(-1)
        return rec + beta * log_ratio, rec + log_ratio

    def forward(self, batch: Batch) -> ModelOutput:
        """Sum of the subset bounds (class docstring); each training call advances the step."""
        batch.validate(self.modalities)
        batch = batch.zero_missing()
        beta = self.kl_weight()
        if self.training and torch.is_grad_enabled():
            self.step += 1
        locs, scales, observed = unimodal_experts(self, batch, self.names)
        joint_q = product_of_gaussians(locs, scales, observed, prior_expert=self.prior())
        lw, joint = self.log_weights(batch, self.names, joint_q, self.K, beta)
        total = log_mean_exp(lw, 0)
        for subset in self.partial_subsets():
            member = torch.tensor([n in subset for n in self.names], device=observed.device)[:, None]
            q = product_of_gaussians(locs, scales, observed & member, prior_expert=self.prior())
            term = log_mean_exp(self.log_weights(batch, subset, q, self.K, beta)[0], 0)
            valid = (observed | ~member).all(0)
            total = total + torch.where(valid, term, torch.zeros_like(term))
        joint = joint.detach()
        loss = -total.mean()
        metrics = {
            "loss": float(loss.detach()),
            "elbo": float(joint.mean(0).mean()),
            "iwae": float(log_mean_exp(joint, 0).mean()),
            "kl_weight": beta,
        }
        return ModelOutput(loss, metrics, total)

    def joint_log_weights(self, batch: Batch, K: int, proposal=None) -> tuple[Tensor, Tensor]:
        """K draws of the joint PoE posterior at KL weight 1."""
        q = self.joint_proposal(batch) if proposal is None else proposal
        return self.log_weights(batch, self.names, q, K, 1.0)[1], torch.full((batch.size,), K)

    def repaired_bounds(self, batch: Batch, J: Tensor, K: int, estimator: str = "iwae") -> Tensor:
        """`bound` of every re-paired tuple (base contract), each row's items encoded once:
        a tuple's joint posterior is the product of the prior and its items' experts, taken
        from the rows they come from; draws and decoding are the tuple's own, as in the
        default, which this equals draw for draw."""
        self.check_complete(batch)
        q = product_of_gaussians(*tuple_experts(self, batch, J), prior_expert=self.prior())
        lw = self.log_weights(repaired_batch(batch, self.names, J), self.names, q, K, 1.0)[1]
        return pooled_bound(lw, torch.full(lw.shape[1:], K, device=lw.device), estimator)
