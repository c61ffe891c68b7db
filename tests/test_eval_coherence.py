"""Coherence, diversity and latent-accuracy metrics on constructed models whose answers
are known, and the classifier store (train, reload, floor, missing-classifier errors)."""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from mmdgm.cli import parser
from mmdgm.config import load_config
from mmdgm.data import DATASETS, MultimodalDataset
from mmdgm.evaluate import METRICS, EvalContext
from mmdgm.evaluate.classifier_store import (
    MissingClassifierError,
    WeakClassifierError,
    architecture_for,
    cmd_classifiers_train,
    load_classifiers,
    source_examples,
    store_dir,
    train_dataset_classifiers,
)
from mmdgm.evaluate.classifiers import DigitClassifier, accuracy
from mmdgm.evaluate.coherence import pair_key, source_subsets
from mmdgm.evaluate.vector_classifier import VectorClassifier
from mmdgm.models.factory import build_model
from tests.conftest import TINY_CONFIG, tiny_pairs

CLASSES = 10
DIM = 16


def sq_distances(x: Tensor, prototypes: Tensor) -> Tensor:
    """(B, classes) squared distances (torch.cdist is needlessly slow at these sizes)."""
    return (x.flatten(1)[:, None, :] - prototypes[None]).pow(2).sum(-1)


def binomial_tolerance(p: float, n: int, sds: float = 4.0) -> float:
    return sds * math.sqrt(p * (1 - p) / n)


# --- stubs exposing the model verbs the metrics use ----------------------------------


class PointMass:
    """A 'distribution' with a mean and noisy samples (global RNG, so metrics seed it)."""

    def __init__(self, loc: Tensor, noise: float = 0.0) -> None:
        self.loc, self.noise = loc, noise

    @property
    def mean(self) -> Tensor:
        return self.loc

    def sample(self) -> Tensor:
        return self.loc + self.noise * torch.randn_like(self.loc)


class StubModel(nn.Module):
    """Encoders recognise the class of an input as its nearest prototype and map it to a
    latent `latent(classes)` (default: one-hot); decoder m renders the prototype of class
    `render[m](argmax z)` (default: the class itself); the prior draws a uniform class."""

    def __init__(self, prototypes: dict[str, Tensor], render=None, latent=None, noise: float = 0.05) -> None:
        super().__init__()
        self.prototypes = prototypes
        self.render = {m: (render or {}).get(m, lambda c: c) for m in prototypes}
        self.latent = latent or (lambda c: nn.functional.one_hot(c, CLASSES).float())
        self.noise = noise
        self.drawn: list[Tensor] = []

    @property
    def names(self) -> list[str]:
        return list(self.prototypes)

    @property
    def modalities(self) -> dict[str, tuple[int, ...]]:
        return {m: (DIM,) for m in self.prototypes}

    def posterior(self, name: str, x: Tensor) -> PointMass:
        classes = sq_distances(x, self.prototypes[name]).argmin(1)
        return PointMass(self.latent(classes), self.noise)

    def encode(self, batch, modalities=None) -> PointMass:
        names = modalities or self.names
        return PointMass(torch.stack([self.posterior(n, batch.data[n]).loc for n in names]).mean(0), self.noise)

    def decode(self, z: Tensor, modalities=None) -> dict[str, PointMass]:
        classes = z.argmax(-1)
        return {m: PointMass(self.prototypes[m][self.render[m](classes)]) for m in modalities or self.names}

    def sample(self, n: int, modalities=None) -> dict[str, Tensor]:
        classes = torch.randint(0, CLASSES, (n,))
        self.drawn.append(classes)
        return {m: d.mean for m, d in self.decode(nn.functional.one_hot(classes, CLASSES).float(), modalities).items()}

    def cross_generate(self, batch, source, target: str, mean: bool = False) -> Tensor:
        q = self.encode(batch, [source] if isinstance(source, str) else list(source))
        return self.decode(q.mean if mean else q.sample(), [target])[target].mean


