"""Where datasets live on disk, and how files get there without partial writes."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator

ENV_VAR = "MMDGM_DATA_DIR"


def data_root() -> Path:
    """The data directory: $MMDGM_DATA_DIR, or ~/.cache/mmdgm/data."""
    env = os.environ.get(ENV_VAR)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "mmdgm" / "data"


def cache_dir(root: Path | None = None) -> Path:
    """The directory for generated data (procedural images, pairings) under `root`."""
    return (data_root() if root is None else Path(root)) / "cache"


@contextlib.contextmanager
def atomic_open(path: Path) -> Iterator[IO[bytes]]:
    """Yield a binary file that appears at `path` only if the block finishes cleanly."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
