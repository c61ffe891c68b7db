"""Coherence of generations, scored by pretrained per-modality classifiers.

Protocols (docs/evaluation.md): MMVAE §4 (joint and cross coherence), MMALI §4.2
(synergy coherence), relating-by-contrasting appendix G.2 (generation diversity).
Coherence is plain accuracy over data points, not a class-averaged score. Every metric
runs under `torch.no_grad` with the global RNG forked and seeded from `ctx.seed`, so a
result is a function of (model, data, seed, batch size).
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from mmdgm.batch import Batch
from mmdgm.evaluate.common import module_device, row_batches, seeded
from mmdgm.evaluate.context import EvalContext
from mmdgm.evaluate.latent import inference_modalities
from mmdgm.evaluate.registry import METRICS
from mmdgm.evaluate.text_classifier import NO_CLASS, DigitWordReader

FIGURE = "generation_diversity.png"


def require_classifiers(ctx: EvalContext, names: list[str]) -> dict[str, nn.Module]:
    """The context's classifier of each modality, in eval mode; a missing one is an error."""
    missing = [n for n in names if not ctx.classifiers or n not in ctx.classifiers]
    if missing:
        raise ValueError(
            f"coherence needs a classifier for every modality; missing {missing} "
            "(load them with mmdgm.evaluate.classifier_store.load_classifiers)"
        )
    return {n: ctx.classifiers[n].eval() for n in names}


def classify(classifier: nn.Module, x: Tensor) -> Tensor:
    """Predicted classes (B,) on the CPU."""
    return classifier(x.to(module_device(classifier))).argmax(-1).cpu()


def source_subsets(names: list[str]) -> list[tuple[tuple[str, ...], str]]:
    """(sources, target) for every ordered pair and, for M > 2, every non-empty proper
    subset of sources with each target outside it."""
    return [
        (subset, target)
        for size in range(1, len(names))
        for subset in itertools.combinations(names, size)
        for target in names
        if target not in subset
    ]


def pair_key(sources: tuple[str, ...], target: str) -> str:
    """'a->b' for one source, '{a,b}->c' for several."""
    left = sources[0] if len(sources) == 1 else "{" + ",".join(sources) + "}"
    return f"{left}->{target}"


def observed(batch: Batch, names: tuple[str, ...]) -> Tensor:
    """(B,) whether a row observes every modality in `names`."""
    return torch.stack([batch.mask[n] for n in names]).all(0)


def generation_accuracy(
    ctx: EvalContext, jobs: list[tuple[str, tuple[str, ...], str]], desc: str, all_key: str | None = None
) -> tuple[dict[str, float | None], dict[str, int]]:
    """For each (key, sources, target): accuracy, against the row labels, of the target
    classifier on `cross_generate(batch, sources, target)` over the test rows that observe
    every source (the target need not be observed: labels are per row), and that row
    count. A key with no such row has accuracy None. With `all_key`, also the share of the
    rows observing every job's sources on which every job's generation is correct.
    Returns ({key: accuracy}, {key: rows})."""
    model = ctx.model
    classifiers = require_classifiers(ctx, sorted({t for _, _, t in jobs}))
    device = module_device(model)
    keys = [k for k, _, _ in jobs] + ([all_key] if all_key else [])
    correct, count = dict.fromkeys(keys, 0), dict.fromkeys(keys, 0)
    with torch.no_grad(), seeded(ctx.seed, device):
        for rows in row_batches(len(ctx.test_set), ctx.batch_size, desc, ctx.progress):
            batch = ctx.test_set.batch(rows)
            every = torch.ones(batch.size, dtype=torch.bool)
            scored = torch.ones(batch.size, dtype=torch.bool)
            for key, sources, target in jobs:
                keep = observed(batch, sources)
                hit = torch.zeros(batch.size, dtype=torch.bool)
                if keep.any():
                    sub = batch.select(keep).zero_missing().to(device)
                    generated = model.cross_generate(sub, list(sources), target)
                    hit[keep] = classify(classifiers[target], generated) == sub.labels.cpu()
                correct[key] += int(hit.sum())
                count[key] += int(keep.sum())
                every &= hit
                scored &= keep
            if all_key:
                correct[all_key] += int(every[scored].sum())
                count[all_key] += int(scored.sum())
    return {k: correct[k] / count[k] if count[k] else None for k in keys}, count


