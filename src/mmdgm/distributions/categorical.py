"""Factorised categorical likelihood over sequences of symbols (text modalities).

One item is an (L, V) array: L positions, each a one-hot vector over a V-symbol
alphabet. The decoder outputs unnormalised logits of that shape; the distribution
normalises them with a log-softmax over the last (symbol) dimension, so
p(x | z) = prod_l softmax(logits_l)[x_l] (Sutter et al. 2020's text likelihood, a
one-hot categorical per character). Data may be one-hot floats (..., L, V) or symbol
indices (..., L).

`categorical-padded` is the same likelihood for word-level captions padded to a fixed
length (`mmdgm.data.vocabulary`): positions holding the padding symbol (index 0)
contribute exactly 0 to log p(x | z), and so nothing to any gradient.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mmdgm.distributions.base import DISTRIBUTIONS, Distribution


@DISTRIBUTIONS.register("categorical")
class Categorical(Distribution):
    """Independent categoricals over the last dimension of `loc`, the logits (scale unused).

    `log_prob(x)` of one-hot x is elementwise, x * log softmax(logits), shape (..., L, V),
    so `log_prob_sum(x, 2)` is sum_l log p(x_l) as for every other likelihood; of index x
    (..., L) it is log p(x_l), shape (..., L), and `log_prob_sum` then sums one dimension
    fewer (the symbol dimension is not in the data). `mean` is the probabilities.
    """

    has_rsample = False

    def __init__(self, loc: Tensor, scale: Tensor | float | None = None) -> None:
        super().__init__(loc, 0.0)

    @property
    def log_probs(self) -> Tensor:
        """Normalised log-probabilities (..., L, V)."""
        return torch.log_softmax(self.loc, dim=-1)

    @property
    def mean(self) -> Tensor:
        return torch.softmax(self.loc, dim=-1)

    def log_prob(self, x: Tensor) -> Tensor:
        if torch.is_floating_point(x):
            if x.shape[-1] != self.loc.shape[-1]:
                raise ValueError(
                    f"categorical: one-hot data has {x.shape[-1]} symbols, the logits {self.loc.shape[-1]}"
                )
            return x * self.log_probs
        v = self.loc.shape[-1]
        if x.numel() and (int(x.min()) < 0 or int(x.max()) >= v):
            raise ValueError(f"categorical: symbol indices must lie in 0..{v - 1}, got {int(x.min())}..{int(x.max())}")
        lp = self.log_probs
        index = x.long().expand(lp.shape[:-1])
        return lp.gather(-1, index.unsqueeze(-1)).squeeze(-1)

    def log_prob_sum(self, x: Tensor, event_dims: int) -> Tensor:
        """log p(x) summed over the item's (L, V) = last `event_dims` dimensions of the
        one-hot layout; index data has no symbol dimension, so one fewer is summed."""
        lp = self.log_prob(x)
        dims = event_dims if torch.is_floating_point(x) else event_dims - 1
        return lp.flatten(-dims).sum(-1) if dims > 0 else lp

    def rsample(self, sample_shape: tuple[int, ...] = ()) -> Tensor:
        raise NotImplementedError("a categorical has no reparameterised sample")

    def sample(self, sample_shape: tuple[int, ...] = ()) -> Tensor:
        """One-hot draws of shape sample_shape + loc.shape."""
        with torch.no_grad():
            probs = self.mean.expand(torch.Size(sample_shape) + self.loc.shape)
            flat = probs.reshape(-1, probs.shape[-1])
            index = torch.multinomial(flat, 1).view(probs.shape[:-1])
            return torch.nn.functional.one_hot(index, probs.shape[-1]).to(probs.dtype)


@DISTRIBUTIONS.register("categorical-padded")
class PaddedCategorical(Categorical):
    """`Categorical` whose log_prob is 0 wherever the data hold the padding symbol `pad` (0):
    log p(x | z) = sum_{l : x_l != pad} log softmax(logits_l)[x_l]."""

    pad = 0

    def log_prob(self, x: Tensor) -> Tensor:
        lp = super().log_prob(x)
        if torch.is_floating_point(x):
            padding = (x[..., self.pad] == 1).unsqueeze(-1)
        else:
            padding = (x == self.pad).expand(lp.shape)
        return torch.where(padding, torch.zeros((), dtype=lp.dtype, device=lp.device), lp)
