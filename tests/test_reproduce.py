"""`mmdgm reproduce`: experiments train, reuse and resume runs, and report ours beside the paper."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
import torch

from mmdgm import Batch, cli
from mmdgm.config import differences, load_config
from mmdgm.evaluate.report import fmt, mean_std
from mmdgm.evaluate.runner import read_eval
from mmdgm.models.factory import build_model
from mmdgm.reproduce import EXPERIMENTS, SCALES, Column, Experiment, Row, Scale, register, reproduce
from mmdgm.reproduce import runner
from mmdgm.reproduce.runner import run_dir_of
from mmdgm.run import make_trainer
from tests.conftest import TINY_CONFIG

TINY = Scale(("train.epochs=1",), {"joint_log_likelihood": {"K": 4, "n": 16}, "latent_accuracy": {"n_train": 64}})
if "tiny-table" not in EXPERIMENTS:
    register(Experiment(
        name="tiny-table",
        title="A tiny table",
        reference="Nobody et al., Table 0",
        dataset="tiny-pairs (test data)",
        rows=(Row("MMVAE", "default", tuple(TINY_CONFIG)),
              Row("MVAE", "mvae-default", tuple(TINY_CONFIG) + ("model.name=mvae", "model.options={}"))),
        columns=(Column("acc a", "latent_accuracy", "a", 100), Column("log p", "joint_log_likelihood", "log p(a,b)")),
        published={"MMVAE": {"acc a": 91.3}},
        scales={s: TINY for s in SCALES},
    ))


def table_cells(report: str) -> dict[str, list[str]]:
    rows = [line.strip("|").split("|") for line in report.splitlines() if line.startswith("| M")]
    return {r[0].strip(): [c.strip() for c in r[1:]] for r in rows}


def test_report_puts_our_mean_and_std_beside_the_papers_number(tmp_path):
    md, page = reproduce("tiny-table", "smoke", [1, 2], tmp_path)
    text = md.read_text()
    assert "Nobody et al., Table 0" in text and "tiny-pairs (test data)" in text and "scale**: smoke" in text
    cells = table_cells(text)
    for label, row in zip(("MMVAE", "MVAE"), EXPERIMENTS.get("tiny-table").rows):
        evals = [read_eval(run_dir_of(tmp_path, EXPERIMENTS.get("tiny-table"), "smoke", row, s)) for s in (1, 2)]
        acc = [100 * e["latent_accuracy"]["a"] for e in evals]
        ll = [e["joint_log_likelihood"]["log p(a,b)"] for e in evals]
        assert cells[label][0] == fmt(*mean_std(acc), 2)
        assert cells[label][2] == fmt(*mean_std(ll), 2)
    assert cells["MMVAE"][1] == "91.3" and cells["MVAE"][1] == "–"
    assert "<table>" in page.read_text() and "91.3" in page.read_text()


def test_a_table_without_published_numbers_has_no_paper_columns():
    """Curves-only figures (no typed-in numbers) get one column per measurement, not a
    column of dashes beside each; a table with numbers keeps ours beside the paper's."""
    from mmdgm.reproduce.report import CAPTION_UNPUBLISHED, markdown, table

    tiny = EXPERIMENTS.get("tiny-table")
    bare = dataclasses.replace(tiny, published={})
    cells = {r.label: {c.label: f"{r.label}/{c.label}" for c in tiny.columns} for r in tiny.rows}
    header, rows = table(bare, cells)
    assert header == ["run"] + [c.label for c in tiny.columns]
    assert rows == [[r.label] + [f"{r.label}/{c.label}" for c in tiny.columns] for r in tiny.rows]
    assert CAPTION_UNPUBLISHED in markdown(bare, header, rows, [])
    header, rows = table(tiny, cells)
    assert header[1:3] == [f"{tiny.columns[0].label} (ours)", f"{tiny.columns[0].label} (paper)"]
    assert rows[0][1:3] == [f"MMVAE/{tiny.columns[0].label}", "91.3"]


def test_finished_runs_are_reused_and_interrupted_ones_resumed(tmp_path):
    experiment = EXPERIMENTS.get("tiny-table")
    row = experiment.rows[0]
    cut = run_dir_of(tmp_path, experiment, "smoke", row, 1)
    trainer = make_trainer(load_config(row.config, [*TINY.overrides, *row.overrides, "train.seed=1"]), cut)
    trainer.start()
    trainer.fit(stop_at_step=1)
    reproduce("tiny-table", "smoke", [1], tmp_path)
    assert (cut / "model.pt").exists()
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").rglob("model.pt")}
    reproduce("tiny-table", "smoke", [1], tmp_path)
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").rglob("model.pt")} == stamps


