"""Glyph rendering and batched image distortions for the procedural digit datasets.

Digits are rendered once per font into a small atlas with Pillow; every image is then
made by warping atlas glyphs with per-sample affine maps and displacement fields in
torch, so a whole batch is distorted at once.
"""

from __future__ import annotations

import functools
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

FONT_DIRS = (Path("/usr/share/fonts"), Path("/usr/local/share/fonts"))
CANVAS = 64
GLYPH_HEIGHT = 40


@dataclass(frozen=True)
class Atlas:
    """Digit glyphs on a CANVAS x CANVAS canvas, centred, GLYPH_HEIGHT pixels tall.

    Attributes:
        glyphs: (G, 1, CANVAS, CANVAS) float coverage in [0, 1].
        digit: (G,) digit of each glyph.
        font: (G,) index of the font each glyph was drawn with.
        width: (G,) glyph width in canvas pixels.
        fonts: names of the fonts, indexed by `font`.
        strokes: the stroke widths rendered for every font, in order.
    """

    glyphs: Tensor
    digit: Tensor
    font: Tensor
    width: Tensor
    fonts: tuple[str, ...]
    strokes: tuple[int, ...]

    def index(self, font: Tensor, stroke: Tensor, digit: Tensor) -> Tensor:
        """Rows of `glyphs` for the given font, stroke-variant and digit indices."""
        return (font * len(self.strokes) + stroke) * 10 + digit

    @property
    def fingerprint(self) -> str:
        """A short hash of the font set (the images depend on it)."""
        return hashlib.sha1("\n".join(self.fonts).encode()).hexdigest()[:8]


def font_files() -> list[Path]:
    """TrueType/OpenType fonts installed on this machine, sorted by file name."""
    found = {
        p.name: p
        for d in FONT_DIRS
        if d.is_dir()
        for p in d.rglob("*")
        if p.suffix.lower() in (".ttf", ".otf")
    }
    return [found[name] for name in sorted(found)]


def _fonts(size: int) -> list[tuple[str, ImageFont.FreeTypeFont]]:
    fonts = [("pillow-default", ImageFont.load_default(size=size))]
    for path in font_files():
        try:
            fonts.append((path.stem, ImageFont.truetype(str(path), size)))
        except OSError:
            continue
    return fonts


def _render(font: ImageFont.FreeTypeFont, text: str, stroke: int) -> Image.Image:
    img = Image.new("L", (3 * CANVAS, 3 * CANVAS), 0)
    ImageDraw.Draw(img).text(
        (1.5 * CANVAS, 1.5 * CANVAS),
        text,
        font=font,
        fill=255,
        anchor="mm",
        stroke_width=stroke,
        stroke_fill=255,
    )
    return img


@functools.lru_cache(maxsize=4)
def glyph_atlas(strokes: tuple[int, ...] = (0,)) -> Atlas:
    """Render digits 0-9 in every usable font and each extra stroke width (pixels)."""
    glyphs, digits, fonts_of, widths, names = [], [], [], [], []
    for name, font in _fonts(GLYPH_HEIGHT):
        bbox = _render(font, "0123456789", 0).getbbox()
        if bbox is None or bbox[3] - bbox[1] < 8:
            continue
        size = max(4, round(GLYPH_HEIGHT * GLYPH_HEIGHT / (bbox[3] - bbox[1])))
        font = font.font_variant(size=size)
        rendered = []
        for stroke in strokes:
            for d in range(10):
                img = _render(font, str(d), stroke)
                box = img.getbbox()
                if box is None:
                    break
                crop = img.crop(box)
                if crop.width > CANVAS - 4 or crop.height > CANVAS - 4:
                    crop.thumbnail((CANVAS - 4, CANVAS - 4), Image.Resampling.LANCZOS)
                canvas = Image.new("L", (CANVAS, CANVAS), 0)
                canvas.paste(crop, ((CANVAS - crop.width) // 2, (CANVAS - crop.height) // 2))
                rendered.append(
                    (
                        d,
                        crop.width,
                        torch.frombuffer(bytearray(canvas.tobytes()), dtype=torch.uint8),
                    )
                )
        if len(rendered) != 10 * len(strokes):
            continue
        for d, w, pixels in rendered:
            glyphs.append(pixels.view(1, CANVAS, CANVAS))
            digits.append(d)
            fonts_of.append(len(names))
            widths.append(w)
        names.append(name)
    return Atlas(
        torch.stack(glyphs).float().div_(255.0),
        torch.tensor(digits),
        torch.tensor(fonts_of),
        torch.tensor(widths, dtype=torch.float32),
        tuple(names),
        strokes,
    )


def affine_theta(
    scale_x: Tensor, scale_y: Tensor, rotation: Tensor, shear: Tensor, tx: Tensor, ty: Tensor
) -> Tensor:
    """(B, 2, 3) maps from output to input coordinates for `F.affine_grid`.

    The forward map takes a glyph point p to R(rotation) @ Shear(shear) @ diag(sx, sy) p + t,
    in normalised [-1, 1] coordinates; rotation in radians.
    """
    c, s = torch.cos(rotation), torch.sin(rotation)
    zero = torch.zeros_like(c)
    rot = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)
    sh = torch.stack(
        [torch.stack([torch.ones_like(c), shear], -1), torch.stack([zero, torch.ones_like(c)], -1)],
        -2,
    )
    sc = torch.diag_embed(torch.stack([scale_x, scale_y], -1))
    inverse = torch.linalg.inv(rot @ sh @ sc)
    t = torch.stack([tx, ty], -1).unsqueeze(-1)
    return torch.cat([inverse, -inverse @ t], -1)


def warp(images: Tensor, theta: Tensor, size: int, displacement: Tensor | None = None) -> Tensor:
    """Sample (B, C, H, W) images through affine maps `theta` onto a size x size grid.

    `displacement` (B, size, size, 2) is added to the sampling grid (elastic distortion).
    """
    grid = F.affine_grid(theta, [images.shape[0], images.shape[1], size, size], align_corners=False)
    if displacement is not None:
        grid = grid + displacement
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def smooth_field(
    batch: int, channels: int, size: int, cells: int, generator: torch.Generator
) -> Tensor:
    """(B, channels, size, size) smooth random field: cells x cells N(0, 1) noise upsampled."""
    coarse = torch.randn(batch, channels, cells, cells, generator=generator)
    return F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)


def gaussian_blur(images: Tensor, sigma: Tensor, radius: int = 3) -> Tensor:
    """Blur (B, C, H, W) images with a per-sample Gaussian of std `sigma` (B,) pixels."""
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype)
    weights = torch.exp(-0.5 * (offsets / sigma.clamp_min(1e-3).unsqueeze(1)) ** 2)
    weights = (weights / weights.sum(1, keepdim=True)).view(-1, 1, 1, 1, 2 * radius + 1)
    h, w = images.shape[-2:]
    padded = F.pad(images, (radius, radius, 0, 0), mode="replicate")
    rows = sum(weights[..., k] * padded[..., :, k : k + w] for k in range(2 * radius + 1))
    padded = F.pad(rows, (0, 0, radius, radius), mode="replicate")
    return sum(weights[..., k] * padded[..., k : k + h, :] for k in range(2 * radius + 1))


def uniform(shape: tuple[int, ...], low: float, high: float, generator: torch.Generator) -> Tensor:
    """Uniform samples in [low, high)."""
    return torch.rand(shape, generator=generator) * (high - low) + low


def degrees(x: Tensor) -> Tensor:
    """Degrees to radians."""
    return x * (math.pi / 180.0)
