"""The MMVAE pairing of labelled datasets by class, for two or more modalities.

For each class c, take the first n_c = min(#A_c, #B_c, ..., max_per_class) examples of
each dataset and append `dm` random permutations of them, so each of those examples
appears `dm` times and every tuple shares its label (Shi et al., 2019, MNIST-SVHN; the
MMALI code pairs its M rotated MNIST modalities the same way).
"""

from __future__ import annotations

import hashlib
import string
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from mmdgm.data.paths import atomic_open


def pairs_per_class(
    counts_a: Sequence[int], counts_b: Sequence[int], dm: int, max_per_class: int = 10000
) -> list[int]:
    """Pairs of each class: dm * min(count_a, count_b, max_per_class)."""
    if len(counts_a) != len(counts_b):
        raise ValueError(f"class counts differ in length: {len(counts_a)} vs {len(counts_b)}")
    return [dm * min(a, b, max_per_class) for a, b in zip(counts_a, counts_b)]


def match_by_class(
    labels: Sequence[Tensor], dm: int = 20, max_per_class: int = 10000, seed: int = 0
) -> tuple[list[Tensor], Tensor]:
    """Rows into each of the labelled sets and the shared label of every tuple, seeded.

    Returns:
        ([index_0, index_1, ...], labels), each (sum_c dm * n_c,), grouped by class.
    """
    if dm < 1 or max_per_class < 1:
        raise ValueError(
            f"dm and max_per_class must be positive, got dm={dm}, max_per_class={max_per_class}"
        )
    if len(labels) < 2:
        raise ValueError(f"matching needs two or more labelled sets, got {len(labels)}")
    g = torch.Generator().manual_seed(seed)
    labels = [y.long() for y in labels]
    index: list[list[Tensor]] = [[] for _ in labels]
    shared = []
    for c in torch.unique(torch.cat(labels)).tolist():
        rows = [torch.nonzero(y == c).flatten() for y in labels]
        n = min(*(len(r) for r in rows), max_per_class)
        if n == 0:
            continue
        for _ in range(dm):
            for out, r in zip(index, rows):
                out.append(r[:n][torch.randperm(n, generator=g)])
        shared.append(torch.full((dm * n,), c, dtype=torch.long))
    if not shared:
        raise ValueError("the datasets share no class; nothing to pair")
    return [torch.cat(i) for i in index], torch.cat(shared)


def pair_by_class(
    labels_a: Tensor, labels_b: Tensor, dm: int = 20, max_per_class: int = 10000, seed: int = 0
) -> tuple[Tensor, Tensor, Tensor]:
    """`match_by_class` of two sets: (index_a, index_b, labels)."""
    (index_a, index_b), labels = match_by_class([labels_a, labels_b], dm, max_per_class, seed)
    return index_a, index_b, labels


def _digest(*tensors: Tensor) -> str:
    h = hashlib.sha1()
    for t in tensors:
        h.update(t.long().numpy().tobytes())
    return h.hexdigest()[:12]


def _load_matching(path: Path, labels: Sequence[Tensor]) -> tuple[list[Tensor], Tensor] | None:
    """A cached matching if it is readable and consistent with `labels`, else None."""
    keys = [f"index_{letter}" for letter in string.ascii_lowercase[: len(labels)]]
    try:
        with np.load(path, allow_pickle=False) as f:
            index = [torch.from_numpy(f[k].astype(np.int64)) for k in keys]
            shared = torch.from_numpy(f["labels"].astype(np.int64))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    for rows, y in zip(index, labels):
        if rows.shape != shared.shape or (len(rows) and not (0 <= int(rows.min()) and int(rows.max()) < len(y))):
            return None
        if not torch.equal(y.long()[rows], shared):
            return None
    return index, shared


def cached_match_by_class(
    cache: Path,
    key: str,
    labels: Sequence[Tensor],
    dm: int = 20,
    max_per_class: int = 10000,
    seed: int = 0,
) -> tuple[list[Tensor], Tensor]:
    """`match_by_class`, cached atomically as .npz in `cache` under `key` plus the
    arguments and a digest of the labels; an unreadable or inconsistent file is rebuilt."""
    if not 2 <= len(labels) <= len(string.ascii_lowercase):
        raise ValueError(f"matching caches 2 to 26 labelled sets, got {len(labels)}")
    letters = string.ascii_lowercase[: len(labels)]
    sizes = "-".join(f"n{letter}{len(y)}" for letter, y in zip(letters, labels))
    name = f"{key}-{sizes}-dm{dm}-max{max_per_class}-seed{seed}-{_digest(*labels)}.npz"
    path = Path(cache) / name
    cached = _load_matching(path, labels) if path.is_file() else None
    if cached is not None:
        return cached
    index, shared = match_by_class(labels, dm, max_per_class, seed)
    with atomic_open(path) as f:
        np.savez(f, labels=shared.numpy(), **{f"index_{letter}": i.numpy() for letter, i in zip(letters, index)})
    return index, shared


def cached_pair_by_class(
    cache: Path,
    key: str,
    labels_a: Tensor,
    labels_b: Tensor,
    dm: int = 20,
    max_per_class: int = 10000,
    seed: int = 0,
) -> tuple[Tensor, Tensor, Tensor]:
    """`cached_match_by_class` of two sets: (index_a, index_b, labels)."""
    (index_a, index_b), labels = cached_match_by_class(cache, key, [labels_a, labels_b], dm, max_per_class, seed)
    return index_a, index_b, labels
