"""PNG image grids of samples a person can look at."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from mmdgm.data.text import ALPHABET, decode
from mmdgm.train.checkpoint import atomic_write_bytes, atomic_write_text


def to_rgb(images: Tensor, size: int) -> Tensor:
    """(N, C, H, W) in [0, 1] -> (N, 3, size, size), grey expanded, centred with padding."""
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    h, w = images.shape[-2:]
    top, left = (size - h) // 2, (size - w) // 2
    out = torch.zeros(images.shape[0], 3, size, size)
    out[:, :, top : top + h, left : left + w] = images.float().clamp(0, 1)
    return out


def save_grid(rows: list[Tensor], path: Path, pad: int = 2, zoom: int = 2) -> None:
    """Save a grid with one row per (N, C, H, W) tensor; columns align across rows.
    `zoom` enlarges the picture (nearest neighbour) so that 28-pixel digits are legible."""
    size = max(max(r.shape[-2:]) for r in rows)
    cols = max(r.shape[0] for r in rows)
    cell = size + pad
    canvas = np.ones((len(rows) * cell + pad, cols * cell + pad, 3), dtype=np.float32)
    for i, row in enumerate(rows):
        rgb = to_rgb(row.detach().cpu(), size).permute(0, 2, 3, 1).numpy()
        for j, img in enumerate(rgb):
            y, x = pad + i * cell, pad + j * cell
            canvas[y : y + size, x : x + size] = img
    image = Image.fromarray((canvas * 255).round().astype(np.uint8))
    image = image.resize((image.width * zoom, image.height * zoom), Image.NEAREST)
    atomic_write_bytes(Path(path), lambda f: image.save(f, format="PNG"))


def image_modalities(model) -> list[str]:
    return [n for n, m in model.modalities.items() if len(m.shape) == 3]


def text_modalities(model) -> list[str]:
    """Modalities of one-hot strings over the text alphabet (`mmdgm.data.text`)."""
    return [n for n, m in model.modalities.items() if len(m.shape) == 2 and m.shape[1] == len(ALPHABET)]


def text_lines(model, batch, n: int, names: list[str]) -> list[str]:
    """The model's `text_rows` of the text modalities `names`, decoded, one line each."""
    return [f"{label}: " + " | ".join(repr(s) for s in decode(x)) for label, x in model.text_rows(batch, names, n).items()]


@torch.no_grad()
def write_model_grids(model, batch, out_dir: Path, tag: str, n: int = 8) -> list[Path]:
    """The model's `picture_grids` of the image modalities, one PNG each (by default joint
    samples and cross generations), and those of text modalities as decoded strings in
    `<tag>-text.txt` (nothing for other modalities, e.g. feature vectors), for up to `n`
    rows of `batch`.

    Each joint-sample column shares one prior draw, so columns show (in)coherence;
    cross-generation grids show the source row above one generated row per target.
    Uses a forked RNG so that drawing grids does not disturb training randomness.
    """
    names, texts = image_modalities(model), text_modalities(model)
    out_dir = Path(out_dir)
    batch = batch.select(torch.arange(min(n, batch.size)))
    paths = []
    with torch.random.fork_rng():
        if names:
            torch.manual_seed(0)
            for name, rows in model.picture_grids(batch, names, n).items():
                paths.append(out_dir / f"{tag}-{name}.png")
                save_grid(rows, paths[-1])
        if texts:
            torch.manual_seed(0)
            paths.append(out_dir / f"{tag}-text.txt")
            atomic_write_text(paths[-1], "\n".join(text_lines(model, batch, n, texts)) + "\n")
    return paths
