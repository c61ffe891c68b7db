"""VCCA and VCCA-private (Wang, Yan, Lee & Livescu 2017, "Deep variational canonical
correlation analysis", arXiv:1610.03454): baselines of the CMMD paper's tables (§4).

VCCA: one shared latent z with prior p(z) = N(0, I), inferred from ONE view only, the view
available at test time (`observed`): q(z | x_o). Every view is generated from z,
p(x_m | z). The bound maximised for a sample (the VCCA lower bound of Wang et al. §3):

    L(x) = E_q(z|x_o)[ sum_m s_m log p(x_m | z) ] - KL(q(z | x_o) || p(z)).

VCCA-private adds a private latent h_m ~ N(0, I) per view with its own encoder
q(h_m | x_m) and decoders p(x_m | z, h_m) (the VCCA-private bound of Wang et al. §3.1):

    L(x) = E[ sum_m s_m log p(x_m | z, h_m) ] - KL(q(z | x_o) || p(z))
           - sum_m KL(q(h_m | x_m) || p(h_m)).

KL terms are analytic (Gaussian); the expectation uses K reparameterised draws. Views
other than `observed` may be missing in a row: their likelihood (and, for VCCA-private,
their private KL) is dropped, which leaves a valid bound on log p(x_observed parts), since
h_m of a missing view integrates out under its prior. The `observed` view must be present
in every row: z has no other encoder.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from mmdgm.batch import Batch, BatchError
from mmdgm.distributions import Distribution, Normal
from mmdgm.models.base import MODELS, ModelOutput, MultimodalVAE
from mmdgm.nets import DECODERS, ENCODERS
from mmdgm.registry import nearest


@dataclass
class Draws:
    """K draws of the latents for a batch of B rows: z (K, B, D) from q (the posterior of
    z given the observed view); for VCCA-private, per view m, h[m] (K, B, D_h) from
    q_h[m] = q(h_m | x_m)."""

    z: Tensor
    q: Normal
    h: dict[str, Tensor] = field(default_factory=dict)
    q_h: dict[str, Normal] = field(default_factory=dict)


@dataclass
class Posteriors:
    """The latents' posteriors for a batch, before any draw: q(z | x_o) and, for
    VCCA-private, q_h[m] = q(h_m | x_m); the `joint_proposal` of both models."""

    q: Normal
    q_h: dict[str, Normal] = field(default_factory=dict)


@dataclass
class Terms:
    """Per-row pieces of the bound: log_lik (K, B) = sum_m s_m log p(x_m | ...) over the
    observed views of each row; kl (B,) = KL(q(z | x_o) || p(z)); kl_private (B,) = sum
    over observed views of KL(q(h_m | x_m) || p(h_m)) (zero for VCCA)."""

    draws: Draws
    log_lik: Tensor
    kl: Tensor
    kl_private: Tensor

    @property
    def elbo(self) -> Tensor:
        """(B,): the Monte Carlo mean of log_lik minus the analytic KL terms."""
        return self.log_lik.mean(0) - self.kl - self.kl_private


@MODELS.register("vcca")
class VCCA(MultimodalVAE):
    """Shared z inferred from the `observed` view only; every view decoded from z.

    Options:
        observed: [the view q(z | x) conditions on] (default: [the first modality]); a list
            like CMMD's `observed`, of exactly one name. `self.view` is that name.
        K: reparameterised draws for the reconstruction expectation (Wang et al.: 1).
        dropout: dropout probability on the encoders' inputs during training (Wang et al.
            tune a dropout rate; where it acts is our choice, see docs/models.md).
    """

    def __init__(self, *args, observed: list[str] | None = None, K: int = 1, dropout: float = 0.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        name = type(self).__name__
        if self.posterior_cls is not Normal or self.prior_cls is not Normal:
            raise ValueError(
                f"{name} needs prior: normal and posterior: normal (Gaussian latents, analytic KL), got prior "
                f"{self.prior_cls.__name__}, posterior {self.posterior_cls.__name__}"
            )
        observed = self.names[:1] if observed is None else observed
        if isinstance(observed, str) or not isinstance(observed, (list, tuple)) or len(observed) != 1:
            raise ValueError(f"{name} infers z from one view: observed must be a list of one modality name, got {observed!r}")
        view = str(observed[0])
        if view not in self.modalities:
            raise ValueError(f"{name}: observed view {view!r}{nearest(view, self.names)} is not one of {self.names}")
        if K < 1:
            raise ValueError(f"{name}: K must be >= 1, got {K}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"{name}: dropout must be in [0, 1), got {dropout}")
        self.view = view
        self.observed = [view]
        self.K = K
        self.encoders = nn.ModuleDict({view: self.encoders[view]})
        self.input_dropout = nn.Dropout(dropout)

    @property
    def inference_modalities(self) -> list[str]:
        return [self.view]

    def posterior(self, name: str, x: Tensor) -> Normal:
        """q(z | x_observed) (input dropout in training mode)."""
        if name != self.view:
            raise BatchError(
                f"{type(self).__name__} infers z from {self.view!r} alone (Wang et al. 2017 condition on the "
                f"view available at test time); it has no encoder for {name!r}"
            )
        return super().posterior(name, self.input_dropout(x))

    def require_observed(self, batch: Batch) -> None:
        """Raise a BatchError naming the rows that lack the observed view."""
        missing = ~batch.mask[self.view]
        if missing.any():
            rows = torch.nonzero(missing).flatten()[:5].tolist()
            raise BatchError(
                f"{type(self).__name__} infers z from {self.view!r}, which samples {rows} lack; every row "
                f"needs it"
            )

    def encode(self, batch: Batch, modalities: list[str] | None = None) -> Normal:
        """q(z | x_observed); `modalities` must be None or [observed]."""
        names = [self.view] if modalities is None else self.check_names(modalities)
        if names != [self.view]:
            raise BatchError(
                f"{type(self).__name__} can condition on {self.view!r} only (its one encoder), not on {names}"
            )
        self.require_observed(batch)
        return self.posterior(self.view, batch.zero_missing().data[self.view])

    # ---- the latents; VCCA-private overrides these four --------------------------------
    def joint_proposal(self, batch: Batch) -> Posteriors:
        """q(z | x_o), for a batch with missing entries zeroed."""
        return Posteriors(self.posterior(self.view, batch.data[self.view]))

    def draws(self, batch: Batch, K: int, posteriors: Posteriors | None = None) -> Draws:
        """K reparameterised draws of the latents for a batch with missing entries zeroed,
        from `posteriors` (computed when None)."""
        q = self.posterior(self.view, batch.data[self.view]) if posteriors is None else posteriors.q
        return Draws(q.rsample((K,)), q)

    def decoder_input(self, name: str, d: Draws) -> Tensor:
        """What view `name`'s decoder reads: z."""
        return d.z

    def private_log_ratio(self, batch: Batch, d: Draws) -> Tensor:
        """sum over observed views of log p(h_m) - log q(h_m | x_m), (K, B); zero for VCCA."""
        return torch.zeros(d.z.shape[:-1], dtype=d.z.dtype, device=d.z.device)

    def private_kl(self, batch: Batch, d: Draws) -> Tensor:
        """sum over observed views of KL(q(h_m | x_m) || p(h_m)), (B,); zero for VCCA."""
        return torch.zeros(batch.size, dtype=d.z.dtype, device=d.z.device)

    # ---- the bound ---------------------------------------------------------------------
    def view_log_lik(self, batch: Batch, d: Draws) -> Tensor:
        """sum over views observed in each row of s_m log p(x_m | decoder input), (K, B)."""
        total = torch.zeros(d.z.shape[:-1], dtype=d.z.dtype, device=d.z.device)
        for name, spec in self.modalities.items():
            lik = self.lik_cls[name](self.decoders[name](self.decoder_input(name, d)), spec.likelihood_scale)
            lp = lik.log_prob_sum(batch.data[name], len(spec.shape))
            total = total + torch.where(batch.mask[name], lp * spec.llik_scale, torch.zeros_like(lp))
        return total

    def terms(self, batch: Batch, K: int) -> Terms:
        """The bound's per-row pieces for a validated batch with missing entries zeroed."""
        d = self.draws(batch, K)
        return Terms(d, self.view_log_lik(batch, d), d.q.kl(self.prior()).sum(-1), self.private_kl(batch, d))

    def forward(self, batch: Batch) -> ModelOutput:
        """Mean over rows of minus the bound (module docstring)."""
        batch.validate(self.modalities)
        self.require_observed(batch)
        t = self.terms(batch.zero_missing(), self.K)
        per_point = t.elbo
        loss = -per_point.mean()
        with torch.no_grad():
            metrics = {"loss": float(loss), "elbo": float(per_point.mean()), "kl": float(t.kl.mean())}
            if t.draws.h:
                metrics["kl_private"] = float(t.kl_private.mean())
        return ModelOutput(loss, metrics, per_point)

    def joint_log_weights(self, batch: Batch, K: int, proposal: Posteriors | None = None) -> tuple[Tensor, Tensor]:
        """lw = log p(z) + sum_m s_m log p(x_m | ...) - log q(z | x_o) (+ the private
        log-ratios), K draws per row: log p(x_observed) by importance sampling with the
        model's own inference networks as proposal."""
        self.require_observed(batch)
        d = self.draws(batch, K, proposal)
        lw = self.prior().log_prob(d.z).sum(-1) - d.q.log_prob(d.z).sum(-1)
        lw = lw + self.view_log_lik(batch, d) + self.private_log_ratio(batch, d)
        return lw, torch.full((batch.size,), K, device=lw.device)

    # ---- generation ----------------------------------------------------------------------
    @torch.no_grad()
    def cross_generate(self, batch: Batch, source: str | list[str], target: str, mean: bool = False) -> Tensor:
        """Decoder mean of `target` from one z of q(z | x_observed) (`source` must be the
        observed view); VCCA-private draws h_target from its prior (`mean`: its mean)."""
        self.encode(batch, [source] if isinstance(source, str) else list(source))
        return self.generate_from(batch.zero_missing(), self.check_names([target])[0], mean, own_private=False)

    @torch.no_grad()
    def reconstruct(self, batch: Batch, mean: bool = False) -> dict[str, Tensor]:
        """Each view decoded from z ~ q(z | x_observed) (VCCA-private: and its own h_m ~ q(h_m | x_m))."""
        self.require_observed(batch)
        batch = batch.zero_missing()
        return {n: self.generate_from(batch, n, mean, own_private=True) for n in self.names}

    @torch.no_grad()
    def picture_grids(self, batch: Batch, names: list[str], n: int) -> dict[str, list[Tensor]]:
        """"joint" (prior draws) and "from-<observed view>" (its row above the generations);
        no cross generation from the other views, which have no encoder."""
        joint = self.sample(n, names)
        grids = {"joint": [joint[k] for k in names]}
        if self.view in names:
            grids[f"from-{self.view}"] = [batch.data[self.view]] + [self.cross_generate(batch, self.view, t) for t in names]
        return grids

    def latent_kl_pairs(self, batch: Batch) -> dict[str, tuple[Distribution, Distribution, Tensor]]:
        """q(z | x_observed) against p(z) on rows observing the view (CMMD Fig. 2's shared
        inference distribution of VCCA)."""
        return {f"q(z|{self.view}) || p(z)": (self.posterior(self.view, batch.data[self.view]), self.prior(),
                                               batch.mask[self.view])}

    def generate_from(self, batch: Batch, target: str, mean: bool, own_private: bool) -> Tensor:
        """Decoder mean of `target` from z ~ q(z | x_observed) (`mean`: its mean); VCCA-private
        takes h_target from q(h_target | x_target) if `own_private`, else from its prior."""
        q = self.posterior(self.view, batch.data[self.view])
        d = Draws(q.mean if mean else q.sample(), q)
        return self.likelihood(target, self.decoder_input(target, d)).mean


