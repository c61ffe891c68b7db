"""Train, cache and load the per-modality classifiers that score coherence (MMVAE §4).

One classifier per modality of a registered dataset built with given options, trained
on the dataset's unique train source examples (a source image that appears in many
pairs is seen once per epoch) and tested on the test split's unique sources. The store
is keyed by the dataset and its options (`classifier_options`), less the observation
protocol's (`observed_fraction`, `unpaired_scheme`, `unimodal_fraction`: they restrict or
mask the train split only), so a run on partially observed or reduced data is scored by
the classifiers of the full data, as the papers' pretrained classifiers are. Files:
    cache_dir(root)/classifiers/<store>/<modality>.pt    state dict (atomic write)
    cache_dir(root)/classifiers/<store>/<modality>.json  accuracy, sizes, architecture
where <store> is the dataset name, followed by "-<hash of the options>" when options
differ from the builder's defaults.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import shlex
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from mmdgm.config import parse_overrides
from mmdgm.data import DATASETS, MultimodalDataset
from mmdgm.data.partial import full_data_options
from mmdgm.data.paths import cache_dir, data_root
from mmdgm.data.text import ALPHABET
from mmdgm.evaluate.attributes import CaptionAttributeReader, SceneAttributeClassifier
from mmdgm.evaluate.classifiers import DigitClassifier, accuracy
from mmdgm.evaluate.text_classifier import DigitWordReader
from mmdgm.evaluate.vector_classifier import VectorClassifier
from mmdgm.registry import Registry
from mmdgm.train.checkpoint import atomic_write_text, load_checkpoint, save_checkpoint

ARCHITECTURES: Registry[Callable[[tuple[int, ...], int], nn.Module]] = Registry("classifier architecture")
ARCHITECTURES.register("digit-28")(lambda shape, classes: DigitClassifier(shape, classes))
ARCHITECTURES.register("digit-32")(lambda shape, classes: DigitClassifier(shape, classes))
ARCHITECTURES.register("vector-mlp")(lambda shape, classes: VectorClassifier(shape[0], classes))
ARCHITECTURES.register("digit-word-reader")(DigitWordReader)  # exact, nothing to train
ARCHITECTURES.register("scene-attributes")(SceneAttributeClassifier)  # classes: attribute sizes
ARCHITECTURES.register("caption-attribute-reader")(CaptionAttributeReader)  # exact, from the vocabulary

IMAGE_ARCHITECTURES = {(1, 28, 28): "digit-28", (3, 32, 32): "digit-32"}
BATCH_SIZE = 128
# classifiers trained on first use (`mmdgm evaluate --train-classifiers`, reproduce) take at
# least this many steps: 10 epochs of 2,000 street digits (160 steps) reached 0.754 < 0.8
AUTO_MIN_STEPS = 1000


class MissingClassifierError(FileNotFoundError):
    """No cached classifier for a modality of a dataset."""


class WeakClassifierError(ValueError):
    """A cached classifier is too inaccurate to score coherence with."""


def architecture_for(shape: tuple[int, ...]) -> str:
    """The architecture name for a modality shape: 28x28 / 32x32 digit CNNs, the vector MLP,
    or the digit-word reader for one-hot strings (L, 71) of the text alphabet."""
    shape = tuple(shape)
    if len(shape) == 1:
        return "vector-mlp"
    if len(shape) == 2 and shape[1] == len(ALPHABET):
        return "digit-word-reader"
    if shape not in IMAGE_ARCHITECTURES:
        raise ValueError(
            f"no classifier architecture for modality shape {shape}; "
            f"known image shapes {sorted(IMAGE_ARCHITECTURES)}, any 1-D vector or (L, {len(ALPHABET)}) text"
        )
    return IMAGE_ARCHITECTURES[shape]


def attribute_architecture(shape: tuple[int, ...], caption: bool) -> str:
    """The attribute reader of a modality of a dataset with attributes: the caption parser
    for a caption modality, the scene CNN for 64 x 64 images."""
    if caption:
        return "caption-attribute-reader"
    if len(shape) == 3 and tuple(shape[1:]) == (64, 64):
        return "scene-attributes"
    raise ValueError(f"no attribute classifier for modality shape {tuple(shape)}; known: C x 64 x 64 images and captions")


def classifier_options(dataset_name: str, options: dict[str, Any] | None) -> dict[str, Any]:
    """The dataset options that key the classifiers, sorted: every given option (each may
    change the data) except the observation protocol's and those equal to the builder's
    default, which build the same data."""
    params = inspect.signature(DATASETS.get(dataset_name)).parameters
    return {
        k: v
        for k, v in sorted(full_data_options(options).items())
        if not (k in params and params[k].default == v)
    }


def store_dir(dataset_name: str, root: Path | None = None, options: dict[str, Any] | None = None) -> Path:
    """Where the classifiers of `dataset_name` built with `options` are cached: the dataset
    name, plus a short stable hash of `classifier_options` when there are any."""
    key = classifier_options(dataset_name, options)
    if not key:
        return cache_dir(root) / "classifiers" / dataset_name
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]
    return cache_dir(root) / "classifiers" / f"{dataset_name}-{digest}"


def train_command(dataset_name: str, root: Path | None, options: dict[str, Any] | None) -> str:
    """The `mmdgm classifiers train` command line that trains the store of these arguments."""
    words = ["mmdgm", "classifiers", "train", "--dataset", dataset_name]
    for k, v in classifier_options(dataset_name, options).items():
        words += ["--option", f"{k}={json.dumps(v)}"]
    if root is not None:
        words += ["--root", str(root)]
    return shlex.join(words)


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
    """uint8 images to [0, 1] floats, token indices (int64) unchanged, the rest as float."""
    return x.float().div(255.0) if x.dtype == torch.uint8 else x if x.dtype == torch.long else x.float()


def fit_classifier(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    epochs: int,
    batch_size: int = BATCH_SIZE,
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
    min_steps: int = 0,
) -> dict[str, float]:
    """Train and cache one classifier per modality of a registered dataset built with
    `options`, in `store_dir(dataset_name, root, options)`, for `epochs` or as many more
    as reach `min_steps` optimiser steps (small datasets; the record holds the epochs run).

    Returns modality -> test accuracy on the test split's unique source examples.
    """
    options = full_data_options(options)
    root = Path(root) if root is not None else data_root()
    build = DATASETS.get(dataset_name)
    train_set, test_set = build("train", root, **options), build("test", root, **options)
    out = store_dir(dataset_name, root, options)
    accuracies = {}
    for m, shape in train_set.shapes.items():
        x, y = source_examples(train_set, m)
        x_test, y_test = source_examples(test_set, m)
        if train_set.attributes is not None:  # labels index attribute combinations: attribute readers
            classes = [len(v) for v in train_set.attributes.values()]
            architecture = attribute_architecture(shape, m in train_set.vocabularies)
        else:
            classes = int(max(y.max(), y_test.max())) + 1
            architecture = architecture_for(shape)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = ARCHITECTURES.get(architecture)(shape, classes).to(device)
            if m in train_set.vocabularies and hasattr(model, "set_vocabulary"):
                model.set_vocabulary(train_set.vocabularies[m])
            trainable = any(p.requires_grad for p in model.parameters())
            run_epochs = max(epochs, -(-min_steps // -(-len(x) // BATCH_SIZE)))
            if trainable:
                fit_classifier(model, x, y, run_epochs, seed=seed, progress=progress, desc=f"classifier {m}")
        accuracies[m] = accuracy(model, x_test, y_test)
        save_checkpoint(out / f"{m}.pt", {k: v.cpu() for k, v in model.state_dict().items()})
        record = {
            "test_accuracy": accuracies[m],
            "epochs": run_epochs if trainable else 0,
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
    dataset_name: str,
    modalities: list[str],
    root: Path | None = None,
    floor: float = 0.8,
    options: dict[str, Any] | None = None,
) -> dict[str, nn.Module]:
    """The cached classifiers of `modalities` for the dataset built with `options`, in eval mode.

    Raises `MissingClassifierError` (naming the command that trains them) when one is
    absent or was recorded as trained for other options, and `WeakClassifierError` when
    one's recorded test accuracy is below `floor`.
    """
    directory = store_dir(dataset_name, root, options)
    command = train_command(dataset_name, root, options)
    wanted = classifier_options(dataset_name, options)
    loaded = {}
    for m in modalities:
        record_path, weights = directory / f"{m}.json", directory / f"{m}.pt"
        record = json.loads(record_path.read_text()) if record_path.is_file() else None
        if record is None or not weights.is_file():
            raise MissingClassifierError(
                f"no classifier for modality {m!r} of dataset {dataset_name!r} with options {wanted} "
                f"in {directory}; train them with `{command}`"
            )
        trained = classifier_options(dataset_name, record["dataset_options"])
        if trained != wanted:
            raise MissingClassifierError(
                f"the classifier for modality {m!r} in {directory} was trained with dataset options "
                f"{trained}, not {wanted}; train them with `{command}`"
            )
        if record["test_accuracy"] < floor:
            raise WeakClassifierError(
                f"the classifier for modality {m!r} of dataset {dataset_name!r} has test accuracy "
                f"{record['test_accuracy']:.4f}, below the floor {floor:.4f}; refusing to score "
                f"coherence with it (retrain with more epochs: `{command} --epochs N`)"
            )
        model = ARCHITECTURES.get(record["architecture"])(tuple(record["shape"]), record["classes"])
        model.load_state_dict(load_checkpoint(weights))
        loaded[m] = model.eval()
    return loaded


def cmd_classifiers_train(args) -> None:
    """CLI: `mmdgm classifiers train --dataset NAME [--option key=value ...] [--root DIR]
    [--epochs N] [--seed S]`: the dataset built with the given options (YAML values; the
    rest default), as `mmdgm evaluate` loads them for a run with those data options;
    prints one JSON line per modality."""
    root = Path(args.root) if args.root else None
    options = dict(parse_overrides(args.option))
    accuracies = train_dataset_classifiers(args.dataset, root, options, epochs=args.epochs, seed=args.seed)
    directory = store_dir(args.dataset, root, options)
    for m, acc in accuracies.items():
        line = {"dataset": args.dataset, "modality": m, "test_accuracy": acc, "path": str(directory / f"{m}.pt")}
        print(json.dumps(line))