class PrototypeClassifier(nn.Module):
    """Labels an input with its nearest prototype: perfect on rendered prototypes."""

    def __init__(self, prototypes: Tensor) -> None:
        super().__init__()
        self.register_buffer("prototypes", prototypes)

    def forward(self, x: Tensor) -> Tensor:
        return -sq_distances(x, self.prototypes)


def make_prototypes(names: list[str], seed: int = 0) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {m: torch.rand(CLASSES, DIM, generator=g) for m in names}


def prototype_dataset(prototypes: dict[str, Tensor], n: int, seed: int, balanced: bool = True) -> MultimodalDataset:
    """Rows x_m = prototype_m[label] + small noise; balanced labels have exactly n/10 per class."""
    g = torch.Generator().manual_seed(seed)
    labels = (
        (torch.arange(n) % CLASSES)[torch.randperm(n, generator=g)]
        if balanced
        else torch.randint(0, CLASSES, (n,), generator=g)
    )
    sources = {m: p[labels] + 0.02 * torch.randn(n, DIM, generator=g) for m, p in prototypes.items()}
    return MultimodalDataset(sources, labels, name="prototypes")


def context(model, prototypes, tmp_path, test_set=None, train_set=None, seed=0) -> EvalContext:
    return EvalContext(
        model=model,
        test_set=test_set if test_set is not None else prototype_dataset(prototypes, 500, seed=1),
        train_set=train_set,
        classifiers={m: PrototypeClassifier(p) for m, p in prototypes.items()},
        out_dir=tmp_path / "eval",
        batch_size=128,
        seed=seed,
        progress=False,
    )


# --- coherence -------------------------------------------------------------------------


def test_source_subsets_for_three_modalities():
    pairs = source_subsets(["a", "b", "c"])
    keys = [pair_key(s, t) for s, t in pairs]
    assert len(pairs) == 9 == len(set(keys))
    assert set(keys) == {
        "a->b", "a->c", "b->a", "b->c", "c->a", "c->b", "{a,b}->c", "{a,c}->b", "{b,c}->a",
    }
    assert [pair_key(s, t) for s, t in source_subsets(["x", "y"])] == ["x->y", "y->x"]


@pytest.mark.parametrize("names", [["a", "b"], ["a", "b", "c"]])
def test_oracle_model_is_perfectly_coherent(names, tmp_path):
    prototypes = make_prototypes(names)
    ctx = context(StubModel(prototypes), prototypes, tmp_path)
    cross = METRICS.get("cross_coherence")(ctx)
    expected_keys = {pair_key(s, t) for s, t in source_subsets(names)}
    assert set(cross) == expected_keys | {"rows", "n"}
    assert all(cross[k] == 1.0 for k in expected_keys)
    assert cross["rows"] == dict.fromkeys(expected_keys, 500)
    synergy = METRICS.get("synergy_coherence")(ctx)
    assert {k: synergy[k] for k in names + ["all"]} == dict.fromkeys(names + ["all"], 1.0)
    assert METRICS.get("joint_coherence")(ctx, n=1000)["joint_coherence"] == 1.0


def test_input_ignoring_decoders_give_chance_cross_coherence(tmp_path):
    prototypes = make_prototypes(["a", "b"])
    fixed = {"a": lambda c: torch.full_like(c, 3), "b": lambda c: torch.full_like(c, 7)}
    n = 2000
    test_set = prototype_dataset(prototypes, n, seed=2, balanced=False)
    cross = METRICS.get("cross_coherence")(context(StubModel(prototypes, render=fixed), prototypes, tmp_path, test_set))
    assert cross["a->b"] == pytest.approx(float((test_set.labels == 7).double().mean()), abs=1e-12)
    assert cross["b->a"] == pytest.approx(float((test_set.labels == 3).double().mean()), abs=1e-12)
    for key in ("a->b", "b->a"):
        assert abs(cross[key] - 0.1) < binomial_tolerance(0.1, n)
    half = StubModel(prototypes, render={"b": fixed["b"]})
    synergy = METRICS.get("synergy_coherence")(context(half, prototypes, tmp_path, test_set))
    assert synergy["a"] == 1.0
    assert synergy["b"] == synergy["all"] == pytest.approx(float((test_set.labels == 7).double().mean()), abs=1e-12)


