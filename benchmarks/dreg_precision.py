"""How exact is `dreg_mixture` in the real model? Prints one JSON object per (stage, K).

For `mmvae-synthetic-pairs` (MNIST MLP + SVHN conv, DReG) at initialisation and
at the weights of any runs given, on test pairs: the share of samples whose normalised
weight w~ is exactly 0 in float32 (their -c dlw/dz term is dropped), subnormal (reduced
precision), or whose log(c/w~) exceeds 80 (where the clamp removed in this version biased
the gradient); and, with --draws R, the encoder-gradient bias of `dreg` against plain
IWAE gradients over R paired draws (max |mean difference| / SE over all coordinates, and
the share of coordinates beyond 4 SE; about 6e-5 of them would be by chance).
Usage: python benchmarks/dreg_precision.py [--runs RUN_DIR ...] [--batch 64] [--draws 200]
"""

from __future__ import annotations

import argparse
import json
import math

import torch

from mmdgm.objectives.estimators import mixture_weights, responsibilities
from mmdgm.run import load_dataset, load_run, make_trainer
from mmdgm.config import load_config


def weight_stats(model, batch, K: int) -> dict[str, float]:
    with torch.no_grad():
        s = model.stratified_sample(batch, K, detach_q=True)
        log_r = responsibilities(s.q.component_log_probs(s.base), s.mask)
        w, _, log_c_over_w = mixture_weights(s.lw, log_r)
        kept = s.mask[:, None, :].expand_as(w)
        tiny = torch.finfo(w.dtype).tiny
        spread = (s.lw.amax(1) - s.lw.amin(1))[s.mask]
    return {
        "w_zero": float((w[kept] == 0).double().mean()),
        "w_subnormal": float(((w[kept] > 0) & (w[kept] < tiny)).double().mean()),
        "log_c_over_w_above_80": float((log_c_over_w[kept] > 80).double().mean()),
        "median_lw_spread_in_stratum": float(spread.median()),
    }


def encoder_grads(model, batch, objective: str, seed: int) -> torch.Tensor:
    model.objective = objective
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    model(batch).loss.backward()
    return torch.cat([p.grad.flatten() for n, p in model.named_parameters() if n.startswith("encoders.")])


def bias(model, batch, draws: int) -> dict[str, float]:
    diffs = torch.stack([encoder_grads(model, batch, "dreg", s) - encoder_grads(model, batch, "iwae", s) for s in range(draws)])
    z = diffs.mean(0) / (diffs.std(0) / math.sqrt(draws)).clamp_min(1e-30)
    return {"draws": draws, "max_abs_z": float(z.abs().max()), "share_beyond_4se": float((z.abs() > 4).double().mean())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--runs", nargs="*", default=[], help="trained run directories of the default config")
    p.add_argument("--batch", type=int, default=64, help="test pairs per measurement")
    p.add_argument("--draws", type=int, default=0, help="paired draws for the bias check (0: skip)")
    args = p.parse_args()
    config = load_config("mmvae-synthetic-pairs", ["data.options.n_train=200", "data.options.n_test=500"])
    init_model = make_trainer(config, "unused").model
    stages = [("init", init_model, load_dataset(config, "test"))]
    stages += [(str(r), *load_run(r)[1:]) for r in args.runs]
    for stage, model, test_set in stages:
        batch = test_set.batch(torch.linspace(0, len(test_set) - 1, args.batch).long())
        model.train()
        for K in (2, 30):
            model.K = K
            row = {"stage": stage, "K": K, "batch": args.batch, **weight_stats(model, batch, K)}
            if args.draws:
                row.update(bias(model, batch.select(torch.arange(min(8, args.batch))), args.draws))
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
