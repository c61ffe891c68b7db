"""The contrastive objective of "Relating by contrasting" (Shi et al., ICLR 2021) for any model.

Per data point i with all M modalities observed (paper eq. 4):

    L_i = -gamma * objective_i + (1/M) sum_m log sum_{n=1..N} exp bound(x_i with x_m := x_m^(j_mn)),

where `objective_i` is the wrapped model's own per-data-point training objective (its
`ModelOutput.per_point`: a lower bound on log p(x_1:M), as the paper's term 1) and `bound`
is the model's per-data-point IWAE (cI-<model>) or CUBO (cC-<model>, eq. 5) estimate of
log p. "anchored" negatives (the default) keep the anchor's items but one, modality m,
taken from a random other row of the minibatch: for M = 2 exactly eq. 4's
(1/2)(log sum_x' p(x', y) + log sum_y' p(x, y')), M * N bounds per data point.
"repaired" negatives are eq. 12-14's cheaper form for any M: N tuples per data point
through a random index matrix J, every item re-drawn, the M indices of a tuple pairwise
distinct so that no item meets its own partner; N bounds per data point:

    L_i = -gamma * objective_i + log sum_{n=1..N} exp bound(x_1^(j_1n), ..., x_M^(j_Mn)).

Rows with a missing modality take only term 1, and negatives are drawn among complete
rows only (too few complete rows: no term 2 in that batch). No public code exists.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import Tensor

from mmdgm.batch import Batch
from mmdgm.models.base import BOUND_ESTIMATORS, ModelOutput, MultimodalVAE, at_least
from mmdgm.registry import nearest


def repaired_indices(rows: Tensor, n_modalities: int, n_negatives: int) -> Tensor:
    """Index matrix J of eq. (12) for each of `rows`: (M, N, len(rows)) entries of `rows`,
    the M entries of every tuple pairwise distinct (rejection sampling, torch's RNG)."""
    n = len(rows)
    if n < n_modalities:
        raise ValueError(f"need at least {n_modalities} complete rows to re-pair, got {n}")
    pos = torch.randint(n, (n_modalities, n_negatives * n), device=rows.device)
    while True:
        clash = (pos[:, None, :] == pos[None, :, :]).sum((0, 1)) > n_modalities
        if not clash.any():
            return rows[pos].view(n_modalities, n_negatives, n)
        pos[:, clash] = torch.randint(n, (n_modalities, int(clash.sum())), device=rows.device)


def anchored_indices(rows: Tensor, n_modalities: int, n_negatives: int, replaced: int) -> Tensor:
    """Index matrix (M, N, len(rows)) of eq. (2)-(4)'s negatives: every modality from the
    anchor row except modality `replaced`, which comes from a uniformly random other row."""
    n = len(rows)
    if n < 2:
        raise ValueError(f"need at least 2 complete rows to re-pair, got {n}")
    pos = torch.arange(n, device=rows.device).expand(n_modalities, n_negatives, n).clone()
    pos[replaced] = (pos[replaced] + torch.randint(1, n, (n_negatives, n), device=rows.device)) % n
    return rows[pos]


DEFAULTS = {"estimator": "iwae", "gamma": 2.0, "n_negatives": 5, "K": None, "negatives": "anchored"}
NEGATIVES = ("anchored", "repaired")


class ContrastiveObjective:
    """Mixin that replaces a model's `forward` with the contrastive loss (module docstring);
    every other verb is the wrapped model's. Metrics add "objective" (term 1's mean before
    gamma), "negative_bound" (mean bound of the negatives), "contrastive_term" and
    "contrastive_loss" (eq. 3's L_C, gamma = 1: contrastive_term - objective; "loss" is
    eq. 4's, with gamma)."""

    def __init__(self, *args, contrastive: dict[str, Any] | None = None, **kwargs) -> None:
        """`contrastive`: estimator ("iwae" | "cubo"), gamma (>= 1), n_negatives (N), K
        (draws per bound of term 2; None: the model's K, or 1) and negatives ("anchored":
        eq. 2-4, "repaired": eq. 12-14); defaults: the paper's gamma = 2, N = 5, IWAE,
        anchored."""
        super().__init__(*args, **kwargs)
        options = {**DEFAULTS, **(contrastive or {})}
        unknown = sorted(set(options) - set(DEFAULTS))
        if unknown:
            raise ValueError(f"unknown contrastive option {unknown[0]!r}{nearest(unknown[0], list(DEFAULTS))}")
        estimator, gamma, n_negatives, K, negatives = (options[k] for k in DEFAULTS)
        if negatives not in NEGATIVES:
            raise ValueError(f"unknown contrastive negatives {negatives!r}{nearest(negatives, list(NEGATIVES))}")
        self.negatives = negatives
        if estimator not in BOUND_ESTIMATORS:
            raise ValueError(f"unknown contrastive estimator {estimator!r}{nearest(estimator, list(BOUND_ESTIMATORS))}")
        at_least("contrastive gamma", gamma, 1.0)
        at_least("contrastive n_negatives", n_negatives, 1)
        self.contrastive_estimator = estimator
        self.gamma = gamma
        self.n_negatives = n_negatives
        self.contrastive_K = K if K is not None else getattr(self, "K", 1)
        at_least("contrastive K", self.contrastive_K, 1)
        if not self.objective_is_bound():
            raise ValueError(
                f"{type(self).__name__}: the contrastive objective needs the model's own objective (term 1) to be "
                "a lower bound on log p at every step, like term 2's bound; with MVAE's KL annealing term 1 is "
                "free of the KL at first and training diverged (posteriors pushed off the prior to lower the "
                "negatives' bounds: loss -52,106 then NaN by step 15). Set model.options.annealing_steps=0")

    def negative_term(self, batch: Batch) -> tuple[Tensor, Tensor | None]:
        """log sum_n exp bound(negative n) per data point (zero on incomplete rows), and the
        negatives' bounds (None when the batch has fewer than M complete rows)."""
        complete = torch.stack([batch.mask[n] for n in self.names]).all(0)
        rows = complete.nonzero().flatten()
        M = len(self.names)
        term = torch.zeros(batch.size, device=complete.device)
        if len(rows) < (M if self.negatives == "repaired" else 2):
            return term, None
        positions = torch.arange(len(rows), device=rows.device)
        if self.negatives == "repaired":
            matrices = [repaired_indices(positions, M, self.n_negatives)]
        else:
            matrices = [anchored_indices(positions, M, self.n_negatives, m) for m in range(M)]
        J = torch.cat(matrices, 1)  # (M, len(matrices) * N, n), positions among `rows`
        bounds = self.repaired_bounds(batch.select(rows), J, self.contrastive_K, self.contrastive_estimator)
        lse = torch.logsumexp(bounds.view(len(matrices), self.n_negatives, len(rows)), 1).mean(0)
        return term.to(lse.dtype).index_put((rows,), lse), bounds

    def forward(self, batch: Batch) -> ModelOutput:
        out = super().forward(batch)
        if out.per_point is None:
            raise TypeError(f"{type(self).__name__}: the wrapped model's forward gives no per_point objective")
        term, bounds = self.negative_term(batch.zero_missing())
        per_point = self.gamma * out.per_point - term
        loss = -per_point.mean()
        metrics = dict(out.metrics)
        metrics.update(
            loss=float(loss.detach()),
            objective=float(out.per_point.detach().mean()),
            contrastive_term=float(term.detach().mean()),
            contrastive_loss=float((term - out.per_point).detach().mean()),
        )
        if bounds is not None:
            metrics["negative_bound"] = float(bounds.detach().mean())
        return ModelOutput(loss, metrics, per_point)


@functools.cache
def contrastive_class(cls: type[MultimodalVAE]) -> type[MultimodalVAE]:
    """`cls` trained with the contrastive objective (a subclass: isinstance, state dicts
    and every verb but `forward` are unchanged)."""
    return type(f"Contrastive{cls.__name__}", (ContrastiveObjective, cls), {"__doc__": cls.__doc__})
