"""Helpers every metric shares: device, seeded RNG, batching with progress."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn
from tqdm import tqdm

from mmdgm.batch import Batch
from mmdgm.evaluate.context import EvalContext


def module_device(module: nn.Module) -> torch.device:
    """The device of a module's first parameter (CPU for a module without parameters)."""
    p = next(module.parameters(), None)
    return torch.device("cpu") if p is None else p.device


@contextlib.contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Fork the global RNG (and the device's, on CUDA) and seed it; restore it afterwards."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


def row_batches(n: int, batch_size: int, desc: str, progress: bool) -> Iterator[Tensor]:
    """Consecutive row-index chunks of range(n), with a progress bar."""
    for start in tqdm(range(0, n, batch_size), desc=desc, unit="batch", disable=not progress):
        yield torch.arange(start, min(start + batch_size, n))


def resolve_device(device: str | torch.device) -> torch.device:
    """"auto": the GPU when one is present, else the CPU; any other value as torch.device."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"unknown device {device!r} (use 'auto', 'cpu', 'cuda' or 'cuda:<index>')") from err


@contextlib.contextmanager
def on_device(module: nn.Module, device: str | torch.device) -> Iterator[nn.Module]:
    """Within the block `module` lives on `device` (`resolve_device`); moved back afterwards."""
    home, target = module_device(module), resolve_device(device)
    if target.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but torch sees no CUDA device")
    module.to(target)
    try:
        yield module
    finally:
        module.to(home)


def test_rows(ctx: EvalContext, n: int | None, desc: str) -> int:
    """How many test rows a metric over the first `n` (all when None) evaluates."""
    total = len(ctx.test_set) if n is None else min(int(n), len(ctx.test_set))
    if total < 1:
        raise ValueError(f"{desc}: no test rows to evaluate (n={n}, test set of {len(ctx.test_set)})")
    return total


def test_batches(ctx: EvalContext, n: int | None, desc: str, batch_size: int | None = None) -> Iterator[Batch]:
    """The first `n` test rows (all when None) in batches of `batch_size` (default
    `ctx.batch_size`), on the model's device, with unobserved entries zeroed."""
    total = test_rows(ctx, n, desc)
    device = module_device(ctx.model)
    for rows in row_batches(total, batch_size or ctx.batch_size, desc, ctx.progress):
        yield ctx.test_set.batch(rows).to(device).zero_missing()
