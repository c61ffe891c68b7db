"""Latent accuracy: how linearly the digit can be read off the latent codes (MMVAE §4).

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

import itertools

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from mmdgm.data import MultimodalDataset
from mmdgm.evaluate.common import module_device, row_batches, seeded
from mmdgm.evaluate.context import EvalContext
from mmdgm.evaluate.registry import METRICS
from mmdgm.registry import nearest


def inference_modalities(model) -> list[str]:
    """The modalities `model.encode` may condition on (all, for models that do not say)."""
    return list(getattr(model, "inference_modalities", model.names))


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


@METRICS.register("latent_accuracy")
def latent_accuracy(
    ctx: EvalContext, n_train: int = 10000, use_mean: bool = False, max_iter: int = 1000
) -> dict:
    """Test accuracy of a linear probe on latent codes of each single-modality posterior
    and of the joint posterior ("joint"), over the modalities the model can condition on
    (`model.inference_modalities`); see the module docstring for the protocol."""
    if ctx.train_set is None:
        raise ValueError("latent_accuracy fits its probe on train data: the context has no train_set")
    names = ctx.model.names
    if "joint" in names:
        raise ValueError("latent_accuracy reports the joint posterior as 'joint'; a modality has that name")
    inferable = inference_modalities(ctx.model)
    subsets = {m: [m] for m in inferable}
    if len(inferable) > 1:
        subsets["joint"] = inferable
    g = torch.Generator().manual_seed(ctx.seed)
    train_rows = torch.randperm(len(ctx.train_set), generator=g)[:n_train]
    test_rows = torch.arange(len(ctx.test_set))
    with seeded(ctx.seed, module_device(ctx.model)):
        train = latent_codes(ctx, ctx.train_set, train_rows, subsets, use_mean, "latent codes (train)")
        test = latent_codes(ctx, ctx.test_set, test_rows, subsets, use_mean, "latent codes (test)")
    result = {}
    for key in subsets:
        if train[key] is None or test[key] is None:
            result[key] = None
            continue
        probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter))
        probe.fit(*train[key])
        result[key] = float(probe.score(*test[key]))
    return {**result, "n_train": len(train_rows), "n_test": len(test_rows), "use_mean": use_mean}


@METRICS.register("downstream_classification")
def downstream_classification(
    ctx: EvalContext, n_train: int = 500, observed: list[str] | None = None, use_mean: bool = True, max_iter: int = 1000
) -> dict:
    """CMMD's downstream protocol (§4.3.2): representations from the observed modalities
    only (the posterior mean given them), a multiclass logistic regression fitted on
    `n_train` random training representations, and its test error rate. `observed` names
    one subset; by default every non-empty subset of the modalities the model can condition
    on (`model.inference_modalities`) is scored and their
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
        inferable = inference_modalities(ctx.model)
        subsets = {"+".join(c): list(c) for r in range(1, len(inferable) + 1) for c in itertools.combinations(inferable, r)}
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
