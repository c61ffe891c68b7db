"""MEME's Table 2 protocol: marginal likelihoods in each direction ('flipped').

MEME's direction s -> t models p(s, t) = p(t) p(s | t) with p(s | t) = int p(s|z) p(z|t) dz,
t's encoder acting as the conditional prior (Joy et al. 2022, eq. 6). Appendix C trains two
unidirectional models (`model.options.directions`) and evaluates each also in the direction
it was not trained for, by flipping the roles of the modalities and their networks; the
bidirectional objective (eq. 2) should be good in both. The paper's table lost its numbers
in our copy and its code has no such evaluation, so the estimator is ours: IWAE estimates
with K draws from q(z | s) for p(s | t) and from q(z | t) for p(t) under s's pseudo-sample
prior (`MEME.directional_log_weights`), likelihoods without `llik_scale`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mmdgm.evaluate.common import module_device, seeded, test_batches
from mmdgm.evaluate.context import EvalContext
from mmdgm.evaluate.likelihood import check_samples, mean_and_stderr, unit_llik_scales
from mmdgm.evaluate.registry import METRICS


def directional_estimates(model, batch, K: int, chunk: int) -> dict[str, Tensor]:
    """Per-row IWAE estimates "log p(s,t) [s->t]" and "log p(s|t) [s->t]" for both
    directions, accumulated over chunks of K draws; rows must observe both modalities."""
    acc: dict[str, Tensor] = {}
    done = 0
    while done < K:
        k = min(chunk, K - done)
        for (s, t), (given, marg) in model.directional_log_weights(batch, k).items():
            for key, lw in ((f"log p({s},{t}) [{s}->{t}]", given + marg), (f"log p({s}|{t}) [{s}->{t}]", given)):
                part = torch.logsumexp(lw, 0)
                acc[key] = part if key not in acc else torch.logaddexp(acc[key], part)
        done += k
    log_k = torch.tensor(float(K)).log()
    return {key: v - log_k for key, v in acc.items()}


@METRICS.register("meme_directional_likelihood")
@torch.no_grad()
def meme_directional_likelihood(
    ctx: EvalContext, K: int = 1000, n: int | None = None, chunk: int = 100, rows: str = "random"
) -> dict:
    """MEME Table 2: for each direction s->t, the mean over test rows observing both
    modalities of log p(s, t) and log p(s | t) under that direction's factorisation (module
    docstring), with standard errors; `n` rows (None: all) chosen by `rows` (`common.test_rows`). Returns {key: mean, "stderr": {key: se}, "K", "n"}."""
    check_samples(K, chunk)
    model = ctx.model
    if not hasattr(model, "directional_log_weights"):
        raise ValueError(f"meme_directional_likelihood needs a model with directions (MEME); "
                         f"{type(model).__name__} has none")
    values: dict[str, list[Tensor]] = {}
    with unit_llik_scales(model), seeded(ctx.seed, module_device(model)):
        for batch in test_batches(ctx, n, "directional likelihoods", rows=rows):
            both = torch.stack([batch.mask[m] for m in model.names]).all(0)
            if not both.any():
                continue
            for key, v in directional_estimates(model, batch.select(both), K, chunk).items():
                values.setdefault(key, []).append(v.cpu())
    if not values:
        raise ValueError("meme_directional_likelihood: no test row observes both modalities")
    out: dict = {}
    stderr = {}
    for key in sorted(values):
        out[key], stderr[key] = mean_and_stderr(torch.cat(values[key]))
    return {**out, "stderr": stderr, "K": K, "n": int(torch.cat(next(iter(values.values()))).numel())}
