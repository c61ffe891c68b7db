"""Which rows of a data set a computation over `n` of them takes."""

from __future__ import annotations

import torch
from torch import Tensor

ROW_CHOICES = ("random", "first")


def sampled_rows(size: int, n: int | None, seed: int, rows: str, desc: str) -> Tensor:
    """Indices of `n` of `size` rows (all when None, in order). `rows`: "random", drawn
    without replacement with `seed`, in the drawn order, so that consecutive batches mix
    classes (paired test sets are stored grouped by class: their first rows can all be one
    digit); "first", the first n as stored."""
    if rows not in ROW_CHOICES:
        raise ValueError(f"{desc}: rows must be one of {ROW_CHOICES}, got {rows!r}")
    total = size if n is None else min(int(n), size)
    if total < 1:
        raise ValueError(f"{desc}: no rows to evaluate (n={n}, {size} rows to choose from)")
    if rows == "first" or total == size:
        return torch.arange(total)
    return torch.randperm(size, generator=torch.Generator().manual_seed(seed))[:total]
