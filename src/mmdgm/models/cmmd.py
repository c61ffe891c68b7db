"""CMMD: the conditional multimodal discriminative model (Mancisidor, Kampffmeyer, Aas &
Jenssen, "Discriminative Multimodal Learning via Conditional Priors in Generative Models",
arXiv:2110.04616)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmdgm.batch import Batch, BatchError
from mmdgm.distributions import Bernoulli, Distribution, Normal
from mmdgm.models.base import MODELS, ModelOutput, MultimodalVAE, at_least
from mmdgm.nets.layers import ClampedSigmoid, activation
from mmdgm.objectives.mmd import mmd
from mmdgm.registry import nearest

OBJECTIVES = ("paper", "code")
LIKELIHOODS = {"normal": Normal, "bernoulli": Bernoulli}


def hidden_layers(sizes: list[int], act: str, dropout: float) -> nn.Sequential:
    """Linear layers of the given sizes, each followed by `act` and (if dropout > 0) a
    dropout layer, as in the authors' networks (dropout after every hidden activation)."""
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), activation(act)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class GaussianNet(nn.Module):
    """(..., in_dim) -> hidden layers -> two linear heads (loc, raw scale) of size out_dim."""

    def __init__(self, in_dim: int, hidden: list[int], out_dim: int, act: str, dropout: float) -> None:
        super().__init__()
        self.body = hidden_layers([in_dim, *hidden], act, dropout)
        width = hidden[-1] if hidden else in_dim
        self.loc = nn.Linear(width, out_dim)
        self.raw_scale = nn.Linear(width, out_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.body(x)
        return self.loc(h), self.raw_scale(h)


class MissingDecoder(nn.Module):
    """p(x_missing | z, x_observed): one body over [z, x_o] and, per missing modality, a
    location head plus (Gaussian likelihood) a raw-scale head: per-data-point,
    per-dimension variances learnt by the network (paper eq. 6, the authors' GaussianMLP)."""

    def __init__(self, in_dim: int, hidden: list[int], outputs: dict[str, tuple[int, bool]], act: str, dropout: float) -> None:
        super().__init__()
        self.body = hidden_layers([in_dim, *hidden], act, dropout)
        width = hidden[-1] if hidden else in_dim
        self.loc = nn.ModuleDict({n: nn.Linear(width, size) for n, (size, _) in outputs.items()})
        self.raw_scale = nn.ModuleDict({n: nn.Linear(width, size) for n, (size, gauss) in outputs.items() if gauss})

    def forward(self, h: Tensor) -> dict[str, tuple[Tensor, Tensor | None]]:
        h = self.body(h)
        return {n: (head(h), self.raw_scale[n](h) if n in self.raw_scale else None) for n, head in self.loc.items()}


@dataclass
class Terms:
    """The pieces of CMMD's objective for one batch (costs, to be minimised).

    q: posterior q(z | x_m, x_o, y); p: conditional prior p(z | x_o); z: (K, B, D) draws of q;
    z_prior: (K, B, D) draws of p; rec: (B,) -(1/K) sum_k sum_t s_t log p(x_t | z_k, x_o) over
    the missing modalities t; kl: (B,) KL(q || p) summed over dimensions; mmd: () mean over
    the K draws of MMD^2(z_prior[k], z[k]) over the batch (eq. 4); ce: (B,) -log p(y | mu_p)
    of the classifier fed with the prior mean (§3.3); logits: (B, C).
    """

    q: Normal
    p: Normal
    z: Tensor
    z_prior: Tensor
    rec: Tensor
    kl: Tensor
    mmd: Tensor
    ce: Tensor
    logits: Tensor


def unsupported(verb: str, why: str) -> Callable:
    """A method that refuses `verb` with an error saying why CMMD has none."""

    def method(self, *args, **kwargs):
        raise NotImplementedError(f"CMMD has no {verb}: {why}")

    method.__doc__ = f"Not available in CMMD: {why}"
    return method


NO_PRIOR = "its prior p(z | x_observed) is conditional; use conditional_prior(batch) or encode(batch)"
NOT_JOINT = ("CMMD models p(x_missing, y | x_observed), not a joint density of all modalities "
             "(its objective, eq. 5, is not a bound on log p(x))")


@MODELS.register("cmmd")
class CMMD(MultimodalVAE):
    """Supervised and asymmetric: `observed` modalities x_o are present at training and test
    time, the others, x_m, only in training, and labels y come with every training row.

    Networks (all MLPs over flattened, concatenated inputs; `activation` and `dropout`
    after every hidden layer): the conditional prior p(z | x_o); the encoder
    q(z | x_m, x_o, y) over [x_m, x_o, one-hot y]; the decoder p(x_m | z, x_o) over
    [z, x_o], Gaussian with learnt per-dimension variance or Bernoulli per missing modality
    (its `likelihood`); the classifier p(y | z) fed with the prior mean (§3.3). The prior
    and posterior are diagonal Gaussians whose scales use `posterior_scale` ("exp": the
    heads give log-variances, as in the authors' code); so do the decoder's variances.

    Objective (eq. 5), minimised, averaged over the batch:
        omega (rec + KL(q || p)) + (1 - omega)(rec + lambda MMD^2(p, q)) + alpha CE,
    rec = -E_q log p(x_m | z, x_o) with K reparameterised draws, the KL in closed form, the
    MMD^2 (eq. 4, `mmd`) between K draws of the batch's conditional priors and of its
    posteriors (each draw of z ~ q for a random training tuple is a sample of the aggregate
    posterior, appendix A), CE = -log p(y | mu_p(x_o)). omega = 1 is the ELBO (eq. 1) plus
    the classifier. `objective: code` trains the authors' code's loss instead (docs/models.md).

    Options: observed (names, required), n_classes, K, omega, mmd_weight (lambda),
    ce_weight (alpha), encoder_hidden, prior_hidden, decoder_hidden, classifier_hidden,
    activation, dropout, mmd_scale (kernel scale h of exp(-||x - y||^2 / h); None: D^2),
    objective ("paper" | "code"). Defaults are the paper's two-view MNIST settings.
    `prior_scale` and `learn_prior` are not used (the prior is a network), nor the
    modalities' `likelihood_scale` (the decoder's variances are learnt).
    """

    modality_networks = False

    def __init__(
        self,
        *args,
        observed: list[str] | None = None,
        n_classes: int = 10,
        K: int = 1,
        omega: float = 0.4,
        mmd_weight: float = 1000.0,
        ce_weight: float = 10.0,
        encoder_hidden: list[int] = (2500, 2500, 2500),
        prior_hidden: list[int] = (1024, 1024, 1024),
        decoder_hidden: list[int] = (1024, 1024, 1024),
        classifier_hidden: list[int] = (70, 70),
        activation: str = "softplus",
        dropout: float = 0.2,
        mmd_scale: float | None = None,
        objective: str = "paper",
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        if self.prior_cls is not Normal or self.posterior_cls is not Normal:
            raise ValueError(
                "CMMD needs prior: normal and posterior: normal (its KL term is the closed-form Gaussian one), "
                f"got prior {self.prior_cls.__name__}, posterior {self.posterior_cls.__name__}"
            )
        self.observed, self.missing = self.split_modalities(observed)
        at_least("n_classes", n_classes, 2)
        at_least("K", K, 1)
        if not 0 <= omega <= 1:
            raise ValueError(f"omega must be in [0, 1], got {omega}")
        if mmd_weight < 0 or ce_weight < 0:
            raise ValueError(f"mmd_weight and ce_weight must be >= 0, got {mmd_weight}, {ce_weight}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if mmd_scale is not None and mmd_scale <= 0:
            raise ValueError(f"mmd_scale must be > 0 (or None for D^2), got {mmd_scale}")
        if objective not in OBJECTIVES:
            raise ValueError(f"unknown CMMD objective {objective!r}{nearest(objective, list(OBJECTIVES))}; use one of {OBJECTIVES}")
        hidden = {"encoder_hidden": encoder_hidden, "prior_hidden": prior_hidden,
                  "decoder_hidden": decoder_hidden, "classifier_hidden": classifier_hidden}
        for key, sizes in hidden.items():
            if any(not isinstance(s, int) or s < 1 for s in sizes):
                raise ValueError(f"{key} must be a list of positive layer sizes, got {list(sizes)}")
        self.n_classes, self.K, self.omega = n_classes, K, omega
        self.mmd_weight, self.ce_weight, self.mmd_scale, self.objective = mmd_weight, ce_weight, mmd_scale, objective
        self.check_modality_settings()
        n_obs = sum(self.modalities[n].numel for n in self.observed)
        n_mis = sum(self.modalities[n].numel for n in self.missing)
        d = self.latent_dim
        self.prior_net = GaussianNet(n_obs, list(prior_hidden), d, activation, dropout)
        self.encoder = GaussianNet(n_mis + n_obs + n_classes, list(encoder_hidden), d, activation, dropout)
        outputs = {n: (self.modalities[n].numel, self.modalities[n].likelihood == "normal") for n in self.missing}
        self.decoder = MissingDecoder(d + n_obs, list(decoder_hidden), outputs, activation, dropout)
        self.classifier = nn.Sequential(
            hidden_layers([d, *classifier_hidden], activation, dropout),
            nn.Linear(classifier_hidden[-1] if classifier_hidden else d, n_classes),
        )
        self.probabilities = ClampedSigmoid()

    def split_modalities(self, observed: list[str] | None) -> tuple[list[str], list[str]]:
        """(observed, missing) in the model's modality order, validated."""
        if observed is None:
            raise ValueError(f"CMMD needs model.options.observed: the modalities present at test time, some of {self.names}")
        if isinstance(observed, str) or not isinstance(observed, (list, tuple)):
            raise ValueError(f"CMMD observed must be a list of modality names, got {observed!r}")
        for n in observed:
            if n not in self.modalities:
                raise ValueError(f"CMMD observed names unknown modality {n!r}{nearest(str(n), self.names)}; the model has {self.names}")
        if len(set(observed)) != len(observed):
            raise ValueError(f"CMMD observed names a modality twice: {list(observed)}")
        if not observed or len(observed) == len(self.names):
            raise ValueError(
                f"CMMD needs at least one observed and one missing modality; observed {list(observed)} of {self.names}"
            )
        return [n for n in self.names if n in observed], [n for n in self.names if n not in observed]

    def check_modality_settings(self) -> None:
        """Missing modalities need a Gaussian or Bernoulli likelihood; per-modality networks
        are not CMMD's (its networks run over concatenations)."""
        for name, m in self.modalities.items():
            if m.encoder != "mlp" or m.decoder != "mlp" or m.net_options or m.encoder_options or m.decoder_options:
                raise ValueError(
                    f"modality {name!r}: CMMD builds its networks over the concatenated modalities from "
                    "model.options (encoder_hidden, prior_hidden, decoder_hidden, classifier_hidden); "
                    "per-modality encoder/decoder settings are not used, leave them out"
                )
            if name in self.missing and m.likelihood not in LIKELIHOODS:
                raise ValueError(
                    f"missing modality {name!r}: CMMD's decoder is Gaussian (normal, learnt variance) or "
                    f"bernoulli, got likelihood {m.likelihood!r}"
                )

    # --- inputs --------------------------------------------------------------------------
    def observed_input(self, batch: Batch) -> Tensor:
        """The flattened concatenation of the observed modalities (B, n_o), after checking
        that each is there, of the right shape, in every row and finite. Missing
        modalities are never read."""
        for name in batch.names:
            if name not in self.modalities:
                raise BatchError(f"unknown modality {name!r}{nearest(name, self.names)}; the model has {self.names}")
        for name in self.observed:
            if name not in batch.data:
                raise BatchError(f"CMMD conditions on its observed modality {name!r}, which the batch lacks")
            x, spec = batch.data[name], self.modalities[name]
            if not torch.is_floating_point(x) or tuple(x.shape[1:]) != spec.shape:
                raise BatchError(f"modality {name!r} must be a float tensor of sample shape {spec.shape}, "
                                 f"got {x.dtype} {tuple(x.shape[1:])}")
            if not batch.mask[name].all():
                rows = torch.nonzero(~batch.mask[name]).flatten()[:5].tolist()
                raise BatchError(f"observed modality {name!r} is missing in rows {rows}; CMMD needs every "
                                 f"observed modality {self.observed} in every row")
            if not torch.isfinite(x).all():
                raise BatchError(f"observed modality {name!r} contains NaN or inf")
        return torch.cat([batch.data[n].flatten(1) for n in self.observed], -1)

    def training_inputs(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor]:
        """(x_o, x_m, y) of a training batch (complete rows with labels); y (B,) long."""
        batch.validate(self.modalities)
        if not batch.complete:
            absent = {n: int((~m).sum()) for n, m in batch.mask.items() if not m.all()}
            raise BatchError(f"CMMD trains on complete rows (every modality and the label); rows missing: {absent}")
        y = self.check_labels(batch)
        x_m = torch.cat([batch.data[n].flatten(1) for n in self.missing], -1)
        return self.observed_input(batch), x_m, y

    def check_labels(self, batch: Batch) -> Tensor:
        y = batch.labels
        if y is None:
            raise BatchError("CMMD is supervised: the batch has no labels")
        if y.dtype == torch.bool or torch.is_floating_point(y) or y.dim() != 1:
            raise BatchError(f"CMMD needs integer class labels of shape (B,), got {y.dtype} {tuple(y.shape)}")
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= self.n_classes):
            raise BatchError(f"labels must lie in 0..{self.n_classes - 1} (n_classes={self.n_classes}), "
                             f"got {int(y.min())}..{int(y.max())}")
        return y.long()

    # --- distributions -------------------------------------------------------------------
    def prior_from(self, x_o: Tensor) -> Normal:
        loc, raw = self.prior_net(x_o)
        return Normal(loc, self.scale_fn(raw))

    def conditional_prior(self, batch: Batch) -> Normal:
        """p(z | x_observed), parameters (B, D); reads only the observed modalities."""
        return self.prior_from(self.observed_input(batch))

    def joint_posterior(self, batch: Batch) -> Normal:
        """q(z | x_missing, x_observed, y) of a complete, labelled batch, parameters (B, D)."""
        x_o, x_m, y = self.training_inputs(batch)
        return self.posterior_from(x_o, x_m, y)

    def posterior_from(self, x_o: Tensor, x_m: Tensor, y: Tensor) -> Normal:
        loc, raw = self.encoder(torch.cat([x_m, x_o, F.one_hot(y, self.n_classes).to(x_o.dtype)], -1))
        return Normal(loc, self.scale_fn(raw))

    def missing_likelihoods(self, z: Tensor, x_o: Tensor) -> dict[str, Distribution]:
        """p(x_t | z, x_o) for every missing modality t, z (..., B, D), x_o (B, n_o);
        parameters (..., B, *shape_t)."""
        h = torch.cat([z, x_o.expand(*z.shape[:-1], x_o.shape[-1])], -1)
        out = {}
        for name, (loc, raw) in self.decoder(h).items():
            shape = (*z.shape[:-1], *self.modalities[name].shape)
            if raw is None:
                out[name] = Bernoulli(self.probabilities(loc).reshape(shape))
            else:
                out[name] = Normal(loc.reshape(shape), self.scale_fn(raw).reshape(shape))
        return out

    @property
    def inference_modalities(self) -> list[str]:
        """The observed modalities; `encode` takes them all together, not a subset."""
        return list(self.observed)

    @property
    def inference_subsets(self) -> list[list[str]]:
        """Only the observed set as a whole: the prior conditions on all of it."""
        return [list(self.observed)]

    def encode(self, batch: Batch, modalities: list[str] | None = None) -> Normal:
        """The conditional prior p(z | x_observed): CMMD's representation at test time.
        `modalities` (None: the observed ones) must name exactly the observed modalities."""
        names = self.observed if modalities is None else self.check_names(modalities)
        absent = [n for n in names if n in self.missing]
        if absent:
            raise BatchError(f"CMMD cannot condition z on {absent}: missing at test time by design "
                             f"(observed: {self.observed}, missing: {self.missing})")
        if sorted(names) != sorted(self.observed):
            raise BatchError(f"CMMD's prior conditions on all its observed modalities {self.observed} together, "
                             f"got {list(names)}")
        return self.conditional_prior(batch)

    # --- test-time verbs -----------------------------------------------------------------
    @torch.no_grad()
    def predict(self, batch: Batch) -> Tensor:
        """Class probabilities p(y | mu_p(x_observed)), shape (B, n_classes); reads only the
        observed modalities."""
        return torch.softmax(self.classifier(self.conditional_prior(batch).loc), -1)

    @torch.no_grad()
    def generate_missing(self, batch: Batch, mean: bool = True) -> dict[str, Tensor]:
        """Decoder means of every missing modality given x_observed and z = the prior mean
        (`mean`, as the authors' code generates) or one draw of p(z | x_observed)."""
        x_o = self.observed_input(batch)
        p = self.prior_from(x_o)
        z = p.mean if mean else p.sample()
        return {n: d.mean for n, d in self.missing_likelihoods(z, x_o).items()}

    @torch.no_grad()
    def cross_generate(self, batch: Batch, source: str | list[str], target: str, mean: bool = False) -> Tensor:
        """`generate_missing` of the missing modality `target` from the observed modalities
        (`source` must name exactly them); z drawn from the prior unless `mean`."""
        sources = [source] if isinstance(source, str) else list(source)
        self.encode(batch, sources)  # validates the sources
        (target,) = self.check_names([target])
        if target not in self.missing:
            raise BatchError(f"CMMD generates its missing modalities {self.missing} only, not {target!r}")
        return self.generate_missing(batch, mean)[target]

    @torch.no_grad()
    def picture_grids(self, batch: Batch, names: list[str], n: int) -> dict[str, list[Tensor]]:
        """One grid, "missing": the observed image modalities' rows, then for each missing
        image modality its true row above its generation (`generate_missing`); no joint
        samples (`n` is unused: CMMD has no unconditional prior)."""
        generated = self.generate_missing(batch)
        rows = [batch.data[m] for m in self.observed if m in names]
        for m in self.missing:
            if m in names:
                rows += [batch.data[m], generated[m]]
        return {"missing": rows}

    @torch.no_grad()
    def text_rows(self, batch: Batch, names: list[str], n: int) -> dict[str, tuple[str, Tensor]]:
        """The text modalities `names` of `batch` ("data <m>") and, for each missing one,
        its `generate_missing` from the observed modalities ("<observed> -> <m>")."""
        generated = self.generate_missing(batch)
        rows = {f"data {m}": (m, batch.data[m]) for m in names}
        rows |= {f"{'+'.join(self.observed)} -> {m}": (m, generated[m]) for m in names if m in self.missing}
        return rows

    def latent_kl_pairs(self, batch: Batch) -> dict[str, tuple[Distribution, Distribution, Tensor]]:
        """Posterior collapse pairs (§4.2, Fig. 2, 5): the posterior against the conditional
        prior, and the conditional prior against N(0, I) (does the prior carry x_o?)."""
        q, p = self.joint_posterior(batch), self.conditional_prior(batch)
        rows = torch.ones(batch.size, dtype=torch.bool, device=q.loc.device)
        standard = Normal(torch.zeros_like(p.loc[0]), torch.ones_like(p.loc[0]))
        return {"q(z|x,y) || p(z|x_o)": (q, p, rows), "p(z|x_o) || N(0,I)": (p, standard, rows)}

    # --- training --------------------------------------------------------------------------
    def terms(self, batch: Batch) -> Terms:
        """The objective's pieces (`Terms`) for a complete, labelled batch."""
        x_o, x_m, y = self.training_inputs(batch)
        p, q = self.prior_from(x_o), self.posterior_from(x_o, x_m, y)
        eps = torch.randn((self.K, *q.loc.shape), dtype=q.loc.dtype, device=q.loc.device)
        z = q.loc + q.scale * eps
        eps_prior = eps if self.objective == "code" else torch.randn_like(eps)
        z_prior = p.loc + p.scale * eps_prior
        rec = torch.zeros(z.shape[:-1], dtype=z.dtype, device=z.device)
        for name, lik in self.missing_likelihoods(z, x_o).items():
            spec = self.modalities[name]
            rec = rec - spec.llik_scale * lik.log_prob_sum(batch.data[name], len(spec.shape))
        kl = q.kl(p).sum(-1)
        if self.objective == "code":
            kl = kl + 0.5 * (q.scale / p.scale).square().sum(-1)
        discrepancy = torch.stack([mmd(z_prior[k], z[k], self.mmd_scale) for k in range(self.K)]).mean()
        logits = self.classifier(p.loc)
        ce = F.cross_entropy(logits, y, reduction="none")
        return Terms(q, p, z, z_prior, rec.mean(0), kl, discrepancy, ce, logits)

    def forward(self, batch: Batch) -> ModelOutput:
        """Eq. 5 averaged over the batch (class docstring); per_point carries the batch's
        MMD term in every row, so that its negative mean is the loss."""
        t = self.terms(batch)
        ce_factor = batch.size if self.objective == "code" else 1
        cost = t.rec + self.omega * t.kl + (1 - self.omega) * self.mmd_weight * t.mmd + self.ce_weight * ce_factor * t.ce
        loss = cost.mean()
        with torch.no_grad():
            metrics = {
                "loss": float(loss),
                "rec": float(t.rec.mean()),
                "kl": float(t.kl.mean()),
                "mmd": float(t.mmd),
                "ce": float(t.ce.mean()),
                "error": float((t.logits.argmax(-1) != batch.labels).double().mean()),
            }
        return ModelOutput(loss, metrics, -cost)

    prior = unsupported("unconditional prior", NO_PRIOR)
    posterior = unsupported("unimodal posterior", "its encoder q(z | x_missing, x_observed, y) reads every modality and the label; use joint_posterior(batch)")
    likelihood = unsupported("per-modality likelihood p(x_m | z)", "its decoder also conditions on x_observed; use missing_likelihoods(z, x_o)")
    decode = unsupported("decode(z)", "its decoder also conditions on x_observed; use generate_missing(batch)")
    sample = unsupported("joint sample", NO_PRIOR + "; generate_missing(batch) generates the missing modalities")
    reconstruct = unsupported("reconstruction", "it decodes only its missing modalities, from x_observed; use generate_missing(batch)")
    log_likelihood_terms = unsupported("joint log-likelihood", NOT_JOINT)
    joint_proposal = unsupported("joint importance-sampling proposal", NOT_JOINT)
    joint_log_weights = unsupported("joint log-weights", NOT_JOINT)
    bound = unsupported("bound on log p(x)", NOT_JOINT)
    log_likelihood = unsupported("log-likelihood estimate", NOT_JOINT)
