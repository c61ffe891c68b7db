"""Latent accuracy: how linearly the digit can be read off the latent codes (MMVAE §4),
of the whole code or, for models that declare `latent_split`, of each part of it (MMALI
Table 3: content, style and both).

Protocol. Encoders are frozen. Following the MMVAE code, each example is represented by
one fresh sample z ~ q(z | x_S) (`use_mean=True` uses the posterior mean instead), for
each single modality S = {m} and for the joint posterior S = all modalities, on rows where
every modality of S is observed. A linear classifier is fitted on `n_train` train rows (a
subsample drawn with `ctx.seed`) and scored on the whole test set.

Choice of classifier: scikit-learn's multinomial LogisticRegression (lbfgs,
max_iter=1000) on standardised features, instead of the MMVAE code's linear layer
trained 30 epochs with Adam. Both are linear probes; the convex fit is deterministic
and needs neither a learning rate nor an epoch count, so no choice is made on test
data (MMALI reports the best test accuracy over epochs, which is optimistic).
"""

from __future__ import annotations


import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from mmdgm.data import MultimodalDataset
from mmdgm.evaluate.common import fit_set, module_device, row_batches, seeded
from mmdgm.evaluate.context import EvalContext
from mmdgm.evaluate.registry import METRICS
from mmdgm.models.base import nonempty_subsets
from mmdgm.registry import nearest


def inference_modalities(model) -> list[str]:
    """The modalities `model.encode` may condition on (all, for models that do not say)."""
    return list(getattr(model, "inference_modalities", model.names))


def inference_subsets(model) -> list[list[str]]:
    """The modality sets `model.encode` accepts (every non-empty subset of its inference
    modalities, for models that do not say)."""
    declared = getattr(model, "inference_subsets", None)
    if declared is not None:
        return [list(s) for s in declared]
    return nonempty_subsets(inference_modalities(model))


def latent_codes(
    ctx: EvalContext, dataset: MultimodalDataset, rows: torch.Tensor, subsets: dict[str, list[str]], use_mean: bool, desc: str
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """key -> (codes (N_key, D), labels (N_key,)) of the given dataset rows under q(z | x_subset)."""
    model = ctx.model
    device = module_device(model)
    codes = {k: [] for k in subsets}
    labels = {k: [] for k in subsets}
    with torch.no_grad():
        for chunk in row_batches(len(rows), ctx.batch_size, desc, ctx.progress):
            batch = dataset.batch(rows[chunk])
            for key, names in subsets.items():
                keep = torch.stack([batch.mask[n] for n in names]).all(0)
                if not keep.any():
                    continue
                sub = batch.select(keep).zero_missing().to(device)
                q = model.encode(sub, names)
                codes[key].append((q.mean if use_mean else q.sample()).cpu())
                labels[key].append(sub.labels.cpu())
    return {
        k: (torch.cat(codes[k]).double().numpy(), torch.cat(labels[k]).numpy()) if codes[k] else None
        for k in subsets
    }


def check_probe_options(metric: str, n_train: int, max_iter: int) -> None:
    """Raise a ValueError naming `metric` for a probe option out of range."""
    if n_train < 2 or max_iter < 1:
        raise ValueError(f"{metric}: n_train must be >= 2 and max_iter >= 1, got n_train={n_train}, max_iter={max_iter}")


def probe_codes(
    ctx: EvalContext, subsets: dict[str, list[str]], n_train: int, use_mean: bool, metric: str,
    fit_pairs: str = "observed",
) -> tuple[dict, dict, int, int]:
    """Train codes of `n_train` random rows (drawn with `ctx.seed`) of the `fit_pairs` train
    data (`common.fit_set`) and test codes of every test row under each subset's posterior:
    (train, test, n_train rows, n_test rows), the first two as returned by `latent_codes`."""
    if ctx.train_set is None and fit_pairs == "observed":
        raise ValueError(f"{metric} fits its probe on train data: the context has no train_set")
    fitted_on = fit_set(ctx, fit_pairs, metric)
    g = torch.Generator().manual_seed(ctx.seed)
    train_rows = torch.randperm(len(fitted_on), generator=g)[:n_train]
    test_rows = torch.arange(len(ctx.test_set))
    with seeded(ctx.seed, module_device(ctx.model)):
        train = latent_codes(ctx, fitted_on, train_rows, subsets, use_mean, "latent codes (train)")
        test = latent_codes(ctx, ctx.test_set, test_rows, subsets, use_mean, "latent codes (test)")
    return train, test, len(train_rows), len(test_rows)


def probe_accuracy(
    train: tuple[np.ndarray, np.ndarray] | None, test: tuple[np.ndarray, np.ndarray] | None, max_iter: int,
    columns: slice = slice(None),
) -> float | None:
    """Test accuracy of the linear probe (module docstring) fitted on the train codes'
    `columns`; None where either set has no codes."""
    if train is None or test is None:
        return None
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter))
    probe.fit(train[0][:, columns], train[1])
    return float(probe.score(test[0][:, columns], test[1]))


