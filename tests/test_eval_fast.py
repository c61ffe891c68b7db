"""Fast likelihood evaluation: encoder outputs computed once per batch and reused over the
chunks of draws (the same numbers as re-encoding per chunk, for every model with a
likelihood), the scaled bound from the log-likelihood's own decoder pass, the memory budget (bytes per draw counted by hand; it changes the work sizes,
never the estimates under a sampler whose draws do not depend on them), and the device
option."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from mmdgm import Batch, Modality
from mmdgm.evaluate import METRICS
from mmdgm.evaluate.budget import allocated_bytes, bytes_per_draw, plan_sizes
from mmdgm.evaluate.common import on_device, resolve_device
from mmdgm.models import MODELS
from mmdgm.models.base import chunked_log_mean_weight
from tests.test_eval_likelihood import Float64Dataset, HashNormal, context, linear_gaussian

GAUSSIAN = {"prior": "normal", "posterior": "normal", "posterior_scale": "exp", "prior_scale": "free"}
LIKELIHOOD_MODELS = {
    "mmvae": {}, "mvae": {}, "jmvae": {}, "mopoe": {}, "mmjsd": {}, "meme": {"n_pseudo": 3},
    "vcca": {}, "vcca-private": {"private_dim": 2},
}


def small_model(name: str) -> nn.Module:
    torch.manual_seed(0)
    mods = [Modality(n, (5,), kind="vector", net_options={"hidden": [8]}) for n in "ab"]
    return MODELS.get(name)(mods, 3, **GAUSSIAN, **LIKELIHOOD_MODELS[name]).eval()


def partial_batch(rows: int = 6) -> Batch:
    g = torch.Generator().manual_seed(1)
    mask = {"a": torch.ones(rows, dtype=torch.bool), "b": torch.arange(rows) % 3 != 0}
    return Batch({n: torch.randn(rows, 5, generator=g) for n in "ab"}, mask).zero_missing()


def is_encoder(name: str) -> bool:
    """An encoder network: a member of `encoders` / `private_encoders`, or JMVAE's `joint`."""
    parts = name.split(".")
    return (len(parts) == 2 and parts[0] in ("encoders", "private_encoders")) or name == "joint"


class CountingEncoders:
    """Counts the forward calls of every encoder network of a model on `rows` data points
    (MEME also encodes its 3 pseudo-samples, a parameter of its prior, on every call)."""

    def __init__(self, model: nn.Module, rows: int) -> None:
        self.calls = 0
        self.rows = rows
        for name, module in model.named_modules():
            if is_encoder(name):
                module.register_forward_hook(self.hook)

    def hook(self, module, inputs, output) -> None:
        x = inputs[0]
        self.calls += int((next(iter(x.values())) if isinstance(x, dict) else x).shape[0] == self.rows)


@pytest.mark.parametrize("name", sorted(LIKELIHOOD_MODELS))
def test_reusing_encoder_outputs_gives_the_same_numbers_with_one_encoder_pass(name):
    """log_likelihood (one joint_proposal per batch) equals, bit for bit under the same
    seed, the old path that re-encodes the batch for every chunk of draws, and it runs each
    encoder on the batch once instead of once per chunk."""
    model = small_model(name)
    batch = partial_batch()
    counter = CountingEncoders(model, batch.size)
    K, chunk = 10, 3
    with torch.no_grad():
        torch.manual_seed(5)
        counter.calls = 0
        old = chunked_log_mean_weight(lambda k: model.joint_log_weights(batch, k), K, chunk)
        old_calls = counter.calls
        torch.manual_seed(5)
        counter.calls = 0
        new = model.log_likelihood(batch, K=K, chunk=chunk)
    assert torch.equal(old, new)
    assert torch.isfinite(new).all()
    assert counter.calls < old_calls
    assert old_calls == 4 * counter.calls  # four chunks of draws before, one encoding now


def test_bytes_per_draw_counts_new_tensors_by_hand():
    """zeros (k, 100) float32, +1 out of place, *2 in place, a view: 2 new tensors of 400
    bytes per draw; the RNG state is restored after the probe."""
    def work(k):
        x = torch.zeros(k, 100) + 1
        x.mul_(2)
        return x.view(-1), torch.rand(3)

    state = torch.get_rng_state()
    assert allocated_bytes(lambda: work(3)) == 2 * 3 * 400 + 12
    assert bytes_per_draw(work) == 800
    assert torch.equal(torch.get_rng_state(), state)


