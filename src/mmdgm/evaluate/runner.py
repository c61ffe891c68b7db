"""`mmdgm evaluate`: compute metrics for a trained run and write eval.json + figures."""

from __future__ import annotations

import functools
import inspect
import json
import logging
from pathlib import Path
from typing import Any

from tqdm import tqdm

from mmdgm.data.paths import data_root
from mmdgm.evaluate.context import EvalContext
from mmdgm.evaluate.registry import METRICS
from mmdgm.train.checkpoint import atomic_write_text

log = logging.getLogger("mmdgm.evaluate")

EVAL_FILE = "eval.json"
EVAL_SPLITS = ("test", "val")
DEFAULT_METRICS = (
    "latent_accuracy",
    "joint_coherence",
    "cross_coherence",
    "synergy_coherence",
    "joint_log_likelihood",
    "conditional_log_likelihoods",
    "generation_diversity",
    "latent_traversals",
    "latent_kl",
)
NEEDS_CLASSIFIERS = {"joint_coherence", "cross_coherence", "synergy_coherence", "generation_diversity", "attribute_coherence"}
NEEDS_TRAIN_SET = {"latent_accuracy", "latent_accuracy_split", "downstream_classification", "observed_only_classifier",
                   "cca_coherence"}


OPTIONS_KEY = "_options"
# Options added to metrics after results were first recorded, each with the value that
# reproduces a result recorded without it: "rows" (`common.test_rows`) was "first" then,
# "fit_pairs" (`common.fit_set`) "observed".
ADDED_OPTIONS = {"rows": "first", "fit_pairs": "observed"}


