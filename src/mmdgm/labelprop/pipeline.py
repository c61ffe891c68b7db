"""Label propagation with a generative model's PMI ("Relating by contrasting" §4.5, Fig. 7-8).

1. F_r: the complete (related) rows of the config's training set. S_r: a random
   `related_fraction` of them; the rest, F_m, has a known `unrelated_share` of its tuples
   re-paired (every modality from a different row), the others left related.
2. Train the model g on S_r (`data.train_rows`), run `pretrain/`.
3. S_m: the related tuples of S_r and as many re-paired ones. The threshold on g's PMI
   (`evaluate.relatedness`) that best separates S_m is applied to F_m: tuples above it
   are predicted related; precision, recall and F1 against the truth.
4. Baseline: a siamese network (`labelprop.siamese`) trained on S_r, thresholded on S_m
   the same way, scored on F_m the same way.
5. Retrain on S_r plus the F_m tuples g accepted, run `propagated/`; evaluate both runs
   (latent-accuracy probes fitted on the full data, `EVAL_OPTIONS`).

Every stage writes its artefact into the output directory and is skipped when it exists,
so an interrupted call resumes, and a call with other `metrics` only evaluates what is
missing; report.md, report.html, results.json and histograms.
"""

from __future__ import annotations

import dataclasses
import html
import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mmdgm import run
from mmdgm.config import load_config
from mmdgm.data import MultimodalDataset
from mmdgm.evaluate.relatedness import check_llik_scales, histogram, pmi_of_pairs, pmi_of_tuples, separation
from mmdgm.evaluate.runner import evaluate_run, read_eval, to_compute
from mmdgm.labelprop.siamese import train_siamese
from mmdgm.models.contrastive import repaired_indices
from mmdgm.train.checkpoint import atomic_write_bytes, atomic_write_text
from mmdgm.train.distributed import World
from mmdgm.train.runlock import holding
from mmdgm.train.trainer import CHECKPOINT, FINAL

log = logging.getLogger("mmdgm.labelprop")
# Both runs' latent-accuracy probes are fitted on the full data with every row's true label:
# their own train rows differ, and an accepted re-paired tuple carries its first modality's label.
EVAL_OPTIONS = {"latent_accuracy": {"fit_pairs": "all"}}


@dataclass
class Plan:
    """What to run. `score_rows` bounds F_m (None: every remaining row); `llik_scales`:
    the PMI's likelihood weights, "unit" or "trained" (`mmdgm.evaluate.relatedness`)."""

    config: str
    related_fraction: float
    overrides: list[str] = field(default_factory=list)
    unrelated_share: float = 0.5
    seed: int = 1
    K: int = 100
    score_rows: int | None = None
    metrics: list[str] = field(default_factory=lambda: ["latent_accuracy", "cross_coherence", "joint_coherence"])
    siamese_epochs: int = 5
    llik_scales: str = "unit"

    def check(self) -> None:
        check_llik_scales(self.llik_scales)
        if not 0 < self.related_fraction < 1:
            raise ValueError(f"related_fraction must be in (0, 1), got {self.related_fraction}")
        if not 0 <= self.unrelated_share <= 1:
            raise ValueError(f"unrelated_share must be in [0, 1], got {self.unrelated_share}")
        if self.K < 1 or self.siamese_epochs < 1 or (self.score_rows is not None and self.score_rows < 1):
            raise ValueError(f"K, siamese_epochs and score_rows must be >= 1, got {self.K}, "
                             f"{self.siamese_epochs}, {self.score_rows}")


def save(path: Path, obj: Any) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, lambda f: f.write(buffer.getvalue()))