def test_partially_observed_rows_count_where_their_sources_are_observed(tmp_path):
    """40 rows labelled r % 10; a observed on rows 0-29, b on 15-39, c on even rows; decoder
    c always renders class 6, a and b the input's class. Batches of 16 mix the patterns."""
    names = ["a", "b", "c"]
    prototypes = make_prototypes(names)
    labels = torch.arange(40) % CLASSES
    rows = torch.arange(40)
    mask = {"a": rows < 30, "b": rows >= 15, "c": rows % 2 == 0}
    test_set = MultimodalDataset({m: p[labels] for m, p in prototypes.items()}, labels, mask=mask)
    model = StubModel(prototypes, render={"c": lambda c: torch.full_like(c, 6)})
    ctx = context(model, prototypes, tmp_path, test_set)
    ctx.batch_size = 16
    cross = METRICS.get("cross_coherence")(ctx)
    # (rows observing the sources, correct generations): c is right on label-6 rows only
    expected = {
        "a->b": (30, 30), "a->c": (30, 3), "b->a": (25, 25), "b->c": (25, 3), "c->a": (20, 20),
        "c->b": (20, 20), "{a,b}->c": (15, 2), "{a,c}->b": (15, 15), "{b,c}->a": (12, 12),
    }
    assert cross["rows"] == {k: n for k, (n, _) in expected.items()} and cross["n"] == 40
    assert {k: cross[k] for k in expected} == {k: hit / n for k, (n, hit) in expected.items()}
    synergy = METRICS.get("synergy_coherence")(ctx)  # rows 16, 18, ..., 28 observe all three
    assert synergy["rows"] == {"a": 7, "b": 7, "c": 7, "all": 7}
    assert (synergy["a"], synergy["b"], synergy["c"], synergy["all"]) == (1.0, 1.0, 2 / 7, 2 / 7)


def test_joint_coherence_counts_agreement(tmp_path):
    prototypes = make_prototypes(["a", "b", "c"])
    n = 4000
    model = StubModel(prototypes, render={"c": lambda c: torch.full_like(c, 3)})
    result = METRICS.get("joint_coherence")(context(model, prototypes, tmp_path), n=n)
    drawn = torch.cat(model.drawn)
    assert drawn.shape == (n,) and result["n"] == n
    assert result["joint_coherence"] == pytest.approx(float((drawn == 3).double().mean()), abs=1e-12)
    assert abs(result["joint_coherence"] - 0.1) < binomial_tolerance(0.1, n)
    shifted = StubModel(prototypes, render={"b": lambda c: (c + 1) % CLASSES})
    assert METRICS.get("joint_coherence")(context(shifted, prototypes, tmp_path), n=500)["joint_coherence"] == 0.0


def test_metrics_are_seeded_and_leave_the_global_rng_alone(tmp_path):
    prototypes = make_prototypes(["a", "b"])
    model = StubModel(prototypes, render={"b": lambda c: torch.full_like(c, 3)})

    def draws(seed: int) -> tuple[dict, Tensor]:
        model.drawn.clear()
        result = METRICS.get("joint_coherence")(context(model, prototypes, tmp_path, seed=seed), n=300)
        return result, torch.cat(model.drawn)

    state = torch.get_rng_state()
    (first, drawn), (again, redrawn) = draws(5), draws(5)
    assert torch.equal(torch.get_rng_state(), state)
    assert first == again and torch.equal(drawn, redrawn)
    assert not torch.equal(drawn, draws(6)[1])


def test_missing_classifier_in_context_is_an_error(tmp_path):
    prototypes = make_prototypes(["a", "b"])
    ctx = context(StubModel(prototypes), prototypes, tmp_path)
    ctx.classifiers = {"a": ctx.classifiers["a"]}
    with pytest.raises(ValueError, match=r"missing \['b'\]"):
        METRICS.get("joint_coherence")(ctx, n=10)


