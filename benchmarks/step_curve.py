"""How many steps does the street stand-in need? Coherence and latent accuracy vs. steps.

Trains one `mmvae-mnist-synthstreet` run at the `cpu` reproduce scale's settings (1:1
pairing, K=2, the config's objective) for `--max-step` steps, saving snapshots at
`--steps`; evaluates latent accuracy and joint/cross coherence at each snapshot; prints
one JSON object per snapshot and a last one with every point, and plots them (PNG). The
run is resumable: rerunning the command continues training from the last checkpoint and
evaluates only the snapshots not yet evaluated.

    python benchmarks/step_curve.py --out runs/step-curve --plot docs/step-curve.png
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from mmdgm import run  # noqa: E402
from mmdgm.config import load_config  # noqa: E402
from mmdgm.evaluate.report import flatten  # noqa: E402
from mmdgm.evaluate.runner import evaluate_run, read_eval  # noqa: E402
from mmdgm.reproduce import EXPERIMENTS  # noqa: E402
from mmdgm.train.trainer import CHECKPOINT, FINAL, snapshot_dir  # noqa: E402

CONFIG = "mmvae-mnist-synthstreet"
METRICS = ["latent_accuracy", "joint_coherence", "cross_coherence"]
CURVES = {
    "latent_accuracy/mnist": "latent acc. (MNIST enc.)",
    "latent_accuracy/synth_street": "latent acc. (street enc.)",
    "joint_coherence/joint_coherence": "joint coherence",
    "cross_coherence/mnist->synth_street": "MNIST -> street",
    "cross_coherence/synth_street->mnist": "street -> MNIST",
}


def config_for(steps: list[int], seed: int, overrides: list[str], epochs: int | None = None):
    """The cpu scale's config with snapshots at `steps` (and enough epochs to reach the last)."""
    scale = EXPERIMENTS.get("mmvae-table2").scales["cpu"]
    extra = [f"train.epochs={epochs}"] if epochs else []
    return load_config(CONFIG, [*scale.overrides, *overrides, f"train.seed={seed}", "train.final_metrics=[]",
                                f"train.snapshot_steps={steps}", *extra])


def trained(out: Path, steps: list[int], seed: int, overrides: list[str], stop_at: int) -> Path:
    """Train (or continue) the run up to step `stop_at`; returns its directory."""
    reached = [s for s in steps if s <= stop_at]
    if reached and snapshot_dir(out, reached[-1]).joinpath(FINAL).exists():
        return out
    per_epoch = run.make_trainer(config_for(steps, seed, overrides), out).batches_per_epoch
    trainer = run.make_trainer(config_for(steps, seed, overrides, math.ceil(steps[-1] / per_epoch)), out)
    if (out / CHECKPOINT).exists():
        trainer.resume()
    else:
        trainer.start()
    trainer.fit(stop_at_step=stop_at)
    return out


def plot(points: list[dict], path: Path, cpu_steps: int) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for key, label in CURVES.items():
        ax.plot([p["step"] for p in points], [p[key] for p in points], marker="o", label=label)
    ax.axvline(cpu_steps, color="grey", ls="--", lw=1)
    ax.text(cpu_steps, 0.02, " cpu scale", color="grey")
    ax.set(xscale="log", xlabel="training steps (batch 128, K=2)", ylabel="accuracy", ylim=(0, 1),
           title=f"{CONFIG}: MNIST + SYNTHETIC street digits")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/step-curve"))
    parser.add_argument("--steps", default="100,200,460,1000,2300,4600,8000",
                        help="snapshot steps, increasing; the last is where training stops")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--plot", type=Path, default=Path("docs/step-curve.png"))
    parser.add_argument("--stop-at", type=int, help="stop training at this step (default: the last of --steps); "
                        "the snapshots up to it are evaluated, and a rerun with a larger value continues")
    parser.add_argument("--cpu-steps", type=int, default=2300, help="where the cpu scale ends (marked on the plot)")
    parser.add_argument("overrides", nargs="*", help="extra config overrides, e.g. model.options.objective=iwae")
    args = parser.parse_args()
    steps = sorted(int(s) for s in args.steps.split(","))
    start = time.time()
    stop_at = args.stop_at or steps[-1]
    out = trained(args.out, steps, args.seed, args.overrides, stop_at)
    train_seconds = time.time() - start
    points = []
    for step in [s for s in steps if s <= stop_at]:
        where = snapshot_dir(out, step)
        if not set(METRICS) <= set(read_eval(where)):
            evaluate_run(out, METRICS, train_classifiers=True, snapshot=step, progress=False)
        point = {"step": step, **flatten(read_eval(where))}
        points.append(point)
        print(json.dumps(point), flush=True)
    plot(points, args.plot, args.cpu_steps)
    print(json.dumps({"config": CONFIG, "seed": args.seed, "overrides": args.overrides, "train_seconds": round(train_seconds),
                      "plot": str(args.plot), "points": points}))


if __name__ == "__main__":
    main()
