"""The shared contract of every multimodal model: named modalities, uniform verbs."""

from __future__ import annotations

import itertools

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from mmdgm.batch import Batch, BatchError, repaired_batch
from mmdgm.distributions import DISTRIBUTIONS, SCALES, Distribution
from mmdgm.modalities import Modality
from mmdgm.nets import DECODERS, ENCODERS
from mmdgm.registry import Registry, nearest

MODELS: Registry = Registry("model")


def chunked_log_mean_weight(draw: Callable[[int], tuple[Tensor, Tensor]], K: int, chunk: int) -> Tensor:
    """log of the mean importance weight over K draws per proposal component, in chunks.

    `draw(k)` returns the log-weights of k more draws per component, pooled into (N, B)
    (entries of absent components at the most negative float), and the number of draws
    (B,) they hold per data point. Returns (B,): log sum exp(lw) - log count.
    """
    if K < 1 or chunk < 1:
        raise ValueError(f"K and chunk must be >= 1, got K={K}, chunk={chunk}")
    total = count = None
    done = 0
    while done < K:
        k = min(chunk, K - done)
        lw, n = draw(k)
        part = torch.logsumexp(lw, 0)
        total = part if total is None else torch.logaddexp(total, part)
        count = n if count is None else count + n
        done += k
    return total - count.to(total.dtype).log()

PRIOR_SCALES = {
    "softmax": lambda theta: torch.softmax(theta, -1) * theta.shape[-1],
    "free": torch.exp,
}


def at_least(name: str, value: float, minimum: float) -> None:
    """Raise a ValueError naming the option if `value` < `minimum`."""
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def nonempty_subsets(names: list[str]) -> list[list[str]]:
    """Every non-empty subset of `names`, by size, each in the order of `names`."""
    return [list(c) for r in range(1, len(names) + 1) for c in itertools.combinations(names, r)]


@dataclass
class ModelOutput:
    """What `forward` returns: the loss to minimise, named scalar metrics and the
    per-data-point objective (B,) whose negative mean is the loss (with gradients; for
    surrogate objectives such as DReG its values are the surrogate's, its gradient the
    estimator's)."""

    loss: Tensor
    metrics: dict[str, float] = field(default_factory=dict)
    per_point: Tensor | None = None


BOUND_ESTIMATORS = ("iwae", "cubo")


def pooled_bound(lw: Tensor, count: Tensor, estimator: str) -> Tensor:
    """Per-data-point estimate from pooled log-weights (N, B), `count` (B,) of them real:
    "iwae" log (1/n) sum exp lw (Burda et al.), "cubo" (1/2) log (1/n) sum exp 2 lw (CUBO_2,
    Dieng et al. 2017; "Relating by contrasting" eq. 5). Padding entries must be -inf or
    the most negative float."""
    log_n = count.to(lw.dtype).log()
    if estimator == "iwae":
        return torch.logsumexp(lw, 0) - log_n
    if estimator == "cubo":
        return (torch.logsumexp(2 * lw, 0) - log_n) / 2
    raise ValueError(f"unknown bound estimator {estimator!r}{nearest(estimator, list(BOUND_ESTIMATORS))}")


