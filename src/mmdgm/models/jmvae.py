"""JMVAE-kl: a joint encoder aligned with unimodal encoders (Suzuki et al., ICLR-W 2017)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from mmdgm.batch import Batch, BatchError, repaired_batch
from mmdgm.distributions import Normal
from mmdgm.modalities import Modality
from mmdgm.models.base import MODELS, ModelOutput, MultimodalVAE, pooled_bound
from mmdgm.nets import ENCODERS
from mmdgm.nets.layers import mlp


class JointEncoder(nn.Module):
    """q(z | x_1..M) as (loc, raw scale): each modality's registered encoder network gives
    (loc, raw) features of size 2D; their concatenation goes through a ReLU layer of
    `hidden` units and two linear heads."""

    def __init__(self, modalities: list[Modality], latent_dim: int, hidden: int) -> None:
        super().__init__()
        self.features = nn.ModuleDict(
            {m.name: ENCODERS.get(m.encoder)(m.shape, latent_dim, **m.encoder_kwargs) for m in modalities}
        )
        self.body = mlp([2 * latent_dim * len(modalities), hidden], final_act=True)
        self.loc = nn.Linear(hidden, latent_dim)
        self.raw_scale = nn.Linear(hidden, latent_dim)

    def modality_features(self, data: dict[str, Tensor]) -> list[Tensor]:
        """Each modality's (B, 2D) features, in the order of `features`."""
        return [torch.cat(net(data[n]), -1) for n, net in self.features.items()]

    def head(self, features: list[Tensor]) -> tuple[Tensor, Tensor]:
        """(loc, raw scale) from the modalities' features."""
        h = self.body(torch.cat(features, -1))
        return self.loc(h), self.raw_scale(h)

    def forward(self, data: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        return self.head(self.modality_features(data))


def subset_product(experts: list[Normal], mask: Tensor, prior: Normal) -> Normal:
    """q_S(z) ∝ prod_{m in S} q(z | x_m) / p(z)^(|S|-1), S the observed experts of each row.

    If the experts were exact posteriors p(z | x_m) and the modalities conditionally
    independent given z, this would be p(z | x_S) (Wu & Goodman 2018, eq. 3); for |S| = 1
    it is q(z | x_m) itself, JMVAE's unimodal inference. Gaussian natural parameters:
    precision T = sum_S T_m - (|S|-1) T_0, T eta = sum_S T_m mu_m - (|S|-1) T_0 mu_0.
    T is floored at max_S T_m (a no-op for linear-Gaussian experts, where each modality
    adds non-negative precision), so a poorly trained expert cannot make it non-positive.

    Args:
        experts: M Normals with tensor parameters (B, D); mask: (M, B) observed experts
        (each row at least one); prior: Normal with tensor parameters (D,).
    """
    w = mask[..., None]
    scales = torch.stack([e.scale for e in experts])
    locs = torch.stack([e.loc for e in experts])
    zero = torch.zeros((), dtype=locs.dtype, device=locs.device)
    prec = torch.where(w, scales, torch.ones_like(scales)) ** -2  # absent experts cleaned first
    locs = torch.where(w, locs, zero)
    extra = (mask.sum(0) - 1).to(prec.dtype)[:, None]
    p_prec = prior.scale**-2
    nat_prec = torch.where(w, prec, zero).sum(0) - extra * p_prec
    nat_mean = torch.where(w, prec * locs, zero).sum(0) - extra * p_prec * prior.loc
    precision = torch.maximum(nat_prec, torch.where(w, prec, zero).amax(0))
    return Normal(nat_mean / precision, precision.rsqrt())


def select(rows: Tensor, a: Normal, b: Normal) -> Normal:
    """Row-wise choice: `a` where `rows` (B,) is True, else `b`."""
    r = rows[:, None]
    return Normal(torch.where(r, a.loc, b.loc), torch.where(r, a.scale, b.scale))


@dataclass
class Terms:
    """Per-row pieces of the JMVAE-kl objective.

    z: (B, D) one draw of the proposal q (joint encoder on complete rows, the product of
    the observed unimodal experts on incomplete ones); elbo: (B,) bound on
    log p(x_observed); kl_unimodal: (B,) sum_m KL(q(z|X) || q(z|x_m)), 0 on incomplete rows.
    """

    z: Tensor
    q: Normal
    elbo: Tensor
    kl_unimodal: Tensor
    complete: Tensor


@MODELS.register("jmvae")
class JMVAE(MultimodalVAE):
    """Joint encoder q(z | X) plus unimodal encoders q(z | x_m), Gaussian throughout.

    Objective (JMVAE-kl; Suzuki, Nakayama & Matsuo 2017, arXiv:1611.01891 — eq. 4 there as
    far as we recall, not checked against the text), for a complete sample X, maximised:
        L(X) = E_q(z|X)[sum_m s_m log p(x_m | z)] - KL(q(z|X) || p(z))
               - alpha * sum_m KL(q(z|X) || q(z|x_m)),
    with analytic Gaussian KL terms and one reparameterised draw. The paper has M = 2; the
    sum over m extends it to any M >= 2.
    Incomplete samples (observed subset S) contribute their own ELBO on log p(x_S) with
    proposal q_S = `subset_product` of the observed unimodal experts: a valid bound under
    the same generative model, so no data are wasted; the joint encoder and the alpha
    term see complete samples only. Missing modalities are never read and their networks
    get zero gradient from those rows.
    """

    def __init__(self, *args, alpha: float = 1.0, joint_hidden: int = 512, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.posterior_cls is not Normal or self.prior_cls is not Normal:
            raise ValueError(
                "JMVAE needs prior: normal and posterior: normal (its KL terms and the product of "
                f"unimodal experts are Gaussian), got prior {self.prior_cls.__name__}, "
                f"posterior {self.posterior_cls.__name__}"
            )
        if alpha < 0 or joint_hidden < 1:
            raise ValueError(f"JMVAE needs alpha >= 0 and joint_hidden >= 1, got {alpha}, {joint_hidden}")
        self.alpha = alpha
        self.joint = JointEncoder(list(self.modalities.values()), self.latent_dim, joint_hidden)

    def joint_posterior(self, batch: Batch) -> Normal:
        """q(z | x_1..M) for every row (meaningful on complete rows only)."""
        loc, raw = self.joint(batch.data)
        return Normal(loc, self.scale_fn(raw))

    def encode(self, batch: Batch, modalities: list[str] | None = None) -> Normal:
        """q(z | X) on rows where all M modalities are requested and observed; elsewhere the
        product of the observed requested unimodal experts (`subset_product`)."""
        names = self.check_names(modalities)
        batch = batch.zero_missing()
        mask = torch.stack([batch.mask[n] for n in names])
        if not mask.any(0).all():
            rows = torch.nonzero(~mask.any(0)).flatten()[:5].tolist()
            raise BatchError(f"samples {rows} observe none of the modalities {names}")
        q = subset_product([self.posterior(n, batch.data[n]) for n in names], mask, self.prior())
        if set(names) != set(self.names):
            return q
        return select(mask.all(0), self.joint_posterior(batch), q)

    def terms(self, batch: Batch) -> Terms:
        """The objective's per-row pieces for a validated batch with missing entries zeroed."""
        mask = torch.stack([batch.mask[n] for n in self.names])
        complete = mask.all(0)
        experts = [self.posterior(n, batch.data[n]) for n in self.names]
        prior = self.prior()
        joint = self.joint_posterior(batch)
        q = select(complete, joint, subset_product(experts, mask, prior))
        z = q.rsample()
        elbo = self.log_likelihood_terms(batch, z) - q.kl(prior).sum(-1)
        kl = torch.stack([joint.kl(e).sum(-1) for e in experts]).sum(0)
        kl = torch.where(complete, kl, torch.zeros_like(kl))
        return Terms(z, q, elbo, kl, complete)

    def forward(self, batch: Batch) -> ModelOutput:
        """Mean over rows of -(ELBO - alpha * sum_m KL(q(z|X) || q(z|x_m)))."""
        batch.validate(self.modalities)
        t = self.terms(batch.zero_missing())
        per_point = t.elbo - self.alpha * t.kl_unimodal
        loss = -per_point.mean()
        with torch.no_grad():
            n_complete = int(t.complete.sum())
            metrics = {
                "loss": float(loss),
                "elbo": float(t.elbo.mean()),
                "kl_unimodal": float(t.kl_unimodal.sum()) / max(n_complete, 1),
                "complete_fraction": n_complete / batch.size,
            }
        return ModelOutput(loss, metrics, per_point)

    def repaired_bounds(self, batch: Batch, J: Tensor, K: int, estimator: str = "iwae") -> Tensor:
        """`bound` of every re-paired tuple (base contract), each row's items through the
        joint encoder's feature networks once: a tuple's q(z | X) is the encoder's head on
        its items' features, gathered from the rows they come from (the unimodal experts,
        unused on complete tuples, are not computed); draws and decoding are the tuple's
        own. Equal to the default draw for draw, except that feature networks with
        batch statistics (BatchNorm in training mode) see each row once instead of once
        per tuple."""
        self.check_complete(batch)
        flat = J.reshape(len(self.names), -1)
        order = {n: m for m, n in enumerate(self.names)}
        features = self.joint.modality_features(batch.data)
        loc, raw = self.joint.head([f[flat[order[n]]] for n, f in zip(self.joint.features, features)])
        q = Normal(loc, self.scale_fn(raw))
        z = q.rsample((K,))
        repaired = repaired_batch(batch, self.names, J)
        lw = self.prior().log_prob(z).sum(-1) + self.log_likelihood_terms(repaired, z) - q.log_prob(z).sum(-1)
        return pooled_bound(lw, torch.full(lw.shape[1:], K, device=lw.device), estimator)

    def joint_log_weights(self, batch: Batch, K: int, proposal=None) -> tuple[Tensor, Tensor]:
        """K draws of `encode(batch)`: the joint encoder on complete rows, the product of
        observed experts elsewhere."""
        q = self.joint_proposal(batch) if proposal is None else proposal
        z = q.rsample((K,))
        lw = self.prior().log_prob(z).sum(-1) + self.log_likelihood_terms(batch, z) - q.log_prob(z).sum(-1)
        return lw, torch.full((batch.size,), K)
