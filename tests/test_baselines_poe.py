"""MVAE, MoPoE and mmJSD against independent computations: the product of Gaussian experts,
MoPoE's subsets and mixture density, an exact linear-Gaussian likelihood, training steps,
and exactly zero gradient from missing modalities."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from mmdgm import Batch, Modality
from mmdgm.batch import BatchError
from mmdgm.config import load_config
from mmdgm.distributions import Laplace, Normal
from mmdgm.distributions.product import product_of_experts, product_of_gaussians
from mmdgm.models import MODELS
from mmdgm.models.factory import build_model, model_options
from mmdgm.models.mopoe import nonempty_subsets, subset_mask
from tests.linear_gaussian import LinearDecoder
from tests.zero_gradient import check_missing_modality_is_never_read

MODEL_NAMES = ["mvae", "mopoe", "mmjsd"]
GAUSSIAN = {"prior": "normal", "posterior": "normal", "posterior_scale": "exp", "prior_scale": "free"}


def image_model(name, D=4, **options):
    mods = [
        Modality("a", (1, 28, 28), encoder="mnist-mlp", decoder="mnist-mlp", llik_scale=2.0, net_options={"hidden": 16}),
        Modality("b", (3, 32, 32), encoder="svhn-conv", decoder="svhn-conv", net_options={"width": 4}),
    ]
    return MODELS.get(name)(mods, D, **GAUSSIAN, **options)


def image_batch(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Batch({"a": torch.rand(n, 1, 28, 28, generator=g), "b": torch.rand(n, 3, 32, 32, generator=g)})


def vector_model(name, names=("a", "b", "c"), D=3, **options):
    mods = [Modality(n, (5,), kind="vector", net_options={"hidden": [8]}) for n in names]
    return MODELS.get(name)(mods, D, **GAUSSIAN, **options)


def vector_batch(names=("a", "b", "c"), n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Batch({k: torch.rand(n, 5, generator=g) for k in names})


# ---------------------------------------------------------------- product of Gaussians


def information_form(locs, scales, mask, prior_loc=None, prior_scale=None):
    """Float64 product via precisions: T = sum_i m_i / s_i^2 (+ prior), mu = sum_i m_i mu_i / s_i^2 / T."""
    locs, scales, w = locs.double(), scales.double(), mask.double()[..., None]
    precision = (w / scales**2).sum(0)
    weighted = (w * locs / scales**2).sum(0)
    if prior_loc is not None:
        precision = precision + 1 / prior_scale.double() ** 2
        weighted = weighted + prior_loc.double() / prior_scale.double() ** 2
    return weighted / precision, precision.rsqrt()


@pytest.mark.parametrize("prior", ["standard", "given", "none"])
def test_product_of_gaussians_matches_the_information_form(prior):
    torch.manual_seed(0)
    M, B, D = 3, 7, 4
    locs, scales = torch.randn(M, B, D) * 3, torch.rand(M, B, D) * 2 + 0.05
    mask = torch.rand(M, B) < 0.6
    mask[:, 0] = False
    mask[0, 0] = prior == "none"  # keep one expert where there is no prior
    mask[:, 1] = True
    mask[1:, 2] = False
    p_loc, p_scale = torch.randn(D), torch.rand(D) + 0.5
    if prior == "none":
        mask[0] |= ~mask.any(0)
    arg = {"standard": True, "given": Normal(p_loc, p_scale), "none": False}[prior]
    got = product_of_gaussians(locs, scales, mask, prior_expert=arg)
    want_loc, want_scale = information_form(
        locs, scales, mask, *{"standard": (torch.zeros(D), torch.ones(D)), "given": (p_loc, p_scale), "none": (None, None)}[prior]
    )
    torch.testing.assert_close(got.loc.double(), want_loc, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got.scale.double(), want_scale, rtol=1e-5, atol=1e-6)
    if prior != "none":  # a sample with no observed expert gets the prior
        torch.testing.assert_close(got.loc[0], torch.zeros(D) if prior == "standard" else p_loc)


def test_product_of_gaussians_matches_multiplied_densities_on_a_grid():
    """1-D: multiply the expert densities (and N(0, 1)) on a fine grid and take moments."""
    locs = torch.tensor([[[1.5]], [[-0.7]], [[4.0]]])
    scales = torch.tensor([[[0.6]], [[1.3]], [[0.2]]])
    mask = torch.tensor([[True], [True], [False]])
    grid = torch.linspace(-10, 10, 200_001, dtype=torch.float64)
    for with_prior in (True, False):
        log_density = sum(
            torch.distributions.Normal(float(locs[i, 0, 0]), float(scales[i, 0, 0])).log_prob(grid) for i in (0, 1)
        )
        if with_prior:
            log_density = log_density + torch.distributions.Normal(0.0, 1.0).log_prob(grid)
        p = torch.softmax(log_density, 0)
        mean = (p * grid).sum()
        std = (p * (grid - mean) ** 2).sum().sqrt()
        got = product_of_gaussians(locs, scales, mask, prior_expert=with_prior)
        assert abs(float(got.loc) - float(mean)) < 1e-5
        assert abs(float(got.scale) - float(std)) < 1e-5


def test_product_of_gaussians_is_stable_for_extreme_precisions():
    """Variances 1e-8 .. 1e8 in float32: finite, and equal to the float64 information form."""
    locs = torch.tensor([[[2.0, -1.0]], [[5.0, 3.0]], [[-4.0, 0.5]]])
    scales = torch.tensor([[[1e-4, 1e4]], [[1e4, 1e-4]], [[3e-4, 1e3]]])
    mask = torch.ones(3, 1, dtype=torch.bool)
    got = product_of_gaussians(locs, scales, mask)
    want_loc, want_scale = information_form(locs, scales, mask, torch.zeros(2), torch.ones(2))
    assert torch.isfinite(got.loc).all() and torch.isfinite(got.scale).all()
    torch.testing.assert_close(got.loc.double(), want_loc, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got.scale.double(), want_scale, rtol=1e-5, atol=0)


def test_missing_experts_get_zero_gradient_even_when_nan():
    locs = torch.randn(2, 3, 2, requires_grad=True)
    raw = torch.randn(2, 3, 2, requires_grad=True)
    mask = torch.tensor([[True, False, True], [True, True, False]])
    loc_in = torch.where(mask[..., None], locs, torch.full_like(locs, math.nan))
    q = product_of_gaussians(loc_in, raw.exp(), mask)
    (q.loc.sum() + q.scale.sum()).backward()
    assert torch.isfinite(q.loc).all() and torch.isfinite(locs.grad).all()
    assert torch.count_nonzero(locs.grad[~mask]) == 0 and torch.count_nonzero(raw.grad[~mask]) == 0
    assert torch.count_nonzero(locs.grad[mask]) > 0


def test_product_rejects_non_gaussian_experts_and_empty_products():
    laplace = Laplace(torch.zeros(2, 3), torch.ones(2, 3))
    with pytest.raises(TypeError, match="Laplace.*no closed form"):
        product_of_experts([laplace, laplace])
    with pytest.raises(TypeError, match="prior expert"):
        product_of_gaussians(torch.zeros(1, 2, 3), torch.ones(1, 2, 3), prior_expert=laplace)
    with pytest.raises(ValueError, match=r"samples \[1\] have no observed expert"):
        product_of_gaussians(torch.zeros(2, 2, 3), torch.ones(2, 2, 3), torch.tensor([[True, False], [False, False]]), False)
    for name in MODEL_NAMES:
        with pytest.raises(ValueError, match="needs a Gaussian posterior"):
            MODELS.get(name)([Modality("a", (3,), kind="vector"), Modality("b", (3,), kind="vector")], 2, prior="normal")


# ---------------------------------------------------------------- MoPoE subsets and mixture


@pytest.mark.parametrize("M", [1, 2, 3, 4])
def test_mopoe_enumerates_all_nonempty_subsets_per_sample(M):
    names = [f"m{i}" for i in range(M)]
    subsets = nonempty_subsets(names)
    assert len(subsets) == 2**M - 1 == len(set(subsets))
    observed = torch.rand(M, 50, generator=torch.Generator().manual_seed(M)) < 0.5
    observed[0, ~observed.any(0)] = True
    _, valid = subset_mask(subsets, names, observed)
    torch.testing.assert_close(valid.sum(0), 2 ** observed.sum(0) - 1)
    for b in range(5):
        obs = {n for n, o in zip(names, observed[:, b]) if o}
        assert {s for s, v in zip(subsets, valid[:, b]) if v} == {
            c for r in range(1, len(obs) + 1) for c in itertools.combinations(sorted(obs, key=names.index), r)
        }


@pytest.mark.parametrize("prior_expert", [False, True])
def test_mopoe_mixture_density_matches_brute_force(prior_expert):
    """log q(z|X) = log mean over the subsets of the observed modalities of the float64
    product of their experts' densities (plus the prior expert when configured)."""
    torch.manual_seed(0)
    names = ("a", "b", "c")
    model = vector_model("mopoe", prior_expert=prior_expert)
    batch = vector_batch()
    mask = {"a": torch.tensor([1, 1, 0, 1, 0, 0]), "b": torch.tensor([1, 0, 1, 1, 0, 1]), "c": torch.tensor([1, 1, 1, 0, 1, 0])}
    batch = Batch(batch.data, {k: v.bool() for k, v in mask.items()})
    q = model.encode(batch)
    z = torch.randn(4, 6, 3)
    got = q.log_prob(z)
    experts = {n: model.posterior(n, batch.data[n]) for n in names}
    for b in range(6):
        obs = [n for n in names if batch.mask[n][b]]
        dens = []
        for r in range(1, len(obs) + 1):
            for subset in itertools.combinations(obs, r):
                locs = torch.stack([experts[n].loc[b] for n in subset])[:, None]
                scales = torch.stack([experts[n].scale[b] for n in subset])[:, None]
                prior = (torch.zeros(3), torch.ones(3)) if prior_expert else (None, None)
                loc, scale = information_form(locs, scales, torch.ones(len(subset), 1, dtype=torch.bool), *prior)
                dens.append(torch.distributions.Normal(loc[0], scale[0]).log_prob(z[:, b].double()).sum(-1).exp())
        want = torch.stack(dens).mean(0).log()
        assert len(dens) == 2 ** len(obs) - 1
        torch.testing.assert_close(got[:, b].double(), want, rtol=1e-4, atol=1e-4)


