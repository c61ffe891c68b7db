"""Relatedness (PMI) against the closed form of a linear-Gaussian model, the threshold
search against brute force, and the metric end to end."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from mmdgm import Modality
from mmdgm.data import MultimodalDataset
from mmdgm.evaluate import METRICS, EvalContext
from mmdgm.evaluate.relatedness import best_threshold, pmi_of_pairs, pmi_of_tuples, separation
from mmdgm.models import MODELS
from tests.linear_gaussian import ExactUnimodalPosterior, LinearDecoder

D, P, SIGMA = 2, 3, 0.5


class LikelihoodFactor(torch.nn.Module):
    """The Gaussian factor p(x_m | z) as a function of z (A_m with orthogonal columns of
    norm 3): the product of these experts with the prior is the exact posterior given any
    subset, for any tuple, related or not."""

    def __init__(self, A, b, sigma=SIGMA):
        super().__init__()
        self.A, self.b, self.sigma = A, b, sigma

    def forward(self, x):
        loc = (x - self.b) @ self.A / 9.0
        return loc, torch.full_like(loc, 2 * np.log(self.sigma / 3.0))


def linear_gaussian_model(name, names=("u", "v"), seed=0):
    """`name` (mmvae or mvae) whose decoders are x_m = A_m z + b_m + N(0, sigma^2); MMVAE's
    encoders are the exact unimodal posteriors, MVAE's the likelihood factors (so that its
    product of experts is the exact joint posterior). Returns the model, (A, b) per modality."""
    torch.manual_seed(seed)
    mods = [Modality(n, (P,), kind="vector", likelihood="normal", likelihood_scale=SIGMA,
                     net_options={"hidden": [8]}) for n in names]
    model = MODELS.get(name)(mods, D, prior="normal", posterior="normal", posterior_scale="exp",
                             prior_scale="free", K=1)
    params = {n: (torch.linalg.qr(torch.randn(P, D))[0] * 3, torch.randn(P)) for n in names}
    for n, (A, b) in params.items():
        model.decoders[n] = LinearDecoder(A, b)
        model.encoders[n] = ExactUnimodalPosterior(A, b, SIGMA) if name == "mmvae" else LikelihoodFactor(A, b)
    return model.eval(), params


def exact_log_p(params, names, parts, sigmas=None):
    A = torch.cat([params[n][0] for n in names]).double()
    b = torch.cat([params[n][1] for n in names]).double()
    noise = torch.cat([torch.full((P,), (sigmas or {}).get(n, SIGMA) ** 2, dtype=torch.float64) for n in names])
    cov = A @ A.T + torch.diag(noise)
    return torch.distributions.MultivariateNormal(b, cov).log_prob(torch.cat([parts[n] for n in names], 1).double())


def sample_dataset(params, names, n):
    z = torch.randn(n, D)
    sources = {m: z @ params[m][0].T + params[m][1] + SIGMA * torch.randn(n, P) for m in names}
    return MultimodalDataset(sources, torch.zeros(n, dtype=torch.long), name="linear-gaussian")


@pytest.mark.parametrize("names", [("u", "v"), ("u", "v", "w")])
@pytest.mark.parametrize("name", ["mvae", "mmvae"])
def test_pmi_matches_the_closed_form(name, names):
    """PMI = log p(x_1:M) - sum_m log p(x_m) against the closed form of a linear-Gaussian
    model, for the related tuples and the re-paired ones. With MVAE's exact product-of-
    experts posterior every estimate is exact; MMVAE's mixture proposal is close for
    related tuples only: for re-paired ones its experts disagree, and the joint IWAE
    estimate (a lower bound in expectation) falls below log p, by up to ~10 nats here."""
    model, params = linear_gaussian_model(name, names)
    data = sample_dataset(params, names, 12)
    rows = torch.arange(12)
    related, unrelated, J = pmi_of_pairs(model, data, rows, K=3000, chunk=1000)
    assert all(len(set(J[:, i].tolist())) == len(names) for i in range(12))

    def exact(tuples):
        parts = {m: data.sources[m][tuples[k]] for k, m in enumerate(names)}
        return exact_log_p(params, names, parts) - sum(exact_log_p(params, [m], parts) for m in names)

    exact_related, exact_unrelated = exact(rows.expand(len(names), -1)), exact(J)
    if name == "mvae":
        assert (related.double() - exact_related).abs().max() < 1e-3
        assert (unrelated.double() - exact_unrelated).abs().max() < 1e-3
    else:
        assert (related.double() - exact_related).abs().max() < 0.05
        assert (unrelated.double() - exact_unrelated).mean() < 0
    assert related.mean() > unrelated.mean() + 1


def test_pmi_with_trained_scales_is_the_tempered_models():
    """llik_scales="trained": with u weighted by s = 0.25, p(u|z)^s is the Gaussian of
    standard deviation sigma / sqrt(s) up to a constant that cancels in the PMI; MVAE's
    experts are that tempered model's likelihood factors, so the estimate is exact. The
    unit-scale PMI is another number, and an unknown option is refused."""
    names, s = ("u", "v"), 0.25
    model, params = linear_gaussian_model("mvae", names)
    wide = SIGMA / s**0.5
    model.modalities["u"] = dataclasses.replace(model.modalities["u"], llik_scale=s)
    model.encoders["u"] = LikelihoodFactor(*params["u"], sigma=wide)
    data = sample_dataset(params, names, 10)
    rows = torch.arange(10)
    related, unrelated, J = pmi_of_pairs(model, data, rows, K=2000, chunk=1000, llik_scales="trained")

    def exact(tuples):
        parts = {m: data.sources[m][tuples[k]] for k, m in enumerate(names)}
        sigmas = {"u": wide}
        return exact_log_p(params, names, parts, sigmas) - sum(exact_log_p(params, [m], parts, sigmas) for m in names)

    assert (related.double() - exact(rows.expand(2, -1))).abs().max() < 1e-3
    assert (unrelated.double() - exact(J)).abs().max() < 1e-3
    tuples = pmi_of_tuples(model, data, J, K=2000, chunk=1000, llik_scales="trained")
    assert (tuples.double() - exact(J)).abs().max() < 1e-3
    unit, _, _ = pmi_of_pairs(model, data, rows, K=2000, chunk=1000)
    assert (unit.double() - exact(rows.expand(2, -1))).abs().max() > 0.1
    with pytest.raises(ValueError, match="llik_scales must be one of"):
        pmi_of_pairs(model, data, rows, K=10, llik_scales="model")
    with pytest.raises(ValueError, match="llik_scales must be one of"):
        pmi_of_tuples(model, data, J, K=10, llik_scales="model")


def test_best_threshold_against_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(20):
        scores = rng.normal(size=40).round(1)
        labels = rng.integers(0, 2, 40)
        t, acc = best_threshold(scores, labels)
        assert acc == pytest.approx(((scores > t) == labels.astype(bool)).mean())
        candidates = np.concatenate([[scores.min() - 1], scores])
        assert acc == pytest.approx(max(((scores > c) == labels.astype(bool)).mean() for c in candidates))


def test_separation_of_perfectly_separated_scores():
    out = separation(torch.tensor([3.0, 4.0, 5.0]), torch.tensor([0.0, 1.0, 2.5]))
    assert out["auc"] == 1.0 and out["accuracy"] == 1.0 and 2.5 < out["threshold"] < 3.0


def test_relatedness_metric_end_to_end(tmp_path):
    names = ("u", "v")
    model, params = linear_gaussian_model("mmvae", names, seed=1)
    data = sample_dataset(params, names, 40)
    data.labels = torch.arange(40) % 4
    ctx = EvalContext(model, data, out_dir=tmp_path, progress=False)
    out = METRICS.get("relatedness")(ctx, K=200, n=30)
    assert out["n"] == 30 and out["auc"] > 0.9 and out["pmi related"] > out["pmi unrelated"]
    assert 0 <= out["same label share"] <= 1 and (tmp_path / "relatedness.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="at least 2 complete test rows"):
        METRICS.get("relatedness")(ctx, n=1)


def test_w2_diagonal_against_the_general_formula():
    """||m1 - m2||^2 + Tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2) with scipy's matrix square root."""
    from scipy.linalg import sqrtm

    from mmdgm.evaluate.wasserstein import w2_diagonal

    g = torch.Generator().manual_seed(0)
    m1, m2 = torch.randn(4, generator=g, dtype=torch.float64), torch.randn(4, generator=g, dtype=torch.float64)
    s1, s2 = torch.rand(4, generator=g, dtype=torch.float64) + 0.1, torch.rand(4, generator=g, dtype=torch.float64) + 0.1
    S1, S2 = np.diag(s1.numpy() ** 2), np.diag(s2.numpy() ** 2)
    root = sqrtm(S1)
    general = np.sum((m1 - m2).numpy() ** 2) + np.trace(S1 + S2 - 2 * sqrtm(root @ S2 @ root)).real
    assert w2_diagonal(m1, s1, m2, s2).item() ** 2 == pytest.approx(general, rel=1e-10)
    assert w2_diagonal(m1, s1, m1, s1).item() == 0.0


