"""Latent-space structure: traversals and per-dimension KL (MMVAE §4.2, Fig. 5), and the
posterior-collapse share (Lucas et al. 2019, as used by CMMD)."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import torch
from matplotlib.figure import Figure
from torch import Tensor

from mmdgm.data.sampling import sampled_rows
from mmdgm.distributions import Distribution, Laplace, Normal
from mmdgm.evaluate.common import module_device, seeded, test_batches
from mmdgm.evaluate.context import EvalContext
from mmdgm.evaluate.latent import inference_modalities
from mmdgm.evaluate.registry import METRICS
from mmdgm.train.checkpoint import atomic_write_bytes
from mmdgm.train.grids import image_modalities, save_grid

KL_FIGURE = "latent-kl.png"


def stddev(d: Distribution) -> Tensor:
    """Standard deviation of a factorised Normal (scale) or Laplace (sqrt(2) scale)."""
    scale = d._scale_tensor()
    if isinstance(d, Laplace):
        return math.sqrt(2) * scale
    if isinstance(d, Normal):
        return scale
    raise TypeError(f"no standard deviation known for a {type(d).__name__} prior")


def traversal_latents(mu: Tensor, sigma0: Tensor, steps: int, span: float) -> Tensor:
    """(E, D, steps, D) latents: row d moves mu_d linearly over mu_d +- span * sigma0_d."""
    dim = mu.shape[-1]
    offsets = torch.linspace(-span, span, steps, dtype=mu.dtype, device=mu.device)
    shift = torch.eye(dim, dtype=mu.dtype, device=mu.device)[:, None, :] * offsets[None, :, None] * sigma0
    return mu[:, None, None, :] + shift[None]


@METRICS.register("latent_traversals")
@torch.no_grad()
def latent_traversals(
    ctx: EvalContext, examples: int = 2, steps: int = 11, span: float = 5.0, rows: str = "random"
) -> dict:
    """MMVAE Fig. 5 (§4.2): encode `examples` test rows observing each source modality (of
    those the model can condition on; chosen by `rows`, `data.sampling.sampled_rows`) to
    the mean mu of q(z | x_m), move each dimension d over (mu_d - span sigma0_d, mu_d + span sigma0_d)
    in `steps` linear steps, sigma0 the standard deviation of the learnt prior (as in the
    official code), and decode every modality's mean.

    One PNG per source, "traversal-from-<source>.png": for each dimension (top to bottom),
    one row per example and image modality; columns are the steps. Also returns, per
    source and target, each dimension's "sensitivity": the decoded mean's standard
    deviation across the steps, averaged over entries and examples (which dimensions move
    which modality). Returns {"figures", "sensitivity", "sigma0", "steps", "span"}.
    """
    if examples < 1 or steps < 2:
        raise ValueError(f"latent_traversals needs examples >= 1 and steps >= 2, got {examples}, {steps}")
    model = ctx.model
    device = module_device(model)
    sigma0 = stddev(model.prior()).to(device)
    images = image_modalities(model)
    figures, sensitivity = [], {}
    for source in inference_modalities(model):
        observing = torch.nonzero(ctx.test_set.mask[source]).flatten()
        if observing.numel() == 0:
            raise ValueError(f"latent_traversals: no test row observes {source!r}")
        chosen = observing[sampled_rows(len(observing), examples, ctx.seed, rows, "latent_traversals")]
        batch = ctx.test_set.batch(chosen).to(device)
        z = traversal_latents(model.posterior(source, batch.data[source]).mean, sigma0, steps, span)
        decoded = {t: d.mean for t, d in model.decode(z).items()}
        sensitivity[source] = {
            t: x.std(2).flatten(2).mean((0, 2)).tolist() for t, x in decoded.items()
        }
        if images:
            grid = [decoded[t][e, d] for d in range(z.shape[1]) for e in range(z.shape[0]) for t in images]
            name = f"traversal-from-{source}.png"
            save_grid(grid, Path(ctx.out_dir) / name)
            figures.append(name)
    return {"figures": figures, "sensitivity": sensitivity, "sigma0": sigma0.tolist(), "steps": steps, "span": span}


def kl_per_dim(q: Distribution, p: Distribution, mc_samples: int) -> Tensor:
    """KL(q || p) per latent dimension, (B, D): analytic when both are of one class with
    `.kl` (Normal, Laplace), else a Monte-Carlo mean over `mc_samples` draws of q."""
    if type(q) is type(p) and hasattr(q, "kl"):
        return q.kl(p)
    z = q.sample((mc_samples,))
    return (q.log_prob(z) - p.log_prob(z)).mean(0)


def collapsed(kl: Tensor, threshold: float, fraction: float) -> Tensor:
    """(D,) bool: dimensions whose KL (N, D) is below `threshold` for >= `fraction` of rows."""
    return (kl < threshold).double().mean(0) >= fraction


@METRICS.register("latent_kl")
@torch.no_grad()
def latent_kl(
    ctx: EvalContext,
    threshold: float = 0.01,
    fraction: float = 0.99,
    n: int | None = None,
    mc_samples: int = 100,
    rows: str = "random",
) -> dict:
    """Per-dimension KL(q(z | x_m) || p(z)) of every unimodal posterior (of the modalities
    the model can condition on) and symmetric KL(q_m || q_n) + KL(q_n || q_m) of every
    pair, averaged over test rows observing the modalities (MMVAE Fig. 5, lower panel), with a bar plot "latent-kl.png".

    Posterior collapse (Lucas et al. 2019, CMMD): dimension d is collapsed for modality m
    if KL_d(q(z | x_m) || p(z)) < `threshold` nats for at least `fraction` of the rows;
    "collapsed_share" gives the share of collapsed dimensions per modality and, under
    "all", of dimensions collapsed for every modality. Returns {"kl_to_prior",
    "symmetric_kl" (per-dim lists), "kl_to_prior_total", "symmetric_kl_total",
    "collapsed_share", "collapsed_dims", "threshold", "fraction", "n", "figures"}; `n` test
    rows (None: all) chosen by `rows` (`common.test_rows`).
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    model = ctx.model
    names = inference_modalities(model)
    pairs = list(itertools.combinations(names, 2))
    prior = model.prior()
    to_prior: dict[str, list[Tensor]] = {m: [] for m in names}
    between: dict[tuple[str, str], list[Tensor]] = {pair: [] for pair in pairs}
    seen = 0
    with seeded(ctx.seed, module_device(model)):
        for batch in test_batches(ctx, n, "latent KL", rows=rows):
            seen += batch.size
            post = {m: model.posterior(m, batch.data[m]) for m in names}
            for m in names:
                to_prior[m].append(kl_per_dim(post[m], prior, mc_samples)[batch.mask[m]].cpu())
            for m, k in pairs:
                both = batch.mask[m] & batch.mask[k]
                sym = kl_per_dim(post[m], post[k], mc_samples) + kl_per_dim(post[k], post[m], mc_samples)
                between[(m, k)].append(sym[both].cpu())
    kl = {m: torch.cat(v) for m, v in to_prior.items()}
    sym = {f"{m},{k}": torch.cat(v) for (m, k), v in between.items()}
    dims = {m: collapsed(v, threshold, fraction) if len(v) else None for m, v in kl.items()}
    if any(d is None for d in dims.values()):
        raise ValueError(f"latent_kl: modalities {[m for m, d in dims.items() if d is None]} have no observed test row")
    every = torch.stack(list(dims.values())).all(0)
    kl_mean = {m: v.double().mean(0) for m, v in kl.items()}
    sym_mean = {p: v.double().mean(0) for p, v in sym.items() if len(v)}
    figure = plot_kl(kl_mean, sym_mean, Path(ctx.out_dir) / KL_FIGURE)
    return {
        "kl_to_prior": {m: v.tolist() for m, v in kl_mean.items()},
        "symmetric_kl": {p: v.tolist() for p, v in sym_mean.items()},
        "kl_to_prior_total": {m: float(v.sum()) for m, v in kl_mean.items()},
        "symmetric_kl_total": {p: float(v.sum()) for p, v in sym_mean.items()},
        "collapsed_share": {**{m: float(d.double().mean()) for m, d in dims.items()}, "all": float(every.double().mean())},
        "collapsed_dims": {m: torch.nonzero(d).flatten().tolist() for m, d in dims.items()},
        "threshold": threshold,
        "fraction": fraction,
        "n": seen,
        "figures": [figure],
    }