def test_mopoe_samples_come_from_valid_subsets_uniformly():
    """Experts far apart with tiny variances: each draw lands on one subset's product mean."""
    torch.manual_seed(0)
    model = vector_model("mopoe", names=("a", "b"), D=1)
    batch = Batch({"a": torch.zeros(2, 5), "b": torch.zeros(2, 5)}, {"b": torch.tensor([True, False])})

    class Fixed(nn.Module):
        def __init__(self, loc):
            super().__init__()
            self.loc = loc

        def forward(self, x):
            return torch.full((x.shape[0], 1), self.loc), torch.full((x.shape[0], 1), -20.0)

    model.encoders["a"], model.encoders["b"] = Fixed(0.0), Fixed(10.0)
    z = model.encode(batch).sample((6000,)).round()[..., 0]
    assert set(z[:, 0].tolist()) == {0.0, 5.0, 10.0} and set(z[:, 1].tolist()) == {0.0}
    for value in (0.0, 5.0, 10.0):
        assert abs((z[:, 0] == value).float().mean() - 1 / 3) < 0.03


# ---------------------------------------------------------------- the models


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_loss_decreases_on_fixed_data(name):
    torch.manual_seed(0)
    model, batch = image_model(name), image_batch(n=8)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(12):
        out = model(batch)
        assert torch.isfinite(out.loss) and {"loss", "elbo"} <= set(out.metrics)
        opt.zero_grad()
        out.loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        opt.step()
        losses.append(float(out.loss.detach()))
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 1.0, losses
    with torch.no_grad():
        model.eval()
        out = model(batch)
    assert math.isfinite(out.metrics["loss"]) and not out.loss.requires_grad