def test_a_run_trained_from_another_config_is_refused_not_reused(tmp_path):
    experiment = EXPERIMENTS.get("tiny-table")
    reproduce("tiny-table", "smoke", [1], tmp_path, only=["=MMVAE"])
    run_dir = run_dir_of(tmp_path, experiment, "smoke", experiment.rows[0], 1)
    config = run_dir / "config.yaml"
    config.write_text(re.sub(r"\n  lr: .*\n", "\n  lr: 0.123\n", config.read_text()))
    stamp = (run_dir / "model.pt").stat().st_mtime_ns
    for report_only in (False, True):
        with pytest.raises(ValueError, match=r"another config .*train\.lr.*move it away"):
            reproduce("tiny-table", "smoke", [1], tmp_path, only=["=MMVAE"], report_only=report_only)
    assert (run_dir / "model.pt").stat().st_mtime_ns == stamp


def test_config_differences_name_the_dotted_keys():
    a = load_config("default")
    b = load_config("default", ["train.lr=0.5", "model.latent_dim=3", "train.device=cpu"])
    assert differences(a, b, ignore=("train.device",)) == ["model.latent_dim", "train.lr"]
    assert differences(a, a) == []


def test_a_metric_is_rescored_when_its_options_change_and_only_then(tmp_path, monkeypatch, caplog):
    experiment = EXPERIMENTS.get("tiny-table")
    reproduce("tiny-table", "smoke", [1], tmp_path, only=["MMVAE"])
    run_dir = run_dir_of(tmp_path, experiment, "smoke", experiment.rows[0], 1)
    stored = json.loads((run_dir / "eval.json").read_text())
    assert stored["_options"]["joint_log_likelihood"]["K"] == 4 and stored["_options"]["latent_accuracy"]["n_train"] == 64
    before = read_eval(run_dir)
    scored = []
    real = runner.evaluate_run
    monkeypatch.setattr(runner, "evaluate_run", lambda d, metrics, *a, **k: scored.append(metrics) or real(d, metrics, *a, **k))
    reproduce("tiny-table", "smoke", [1], tmp_path, only=["MMVAE"])
    assert scored == []
    more = dataclasses.replace(TINY, metric_options={**TINY.metric_options, "joint_log_likelihood": {"K": 6, "n": 16}})
    monkeypatch.setitem(experiment.scales, "smoke", more)
    reproduce("tiny-table", "smoke", [1], tmp_path, only=["MMVAE"])
    assert scored == [["joint_log_likelihood"]]
    after = read_eval(run_dir)
    assert after["latent_accuracy"] == before["latent_accuracy"]
    assert after["joint_log_likelihood"] != before["joint_log_likelihood"]
    stored = json.loads((run_dir / "eval.json").read_text())
    assert stored["_options"]["joint_log_likelihood"]["K"] == 6
    del stored["_options"]
    (run_dir / "eval.json").write_text(json.dumps(stored))
    monkeypatch.setitem(experiment.scales, "smoke", TINY)
    reproduce("tiny-table", "smoke", [1], tmp_path, only=["MMVAE"])
    assert scored == [["joint_log_likelihood"]] and "predates the record of metric options" in caplog.text


def test_a_record_without_a_later_option_reads_as_its_earlier_behaviour(tmp_path):
    """`ADDED_OPTIONS`: a result recorded before latent_accuracy had `fit_pairs` was fitted on
    the observed pairs (today's default): reused; one recorded before `rows` existed took
    the first n test rows (today's default draws them at random): rescored, unless it took
    every row (n null)."""
    from mmdgm.evaluate.runner import resolved_options, store_result, to_compute

    for name in ("latent_accuracy", "joint_log_likelihood"):
        old = resolved_options(name, {"n": 16} if name == "joint_log_likelihood" else {})
        for option in ("fit_pairs", "rows"):
            old.pop(option, None)
        store_result(tmp_path, name, {"x": 1.0}, old)
    assert to_compute(tmp_path, ["latent_accuracy"]) == []
    assert to_compute(tmp_path, ["latent_accuracy"], {"latent_accuracy": {"fit_pairs": "all"}}) == ["latent_accuracy"]
    assert to_compute(tmp_path, ["joint_log_likelihood"], {"joint_log_likelihood": {"n": 16}}) == ["joint_log_likelihood"]
    assert to_compute(tmp_path, ["joint_log_likelihood"], {"joint_log_likelihood": {"n": 16, "rows": "first"}}) == []
    every = resolved_options("joint_log_likelihood")
    every.pop("rows")
    store_result(tmp_path, "joint_log_likelihood", {"x": 2.0}, every)
    assert to_compute(tmp_path, ["joint_log_likelihood"]) == []
    assert to_compute(tmp_path, ["joint_log_likelihood"], {"joint_log_likelihood": {"n": 16}}) == ["joint_log_likelihood"]


