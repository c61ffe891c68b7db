"""Mathematical verification of `mmdgm.objectives.estimators` against a linear-Gaussian model.

In the linear-Gaussian model of `tests/linear_gaussian.py` every target is known exactly:
log p(x), the ELBO, CUBO_n = (1/n) log E_q[w^n], and the gradient of the ELBO. Monte-Carlo
checks use a fixed seed and a tolerance of 5 standard errors, with the standard error
*measured* from the same draws (sample std / sqrt(#independent replicates)); 5 SE makes a
false alarm essentially impossible (p ~ 6e-7 per comparison) while the effects being
tested are many SE away (several assertions below check that "power" explicitly). Everything
is float64.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate

from mmdgm.objectives.estimators import cubo, dreg, dreg_mixture, elbo, iwae, log_mean_exp
from tests.linear_gaussian import (
    DTYPE,
    GaussianEncoder,
    LinearGaussian,
    default_problem,
    exact_cubo,
    exact_elbo,
    exact_elbo_via_kl,
    exact_log_moment,
    exact_posterior_encoder,
    leaves,
    log_weights,
    replicate,
)

Z = 5.0  # tolerance in standard errors


def mean_se(v: torch.Tensor, dim: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample mean and its standard error along `dim` (independent replicates)."""
    n = v.shape[dim]
    return v.mean(dim), v.std(dim) / math.sqrt(n)


def replicated_x(x: torch.Tensor, R: int) -> torch.Tensor:
    """(R * B, P): R copies of the B data points, replicate-major."""
    return x.repeat(R, 1)


def per_replicate(values: torch.Tensor, R: int, B: int) -> torch.Tensor:
    """(R * B,) estimator outputs on `replicated_x` -> (R, B)."""
    return values.reshape(R, B)


# ---------------------------------------------------------------------------------------
# The helper's closed forms (so that everything below is checked against correct numbers)
# ---------------------------------------------------------------------------------------
def test_closed_forms_match_quadrature_in_1d():
    """log p(x), ELBO and CUBO_2 of a 1-D-latent model by adaptive quadrature on the *raw*
    joint density (no posterior algebra), against the helper's closed forms. Quadrature is
    accurate to ~1e-10 on these smooth, rapidly decaying integrands, hence rtol 1e-8."""
    A = torch.tensor([[1.3], [-0.4]], dtype=DTYPE)
    b = torch.tensor([0.3, -0.2], dtype=DTYPE)
    model = LinearGaussian(A=A, b=b, sigma=0.6)
    enc = GaussianEncoder(
        C=torch.tensor([[0.5, -0.1]], dtype=DTYPE),
        c=torch.tensor([0.2], dtype=DTYPE),
        log_s=torch.tensor([math.log(0.55)], dtype=DTYPE),
    )
    x = torch.tensor([[0.8, -0.5], [-1.1, 0.4]], dtype=DTYPE)
    q = enc(x)
    for i in range(x.shape[0]):
        xi = x[i].numpy()
        m, s = float(q.loc[i, 0]), float(q.scale[i, 0])

        def log_joint(z):
            mean = A.numpy()[:, 0] * z + b.numpy()
            return (
                -0.5 * z**2 - 0.5 * math.log(2 * math.pi)
                - 0.5 * np.sum((xi - mean) ** 2) / 0.36 - 2 * math.log(0.6 * math.sqrt(2 * math.pi))
            )

        def log_q(z):
            return -0.5 * ((z - m) / s) ** 2 - math.log(s * math.sqrt(2 * math.pi))

        kw = dict(epsabs=0, epsrel=1e-12, limit=200)
        px = integrate.quad(lambda z: math.exp(log_joint(z)), -np.inf, np.inf, **kw)[0]
        el = integrate.quad(lambda z: math.exp(log_q(z)) * (log_joint(z) - log_q(z)), -30, 30, **kw)[0]
        m2 = integrate.quad(lambda z: math.exp(2 * log_joint(z) - log_q(z)), -np.inf, np.inf, **kw)[0]
        assert math.isclose(float(model.log_marginal(x)[i]), math.log(px), rel_tol=1e-8)
        assert math.isclose(float(exact_elbo(model, enc, x)[i]), el, rel_tol=1e-8)
        assert math.isclose(float(exact_cubo(model, enc, x, 2.0)[i]), 0.5 * math.log(m2), rel_tol=1e-8)


