"""The report of an experiment: our mean ± std over seeds beside the paper's number."""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from pathlib import Path

from mmdgm.reproduce.experiment import Experiment
from mmdgm.reproduce.plots import CURVES, FIGURES, TRAINING
from mmdgm.train.checkpoint import atomic_write_text


CAPTION = "Ours: mean ± standard deviation over seeds; paper: the published number."
CAPTION_UNPUBLISHED = "Ours: mean ± standard deviation over seeds (the paper gives no numbers here: see the notes)."


def published(value: float | None) -> str:
    return "–" if value is None else f"{value:g}"


def table(experiment: Experiment, cells: dict[str, dict[str, str]]) -> tuple[list[str], list[list[str]]]:
    """Header and rows: our cell beside the paper's number for each column, or ours alone
    where the paper gives no numbers (`experiment.published` empty: curves only)."""
    if not experiment.published:
        return (["run"] + [c.label for c in experiment.columns],
                [[row.label] + [cells[row.label][c.label] for c in experiment.columns] for row in experiment.rows])
    header = ["run"] + [f"{c.label} {side}" for c in experiment.columns for side in ("(ours)", "(paper)")]
    rows = []
    for row in experiment.rows:
        paper = experiment.published.get(row.label, {})
        rows.append([row.label] + [v for c in experiment.columns for v in (cells[row.label][c.label], published(paper.get(c.label)))])
    return header, rows


def facts(
    experiment: Experiment, scale: str, seeds: list[int], wall: float, train_wall: float, not_run: Sequence[str] = (),
    rises: Sequence[str] = (),
) -> list[tuple[str, str]]:
    note = experiment.scales[scale].note
    return [
        ("reference", experiment.reference),
        ("dataset used", experiment.dataset),
        ("scale", f"{scale}" + (f": {note}" if note else "")),
        ("seeds", ", ".join(map(str, seeds))),
        ("wall time", f"{wall / 60:.1f} min this invocation; {train_wall / 60:.1f} min of training in all runs"),
    ] + ([("not run", "; ".join(not_run) + " (their cells hold only the seeds that ran)")] if not_run else []) + (
        [("test loss rose", "; ".join(rises) + " (last test loss above its best by more than half the best's size "
          "plus 10: diverged or overfitted; their cells are those of the last model)")] if rises else [])


def markdown(experiment: Experiment, header: list[str], rows: list[list[str]], info: list[tuple[str, str]],
             training: bool = False, figures: bool = False) -> str:
    lines = [f"# {experiment.title}", ""] + [f"- **{k}**: {v}" for k, v in info]
    lines += ["", CAPTION if experiment.published else CAPTION_UNPUBLISHED, ""]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    if experiment.notes:
        lines += ["", experiment.notes]
    if any(r.x is not None for r in experiment.rows):
        lines += ["", f"![each column against {experiment.x_label}]({CURVES})"]
    if training:
        lines += ["", f"![{', '.join(experiment.training_curves)} against the training step]({TRAINING})"]
    if figures:
        lines += ["", f"![{', '.join(experiment.run_figures)} of each row's first run]({FIGURES})"]
    return "\n".join(lines) + "\n"


def html_page(experiment, header, rows, info, runs: dict[str, list[Path]], out_dir: Path) -> str:
    esc = html.escape
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(experiment.title)}</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#eee}"
        "td:first-child{text-align:left}img{max-width:45%;margin:4px;border:1px solid #ddd}</style>",
        f"</head><body><h1>{esc(experiment.title)}</h1><ul>",
    ]
    parts += [f"<li><b>{esc(k)}</b>: {esc(v)}</li>" for k, v in info]
    parts.append("</ul><table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>")
    parts += ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows]
    parts.append("</table>")
    if experiment.notes:
        parts.append(f"<p>{esc(experiment.notes)}</p>")
    for figure in (CURVES, TRAINING, FIGURES):
        if (out_dir / figure).exists():
            parts.append(f"<img src='{figure}' style='max-width:100%'>")
    for label, dirs in runs.items():
        grids = sorted((dirs[0] / "grids").glob("*.png"))[-3:]
        parts.append(f"<h3>{esc(label)} ({esc(str(dirs[0]))})</h3>")
        for p in grids:
            rel = os.path.relpath(p, out_dir)
            parts.append(f"<figure style='display:inline-block'><img src='{esc(rel)}'><figcaption>{esc(p.name)}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_reports(
    experiment: Experiment,
    scale: str,
    seeds: list[int],
    cells: dict[str, dict[str, str]],
    runs: dict[str, list[Path]],
    out_dir: Path,
    wall: float,
    train_wall: float,
    not_run: Sequence[str] = (),
    rises: Sequence[str] = (),
) -> tuple[Path, Path]:
    """Write report.md and report.html into `out_dir`; returns their paths. `not_run`:
    the row-seed pairs left out (`--report-only`), listed in the report; `rises`: the runs
    whose test loss rose far above its best (`runner.test_loss_rise`)."""
    header, rows = table(experiment, cells)
    info = facts(experiment, scale, seeds, wall, train_wall, list(not_run), list(rises))
    md, page = out_dir / "report.md", out_dir / "report.html"
    atomic_write_text(md, markdown(experiment, header, rows, info, (out_dir / TRAINING).exists(),
                                   (out_dir / FIGURES).exists()))
    atomic_write_text(page, html_page(experiment, header, rows, info, runs, out_dir))
    return md, page