def test_explicit_default_options_equal_options_left_out():
    from mmdgm.evaluate.runner import resolved_options

    assert resolved_options("joint_coherence") == resolved_options("joint_coherence", {"n": 10000})
    assert resolved_options("joint_coherence", {"n": 200}) == {"n": 200}


def test_registered_paper_experiments_are_well_formed():
    """Every built-in experiment's configs load at every scale, build their model (once per
    distinct model section: rows share runs), and every published number belongs to a column."""
    names = ["mmvae-table1", "mmvae-table2", "mmvae-table3", "mmvae-estimators", "contrastive-table1",
             "contrastive-figure6", "contrastive-figure8", "meme-table2", "meme-table3", "meme-table4", "meme-figure8",
             "mmali-table1", "mmali-table2", "mmali-table3",
             "cmmd-table2", "cmmd-mnist-svhn", "cmmd-three-modality", "cmmd-mnist-svhn-text",
             "mmvae-table4", "contrastive-table2", "meme-table5", "contrastive-gamma", "contrastive-likelihoods",
             "contrastive-diversity"]
    assert set(names) <= set(EXPERIMENTS.names())
    known = {"mnist": (1, 28, 28), "synth_hand": (1, 28, 28), "synth_street": (3, 32, 32), "view1": (1, 28, 28),
             "view2": (1, 28, 28), "mnist_rotated": (1, 28, 28), "text": (8, 71),
             "image": (3, 64, 64), "caption": (24, 60), **{f"rot{a}": (1, 28, 28) for a in (0, 90, 180, 270)}}
    built: set[str] = set()
    for name in names:
        e = EXPERIMENTS.get(name)
        labels = {c.label for c in e.columns}
        assert all(set(v) <= labels for v in e.published.values()), name
        assert set(SCALES) <= set(e.scales), name
        for scale in e.scales:
            for row in e.rows:
                config = load_config(row.config, [*e.scales[scale].overrides_for(row.config), *row.overrides])
                if repr(config.model) not in built:
                    built.add(repr(config.model))
                    build_model(config.model, {m: known[m] for m in config.model.modalities})


def test_cli_lists_and_rejects_unknown_names(capsys):
    assert cli.main(["reproduce", "list"]) == 0
    assert re.search(r"mmvae-table2 .*Table 2", capsys.readouterr().out)
    assert cli.main(["reproduce", "mmvae-tabel2", "--scale", "smoke"]) == 2
    assert "mmvae-table2" in capsys.readouterr().err


def test_bad_scale_and_seeds_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match=r"unknown scale 'huge' for tiny-table; choose one of \['smoke', 'cpu', 'paper'\]"):
        reproduce("tiny-table", "huge", [1], tmp_path)
    with pytest.raises(ValueError, match=r"unknown scale 'cpu-long' for tiny-table"):
        reproduce("tiny-table", "cpu-long", [1], tmp_path)
    assert cli.main(["reproduce", "tiny-table", "--scale", "huge", "--out", str(tmp_path)]) == 2
    assert not (tmp_path / "runs").exists()
    with pytest.raises(ValueError, match="at least one seed"):
        reproduce("tiny-table", "smoke", [], tmp_path)


def test_rows_can_be_selected(tmp_path):
    md, _ = reproduce("tiny-table", "smoke", [1], tmp_path, only=["MMVAE"])
    assert set(table_cells(md.read_text())) == {"MMVAE"}
    with pytest.raises(ValueError, match="no row"):
        reproduce("tiny-table", "smoke", [1], tmp_path, only=["JMVAE"])


