"""Training throughput of the MMVAE MNIST-SVHN step on random tensors of the right shapes.

Prints one JSON object per line: the machine's float32 matmul GFLOP/s, then training
pairs per second for the paper's step (K=30 looser DReG, batch 128), the K=1 ELBO step,
the K=30 step with the SVHN networks in NCHW layout (what channels-last buys), and with
`--estimators` the step of every MMVAE objective at K=2 and K=30, with `--contrastive` the
K=2 step with the contrastive objective (IWAE and CUBO term 2, N=5 anchored and repaired
negatives, K=2).
Usage: python benchmarks/train_throughput.py [--steps N] [--threads T] [--estimators] [--contrastive]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from mmdgm import Batch
from mmdgm.config import load_config
from mmdgm.models.factory import build_model

SHAPES = {"mnist": (1, 28, 28), "svhn": (3, 32, 32)}


def matmul_gflops(n: int = 2048, reps: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(2):
        a @ b
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e9


def step_seconds(K: int, objective: str, batch_size: int, steps: int, overrides: tuple[str, ...] = ()) -> list[float]:
    cfg = load_config("mmvae-mnist-svhn", [f"model.options.K={K}", f"model.options.objective={objective}", *overrides])
    torch.manual_seed(0)
    model = build_model(cfg.model, SHAPES)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, amsgrad=True)
    batch = Batch({k: torch.rand(batch_size, *s) for k, s in SHAPES.items()})
    times = []
    for i in range(steps + 2):
        start = time.perf_counter()
        out = model(batch)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        if i >= 2:  # warm-up steps excluded
            times.append(time.perf_counter() - start)
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--steps", type=int, default=5, help="timed steps per setting (after 2 warm-up steps)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--estimators", action="store_true", help="also time every MMVAE objective at K=2 and K=30")
    p.add_argument("--contrastive", action="store_true", help="also time the contrastive objective at K=2")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    print(json.dumps({"name": "matmul_float32", "gflops": round(matmul_gflops(), 1), "threads": threads}), flush=True)
    nchw = ("model.modalities.svhn.net_options={channels_last: false}",)
    settings = [
        ("mmvae-mnist-svhn K=30 dreg", 30, "dreg", args.steps, ()),
        ("mmvae-mnist-svhn K=1 elbo", 1, "elbo", args.steps * 10, ()),
        ("mmvae-mnist-svhn K=30 dreg, NCHW convolutions (ablation)", 30, "dreg", args.steps, nchw),
    ]
    if args.estimators:
        settings += [
            (f"mmvae-mnist-svhn K={K} {objective}", K, objective, args.steps * (5 if K == 2 else 1), ())
            for K in (2, 30) for objective in ("dreg", "dreg_naive", "stl_looser", "iwae", "iwae_tight")
        ]
    if args.contrastive:
        settings += [("mmvae-mnist-svhn K=2 iwae (no contrastive term)", 2, "iwae", args.steps * 5, ())] + [
            (f"mmvae-mnist-svhn K=2 iwae + contrastive {e} (N=5, term-2 K=2, {neg} negatives)", 2, "iwae",
             args.steps * 2, (f"model.contrastive={{estimator: {e}, K: 2, negatives: {neg}}}",))
            for neg in ("anchored", "repaired") for e in ("iwae", "cubo")
        ]
    for name, K, objective, steps, overrides in settings:
        times = step_seconds(K, objective, 128, steps, overrides)
        median = statistics.median(times)
        print(json.dumps({
            "name": name, "K": K, "batch": 128, "objective": objective,
            "pairs_per_s": round(128 / median, 1), "seconds_per_step": round(median, 4),
            "steps": steps, "threads": threads,
        }), flush=True)


if __name__ == "__main__":
    main()