@MODELS.register("vcca-private")
class VCCAPrivate(VCCA):
    """VCCA plus a private latent h_m per view (options of VCCA, and `private_dim`: D_h).

    Each view's private encoder is its registered encoder network with D_h outputs; its
    decoder reads the concatenation [z, h_m] (D + D_h inputs). Samples and cross
    generations draw the private latents from their prior N(0, I).
    """

    def __init__(
        self, *args, observed: list[str] | None = None, K: int = 1, dropout: float = 0.0, private_dim: int = 10,
        **kwargs
    ) -> None:
        super().__init__(*args, observed=observed, K=K, dropout=dropout, **kwargs)
        if private_dim < 1:
            raise ValueError(f"VCCAPrivate: private_dim must be >= 1, got {private_dim}")
        self.private_dim = private_dim
        specs = list(self.modalities.values())
        self.private_encoders = nn.ModuleDict(
            {m.name: ENCODERS.get(m.encoder)(m.shape, private_dim, **m.encoder_kwargs) for m in specs}
        )
        self.decoders = nn.ModuleDict(
            {m.name: DECODERS.get(m.decoder)(m.shape, self.latent_dim + private_dim, **m.decoder_kwargs) for m in specs}
        )

    def private_prior(self, like: Tensor) -> Normal:
        """p(h_m) = N(0, I), parameters (D_h,)."""
        zeros = torch.zeros(self.private_dim, dtype=like.dtype, device=like.device)
        return Normal(zeros, torch.ones_like(zeros))

    def private_posterior(self, name: str, x: Tensor) -> Normal:
        """q(h_m | x_m) with parameters (B, D_h) (input dropout in training mode)."""
        loc, raw = self.private_encoders[name](self.input_dropout(x))
        return Normal(loc, self.scale_fn(raw))

    def joint_proposal(self, batch: Batch) -> Posteriors:
        """q(z | x_o) and every private q(h_m | x_m)."""
        p = super().joint_proposal(batch)
        p.q_h = {name: self.private_posterior(name, batch.data[name]) for name in self.names}
        return p

    def draws(self, batch: Batch, K: int, posteriors: Posteriors | None = None) -> Draws:
        d = super().draws(batch, K, posteriors)
        for name in self.names:
            d.q_h[name] = self.private_posterior(name, batch.data[name]) if posteriors is None else posteriors.q_h[name]
            d.h[name] = d.q_h[name].rsample((K,))
        return d

    def decoder_input(self, name: str, d: Draws) -> Tensor:
        """[z, h_m]."""
        return torch.cat([d.z, d.h[name]], -1)

    def masked_sum(self, batch: Batch, values: dict[str, Tensor]) -> Tensor:
        """sum_m values[m] over the views observed in each row (rows on the last axis)."""
        return sum(torch.where(batch.mask[n], v, torch.zeros_like(v)) for n, v in values.items())

    def private_log_ratio(self, batch: Batch, d: Draws) -> Tensor:
        return self.masked_sum(batch, {
            n: self.private_prior(h).log_prob(h).sum(-1) - d.q_h[n].log_prob(h).sum(-1) for n, h in d.h.items()
        })

    def private_kl(self, batch: Batch, d: Draws) -> Tensor:
        return self.masked_sum(batch, {n: q.kl(self.private_prior(q.loc)).sum(-1) for n, q in d.q_h.items()})

    def latent_kl_pairs(self, batch: Batch) -> dict[str, tuple[Distribution, Distribution, Tensor]]:
        """VCCA's pair and each private posterior q(h_m | x_m) against p(h_m) on rows observing
        m (CMMD Fig. 2's private inference distributions)."""
        pairs = super().latent_kl_pairs(batch)
        for m in self.names:
            q = self.private_posterior(m, batch.data[m])
            pairs[f"q(h|{m}) || p(h)"] = (q, self.private_prior(q.loc), batch.mask[m])
        return pairs

    def likelihood(self, name: str, z: Tensor) -> Distribution:
        """p(x_m | z, h_m) for z (..., D) and h_m ~ p(h_m), or for z = [z, h_m] (..., D + D_h)."""
        if z.shape[-1] == self.latent_dim:
            z = torch.cat([z, self.private_prior(z).sample(z.shape[:-1])], -1)
        return super().likelihood(name, z)

    def generate_from(self, batch: Batch, target: str, mean: bool, own_private: bool) -> Tensor:
        q = self.posterior(self.view, batch.data[self.view])
        z = q.mean if mean else q.sample()
        if own_private:
            qh = self.private_posterior(target, batch.data[target])
            h = qh.mean if mean else qh.sample()
        else:
            prior = self.private_prior(z)
            h = prior.loc.expand(*z.shape[:-1], -1) if mean else prior.sample(z.shape[:-1])
        return super().likelihood(target, torch.cat([z, h], -1)).mean
