"""The command line: help texts, error reporting, train -> sample end to end."""

from __future__ import annotations

import pytest

from mmdgm.cli import main
from tests.conftest import TINY_CONFIG


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["data", "get", "--help"], ["sample", "--help"]])
def test_help(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "usage: mmdgm" in out


def test_train_help_lists_configs(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    for name in ("default", "mmvae-mnist-svhn", "mmvae-mnist-synthstreet", "--resume"):
        assert name in out


def test_unknown_key_is_reported_without_traceback(tmp_path, capsys):
    assert main(["train", "--run-dir", str(tmp_path / "r"), "train.epohcs=1"]) == 2
    err = capsys.readouterr().err
    assert "mmdgm: error: unknown config key config.train.epohcs (did you mean 'epochs'?)" in err
    assert not (tmp_path / "r").exists()


def test_train_seeds_resume_refusal_and_sample(tmp_path, capsys):
    run_root = tmp_path / "runs"
    assert main(["train", "--run-dir", str(run_root), "--seeds", "1,2", *TINY_CONFIG, "train.epochs=1"]) == 0
    assert (run_root / "seed1" / "model.pt").is_file() and (run_root / "seed2" / "model.pt").is_file()
    assert main(["train", "--resume", str(run_root / "seed1"), "train.epochs=3"]) == 2
    assert "give no --config" in capsys.readouterr().err
    assert main(["sample", str(run_root / "seed1"), "--n", "4"]) == 0
    pngs = sorted(p.name for p in (run_root / "seed1" / "samples").glob("*.png"))
    assert pngs == ["samples-from-a.png", "samples-from-b.png", "samples-joint.png"]


def test_train_ends_with_the_final_metrics_it_reached(tmp_path, capsys):
    """`train.final_metrics` are evaluated into eval.json after training and printed on
    the last line, with the values eval.json holds."""
    import json

    run_dir = tmp_path / "r"
    argv = ["train", "--run-dir", str(run_dir), *TINY_CONFIG, "train.epochs=1", "train.final_metrics=[latent_accuracy]"]
    assert main(argv) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    acc = json.loads((run_dir / "eval.json").read_text())["latent_accuracy"]
    assert last.startswith(f"finished {run_dir}: ") and f"latent_accuracy/a {acc['a']:.3f}" in last


def test_unknown_final_metric_fails_before_training(tmp_path, capsys):
    assert main(["train", "--run-dir", str(tmp_path / "r"), *TINY_CONFIG, "train.final_metrics=[coherense]"]) == 2
    assert "coherense" in capsys.readouterr().err and not (tmp_path / "r").exists()