def plot_kl(kl: dict[str, Tensor], sym: dict[str, Tensor], path: Path) -> str:
    """Grouped bars per latent dimension: KL to the prior of each posterior, and the
    symmetric KL of each pair (MMVAE Fig. 5, lower panel), rendered by Agg.
    Returns the file name."""
    series = [(f"KL(q(z|{m}) || p(z))", v) for m, v in kl.items()]
    series += [(f"symmetric KL({p.replace(',', ', ')})", v) for p, v in sym.items()]
    dim = len(series[0][1])
    width = 0.8 / len(series)
    fig = Figure(figsize=(max(6.0, 0.25 * dim * len(series) + 1.5), 3.2))
    ax = fig.subplots()
    for i, (label, v) in enumerate(series):
        ax.bar([d + (i - (len(series) - 1) / 2) * width for d in range(dim)], v.tolist(), width, label=label)
    ax.set_xticks(range(dim))
    ax.set_xlabel("latent dimension")
    ax.set_ylabel("KL (nats)")
    ax.legend(fontsize="small")
    fig.tight_layout()
    atomic_write_bytes(path, lambda f: fig.savefig(f, format="png", dpi=100))
    return path.name


COLLAPSE_FIGURE = "posterior-collapse.png"


def collapse_curve(kl: Tensor, thresholds: Tensor, fraction: float) -> Tensor:
    """(T,) share of latent dimensions within each threshold: dimension d counts at
    threshold t if KL_d <= t for at least `fraction` of the rows of `kl` (N, D)."""
    within = (kl[None, :, :] <= thresholds[:, None, None]).double().mean(1)
    return (within >= fraction).double().mean(-1)


