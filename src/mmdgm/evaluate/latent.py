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

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from mmdgm.data import MultimodalDataset
from mmdgm.evaluate.common import module_device, row_batches, seeded
from mmdgm.evaluate.context import EvalContext
from mmdgm.evaluate.registry import METRICS


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
    and of the joint posterior ("joint"); see the module docstring for the protocol."""
    if ctx.train_set is None:
        raise ValueError("latent_accuracy fits its probe on train data: the context has no train_set")
    names = ctx.model.names
    if "joint" in names:
        raise ValueError("latent_accuracy reports the joint posterior as 'joint'; a modality has that name")
    subsets = {**{m: [m] for m in names}, "joint": names}
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