# --- generation diversity ----------------------------------------------------------------


def test_diversity_of_a_model_that_always_generates_three(tmp_path):
    prototypes = make_prototypes(["a", "b"])
    always3 = {m: (lambda c: torch.full_like(c, 3)) for m in prototypes}
    ctx = context(StubModel(prototypes, render=always3), prototypes, tmp_path)
    result = METRICS.get("generation_diversity")(ctx, n=500)
    for m in prototypes:
        assert result["histograms"][m] == [0, 0, 0, 500, 0, 0, 0, 0, 0, 0]
        assert result["entropy"][m] == 0.0
    assert result["figures"] == ["generation_diversity.png"]
    assert (ctx.out_dir / "generation_diversity.png").stat().st_size > 1000
    uniform = METRICS.get("generation_diversity")(context(StubModel(prototypes), prototypes, tmp_path), n=5000)
    assert all(sum(h) == 5000 for h in uniform["histograms"].values())
    assert all(e > 0.99 for e in uniform["entropy"].values())
    json.dumps(result)


# --- latent accuracy ---------------------------------------------------------------------


def test_latent_accuracy_of_separable_and_random_latents(tmp_path):
    prototypes = make_prototypes(["a", "b"])
    train_set, test_set = prototype_dataset(prototypes, 1000, seed=3), prototype_dataset(prototypes, 2000, seed=4)
    centres = 3.0 * torch.randn(CLASSES, 4, generator=torch.Generator().manual_seed(0))
    separable = StubModel(prototypes, latent=lambda c: centres[c], noise=0.1)
    ctx = context(separable, prototypes, tmp_path, test_set=test_set, train_set=train_set)
    result = METRICS.get("latent_accuracy")(ctx, n_train=800)
    assert result["n_train"] == 800 and result["n_test"] == 2000
    assert all(result[k] > 0.98 for k in ("a", "b", "joint"))
    assert METRICS.get("latent_accuracy")(ctx, n_train=800, use_mean=True)["joint"] == 1.0
    random = StubModel(prototypes, latent=lambda c: torch.randn(len(c), 4), noise=0.0)
    chance = METRICS.get("latent_accuracy")(
        context(random, prototypes, tmp_path, test_set=test_set, train_set=train_set), n_train=800
    )
    for key in ("a", "b", "joint"):
        assert abs(chance[key] - 0.1) < binomial_tolerance(0.1, 2000), (key, chance[key])


def test_latent_accuracy_probe_fitted_on_the_full_data(tmp_path):
    """A run trained on re-paired tuples labels each by its first modality's row, so a probe
    of "b" fitted on tuples pairing class c with class c + 1 learns the wrong class;
    fit_pairs="all" fits on the full data."""
    prototypes = make_prototypes(["a", "b"])
    train_set, test_set = prototype_dataset(prototypes, 1000, seed=3), prototype_dataset(prototypes, 2000, seed=4)
    by_class = [torch.nonzero(train_set.labels == c).flatten() for c in range(CLASSES)]
    next_class = torch.cat([by_class[(c + 1) % CLASSES] for c in range(CLASSES)])
    repaired = train_set.repaired({"a": torch.cat(by_class), "b": next_class})
    centres = 3.0 * torch.randn(CLASSES, 4, generator=torch.Generator().manual_seed(0))
    model = StubModel(prototypes, latent=lambda c: centres[c], noise=0.1)
    ctx = context(model, prototypes, tmp_path, test_set=test_set, train_set=repaired)
    observed = METRICS.get("latent_accuracy")(ctx, n_train=800)
    assert observed["a"] > 0.98 and observed["b"] < 0.02
    ctx.full_train = lambda: train_set
    full = METRICS.get("latent_accuracy")(ctx, n_train=800, fit_pairs="all")
    assert full["fit_pairs"] == "all" and full["a"] > 0.98 and full["b"] > 0.98
    with pytest.raises(ValueError, match="fit_pairs must be 'observed' or 'all'"):
        METRICS.get("latent_accuracy")(ctx, fit_pairs="some")
    ctx.full_train = None
    with pytest.raises(ValueError, match="needs the run's training pairs"):
        METRICS.get("latent_accuracy")(ctx, fit_pairs="all")