def test_an_equals_selector_matches_one_label_exactly():
    from mmdgm.reproduce.runner import select_rows

    experiment = EXPERIMENTS.get("contrastive-table1")
    labels = [r.label for r in select_rows(experiment, ["=MMVAE (100%)", "MVAE (20%)"]).rows]
    assert labels == ["MMVAE (100%)", "MMVAE (20%)", "cI-MMVAE (20%)", "cC-MMVAE (20%)", "MVAE (20%)", "cI-MVAE (20%)",
                      "cC-MVAE (20%)", "JMVAE (20%)", "cI-JMVAE (20%)", "cC-JMVAE (20%)"]
    with pytest.raises(ValueError, match="no row"):
        select_rows(experiment, ["=MMVAE"])


if "tiny-curve" not in EXPERIMENTS:
    register(Experiment(
        name="tiny-curve",
        title="A tiny curve with label propagation",
        reference="Nobody et al., Figure 0",
        dataset="tiny-pairs (test data)",
        rows=(Row("plain", "default", tuple(TINY_CONFIG), "plain", 100.0),
              Row("plain half", "default", (*TINY_CONFIG, "train.batch_size=16"), "plain", 50.0),
              Row("propagated", "default", tuple(TINY_CONFIG), "lp", 30.0, 0.3)),
        columns=(Column("acc a", "latent_accuracy", "a", 100), Column("acc a after", "propagation/runs/propagated/latent_accuracy", "a", 100),
                 Column("PMI F1", "propagation/relatedness", "pmi/F_m/f1")),
        published={},
        scales={s: Scale(("train.epochs=1",), {"label_propagation": {"K": 2, "siamese_epochs": 1}}) for s in SCALES},
    ))


def test_curves_and_label_propagation_rows(tmp_path):
    md, page = reproduce("tiny-curve", "smoke", [1], tmp_path)
    cells = {r[0].strip(): [c.strip() for c in r[1:]] for r in
             (line.strip("|").split("|") for line in md.read_text().splitlines() if line.startswith("| p"))}
    results = json.loads((run_dir_of(tmp_path, EXPERIMENTS.get("tiny-curve"), "smoke", EXPERIMENTS.get("tiny-curve").rows[2], 1)
                                        / "results.json").read_text())
    assert cells["propagated"][2] == fmt(results["relatedness"]["pmi"]["F_m"]["f1"], 0.0, 1)
    assert cells["propagated"][1] == fmt(100 * results["runs"]["propagated"]["latent_accuracy"]["a"], 0.0, 1)
    assert cells["plain"][0] != "–" and cells["plain"][2] == "–"
    assert (md.parent / "curves.png").stat().st_size > 1000 and "curves.png" in page.read_text()


def test_label_propagation_rows_get_their_own_directories():
    """Figure 8's rows differ only in the related fraction: each pipeline has its own
    directory, apart from the run that trains the same config without propagation."""
    experiment = EXPERIMENTS.get("contrastive-figure8")
    dirs = {run_dir_of(Path("out"), experiment, "cpu", row, 1) for row in experiment.rows}
    assert len(dirs) == len(experiment.rows) and all(d.parent.name.startswith("labelprop-") for d in dirs)
    table1 = EXPERIMENTS.get("contrastive-table1")
    trained = {run_dir_of(Path("out"), table1, "cpu", row, 1) for row in table1.rows}
    assert not dirs & trained


def test_scale_overrides_by_model():
    scale = Scale(("train.epochs=1",), by_model={"mmvae": ("model.options.K=5",), "contrastive": ("model.contrastive.K=3",)})
    assert scale.overrides_for("mmvae-synthetic-pairs") == ["train.epochs=1", "model.options.K=5"]
    assert scale.overrides_for("ci-mmvae-default") == ["train.epochs=1", "model.options.K=5", "model.contrastive.K=3"]
    assert scale.overrides_for("ci-jmvae-default") == ["train.epochs=1", "model.contrastive.K=3"]
    assert scale.overrides_for("mvae-default") == ["train.epochs=1"]