def test_closed_forms_are_consistent():
    """Two independent ELBO formulas agree; log E_q[w^0] = 0 and log E_q[w^1] = log p(x)
    (the moment formula at n = 0, 1); all moments used below (n <= 4) are finite; the
    default encoder is strictly worse than the posterior (the bounds are strict)."""
    model, enc, x = default_problem()
    lp = model.log_marginal(x)
    torch.testing.assert_close(exact_elbo(model, enc, x), exact_elbo_via_kl(model, enc, x), rtol=0, atol=1e-12)
    torch.testing.assert_close(exact_log_moment(model, enc, x, 0.0), torch.zeros_like(lp), rtol=0, atol=1e-12)
    torch.testing.assert_close(exact_log_moment(model, enc, x, 1.0), lp, rtol=0, atol=1e-12)
    for n in (2.0, 3.0, 4.0):
        assert torch.isfinite(exact_log_moment(model, enc, x, n)).all()
    assert (lp - exact_elbo(model, enc, x) > 0.5).all()  # ~1 nat gap
    assert (exact_cubo(model, enc, x) - lp > 0.2).all()  # ~0.3 nat gap


# ---------------------------------------------------------------------------------------
# q = exact posterior: every log-weight is log p(x)
# ---------------------------------------------------------------------------------------
def test_exact_posterior_gives_constant_log_weights():
    """With A^T A diagonal the posterior is a diagonal Gaussian linear in x, so the encoder can
    be the exact posterior. Then lw = log p(x) for every sample, and elbo = iwae = cubo (any n)
    = log p(x) exactly (up to float rounding, 1e-10), and the closed forms agree."""
    A = torch.tensor([[1.0, 0.6], [0.5, -1.2], [-1.0, 0.0]], dtype=DTYPE)
    A[:, 1] -= (A[:, 1] @ A[:, 0]) / (A[:, 0] @ A[:, 0]) * A[:, 0]  # orthogonal columns
    model = LinearGaussian(A=A, b=torch.tensor([0.1, 0.4, -0.3], dtype=DTYPE), sigma=0.8)
    enc = exact_posterior_encoder(model)
    _, _, x = default_problem()
    lp = model.log_marginal(x)
    torch.manual_seed(0)
    lw, z = log_weights(model, enc, x, K=64, S=2)
    torch.testing.assert_close(lw, lp.expand_as(lw), rtol=0, atol=1e-10)
    for value in (elbo(lw), iwae(lw), cubo(lw), cubo(lw, n=3.0), iwae(lw.reshape(1, -1, lw.shape[-1]))):
        torch.testing.assert_close(value, lp, rtol=0, atol=1e-10)
    assert lw.std(1).max() < 1e-10  # zero variance
    torch.testing.assert_close(exact_elbo(model, enc, x), lp, rtol=0, atol=1e-10)
    torch.testing.assert_close(exact_cubo(model, enc, x), lp, rtol=0, atol=1e-10)


# ---------------------------------------------------------------------------------------
# ELBO and IWAE
# ---------------------------------------------------------------------------------------
def test_elbo_mean_matches_closed_form():
    """elbo(lw) with K = 200,000 samples is the sample mean of lw; it must match the exact
    ELBO within 5 SE (SE = std(lw)/sqrt(K), ~0.005 nat), while being far (> 100 SE) below
    log p(x)."""
    model, enc, x = default_problem()
    torch.manual_seed(1)
    K = 200_000
    lw, _ = log_weights(model, enc, x, K=K)
    est = elbo(lw)
    se = lw[0].std(0) / math.sqrt(K)
    exact = exact_elbo(model, enc, x)
    torch.testing.assert_close(est, lw[0].mean(0), rtol=0, atol=1e-12)
    assert ((est - exact).abs() < Z * se).all(), ((est - exact) / se)
    assert ((model.log_marginal(x) - est) > 100 * se).all()


def test_iwae_k1_equals_elbo_per_draw():
    """iwae with K = 1 is log exp(lw) = lw = elbo, draw by draw (also with S > 1 strata)."""
    model, enc, x = default_problem()
    torch.manual_seed(2)
    lw, _ = log_weights(model, enc, x, K=1, S=4)
    torch.testing.assert_close(iwae(lw), elbo(lw), rtol=0, atol=1e-12)
    torch.testing.assert_close(iwae(lw), lw[:, 0].mean(0), rtol=0, atol=1e-12)


def _iwae_draws(model, enc, x, K, R, seed):
    """(R, B) independent draws of iwae_K for each data point."""
    torch.manual_seed(seed)
    lw, _ = log_weights(model, enc, replicated_x(x, R), K=K)
    return per_replicate(iwae(lw), R, x.shape[0])


