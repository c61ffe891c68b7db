"""Training throughput of the MMVAE MNIST-SVHN step on random tensors of the right shapes.

Prints one JSON object per line: the machine's float32 matmul GFLOP/s (2048x2048, measured
again after every setting in the same process), then training pairs per second for the
paper's step (K=30 looser DReG, batch 128) with its FLOP-based efficiency (forward and
backward FLOPs of one step counted by torch's FlopCounterMode: convolutions, transposed
convolutions and matmuls; achieved FLOP/s over the mean of the fp32 matmul FLOP/s measured
just before and just after that setting),
the K=1 ELBO step,
the K=30 step with the SVHN networks in NCHW layout (what channels-last buys), and with
`--estimators` the step of every MMVAE objective at K=2 and K=30, with `--contrastive` the
K=2 step with the contrastive objective (IWAE and CUBO term 2, N=5 anchored and repaired
negatives, K=2).
`--device` (cpu, cuda, auto) and `--precision` (fp32; tf32, bf16 and fp16 autocast on CUDA)
pick where and how the steps run; `--compile` adds the K=30 step with torch.compile'd
encoders and decoders, its compile time (first step minus a timed step) and the number of
steps after which it pays for itself. `--only-k30` times the K=30 step alone.
Usage: python benchmarks/train_throughput.py [--steps N] [--threads T] [--device D] [--precision P]
       [--compile] [--only-k30] [--estimators] [--contrastive]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from mmdgm import Batch
from mmdgm.config import load_config
from mmdgm.models.factory import build_model

SHAPES = {"mnist": (1, 28, 28), "svhn": (3, 32, 32)}


AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}
PRECISIONS = ("fp32", "tf32", "bf16", "fp16")


def resolve(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def set_precision(device: torch.device, precision: str) -> None:
    """tf32 matmuls and convolutions on CUDA only for "tf32"; others need no global switch."""
    if precision not in PRECISIONS:
        raise SystemExit(f"unknown precision {precision!r}; known: {PRECISIONS}")
    if precision != "fp32" and device.type != "cuda":
        raise SystemExit(f"--precision {precision} is for CUDA; on {device.type} only fp32 is measured")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
        torch.backends.cudnn.allow_tf32 = precision == "tf32"


def autocast(device: torch.device, precision: str):
    if precision in AUTOCAST:
        return torch.autocast(device.type, dtype=AUTOCAST[precision])
    return contextlib.nullcontext()


def matmul_gflops(device: torch.device, precision: str = "fp32", n: int = 2048, reps: int = 10) -> float:
    """GFLOP/s of n x n matmuls in `precision` (fp32 storage; autocast for bf16/fp16)."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    with autocast(device, precision):
        for _ in range(2):
            a @ b
        sync(device)
        start = time.perf_counter()
        for _ in range(reps):
            a @ b
        sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e9


def setup(K: int, objective: str, batch_size: int, overrides: tuple[str, ...], device: torch.device):
    cfg = load_config("mmvae-mnist-svhn", [f"model.options.K={K}", f"model.options.objective={objective}", *overrides])
    torch.manual_seed(0)
    model = build_model(cfg.model, SHAPES).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, amsgrad=True)
    batch = Batch({k: torch.rand(batch_size, *s) for k, s in SHAPES.items()}).to(device)
    return model, opt, batch


def compile_networks(model: torch.nn.Module) -> None:
    """torch.compile every encoder and decoder (the model's Python logic stays eager)."""
    for group in (model.encoders, model.decoders):
        for name in list(group):
            group[name] = torch.compile(group[name])


def train_step(model, opt, batch, device: torch.device, precision: str) -> None:
    with autocast(device, precision):
        out = model(batch)
    opt.zero_grad(set_to_none=True)
    out.loss.backward()
    opt.step()


