"""Exponential moving average of chosen weights (Yazici et al. 2019; MMALI §4).

After training step t (1-based), for every averaged parameter w:
    ema = w                                   if t <= start_step,
    ema = decay * ema + (1 - decay) * w       otherwise.
The averaged weights are what evaluation, sampling and the saved weights (model.pt,
snapshots) use; training continues on the raw weights.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn


class EMA:
    """The moving average of the named parameters `names` of `model`."""

    def __init__(self, model: nn.Module, names: list[str], decay: float, start_step: int) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        params = dict(model.named_parameters())
        unknown = [n for n in names if n not in params]
        if unknown:
            raise ValueError(f"EMA of parameters the model does not have: {unknown[:5]}")
        self.model = model
        self.decay = decay
        self.start_step = start_step
        self.params = {n: params[n] for n in names}
        self.shadow = {n: p.detach().clone() for n, p in self.params.items()}

    @torch.no_grad()
    def update(self, step: int) -> None:
        """Fold in the weights after training step `step` (formula in the module docstring)."""
        for name, p in self.params.items():
            if step <= self.start_step:
                self.shadow[name].copy_(p)
            else:
                self.shadow[name].lerp_(p.detach(), 1.0 - self.decay)

    def state_dict(self) -> dict[str, Tensor]:
        return {n: t.clone() for n, t in self.shadow.items()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        if state.keys() != self.shadow.keys():
            missing, extra = sorted(self.shadow.keys() - state.keys()), sorted(state.keys() - self.shadow.keys())
            raise KeyError(f"EMA state does not fit: missing {missing[:5]}, unexpected {extra[:5]}")
        for n, t in state.items():
            if t.shape != self.shadow[n].shape:
                raise RuntimeError(f"EMA state of {n} has shape {tuple(t.shape)}, the model's is {tuple(self.shadow[n].shape)}")
            self.shadow[n].copy_(t)

    def averaged_state_dict(self) -> dict[str, Tensor]:
        """The model's state dict with the averaged weights in place of the raw ones."""
        state = self.model.state_dict()
        return {k: (self.shadow[k].clone() if k in self.shadow else v) for k, v in state.items()}

    @contextmanager
    def applied(self) -> Iterator[None]:
        """Run the model with the averaged weights; the raw ones are restored exactly after."""
        raw = {n: p.detach().clone() for n, p in self.params.items()}
        with torch.no_grad():
            for n, p in self.params.items():
                p.copy_(self.shadow[n])
        try:
            yield
        finally:
            with torch.no_grad():
                for n, p in self.params.items():
                    p.copy_(raw[n])