@METRICS.register("posterior_collapse")
@torch.no_grad()
def posterior_collapse(
    ctx: EvalContext,
    fraction: float = 0.99,
    max_threshold: float = 6.0,
    steps: int = 40,
    n: int | None = None,
    mc_samples: int = 100,
    rows: str = "random",
) -> dict:
    """Posterior collapse as CMMD §4.2 and appendix E measure it (Lucas et al. 2019): the
    share of latent dimensions d with KL(q(z_d | x) || p(z_d)) <= eps for at least
    `fraction` of the test rows, as a curve over `steps` thresholds eps in
    [0, max_threshold] (the authors' grid: 40 points up to 6 nats), drawn in
    "posterior-collapse.png" like Fig. 2. The (q, p) pairs are the model's
    `latent_kl_pairs`: each unimodal posterior against the prior by default; for CMMD the
    posterior against the conditional prior p(z | x_o), and that prior against N(0, I).
    KL per dimension and test row is analytic where `kl_per_dim` has it, else a Monte-Carlo
    mean over `mc_samples` draws; `n` test rows (None: all) chosen by `rows` (`common.test_rows`). Returns {"thresholds", "collapse" (name -> curve),
    "fraction", "n", "figures"}."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if max_threshold <= 0 or steps < 2:
        raise ValueError(f"posterior_collapse needs max_threshold > 0 and steps >= 2, got {max_threshold}, {steps}")
    model = ctx.model
    kls: dict[str, list[Tensor]] = {}
    seen = 0
    with seeded(ctx.seed, module_device(model)):
        for batch in test_batches(ctx, n, "posterior collapse", rows=rows):
            seen += batch.size
            for name, (q, p, kept) in model.latent_kl_pairs(batch).items():
                kls.setdefault(name, []).append(kl_per_dim(q, p, mc_samples)[kept].double().cpu())
    thresholds = torch.linspace(0, max_threshold, steps, dtype=torch.float64)
    empty = [name for name, v in kls.items() if not sum(len(x) for x in v)]
    if empty:
        raise ValueError(f"posterior_collapse: no test row for {empty}")
    curves = {name: collapse_curve(torch.cat(v), thresholds, fraction) for name, v in kls.items()}
    figure = plot_collapse(thresholds, curves, fraction, Path(ctx.out_dir) / COLLAPSE_FIGURE)
    return {
        "thresholds": thresholds.tolist(),
        "collapse": {name: c.tolist() for name, c in curves.items()},
        "fraction": fraction,
        "n": seen,
        "figures": [figure],
    }


def plot_collapse(thresholds: Tensor, curves: dict[str, Tensor], fraction: float, path: Path) -> str:
    """One line per (q, p) pair: share of collapsed dimensions against the KL threshold
    (CMMD Fig. 2), rendered by Agg. Returns the file name."""
    fig = Figure(figsize=(5.0, 3.4))
    ax = fig.subplots()
    for name, curve in curves.items():
        ax.plot(thresholds.tolist(), curve.tolist(), label=f"KL({name})")
    ax.set_xlabel("KL threshold (nats)")
    ax.set_ylabel(f"share of dimensions within it for {fraction:.0%} of rows")
    ax.set_ylim(-0.01, 1.01)
    ax.grid(True)
    ax.legend(fontsize="small")
    fig.tight_layout()
    atomic_write_bytes(path, lambda f: fig.savefig(f, format="png", dpi=100))
    return path.name
