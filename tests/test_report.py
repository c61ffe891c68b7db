"""`mmdgm report`: mean +- std over seeds, grouping by config, Markdown and HTML output."""

from __future__ import annotations

import json

import pytest
import yaml

from mmdgm.cli import main
from mmdgm.config import Config, to_dict
from mmdgm.evaluate.report import flatten, write_report


def fake_run(path, name, seed, results):
    path.mkdir(parents=True)
    cfg = to_dict(Config(name=name))
    cfg["train"]["seed"] = seed
    (path / "config.yaml").write_text(yaml.safe_dump(cfg))
    (path / "eval.json").write_text(json.dumps(results))
    (path / "eval").mkdir()
    (path / "eval" / "hist.png").write_bytes(b"\x89PNG")
    return path


def test_flatten_keeps_scalars_and_skips_lists():
    got = flatten({"a": 1, "b": {"c": 2.5, "d": [1, 2], "e": {"f": 3}, "n": 100}, "g": True, "stderr": {"a": 1}})
    assert got == {"a": 1.0, "b/c": 2.5, "b/e/f": 3.0}


def test_report_mean_std_over_seeds(tmp_path):
    runs = [
        fake_run(tmp_path / f"mmvae-{s}", "mmvae-x", s,
                 {"cross_coherence": {"a->b": v}, "latent_accuracy": {"a": 0.9}, "generation_diversity": {"figures": ["hist.png"]}})
        for s, v in ((1, 0.5), (2, 0.7), (3, 0.9))
    ]
    runs.append(fake_run(tmp_path / "mvae-1", "mvae-x", 1, {"cross_coherence": {"a->b": 0.1}}))
    md, page = write_report(runs, tmp_path / "report")
    text = md.read_text()
    assert "| cross a->b |" in text
    assert "| mmvae [mmvae-x] (3) | 0.700 ± 0.200 |" in text  # std over seeds with n-1: sqrt(0.04)
    assert "| mmvae [mvae-x] (1) | 0.100 |" in text
    assert "## Latent accuracy" in text and "| mmvae [mvae-x] (1) | – |" in text
    html = page.read_text()
    assert "<table>" in html and "../mmvae-1/eval/hist.png" in html


def test_report_refuses_unevaluated_runs(tmp_path, capsys):
    run = fake_run(tmp_path / "r", "x", 1, {})
    (run / "eval.json").unlink()
    assert main(["report", str(run), "--out", str(tmp_path / "out")]) == 2
    assert "run `mmdgm evaluate" in capsys.readouterr().err


def test_corrupt_eval_json_is_reported_not_overwritten(tmp_path):
    from mmdgm.evaluate.runner import read_eval

    run = fake_run(tmp_path / "r", "x", 1, {})
    (run / "eval.json").write_text("{not json")
    with pytest.raises(ValueError, match="corrupt"):
        read_eval(run)
    assert (run / "eval.json").read_text() == "{not json"
