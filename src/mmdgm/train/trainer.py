"""The trainer: Adam per parameter group, seeded data order, progress, metrics, grids,
weight averaging and exact resume."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from tqdm import tqdm

from mmdgm.config import Config, ConfigError, TrainConfig, to_dict
from mmdgm.data import MultimodalDataset
from mmdgm.data.sampling import sampled_rows
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
from mmdgm.train.distributed import World, check_batches, rank_seed, share
from mmdgm.train.divergence import loss_rise, logged_test_losses
from mmdgm.train.ema import EMA
from mmdgm.train.grids import write_model_grids
from mmdgm.train.precision import autocast_networks, grad_scaler

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
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
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


def make_optimizers(model: MultimodalVAE, cfg: TrainConfig) -> dict[str, torch.optim.Optimizer]:
    """One Adam per `model.parameter_groups()` group, with `cfg.optimizers[group]` over the
    defaults (train.lr, train.amsgrad, betas (0.9, 0.999))."""
    groups = model.parameter_groups()
    unknown = sorted(set(cfg.optimizers) - set(groups))
    if unknown:
        raise ConfigError(f"train.optimizers names groups {unknown} the model does not have; its groups: {sorted(groups)}")
    scheduled = [g for g, _ in model.schedule()]
    if sorted(set(scheduled)) != sorted(groups):
        raise ValueError(f"the model's schedule {scheduled} must update exactly its parameter groups {sorted(groups)}")
    optimizers = {}
    for name, params in groups.items():
        o = cfg.optimizers.get(name)
        lr = o.lr if o is not None and o.lr is not None else cfg.lr
        amsgrad = o.amsgrad if o is not None and o.amsgrad is not None else cfg.amsgrad
        betas = tuple(o.betas) if o is not None else (0.9, 0.999)
        optimizers[name] = torch.optim.Adam(params, lr=lr, betas=betas, amsgrad=amsgrad)
    return optimizers


def make_ema(model: MultimodalVAE, cfg: TrainConfig) -> EMA | None:
    """The moving average of `cfg.ema.params` (a parameter group), or None without `train.ema`."""
    if cfg.ema is None:
        return None
    groups = model.parameter_groups()
    if cfg.ema.params not in groups:
        raise ConfigError(f"train.ema.params is {cfg.ema.params!r}, not one of the model's groups {sorted(groups)}")
    members = {id(p) for p in groups[cfg.ema.params]}
    names = [n for n, p in model.named_parameters() if id(p) in members]
    return EMA(model, names, cfg.ema.decay, cfg.ema.start_step)


class Trainer:
    """Trains `model` on `train_set`, writing everything into `run_dir`.

    Each step takes one batch and runs the model's `schedule()`: for each (group, n), n
    updates of that parameter group by its own Adam on `training_step(batch, group)` (a VAE
    has one group, "model"; an adversarial model e.g. ("discriminator", 1), ("generator", 1)).
    With `train.ema`, a moving average of one group's weights is kept; test metrics, grids,
    model.pt and snapshots use the averaged weights.

    The run directory holds config.yaml, data.json (dataset sizes, observed counts and
    partial-observation protocol), metrics.jsonl (one JSON object per line, a pure function
    of the config), timing.jsonl (wall-clock seconds per epoch), checkpoint.pt (model,
    optimiser, RNG states, data position, the partial logging window and the logs' sizes;
    replaced atomically), model.pt (final weights), grids/*.png and, for each of
    `train.snapshot_steps`, snapshots/step{N}/model.pt (the weights after global step N); the
    checkpoint also holds every optimiser's state and the EMA. A fresh run refuses a
    directory that already holds a run; `resume()` continues one exactly where its
    checkpoint left it, so that an interrupted and resumed run ends bit-identical to an
    uninterrupted one (parameters and metrics.jsonl). The model must come freshly
    initialised with `init_seed(config.train.seed)` (as `mmdgm.run.make_trainer` does).

    The model lives on `device` (the model's own by default); batches are gathered on the
    host and moved there once per step. Over several processes (`world`, started by
    torchrun; docs/scale.md) each rank trains on its share of every global batch of
    `train.batch_size` rows with its own random stream, the gradients and the logged
    training metrics are averaged over the ranks (`mmdgm.train.distributed`), a
    non-finite loss on any rank stops every rank, and rank 0 alone writes the run
    directory; the checkpoint holds every rank's random state, so that resuming with the
    same number of processes is exact.
    """

    def __init__(
        self,
        model: MultimodalVAE,
        train_set: MultimodalDataset,
        test_set: MultimodalDataset,
        config: Config,
        run_dir: Path,
        world: World | None = None,
        device: torch.device | None = None,
    ) -> None:
        self.model = model
        self.train_set = train_set
        self.test_set = test_set
        self.config = config
        self.cfg: TrainConfig = config.train
        self.run_dir = Path(run_dir)
        self.world = world or World()
        self.device = device or next(model.parameters()).device
        check_batches(len(train_set), self.cfg.batch_size, self.world.size)
        autocast_networks(model, self.cfg.precision, self.device)
        self.optimizers = make_optimizers(model, self.cfg)
        self.scalers = {name: grad_scaler(self.cfg.precision, self.device) for name in self.optimizers}
        self.groups = model.parameter_groups()
        self.ema = make_ema(model, self.cfg)
        self.position = Position()
        self.window: dict[str, float] = {}
        self.writer = None

    @property
    def batches_per_epoch(self) -> int:
        return math.ceil(len(self.train_set) / self.cfg.batch_size)

    def start(self) -> None:
        """Prepare a fresh run directory (refusing to reuse one that holds a run)."""
        self.world.on_main(self.prepare_run_dir)
        self.world.broadcast_module(self.model)
        torch.manual_seed(rank_seed(self.cfg.seed, self.world.rank))

    def prepare_run_dir(self) -> None:
        if any((self.run_dir / name).exists() for name in (CHECKPOINT, FINAL, *LOGS)):
            raise RunDirError(
                f"{self.run_dir} already holds a run; continue it with `mmdgm train --resume "
                f"{self.run_dir}` or choose another run directory"
            )
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.run_dir / "config.yaml", yaml.safe_dump(to_dict(self.config), sort_keys=False))
        data = {"train": describe(self.train_set), "test": describe(self.test_set)}
        atomic_write_text(self.run_dir / "data.json", json.dumps(data, indent=2))

    def resume(self) -> None:
        """Restore model, optimiser, RNG states, data position and logs from the checkpoint.

        A run killed before its first checkpoint starts again from step 0 (nothing was
        saved to lose). A checkpoint that cannot be used is an error naming the file and
        the problem, and nothing in the run directory is changed. Rank 0 reads the
        checkpoint and hands it to the other ranks.
        """
        state = self.world.on_main(self.read_checkpoint)
        if state is None:
            torch.manual_seed(rank_seed(self.cfg.seed, self.world.rank))
        elif not self.world.main:
            self.load_state(state)

    def read_checkpoint(self) -> dict | None:
        """The checkpoint's state with the logs cut back to it; None for a run killed before it."""
        path = self.run_dir / CHECKPOINT
        if not path.exists():
            if (self.run_dir / FINAL).exists() or not (self.run_dir / "config.yaml").exists():
                raise CheckpointError(f"{path} is missing, so {self.run_dir} cannot be resumed")
            log.info("%s has no checkpoint yet: training it from step 0", self.run_dir)
            truncate_logs(self.run_dir, {})
            return None
        state = load_training_checkpoint(path, to_dict(self.config))
        self.load_state(state)
        truncate_logs(self.run_dir, state["log_bytes"])
        return state

    def load_state(self, state: dict) -> None:
        path = self.run_dir / CHECKPOINT
        try:
            self.model.load_state_dict(state["model"])
            if state["optimizers"].keys() != self.optimizers.keys():
                raise KeyError(f"optimisers {sorted(state['optimizers'])} != the model's groups {sorted(self.optimizers)}")
            for name, optimizer in self.optimizers.items():
                optimizer.load_state_dict(state["optimizers"][name])
            if (state["ema"] is None) != (self.ema is None):
                raise KeyError("one of checkpoint and run has an EMA and the other has none")
            if self.ema is not None:
                self.ema.load_state_dict(state["ema"])
            for name, scaler in self.scalers.items():
                if scaler is not None and name in state.get("scalers", {}):
                    scaler.load_state_dict(state["scalers"][name])
        except (RuntimeError, ValueError, KeyError) as e:
            raise CheckpointError(f"{path} does not fit this run's model or optimiser: {e}") from e
        ranks = state.get("rank_rng") or [state["rng"]]
        if len(ranks) == self.world.size:
            set_rng_state(ranks[self.world.rank])
        else:
            log.warning("%s was written by %d process(es), this run has %d: the random streams of ranks > 0 "
                        "start afresh, so the run will not match an uninterrupted one", path, len(ranks), self.world.size)
            set_rng_state(state["rng"])
            if self.world.rank > 0:
                torch.manual_seed(rank_seed(self.cfg.seed + state["global_step"], self.world.rank))
        self.position = Position(state["epoch"], state["step"], state["global_step"])
        self.window = dict(state["log_window"])
        log.info("resumed %s at epoch %d step %d", self.run_dir, self.position.epoch, self.position.step)

    def checkpoint(self) -> None:
        """Save the training state (rank 0, with every rank's random state)."""
        rngs = self.world.gather(rng_state())
        if self.world.main:
            self.save_training_state(rngs)

    def save_training_state(self, rngs: list[dict]) -> None:
        p = self.position
        extra = {"rank_rng": rngs} if self.world.size > 1 else {}
        scalers = {k: v.state_dict() for k, v in self.scalers.items() if v is not None}
        if scalers:
            extra["scalers"] = scalers
        save_checkpoint(
            self.run_dir / CHECKPOINT,
            {
                "format": FORMAT,
                "version": VERSION,
                "config": to_dict(self.config),
                "model": self.model.state_dict(),
                "optimizers": {name: o.state_dict() for name, o in self.optimizers.items()},
                "ema": self.ema.state_dict() if self.ema is not None else None,
                "rng": rng_state(),
                "epoch": p.epoch,
                "step": p.step,
                "global_step": p.global_step,
                "log_window": dict(self.window),
                "log_bytes": log_sizes(self.run_dir),
                **extra,
            },
        )

    def append(self, log_name: str, record: dict) -> None:
        if not self.world.main:
            return
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

    def eval_state(self) -> dict[str, torch.Tensor]:
        """The weights evaluation uses: the EMA's where there is one, else the raw ones."""
        return self.ema.averaged_state_dict() if self.ema is not None else self.model.state_dict()

    @contextlib.contextmanager
    def only(self, group: str):
        """The other groups' parameters frozen (no gradient is computed for them)."""
        others = [p for name, params in self.groups.items() if name != group for p in params]
        for p in others:
            p.requires_grad_(False)
        try:
            yield
        finally:
            for p in others:
                p.requires_grad_(True)

    def update(self, batch, group: str) -> dict[str, float]:
        """One update of parameter group `group`; a non-finite loss or gradient stops training."""
        with self.only(group):
            return self.checked_update(batch, group)

    def checked_update(self, batch, group: str) -> dict[str, float]:
        """Loss, finiteness checks (on every rank at once), backward, the gradient averaged
        over the ranks, clipping and the group's optimiser step (through the fp16 gradient
        scaler, which skips a step whose scaled gradient overflowed)."""
        out = self.model.training_step(batch, group)
        where = f"at step {self.position.global_step} (epoch {self.position.epoch})"
        name = "loss" if len(self.optimizers) == 1 else f"{group} loss"
        diverged = self.world.flags(not bool(torch.isfinite(out.loss)), self.device)
        if diverged:
            value = f"{out.loss.item()}" if self.world.size == 1 else f"not finite on rank(s) {diverged}"
            raise TrainingDiverged(f"{name} is {value} {where}; training stopped; {self.kept()}")
        self.model.zero_grad(set_to_none=True)
        scaler, optimizer = self.scalers[group], self.optimizers[group]
        (out.loss if scaler is None else scaler.scale(out.loss)).backward()
        self.world.average_gradients(self.groups[group], batch.size)
        if scaler is not None:
            scaler.unscale_(optimizer)
        clip = self.cfg.grad_clip if self.cfg.grad_clip is not None else math.inf
        norm = torch.nn.utils.clip_grad_norm_(self.groups[group], clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        elif not torch.isfinite(norm):
            raise TrainingDiverged(f"{name}'s gradient norm is {float(norm)} {where}; training stopped, {self.kept()}")
        else:
            optimizer.step()
        return {**out.metrics, "grad_norm": float(norm)}

    def to_device(self, batch):
        """A host batch on the training device (through pinned memory to a GPU)."""
        if self.device.type != "cuda":
            return batch
        pinned = type(batch)({k: v.pin_memory() for k, v in batch.data.items()}, dict(batch.mask), batch.labels)
        return pinned.to(self.device)

    def train_step(self, rows: torch.Tensor) -> dict[str, float]:
        """The model's schedule on this rank's share of one global batch; metrics of
        several groups are prefixed `<group>_` (averaged over a group's updates), then
        averaged over the ranks."""
        self.model.train()
        batch = self.to_device(self.train_set.batch(share(rows, self.world.rank, self.world.size)))
        schedule = self.model.schedule()
        metrics: dict[str, float] = {}
        for group, n in schedule:
            for _ in range(n):
                prefix = "" if len(schedule) == 1 else f"{group}_"
                for k, v in self.update(batch, group).items():
                    metrics[prefix + k] = metrics.get(prefix + k, 0.0) + v / n
        if self.ema is not None:
            self.ema.update(self.position.global_step + 1)
        return self.world.mean_metrics(metrics, batch.size, self.device)

    def averaged(self):
        """A context in which the model holds the weights evaluation uses."""
        return self.ema.applied() if self.ema is not None else contextlib.nullcontext()

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Mean metrics over `eval_batches` test batches (`test_metrics`; forked RNG)."""
        with self.averaged():
            return self.test_metrics()

    def test_metrics(self) -> dict[str, float]:
        """Mean metrics of the model as it is (see `evaluate`), over `eval_batches` batches of
        test rows drawn with the run's seed (pairings are grouped by class), the same each time."""
        self.model.eval()
        bs = self.cfg.batch_size
        totals: dict[str, float] = {}
        n = min(self.cfg.eval_batches, math.ceil(len(self.test_set) / bs))
        chosen = sampled_rows(len(self.test_set), n * bs, self.cfg.seed, "random", "test metrics")
        with torch.random.fork_rng():
            torch.manual_seed(self.cfg.seed)
            for rows in chosen.split(bs):
                out = self.model(self.to_device(self.test_set.batch(rows)))
                for k, v in out.metrics.items():
                    totals[k] = totals.get(k, 0.0) + v / n
        return totals

    def grid_batch(self):
        """`grid_size` test rows spread over the test set (pairings are grouped by class)."""
        n = min(self.cfg.grid_size, len(self.test_set))
        return self.to_device(self.test_set.batch(torch.linspace(0, len(self.test_set) - 1, n).long()))

    def end_epoch(self, seconds: float) -> None:
        """Test metrics, timing and grids at the end of an epoch."""
        p = self.position
        test = self.evaluate()
        self.log_metrics("test", test)
        self.append(TIMING, {"step": p.global_step, "epoch": p.epoch, "seconds": seconds})
        log.info("epoch %d: %s", p.epoch + 1, json.dumps({k: round(v, 3) for k, v in test.items()}))
        rise = loss_rise(logged_test_losses(self.run_dir / METRICS))
        if rise:
            log.warning("%s: the test loss rose far above its best (%s): diverging or overfitting", self.run_dir, rise)
        with self.averaged():
            write_model_grids(self.model, self.grid_batch(), self.run_dir / "grids", f"epoch{p.epoch + 1:03d}",
                              vocabularies=self.test_set.vocabularies)

    def fit(self, stop_at_step: int | None = None) -> Path:
        """Train until the configured number of epochs (or `stop_at_step`, which saves a
        checkpoint and returns as an interruption would). Returns the run directory.
        Test metrics, grids, snapshots and the final weights are rank 0's work."""
        main = self.world.main
        if self.cfg.tensorboard and main:
            from mmdgm.train.tensorboard import open_writer

            self.writer = open_writer(self.run_dir, purge_step=self.position.global_step + 1)
        p, n_batches, bs = self.position, self.batches_per_epoch, self.cfg.batch_size
        while p.epoch < self.cfg.epochs:
            order = epoch_order(len(self.train_set), self.cfg.seed, p.epoch)
            bar = tqdm(total=n_batches, initial=p.step, desc=f"epoch {p.epoch + 1}/{self.cfg.epochs}", dynamic_ncols=True,
                       disable=not main)
            start = time.time()
            while p.step < n_batches:
                metrics = self.train_step(order[p.step * bs : (p.step + 1) * bs])
                p.step += 1
                p.global_step += 1
                for k, v in metrics.items():
                    self.window[k] = self.window.get(k, 0.0) + v
                bar.update(1)
                bar.set_postfix({k: f"{v:.1f}" for k, v in metrics.items() if k == "loss" or k.endswith("_loss")})
                if p.global_step in self.cfg.snapshot_steps and main:
                    save_checkpoint(snapshot_dir(self.run_dir, p.global_step) / FINAL, self.eval_state())
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
            if main:
                self.end_epoch(time.time() - start)
            p.epoch += 1
            p.step = 0
            self.checkpoint()
        if main:
            save_checkpoint(self.run_dir / FINAL, self.eval_state())
        if self.writer is not None:
            self.writer.close()
        return self.run_dir
