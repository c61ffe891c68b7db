"""Optional TensorBoard logging (needs the `tensorboard` extra)."""

from __future__ import annotations

from pathlib import Path


def open_writer(run_dir: Path, purge_step: int | None = None):
    """A SummaryWriter in run_dir/tensorboard; `purge_step` drops events logged after a
    resumed checkpoint (they are logged again)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise RuntimeError(
            "train.tensorboard=true needs TensorBoard: pip install 'mmdgm[tensorboard]'"
        ) from e
    return SummaryWriter(str(Path(run_dir) / "tensorboard"), purge_step=purge_step)
