"""Trainer: divergence handling, run-directory safety, artefacts (exact resume: test_resume.py)."""

from __future__ import annotations

import json

import pytest
import torch

from mmdgm import run
from mmdgm.config import load_config
from mmdgm.train.checkpoint import load_checkpoint
from mmdgm.train.trainer import RunDirError, TrainingDiverged
from tests.conftest import TINY_CONFIG


def config(*extra):
    return load_config("default", TINY_CONFIG + list(extra))


def final_params(run_dir):
    return load_checkpoint(run_dir / "model.pt")


def test_fresh_run_writes_artefacts(tmp_path):
    run_dir = run.train(config(), tmp_path / "r")
    for name in ("config.yaml", "data.json", "checkpoint.pt", "model.pt", "metrics.jsonl"):
        assert (run_dir / name).is_file()
    data = json.loads((run_dir / "data.json").read_text())
    assert data["train"]["rows"] == 96 and data["train"]["observed"] == {"a": 96, "b": 96}
    grids = sorted(p.name for p in (run_dir / "grids").glob("*.png"))
    assert grids == [f"epoch00{e}-{k}.png" for e in (1, 2) for k in ("from-a", "from-b", "joint")]
    records = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["split"] == "train"] == list(range(1, 7))
    assert [r["epoch"] for r in records if r["split"] == "test"] == [0, 1]
    assert all(r["iwae_tight"] >= r["iwae_looser"] - 1e-3 for r in records if r["split"] == "test")


def test_existing_run_is_never_overwritten(tmp_path):
    run_dir = run.train(config("train.epochs=1"), tmp_path / "r")
    before = (run_dir / "checkpoint.pt").read_bytes()
    with pytest.raises(RunDirError, match="--resume"):
        run.train(config(), run_dir)
    assert (run_dir / "checkpoint.pt").read_bytes() == before


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    trainer = run.make_trainer(config("train.checkpoint_every=1"), tmp_path / "r")
    trainer.start()
    trainer.fit(stop_at_step=2)
    good = (tmp_path / "r" / "checkpoint.pt").read_bytes()
    with torch.no_grad():
        next(trainer.model.decoders["a"].parameters()).fill_(float("nan"))
    with pytest.raises(TrainingDiverged, match="last good checkpoint"):
        trainer.fit()
    assert (tmp_path / "r" / "checkpoint.pt").read_bytes() == good
    state = load_checkpoint(tmp_path / "r" / "checkpoint.pt")
    assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_training_reduces_the_loss(tmp_path):
    run_dir = run.train(config("train.epochs=5", "train.lr=0.01"), tmp_path / "r")
    test = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines() if '"test"' in l]
    assert test[-1]["iwae_tight"] > test[0]["iwae_tight"] + 100


def test_a_test_loss_far_above_its_best_is_warned_about_each_epoch(tmp_path, caplog):
    """The trainer warns when the epoch's test loss exceeds the best so far by more than
    0.5 |best| + 10 (`mmdgm.train.divergence`), as the contrastive MMVAE on captions did."""
    import logging

    from mmdgm.train.divergence import loss_rise

    trainer = run.make_trainer(config("train.epochs=3"), tmp_path / "r")
    trainer.start()
    losses = iter([-50.0, -20.0, 100.0])
    trainer.evaluate = lambda: {"loss": next(losses)}
    with caplog.at_level(logging.WARNING, logger="mmdgm"):
        trainer.fit()
    warnings = [r.getMessage() for r in caplog.records if "test loss rose" in r.getMessage()]
    assert len(warnings) == 1 and "best -50 (step 3) -> last 100" in warnings[0]
    assert loss_rise([(1, -50.0), (2, -15.0)]) is None and loss_rise([(1, -50.0), (2, -14.9)]) is not None
    assert loss_rise([]) is None


def test_test_metrics_take_seeded_rows_across_the_class_grouped_test_set(tmp_path):
    """Pairings store their rows grouped by class: the test loss's `eval_batches` batches
    are drawn at random with the run's seed (the same rows at every evaluation), not the
    first rows, which hold the first digits only."""
    trainer = run.make_trainer(config("train.eval_batches=1", "train.batch_size=16"), tmp_path / "run")
    trainer.test_set = trainer.test_set.subset(trainer.test_set.labels.argsort(stable=True))
    labels = trainer.test_set.labels
    assert len(labels) > 16 and len(labels[:16].unique()) <= 2
    seen = []
    forward = trainer.model.forward
    trainer.model.forward = lambda batch: seen.append(batch.labels.clone()) or forward(batch)
    first = trainer.test_metrics()
    assert trainer.test_metrics() == first
    assert len(seen) == 2 and seen[0].numel() == 16 and torch.equal(seen[0], seen[1])
    assert len(seen[0].unique()) > len(labels[:16].unique())
