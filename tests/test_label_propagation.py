"""Label propagation end to end on tiny data: splits, the accepted set, P/R/F1, resume;
the relatedness metric on a trained run; re-paired training sets."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from sklearn.metrics import precision_recall_fscore_support

from mmdgm import cli, run
from mmdgm.config import load_config
from mmdgm.evaluate.runner import evaluate_run
from mmdgm.labelprop import Plan, label_propagation
from mmdgm.labelprop.pipeline import current_results, prf
from mmdgm.labelprop.siamese import pair_loss

TINY = ["data.options.n_train=150", "data.options.n_test=60", "train.epochs=1", "train.batch_size=32",
        "train.eval_batches=1", "train.grid_size=2"]


@pytest.fixture(scope="module")
def propagated(tmp_path_factory):
    out = tmp_path_factory.mktemp("labelprop")
    plan = Plan(config="ci-mmvae-default", related_fraction=0.25, overrides=TINY, unrelated_share=0.4, K=3,
                score_rows=120, metrics=["latent_accuracy"], siamese_epochs=1)
    return plan, out, label_propagation(plan, out)


def test_splits_and_accepted_set(propagated):
    plan, out, results = propagated
    splits = torch.load(out / "splits.pt", weights_only=True)
    s_r, J, truth = splits["S_r"], splits["F_m"], splits["F_m_related"]
    assert J.shape == (2, 120) and results["sizes"] == {"S_r": len(s_r), "F_m": 120, "F_m related": int(truth.sum())}
    assert not set(s_r.tolist()) & set(J.flatten().tolist()), "S_r and F_m share rows"
    assert torch.equal(J[0, truth], J[1, truth]) and (J[0, ~truth] != J[1, ~truth]).all()
    assert 0.2 < (~truth).float().mean() < 0.6
    scores = torch.load(out / "scores-pmi.pt", weights_only=True)
    threshold = results["relatedness"]["pmi"]["S_m"]["threshold"]
    accepted = scores["F_m"] > threshold
    rows = torch.load(out / "propagated-rows.pt", weights_only=True)
    for m, name in enumerate(["synth_hand", "synth_street"]):
        assert torch.equal(rows[name], torch.cat([s_r, J[m][accepted]]))
    assert results["relatedness"]["pmi"]["F_m"] == {**prf(accepted, truth), "auc": results["relatedness"]["pmi"]["F_m"]["auc"]}
    assert run.read_run_config(out / "propagated").data.train_rows.endswith("propagated-rows.pt")
    assert len(run.make_trainer(run.read_run_config(out / "propagated"), out / "x").train_set) == len(s_r) + int(accepted.sum())
    for name in ("report.md", "report.html", "pmi-f_m.png", "pmi-s_m.png"):
        assert (out / name).stat().st_size > 100
    assert "siamese" in (out / "report.md").read_text()
    full = len(run.load_dataset(run.read_run_config(out / "pretrain"), "train", full=True))
    assert full > len(s_r) + int(accepted.sum())
    for name in ("pretrain", "propagated"):
        assert results["runs"][name]["latent_accuracy"]["fit_pairs"] == "all"
        assert results["runs"][name]["latent_accuracy"]["n_train"] == full, "probe not fitted on the full data"


def test_evaluations_of_an_older_probe_are_redone(propagated, tmp_path):
    """Results computed with the runs' own rows for the probe (before EVAL_OPTIONS) are
    recomputed on the next call; the trained runs and scores are reused."""
    plan, out, results = propagated
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    eval_file = copy / "pretrain" / "eval.json"
    held = json.loads(eval_file.read_text())
    held["latent_accuracy"] = {**held["latent_accuracy"], "fit_pairs": "observed", "a": -1.0}
    held["_options"]["latent_accuracy"].pop("fit_pairs")
    eval_file.write_text(json.dumps(held))
    stamp = (copy / "pretrain" / "model.pt").stat().st_mtime_ns
    assert current_results(plan, out) == results
    assert current_results(plan, copy) is None
    again = label_propagation(plan, copy)
    assert again["runs"]["pretrain"]["latent_accuracy"]["fit_pairs"] == "all"
    assert again["runs"]["pretrain"]["latent_accuracy"] == results["runs"]["pretrain"]["latent_accuracy"]
    assert (copy / "pretrain" / "model.pt").stat().st_mtime_ns == stamp
    assert current_results(plan, copy) == again


def test_second_call_reuses_every_stage(propagated):
    plan, out, results = propagated
    stamps = {p: p.stat().st_mtime_ns for p in [out / "pretrain" / "model.pt", out / "propagated" / "model.pt",
                                                 out / "scores-pmi.pt", out / "scores-siamese.pt"]}
    assert label_propagation(plan, out)["relatedness"] == results["relatedness"]
    assert stamps == {p: p.stat().st_mtime_ns for p in stamps}


def test_a_run_killed_before_its_first_checkpoint_is_trained_again(propagated, tmp_path):
    """A stage run that holds its config and first log lines but no checkpoint (killed in its
    first epoch) is resumed from step 0, not refused as a directory holding a run."""
    plan, out, results = propagated
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    stage = copy / "propagated"
    lines = (stage / "metrics.jsonl").read_text().splitlines()
    for name in ("checkpoint.pt", "model.pt", "eval.json", "timing.jsonl"):
        (stage / name).unlink(missing_ok=True)
    (stage / "metrics.jsonl").write_text(lines[0] + "\n")
    (copy / "results.json").unlink()
    again = label_propagation(plan, copy)
    assert (stage / "model.pt").exists()
    assert (stage / "metrics.jsonl").read_text().splitlines() == lines
    assert again["relatedness"] == results["relatedness"]


def test_relatedness_metric_on_a_trained_run(propagated):
    _, out, _ = propagated
    result = evaluate_run(out / "pretrain", ["relatedness"], {"relatedness": {"K": 3, "n": 40}}, progress=False)
    r = result["relatedness"]
    assert r["n"] == 40 and 0 <= r["auc"] <= 1 and 0.5 <= r["accuracy"] <= 1
    assert (out / "pretrain" / "eval" / "relatedness.png").exists()


def test_a_probe_on_the_full_data_does_not_read_the_runs_train_rows(propagated, tmp_path, monkeypatch):
    """latent_accuracy with fit_pairs="all" evaluates a re-paired run whose train_rows file
    is gone; with "observed" it names the missing file."""
    _, out, _ = propagated
    copy = tmp_path / "propagated"
    shutil.copytree(out / "propagated", copy)

    def gone(path):
        raise FileNotFoundError(f"data.train_rows: {path} does not exist")

    monkeypatch.setattr(run, "read_rows", gone)
    result = evaluate_run(copy, ["latent_accuracy"], {"latent_accuracy": {"fit_pairs": "all", "n_train": 50}},
                          progress=False)
    assert result["latent_accuracy"]["fit_pairs"] == "all" and result["latent_accuracy"]["n_train"] == 50
    with pytest.raises(FileNotFoundError, match="data.train_rows"):
        evaluate_run(copy, ["latent_accuracy"], {"latent_accuracy": {"n_train": 50}}, progress=False)


def test_prf_against_sklearn():
    g = torch.Generator().manual_seed(0)
    predicted, truth = torch.rand(200, generator=g) > 0.4, torch.rand(200, generator=g) > 0.5
    p, r, f, _ = precision_recall_fscore_support(truth.numpy(), predicted.numpy(), average="binary")
    got = prf(predicted, truth)
    assert (got["precision"], got["recall"], got["f1"]) == pytest.approx((p, r, f))


def test_pair_loss_is_hadsell_eq4():
    d = torch.tensor([0.5, 2.0, 0.3, 1.5])
    related = torch.tensor([True, True, False, False])
    assert pair_loss(d, related, 1.0).item() == pytest.approx((0.25 + 4.0 + 0.49 + 0.0) / 4)


def test_bad_plans_and_rows_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="related_fraction must be in"):
        label_propagation(Plan(config="ci-mmvae-default", related_fraction=1.5), tmp_path)
    cfg = load_config("mvae-default", [*TINY, f"data.train_rows={tmp_path / 'none.pt'}"])
    with pytest.raises(FileNotFoundError, match="data.train_rows"):
        run.load_dataset(cfg, "train")
    torch.save({"synth_hand": torch.tensor([0, 1]), "synth_street": torch.tensor([1, 10**6])}, tmp_path / "far.pt")
    cfg = load_config("mvae-default", [*TINY, f"data.train_rows={tmp_path / 'far.pt'}"])
    with pytest.raises(ValueError, match="outside"):
        run.load_dataset(cfg, "train")
    assert cli.main(["label-propagation", "--config", "ci-mmvae-default", "--related-fraction", "0",
                     "--out", str(tmp_path / "lp")]) == 2


def test_a_directory_holding_another_plan_is_refused(propagated, tmp_path):
    """A pipeline of another related fraction in the same directory must not reuse these
    stages; a pre-plan.json directory is checked against its results.json's plan."""
    import dataclasses
    import json

    from mmdgm.labelprop.pipeline import claim

    plan, out, _ = propagated
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*.pt")}
    with pytest.raises(ValueError, match=r"another plan \(differs in \['related_fraction'\]\)"):
        label_propagation(dataclasses.replace(plan, related_fraction=0.5), out)
    assert stamps == {p: p.stat().st_mtime_ns for p in out.glob("*.pt")}
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "results.json").write_text(json.dumps({"plan": dataclasses.asdict(plan)}))
    claim(legacy, plan)
    assert json.loads((legacy / "plan.json").read_text())["related_fraction"] == 0.25
    (legacy / "plan.json").unlink()
    with pytest.raises(ValueError, match=r"differs in \['K'\]"):
        claim(legacy, dataclasses.replace(plan, K=7))


