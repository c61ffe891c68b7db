"""Train, cache and load the per-modality classifiers that score coherence (MMVAE §4).

One classifier per modality of a registered dataset, trained on the dataset's unique
train source examples (a source image that appears in many pairs is seen once per
epoch) and tested on the test split's unique sources. Files:
    cache_dir(root)/classifiers/<dataset>/<modality>.pt    state dict (atomic write)
    cache_dir(root)/classifiers/<dataset>/<modality>.json  accuracy, sizes, architecture
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from mmdgm.data import DATASETS, MultimodalDataset
from mmdgm.data.paths import cache_dir, data_root
from mmdgm.evaluate.classifiers import DigitClassifier, accuracy
from mmdgm.evaluate.vector_classifier import VectorClassifier
from mmdgm.registry import Registry
from mmdgm.train.checkpoint import atomic_write_text, load_checkpoint, save_checkpoint

ARCHITECTURES: Registry[Callable[[tuple[int, ...], int], nn.Module]] = Registry("classifier architecture")
ARCHITECTURES.register("digit-28")(lambda shape, classes: DigitClassifier(shape, classes))
ARCHITECTURES.register("digit-32")(lambda shape, classes: DigitClassifier(shape, classes))
ARCHITECTURES.register("vector-mlp")(lambda shape, classes: VectorClassifier(shape[0], classes))

IMAGE_ARCHITECTURES = {(1, 28, 28): "digit-28", (3, 32, 32): "digit-32"}


class MissingClassifierError(FileNotFoundError):
    """No cached classifier for a modality of a dataset."""


class WeakClassifierError(ValueError):
    """A cached classifier is too inaccurate to score coherence with."""


def architecture_for(shape: tuple[int, ...]) -> str:
    """The architecture name for a modality shape: 28x28 / 32x32 digit CNNs, or the vector MLP."""
    shape = tuple(shape)
    if len(shape) == 1:
        return "vector-mlp"
    if shape not in IMAGE_ARCHITECTURES:
        raise ValueError(
            f"no classifier architecture for modality shape {shape}; "
            f"known image shapes {sorted(IMAGE_ARCHITECTURES)} or any 1-D vector"
        )
    return IMAGE_ARCHITECTURES[shape]


def store_dir(dataset_name: str, root: Path | None = None) -> Path:
    """Where the classifiers of `dataset_name` are cached."""
    return cache_dir(root) / "classifiers" / dataset_name


def source_examples(dataset: MultimodalDataset, modality: str) -> tuple[Tensor, Tensor]:
    """The unique source examples of `modality` that observed rows use, with their labels.

    Row r pairs source row index[modality][r] with label labels[r]; a source row that
    rows label differently is an error (a broken pairing).
    """
    observed = dataset.mask[modality]
    rows, labels = dataset.index[modality][observed], dataset.labels[observed]
    source_labels = torch.full((dataset.sources[modality].shape[0],), -1, dtype=torch.long)
    source_labels[rows] = labels
    if (source_labels[rows] != labels).any():
        raise ValueError(f"dataset {dataset.name!r}: source rows of {modality!r} carry conflicting labels")
    used = torch.nonzero(source_labels >= 0).flatten()
    return dataset.sources[modality][used], source_labels[used]


def _float(x: Tensor) -> Tensor:
    return x.float().div(255.0) if x.dtype == torch.uint8 else x.float()


def fit_classifier(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    epochs: int,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = True,
    desc: str = "classifier",
) -> nn.Module:
    """Train `model` with Adam and cross-entropy on (x, y), shuffling with a seeded generator."""
    device = next(model.parameters()).device
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    steps = epochs * -(-len(x) // batch_size)
    start = time.time()
    with tqdm(total=steps, desc=desc, unit="step", disable=not progress) as bar:
        for epoch in range(epochs):
            model.train()
            for rows in torch.randperm(len(x), generator=g).split(batch_size):
                loss = F.cross_entropy(model(_float(x[rows]).to(device)), y[rows].to(device))
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}", s=f"{time.time() - start:.0f}")
    return model.eval()


def train_dataset_classifiers(
    dataset_name: str,
    root: Path | None,
    options: dict[str, Any] | None = None,
    epochs: int = 10,
    seed: int = 0,
    progress: bool = True,
    device: str | torch.device = "cpu",
) -> dict[str, float]:
    """Train and cache one classifier per modality of a registered dataset.

    Returns modality -> test accuracy on the test split's unique source examples.
    """
    options = dict(options or {})
    root = Path(root) if root is not None else data_root()
    build = DATASETS.get(dataset_name)
    train_set, test_set = build("train", root, **options), build("test", root, **options)
    out = store_dir(dataset_name, root)
    accuracies = {}
    for m, shape in train_set.shapes.items():
        x, y = source_examples(train_set, m)
        x_test, y_test = source_examples(test_set, m)
        classes = int(max(y.max(), y_test.max())) + 1
        architecture = architecture_for(shape)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = ARCHITECTURES.get(architecture)(shape, classes).to(device)
            fit_classifier(model, x, y, epochs, seed=seed, progress=progress, desc=f"classifier {m}")
        accuracies[m] = accuracy(model, x_test, y_test)
        save_checkpoint(out / f"{m}.pt", {k: v.cpu() for k, v in model.state_dict().items()})
        record = {
            "test_accuracy": accuracies[m],
            "epochs": epochs,
            "n_train": len(x),
            "n_test": len(x_test),
            "architecture": architecture,
            "shape": list(shape),
            "classes": classes,
            "seed": seed,
            "dataset_options": options,
        }
        atomic_write_text(out / f"{m}.json", json.dumps(record, indent=2) + "\n")
    return accuracies


def load_classifiers(
    dataset_name: str, modalities: list[str], root: Path | None = None, floor: float = 0.8
) -> dict[str, nn.Module]:
    """The cached classifiers of `modalities` in eval mode.

    Raises `MissingClassifierError` (naming the command that trains them) when one is
    absent, and `WeakClassifierError` when one's recorded test accuracy is below `floor`.
    """
    directory = store_dir(dataset_name, root)
    loaded = {}
    for m in modalities:
        record_path, weights = directory / f"{m}.json", directory / f"{m}.pt"
        if not (record_path.is_file() and weights.is_file()):
            raise MissingClassifierError(
                f"no classifier for modality {m!r} of dataset {dataset_name!r} in {directory}; "
                f"train them with `mmdgm classifiers train --dataset {dataset_name}`"
            )
        record = json.loads(record_path.read_text())
        if record["test_accuracy"] < floor:
            raise WeakClassifierError(
                f"the classifier for modality {m!r} of dataset {dataset_name!r} has test accuracy "
                f"{record['test_accuracy']:.4f}, below the floor {floor:.4f}; refusing to score "
                f"coherence with it (retrain with more epochs: `mmdgm classifiers train "
                f"--dataset {dataset_name} --epochs N`)"
            )
        model = ARCHITECTURES.get(record["architecture"])(tuple(record["shape"]), record["classes"])
        model.load_state_dict(load_checkpoint(weights))
        loaded[m] = model.eval()
    return loaded


def cmd_classifiers_train(args) -> None:
    """CLI: `mmdgm classifiers train --dataset NAME [--root DIR] [--epochs N] [--seed S]`
    (the dataset with its default options); prints one JSON line per modality."""
    root = Path(args.root) if args.root else None
    accuracies = train_dataset_classifiers(args.dataset, root, {}, epochs=args.epochs, seed=args.seed)
    directory = store_dir(args.dataset, root)
    for m, acc in accuracies.items():
        line = {"dataset": args.dataset, "modality": m, "test_accuracy": acc, "path": str(directory / f"{m}.pt")}
        print(json.dumps(line))
