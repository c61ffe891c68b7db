"""Distributions over latents and modalities, and scale parameterisations."""

from mmdgm.distributions.base import (
    DISTRIBUTIONS,
    SCALES,
    Bernoulli,
    Distribution,
    Laplace,
    Normal,
)

__all__ = ["DISTRIBUTIONS", "SCALES", "Bernoulli", "Distribution", "Laplace", "Normal"]

from mmdgm.distributions.categorical import Categorical  # noqa: E402  (registers "categorical")
from mmdgm.distributions.mixture import MixtureOfExperts  # noqa: E402

__all__ += ["Categorical", "MixtureOfExperts"]
