"""The trainer: Adam, seeded data order, progress, metrics, grids and exact resume."""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from tqdm import tqdm

from mmdgm.config import Config, TrainConfig, to_dict
from mmdgm.data import MultimodalDataset
from mmdgm.models.base import MultimodalVAE
from mmdgm.seeds import derived_seed
from mmdgm.train.checkpoint import (
    FORMAT,
    VERSION,
    CheckpointError,
    atomic_write_text,
    load_training_checkpoint,
    save_checkpoint,
)
from mmdgm.train.grids import write_model_grids

log = logging.getLogger("mmdgm.train")

CHECKPOINT = "checkpoint.pt"
FINAL = "model.pt"
METRICS = "metrics.jsonl"
TIMING = "timing.jsonl"
LOGS = (METRICS, TIMING)
SNAPSHOTS = "snapshots"


def snapshot_dir(run_dir: Path, step: int) -> Path:
    """Where the snapshot of `step` lives: its weights (model.pt) and its evaluation."""
    return Path(run_dir) / SNAPSHOTS / f"step{step}"


class TrainingDiverged(RuntimeError):
    """The loss or the gradient became NaN or infinite."""


class RunDirError(RuntimeError):
    """The run directory cannot be used as asked (it would overwrite another run)."""


@dataclass
class Position:
    """Where training stands: the next batch is batch `step` of epoch `epoch`."""

    epoch: int = 0
    step: int = 0
    global_step: int = 0


def describe(dataset: MultimodalDataset) -> dict:
    """Name, size, observed count per modality and the partial-observation protocol."""
    return {
        "name": dataset.name,
        "rows": len(dataset),
        "observed": {k: int(m.sum()) for k, m in dataset.mask.items()},
        "protocol": getattr(dataset, "protocol", {}),
    }


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The data permutation of an epoch, a pure function of (seed, epoch)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


def init_seed(seed: int) -> int:
    """The seed of the model's initial parameters (a stream apart from training's draws)."""
    return derived_seed(seed, "init")


def rng_state() -> dict[str, object]:
    """The global generators' states: CPU and, where present, every CUDA device."""
    state: dict[str, object] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, object]) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def log_sizes(run_dir: Path) -> dict[str, int]:
    """Byte size of each append-only log (0 for one not yet written)."""
    return {name: (run_dir / name).stat().st_size if (run_dir / name).exists() else 0 for name in LOGS}


def truncate_logs(run_dir: Path, sizes: dict[str, int]) -> None:
    """Cut each log back to its size at the checkpoint (lines after it are written again)."""
    for name in LOGS:
        path, size = run_dir / name, sizes.get(name, 0)
        actual = path.stat().st_size if path.exists() else 0
        if actual < size:
            raise CheckpointError(
                f"{path} holds {actual} bytes, fewer than the {size} it held when the checkpoint was "
                f"written; it was changed afterwards, so the run cannot be resumed exactly"
            )
        if path.exists():
            with open(path, "r+b") as f:
                f.truncate(size)


