"""How loose are a trained run's importance-sampled likelihood estimates? (JSON lines)

For each run: the mean over `--rows` complete test rows (every `--stride`-th row, so that
caption datasets give different scenes) of `log_likelihood` with K = each of `--K`, for
the joint (every modality observed) and for each modality alone, with every llik_scale 1
(`--scales unit`) or as trained (`--scales trained`). An IWAE estimate rises towards
log p as K grows; a large rise, or values far below a comparable model's, flag a poor
proposal or a degenerate model (the PMI of `relatedness` is built from these terms).
Same seed for every K.

    python benchmarks/estimate_tightness.py runs/mmvae-captions-seed1 --K 30,1000 --rows 20 --stride 5
"""

from __future__ import annotations

import argparse
import contextlib
import json

import torch

from mmdgm.evaluate.likelihood import unit_llik_scales
from mmdgm.evaluate.relatedness import only
from mmdgm.run import load_run


def tightness(run_dir: str, Ks: list[int], rows: int, stride: int, scales: str) -> dict:
    """{"run", "scales", "rows", K: {"joint": mean, modality: mean, ...}} for one run."""
    _, model, test = load_run(run_dir, device="cpu")
    batch = test.batch(torch.arange(0, rows * stride, stride))
    out = {"run": run_dir, "scales": scales, "rows": rows}
    with torch.no_grad(), unit_llik_scales(model) if scales == "unit" else contextlib.nullcontext():
        for K in Ks:
            torch.manual_seed(0)
            values = {"joint": model.log_likelihood(batch, K=K, chunk=100)}
            values.update({n: model.log_likelihood(only(batch, n), K=K, chunk=100) for n in model.names})
            out[K] = {k: round(float(v.mean()), 3) for k, v in values.items()}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="trained run directories")
    p.add_argument("--K", default="30,1000", help="comma-separated sample counts (default 30,1000)")
    p.add_argument("--rows", type=int, default=20, help="test rows (default 20)")
    p.add_argument("--stride", type=int, default=1, help="take every stride-th test row (default 1)")
    p.add_argument("--scales", choices=("unit", "trained"), default="trained", help="llik_scales (default trained)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    for run in args.runs:
        print(json.dumps(tightness(run, [int(k) for k in args.K.split(",")], args.rows, args.stride, args.scales)),
              flush=True)


if __name__ == "__main__":
    main()
