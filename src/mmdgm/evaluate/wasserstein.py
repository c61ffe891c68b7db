"""W2 relatedness (MEME §4.2, Figure 8; appendix F): the 2-Wasserstein distance between the
unimodal Gaussian posteriors of paired and of unpaired test items.

For N(m1, S1) and N(m2, S2) (Givens & Shortt 1984):
    W2^2 = ||m1 - m2||^2 + Tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2)
(appendix F prints ||m1 + m2||, a typo); for diagonal S = diag(s^2) the trace term is
||s1 - s2||^2.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mmdgm.distributions import Normal
from mmdgm.evaluate.common import test_batches
from mmdgm.evaluate.context import EvalContext
from mmdgm.evaluate.registry import METRICS
from mmdgm.evaluate.relatedness import histogram, separation

FIGURE = "w2-relatedness-{}-{}.png"


def w2_diagonal(m1: Tensor, s1: Tensor, m2: Tensor, s2: Tensor) -> Tensor:
    """W2 between diagonal Gaussians N(m1, diag s1^2), N(m2, diag s2^2), over the last dim."""
    return ((m1 - m2).pow(2).sum(-1) + (s1 - s2).pow(2).sum(-1)).sqrt()


@METRICS.register("w2_relatedness")
@torch.no_grad()
def w2_relatedness(ctx: EvalContext, n: int | None = 1000, rows: str = "random") -> dict:
    """For every modality pair (a, b), W2(q(z|a_i), q(z|b_j)) over `n` test rows (chosen by
    `rows`, `common.test_rows`) observing both, within evaluation batches: paired (i = j) and unpaired (i != j). Reports
    their means, the AUC of telling paired from unpaired by a smaller distance (unpaired
    distances outnumber paired ones, so no accuracy), and density histograms per pair
    (w2-relatedness-a-b.png); distances that overflow (infinite posterior scales) are left
    out and counted under "non_finite". Needs Gaussian unimodal posteriors."""
    model = ctx.model
    if model.posterior_cls is not Normal:
        raise ValueError(f"w2_relatedness needs Gaussian posteriors (model.posterior: normal), "
                         f"got {model.posterior_cls.__name__}")
    names = model.names
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
    paired: dict[tuple[str, str], list[Tensor]] = {p: [] for p in pairs}
    unpaired: dict[tuple[str, str], list[Tensor]] = {p: [] for p in pairs}
    for batch in test_batches(ctx, n, "W2 relatedness", rows=rows):
        post = {m: model.posterior(m, batch.data[m]) for m in names}
        for a, b in pairs:
            both = (batch.mask[a] & batch.mask[b]).nonzero().flatten()
            if len(both) < 2:
                continue
            qa, qb = post[a], post[b]
            d = w2_diagonal(qa.loc[both, None], qa.scale[both, None], qb.loc[None, both], qb.scale[None, both])
            off = ~torch.eye(len(both), dtype=torch.bool, device=d.device)
            paired[(a, b)].append(d.diagonal().cpu())
            unpaired[(a, b)].append(d[off].cpu())
    out: dict = {"n": 0, "figures": []}
    for a, b in pairs:
        if not paired[(a, b)]:
            raise ValueError(f"w2_relatedness: no two test rows observe both {a!r} and {b!r}")
        near, far = torch.cat(paired[(a, b)]), torch.cat(unpaired[(a, b)])
        key = f"{a},{b}"
        non_finite = int((~torch.isfinite(near)).sum() + (~torch.isfinite(far)).sum())
        near, far = near[torch.isfinite(near)], far[torch.isfinite(far)]
        if not len(near) or not len(far):
            raise ValueError(f"w2_relatedness: every W2 distance between {a!r} and {b!r} posteriors is "
                             "non-finite (posterior scales overflowed)")
        auc = separation(-near, -far)["auc"]
        out[key] = {"paired": float(near.mean()), "unpaired": float(far.mean()), "auc": auc, "non_finite": non_finite}
        figure = FIGURE.format(a, b)
        histogram(near, far, None, ctx.out_dir / figure, f"W2 {a} vs {b}, AUC {auc:.3f}",
                  labels=("paired", "unpaired"), xlabel="W2 distance between posteriors")
        out["figures"].append(figure)
        out["n"] = max(out["n"], len(near))
    return out
