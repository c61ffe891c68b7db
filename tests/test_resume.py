"""Exact resume with the real networks of the demo and benchmarks (`mmvae-synthetic-pairs`:
MNIST MLP + SVHN conv, learnable prior, DReG).

An interrupted and resumed run must end bit-identical to an uninterrupted one: final
parameters and metrics.jsonl. Interruptions: in-process (`fit(stop_at_step=...)`) at the
first step, mid-epoch, right after a periodic checkpoint, the last step of an epoch and
the first of the next; and a separate `mmdgm train` process killed with SIGKILL before its
first checkpoint and between two checkpoints (resumed once by another `mmdgm train
--resume` process that is killed too, then in-process).

Schedule: 100 pairs, batch 16 -> 7 steps per epoch, 2 epochs; checkpoints every 3 steps
(3, 6, 9, 12) and at each epoch end (7, 14); train metrics logged every 2 steps, so a
resume in the middle of a logging window must restore the window.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from mmdgm import cli, run
from mmdgm.config import load_config
from mmdgm.train.checkpoint import CheckpointError, load_checkpoint
from tests.conftest import TINY_CONFIG

SCHEDULE = [
    "data.options.n_train=100",
    "data.options.n_test=32",
    "data.options.dm=1",
    "train.epochs=2",
    "train.batch_size=16",
    "train.checkpoint_every=3",
    "train.log_every=2",
    "train.eval_batches=1",
    "train.grid_size=2",
]

KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from mmdgm import cli
    from mmdgm.train.trainer import Trainer

    kill_at, args = int(sys.argv[1]), sys.argv[2:]
    train_step = Trainer.train_step

    def step(self, rows):
        out = train_step(self, rows)  # the update of step kill_at is done, nothing logged yet
        if self.position.global_step + 1 == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return out

    Trainer.train_step = step
    sys.exit(cli.main(args))
    """
)


def config():
    return load_config("mmvae-synthetic-pairs", SCHEDULE)


def outcome(run_dir: Path) -> tuple[dict, bytes]:
    return load_checkpoint(run_dir / "model.pt"), (run_dir / "metrics.jsonl").read_bytes()


def assert_identical(run_dir: Path, reference: tuple[dict, bytes]) -> None:
    params, metrics = outcome(run_dir)
    assert params.keys() == reference[0].keys()
    for k in params:
        assert torch.equal(params[k], reference[0][k]), k
    assert metrics == reference[1]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return outcome(run.train(config(), tmp_path_factory.mktemp("resume") / "full"))


def test_schedule_is_the_one_described():
    trainer = run.make_trainer(config(), Path("unused"))
    assert trainer.batches_per_epoch == 7 and len(trainer.train_set) == 100
    assert "mnist-mlp" == trainer.config.model.modalities["synth_hand"].encoder
    assert trainer.model.objective == "dreg" and trainer.model.prior_theta.requires_grad


@pytest.mark.parametrize("stop", [1, 4, 6, 7, 8, 13], ids=lambda s: f"step{s}")
def test_stopped_and_resumed_in_process_is_bit_identical(tmp_path, reference, stop):
    trainer = run.make_trainer(config(), tmp_path / "cut")
    trainer.start()
    trainer.fit(stop_at_step=stop)
    assert not (tmp_path / "cut" / "model.pt").exists()
    assert_identical(run.resume(tmp_path / "cut"), reference)


def killed_run(args: list[str], kill_at: int) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", KILLER, str(kill_at), *args], capture_output=True, text=True, env=dict(os.environ)
    )
    assert proc.returncode == -9, proc.stderr[-2000:]


