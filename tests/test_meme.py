"""MEME against independent computations on a linear-Gaussian model: q^(t|s), the
pseudo-sample prior, the directional bound and its detached weight, the marginal
likelihoods; partial observation; bad input."""

from __future__ import annotations

import math

import pytest
import torch

from mmdgm import Batch, Modality
from mmdgm.models import MODELS
from tests.linear_gaussian import ExactUnimodalPosterior, LinearDecoder
from tests.zero_gradient import check_missing_modality_is_never_read

D, P, SIGMA = 2, 3, 0.7
GAUSSIAN = {"prior": "normal", "posterior": "normal", "posterior_scale": "exp", "prior_scale": "free"}
N01 = torch.distributions.Normal


def linear_meme(n_pseudo=4, seed=0, **options):
    """MEME with decoders x_m = A_m z + b_m + N(0, SIGMA^2) and the exact unimodal
    posteriors under N(0, I) as encoders; returns the model and (A, b) per modality."""
    torch.manual_seed(seed)
    mods = [Modality(n, (P,), kind="vector", likelihood="normal", likelihood_scale=SIGMA, net_options={"hidden": [8]})
            for n in ("a", "b")]
    model = MODELS.get("meme")(mods, D, n_pseudo=n_pseudo, **GAUSSIAN, **options)
    params = {n: (torch.linalg.qr(torch.randn(P, D))[0] * torch.tensor([2.0, 1.0]), torch.randn(P)) for n in ("a", "b")}
    for n, (A, b) in params.items():
        model.decoders[n] = LinearDecoder(A, b)
        model.encoders[n] = ExactUnimodalPosterior(A, b, SIGMA)
    return model, params


def batch_of(params, n=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, D, generator=g)
    return Batch({m: z @ A.T + b + SIGMA * torch.randn(n, P, generator=g) for m, (A, b) in params.items()})


def gaussian(mean, cov, x):
    return torch.distributions.MultivariateNormal(mean.double(), cov.double()).log_prob(x.double())


def posterior_params(model, name, x):
    q = model.posterior(name, x)
    return q.loc.double(), q.scale.double()


def test_q_hat_converges_to_the_exact_predictive():
    """q^(t|s) -> int p(t|z) q(z|s) dz = N(t; A_t m + b_t, A_t S A_t^T + sigma^2 I)."""
    model, params = linear_meme(inner_samples=20000)
    batch = batch_of(params)
    q = model.posterior("a", batch.data["a"])
    torch.manual_seed(0)
    z = q.rsample()
    est = model.log_q_hat(q, "b", batch.data["b"], model.log_lik("b", z, batch.data["b"]))
    A, b = params["b"]
    m, s = posterior_params(model, "a", batch.data["a"])
    exact = torch.stack([gaussian(A.double() @ m[i] + b, A.double() @ torch.diag(s[i] ** 2) @ A.double().T
                                  + SIGMA**2 * torch.eye(P), batch.data["b"][i]) for i in range(batch.size)])
    # tolerance: 5 standard errors of a log-mean-exp over K+1 draws (delta method)
    lw = model.log_lik("b", q.sample((20000,)), batch.data["b"]).double()
    w = torch.exp(lw - lw.max(0).values)
    se = w.std(0) / w.mean(0) / math.sqrt(20001)
    assert ((est.double() - exact).abs() < 5 * se + 1e-4).all(), (est.double() - exact, se)


def test_pseudo_sample_prior_is_the_mixture():
    model, params = linear_meme(n_pseudo=5)
    z = torch.randn(7, D)
    got = model.pseudo_prior_log_prob("b", z)
    m, s = posterior_params(model, "b", model.pseudo["b"])
    comps = torch.distributions.Independent(N01(m, s), 1)
    mix = torch.distributions.MixtureSameFamily(torch.distributions.Categorical(torch.ones(5, dtype=torch.float64)), comps)
    torch.testing.assert_close(got.double(), mix.log_prob(z.double()), rtol=0, atol=1e-5)