def step_flops(K: int, objective: str, batch_size: int, device: torch.device) -> int:
    """Forward + backward FLOPs of one training step (FlopCounterMode: matmuls and convolutions)."""
    model, opt, batch = setup(K, objective, batch_size, (), device)
    with FlopCounterMode(display=False) as counter:
        out = model(batch)
        out.loss.backward()
    return counter.get_total_flops()


def step_seconds(
    K: int, objective: str, batch_size: int, steps: int, overrides: tuple[str, ...] = (),
    device: torch.device = torch.device("cpu"), precision: str = "fp32", compiled: bool = False,
) -> tuple[list[float], float]:
    """Seconds of each timed step (after 2 warm-up steps) and of the first step."""
    model, opt, batch = setup(K, objective, batch_size, overrides, device)
    if compiled:
        compile_networks(model)
    times = []
    first = 0.0
    for i in range(steps + 2):
        sync(device)
        start = time.perf_counter()
        train_step(model, opt, batch, device, precision)
        sync(device)
        if i == 0:
            first = time.perf_counter() - start
        if i >= 2:  # warm-up steps excluded
            times.append(time.perf_counter() - start)
    return times, first


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--steps", type=int, default=5, help="timed steps per setting (after 2 warm-up steps)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--device", default="cpu", help="cpu, cuda[:i] or auto (the GPU when present)")
    p.add_argument("--precision", default="fp32", choices=PRECISIONS, help="fp32; tf32/bf16/fp16 on CUDA")
    p.add_argument("--compile", action="store_true", help="also time the K=30 step with compiled networks")
    p.add_argument("--only-k30", action="store_true", help="time the K=30 step only (and --compile's)")
    p.add_argument("--estimators", action="store_true", help="also time every MMVAE objective at K=2 and K=30")
    p.add_argument("--contrastive", action="store_true", help="also time the contrastive objective at K=2")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve(args.device)
    set_precision(device, args.precision)
    threads = torch.get_num_threads()
    where = {"device": str(device), "precision": args.precision, "threads": threads}
    rates = [matmul_gflops(device)]
    print(json.dumps({"name": "matmul_float32", "gflops": round(rates[0], 1), **where}), flush=True)
    if args.precision in AUTOCAST:
        print(json.dumps({"name": f"matmul_{args.precision}", "gflops": round(matmul_gflops(device, args.precision), 1),
                          **where}), flush=True)
    nchw = ("model.modalities.svhn.net_options={channels_last: false}",)
    k30 = ("mmvae-mnist-svhn K=30 dreg", 30, "dreg", args.steps, ())
    settings = [k30] if args.only_k30 else [
        k30,
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
    records = []
    runs = [(s, False) for s in settings] + ([(k30, True)] if args.compile else [])
    for (name, K, objective, steps, overrides), compiled in runs:
        times, first = step_seconds(K, objective, 128, steps, overrides, device, args.precision, compiled)
        median = statistics.median(times)
        record = {
            "name": name + (", torch.compile'd networks" if compiled else ""), "K": K, "batch": 128,
            "objective": objective, "pairs_per_s": round(128 / median, 1), "seconds_per_step": round(median, 4),
            "steps": steps, **where,
        }
        if K == 30 and not overrides:
            record["gflop_per_step"] = round(step_flops(K, objective, 128, device) / 1e9, 1)
            record["achieved_gflops"] = round(record["gflop_per_step"] / median, 1)
        if compiled:
            eager = next(r for r in records if r["name"] == k30[0])["seconds_per_step"]
            record["compile_seconds"] = round(first - median, 1)
            record["saved_seconds_per_step"] = round(eager - median, 4)
            record["break_even_steps"] = round(record["compile_seconds"] / record["saved_seconds_per_step"]) \
                if eager > median else None
        rates.append(matmul_gflops(device))
        if "achieved_gflops" in record:
            record["matmul_fp32_gflops_around"] = [round(r, 1) for r in rates[-2:]]
            record["efficiency_vs_fp32_matmul"] = round(record["achieved_gflops"] / statistics.mean(rates[-2:]), 3)
        records.append(record)
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
