"""MNIST-SVHN-Text (Sutter et al. 2020) and its offline stand-in.

Rows are the MMVAE class-matched pairs of the two image datasets (`mmdgm.data.paired`:
the same pairs, from the same cached index files, as the two-modality dataset with the
same options), each given the text of its class (`mmdgm.data.text`) with an offset seeded
by (seed, split, row). `observed_fraction` / `unpaired_scheme` mask the three modalities
of the train split and `unimodal_fraction` restricts the image sets before pairing, as
for the other paired datasets (`mmdgm.data.partial`).
"""

from __future__ import annotations

from pathlib import Path

from mmdgm.data.base import MultimodalDataset
from mmdgm.data.mnist import build as build_mnist
from mmdgm.data.mnist import check_split
from mmdgm.data.paired import pair, standin
from mmdgm.data.partial import Protocol
from mmdgm.data.registry import DATASETS
from mmdgm.data.svhn import build as build_svhn
from mmdgm.data.text import MODALITY, with_text
from mmdgm.seeds import derived_seed


def pairs_with_text(
    name: str,
    pairs_name: str,
    split: str,
    root: Path,
    a: MultimodalDataset,
    b: MultimodalDataset,
    dm: int,
    max_per_class: int,
    seed: int,
    protocol: Protocol,
) -> MultimodalDataset:
    """The `pairs_name` pairs of `a` and `b` plus text, masked by `protocol` on train."""
    protocol.check([*a.sources, *b.sources, MODALITY])
    restrict = Protocol(unimodal_fraction=protocol.unimodal_fraction)
    pairs = pair(pairs_name, split, root, [a, b], dm, max_per_class, seed, restrict)
    texted = with_text(pairs, name, derived_seed(seed, f"text-{split}"))
    return protocol.observe(split, texted, seed)


@DATASETS.register("mnist-svhn-text")
def build_mnist_svhn_text(
    split: str,
    root: Path,
    seed: int = 0,
    dm: int = 20,
    max_per_class: int = 10000,
    observed_fraction: float = 1.0,
    unpaired_scheme: str = "alternate",
    unimodal_fraction: float = 1.0,
) -> MultimodalDataset:
    """Real MNIST-SVHN-Text: "mnist" (1, 28, 28), "svhn" (3, 32, 32), "text" (8, 71)."""
    check_split(split)
    protocol = Protocol(observed_fraction, unpaired_scheme, unimodal_fraction)
    a, b = build_mnist(split, root), build_svhn(split, root)
    return pairs_with_text("mnist-svhn-text", "mnist-svhn", split, root, a, b, dm, max_per_class, seed, protocol)


@DATASETS.register("mnist-synthstreet-text")
def build_mnist_synthstreet_text(
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
    """Real MNIST "mnist", the SYNTHETIC street digits "synth_street" (3, 32, 32) standing in
    for SVHN, and "text" (8, 71). `n_train`/`n_test` size the synthetic street-digit set."""
    check_split(split)
    protocol = Protocol(observed_fraction, unpaired_scheme, unimodal_fraction)
    a = build_mnist(split, root)
    b = standin("synthetic-street-digits", "synth_street", split, root, seed, n_train, n_test)
    return pairs_with_text(
        "mnist-synthstreet-text", "mnist-synthstreet", split, root, a, b, dm, max_per_class, seed, protocol
    )
