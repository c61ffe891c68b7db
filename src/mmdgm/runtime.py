"""Process-wide settings for a run: threads, deterministic algorithms and the device."""

from __future__ import annotations

import torch

from mmdgm.config import ConfigError, TrainConfig


def configure(cfg: TrainConfig) -> None:
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    torch.use_deterministic_algorithms(cfg.deterministic)


def resolve_device(spec: str, local_rank: int | None = None) -> torch.device:
    """The torch device of a `train.device` / `--device` value: "auto" is CUDA when
    available, else the CPU. Under torchrun (`local_rank` given) "auto" and "cuda" are
    cuda:<local rank>, one GPU per process; a fixed cuda:N is refused there."""
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cpu":
        return torch.device("cpu")
    if not spec.startswith("cuda"):
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {spec!r}")
    if not torch.cuda.is_available():
        raise ConfigError(f"device {spec!r} asked for, but torch sees no CUDA GPU on this machine; use cpu or auto")
    if local_rank is not None:
        if spec != "cuda":
            raise ConfigError(f"under torchrun each process uses the GPU of its local rank; set the device to cuda or auto, not {spec!r}")
        spec = f"cuda:{local_rank}"
    device = torch.device(spec)
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise ConfigError(f"device {spec!r} asked for, but this machine has {count} CUDA GPU(s)")
    return device
