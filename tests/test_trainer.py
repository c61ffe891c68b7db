"""Trainer: exact resume, divergence handling, run-directory safety, artefacts."""

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


def test_interrupted_run_resumes_to_identical_parameters(tmp_path):
    """Stop mid-epoch (step 4 of 6, epoch 2), resume from the checkpoint: the final
    parameters must equal those of an uninterrupted run bit for bit."""
    full = run.train(config(), tmp_path / "full")
    trainer = run.make_trainer(config(), tmp_path / "cut")
    trainer.start()
    trainer.fit(stop_at_step=4)
    assert not (tmp_path / "cut" / "model.pt").exists()
    resumed = run.resume(tmp_path / "cut")
    a, b = final_params(full), final_params(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    steps = [json.loads(l)["step"] for l in (resumed / "metrics.jsonl").read_text().splitlines()]
    full_steps = [json.loads(l)["step"] for l in (full / "metrics.jsonl").read_text().splitlines()]
    assert steps == full_steps


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


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    run_dir = run.train(config("train.epochs=1"), tmp_path / "r")
    (run_dir / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="corrupt"):
        run.resume(run_dir)


def test_training_reduces_the_loss(tmp_path):
    run_dir = run.train(config("train.epochs=5", "train.lr=0.01"), tmp_path / "r")
    test = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines() if '"test"' in l]
    assert test[-1]["iwae_tight"] > test[0]["iwae_tight"] + 100