def test_iwae_is_ordered_and_between_elbo_and_log_marginal():
    """Plain Monte-Carlo means over independent replicates (R = 4000 per K):
    E[iwae_1] = exact ELBO within 5 SE, and E[iwae_1] < E[iwae_5] < E[iwae_50] with each step
    > 5 SE of the difference (the steps are ~0.3-0.45 and ~0.05-0.1 nat).

    E[iwae_K] < log p(x): the plain gap at K = 50 (~0.005-0.009 nat) is too small for the
    plain SE, so it is measured with the control variate u - 1, u = exp(iwae_K - log p(x)) =
    (1/K) sum_k w_k / p(x), which has mean exactly 0 because importance sampling is unbiased
    (E_q[w] = p(x); checked here: mean(u) = 1 within 5 SE). Then
    log p(x) - E[iwae_K] = E[u - 1 - log u], estimated with ~1-2% relative SE, and it must be
    > 5 SE for K = 1, 5, 50 and match the large-K expansion
    chi^2/(2K) + (3 chi^4/4 - mu_3/3)/K^2, chi^2 = E[(w/p - 1)^2], mu_3 = E[(w/p - 1)^3] from
    the exact moments, within 5 SE at K = 50 (the neglected O(1/K^3) term is far below the
    ~2% relative SE: at K = 5 the same two-term expansion is already within ~5%)."""
    model, enc, x = default_problem()
    lp = model.log_marginal(x)
    el = exact_elbo(model, enc, x)
    chi2 = torch.expm1(exact_log_moment(model, enc, x, 2.0) - 2 * lp)
    mu3 = torch.exp(exact_log_moment(model, enc, x, 3.0) - 3 * lp) - 3 * (chi2 + 1) + 2
    draws = {K: _iwae_draws(model, enc, x, K, 4000, seed=10 + K) for K in (1, 5, 50)}
    m1, se1 = mean_se(draws[1])
    assert ((m1 - el).abs() < Z * se1).all(), ((m1 - el) / se1)
    for k0, k1 in ((1, 5), (5, 50)):
        (ma, sa), (mb, sb) = mean_se(draws[k0]), mean_se(draws[k1])
        assert ((mb - ma) > Z * torch.sqrt(sa**2 + sb**2)).all(), (k0, k1, (mb - ma) / torch.sqrt(sa**2 + sb**2))
    for K, d in draws.items():
        u = torch.exp(d - lp)
        mu, seu = mean_se(u)
        assert ((mu - 1).abs() < Z * seu).all(), (K, (mu - 1) / seu)
        gap, se = mean_se(u - 1 - (d - lp))
        assert (gap > Z * se).all(), (K, gap / se)
    gap, se = mean_se(torch.expm1(draws[50] - lp) - (draws[50] - lp))
    K = 50
    predicted = chi2 / (2 * K) + (0.75 * chi2**2 - mu3 / 3) / K**2
    assert ((gap - predicted).abs() < Z * se).all(), ((gap - predicted) / se)


def test_iwae_converges_to_log_marginal():
    """At K = 5000 (100 replicates) the plain mean of iwae_K is within 5 SE of log p(x), with
    5 SE < 0.01 nat (against an ELBO gap of ~1 nat); the remaining bias there is
    ~chi^2/(2K) < 1e-4, negligible next to the SE (~0.001)."""
    model, enc, x = default_problem()
    lp = model.log_marginal(x)
    m, se = mean_se(_iwae_draws(model, enc, x, 5000, 100, seed=99))
    assert (Z * se < 0.01).all()
    assert ((m - lp).abs() < Z * se).all(), ((m - lp) / se)


# ---------------------------------------------------------------------------------------
# CUBO
# ---------------------------------------------------------------------------------------
def test_cubo_per_draw_identities():
    """Per draw: cubo with K = 1 is lw; cubo_n >= iwae (power-mean inequality, any n >= 1),
    cubo_n increasing in n; and cubo_n is (1/n) log mean exp(n lw) computed independently."""
    model, enc, x = default_problem()
    torch.manual_seed(3)
    lw, _ = log_weights(model, enc, x, K=1, S=3)
    torch.testing.assert_close(cubo(lw), lw[:, 0].mean(0), rtol=0, atol=1e-12)
    lw, _ = log_weights(model, enc, replicated_x(x, 50), K=20)
    c1, c2, c3 = cubo(lw, n=1.0), cubo(lw), cubo(lw, n=3.0)
    torch.testing.assert_close(c1, iwae(lw), rtol=0, atol=1e-12)
    assert (c2 >= iwae(lw)).all() and (c3 >= c2).all()
    manual = torch.log(torch.exp(2 * lw[0]).mean(0)) / 2
    torch.testing.assert_close(c2, manual, rtol=1e-12, atol=1e-12)


