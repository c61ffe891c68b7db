"""Latent accuracy per declared part of z (MMALI Table 3) and the one-encoder probe
(MMALI Table 1) on constructed latents whose answers are known."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from mmdgm.cli import main
from mmdgm.config import load_config
from mmdgm.evaluate import METRICS, EvalContext
from mmdgm.models.factory import build_model
from tests.conftest import TINY_CONFIG, tiny_pairs
from tests.test_eval_coherence import CLASSES, StubModel, binomial_tolerance, context, make_prototypes, prototype_dataset

split_metric = METRICS.get("latent_accuracy_split")
N_TEST = 2000


def style_and_content(style_carries_label: bool = False):
    """z = [style (4), content (4)]: content = the class's centre; style = N(0, I) noise
    (or a second class code when `style_carries_label`)."""
    centres = 3.0 * torch.randn(CLASSES, 4, generator=torch.Generator().manual_seed(0))

    def latent(c: torch.Tensor) -> torch.Tensor:
        style = -centres[c] if style_carries_label else torch.randn(len(c), 4)
        return torch.cat([style, centres[c]], 1)

    return latent


def setup(tmp_path, latent, split=None, names=("a", "b")):
    prototypes = make_prototypes(list(names))
    model = StubModel(prototypes, latent=latent, noise=0.1)
    if split is not None:
        model.latent_split = split
    train_set, test_set = prototype_dataset(prototypes, 1000, seed=3), prototype_dataset(prototypes, N_TEST, seed=4)
    return context(model, prototypes, tmp_path, test_set=test_set, train_set=train_set)


SPLIT = {"style": slice(0, 4), "content": slice(4, 8)}


def test_content_reads_the_label_and_noise_style_is_at_chance(tmp_path):
    ctx = setup(tmp_path, style_and_content(), SPLIT)
    result = split_metric(ctx, n_train=800)
    assert result["parts"] == {"style": [0, 4], "content": [4, 8]} and result["n_test"] == N_TEST
    for m in ("a", "b"):
        assert set(result[m]) == {"style", "content", "both"}
        assert result[m]["content"] > 0.98 and result[m]["both"] > 0.98
        assert abs(result[m]["style"] - 0.1) < binomial_tolerance(0.1, N_TEST), result[m]
    json.dumps(result)
    only = split_metric(ctx, n_train=800, modalities=["b"])
    assert "a" not in only and set(only["b"]) == {"style", "content", "both"}
    # a style code that carries the label is read as well as the content
    informative = split_metric(setup(tmp_path, style_and_content(True), SPLIT), n_train=800)
    assert informative["a"]["style"] > 0.98


def test_parts_are_probed_on_their_own_columns(tmp_path):
    """Deterministic z = [class centre (4), zeros (4)]: the informative part scores what a
    probe fitted by hand on its columns of the posterior means scores, and the constant
    part exactly the share of the probe's one predicted class in the balanced test set."""
    centres = 3.0 * torch.randn(CLASSES, 4, generator=torch.Generator().manual_seed(0))
    latent = lambda c: torch.cat([centres[c], torch.zeros(len(c), 4)], 1)  # noqa: E731
    ctx = setup(tmp_path, latent, {"content": slice(0, 4), "style": slice(4, 8)})
    result = split_metric(ctx, n_train=800, use_mean=True, modalities=["a"])
    assert result["a"]["style"] == 0.1 and result["a"]["content"] > 0.98
    rows = torch.randperm(len(ctx.train_set), generator=torch.Generator().manual_seed(ctx.seed))[:800]

    def codes(ds, r):
        b = ds.batch(r)
        return ctx.model.encode(b, ["a"]).mean.double().numpy(), b.labels.numpy()

    (xtr, ytr), (xte, yte) = codes(ctx.train_set, rows), codes(ctx.test_set, torch.arange(N_TEST))
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(xtr[:, :4], ytr)
    assert result["a"]["content"] == probe.score(xte[:, :4], yte)


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="declares `latent_split`.*StubModel declares none"):
        split_metric(setup(tmp_path, style_and_content()), n_train=100)
    bad = {
        "'both'": {"both": slice(0, 4)},
        "dict of slices": {"style": (0, 4)},
        "0 <= start < stop": {"style": slice(0, 8, 2)},
        r"\['content'\] reach past the 8": {"style": slice(0, 4), "content": slice(4, 9)},
    }
    for message, split in bad.items():
        with pytest.raises(ValueError, match=message):
            split_metric(setup(tmp_path, style_and_content(), split), n_train=100)
    ctx = setup(tmp_path, style_and_content(), SPLIT)
    with pytest.raises(ValueError, match="unknown modalities entry 'c'"):
        split_metric(ctx, modalities=["c"])
    with pytest.raises(ValueError, match="n_train must be >= 2"):
        split_metric(ctx, n_train=1)
    with pytest.raises(TypeError):
        split_metric(ctx, posteriors=["a"])
    ctx.train_set = None
    with pytest.raises(ValueError, match="no train_set"):
        split_metric(ctx)


