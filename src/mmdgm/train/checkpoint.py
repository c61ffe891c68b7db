"""Atomic checkpoint files (temporary file, fsync, rename) and the training checkpoint format.

A training checkpoint is a dict of tensors and plain values marked with `FORMAT` and
`VERSION`; it carries the run's config so that a checkpoint from another run is refused.
Version 3 holds one optimiser state per parameter group ("optimizers") and the EMA state
("ema", None without one); version 2 (one "optimizer", no EMA) is still read, as the
single group "model". Optional keys: "rank_rng" (every rank's random state, written by a
run over several processes) and "scalers" (fp16 gradient scalers by group). Every tensor
is saved on the CPU and loaded onto it, so that a checkpoint moves between devices.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from mmdgm.config import Config, ConfigError, build, to_dict

FORMAT = "mmdgm-training-checkpoint"
VERSION = 3
COMMON_KEYS = ("config", "model", "rng", "epoch", "step", "global_step", "log_window", "log_bytes")
TRAINING_KEYS = {2: (*COMMON_KEYS, "optimizer"), 3: (*COMMON_KEYS, "optimizers", "ema")}


# where a run computes, not what: a run may be resumed on another device
PLACEMENT_KEYS = ("train.device",)


class CheckpointError(ValueError):
    """A checkpoint file cannot be used; the message names the file and the problem."""


def atomic_write_bytes(path: Path, write) -> None:
    """Call `write(file)` on a temporary file beside `path`, then rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, lambda f: f.write(text.encode()))


def on_cpu(tree: Any) -> Any:
    """`tree` with every tensor in it (in dicts, lists, tuples) moved to the CPU."""
    if isinstance(tree, torch.Tensor):
        return tree.cpu()
    if isinstance(tree, dict):
        return {k: on_cpu(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(on_cpu(v) for v in tree)
    return tree


def save_checkpoint(path: Path, state: Any) -> None:
    """Save `state` with its tensors on the CPU, so that any machine can load it."""
    atomic_write_bytes(path, lambda f: torch.save(on_cpu(state), f))


def load_checkpoint(path: Path) -> Any:
    """Load a checkpoint with `weights_only=True` onto the CPU (map_location; callers move
    tensors to their device); a missing or corrupt file is a clear error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for damaged files
        raise CheckpointError(
            f"checkpoint {path} is corrupt, truncated or not a mmdgm checkpoint: {type(e).__name__}: {e}"
        ) from e


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings -> {dotted.key: leaf}."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for k, v in tree.items():
        out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def config_differences(a: dict, b: dict) -> list[str]:
    """`key: a != b` for every dotted key whose value differs between two config dicts."""
    fa, fb = flatten(a), flatten(b)
    for key in PLACEMENT_KEYS:
        fa.pop(key, None)
        fb.pop(key, None)
    return [f"{k}: {fa.get(k, '<absent>')!r} != {fb.get(k, '<absent>')!r}" for k in sorted(fa.keys() | fb.keys())
            if fa.get(k, "<absent>") != fb.get(k, "<absent>")]


def with_defaults(raw: dict) -> dict:
    """A saved config with the defaults of keys added since it was written (as is, if it
    no longer validates: the comparison then names what changed)."""
    try:
        return to_dict(build(Config, raw))
    except ConfigError:
        return raw


def load_training_checkpoint(path: Path, config: dict) -> dict[str, Any]:
    """The training state in `path`, checked to be a complete checkpoint of a run with `config`."""
    state = load_checkpoint(path)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        weights = isinstance(state, dict) and state and all(isinstance(v, torch.Tensor) for v in state.values())
        what = "bare model weights (like model.pt)" if weights else f"a {type(state).__name__} without the format mark"
        raise CheckpointError(f"{path} is not a mmdgm training checkpoint: it holds {what}")
    version = state.get("version")
    if version not in TRAINING_KEYS:
        raise CheckpointError(
            f"{path} has checkpoint version {version!r}; this mmdgm reads versions {sorted(TRAINING_KEYS)}"
        )
    missing = [k for k in TRAINING_KEYS[version] if k not in state]
    if missing:
        raise CheckpointError(f"{path} is incomplete: it lacks {missing}")
    differences = config_differences(with_defaults(state["config"]), config)
    if differences:
        shown = "; ".join(differences[:5]) + (f"; and {len(differences) - 5} more" if len(differences) > 5 else "")
        raise CheckpointError(
            f"{path} was written by a run with another config than this run's config.yaml "
            f"(checkpoint != run): {shown}"
        )
    if version == 2:
        state = {**state, "optimizers": {"model": state.pop("optimizer")}, "ema": None}
    return state