@pytest.mark.parametrize("data", ["image", "vector3"])
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_missing_modality_gets_zero_gradient_and_is_never_read(name, data):
    """Rows where b is missing: b's networks get exactly zero gradient from them, and the
    placeholders (zeros or NaN) change nothing at all (as tests/test_mmvae.py for MMVAE)."""
    torch.manual_seed(0)
    if data == "image":
        model, batch = image_model(name, K=2), image_batch()
    else:
        model, batch = vector_model(name, K=2), vector_batch()
    other = {"c": torch.tensor([True, True, False, False, True, True])} if "c" in batch.data else None
    check_missing_modality_is_never_read(model, batch, other)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_sample_with_every_modality_missing_is_rejected(name):
    model, batch = image_model(name), image_batch()
    masks = {n: torch.tensor([True, False, True, True, True, True]) for n in ("a", "b")}
    with pytest.raises(BatchError, match=r"samples \[1\] have every modality missing"):
        model(Batch(batch.data, masks))
    with pytest.raises(BatchError, match="every modality missing"):
        model.log_likelihood(Batch(batch.data, masks), K=2)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_verbs_work_for_three_modalities(name):
    torch.manual_seed(0)
    model, batch = vector_model(name, K=2), vector_batch()
    assert model.sample(4)["c"].shape == (4, 5)
    assert model.cross_generate(batch, ["a", "b"], "c").shape == (6, 5)
    assert set(model.reconstruct(batch)) == {"a", "b", "c"}
    est = model.log_likelihood(batch, K=7, chunk=3)
    assert est.shape == (6,) and torch.isfinite(est).all()