def test_directional_bound_equals_its_formula_with_a_detached_weight():
    model, params = linear_meme(inner_samples=6, log_p_other="drop")
    batch = batch_of(params)
    torch.manual_seed(2)
    got = model.directional_bound(batch, "a", "b")
    torch.manual_seed(2)
    q = model.posterior("a", batch.data["a"])
    z = q.rsample()
    fresh = q.rsample((6,))

    def log_t(zz):
        return N01(model.decoders["b"](zz).double(), SIGMA).log_prob(batch.data["b"].double()).sum(-1)

    log_qt = log_t(z)
    log_qts = torch.logsumexp(torch.cat([log_qt[None], log_t(fresh)]), 0) - math.log(7)
    w = torch.exp(log_qt - log_qts)
    m, s = posterior_params(model, "a", batch.data["a"])
    mt, st = posterior_params(model, "b", batch.data["b"])
    log_ps = N01(model.decoders["a"](z).double(), SIGMA).log_prob(batch.data["a"].double()).sum(-1)
    inner = log_ps + N01(mt, st).log_prob(z.double()).sum(-1) - N01(m, s).log_prob(z.double()).sum(-1) - log_qt
    torch.testing.assert_close(got.double(), w * inner + log_qts, rtol=1e-5, atol=1e-4)
    assert (w <= 7 + 1e-9).all()
    # the weight carries no gradient: d got / d theta == w * d inner / d theta + d log_qts / d theta
    dec = model.decoders["b"].A
    g_got = torch.autograd.grad(got.sum(), dec, retain_graph=True)[0]
    g_want = torch.autograd.grad((w.detach() * inner + log_qts).sum().float(), dec, retain_graph=True)[0]
    g_live = torch.autograd.grad((w * inner + log_qts).sum().float(), dec)[0]
    torch.testing.assert_close(g_got, g_want, rtol=1e-4, atol=1e-4)
    assert (g_live - g_want).abs().max() > 1e-3


def test_log_p_other_adds_the_unimodal_bound():
    model, params = linear_meme(inner_samples=3)
    batch = batch_of(params)
    torch.manual_seed(4)
    with_elbo = model.directional_bound(batch, "a", "b")
    torch.manual_seed(4)
    model.log_p_other = "drop"
    dropped = model.directional_bound(batch, "a", "b")
    torch.manual_seed(4)
    q = model.posterior("a", batch.data["a"])
    q.rsample(), q.rsample((3,))
    torch.testing.assert_close(with_elbo - dropped, model.unimodal_bound(batch, "b"))


def exact_marginal(model, params, name, x, other):
    """log p(x_name) = log (1/N) sum_i N(x; A m_i + b, A S_i A^T + sigma^2 I), with (m_i, S_i)
    the other modality's encoder on its pseudo-samples."""
    A, b = (t.double() for t in params[name])
    m, s = posterior_params(model, other, model.pseudo[other])
    comps = torch.stack([gaussian(A @ m[i] + b, A @ torch.diag(s[i] ** 2) @ A.T + SIGMA**2 * torch.eye(P, dtype=torch.float64),
                                  x) for i in range(m.shape[0])])
    return torch.logsumexp(comps, 0) - math.log(m.shape[0])


def exact_conditional(model, params, name, x, given, y):
    """log int p(x_name|z) p(z|y_given) dz for the conditional prior of `given`."""
    A, b = (t.double() for t in params[name])
    m, s = posterior_params(model, given, y)
    return torch.stack([gaussian(A @ m[i] + b, A @ torch.diag(s[i] ** 2) @ A.T + SIGMA**2 * torch.eye(P, dtype=torch.float64),
                                 x[i]) for i in range(x.shape[0])])


