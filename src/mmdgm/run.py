"""Assemble a run from a config: datasets, model, trainer."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch
import yaml

from mmdgm.config import Config, build, load_config
from mmdgm.data import DATASETS, MultimodalDataset
from mmdgm.data.paths import data_root
from mmdgm.data.partial import full_data_options
from mmdgm.models.base import MultimodalVAE
from mmdgm.models.factory import build_model
from mmdgm.runtime import configure, resolve_device
from mmdgm.train.checkpoint import load_checkpoint
from mmdgm.train.distributed import from_env
from mmdgm.train.precision import check_precision
from mmdgm.train.runlock import holding
from mmdgm.train.trainer import CHECKPOINT, FINAL, SNAPSHOTS, Trainer, init_seed, snapshot_dir

log = logging.getLogger("mmdgm")


def load_dataset(config: Config, split: str, full: bool = False) -> MultimodalDataset:
    """The config's dataset split; the train split re-paired by `data.train_rows` if set.
    `full`: the full data the run's was drawn from, without the observation protocol's
    options (`mmdgm.data.partial.Protocol`) and without re-pairing."""
    root = Path(config.data.root) if config.data.root else data_root()
    options = full_data_options(config.data.options) if full else config.data.options
    dataset = DATASETS.get(config.data.name)(split, root, **options)
    if split == "train" and config.data.train_rows and not full:
        dataset = dataset.repaired(read_rows(Path(config.data.train_rows)))
    return dataset


def read_rows(path: Path) -> dict[str, torch.Tensor]:
    """A `data.train_rows` file: {modality: 1-D long tensor of rows}."""
    if not path.is_file():
        raise FileNotFoundError(f"data.train_rows: {path} does not exist")
    try:
        rows = torch.load(path, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same error to the user
        raise ValueError(f"data.train_rows: {path} is not a readable torch file ({e})") from e
    if not isinstance(rows, dict) or not all(isinstance(v, torch.Tensor) and v.dtype == torch.long for v in rows.values()):
        raise ValueError(f"data.train_rows: {path} must hold {{modality: long tensor of rows}}")
    return rows


def check_metrics(names: list[str]) -> None:
    """Fail before training if `train.final_metrics` names an unknown metric."""
    if names:
        from mmdgm.evaluate import METRICS

        for name in names:
            METRICS.get(name)


def make_trainer(config: Config, run_dir: Path) -> Trainer:
    """Datasets, a model initialised on the CPU from the config's seed alone and moved to
    `train.device`, and the trainer; under torchrun, this process's place in the process
    group (joined here)."""
    configure(config.train)
    check_metrics(config.train.final_metrics)
    world = from_env(config.train.device)
    device = resolve_device(config.train.device, world.local_rank)
    check_precision(config.train.precision, device)
    train_set, test_set = load_dataset(config, "train"), load_dataset(config, "test")
    log.info("dataset %s: %d train / %d test rows", config.data.name, len(train_set), len(test_set))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed(config.train.seed))
        model = build_model(config.model, train_set.shapes)
        model.initialise_from_data(train_set)
    return Trainer(model.to(device), train_set, test_set, config, run_dir, world, device)


def default_run_dir(config: Config) -> Path:
    return Path("runs") / f"{config.name}-seed{config.train.seed}"


def train(config: Config, run_dir: Path | None = None) -> Path:
    """Train a fresh run, then compute its `train.final_metrics`, holding the run's lock
    (`mmdgm.train.runlock`) throughout; returns its directory."""
    trainer = make_trainer(config, run_dir or default_run_dir(config))
    with holding(trainer.run_dir, trainer.world):
        trainer.start()
        return finish(config, trainer)


def finish(config: Config, trainer: Trainer) -> Path:
    """Fit, then (rank 0 alone) the final evaluation."""
    run_dir = trainer.fit()
    return final_evaluation(config, run_dir) if trainer.world.main else run_dir


def final_evaluation(config: Config, run_dir: Path) -> Path:
    """Evaluate `train.final_metrics` (training missing coherence classifiers) into eval.json."""
    if config.train.final_metrics:
        from mmdgm.evaluate.runner import evaluate_run

        evaluate_run(run_dir, config.train.final_metrics, train_classifiers=True, device=config.train.device)
        log.info("%s", final_summary(run_dir))
    return run_dir


def final_summary(run_dir: Path) -> str:
    """`metric/key=value` of every scalar in the run's eval.json, for the last log line."""
    from mmdgm.evaluate.report import flatten
    from mmdgm.evaluate.runner import read_eval

    values = flatten(read_eval(run_dir))
    return ", ".join(f"{k} {v:.3f}" for k, v in values.items())


def read_run_config(run_dir: Path) -> Config:
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no config.yaml)")
    return build(Config, yaml.safe_load(path.read_text()))


def resume(run_dir: Path, device: str | None = None) -> Path:
    """Continue an interrupted run from its checkpoint (on `device` instead of its
    `train.device` if given: checkpoints move between devices), holding the run's lock."""
    config = read_run_config(run_dir)
    if device is not None:
        config = dataclasses.replace(config, train=dataclasses.replace(config.train, device=device))
    trainer = make_trainer(config, run_dir)
    with holding(trainer.run_dir, trainer.world):
        trainer.resume()
        return finish(config, trainer)


def snapshot_weights(run_dir: Path, step: int) -> Path:
    """The weights of snapshot `step`; a missing one is an error listing those there are."""
    path = snapshot_dir(run_dir, step) / FINAL
    if not path.is_file():
        found = sorted(int(p.name[4:]) for p in (Path(run_dir) / SNAPSHOTS).glob("step*") if p.name[4:].isdigit())
        raise FileNotFoundError(f"{run_dir} has no snapshot at step {step}; snapshots: {found or 'none'}")
    return path


def load_run(
    run_dir: Path, snapshot: int | None = None, device: str = "cpu", split: str = "test"
) -> tuple[Config, MultimodalVAE, MultimodalDataset]:
    """The trained model of a run (final weights, else the latest checkpoint; or the weights
    of snapshot step `snapshot`) on `device` ("auto", "cpu", "cuda[:N]"; whatever device
    trained it) and its `split` ("test", or "val" where the dataset draws one). With
    `train.ema` the weights are the moving averages: model.pt and snapshots hold them, and a
    checkpoint's are laid over its raw weights."""
    config = read_run_config(run_dir)
    test_set = load_dataset(config, split)
    model = build_model(config.model, test_set.shapes)
    final = Path(run_dir) / FINAL
    if snapshot is not None:
        state = load_checkpoint(snapshot_weights(run_dir, snapshot))
    elif final.exists():
        state = load_checkpoint(final)
    else:
        checkpoint = load_checkpoint(Path(run_dir) / CHECKPOINT)
        state = {**checkpoint["model"], **(checkpoint.get("ema") or {})}
    model.load_state_dict(state)
    model.to(resolve_device(device)).eval()
    return config, model, test_set


__all__ = ["load_config", "load_run", "resume", "train"]