def chosen(metric: str, option: str, given: list[str] | None, known: list[str]) -> list[str]:
    """`given` (default: all of `known`), each checked to be one of `known`."""
    if given is None:
        return list(known)
    if not given:
        raise ValueError(f"{metric}: {option} names nothing; choose from {known}")
    for name in given:
        if name not in known:
            raise ValueError(f"{metric}: unknown {option} entry {name!r}{nearest(name, known)}; choose from {known}")
    return list(given)


@METRICS.register("latent_accuracy")
def latent_accuracy(
    ctx: EvalContext, n_train: int = 10000, use_mean: bool = False, max_iter: int = 1000,
    posteriors: list[str] | None = None, fit_pairs: str = "observed",
) -> dict:
    """Test accuracy of a linear probe on latent codes of each single-modality posterior
    and of the joint posterior ("joint"), over the modalities the model can condition on
    (`model.inference_modalities`; no "joint" when that is one); see the module docstring
    for the protocol.
    `posteriors` restricts the scored ones (modality names and/or "joint"): MMALI's
    Table 1 probe of the 0-degree encoder on MultiMNIST is `posteriors=["rot0"]`.
    `fit_pairs`: the probe's train rows come from the run's own train data ("observed") or
    from the full data it was drawn from ("all", `common.fit_set`): one probe data set for
    runs trained on different subsets or re-pairings, with every row's true label."""
    check_probe_options("latent_accuracy", n_train, max_iter)
    names = ctx.model.names
    if "joint" in names:
        raise ValueError("latent_accuracy reports the joint posterior as 'joint'; a modality has that name")
    inferable = inference_modalities(ctx.model)
    everything = {m: [m] for m in inferable}
    if len(inferable) > 1:
        everything["joint"] = inferable
    subsets = {k: everything[k] for k in chosen("latent_accuracy", "posteriors", posteriors, list(everything))}
    train, test, n_rows, n_test = probe_codes(ctx, subsets, n_train, use_mean, "latent_accuracy", fit_pairs)
    result = {key: probe_accuracy(train[key], test[key], max_iter) for key in subsets}
    return {**result, "n_train": n_rows, "n_test": n_test, "use_mean": use_mean, "fit_pairs": fit_pairs}


def latent_split(model: object, metric: str) -> dict[str, slice]:
    """The model's declared `latent_split` (part name -> slice of z), checked."""
    split = getattr(model, "latent_split", None)
    if split is None:
        raise ValueError(
            f"{metric} needs a model that declares `latent_split` (a dict of part name -> slice of z, "
            f"e.g. MMALI's style and content codes); {type(model).__name__} declares none"
        )
    if not isinstance(split, dict) or not split or not all(isinstance(v, slice) for v in split.values()):
        raise ValueError(f"{metric}: {type(model).__name__}.latent_split must be a non-empty dict of slices, got {split!r}")
    if "both" in split:
        raise ValueError(f"{metric} reports the whole code as 'both'; latent_split has a part of that name")
    for part, columns in split.items():
        if columns.step not in (None, 1) or not isinstance(columns.start, int) or not isinstance(columns.stop, int) \
                or not 0 <= columns.start < columns.stop:
            raise ValueError(f"{metric}: latent_split part {part!r} must be slice(start, stop) with 0 <= start < stop, "
                             f"got {columns}")
    return split


