"""The MMVAE pairing of two labelled datasets by class.

For each class c, take the first n_c = min(#A_c, #B_c, max_per_class) examples of each
dataset and append `dm` random permutations of them, so each of those examples appears
`dm` times and every pair shares its label (Shi et al., 2019, MNIST-SVHN).
"""

from __future__ import annotations

import hashlib
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


def pair_by_class(
    labels_a: Tensor, labels_b: Tensor, dm: int = 20, max_per_class: int = 10000, seed: int = 0
) -> tuple[Tensor, Tensor, Tensor]:
    """Rows into A, rows into B and the shared label of every pair, seeded.

    Returns:
        (index_a, index_b, labels), each (sum_c dm * n_c,), grouped by class.
    """
    if dm < 1 or max_per_class < 1:
        raise ValueError(
            f"dm and max_per_class must be positive, got dm={dm}, max_per_class={max_per_class}"
        )
    g = torch.Generator().manual_seed(seed)
    labels_a, labels_b = labels_a.long(), labels_b.long()
    index_a, index_b, labels = [], [], []
    for c in torch.unique(torch.cat([labels_a, labels_b])).tolist():
        rows_a = torch.nonzero(labels_a == c).flatten()
        rows_b = torch.nonzero(labels_b == c).flatten()
        n = min(len(rows_a), len(rows_b), max_per_class)
        if n == 0:
            continue
        for _ in range(dm):
            index_a.append(rows_a[:n][torch.randperm(n, generator=g)])
            index_b.append(rows_b[:n][torch.randperm(n, generator=g)])
        labels.append(torch.full((dm * n,), c, dtype=torch.long))
    if not labels:
        raise ValueError("the two datasets share no class; nothing to pair")
    return torch.cat(index_a), torch.cat(index_b), torch.cat(labels)


def _digest(*tensors: Tensor) -> str:
    h = hashlib.sha1()
    for t in tensors:
        h.update(t.long().numpy().tobytes())
    return h.hexdigest()[:12]


def cached_pair_by_class(
    cache: Path,
    key: str,
    labels_a: Tensor,
    labels_b: Tensor,
    dm: int = 20,
    max_per_class: int = 10000,
    seed: int = 0,
) -> tuple[Tensor, Tensor, Tensor]:
    """`pair_by_class`, cached as .npz in `cache` under `key` plus the arguments and labels."""
    sizes = f"na{len(labels_a)}-nb{len(labels_b)}"
    name = f"{key}-{sizes}-dm{dm}-max{max_per_class}-seed{seed}-{_digest(labels_a, labels_b)}.npz"
    path = Path(cache) / name
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as f:
                arrays = [
                    torch.from_numpy(f[k].astype(np.int64))
                    for k in ("index_a", "index_b", "labels")
                ]
            if len({a.shape for a in arrays}) == 1:
                return arrays[0], arrays[1], arrays[2]
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            pass
    index_a, index_b, labels = pair_by_class(labels_a, labels_b, dm, max_per_class, seed)
    with atomic_open(path) as f:
        np.savez(f, index_a=index_a.numpy(), index_b=index_b.numpy(), labels=labels.numpy())
    return index_a, index_b, labels
