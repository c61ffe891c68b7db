"""Procedural scenes for the SYNTHETIC image-caption benchmark: one shape on a plain
background, 64 x 64 RGB, drawn with Pillow (4x supersampled, then downsampled).

Attributes, in order: shape, size, colour, position, background. Difficulty level k (1..5)
varies the first k of them (the idea of CdSprites+: level 1 shape only ... level 5 all
five); an attribute outside the level takes a fixed default that no caption mentions (a
medium-sized white shape in the centre of a black background). Within a value the scene
jitters (centre +-3 px, radius, rotation +-15 degrees, colour +-20 and background +-8 per channel), so the
classifiers must learn categories rather than exact images.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "shape": ("circle", "square", "triangle", "star"),
    "size": ("small", "large"),
    "colour": ("red", "green", "blue", "yellow"),
    "position": ("top left", "top right", "bottom left", "bottom right"),
    "background": ("black", "white", "grey"),
}
LEVELS = tuple(range(1, len(ATTRIBUTES) + 1))
SIZE = 64
SUPERSAMPLE = 4
RGB = {
    "red": (220, 30, 30), "green": (30, 190, 40), "blue": (40, 70, 230), "yellow": (235, 215, 30),
    "white": (235, 235, 235), "black": (15, 15, 15), "grey": (128, 128, 128),
}
RADIUS = {"small": (6.0, 8.0), "large": (12.0, 15.0), None: (10.0, 10.0)}
CENTRES = {"top left": (17, 17), "top right": (47, 17), "bottom left": (17, 47), "bottom right": (47, 47), None: (32, 32)}


def check_level(level: int) -> int:
    if level not in LEVELS:
        raise ValueError(f"synthetic-captions level must be one of {LEVELS}, got {level!r}")
    return level


def level_attributes(level: int) -> dict[str, tuple[str, ...]]:
    """The attributes that vary (and that captions describe) at `level`, with their values."""
    return dict(list(ATTRIBUTES.items())[: check_level(level)])


def sample_attributes(n: int, level: int, rng: np.random.Generator) -> Tensor:
    """(n, level) value indices, each attribute uniform and independent."""
    sizes = [len(v) for v in level_attributes(level).values()]
    return torch.from_numpy(np.stack([rng.integers(0, k, n) for k in sizes], 1).astype(np.int64))


def polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    """Vertices of a square, triangle or five-pointed star of circumradius r."""
    if kind == "square":
        points = [(r, math.pi / 4 + k * math.pi / 2) for k in range(4)]
    elif kind == "triangle":
        points = [(r, -math.pi / 2 + k * 2 * math.pi / 3) for k in range(3)]
    elif kind == "star":
        points = [(r if k % 2 == 0 else 0.45 * r, -math.pi / 2 + k * math.pi / 5) for k in range(10)]
    else:
        raise ValueError(f"unknown polygon {kind!r}")
    return [(cx + d * math.cos(a + angle), cy + d * math.sin(a + angle)) for d, a in points]


def render_scene(values: dict[str, str], rng: np.random.Generator) -> np.ndarray:
    """(3, 64, 64) uint8 image of one scene; `values` maps the varying attributes to values."""
    s = SUPERSAMPLE

    def jitter(rgb: tuple[int, ...], amount: int) -> tuple[int, ...]:
        return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in rgb)

    background = jitter(RGB[values.get("background", "black")], 8)
    colour = jitter(RGB[values.get("colour", "white")], 20)
    lo, hi = RADIUS[values.get("size")]
    r = rng.uniform(lo, hi) * s
    cx, cy = (c * s + rng.uniform(-3, 3) * s for c in CENTRES[values.get("position")])
    angle = math.radians(rng.uniform(-15, 15))
    image = Image.new("RGB", (SIZE * s, SIZE * s), background)
    draw = ImageDraw.Draw(image)
    if values["shape"] == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    else:
        draw.polygon(polygon(values["shape"], cx, cy, r, angle), fill=colour)
    image = image.resize((SIZE, SIZE), Image.Resampling.LANCZOS)
    return np.asarray(image, dtype=np.uint8).transpose(2, 0, 1)


def render_scenes(attributes: Tensor, level: int, rng: np.random.Generator) -> Tensor:
    """(n, 3, 64, 64) uint8 images of the scenes given by value indices (n, level)."""
    names = level_attributes(level)
    images = np.empty((len(attributes), 3, SIZE, SIZE), dtype=np.uint8)
    for i, row in enumerate(attributes.tolist()):
        images[i] = render_scene({a: names[a][v] for a, v in zip(names, row)}, rng)
    return torch.from_numpy(images)
