"""One process per run directory.

A process that trains a run (fresh or resumed), or that `mmdgm reproduce` has decide,
train and evaluate, holds an exclusive `flock` on RUN/train.lock; the file names it (pid
and host, JSON) for the `RunLocked` error another process gets before it changes anything
in the run. The kernel drops the lock when its process ends, however it ends, so a lock
never goes stale: a file left by a killed process is simply taken again. The holder
removes the file on release (while still holding it; a process that opened the removed
file retries on the new one). Holding is re-entrant within a process (`reproduce` holds a
run while `run.train` takes it again). Where the file system refuses locks (some FUSE
mounts) training goes on unlocked, with a warning.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from mmdgm.train.distributed import World

try:
    import fcntl
except ImportError:  # not POSIX: no locking
    fcntl = None

LOCK = "train.lock"

log = logging.getLogger("mmdgm")

# lock file -> [file descriptor (None: unlocked, see `acquire`), depth]
HELD: dict[Path, list] = {}


class RunLocked(RuntimeError):
    """Another process holds this run; the message names it and the lock file."""


def holder_of(path: Path) -> str:
    """'process PID on HOST' as the lock file names it, else 'another process'."""
    try:
        holder = json.loads(path.read_text())
        return f"process {int(holder['pid'])} on {holder['host']!r}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def lock_path(run_dir: Path) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir.resolve() / LOCK


def try_lock(path: Path) -> int | None:
    """A descriptor of `path` holding its exclusive lock; None where locks are refused."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunLocked(f"{path.parent} is held by {holder_of(path)} (training or evaluating it; {path}); "
                            "run it again once that process has finished") from None
        except OSError as e:
            os.close(fd)
            log.warning("%s: the file system refuses locks (%s); going on without one", path, e)
            return None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # released and removed by its holder between our open and flock: retry


def acquire(run_dir: Path) -> None:
    """Take RUN/train.lock for this process (again, if it holds it: re-entrant); raises
    `RunLocked` if another process holds it."""
    path = lock_path(Path(run_dir))
    if path in HELD:
        HELD[path][1] += 1
        return
    fd = try_lock(path) if fcntl is not None else None
    if fd is not None:
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode())
    HELD[path] = [fd, 1]


def release(run_dir: Path) -> None:
    """Undo one `acquire` of this process; the last one removes the file and unlocks."""
    path = lock_path(Path(run_dir))
    entry = HELD.get(path)
    if entry is None:
        return
    entry[1] -= 1
    if entry[1] == 0:
        del HELD[path]
        if entry[0] is not None:
            path.unlink(missing_ok=True)
            os.close(entry[0])


@contextlib.contextmanager
def holding(run_dir: Path, world: World) -> Iterator[None]:
    """Hold the run's lock for the block (rank 0 takes it for every rank; a refusal
    raises on every rank)."""
    world.on_main(lambda: acquire(run_dir))
    try:
        yield
    finally:
        if world.main:
            release(run_dir)
