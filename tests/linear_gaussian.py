"""A linear-Gaussian latent-variable model with closed-form answers, for testing estimators.

Model (float64 throughout):

    p(z)     = N(0, I_D)
    p(x | z) = N(A z + b, sigma^2 I_P)
    log p(x) = log N(x; b, A A^T + sigma^2 I_P)                         (exact)
    p(z | x) = N(mu(x), Sigma),  Sigma = (I + A^T A / sigma^2)^-1,
               mu(x) = Sigma A^T (x - b) / sigma^2                        (exact)

Encoder (amortised, diagonal):  q(z | x) = N(C x + c, diag(exp(log_s)^2)).

Closed forms provided for a diagonal Gaussian q = N(m, diag(s^2)):

* ``exact_elbo``: E_q[log p(x, z) - log q(z)] from Gaussian expectations;
* ``exact_elbo_via_kl``: log p(x) - KL(q || p(z | x)) (an independent route to the same number);
* ``exact_log_moment``: log E_q[w^n] with w = p(x, z) / q(z), a Gaussian integral:
      log E_q[w^n] = n log p(x) + log int N(z; mu, Sigma)^n N(z; m, S)^(1-n) dz,
  finite iff Lambda_n = n Sigma^-1 + (1 - n) S^-1 is positive definite;
* ``exact_cubo``: CUBO_n = (1/n) log E_q[w^n].

Every parameter may carry an extra leading "replicate" dimension of size B (one copy per data
point), so that one backward pass yields independent per-replicate gradients; see
``replicate``. The sampling and densities go through ``mmdgm.distributions.Normal`` so that the
library's reparameterised sampler and log-densities are exercised too; the exact answers use
only torch linear algebra.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor, nn

from mmdgm.distributions.base import Normal

DTYPE = torch.float64
LOG_2PI = math.log(2 * math.pi)


def _matvec(M: Tensor, v: Tensor) -> Tensor:
    """(..., R, C) @ (..., C) -> (..., R), broadcasting leading dimensions."""
    return (M @ v.unsqueeze(-1)).squeeze(-1)


@dataclass
class LinearGaussian:
    """Decoder p(x | z) = N(A z + b, sigma^2 I) with prior N(0, I). A: (P, D) or (B, P, D)."""

    A: Tensor
    b: Tensor
    sigma: float

    @property
    def D(self) -> int:
        return self.A.shape[-1]

    @property
    def P(self) -> int:
        return self.A.shape[-2]

    def log_joint(self, x: Tensor, z: Tensor) -> Tensor:
        """log p(x, z) for x (B, P), z (..., B, D) -> (..., B), via mmdgm's Normal."""
        prior = Normal(torch.zeros_like(z), torch.ones_like(z))
        lik = Normal(_matvec(self.A, z) + self.b, self.sigma)  # float scale path
        return prior.log_prob(z).sum(-1) + lik.log_prob(x).sum(-1)

    # ---- exact quantities (no Monte Carlo) ---------------------------------------------
    def log_marginal(self, x: Tensor) -> Tensor:
        """Exact log p(x) = log N(x; b, A A^T + sigma^2 I), shape (B,)."""
        cov = self.A @ self.A.transpose(-1, -2) + self.sigma**2 * torch.eye(self.P, dtype=x.dtype)
        return torch.distributions.MultivariateNormal(self.b, covariance_matrix=cov).log_prob(x)

    def posterior_precision(self) -> Tensor:
        """Sigma^-1 = I + A^T A / sigma^2."""
        eye = torch.eye(self.D, dtype=self.A.dtype)
        return eye + self.A.transpose(-1, -2) @ self.A / self.sigma**2

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Exact posterior mean (B, D) and covariance (D, D) (or (B, D, D))."""
        cov = torch.linalg.inv(self.posterior_precision())
        mean = _matvec(cov @ self.A.transpose(-1, -2), x - self.b) / self.sigma**2
        return mean, cov


@dataclass
class GaussianEncoder:
    """q(z | x) = N(C x + c, diag(exp(log_s)^2)). C: (D, P) or (B, D, P)."""

    C: Tensor
    c: Tensor
    log_s: Tensor

    def __call__(self, x: Tensor) -> Normal:
        loc = _matvec(self.C, x) + self.c
        return Normal(loc, self.log_s.exp().expand_as(loc))


def replicate(obj, n: int):
    """A copy of a LinearGaussian/GaussianEncoder whose tensors are fresh leaves of shape
    (n, *shape) requiring grad, one independent copy per replicate (per data point)."""
    kw = {}
    for f in fields(obj):
        v = getattr(obj, f.name)
        if isinstance(v, Tensor):
            v = v.detach().expand(n, *v.shape).clone().requires_grad_(True)
        kw[f.name] = v
    return replace(obj, **kw)


def leaves(obj) -> dict[str, Tensor]:
    """The tensor fields of a LinearGaussian/GaussianEncoder, by name."""
    return {f.name: getattr(obj, f.name) for f in fields(obj) if isinstance(getattr(obj, f.name), Tensor)}


def log_weights(
    model: LinearGaussian,
    enc: GaussianEncoder,
    x: Tensor,
    K: int,
    S: int = 1,
    detach_q: bool = False,
) -> tuple[Tensor, Tensor]:
    """Reparameterised z ~ q of shape (S, K, B, D) and lw = log p(x, z) - log q(z | x), (S, K, B).

    With ``detach_q`` the encoder's parameters are cut from log q (what DReG requires): the
    encoder then only receives gradient through z.
    """
    q = enc(x)
    z = q.rsample((S, K))
    lq = (q.detach() if detach_q else q).log_prob(z).sum(-1)
    return model.log_joint(x, z) - lq, z


def exact_posterior_encoder(model: LinearGaussian) -> GaussianEncoder:
    """The encoder equal to p(z | x); only exact when A^T A is diagonal (Sigma diagonal)."""
    prec = model.posterior_precision()
    cov = torch.linalg.inv(prec)
    off = cov - torch.diag_embed(torch.diagonal(cov))
    if off.abs().max() > 1e-12:
        raise ValueError("posterior is not diagonal: choose A with orthogonal columns")
    C = cov @ model.A.T / model.sigma**2
    return GaussianEncoder(C=C, c=-C @ model.b, log_s=0.5 * torch.diagonal(cov).log())


# ---- closed forms for a diagonal Gaussian q -----------------------------------------------
def exact_elbo(model: LinearGaussian, enc: GaussianEncoder, x: Tensor) -> Tensor:
    """E_q[log p(z) + log p(x | z) - log q(z)] in closed form (differentiable), shape (B,)."""
    q = enc(x)
    m, s2 = q.loc, q.scale**2
    D, P, sig2 = model.D, model.P, model.sigma**2
    e_log_prior = -0.5 * D * LOG_2PI - 0.5 * (m.square() + s2).sum(-1)
    resid = x - _matvec(model.A, m) - model.b
    trace = (model.A.square() * s2.unsqueeze(-2)).sum((-1, -2))  # tr(A diag(s2) A^T)
    e_log_lik = -0.5 * P * math.log(2 * math.pi * sig2) - 0.5 * (resid.square().sum(-1) + trace) / sig2
    entropy = 0.5 * (D * (1 + LOG_2PI) + s2.log().sum(-1))
    return e_log_prior + e_log_lik + entropy


def exact_elbo_via_kl(model: LinearGaussian, enc: GaussianEncoder, x: Tensor) -> Tensor:
    """log p(x) - KL(q || p(z | x)), shape (B,)."""
    q = enc(x)
    m, s2 = q.loc, q.scale**2
    mu, cov = model.posterior(x)
    prec = model.posterior_precision()
    d = m - mu
    kl = 0.5 * (
        (torch.diagonal(prec, dim1=-2, dim2=-1) * s2).sum(-1)
        + (d * _matvec(prec, d)).sum(-1)
        - model.D
        + torch.logdet(cov)
        - s2.log().sum(-1)
    )
    return model.log_marginal(x) - kl


def exact_log_moment(model: LinearGaussian, enc: GaussianEncoder, x: Tensor, n: float) -> Tensor:
    """log E_q[w^n], w = p(x, z) / q(z | x), in closed form, shape (B,).

    log int N(z; mu, Sigma)^n N(z; m, S)^(1-n) dz with the quadratic form
    -1/2 z^T Lam z + eta^T z + c0, Lam = n Sigma^-1 + (1-n) S^-1, eta = n Sigma^-1 mu +
    (1-n) S^-1 m, integrates to c0 + D/2 log 2pi - 1/2 log|Lam| + 1/2 eta^T Lam^-1 eta.
    Raises ValueError if Lam is not positive definite (the moment is infinite).
    """
    q = enc(x)
    m, s2 = q.loc, q.scale**2
    mu, _ = model.posterior(x)
    P_inv = model.posterior_precision()  # Sigma^-1
    S_inv = torch.diag_embed(1.0 / s2)  # (B, D, D)
    D = model.D
    lam = n * P_inv + (1 - n) * S_inv
    chol, info = torch.linalg.cholesky_ex(lam)
    if (info != 0).any():
        raise ValueError(f"E_q[w^{n}] is infinite: n Sigma^-1 + (1-n) S^-1 is not positive definite")
    eta = n * _matvec(P_inv, mu) + (1 - n) * m / s2
    c0 = (
        -0.5 * n * (D * LOG_2PI - torch.logdet(P_inv))
        - 0.5 * (1 - n) * (D * LOG_2PI + s2.log().sum(-1))
        - 0.5 * n * (mu * _matvec(P_inv, mu)).sum(-1)
        - 0.5 * (1 - n) * (m.square() / s2).sum(-1)
    )
    lam_inv_eta = torch.cholesky_solve(eta.unsqueeze(-1), chol).squeeze(-1)
    log_det_lam = 2 * torch.diagonal(chol, dim1=-2, dim2=-1).log().sum(-1)
    integral = c0 + 0.5 * D * LOG_2PI - 0.5 * log_det_lam + 0.5 * (eta * lam_inv_eta).sum(-1)
    return n * model.log_marginal(x) + integral


def exact_cubo(model: LinearGaussian, enc: GaussianEncoder, x: Tensor, n: float = 2.0) -> Tensor:
    """CUBO_n = (1/n) log E_q[w^n], shape (B,)."""
    return exact_log_moment(model, enc, x, n) / n


# ---- a fixed, hand-picked instance ------------------------------------------------------
def default_problem() -> tuple[LinearGaussian, GaussianEncoder, Tensor]:
    """D = 2, P = 3 model, an encoder that is deliberately *not* the posterior (shifted mean map,
    over-dispersed and mis-shaped diagonal scales, no correlation), and B = 3 data points."""
    A = torch.tensor([[1.0, -0.5], [0.3, 0.8], [-0.7, 0.4]], dtype=DTYPE)
    b = torch.tensor([0.2, -0.1, 0.5], dtype=DTYPE)
    model = LinearGaussian(A=A, b=b, sigma=0.7)
    exact = torch.linalg.inv(model.posterior_precision()) @ A.T / model.sigma**2  # exact mean map
    C = exact + torch.tensor([[0.15, -0.10, 0.05], [-0.05, 0.20, 0.10]], dtype=DTYPE)
    c = -exact @ b + torch.tensor([0.25, -0.20], dtype=DTYPE)
    post_sd = torch.diagonal(torch.linalg.inv(model.posterior_precision())).sqrt()
    log_s = (post_sd * torch.tensor([1.35, 1.6], dtype=DTYPE)).log()
    enc = GaussianEncoder(C=C, c=c, log_s=log_s)
    x = torch.tensor([[0.9, 0.4, -0.3], [-1.2, 0.6, 1.1], [0.1, -0.8, 0.2]], dtype=DTYPE)
    return model, enc, x


# Networks that plug the linear-Gaussian model into mmdgm's models (decoders/encoders).
class LinearDecoder(nn.Module):
    def __init__(self, A, b):
        super().__init__()
        self.A, self.b = nn.Parameter(A), nn.Parameter(b)

    def forward(self, z):
        return z @ self.A.T + self.b


class ExactUnimodalPosterior(nn.Module):
    """Diagonal Gaussian with p(z|x_m)'s mean and marginal variances (loc, log-variance):
    exactly p(z|x_m) when A_m has orthogonal columns."""

    def __init__(self, A, b, sigma):
        super().__init__()
        prec = torch.eye(A.shape[1]) + A.T @ A / sigma**2
        self.cov = torch.linalg.inv(prec)
        self.A, self.b, self.sigma = A, b, sigma

    def forward(self, x):
        loc = (x - self.b) @ self.A @ self.cov.T / self.sigma**2
        logvar = self.cov.diagonal().log().expand_as(loc)
        return loc, logvar
