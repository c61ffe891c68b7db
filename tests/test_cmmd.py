"""CMMD (Mancisidor et al.): MMD against a direct loop, the KL against torch's closed form,
eq. 5 assembled by hand, test-time isolation from the missing modality, clear errors, the
missing-modality metrics against hand computations, and a tiny run through the config."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from mmdgm import run
from mmdgm.batch import Batch, BatchError
from mmdgm.config import load_config
from mmdgm.data import DATASETS, MultimodalDataset
from mmdgm.distributions import Normal
from mmdgm.evaluate import METRICS, EvalContext
from mmdgm.evaluate.latent_structure import collapse_curve
from mmdgm.evaluate.runner import evaluate_run, read_eval
from mmdgm.modalities import Modality
from mmdgm.models import MODELS
from mmdgm.models.factory import build_model
from mmdgm.objectives.mmd import mmd

GAUSSIAN = {"prior": "normal", "posterior": "normal", "posterior_scale": "exp"}
SMALL = {"encoder_hidden": [8], "prior_hidden": [6], "decoder_hidden": [7], "classifier_hidden": [5]}


def modalities(missing_likelihood: str = "normal") -> list[Modality]:
    return [
        Modality("a", (1, 3, 2), likelihood="laplace"),
        Modality("b", (4,), kind="vector", likelihood=missing_likelihood),
        Modality("c", (3,), kind="vector", likelihood="normal"),
    ]


def cmmd(observed=("a",), missing_likelihood: str = "normal", **options) -> nn.Module:
    torch.manual_seed(0)
    options = {"observed": list(observed), "n_classes": 3, "K": 2, **SMALL, **options}
    return MODELS.get("cmmd")(modalities(missing_likelihood), 2, **GAUSSIAN, **options)


def batch(n: int = 6, seed: int = 1, binary_b: bool = False) -> Batch:
    g = torch.Generator().manual_seed(seed)
    b = torch.rand(n, 4, generator=g)
    return Batch(
        {"a": torch.rand(n, 1, 3, 2, generator=g), "b": b.round() if binary_b else b, "c": torch.randn(n, 3, generator=g)},
        labels=torch.arange(n) % 3,
    )


# --- MMD (eq. 4) ---------------------------------------------------------------------


def direct_mmd(x, y, scale):
    def k(u, v):
        return math.exp(-sum((a - b) ** 2 for a, b in zip(u, v)) / scale)

    x, y = x.tolist(), y.tolist()
    kxx = sum(k(u, v) for u in x for v in x) / len(x) ** 2
    kyy = sum(k(u, v) for u in y for v in y) / len(y) ** 2
    kxy = sum(k(u, v) for u in x for v in y) / (len(x) * len(y))
    return kxx + kyy - 2 * kxy


def test_mmd_matches_a_direct_double_loop_and_vanishes_for_identical_samples():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 3, generator=g, dtype=torch.float64)
    y = torch.randn(7, 3, generator=g, dtype=torch.float64) + 0.5
    assert float(mmd(x, y)) == pytest.approx(direct_mmd(x, y, 9.0), rel=1e-12)  # default scale D^2 = 9
    assert float(mmd(x, y, scale=0.7)) == pytest.approx(direct_mmd(x, y, 0.7), rel=1e-12)
    assert float(mmd(x, x)) == 0.0
    assert float(mmd(x, y, scale=0.7)) > 0
    far = mmd(x, y + 100.0, scale=0.7)  # disjoint supports: kxy -> 0
    assert float(far) == pytest.approx(direct_mmd(x, y + 100.0, 0.7), rel=1e-12)
    x.requires_grad_(True)
    mmd(x, y).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="samples"):
        mmd(x, y[:, :2])
    with pytest.raises(ValueError, match="scale must be > 0"):
        mmd(x, y, scale=0.0)


# --- the objective (eq. 5) -----------------------------------------------------------


def gaussian_log_density(x, loc, var):
    return (-0.5 * torch.log(2 * math.pi * var) - (x - loc) ** 2 / (2 * var)).sum(-1)


def test_kl_is_the_closed_form_and_the_code_option_drops_a_half():
    model = cmmd().eval()
    b = batch()
    t = model.terms(b)
    closed = torch.distributions.kl_divergence(
        torch.distributions.Normal(t.q.loc, t.q.scale), torch.distributions.Normal(t.p.loc, t.p.scale)
    ).sum(-1)
    torch.testing.assert_close(t.kl, closed)
    code = cmmd(objective="code").eval()
    tc = code.terms(b)
    vq, vp, dm = tc.q.scale**2, tc.p.scale**2, tc.q.loc - tc.p.loc
    # the authors' CMMD.py: 0.5 sum log var_p - 0.5 sum (1 + log var_q) + sum var_q/var_p + 0.5 sum dm^2/var_p
    authors = (0.5 * vp.log().sum(-1) - 0.5 * (1 + vq.log()).sum(-1) + (vq / vp).sum(-1)
               + 0.5 * (dm**2 / vp).sum(-1))
    torch.testing.assert_close(tc.kl, authors)


@pytest.mark.parametrize("objective", ["paper", "code"])
def test_eq5_assembled_by_hand(objective):
    """Every term recomputed from the recorded draws with direct formulas, then eq. 5:
    omega (rec + KL) + (1 - omega)(rec + lambda MMD) + alpha CE, averaged over rows (the
    code option: CE summed over the batch, KL with the var-ratio term not halved)."""
    omega, lam, alpha = 0.3, 50.0, 2.5
    model = cmmd(objective=objective, omega=omega, mmd_weight=lam, ce_weight=alpha).eval()
    b = batch()
    torch.manual_seed(5)
    out = model(b)
    torch.manual_seed(5)
    t = model.terms(b)
    x_o = b.data["a"].flatten(1)
    # posterior and prior from their networks; draws are reparameterised
    mu_p, raw_p = model.prior_net(x_o)
    mu_q, raw_q = model.encoder(torch.cat([b.data["b"], b.data["c"], x_o, torch.eye(3)[b.labels]], -1))
    torch.testing.assert_close(t.p.loc, mu_p)
    torch.testing.assert_close(t.q.scale, torch.exp(raw_q / 2))
    eps_q = (t.z - mu_q) / torch.exp(raw_q / 2)
    eps_p = (t.z_prior - mu_p) / torch.exp(raw_p / 2)
    assert torch.allclose(eps_q, eps_p) == (objective == "code")  # the code reuses the posterior's noise
    # reconstruction of the missing modalities b and c given [z, x_o]
    rec = torch.zeros(2, 6)
    for k in range(2):
        h = model.decoder.body(torch.cat([t.z[k], x_o], -1))
        for name in ("b", "c"):
            loc, var = model.decoder.loc[name](h), torch.exp(model.decoder.raw_scale[name](h))
            rec[k] -= gaussian_log_density(b.data[name], loc, var)
    rec = rec.mean(0)
    torch.testing.assert_close(t.rec, rec)
    kl = 0.5 * (2 * (raw_p - raw_q) / 2 + (torch.exp(raw_q) + (mu_q - mu_p) ** 2) / torch.exp(raw_p) - 1).sum(-1)
    if objective == "code":
        kl = kl + 0.5 * (torch.exp(raw_q) / torch.exp(raw_p)).sum(-1)
    torch.testing.assert_close(t.kl, kl)
    discrepancy = sum(direct_mmd(t.z_prior[k].detach(), t.z[k].detach(), 4.0) for k in range(2)) / 2
    assert float(t.mmd.detach()) == pytest.approx(discrepancy, rel=1e-5)
    logits = model.classifier(mu_p)
    ce = -torch.log_softmax(logits, -1)[torch.arange(6), b.labels]
    torch.testing.assert_close(t.ce, ce)
    ce_total = ce.sum() if objective == "code" else ce.mean()
    loss = omega * (rec + kl).mean() + (1 - omega) * (rec.mean() + lam * discrepancy) + alpha * ce_total
    assert float(out.loss.detach()) == pytest.approx(float(loss.detach()), rel=1e-5)
    assert float(out.per_point.detach().mean()) == pytest.approx(-float(out.loss.detach()), rel=1e-6)
    assert out.metrics["error"] == float((logits.argmax(-1) != b.labels).double().mean())


def test_omega_one_is_the_elbo_plus_the_classifier_and_every_network_learns():
    model = cmmd(omega=1.0, mmd_weight=1e6).eval()
    b = batch()
    torch.manual_seed(2)
    out = model(b)
    torch.manual_seed(2)
    t = model.terms(b)
    assert float(out.loss.detach()) == pytest.approx(float((t.rec + t.kl + 10.0 * t.ce).mean().detach()), rel=1e-6)
    model = cmmd().train()
    model(batch()).loss.backward()
    for part in ("prior_net", "encoder", "decoder", "classifier"):
        grads = [p.grad for p in getattr(model, part).parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads), part
        assert sum(float(g.abs().sum()) for g in grads) > 0, part


def test_bernoulli_missing_modality():
    model = cmmd(missing_likelihood="bernoulli").eval()
    b = batch(binary_b=True)
    t = model.terms(b)
    x_o = b.data["a"].flatten(1)
    rec = torch.zeros(6)
    for k in range(2):
        h = model.decoder.body(torch.cat([t.z[k], x_o], -1))
        prob = torch.sigmoid(model.decoder.loc["b"](h)).clamp(1e-6, 1 - 1e-6)
        rec -= (b.data["b"] * prob.log() + (1 - b.data["b"]) * (1 - prob).log()).sum(-1) / 2
        loc, var = model.decoder.loc["c"](h), torch.exp(model.decoder.raw_scale["c"](h))
        rec -= gaussian_log_density(b.data["c"], loc, var) / 2
    torch.testing.assert_close(t.rec, rec)
    assert "b" not in model.decoder.raw_scale
    assert ((model.generate_missing(b)["b"] > 0) & (model.generate_missing(b)["b"] < 1)).all()


# --- test time: only the observed modalities are read --------------------------------


def test_prediction_generation_and_encoding_never_read_the_missing_modalities():
    model = cmmd(observed=("a", "c")).eval()
    b = batch()
    poisoned = Batch({"a": b.data["a"], "b": torch.full_like(b.data["b"], float("nan")), "c": b.data["c"]})
    only_observed = Batch({"a": b.data["a"], "c": b.data["c"]})
    absent = Batch({"a": b.data["a"], "b": torch.full_like(b.data["b"], float("nan")), "c": b.data["c"]},
                   {"b": torch.zeros(6, dtype=torch.bool)})
    reference = model.predict(b)
    assert reference.shape == (6, 3) and torch.allclose(reference.sum(-1), torch.ones(6))
    for other in (poisoned, only_observed, absent):
        assert torch.equal(model.predict(other), reference)
        assert torch.equal(model.generate_missing(other)["b"], model.generate_missing(b)["b"])
        assert torch.equal(model.encode(other).loc, model.encode(b).loc)
    x_o = torch.cat([b.data["a"].flatten(1), b.data["c"]], -1)
    torch.testing.assert_close(reference, torch.softmax(model.classifier(model.prior_net(x_o)[0]), -1))
    # the generation is the decoder mean at the prior mean (the authors' draw_x2)
    h = model.decoder.body(torch.cat([model.prior_net(x_o)[0], x_o], -1))
    torch.testing.assert_close(model.generate_missing(b)["b"], model.decoder.loc["b"](h))
    torch.testing.assert_close(model.cross_generate(b, ["c", "a"], "b", mean=True), model.decoder.loc["b"](h))


def test_clear_errors():
    with pytest.raises(ValueError, match="needs model.options.observed"):
        MODELS.get("cmmd")(modalities(), 2, **GAUSSIAN)
    with pytest.raises(ValueError, match="unknown modality 'x'"):
        cmmd(observed=("x",))
    with pytest.raises(ValueError, match="at least one observed and one missing"):
        cmmd(observed=("a", "b", "c"))
    with pytest.raises(ValueError, match="missing modality 'b'.*got likelihood 'laplace'"):
        cmmd(missing_likelihood="laplace")
    with pytest.raises(ValueError, match="prior: normal and posterior: normal"):
        MODELS.get("cmmd")(modalities(), 2, prior="laplace", posterior="normal", observed=["a"])
    with pytest.raises(ValueError, match="unknown CMMD objective 'paperr'.*did you mean 'paper'"):
        cmmd(objective="paperr")
    with pytest.raises(ValueError, match="omega must be in"):
        cmmd(omega=1.5)
    with pytest.raises(ValueError, match="per-modality encoder/decoder settings"):
        MODELS.get("cmmd")([Modality("a", (2,), kind="vector", encoder="mnist-mlp"), Modality("b", (2,), kind="vector", likelihood="normal")],
                           2, **GAUSSIAN, observed=["a"])
    model = cmmd(observed=("a", "c"))
    b = batch()
    with pytest.raises(BatchError, match="cannot condition z on \\['b'\\]"):
        model.encode(b, ["a", "b"])
    with pytest.raises(BatchError, match="all its observed modalities \\['a', 'c'\\] together"):
        model.encode(b, ["a"])
    with pytest.raises(BatchError, match="generates its missing modalities \\['b'\\] only"):
        model.cross_generate(b, ["a", "c"], "a")
    with pytest.raises(BatchError, match="observed modality 'c', which the batch lacks"):
        model.predict(Batch({"a": b.data["a"]}))
    with pytest.raises(BatchError, match="observed modality 'c' is missing in rows \\[0\\]"):
        model.predict(Batch(dict(b.data), {"c": torch.arange(6) > 0}))
    with pytest.raises(BatchError, match="no labels"):
        model(Batch(dict(b.data)))
    with pytest.raises(BatchError, match="labels must lie in 0..2"):
        model(Batch(dict(b.data), labels=torch.arange(6)))
    with pytest.raises(BatchError, match="complete rows"):
        model(Batch(dict(b.data), {"b": torch.arange(6) > 0}, b.labels))
    for verb, args in (("sample", (4,)), ("decode", (torch.zeros(1, 2),)), ("prior", ()),
                       ("reconstruct", (b,)), ("log_likelihood", (b,)), ("posterior", ("a", b.data["a"]))):
        with pytest.raises(NotImplementedError, match="CMMD has no"):
            getattr(model, verb)(*args)


# --- metrics against hand computations ------------------------------------------------


def dataset(n: int = 40, seed: int = 3) -> MultimodalDataset:
    b = batch(n, seed)
    return MultimodalDataset(b.data, b.labels, name="tiny-cmmd")


def context(model, tmp_path, **kw) -> EvalContext:
    return EvalContext(model=model.eval(), test_set=dataset(), out_dir=tmp_path, batch_size=16, progress=False, **kw)


def test_missing_rmse_and_prediction_error_against_hand_computation(tmp_path):
    model = cmmd(observed=("a",))
    ctx = context(model, tmp_path)
    full = ctx.test_set.batch(torch.arange(40))
    generated = model.generate_missing(full)
    result = METRICS.get("missing_rmse")(ctx)
    for t in ("b", "c"):
        assert result[t] == pytest.approx(float((generated[t] - full.data[t]).square().mean().sqrt()), rel=1e-6)
    assert result["observed"] == ["a"] and result["rows"] == {"b": 40, "c": 40}
    error = METRICS.get("prediction_error")(ctx)
    assert error == {"error": float((model.predict(full).argmax(-1) != full.labels).double().mean()), "n": 40}
    assert METRICS.get("prediction_error")(ctx, n=10)["n"] == 10


class ConstantGenerator(nn.Module):
    """Generates zeros for every target: RMSE = root mean square of the data."""

    names = ["a", "b", "c"]

    def cross_generate(self, batch, source, target, mean=False):
        assert list(source) == ["a", "c"] and mean
        return torch.zeros_like(batch.data[target])


def test_missing_rmse_of_any_model_from_a_named_subset(tmp_path):
    ctx = EvalContext(model=ConstantGenerator(), test_set=dataset(), out_dir=tmp_path, batch_size=16, progress=False)
    x = ctx.test_set.batch(torch.arange(40)).data["b"]
    result = METRICS.get("missing_rmse")(ctx, observed=["a", "c"])
    assert result["b"] == pytest.approx(math.sqrt(float((x.double() ** 2).mean())), rel=1e-12)
    assert result["mean"] == result["b"]
    with pytest.raises(ValueError, match="name the observed modalities"):
        METRICS.get("missing_rmse")(ctx)
    with pytest.raises(ValueError, match="unknown modality 'd'"):
        METRICS.get("missing_rmse")(ctx, observed=["d"])


def test_collapse_curve_by_hand():
    # 4 rows, 3 dimensions; fraction 0.75: a dimension counts once 3 of its 4 KLs are <= t
    kl = torch.tensor([[0.0, 1.0, 5.0], [0.1, 2.0, 5.0], [0.2, 3.0, 5.0], [9.0, 4.0, 5.0]])
    thresholds = torch.tensor([0.0, 0.2, 3.0, 5.0, 10.0])
    # dim 0: 3rd smallest 0.2 -> counts from 0.2; dim 1: 3rd smallest 3 -> from 3; dim 2: from 5
    expected = torch.tensor([0.0, 1 / 3, 2 / 3, 1.0, 1.0], dtype=torch.float64)
    torch.testing.assert_close(collapse_curve(kl, thresholds, 0.75), expected)
    # fraction 1: every KL of the dimension <= t; maxima 9, 4, 5
    torch.testing.assert_close(collapse_curve(kl, thresholds, 1.0), torch.tensor([0, 0, 0, 2 / 3, 1], dtype=torch.float64))


class KnownPairs(nn.Module):
    """q(z | x) = N(mu, 1) with mu = (0, 1, 3) for every row against N(0, 1): KL_d = mu_d^2 / 2."""

    names = ["a", "b", "c"]

    def latent_kl_pairs(self, batch):
        loc = torch.tensor([0.0, 1.0, 3.0]).expand(batch.size, 3)
        rows = torch.ones(batch.size, dtype=torch.bool)
        return {"q || p": (Normal(loc, torch.ones(3)), Normal(torch.zeros(3), torch.ones(3)), rows)}


def test_posterior_collapse_metric(tmp_path):
    ctx = EvalContext(model=KnownPairs(), test_set=dataset(), out_dir=tmp_path, batch_size=16, progress=False)
    result = METRICS.get("posterior_collapse")(ctx, max_threshold=6.0, steps=13)  # steps of 0.5 nats
    assert result["thresholds"] == pytest.approx([0.5 * i for i in range(13)])
    hand = [(sum(kl <= 0.5 * i + 1e-12 for kl in (0.0, 0.5, 4.5))) / 3 for i in range(13)]
    assert result["collapse"]["q || p"] == pytest.approx(hand)
    assert result["n"] == 40 and (tmp_path / result["figures"][0]).is_file()
    # on CMMD: the posterior against the conditional prior, and that prior against N(0, I)
    model = cmmd()
    ctx = context(model, tmp_path)
    result = METRICS.get("posterior_collapse")(ctx)
    full = ctx.test_set.batch(torch.arange(40))
    q, p = model.joint_posterior(full), model.conditional_prior(full)
    kl = torch.distributions.kl_divergence(torch.distributions.Normal(q.loc, q.scale),
                                           torch.distributions.Normal(p.loc, p.scale)).double()
    grid = torch.linspace(0, 6, 40, dtype=torch.float64)
    hand = [float(((kl <= e).double().mean(0) >= 0.99).double().mean()) for e in grid]
    assert result["collapse"]["q(z|x,y) || p(z|x_o)"] == pytest.approx(hand)
    assert set(result["collapse"]) == {"q(z|x,y) || p(z|x_o)", "p(z|x_o) || N(0,I)"}


# --- configs and a tiny run ------------------------------------------------------------


def test_paper_config_builds_the_papers_networks():
    cfg = load_config("cmmd-two-view-mnist")
    model = build_model(cfg.model, {"view1": (1, 28, 28), "view2": (1, 28, 28)})
    linear = lambda net: [(m.in_features, m.out_features) for m in net.modules() if isinstance(m, nn.Linear)]  # noqa: E731
    assert linear(model.encoder) == [(784 + 784 + 10, 2500), (2500, 2500), (2500, 2500), (2500, 50), (2500, 50)]
    assert linear(model.prior_net) == [(784, 1024), (1024, 1024), (1024, 1024), (1024, 50), (1024, 50)]
    assert linear(model.decoder) == [(50 + 784, 1024), (1024, 1024), (1024, 1024), (1024, 784), (1024, 784)]
    assert linear(model.classifier) == [(50, 70), (70, 70), (70, 10)]
    dropouts = [m.p for m in model.modules() if isinstance(m, nn.Dropout)]
    assert len(dropouts) == 11 and set(dropouts) == {0.2}
    assert sum(isinstance(m, nn.Softplus) for m in model.modules()) == 11
    assert (model.omega, model.mmd_weight, model.ce_weight, model.observed, model.missing) == (0.4, 1000.0, 10.0, ["view1"], ["view2"])
    assert (cfg.train.batch_size, cfg.train.lr, cfg.train.amsgrad) == (100, 1e-4, False)


def test_mnist_svhn_configs_build_appendix_c_and_h_networks():
    """MNIST-SVHN (App. C): encoder, prior and decoder of 1x400, z = 20, classifier 2x50; the
    street digit decoded by a Bernoulli (no variance head). MNIST-SVHN-Text (App. H): the
    encoder is 3x2500 over the three vectorised modalities and the one-hot label."""
    linear = lambda net: [(m.in_features, m.out_features) for m in net.modules() if isinstance(m, nn.Linear)]  # noqa: E731
    shapes = {"mnist": (1, 28, 28), "synth_street": (3, 32, 32), "text": (8, 71)}
    cfg = load_config("cmmd-mnist-synthstreet")
    model = build_model(cfg.model, {m: shapes[m] for m in ("mnist", "synth_street")})
    assert linear(model.encoder) == [(3072 + 784 + 10, 400), (400, 20), (400, 20)]
    assert linear(model.prior_net) == [(784, 400), (400, 20), (400, 20)]
    assert linear(model.decoder) == [(20 + 784, 400), (400, 3072)]
    assert linear(model.classifier) == [(20, 50), (50, 50), (50, 10)]
    assert (model.observed, cfg.data.options["dm"], model.omega, model.mmd_weight, model.ce_weight) == (["mnist"], 1, 0.4, 1000.0, 10.0)
    cfg = load_config("cmmd-mnist-synthstreet-text", ["model.options.observed=[synth_street,text]"])
    model = build_model(cfg.model, shapes)
    assert linear(model.encoder)[:3] == [(784 + 3072 + 568 + 10, 2500), (2500, 2500), (2500, 2500)]
    assert linear(model.prior_net)[0] == (3072 + 568, 400) and model.missing == ["mnist"]


def test_tiny_training_run_through_the_config(tmp_path):
    config = load_config("cmmd-default", [
        "data.options={source: synthetic, n_train: 120, n_test: 60}",
        "model.latent_dim=3",
        "model.options.encoder_hidden=[16]",
        "model.options.prior_hidden=[8]",
        "model.options.decoder_hidden=[8]",
        "model.options.classifier_hidden=[4]",
        "train.epochs=1",
        "train.batch_size=40",
        "train.log_every=1",
        "train.eval_batches=1",
        "train.grid_size=4",
        "train.final_metrics=[prediction_error, missing_rmse, posterior_collapse]",
    ])
    run_dir = run.train(config, tmp_path / "r")
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines if line["split"] == "train"] == [1, 2, 3]
    assert {"loss", "rec", "kl", "mmd", "ce", "error"} <= set(lines[-1])
    assert (run_dir / "grids" / "epoch001-missing.png").is_file()
    results = read_eval(run_dir)
    assert 0 <= results["prediction_error"]["error"] <= 1 and results["missing_rmse"]["observed"] == ["view1"]
    results = evaluate_run(run_dir, ["downstream_classification"], {"downstream_classification": {"observed": ["view1"], "n_train": 60}},
                           progress=False)
    assert set(results["downstream_classification"]) == {"view1", "mean", "n_train", "use_mean"}
    with pytest.raises(NotImplementedError, match="CMMD has no"):
        evaluate_run(run_dir, ["latent_traversals"], progress=False)


# --- subsets, text lines, and XRMB/Flickr-style data through `arrays` ------------------------


def test_encode_accepts_only_the_observed_set_and_downstream_classification_knows(tmp_path):
    model = cmmd(observed=("a", "c"), missing_likelihood="bernoulli").eval()
    assert model.inference_subsets == [["a", "c"]]
    full = MODELS.get("mvae")(modalities(), 2, **GAUSSIAN)
    assert full.inference_subsets == [["a"], ["b"], ["c"], ["a", "b"], ["a", "c"], ["b", "c"], ["a", "b", "c"]]
    g = torch.Generator().manual_seed(0)
    n = 30
    data = MultimodalDataset({"a": torch.rand(n, 1, 3, 2, generator=g), "b": torch.rand(n, 4, generator=g).round(),
                              "c": torch.randn(n, 3, generator=g)}, torch.arange(n) % 3)
    ctx = EvalContext(model=model, test_set=data, train_set=data, classifiers={}, out_dir=tmp_path,
                      batch_size=16, seed=0, progress=False)
    result = METRICS.get("downstream_classification")(ctx, n_train=20)
    assert set(result) == {"a+c", "mean", "n_train", "use_mean"} and result["mean"] == result["a+c"]


def test_text_lines_of_cmmd_are_the_data_and_its_generations(tmp_path):
    from mmdgm.data.text import decode, encode
    from mmdgm.train.grids import text_lines

    torch.manual_seed(0)
    mods = [Modality("img", (4,), kind="vector", likelihood="normal"),
            Modality("text", (8, 71), kind="text", likelihood="bernoulli")]
    model = MODELS.get("cmmd")(mods, 2, **GAUSSIAN, observed=["img"], n_classes=2, **SMALL).eval()
    words = encode(["   zero ", "one     "])
    batch = Batch({"img": torch.rand(2, 4), "text": words}, labels=torch.tensor([0, 1]))
    lines = text_lines(model, batch, 2, {"text": decode})
    generated = decode(model.generate_missing(batch)["text"])
    assert lines == ["data text: '   zero ' | 'one     '", "img -> text: " + " | ".join(repr(s) for s in generated)]


XRMB = {"acoustic": 273, "articulatory": 112}  # MFCCs + deltas over 7 frames; 8 pellets x (x, y) x 7 frames
FLICKR = {"image": 3857, "tags": 2000}  # Srivastava & Salakhutdinov's image features; the 2000 most frequent tags
ARRAYS_YAML = """
data:
  name: arrays
  options: {{path: {path}, test_fraction: 0.25}}
