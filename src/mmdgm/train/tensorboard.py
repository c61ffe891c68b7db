"""Optional TensorBoard logging (needs the `tensorboard` extra)."""

from pathlib import Path


def open_writer(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise RuntimeError(
            "train.tensorboard=true needs TensorBoard: pip install 'mmdgm[tensorboard]'"
        ) from e
    return SummaryWriter(str(Path(run_dir) / "tensorboard"))