class TrainedModel(nn.Module):
    """What the trainer asks of every model: parameter groups, their update schedule and
    the loss of each update (defaults: one group, one update of `forward`)."""

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters by group, one optimiser each (`train.optimizers.<group>`).
        Default: one group "model" with every trainable parameter."""
        return {"model": [p for p in self.parameters() if p.requires_grad]}

    def schedule(self) -> list[tuple[str, int]]:
        """One training step: (group, updates) in order; each update is one
        `training_step(batch, group)` on the step's batch followed by a step of the group's
        optimiser. Default: one update of "model"."""
        return [("model", 1)]

    def training_step(self, batch: Batch, group: str) -> ModelOutput:
        """The loss whose gradient updates `group`. Default: `forward(batch)`."""
        return self(batch)


class MultimodalVAE(TrainedModel):
    """Encoders, decoders and prior of a latent-variable model over named modalities.

    Args:
        modalities: the modality specs (order fixes the order of strata and plots).
        latent_dim: D.
        prior / posterior: distribution names ("laplace", "normal").
        posterior_scale: scale parameterisation of the encoders ("softmax", "softplus", "exp").
        prior_scale: "softmax" (scales sum to D, MMVAE) or "free" (exp of a parameter).
        learn_prior: whether the prior scale is trained (MMVAE's `learn-prior`).

    A subclass with `modality_networks = False` builds its own networks and prior (CMMD's
    networks over concatenated modalities) and overrides the verbs that use them.

    `generative` says whether the model has a generative process (sample, decode, cross
    generation, likelihoods); `inference_modalities` names the modalities `encode` can
    condition on (all of them unless a model infers its latent from fewer, as VCCA does).
    """

    modality_networks: bool = True
    generative: bool = True

    def __init__(
        self,
        modalities: list[Modality],
        latent_dim: int,
        prior: str = "laplace",
        posterior: str = "laplace",
        posterior_scale: str = "softmax",
        prior_scale: str = "softmax",
        learn_prior: bool = False,
    ) -> None:
        super().__init__()
        if len({m.name for m in modalities}) != len(modalities):
            raise ValueError("modality names must be unique")
        if len(modalities) < 2:
            raise ValueError(f"{type(self).__name__} needs at least two modalities")
        if prior_scale not in PRIOR_SCALES:
            raise ValueError(f"unknown prior_scale {prior_scale!r}{nearest(prior_scale, list(PRIOR_SCALES))}")
        self.modalities = {m.name: m for m in modalities}
        self.latent_dim = latent_dim
        self.prior_cls = DISTRIBUTIONS.get(prior)
        self.posterior_cls = DISTRIBUTIONS.get(posterior)
        self.scale_fn = SCALES.get(posterior_scale)
        self.prior_scale_fn = PRIOR_SCALES[prior_scale]
        if not self.modality_networks:
            return
        self.encoders = nn.ModuleDict(
            {m.name: ENCODERS.get(m.encoder)(m.shape, latent_dim, **m.encoder_kwargs) for m in modalities}
        )
        self.decoders = nn.ModuleDict(
            {m.name: DECODERS.get(m.decoder)(m.shape, latent_dim, **m.decoder_kwargs) for m in modalities}
        )
        for name, decoder in self.decoders.items():
            if hasattr(decoder, "tie_weights"):  # a decoder sharing its encoder's weights (cub-sentence)
                decoder.tie_weights(self.encoders[name])
        self.lik_cls = {m.name: DISTRIBUTIONS.get(m.likelihood) for m in modalities}
        self.register_buffer("prior_loc", torch.zeros(latent_dim))
        self.prior_theta = nn.Parameter(torch.zeros(latent_dim), requires_grad=learn_prior)  # scale 1

    @property
    def names(self) -> list[str]:
        return list(self.modalities)

    @property
    def inference_modalities(self) -> list[str]:
        """The modalities `encode` may condition on (every subset of them, unless
        `inference_subsets` says otherwise)."""
        return self.names

    @property
    def inference_subsets(self) -> list[list[str]]:
        """The sets of modalities `encode` accepts: every non-empty subset of
        `inference_modalities`, in their order."""
        return nonempty_subsets(self.inference_modalities)

    def check_names(self, names: list[str] | None) -> list[str]:
        """Validate a list of modality names (None means all)."""
        if names is None:
            return self.names
        for n in names:
            if n not in self.modalities:
                raise BatchError(f"unknown modality {n!r}{nearest(n, self.names)}; the model has {self.names}")
        return list(names)

    def prior(self) -> Distribution:
        """p(z), parameters of shape (D,)."""
        return self.prior_cls(self.prior_loc, self.prior_scale_fn(self.prior_theta))

    def posterior(self, name: str, x: Tensor) -> Distribution:
        """q(z | x_m) with parameters (B, D)."""
        loc, raw = self.encoders[name](x)
        return self.posterior_cls(loc, self.scale_fn(raw))

    def likelihood(self, name: str, z: Tensor) -> Distribution:
        """p(x_m | z) for z of shape (..., D); parameters (..., *shape)."""
        return self.lik_cls[name](self.decoders[name](z), self.modalities[name].likelihood_scale)

    def log_likelihood_terms(self, batch: Batch, z: Tensor) -> Tensor:
        """sum_m s_m log p(x_m | z) over observed modalities, z (..., B, D) -> (..., B)."""
        total = torch.zeros(z.shape[:-1], dtype=z.dtype, device=z.device)
        for name, spec in self.modalities.items():
            lp = self.likelihood(name, z).log_prob_sum(batch.data[name], len(spec.shape))
            total = total + torch.where(batch.mask[name], lp * spec.llik_scale, torch.zeros_like(lp))
        return total

    def decode(self, z: Tensor, modalities: list[str] | None = None) -> dict[str, Distribution]:
        """p(x_m | z) for each requested modality."""
        return {n: self.likelihood(n, z) for n in self.check_names(modalities)}

    @torch.no_grad()
    def sample(self, n: int, modalities: list[str] | None = None) -> dict[str, Tensor]:
        """Joint generation: decoder means for n draws from the prior."""
        z = self.prior().sample((n,))
        return {k: d.mean for k, d in self.decode(z, modalities).items()}

    @torch.no_grad()
    def cross_generate(self, batch: Batch, source: str | list[str], target: str, mean: bool = False) -> Tensor:
        """Decoder mean of `target` from one z of the posterior given `source` (a name or subset)."""
        sources = [source] if isinstance(source, str) else list(source)
        q = self.encode(batch, sources)
        z = q.mean if mean else q.sample()
        return self.likelihood(self.check_names([target])[0], z).mean

    @torch.no_grad()
    def reconstruct(self, batch: Batch, mean: bool = False) -> dict[str, Tensor]:
        """Each modality decoded from its own posterior."""
        return {n: self.cross_generate(batch, n, n, mean) for n in self.names}

    @torch.no_grad()
    def picture_grids(self, batch: Batch, names: list[str], n: int) -> dict[str, list[Tensor]]:
        """Named grids of image rows (N, C, H, W) of the image modalities `names` for the
        trainer's pictures: "joint" (decoder means of `n` prior draws, one draw per column)
        and "from-<source>" (the source row of `batch` above its cross generations)."""
        joint = self.sample(n, names)
        grids = {"joint": [joint[k] for k in names]}
        for source in names:
            grids[f"from-{source}"] = [batch.data[source]] + [self.cross_generate(batch, source, t) for t in names]
        return grids

    def text_rows(self, batch: Batch, names: list[str], n: int) -> dict[str, tuple[str, Tensor]]:
        """Labelled (text modality, strings) of the text modalities `names` for the trainer's
        text file: "joint <t>" (`n` prior draws, the joint grid's), then per source modality
        "data <source>" (if it is text) and "<source> -> <t>" (its cross generations)."""
        rows = {f"joint {t}": (t, x) for t, x in self.sample(n, names).items()}
        for source in self.names:
            if source in names:
                rows[f"data {source}"] = (source, batch.data[source])
            for t in names:
                rows[f"{source} -> {t}"] = (t, self.cross_generate(batch, source, t))
        return rows

    def latent_kl_pairs(self, batch: Batch) -> dict[str, tuple[Distribution, Distribution, Tensor]]:
        """Named (q, p, rows) whose per-dimension KL(q || p) the posterior-collapse measure
        scores on the rows (B,) bool: each unimodal posterior q(z | x_m) against the prior
        p(z) on rows observing m, for a batch with missing entries zeroed."""
        prior = self.prior()
        return {f"q(z|{m}) || p(z)": (self.posterior(m, batch.data[m]), prior, batch.mask[m]) for m in self.names}

    def initialise_from_data(self, dataset) -> None:
        """Data-dependent initialisation before the first step (e.g. MEME's pseudo-samples);
        called by `run.make_trainer` under the model's init seed. Nothing by default."""

    def encode(self, batch: Batch, modalities: list[str] | None = None):
        """The joint posterior given the subset `modalities` (None: all observed)."""
        raise NotImplementedError

    def joint_proposal(self, batch: Batch):
        """The encoder outputs that `joint_log_weights` draws from, for a validated batch
        with missing entries zeroed; `log_likelihood` computes them once per batch and
        reuses them for every chunk of draws. Default: `encode(batch)`."""
        return self.encode(batch)

    def joint_log_weights(self, batch: Batch, K: int, proposal=None) -> tuple[Tensor, Tensor]:
        """Reparameterised log-weights log p(z, x_O) - log q(z | x_O) of K draws per proposal
        component of the model's joint posterior, for a validated batch with missing
        entries zeroed: pooled (N, B) (padding at the most negative float) and the number
        of real draws per data point (B,). `proposal`: `joint_proposal(batch)`, computed
        when None (the same draws either way: encoders draw no random numbers in eval mode)."""
        raise NotImplementedError

    def objective_is_bound(self) -> bool:
        """Whether `forward`'s per_point is a lower bound on log p(x_observed) at every
        training step (False for a model that anneals its KL term from 0)."""
        return True

    def bound(self, batch: Batch, K: int, estimator: str = "iwae") -> Tensor:
        """Per-data-point estimate of log p(x_observed), shape (B,), with gradients: the
        IWAE lower bound or the CUBO upper bound (`pooled_bound`) of `joint_log_weights`."""
        batch.validate(self.modalities)
        return pooled_bound(*self.joint_log_weights(batch.zero_missing(), K), estimator)

    def repaired_bounds(self, batch: Batch, J: Tensor, K: int, estimator: str = "iwae") -> Tensor:
        """`bound` of every re-paired tuple of the complete `batch`, shape (R * n,): J (M, R, n)
        holds row indices, tuple r * n + i takes modality `names[m]` from row J[m, r, i] (the
        contrastive objective's negatives). Default: `bound` of the tuples as one batch; a
        model may share work between tuples that hold the same items."""
        return self.bound(repaired_batch(batch, self.names, J), K, estimator)

    def check_complete(self, batch: Batch) -> None:
        """Validate a batch for a `repaired_bounds` override: every modality in every row."""
        batch.validate(self.modalities)
        if not batch.complete:
            raise ValueError("repaired_bounds needs a batch with every modality observed in every row")

    @torch.no_grad()
    def log_likelihood(self, batch: Batch, K: int = 1000, chunk: int = 100) -> Tensor:
        """IWAE estimate of log p(x_observed) with K draws per proposal component of
        `joint_log_weights`, accumulated over chunks of draws, the encoders run once
        (`joint_proposal`); shape (B,)."""
        batch.validate(self.modalities)
        batch = batch.zero_missing()
        proposal = self.joint_proposal(batch)
        return chunked_log_mean_weight(lambda k: self.joint_log_weights(batch, k, proposal), K, chunk)

    def forward(self, batch: Batch) -> ModelOutput:
        """The training objective (for adversarial models, the generator's); also what the
        trainer's test-set evaluation averages."""
        raise NotImplementedError
