"""Sizes of the importance-sampling work under a memory budget.

The likelihood metrics evaluate `rows` data points with `chunk` draws per proposal
component at a time. `bytes_per_draw` measures, with a probe on one row, the bytes that
one more draw per component of one row allocates (every tensor any operation creates,
freed or not: an upper bound on the working set); `plan_sizes` spends a budget on it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


class AllocatedBytes(TorchDispatchMode):
    """Sums the storage bytes of the new tensors (not views of, or in place on, an input)
    that the operations inside the block return."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        known = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        out = func(*args, **kwargs)
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in known:
                known.add(t.untyped_storage().data_ptr())
                self.bytes += t.untyped_storage().nbytes()
        return out


@torch.no_grad()
def allocated_bytes(fn: Callable[[], object]) -> int:
    """Bytes of the tensors `fn()` creates (global RNG state restored afterwards)."""
    with torch.random.fork_rng(devices=[]), AllocatedBytes() as mode:
        fn()
    return mode.bytes


def bytes_per_draw(work: Callable[[int], object]) -> int:
    """Bytes that one more draw costs: allocated_bytes(work(2)) - allocated_bytes(work(1)),
    with `work(k)` the computation for k draws per component of one data point (>= 1)."""
    return max(1, allocated_bytes(lambda: work(2)) - allocated_bytes(lambda: work(1)))


def plan_sizes(memory_mb: float, per_draw: int, K: int, rows: int) -> tuple[int, int]:
    """(rows per batch, draws per chunk) whose product times `per_draw` bytes fits
    `memory_mb`: all K draws at once for as many of the `rows` data points as fit, else
    one row and as many draws as fit."""
    if memory_mb <= 0:
        raise ValueError(f"memory_mb must be > 0, got {memory_mb}")
    units = math.floor(memory_mb * 2**20 / per_draw)
    if units < 1:
        raise ValueError(
            f"memory_mb={memory_mb} is below one draw of one data point ({per_draw / 2**20:.3f} MB); raise it"
        )
    if units >= K:
        return max(1, min(rows, units // K)), K
    return 1, units
