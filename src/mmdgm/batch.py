"""Batches of partially observed multimodal data.

A batch maps modality names to tensors of shape (B, *shape) and to boolean presence
masks of shape (B,). Entries whose mask is False are placeholders that no loss may read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import torch
from torch import Tensor

from mmdgm.modalities import Modality
from mmdgm.registry import nearest


class BatchError(ValueError):
    """A batch does not satisfy the contract of the model it is given to."""


@dataclass
class Batch:
    """Named modalities, per-sample presence masks and optional labels."""

    data: dict[str, Tensor]
    mask: dict[str, Tensor] = field(default_factory=dict)
    labels: Tensor | None = None

    def __post_init__(self) -> None:
        if not self.data:
            raise BatchError("a batch needs at least one modality")
        sizes = {name: x.shape[0] if x.dim() else -1 for name, x in self.data.items()}
        if len(set(sizes.values())) != 1:
            raise BatchError(f"modalities disagree on the batch size: {sizes}")
        size = next(iter(sizes.values()))
        for name in self.data:
            if name not in self.mask:
                self.mask[name] = torch.ones(size, dtype=torch.bool, device=self.data[name].device)
        for name, m in self.mask.items():
            if name not in self.data:
                raise BatchError(f"mask given for modality {name!r} that has no data")
            if m.dtype != torch.bool or m.shape != (size,):
                raise BatchError(
                    f"mask of {name!r} must be a bool tensor of shape ({size},), "
                    f"got {m.dtype} {tuple(m.shape)}"
                )
        if self.labels is not None and self.labels.shape[:1] != (size,):
            raise BatchError(f"labels have shape {tuple(self.labels.shape)}, batch size is {size}")

    @property
    def size(self) -> int:
        return next(iter(self.data.values())).shape[0]

    @property
    def names(self) -> list[str]:
        return list(self.data)

    @property
    def complete(self) -> bool:
        return bool(torch.stack(list(self.mask.values())).all())

    def to(self, device: torch.device | str) -> "Batch":
        return Batch(
            {k: v.to(device, non_blocking=True) for k, v in self.data.items()},
            {k: v.to(device, non_blocking=True) for k, v in self.mask.items()},
            None if self.labels is None else self.labels.to(device, non_blocking=True),
        )

    def select(self, rows: Tensor) -> "Batch":
        """The sub-batch of the given row indices or boolean row mask."""
        return Batch(
            {k: v[rows] for k, v in self.data.items()},
            {k: v[rows] for k, v in self.mask.items()},
            None if self.labels is None else self.labels[rows],
        )

    def zero_missing(self) -> "Batch":
        """The same batch with unobserved entries set to zero, so that placeholders
        (even NaN ones) cannot leak into any computation or gradient."""
        data = {}
        for k, x in self.data.items():
            m = self.mask[k].view(-1, *([1] * (x.dim() - 1)))
            data[k] = torch.where(m, x, torch.zeros((), dtype=x.dtype, device=x.device))
        return Batch(data, dict(self.mask), self.labels)

    def validate(self, modalities: Mapping[str, Modality]) -> None:
        """Raise `BatchError` naming the problem if this batch does not fit `modalities`."""
        for name in self.data:
            if name not in modalities:
                raise BatchError(
                    f"unknown modality {name!r}{nearest(name, list(modalities))}; "
                    f"the model has {sorted(modalities)}"
                )
        missing = [name for name in modalities if name not in self.data]
        if missing:
            raise BatchError(
                f"batch lacks modalities {missing}; pass them with an all-False mask "
                "if they are unobserved"
            )
        for name, spec in modalities.items():
            x = self.data[name]
            if spec.kind == "text" and x.dtype == torch.long:
                check_tokens(name, x[self.mask[name]], spec.shape)
                continue
            if not torch.is_floating_point(x):
                raise BatchError(
                    f"modality {name!r} has dtype {x.dtype}; expected a float tensor"
                    + (" or int64 token indices" if spec.kind == "text" else "")
                )
            if tuple(x.shape[1:]) != spec.shape:
                raise BatchError(
                    f"modality {name!r} has sample shape {tuple(x.shape[1:])}; expected {spec.shape}"
                )
            present = x[self.mask[name]]
            if not torch.isfinite(present).all():
                raise BatchError(f"modality {name!r} contains NaN or inf in observed samples")
        observed = torch.stack([self.mask[n] for n in modalities]).any(0)
        if not observed.all():
            rows = torch.nonzero(~observed).flatten()[:5].tolist()
            raise BatchError(f"samples {rows} have every modality missing")


def check_tokens(name: str, x: Tensor, shape: tuple[int, ...]) -> None:
    """Raise `BatchError` unless observed token indices `x` (B, L) fit a text modality of
    shape (L, V): the same length, every index in 0..V-1."""
    if tuple(x.shape[1:]) != tuple(shape[:-1]):
        raise BatchError(f"modality {name!r} has token shape {tuple(x.shape[1:])}; expected {tuple(shape[:-1])}")
    if x.numel() and (int(x.min()) < 0 or int(x.max()) >= shape[-1]):
        raise BatchError(f"modality {name!r} has token indices {int(x.min())}..{int(x.max())} outside 0..{shape[-1] - 1}")


def repaired_batch(batch: Batch, names: list[str], J: Tensor) -> Batch:
    """The re-paired tuples of the index matrix J (M, R, n) as one fully observed batch of
    R * n rows: row r * n + i takes modality names[m] from row J[m, r, i] of `batch`."""
    return Batch({name: batch.data[name][J[m].reshape(-1)] for m, name in enumerate(names)})
