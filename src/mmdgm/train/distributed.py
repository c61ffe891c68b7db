"""Data-parallel training over processes started by torchrun (docs/scale.md).

One model is trained by `World.size` processes: each takes its share of every global
batch (`share`), computes the mean loss over its rows, and the gradients are averaged
over the processes weighted by their row counts (`average_gradients`), so that every
process takes the optimiser step the global batch's mean loss would give. Without
torchrun the world has one process, no process group exists and every collective below
is the identity: single-process training is this code with size 1.

Gradients are all-reduced explicitly per parameter group after each backward pass rather
than by wrapping the model in torch.nn.parallel.DistributedDataParallel: a training step
runs several updates of different parameter groups with the others frozen
(`Trainer.only`), and the losses come from `training_step`, not from the module's
forward; both break DDP's reducer hooks, which expect every trainable parameter to
receive a gradient from one forward call per backward.
"""

from __future__ import annotations

import atexit
import os
from datetime import timedelta
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn

from mmdgm.seeds import derived_seed

T = TypeVar("T")
TIMEOUT = timedelta(hours=6)


def leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank `rank`'s random draws (sampling z, negatives): `seed` itself on
    rank 0, so that one process draws exactly as before; a derived stream on the others."""
    return seed if rank == 0 else derived_seed(seed, f"rank{rank}")


def share(rows: Tensor, rank: int, size: int) -> Tensor:
    """Rank `rank`'s rows of a global batch: rows[rank::size]; the ranks' shares partition it."""
    return rows[rank::size]


def check_batches(n: int, batch_size: int, size: int) -> None:
    """Every batch of an epoch of `n` rows must give each of `size` ranks at least one row."""
    smallest = min(batch_size, n % batch_size or batch_size)
    if smallest < size:
        raise ValueError(
            f"{size} processes cannot share a batch of {smallest} rows (train.batch_size={batch_size}, "
            f"{n} training rows): every batch needs at least one row per process; choose a batch size such "
            f"that the batches, the last one included, hold >= {size} rows"
        )


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (rank 0 is the main one)."""

    rank: int = 0
    size: int = 1
    local_rank: int | None = None  # the rank on this machine, under torchrun

    @property
    def main(self) -> bool:
        return self.rank == 0

    def on_main(self, fn: Callable[[], T]) -> T:
        """fn() run on rank 0; its result (or the exception it raised) on every rank."""
        if self.size == 1:
            return fn()
        box: list[Any] = [None]
        if self.main:
            try:
                box[0] = (True, fn())
            except Exception as e:  # noqa: BLE001 - re-raised on every rank below
                box[0] = (False, e)
        dist.broadcast_object_list(box, src=0)
        ok, value = box[0]
        if not ok:
            raise value
        return value

    def gather(self, value: T) -> list[T]:
        """Every rank's `value`, in rank order (on every rank)."""
        if self.size == 1:
            return [value]
        out: list[Any] = [None] * self.size
        dist.all_gather_object(out, value)
        return out

    def flags(self, flag: bool, device: torch.device) -> list[int]:
        """The ranks whose `flag` is true (the same list on every rank)."""
        if self.size == 1:
            return [0] if flag else []
        t = torch.zeros(self.size, device=device)
        t[self.rank] = float(flag)
        dist.all_reduce(t)
        return [r for r in range(self.size) if t[r] > 0]

    def mean_metrics(self, metrics: dict[str, float], rows: int, device: torch.device) -> dict[str, float]:
        """Metrics averaged over the ranks, weighted by each rank's row count `rows`."""
        if self.size == 1:
            return metrics
        names = sorted(metrics)
        t = torch.tensor([metrics[k] * rows for k in names] + [rows], dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return {k: float(v / t[-1]) for k, v in zip(names, t[:-1])}

    def average_gradients(self, params: list[nn.Parameter], rows: int) -> None:
        """Replace each parameter's gradient of this rank's mean loss over `rows` rows by
        sum_r rows_r grad_r / sum_r rows_r, the gradient of the mean over all ranks' rows.
        A parameter no rank gave a gradient keeps None (as in one process); one some ranks
        did not reach counts zero there."""
        if self.size == 1:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        reached = torch.tensor([p.grad is not None for p in params], dtype=grads[0].dtype, device=grads[0].device)
        flat = torch.cat([g.reshape(-1) * rows for g in grads] + [reached, torch.tensor([float(rows)], device=reached.device)])
        dist.all_reduce(flat)
        total, offset = flat[-1], 0
        for p, g in zip(params, grads):
            n = g.numel()
            p.grad = (flat[offset : offset + n] / total).view_as(p).to(g.dtype)
            offset += n
        for p, r in zip(params, flat[offset:-1]):
            if r == 0:
                p.grad = None

    def broadcast_module(self, module: nn.Module) -> None:
        """Rank 0's parameters and buffers on every rank."""
        if self.size == 1:
            return
        with torch.no_grad():
            for t in [*module.parameters(), *module.buffers()]:
                dist.broadcast(t.data, src=0)


def from_env(device_spec: str) -> World:
    """The world torchrun describes in RANK / WORLD_SIZE / LOCAL_RANK (and MASTER_ADDR /
    MASTER_PORT), its process group joined (NCCL where the device is a GPU, else gloo)
    once per process and left at exit, so that several runs (`--seeds`) share it; one
    process without them. Collectives wait up to `TIMEOUT` (the other ranks wait for
    rank 0's final evaluation before the next seed's run)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        gpu = device_spec.startswith("cuda") or (device_spec == "auto" and torch.cuda.is_available())
        if gpu:
            torch.cuda.set_device(local)
        dist.init_process_group("nccl" if gpu else "gloo", rank=rank, world_size=size, timeout=TIMEOUT)
        atexit.register(leave)
    return World(rank, size, local)
