"""MMVAE against independent computations: mixture density, log-weights, an exact
linear-Gaussian log-likelihood, masks and DReG gradient routing."""

from __future__ import annotations

import math

import pytest
import torch

from mmdgm import Batch, Modality
from mmdgm.distributions import MixtureOfExperts, Normal
from mmdgm.models import MODELS
from tests.linear_gaussian import ExactUnimodalPosterior, LinearDecoder
from tests.zero_gradient import check_missing_modality_is_never_read, grads


def image_model(K=3, objective="dreg", D=4):
    mods = [
        Modality("a", (1, 28, 28), encoder="mnist-mlp", decoder="mnist-mlp", llik_scale=2.0, net_options={"hidden": 16}),
        Modality("b", (3, 32, 32), encoder="svhn-conv", decoder="svhn-conv", net_options={"width": 4}),
    ]
    return MODELS.get("mmvae")(mods, D, K=K, objective=objective, learn_prior=True)


def image_batch(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Batch({"a": torch.rand(n, 1, 28, 28, generator=g), "b": torch.rand(n, 3, 32, 32, generator=g)})


def test_mixture_log_prob_matches_brute_force_with_masks():
    torch.manual_seed(0)
    experts = [Normal(torch.randn(5, 3), torch.rand(5, 3) + 0.3) for _ in range(3)]
    mask = torch.tensor([[1, 1, 0, 1, 0], [1, 0, 1, 1, 0], [1, 1, 1, 0, 1]], dtype=torch.bool)
    z = torch.randn(7, 5, 3)
    got = MixtureOfExperts(experts, mask).log_prob(z)
    for b in range(5):
        dens = [torch.distributions.Normal(e.loc[b], e.scale[b]).log_prob(z[:, b]).sum(-1).exp()
                for e, m in zip(experts, mask[:, b]) if m]
        want = torch.stack(dens).mean(0).log()
        torch.testing.assert_close(got[:, b], want, rtol=1e-5, atol=1e-5)


def test_mixture_sampling_picks_observed_experts_uniformly():
    torch.manual_seed(0)
    experts = [Normal(torch.full((2, 1), float(c)), torch.full((2, 1), 1e-3)) for c in (0, 10, 20)]
    mask = torch.tensor([[1, 0], [1, 1], [0, 1]], dtype=torch.bool)
    z = MixtureOfExperts(experts, mask).sample((6000,)).round()
    assert set(z[:, 0, 0].tolist()) == {0.0, 10.0} and set(z[:, 1, 0].tolist()) == {10.0, 20.0}
    assert abs((z[:, 0, 0] == 0).float().mean() - 0.5) < 0.03


def test_log_weights_match_the_mmvae_formula():
    """lw_r = log p(z) + sum_d s_d log p(x_d|z) - log (1/M) sum_m q(z|x_m), recomputed by hand."""
    torch.manual_seed(1)
    model, batch = image_model(), image_batch()
    torch.manual_seed(2)
    s = model.stratified_sample(batch, 3)
    z, lw = s.z, s.lw
    qa, qb = model.posterior("a", batch.data["a"]), model.posterior("b", batch.data["b"])
    prior = torch.distributions.Laplace(model.prior().loc, model.prior().scale)
    for r in range(2):
        zr = z[r]
        lq = torch.logsumexp(torch.stack([
            torch.distributions.Laplace(q.loc, q.scale).log_prob(zr).sum(-1) for q in (qa, qb)]), 0) - math.log(2)
        la = torch.distributions.Laplace(model.decoders["a"](zr), 0.75).log_prob(batch.data["a"]).sum((-3, -2, -1))
        lb = torch.distributions.Laplace(model.decoders["b"](zr), 0.75).log_prob(batch.data["b"]).sum((-3, -2, -1))
        want = prior.log_prob(zr).sum(-1) + 2.0 * la + lb - lq
        torch.testing.assert_close(lw[r], want, rtol=1e-5, atol=1e-2)


def test_tight_bound_dominates_looser_and_elbo():
    torch.manual_seed(0)
    out = image_model(K=5)(image_batch())
    m = out.metrics
    assert m["iwae_tight"] >= m["iwae_looser"] >= m["elbo"]


@pytest.mark.parametrize("names", [("u", "v"), ("u", "v", "w")])
def test_log_likelihood_converges_to_exact_linear_gaussian(names):
    """p(z)=N(0,I), p(x_m|z)=N(A_m z + b_m, sigma^2 I): log p(x_1..M) is Gaussian in closed
    form. The importance-sampled estimate with 4000 samples per modality must be within
    0.05 nats of it (a mixture proposal, so the bias is small but not zero); with one
    modality observed the proposal is the exact posterior and the estimate is exact."""
    torch.manual_seed(0)
    D, P, sigma = 2, 3, 0.8
    mods = [Modality(n, (P,), kind="vector", likelihood="normal", likelihood_scale=sigma,
                     net_options={"hidden": [8]}) for n in names]
    model = MODELS.get("mmvae")(mods, D, prior="normal", posterior="normal", posterior_scale="exp",
                                prior_scale="free", K=1, objective="iwae")
    # A_m with orthogonal columns: each unimodal posterior is then exactly diagonal
    params = {n: (torch.linalg.qr(torch.randn(P, D))[0] * torch.rand(D) * 3, torch.randn(P)) for n in names}
    for n, (A, b) in params.items():
        model.decoders[n] = LinearDecoder(A, b)
        model.encoders[n] = ExactUnimodalPosterior(A, b, sigma)
    A = torch.cat([params[n][0] for n in names])
    b = torch.cat([params[n][1] for n in names])
    cov = A @ A.T + sigma**2 * torch.eye(len(names) * P)
    x = torch.distributions.MultivariateNormal(b, cov).sample((4,))
    parts = dict(zip(names, x.split(P, dim=1)))
    exact = torch.distributions.MultivariateNormal(b.double(), cov.double()).log_prob(x.double())
    est = model.log_likelihood(Batch(parts), K=4000, chunk=1000)
    assert (est.double() - exact).abs().max() < 0.05
    only_u = {n: torch.tensor([n == "u"] * 4) for n in names}
    single = model.log_likelihood(Batch(parts, only_u), K=4000, chunk=1000)
    A_u, b_u = params["u"]
    exact_u = torch.distributions.MultivariateNormal(
        b_u.double(), (A_u @ A_u.T + sigma**2 * torch.eye(P)).double()
    ).log_prob(parts["u"].double())
    assert (single.double() - exact_u).abs().max() < 1e-4


@pytest.mark.parametrize("objective", ["dreg", "dreg_naive", "iwae", "elbo", "iwae_tight"])
def test_missing_modality_gets_zero_gradient_and_is_never_read(objective):
    """Rows where b is missing: b's networks get exactly zero gradient from them, and the
    placeholders (zeros or NaN) change nothing at all."""
    check_missing_modality_is_never_read(image_model(objective=objective), image_batch())


def test_dreg_routes_iwae_gradient_to_decoders_and_a_different_one_to_encoders():
    """Same draws: DReG and IWAE give identical decoder/prior gradients but different
    encoder gradients (the official code's misplaced hook gave identical ones)."""
    batch = image_batch()
    results = {}
    for objective in ("dreg", "iwae"):
        torch.manual_seed(0)
        model = image_model(K=4, objective=objective)
        torch.manual_seed(1)
        model(batch).loss.backward()
        results[objective] = grads(model)
    for k in results["dreg"]:
        a, b = results["dreg"][k], results["iwae"][k]
        assert torch.isfinite(a).all(), k
        gap = float((a - b).abs().max() / b.abs().max())  # float32 summation order: ~1e-4
        if k.startswith("encoders."):
            assert gap > 0.05, k
        else:
            assert gap < 1e-3, k


def test_model_verbs_shapes_and_ranges():
    torch.manual_seed(0)
    model = image_model()
    batch = image_batch()
    samples = model.sample(5)
    assert samples["a"].shape == (5, 1, 28, 28) and samples["b"].shape == (5, 3, 32, 32)
    assert 0 < samples["a"].min() and samples["a"].max() < 1
    cross = model.cross_generate(batch, "a", "b")
    assert cross.shape == (6, 3, 32, 32)
    torch.manual_seed(5)
    via_mean = model.cross_generate(batch, "a", "b", mean=True)
    torch.testing.assert_close(via_mean, model.likelihood("b", model.posterior("a", batch.data["a"]).loc).mean)
    assert set(model.reconstruct(batch)) == {"a", "b"}
    with pytest.raises(ValueError, match="unknown modality 'c'"):
        model.cross_generate(batch, "c", "b")


def test_bad_objective_and_single_modality_are_rejected():
    with pytest.raises(ValueError, match="did you mean 'dreg'"):
        image_model(objective="dreq")
    with pytest.raises(ValueError, match="at least two"):
        MODELS.get("mmvae")([Modality("a", (3,), kind="vector")], 2)


def test_nan_in_absent_experts_never_reaches_values_or_gradients():
    """Independent review finding: masked experts holding NaN must give finite densities,
    means and exactly zero gradients (cleaned before any arithmetic)."""
    from mmdgm.distributions.product import product_of_gaussians

    loc = torch.tensor([[[0.5, -1.0]], [[float("nan"), float("nan")]]], requires_grad=True)
    scale = torch.tensor([[[0.7, 1.2]], [[float("nan"), 0.0]]], requires_grad=True)
    mask = torch.tensor([[True], [False]])
    mix = MixtureOfExperts([Normal(loc[0], scale[0]), Normal(loc[1], scale[1])], mask)
    (mix.log_prob(torch.zeros(3, 1, 2)).sum() + mix.mean.sum()).backward()
    assert torch.isfinite(loc.grad).all() and torch.isfinite(scale.grad).all()
    assert torch.count_nonzero(loc.grad[1]) == 0 and torch.count_nonzero(scale.grad[1]) == 0
    loc.grad = scale.grad = None
    product_of_gaussians(loc, scale, mask).rsample().sum().backward()
    assert torch.isfinite(loc.grad).all() and torch.isfinite(scale.grad).all()
    assert torch.count_nonzero(scale.grad[1]) == 0


def test_encode_ignores_nan_placeholders():
    torch.manual_seed(0)
    model, batch = image_model(), image_batch()
    data = dict(batch.data)
    data["b"] = data["b"].clone()
    data["b"][0] = float("nan")
    partial = Batch(data, {"b": torch.tensor([False, True, True, True, True, True])})
    out = model.cross_generate(partial, ["a", "b"], "b", mean=True)
    assert torch.isfinite(out).all()


def test_stl_looser_gradient_equals_an_independent_per_sample_computation():
    """`stl_looser` (the official code's effective m_dreg_looser gradient), same draws:
    decoders and prior get the looser-IWAE gradient; encoders get exactly
    -(1/(B M)) sum_{m,k,b} w~_mkb (dlw/dz)(z_mkb) dz_mkb/dphi, with dlw/dz taken per sample
    on a detached copy of z (mixture density with detached encoder parameters) and the
    chain to the encoders applied by autograd.grad."""
    torch.set_default_dtype(torch.float64)
    try:
        batch = image_batch()
        batch = Batch({k: v.double() for k, v in batch.data.items()})
        torch.manual_seed(0)
        model = image_model(K=4, objective="stl_looser")
        torch.manual_seed(1)
        model(batch).loss.backward()
        got = grads(model)
        model.zero_grad()
        torch.manual_seed(1)
        s = model.stratified_sample(batch.zero_missing(), 4, detach_q=True)
        zl = s.z.detach().requires_grad_(True)
        lw = model.prior().log_prob(zl).sum(-1) + model.log_likelihood_terms(batch, zl) - s.q.log_prob(zl)
        (dlw_dz,) = torch.autograd.grad(lw.sum(), zl)
        w = torch.softmax(s.lw.detach(), 1)
        M, B = s.lw.shape[0], s.lw.shape[2]
        enc = [p for n, p in model.named_parameters() if n.startswith("encoders.")]
        expected_enc = torch.autograd.grad(s.base, enc, grad_outputs=-(w[..., None] * dlw_dz) / (B * M), retain_graph=True)
        iwae_model = image_model(K=4, objective="iwae")
        iwae_model.load_state_dict(model.state_dict())
        torch.manual_seed(1)
        iwae_model(batch).loss.backward()
        expected = grads(iwae_model)
        for (name, _), g in zip([(n, p) for n, p in model.named_parameters() if n.startswith("encoders.")], expected_enc):
            expected[name] = g
        for name in got:
            torch.testing.assert_close(got[name], expected[name], rtol=1e-9, atol=1e-12, msg=name)
    finally:
        torch.set_default_dtype(torch.float32)
