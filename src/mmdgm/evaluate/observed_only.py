"""The "M-" reference row of the CMMD tables (§4): a classifier that sees only the always
observed modalities, to tell what a learned joint representation adds to them.

It is a metric, not a model: it depends on the data alone (the run's train and test sets
and the seed), not on the trained model, so it sits next to `downstream_classification` in
any run's eval.json, under the same key (the "+"-joined observed modalities), and a
reproduction table reads it as its own row or column. The input is the flattened
concatenation of the observed modalities of a row. Two classifiers:

- "mlp" (default): CMMD's classifier network (Appendix C, MNIST: 2 hidden layers of 50
  softplus units, dropout 0.2) on the raw observed modalities, trained with Adam on every
  training row observing them (or `n_train` of them); the paper's supervised M- baseline.
- "logistic": scikit-learn's multinomial logistic regression on `n_train` raw training
  rows (default 500), the very probe `downstream_classification` fits on
  representations: the reference for that protocol.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from torch import Tensor, nn

from mmdgm.data import MultimodalDataset
from mmdgm.evaluate.common import module_device, seeded
from mmdgm.evaluate.context import EvalContext
from mmdgm.evaluate.latent import inference_modalities
from mmdgm.evaluate.registry import METRICS
from mmdgm.nets.layers import activation
from mmdgm.registry import nearest

CLASSIFIERS = ("mlp", "logistic")


def mlp_classifier(dim: int, hidden: list[int], act: str, dropout: float, classes: int) -> nn.Sequential:
    """Per hidden size: linear, activation, dropout; then a linear layer to the logits."""
    layers: list[nn.Module] = []
    for a, b in zip([dim, *hidden[:-1]], hidden):
        layers += [nn.Linear(a, b), activation(act), nn.Dropout(dropout)]
    layers.append(nn.Linear(hidden[-1] if hidden else dim, classes))
    return nn.Sequential(*layers)


def features(dataset: MultimodalDataset, rows: Tensor, names: list[str]) -> tuple[Tensor, Tensor]:
    """The flattened concatenation of modalities `names` of the given rows (N, n_features)
    as floats, and their labels (N,)."""
    batch = dataset.batch(rows)
    return torch.cat([batch.data[n].flatten(1) for n in names], -1), batch.labels


def observing(dataset: MultimodalDataset, names: list[str]) -> Tensor:
    """Indices of the rows observing every modality of `names`."""
    return torch.nonzero(torch.stack([dataset.mask[n] for n in names]).all(0)).flatten()


def default_observed(model) -> list[str]:
    """The modalities a model declares always observed (CMMD's and VCCA's `observed`),
    else its first inference modality."""
    declared = getattr(model, "observed", None)
    return list(declared) if declared is not None else inference_modalities(model)[:1]


def train_mlp(net: nn.Module, dataset: MultimodalDataset, rows: Tensor, names: list[str], epochs: int,
              batch_size: int, lr: float, seed: int) -> None:
    """Adam on the cross-entropy, minibatches gathered from `rows` in a seeded order."""
    device = module_device(net)
    optimiser = torch.optim.Adam(net.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    net.train()
    for _ in range(epochs):
        for chunk in rows[torch.randperm(len(rows), generator=g)].split(batch_size):
            x, y = features(dataset, chunk, names)
            loss = F.cross_entropy(net(x.to(device)), y.to(device))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
    net.eval()


@torch.no_grad()
def mlp_error(net: nn.Module, dataset: MultimodalDataset, rows: Tensor, names: list[str], chunk: int = 1000) -> float:
    """Error rate of `net` on the given rows."""
    device = module_device(net)
    wrong = 0
    for part in rows.split(chunk):
        x, y = features(dataset, part, names)
        wrong += int((net(x.to(device)).argmax(1).cpu() != y).sum())
    return wrong / len(rows)


@METRICS.register("observed_only_classifier")
def observed_only_classifier(
    ctx: EvalContext,
    observed: list[str] | None = None,
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
    """Test error rate of a classifier trained on the observed modalities alone (module
    docstring), over the test rows observing them. `observed` defaults to the modalities
    the model declares observed (CMMD, VCCA), else its first inference modality. `hidden`
    defaults to [50, 50]; `n_train` (None: every row for "mlp", 500 for "logistic")
    subsamples the training rows with `ctx.seed`. Keys: "+"-joined observed modalities ->
    error rate, "n_train", "n_test", "classifier"."""
    metric = "observed_only_classifier"
    if ctx.train_set is None:
        raise ValueError(f"{metric} trains on train data: the context has no train_set")
    names = ctx.model.names
    observed = default_observed(ctx.model) if observed is None else list(observed)
    unknown = [n for n in observed if n not in names]
    if unknown or not observed:
        raise ValueError(f"{metric}: unknown modality {unknown[0]!r}{nearest(unknown[0], names)}; the model has {names}"
                         if unknown else f"{metric}: observed names no modality")
    if classifier not in CLASSIFIERS:
        raise ValueError(f"{metric}: unknown classifier {classifier!r}{nearest(classifier, list(CLASSIFIERS))}")
    hidden = [50, 50] if hidden is None else list(hidden)
    if any(h < 1 for h in hidden) or not 0.0 <= dropout < 1.0 or epochs < 1 or lr <= 0 or batch_size < 1:
        raise ValueError(f"{metric}: need hidden sizes >= 1, dropout in [0, 1), epochs >= 1, lr > 0 and batch_size "
                         f">= 1; got {hidden}, {dropout}, {epochs}, {lr}, {batch_size}")
    if n_train is not None and n_train < 1:
        raise ValueError(f"{metric}: n_train must be >= 1, got {n_train}")
    train_rows, test_rows = observing(ctx.train_set, observed), observing(ctx.test_set, observed)
    if not len(test_rows):
        raise ValueError(f"{metric}: no test row observes {observed}")
    n = min((500 if classifier == "logistic" else len(train_rows)) if n_train is None else n_train, len(train_rows))
    train_rows = train_rows[torch.randperm(len(train_rows), generator=torch.Generator().manual_seed(ctx.seed))[:n]]
    labels = ctx.train_set.labels[train_rows]
    if len(torch.unique(labels)) < 2:
        raise ValueError(f"{metric}: the training rows hold fewer than two classes")
    if classifier == "logistic":
        x, y = features(ctx.train_set, train_rows, observed)
        x_test, y_test = features(ctx.test_set, test_rows, observed)
        model = LogisticRegression(max_iter=max_iter).fit(x.double().numpy(), y.numpy())
        error = 1.0 - float(model.score(x_test.double().numpy(), y_test.numpy()))
    else:
        device = module_device(ctx.model)
        dim = sum(ctx.model.modalities[m].numel for m in observed)
        classes = int(max(labels.max(), ctx.test_set.labels.max())) + 1
        with seeded(ctx.seed, device):
            net = mlp_classifier(dim, hidden, act, dropout, classes).to(device)
            train_mlp(net, ctx.train_set, train_rows, observed, epochs, batch_size, lr, ctx.seed)
        error = mlp_error(net, ctx.test_set, test_rows, observed)
    return {"+".join(observed): error, "n_train": n, "n_test": len(test_rows), "classifier": classifier}
