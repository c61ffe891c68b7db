"""In-memory multimodal datasets that hand out whole batches by row index.

Sources are stored once (uint8 images or float vectors); a pairing is an index per
modality into its source, so a million MNIST-SVHN pairs cost a few index arrays, not a
million copies of each image.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

import torch
from torch import Tensor

from mmdgm.batch import Batch

if TYPE_CHECKING:
    from mmdgm.data.vocabulary import Vocabulary


class MultimodalDataset:
    """Rows of paired (or partly paired) modalities.

    Args:
        sources: name -> tensor (N_m, *shape); uint8 tensors are scaled to [0, 1] floats.
        labels: (N,) integer class of each row.
        index: name -> (N,) long tensor of rows into the source; identity when omitted.
        mask: name -> (N,) bool presence; all True when omitted.
        name: the dataset's registered name (for logs and run directories).
        vocabularies: name -> `Vocabulary` of each caption modality, whose source holds
            token indices (N_m, L) int64; its shape is (L, V) (V = vocabulary size), as a
            one-hot caption's, and its batches are the int64 indices (B, L).
        attributes: attribute -> value names, when each row's label is the mixed-radix index
            of its attribute values (first attribute most significant; `attribute_values`).
    """

    def __init__(
        self,
        sources: Mapping[str, Tensor],
        labels: Tensor,
        index: Mapping[str, Tensor] | None = None,
        mask: Mapping[str, Tensor] | None = None,
        name: str = "",
        vocabularies: Mapping[str, "Vocabulary"] | None = None,
        attributes: Mapping[str, tuple[str, ...]] | None = None,
    ) -> None:
        self.sources = dict(sources)
        self.vocabularies = dict(vocabularies or {})
        self.attributes = None if attributes is None else {k: tuple(v) for k, v in attributes.items()}
        self.labels = labels.long()
        n = self.labels.shape[0]
        self.index = {
            k: (index[k].long() if index and k in index else torch.arange(v.shape[0]))
            for k, v in self.sources.items()
        }
        self.mask = {
            k: (mask[k].bool() if mask and k in mask else torch.ones(n, dtype=torch.bool))
            for k in self.sources
        }
        self.name = name
        for k in self.sources:
            if self.index[k].shape != (n,) or self.mask[k].shape != (n,):
                raise ValueError(
                    f"dataset {name!r}: index/mask of {k!r} must have shape ({n},), got "
                    f"{tuple(self.index[k].shape)} / {tuple(self.mask[k].shape)}"
                )
            if n and int(self.index[k].max()) >= self.sources[k].shape[0]:
                raise ValueError(f"dataset {name!r}: index of {k!r} points past its source")
        for k, vocab in self.vocabularies.items():
            src = self.sources.get(k)
            if src is None or src.dtype != torch.long or src.dim() != 2:
                raise ValueError(f"dataset {name!r}: caption modality {k!r} needs an int64 (N, L) source of token indices")
            if src.numel() and (int(src.min()) < 0 or int(src.max()) >= len(vocab)):
                raise ValueError(f"dataset {name!r}: tokens of {k!r} outside the vocabulary 0..{len(vocab) - 1}")
        if self.attributes is not None:
            radix = 1
            for values in self.attributes.values():
                radix *= len(values)
            if n and (int(self.labels.min()) < 0 or int(self.labels.max()) >= radix):
                raise ValueError(f"dataset {name!r}: labels must index the {radix} attribute combinations")

    def like(self, labels: Tensor, index: Mapping[str, Tensor], mask: Mapping[str, Tensor] | None) -> "MultimodalDataset":
        """A dataset over the same sources, vocabularies and attributes with other rows."""
        return MultimodalDataset(self.sources, labels, index, mask, self.name, self.vocabularies, self.attributes)

    def __len__(self) -> int:
        return self.labels.shape[0]

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {
            k: tuple(v.shape[1:]) + ((len(self.vocabularies[k]),) if k in self.vocabularies else ())
            for k, v in self.sources.items()
        }

    def batch(self, rows: Tensor) -> Batch:
        """The batch of the given row indices, as float tensors."""
        data = {}
        for k, src in self.sources.items():
            x = src[self.index[k][rows]]
            data[k] = x if k in self.vocabularies else x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
        return Batch(data, {k: m[rows] for k, m in self.mask.items()}, self.labels[rows])

    def repaired(self, rows: Mapping[str, Tensor]) -> "MultimodalDataset":
        """A dataset whose row i takes modality m from row rows[m][i] of this one (fully
        observed; labels of the first modality's row): re-paired or selected tuples."""
        names = list(self.sources)
        if sorted(rows) != sorted(names):
            raise ValueError(f"dataset {self.name!r}: re-pairing needs rows for exactly {names}, got {sorted(rows)}")
        sizes = {k: tuple(v.shape) for k, v in rows.items()}
        if len(set(sizes.values())) != 1 or len(next(iter(sizes.values()))) != 1:
            raise ValueError(f"dataset {self.name!r}: re-pairing rows must be 1-D of one length, got {sizes}")
        for k, r in rows.items():
            if len(r) and (int(r.min()) < 0 or int(r.max()) >= len(self)):
                raise ValueError(f"dataset {self.name!r}: re-pairing rows of {k!r} outside 0..{len(self) - 1}")
            if not bool(self.mask[k][r].all()):
                raise ValueError(f"dataset {self.name!r}: re-pairing takes {k!r} from rows where it is unobserved")
        return self.like(self.labels[rows[names[0]]], {k: self.index[k][rows[k]] for k in names}, None)

    def subset(self, rows: Tensor) -> "MultimodalDataset":
        """A dataset of the given rows sharing the same sources."""
        return self.like(
            self.labels[rows], {k: v[rows] for k, v in self.index.items()}, {k: v[rows] for k, v in self.mask.items()}
        )

    def attribute_values(self, labels: Tensor | None = None) -> Tensor:
        """(N, A) value index of each attribute of `labels` (default: the rows' labels)."""
        if self.attributes is None:
            raise ValueError(f"dataset {self.name!r} has no attributes")
        return attribute_digits(self.labels if labels is None else labels, [len(v) for v in self.attributes.values()])


def attribute_digits(labels: Tensor, sizes: list[int]) -> Tensor:
    """Mixed-radix digits (N, A) of `labels` with radices `sizes`, the first most significant."""
    digits = []
    rest = labels.long()
    for size in reversed(sizes):
        digits.append(rest % size)
        rest = rest // size
    return torch.stack(digits[::-1], -1)


def attribute_label(digits: Tensor, sizes: list[int]) -> Tensor:
    """The inverse of `attribute_digits`: labels (N,) of digits (N, A)."""
    label = torch.zeros(digits.shape[:-1], dtype=torch.long)
    for a, size in enumerate(sizes):
        label = label * size + digits[..., a].long()
    return label
