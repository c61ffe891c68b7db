"""Metrics of the missing-modality setting (CMMD §4): the error of generating the
modalities missing at test time, and the error rate of a model's own classifier."""

from __future__ import annotations

import math

import torch

from mmdgm.evaluate.common import module_device, seeded, test_batches
from mmdgm.evaluate.context import EvalContext
from mmdgm.evaluate.registry import METRICS
from mmdgm.models.base import MultimodalVAE
from mmdgm.registry import nearest


def observed_modalities(model: MultimodalVAE, observed: list[str] | None, metric: str) -> list[str]:
    """The observed subset: `observed`, else the modalities the model declares always
    observed (CMMD's `observed`); validated against the model's names."""
    if observed is None:
        observed = getattr(model, "observed", None)
        if observed is None:
            raise ValueError(f"{metric}: name the observed modalities (option observed); "
                             f"{type(model).__name__} does not declare any")
    unknown = [n for n in observed if n not in model.names]
    if unknown:
        raise ValueError(f"{metric}: unknown modality {unknown[0]!r}{nearest(unknown[0], model.names)}; "
                         f"the model has {model.names}")
    if not observed or len(set(observed)) == len(model.names):
        raise ValueError(f"{metric}: observed must name some but not all of {model.names}, got {list(observed)}")
    return list(observed)


@METRICS.register("missing_rmse")
@torch.no_grad()
def missing_rmse(
    ctx: EvalContext, observed: list[str] | None = None, n: int | None = None, use_mean: bool = True,
    rows: str = "random",
) -> dict:
    """RMSE of every missing modality generated from the observed ones (CMMD Table 1 and
    §4.3.5, "rmse for the generated missing modality"): for each target t not in
    `observed`, sqrt(mean over test rows and entries of (x^_t - x_t)^2), with
    x^_t = model.cross_generate(batch, observed, t, mean=use_mean) on the test rows
    observing `observed` and t among `n` (chosen by `rows`, `common.test_rows`).
    `use_mean`: z at the mean of its distribution (for
    CMMD, the decoder mean at the prior mean, as the authors' code generates); else one
    draw. `observed` defaults to the model's declared observed modalities (CMMD); any
    model with `cross_generate` from a subset can be scored by naming it. Returns
    {target: rmse, "mean": mean over targets, "rows": {target: count}, "observed", "use_mean"}."""
    model = ctx.model
    observed = observed_modalities(model, observed, "missing_rmse")
    targets = [t for t in model.names if t not in observed]
    sse = {t: 0.0 for t in targets}
    entries = {t: 0 for t in targets}
    counts = {t: 0 for t in targets}
    with seeded(ctx.seed, module_device(model)):
        for batch in test_batches(ctx, n, "missing rmse", rows=rows):
            sources = torch.stack([batch.mask[m] for m in observed]).all(0)
            for t in targets:
                keep = sources & batch.mask[t]
                if not keep.any():
                    continue
                sub = batch.select(keep)
                error = model.cross_generate(sub, observed, t, mean=use_mean).double() - sub.data[t].double()
                sse[t] += float(error.square().sum())
                entries[t] += error.numel()
                counts[t] += int(keep.sum())
    empty = [t for t in targets if not counts[t]]
    if empty:
        raise ValueError(f"missing_rmse: no test row observes {observed} together with {empty}")
    rmse = {t: math.sqrt(sse[t] / entries[t]) for t in targets}
    return {**rmse, "mean": sum(rmse.values()) / len(rmse), "rows": counts, "observed": observed, "use_mean": use_mean}


@METRICS.register("prediction_error")
@torch.no_grad()
def prediction_error(ctx: EvalContext, n: int | None = None, rows: str = "random") -> dict:
    """Test error rate of the model's own classifier, `model.predict(batch)` (CMMD's
    p(y | mu_p(x_o)) of §3.3, fed with the observed modalities only; Table 2's error),
    over `n` test rows (all by default; chosen by `rows`, `common.test_rows`). Returns {"error", "n"}."""
    model = ctx.model
    if not callable(getattr(model, "predict", None)):
        raise ValueError(f"prediction_error needs a model with its own classifier (predict), e.g. cmmd; "
                         f"{type(model).__name__} has none")
    wrong = total = 0
    with seeded(ctx.seed, module_device(model)):
        for batch in test_batches(ctx, n, "prediction error", rows=rows):
            predicted = model.predict(batch).argmax(-1)
            wrong += int((predicted != batch.labels).sum())
            total += batch.size
    return {"error": wrong / total, "n": total}