def test_plan_sizes_spends_the_budget_on_whole_rows_first():
    mb = 2**20
    assert plan_sizes(1.0, mb // 1000, K=100, rows=50) == (10, 100)  # 1000 draws fit: 10 rows of K=100
    assert plan_sizes(1.0, mb // 1000, K=100, rows=4) == (4, 100)  # no more rows than there are
    assert plan_sizes(1.0, mb // 40, K=100, rows=50) == (1, 40)  # under K: one row, 40 draws a chunk
    with pytest.raises(ValueError, match="below one draw"):
        plan_sizes(1.0, 2 * mb, K=100, rows=50)
    with pytest.raises(ValueError, match="memory_mb must be > 0"):
        plan_sizes(0.0, 10, K=100, rows=50)


@pytest.mark.parametrize("metric", ["joint_log_likelihood", "conditional_log_likelihoods"])
def test_the_memory_budget_changes_the_work_sizes_not_the_answer(metric, monkeypatch):
    """With HashNormal (draws a fixed function of (draw index, row)), every budget gives
    the estimates of the default sizes to 1e-9, and the budget does set the sizes."""
    model, data, _ = linear_gaussian(10)
    model.posterior_cls = HashNormal
    K = 12
    default = METRICS.get(metric)(context(model, data, batch_size=64), K=K, chunk=K)
    import mmdgm.evaluate.likelihood as likelihood

    planned = []
    monkeypatch.setattr(likelihood, "plan_sizes", lambda *a: planned.append(plan_sizes(*a)) or planned[-1])
    per_draw = None
    for memory_mb in (0.002, 0.02, 1.0):
        try:
            out = METRICS.get(metric)(context(model, data, batch_size=64), K=K, chunk=K, memory_mb=memory_mb)
        except ValueError as err:  # the smallest budget may be below one draw of this model
            assert "below one draw" in str(err)
            continue
        for key, value in default.items():
            if isinstance(value, float):
                assert out[key] == pytest.approx(value, abs=1e-9), (memory_mb, key)
        per_draw = planned[-1]
    assert per_draw is not None and len(set(planned)) >= 2  # different budgets, different sizes


def test_device_option():
    model, data, _ = linear_gaussian(4)
    cpu = METRICS.get("joint_log_likelihood")(context(model, data), K=5, device="cpu")
    auto = METRICS.get("joint_log_likelihood")(context(model, data), K=5)
    if not torch.cuda.is_available():
        assert cpu == auto
        with pytest.raises(ValueError, match="no CUDA device"):
            METRICS.get("joint_log_likelihood")(context(model, data), K=5, device="cuda")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("gpu0")
    with on_device(model, "cpu"):
        pass
    assert next(model.parameters()).device.type == "cpu"


def test_the_scaled_bound_comes_from_the_same_decoder_pass_as_the_log_likelihood():
    """With llik_scale 3 on u and partially observed rows, one pass (forward-mode tangents
    in the scales) gives both keys equal to the two separately seeded passes of before,
    with half the decoder calls."""
    from mmdgm.evaluate.common import seeded, test_batches
    from mmdgm.evaluate.likelihood import unit_llik_scales

    model, data, _ = linear_gaussian(12)
    model.modalities["u"] = dataclasses.replace(model.modalities["u"], llik_scale=3.0)
    present = torch.arange(12) % 4 != 0
    data = Float64Dataset(data.sources, data.labels, mask={"v": present})
    calls = []
    for decoder in model.decoders.values():
        decoder.register_forward_hook(lambda *_: calls.append(1))
    ctx = context(model, data, batch_size=5)
    out = METRICS.get("joint_log_likelihood")(ctx, K=40, chunk=15)
    one_pass = len(calls)
    calls.clear()
    cpu = torch.device("cpu")
    with torch.no_grad():
        with seeded(0, cpu), unit_llik_scales(model):
            unit = torch.cat([model.log_likelihood(b, K=40, chunk=15) for b in test_batches(ctx, None, "t")])
        with seeded(0, cpu):
            scaled = torch.cat([model.log_likelihood(b, K=40, chunk=15) for b in test_batches(ctx, None, "t")])
    assert len(calls) == 2 * one_pass
    assert out["log p(u,v)"] == pytest.approx(float(unit.mean()), abs=1e-9)
    assert out["scaled bound(u,v)"] == pytest.approx(float(scaled.mean()), abs=1e-9)
    assert out["log p(u,v)"] - out["scaled bound(u,v)"] > 5.0
    assert model.modalities["u"].llik_scale == 3.0
