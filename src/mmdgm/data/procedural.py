"""Procedural digit datasets that stand in for SVHN and MNIST where those cannot be had.

Both are deterministic per (seed, split, size, font set), cached as .npz under
`cache_dir(root)/procedural`, and regenerated when the cache is unreadable. They are
synthetic: numbers measured on them are not SVHN or MNIST numbers.
"""

from __future__ import annotations

import hashlib
import math
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from mmdgm.data.base import MultimodalDataset
from mmdgm.data.mnist import GENERATED_SPLITS, check_split
from mmdgm.data.paths import atomic_open, cache_dir
from mmdgm.data.registry import DATASETS
from mmdgm.data.render import (
    CANVAS,
    GLYPH_HEIGHT,
    Atlas,
    affine_theta,
    degrees,
    gaussian_blur,
    glyph_atlas,
    smooth_field,
    uniform,
    warp,
)

VERSION = 1
CHUNK = 2048
STREET_STROKES = (0, 1)
HAND_STROKES = (0, 1, 2)

Generator = Callable[[Tensor, Atlas, torch.Generator], Tensor]


def _generator(name: str, split: str, seed: int, chunk: int) -> torch.Generator:
    key = int.from_bytes(hashlib.sha256(f"{name}/{split}".encode()).digest()[:4], "little")
    state = np.random.SeedSequence([seed, key, chunk]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def street_digits(labels: Tensor, atlas: Atlas, g: torch.Generator, clutter: bool = True) -> Tensor:
    """(B, 3, 32, 32) uint8 SVHN-like crops of house-number digits `labels`. Without
    `clutter`: no neighbouring digits, a contrast of at least 0.45, a plain background and
    little blur and noise (the easy variant for the quick demo)."""
    b, size = labels.shape[0], 32
    n_fonts, n_strokes = len(atlas.fonts), len(atlas.strokes)
    font = torch.randint(n_fonts, (b,), generator=g)
    stroke = torch.randint(n_strokes, (b,), generator=g)
    neighbours = torch.randint(10, (b, 2), generator=g)
    centre = atlas.index(font, stroke, labels)
    side = atlas.index(font.unsqueeze(1), stroke.unsqueeze(1), neighbours)

    scale_y = uniform((b,), 0.5, 0.95, g) * CANVAS / GLYPH_HEIGHT
    scale_x = scale_y * uniform((b,), 0.75, 1.2, g)
    rotation = degrees(torch.randn(b, generator=g).clamp(-2.5, 2.5) * 7.0)
    shear = uniform((b,), -0.3, 0.3, g)
    tx, ty = uniform((b,), -0.15, 0.15, g), uniform((b,), -0.12, 0.12, g)

    masks = [
        warp(atlas.glyphs[centre], affine_theta(scale_x, scale_y, rotation, shear, tx, ty), size)
    ]
    gap = uniform((b, 2), 0.0, 0.25, g)
    present = (torch.rand(b, 2, generator=g) < 0.7) & clutter
    for k, direction in enumerate((-1.0, 1.0)):
        half_widths = (atlas.width[centre] + atlas.width[side[:, k]]) / CANVAS * scale_x
        dx = direction * (half_widths + gap[:, k]) * torch.cos(rotation)
        dy = direction * (half_widths + gap[:, k]) * torch.sin(rotation)
        theta = affine_theta(scale_x, scale_y, rotation, shear, tx + dx, ty + dy)
        masks.append(warp(atlas.glyphs[side[:, k]], theta, size) * present[:, k].view(b, 1, 1, 1))
    mask = torch.stack(masks).amax(0)

    luminance = torch.rand(b, generator=g)
    contrast = uniform((b,), 0.12, 0.75, g) if clutter else uniform((b,), 0.45, 0.75, g)
    room_up, room_down = 1.0 - luminance >= contrast, luminance >= contrast
    up = torch.where(room_up & room_down, torch.rand(b, generator=g) < 0.5, room_up)
    fg_luminance = torch.where(up, luminance + contrast, luminance - contrast).clamp(0.0, 1.0)
    tint = uniform((b, 2, 3), -1.0, 1.0, g) * uniform((b, 2, 1), 0.0, 0.35, g)
    bg = (luminance.view(b, 1) + tint[:, 0]).clamp(0, 1).view(b, 3, 1, 1)
    fg = (fg_luminance.view(b, 1) + tint[:, 1]).clamp(0, 1).view(b, 3, 1, 1)

    ys, xs = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    angle = uniform((b, 1, 1), 0.0, 2 * math.pi, g)
    ramp = (xs * torch.cos(angle) + ys * torch.sin(angle)).unsqueeze(1)
    edge = (ramp > uniform((b, 1, 1, 1), 0.3, 1.6, g)).float() * clutter
    other = (bg + uniform((b, 3, 1, 1), -0.5, 0.5, g)).clamp(0, 1)
    background = bg * (1 - edge) + other * edge
    background = background + 0.12 * clutter * smooth_field(b, 3, size, 4, g) * torch.rand(
        b, 1, 1, 1, generator=g
    )
    image = background * (1 - mask) + fg * mask
    image = image * (1 + ramp * uniform((b, 1, 1, 1), -0.35, 0.35, g) * (1.0 if clutter else 0.3))

    image = gaussian_blur(image, uniform((b,), 0.3, 1.4 if clutter else 0.8, g))
    noise = torch.randn(image.shape, generator=g)
    image = image + noise * uniform((b, 1, 1, 1), 0.0, 0.07 if clutter else 0.03, g)
    return image.clamp(0, 1).mul(255).round().to(torch.uint8)


def handwritten_digits(labels: Tensor, atlas: Atlas, g: torch.Generator) -> Tensor:
    """(B, 1, 28, 28) uint8 MNIST-like digits: white on black, in a 20x20 box, mass-centred."""
    b, work = labels.shape[0], 40
    font = torch.randint(len(atlas.fonts), (b,), generator=g)
    stroke = torch.randint(len(atlas.strokes), (b,), generator=g)
    glyphs = atlas.glyphs[atlas.index(font, stroke, labels)]

    scale = torch.full((b,), 0.9)
    theta = affine_theta(
        scale * uniform((b,), 0.7, 1.15, g),
        scale,
        degrees(torch.randn(b, generator=g).clamp(-2.5, 2.5) * 10.0),
        uniform((b,), -0.45, 0.35, g),
        torch.zeros(b),
        torch.zeros(b),
    )
    displacement = smooth_field(b, 2, work, 4, g) * uniform((b, 1, 1, 1), 0.02, 0.09, g)
    x = warp(glyphs, theta, work, displacement.permute(0, 2, 3, 1))
    x = torch.where(torch.rand(b, 1, 1, 1, generator=g) < 0.2, F.max_pool2d(x, 3, 1, 1), x)
    x = gaussian_blur(x, torch.full((b,), 0.7), radius=2)

    ink = x > 0.1
    rows, cols = ink.any(3).squeeze(1), ink.any(2).squeeze(1)
    idx = torch.arange(work, dtype=torch.float32)
    top = torch.where(rows, idx, float(work)).amin(1)
    bottom = torch.where(rows, idx, -1.0).amax(1)
    left = torch.where(cols, idx, float(work)).amin(1)
    right = torch.where(cols, idx, -1.0).amax(1)
    extent = torch.maximum(bottom - top, right - left).clamp_min(1.0) + 1.0
    factor = 20.0 / extent
    mass = x.squeeze(1).clamp_min(0)
    total = mass.sum((1, 2)).clamp_min(1e-6)
    com_y = (mass.sum(2) * idx).sum(1) / total
    com_x = (mass.sum(1) * idx).sum(1) / total

    out = torch.arange(28, dtype=torch.float32) - 13.5
    u = com_x.view(b, 1, 1) + out.view(1, 1, 28) / factor.view(b, 1, 1)
    v = com_y.view(b, 1, 1) + out.view(1, 28, 1) / factor.view(b, 1, 1)
    u, v = torch.broadcast_tensors(u, v)
    grid = torch.stack([(2 * u + 1) / work - 1, (2 * v + 1) / work - 1], -1)
    y = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    y = y / y.amax((1, 2, 3), keepdim=True).clamp_min(1e-6)
    return y.clamp(0, 1).mul(255).round().to(torch.uint8)


def clean_street_digits(labels: Tensor, atlas: Atlas, g: torch.Generator) -> Tensor:
    """`street_digits` without clutter: one high-contrast digit on a plain background."""
    return street_digits(labels, atlas, g, clutter=False)


STANDINS: dict[str, tuple[Generator, tuple[int, ...], tuple[int, ...]]] = {
    "synthetic-street-digits": (street_digits, STREET_STROKES, (3, 32, 32)),
    "synthetic-clean-street-digits": (clean_street_digits, STREET_STROKES, (3, 32, 32)),
    "synthetic-handwritten-digits": (handwritten_digits, HAND_STROKES, (1, 28, 28)),
}


def generate(
    name: str, split: str, n: int, seed: int = 0, progress: bool = True
) -> tuple[Tensor, Tensor]:
    """Images (n, *shape) uint8 and balanced labels (n,) of stand-in `name`, without caching."""
    check_split(split, GENERATED_SPLITS)
    make, strokes, shape = STANDINS[name]
    atlas = glyph_atlas(strokes)
    labels = torch.arange(n) % 10
    labels = labels[torch.randperm(n, generator=_generator(name, split, seed, -1 % 2**31))]
    images = torch.empty((n, *shape), dtype=torch.uint8)
    starts = range(0, n, CHUNK)
    for chunk, start in enumerate(
        tqdm(starts, desc=f"{name} {split}", unit="chunk", disable=not progress)
    ):
        rows = slice(start, min(start + CHUNK, n))
        images[rows] = make(labels[rows], atlas, _generator(name, split, seed, chunk))
    return images, labels


def cache_path(root: Path, name: str, split: str, n: int, seed: int) -> Path:
    """Where `generate(name, split, n, seed)` is cached under `root`."""
    fonts = glyph_atlas(STANDINS[name][1]).fingerprint
    return (
        cache_dir(root) / "procedural" / f"{name}-{split}-n{n}-seed{seed}-v{VERSION}-f{fonts}.npz"
    )


def _load(path: Path, n: int, shape: tuple[int, ...]) -> tuple[Tensor, Tensor] | None:
    try:
        with np.load(path, allow_pickle=False) as f:
            images, labels = f["images"], f["labels"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    if images.shape != (n, *shape) or images.dtype != np.uint8 or labels.shape != (n,):
        return None
    return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))