def same_computation(recorded: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """Whether a result recorded with options `recorded` is what `wanted` computes: an
    option the record lacks reads as its `ADDED_OPTIONS` value, and `rows` does not
    matter where `n` is null (every row)."""
    recorded = {**{k: v for k, v in ADDED_OPTIONS.items() if k in wanted}, **recorded}
    if wanted.get("n", 0) is None and recorded.get("n", 0) is None:
        recorded, wanted = ({k: v for k, v in o.items() if k != "rows"} for o in (recorded, wanted))
    return recorded == wanted


def read_eval_file(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / EVAL_FILE
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is corrupt ({e}); move it away to re-evaluate from scratch") from e


def store_result(out: Path, name: str, value: Any, options: dict[str, Any]) -> dict[str, Any]:
    """Write metric `name`'s result and options into out/eval.json over what the file holds
    now (another process may have added metrics since this one read it); returns the
    file's results."""
    held = read_eval_file(out)
    recorded = {**held.get(OPTIONS_KEY, {}), name: options}
    results = {**{k: v for k, v in held.items() if k != OPTIONS_KEY}, name: value}
    atomic_write_text(out / EVAL_FILE, json.dumps({**results, OPTIONS_KEY: recorded}, indent=2))
    return results


def read_eval(run_dir: Path) -> dict[str, Any]:
    """The run's eval.json: metric -> result (without the record of their options)."""
    return {k: v for k, v in read_eval_file(run_dir).items() if k != OPTIONS_KEY}


def resolved_options(name: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every keyword option of metric `name`: its defaults updated with `options`, as JSON
    would store them, so that a default given explicitly equals the default left out."""
    fn = METRICS.get(name)
    defaults = {p.name: p.default for p in list(inspect.signature(fn).parameters.values())[1:]
                if p.default is not inspect.Parameter.empty}
    return json.loads(json.dumps({**defaults, **(options or {})}))


def needs_run_train_set(names: list[str], options: dict[str, dict[str, Any]]) -> bool:
    """Whether any metric in `names` fits on the run's own train rows: those in
    `NEEDS_TRAIN_SET`, save any fitted on the full data (`fit_pairs="all"`)."""
    return any(name in NEEDS_TRAIN_SET and resolved_options(name, options.get(name)).get("fit_pairs") != "all"
               for name in names)


def to_compute(run_dir: Path, metrics: list[str], options: dict[str, dict[str, Any]] | None = None) -> list[str]:
    """The `metrics` that eval.json lacks or holds computed with other options than
    `options[metric]` (defaults filled in; `same_computation`). A result written before
    options were recorded is reused, with a warning: nothing says how it was computed."""
    stored = read_eval_file(run_dir)
    recorded = stored.get(OPTIONS_KEY, {})
    out = []
    for name in metrics:
        if name not in stored:
            out.append(name)
        elif name not in recorded:
            log.warning("%s: %s predates the record of metric options; reused as is (delete it to re-score)",
                        Path(run_dir) / EVAL_FILE, name)
        elif not same_computation(recorded[name], resolved_options(name, (options or {}).get(name))):
            out.append(name)
    return out


def evaluate_run(
    run_dir: Path,
    metrics: list[str] | None = None,
    options: dict[str, dict[str, Any]] | None = None,
    classifier_floor: float = 0.8,
    root: Path | None = None,
    seed: int = 0,
    batch_size: int = 256,
    progress: bool = True,
    train_classifiers: bool = False,
    snapshot: int | None = None,
    device: str = "auto",
    split: str = "test",
) -> dict[str, Any]:
    """Compute `metrics` (default: all) for the run in `run_dir`; merge them into its
    eval.json (other metrics already there are kept; each metric's options, defaults filled
    in, are recorded under "_options" for `to_compute`) and return the merged results.
    Coherence classifiers are those of the run's dataset with its data options; with
    `train_classifiers`, missing ones are trained first instead of being an error. With
    `snapshot`, the weights saved after that global step are evaluated and eval.json and
    figures go to that snapshot's directory (`snapshots/step{N}/`). With `split="val"` (datasets
    that draw one) the metrics are computed on the validation split and written under `val/`
    of that directory, so that settings can be chosen without the test split. The model is
    evaluated on `device` ("auto": CUDA when available), whatever device trained it."""
    from mmdgm.evaluate.classifier_store import (
        AUTO_MIN_STEPS,
        MissingClassifierError,
        load_classifiers,
        train_dataset_classifiers,
    )
    from mmdgm.run import load_dataset, load_run
    from mmdgm.train.trainer import snapshot_dir

    run_dir = Path(run_dir)
    names = list(metrics or DEFAULT_METRICS)
    for name in names:
        METRICS.get(name)
    options = options or {}
    unknown = [k for k in options if k not in names]
    if unknown:
        raise ValueError(f"options given for metrics that are not requested: {unknown}")
    if split not in EVAL_SPLITS:
        raise ValueError(f"evaluation split must be one of {EVAL_SPLITS}, got {split!r}")
    config, model, test_set = load_run(run_dir, snapshot, device, split)
    out = run_dir if snapshot is None else snapshot_dir(run_dir, snapshot)
    out = out if split == "test" else out / split
    results = read_eval(out)
    root = Path(root or config.data.root or data_root())
    classifiers = None
    if NEEDS_CLASSIFIERS & set(names):
        data = config.data
        try:
            classifiers = load_classifiers(data.name, model.names, root, classifier_floor, data.options)
        except MissingClassifierError:
            if not train_classifiers:
                raise
            train_dataset_classifiers(data.name, root, data.options, seed=seed, progress=progress,
                                      min_steps=AUTO_MIN_STEPS)
            classifiers = load_classifiers(data.name, model.names, root, classifier_floor, data.options)
    ctx = EvalContext(
        model=model,
        test_set=test_set,
        train_set=load_dataset(config, "train") if needs_run_train_set(names, options) else None,
        full_train=functools.cache(lambda: load_dataset(config, "train", full=True)),
        classifiers=classifiers,
        out_dir=out / "eval",
        batch_size=batch_size,
        seed=seed,
        progress=progress,
    )
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    for name in tqdm(names, desc="metrics", disable=not progress):
        value = METRICS.get(name)(ctx, **options.get(name, {}))
        results = store_result(out, name, value, resolved_options(name, options.get(name)))
        log.info("%s: %s", name, json.dumps(value)[:300])
    return results