def test_cubo_closed_form_and_estimator_convergence():
    """Exact CUBO_2 = 0.5 log E_q[w^2] (closed form, cross-checked by quadrature above):
    (a) a direct Monte-Carlo estimate of E_q[w^2]/p(x)^2 matches exp(2 (CUBO_2 - log p(x)))
        within 5 SE (valid: E[w^4] is finite, checked in test_closed_forms_are_consistent);
    (b) CUBO_2 > log p(x) (Jensen; ~0.3 nat here);
    (c) the estimator cubo(lw) (K samples) is biased *low* (Jensen on the concave log):
        E[cubo_10] < CUBO_2 by > 5 SE, E[cubo_100] > E[cubo_10] by > 5 SE, and at K = 2000
        it is within 5 SE of CUBO_2 (asymptotic bias Var(w^2)/(4 K E[w^2]^2) < 3e-4, below the
        SE ~ 0.0013) while exceeding log p(x) by > 5 SE (the gap is ~0.3 nat)."""
    model, enc, x = default_problem()
    B = x.shape[0]
    lp = model.log_marginal(x)
    c2 = exact_cubo(model, enc, x)
    assert (c2 > lp + 0.2).all()

    torch.manual_seed(4)
    N = 200_000
    lw, _ = log_weights(model, enc, x, K=N)
    w2 = torch.exp(2 * (lw[0] - lp))
    m, se = mean_se(w2)
    assert ((m - torch.exp(2 * (c2 - lp))).abs() < Z * se).all()

    runs = {}
    for K, R, seed in ((10, 4000, 5), (100, 1000, 6), (2000, 150, 7)):
        torch.manual_seed(seed)
        lw, _ = log_weights(model, enc, replicated_x(x, R), K=K)
        runs[K] = mean_se(per_replicate(cubo(lw), R, B))
    m10, se10 = runs[10]
    assert ((c2 - m10) > Z * se10).all()
    (ma, sa), (mb, sb) = runs[10], runs[100]
    assert ((mb - ma) > Z * torch.sqrt(sa**2 + sb**2)).all()
    m, se = runs[2000]
    assert ((m - c2).abs() < Z * se).all(), ((m - c2) / se)
    assert ((m - lp) > Z * se).all()


# ---------------------------------------------------------------------------------------
# Stratified (MMVAE eq. 3) bounds and strata masks
# ---------------------------------------------------------------------------------------
def _three_encoders(enc: GaussianEncoder) -> list[GaussianEncoder]:
    return [
        enc,
        GaussianEncoder(C=enc.C * 0.8, c=enc.c + 0.3, log_s=enc.log_s + 0.2),
        GaussianEncoder(C=enc.C * 1.1, c=enc.c - 0.2, log_s=enc.log_s - 0.1),
    ]


def _stratified_lw(model, encs, x, K, mixture: bool):
    """lw (S, K, B) with z_s ~ q_s; denominator q_s (mixture=False) or the uniform mixture
    (1/S) sum_m q_m (mixture=True, MMVAE's stratified MoE estimator)."""
    zs = torch.stack([e(x).rsample((K,)) for e in encs])  # (S, K, B, D)
    lq = torch.stack([e(x).log_prob(zs).sum(-1) for e in encs])  # (M, S, K, B)
    if mixture:
        den = torch.logsumexp(lq, 0) - math.log(len(encs))
    else:
        den = torch.diagonal(lq, dim1=0, dim2=1).permute(2, 0, 1)  # q_s(z_s)
    return model.log_joint(x, zs) - den, zs


def test_stratified_iwae_and_masks_match_manual_computation():
    """S = 3 strata with different proposals: iwae/elbo/cubo are the average over strata of
    per-stratum values computed by hand (Python loops over logsumexp); with an (S, B) mask the
    average runs over kept strata only and the values of dropped strata are irrelevant (set to
    huge garbage, the result is bit-identical); the stratified bound is <= the tight bound
    iwae(lw.reshape(1, S K, B)) draw by draw (concavity of log)."""
    model, enc, x = default_problem()
    encs = _three_encoders(enc)
    torch.manual_seed(8)
    S, K, B = 3, 7, x.shape[0]
    lw, _ = _stratified_lw(model, encs, x, K, mixture=False)
    per = torch.stack([torch.logsumexp(lw[s], 0) - math.log(K) for s in range(S)])  # (S, B)
    torch.testing.assert_close(iwae(lw), per.mean(0), rtol=0, atol=1e-12)
    torch.testing.assert_close(elbo(lw), lw.mean((0, 1)), rtol=0, atol=1e-12)
    torch.testing.assert_close(log_mean_exp(lw, 1), per, rtol=0, atol=1e-12)
    tight = iwae(lw.reshape(1, S * K, B))
    assert (tight >= iwae(lw)).all()

    mask = torch.tensor([[True, False, True], [False, True, True], [True, False, True]])
    for b in range(B):
        kept = [s for s in range(S) if mask[s, b]]
        manual = sum(float(per[s, b]) for s in kept) / len(kept)
        assert math.isclose(float(iwae(lw, mask)[b]), manual, rel_tol=0, abs_tol=1e-12)
        manual_c = sum(float(torch.logsumexp(2 * lw[s, :, b], 0) - math.log(K)) / 2 for s in kept) / len(kept)
        assert math.isclose(float(cubo(lw, mask)[b]), manual_c, rel_tol=0, abs_tol=1e-12)
        manual_e = sum(float(lw[s, :, b].mean()) for s in kept) / len(kept)
        assert math.isclose(float(elbo(lw, mask)[b]), manual_e, rel_tol=0, abs_tol=1e-12)
    garbage = torch.where(mask[:, None, :], lw, torch.full_like(lw, 1e4))
    for f in (iwae, elbo, cubo):
        assert torch.equal(f(garbage, mask), f(lw, mask))
    # all strata kept == no mask
    torch.testing.assert_close(iwae(lw, torch.ones(S, B, dtype=torch.bool)), iwae(lw), rtol=0, atol=1e-12)


