"""Paired multimodal datasets built from unimodal ones by class (MMVAE pairing)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

from mmdgm.data.base import MultimodalDataset
from mmdgm.data.mnist import build as build_mnist
from mmdgm.data.mnist import check_split
from mmdgm.data.pairing import cached_match_by_class
from mmdgm.data.partial import COMPLETE, Protocol
from mmdgm.data.paths import cache_dir
from mmdgm.data.procedural import load_or_generate
from mmdgm.data.registry import DATASETS
from mmdgm.data.svhn import build as build_svhn


def pair(
    name: str,
    split: str,
    root: Path,
    parts: Sequence[MultimodalDataset],
    dm: int,
    max_per_class: int,
    seed: int,
    protocol: Protocol = COMPLETE,
) -> MultimodalDataset:
    """The dataset of class-matched tuples of the unimodal datasets `parts` (two or more),
    with the train split restricted and masked by `protocol` (see `mmdgm.data.partial`)."""
    items = [next(iter(p.sources.items())) for p in parts]
    names = [m for m, _ in items]
    protocol.check(names)
    allowed = protocol.sources(split, [p.labels for p in parts], seed)
    if allowed is not None:
        parts = [p.subset(rows) for p, rows in zip(parts, allowed)]
    key = "-".join([name, split, *(p.name for p in parts)])
    rows, labels = cached_match_by_class(
        cache_dir(root) / "pairings", key, [p.labels for p in parts], dm, max_per_class, seed
    )
    ds = MultimodalDataset(
        dict(items),
        labels,
        {m: p.index[m][r] for m, p, r in zip(names, parts, rows)},
        name=name,
    )
    return protocol.observe(split, ds, seed)


def standin(
    name: str, modality: str, split: str, root: Path, seed: int, n_train: int, n_test: int
) -> MultimodalDataset:
    images, labels = load_or_generate(
        name, split, root, n_train if split == "train" else n_test, seed
    )
    return MultimodalDataset({modality: images}, labels, name=name)


@DATASETS.register("mnist-svhn")
def build_mnist_svhn(
    split: str,
    root: Path,
    seed: int = 0,
    dm: int = 20,
    max_per_class: int = 10000,
    observed_fraction: float = 1.0,
    unpaired_scheme: str = "alternate",
    unimodal_fraction: float = 1.0,
) -> MultimodalDataset:
    """Real MNIST-SVHN pairs: modalities "mnist" (1, 28, 28) and "svhn" (3, 32, 32)."""
    check_split(split)
    protocol = Protocol(observed_fraction, unpaired_scheme, unimodal_fraction)
    a, b = build_mnist(split, root), build_svhn(split, root)
    return pair("mnist-svhn", split, root, [a, b], dm, max_per_class, seed, protocol)


@DATASETS.register("mnist-synthstreet")
def build_mnist_synthstreet(
    split: str,
    root: Path,
    seed: int = 0,
    dm: int = 20,
    max_per_class: int = 10000,
    n_train: int = 60000,
    n_test: int = 10000,
    observed_fraction: float = 1.0,
    unpaired_scheme: str = "alternate",
    unimodal_fraction: float = 1.0,
) -> MultimodalDataset:
    """Real MNIST "mnist" paired with the synthetic street digits "synth_street" (3, 32, 32).

    `n_train`/`n_test` size the synthetic street-digit set.
    """
    check_split(split)
    protocol = Protocol(observed_fraction, unpaired_scheme, unimodal_fraction)
    a = build_mnist(split, root)
    b = standin("synthetic-street-digits", "synth_street", split, root, seed, n_train, n_test)
    return pair("mnist-synthstreet", split, root, [a, b], dm, max_per_class, seed, protocol)


def synthetic_pairs(name: str, street: str) -> Callable[..., MultimodalDataset]:
    """Builder of procedural pairs: handwriting-like digits with the stand-in `street`."""

    def build(
        split: str,
        root: Path,
        seed: int = 0,
        dm: int = 2,
        max_per_class: int = 10000,
        n_train: int = 10000,
        n_test: int = 2000,
        observed_fraction: float = 1.0,
        unpaired_scheme: str = "alternate",
        unimodal_fraction: float = 1.0,
    ) -> MultimodalDataset:
        check_split(split)
        protocol = Protocol(observed_fraction, unpaired_scheme, unimodal_fraction)
        a = standin("synthetic-handwritten-digits", "synth_hand", split, root, seed, n_train, n_test)
        b = standin(street, "synth_street", split, root, seed, n_train, n_test)
        return pair(name, split, root, [a, b], dm, max_per_class, seed, protocol)

    build.__doc__ = (
        f"Synthetic pairs needing no files ({street}): \"synth_hand\" (1, 28, 28) and \"synth_street\" "
        "(3, 32, 32). `n_train`/`n_test` size each unimodal set; defaults give 20,000 train pairs."
    )
    return build


DATASETS.register("synthetic-pairs")(synthetic_pairs("synthetic-pairs", "synthetic-street-digits"))
DATASETS.register("synthetic-pairs-clean")(synthetic_pairs("synthetic-pairs-clean", "synthetic-clean-street-digits"))
