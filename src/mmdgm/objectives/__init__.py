"""Objectives: estimators over log-weights and the losses built from them."""

from mmdgm.objectives.estimators import (
    ESTIMATORS,
    cubo,
    dreg,
    dreg_mixture,
    elbo,
    iwae,
    iwae_stl,
    log_mean_exp,
)
from mmdgm.objectives.mmd import gaussian_kernel, mmd

__all__ = ["ESTIMATORS", "cubo", "dreg", "dreg_mixture", "elbo", "iwae", "iwae_stl", "log_mean_exp", "gaussian_kernel", "mmd"]