def make_splits(train_set: MultimodalDataset, plan: Plan) -> dict[str, Tensor]:
    """S_r rows, the F_m tuples (M, n) and which of them are related (module docstring)."""
    names = list(train_set.sources)
    M = len(names)
    rows = torch.stack([train_set.mask[n] for n in names]).all(0).nonzero().flatten()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(plan.seed)
        order = rows[torch.randperm(len(rows))]
        n_s = max(M, round(plan.related_fraction * len(rows)))
        s_r, rest = order[:n_s], order[n_s:]
        if plan.score_rows is not None:
            rest = rest[: plan.score_rows]
        if len(rest) < M:
            raise ValueError(f"{len(rows)} complete rows leave {len(rest)} for F_m at related_fraction "
                             f"{plan.related_fraction}; need at least {M}")
        related = torch.rand(len(rest)) >= plan.unrelated_share
        J = rest.expand(M, -1).clone()
        unrelated = (~related).nonzero().flatten()
        if len(unrelated) >= M:
            J[:, unrelated] = repaired_indices(rest[unrelated], M, 1)[:, 0, :]
        else:
            related[unrelated] = True
    return {"S_r": s_r, "F_m": J, "F_m_related": related}


def trained(plan: Plan, out: Path, name: str, rows: dict[str, Tensor]) -> Path:
    """The run `out/name` trained on the tuples `rows` (reused when finished, resumed when
    interrupted, also before its first checkpoint: `Trainer.resume` starts it again)."""
    run_dir = out / name
    if (run_dir / FINAL).exists():
        return run_dir
    if (run_dir / CHECKPOINT).exists() or (run_dir / "config.yaml").exists():
        return run.resume(run_dir)
    rows_file = out / f"{name}-rows.pt"
    save(rows_file, rows)
    config = load_config(plan.config, [*plan.overrides, f"data.train_rows={rows_file.resolve()}",
                                       f"train.seed={plan.seed}", "train.final_metrics=[]"])
    return run.train(config, run_dir)


def full_train_set(plan: Plan) -> MultimodalDataset:
    return run.load_dataset(load_config(plan.config, plan.overrides), "train")


def prf(predicted: Tensor, truth: Tensor) -> dict[str, float]:
    """Precision, recall and F1 of predicting "related"."""
    tp = int((predicted & truth).sum())
    precision = tp / max(int(predicted.sum()), 1)
    recall = tp / max(int(truth.sum()), 1)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "accepted": int(predicted.sum())}


def pmi_scores(plan: Plan, out: Path, pretrain: Path, data: MultimodalDataset, splits: dict) -> dict[str, Tensor]:
    """g's PMI on S_m (related, re-paired) and on F_m, cached in scores-pmi.pt."""
    path = out / "scores-pmi.pt"
    if path.exists():
        return torch.load(path, weights_only=True)
    _, model, _ = run.load_run(pretrain)
    related, unrelated, _ = pmi_of_pairs(model, data, splits["S_r"], K=plan.K, progress=True, seed=plan.seed,
                                         llik_scales=plan.llik_scales)
    scores = {"S_m_related": related, "S_m_unrelated": unrelated,
              "F_m": pmi_of_tuples(model, data, splits["F_m"], K=plan.K, progress=True, llik_scales=plan.llik_scales)}
    save(path, scores)
    return scores