class LikelihoodFactor(nn.Module):
    """p(x_m | z) as a function of z, as a Gaussian expert: precision A_m^T A_m / sigma^2
    (diagonal when A_m has orthogonal columns) and mean (A_m^T A_m)^-1 A_m^T (x_m - b_m).
    Outputs (loc, log-variance), the "exp" scale parameterisation."""

    def __init__(self, A, b, sigma):
        super().__init__()
        self.A, self.b, self.sigma = A, b, sigma
        self.precision = (A * A).sum(0) / sigma**2

    def forward(self, x):
        loc = (x - self.b) @ self.A / (self.precision * self.sigma**2)
        return loc, (-self.precision.log()).expand_as(loc)


@pytest.mark.parametrize("names", [("u", "v"), ("u", "v", "w")])
def test_mvae_log_likelihood_is_exact_when_the_product_is_the_true_posterior(names):
    """p(z) = N(0, I), p(x_m | z) = N(A_m z + b_m, sigma^2 I) with orthogonal columns in A_m:
    the product of N(0, I) and the likelihood factors is exactly p(z | x_S) for every S, so
    every importance weight equals p(x_S) and the IWAE estimate (and the ELBO) is exact."""
    torch.manual_seed(0)
    D, P, sigma = 2, 3, 0.8
    mods = [Modality(n, (P,), kind="vector", likelihood="normal", likelihood_scale=sigma, net_options={"hidden": [8]})
            for n in names]
    model = MODELS.get("mvae")(mods, D, **GAUSSIAN)
    params = {n: (torch.linalg.qr(torch.randn(P, D))[0] * (torch.rand(D) * 3 + 0.5), torch.randn(P)) for n in names}
    for n, (A, b) in params.items():
        model.decoders[n] = LinearDecoder(A, b)
        model.encoders[n] = LikelihoodFactor(A, b, sigma)
    A = torch.cat([params[n][0] for n in names])
    b = torch.cat([params[n][1] for n in names])
    cov = A @ A.T + sigma**2 * torch.eye(len(names) * P)
    x = torch.distributions.MultivariateNormal(b, cov).sample((4,))
    parts = dict(zip(names, x.split(P, dim=1)))
    exact = torch.distributions.MultivariateNormal(b.double(), cov.double()).log_prob(x.double())
    est = model.log_likelihood(Batch(parts), K=50, chunk=20)
    torch.testing.assert_close(est.double(), exact, rtol=1e-5, atol=1e-4)
    with torch.no_grad():
        metrics = model(Batch(parts)).metrics
    assert abs(metrics["elbo"] - float(exact.mean())) < 1e-4 and abs(metrics["iwae"] - float(exact.mean())) < 1e-4
    only_u = {n: torch.tensor([n == "u"] * 4) for n in names}
    single = model.log_likelihood(Batch(parts, only_u), K=50, chunk=20)
    A_u, b_u = params["u"]
    exact_u = torch.distributions.MultivariateNormal(
        b_u.double(), (A_u @ A_u.T + sigma**2 * torch.eye(P)).double()
    ).log_prob(parts["u"].double())
    torch.testing.assert_close(single.double(), exact_u, rtol=1e-5, atol=1e-4)


def test_mvae_kl_annealing_is_linear_and_survives_a_checkpoint():
    model = image_model("mvae", annealing_steps=4)
    batch = image_batch(n=2)
    weights = []
    for _ in range(6):
        weights.append(model(batch).metrics["kl_weight"])
    assert weights == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    with torch.no_grad():
        model(batch)
    model.eval()
    model(batch)
    restored = image_model("mvae", annealing_steps=4)
    restored.load_state_dict(model.state_dict())
    assert int(restored.step) == 6 and restored.kl_weight() == 1.0


def test_mvae_terms_cover_joint_unimodal_and_random_subsets():
    model = vector_model("mvae", names=("a", "b", "c", "d"), n_subsets=2)
    torch.manual_seed(0)
    terms = model.partial_subsets()
    assert terms[:4] == [["a"], ["b"], ["c"], ["d"]] and len(terms) == 6
    assert all(2 <= len(s) <= 3 for s in terms[4:]) and terms[4] != terms[5]
    assert image_model("mvae", n_subsets=3).partial_subsets() == [["a"], ["b"]]


