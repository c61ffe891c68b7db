"""Train, evaluate and tabulate several models x seeds on one dataset: one command per table.

Each model trains from its built-in config for the chosen dataset (`<model>-<suffix>`,
`mmvae` uses `mmvae-synthetic-pairs` / `mmvae-<suffix>`), then `mmdgm evaluate` runs on every run and
`mmdgm report` writes report.md / report.html into --out. Runs that already finished, and
metrics already in their eval.json, are reused (delete a run directory to redo it).

    python benchmarks/model_comparison.py --suffix default --seeds 1,2,3 --out comparisons/default
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mmdgm import run
from mmdgm.evaluate.report import write_report
from mmdgm.evaluate.runner import DEFAULT_METRICS, evaluate_run, read_eval
from mmdgm.train.trainer import FINAL

MODELS = ("mmvae", "mvae", "jmvae", "mopoe", "mmjsd")


def config_name(model: str, suffix: str) -> str:
    return "mmvae-synthetic-pairs" if (model, suffix) == ("mmvae", "default") else f"{model}-{suffix}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--suffix", default="default", help="config suffix: default or mnist-synthstreet")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--out", required=True, help="directory for runs and the report")
    p.add_argument("--override", action="append", default=[], help="key=value for every model's config")
    p.add_argument("--model-override", action="append", default=[], metavar="MODEL:key=value",
                   help="override for one model only, e.g. mmvae:model.options.K=2")
    p.add_argument("--metric-option", action="append", default=[], metavar="metric.key=value")
    p.add_argument("--metrics", default=None, help="comma-separated metrics (default: all)")
    args = p.parse_args()
    from mmdgm.cli import metric_options

    out = Path(args.out)
    per_model: dict[str, list[str]] = {}
    for item in args.model_override:
        model, kv = item.split(":", 1)
        per_model.setdefault(model, []).append(kv)
    runs = []
    for model in args.models.split(","):
        for seed in [int(s) for s in args.seeds.split(",")]:
            run_dir = out / f"{model}-seed{seed}"
            if not (run_dir / FINAL).exists():
                overrides = [*args.override, *per_model.get(model, []), f"train.seed={seed}"]
                config = run.load_config(config_name(model, args.suffix), overrides)
                run.train(config, run_dir)
            wanted = args.metrics.split(",") if args.metrics else list(DEFAULT_METRICS)
            if not set(wanted) <= set(read_eval(run_dir)):
                evaluate_run(run_dir, wanted, metric_options(args.metric_option))
            runs.append(run_dir)
            print(json.dumps({"run": str(run_dir), "done": True}), flush=True)
    for path in write_report(runs, out / "report"):
        print(path)


if __name__ == "__main__":
    main()
