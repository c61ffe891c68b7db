"""In-memory multimodal datasets that hand out whole batches by row index.

Sources are stored once (uint8 images or float vectors); a pairing is an index per
modality into its source, so a million MNIST-SVHN pairs cost a few index arrays, not a
million copies of each image.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor

from mmdgm.batch import Batch


class MultimodalDataset:
    """Rows of paired (or partly paired) modalities.

    Args:
        sources: name -> tensor (N_m, *shape); uint8 tensors are scaled to [0, 1] floats.
        labels: (N,) integer class of each row.
        index: name -> (N,) long tensor of rows into the source; identity when omitted.
        mask: name -> (N,) bool presence; all True when omitted.
        name: the dataset's registered name (for logs and run directories).
    """

    def __init__(
        self,
        sources: Mapping[str, Tensor],
        labels: Tensor,
        index: Mapping[str, Tensor] | None = None,
        mask: Mapping[str, Tensor] | None = None,
        name: str = "",
    ) -> None:
        self.sources = dict(sources)
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

    def __len__(self) -> int:
        return self.labels.shape[0]

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: tuple(v.shape[1:]) for k, v in self.sources.items()}

    def batch(self, rows: Tensor) -> Batch:
        """The batch of the given row indices, as float tensors."""
        data = {}
        for k, src in self.sources.items():
            x = src[self.index[k][rows]]
            data[k] = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
        return Batch(data, {k: m[rows] for k, m in self.mask.items()}, self.labels[rows])

    def subset(self, rows: Tensor) -> "MultimodalDataset":
        """A dataset of the given rows sharing the same sources."""
        return MultimodalDataset(
            self.sources,
            self.labels[rows],
            {k: v[rows] for k, v in self.index.items()},
            {k: v[rows] for k, v in self.mask.items()},
            self.name,
        )
