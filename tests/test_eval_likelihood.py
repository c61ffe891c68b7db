"""Likelihood and latent-structure metrics against closed forms: an exact linear-Gaussian
MMVAE (log p(x_S) and conditionals analytic), brute-force loops over the same draws,
brute-force KL integrals, and a model with a known number of uninformative dimensions."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from PIL import Image
from torch import nn

from mmdgm import Batch, Modality
from mmdgm.data import MultimodalDataset
from mmdgm.distributions import Normal
from mmdgm.evaluate import METRICS, EvalContext
from mmdgm.evaluate.latent_structure import traversal_latents
from mmdgm.models import MODELS
from tests.linear_gaussian import LinearDecoder

F64 = torch.float64
D, P, SIGMA = 2, 3, 1.0
SCALES = {"u": [2.0, 1.5], "v": [1.8, 1.6]}  # per-dimension sqrt(eig(A^T A)): weights of finite variance


class ExactPosterior(nn.Module):
    """(loc, log-variance) of p(z | x_m), diagonal because A_m has orthogonal columns."""

    def __init__(self, A, b, sigma):
        super().__init__()
        self.cov = torch.linalg.inv(torch.eye(A.shape[1], dtype=A.dtype) + A.T @ A / sigma**2)
        self.A, self.b, self.sigma = A, b, sigma

    def forward(self, x):
        loc = (x - self.b) @ self.A @ self.cov.T / self.sigma**2
        return loc, self.cov.diagonal().log().expand_as(loc)


class Float64Dataset(MultimodalDataset):
    """Hands out batches in the sources' own dtype (float64 here)."""

    def batch(self, rows):
        data = {k: src[self.index[k][rows]] for k, src in self.sources.items()}
        return Batch(data, {k: m[rows] for k, m in self.mask.items()}, self.labels[rows])


def linear_gaussian(n_rows: int, seed: int = 0):
    """Exact float64 MMVAE over u, v; its test set; and the exact log-densities per row."""
    g = torch.Generator().manual_seed(seed)
    mods = [Modality(n, (P,), kind="vector", likelihood="normal", likelihood_scale=SIGMA,
                     net_options={"hidden": [4]}) for n in SCALES]
    model = MODELS.get("mmvae")(mods, D, prior="normal", posterior="normal", posterior_scale="exp",
                                prior_scale="free", K=1, objective="iwae").double().eval()
    params = {}
    for n, s in SCALES.items():
        A = torch.linalg.qr(torch.randn(P, D, generator=g, dtype=F64))[0] * torch.tensor(s, dtype=F64)
        b = torch.randn(P, generator=g, dtype=F64)
        model.decoders[n], model.encoders[n] = LinearDecoder(A, b), ExactPosterior(A, b, SIGMA)
        params[n] = (A, b)
    z = torch.randn(n_rows, D, generator=g, dtype=F64)
    x = {n: z @ A.T + b + SIGMA * torch.randn(n_rows, P, generator=g, dtype=F64) for n, (A, b) in params.items()}

    def log_p(names):
        A = torch.cat([params[n][0] for n in names])
        b = torch.cat([params[n][1] for n in names])
        cov = A @ A.T + SIGMA**2 * torch.eye(len(names) * P, dtype=F64)
        return torch.distributions.MultivariateNormal(b, cov).log_prob(torch.cat([x[n] for n in names], 1))

    exact = {"u": log_p(["u"]), "v": log_p(["v"]), "u,v": log_p(["u", "v"])}
    return model, Float64Dataset(x, torch.zeros(n_rows)), exact


def context(model, test_set, tmp_path=None, batch_size=64, seed=0):
    return EvalContext(model=model, test_set=test_set, out_dir=tmp_path or "eval", batch_size=batch_size,
                       seed=seed, progress=False)