def test_w2_relatedness_metric(tmp_path):
    model, params = linear_gaussian_model("mvae", ("u", "v"), seed=2)
    data = sample_dataset(params, ("u", "v"), 30)
    ctx = EvalContext(model, data, out_dir=tmp_path, progress=False, batch_size=16)
    out = METRICS.get("w2_relatedness")(ctx, n=30)
    assert out["u,v"]["paired"] < out["u,v"]["unpaired"] and out["u,v"]["auc"] > 0.8
    assert (tmp_path / "w2-relatedness-u-v.png").exists() and out["n"] == 30
    from mmdgm.distributions import Laplace

    model.posterior_cls = Laplace
    with pytest.raises(ValueError, match="needs Gaussian posteriors"):
        METRICS.get("w2_relatedness")(ctx)


def test_w2_relatedness_leaves_out_and_counts_overflowed_distances(tmp_path, monkeypatch):
    model, params = linear_gaussian_model("mvae", ("u", "v"), seed=2)
    data = sample_dataset(params, ("u", "v"), 8)
    posterior = model.posterior

    def overflowing(name, x):
        q = posterior(name, x)
        scale = q.scale.clone()
        scale[0] = float("inf")
        return type(q)(q.loc, scale)

    monkeypatch.setattr(model, "posterior", overflowing)
    out = METRICS.get("w2_relatedness")(EvalContext(model, data, out_dir=tmp_path, progress=False), n=8)
    # row 0 overflows in both modalities: its paired distance and its 2 * 7 unpaired ones
    assert out["u,v"]["non_finite"] == 1 + 14 and np.isfinite(out["u,v"]["unpaired"])
