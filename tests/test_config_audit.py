"""Per-network options and config value ranges: clear errors naming the key."""

from __future__ import annotations

import pytest

from mmdgm.cli import main
from mmdgm.config import ConfigError, load_config
from mmdgm.models.factory import build_model, network_options
from tests.test_nets_distributions import layer_sizes

VECTORS = {"u": (6,), "v": (5,)}


def vector_config(u: str) -> list[str]:
    """Overrides for two vector modalities with generic MLPs; `u` is modality u's YAML mapping."""
    return [f"model.modalities={{u: {u}, v: {{encoder: mlp, decoder: mlp}}}}", "model.latent_dim=3"]


def test_encoder_and_decoder_options_override_the_shared_ones():
    u = "{encoder: mlp, decoder: mlp, net_options: {hidden: [4], act: elu}, encoder_options: {hidden: [8, 7]}}"
    model = build_model(load_config("default", vector_config(u)).model, VECTORS)
    assert layer_sizes(model.encoders["u"]) == [(6, 8), "ELU", (8, 7), "ELU", (7, 3), (7, 3)]
    assert layer_sizes(model.decoders["u"]) == [(3, 4), "ELU", (4, 6)]
    u = "{encoder: mlp, decoder: mlp, decoder_options: {hidden: [], output: sigmoid}}"
    model = build_model(load_config("default", vector_config(u)).model, VECTORS)
    assert layer_sizes(model.encoders["u"]) == [(6, 512), "ReLU", (512, 256), "ReLU", (256, 3), (256, 3)]
    assert layer_sizes(model.decoders["u"]) == [(3, 6)]


@pytest.mark.parametrize(
    "u,message",
    [
        ("{encoder: mlp, decoder: mlp, encoder_options: {hiden: [4]}}",
         r"model.modalities.u.encoder_options.hiden \(did you mean 'hidden'\?\); encoder 'mlp' accepts"),
        ("{encoder: mlp, decoder: mlp, decoder_options: {output: sigmoid, width: 4}}",
         r"model.modalities.u.decoder_options.width; decoder 'mlp' accepts \['hidden', 'act', 'output'\]"),
        ("{encoder: mlp, decoder: mlp, net_options: {output: sigmoid}}",
         r"model.modalities.u.net_options.output; encoder 'mlp' accepts \['hidden', 'act'\]"),
    ],
)
def test_unknown_network_option_names_the_key(u, message):
    cfg = load_config("default", vector_config(u))
    with pytest.raises(ConfigError, match=r"unknown config key " + message):
        build_model(cfg.model, VECTORS)


@pytest.mark.parametrize(
    "override,message",
    [
        ("model.latent_dim=-3", "model.latent_dim must be >= 1, got -3"),
        ("model.latent_dim=0", "model.latent_dim must be >= 1, got 0"),
        ("train.epochs=0", "train.epochs must be >= 1, got 0"),
        ("train.batch_size=-1", "train.batch_size must be >= 1, got -1"),
        ("train.lr=0", "train.lr must be > 0, got 0.0"),
        ("train.lr=-0.001", "train.lr must be > 0, got -0.001"),
        ("train.seed=-1", "train.seed must be >= 0, got -1"),
        ("train.threads=0", "train.threads must be >= 1, got 0"),
        ("train.log_every=0", "train.log_every must be >= 1, got 0"),
        ("train.checkpoint_every=0", "train.checkpoint_every must be >= 1, got 0"),
        ("train.grid_size=0", "train.grid_size must be >= 1, got 0"),
        ("train.grad_clip=0", "train.grad_clip must be > 0, got 0.0"),
        ("train.eval_batches=0", "train.eval_batches must be >= 1, got 0"),
        ("model.modalities.synth_hand.llik_scale=0", "model.modalities.synth_hand.llik_scale must be > 0, got 0.0"),
        ("model.modalities.synth_street.likelihood_scale=-0.5",
         "model.modalities.synth_street.likelihood_scale must be > 0, got -0.5"),
    ],
)
def test_out_of_range_values_name_the_key_and_range(override, message):
    with pytest.raises(ConfigError) as e:
        load_config("default", [override])
    assert str(e.value) == f"config.{message}"


def test_in_range_and_unset_optional_values_load():
    cfg = load_config("default", ["model.latent_dim=1", "train.lr=0.000000001", "train.seed=0", "train.threads=1",
                                  "train.grad_clip=0.5"])
    assert (cfg.model.latent_dim, cfg.train.lr, cfg.train.threads, cfg.train.grad_clip) == (1, 1e-9, 1, 0.5)
    cfg = load_config("default", ["train.threads=null", "train.grad_clip=null"])
    assert cfg.train.threads is None and cfg.train.grad_clip is None


@pytest.mark.parametrize("override", ["model.latent_dim=-3", "train.batch_size=0", "train.lr=-1"])
def test_cli_reports_out_of_range_value(override, tmp_path, capsys):
    assert main(["train", "--run-dir", str(tmp_path / "r"), override]) == 2
    err = capsys.readouterr().err
    key, value = override.split("=")
    assert err.startswith(f"mmdgm: error: config.{key} must be ") and value in err
    assert "Traceback" not in err and not (tmp_path / "r").exists()


def test_network_options_of_a_builder():
    assert network_options(lambda shape, latent_dim, hidden=4, *, act="relu": None) == ["hidden", "act"]
    assert network_options(lambda shape, latent_dim, **options: None) is None