def test_joint_log_likelihood_matches_exact_linear_gaussian():
    model, data, exact = linear_gaussian(16)
    out = METRICS.get("joint_log_likelihood")(context(model, data), K=2000, chunk=500)
    assert out["n"] == 16 and out["K"] == 2000
    assert abs(out["log p(u,v)"] - float(exact["u,v"].mean())) < 0.02
    assert out["stderr"]["log p(u,v)"] == pytest.approx(float(exact["u,v"].std() / 4), rel=0.05)


def test_joint_log_likelihood_is_unscaled_and_the_scaled_bound_has_its_own_key():
    """With llik_scale 3 on u, "log p(u,v)" is still the exact log p(x_u, x_v) (partial
    rows: log p(x_u)), and the scaled training value, far from it, is reported apart."""
    model, data, exact = linear_gaussian(16)
    model.modalities["u"] = dataclasses.replace(model.modalities["u"], llik_scale=3.0)
    present = torch.arange(16) % 4 != 0
    partial = Float64Dataset(data.sources, data.labels, mask={"v": present})
    out = METRICS.get("joint_log_likelihood")(context(model, partial), K=2000, chunk=500)
    truth = float(torch.where(present, exact["u,v"], exact["u"]).mean())
    assert abs(out["log p(u,v)"] - truth) < 0.02
    assert out["log p(u,v)"] - out["scaled bound(u,v)"] > 5.0
    assert set(out["stderr"]) == {"log p(u,v)", "scaled bound(u,v)"}
    assert model.modalities["u"].llik_scale == 3.0
    unscaled = METRICS.get("joint_log_likelihood")(context(model, partial), K=50, scaled=False)
    assert set(unscaled) == {"log p(u,v)", "stderr", "K", "n"}


def test_table3_estimates_marginals_and_the_ratio_estimates_the_conditional():
    """Table 3's "log p(x_m | x_S)" is log p(x_m) under the proposal q(z | x_S): with the
    exact unimodal posterior it is exact, with the other proposals it is a bound close to
    it at large K, and it is far from the true conditional log p(x_m|x_n). The
    log-ratio key estimates that conditional."""
    model, data, exact = linear_gaussian(32)
    out = METRICS.get("conditional_log_likelihoods")(context(model, data), K=2000, chunk=1000)
    marginal = {m: float(exact[m].mean()) for m in "uv"}
    conditional = {("u", "v"): float((exact["u,v"] - exact["v"]).mean()),
                   ("v", "u"): float((exact["u,v"] - exact["u"]).mean())}
    for m, n in (("u", "v"), ("v", "u")):
        assert out[f"log p({m}|{m})"] == pytest.approx(marginal[m], abs=1e-9)
        assert -0.02 < out[f"log p({m}|u,v)"] - marginal[m] < 0.005
        assert -0.15 < out[f"log p({m}|{n})"] - marginal[m] < 0.02
        assert conditional[(m, n)] - marginal[m] > 0.4  # the two quantities are far apart
        assert abs(out[f"log p(u,v) - log p({n})"] - conditional[(m, n)]) < 0.03
    assert set(out["rows"].values()) == {32} and out["n"] == 32


def test_cross_proposal_bound_tightens_with_K():
    """log p(u|v) is an IWAE bound on log p(x_u): below it, increasing in K, the gap
    shrinking (slowly: q(z | x_v) is a poor proposal for p(z | x_u))."""
    model, data, exact = linear_gaussian(200, seed=1)
    ctx = context(model, data, batch_size=200)
    values = [METRICS.get("conditional_log_likelihoods")(ctx, K=K)["log p(u|v)"] for K in (1, 10, 300)]
    truth = float(exact["u"].mean())
    assert values[0] < values[1] - 0.05 < values[2] - 0.1
    assert values[2] < truth and truth - values[2] < 0.25 * (truth - values[1])


