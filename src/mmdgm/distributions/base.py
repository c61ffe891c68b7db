"""Light location-scale distributions with reparameterised sampling.

`scale` may be a tensor broadcastable to `loc` or a Python float (a fixed likelihood
scale, which lets `log_prob` skip a full-size division and logarithm).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from mmdgm.registry import Registry


class AbsDiffSum(torch.autograd.Function):
    """sum over the last `dims` dimensions of |x - loc| (loc broadcast against x).

    The backward pass computes sign(x - loc) once and scales it in place: two passes over
    the (K, B, *shape) tensor instead of the four that autograd's sub/abs/sum chain takes.
    """

    @staticmethod
    def forward(ctx, loc: Tensor, x: Tensor, dims: int) -> Tensor:
        diff = x - loc
        ctx.dims = dims
        ctx.x_shape = x.shape
        summed = tuple(range(-dims, 0))  # no flatten: it copies channels-last outputs
        if not any(ctx.needs_input_grad):
            return diff.abs_().sum(summed)
        ctx.save_for_backward(diff)
        return diff.abs().sum(summed)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (diff,) = ctx.saved_tensors
        g = grad.reshape(grad.shape + (1,) * ctx.dims)
        grad_loc = torch.sign(diff).mul_(-g) if ctx.needs_input_grad[0] or ctx.needs_input_grad[1] else None
        grad_x = None
        if ctx.needs_input_grad[1]:
            grad_x = -grad_loc.sum_to_size(ctx.x_shape)
        return (grad_loc if ctx.needs_input_grad[0] else None), grad_x, None


class Distribution:
    """Factorised distribution with location `loc` and scale `scale`."""

    has_rsample = True

    def __init__(self, loc: Tensor, scale: Tensor | float) -> None:
        self.loc = loc
        self.scale = scale

    @property
    def mean(self) -> Tensor:
        return self.loc

    def _scale_tensor(self) -> Tensor:
        if isinstance(self.scale, Tensor):
            return self.scale.expand_as(self.loc)
        return torch.full_like(self.loc, float(self.scale))

    def _noise(self, shape: torch.Size) -> Tensor:
        raise NotImplementedError

    def rsample(self, sample_shape: tuple[int, ...] = ()) -> Tensor:
        """Reparameterised sample of shape sample_shape + loc.shape."""
        shape = torch.Size(sample_shape) + self.loc.shape
        return self.loc + self._scale_tensor() * self._noise(shape)

    def sample(self, sample_shape: tuple[int, ...] = ()) -> Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)

    def log_prob(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def log_prob_sum(self, x: Tensor, event_dims: int) -> Tensor:
        """log_prob summed over the last `event_dims` dimensions."""
        return self.log_prob(x).flatten(-event_dims).sum(-1)

    def detach(self) -> "Distribution":
        """The same distribution with parameters cut from the graph (used by DReG)."""
        scale = self.scale.detach() if isinstance(self.scale, Tensor) else self.scale
        return type(self)(self.loc.detach(), scale)

    def select(self, rows: Tensor) -> "Distribution":
        """The distribution of the given rows (indices into the first dimension of `loc`)."""
        scale = self.scale[rows] if isinstance(self.scale, Tensor) else self.scale
        return type(self)(self.loc[rows], scale)

    def expand_dims(self, dims: int) -> "Distribution":
        """View with `dims` new leading singleton dimensions (for broadcasting)."""
        idx = (None,) * dims
        scale = self.scale[idx] if isinstance(self.scale, Tensor) else self.scale
        return type(self)(self.loc[idx], scale)


class Normal(Distribution):
    """Diagonal Gaussian N(loc, scale^2)."""

    def _noise(self, shape: torch.Size) -> Tensor:
        return torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device)

    def log_prob(self, x: Tensor) -> Tensor:
        if isinstance(self.scale, Tensor):
            return -0.5 * ((x - self.loc) / self.scale) ** 2 - self.scale.log() - 0.5 * math.log(2 * math.pi)
        s = float(self.scale)
        return (x - self.loc).square().mul(-0.5 / s**2) - (math.log(s) + 0.5 * math.log(2 * math.pi))

    def kl(self, other: "Normal") -> Tensor:
        """Analytic KL(self || other), elementwise."""
        var_ratio = (self._scale_tensor() / other._scale_tensor()) ** 2
        t = ((self.loc - other.loc) / other._scale_tensor()) ** 2
        return 0.5 * (var_ratio + t - 1 - var_ratio.log())


class Laplace(Distribution):
    """Factorised Laplace(loc, scale)."""

    def _noise(self, shape: torch.Size) -> Tensor:
        u = torch.rand(shape, dtype=self.loc.dtype, device=self.loc.device)
        eps = torch.finfo(self.loc.dtype).eps
        u = u.mul(2).sub(1).clamp(-1 + eps, 1 - eps)
        return -u.sign() * torch.log1p(-u.abs())

    def log_prob(self, x: Tensor) -> Tensor:
        if isinstance(self.scale, Tensor):
            return -(x - self.loc).abs() / self.scale - torch.log(2 * self.scale)
        s = float(self.scale)
        return (x - self.loc).abs().mul(-1.0 / s) - math.log(2 * s)

    def log_prob_sum(self, x: Tensor, event_dims: int) -> Tensor:
        if isinstance(self.scale, Tensor):
            return super().log_prob_sum(x, event_dims)
        s = float(self.scale)
        n = math.prod(self.loc.shape[-event_dims:])
        return AbsDiffSum.apply(self.loc, x, event_dims).mul(-1.0 / s) - n * math.log(2 * s)

    def kl(self, other: "Laplace") -> Tensor:
        """Analytic KL(self || other), elementwise."""
        b1, b2 = self._scale_tensor(), other._scale_tensor()
        d = (self.loc - other.loc).abs()
        return torch.log(b2 / b1) + d / b2 + (b1 / b2) * torch.exp(-d / b1) - 1


class Bernoulli(Distribution):
    """Factorised Bernoulli with probabilities `loc` (scale unused); for binary data."""

    has_rsample = False

    def __init__(self, loc: Tensor, scale: Tensor | float | None = None) -> None:
        super().__init__(loc, 0.0)

    def log_prob(self, x: Tensor) -> Tensor:
        p = self.loc.clamp(1e-6, 1 - 1e-6)
        return x * p.log() + (1 - x) * torch.log1p(-p)

    def rsample(self, sample_shape: tuple[int, ...] = ()) -> Tensor:
        raise NotImplementedError("Bernoulli has no reparameterised sample")

    def sample(self, sample_shape: tuple[int, ...] = ()) -> Tensor:
        return torch.bernoulli(self.loc.expand(torch.Size(sample_shape) + self.loc.shape))


DISTRIBUTIONS: Registry[type[Distribution]] = Registry("distribution")
for _name, _cls in (("normal", Normal), ("laplace", Laplace), ("bernoulli", Bernoulli)):
    DISTRIBUTIONS.register(_name)(_cls)


SCALES: Registry[Callable[[Tensor], Tensor]] = Registry("scale parameterisation")


@SCALES.register("softplus")
def softplus_scale(raw: Tensor, eta: float = 1e-6) -> Tensor:
    """scale = softplus(raw) + eta (MMVAE's CUB models)."""
    return torch.nn.functional.softplus(raw) + eta


@SCALES.register("softmax")
def softmax_scale(raw: Tensor, eta: float = 1e-6) -> Tensor:
    """scale = softmax(raw) * D + eta: scales sum to D (MMVAE's MNIST-SVHN models)."""
    return torch.softmax(raw, dim=-1) * raw.shape[-1] + eta


LOG_VARIANCE_LIMIT = 80.0


@SCALES.register("exp")
def exp_scale(raw: Tensor, eta: float = 0.0) -> Tensor:
    """scale = exp(raw / 2) + eta, i.e. raw is a log-variance, clamped to +-80 so that the
    variance and the precision stay finite normal float32 numbers. Without the clamp an
    expert that carries no information can drift past exp's range (cI-MVAE on captions:
    log-variance 194 by step 26) and its inf scale turns the product of experts' gradient
    into NaN (0 * inf); within the range nothing changes."""
    return torch.exp(0.5 * raw.clamp(-LOG_VARIANCE_LIMIT, LOG_VARIANCE_LIMIT)) + eta
