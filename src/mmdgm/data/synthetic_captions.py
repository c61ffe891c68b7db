"""`synthetic-captions`: the project's SYNTHETIC offline image-caption benchmark.

Procedural scenes (`mmdgm.data.scenes`, 64 x 64 RGB "image") with word-level captions
(`mmdgm.data.scene_captions`, "caption", token indices over a vocabulary built from the
training captions). Each image gets `captions_per_image` independently drawn captions and
each (image, caption) pair is a row (image of row r: r // captions_per_image), as the CUB
image-caption rows are built. Row labels are the mixed-radix index of the image's
attribute values (`MultimodalDataset.attributes`), which the attribute classifiers and
`attribute_coherence` read.

Splits "train", "val" and "test" are independent draws. Deterministic per (split, level,
n, captions_per_image, seed) and cached as .npz under
`cache_dir(root)/synthetic-captions/`; the vocabulary (built from the train split's
captions with `min_count` and `max_length`) is cached there as JSON next to it, so the
test split and evaluation always find the training vocabulary. Numbers measured here are
not CUB numbers.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from mmdgm.data.base import MultimodalDataset, attribute_label
from mmdgm.data.mnist import GENERATED_SPLITS, check_split
from mmdgm.data.partial import Protocol
from mmdgm.data.paths import atomic_open, cache_dir
from mmdgm.data.registry import DATASETS
from mmdgm.data.scene_captions import caption
from mmdgm.data.scenes import level_attributes, render_scenes, sample_attributes
from mmdgm.data.vocabulary import Vocabulary, load_or_build
from mmdgm.seeds import derived_seed

NAME = "synthetic-captions"
VERSION = 1
IMAGE, CAPTION = "image", "caption"


def generate(split: str, level: int, n: int, captions_per_image: int, seed: int) -> dict[str, np.ndarray]:
    """Images (n, 3, 64, 64) uint8, attribute values (n, level) and captions (n * c,) str."""
    rng = np.random.default_rng(derived_seed(seed, f"{NAME}/{split}/level{level}"))
    attributes = sample_attributes(n, level, rng)
    names = level_attributes(level)
    captions = [
        caption({a: names[a][v] for a, v in zip(names, row)}, rng)
        for row in attributes.tolist()
        for _ in range(captions_per_image)
    ]
    images = render_scenes(attributes, level, rng)
    return {"images": images.numpy(), "attributes": attributes.numpy(), "captions": np.array(captions)}


def cache_stem(split: str, level: int, n: int, captions_per_image: int, seed: int) -> str:
    return f"{split}-level{level}-n{n}-c{captions_per_image}-seed{seed}-v{VERSION}"


def load_or_generate(root: Path, split: str, level: int, n: int, captions_per_image: int, seed: int) -> dict:
    """The cached arrays of one split, generated and cached if absent or unreadable."""
    path = cache_dir(root) / NAME / f"{cache_stem(split, level, n, captions_per_image, seed)}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as f:
                arrays = {k: f[k] for k in ("images", "attributes", "captions")}
            if arrays["images"].shape == (n, 3, 64, 64) and arrays["captions"].shape == (n * captions_per_image,):
                return arrays
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            pass
    arrays = generate(split, level, n, captions_per_image, seed)
    with atomic_open(path) as f:
        np.savez(f, **arrays)
    return arrays


@DATASETS.register(NAME)
def build_synthetic_captions(
    split: str,
    root: Path,
    level: int = 3,
    n_train: int = 10000,
    n_test: int = 2000,
    captions_per_image: int = 5,
    seed: int = 0,
    min_count: int = 4,
    max_length: int = 24,
    observed_fraction: float = 1.0,
    unpaired_scheme: str = "alternate",
    unimodal_fraction: float = 1.0,
) -> MultimodalDataset:
    """SYNTHETIC scenes "image" (3, 64, 64) and captions "caption" (max_length, V); `level`
    1..5 (shape; + size; + colour; + position; + background); `n_train` / `n_test` images,
    `captions_per_image` rows each; split "val" (`n_test` images) is drawn like "test" but
independently, for choosing settings without the test split. On the train split, `unimodal_fraction` keeps that share
    of the images of each attribute combination with all their captions (the data-efficiency
    protocol of Shi et al. 2021 on CUB: n % of the pairs), and `observed_fraction` /
    `unpaired_scheme` mask the rows as MEME's protocol (`mmdgm.data.partial`)."""
    check_split(split, GENERATED_SPLITS)
    protocol = Protocol(observed_fraction, unpaired_scheme, unimodal_fraction)
    protocol.check([IMAGE, CAPTION])
    for option, value, low in (("n_train", n_train, 1), ("n_test", n_test, 1), ("captions_per_image", captions_per_image, 1),
                               ("min_count", min_count, 1), ("max_length", max_length, 2)):
        if value < low:
            raise ValueError(f"{NAME}: {option} must be >= {low}, got {value}")
    attributes = level_attributes(level)
    train = load_or_generate(root, "train", level, n_train, captions_per_image, seed)
    vocab_path = cache_dir(root) / NAME / (
        f"vocab-{cache_stem('train', level, n_train, captions_per_image, seed)}-min{min_count}-len{max_length}.json"
    )
    vocab: Vocabulary = load_or_build(vocab_path, train["captions"].tolist(), min_count, max_length)
    arrays = train if split == "train" else load_or_generate(root, split, level, n_test, captions_per_image, seed)
    labels = attribute_label(torch.from_numpy(arrays["attributes"]), [len(v) for v in attributes.values()])
    rows = torch.arange(len(arrays["captions"]))
    kept = protocol.sources(split, [labels], seed)
    if kept is not None:
        rows = rows.view(-1, captions_per_image)[kept[0]].flatten()
    image_of_row = rows // captions_per_image
    ds = MultimodalDataset(
        {IMAGE: torch.from_numpy(arrays["images"]), CAPTION: vocab.encode(arrays["captions"].tolist())},
        labels[image_of_row],
        {IMAGE: image_of_row, CAPTION: rows},
        name=NAME,
        vocabularies={CAPTION: vocab},
        attributes=attributes,
    )
    return protocol.observe(split, ds, seed)