class HashNormal(Normal):
    """Normal whose k-th draw (counted per object) is a fixed function of (k, loc): the same
    draws whatever the chunking over samples or the batching over rows. The hash reads loc
    rounded to 1e-6, so that the last-bit differences of batch-size-dependent matmul kernels
    (which the hash would amplify a million-fold) do not change the draws."""

    def __init__(self, loc, scale):
        super().__init__(loc, scale)
        self.drawn = 0

    def _noise(self, shape):
        k = torch.arange(self.drawn, self.drawn + shape[0], dtype=F64).view(-1, *([1] * self.loc.dim()))
        self.drawn += shape[0]
        d = torch.arange(self.loc.shape[-1], dtype=F64)
        key = torch.round(self.loc * 1e6) * 1e-6
        u = torch.frac(torch.sin(k * 12.9898 + d * 78.233 + key * 37.719).abs() * 43758.5453)
        return math.sqrt(2) * torch.erfinv((2 * u - 1).clamp(-1 + 1e-12, 1 - 1e-12))


def log_mean_exp(x):
    return torch.logsumexp(x, 0) - math.log(x.shape[0])


@torch.no_grad()
def brute_force_rows(model, data, K):
    """Per-row loop over the same HashNormal draws the metric makes: key -> (rows,)."""
    prior = model.prior()
    out = {"log p(u|v)": [], "log p(u|u,v)": [], "log p(u,v) - log p(v)": []}
    for i in range(len(data)):
        x = data.batch(torch.tensor([i])).data
        lik = {n: (lambda z, n=n, x=x: model.likelihood(n, z).log_prob(x[n]).sum(-1)) for n in "uv"}
        qv = model.posterior("v", x["v"])
        z = qv.rsample((K,))
        out["log p(u|v)"].append(log_mean_exp(lik["u"](z) + prior.log_prob(z).sum(-1) - qv.log_prob(z).sum(-1)))
        qu, qv = model.posterior("u", x["u"]), model.posterior("v", x["v"])
        z = torch.cat([qu.rsample((K,)), qv.rsample((K,))])
        log_q = torch.logaddexp(qu.log_prob(z).sum(-1), qv.log_prob(z).sum(-1)) - math.log(2)
        base = prior.log_prob(z).sum(-1) - log_q
        out["log p(u|u,v)"].append(log_mean_exp(lik["u"](z) + base))
        out["log p(u,v) - log p(v)"].append(
            log_mean_exp(lik["u"](z) + lik["v"](z) + base) - log_mean_exp(lik["v"](z) + base)
        )
    return {key: torch.cat(rows) for key, rows in out.items()}


def test_chunking_and_batching_do_not_change_the_answer():
    """Same draws (HashNormal) under different batch and chunk sizes give the same
    estimates, equal to a per-row brute-force loop over those draws."""
    model, data, _ = linear_gaussian(10)
    model.posterior_cls = HashNormal
    metric = METRICS.get("conditional_log_likelihoods")
    K = 12
    small = metric(context(model, data, batch_size=3), K=K, chunk=5)
    large = metric(context(model, data, batch_size=64), K=K, chunk=K)
    assert small.keys() == large.keys()
    for key, value in small.items():
        if isinstance(value, float):
            assert value == pytest.approx(large[key], abs=1e-9), key
    for key, rows in brute_force_rows(model, data, K).items():
        assert small[key] == pytest.approx(float(rows.mean()), abs=1e-9), key
    joint = METRICS.get("joint_log_likelihood")
    a = joint(context(model, data, batch_size=3), K=K, chunk=K)
    b = joint(context(model, data, batch_size=64), K=K, chunk=K)
    assert a["log p(u,v)"] == pytest.approx(b["log p(u,v)"], abs=1e-9)


def test_partially_observed_rows_are_left_out_of_the_keys_that_need_them():
    model, data, exact = linear_gaussian(8)
    present = torch.tensor([True, False, True, True, False, True, False, True])
    data = Float64Dataset(data.sources, data.labels, mask={"v": present})
    out = METRICS.get("conditional_log_likelihoods")(context(model, data, batch_size=3), K=10)
    assert out["rows"]["log p(u|u)"] == 8 and out["rows"]["log p(u|v)"] == 5 and out["rows"]["log p(v|u,v)"] == 5
    assert out["log p(u|u)"] == pytest.approx(float(exact["u"].mean()), abs=1e-9)
    assert out["log p(v|v)"] == pytest.approx(float(exact["v"][present].mean()), abs=1e-9)