def test_downstream_classification_error_rates(tmp_path):
    """Error = 1 - accuracy of a logistic regression on 500 training representations, per
    observed subset; separable latents give ~0 error, random ones ~0.9 (10 classes)."""
    prototypes = make_prototypes(["a", "b"])
    train_set, test_set = prototype_dataset(prototypes, 1000, seed=3), prototype_dataset(prototypes, 2000, seed=4)
    centres = 3.0 * torch.randn(CLASSES, 4, generator=torch.Generator().manual_seed(0))
    separable = StubModel(prototypes, latent=lambda c: centres[c], noise=0.1)
    ctx = context(separable, prototypes, tmp_path, test_set=test_set, train_set=train_set)
    result = METRICS.get("downstream_classification")(ctx)
    assert set(result) == {"a", "b", "a+b", "mean", "n_train", "use_mean"} and result["n_train"] == 500
    assert all(result[k] < 0.02 for k in ("a", "b", "a+b"))
    only = METRICS.get("downstream_classification")(ctx, observed=["b"])
    assert set(only) == {"b", "mean", "n_train", "use_mean"} and only["mean"] == only["b"]
    random = StubModel(prototypes, latent=lambda c: torch.randn(len(c), 4), noise=0.0)
    chance = METRICS.get("downstream_classification")(
        context(random, prototypes, tmp_path, test_set=test_set, train_set=train_set), use_mean=False)
    assert abs(chance["a"] - 0.9) < binomial_tolerance(0.9, 2000)
    with pytest.raises(ValueError, match="unknown modality 'c'"):
        METRICS.get("downstream_classification")(ctx, observed=["c"])


def test_latent_accuracy_needs_a_train_set(tmp_path):
    prototypes = make_prototypes(["a", "b"])
    with pytest.raises(ValueError, match="no train_set"):
        METRICS.get("latent_accuracy")(context(StubModel(prototypes), prototypes, tmp_path))


# --- classifier store ----------------------------------------------------------------------


