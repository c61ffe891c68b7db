"""Run an experiment: train (reusing finished runs, resuming interrupted ones), evaluate
the metrics its columns need, and write report.md + report.html beside the paper's numbers."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
import time
from pathlib import Path
from typing import Any

from mmdgm import run
from mmdgm.config import load_config
from mmdgm.evaluate.report import fmt, mean_std
from mmdgm.evaluate.runner import evaluate_run, read_eval
from mmdgm.reproduce.experiment import EXPERIMENTS, SCALES, Experiment, Row
from mmdgm.reproduce.report import write_reports
from mmdgm.train.trainer import CHECKPOINT, FINAL, TIMING

log = logging.getLogger("mmdgm.reproduce")


def slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", label).strip("-").lower()


def run_dir_of(out: Path, scale: str, row: Row, seed: int) -> Path:
    """Runs live under out/runs/<scale>/<config>[-<hash of overrides>]/, so that experiments
    sharing a run (e.g. three tables of one paper) train it once."""
    name = slug(row.config)
    if row.overrides:
        name += "-" + hashlib.sha1("\n".join(row.overrides).encode()).hexdigest()[:10]
    return out / "runs" / scale / name / f"seed{seed}"


def ensure_trained(experiment: Experiment, row_index: int, scale: str, seed: int, run_dir: Path) -> str:
    """Train, resume or reuse the run; returns what was done."""
    if (run_dir / FINAL).exists():
        return "reused"
    if (run_dir / CHECKPOINT).exists() or (run_dir / "config.yaml").exists():
        run.resume(run_dir)
        return "resumed"
    row = experiment.rows[row_index]
    overrides = [*experiment.scales[scale].overrides, *row.overrides, f"train.seed={seed}"]
    run.train(load_config(row.config, overrides), run_dir)
    return "trained"


def ensure_evaluated(experiment: Experiment, scale: str, run_dir: Path) -> dict[str, Any]:
    """Metrics of the experiment's columns, computing only those not yet in eval.json."""
    results = read_eval(run_dir)
    missing = [m for m in experiment.metrics if m not in results]
    if missing:
        options = {m: o for m, o in experiment.scales[scale].metric_options.items() if m in missing}
        results = evaluate_run(run_dir, missing, options, train_classifiers=True)
    return results


def wall_seconds(run_dir: Path) -> float:
    path = run_dir / TIMING
    if not path.exists():
        return 0.0
    return sum(json.loads(line)["seconds"] for line in path.read_text().splitlines() if line)


def cell(values: list[float]) -> str:
    return fmt(*mean_std(values), len(values)) if values else "–"


def select_rows(experiment: Experiment, only: list[str] | None) -> Experiment:
    """The experiment restricted to rows whose label contains one of `only` (None: all)."""
    if not only:
        return experiment
    rows = tuple(r for r in experiment.rows if any(o in r.label for o in only))
    if not rows:
        raise ValueError(f"no row of {experiment.name} matches {only}; rows: {[r.label for r in experiment.rows]}")
    published = {k: v for k, v in experiment.published.items() if k in {r.label for r in rows}}
    return dataclasses.replace(experiment, rows=rows, published=published)


def reproduce(
    name: str, scale: str, seeds: list[int], out: Path, only: list[str] | None = None
) -> tuple[Path, Path]:
    """Run experiment `name` (its rows matching `only`) at `scale` for `seeds`; runs go to
    `out`/runs, the report to `out`/name/scale."""
    experiment = select_rows(EXPERIMENTS.get(name), only)
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose one of {list(SCALES)}")
    if not seeds:
        raise ValueError("give at least one seed")
    out = Path(out)
    values: dict[str, dict[str, list[float]]] = {}
    runs: dict[str, list[Path]] = {}
    start = time.time()
    for i, row in enumerate(experiment.rows):
        values[row.label] = {c.label: [] for c in experiment.columns}
        for seed in seeds:
            run_dir = run_dir_of(out, scale, row, seed)
            done = ensure_trained(experiment, i, scale, seed, run_dir)
            log.info("%s seed %d: %s (%s)", row.label, seed, done, run_dir)
            results = ensure_evaluated(experiment, scale, run_dir)
            runs.setdefault(row.label, []).append(run_dir)
            for c in experiment.columns:
                value = results.get(c.metric, {}).get(c.key)
                if isinstance(value, (int, float)):
                    values[row.label][c.label].append(float(value) * c.scale)
    cells = {r: {c: cell(v) for c, v in cols.items()} for r, cols in values.items()}
    train_seconds = sum(wall_seconds(d) for ds in runs.values() for d in ds)
    report_dir = out / name / scale
    report_dir.mkdir(parents=True, exist_ok=True)
    return write_reports(experiment, scale, seeds, cells, runs, report_dir, time.time() - start, train_seconds)
