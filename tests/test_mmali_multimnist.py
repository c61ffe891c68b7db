"""`mmali-multimnist-2` under the trainer, end to end on the procedural digits (no
download): `mmdgm train --config mmali-multimnist-2` trains and evaluates the 0-degree
probe, a run stopped mid-training and continued with `mmdgm train --resume` ends
bit-identical to the uninterrupted one (weights, EMA, metrics.jsonl, eval.json), and the
joint-discriminator override of Table 1 trains and evaluates too.

Schedule: 48 synthetic digits tupled once, batch 16 -> 3 steps per epoch, 2 epochs;
checkpoints every 2 steps; EMA from step 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mmdgm import cli, run
from mmdgm.config import load_config
from mmdgm.train.checkpoint import load_checkpoint

TINY = [
    "data.options.source=synthetic", "data.options.n_train=48", "data.options.n_test=32", "data.options.pairs=1",
    "train.epochs=2", "train.batch_size=16", "train.checkpoint_every=2", "train.log_every=1", "train.eval_batches=1",
    "train.grid_size=2", "train.ema.start_step=2", "train.ema.decay=0.5",
    "model.options.disc_features=8", "model.options.disc_hidden=16", "model.options.disc_x_hidden=16",
    "model.modalities.rot0.net_options={hidden: 16}", "model.modalities.rot90.net_options={hidden: 16}",
    "model.modalities.rot0.decoder_options={hidden: 16}", "model.modalities.rot90.decoder_options={hidden: 16}",
]


def train_cli(run_dir: Path, *extra: str) -> Path:
    assert cli.main(["train", "--config", "mmali-multimnist-2", "--run-dir", str(run_dir), *TINY, *extra]) == 0
    return run_dir


def state(run_dir: Path) -> tuple[dict, bytes, dict]:
    return (load_checkpoint(run_dir / "model.pt"), (run_dir / "metrics.jsonl").read_bytes(),
            json.loads((run_dir / "eval.json").read_text()))


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    return train_cli(tmp_path_factory.mktemp("mm2") / "full")


def test_config_is_the_papers_multimnist_setting():
    config = load_config("mmali-multimnist-2")
    assert config.data.name == "multimnist-2" and config.data.options == {"pairs": 30}
    assert list(config.model.modalities) == ["rot0", "rot90"]
    assert config.model.latent_dim == 20 and config.model.options["style_dim"] == 10
    assert config.train.batch_size == 64 and config.train.ema.decay == 0.9999 and config.train.ema.start_step == 50000
    for group in ("generator", "discriminator"):
        assert config.train.optimizers[group].lr == 2e-4 and tuple(config.train.optimizers[group].betas) == (0.5, 0.999)
    # 250,000 iterations of 64 over 60,000 x 30 tuples: 8.9 epochs
    assert config.train.epochs == 9 and 250000 * 64 / (60000 * 30) == pytest.approx(8.89, abs=0.01)
    assert [list(load_config(f"mmali-multimnist-{m}").model.modalities) for m in (3, 4)] == [
        ["rot0", "rot90", "rot180"], ["rot0", "rot90", "rot180", "rot270"]]


def test_trains_and_evaluates_the_zero_degree_probe(reference):
    params, _, results = state(reference)
    probe = results["latent_accuracy"]
    assert set(probe) >= {"rot0", "rot90", "joint"} and probe["n_test"] == 32
    assert all(0.0 <= probe[k] <= 1.0 for k in ("rot0", "rot90", "joint"))
    assert any(k.startswith("discriminators.") for k in params)  # the EMA-evaluated model keeps its critics
    steps = [json.loads(line) for line in (reference / "metrics.jsonl").read_text().splitlines()]
    assert max(r.get("step", 0) for r in steps) == 6


@pytest.mark.parametrize("stop", [1, 3, 5])
def test_stopped_and_resumed_run_is_bit_identical(tmp_path, reference, stop):
    config = load_config("mmali-multimnist-2", TINY)
    trainer = run.make_trainer(config, tmp_path / "cut")
    trainer.start()
    trainer.fit(stop_at_step=stop)
    assert not (tmp_path / "cut" / "model.pt").exists()
    assert cli.main(["train", "--resume", str(tmp_path / "cut")]) == 0
    params, metrics, results = state(tmp_path / "cut")
    ref_params, ref_metrics, ref_results = state(reference)
    assert params.keys() == ref_params.keys()
    for k in params:
        assert torch.equal(params[k], ref_params[k]), k
    assert metrics == ref_metrics and results == ref_results


def test_joint_discriminator_variant_trains_and_evaluates(tmp_path):
    run_dir = train_cli(tmp_path / "joint", "model.options.discriminator=joint", "train.epochs=1")
    params, _, results = state(run_dir)
    assert any(k.startswith("discriminators.joint.") for k in params)
    assert not any(k.startswith("discriminators.pair.") for k in params)
    assert 0.0 <= results["latent_accuracy"]["rot0"] <= 1.0


def test_table1_rows_and_published_numbers_line_up():
    """Each Table 1 row trains the M-modality config with the discriminator its label names,
    next to the paper's number of that cell (typed in from Table 1)."""
    from mmdgm.reproduce import EXPERIMENTS
    from mmdgm.reproduce.mmali import ema_from_half

    e = EXPERIMENTS.get("mmali-table1")
    cells = {"Joint": (85.96, 85.44, 85.27), "Factorized": (97.02, 96.94, 96.75)}
    for row in e.rows:
        name, m = row.label.split(" (M=")
        m = int(m.rstrip(")"))
        config = load_config(row.config, list(row.overrides))
        assert len(config.model.modalities) == m
        assert config.model.options.get("discriminator") == name.lower()
        assert e.published[row.label] == {"0-degree encoder": cells[name][m - 2]}
    assert ema_from_half(1876) == ("train.ema.start_step=938", f"train.ema.decay={1 - 1 / 938:.6g}")
