"""How hard are the procedural stand-ins? Time their generation and train digit classifiers.

Prints one JSON line per dataset: generation time for the train + test sets (uncached,
in a temporary directory), then the test accuracy of the MMVAE-style evaluation
classifier trained on the train set.

    python benchmarks/standin_difficulty.py --n-train 20000 --n-test 5000 --epochs 5
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from mmdgm.data.procedural import load_or_generate
from mmdgm.evaluate.classifiers import train_classifier

DATASETS = ("synthetic-street-digits", "synthetic-handwritten-digits")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=DATASETS, action="append", help="default: both")
    parser.add_argument("--n-train", type=int, default=20000)
    parser.add_argument("--n-test", type=int, default=5000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for name in args.dataset or DATASETS:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.time()
            train_x, train_y = load_or_generate(name, "train", Path(tmp), args.n_train, args.seed)
            test_x, test_y = load_or_generate(name, "test", Path(tmp), args.n_test, args.seed)
            generate_seconds = time.time() - start
        start = time.time()
        _, acc = train_classifier(
            train_x, train_y, test_x, test_y, epochs=args.epochs, seed=args.seed
        )
        print(
            json.dumps(
                {
                    "dataset": name,
                    "n_train": args.n_train,
                    "n_test": args.n_test,
                    "epochs": args.epochs,
                    "test_accuracy": round(acc, 4),
                    "seconds": round(time.time() - start, 1),
                    "generate_seconds": round(generate_seconds, 1),
                    "threads": torch.get_num_threads(),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
