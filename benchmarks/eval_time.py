"""Wall-clock time of the full metric set on 10,000 test pairs (JSON lines).

The model is the default config's MMVAE (freshly initialised, or a trained run with
--run-dir) on `synthetic-pairs` with 10,000 test pairs (n_test=5000, dm=2). Timing does
not depend on classifier accuracy, so freshly initialised classifiers of the evaluation
architectures are used; no number printed here is a quality score. The importance-sampled
log-likelihood metrics (K=1000) are timed on --ll-rows rows and their time on all 10,000
rows is extrapolated linearly (labelled as such).

    python benchmarks/eval_time.py --ll-rows 200
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from mmdgm.evaluate import METRICS, EvalContext
from mmdgm.evaluate.classifier_store import ARCHITECTURES, architecture_for
from mmdgm.evaluate.runner import DEFAULT_METRICS
from mmdgm.run import load_config, load_dataset, load_run
from mmdgm.models.factory import build_model

LIKELIHOOD_METRICS = ("joint_log_likelihood", "conditional_log_likelihoods")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run-dir", help="a trained run of the default config (default: a fresh model)")
    p.add_argument("--ll-rows", type=int, default=200, help="rows for the K=1000 likelihood metrics")
    p.add_argument("--batch-size", type=int, default=256)
    args = p.parse_args()
    config = load_config("mmvae-synthetic-pairs", ["data.options={n_test: 5000, dm: 2}"])
    test_set, train_set = load_dataset(config, "test"), load_dataset(config, "train")
    if args.run_dir:
        model = load_run(Path(args.run_dir))[1]
    else:
        torch.manual_seed(0)
        model = build_model(config.model, test_set.shapes).eval()
    classifiers = {
        n: ARCHITECTURES.get(architecture_for(s))(s, 10).eval() for n, s in test_set.shapes.items()
    }
    print(json.dumps({"name": "setup", "test_pairs": len(test_set), "threads": torch.get_num_threads()}), flush=True)
    total = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        ctx = EvalContext(model, test_set, train_set, classifiers, Path(tmp), args.batch_size, 0, False)
        for name in DEFAULT_METRICS:
            options = {"n": args.ll_rows} if name in LIKELIHOOD_METRICS else {}
            start = time.perf_counter()
            METRICS.get(name)(ctx, **options)
            seconds = time.perf_counter() - start
            rows = args.ll_rows if name in LIKELIHOOD_METRICS else len(test_set)
            full = seconds * len(test_set) / rows
            total += full
            record = {"name": name, "seconds": round(seconds, 2), "rows": rows}
            if rows != len(test_set):
                record["extrapolated_seconds_10000_rows"] = round(full, 1)
            print(json.dumps(record), flush=True)
    print(json.dumps({"name": "total (10,000 pairs, K=1000; likelihoods extrapolated)", "seconds": round(total, 1)}))


if __name__ == "__main__":
    main()