def test_sigkilled_processes_resume_bit_identical(tmp_path, reference):
    run_dir = tmp_path / "killed"
    killed_run(["train", "--config", "mmvae-synthetic-pairs", "--run-dir", str(run_dir), *SCHEDULE], kill_at=3)  # before the first checkpoint
    assert not (run_dir / "checkpoint.pt").exists() and (run_dir / "metrics.jsonl").exists()
    killed_run(["train", "--resume", str(run_dir)], kill_at=11)  # between checkpoints 9 and 12
    state = load_checkpoint(run_dir / "checkpoint.pt")
    assert state["global_step"] == 9 and b'"step": 10' in (run_dir / "metrics.jsonl").read_bytes()
    assert cli.main(["train", "--resume", str(run_dir)]) == 0
    assert_identical(run_dir, reference)


def tiny(*extra):
    return load_config("default", TINY_CONFIG + ["train.epochs=1", *extra])


@pytest.fixture
def stopped(tmp_path):
    """A tiny run stopped at step 2, with its checkpoint and logs as bytes."""
    trainer = run.make_trainer(tiny(), tmp_path / "r")
    trainer.start()
    trainer.fit(stop_at_step=2)
    return tmp_path / "r"


def snapshot(run_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(run_dir.iterdir()) if p.is_file()}


def other_checkpoint(tmp_path, *overrides) -> bytes:
    trainer = run.make_trainer(tiny(*overrides), tmp_path / "other")
    trainer.start()
    trainer.fit(stop_at_step=1)
    return (tmp_path / "other" / "checkpoint.pt").read_bytes()


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d, t: (d / "checkpoint.pt").read_bytes()[:1000], "corrupt, truncated"),
        (lambda d, t: b"\x00" * 64, "corrupt, truncated"),
        (lambda d, t: (d / "checkpoint.pt").read_bytes()[:-1], "corrupt, truncated"),
        (lambda d, t: other_checkpoint(t, "model.latent_dim=6"), r"another config.*model\.latent_dim: 6 != 4"),
        (lambda d, t: other_checkpoint(t, "train.lr=0.01"), r"another config.*train\.lr"),
    ],
    ids=["truncated", "not-a-checkpoint", "last-byte-missing", "other-model", "other-config"],
)
def test_unusable_checkpoint_is_a_clear_error_and_nothing_is_overwritten(stopped, tmp_path, damage, message):
    (stopped / "checkpoint.pt").write_bytes(damage(stopped, tmp_path))
    before = snapshot(stopped)
    with pytest.raises(CheckpointError, match=message) as info:
        run.resume(stopped)
    assert str(stopped / "checkpoint.pt") in str(info.value)
    assert cli.main(["train", "--resume", str(stopped)]) == 2
    assert snapshot(stopped) == before


def test_weights_file_in_place_of_checkpoint_is_named_as_such(stopped):
    torch.save(run.make_trainer(tiny(), stopped).model.state_dict(), stopped / "checkpoint.pt")
    before = snapshot(stopped)
    with pytest.raises(CheckpointError, match="bare model weights"):
        run.resume(stopped)
    assert snapshot(stopped) == before


def test_checkpoint_whose_tensors_do_not_fit_the_model_is_refused(stopped):
    state = load_checkpoint(stopped / "checkpoint.pt")
    name = next(iter(state["model"]))
    state["model"][name] = torch.zeros(3)
    torch.save(state, stopped / "checkpoint.pt")
    before = snapshot(stopped)
    with pytest.raises(CheckpointError, match=f"(?s)does not fit.*{name}"):
        run.resume(stopped)
    assert snapshot(stopped) == before


def test_metrics_shortened_after_the_checkpoint_are_refused(stopped):
    (stopped / "metrics.jsonl").write_bytes(b"")
    with pytest.raises(CheckpointError, match="metrics.jsonl holds 0 bytes"):
        run.resume(stopped)


def test_finished_run_without_checkpoint_is_not_restarted(tmp_path):
    run_dir = run.train(tiny(), tmp_path / "r")
    (run_dir / "checkpoint.pt").unlink()
    before = snapshot(run_dir)
    with pytest.raises(CheckpointError, match="missing"):
        run.resume(run_dir)
    assert snapshot(run_dir) == before