def test_stratified_mixture_bound_is_a_lower_bound():
    """MMVAE's stratified estimator (z_s ~ q_s, weights against the mixture of the S experts)
    is a lower bound in expectation: E[iwae(lw)] < log p(x) by > 5 SE for K = 1 and K = 20,
    E[iwae_20] > E[iwae_1], and the tight bound iwae(lw.reshape(1, S K, B)) is larger still
    (per draw). Individual strata need not be lower bounds, only their average."""
    model, enc, x = default_problem()
    encs = _three_encoders(enc)
    lp = model.log_marginal(x)
    B, R = x.shape[0], 2000
    xr = replicated_x(x, R)
    means = {}
    for K in (1, 20):
        torch.manual_seed(20 + K)
        lw, _ = _stratified_lw(model, encs, xr, K, mixture=True)
        loose = per_replicate(iwae(lw), R, B)
        tight = per_replicate(iwae(lw.reshape(1, -1, lw.shape[-1])), R, B)
        assert (tight >= loose - 1e-12).all()
        m, se = mean_se(loose)
        assert ((lp - m) > Z * se).all(), (K, (lp - m) / se)
        means[K] = (m, se)
    (m1, s1), (m20, s20) = means[1], means[20]
    assert ((m20 - m1) > Z * torch.sqrt(s1**2 + s20**2)).all()


# ---------------------------------------------------------------------------------------
# DReG
# ---------------------------------------------------------------------------------------
def _grads(surrogate, model, enc, x0, K, R, seed, detach_q):
    """Per-replicate gradients of surrogate(lw, z).sum() w.r.t. encoder and decoder params.

    Each of the R replicates (copies of the single data point x0) has its own copy of every
    parameter, so one backward pass gives R independent per-draw gradients. Returns
    (encoder grads (R, 10), decoder grads (R, 9), z)."""
    mr, er = replicate(model, R), replicate(enc, R)
    torch.manual_seed(seed)
    lw, z = log_weights(mr, er, x0.expand(R, -1), K=K, detach_q=detach_q)
    surrogate(lw, z).sum().backward()
    g_enc = torch.cat([t.grad.reshape(R, -1) for t in leaves(er).values()], 1)
    g_dec = torch.cat([t.grad.reshape(R, -1) for t in leaves(mr).values()], 1)
    return g_enc, g_dec, z.detach()


def _iwae_surrogate(lw, z):
    return iwae(lw)


def _stl_surrogate(lw, z):
    """'Sticking the landing' IWAE gradient: w~ instead of w~^2 (biased; Tucker et al. 2019)."""
    return (torch.softmax(lw.detach(), 1) * lw).sum(1).mean(0)


def test_dreg_value_matches_definition():
    """dreg returns sum_k w~_k lw_k averaged over (kept) strata, w~ = softmax_k(lw)."""
    model, enc, x = default_problem()
    enc = replicate(enc, x.shape[0])  # parameters that require grad, so z does too
    torch.manual_seed(30)
    lw, z = log_weights(model, enc, x, K=6, S=2, detach_q=True)
    w = torch.softmax(lw.detach(), 1)
    torch.testing.assert_close(dreg(lw, z), (w * lw).sum(1).mean(0), rtol=0, atol=1e-12)
    mask = torch.tensor([[True, False, True], [True, True, False]])
    lw, z = log_weights(model, enc, x, K=6, S=2, detach_q=True)
    w = torch.softmax(lw.detach(), 1)
    manual = ((w * lw).sum(1) * mask).sum(0) / mask.sum(0)
    torch.testing.assert_close(dreg(lw, z, mask), manual, rtol=0, atol=1e-12)


def test_dreg_hook_scales_z_gradient_by_squared_weights_with_strata_and_mask():
    """With S = 2 strata, a mask, and z (S, K, B, D): the gradient reaching z from the dreg
    surrogate is (1/|kept_b|) w~^2 d lw / d z for kept strata and exactly 0 for dropped
    ones, where d lw / d z is computed separately by autograd. Exact up to rounding."""
    model, enc, x = default_problem()
    torch.manual_seed(31)
    z = enc(x).sample((2, 5)).requires_grad_(True)  # leaf z, so z.grad is observable
    q = enc(x)
    lw = model.log_joint(x, z) - q.log_prob(z).sum(-1)
    (dlw_dz,) = torch.autograd.grad(lw.sum(), z)  # d lw_k / d z_k (lw_k depends on z_k only)
    lw = model.log_joint(x, z) - q.log_prob(z).sum(-1)
    mask = torch.tensor([[True, False, True], [True, True, False]])
    dreg(lw, z, mask).sum().backward()
    w = torch.softmax(lw.detach(), 1)
    expected = w[..., None] ** 2 * dlw_dz * mask[:, None, :, None] / mask.sum(0)[None, None, :, None]
    torch.testing.assert_close(z.grad, expected, rtol=1e-12, atol=1e-14)
    assert (z.grad[0, :, 1] == 0).all() and (z.grad[1, :, 2] == 0).all()


