"""Helpers every metric shares: device, seeded RNG, batching with progress."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn
from tqdm import tqdm

from mmdgm.batch import Batch
from mmdgm.data import MultimodalDataset
from mmdgm.data.sampling import sampled_rows
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


def test_rows(ctx: EvalContext, n: int | None, desc: str, rows: str = "random") -> Tensor:
    """The test rows a metric over `n` of them evaluates (`sampled_rows` with the evaluation seed)."""
    return sampled_rows(len(ctx.test_set), n, ctx.seed, rows, desc)


def test_batches(
    ctx: EvalContext, n: int | None, desc: str, batch_size: int | None = None, rows: str = "random"
) -> Iterator[Batch]:
    """The `test_rows` of `n` and `rows` in batches of `batch_size` (default
    `ctx.batch_size`), on the model's device, with unobserved entries zeroed."""
    chosen = test_rows(ctx, n, desc, rows)
    device = module_device(ctx.model)
    for chunk in row_batches(len(chosen), batch_size or ctx.batch_size, desc, ctx.progress):
        yield ctx.test_set.batch(chosen[chunk]).to(device).zero_missing()


def fit_set(ctx: EvalContext, fit_pairs: str, metric: str) -> MultimodalDataset:
    """The train data an instrument is fitted on: "observed", the run's own (as masked and
    re-paired for it); "all", the full data it was drawn from (`EvalContext.full_train`),
    the same for every run of the data set and with each row's true label."""
    if fit_pairs not in ("observed", "all"):
        raise ValueError(f"{metric}: fit_pairs must be 'observed' or 'all', got {fit_pairs!r}")
    chosen = ctx.train_set if fit_pairs == "observed" else ctx.full_train() if ctx.full_train else None
    if chosen is None:
        raise ValueError(f"{metric} (fit_pairs={fit_pairs!r}) needs the run's training pairs; the context has none")
    return chosen
