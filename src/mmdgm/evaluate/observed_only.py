"""The "M-" reference row of the CMMD tables (§4): a classifier that sees only the always
observed modality, to tell what a learned joint representation adds to it.

It is a metric, not a model: it depends on the data alone (the run's train and test sets
and the seed), not on the trained model, so it sits next to `downstream_classification` in
any run's eval.json and a reproduction table reads it as its own row or column. Two
classifiers:

- "mlp" (default): CMMD's classifier network (Appendix C, MNIST: 2 hidden layers of 50
  softplus units, dropout 0.2) on the raw observed modality, trained with Adam on every
  training example of it; the paper's supervised M- baseline.
- "logistic": scikit-learn's multinomial logistic regression on `n_train` raw training
  examples (default 500), the very probe `downstream_classification` fits on
  representations: the reference for that protocol.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from torch import Tensor, nn

from mmdgm.evaluate.classifier_store import fit_classifier, source_examples
from mmdgm.evaluate.common import module_device, seeded
from mmdgm.evaluate.context import EvalContext
from mmdgm.evaluate.latent import inference_modalities
from mmdgm.evaluate.registry import METRICS
from mmdgm.nets.layers import activation
from mmdgm.registry import nearest

CLASSIFIERS = ("mlp", "logistic")


def mlp_classifier(dim: int, hidden: list[int], act: str, dropout: float, classes: int) -> nn.Sequential:
    """Flatten, then per hidden size: linear, activation, dropout; then a linear layer to logits."""
    layers: list[nn.Module] = [nn.Flatten()]
    for a, b in zip([dim, *hidden[:-1]], hidden):
        layers += [nn.Linear(a, b), activation(act), nn.Dropout(dropout)]
    layers.append(nn.Linear(hidden[-1] if hidden else dim, classes))
    return nn.Sequential(*layers)


def as_float(x: Tensor) -> Tensor:
    """uint8 images scaled to [0, 1]; other tensors as float."""
    return x.float().div(255.0) if x.dtype == torch.uint8 else x.float()


@torch.no_grad()
def predict(model: nn.Module, x: Tensor, batch_size: int = 1000) -> Tensor:
    """Predicted classes (N,) of `model` (in eval mode) for examples x."""
    device = module_device(model)
    chunks = (as_float(x[i:i + batch_size]).to(device) for i in range(0, len(x), batch_size))
    return torch.cat([model(chunk).argmax(1).cpu() for chunk in chunks])


def flat(x: Tensor) -> np.ndarray:
    """Examples as flat float64 rows (N, numel)."""
    return as_float(x).double().flatten(1).numpy()


@METRICS.register("observed_only_classifier")
def observed_only_classifier(
    ctx: EvalContext,
    observed: str | None = None,
    classifier: str = "mlp",
    hidden: list[int] | None = None,
    act: str = "softplus",
    dropout: float = 0.2,
    epochs: int = 20,
    lr: float = 1e-3,
    batch_size: int = 100,
    n_train: int | None = None,
    max_iter: int = 1000,
) -> dict:
    """Test error rate of a classifier trained on the observed modality alone (module
    docstring). `observed` defaults to the first modality the model can condition on
    (VCCA's observed view; the first modality of the others). `hidden` defaults to [50, 50];
    `n_train` (None: every example for "mlp", 500 for "logistic") subsamples the training
    examples with `ctx.seed`. Keys: the observed modality -> error rate, n_train, classifier."""
    if ctx.train_set is None:
        raise ValueError("observed_only_classifier trains on train data: the context has no train_set")
    names = ctx.model.names
    observed = inference_modalities(ctx.model)[0] if observed is None else observed
    if observed not in names:
        raise ValueError(
            f"observed_only_classifier: unknown modality {observed!r}{nearest(observed, names)}; the model has {names}"
        )
    if classifier not in CLASSIFIERS:
        raise ValueError(
            f"observed_only_classifier: unknown classifier {classifier!r}{nearest(classifier, list(CLASSIFIERS))}"
        )
    hidden = [50, 50] if hidden is None else list(hidden)
    if any(h < 1 for h in hidden) or not 0.0 <= dropout < 1.0 or epochs < 1 or lr <= 0 or batch_size < 1:
        raise ValueError(f"observed_only_classifier: need hidden sizes >= 1, dropout in [0, 1), epochs >= 1, lr > 0 and "
                         f"batch_size >= 1; got {hidden}, {dropout}, {epochs}, {lr}, {batch_size}")
    x, y = source_examples(ctx.train_set, observed)
    x_test, y_test = source_examples(ctx.test_set, observed)
    if n_train is not None and n_train < 1:
        raise ValueError(f"observed_only_classifier: n_train must be >= 1, got {n_train}")
    n = min((500 if classifier == "logistic" else len(x)) if n_train is None else int(n_train), len(x))
    rows = torch.randperm(len(x), generator=torch.Generator().manual_seed(ctx.seed))[:n]
    x, y = x[rows], y[rows]
    if len(torch.unique(y)) < 2:
        raise ValueError("observed_only_classifier: the training examples hold fewer than two classes")
    if classifier == "logistic":
        model = LogisticRegression(max_iter=max_iter).fit(flat(x), y.numpy())
        error = 1.0 - float(model.score(flat(x_test), y_test.numpy()))
    else:
        device = module_device(ctx.model)
        with seeded(ctx.seed, device):
            classes = int(max(y.max(), y_test.max())) + 1
            net = mlp_classifier(math.prod(x.shape[1:]), hidden, act, dropout, classes).to(device)
            fit_classifier(net, x, y, epochs, batch_size, lr, ctx.seed, ctx.progress, f"M- classifier ({observed})")
        error = float((predict(net, x_test) != y_test).double().mean())
    return {observed: error, "n_train": n, "n_test": len(y_test), "classifier": classifier}