def test_log_likelihood_against_the_closed_form():
    """One modality observed: log p(a) under the pseudo-sample prior. Both: the equal
    mixture of the two directions' p(a, b) = p(b) int p(a|z) p(z|b) dz and its mirror."""
    model, params = linear_meme(n_pseudo=3)
    batch = batch_of(params, n=4)
    a, b = batch.data["a"], batch.data["b"]
    log_pa = torch.stack([exact_marginal(model, params, "a", a[i], "b") for i in range(4)])
    log_pb = torch.stack([exact_marginal(model, params, "b", b[i], "a") for i in range(4)])
    a_to_b = log_pb + exact_conditional(model, params, "a", a, "b", b)
    b_to_a = log_pa + exact_conditional(model, params, "b", b, "a", a)
    exact_joint = torch.logaddexp(a_to_b, b_to_a) - math.log(2)
    torch.manual_seed(0)
    est = model.log_likelihood(batch, K=20000, chunk=5000).double()
    assert (est - exact_joint).abs().max() < 0.05
    only_a = Batch(batch.data, {"a": torch.ones(4, dtype=torch.bool), "b": torch.zeros(4, dtype=torch.bool)})
    est_a = model.log_likelihood(only_a, K=20000, chunk=5000).double()
    assert (est_a - log_pa).abs().max() < 0.05


def test_directional_likelihood_metric_against_the_closed_form():
    """MEME Table 2: each direction's log p(s|t) and log p(s,t) = log p(t) + log p(s|t)
    (p(t) under s's pseudo-sample prior) against the linear-Gaussian closed forms; rows
    lacking a modality are left out."""
    from mmdgm.data import MultimodalDataset
    from mmdgm.evaluate import METRICS, EvalContext

    model, params = linear_meme(n_pseudo=3)
    batch = batch_of(params, n=4)
    a, b = batch.data["a"], batch.data["b"]
    mask = {"a": torch.tensor([True] * 4 + [False]), "b": torch.ones(5, dtype=torch.bool)}
    data = MultimodalDataset({"a": torch.cat([a, a[:1]]), "b": torch.cat([b, b[:1]])}, torch.zeros(5), mask=mask)
    out = METRICS.get("meme_directional_likelihood")(EvalContext(model, data, progress=False), K=20000, chunk=5000)
    a_given_b = exact_conditional(model, params, "a", a, "b", b)
    b_given_a = exact_conditional(model, params, "b", b, "a", a)
    log_pa = torch.stack([exact_marginal(model, params, "a", a[i], "b") for i in range(4)])
    log_pb = torch.stack([exact_marginal(model, params, "b", b[i], "a") for i in range(4)])
    exact = {"log p(a|b) [a->b]": a_given_b, "log p(b|a) [b->a]": b_given_a,
             "log p(a,b) [a->b]": a_given_b + log_pb, "log p(b,a) [b->a]": b_given_a + log_pa}
    assert out["n"] == 4 and set(exact) <= set(out)
    for key, value in exact.items():
        assert out[key] == pytest.approx(float(value.detach().mean()), abs=0.05), key


def test_one_direction_trains_eq_6_alone():
    model, params = linear_meme(inner_samples=2, directions="b->a")
    batch = batch_of(params, n=6)
    torch.manual_seed(3)
    out = model(batch)
    torch.manual_seed(3)
    torch.testing.assert_close(out.per_point, model.directional_bound(batch, "b", "a"))
    with pytest.raises(ValueError, match="directions must be 'both', 'a->b' or 'b->a'"):
        linear_meme(directions="a->c")


def test_bidirectional_bound_encodes_each_modality_once():
    """Both directions and both L(t) terms share one q(z|x_m) per modality: each encoder sees
    the paired rows once and the other modality's pseudo-samples once, the value unchanged."""
    model, params = linear_meme(inner_samples=2)
    batch = batch_of(params, n=6)
    seen = {m: [] for m in model.names}
    for m in model.names:
        model.encoders[m].register_forward_hook(lambda mod, args, out, m=m: seen[m].append(args[0].shape[0]))
    torch.manual_seed(5)
    out = model(batch)
    n_pseudo = model.pseudo["a"].shape[0]
    assert seen == {"a": [6, n_pseudo], "b": [6, n_pseudo]}
    torch.manual_seed(5)
    want = (model.directional_bound(batch, "a", "b") + model.directional_bound(batch, "b", "a")) / 2
    torch.testing.assert_close(out.per_point, want)


