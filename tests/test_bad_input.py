"""Bad input gets a clear error naming the problem."""

from __future__ import annotations

import pytest
import torch

from mmdgm import Batch
from mmdgm.batch import BatchError
from mmdgm.config import ConfigError, load_config
from mmdgm.models.factory import build_model
from tests.test_mmvae import image_batch, image_model


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return image_model()


def test_wrong_sample_shape(model):
    b = image_batch()
    with pytest.raises(BatchError, match=r"'b' has sample shape \(3, 28, 28\); expected \(3, 32, 32\)"):
        model(Batch({"a": b.data["a"], "b": torch.rand(6, 3, 28, 28)}))


def test_integer_dtype(model):
    b = image_batch()
    with pytest.raises(BatchError, match="'a' has dtype torch.uint8"):
        model(Batch({"a": (b.data["a"] * 255).to(torch.uint8), "b": b.data["b"]}))


def test_batch_size_disagreement():
    with pytest.raises(BatchError, match="disagree on the batch size"):
        Batch({"a": torch.rand(3, 2), "b": torch.rand(4, 2)})


def test_sample_with_every_modality_missing(model):
    b = image_batch()
    none = torch.tensor([True, False, True, True, True, True])
    with pytest.raises(BatchError, match=r"samples \[1\] have every modality missing"):
        model(Batch(b.data, {"a": none, "b": none}))


def test_nan_in_observed_data(model):
    b = image_batch()
    a = b.data["a"].clone()
    a[2, 0, 5, 5] = float("nan")
    with pytest.raises(BatchError, match="'a' contains NaN"):
        model(Batch({"a": a, "b": b.data["b"]}))


def test_unknown_and_missing_modality_names(model):
    b = image_batch()
    with pytest.raises(BatchError, match="unknown modality 'bb' \\(did you mean 'b'\\?\\)"):
        model(Batch({"a": b.data["a"], "b": b.data["b"], "bb": b.data["b"]}))
    with pytest.raises(BatchError, match=r"batch lacks modalities \['b'\]"):
        model(Batch({"a": b.data["a"]}))


def test_bad_mask(model):
    b = image_batch()
    with pytest.raises(BatchError, match="mask of 'a' must be a bool tensor of shape \\(6,\\)"):
        Batch(b.data, {"a": torch.ones(6)})


def test_unknown_config_key_names_the_nearest():
    with pytest.raises(ConfigError, match=r"unknown config key config.train.epoch \(did you mean 'epochs'\?\)"):
        load_config("default", ["train.epoch=3"])
    with pytest.raises(ConfigError, match=r"config.model.latnet_dim \(did you mean 'latent_dim'\?\)"):
        load_config("default", ["model.latnet_dim=3"])


def test_config_types_and_names():
    with pytest.raises(ConfigError, match="config.train.epochs: expected int, got 'many'"):
        load_config("default", ["train.epochs=many"])
    with pytest.raises(ConfigError, match="unknown config 'mmvae-mnist-svnh' \\(did you mean 'mmvae-mnist-svhn'\\?\\)"):
        load_config("mmvae-mnist-svnh")
    with pytest.raises(ConfigError, match="must look like key=value"):
        load_config("default", ["train.epochs"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("/nonexistent/run.yaml")


def test_unknown_model_option_and_modality_mismatch():
    cfg = load_config("default", ["model.options={K: 2, objectve: dreg}"])
    shapes = {"synth_hand": (1, 28, 28), "synth_street": (3, 32, 32)}
    with pytest.raises(ConfigError, match=r"model.options.objectve \(did you mean 'objective'\?\)"):
        build_model(cfg.model, shapes)
    cfg = load_config("default")
    with pytest.raises(ConfigError, match=r"missing \['mnist'\]"):
        build_model(cfg.model, {"mnist": (1, 28, 28), "synth_street": (3, 32, 32)})


def test_unknown_network_name():
    cfg = load_config("default", ["model.modalities.synth_hand.encoder=mnist-mpl"])
    with pytest.raises(KeyError, match="did you mean 'mnist-mlp'"):
        build_model(cfg.model, {"synth_hand": (1, 28, 28), "synth_street": (3, 32, 32)})


def test_directory_named_like_a_config_does_not_shadow_it(tmp_path, monkeypatch):
    """`mmdgm train --seeds 1,2` from a folder holding a run directory called 'default'."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "default").mkdir()
    assert load_config("default").name == "default"


def test_every_builtin_config_builds_its_model():
    from mmdgm.config import builtin_configs

    shapes = {"mnist": (1, 28, 28), "synth_hand": (1, 28, 28), "svhn": (3, 32, 32), "synth_street": (3, 32, 32),
              "view1": (1, 28, 28), "view2": (1, 28, 28), "text": (8, 71), "mnist_rotated": (1, 28, 28),
              "image": (3, 64, 64), "caption": (32, 100), **{f"rot{a}": (1, 28, 28) for a in (0, 90, 180, 270)}}
    names = builtin_configs()
    assert len(names) >= 15
    for name in names:
        cfg = load_config(name)
        model = build_model(cfg.model, {m: shapes[m] for m in cfg.model.modalities})
        assert model.names == list(cfg.model.modalities), name