def test_metrics_are_seeded_and_restore_the_global_rng():
    model, data, _ = linear_gaussian(8)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = METRICS.get("conditional_log_likelihoods")(context(model, data, seed=3), K=20)
    assert torch.equal(torch.get_rng_state(), before)
    b = METRICS.get("conditional_log_likelihoods")(context(model, data, seed=3), K=20)
    c = METRICS.get("conditional_log_likelihoods")(context(model, data, seed=4), K=20)
    assert a == b and a["log p(u|v)"] != c["log p(u|v)"]


# ---- latent structure ------------------------------------------------------------------

def image_model(D=4, posterior="laplace"):
    torch.manual_seed(0)
    mods = [
        Modality("a", (1, 28, 28), encoder="mnist-mlp", decoder="mnist-mlp", net_options={"hidden": 16}),
        Modality("b", (3, 32, 32), encoder="svhn-conv", decoder="svhn-conv", net_options={"width": 4}),
    ]
    model = MODELS.get("mmvae")(mods, D, posterior=posterior, posterior_scale="softplus" if posterior == "normal" else "softmax",
                                learn_prior=True).eval()
    with torch.no_grad():
        model.prior_theta.copy_(torch.randn(D))
    return model


def image_data(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = (torch.rand(n, 1, 28, 28, generator=g) * 255).to(torch.uint8)
    b = (torch.rand(n, 3, 32, 32, generator=g) * 255).to(torch.uint8)
    mask = {"b": torch.tensor([True] * (n - 1) + [False])}
    return MultimodalDataset({"a": a, "b": b}, torch.zeros(n), mask=mask)


def test_traversal_latents_move_one_dimension_over_five_prior_deviations():
    mu, sigma0 = torch.randn(2, 3), torch.tensor([0.5, 1.0, 2.0])
    z = traversal_latents(mu, sigma0, 5, 5.0)
    assert z.shape == (2, 3, 5, 3)
    for d in range(3):
        moved = z[:, d] - mu[:, None]
        torch.testing.assert_close(moved[..., d], torch.linspace(-5, 5, 5).expand(2, 5) * sigma0[d])
        assert torch.count_nonzero(moved[..., [j for j in range(3) if j != d]]) == 0


def test_latent_traversal_grids_exist_with_the_expected_size(tmp_path):
    model, data = image_model(), image_data()
    out = METRICS.get("latent_traversals")(context(model, data, tmp_path), examples=2, steps=5)
    assert out["figures"] == ["traversal-from-a.png", "traversal-from-b.png"]
    rows, cell, pad, zoom = 4 * 2 * 2, 32 + 2, 2, 2  # D x examples x image modalities; save_grid defaults
    for name in out["figures"]:
        assert Image.open(tmp_path / name).size == ((5 * cell + pad) * zoom, (rows * cell + pad) * zoom)
    scale = model.prior().scale
    assert out["sigma0"] == pytest.approx((math.sqrt(2) * scale).tolist())  # Laplace sd = sqrt(2) b
    assert set(out["sensitivity"]["a"]) == {"a", "b"} and len(out["sensitivity"]["b"]["a"]) == 4


def brute_force_kl(q_loc, q_scale, q_kind, p_loc, p_scale, p_kind):
    """KL per dimension by quadrature on a fine grid, (B, D)."""
    grid = torch.linspace(-1, 1, 40001, dtype=F64)
    spread = 30 * torch.maximum(q_scale, torch.as_tensor(p_scale)).double()
    z = q_loc.double()[..., None] + spread[..., None] * grid

    def log_density(kind, loc, scale):
        dist = torch.distributions.Laplace if kind == "laplace" else torch.distributions.Normal
        return dist(torch.as_tensor(loc).double()[..., None], torch.as_tensor(scale).double()[..., None]).log_prob(z)

    lq = log_density(q_kind, q_loc, q_scale)
    integrand = lq.exp() * (lq - log_density(p_kind, p_loc, p_scale))
    return torch.trapezoid(integrand, z, dim=-1)


@pytest.mark.parametrize("posterior", ["laplace", "normal"])
def test_latent_kl_per_dimension_matches_brute_force(tmp_path, posterior):
    """Analytic KL (Laplace q, Laplace prior) and the Monte-Carlo fallback (Normal q,
    Laplace prior) both match quadrature; rows missing a modality are left out."""
    model, data = image_model(posterior=posterior), image_data()
    out = METRICS.get("latent_kl")(context(model, data, tmp_path), mc_samples=4000)
    batch = data.batch(torch.arange(len(data)))
    p = model.prior()
    post = {m: model.posterior(m, batch.data[m]) for m in "ab"}
    with torch.no_grad():
        for m in "ab":
            rows = batch.mask[m]
            want = brute_force_kl(post[m].loc, post[m].scale, posterior, p.loc, p.scale, "laplace")[rows].mean(0)
            tol = 1e-4 if posterior == "laplace" else 0.03
            assert out["kl_to_prior"][m] == pytest.approx(want.tolist(), rel=tol, abs=tol), m
        both = batch.mask["a"] & batch.mask["b"]
        qa, qb = post["a"], post["b"]
        sym = (brute_force_kl(qa.loc, qa.scale, posterior, qb.loc, qb.scale, posterior)
               + brute_force_kl(qb.loc, qb.scale, posterior, qa.loc, qa.scale, posterior))[both].mean(0)
        assert out["symmetric_kl"]["a,b"] == pytest.approx(sym.tolist(), rel=1e-3, abs=1e-3)
    assert (tmp_path / "latent-kl.png").exists() and out["figures"] == ["latent-kl.png"]


class PartlyInformativeEncoder(nn.Module):
    """(loc, log-variance): dims 0, 1 equal the N(0, 1) prior for every row; dim 2 carries
    information only for rows whose last feature is set; dims 3, 4 always carry it."""

    def __init__(self, shape, latent_dim, **options):
        super().__init__()

    def forward(self, x):
        loc = torch.zeros(x.shape[0], 5, dtype=x.dtype)
        logvar = torch.zeros_like(loc)
        loc[:, 2] = 3 * x[:, -1]
        loc[:, 3:] = x[:, :2] + 1
        logvar[:, 3:] = -2
        return loc, logvar


@pytest.mark.parametrize("fraction,share", [(0.99, 2 / 5), (0.95, 3 / 5)])
def test_collapse_share_counts_the_uninformative_dimensions(tmp_path, fraction, share):
    mods = [Modality(n, (3,), kind="vector", likelihood="normal", net_options={"hidden": [4]}) for n in "ab"]
    model = MODELS.get("mmvae")(mods, 5, prior="normal", posterior="normal", posterior_scale="exp",
                                prior_scale="free").eval()
    for n in "ab":
        model.encoders[n] = PartlyInformativeEncoder((3,), 5)
    x = torch.randn(50, 3)
    x[:, -1] = 0
    x[7, -1] = 1  # dim 2 informative for 1 row in 50: below threshold for 98% of the data
    out = METRICS.get("latent_kl")(context(model, MultimodalDataset({"a": x, "b": x}, torch.zeros(50)), tmp_path),
                                   fraction=fraction)
    assert out["collapsed_share"] == {"a": share, "b": share, "all": share}
    assert out["collapsed_dims"]["a"] == [0, 1] + ([2] if share > 0.5 else [])
    assert out["kl_to_prior"]["a"][:2] == [0.0, 0.0]
