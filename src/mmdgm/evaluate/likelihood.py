"""Marginal log-likelihood metrics: the joint IWAE estimate and MMVAE's Table 3 (§4.2).

Every estimate is an importance-sampled IWAE value (Burda et al.; MMVAE eq. 2) with
K = 1000 samples by default (MMVAE footnote 4), computed per data point, batched over
data points and chunked over samples (sizes from `ctx.batch_size` and `chunk`, or from a
`memory_mb` budget), the encoders run once per batch, on the GPU when present (`device`).
Formulas and the reading of Table 3: docs/evaluation-likelihood.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import warnings
from collections.abc import Callable, Iterator

import torch
import torch.autograd.forward_ad as fwad
from torch import Tensor

from mmdgm.batch import Batch
from mmdgm.distributions import MixtureOfExperts
from mmdgm.evaluate.budget import bytes_per_draw, plan_sizes
from mmdgm.evaluate.common import module_device, on_device, seeded, test_batches, test_rows
from mmdgm.evaluate.context import EvalContext
from mmdgm.evaluate.registry import METRICS
from mmdgm.models.base import MultimodalVAE, chunked_log_mean_weight


def mean_and_stderr(values: Tensor) -> tuple[float, float | None]:
    """Mean of per-row values and its standard error (None for a single row)."""
    v = values.double()
    if v.numel() < 2:
        return float(v.mean()), None
    return float(v.mean()), float(v.std() / math.sqrt(v.numel()))


def check_samples(K: int, chunk: int) -> None:
    if K < 1 or chunk < 1:
        raise ValueError(f"K and chunk must be >= 1, got K={K}, chunk={chunk}")


@contextlib.contextmanager
def unit_llik_scales(model: MultimodalVAE) -> Iterator[None]:
    """Within the block, every modality spec of `model` has `llik_scale` 1.0 (the models
    read it from `model.modalities`); the specs are restored afterwards."""
    specs = model.modalities
    model.modalities = {n: dataclasses.replace(spec, llik_scale=1.0) for n, spec in specs.items()}
    try:
        yield
    finally:
        model.modalities = specs


@contextlib.contextmanager
def unit_llik_scales_with_tangents(model: MultimodalVAE) -> Iterator[None]:
    """Within the block (under an open `forward_ad.dual_level`), every `llik_scale` is 1
    carrying the forward-mode tangent s_m - 1 of the model's own scale s_m. The
    log-weights are linear in the scales (log p(z) + sum_m s_m log p(x_m | z) - log q),
    so they come out as duals: primal the unit-scale value, primal + tangent the scaled
    one, exactly, from one pass through the decoders (whose outputs carry no tangent)."""
    specs = model.modalities
    like = next(model.parameters())
    one = torch.ones((), dtype=like.dtype, device=like.device)
    with warnings.catch_warnings():  # torch's first make_dual scripts its decompositions
        warnings.filterwarnings("ignore", message="`torch.jit.script` is deprecated", category=DeprecationWarning)
        model.modalities = {
            n: dataclasses.replace(spec, llik_scale=fwad.make_dual(one, one * (spec.llik_scale - 1.0)))
            for n, spec in specs.items()
        }
    try:
        yield
    finally:
        model.modalities = specs


def unit_and_scaled_log_likelihood(model: MultimodalVAE, batch: Batch, K: int, chunk: int) -> Tensor:
    """(2, B): `log_likelihood(batch, K, chunk)` with every llik_scale 1, and with the
    model's scales, from the same draws and one pass (`unit_llik_scales_with_tangents`)."""
    batch.validate(model.modalities)
    batch = batch.zero_missing()
    with fwad.dual_level(), unit_llik_scales_with_tangents(model):
        proposal = model.joint_proposal(batch)

        def draw(k: int) -> tuple[Tensor, Tensor]:
            lw, count = model.joint_log_weights(batch, k, proposal)
            unit, tangent = fwad.unpack_dual(lw)
            scaled = unit if tangent is None else unit + tangent
            return torch.stack([unit, scaled], 1), count

        return chunked_log_mean_weight(draw, K, chunk)


def first_row(ctx: EvalContext) -> Batch:
    """Test row 0 on the model's device, unobserved entries zeroed (the budget probe's)."""
    return ctx.test_set.batch(torch.arange(1)).to(module_device(ctx.model)).zero_missing()


def sizes(ctx: EvalContext, memory_mb: float | None, K: int, n: int | None, chunk: int, desc: str,
          work: Callable[[Batch, int], object], rows: str = "random") -> tuple[int, int]:
    """(rows per batch, draws per chunk): `ctx.batch_size` and `chunk` without a budget,
    else `plan_sizes` for the bytes per draw of `work(row, k)` on the first test row."""
    if memory_mb is None:
        return ctx.batch_size, chunk
    return plan_sizes(memory_mb, bytes_per_draw(lambda k: work(first_row(ctx), k)), K, len(test_rows(ctx, n, desc, rows)))