def test_one_encoder_probe_is_latent_accuracy_restricted(tmp_path):
    """MMALI Table 1 (the 0-degree encoder): `latent_accuracy` with posteriors=[one modality]
    scores that encoder alone, exactly as the full metric scores it (posterior means)."""
    ctx = setup(tmp_path, style_and_content(), names=("rot0", "rot90", "rot180"))
    latent_accuracy = METRICS.get("latent_accuracy")
    full = latent_accuracy(ctx, n_train=800, use_mean=True)
    one = latent_accuracy(ctx, n_train=800, use_mean=True, posteriors=["rot0"])
    assert set(one) == {"rot0", "n_train", "n_test", "use_mean", "fit_pairs"} and one["rot0"] == full["rot0"] > 0.98
    assert set(latent_accuracy(ctx, n_train=800, posteriors=["joint"])) == {"joint", "n_train", "n_test", "use_mean", "fit_pairs"}
    with pytest.raises(ValueError, match="unknown posteriors entry 'rot45'"):
        latent_accuracy(ctx, posteriors=["rot45"])
    with pytest.raises(ValueError, match="posteriors names nothing"):
        latent_accuracy(ctx, posteriors=[])


def test_split_of_a_real_model_agrees_with_latent_accuracy(tmp_path):
    """An MMVAE given a `latent_split`: "both" is the whole-code probe of latent_accuracy."""
    train_set, test_set = tiny_pairs("train", tmp_path), tiny_pairs("test", tmp_path)
    torch.manual_seed(0)
    model = build_model(load_config("default", TINY_CONFIG).model, train_set.shapes).eval()
    model.latent_split = {"style": slice(0, 2), "content": slice(2, 4)}
    ctx = EvalContext(model=model, test_set=test_set, train_set=train_set, batch_size=40, progress=False)
    split = split_metric(ctx, n_train=64, use_mean=True)
    whole = METRICS.get("latent_accuracy")(ctx, n_train=64, use_mean=True)
    for m in ("a", "b"):
        assert split[m]["both"] == whole[m]
        assert all(0.0 <= v <= 1.0 for v in split[m].values())
    assert np.isfinite([split["a"]["style"], split["b"]["content"]]).all()


def test_evaluate_cli_gives_the_probes_a_train_set(tmp_path, capsys):
    runs = tmp_path / "runs"
    assert main(["train", "--run-dir", str(runs), *TINY_CONFIG, "train.epochs=1"]) == 0
    run = runs
    options = ["--option", "latent_accuracy.posteriors=[a]", "--option", "latent_accuracy.n_train=64",
               "--option", "downstream_classification.n_train=64"]
    assert main(["evaluate", str(run), "--metrics", "latent_accuracy,downstream_classification", *options]) == 0
    results = json.loads((run / "eval.json").read_text())
    assert set(results["latent_accuracy"]) == {"a", "n_train", "n_test", "use_mean", "fit_pairs"}
    assert 0.0 <= results["downstream_classification"]["mean"] <= 1.0
    assert main(["evaluate", str(run), "--metrics", "latent_accuracy_split"]) == 2
    assert "MMVAE declares none" in capsys.readouterr().err
