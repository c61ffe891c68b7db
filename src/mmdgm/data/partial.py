"""Partial-observation and data-efficiency protocols for paired datasets.

- `observe_fraction`: MEME's protocol (Joy et al., ICLR 2022, §4.1): a fraction f of the
  rows keeps every modality, the others keep one. Schemes name modalities, not papers:
  "missing:<m>" removes <m> from the unpaired rows (MEME_MNIST is "missing:svhn" on
  MNIST-SVHN), "only:<m>" keeps only <m> there, and "alternate" cycles through the
  modalities, so the unpaired rows are split evenly between them (MEME_SPLIT).
- `restrict_each` (`restrict_sources` for two sets): the data-efficiency protocol of Shi
  et al. (ICLR 2021, §4.4): keep n% of each unimodal set (per class) *before* pairing, so
  every pair is still related.
- `Protocol`: both as options of the paired builders; only the train split is affected.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Callable, Sequence

import torch
from torch import Tensor

from mmdgm.data.base import MultimodalDataset
from mmdgm.registry import nearest
from mmdgm.seeds import derived_seed

# name -> (argument, modality names, number of unpaired rows) -> (M, n) presence of each modality
SchemeFn = Callable[[str, list[str], int], Tensor]


def _missing(arg: str, names: list[str], n: int) -> Tensor:
    return torch.tensor([name != arg for name in names])[:, None].expand(-1, n)


def _only(arg: str, names: list[str], n: int) -> Tensor:
    return torch.tensor([name == arg for name in names])[:, None].expand(-1, n)


def _alternate(arg: str, names: list[str], n: int) -> Tensor:
    return torch.arange(len(names))[:, None] == (torch.arange(n) % len(names))[None, :]


SCHEMES: dict[str, tuple[SchemeFn, bool]] = {  # name -> (presence fn, takes a modality)
    "missing": (_missing, True),
    "only": (_only, True),
    "alternate": (_alternate, False),
}


def parse_scheme(scheme: str, names: list[str]) -> tuple[SchemeFn, str]:
    """The presence function and modality argument of `scheme` ("alternate", "missing:<m>",
    "only:<m>"), checked against the dataset's modality `names`."""
    kind, _, arg = scheme.partition(":")
    if kind not in SCHEMES:
        raise ValueError(
            f"unknown unpaired_scheme {scheme!r}{nearest(kind, list(SCHEMES))}; "
            f"use 'alternate', 'missing:<modality>' or 'only:<modality>'"
        )
    fn, takes_modality = SCHEMES[kind]
    if takes_modality and arg not in names:
        raise ValueError(
            f"unpaired_scheme {scheme!r} names modality {arg!r}{nearest(arg, names)}; "
            f"the dataset has {names}"
        )
    if not takes_modality and arg:
        raise ValueError(f"unpaired_scheme {kind!r} takes no modality, got {scheme!r}")
    return fn, arg


def observe_fraction(ds: MultimodalDataset, f: float, scheme: str = "alternate", seed: int = 0) -> MultimodalDataset:
    """A copy of `ds` (same sources, rows and labels) in which round(f * N) rows, chosen at
    random with `seed`, keep every modality and the others are masked by `scheme`."""
    if not 0.0 <= f <= 1.0:
        raise ValueError(f"observed_fraction must lie in [0, 1], got {f}")
    names = list(ds.sources)
    fn, arg = parse_scheme(scheme, names)
    if not torch.stack([ds.mask[k] for k in names]).all():
        raise ValueError(f"dataset {ds.name!r} is already partially observed; observe_fraction needs complete rows")
    n = len(ds)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    unpaired = order[round(f * n):]
    present = fn(arg, names, len(unpaired))
    mask = {}
    for i, k in enumerate(names):
        m = torch.ones(n, dtype=torch.bool)
        m[unpaired] = present[i]
        mask[k] = m
    return ds.like(ds.labels, ds.index, mask)


def class_fraction(labels: Tensor, fraction: float, generator: torch.Generator) -> Tensor:
    """Sorted rows keeping round(fraction * n_c) random examples of each class c."""
    keep = []
    for c in torch.unique(labels).tolist():
        rows = torch.nonzero(labels == c).flatten()
        keep.append(rows[torch.randperm(len(rows), generator=generator)[: round(fraction * len(rows))]])
    return torch.cat(keep).sort().values


def restrict_each(labels: Sequence[Tensor], fraction: float, seed: int = 0) -> list[Tensor]:
    """Rows of each unimodal set allowed into the pairing: `fraction` of each class, seeded."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"unimodal_fraction must lie in (0, 1], got {fraction}")
    g = torch.Generator().manual_seed(seed)
    return [class_fraction(y.long(), fraction, g) for y in labels]


def restrict_sources(labels_a: Tensor, labels_b: Tensor, fraction: float, seed: int = 0) -> tuple[Tensor, Tensor]:
    """`restrict_each` of two sets."""
    rows_a, rows_b = restrict_each([labels_a, labels_b], fraction, seed)
    return rows_a, rows_b


@dataclass(frozen=True)
class Protocol:
    """Options of the paired builders; only the train split is restricted or masked, with
    seeds derived from the dataset seed (`derived_seed`)."""

    observed_fraction: float = 1.0
    unpaired_scheme: str = "alternate"
    unimodal_fraction: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.observed_fraction <= 1.0:
            raise ValueError(f"observed_fraction must lie in [0, 1], got {self.observed_fraction}")
        if not 0.0 < self.unimodal_fraction <= 1.0:
            raise ValueError(f"unimodal_fraction must lie in (0, 1], got {self.unimodal_fraction}")

    def check(self, names: list[str]) -> None:
        """Fail before any pairing if the scheme does not fit the modalities."""
        parse_scheme(self.unpaired_scheme, names)

    def applied(self, split: str) -> "Protocol":
        """What this split gets: the options on train, complete data on test (and val)."""
        return self if split == "train" else Protocol(unpaired_scheme=self.unpaired_scheme)

    def sources(self, split: str, labels: Sequence[Tensor], seed: int) -> list[Tensor] | None:
        """Allowed rows of each unimodal set (labelled `labels`), or None when the whole sets are used."""
        fraction = self.applied(split).unimodal_fraction
        if fraction == 1.0:
            return None
        return restrict_each(labels, fraction, derived_seed(seed, "unimodal_fraction"))

    def observe(self, split: str, ds: MultimodalDataset, seed: int) -> MultimodalDataset:
        """`ds` masked for `split`, with the applied options recorded as `ds.protocol`."""
        p = self.applied(split)
        out = ds
        if p.observed_fraction < 1.0:
            out = observe_fraction(ds, p.observed_fraction, p.unpaired_scheme, derived_seed(seed, "observed_fraction"))
        out.protocol = asdict(p)
        return out


COMPLETE = Protocol()
PROTOCOL_OPTIONS = frozenset(f.name for f in fields(Protocol))


def full_data_options(options: dict | None) -> dict:
    """Dataset `options` without the observation protocol's: the options of the full data
    that a restricted or masked run was drawn from."""
    return {k: v for k, v in (options or {}).items() if k not in PROTOCOL_OPTIONS}
