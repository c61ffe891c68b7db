"""An experiment's figures: its columns against x (curves.png), its rows' logged
training metrics against the step (training.png) and its rows' evaluation figures side
by side (figures.png)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from mmdgm.evaluate.report import mean_std
from mmdgm.reproduce.experiment import Experiment
from mmdgm.train.checkpoint import atomic_write_bytes
from mmdgm.train.trainer import METRICS

if TYPE_CHECKING:
    from matplotlib.figure import Figure

CURVES = "curves.png"
TRAINING = "training.png"
FIGURES = "figures.png"


def save(fig: "Figure", path: Path) -> None:
    """Lay out `fig` and write it to `path` as a PNG, atomically."""
    fig.tight_layout()
    atomic_write_bytes(path, lambda f: fig.savefig(f, format="png", dpi=100))


def colours(labels) -> dict[str, str]:
    """A colour per label, the same in every panel: matplotlib's colour cycle restarts in
    each panel, so a panel missing one line would give the next line another's colour."""
    return {label: f"C{i % 10}" for i, label in enumerate(labels)}


def legend(axes) -> None:
    """The legend on the first panel that shows every line, else on each panel with lines."""
    shown = [set(ax.get_legend_handles_labels()[1]) for ax in axes]
    every = set().union(*shown)
    complete = [ax for ax, labels in zip(axes, shown) if labels == every]
    for ax in complete[:1] or [ax for ax, labels in zip(axes, shown) if labels]:
        ax.legend(fontsize=7)


def plot_curves(experiment: Experiment, values: dict[str, dict[str, list[float]]], path: Path) -> None:
    """One panel per column: mean ± std over seeds against x, one line per series; a row
    with a series but no x (a baseline, e.g. MMVAE beside cI-MMVAE against gamma) is a
    dotted horizontal line at its mean."""
    from matplotlib.figure import Figure

    columns = experiment.columns
    fig = Figure(figsize=(3.2 * len(columns), 3.0))
    axes = fig.subplots(1, len(columns), squeeze=False)[0]
    series = dict.fromkeys(r.series for r in experiment.rows if r.x is not None)
    baselines = [r for r in experiment.rows if r.series and r.x is None]
    colour = colours([*series, *(r.label for r in baselines)])
    for ax, c in zip(axes, columns):
        for name in series:
            points = [(r.x, values[r.label][c.label]) for r in experiment.rows if r.series == name and r.x is not None]
            points = [(x, mean_std(v)) for x, v in sorted(points) if v]
            if points:
                xs = [x for x, _ in points]
                ax.errorbar(xs, [m for _, (m, _) in points], yerr=[s for _, (_, s) in points], marker="o", capsize=2,
                            label=name, color=colour[name])
        for r in baselines:
            if values[r.label][c.label]:
                ax.axhline(mean_std(values[r.label][c.label])[0], linestyle=":", color=colour[r.label], label=r.label)
        ax.set(title=c.label, xlabel=experiment.x_label)
        ax.grid(alpha=0.3)
    legend(axes)
    save(fig, path)


def training_log(run_dir: Path, key: str) -> dict[int, float]:
    """step -> the logged training value of `key` in the run's metrics.jsonl."""
    path = run_dir / METRICS
    if not path.exists():
        return {}
    records = map(json.loads, filter(None, path.read_text().splitlines()))
    return {r["step"]: float(r[key]) for r in records if r.get("split") == "train" and isinstance(r.get(key), (int, float))}


def mean_training_log(run_dirs: list[Path], key: str) -> tuple[list[int], list[float]]:
    """The steps at which every run that logged `key` in training did, and those runs' mean
    value there (runs without `key` are left out)."""
    logs = [log for log in (training_log(d, key) for d in run_dirs) if log]
    steps = sorted(set.intersection(*(set(log) for log in logs))) if logs else []
    return steps, [sum(log[s] for log in logs) / len(logs) for s in steps]


def plot_training(experiment: Experiment, runs: dict[str, list[Path]], path: Path) -> bool:
    """One panel per key of `experiment.training_curves`: its logged training value against
    the step, one line per row (the mean over the row's seeds that logged it, at the steps
    they share).
    Returns whether anything was drawn (nothing: no file)."""
    from matplotlib.figure import Figure

    keys = experiment.training_curves
    lines = {}
    for key in keys:
        for label, dirs in runs.items():
            steps, values = mean_training_log(dirs, key)
            if steps:
                lines[key, label] = (steps, values)
    if not lines:
        return False
    fig = Figure(figsize=(4.0 * len(keys), 3.2))
    axes = fig.subplots(1, len(keys), squeeze=False)[0]
    colour = colours(runs)
    for ax, key in zip(axes, keys):
        for label in runs:
            if (key, label) in lines:
                ax.plot(*lines[key, label], label=label, color=colour[label])
        ax.set(title=key, xlabel="step")
        ax.grid(alpha=0.3)
    legend(axes)
    save(fig, path)
    return True


def tile_run_figures(experiment: Experiment, runs: dict[str, list[Path]], path: Path, width: int = 3) -> bool:
    """The evaluation figures `experiment.run_figures` (from each run's eval/) of every
    experiment row that has run, its first run's, titled with the row and run; the rows
    side by side, `width` figures to a line. Returns whether anything was drawn (nothing:
    no file)."""
    from matplotlib.figure import Figure
    from matplotlib.image import imread

    names = experiment.run_figures
    found = {(label, name): dirs[0] / "eval" / name for label, dirs in runs.items() for name in names
             if (dirs[0] / "eval" / name).exists()}
    labels = [r.label for r in experiment.rows if any((r.label, n) in found for n in names)]
    if not labels:
        return False
    images = {key: imread(file) for key, file in found.items()}
    per_line = min(len(labels), max(1, width // len(names)))
    lines = -(-len(labels) // per_line)
    tile_w = max(img.shape[1] for img in images.values()) / 100
    tile_h = max(img.shape[0] for img in images.values()) / 100 + 0.3
    fig = Figure(figsize=(tile_w * per_line * len(names), tile_h * lines))
    axes = fig.subplots(lines, per_line * len(names), squeeze=False).reshape(-1)
    for ax in axes:
        ax.set_axis_off()
    for i, (label, name) in enumerate((label, name) for label in labels for name in names):
        if (label, name) in images:
            axes[i].imshow(images[label, name])
            axes[i].set_title(f"{label} ({runs[label][0].name})", fontsize=9)
    save(fig, path)
    return True
