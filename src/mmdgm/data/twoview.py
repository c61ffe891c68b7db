"""Two-view MNIST (Wang et al. 2015; the CMMD paper's §4.1 benchmark).

Row i: view 1 is digit i rotated by an angle uniform in [-pi/4, pi/4]; view 2 is another
digit of the same class (a different image) with noise uniform in [0, 1] added to every
pixel, clipped to [0, 1]. Seeded per (seed, split) and cached as uint8 under
`cache_dir(root)/twoview`. `source="mnist"` uses real MNIST (`mmdgm data get mnist`);
`source="synthetic"` the project's procedural handwritten digits (SYNTHETIC, no download).
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from mmdgm.data.base import MultimodalDataset
from mmdgm.data.mnist import build as build_mnist
from mmdgm.data.mnist import check_split
from mmdgm.data.partial import observe_fraction
from mmdgm.data.paths import atomic_open, cache_dir
from mmdgm.data.procedural import load_or_generate
from mmdgm.data.registry import DATASETS
from mmdgm.seeds import derived_seed

VERSION = 1
SOURCES = ("mnist", "synthetic")


def rotate(images: Tensor, angles: Tensor) -> Tensor:
    """(N, 1, H, W) floats rotated about their centres by `angles` (radians), bilinear,
    zero outside."""
    cos, sin = angles.cos(), angles.sin()
    theta = torch.stack([torch.stack([cos, -sin, torch.zeros_like(cos)], -1),
                         torch.stack([sin, cos, torch.zeros_like(cos)], -1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def same_class_partner(labels: Tensor, g: torch.Generator) -> Tensor:
    """For each row, a random different row of the same class (itself if it is alone)."""
    partner = torch.arange(len(labels))
    for c in labels.unique():
        rows = (labels == c).nonzero().flatten()
        if len(rows) > 1:
            shift = torch.randint(1, len(rows), (len(rows),), generator=g)
            partner[rows] = rows[(torch.arange(len(rows)) + shift) % len(rows)]
    return partner


def make_views(images: Tensor, labels: Tensor, seed: int) -> tuple[Tensor, Tensor]:
    """uint8 view 1 and view 2 (module docstring) of uint8 (N, 1, 28, 28) digits."""
    g = torch.Generator().manual_seed(seed)
    x = images.float() / 255
    angles = (torch.rand(len(x), generator=g) * 2 - 1) * (math.pi / 4)
    view1 = torch.cat([rotate(x[i:i + 4096], angles[i:i + 4096]) for i in range(0, len(x), 4096)])
    partner = same_class_partner(labels, g)
    view2 = (x[partner] + torch.rand(x.shape, generator=g)).clamp(0, 1)
    return (view1 * 255).round().to(torch.uint8), (view2 * 255).round().to(torch.uint8)


def digits(source: str, split: str, root: Path, seed: int, n_train: int, n_test: int,
           dataset: str = "two-view-mnist") -> tuple[Tensor, Tensor]:
    """uint8 (N, 1, 28, 28) digits and labels of `split`: all of real MNIST, or n_train /
    n_test synthetic handwritten digits; `dataset` names the caller in errors."""
    if source == "mnist":
        ds = build_mnist(split, root)
        return ds.sources["mnist"], ds.labels
    if source == "synthetic":
        return load_or_generate("synthetic-handwritten-digits", split, root, n_train if split == "train" else n_test, seed)
    raise ValueError(f"{dataset}: unknown source {source!r}; use one of {SOURCES}")


@DATASETS.register("two-view-mnist")
def build_two_view(split: str, root: Path, source: str = "mnist", seed: int = 0, n_train: int = 60000,
                   n_test: int = 10000, observed_fraction: float = 1.0, unpaired_scheme: str = "alternate") -> MultimodalDataset:
    """Modalities "view1" (rotated) and "view2" (same-class digit + noise), (1, 28, 28) each;
    n_train / n_test size the synthetic source only."""
    check_split(split)
    images, labels = digits(source, split, Path(root), seed, n_train, n_test)
    path = cache_dir(root) / "twoview" / f"{source}-{split}-n{len(labels)}-seed{seed}-v{VERSION}.npz"
    views = None
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as f:
                views = torch.from_numpy(f["view1"]), torch.from_numpy(f["view2"])
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            views = None
        if views is not None and views[0].shape != images.shape:
            views = None
    if views is None:
        views = make_views(images, labels, derived_seed(seed, f"two-view-{split}"))
        with atomic_open(path) as f:
            np.savez(f, view1=views[0].numpy(), view2=views[1].numpy())
    dataset = MultimodalDataset({"view1": views[0], "view2": views[1]}, labels, name="two-view-mnist")
    if split == "train" and observed_fraction < 1.0:
        dataset = observe_fraction(dataset, observed_fraction, unpaired_scheme, seed)
    return dataset
