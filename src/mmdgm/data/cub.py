"""CUB-200-2011 image-captions (Wah et al. 2011; captions of Reed et al. 2016), as used by
MMVAE (Shi et al. 2019, §4.3): the class-disjoint split of Reed et al. (150 train+val
classes, 50 test classes: 8,855 / 2,933 images), 10 captions per image, each caption a row
paired with its image (the authors' `resampler`: image of row r is r // 10).

Expected tree under `<root>/cub/` (nothing is downloaded), either the standard layout
    images/<class>/<image>.jpg           CUB_200_2011/images
    text_c10/<class>/<image>.txt         Reed et al.'s captions, one per line (>= 10 lines)
    trainvalclasses.txt, testclasses.txt Reed et al.'s class split, one class folder per line
or the cleaned-up layout of the MMVAE code's cub.zip
    train/<class>/<image>.jpg, test/<class>/<image>.jpg
    text_trainvalclasses.txt, text_testclasses.txt   10 lines per image, images in sorted
                                                     (class, file) order (torchvision ImageFolder)
Images are resized to 64 x 64 (bilinear, no crop; the authors' `Resize([64, 64])`); labels
are the class index among the split's sorted class folders' global order (0..199 by
folder name). The vocabulary is built from the train split's captions (words seen at least
`min_count` times, `max_length` tokens with the end token) and cached as JSON with the
processed arrays under `cache_dir(root)/cub/`, so evaluation always finds it. Each line is
one caption (the authors' code re-splits the text with NLTK's sentence tokenizer, which
can shift captions against images).

`cub-features`: the same captions with user-supplied 2048-d image features (MMVAE's "CUB
features", ResNet-101 without its last layer on 224-pixel images) read from
`<root>/cub/features/{train,test}.npy`, one row per image in the split's image order
(sorted class folder, then file name); no network is downloaded or run here.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from mmdgm.data.base import MultimodalDataset
from mmdgm.data.errors import DataFileError
from mmdgm.data.mnist import check_split
from mmdgm.data.paths import atomic_open, cache_dir
from mmdgm.data.registry import DATASETS
from mmdgm.data.vocabulary import Vocabulary, load_or_build

CAPTIONS_PER_IMAGE = 10
IMAGE_SIZE = 64
FEATURE_DIM = 2048
EXTENSIONS = (".jpg", ".jpeg", ".png")
VERSION = 1


def missing(directory: Path, what: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"CUB data not found: {what} is missing in {directory}. Expected {directory}/images/<class>/*.jpg, "
        f"text_c10/<class>/*.txt, trainvalclasses.txt and testclasses.txt (CUB-200-2011 with Reed et al.'s "
        "captions), or MMVAE's cub.zip layout train/, test/, text_trainvalclasses.txt, text_testclasses.txt "
        "(see docs/datasets.md); set MMDGM_DATA_DIR or data.root to the directory holding cub/"
    )


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in EXTENSIONS)


def read_lines(path: Path) -> list[str]:
    try:
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError as e:
        raise DataFileError(f"CUB caption file {path} is not UTF-8 text ({e})") from e


def listing(directory: Path, split: str) -> tuple[list[Path], list[list[str]], list[str]]:
    """(image paths, their 10 captions, their class folder names) of a split, in order."""
    if (directory / "train").is_dir() or (directory / "test").is_dir():
        folder = directory / ("train" if split == "train" else "test")
        text = directory / ("text_trainvalclasses.txt" if split == "train" else "text_testclasses.txt")
        for path in (folder, text):
            if not path.exists():
                raise missing(directory, path.name)
        classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
        files = [(c, f) for c in classes for f in image_files(folder / c)]
        lines = read_lines(text)
        if len(lines) != CAPTIONS_PER_IMAGE * len(files):
            raise DataFileError(
                f"{text} has {len(lines)} captions for {len(files)} images in {folder}; "
                f"expected {CAPTIONS_PER_IMAGE} per image"
            )
        captions = [lines[i * CAPTIONS_PER_IMAGE : (i + 1) * CAPTIONS_PER_IMAGE] for i in range(len(files))]
        return [f for _, f in files], captions, [c for c, _ in files]
    split_file = directory / ("trainvalclasses.txt" if split == "train" else "testclasses.txt")
    for path in (directory / "images", directory / "text_c10", split_file):
        if not path.exists():
            raise missing(directory, path.name)
    paths, captions, classes = [], [], []
    for c in sorted(read_lines(split_file)):
        if not (directory / "images" / c).is_dir():
            raise missing(directory, f"images/{c} (listed in {split_file.name})")
        for f in image_files(directory / "images" / c):
            text = directory / "text_c10" / c / f"{f.stem}.txt"
            if not text.is_file():
                raise missing(directory, f"text_c10/{c}/{text.name}")
            lines = read_lines(text)
            if len(lines) < CAPTIONS_PER_IMAGE:
                raise DataFileError(f"{text} has {len(lines)} captions; expected {CAPTIONS_PER_IMAGE}")
            paths.append(f)
            captions.append(lines[:CAPTIONS_PER_IMAGE])
            classes.append(c)
    return paths, captions, classes


def load_image(path: Path) -> np.ndarray:
    """(3, 64, 64) uint8 of an image file, resized without cropping."""
    try:
        with Image.open(path) as im:
            im = im.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
            return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)
    except (UnidentifiedImageError, OSError) as e:
        raise DataFileError(f"CUB image {path} cannot be read ({e})") from e


def class_index(name: str) -> int:
    """0-based class of a CUB class folder ("001.Black_footed_Albatross" -> 0)."""
    head = name.split(".", 1)[0]
    if not head.isdigit():
        raise DataFileError(f"CUB class folder {name!r} does not start with its number (e.g. 001.Black_footed_Albatross)")
    return int(head) - 1


def processed(root: Path, split: str, with_images: bool) -> dict[str, np.ndarray]:
    """The split's images (uint8, when asked), captions (str) and labels, cached as .npz."""
    directory = Path(root) / "cub"
    if not directory.is_dir():
        raise missing(Path(root), "cub/")
    path = cache_dir(root) / "cub" / f"{split}-{IMAGE_SIZE}px-v{VERSION}{'' if with_images else '-text'}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as f:
                return {k: f[k] for k in f.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile):
            pass
    paths, captions, classes = listing(directory, split)
    if not paths:
        raise missing(directory, f"every image of the {split} split")
    arrays = {
        "captions": np.array([c for caps in captions for c in caps]),
        "labels": np.array([class_index(c) for c in classes], dtype=np.int64),
    }
    if with_images:
        arrays["images"] = np.stack([load_image(p) for p in paths])
    with atomic_open(path) as f:
        np.savez(f, **arrays)
    return arrays


