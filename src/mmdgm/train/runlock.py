"""One training process per run directory.

While a process trains a run (fresh or resumed), `RUN/train.lock` names it (pid and host,
JSON). A second process that would train the same run gets `RunLocked` instead of
writing into the first one's checkpoint and logs, so that two `mmdgm reproduce` calls
over the same rows share the work instead of corrupting it. A lock left by a process
that died (same host, no such pid) or that cannot be read is stale: it is replaced, with
a warning. A lock from another host cannot be checked from here and is honoured; delete
the file once no process trains the run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

from mmdgm.train.distributed import World

LOCK = "train.lock"

log = logging.getLogger("mmdgm")


class RunLocked(RuntimeError):
    """Another live process trains this run; the message names it and the lock file."""


def holder_alive(holder: dict) -> bool:
    """Whether the process `holder` ({"pid", "host"}) may still run: False only when it is
    on this host and no such process exists."""
    if holder.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_holder(path: Path) -> dict | None:
    """The lock's {"pid", "host"}; None for a file that is gone or cannot be read as one."""
    try:
        holder = json.loads(path.read_text())
    except (FileNotFoundError, ValueError, UnicodeDecodeError):
        return None
    return holder if isinstance(holder, dict) and isinstance(holder.get("pid"), int) else None


def acquire(run_dir: Path) -> None:
    """Create RUN/train.lock for this process (atomically: written beside it, then
    hard-linked into place, so the file is never seen empty); replaces a stale lock and
    raises `RunLocked` for a live one."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK
    me = {"pid": os.getpid(), "host": socket.gethostname()}
    fd, tmp = tempfile.mkstemp(dir=run_dir, prefix=f".{LOCK}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        for _ in range(3):
            try:
                os.link(tmp, path)
                return
            except FileExistsError:
                holder = read_holder(path)
                if holder is not None and holder_alive(holder):
                    raise RunLocked(f"{run_dir} is being trained by process {holder['pid']} on "
                                    f"{holder.get('host')!r} ({path}); wait for it, or delete the lock file "
                                    "if no process trains this run") from None
                log.warning("%s: replacing the stale lock %s (%s)", run_dir, path,
                            "unreadable" if holder is None else f"process {holder['pid']} is gone")
                path.unlink(missing_ok=True)
        raise RunLocked(f"could not take the lock {path}: other processes keep replacing it")
    finally:
        os.unlink(tmp)


def release(run_dir: Path) -> None:
    """Remove RUN/train.lock if this process holds it."""
    path = run_dir / LOCK
    holder = read_holder(path)
    if holder is not None and holder["pid"] == os.getpid() and holder.get("host") == socket.gethostname():
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def holding(run_dir: Path, world: World) -> Iterator[None]:
    """Hold the run's lock (rank 0 takes it for every rank; a refusal raises on every
    rank) for the duration of the block."""
    run_dir = Path(run_dir)
    world.on_main(lambda: acquire(run_dir))
    try:
        yield
    finally:
        if world.main:
            release(run_dir)