def test_a_plan_with_other_metrics_reuses_every_stage_and_adds_them(propagated, tmp_path):
    """Metrics are evaluation, not training: a plan that adds one reuses splits, scores and
    both runs, evaluates the new metric on both, and rewrites results.json with it."""
    import dataclasses

    plan, out, results = propagated
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    stamps = {p: p.stat().st_mtime_ns for p in [*copy.glob("*.pt"), copy / "pretrain" / "model.pt",
                                                 copy / "propagated" / "model.pt"]}
    wider = dataclasses.replace(plan, metrics=[*plan.metrics, "latent_kl"])
    assert current_results(wider, copy) is None
    again = label_propagation(wider, copy)
    assert stamps == {p: p.stat().st_mtime_ns for p in stamps}
    assert again["relatedness"] == results["relatedness"] and again["plan"]["metrics"] == wider.metrics
    for name in ("pretrain", "propagated"):
        assert again["runs"][name]["latent_accuracy"] == results["runs"][name]["latent_accuracy"]
        assert "latent_kl" in again["runs"][name]
    assert current_results(wider, copy) == again
    assert json.loads((copy / "plan.json").read_text())["metrics"] == wider.metrics


def test_a_plan_recorded_before_a_field_existed_reads_it_as_its_default(tmp_path):
    """plan.json written before `llik_scales` existed is the "unit" plan it ran; a
    "trained" plan is another one, and an unknown value is refused."""
    import dataclasses
    import json

    from mmdgm.labelprop.pipeline import claim

    plan = Plan(config="ci-mmvae-default", related_fraction=0.25)
    old = {k: v for k, v in dataclasses.asdict(plan).items() if k != "llik_scales"}
    (tmp_path / "plan.json").write_text(json.dumps(old))
    claim(tmp_path, plan)
    assert json.loads((tmp_path / "plan.json").read_text())["llik_scales"] == "unit"
    (tmp_path / "plan.json").write_text(json.dumps(old))
    with pytest.raises(ValueError, match=r"differs in \['llik_scales'\]"):
        claim(tmp_path, dataclasses.replace(plan, llik_scales="trained"))
    with pytest.raises(ValueError, match="llik_scales must be one of"):
        dataclasses.replace(plan, llik_scales="model").check()


def test_the_pmi_scores_use_the_plans_likelihood_weights(propagated, tmp_path, monkeypatch):
    import dataclasses

    from mmdgm.labelprop import pipeline

    plan, out, _ = propagated
    seen = []

    def record(name):
        def fake(model, data, rows, **kw):
            seen.append((name, kw["llik_scales"]))
            n = rows.shape[-1]
            return (torch.zeros(n), torch.zeros(n), None) if name == "pairs" else torch.zeros(n)
        return fake

    monkeypatch.setattr(pipeline, "pmi_of_pairs", record("pairs"))
    monkeypatch.setattr(pipeline, "pmi_of_tuples", record("tuples"))
    splits = torch.load(out / "splits.pt", weights_only=True)
    pipeline.pmi_scores(dataclasses.replace(plan, llik_scales="trained"), tmp_path, out / "pretrain",
                        pipeline.full_train_set(plan), splits)
    assert seen == [("pairs", "trained"), ("tuples", "trained")]