def load_or_generate(name: str, split: str, root: Path, n: int, seed: int) -> tuple[Tensor, Tensor]:
    """The cached images and labels of a stand-in, generating and caching them if needed."""
    if n < 1:
        raise ValueError(f"{name}: size must be positive, got {n}")
    path = cache_path(root, name, split, n, seed)
    cached = _load(path, n, STANDINS[name][2]) if path.is_file() else None
    if cached is not None:
        return cached
    images, labels = generate(name, split, n, seed)
    with atomic_open(path) as f:
        np.savez(f, images=images.numpy(), labels=labels.numpy())
    return images, labels


def _builder(name: str, modality: str) -> Callable[..., MultimodalDataset]:
    def build(
        split: str, root: Path, seed: int = 0, n_train: int = 60000, n_test: int = 10000
    ) -> MultimodalDataset:
        check_split(split, GENERATED_SPLITS)
        images, labels = load_or_generate(
            name, split, root, n_train if split == "train" else n_test, seed
        )
        return MultimodalDataset({modality: images}, labels, name=name)

    build.__doc__ = (f"Stand-in {name!r}: modality {modality!r}; options seed, n_train, n_test (also the size "
                     "of the 'val' split, an independent draw).")
    return build


STANDIN_MODALITIES = {
    "synthetic-street-digits": "synth_street",
    "synthetic-clean-street-digits": "synth_street",
    "synthetic-handwritten-digits": "synth_hand",
}
for _name, _modality in STANDIN_MODALITIES.items():
    DATASETS.register(_name)(_builder(_name, _modality))
