"""Process-wide settings for a run: threads and deterministic algorithms."""

from __future__ import annotations

import torch

from mmdgm.config import TrainConfig


def configure(cfg: TrainConfig) -> None:
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    torch.use_deterministic_algorithms(cfg.deterministic)
