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
from mmdgm.config import differences, load_config
from mmdgm.evaluate.report import fmt, mean_std
from mmdgm.evaluate.runner import evaluate_run, read_eval, to_compute
from mmdgm.reproduce.experiment import EXPERIMENTS, Experiment, Row
from mmdgm.reproduce.plots import CURVES, FIGURES, TRAINING, plot_curves, plot_training, tile_run_figures
from mmdgm.reproduce.report import write_reports
from mmdgm.train.distributed import World
from mmdgm.train.divergence import loss_rise, logged_test_losses
from mmdgm.train.runlock import RunLocked, holding
from mmdgm.train.trainer import CHECKPOINT, FINAL, METRICS, TIMING

log = logging.getLogger("mmdgm.reproduce")
LOCKED_NOTE = "held by another process"


def slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", label).strip("-").lower()


def run_dir_of(out: Path, experiment: Experiment, scale: str, row: Row, seed: int) -> Path:
    """Runs live under out/runs/<scale>/<config>[-<hash of every override>]/: the scale's
    overrides for the config and the row's. Experiments that train a run with the same
    settings (e.g. three tables of one paper) share it; the same config trained under
    another experiment's scale settings is another run. A label-propagation row's pipeline
    lives under labelprop-<config>-<hash>/, its related fraction hashed in too."""
    overrides = [*experiment.scales[scale].overrides_for(row.config), *row.overrides]
    name = slug(row.config)
    if row.propagation is not None:
        overrides.append(f"label_propagation.related_fraction={row.propagation}")
        name = f"labelprop-{name}"
    if overrides:
        name += "-" + hashlib.sha1("\n".join(overrides).encode()).hexdigest()[:10]
    return out / "runs" / scale / name / f"seed{seed}"


def ensure_propagated(experiment: Experiment, row: Row, scale: str, seed: int, run_dir: Path) -> dict[str, Any]:
    """results.json of the row's label-propagation pipeline: read when finished and current
    (`current_results`), else run (each stage reused when done, the runs' evaluations
    brought up to date); a ValueError if `run_dir` holds a pipeline of another plan."""
    from mmdgm.labelprop import Plan, label_propagation
    from mmdgm.labelprop.pipeline import current_results

    sources = [experiment.column_for(row, c) for c in experiment.columns]
    metrics = sorted({c.propagation_path.split("/")[-1] for c in sources
                      if c is not None and (c.propagation_path or "").startswith("runs/")})
    plan = Plan(config=row.config, related_fraction=row.propagation, seed=seed,
                overrides=[*experiment.scales[scale].overrides_for(row.config), *row.overrides], metrics=metrics,
                **experiment.scales[scale].metric_options.get("label_propagation", {}))
    held = current_results(plan, run_dir)
    return held if held is not None else label_propagation(plan, run_dir)


def nested(node: Any, parts: list[str]) -> Any:
    for part in parts:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def lookup(results: dict[str, Any], metric: str, key: str) -> Any:
    """results[metric][key]; a metric or key "a/b" not found as such is a nested path."""
    node = results[metric] if metric in results else nested(results, metric.split("/"))
    if not isinstance(node, dict):
        return None
    return node[key] if key in node else nested(node, key.split("/"))


def ensure_trained(
    experiment: Experiment, row_index: int, scale: str, seed: int, run_dir: Path, device: str = "auto"
) -> str:
    """Train (on `device`), resume or reuse the run; returns what was done. A run trained
    from another config than the row's now (a built-in config edited since) is an error,
    never silently reused."""
    row = experiment.rows[row_index]
    overrides = [*experiment.scales[scale].overrides_for(row.config), *row.overrides, f"train.seed={seed}",
                 f"train.device={device}"]
    config = load_config(row.config, overrides)
    if (run_dir / "config.yaml").exists():
        drift = differences(run.read_run_config(run_dir), config, ignore=("train.device",))
        if drift:
            raise ValueError(f"{run_dir} was trained from another config than {row.config!r} with this scale's "
                             f"overrides now (they differ at {', '.join(drift)}); move it away to train it again")
    if (run_dir / FINAL).exists():
        return "reused"
    if (run_dir / CHECKPOINT).exists() or (run_dir / "config.yaml").exists():
        run.resume(run_dir, device)
        return "resumed"
    run.train(config, run_dir)
    return "trained"


def ensure_evaluated(experiment: Experiment, row: Row, scale: str, run_dir: Path, device: str = "auto") -> dict[str, Any]:
    """The metrics `row` reads (on `device`), computing only those that eval.json lacks or
    holds computed with other options than the scale's."""
    options = experiment.scales[scale].metric_options
    missing = to_compute(run_dir, experiment.metrics_of(row), options)
    if missing:
        return evaluate_run(run_dir, missing, {m: o for m, o in options.items() if m in missing},
                            train_classifiers=True, device=device)
    return read_eval(run_dir)


def wall_seconds(run_dir: Path) -> float:
    path = run_dir / TIMING
    if not path.exists():
        return 0.0
    return sum(json.loads(line)["seconds"] for line in path.read_text().splitlines() if line)


