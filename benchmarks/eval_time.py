"""Wall-clock time of the full metric set on 10,000 test pairs (JSON lines).

The model is the default config's MMVAE (freshly initialised, or a trained run with
--run-dir) on `synthetic-pairs` with 10,000 test pairs (n_test=5000, dm=2). Timing does
not depend on classifier accuracy, so freshly initialised classifiers of the evaluation
architectures are used; no number printed here is a quality score. The importance-sampled
log-likelihood metrics (K=1000) are timed on --ll-rows rows and their time on all 10,000
rows is extrapolated linearly (labelled as such).

For the likelihoods the script also prints the machine's fp32 matmul rate (2048x2048,
before and after, same process: a loaded machine shows here) and the FLOPs of the joint
metric (torch's FlopCounterMode over the same call on one row, times rows), hence its achieved
GFLOP/s and the floor on the 10,000-row time at the matmul rate measured before. `--memory-mb` and
`--device` are passed to the likelihood metrics; `--only-likelihood` skips the others.

    python benchmarks/eval_time.py --ll-rows 200
    python benchmarks/eval_time.py --only-likelihood joint --ll-rows 100 --memory-mb 1024
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from mmdgm.evaluate import METRICS, EvalContext
from mmdgm.evaluate.classifier_store import ARCHITECTURES, architecture_for
from mmdgm.evaluate.runner import DEFAULT_METRICS
from mmdgm.run import load_config, load_dataset, load_run
from mmdgm.models.factory import build_model

LIKELIHOOD_METRICS = ("joint_log_likelihood", "conditional_log_likelihoods")
ONLY = {"joint": ("joint_log_likelihood",), "conditional": ("conditional_log_likelihoods",), "both": LIKELIHOOD_METRICS}


def matmul_gflops(n: int = 2048, reps: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e9


def metric_flops_per_row(metric, ctx: EvalContext, options: dict) -> int:
    """FLOPs (matmuls and convolutions) the metric spends on the first test row, with the
    options of the timed call: counts whatever passes the code under test makes."""
    with FlopCounterMode(display=False) as counter:
        metric(ctx, **{**options, "n": 1})
    return counter.get_total_flops()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run-dir", help="a trained run of the default config (default: a fresh model)")
    p.add_argument("--ll-rows", type=int, default=200, help="rows for the K=1000 likelihood metrics")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--only-likelihood", choices=sorted(ONLY), help="time only these likelihood metrics")
    p.add_argument("--memory-mb", type=float, help="the likelihood metrics' memory budget (default: none)")
    p.add_argument("--device", help="the likelihood metrics' device (default: the metric's, 'auto')")
    p.add_argument("--no-scaled", action="store_true", help="joint: log p only (the metric's scaled=False)")
    args = p.parse_args()
    ll_options = {"n": args.ll_rows}
    if args.memory_mb is not None:
        ll_options["memory_mb"] = args.memory_mb
    if args.device is not None:
        ll_options["device"] = args.device
    config = load_config("mmvae-synthetic-pairs", ["data.options={n_test: 5000, dm: 2}"])
    test_set = load_dataset(config, "test")
    train_set = None if args.only_likelihood else load_dataset(config, "train")
    if args.run_dir:
        model = load_run(Path(args.run_dir))[1]
    else:
        torch.manual_seed(0)
        model = build_model(config.model, test_set.shapes).eval()
    classifiers = {
        n: ARCHITECTURES.get(architecture_for(s))(s, 10).eval() for n, s in test_set.shapes.items()
    }
    rate_before = matmul_gflops()
    print(json.dumps({"name": "setup", "test_pairs": len(test_set), "threads": torch.get_num_threads(),
                      "likelihood_options": ll_options, "matmul_fp32_gflops": round(rate_before, 1)}), flush=True)
    total = 0.0
    metrics = ONLY[args.only_likelihood] if args.only_likelihood else DEFAULT_METRICS
    with tempfile.TemporaryDirectory() as tmp:
        ctx = EvalContext(model, test_set, train_set, classifiers, Path(tmp), args.batch_size, 0, False)
        for name in metrics:
            options = ll_options if name in LIKELIHOOD_METRICS else {}
            if name == "joint_log_likelihood" and args.no_scaled:
                options = {**options, "scaled": False}
            start = time.perf_counter()
            METRICS.get(name)(ctx, **options)
            seconds = time.perf_counter() - start
            rows = args.ll_rows if name in LIKELIHOOD_METRICS else len(test_set)
            full = seconds * len(test_set) / rows
            total += full
            record = {"name": name, "seconds": round(seconds, 2), "rows": rows}
            if rows != len(test_set):
                record["extrapolated_seconds_10000_rows"] = round(full, 1)
            if name == "joint_log_likelihood":
                flops = metric_flops_per_row(METRICS.get(name), ctx, options) * rows
                record["gflop"] = round(flops / 1e9)
                record["achieved_gflops"] = round(flops / seconds / 1e9, 1)
                record["floor_seconds_10000_rows_at_matmul_rate"] = round(
                    flops * len(test_set) / rows / (rate_before * 1e9), 1)
            print(json.dumps(record), flush=True)
    rate = matmul_gflops()
    print(json.dumps({"name": "matmul_float32 (after)", "gflops": round(rate, 1)}), flush=True)
    if args.only_likelihood is None:
        print(json.dumps({"name": "total (10,000 pairs, K=1000; likelihoods extrapolated)", "seconds": round(total, 1)}))


if __name__ == "__main__":
    main()
