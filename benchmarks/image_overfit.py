"""Can one modality's VAE fit a handful of its own training items? A learning diagnostic.

Trains the encoder and decoder of MODALITY of a built-in config as a one-modality VAE
(ELBO with the config's likelihood, llik_scale and prior; Adam at the config's learning
rate) on the first N training items, and prints one JSON object per logged step: the loss,
the KL, the mean absolute error of the decoder mean against the mean error of the
per-pixel mean image (the best input-blind output), and the share of decoder means below
1e-3 (a saturated sigmoid). It separates "the networks cannot learn these items" from
"the joint objective does not ask them to".
Usage: python benchmarks/image_overfit.py CONFIG MODALITY [--items N] [--steps S] [key=value ...]
e.g. python benchmarks/image_overfit.py mmvae-captions image model.modalities.image.llik_scale=1.0
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from mmdgm.config import load_config
from mmdgm.models.factory import build_model
from mmdgm.run import load_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("modality")
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--items", type=int, default=16)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--every", type=int, default=25)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_intermixed_args()
    torch.manual_seed(args.seed)
    cfg = load_config(args.config, args.overrides)
    dataset = load_dataset(cfg, "train")
    model = build_model(cfg.model, dataset.shapes)
    name, spec = args.modality, model.modalities[args.modality]
    x = dataset.batch(torch.arange(args.items)).data[name]
    blind_error = float((x - x.mean(0)).abs().mean())
    optimiser = torch.optim.Adam(model.parameters(), cfg.train.lr, amsgrad=cfg.train.amsgrad)
    start = time.perf_counter()
    for step in range(args.steps + 1):
        q = model.posterior(name, x)
        z = q.rsample()
        likelihood = model.likelihood(name, z)
        kl = (q.log_prob(z) - model.prior().log_prob(z)).sum(-1)
        loss = -(spec.llik_scale * likelihood.log_prob_sum(x, len(spec.shape)) - kl).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if step % args.every == 0:
            mean = likelihood.mean.detach()
            print(json.dumps({
                "config": args.config, "modality": name, "overrides": args.overrides, "step": step,
                "loss": round(float(loss.detach()), 2), "kl": round(float(kl.mean()), 2),
                "abs_error": round(float((mean - x).abs().mean()), 4), "mean_image_abs_error": round(blind_error, 4),
                "saturated_share": round(float((mean < 1e-3).float().mean()), 3),
                "seconds": round(time.perf_counter() - start, 1),
            }), flush=True)


if __name__ == "__main__":
    main()