def test_dreg_decoder_gradients_equal_iwae_per_draw():
    """For the same z (same seed), the decoder (A, b) gradient of the DReG surrogate equals the
    IWAE gradient draw by draw: sum_k w~_k d lw_k / d theta either way (float error only)."""
    model, enc, x = default_problem()
    _, d_iwae, z1 = _grads(_iwae_surrogate, model, enc, x[:1], K=10, R=500, seed=32, detach_q=False)
    _, d_dreg, z2 = _grads(dreg, model, enc, x[:1], K=10, R=500, seed=32, detach_q=True)
    assert torch.equal(z1, z2)
    torch.testing.assert_close(d_dreg, d_iwae, rtol=1e-10, atol=1e-12)
    assert d_iwae.abs().max() > 0.1  # not a vacuous comparison


def test_k1_gradients_match_exact_elbo_gradient():
    """K = 1: iwae = ELBO, whose exact gradient w.r.t. all parameters is autograd through the
    closed-form ELBO. The mean (over 20,000 independent draws) of the reparameterised IWAE
    gradient and of the DReG gradient (here: the 'sticking the landing' ELBO gradient) must both
    match it within 5 SE, component by component (19 components)."""
    model, enc, x = default_problem()
    x0 = x[1:2]
    ml, el = replicate(model, 1), replicate(enc, 1)
    exact_elbo(ml, el, x0).sum().backward()
    exact = torch.cat(
        [t.grad.reshape(-1) for t in leaves(el).values()] + [t.grad.reshape(-1) for t in leaves(ml).values()]
    )
    R = 20_000
    for surrogate, detach in ((_iwae_surrogate, False), (dreg, True)):
        g_enc, g_dec, _ = _grads(surrogate, model, enc, x0, K=1, R=R, seed=33, detach_q=detach)
        m, se = mean_se(torch.cat([g_enc, g_dec], 1))
        assert ((m - exact).abs() < Z * se).all(), ((m - exact) / se)
        assert ((exact.abs() / se) > 10).sum() >= 10  # the gradient is resolved, not noise


def test_dreg_encoder_gradient_is_unbiased_for_iwae_gradient():
    """K = 10, 20,000 independent draws with paired (same z) DReG and IWAE encoder gradients:
    the mean paired difference is within 5 SE of 0 in every component (DReG is unbiased for
    the IWAE gradient). Power check: the IWAE gradient itself is resolved (its largest component is
    > 10 SE from 0; ~16 SE here), and the biased 'sticking the landing' estimator (w~ instead of w~^2,
    i.e. a missing/incorrect hook) differs from IWAE by > 5 SE, so the test would catch it."""
    model, enc, x = default_problem()
    R, K = 20_000, 10
    g_iwae, _, _ = _grads(_iwae_surrogate, model, enc, x[:1], K, R, seed=34, detach_q=False)
    g_dreg, _, _ = _grads(dreg, model, enc, x[:1], K, R, seed=34, detach_q=True)
    g_stl, _, _ = _grads(_stl_surrogate, model, enc, x[:1], K, R, seed=34, detach_q=True)
    m, se = mean_se(g_dreg - g_iwae)
    assert (m.abs() < Z * se).all(), m / se
    m, se = mean_se(g_iwae)
    assert (m.abs() / se).max() > 10, m / se
    m, se = mean_se(g_stl - g_iwae)
    assert (m.abs() > Z * se).any()


def test_dreg_encoder_gradient_has_lower_variance():
    """K = 50, 4,000 draws: the per-draw variance of every encoder-gradient component is lower
    for DReG than for IWAE (Tucker et al.'s point; measured ratio here ~3e-4). The margin is
    set from the estimated standard errors of the two variance estimates,
    SE(s^2) = sqrt((m4 - s^4) / R), so var_dreg + 5 SE < var_iwae - 5 SE."""
    model, enc, x = default_problem()
    R, K = 4000, 50
    g_iwae, _, _ = _grads(_iwae_surrogate, model, enc, x[:1], K, R, seed=35, detach_q=False)
    g_dreg, _, _ = _grads(dreg, model, enc, x[:1], K, R, seed=35, detach_q=True)

    def var_se(g):
        c = g - g.mean(0)
        v = c.square().mean(0)
        return v, torch.sqrt((c.pow(4).mean(0) - v**2) / R)

    (vi, si), (vd, sd) = var_se(g_iwae), var_se(g_dreg)
    assert (vd + Z * sd < vi - Z * si).all(), (vd / vi)


