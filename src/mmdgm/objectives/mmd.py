"""Maximum mean discrepancy with a Gaussian kernel (Gretton et al. 2007; CMMD eq. 4).

Bandwidth. CMMD's paper names a Gaussian kernel without its width; the authors' code
(rogelioamancisidor/cmmd, `compute_kernel`, as in InfoVAE's code) uses
k(x, y) = exp(-mean_d (x_d - y_d)^2 / D) = exp(-||x - y||^2 / D^2) for D-dimensional
samples, i.e. `scale` h = D^2 below (2 sigma^2 = D^2). That is the default here.
"""

from __future__ import annotations

from torch import Tensor


def gaussian_kernel(x: Tensor, y: Tensor, scale: float) -> Tensor:
    """k(x_i, y_j) = exp(-||x_i - y_j||^2 / scale) for x (N, D), y (M, D); shape (N, M)."""
    sq = (x[:, None, :] - y[None, :, :]).square().sum(-1)
    return (-sq / scale).exp()


def mmd(x: Tensor, y: Tensor, scale: float | None = None) -> Tensor:
    """Squared MMD between the samples x (N, D) and y (M, D), the biased (V-statistic)
    estimate of CMMD eq. 4 that the authors' code uses:
        mean_ij k(x_i, x_j) + mean_ij k(y_i, y_j) - 2 mean_ij k(x_i, y_j),
    exactly 0 when the two samples are the same; Gaussian kernel of `scale` (default D^2,
    module docstring). Differentiable in x and y."""
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"mmd needs samples (N, D) and (M, D), got {tuple(x.shape)} and {tuple(y.shape)}")
    if len(x) == 0 or len(y) == 0:
        raise ValueError("mmd needs at least one sample on each side")
    scale = float(x.shape[1] ** 2) if scale is None else scale
    if scale <= 0:
        raise ValueError(f"the kernel scale must be > 0, got {scale}")
    return (
        gaussian_kernel(x, x, scale).mean()
        + gaussian_kernel(y, y, scale).mean()
        - 2 * gaussian_kernel(x, y, scale).mean()
    )