def test_mmjsd_dynamic_prior_and_jsd_match_closed_forms():
    """Geometric mean with weights 1/(n+1): precision = mean of the precisions; JS = the
    weighted sum of KLs to it, recomputed with torch.distributions in float64."""
    torch.manual_seed(0)
    model = vector_model("mmjsd")
    locs, scales = torch.randn(3, 4, 3), torch.rand(3, 4, 3) + 0.2
    observed = torch.tensor([[1, 1, 0, 1], [1, 0, 1, 0], [1, 1, 1, 0]], dtype=torch.bool)
    got = model.jsd(locs, scales, observed)
    for b in range(4):
        obs = [j for j in range(3) if observed[j, b]]
        mus = [locs[j, b].double() for j in obs] + [torch.zeros(3, dtype=torch.float64)]
        sds = [scales[j, b].double() for j in obs] + [torch.ones(3, dtype=torch.float64)]
        w = 1 / len(mus)
        precision = sum(w / s**2 for s in sds)
        mean = sum(w * m / s**2 for m, s in zip(mus, sds)) / precision
        f = torch.distributions.Normal(mean, precision.rsqrt())
        want = sum(w * torch.distributions.kl_divergence(torch.distributions.Normal(m, s), f).sum() for m, s in zip(mus, sds))
        torch.testing.assert_close(got[b].double(), want, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- options and configs


def test_model_options_and_bad_values():
    from mmdgm.models.mmjsd import MMJSD
    from mmdgm.models.mopoe import MoPoE
    from mmdgm.models.mvae import MVAE

    assert model_options(MVAE) == ["K", "annealing_steps", "n_subsets"]
    assert model_options(MoPoE) == ["K", "beta", "prior_expert"]
    assert model_options(MMJSD) == ["K", "beta", "dynamic_prior"]
    with pytest.raises(ValueError, match="did you mean 'geometric'"):
        image_model("mmjsd", dynamic_prior="geometrik")
    for name in MODEL_NAMES:
        with pytest.raises(ValueError, match="at least two"):
            MODELS.get(name)([Modality("a", (3,), kind="vector")], 2, **GAUSSIAN)
        with pytest.raises(ValueError, match="K must be"):
            image_model(name, K=0)


SHAPES = {
    "default": {"synth_hand": (1, 28, 28), "synth_street": (3, 32, 32)},
    "mnist-synthstreet": {"mnist": (1, 28, 28), "synth_street": (3, 32, 32)},
}


@pytest.mark.parametrize("setting", list(SHAPES))
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_builtin_configs_build_their_model(name, setting):
    cfg = load_config(f"{name}-{setting}")
    assert cfg.model.name == name and cfg.model.posterior == cfg.model.prior == "normal"
    model = build_model(cfg.model, SHAPES[setting])
    assert type(model) is MODELS.get(name) and model.latent_dim == cfg.model.latent_dim


def test_exp_scale_keeps_a_runaway_expert_finite_in_the_product():
    """A log-variance of 194 (cI-MVAE's collapsed image expert on captions, step 26) gave an
    inf scale and a NaN gradient through the product of experts; clamped at +-80 the
    product is the other experts' and every gradient is finite. In range: exp(raw / 2)."""
    from mmdgm.distributions.base import exp_scale

    raw = torch.tensor([[194.0, 0.3], [-1.0, -200.0]], requires_grad=True)
    locs = torch.tensor([[[2.0, 1.0]], [[-1.0, 0.5]]], requires_grad=True)
    scales = exp_scale(raw)[:, None, :]
    assert torch.isfinite(scales).all() and torch.isfinite(scales.pow(-2)).all()
    product = product_of_gaussians(locs, scales, prior_expert=False)
    (product.loc.sum() + product.scale.log().sum()).backward()
    assert torch.isfinite(raw.grad).all() and torch.isfinite(locs.grad).all()
    assert product.loc[0, 0].item() == pytest.approx(-1.0, abs=1e-6)  # expert 0 carries no weight
    assert product.loc[0, 1].item() == pytest.approx(0.5, abs=1e-6)  # expert 1 (variance e^-80) wins
    inside = torch.linspace(-60, 60, 7)
    torch.testing.assert_close(exp_scale(inside), torch.exp(inside / 2))
