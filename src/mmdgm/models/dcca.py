"""DCCA (Andrew, Arora, Bilmes & Livescu 2013, "Deep canonical correlation analysis"): a
baseline of the CMMD paper's tables (§4).

Two deterministic networks f(x_1), g(x_2) map the views to o-dimensional outputs H_1,
H_2 (o x m over a minibatch of m rows). With centred outputs Hbar_i = H_i - mean and
ridge terms r_1, r_2 > 0 (Andrew et al. §2.1, "regularization"):

    S_11 = Hbar_1 Hbar_1^T / (m - 1) + r_1 I,   S_22 = Hbar_2 Hbar_2^T / (m - 1) + r_2 I,
    S_12 = Hbar_1 Hbar_2^T / (m - 1),           T = S_11^{-1/2} S_12 S_22^{-1/2},

and the total correlation of the top k canonical directions is the sum of the k largest
singular values of T (Andrew et al. eq. 10: the trace norm of T when k = o). The loss is
its negative. DCCA is not generative: it has no prior, decoders or likelihood.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mmdgm.batch import Batch, BatchError
from mmdgm.distributions import Distribution
from mmdgm.modalities import Modality
from mmdgm.models.base import MODELS, ModelOutput, TrainedModel
from mmdgm.nets import ENCODERS


class NotGenerativeError(NotImplementedError):
    """A generative verb (sample, likelihood, ...) was asked of a model that has no generative process."""


class PointMass(Distribution):
    """The deterministic representation `loc` as a distribution: mean and samples are `loc`."""

    def _noise(self, shape: torch.Size) -> Tensor:
        return torch.zeros(shape, dtype=self.loc.dtype, device=self.loc.device)

    def log_prob(self, x: Tensor) -> Tensor:
        raise NotGenerativeError("a point mass has no density")


def inverse_sqrt(S: Tensor) -> Tensor:
    """S^{-1/2} of a symmetric positive definite matrix, by its eigendecomposition."""
    values, vectors = torch.linalg.eigh(S)
    return (vectors * values.rsqrt().unsqueeze(-2)) @ vectors.transpose(-1, -2)


def total_correlation(h1: Tensor, h2: Tensor, r1: float, r2: float, k: int | None = None) -> Tensor:
    """Sum of the k largest canonical correlations of the rows of h1 (m, o1) and h2 (m, o2)
    with ridge terms r1, r2 (module docstring; Andrew et al. 2013 eq. 10), computed in
    float64 and returned in the inputs' dtype. k None: all min(o1, o2)."""
    if h1.dim() != 2 or h2.dim() != 2 or h1.shape[0] != h2.shape[0]:
        raise ValueError(f"total_correlation needs (m, o1) and (m, o2) inputs, got {tuple(h1.shape)}, {tuple(h2.shape)}")
    m = h1.shape[0]
    if m < 2:
        raise ValueError(f"total_correlation needs at least 2 rows to estimate covariances, got {m}")
    a, b = h1.double(), h2.double()
    a, b = a - a.mean(0), b - b.mean(0)
    s11 = a.T @ a / (m - 1) + r1 * torch.eye(a.shape[1], dtype=a.dtype, device=a.device)
    s22 = b.T @ b / (m - 1) + r2 * torch.eye(b.shape[1], dtype=b.dtype, device=b.device)
    s12 = a.T @ b / (m - 1)
    t = inverse_sqrt(s11) @ s12 @ inverse_sqrt(s22)
    values = torch.linalg.svdvals(t)
    return values[:k].sum().to(h1.dtype)