def test_cmmd_tables_read_the_right_metric_per_row():
    """Table 2's M- and CMMD rows read their own metrics from the CMMD run; accuracy columns
    are 100 - 100 * error; each CMMD row of the text table fills only its subset's column."""
    t2 = EXPERIMENTS.get("cmmd-table2")
    rows = {r.label: r for r in t2.rows}
    (error,) = t2.columns
    assert rows["M-"].config == rows["CMMD"].config == rows["CMMD (linear probe)"].config
    assert t2.metrics_of(rows["M-"]) == ["observed_only_classifier"]
    assert t2.metrics_of(rows["CMMD"]) == ["prediction_error"]
    assert t2.metrics_of(rows["VCCA"]) == ["downstream_classification"]
    assert t2.column_for(rows["CMMD"], error).key == "error" and error.value(0.024) == pytest.approx(2.4)
    text = EXPERIMENTS.get("cmmd-mnist-svhn-text")
    assert text.columns[0].value(0.25) == pytest.approx(75.0)
    cmmd_rows = [r for r in text.rows if r.label.startswith("CMMD")]
    assert len(cmmd_rows) == 6  # every observed subset that leaves a modality missing
    for row in cmmd_rows:
        filled = [c.label for c in text.columns if text.column_for(row, c) is not None]
        assert len(filled) == 1 and row.label == f"CMMD (observed {filled[0]})"


if "tiny-substitution" not in EXPERIMENTS:
    SHARED = tuple(TINY_CONFIG)
    register(Experiment(
        name="tiny-substitution",
        title="Rows reading other metrics",
        reference="Nobody et al., Table 0",
        dataset="tiny-pairs (test data)",
        rows=(Row("Mplain", "default", SHARED),
              Row("Mother key", "default", SHARED, metric_for={"error a": ("latent_accuracy", "b")}),
              Row("Mother metric", "default", SHARED, metric_for={"error a": ("joint_log_likelihood", "log p(a,b)")}),
              Row("Mblank", "default", SHARED, metric_for={"error a": None})),
        columns=(Column("error a", "latent_accuracy", "a", -100, 100),),
        published={},
        scales={s: TINY for s in SCALES},
    ))


def test_rows_substitute_a_columns_metric_sharing_one_run(tmp_path):
    md, _ = reproduce("tiny-substitution", "smoke", [1], tmp_path)
    experiment = EXPERIMENTS.get("tiny-substitution")
    run_dirs = {run_dir_of(tmp_path, experiment, "smoke", r, 1) for r in experiment.rows}
    assert len(run_dirs) == 1 and len(list((tmp_path / "runs").rglob("model.pt"))) == 1
    results = read_eval(run_dirs.pop())
    assert set(results) >= {"latent_accuracy", "joint_log_likelihood"}  # the substitute metric was computed
    cells = table_cells(md.read_text())
    assert cells["Mplain"][0] == fmt(100 - 100 * results["latent_accuracy"]["a"], 0.0, 1)
    assert cells["Mother key"][0] == fmt(100 - 100 * results["latent_accuracy"]["b"], 0.0, 1)
    assert cells["Mother metric"][0] == fmt(100 - 100 * results["joint_log_likelihood"]["log p(a,b)"], 0.0, 1)
    assert cells["Mblank"][0] == "–"
    assert experiment.metrics_of(experiment.rows[3]) == []


def test_bad_substitutions_are_clear_errors():
    common = dict(title="t", reference="r", dataset="d", columns=(Column("acc", "latent_accuracy", "a"),),
                  published={}, scales={s: TINY for s in SCALES})
    with pytest.raises(ValueError, match=r"substitutes unknown columns \['accuracy'\]"):
        Experiment(name="bad", rows=(Row("x", "default", metric_for={"accuracy": ("latent_accuracy", "b")}),), **common)
    with pytest.raises(ValueError, match="must be \\(metric, key\\) pairs or None"):
        Experiment(name="bad", rows=(Row("x", "default", metric_for={"acc": "latent_accuracy"}),), **common)


def test_a_config_under_other_scale_settings_is_another_run(tmp_path):
    """Two experiments that train one config with different scale overrides (e.g. MEME's and
    CMMD's cpu scales for mvae-mnist-synthstreet) must not share its run; the same settings do."""
    experiment = EXPERIMENTS.get("tiny-table")
    row = experiment.rows[0]
    longer = dataclasses.replace(experiment, scales={**experiment.scales, "smoke": dataclasses.replace(
        experiment.scales["smoke"], overrides=(*experiment.scales["smoke"].overrides, "train.epochs=3"))})
    same = dataclasses.replace(experiment, name="another")
    here = run_dir_of(tmp_path, experiment, "smoke", row, 1)
    assert run_dir_of(tmp_path, longer, "smoke", row, 1) != here
    assert run_dir_of(tmp_path, same, "smoke", row, 1) == here