def siamese_scores(plan: Plan, out: Path, data: MultimodalDataset, splits: dict) -> dict[str, Tensor]:
    """The siamese baseline's scores on S_m and F_m, cached in scores-siamese.pt."""
    path = out / "scores-siamese.pt"
    if path.exists():
        return torch.load(path, weights_only=True)
    names = list(data.sources)
    config = load_config(plan.config, plan.overrides)
    s_r = data.repaired({n: splits["S_r"] for n in names})
    net = train_siamese(config.model, s_r, plan.siamese_epochs, config.train.batch_size, seed=plan.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(plan.seed)
        J = repaired_indices(splits["S_r"], len(names), 1)[:, 0, :]

    @torch.no_grad()
    def score(rows: Tensor) -> Tensor:
        tuples = data.repaired({n: rows[m] for m, n in enumerate(names)})
        return torch.cat([net.score(tuples.batch(torch.arange(i, min(i + 512, len(tuples)))))
                          for i in range(0, len(tuples), 512)])

    scores = {"S_m_related": score(splits["S_r"].expand(len(names), -1)), "S_m_unrelated": score(J),
              "F_m": score(splits["F_m"])}
    save(path, scores)
    return scores


def judged(scores: dict[str, Tensor], truth: Tensor) -> tuple[dict, Tensor]:
    """Threshold chosen on S_m, applied to F_m: the summary and the F_m predictions."""
    on_s_m = separation(scores["S_m_related"], scores["S_m_unrelated"])
    predicted = scores["F_m"] > on_s_m["threshold"]
    f_m = scores["F_m"]
    auc_f_m = separation(f_m[truth], f_m[~truth])["auc"] if truth.any() and (~truth).any() else None
    return {"S_m": on_s_m, "F_m": {**prf(predicted, truth), "auc": auc_f_m}}, predicted


PLAN = "plan.json"


def with_defaults(held: dict | None) -> dict | None:
    """A recorded plan with the fields added to Plan since it was written read as their
    defaults (what that plan ran with, as long as a field's default is never changed)."""
    if held is None:
        return None
    defaults = {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
                for f in dataclasses.fields(Plan)
                if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING}
    return {**json.loads(json.dumps(defaults)), **held}


def claim(out: Path, plan: Plan) -> None:
    """Record `plan` in `out`, or raise a ValueError if `out` holds a pipeline of another
    plan (its plan.json, or the plan inside the results.json of a directory from before
    plan.json), so that no stage of one plan is reused for another. `metrics` (what the
    runs are evaluated on) may differ: every stage is reused and the missing metrics added."""
    wanted = json.loads(json.dumps(dataclasses.asdict(plan)))
    for name in (PLAN, "results.json"):
        path = out / name
        if path.exists():
            held = json.loads(path.read_text())
            held = with_defaults(held if name == PLAN else held.get("plan")) or {}
            diff = sorted(k for k in set(held) | set(wanted) if k != "metrics" and held.get(k) != wanted.get(k))
            if diff:
                raise ValueError(f"{out} holds a label-propagation run of another plan (differs in {diff}); "
                                 "give another output directory")
            break
    atomic_write_text(out / PLAN, json.dumps(wanted, indent=2) + "\n")


def eval_options(plan: Plan) -> dict[str, dict[str, Any]]:
    """`EVAL_OPTIONS` of the plan's metrics."""
    return {m: o for m, o in EVAL_OPTIONS.items() if m in plan.metrics}


def current_results(plan: Plan, out: Path) -> dict | None:
    """results.json of the finished pipeline of `plan` in `out` when it was written for these
    metrics and no evaluation of its runs needs redoing (`to_compute`), else None; a
    ValueError if `out` holds another plan."""
    if not (out / "results.json").exists():
        return None
    claim(out, plan)
    results = json.loads((out / "results.json").read_text())
    if (with_defaults(results.get("plan")) or {}).get("metrics") != plan.metrics:
        return None
    if any(to_compute(out / name, plan.metrics, eval_options(plan)) for name in ("pretrain", "propagated")):
        return None
    return results


def label_propagation(plan: Plan, out: Path) -> dict:
    """Run the pipeline (module docstring) into `out`, holding its lock (`OUT/train.lock`,
    `mmdgm.train.runlock`: one process per pipeline); returns results.json's content."""
    plan.check()
    out.mkdir(parents=True, exist_ok=True)
    with holding(out, World()):
        return run_pipeline(plan, out)


def run_pipeline(plan: Plan, out: Path) -> dict:
    """label_propagation's stages, in a directory this process holds."""
    claim(out, plan)
    data = full_train_set(plan)
    names = list(data.sources)
    if not (out / "splits.pt").exists():
        save(out / "splits.pt", make_splits(data, plan))
    splits = torch.load(out / "splits.pt", weights_only=True)
    truth = splits["F_m_related"]
    log.info("S_r %d tuples, F_m %d tuples (%d related)", len(splits["S_r"]), truth.numel(), int(truth.sum()))
    pretrain = trained(plan, out, "pretrain", {n: splits["S_r"] for n in names})
    pmi = pmi_scores(plan, out, pretrain, data, splits)
    pmi_result, accepted = judged(pmi, truth)
    siamese_result, _ = judged(siamese_scores(plan, out, data, splits), truth)
    rows = {n: torch.cat([splits["S_r"], splits["F_m"][m][accepted]]) for m, n in enumerate(names)}
    propagated = trained(plan, out, "propagated", rows)
    options = eval_options(plan)
    evaluation = {}
    for name, run_dir in (("pretrain", pretrain), ("propagated", propagated)):
        missing = to_compute(run_dir, plan.metrics, options)
        evaluation[name] = evaluate_run(run_dir, missing, {m: o for m, o in options.items() if m in missing},
                                        train_classifiers=True) if missing else read_eval(run_dir)
    histogram(pmi["F_m"][truth], pmi["F_m"][~truth], pmi_result["S_m"]["threshold"], out / "pmi-f_m.png",
              "PMI on F_m (threshold from S_m)")
    histogram(pmi["S_m_related"], pmi["S_m_unrelated"], pmi_result["S_m"]["threshold"], out / "pmi-s_m.png",
              "PMI on S_m")
    results = {"plan": dataclasses.asdict(plan), "sizes": {"S_r": len(splits["S_r"]), "F_m": truth.numel(),
                                                          "F_m related": int(truth.sum())},
               "relatedness": {"pmi": pmi_result, "siamese": siamese_result}, "runs": evaluation}
    atomic_write_text(out / "results.json", json.dumps(results, indent=2) + "\n")
    write_report(results, out)
    return results


def scalar_rows(evaluation: dict) -> dict[str, dict[str, float]]:
    from mmdgm.evaluate.report import flatten

    return {run_name: flatten(values) for run_name, values in evaluation.items()}


def write_report(results: dict, out: Path) -> None:
    plan, sizes = results["plan"], results["sizes"]
    info = [f"config `{plan['config']}` {' '.join(plan['overrides'])}", f"seed {plan['seed']}, PMI with K={plan['K']}",
            f"S_r: {sizes['S_r']} related tuples ({plan['related_fraction']:.0%} of F_r); F_m: {sizes['F_m']} tuples, "
            f"{sizes['F_m related']} related"]
    rel_header = ["predictor", "S_m AUC", "S_m accuracy", "threshold", "F_m precision", "F_m recall", "F_m F1",
                  "F_m AUC", "accepted"]
    rel_rows = []
    for name, r in results["relatedness"].items():
        f = r["F_m"]
        rel_rows.append([name, f"{r['S_m']['auc']:.3f}", f"{r['S_m']['accuracy']:.3f}", f"{r['S_m']['threshold']:.2f}",
                         f"{f['precision']:.3f}", f"{f['recall']:.3f}", f"{f['f1']:.3f}",
                         "–" if f["auc"] is None else f"{f['auc']:.3f}", str(f["accepted"])])
    evals = scalar_rows(results["runs"])
    keys = sorted({k for v in evals.values() for k in v})
    run_header = ["run"] + keys
    run_rows = [[name] + [f"{v[k]:.3f}" if k in v else "–" for k in keys] for name, v in evals.items()]

    def md_table(header, rows):
        return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]

    md = ["# Label propagation (Relating by contrasting §4.5)", ""] + [f"- {x}" for x in info] + ["", "## Relatedness prediction", ""]
    md += md_table(rel_header, rel_rows) + ["", "## Models before and after propagation", ""] + md_table(run_header, run_rows)
    md += ["", "![PMI on S_m](pmi-s_m.png) ![PMI on F_m](pmi-f_m.png)", ""]
    atomic_write_text(out / "report.md", "\n".join(md))
    esc = html.escape

    def html_table(header, rows):
        return ("<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>"
                + "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows) + "</table>")

    page = ("<!doctype html><html><head><meta charset='utf-8'><title>Label propagation</title><style>"
            "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid"
            " #ccc;padding:4px 8px}th{background:#eee}</style></head><body><h1>Label propagation</h1><ul>"
            + "".join(f"<li>{esc(x)}</li>" for x in info) + "</ul><h2>Relatedness prediction</h2>"
            + html_table(rel_header, rel_rows) + "<h2>Models before and after propagation</h2>"
            + html_table(run_header, run_rows)
            + "<img src='pmi-s_m.png'><img src='pmi-f_m.png'></body></html>")
    atomic_write_text(out / "report.html", page)

