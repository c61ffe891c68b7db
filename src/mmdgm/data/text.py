"""The text modality of MNIST-SVHN-Text (Sutter et al. 2020): a digit's English word in a
string of 8 characters, one-hot over a 71-symbol alphabet.

Row i's text is `LENGTH` spaces with the word of its class ("zero".."nine") written from
an offset drawn uniformly among every offset at which the word fits (0..8 - len(word)),
seeded per row. Only 50 distinct strings exist (`placements`), so a text modality is a
50-row source plus an index per row, like every paired modality (`mmdgm.data.base`).

`ALPHABET` is the string Sutter et al.'s code builds by joining its alphabet.json: the
26 lower-case letters, the 10 digits, 33 punctuation marks (with "-" listed twice, at
indices 36 and 59; a "-" is encoded at 36, the first), space (index 69) and newline
(index 70). It has no upper-case letters.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from mmdgm.data.base import MultimodalDataset

ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789-,;.!?:'\"\\/|_@#$%^&*~`+-=<>()[]{} \n"
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
LENGTH = 8
MODALITY = "text"


def symbol_index(char: str) -> int:
    """The alphabet index of one character (the first, for the doubled "-")."""
    i = ALPHABET.find(char)
    if len(char) != 1 or i < 0:
        raise ValueError(f"character {char!r} is not in the {len(ALPHABET)}-symbol text alphabet")
    return i


def encode(texts: Sequence[str], length: int = LENGTH) -> Tensor:
    """One-hot float tensor (N, length, len(ALPHABET)) of strings of exactly `length` characters."""
    bad = [t for t in texts if len(t) != length]
    if bad:
        raise ValueError(f"texts must have exactly {length} characters, got {bad[0]!r} ({len(bad[0])})")
    index = torch.tensor([[symbol_index(c) for c in t] for t in texts], dtype=torch.long).view(len(texts), length)
    return torch.nn.functional.one_hot(index, len(ALPHABET)).float()


def decode(x: Tensor) -> list[str]:
    """Strings of one-hot or probability tensors (N, L, V) (argmax per position) or of
    symbol indices (N, L)."""
    index = x if not torch.is_floating_point(x) else x.argmax(-1)
    if index.dim() != 2:
        raise ValueError(f"decode needs (N, L, V) one-hot/probabilities or (N, L) indices, got shape {tuple(x.shape)}")
    return ["".join(ALPHABET[i] for i in row) for row in index.tolist()]


def placements(length: int = LENGTH) -> tuple[list[str], Tensor, Tensor]:
    """Every text of the construction: (strings, class of each, offset of each), grouped by
    class and ordered by offset; 50 strings for length 8."""
    if length < max(map(len, DIGIT_WORDS)):
        raise ValueError(f"text length {length} cannot hold every digit word (longest: 5)")
    strings, classes, offsets = [], [], []
    for c, word in enumerate(DIGIT_WORDS):
        for o in range(length - len(word) + 1):
            strings.append(" " * o + word + " " * (length - len(word) - o))
            classes.append(c)
            offsets.append(o)
    return strings, torch.tensor(classes), torch.tensor(offsets)


def text_rows(labels: Tensor, seed: int, length: int = LENGTH) -> Tensor:
    """For each label, the row of `placements(length)` holding its word at a uniformly
    drawn offset (seeded)."""
    labels = labels.long()
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) > 9):
        raise ValueError(f"text needs digit labels 0..9, got {int(labels.min())}..{int(labels.max())}")
    _, classes, _ = placements(length)
    fits = torch.bincount(classes, minlength=10)
    first = torch.cumsum(fits, 0) - fits
    u = torch.rand(labels.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    offset = (u * fits[labels]).long().clamp_max(fits[labels] - 1)
    return first[labels] + offset


def with_text(ds: MultimodalDataset, name: str, seed: int, length: int = LENGTH) -> MultimodalDataset:
    """`ds` (complete rows) with a "text" modality: each row's label word, offset seeded by
    `seed` and the row (`text_rows`); the result is named `name`."""
    if MODALITY in ds.sources:
        raise ValueError(f"dataset {ds.name!r} already has a {MODALITY!r} modality")
    strings, _, _ = placements(length)
    sources = {**ds.sources, MODALITY: encode(strings, length)}
    index = {**ds.index, MODALITY: text_rows(ds.labels, seed, length)}
    return MultimodalDataset(sources, ds.labels, index, ds.mask, name)


def read_digits(x: Tensor) -> Tensor:
    """The class (N,) whose digit word the strings (one-hot/probabilities (N, L, V) or
    indices (N, L)) contain, or -1 where they contain no digit word or several different
    ones (no digit word is part of another, so a contained word is unambiguous)."""
    index = x if not torch.is_floating_point(x) else x.argmax(-1)
    if index.dim() != 2:
        raise ValueError(f"read_digits needs (N, L, V) or (N, L) strings, got shape {tuple(x.shape)}")
    n, length = index.shape
    found = torch.zeros(n, len(DIGIT_WORDS), dtype=torch.bool, device=index.device)
    for c, word in enumerate(DIGIT_WORDS):
        target = torch.tensor([symbol_index(ch) for ch in word], device=index.device)
        for o in range(length - len(word) + 1):
            found[:, c] |= (index[:, o:o + len(word)] == target).all(1)
    one = found.sum(1) == 1
    return torch.where(one, found.long().argmax(1), torch.full((n,), -1, device=index.device))