def test_a_run_whose_test_loss_rose_far_above_its_best_is_named_in_the_report(tmp_path):
    """runner.test_loss_rise flags a last test loss above the best by more than 0.5 |best| + 10
    (the caption tables' diverged contrastive MMVAEs: -54 -> 12,592), not ordinary noise."""
    def write(losses):
        lines = [json.dumps({"step": 10 * (i + 1), "split": split, "loss": loss})
                 for i, loss in enumerate(losses) for split in ("train", "test")]
        (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    write([8, -50, -54, 204, 12592])
    assert runner.test_loss_rise(tmp_path) == "best -54 (step 30) -> last 1.259e+04"
    write([8, -47, -60, -44, -65])
    assert runner.test_loss_rise(tmp_path) is None
    write([-60, -44])  # a rise of 16 <= 0.5 * 60 + 10
    assert runner.test_loss_rise(tmp_path) is None
    write([100, 161])  # 61 > 0.5 * 100 + 10
    assert runner.test_loss_rise(tmp_path) == "best 100 (step 10) -> last 161"
    (tmp_path / "metrics.jsonl").unlink()
    assert runner.test_loss_rise(tmp_path) is None
    experiment = EXPERIMENTS.get("tiny-table")
    reproduce("tiny-table", "smoke", [1], tmp_path / "out", only=["=MMVAE"])
    run_dir = run_dir_of(tmp_path / "out", experiment, "smoke", experiment.rows[0], 1)
    with (run_dir / "metrics.jsonl").open("a") as f:
        f.write(json.dumps({"step": 999, "split": "test", "loss": 1e6}) + "\n")
    md, _ = reproduce("tiny-table", "smoke", [1], tmp_path / "out", report_only=True, only=["=MMVAE"])
    assert re.search(r"\*\*test loss rose\*\*: MMVAE seed1: best \S+ \(step \d+\) -> last 1e\+06", md.read_text())


def test_report_only_trains_nothing_and_lists_what_did_not_run(tmp_path):
    experiment = EXPERIMENTS.get("tiny-table")
    md, _ = reproduce("tiny-table", "smoke", [1], tmp_path, report_only=True)
    text = md.read_text()
    assert not (tmp_path / "runs").exists()
    assert "**not run**: MMVAE seed 1; MVAE seed 1" in text and table_cells(text)["MMVAE"][0] == "–"
    reproduce("tiny-table", "smoke", [1], tmp_path, only=["=MMVAE"])
    md, _ = reproduce("tiny-table", "smoke", [1, 2], tmp_path, report_only=True)
    text = md.read_text()
    acc = 100 * read_eval(run_dir_of(tmp_path, experiment, "smoke", experiment.rows[0], 1))["latent_accuracy"]["a"]
    assert table_cells(text)["MMVAE"][0] == fmt(*mean_std([acc]), 1)
    assert "**not run**: MMVAE seed 2; MVAE seed 1; MVAE seed 2" in text
    assert not run_dir_of(tmp_path, experiment, "smoke", experiment.rows[1], 1).exists()


def test_an_experiment_may_add_a_scale_of_its_own(tmp_path, capsys):
    """contrastive-table1's cpu-long: the full 1:1 pairing for 11 epochs, listed by
    `reproduce list`, its runs apart from the cpu scale's."""
    experiment = EXPERIMENTS.get("contrastive-table1")
    long, cpu = experiment.scales["cpu-long"], experiment.scales["cpu"]
    overrides = long.overrides_for("ci-mmvae-mnist-synthstreet")
    assert {"data.options.dm=1", "train.epochs=11", "model.options.K=2", "model.contrastive.K=2"} <= set(overrides)
    assert not any(o.startswith("data.options.n_train") for o in overrides)
    row = experiment.rows[1]
    assert run_dir_of(tmp_path, experiment, "cpu-long", row, 1) != run_dir_of(tmp_path, experiment, "cpu", row, 1)
    assert all(long.metric_options[m] == cpu.metric_options[m] for m in ("latent_accuracy", "joint_coherence"))
    assert cli.main(["reproduce", "list"]) == 0
    assert re.search(r"contrastive-table1 .*\(more scales: cpu-long\)", capsys.readouterr().out)


def test_the_gamma_ablation_trains_each_gamma_and_shares_table1s_runs(tmp_path):
    """contrastive-gamma (Figures 11, 13): one cI-MMVAE per gamma (gamma = 1 is eq. 3's
    contrastive loss alone), MMVAE as gamma = inf; gamma = 2 and MMVAE are Table 1's runs."""
    gamma, table1 = EXPERIMENTS.get("contrastive-gamma"), EXPERIMENTS.get("contrastive-table1")
    shapes = {"mnist": (1, 28, 28), "synth_street": (3, 32, 32)}
    seen = []
    for row in gamma.rows:
        config = load_config(row.config, [*gamma.scales["cpu"].overrides_for(row.config), *row.overrides])
        model = build_model(config.model, shapes)
        seen.append(getattr(model, "gamma", None))
        assert (row.x is None) == (config.model.contrastive is None)
        if row.x == 1.0:  # the logged training metrics its report plots exist
            batch = Batch({"mnist": torch.rand(4, 1, 28, 28), "synth_street": torch.rand(4, 3, 32, 32)})
            assert set(gamma.training_curves) <= set(model(batch).metrics)
    assert seen == [1.0, 1.1, 1.5, 2.0, 5.0, 10.0, None]
    same = {"cI-MMVAE (gamma=2)": "cI-MMVAE (100%)", "MMVAE (gamma=inf)": "MMVAE (100%)"}
    by_label = {r.label: r for r in table1.rows}
    for label, other in same.items():
        row = next(r for r in gamma.rows if r.label == label)
        assert run_dir_of(tmp_path, gamma, "cpu", row, 1) == run_dir_of(tmp_path, table1, "cpu", by_label[other], 1)
    assert gamma.scales["cpu"].metric_options["joint_log_likelihood"] == {"n": 200}
    assert "log p(M,S)" in [c.label for c in gamma.columns]


def test_training_curves_average_the_seeds_logs_and_are_drawn(tmp_path):
    """An experiment's `training_curves` keys are plotted against the step (training.png),
    the mean over a row's seeds at the steps they share; test-split lines are ignored."""
    from mmdgm.reproduce.plots import mean_training_log, plot_training

    logs = {"s1": [(50, 4.0, 1.0), (100, 2.0, 3.0)], "s2": [(50, 6.0, 5.0), (100, 4.0, 7.0), (150, 1.0, 0.0)]}
    dirs = []
    for name, records in logs.items():
        (tmp_path / name).mkdir()
        lines = [json.dumps({"step": s, "split": "train", "loss": a, "contrastive_term": b}) for s, a, b in records]
        lines.append(json.dumps({"step": 100, "split": "test", "loss": 99.0}))
        (tmp_path / name / "metrics.jsonl").write_text("\n".join(lines) + "\n")
        dirs.append(tmp_path / name)
    assert mean_training_log(dirs, "loss") == ([50, 100], [5.0, 3.0])
    assert mean_training_log(dirs, "contrastive_term") == ([50, 100], [3.0, 5.0])
    assert mean_training_log(dirs, "absent") == ([], [])
    experiment = dataclasses.replace(EXPERIMENTS.get("tiny-table"), training_curves=("loss", "contrastive_term"))
    assert plot_training(experiment, {"MMVAE": dirs}, tmp_path / "training.png")
    assert (tmp_path / "training.png").stat().st_size > 1000
    assert not plot_training(dataclasses.replace(experiment, training_curves=("absent",)), {"MMVAE": dirs},
                             tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()
    assert EXPERIMENTS.get("contrastive-gamma").training_curves == ("objective", "contrastive_term", "contrastive_loss")


def test_a_reports_run_figures_are_tiled_one_row_each(tmp_path, monkeypatch):
    """`run_figures` are read from each row's first run's eval/ and drawn, pixel for pixel,
    one panel row per experiment row that has them; rows without them are left out."""
    from matplotlib.image import imsave

    from mmdgm.reproduce import plots

    tiny = EXPERIMENTS.get("tiny-table")
    experiment = dataclasses.replace(tiny, run_figures=("hist.png",))
    pictures = {}
    runs = {}
    for i, row in enumerate(tiny.rows):
        run_dir = tmp_path / row.label / "seed1"
        (run_dir / "eval").mkdir(parents=True)
        runs[row.label] = [run_dir, tmp_path / row.label / "seed2"]
        if i == 0:
            pictures[row.label] = torch.rand(20, 30, 3).numpy()
            imsave(run_dir / "eval" / "hist.png", pictures[row.label])
    drawn = []
    monkeypatch.setattr(plots, "save", lambda fig, path: drawn.append(fig))
    assert plots.tile_run_figures(experiment, runs, tmp_path / "figures.png")
    (ax,) = drawn[0].axes
    first = tiny.rows[0].label
    assert ax.get_title() == f"{first} (seed1)"
    shown = ax.get_images()[0].get_array()
    assert shown.shape[:2] == (20, 30) and abs(shown[..., :3] - pictures[first]).max() < 1 / 255 + 1e-6
    assert not plots.tile_run_figures(dataclasses.replace(tiny, run_figures=("absent.png",)), runs, tmp_path / "x.png")
    for row in tiny.rows[1:]:
        imsave(runs[row.label][0] / "eval" / "hist.png", torch.rand(20, 30, 3).numpy())
    assert plots.tile_run_figures(experiment, runs, tmp_path / "figures.png", width=1)
    assert [ax.get_title() for ax in drawn[-1].axes] == [f"{r.label} (seed1)" for r in tiny.rows]
    assert drawn[-1].axes[0].get_subplotspec().get_geometry()[:2] == (len(tiny.rows), 1)


def test_a_row_keeps_its_colour_in_a_panel_that_lacks_another_row(tmp_path, monkeypatch):
    """Row "b" logged only `loss`: row "c" is drawn in its own colour in the second panel
    (not the first free one), and the legend sits where every row's line is."""
    from mmdgm.reproduce import plots

    runs = {}
    for label, keys in (("a", ("loss", "term")), ("b", ("loss",)), ("c", ("loss", "term"))):
        (tmp_path / label).mkdir()
        records = [{"step": s, "split": "train", **{k: float(s) for k in keys}} for s in (50, 100)]
        (tmp_path / label / "metrics.jsonl").write_text("\n".join(map(json.dumps, records)) + "\n")
        runs[label] = [tmp_path / label]
    drawn = []
    monkeypatch.setattr(plots, "save", lambda fig, path: drawn.append(fig))
    experiment = dataclasses.replace(EXPERIMENTS.get("tiny-table"), training_curves=("loss", "term"))
    assert plots.plot_training(experiment, runs, tmp_path / "training.png")
    first, second = drawn[0].axes
    colour = [{line.get_label(): line.get_color() for line in ax.get_lines()} for ax in (first, second)]
    assert colour[0] == {"a": "C0", "b": "C1", "c": "C2"} and colour[1] == {"a": "C0", "c": "C2"}
    assert first.get_legend() is not None and second.get_legend() is None


if "tiny-training" not in EXPERIMENTS:
    register(dataclasses.replace(EXPERIMENTS.get("tiny-table"), name="tiny-training", training_curves=("loss",)))


def test_a_report_shows_its_training_curves(tmp_path):
    md, page = reproduce("tiny-training", "smoke", [1], tmp_path, only=["=MMVAE"])
    assert "(training.png)" in md.read_text() and "training.png" in page.read_text()
    assert (md.parent / "training.png").stat().st_size > 1000


def test_appendix_g_experiments_evaluate_table1s_full_data_runs(tmp_path):
    """Tables 5-7 and Figure 17 train nothing of their own: each row is Table 1's 100 % run
    of the same model, read with the likelihood / diversity metrics."""
    table1 = {r.label: r for r in EXPERIMENTS.get("contrastive-table1").rows}
    for name, metrics in (("contrastive-likelihoods", {"joint_log_likelihood", "conditional_log_likelihoods"}),
                          ("contrastive-diversity", {"generation_diversity"})):
        experiment = EXPERIMENTS.get(name)
        assert len(experiment.rows) == 9
        for row in experiment.rows:
            same = table1[f"{row.label} (100%)"]
            assert run_dir_of(tmp_path, experiment, "cpu", row, 2) == run_dir_of(
                tmp_path, EXPERIMENTS.get("contrastive-table1"), "cpu", same, 2)
            assert set(experiment.metrics_of(row)) == metrics
    published = EXPERIMENTS.get("contrastive-likelihoods").published
    assert published["cI-MVAE"]["S, q(M)"] == -1876.95 and published["cI-MVAE"]["M, q(S)"] == -443.04
    assert published["cC-JMVAE"]["S, q(M,S)"] == -1614.78 and published["cC-JMVAE"]["S, q(S)"] is None