def joint_predictions(ctx: EvalContext, n: int, desc: str) -> Tensor:
    """Classes (M, n) predicted for n joint generations (decoder means of prior draws)."""
    if n < 1:
        raise ValueError(f"{desc} needs n >= 1 prior samples, got {n}")
    model = ctx.model
    classifiers = require_classifiers(ctx, model.names)
    preds = []
    with torch.no_grad(), seeded(ctx.seed, module_device(model)):
        for rows in row_batches(n, ctx.batch_size, desc, ctx.progress):
            generated = model.sample(len(rows))
            preds.append(torch.stack([classify(classifiers[m], generated[m]) for m in model.names]))
    return torch.cat(preds, 1)


@METRICS.register("joint_coherence")
def joint_coherence(ctx: EvalContext, n: int = 10000) -> dict:
    """Share of n joint generations on which all modality classifiers agree (MMVAE §4)."""
    preds = joint_predictions(ctx, n, "joint coherence")
    return {"joint_coherence": float((preds == preds[0]).all(0).double().mean()), "n": n}


@METRICS.register("cross_coherence")
def cross_coherence(ctx: EvalContext) -> dict:
    """Accuracy of target classifiers on cross generations vs the row label, for every
    source -> target (MMVAE §4) and, for M > 2, every proper source subset -> target
    (sources among the modalities the model can condition on, `inference_modalities`).
    Each key counts the test rows observing all its sources ("rows" gives the counts);
    "n" is the size of the test set."""
    inferable = set(inference_modalities(ctx.model))
    jobs = [(pair_key(s, t), s, t) for s, t in source_subsets(ctx.model.names) if inferable.issuperset(s)]
    accuracies, rows = generation_accuracy(ctx, jobs, "cross coherence")
    return {**accuracies, "rows": rows, "n": len(ctx.test_set)}


@METRICS.register("synergy_coherence")
def synergy_coherence(ctx: EvalContext) -> dict:
    """Accuracy of each modality generated from the joint posterior of all modalities,
    keyed by the generated modality (MMALI §4.2), and under "all" the share of rows on
    which every generation matches the label (relating-by-contrasting §4.2 (d)), over the
    test rows observing every modality ("rows" gives the counts, "n" the test set size)."""
    names = tuple(ctx.model.names)
    reserved = {"all", "rows", "n"} & set(names)
    if reserved:
        raise ValueError(f"synergy_coherence keys its results by modality; {sorted(reserved)} are reserved names")
    jobs = [(m, names, m) for m in names]
    accuracies, rows = generation_accuracy(ctx, jobs, "synergy coherence", all_key="all")
    return {**accuracies, "rows": rows, "n": len(ctx.test_set)}


def normalised_entropy(counts: Tensor) -> float:
    """Entropy of a histogram divided by log(number of bins): 0 for one class, 1 for uniform."""
    p = counts.double() / counts.sum()
    p = p[p > 0]
    return float(-(p * p.log()).sum() / math.log(len(counts)))


@METRICS.register("generation_diversity")
def generation_diversity(ctx: EvalContext, n: int = 10000, classes: int = 10) -> dict:
    """Class histogram of n joint generations per modality and its normalised entropy
    (relating-by-contrasting appendix G.2); writes a bar chart to ctx.out_dir. Text that the
    digit-word reader cannot read is counted under "unread", outside the histogram."""
    names = ctx.model.names
    preds = joint_predictions(ctx, n, "generation diversity")
    readers = torch.tensor([isinstance(ctx.classifiers[m], DigitWordReader) for m in names])
    unread = (preds == NO_CLASS) & readers[:, None]
    read = preds[~unread]
    if read.numel() and int(read.max()) >= classes:
        raise ValueError(f"a classifier predicted class {int(read.max())}; generation_diversity has classes={classes}")
    counts = {m: torch.bincount(preds[i][~unread[i]], minlength=classes) for i, m in enumerate(names)}
    figure = Figure(figsize=(3.2 * len(names), 2.6), layout="constrained")
    for ax, m in zip(figure.subplots(1, len(names), squeeze=False)[0], names):
        ax.bar(range(classes), counts[m].tolist())
        ax.set(title=m, xlabel="predicted class", ylabel="generations", xticks=range(classes))
    out_dir = Path(ctx.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_dir / FIGURE, dpi=100)
    return {
        "n": n,
        "histograms": {m: c.tolist() for m, c in counts.items()},
        "entropy": {m: normalised_entropy(c) if c.sum() else None for m, c in counts.items()},
        "unread": {m: int(unread[i].sum()) for i, m in enumerate(names) if readers[i]},
        "figures": [FIGURE],
    }