@MODELS.register("dcca")
class DCCA(TrainedModel):
    """Deep CCA between exactly two views; `latent_dim` is the output size o of f and g.

    The projection networks are the views' registered encoder networks with o outputs;
    their location head is f (resp. g) and their scale head is unused. Only rows that
    observe both views enter the correlation (incomplete rows are skipped and never read).
    The shared model settings of the generative models (prior, posterior, posterior_scale,
    prior_scale, learn_prior) do not apply to DCCA and are ignored.

    Options:
        r1, r2: ridge terms added to the view covariances (Andrew et al. §2.1; > 0).
        k: canonical directions summed (default: all o).
    """

    generative = False

    def __init__(
        self,
        modalities: list[Modality],
        latent_dim: int,
        prior: str = "normal",
        posterior: str = "normal",
        posterior_scale: str = "exp",
        prior_scale: str = "free",
        learn_prior: bool = False,
        *,
        r1: float = 1e-4,
        r2: float = 1e-4,
        k: int | None = None,
    ) -> None:
        super().__init__()
        if len({m.name for m in modalities}) != len(modalities):
            raise ValueError("modality names must be unique")
        if len(modalities) != 2:
            raise ValueError(f"DCCA correlates exactly two views (Andrew et al. 2013), got {len(modalities)}")
        if latent_dim < 1:
            raise ValueError(f"DCCA: latent_dim (the output size o) must be >= 1, got {latent_dim}")
        if r1 <= 0 or r2 <= 0:
            raise ValueError(f"DCCA: the ridge terms r1, r2 must be > 0, got {r1}, {r2}")
        if k is not None and not 1 <= k <= latent_dim:
            raise ValueError(f"DCCA: k must be in [1, latent_dim={latent_dim}], got {k}")
        self.modalities = {m.name: m for m in modalities}
        self.latent_dim = latent_dim
        self.r1, self.r2, self.k = r1, r2, k
        self.encoders = nn.ModuleDict(
            {m.name: ENCODERS.get(m.encoder)(m.shape, latent_dim, **m.encoder_kwargs) for m in modalities}
        )

    @property
    def names(self) -> list[str]:
        return list(self.modalities)

    @property
    def inference_modalities(self) -> list[str]:
        return self.names

    def project(self, name: str, x: Tensor) -> Tensor:
        """f(x) or g(x): the view's network output (B, o)."""
        return self.encoders[name](x)[0]

    def encode(self, batch: Batch, modalities: list[str] | None = None) -> PointMass:
        """The projections of the requested views (concatenated when several) as a point
        mass, for rows observing all of them; DCCA's representation (Wang et al. use f(x_1))."""
        names = self.names if modalities is None else list(modalities)
        unknown = [n for n in names if n not in self.modalities]
        if unknown or not names:
            raise BatchError(f"DCCA: unknown or no modalities {names}; the model has {self.names}")
        for n in names:
            if not batch.mask[n].all():
                rows = torch.nonzero(~batch.mask[n]).flatten()[:5].tolist()
                raise BatchError(f"DCCA: samples {rows} lack {n!r}, which the representation needs")
        return PointMass(torch.cat([self.project(n, batch.data[n]) for n in names], -1), 0.0)

    def forward(self, batch: Batch) -> ModelOutput:
        """Minus the total correlation of the complete rows of the batch."""
        batch.validate(self.modalities)
        complete = torch.stack([batch.mask[n] for n in self.names]).all(0)
        if int(complete.sum()) < 2:
            raise BatchError(
                f"DCCA needs at least 2 rows observing both views to estimate covariances, got {int(complete.sum())}"
            )
        rows = batch.select(complete)
        h1, h2 = (self.project(n, rows.data[n]) for n in self.names)
        corr = total_correlation(h1, h2, self.r1, self.r2, self.k)
        loss = -corr
        value = float(corr.detach())
        metrics = {"loss": -value, "correlation": value, "complete_fraction": float(complete.float().mean())}
        return ModelOutput(loss, metrics)

    def initialise_from_data(self, dataset) -> None:
        """Nothing to initialise from data."""

    def not_generative(self, verb: str):
        raise NotGenerativeError(
            f"DCCA (Andrew et al. 2013) is not a generative model: it has no {verb}; use its representations "
            "(encode, e.g. the downstream_classification metric)"
        )

    def sample(self, n: int, modalities: list[str] | None = None):
        self.not_generative("prior to sample from")

    def decode(self, z: Tensor, modalities: list[str] | None = None):
        self.not_generative("decoders")

    def cross_generate(self, batch: Batch, source, target: str, mean: bool = False):
        self.not_generative("decoders for cross generation")

    def reconstruct(self, batch: Batch, mean: bool = False):
        self.not_generative("decoders for reconstruction")

    def picture_grids(self, batch: Batch, names: list[str], n: int) -> dict:
        """No pictures: nothing to generate (the trainer then writes no grids)."""
        return {}

    def latent_kl_pairs(self, batch: Batch):
        self.not_generative("prior or posterior densities")

    def joint_proposal(self, batch: Batch):
        self.not_generative("likelihood proposal")

    def joint_log_weights(self, batch: Batch, K: int, proposal=None):
        self.not_generative("likelihood")

    def bound(self, batch: Batch, K: int, estimator: str = "iwae"):
        self.not_generative("likelihood bound")

    def log_likelihood(self, batch: Batch, K: int = 1000, chunk: int = 100):
        self.not_generative("likelihood")
