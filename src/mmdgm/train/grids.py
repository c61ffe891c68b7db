"""PNG image grids of samples a person can look at."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
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


def wrap(text: str, font: ImageFont.ImageFont, width: int, draw: ImageDraw.ImageDraw) -> list[str]:
    """Greedy word wrap of `text` into lines at most `width` pixels wide (a longer word
    stays on a line of its own)."""
    lines: list[str] = []
    for word in text.split():
        if lines and draw.textlength(f"{lines[-1]} {word}", font=font) <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines or [""]


def caption_font(size: int = 11) -> ImageFont.ImageFont:
    """DejaVu Sans when installed (legible word spacing), else Pillow's default font."""
    try:
        return ImageFont.truetype("DejaVuSans.ttf", size)
    except OSError:
        return ImageFont.load_default()


def save_captioned_grid(
    rows: list[tuple[Tensor | None, list[str] | None]], path: Path, zoom: int = 2, pad: int = 4
) -> None:
    """Save a grid whose rows are (images (N, C, H, W) or None, captions or None): each
    column shows the row's image with its caption wrapped under it (`caption_font`),
    so generated captions sit next to the images they belong to."""
    font = caption_font()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    size = max((max(im.shape[-2:]) for im, _ in rows if im is not None), default=32) * zoom
    cols = max(len(im) if im is not None else len(c or []) for im, c in rows)
    line = int(sum(font.getbbox("Ag")[1::2])) + 2
    wrapped = [[wrap(t, font, size, probe) for t in c] if c else None for _, c in rows]
    heights = [(size + pad if im is not None else 0) + (max(map(len, w)) * line + pad if w else 0)
               for (im, _), w in zip(rows, wrapped)]
    canvas = Image.new("RGB", (cols * (size + pad) + pad, sum(heights) + pad), "white")
    draw = ImageDraw.Draw(canvas)
    y = pad
    for (images, _), lines, height in zip(rows, wrapped, heights):
        top = y
        if images is not None:
            rgb = to_rgb(images.detach().cpu(), max(images.shape[-2:])).permute(0, 2, 3, 1).numpy()
            for j, img in enumerate(rgb):
                tile = Image.fromarray((img * 255).round().astype(np.uint8)).resize((size, size), Image.NEAREST)
                canvas.paste(tile, (pad + j * (size + pad), top))
            top += size + pad
        for j, text in enumerate(lines or []):
            for k, words in enumerate(text):
                draw.text((pad + j * (size + pad), top + k * line), words, fill="black", font=font)
        y += height
    atomic_write_bytes(Path(path), lambda f: canvas.save(f, format="PNG"))


def captioned_rows(model, batch, n: int, image: str, caption: str, decode) -> dict[str, list]:
    """Captioned grids of a model with one image and one caption modality: "joint" (image
    and caption of the same prior draws), "from-<image>" (data image and caption, then the
    caption and image generated from the image) and "from-<caption>" (likewise)."""
    joint = model.sample(n, [image, caption])
    grids = {"joint": [(joint[image], decode(joint[caption]))]}
    for source in (image, caption):
        grids[f"from-{source}"] = [
            (batch.data[image], decode(batch.data[caption])),
            (model.cross_generate(batch, source, image), decode(model.cross_generate(batch, source, caption))),
        ]
    return grids


def image_modalities(model) -> list[str]:
    return [n for n, m in model.modalities.items() if len(m.shape) == 3]


def text_decoders(model, vocabularies: dict | None = None) -> dict:
    """name -> function turning a batch of the text modality into strings: the modality's
    `Vocabulary` (word-level captions) where one is given, else the character alphabet
    (`mmdgm.data.text`) for one-hot strings over it."""
    vocabularies = vocabularies or {}
    out = {}
    for n, m in model.modalities.items():
        if n in vocabularies:
            out[n] = vocabularies[n].decode
        elif len(m.shape) == 2 and m.shape[1] == len(ALPHABET):
            out[n] = decode
    return out


def text_lines(model, batch, n: int, decoders: dict) -> list[str]:
    """The model's `text_rows` of the text modalities (keys of `decoders`), each decoded by
    its modality's decoder, one line each."""
    rows = model.text_rows(batch, list(decoders), n)
    return [f"{label}: " + " | ".join(repr(s) for s in decoders[m](x)) for label, (m, x) in rows.items()]


@torch.no_grad()
def write_model_grids(model, batch, out_dir: Path, tag: str, n: int = 8, vocabularies: dict | None = None) -> list[Path]:
    """The model's `picture_grids` of the image modalities, one PNG each (by default joint
    samples and cross generations), and those of text modalities as decoded strings in
    `<tag>-text.txt` (nothing for other modalities, e.g. feature vectors), for up to `n`
    rows of `batch`. Caption modalities are decoded with their `vocabularies`; a model
    of one image and one caption modality (one with a vocabulary) also gets `<tag>-captions-<grid>.png`,
    images with their captions written under them (`captioned_rows`).

    Each joint-sample column shares one prior draw, so columns show (in)coherence;
    cross-generation grids show the source row above one generated row per target.
    Uses a forked RNG so that drawing grids does not disturb training randomness.
    """
    names, decoders = image_modalities(model), text_decoders(model, vocabularies)
    out_dir = Path(out_dir)
    batch = batch.select(torch.arange(min(n, batch.size)))
    paths = []
    with torch.random.fork_rng():
        if names:
            torch.manual_seed(0)
            for name, rows in model.picture_grids(batch, names, n).items():
                paths.append(out_dir / f"{tag}-{name}.png")
                save_grid(rows, paths[-1])
        if decoders:
            torch.manual_seed(0)
            paths.append(out_dir / f"{tag}-text.txt")
            atomic_write_text(paths[-1], "\n".join(text_lines(model, batch, n, decoders)) + "\n")
        captions = [t for t in decoders if t in (vocabularies or {})]
        if len(names) == 1 and len(captions) == 1 and len(model.names) == 2:
            torch.manual_seed(0)
            for name, rows in captioned_rows(model, batch, n, names[0], captions[0], decoders[captions[0]]).items():
                paths.append(out_dir / f"{tag}-captions-{name}.png")
                save_captioned_grid(rows, paths[-1])
    return paths
