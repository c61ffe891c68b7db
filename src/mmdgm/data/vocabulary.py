"""Word-level captions: a tokeniser and a vocabulary built from training captions.

The MMVAE CUB setting (Shi et al. 2019, code `datasets.CUBSentences`): words seen at least
`min_count` = 4 times in the training captions, special tokens for padding, unknown words
and end of sentence, captions cut to `max_length` - 1 words and closed by the end token, so
that every caption is exactly `max_length` = 32 tokens including the end token and padding.

Indices: `<pad>` = 0, `<unk>` = 1, `<eos>` = 2, then the kept words in order of first
appearance. (The authors' code has `<exc>` (unknown) = 0, `<pad>` = 1, `<eos>` = 2, and its
likelihood ignores index 0, the unknown token, rather than padding; here padding is index 0
so that a zeroed placeholder is padding, and padding is what the likelihood ignores.)

The tokeniser lower-cases and splits into runs of letters/digits (with an inner
apostrophe) and single punctuation marks, close to NLTK's `word_tokenize` on CUB captions
without depending on NLTK.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from torch import Tensor

from mmdgm.data.errors import DataFileError
from mmdgm.data.paths import atomic_open

PAD, UNK, EOS = "<pad>", "<unk>", "<eos>"
SPECIALS = (PAD, UNK, EOS)
MAX_LENGTH = 32
MIN_COUNT = 4
TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]")


def tokenise(text: str) -> list[str]:
    """Lower-cased word and punctuation tokens of one caption."""
    return TOKEN.findall(text.lower())


class Vocabulary:
    """Index <-> word maps with `<pad>` = 0, `<unk>` = 1, `<eos>` = 2 and a fixed caption length.

    Args:
        words: the kept words, in index order after the special tokens.
        max_length: tokens per encoded caption, the end token included (>= 2).
    """

    pad, unk, eos = 0, 1, 2

    def __init__(self, words: Sequence[str], max_length: int = MAX_LENGTH) -> None:
        if max_length < 2:
            raise ValueError(f"max_length must be >= 2 (one word and the end token), got {max_length}")
        clash = [w for w in words if w in SPECIALS]
        if clash or len(set(words)) != len(words):
            raise ValueError(f"vocabulary words must be unique and not special tokens; bad: {clash or 'duplicates'}")
        self.words = list(SPECIALS) + list(words)
        self.index = {w: i for i, w in enumerate(self.words)}
        self.max_length = int(max_length)

    def __len__(self) -> int:
        return len(self.words)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and (self.words, self.max_length) == (other.words, other.max_length)

    @classmethod
    def build(cls, captions: Iterable[str], min_count: int = MIN_COUNT, max_length: int = MAX_LENGTH) -> "Vocabulary":
        """The words of `captions` seen at least `min_count` times, in order of first appearance."""
        if min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {min_count}")
        counts: Counter[str] = Counter()
        for caption in captions:
            counts.update(tokenise(caption))
        return cls([w for w, c in counts.items() if c >= min_count and w not in SPECIALS], max_length)

    def encode(self, captions: Sequence[str]) -> Tensor:
        """(N, max_length) int64: the first max_length - 1 tokens (unknown words -> `<unk>`),
        then `<eos>`, then `<pad>` to the end."""
        out = torch.full((len(captions), self.max_length), self.pad, dtype=torch.long)
        for i, caption in enumerate(captions):
            ids = [self.index.get(w, self.unk) for w in tokenise(caption)[: self.max_length - 1]] + [self.eos]
            out[i, : len(ids)] = torch.tensor(ids)
        return out

    def tokens(self, x: Tensor) -> list[list[str]]:
        """Word lists of captions given as indices (N, L) or one-hot/probabilities (N, L, V)
        (argmax per position): each row up to (not including) its first `<eos>`, `<pad>`
        dropped. `<unk>` is kept as the string "<unk>"."""
        index = x.argmax(-1) if torch.is_floating_point(x) else x
        if index.dim() != 2:
            raise ValueError(f"captions must be (N, L) indices or (N, L, V) scores, got shape {tuple(x.shape)}")
        if torch.is_floating_point(x) and x.shape[-1] != len(self):
            raise ValueError(f"caption scores have {x.shape[-1]} symbols, the vocabulary {len(self)}")
        out = []
        for row in index.tolist():
            if row and (min(row) < 0 or max(row) >= len(self)):
                raise ValueError(f"caption indices must lie in 0..{len(self) - 1}, got {min(row)}..{max(row)}")
            if self.eos in row:
                row = row[: row.index(self.eos)]
            out.append([self.words[i] for i in row if i != self.pad])
        return out

    def decode(self, x: Tensor) -> list[str]:
        """Captions as strings: `tokens` joined by spaces."""
        return [" ".join(words) for words in self.tokens(x)]

    def to_json(self) -> str:
        return json.dumps({"words": self.words[len(SPECIALS):], "max_length": self.max_length, "specials": SPECIALS})

    def save(self, path: Path) -> None:
        """Write the vocabulary as JSON; the file appears only when complete."""
        with atomic_open(Path(path)) as f:
            f.write(self.to_json().encode())

    @classmethod
    def load(cls, path: Path) -> "Vocabulary":
        """Read a vocabulary saved by `save`; a corrupt file is a `DataFileError`."""
        try:
            raw = json.loads(Path(path).read_text())
            if list(raw["specials"]) != list(SPECIALS):
                raise ValueError(f"special tokens {raw['specials']}, expected {list(SPECIALS)}")
            return cls(list(raw["words"]), int(raw["max_length"]))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise DataFileError(f"vocabulary file {path} is corrupt ({e}); delete it to rebuild it") from e


def load_or_build(path: Path, captions: Iterable[str], min_count: int, max_length: int) -> Vocabulary:
    """The vocabulary cached at `path` if it was built with `max_length` and exists, else one
    built from `captions` (the training captions) and saved there."""
    path = Path(path)
    if path.is_file():
        vocab = Vocabulary.load(path)
        if vocab.max_length == max_length:
            return vocab
    vocab = Vocabulary.build(captions, min_count, max_length)
    vocab.save(path)
    return vocab