def repaired(split: str, root, n_rows: int = 80) -> MultimodalDataset:
    """An image and a vector modality whose source rows recur across pairs (like MNIST-SVHN)."""
    g = torch.Generator().manual_seed(0 if split == "train" else 1)
    n_img, n_vec = 30, 25
    img_labels, vec_labels = torch.arange(n_img) % CLASSES, torch.arange(n_vec) % CLASSES
    templates = torch.rand(CLASSES, 1, 28, 28, generator=g)
    images = (templates[img_labels] * 255).to(torch.uint8)
    vectors = torch.eye(CLASSES, 12)[vec_labels] * 3 + 0.1 * torch.randn(n_vec, 12, generator=g)
    labels = torch.randint(0, 8, (n_rows,), generator=g)  # classes 8 and 9 appear in no pair

    def pick(n_src: int) -> Tensor:  # a source row of the row's class
        return labels + CLASSES * torch.randint(0, n_src // CLASSES, (n_rows,), generator=g)

    return MultimodalDataset(
        {"img": images, "vec": vectors}, labels, {"img": pick(n_img), "vec": pick(n_vec)}, name="tiny-repaired"
    )


if "tiny-repaired" not in DATASETS:
    DATASETS.register("tiny-repaired")(repaired)


def test_source_examples_are_unique_and_labelled():
    ds = repaired("train", None)
    x, y = source_examples(ds, "img")
    used = torch.unique(ds.index["img"])
    assert len(x) == len(used) < len(ds)
    assert torch.equal(x, ds.sources["img"][used]) and torch.equal(y, used % CLASSES)
    broken = MultimodalDataset(ds.sources, ds.labels.roll(1), ds.index, name="broken")
    with pytest.raises(ValueError, match="conflicting labels"):
        source_examples(broken, "img")


def test_architecture_by_shape():
    assert architecture_for((1, 28, 28)) == "digit-28"
    assert architecture_for((3, 32, 32)) == "digit-32"
    assert architecture_for((12,)) == "vector-mlp"
    with pytest.raises(ValueError, match="no classifier architecture"):
        architecture_for((3, 64, 64))


def test_a_small_dataset_trains_its_classifiers_for_at_least_min_steps(tmp_path):
    """Classifiers trained on first use take >= AUTO_MIN_STEPS (1,000) steps: 10 epochs of a small
    set (2,000 street digits: 160 steps) fell below the coherence floor."""
    from mmdgm.evaluate.classifier_store import BATCH_SIZE

    train_dataset_classifiers("tiny-repaired", tmp_path, {}, epochs=2, seed=0, progress=False, min_steps=30)
    record = json.loads((store_dir("tiny-repaired", tmp_path) / "img.json").read_text())
    batches = math.ceil(record["n_train"] / BATCH_SIZE)
    assert record["epochs"] == max(2, math.ceil(30 / batches)) > 2


def test_train_reload_floor_and_missing(tmp_path):
    accuracies = train_dataset_classifiers("tiny-repaired", tmp_path, {}, epochs=2, seed=0, progress=False)
    assert set(accuracies) == {"img", "vec"}
    directory = store_dir("tiny-repaired", tmp_path)
    record = json.loads((directory / "img.json").read_text())
    test_x, test_y = source_examples(repaired("test", None), "img")
    assert record["test_accuracy"] == accuracies["img"]
    assert (record["epochs"], record["n_test"], record["architecture"]) == (2, len(test_x), "digit-28")
    assert record["n_train"] == len(source_examples(repaired("train", None), "img")[0])
    assert record["dataset_options"] == {}
    loaded = load_classifiers("tiny-repaired", ["img", "vec"], tmp_path, floor=0.0)
    assert isinstance(loaded["img"], DigitClassifier) and isinstance(loaded["vec"], VectorClassifier)
    assert not any(c.training for c in loaded.values())
    assert accuracy(loaded["img"], test_x, test_y) == accuracies["img"]
    with pytest.raises(WeakClassifierError, match=r"test accuracy .* below the floor 1\.0100; refusing"):
        load_classifiers("tiny-repaired", ["img"], tmp_path, floor=1.01)
    with pytest.raises(MissingClassifierError, match="mmdgm classifiers train --dataset tiny-pairs"):
        load_classifiers("tiny-pairs", ["a"], tmp_path)


def test_cli_command_prints_one_json_line_per_modality(tmp_path, capsys):
    cmd_classifiers_train(argparse.Namespace(dataset="tiny-repaired", root=str(tmp_path), epochs=1, seed=0, option=[]))
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["modality"] for line in lines] == ["img", "vec"]
    assert all(0.0 <= line["test_accuracy"] <= 1.0 for line in lines)