def _mixture_grads(K: int, R: int, seed: int, estimator: str, n_experts: int = 2):
    """Per-replicate encoder gradients (all experts) of MMVAE's stratified MoE bound
    (S strata, z_s ~ q_s, weights against the uniform mixture). `estimator`:
    "iwae" the true reparameterised gradient of iwae(lw) (mixture density not detached),
    "dreg" Tucker et al.'s w~^2 rule per stratum, "dreg_mixture" the mixture-corrected rule."""
    model, enc, x = default_problem()
    encs = [replicate(e, R) for e in _three_encoders(enc)[:n_experts]]
    x0 = x[:1].expand(R, -1)
    torch.manual_seed(seed)
    qs = [e(x0) for e in encs]
    base = torch.stack([q.rsample((K,)) for q in qs])  # (S, K, R, D)
    zs = base.view_as(base)
    detach = estimator != "iwae"
    lq = torch.stack([(q.detach() if detach else q).log_prob(zs).sum(-1) for q in qs])
    lw = model.log_joint(x0, zs) - (torch.logsumexp(lq, 0) - math.log(len(encs)))
    if estimator == "iwae":
        value = iwae(lw)
    elif estimator == "dreg":
        value = dreg(lw, zs)
    else:
        components = torch.stack([q.detach().log_prob(base).sum(-1) for q in qs])
        value = dreg_mixture(lw, zs, components)
    value.sum().backward()
    return torch.cat([t.grad.reshape(R, -1) for e in encs for t in leaves(e).values()], 1)


def test_dreg_stratified_mixture_k1_is_unbiased():
    """K = 1: for MMVAE's stratified mixture bound, dropping the score term of log q_mix is
    unbiased (sum_s (1/S) E_{q_s}[d log q_mix] = int d q_mix = 0), so the mean paired
    difference of dreg and IWAE encoder gradients is within 5 SE of 0 (20,000 draws)."""
    g_iwae = _mixture_grads(1, 20_000, 40, "iwae")
    g_dreg = _mixture_grads(1, 20_000, 40, "dreg")
    m, se = mean_se(g_dreg - g_iwae)
    assert (m.abs() < Z * se).all(), m / se


@pytest.mark.parametrize("n_experts", [2, 3])
def test_dreg_mixture_is_unbiased_where_plain_dreg_is_not(n_experts):
    """K = 10, 20,000 paired draws of the stratified MoE bound. Tucker et al.'s per-stratum
    rule (`dreg`) is biased here (its identity needs the score of the sampling density q_s,
    the weights use q_mix): its mean difference from the IWAE gradient exceeds 5 SE (power
    check: measured up to ~30 SE). The mixture-corrected rule (`dreg_mixture`) is within 5 SE
    of the IWAE gradient in every component, and its per-draw variance is lower in most."""
    R, K = 20_000, 10
    g_iwae = _mixture_grads(K, R, 41, "iwae", n_experts)
    g_dreg = _mixture_grads(K, R, 41, "dreg", n_experts)
    g_mix = _mixture_grads(K, R, 41, "dreg_mixture", n_experts)
    m, se = mean_se(g_dreg - g_iwae)
    assert (m.abs() > Z * se).any(), m / se
    m, se = mean_se(g_mix - g_iwae)
    assert (m.abs() < Z * se).all(), m / se
    assert (g_mix.var(0) < g_iwae.var(0)).float().mean() > 0.5


def test_dreg_mixture_reduces_to_dreg_for_one_stratum_and_respects_masks():
    """S = 1: dreg_mixture's z-gradient is exactly dreg's (w~^2 rule). With a mask, dropped
    strata get exactly zero gradient."""
    torch.manual_seed(0)
    z = torch.randn(1, 6, 3, 2, dtype=DTYPE, requires_grad=True)
    lw = -(z**2).sum(-1) * torch.linspace(0.5, 2, 3, dtype=DTYPE)
    dreg(lw, z).sum().backward()
    z_fresh = z.detach().clone().requires_grad_(True)  # z keeps dreg's hook
    zv = z_fresh.view_as(z_fresh)
    lw = -(zv**2).sum(-1) * torch.linspace(0.5, 2, 3, dtype=DTYPE)
    dreg_mixture(lw, zv, torch.zeros(1, 1, 6, 3, dtype=DTYPE)).sum().backward()
    torch.testing.assert_close(z_fresh.grad, z.grad)
    z2 = torch.randn(2, 4, 3, 2, dtype=DTYPE, requires_grad=True)
    zv = z2.view_as(z2)
    mask = torch.tensor([[True, False, True], [True, True, True]])
    comps = -(z2[None] - torch.tensor([0.0, 1.0], dtype=DTYPE)[:, None, None, None, None]).square().sum(-1)
    dreg_mixture(-(zv**2).sum(-1), zv, comps, mask).sum().backward()
    assert torch.count_nonzero(z2.grad[0, :, 1]) == 0
    assert torch.count_nonzero(z2.grad[1, :, 1]) > 0