def test_loss_rise(run_dir: Path) -> str | None:
    """The run's test loss rise (`mmdgm.train.divergence.loss_rise`), if any."""
    return loss_rise(logged_test_losses(run_dir / METRICS))


def cell(values: list[float]) -> str:
    return fmt(*mean_std(values), len(values)) if values else "–"


def row_matches(label: str, selector: str) -> bool:
    """A selector "=LABEL" matches that label exactly; any other, the labels containing it."""
    return label == selector[1:] if selector.startswith("=") else selector in label


def select_rows(experiment: Experiment, only: list[str] | None) -> Experiment:
    """The experiment restricted to rows matching one of `only` (`row_matches`; None: all)."""
    if not only:
        return experiment
    rows = tuple(r for r in experiment.rows if any(row_matches(r.label, o) for o in only))
    if not rows:
        raise ValueError(f"no row of {experiment.name} matches {only}; rows: {[r.label for r in experiment.rows]}")
    published = {k: v for k, v in experiment.published.items() if k in {r.label for r in rows}}
    return dataclasses.replace(experiment, rows=rows, published=published)


def row_results(experiment: Experiment, row_index: int, scale: str, seed: int, run_dir: Path,
                device: str) -> dict[str, Any]:
    """The results of one row and seed: its label-propagation pipeline's, or its run's
    evaluation, the run trained, resumed or reused first; the run's lock is held from the
    decision to the evaluation (`RunLocked` if another process holds it)."""
    row = experiment.rows[row_index]
    if row.propagation is not None:
        return ensure_propagated(experiment, row, scale, seed, run_dir)
    with holding(run_dir, World()):
        done = ensure_trained(experiment, row_index, scale, seed, run_dir, device)
        log.info("%s seed %d: %s (%s)", row.label, seed, done, run_dir)
        return ensure_evaluated(experiment, row, scale, run_dir, device)


def finished(run_dir: Path, row: Row) -> bool:
    """Whether the row's run (or label-propagation pipeline) in `run_dir` has finished."""
    return (run_dir / ("results.json" if row.propagation is not None else FINAL)).exists()


def reproduce(
    name: str, scale: str, seeds: list[int], out: Path, only: list[str] | None = None, device: str = "auto",
    report_only: bool = False,
) -> tuple[Path, Path]:
    """Run experiment `name` (its rows matching `only`) at `scale` for `seeds` on `device`;
    runs go to `out`/runs, the report to `out`/name/scale. `report_only`: train nothing,
    report the finished runs (evaluating what they lack) and list the others as not run."""
    experiment = select_rows(EXPERIMENTS.get(name), only)
    if scale not in experiment.scales:
        raise ValueError(f"unknown scale {scale!r} for {name}; choose one of {list(experiment.scales)}")
    if not seeds:
        raise ValueError("give at least one seed")
    out = Path(out)
    values: dict[str, dict[str, list[float]]] = {}
    runs: dict[str, list[Path]] = {}
    not_run: list[str] = []
    start = time.time()
    for i, row in enumerate(experiment.rows):
        values[row.label] = {c.label: [] for c in experiment.columns}
        for seed in seeds:
            run_dir = run_dir_of(out, experiment, scale, row, seed)
            if report_only and not finished(run_dir, row):
                not_run.append(f"{row.label} seed {seed}")
                continue
            try:
                results = row_results(experiment, i, scale, seed, run_dir, device)
            except RunLocked as e:
                log.warning("%s", e)
                not_run.append(f"{row.label} seed {seed} ({LOCKED_NOTE})")
                continue
            runs.setdefault(row.label, []).append(run_dir / "propagated" if row.propagation is not None else run_dir)
            for c in experiment.columns:
                source = experiment.column_for(row, c)
                if source is None or (source.propagation_path is None) != (row.propagation is None):
                    continue
                value = lookup(results, source.propagation_path or source.metric, source.key)
                if isinstance(value, (int, float)):
                    values[row.label][c.label].append(source.value(float(value)))
    cells = {r: {c: cell(v) for c, v in cols.items()} for r, cols in values.items()}
    train_seconds = sum(wall_seconds(d) for ds in runs.values() for d in ds)
    rises = [f"{label} {d.name}: {rise}" for label, ds in runs.items() for d in ds if (rise := test_loss_rise(d))]
    report_dir = out / name / scale
    report_dir.mkdir(parents=True, exist_ok=True)
    if any(r.x is not None for r in experiment.rows):
        plot_curves(experiment, values, report_dir / CURVES)
    if not (experiment.training_curves and plot_training(experiment, runs, report_dir / TRAINING)):
        (report_dir / TRAINING).unlink(missing_ok=True)
    if not (experiment.run_figures and tile_run_figures(experiment, runs, report_dir / FIGURES)):
        (report_dir / FIGURES).unlink(missing_ok=True)
    return write_reports(experiment, scale, seeds, cells, runs, report_dir, time.time() - start, train_seconds, not_run,
                         rises)