def test_store_is_keyed_by_the_dataset_options(tmp_path, capsys):
    """Classifiers trained for n_rows=60 (CLI --option) live in their own store and are
    loaded for those options only; the error names the exact command for the others."""
    fewer, more = {"n_rows": 60}, {"n_rows": 70}
    stores = [store_dir("tiny-repaired", tmp_path, o) for o in (fewer, more, {})]
    assert len(set(stores)) == 3 and stores[2] == store_dir("tiny-repaired", tmp_path)
    assert stores[0].name.startswith("tiny-repaired-") and stores[0] == store_dir("tiny-repaired", tmp_path, fewer)
    assert store_dir("tiny-repaired", tmp_path, {"n_rows": 80}) == stores[2]  # the builder's default
    assert store_dir("tiny-repaired", tmp_path, {"n_rows": 60, "x": 1}) == store_dir(
        "tiny-repaired", tmp_path, {"x": 1, "n_rows": 60}
    )
    train = ["classifiers", "train", "--dataset", "tiny-repaired", "--root", str(tmp_path), "--epochs", "1"]
    cmd_classifiers_train(parser().parse_args([*train, "--option", "n_rows=60"]))
    paths = [Path(json.loads(line)["path"]) for line in capsys.readouterr().out.splitlines()]
    assert paths == [stores[0] / "img.pt", stores[0] / "vec.pt"]
    assert json.loads((stores[0] / "img.json").read_text())["dataset_options"] == fewer
    assert set(load_classifiers("tiny-repaired", ["img", "vec"], tmp_path, floor=0.0, options=fewer)) == {"img", "vec"}
    commands = {
        "n_rows=70": f"`mmdgm classifiers train --dataset tiny-repaired --option n_rows=70 --root {tmp_path}`",
        "default": f"`mmdgm classifiers train --dataset tiny-repaired --root {tmp_path}`",
    }
    for options, command in zip((more, {}), commands.values()):
        with pytest.raises(MissingClassifierError, match=re.escape(command)):
            load_classifiers("tiny-repaired", ["img"], tmp_path, floor=0.0, options=options)
    stores[2].mkdir(parents=True)  # a store trained for other options under the plain name
    for f in ("img.json", "img.pt"):
        shutil.copy(stores[0] / f, stores[2] / f)
    with pytest.raises(MissingClassifierError, match=r"trained with dataset options \{'n_rows': 60\}, not \{\}"):
        load_classifiers("tiny-repaired", ["img"], tmp_path, floor=0.0)


def test_observation_protocol_options_do_not_key_or_restrict_the_classifiers(tmp_path):
    """A run on partially observed or reduced data (observed_fraction, unpaired_scheme,
    unimodal_fraction) is scored by the classifiers of the full data: the protocol options
    neither key the store nor reach the builder (tiny-repaired takes none of them)."""
    protocol = {"observed_fraction": 0.5, "unpaired_scheme": "alternate", "unimodal_fraction": 0.2}
    full = {"n_rows": 60}
    assert store_dir("tiny-repaired", tmp_path, {**full, **protocol}) == store_dir("tiny-repaired", tmp_path, full)
    train_dataset_classifiers("tiny-repaired", tmp_path, {**full, **protocol}, epochs=1, seed=0, progress=False)
    record = json.loads((store_dir("tiny-repaired", tmp_path, full) / "img.json").read_text())
    assert record["dataset_options"] == full
    assert record["n_train"] == len(source_examples(repaired("train", None, n_rows=60), "img")[0])
    assert set(load_classifiers("tiny-repaired", ["img"], tmp_path, floor=0.0, options={**full, **protocol})) == {"img"}


# --- every metric runs on a real MMVAE ----------------------------------------------------


def test_metrics_run_on_an_mmvae(tmp_path):
    train_dataset_classifiers("tiny-pairs", tmp_path, {}, epochs=1, progress=False)
    train_set, test_set = tiny_pairs("train", tmp_path), tiny_pairs("test", tmp_path)
    torch.manual_seed(0)
    model = build_model(load_config("default", TINY_CONFIG).model, train_set.shapes).eval()
    ctx = EvalContext(
        model=model,
        test_set=test_set,
        train_set=train_set,
        classifiers=load_classifiers("tiny-pairs", model.names, tmp_path, floor=0.0),
        out_dir=tmp_path / "eval",
        batch_size=40,
        progress=False,
    )
    results = {
        "joint_coherence": METRICS.get("joint_coherence")(ctx, n=50),
        "cross_coherence": METRICS.get("cross_coherence")(ctx),
        "synergy_coherence": METRICS.get("synergy_coherence")(ctx),
        "generation_diversity": METRICS.get("generation_diversity")(ctx, n=50),
        "latent_accuracy": METRICS.get("latent_accuracy")(ctx, n_train=64),
    }
    json.dumps(results)
    assert set(results["cross_coherence"]) == {"a->b", "b->a", "rows", "n"}
    assert set(results["latent_accuracy"]) >= {"a", "b", "joint"}
    assert all(0.0 <= results["synergy_coherence"][m] <= 1.0 for m in ("a", "b"))