def test_run_written_before_a_config_key_existed_still_resumes(stopped):
    """A key added later with a default (here model.contrastive) is not a config change."""
    state = load_checkpoint(stopped / "checkpoint.pt")
    del state["config"]["model"]["contrastive"]
    torch.save(state, stopped / "checkpoint.pt")
    text = (stopped / "config.yaml").read_text()
    (stopped / "config.yaml").write_text("\n".join(l for l in text.splitlines() if "contrastive" not in l) + "\n")
    assert (stopped / "model.pt").exists() is False
    run.resume(stopped)
    assert (stopped / "model.pt").exists()


# --- adversarial models: two optimisers, EMA, spectral-norm buffers -------------------

# SCHEDULE (mmali-default's dataset has no `dm`), weights averaged from step 4
ADVERSARIAL = [o for o in SCHEDULE if o != "data.options.dm=1"] + [
    "train.ema.start_step=4",
    "train.ema.decay=0.9",
    "train.final_metrics=[]",
]


def adversarial(*extra):
    return load_config("mmali-default", ADVERSARIAL + list(extra))


@pytest.fixture(scope="module")
def adversarial_reference(tmp_path_factory):
    return outcome(run.train(adversarial(), tmp_path_factory.mktemp("adv") / "full"))


@pytest.mark.parametrize("stop", [2, 4, 7, 11], ids=lambda s: f"step{s}")
def test_adversarial_run_stopped_and_resumed_is_bit_identical(tmp_path, adversarial_reference, stop):
    """mmali: discriminator and generator Adam states, the EMA (from step 5 on), the
    spectral-norm vectors and the RNG all come back from the checkpoint."""
    trainer = run.make_trainer(adversarial(), tmp_path / "cut")
    assert sorted(trainer.optimizers) == ["discriminator", "generator"] and trainer.ema is not None
    trainer.start()
    trainer.fit(stop_at_step=stop)
    state = load_checkpoint(tmp_path / "cut" / "checkpoint.pt")
    assert state["version"] == 3 and sorted(state["optimizers"]) == ["discriminator", "generator"]
    assert state["ema"].keys() == {n for n, _ in trainer.model.named_parameters() if n.startswith(("encoders.", "decoders."))}
    assert any(k.endswith("_u") for k in state["model"])  # spectral-norm power-iteration vectors
    assert_identical(run.resume(tmp_path / "cut"), adversarial_reference)


def test_nan_discriminator_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    from mmdgm.train.trainer import TrainingDiverged

    trainer = run.make_trainer(adversarial("train.checkpoint_every=1"), tmp_path / "r")
    trainer.start()
    trainer.fit(stop_at_step=2)
    good = (tmp_path / "r" / "checkpoint.pt").read_bytes()
    with torch.no_grad():
        trainer.model.discriminators["dependence"].features[0][-1].parametrizations.weight.original.fill_(float("nan"))
    with pytest.raises(TrainingDiverged, match="discriminator loss is nan at step 2.*last good checkpoint"):
        trainer.fit()
    assert (tmp_path / "r" / "checkpoint.pt").read_bytes() == good
    assert load_checkpoint(tmp_path / "r" / "checkpoint.pt")["global_step"] == 2


def test_version_2_checkpoint_of_a_vae_still_resumes(stopped, tmp_path):
    """A checkpoint written before parameter groups (one "optimizer", no EMA) resumes as
    the single group "model" and ends where a version-3 resume ends."""
    reference = tmp_path / "v3"
    shutil.copytree(stopped, reference)
    state = load_checkpoint(stopped / "checkpoint.pt")
    state["version"] = 2
    state["optimizer"] = state.pop("optimizers")["model"]
    del state["ema"]
    for key in ("optimizers", "ema"):
        del state["config"]["train"][key]
    torch.save(state, stopped / "checkpoint.pt")
    assert_identical(run.resume(stopped), outcome(run.resume(reference)))
