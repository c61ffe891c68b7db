"""3-modality MNIST (the CMMD paper's §4.3.1 and appendix B): MNIST, rotated MNIST and
street digits, all of the same class.

Row i: "mnist" is digit i; "mnist_rotated" is a digit of the same class rotated by an
angle uniform in [-pi/4, pi/4] (the rotation of two-view MNIST, `mmdgm.data.twoview`):
by default another image of that class (`rotated="other"`, as the paper combines
modalities matched by class), or digit i itself (`rotated="same"`); "synth_street" is a
SYNTHETIC street digit of the same class (the procedural SVHN stand-in; SVHN cannot be
had offline), drawn uniformly among the street digits of that class. Seeded per
(seed, split) and cached under `cache_dir(root)/threeview`. `source="mnist"` uses real
MNIST, `source="synthetic"` the procedural handwritten digits (SYNTHETIC, no download).
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from mmdgm.data.base import MultimodalDataset
from mmdgm.data.mnist import check_split
from mmdgm.data.paired import standin
from mmdgm.data.partial import Protocol
from mmdgm.data.paths import atomic_open, cache_dir
from mmdgm.data.registry import DATASETS
from mmdgm.data.twoview import SOURCES, digits, rotate, same_class_partner
from mmdgm.seeds import derived_seed

VERSION = 1
ROTATED = ("other", "same")
NAME = "mnist-rotated-synthstreet"


def rotated_view(images: Tensor, labels: Tensor, seed: int, rotated: str = "other") -> Tensor:
    """uint8 (N, 1, 28, 28): per row, a same-class digit ("other": `same_class_partner`;
    "same": the row's own digit) rotated uniformly in [-pi/4, pi/4]."""
    if rotated not in ROTATED:
        raise ValueError(f"{NAME}: unknown rotated={rotated!r}; use one of {ROTATED}")
    g = torch.Generator().manual_seed(seed)
    angles = (torch.rand(len(images), generator=g) * 2 - 1) * (math.pi / 4)
    partner = same_class_partner(labels, g) if rotated == "other" else torch.arange(len(images))
    x = images[partner].float() / 255
    out = torch.cat([rotate(x[i:i + 4096], angles[i:i + 4096]) for i in range(0, len(x), 4096)])
    return (out * 255).round().to(torch.uint8)


def same_class_draws(labels: Tensor, pool_labels: Tensor, seed: int) -> Tensor:
    """For each label, a row of `pool_labels` of that class, uniformly and independently."""
    g = torch.Generator().manual_seed(seed)
    rows = torch.empty(len(labels), dtype=torch.long)
    for c in labels.unique().tolist():
        want = torch.nonzero(labels == c).flatten()
        pool = torch.nonzero(pool_labels == c).flatten()
        if len(pool) == 0:
            raise ValueError(f"{NAME}: the street-digit set has no digit of class {c}; enlarge n_train / n_test")
        rows[want] = pool[torch.randint(len(pool), (len(want),), generator=g)]
    return rows


def load_views(path: Path, n: int) -> tuple[Tensor, Tensor] | None:
    """Cached (rotated, street rows), or None if absent, unreadable or of another size."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            views = torch.from_numpy(f["rotated"]), torch.from_numpy(f["street"].astype(np.int64))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    return views if views[0].shape == (n, 1, 28, 28) and views[1].shape == (n,) else None


@DATASETS.register(NAME)
def build_three_view(
    split: str,
    root: Path,
    source: str = "mnist",
    seed: int = 0,
    rotated: str = "other",
    n_train: int = 60000,
    n_test: int = 10000,
    observed_fraction: float = 1.0,
    unpaired_scheme: str = "alternate",
) -> MultimodalDataset:
    """Modalities "mnist", "mnist_rotated" (1, 28, 28) and "synth_street" (3, 32, 32); one row
    per handwritten digit. `n_train`/`n_test` size the street-digit set (and, with
    source="synthetic", the handwritten set)."""
    check_split(split)
    if source not in SOURCES:
        raise ValueError(f"{NAME}: unknown source {source!r}; use one of {SOURCES}")
    if rotated not in ROTATED:
        raise ValueError(f"{NAME}: unknown rotated={rotated!r}; use one of {ROTATED}")
    protocol = Protocol(observed_fraction, unpaired_scheme)
    protocol.check(["mnist", "mnist_rotated", "synth_street"])
    root = Path(root)
    images, labels = digits(source, split, root, seed, n_train, n_test)
    street = standin("synthetic-street-digits", "synth_street", split, root, seed, n_train, n_test)
    n_street = len(street)
    path = cache_dir(root) / "threeview" / (
        f"{source}-{split}-n{len(labels)}-street{n_street}-{rotated}-seed{seed}-v{VERSION}.npz"
    )
    views = load_views(path, len(labels))
    if views is None:
        views = (
            rotated_view(images, labels, derived_seed(seed, f"three-view-rotation-{split}"), rotated),
            same_class_draws(labels, street.labels, derived_seed(seed, f"three-view-street-{split}")),
        )
        with atomic_open(path) as f:
            np.savez(f, rotated=views[0].numpy(), street=views[1].numpy())
    dataset = MultimodalDataset(
        {"mnist": images, "mnist_rotated": views[0], "synth_street": street.sources["synth_street"]},
        labels,
        {"synth_street": views[1]},
        name=NAME,
    )
    return protocol.observe(split, dataset, seed)
