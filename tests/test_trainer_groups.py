"""The trainer's parameter groups, schedule and EMA (adversarial resume: test_resume.py)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mmdgm import run
from mmdgm.config import ConfigError, load_config
from mmdgm.train.checkpoint import load_checkpoint
from mmdgm.train.ema import EMA
from tests.conftest import TINY_CONFIG

SMALL = ["data.options.n_train=48", "data.options.n_test=16", "train.epochs=1", "train.batch_size=16",
         "train.eval_batches=1", "train.grid_size=2", "train.final_metrics=[]"]


def mmali(*extra):
    return load_config("mmali-default", SMALL + list(extra))


def test_ema_follows_the_formula():
    """ema_t = w_t for t <= start, else decay ema_{t-1} + (1 - decay) w_t (float64 by hand)."""
    layer = nn.Linear(3, 2)
    ema = EMA(layer, ["weight"], decay=0.9, start_step=2)
    expected = None
    g = torch.Generator().manual_seed(0)
    for t in range(1, 8):
        w = torch.randn(2, 3, generator=g)
        with torch.no_grad():
            layer.weight.copy_(w)
        ema.update(t)
        expected = w.double() if t <= 2 else 0.9 * expected + 0.1 * w.double()
        torch.testing.assert_close(ema.shadow["weight"].double(), expected, rtol=0, atol=1e-6)
    raw = layer.weight.detach().clone()
    with ema.applied():
        assert torch.equal(layer.weight, ema.shadow["weight"])
    assert torch.equal(layer.weight, raw)
    averaged = ema.averaged_state_dict()
    assert torch.equal(averaged["weight"], ema.shadow["weight"]) and torch.equal(averaged["bias"], layer.bias)


def test_optimisers_follow_the_groups_and_their_settings(tmp_path):
    vae = run.make_trainer(load_config("default", TINY_CONFIG), tmp_path / "v")
    assert list(vae.optimizers) == ["model"] and vae.ema is None
    group = vae.optimizers["model"].param_groups[0]
    assert (group["lr"], group["betas"], group["amsgrad"]) == (vae.cfg.lr, (0.9, 0.999), vae.cfg.amsgrad)
    adv = run.make_trainer(mmali("train.optimizers.discriminator.lr=0.003"), tmp_path / "a")
    d, g = (adv.optimizers[k].param_groups[0] for k in ("discriminator", "generator"))
    assert (d["lr"], d["betas"], g["lr"], g["betas"], g["amsgrad"]) == (0.003, (0.5, 0.999), 0.001, (0.5, 0.999), False)
    assert {id(p) for p in g["params"]} == {id(p) for p in adv.model.parameter_groups()["generator"]}


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.optimizers.critic.lr=0.1", r"groups \['critic'\].*\['discriminator', 'generator'\]"),
        ("train.optimizers.generator.betas=[0.5, 1.0]", r"train\.optimizers\.generator: betas must be two numbers in \[0, 1\)"),
        ("train.optimizers.generator.lr=0", r"train\.optimizers\.generator\.lr must be > 0"),
        ("train.ema.decay=1.0", r"train\.ema: decay must be < 1"),
        ("train.ema.params=critic", r"train\.ema\.params is 'critic'"),
    ],
)
def test_bad_group_settings_are_clear_errors(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        run.make_trainer(mmali(override), tmp_path / "r")


def test_schedule_ratio_and_ema_weights_are_what_is_saved_and_loaded(tmp_path):
    """Two discriminator updates per step; model.pt holds the generator's EMA and the
    discriminators' raw weights; load_run of a run without model.pt lays the EMA over."""
    config = mmali("model.options.discriminator_steps=2", "train.ema.start_step=1", "train.log_every=2")
    trainer = run.make_trainer(config, tmp_path / "r")
    trainer.start()
    trainer.fit()
    steps = {k: int(next(iter(o.state.values()))["step"]) for k, o in trainer.optimizers.items()}
    n = trainer.position.global_step
    assert n > 2 and steps == {"discriminator": 2 * n, "generator": n}
    saved = load_checkpoint(tmp_path / "r" / "model.pt")
    raw = trainer.model.state_dict()
    for name, value in saved.items():
        if name in trainer.ema.shadow:
            assert torch.equal(value, trainer.ema.shadow[name]) and not torch.equal(value, raw[name]), name
        else:
            assert torch.equal(value, raw[name]), name
    (tmp_path / "r" / "model.pt").unlink()
    _, model, _ = run.load_run(tmp_path / "r")
    for name, value in model.state_dict().items():
        assert torch.equal(value, saved[name]), name
    metrics = (tmp_path / "r" / "metrics.jsonl").read_text()
    assert '"discriminator_loss"' in metrics and '"generator_adv_joint"' in metrics
