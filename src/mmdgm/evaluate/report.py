"""`mmdgm report`: paper-style tables (mean +- std over seeds) as Markdown and HTML."""

from __future__ import annotations

import html
import math
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

from mmdgm.evaluate.runner import read_eval
from mmdgm.train.checkpoint import atomic_write_text

SECTIONS = {
    "joint_coherence": "Coherence",
    "cross_coherence": "Coherence",
    "synergy_coherence": "Coherence",
    "latent_accuracy": "Latent accuracy",
    "latent_accuracy_split": "Latent accuracy",
    "joint_log_likelihood": "Log-likelihoods",
    "conditional_log_likelihoods": "Log-likelihoods",
    "generation_diversity": "Generation diversity",
    "latent_kl": "Latent structure",
}


SHORT = {"joint_coherence": "joint", "cross_coherence": "cross", "synergy_coherence": "synergy"}
SETTINGS = {"n", "n_train", "n_test", "K", "chunk", "steps", "span", "examples", "threshold", "fraction",
            "mc_samples", "classes", "use_mean", "rows", "stderr", "sensitivity", "sigma0"}


def flatten(results: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Scalar results of nested metric dicts as "metric/key" -> float. Lists and the
    metrics' settings and bookkeeping (n, K, standard errors, ...) are left out."""
    out: dict[str, float] = {}
    for key, value in results.items():
        if key in SETTINGS:
            continue
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(value)
    return out


def column(key: str) -> str:
    """Table header of a flattened key: "cross a->b", "joint", "entropy/a", ..."""
    metric, _, rest = key.partition("/")
    if rest in ("", metric):
        return SHORT.get(metric, metric)
    return f"{SHORT[metric]} {rest}" if metric in SHORT else rest


def figures(results: dict[str, Any]) -> list[str]:
    """Figure file names listed under "figures" keys anywhere in the results."""
    found: list[str] = []
    for key, value in results.items():
        if key == "figures" and isinstance(value, list):
            found += [str(v) for v in value]
        elif isinstance(value, dict):
            found += figures(value)
    return found


def run_label(run_dir: Path) -> str:
    """Group runs that differ only by seed: "<model> [<config name>]"."""
    from mmdgm.run import read_run_config

    config = read_run_config(run_dir)
    return f"{config.model.name} [{config.name}]"


def mean_std(values: list[float]) -> tuple[float, float]:
    m = sum(values) / len(values)
    s = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return m, s


def fmt(m: float, s: float, n: int) -> str:
    digits = 3 if abs(m) < 10 else 1
    return f"{m:.{digits}f}" + (f" ± {s:.{digits}f}" if n > 1 else "")


def collect(run_dirs: list[Path]) -> dict[str, dict[str, list[float]]]:
    """group label -> flattened metric -> values over the group's runs."""
    groups: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for run_dir in run_dirs:
        results = read_eval(run_dir)
        if not results:
            raise ValueError(f"{run_dir} has no eval.json; run `mmdgm evaluate {run_dir}` first")
        for key, value in flatten(results).items():
            groups[run_label(run_dir)][key].append(value)
    return groups


def tables(groups: dict[str, dict[str, list[float]]]) -> dict[str, tuple[list[str], list[list[str]]]]:
    """section -> (header, rows); one row per group, one column per metric key."""
    by_section: dict[str, list[str]] = defaultdict(list)
    for metrics in groups.values():
        for key in metrics:
            section = SECTIONS.get(key.split("/")[0], "Other")
            if key not in by_section[section]:
                by_section[section].append(key)
    out = {}
    for section, keys in by_section.items():
        header = ["model [config] (seeds)"] + [column(k) for k in keys]
        rows = []
        for label, metrics in groups.items():
            n = max(len(v) for v in metrics.values())
            cells = [fmt(*mean_std(metrics[k]), len(metrics[k])) if k in metrics else "–" for k in keys]
            rows.append([f"{label} ({n})"] + cells)
        out[section] = (header, rows)
    return out


def markdown(section_tables: dict[str, tuple[list[str], list[list[str]]]]) -> str:
    lines = ["# mmdgm report", "", "Mean ± standard deviation over seeds (runs sharing a config name)."]
    for section, (header, rows) in section_tables.items():
        lines += ["", f"## {section}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def html_page(section_tables: dict, run_dirs: list[Path], out_dir: Path) -> str:
    esc = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>mmdgm report</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#eee}"
        "td:first-child{text-align:left}img{max-width:45%;margin:4px;border:1px solid #ddd}</style>",
        "</head><body><h1>mmdgm report</h1><p>Mean ± standard deviation over seeds.</p>",
    ]
    for section, (header, rows) in section_tables.items():
        parts.append(f"<h2>{esc(section)}</h2><table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>")
        parts += ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows]
        parts.append("</table>")
    parts.append("<h2>Figures</h2>")
    for run_dir in run_dirs:
        pictures = [run_dir / "eval" / f for f in figures(read_eval(run_dir))]
        grids = sorted((run_dir / "grids").glob("*.png"))[-3:]
        parts.append(f"<h3>{esc(str(run_dir))}</h3>")
        for p in pictures + grids:
            if p.exists():
                rel = os.path.relpath(p, out_dir)
                parts.append(f"<figure style='display:inline-block'><img src='{esc(rel)}'><figcaption>{esc(p.name)}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(run_dirs: list[Path], out_dir: Path) -> tuple[Path, Path]:
    """Write report.md and report.html into `out_dir`; returns their paths."""
    run_dirs = [Path(r) for r in run_dirs]
    section_tables = tables(collect(run_dirs))
    out_dir.mkdir(parents=True, exist_ok=True)
    md, page = out_dir / "report.md", out_dir / "report.html"
    atomic_write_text(md, markdown(section_tables))
    atomic_write_text(page, html_page(section_tables, run_dirs, out_dir))
    return md, page
