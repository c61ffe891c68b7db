"""MEME: multimodal VAEs through mutual supervision (Joy, Shi, Torr, Rainforth, Schmon &
Siddharth, ICLR 2022), for two modalities s and t.

Each modality m has an encoder q(z | m) and a decoder p(m | z). In the direction s -> t
(§3.2, Fig. 2) q(z | s) is the posterior, p(s | z) the decoder, t's encoder is the
conditional prior p(z | t) and t's decoder is q(t | z) (the weight sharing of appendix C).
Per pair, with one z ~ q(z | s) (eq. 6 and appendix B):

    L_{s->t} = w * [log p(s|z) + log p(z|t) - log q(z|s) - log q(t|z)] + log q^(t|s) + log p(t),
    w = stop_gradient( q(t|z) / q^(t|s) ),
    log q^(t|s) = log (1/(K+1)) sum_{z' in {z, z'_1..z'_K}} q(t|z'),  z'_k ~ q(z|s) fresh,

where the training sample z is included in the estimate of q^(t|s) (appendix D): it bounds
log q(t|z) - log q^(t|s) by log(K+1), so w cannot overflow. log p(t) is estimated by the
unimodal bound L(t) below (the paper's eq. 6 keeps log p(t); the authors' code drops it:
option `log_p_other="drop"`). A paired row takes L_Bi = (L_{s->t} + L_{t->s}) / 2 (eq. 2;
the code sums the two); a row with only s observed takes (eq. 3-4)

    L(s) = log p(s|z) + log p_lambda^t(z) - log q(z|s),  z ~ q(z|s),
    p_lambda^t(z) = (1/N) sum_i p(z | u_i^t),

a VampPrior of N learnable pseudo-samples u^t of the missing modality passed through its
encoder (initialised from real samples of t by `initialise_from_data`). The code weights
log q^(t|s) by 10 (`qts_weight`, default 1 as in the paper). `directions="s->t"` trains
the single direction of eq. (6) on paired rows instead of L_Bi: the unidirectional models
of the paper's Table 2 ('flipped' marginal likelihoods, `directional_log_weights` and the
`meme_directional_likelihood` metric). Posteriors must be Gaussian
(appendix F's W2 relatedness and the paper's setting). The base class's fixed prior p(z)
is not part of MEME's objective; metrics that need a reference scale (traversals) read it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from mmdgm.batch import Batch
from mmdgm.data import MultimodalDataset
from mmdgm.distributions import MixtureOfExperts, Normal
from mmdgm.models.base import MODELS, ModelOutput, MultimodalVAE, at_least
from mmdgm.models.mvae import require_gaussian
from mmdgm.objectives.estimators import log_mean_exp

LOG_P_OTHER = ("elbo", "drop")


@MODELS.register("meme")
class MEME(MultimodalVAE):
    """Mutual supervision between two modalities (module docstring for the objective).

    Options: `inner_samples` K for q^(t|s) (the code: 10), `n_pseudo` pseudo-samples per
    modality (the paper's ablation: 1 to 100; the code: the batch size), `qts_weight`
    (1; the code: 10), `log_p_other` ("elbo": L(t) estimates log p(t); "drop": the code),
    `directions` ("both": L_Bi, eq. 2; "s->t" with modality names: eq. 6 alone, Table 2).
    """

    def __init__(self, *args, inner_samples: int = 10, n_pseudo: int = 100, qts_weight: float = 1.0,
                 log_p_other: str = "elbo", directions: str = "both", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        require_gaussian(self, "MEME")
        if len(self.modalities) != 2:
            raise ValueError(f"MEME is implemented for exactly two modalities, got {len(self.modalities)}: "
                             "appendix E's extension to M > 2 (an explicit mixture or product prior) is not")
        at_least("inner_samples", inner_samples, 1)
        at_least("n_pseudo", n_pseudo, 1)
        if log_p_other not in LOG_P_OTHER:
            raise ValueError(f"log_p_other must be one of {LOG_P_OTHER}, got {log_p_other!r}")
        self.inner_samples, self.qts_weight, self.log_p_other = inner_samples, qts_weight, log_p_other
        self.directions = self.parse_directions(directions)
        self.pseudo = nn.ParameterDict({
            n: nn.Parameter(torch.rand(n_pseudo, *m.shape)) for n, m in self.modalities.items()
        })

    def initialise_from_data(self, dataset: MultimodalDataset) -> None:
        """Pseudo-samples u^m := random observed samples of modality m (torch's RNG)."""
        for name, u in self.pseudo.items():
            rows = dataset.mask[name].nonzero().flatten()
            pick = rows[torch.randint(len(rows), (u.shape[0],))]
            x = dataset.batch(pick).data[name]
            if not torch.is_floating_point(x):  # caption token indices: one-hot pseudo-captions
                x = nn.functional.one_hot(x, u.shape[-1])
            with torch.no_grad():
                u.copy_(x)

    def parse_directions(self, directions: str) -> list[tuple[str, str]]:
        """"both" -> both (s, t) orders; "s->t" -> [(s, t)] (names checked)."""
        s, t = self.names
        if directions == "both":
            return [(s, t), (t, s)]
        pair = tuple(directions.split("->"))
        if pair not in ((s, t), (t, s)):
            raise ValueError(f"directions must be 'both', '{s}->{t}' or '{t}->{s}', got {directions!r}")
        return [pair]

    def other(self, name: str) -> str:
        return next(n for n in self.names if n != name)

    def pseudo_prior_log_prob(self, name: str, z: Tensor) -> Tensor:
        """log p_lambda^m(z) = log (1/N) sum_i p(z | u_i^m), z (..., D) -> (...)."""
        q = self.posterior(name, self.pseudo[name])
        lp = q.log_prob(z.unsqueeze(-2)).sum(-1)  # (..., N)
        return log_mean_exp(lp, -1)

    def log_lik(self, name: str, z: Tensor, x: Tensor) -> Tensor:
        spec = self.modalities[name]
        return self.likelihood(name, z).log_prob_sum(x, len(spec.shape)) * spec.llik_scale

    def unimodal_bound(self, batch: Batch, name: str, q: Normal | None = None) -> Tensor:
        """L(m) of eq. (4) per row, one z ~ q(z | m), the other modality's pseudo-sample prior.
        `q`: q(z | m) of these rows when already computed."""
        q = self.posterior(name, batch.data[name]) if q is None else q
        z = q.rsample()
        return (self.log_lik(name, z, batch.data[name]) + self.pseudo_prior_log_prob(self.other(name), z)
                - q.log_prob(z).sum(-1))

    def log_q_hat(self, q: Normal, t: str, x_t: Tensor, log_qt: Tensor) -> Tensor:
        """log q^(t|s): log-mean-exp of q(t|z') over K fresh z' ~ q(z|s) and the training
        sample's own log q(t|z) (`log_qt`, appendix D)."""
        fresh = q.rsample((self.inner_samples,))
        return log_mean_exp(torch.cat([log_qt[None], self.log_lik(t, fresh, x_t)]), 0)

    def directional_bound(self, batch: Batch, s: str, t: str, posteriors: dict[str, Normal] | None = None) -> Tensor:
        """L_{s->t} per row (module docstring), the stop-gradient weight included.
        `posteriors`: `joint_proposal(batch)` (computed when None); q(z|t) serves as the
        conditional prior and as L(t)'s posterior, so each encoder sees the rows once."""
        x_s, x_t = batch.data[s], batch.data[t]
        posteriors = self.joint_proposal(batch) if posteriors is None else posteriors
        q, prior = posteriors[s], posteriors[t]
        z = q.rsample()
        log_qt = self.log_lik(t, z, x_t)
        log_qts = self.log_q_hat(q, t, x_t, log_qt)
        w = torch.exp(log_qt - log_qts).detach()
        inner = self.log_lik(s, z, x_s) + prior.log_prob(z).sum(-1) - q.log_prob(z).sum(-1) - log_qt
        total = w * inner + self.qts_weight * log_qts
        if self.log_p_other == "elbo":
            total = total + self.unimodal_bound(batch, t, prior)
        return total

    def forward(self, batch: Batch) -> ModelOutput:
        """Mean over rows of -L: L_Bi (or the one trained direction) on paired rows, L(m) on
        rows observing m alone (eq. 5). Each bound is computed on its own rows only (in that
        order: paired, s alone, t alone), so unpaired rows cost no inner samples."""
        batch.validate(self.modalities)
        batch = batch.zero_missing()
        s, t = self.names
        has_s, has_t = batch.mask[s], batch.mask[t]
        paired = has_s & has_t
        per_point = torch.zeros(batch.size, device=paired.device)
        bounds = ((paired, self.bidirectional_bound),
                  (has_s & ~has_t, lambda rows: self.unimodal_bound(rows, s)),
                  (has_t & ~has_s, lambda rows: self.unimodal_bound(rows, t)))
        for rows, bound in bounds:
            index = rows.nonzero().flatten()
            if len(index):
                value = bound(batch.select(index))
                per_point = per_point.to(value.dtype).index_put((index,), value)
        loss = -per_point.mean()
        with torch.no_grad():
            n_paired = int(paired.sum())
            metrics = {"loss": float(loss), "paired_fraction": n_paired / batch.size,
                       "bound_paired": float(per_point[paired].mean()) if n_paired else math.nan}
        return ModelOutput(loss, metrics, per_point)

    def bidirectional_bound(self, batch: Batch) -> Tensor:
        """L_Bi per row: the mean of the trained directions' bounds (eq. 2; one direction: eq. 6),
        both sharing one encoding of each modality."""
        posteriors = self.joint_proposal(batch)
        return sum(self.directional_bound(batch, a, b, posteriors) for a, b in self.directions) / len(self.directions)

    def encode(self, batch: Batch, modalities: list[str] | None = None) -> MixtureOfExperts:
        """q(z | x_m) for one modality; for both, the equal mixture of the two posteriors
        (MEME has no joint posterior; each row's posterior is its observed experts' mixture)."""
        names = self.check_names(modalities)
        batch = batch.zero_missing()
        experts = [self.posterior(n, batch.data[n]) for n in names]
        return MixtureOfExperts(experts, torch.stack([batch.mask[n] for n in names]))

    @torch.no_grad()
    def sample(self, n: int, modalities: list[str] | None = None) -> dict[str, Tensor]:
        """Joint generation: z from the equal mixture of both pseudo-sample priors."""
        names = self.check_names(modalities)
        comps = [self.posterior(m, self.pseudo[m]) for m in self.names]
        loc, scale = torch.cat([c.loc for c in comps]), torch.cat([c.scale for c in comps])
        pick = torch.randint(loc.shape[0], (n,), device=loc.device)
        z = Normal(loc[pick], scale[pick]).sample()
        return {k: d.mean for k, d in self.decode(z, names).items()}

    def joint_proposal(self, batch: Batch) -> dict[str, Normal]:
        """Each unimodal posterior q(z | x_m), the proposals of `directional_log_weights`."""
        return {m: self.posterior(m, batch.data[m]) for m in self.names}

    def directional_log_weights(
        self, batch: Batch, K: int, proposal: dict[str, Normal] | None = None
    ) -> dict[tuple[str, str], tuple[Tensor, Tensor]]:
        """For each direction (s, t), log-weights (K, B) of its two factors of
        p(s, t) = p(t) p(s|t): log p(s|z) + log p(z|t) - log q(z|s), z ~ q(z|s) (an IWAE
        estimate of log p(s|t) = log int p(s|z) p(z|t) dz, t's encoder as the conditional
        prior), and log p(t|z) + log p_lambda^s(z) - log q(z|t), z ~ q(z|t) (log p(t) under
        s's pseudo-sample prior). One set of K draws per posterior serves both directions.
        Values are meaningful for rows observing both modalities. `proposal`:
        `joint_proposal(batch)` (computed when None)."""
        q = self.joint_proposal(batch) if proposal is None else proposal
        z = {m: q[m].rsample((K,)) for m in self.names}
        own = {m: self.log_lik(m, z[m], batch.data[m]) - q[m].log_prob(z[m]).sum(-1) for m in self.names}
        out = {}
        for s, t in ((self.names[0], self.names[1]), (self.names[1], self.names[0])):
            out[(s, t)] = (own[s] + q[t].log_prob(z[s]).sum(-1), own[t] + self.pseudo_prior_log_prob(s, z[t]))
        return out

    def joint_log_weights(
        self, batch: Batch, K: int, proposal: dict[str, Normal] | None = None
    ) -> tuple[Tensor, Tensor]:
        """Importance weights of the model's density (module docstring), K per row.

        One modality observed: p(m) = int p(m|z) p_lambda^other(z) dz with proposal q(z|m).
        Both: direction s->t's p(s, t) = p(t) int p(s|z) p(z|t) dz as the product of two
        independent estimates (`directional_log_weights`), likewise t->s; the 2K weights
        are pooled, i.e. the density is the equal mixture of the two directions' p(s, t)
        (the bidirectional objective trains both)."""
        s, t = self.names
        weights = self.directional_log_weights(batch, K, proposal)
        (s_given_t, marg_t), (t_given_s, marg_s) = weights[(s, t)], weights[(t, s)]
        both = torch.cat([s_given_t + marg_t, t_given_s + marg_s])
        has_s, has_t = batch.mask[s], batch.mask[t]
        floor = torch.finfo(both.dtype).min
        single = torch.where(has_s, marg_s, marg_t)
        lw = torch.where((has_s & has_t)[None], both, torch.cat([single, torch.full_like(single, floor)]))
        count = torch.where(has_s & has_t, 2 * K, K)
        return lw, count