def test_forward_takes_the_right_bound_per_row():
    model, params = linear_meme(inner_samples=2)
    batch = batch_of(params, n=6)
    mask = {"a": torch.tensor([1, 1, 0, 1, 0, 1], dtype=torch.bool), "b": torch.tensor([1, 0, 1, 1, 1, 0], dtype=torch.bool)}
    partial = Batch(batch.data, mask)
    torch.manual_seed(7)
    out = model(partial)
    torch.manual_seed(7)
    pairs, a_alone, b_alone = partial.select(torch.tensor([0, 3])), partial.select(torch.tensor([1, 5])), partial.select(
        torch.tensor([2, 4]))
    bi = (model.directional_bound(pairs, "a", "b") + model.directional_bound(pairs, "b", "a")) / 2
    only_a, only_b = model.unimodal_bound(a_alone, "a"), model.unimodal_bound(b_alone, "b")
    want = torch.stack([bi[0], only_a[0], only_b[0], bi[1], only_b[1], only_a[1]])
    torch.testing.assert_close(out.per_point, want)
    assert out.loss.item() == pytest.approx(-want.mean().item()) and out.metrics["paired_fraction"] == pytest.approx(2 / 6)


def image_meme(**options):
    mods = [Modality("a", (1, 28, 28), encoder="mnist-mlp", decoder="mnist-mlp", net_options={"hidden": 16}),
            Modality("b", (3, 32, 32), encoder="svhn-conv", decoder="svhn-conv", net_options={"width": 4})]
    return MODELS.get("meme")(mods, 4, **GAUSSIAN, **{"n_pseudo": 3, **options})


def test_missing_modality_is_never_read_and_pseudo_samples_learn():
    torch.manual_seed(0)
    model = image_meme(inner_samples=2)
    g = torch.Generator().manual_seed(0)
    batch = Batch({"a": torch.rand(6, 1, 28, 28, generator=g), "b": torch.rand(6, 3, 32, 32, generator=g)})
    partial = check_missing_modality_is_never_read(model, batch, learnt_prior=("encoders.b.",))
    assert torch.count_nonzero(partial["pseudo.b"]) > 0 and torch.count_nonzero(partial["pseudo.a"]) > 0


def test_initialise_from_data_copies_observed_samples():
    from mmdgm.data import MultimodalDataset

    model = image_meme()
    a = torch.randint(0, 255, (10, 1, 28, 28), dtype=torch.uint8)
    b = torch.randint(0, 255, (10, 3, 32, 32), dtype=torch.uint8)
    mask = {"b": torch.tensor([True] * 3 + [False] * 7)}
    data = MultimodalDataset({"a": a, "b": b}, torch.zeros(10), mask=mask)
    model.initialise_from_data(data)
    observed_b = b[:3].float() / 255
    assert all(any(torch.equal(u, x) for x in observed_b) for u in model.pseudo["b"].detach())
    samples = model.sample(5)
    assert samples["a"].shape == (5, 1, 28, 28) and samples["b"].shape == (5, 3, 32, 32)


def test_bad_options_are_clear_errors():
    with pytest.raises(ValueError, match="exactly two modalities"):
        MODELS.get("meme")([Modality(n, (3,), kind="vector") for n in "abc"], 2, **GAUSSIAN)
    with pytest.raises(ValueError, match="Gaussian posterior"):
        MODELS.get("meme")([Modality(n, (3,), kind="vector") for n in "ab"], 2)
    with pytest.raises(ValueError, match="log_p_other"):
        image_meme(log_p_other="keep")
    with pytest.raises(ValueError, match="n_pseudo must be"):
        image_meme(n_pseudo=0)
