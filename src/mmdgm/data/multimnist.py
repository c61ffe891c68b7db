"""MultiMNIST (MMALI: Chen & Zhu, "Multimodal Adversarially Learned Inference with
Factorized Discriminators", AAAI 2022, §4.1).

Modality k (k < M, M = 2, 3 or 4) is the split's digits rotated counter-clockwise by
90k degrees (an exact pixel permutation, `torch.rot90`), named "rot0", "rot90",
"rot180", "rot270". Tuples are built by the MMVAE/MMALI matching of `mmdgm.data.pairing`
applied to M copies of the same labelled pool: per class c, the first
n_c = min(#c, max_per_class) digits, and `pairs` (the paper's 30) independent random
permutations of them per modality. So every digit of "rot0" appears in exactly `pairs`
tuples, each time with a random digit of the same class from the *whole* same-class pool
of each other modality (which may be the same digit, rotated, with probability 1/n_c),
and every digit of every other modality also appears exactly `pairs` times, as in the
authors' code (`datasets.MultiMNIST`, `max_d` = max_per_class, `dm` = pairs). The paper
states the pairing only in words ("associated with 30 random instances of the same digit
class"), which this matches.

`source="mnist"` uses real MNIST (`mmdgm data get mnist`), the first `n_train` / `n_test`
digits of each split (default: all); `source="synthetic"` the project's procedural
handwritten digits (n_train / n_test generated, default 60,000 / 10,000 like MNIST, no
download), and the dataset is then
named "multimnist-M-synthetic": numbers measured on it are not MultiMNIST numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from mmdgm.data.base import MultimodalDataset
from mmdgm.data.mnist import check_split
from mmdgm.data.paired import pair
from mmdgm.data.partial import Protocol
from mmdgm.data.registry import DATASETS
from mmdgm.data.twoview import digits

ANGLES = (0, 90, 180, 270)
SYNTHETIC_SIZES = {"train": 60000, "test": 10000}  # MNIST's


def rotate_ccw(images: Tensor, quarter_turns: int) -> Tensor:
    """(N, C, H, W) images rotated counter-clockwise (as displayed, row 0 on top) by
    `quarter_turns` * 90 degrees; any dtype, exact."""
    return torch.rot90(images, quarter_turns, dims=(-2, -1)).contiguous()


def modality_names(m: int) -> list[str]:
    """The names of the first `m` rotated modalities: "rot0", "rot90", ..."""
    return [f"rot{a}" for a in ANGLES[:m]]


def base_digits(name: str, source: str, split: str, root: Path, seed: int, n: int | None) -> tuple[Tensor, Tensor]:
    """The split's uint8 (n, 1, 28, 28) digits and labels: the first n of real MNIST (all
    when None), or n synthetic ones (SYNTHETIC_SIZES[split] when None)."""
    if n is not None and n < 1:
        raise ValueError(f"{name}: n_{split} must be positive, got {n}")
    size = SYNTHETIC_SIZES[split] if n is None else n
    images, labels = digits(source, split, root, seed, size, size, dataset=name)
    if n is not None and n > len(labels):
        raise ValueError(f"{name}: n_{split}={n} exceeds the {len(labels)} {source} {split} digits")
    return images[:size], labels[:size]


def multimnist(m: int) -> Callable[..., MultimodalDataset]:
    """The builder of M-modality MultiMNIST (module docstring)."""

    def build(
        split: str,
        root: Path,
        source: str = "mnist",
        seed: int = 0,
        pairs: int = 30,
        max_per_class: int = 10000,
        n_train: int | None = None,
        n_test: int | None = None,
        observed_fraction: float = 1.0,
        unpaired_scheme: str = "alternate",
        unimodal_fraction: float = 1.0,
    ) -> MultimodalDataset:
        check_split(split)
        name = f"multimnist-{m}" + ("-synthetic" if source == "synthetic" else "")
        if pairs < 1 or max_per_class < 1:
            raise ValueError(f"{name}: pairs and max_per_class must be positive, got {pairs} and {max_per_class}")
        protocol = Protocol(observed_fraction, unpaired_scheme, unimodal_fraction)
        protocol.check(modality_names(m))
        images, labels = base_digits(name, source, split, Path(root), seed, n_train if split == "train" else n_test)
        parts = [
            MultimodalDataset({k: rotate_ccw(images, turns)}, labels, name=k)
            for turns, k in enumerate(modality_names(m))
        ]
        return pair(name, split, Path(root), parts, pairs, max_per_class, seed, protocol)

    build.__doc__ = (
        f"MultiMNIST with {m} modalities {modality_names(m)}, each (1, 28, 28): real MNIST "
        "(`source='mnist'`) or SYNTHETIC handwritten digits (`source='synthetic'`); each digit "
        "tupled with `pairs` random same-class digits of every other modality."
    )
    return build


for _m in (2, 3, 4):
    DATASETS.register(f"multimnist-{_m}")(multimnist(_m))
