"""`train.snapshot_steps`: weights saved at given global steps, evaluated on their own."""

from __future__ import annotations

import json

import pytest
import torch

from mmdgm import run
from mmdgm.cli import main
from mmdgm.config import ConfigError, load_config
from mmdgm.train.checkpoint import load_checkpoint
from tests.conftest import TINY_CONFIG


def tiny(*extra):
    return load_config("default", [*TINY_CONFIG, "train.epochs=2", *extra])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    config = tiny("train.snapshot_steps=[1, 3]")
    steps = run.make_trainer(config, tmp_path_factory.mktemp("unused")).batches_per_epoch * 2
    config = tiny(f"train.snapshot_steps=[1, 3, {steps}]")
    return run.train(config, tmp_path_factory.mktemp("snap") / "run"), steps


def test_last_snapshot_is_the_final_model_and_earlier_ones_differ(trained):
    run_dir, steps = trained
    final = load_checkpoint(run_dir / "model.pt")
    last = load_checkpoint(run_dir / "snapshots" / f"step{steps}" / "model.pt")
    first = load_checkpoint(run_dir / "snapshots" / "step1" / "model.pt")
    assert all(torch.equal(final[k], last[k]) for k in final)
    assert not all(torch.equal(final[k], first[k]) for k in final)


def test_resumed_run_writes_the_same_snapshot(trained, tmp_path):
    run_dir, steps = trained
    trainer = run.make_trainer(tiny(f"train.snapshot_steps=[1, 3, {steps}]"), tmp_path / "cut")
    trainer.start()
    trainer.fit(stop_at_step=2)
    run.resume(tmp_path / "cut")
    ours = load_checkpoint(tmp_path / "cut" / "snapshots" / "step3" / "model.pt")
    theirs = load_checkpoint(run_dir / "snapshots" / "step3" / "model.pt")
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_evaluating_a_snapshot_writes_into_its_directory(trained, capsys):
    run_dir, _ = trained
    args = ["evaluate", str(run_dir), "--metrics", "latent_kl", "--snapshot", "1"]
    assert main(args) == 0
    first = json.loads((run_dir / "snapshots" / "step1" / "eval.json").read_text())
    assert (run_dir / "snapshots" / "step1" / "eval" / "latent-kl.png").is_file()
    assert not (run_dir / "eval.json").exists()
    assert main(["evaluate", str(run_dir), "--metrics", "latent_kl"]) == 0
    final = json.loads((run_dir / "eval.json").read_text())
    assert first["latent_kl"] != final["latent_kl"]


def test_missing_snapshot_names_those_there_are(trained):
    run_dir, steps = trained
    with pytest.raises(FileNotFoundError, match=rf"no snapshot at step 2; snapshots: \[1, 3, {steps}\]"):
        run.load_run(run_dir, snapshot=2)


def test_non_positive_snapshot_step_is_refused():
    with pytest.raises(ConfigError, match=r"train.snapshot_steps\[1\] must be > 0, got 0"):
        tiny("train.snapshot_steps=[5, 0]")
