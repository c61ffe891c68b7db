"""Relatedness: pointwise mutual information of related and re-paired test tuples
("Relating by contrasting", Shi et al. 2021, hypothesis 3.1, §4.5).

    PMI(x_1:M) = log p(x_1:M) - sum_m log p(x_m),

each term the model's own importance-sampled `log_likelihood` (the joint posterior as
proposal for the joint term, the posterior given x_m alone for the marginal), with every
`llik_scale` set to 1 (`llik_scales="unit"`, the model's density) or as trained
(`"trained"`: the unnormalised tempered density p(z) prod_m p(x_m | z)^s_m the model was
fitted to; for a Gaussian likelihood p(x_m | z)^s_m is the Gaussian of variance
sigma^2 / s_m up to a constant, which cancels in the PMI). With a modality weighted far
below 1 the encoders match the tempered posterior, not the unit-scale one, so unit-scale
estimates can be loose by thousands of nats; for M = 2 the PMI is
log p(x, y) - log p(x) - log p(y).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from sklearn.metrics import roc_auc_score
from torch import Tensor

from mmdgm.batch import Batch
from mmdgm.data import MultimodalDataset
from mmdgm.data.sampling import sampled_rows
from mmdgm.evaluate.common import module_device, row_batches, seeded
from mmdgm.evaluate.context import EvalContext
from mmdgm.evaluate.likelihood import check_samples, unit_llik_scales
from mmdgm.evaluate.registry import METRICS
from mmdgm.models.base import MultimodalVAE
from mmdgm.models.contrastive import repaired_indices
from mmdgm.train.checkpoint import atomic_write_bytes

FIGURE = "relatedness.png"
LLIK_SCALES = ("unit", "trained")


def only(batch: Batch, name: str) -> Batch:
    """The batch with every modality but `name` marked unobserved."""
    return Batch(batch.data, {n: m & (n == name) for n, m in batch.mask.items()}, batch.labels)


def gather(dataset: MultimodalDataset, J: Tensor, names: list[str]) -> Batch:
    """Rows J[m] of modality m (J: (M, B) dataset row indices) as one fully observed batch."""
    return Batch({n: dataset.batch(J[m]).data[n] for m, n in enumerate(names)})


@torch.no_grad()
def log_likelihoods(model: MultimodalVAE, dataset: MultimodalDataset, J: Tensor, K: int, chunk: int,
                    batch_size: int, marginals: bool, progress: bool, llik_scales: str = "unit") -> tuple[Tensor, Tensor | None]:
    """log p(x_1:M) of the tuples J (M, n) and, if `marginals`, log p(x_m) of each (M, n)."""
    device = module_device(model)
    joint, marg = [], []
    with unit_llik_scales(model) if llik_scales == "unit" else contextlib.nullcontext():
        for rows in row_batches(J.shape[1], batch_size, "relatedness", progress):
            batch = gather(dataset, J[:, rows], model.names).to(device)
            joint.append(model.log_likelihood(batch, K=K, chunk=chunk).cpu())
            if marginals:
                marg.append(torch.stack([model.log_likelihood(only(batch, n), K=K, chunk=chunk).cpu() for n in model.names]))
    return torch.cat(joint), (torch.cat(marg, 1) if marginals else None)


def check_llik_scales(llik_scales: str) -> None:
    """A ValueError naming the choices unless `llik_scales` is one of LLIK_SCALES."""
    if llik_scales not in LLIK_SCALES:
        raise ValueError(f"relatedness: llik_scales must be one of {LLIK_SCALES}, got {llik_scales!r}")


def pmi_of_tuples(model: MultimodalVAE, dataset: MultimodalDataset, J: Tensor, K: int = 1000, chunk: int = 100,
                  batch_size: int = 256, progress: bool = False, llik_scales: str = "unit") -> Tensor:
    """PMI of the tuples J (M, n): modality m of tuple i from row J[m, i] of `dataset`
    (`llik_scales`: module docstring)."""
    check_llik_scales(llik_scales)
    joint, marg = log_likelihoods(model, dataset, J, K, chunk, batch_size, True, progress, llik_scales)
    return joint - marg.sum(0)


def pmi_of_pairs(model: MultimodalVAE, dataset: MultimodalDataset, rows: Tensor, K: int = 1000, chunk: int = 100,
                 batch_size: int = 256, progress: bool = False, seed: int = 0,
                 llik_scales: str = "unit") -> tuple[Tensor, Tensor, Tensor]:
    """PMI of the related tuples of `rows` (complete rows of `dataset`) and of as many
    re-paired ones (each modality from a different row, `repaired_indices`); returns
    (pmi related (n,), pmi unrelated (n,), the re-pairing J (M, n))."""
    check_llik_scales(llik_scales)
    M = len(model.names)
    with seeded(seed, module_device(model)):
        J = repaired_indices(rows, M, 1)[:, 0, :]
        related = rows.expand(M, -1)
        joint, marg = log_likelihoods(model, dataset, related, K, chunk, batch_size, True, progress, llik_scales)
        joint_u, _ = log_likelihoods(model, dataset, J, K, chunk, batch_size, False, progress, llik_scales)
    position = {int(r): i for i, r in enumerate(rows)}
    marg_u = torch.stack([marg[m, [position[int(r)] for r in J[m]]] for m in range(M)])
    return joint - marg.sum(0), joint_u - marg_u.sum(0), J


def best_threshold(scores: np.ndarray, related: np.ndarray) -> tuple[float, float]:
    """The threshold t maximising the accuracy of "related iff score > t", and that accuracy."""
    order = np.argsort(scores)
    s, y = scores[order], related[order].astype(bool)
    # predicting related above position i: correct = unrelated at or below i + related above i
    correct = np.concatenate([[y.sum()], np.cumsum(~y) + (y.sum() - np.cumsum(y))]).astype(np.float64)
    correct[1:-1][s[1:] == s[:-1]] = -1  # no threshold separates tied scores
    i = int(np.argmax(correct))
    if i == 0:
        t = s[0] - 1.0
    elif i == len(s):
        t = s[-1] + 1.0
    else:
        t = (s[i - 1] + s[i]) / 2
    return float(t), float(correct[i] / len(s))


def separation(related: Tensor, unrelated: Tensor) -> dict:
    """AUC and best-threshold accuracy of telling related from unrelated scores."""
    scores = np.concatenate([related.numpy(), unrelated.numpy()]).astype(np.float64)
    labels = np.concatenate([np.ones(len(related)), np.zeros(len(unrelated))])
    threshold, accuracy = best_threshold(scores, labels)
    return {"auc": float(roc_auc_score(labels, scores)), "threshold": threshold, "accuracy": accuracy}


def histogram(related: Tensor, unrelated: Tensor, threshold: float | None, path: Path, title: str,
              labels: tuple[str, str] = ("related", "re-paired (unrelated)"), xlabel: str = "PMI estimate (nats)") -> None:
    """Density histograms of two score sets (and a threshold line) as a PNG."""
    fig = Figure(figsize=(6, 3.6))
    ax = fig.subplots()
    both = torch.cat([related, unrelated]).numpy()
    bins = np.linspace(np.percentile(both, 0.5), np.percentile(both, 99.5), 50)
    ax.hist(related.numpy(), bins=bins, alpha=0.6, label=labels[0], density=True)
    ax.hist(unrelated.numpy(), bins=bins, alpha=0.6, label=labels[1], density=True)
    if threshold is not None:
        ax.axvline(threshold, color="black", ls="--", lw=1, label="best threshold")
    ax.set(xlabel=xlabel, ylabel="density", title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, lambda f: fig.savefig(f, format="png", dpi=100))


@METRICS.register("relatedness")
def relatedness(ctx: EvalContext, K: int = 1000, n: int | None = 1000, chunk: int = 100,
                llik_scales: str = "unit", rows: str = "random") -> dict:
    """PMI of `n` complete test rows (related; chosen by `rows` as `common.test_rows` does) and of as many re-paired tuples
    (unrelated: every modality from a different row), module docstring (`llik_scales`:
    "unit" or "trained"); hypothesis 3.1 says the former are larger. Writes the two
    histograms to relatedness.png. Returns
    {"pmi related", "pmi unrelated" (means), "auc", "threshold", "accuracy" (best
    threshold, balanced classes), "same label share" (re-paired tuples whose items share
    a label by chance, when labels exist), "K", "n", "figure"}.
    """
    check_samples(K, chunk)
    complete = torch.stack([ctx.test_set.mask[m] for m in ctx.model.names]).all(0).nonzero().flatten()
    chosen = complete[sampled_rows(len(complete), n, ctx.seed, rows, "relatedness")]
    if len(chosen) < len(ctx.model.names):
        raise ValueError(f"relatedness needs at least {len(ctx.model.names)} complete test rows, got {len(chosen)}")
    related, unrelated, J = pmi_of_pairs(ctx.model, ctx.test_set, chosen, K, chunk, ctx.batch_size, ctx.progress,
                                         ctx.seed, llik_scales)
    out = {"pmi related": float(related.mean()), "pmi unrelated": float(unrelated.mean()),
           **separation(related, unrelated), "K": K, "n": len(chosen), "figure": FIGURE}
    labels = ctx.test_set.labels[J]
    out["same label share"] = float((labels == labels[:1]).all(0).double().mean())
    histogram(related, unrelated, out["threshold"], ctx.out_dir / FIGURE, f"PMI, AUC {out['auc']:.3f}")
    return out
