"""`mmdgm train` -> `mmdgm evaluate` -> `mmdgm report` end to end, without downloads."""

from __future__ import annotations

import json

from mmdgm.cli import main
from tests.conftest import TINY_CONFIG


def test_train_evaluate_report(tmp_path, capsys):
    runs = tmp_path / "runs"
    assert main(["train", "--run-dir", str(runs), "--seeds", "1,2", *TINY_CONFIG, "train.epochs=1"]) == 0
    metrics = "joint_coherence,cross_coherence,joint_log_likelihood,latent_kl"
    options = ["--option", "joint_coherence.n=200", "--option", "joint_log_likelihood.K=20"]
    assert main(["evaluate", str(runs / "seed1"), "--metrics", metrics, *options, "--floor", "0.0"]) == 2
    assert "mmdgm classifiers train --dataset tiny-pairs" in capsys.readouterr().err
    for seed in (1, 2):
        args = ["evaluate", str(runs / f"seed{seed}"), "--metrics", metrics, *options, "--floor", "0.0"]
        assert main([*args, "--train-classifiers"]) == 0
        results = json.loads((runs / f"seed{seed}" / "eval.json").read_text())
        assert set(results) == {*metrics.split(","), "_options"}
        assert results["_options"]["joint_coherence"] == {"n": 200}
        assert 0.0 <= results["joint_coherence"]["joint_coherence"] <= 1.0
        assert (runs / f"seed{seed}" / "eval" / "latent-kl.png").is_file()
    assert main(["report", str(runs / "seed1"), str(runs / "seed2"), "--out", str(tmp_path / "report")]) == 0
    text = (tmp_path / "report" / "report.md").read_text()
    assert "## Coherence" in text and "(2) |" in text and "±" in text