model:
  name: cmmd
  latent_dim: 4
  prior: normal
  posterior: normal
  posterior_scale: exp
  options:
    observed: [{observed}]
    n_classes: {classes}
    encoder_hidden: [16]
    prior_hidden: [16]
    decoder_hidden: [16]
    classifier_hidden: [8]
  modalities:
    {observed}: {{likelihood: normal}}
    {missing}: {{likelihood: {likelihood}}}
train:
  epochs: 2
  batch_size: 16
  final_metrics: [prediction_error, missing_rmse]
"""


@pytest.mark.parametrize("style", ["xrmb", "flickr"])
def test_xrmb_and_flickr_style_arrays_train_cmmd_through_the_cli(tmp_path, style):
    """docs/datasets.md's recipe: features written as an .npz, CMMD trained from a YAML file."""
    from mmdgm import cli

    rng = np.random.default_rng(0)
    n, classes = 64, 4
    y = rng.integers(0, classes, n)
    (observed, d_o), (missing, d_m) = (XRMB if style == "xrmb" else FLICKR).items()
    x_o = (rng.normal(size=(classes, d_o))[y] + rng.normal(size=(n, d_o))).astype(np.float32)
    if style == "xrmb":  # articulatory displacements: real-valued, Gaussian decoder
        x_m, likelihood = (rng.normal(size=(classes, d_m))[y] + rng.normal(size=(n, d_m))).astype(np.float32), "normal"
    else:  # tag indicators as bool (uint8 would be read as an image and scaled by 1/255): Bernoulli decoder
        x_m, likelihood = rng.random((n, d_m)) < 0.01, "bernoulli"
    np.savez(tmp_path / f"{style}.npz", **{observed: x_o, missing: x_m, "labels": y})
    train = DATASETS.get("arrays")("train", tmp_path, path=f"{style}.npz", test_fraction=0.25)
    assert train.shapes == {observed: (d_o,), missing: (d_m,)} and len(train) == 48
    if style == "flickr":
        assert set(train.batch(torch.arange(48)).data[missing].unique().tolist()) == {0.0, 1.0}
    config = tmp_path / f"{style}.yaml"
    config.write_text(ARRAYS_YAML.format(path=tmp_path / f"{style}.npz", observed=observed, missing=missing,
                                         classes=classes, likelihood=likelihood))
    assert cli.main(["train", "--config", str(config), "--run-dir", str(tmp_path / "run")]) == 0
    results = read_eval(tmp_path / "run")
    assert results["prediction_error"]["n"] == 16 and 0 <= results["prediction_error"]["error"] <= 1
    assert results["missing_rmse"]["observed"] == [observed] and math.isfinite(results["missing_rmse"][missing])