def model_log_likelihoods(
    ctx: EvalContext, K: int, n: int | None, chunk: int, memory_mb: float | None, scaled: bool, rows: str
) -> Tensor:
    """The model's `log_likelihood(batch, K, chunk)` of the `test_rows` of n and `rows` with every
    llik_scale 1, (rows,); with `scaled`, also with the model's scales, (2, rows)."""
    desc = "joint log-likelihood"
    model = ctx.model
    size, chunk = sizes(ctx, memory_mb, K, n, chunk, desc,
                        lambda row, k: model.joint_log_weights(row, k, model.joint_proposal(row)), rows)
    with seeded(ctx.seed, module_device(model)):
        if scaled:
            return torch.cat([unit_and_scaled_log_likelihood(model, b, K, chunk).cpu()
                              for b in test_batches(ctx, n, desc, size, rows)], 1)
        with unit_llik_scales(model):
            return torch.cat([model.log_likelihood(b, K=K, chunk=chunk).cpu()
                              for b in test_batches(ctx, n, desc, size, rows)])


@METRICS.register("joint_log_likelihood")
@torch.no_grad()
def joint_log_likelihood(
    ctx: EvalContext, K: int = 1000, n: int | None = None, chunk: int = 100, scaled: bool = True,
    memory_mb: float | None = None, device: str = "auto", rows: str = "random",
) -> dict:
    """Mean over test rows of the model's own `log_likelihood(batch, K)` (MMVAE Table 3,
    first column: for MMVAE the tight IWAE over K draws from each unimodal posterior,
    weighted against the mixture), with its standard error over rows.

    "log p(<names>)" is evaluated with every `llik_scale` set to 1, so it estimates the
    log-likelihood. When a modality has `llik_scale` != 1 and `scaled` is true, the
    training-time value with the scales applied (what the official MMVAE evaluation
    reports; not a log-likelihood) is added as "scaled bound(<names>)", from the same
    draws and the same decoder pass (`unit_llik_scales_with_tangents`). Partially
    observed rows contribute log p(x_observed).

    Work sizes: `ctx.batch_size` rows and `chunk` draws per component at a time, or, with
    `memory_mb`, as many as that budget holds (`budget.plan_sizes`); `device` ("auto": the
    GPU when present) is where the model runs for the metric. Neither changes the
    estimator, only which random numbers fall to which row. `n` rows (None: all) chosen
    by `rows` (`common.test_rows`: "random", a seeded sample; "first"). Returns
    {"log p(<names>)": mean, ["scaled bound(<names>)": mean,] "stderr": {...}, "K", "n"}.
    """
    check_samples(K, chunk)
    names = ",".join(ctx.model.names)
    scaled = scaled and any(spec.llik_scale != 1.0 for spec in ctx.model.modalities.values())
    with on_device(ctx.model, device):
        v = model_log_likelihoods(ctx, K, n, chunk, memory_mb, scaled, rows)
    values = {f"log p({names})": v[0], f"scaled bound({names})": v[1]} if scaled else {f"log p({names})": v}
    out: dict = {}
    stderr = {}
    for key, v in values.items():
        out[key], stderr[key] = mean_and_stderr(v)
    return {**out, "stderr": stderr, "K": K, "n": int(values[f"log p({names})"].numel())}