@METRICS.register("latent_accuracy_split")
def latent_accuracy_split(
    ctx: EvalContext, n_train: int = 10000, use_mean: bool = False, max_iter: int = 1000,
    modalities: list[str] | None = None,
) -> dict:
    """MMALI's Table 3: for each single-modality encoder (default: every modality the model
    can condition on), the
    test accuracy of the linear probe of `latent_accuracy` fitted on each part of z that
    the model declares in `model.latent_split` (e.g. "content", "style") and on the whole
    code ("both"); one fitted probe per (modality, part), the same codes for all parts.
    Keys: modality -> {part: accuracy, "both": accuracy}; "parts": part -> [start, stop]."""
    check_probe_options("latent_accuracy_split", n_train, max_iter)
    split = latent_split(ctx.model, "latent_accuracy_split")
    names = chosen("latent_accuracy_split", "modalities", modalities, inference_modalities(ctx.model))
    subsets = {m: [m] for m in names}
    train, test, n_rows, n_test = probe_codes(ctx, subsets, n_train, use_mean, "latent_accuracy_split")
    parts = {**split, "both": slice(None)}
    result = {}
    for m in names:
        if train[m] is not None:
            width = train[m][0].shape[1]
            beyond = [p for p, columns in split.items() if columns.stop > width]
            if beyond:
                raise ValueError(f"latent_accuracy_split: latent_split parts {beyond} reach past the {width} latent "
                                 f"dimensions of {m!r}'s codes")
        result[m] = {p: probe_accuracy(train[m], test[m], max_iter, columns) for p, columns in parts.items()}
    return {**result, "parts": {p: [c.start, c.stop] for p, c in split.items()},
            "n_train": n_rows, "n_test": n_test, "use_mean": use_mean}


@METRICS.register("downstream_classification")
def downstream_classification(
    ctx: EvalContext, n_train: int = 500, observed: list[str] | None = None, use_mean: bool = True, max_iter: int = 1000
) -> dict:
    """CMMD's downstream protocol (§4.3.2): representations from the observed modalities
    only (the posterior mean given them), a multiclass logistic regression fitted on
    `n_train` random training representations, and its test error rate. `observed` names
    one subset; by default every subset the model can condition on (`model.inference_subsets`:
    every non-empty subset of its inference modalities, CMMD only its observed set) is scored and their
    mean error reported under "mean" (as the MNIST-SVHN-Text table averages its 7 subsets).
    Keys: "+"-joined subset names -> error rate."""
    if ctx.train_set is None:
        raise ValueError("downstream_classification fits its classifier on train data: the context has no train_set")
    names = ctx.model.names
    if observed is not None:
        unknown = [n for n in observed if n not in names]
        if unknown or not observed:
            raise ValueError(f"downstream_classification: unknown modality {unknown[0]!r}{nearest(unknown[0], names)}"
                             if unknown else "downstream_classification: observed names no modality")
        subsets = {"+".join(observed): list(observed)}
    else:
        subsets = {"+".join(c): c for c in inference_subsets(ctx.model)}
    g = torch.Generator().manual_seed(ctx.seed)
    train_rows = torch.randperm(len(ctx.train_set), generator=g)[:n_train]
    with seeded(ctx.seed, module_device(ctx.model)):
        train = latent_codes(ctx, ctx.train_set, train_rows, subsets, use_mean, "representations (train)")
        test = latent_codes(ctx, ctx.test_set, torch.arange(len(ctx.test_set)), subsets, use_mean, "representations (test)")
    errors = {}
    for key in subsets:
        if train[key] is None or test[key] is None or len(np.unique(train[key][1])) < 2:
            continue
        classifier = LogisticRegression(max_iter=max_iter)
        classifier.fit(*train[key])
        errors[key] = float(1.0 - classifier.score(*test[key]))
    if not errors:
        raise ValueError("downstream_classification: no subset had training representations of two or more classes")
    return {**errors, "mean": float(np.mean(list(errors.values()))), "n_train": len(train_rows), "use_mean": use_mean}