class Trainer:
    """Trains `model` on `train_set`, writing everything into `run_dir`.

    The run directory holds config.yaml, data.json (dataset sizes, observed counts and
    partial-observation protocol), metrics.jsonl (one JSON object per line, a pure function
    of the config), timing.jsonl (wall-clock seconds per epoch), checkpoint.pt (model,
    optimiser, RNG states, data position, the partial logging window and the logs' sizes;
    replaced atomically), model.pt (final weights), grids/*.png and, for each of
    `train.snapshot_steps`, snapshots/step{N}/model.pt (the weights after global step N). A fresh run refuses a
    directory that already holds a run; `resume()` continues one exactly where its
    checkpoint left it, so that an interrupted and resumed run ends bit-identical to an
    uninterrupted one (parameters and metrics.jsonl). The model must come freshly
    initialised with `init_seed(config.train.seed)` (as `mmdgm.run.make_trainer` does).
    """

    def __init__(
        self,
        model: MultimodalVAE,
        train_set: MultimodalDataset,
        test_set: MultimodalDataset,
        config: Config,
        run_dir: Path,
    ) -> None:
        self.model = model
        self.train_set = train_set
        self.test_set = test_set
        self.config = config
        self.cfg: TrainConfig = config.train
        self.run_dir = Path(run_dir)
        self.optimizer = torch.optim.Adam(
            [p for p in model.parameters() if p.requires_grad], lr=self.cfg.lr, amsgrad=self.cfg.amsgrad
        )
        self.position = Position()
        self.window: dict[str, float] = {}
        self.writer = None

    @property
    def batches_per_epoch(self) -> int:
        return math.ceil(len(self.train_set) / self.cfg.batch_size)

    def start(self) -> None:
        """Prepare a fresh run directory (refusing to reuse one that holds a run)."""
        if any((self.run_dir / name).exists() for name in (CHECKPOINT, FINAL, *LOGS)):
            raise RunDirError(
                f"{self.run_dir} already holds a run; continue it with `mmdgm train --resume "
                f"{self.run_dir}` or choose another run directory"
            )
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.run_dir / "config.yaml", yaml.safe_dump(to_dict(self.config), sort_keys=False))
        data = {"train": describe(self.train_set), "test": describe(self.test_set)}
        atomic_write_text(self.run_dir / "data.json", json.dumps(data, indent=2))
        torch.manual_seed(self.cfg.seed)

    def resume(self) -> None:
        """Restore model, optimiser, RNG states, data position and logs from the checkpoint.

        A run killed before its first checkpoint starts again from step 0 (nothing was
        saved to lose). A checkpoint that cannot be used is an error naming the file and
        the problem, and nothing in the run directory is changed.
        """
        path = self.run_dir / CHECKPOINT
        if not path.exists():
            if (self.run_dir / FINAL).exists() or not (self.run_dir / "config.yaml").exists():
                raise CheckpointError(f"{path} is missing, so {self.run_dir} cannot be resumed")
            log.info("%s has no checkpoint yet: training it from step 0", self.run_dir)
            truncate_logs(self.run_dir, {})
            torch.manual_seed(self.cfg.seed)
            return
        state = load_training_checkpoint(path, to_dict(self.config))
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise CheckpointError(f"{path} does not fit this run's model or optimiser: {e}") from e
        truncate_logs(self.run_dir, state["log_bytes"])
        set_rng_state(state["rng"])
        self.position = Position(state["epoch"], state["step"], state["global_step"])
        self.window = dict(state["log_window"])
        log.info("resumed %s at epoch %d step %d", self.run_dir, self.position.epoch, self.position.step)

    def checkpoint(self) -> None:
        p = self.position
        save_checkpoint(
            self.run_dir / CHECKPOINT,
            {
                "format": FORMAT,
                "version": VERSION,
                "config": to_dict(self.config),
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "rng": rng_state(),
                "epoch": p.epoch,
                "step": p.step,
                "global_step": p.global_step,
                "log_window": dict(self.window),
                "log_bytes": log_sizes(self.run_dir),
            },
        )

    def append(self, log_name: str, record: dict) -> None:
        with open(self.run_dir / log_name, "a") as f:
            f.write(json.dumps(record) + "\n")

    def log_metrics(self, split: str, metrics: dict[str, float]) -> None:
        self.append(METRICS, {"step": self.position.global_step, "epoch": self.position.epoch, "split": split, **metrics})
        if self.writer is not None:
            for k, v in metrics.items():
                self.writer.add_scalar(f"{split}/{k}", v, self.position.global_step)

    def kept(self) -> str:
        """What a stop leaves behind, for the message."""
        if (self.run_dir / CHECKPOINT).exists():
            return f"the last good checkpoint in {self.run_dir} is kept"
        return f"no checkpoint had been written yet in {self.run_dir}"

    def train_step(self, rows: torch.Tensor) -> dict[str, float]:
        self.model.train()
        out = self.model(self.train_set.batch(rows))
        if not torch.isfinite(out.loss):
            raise TrainingDiverged(
                f"loss is {out.loss.item()} at step {self.position.global_step} (epoch {self.position.epoch}); "
                f"training stopped; {self.kept()}"
            )
        self.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        clip = self.cfg.grad_clip if self.cfg.grad_clip is not None else math.inf
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        if not torch.isfinite(norm):
            raise TrainingDiverged(
                f"gradient norm is {float(norm)} at step {self.position.global_step}; training stopped, "
                f"{self.kept()}"
            )
        self.optimizer.step()
        return {**out.metrics, "grad_norm": float(norm)}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Mean metrics over the first `eval_batches` test batches (forked RNG)."""
        self.model.eval()
        bs = self.cfg.batch_size
        totals: dict[str, float] = {}
        n = min(self.cfg.eval_batches, math.ceil(len(self.test_set) / bs))
        with torch.random.fork_rng():
            torch.manual_seed(self.cfg.seed)
            for i in range(n):
                out = self.model(self.test_set.batch(torch.arange(i * bs, min((i + 1) * bs, len(self.test_set)))))
                for k, v in out.metrics.items():
                    totals[k] = totals.get(k, 0.0) + v / n
        return totals

    def grid_batch(self):
        """`grid_size` test rows spread over the test set (pairings are grouped by class)."""
        n = min(self.cfg.grid_size, len(self.test_set))
        return self.test_set.batch(torch.linspace(0, len(self.test_set) - 1, n).long())

    def fit(self, stop_at_step: int | None = None) -> Path:
        """Train until the configured number of epochs (or `stop_at_step`, which saves a
        checkpoint and returns as an interruption would). Returns the run directory."""
        if self.cfg.tensorboard:
            from mmdgm.train.tensorboard import open_writer

            self.writer = open_writer(self.run_dir, purge_step=self.position.global_step + 1)
        p, n_batches, bs = self.position, self.batches_per_epoch, self.cfg.batch_size
        while p.epoch < self.cfg.epochs:
            order = epoch_order(len(self.train_set), self.cfg.seed, p.epoch)
            bar = tqdm(total=n_batches, initial=p.step, desc=f"epoch {p.epoch + 1}/{self.cfg.epochs}", dynamic_ncols=True)
            start = time.time()
            while p.step < n_batches:
                metrics = self.train_step(order[p.step * bs : (p.step + 1) * bs])
                p.step += 1
                p.global_step += 1
                for k, v in metrics.items():
                    self.window[k] = self.window.get(k, 0.0) + v
                bar.update(1)
                bar.set_postfix(loss=f"{metrics['loss']:.1f}")
                if p.global_step in self.cfg.snapshot_steps:
                    save_checkpoint(snapshot_dir(self.run_dir, p.global_step) / FINAL, self.model.state_dict())
                if p.global_step % self.cfg.log_every == 0:
                    count = self.cfg.log_every
                    self.log_metrics("train", {k: v / count for k, v in self.window.items()})
                    self.window = {}
                if p.global_step % self.cfg.checkpoint_every == 0 or p.global_step == stop_at_step:
                    self.checkpoint()
                if p.global_step == stop_at_step:
                    bar.close()
                    return self.run_dir
            bar.close()
            test = self.evaluate()
            self.log_metrics("test", test)
            self.append(TIMING, {"step": p.global_step, "epoch": p.epoch, "seconds": time.time() - start})
            log.info("epoch %d: %s", p.epoch + 1, json.dumps({k: round(v, 3) for k, v in test.items()}))
            write_model_grids(self.model, self.grid_batch(), self.run_dir / "grids", f"epoch{p.epoch + 1:03d}",
                              vocabularies=self.test_set.vocabularies)
            p.epoch += 1
            p.step = 0
            self.checkpoint()
        save_checkpoint(self.run_dir / FINAL, self.model.state_dict())
        if self.writer is not None:
            self.writer.close()
        return self.run_dir