def proposal_draws(q, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """Draws z (N, B, D) from the proposal `q`, log q(z) (N, B) and which draws count (N, B).

    A `MixtureOfExperts` is sampled stratified, k draws from every expert (MMVAE eq. 3 and
    the official evaluation); draws of unobserved experts do not count. Any other posterior
    needs `sample(sample_shape)` and a `log_prob` that is per dimension or already summed.
    """
    if isinstance(q, MixtureOfExperts):
        z = torch.cat([e.sample((k,)) for e in q.experts])
        counted = q.mask.repeat_interleave(k, dim=0)
        return z, q.log_prob(z), counted
    if not (hasattr(q, "sample") and hasattr(q, "log_prob")):
        raise TypeError(f"a proposal needs sample() and log_prob(); got {type(q).__name__}")
    z = q.sample((k,))
    log_q = q.log_prob(z)
    if log_q.shape == z.shape:
        log_q = log_q.sum(-1)
    return z, log_q, torch.ones(z.shape[:-1], dtype=torch.bool, device=z.device)


def proposal_log_means(
    model: MultimodalVAE, batch: Batch, source: list[str], targets: dict[str, list[str]], K: int, chunk: int
) -> dict[str, Tensor]:
    """For each key, log (1/N) sum_i p(x_T | z_i) p(z_i) / q(z_i | x_source) with
    p(x_T | z) = prod_{t in T} p(x_t | z) (no llik_scale), the N counted draws of
    `proposal_draws(model.encode(batch, source), .)`, K per component; shape (B,) each.
    `batch` must observe every source and target modality in every row."""
    q = model.encode(batch, source)
    prior = model.prior()
    acc = {key: None for key in targets}
    count = None
    done = 0
    while done < K:
        k = min(chunk, K - done)
        z, log_q, counted = proposal_draws(q, k)
        base = prior.log_prob(z).sum(-1) - log_q
        lik = {
            t: model.likelihood(t, z).log_prob_sum(batch.data[t], len(model.modalities[t].shape))
            for t in dict.fromkeys(t for ts in targets.values() for t in ts)
        }
        for key, ts in targets.items():
            lw = base + sum(lik[t] for t in ts)
            part = torch.logsumexp(torch.where(counted, lw, torch.full_like(lw, -math.inf)), 0)
            acc[key] = part if acc[key] is None else torch.logaddexp(acc[key], part)
        n_counted = counted.sum(0)
        count = n_counted if count is None else count + n_counted
        done += k
    return {key: v - count.to(v.dtype).log() for key, v in acc.items()}


def table3_targets(names: list[str]) -> list[tuple[list[str], dict[str, list[str]]]]:
    """(proposal modalities, {key: target modalities}) for every proposal of the metric."""
    plan = []
    for n in names:
        plan.append(([n], {f"log p({m}|{n})": [m] for m in names}))
    for m, n in itertools.combinations(names, 2):
        both = f"{m},{n}"
        plan.append(([m, n], {f"log p({m}|{both})": [m], f"log p({n}|{both})": [n], f"log p({both})": [m, n]}))
    return plan


@METRICS.register("conditional_log_likelihoods")
@torch.no_grad()
def conditional_log_likelihoods(
    ctx: EvalContext, K: int = 1000, n: int | None = None, chunk: int = 100,
    memory_mb: float | None = None, device: str = "auto", rows: str = "random",
) -> dict:
    """MMVAE Table 3: every modality's marginal log-likelihood estimated with the joint
    and with each single variational posterior as proposal (§4.2: "marginal likelihoods
    ... of the individual generative models p(x_m) using both the joint variational
    posterior q(z | x_1:M) and the single variational posterior q(z | x_m)").

    "log p(x_m | x_S)" in the paper's notation names the *proposal* q(z | x_S); the value is
    an IWAE estimate of the marginal log p(x_m) (official `cross_iwaes`/`individual_iwaes`):
        log p(m|S) = log (1/N) sum_i p(x_m | z_i) p(z_i) / q(z_i | x_S),  z_i ~ q(z | x_S),
    N = K draws per expert of q(z | x_S) (stratified MoE for S = {m, n}), likelihoods without
    llik_scale. It is a lower bound on log p(x_m) in expectation that tightens with K
    (to log p(x_m), never to the conditional). Keys, for every modality m and other n:
    "log p(m|m,n)" (joint proposal of the pair), "log p(m|m)", "log p(m|n)".

    Also reported, for the true conditional log p(x_n | x_m) = log p(x_m, x_n) - log p(x_m):
    "log p(m,n) - log p(m)" (m, n in model order; likewise "- log p(n)"), both terms IWAE
    estimates from the same draws of q(z | x_m, x_n): consistent in K, but not a bound.
    Rows lacking a modality a key needs are left out of that key; "rows" gives each
    key's count. `memory_mb`, `device` and `rows` as for `joint_log_likelihood` (the budget's probe
    counts the draws of every proposal together). Returns
    {key: mean, "stderr": {key: se}, "rows": {key: count}, "K": K, "n": rows seen}.
    """
    check_samples(K, chunk)
    model = ctx.model
    plan = table3_targets(model.names)
    values: dict[str, list[Tensor]] = {}
    seen = 0
    desc = "conditional log-likelihoods"
    with on_device(model, device):
        size, chunk = sizes(ctx, memory_mb, K, n, chunk, desc, lambda row, k: [
            proposal_log_means(model, row, source, targets, k, k) for source, targets in plan
        ], rows)
        with seeded(ctx.seed, module_device(model)):
            for batch in test_batches(ctx, n, desc, size, rows):
                seen += batch.size
                for source, targets in plan:
                    for key, est in conditional_rows(model, batch, source, targets, K, chunk).items():
                        values.setdefault(key, []).append(est.cpu())
    out: dict = {}
    stderr, counts = {}, {}
    for key in sorted(values):
        v = torch.cat(values[key])
        if v.numel():
            out[key], stderr[key] = mean_and_stderr(v)
            counts[key] = int(v.numel())
    return {**out, "stderr": stderr, "rows": counts, "K": K, "n": seen}


def conditional_rows(
    model: MultimodalVAE, batch: Batch, source: list[str], targets: dict[str, list[str]], K: int, chunk: int
) -> dict[str, Tensor]:
    """Per-row estimates of one proposal's keys over the rows that observe the source
    (and, per key, its targets); for a pair proposal also the log-ratio keys."""
    observed = torch.stack([batch.mask[s] for s in source]).all(0)
    if not observed.any():
        return {}
    sub = batch.select(observed)
    est = proposal_log_means(model, sub, source, targets, K, chunk)
    out = {}
    for key, ts in targets.items():
        if len(ts) == 1:
            out[key] = est[key][sub.mask[ts[0]]]
    if len(source) == 2:
        m, n = source
        joint = est[f"log p({m},{n})"]
        out[f"log p({m},{n}) - log p({n})"] = joint - est[f"log p({n}|{m},{n})"]
        out[f"log p({m},{n}) - log p({m})"] = joint - est[f"log p({m}|{m},{n})"]
    return out