def test_dreg_rejects_bad_inputs():
    """dreg needs z that requires grad, and lw.shape must lead z.shape."""
    lw = torch.zeros(1, 4, 3, dtype=DTYPE)
    with pytest.raises(ValueError):
        dreg(lw, torch.zeros(1, 4, 3, 2, dtype=DTYPE))
    with pytest.raises(ValueError):
        dreg(lw, torch.zeros(1, 4, 2, 2, dtype=DTYPE, requires_grad=True))
    with pytest.raises(ValueError):
        dreg(lw, torch.zeros(2, 4, 3, 2, dtype=DTYPE, requires_grad=True))
    # the accepted case, for contrast
    dreg(lw, torch.zeros(1, 4, 3, 2, dtype=DTYPE, requires_grad=True))


def test_dreg_mixture_is_finite_for_widely_separated_strata():
    """Log-weights thousands of nats apart between strata (as at initialisation on image
    data) must give finite gradients; c/w~ is computed in log space."""
    torch.manual_seed(0)
    base = torch.randn(2, 4, 3, 2, dtype=torch.float32, requires_grad=True)
    z = base.view_as(base)
    offset = torch.tensor([0.0, -3000.0])[:, None, None]
    lw = -(z**2).sum(-1) * 100 + offset
    comps = torch.stack([-(base - c).square().sum(-1) * 50 for c in (0.0, 3.0)]).detach()
    dreg_mixture(lw, z, comps).sum().backward()
    assert torch.isfinite(base.grad).all()


def _sharp_mixture_grads(estimator: str, x: float, R: int = 20_000, K: int = 5, seed: int = 0):
    """Per-draw location gradients (R, 2) of MMVAE's stratified bound in a sharp 1-D problem:
    p(z) = N(0, 1), p(x | z) = N(z, 1/400), experts q_1 = N(0, 0.5), q_2 = N(1, 0.3). Samples
    of the far expert sit a hundred nats or more below their stratum's best, so c/w~ exceeds
    e^80 for a few percent of them (the clamp that biased `dreg_mixture` before)."""
    mu = torch.tensor([0.0, 1.0], dtype=DTYPE).repeat(R, 1).requires_grad_()
    log_s = torch.tensor([0.5, 0.3], dtype=DTYPE).log().repeat(R, 1).requires_grad_()
    eps = torch.randn(2, K, R, 1, generator=torch.Generator().manual_seed(seed), dtype=DTYPE)
    base = mu.T[:, None, :, None] + log_s.exp().T[:, None, :, None] * eps  # (S, K, R, 1)
    z = base.view_as(base)

    def log_q(t: torch.Tensor, detach: bool) -> torch.Tensor:
        m, s = (mu.detach(), log_s.exp().detach()) if detach else (mu, log_s.exp())
        return torch.stack([torch.distributions.Normal(m[:, j], s[:, j]).log_prob(t[..., 0]) for j in range(2)])

    zz = z[..., 0]
    normal = torch.distributions.Normal
    log_joint = normal(0.0, 1.0).log_prob(zz) + normal(zz, 400.0**-0.5).log_prob(torch.tensor(x, dtype=DTYPE))
    lw = log_joint - (torch.logsumexp(log_q(z, estimator != "iwae"), 0) - math.log(2))
    value = iwae(lw) if estimator == "iwae" else dreg_mixture(lw, z, log_q(base, True))
    value.sum().backward()
    return mu.grad


@pytest.mark.parametrize("x", [-1.0, 0.0])
def test_dreg_mixture_is_unbiased_when_strata_are_hundreds_of_nats_apart(x):
    """Audit case: with log(c/w~) clamped at 80 the location gradient was 7-10 SE off the
    IWAE gradient here; computed exactly it is within 5 SE (20,000 paired draws, K = 5)."""
    d = _sharp_mixture_grads("dreg_mixture", x) - _sharp_mixture_grads("iwae", x)
    m, se = mean_se(d)
    assert (m.abs() < Z * se).all(), m / se


def test_dreg_mixture_is_finite_where_a_normalised_weight_underflows_to_zero():
    """float32, a sample 200 nats below its stratum's best (w~ = 0 exactly) that the other
    stratum's samples make competitive (c/w~ ~ e^198): its gradient must be 0, not 0 * inf."""
    base = torch.zeros(2, 2, 1, 1, dtype=torch.float32, requires_grad=True)
    z = base.view_as(base)
    offsets = torch.tensor([[0.0, -200.0], [-200.0, -200.0]])[:, :, None]
    lw = offsets - z[..., 0] ** 2
    comps = torch.zeros(2, 2, 2, 1)
    dreg_mixture(lw, z, comps).sum().backward()
    assert torch.isfinite(base.grad).all()