def vocabulary(root: Path, min_count: int, max_length: int) -> Vocabulary:
    """The train split's vocabulary, cached under cache_dir(root)/cub/."""
    path = cache_dir(root) / "cub" / f"vocab-min{min_count}-len{max_length}.json"
    if path.is_file():
        return load_or_build(path, [], min_count, max_length)
    return load_or_build(path, processed(root, "train", False)["captions"].tolist(), min_count, max_length)


def caption_rows(
    name: str, image_name: str, images: torch.Tensor, arrays: dict, vocab: Vocabulary
) -> MultimodalDataset:
    """Rows (image, caption): caption r with image r // 10."""
    rows = len(arrays["captions"])
    image_of_row = torch.arange(rows) // CAPTIONS_PER_IMAGE
    labels = torch.from_numpy(arrays["labels"])[image_of_row]
    return MultimodalDataset(
        {image_name: images, "caption": vocab.encode(arrays["captions"].tolist())},
        labels,
        {image_name: image_of_row},
        name=name,
        vocabularies={"caption": vocab},
    )


@DATASETS.register("cub")
def build_cub(split: str, root: Path, min_count: int = 4, max_length: int = 32) -> MultimodalDataset:
    """CUB image-captions: "image" (3, 64, 64) and "caption" (max_length, V); 10 rows per image."""
    check_split(split)
    vocab = vocabulary(root, min_count, max_length)
    arrays = processed(root, split, True)
    return caption_rows("cub", "image", torch.from_numpy(arrays["images"]), arrays, vocab)


@DATASETS.register("cub-features")
def build_cub_features(split: str, root: Path, min_count: int = 4, max_length: int = 32) -> MultimodalDataset:
    """CUB with user-supplied image features: "features" (2048,) and "caption" (max_length, V)."""
    check_split(split)
    vocab = vocabulary(root, min_count, max_length)
    arrays = processed(root, split, False)
    path = Path(root) / "cub" / "features" / f"{split}.npy"
    if not path.is_file():
        raise FileNotFoundError(
            f"cub-features needs {path}: a float array (images, {FEATURE_DIM}) of image features in the split's "
            "image order (sorted class folder, then file name); see docs/datasets.md"
        )
    try:
        features = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise DataFileError(f"{path} is not a readable .npy array ({e})") from e
    n = len(arrays["labels"])
    if features.shape != (n, FEATURE_DIM) or not np.issubdtype(features.dtype, np.floating):
        raise DataFileError(f"{path} holds {features.dtype} {features.shape}; expected floats ({n}, {FEATURE_DIM})")
    if not np.isfinite(features).all():
        raise DataFileError(f"{path} contains NaN or inf")
    return caption_rows("cub-features", "features", torch.from_numpy(features.astype(np.float32)), arrays, vocab)
