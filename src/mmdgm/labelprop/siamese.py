"""The siamese relatedness baseline of "Relating by contrasting" §4.5 (Fig. 8f): one
embedding network per modality trained with the contrastive pair loss of Hadsell et al.
(2006, eq. 4) on related tuples and on re-paired (unrelated) ones."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from tqdm import tqdm

from mmdgm.batch import Batch, repaired_batch
from mmdgm.config import ModelConfig
from mmdgm.data import MultimodalDataset
from mmdgm.models.contrastive import repaired_indices
from mmdgm.nets import ENCODERS


class Siamese(nn.Module):
    """Embeddings e_m = f_m(x_m) (the model config's encoder architectures, their location
    output); the distance of a tuple is the sum of its pairwise Euclidean distances."""

    def __init__(self, model: ModelConfig, shapes: dict[str, tuple[int, ...]], dim: int = 16) -> None:
        super().__init__()
        self.nets = nn.ModuleDict({
            n: ENCODERS.get(m.encoder)(shapes[n], dim, **{**m.net_options, **m.encoder_options})
            for n, m in model.modalities.items()
        })

    def distance(self, batch: Batch) -> Tensor:
        """(B,) sum over modality pairs of ||e_m - e_n||."""
        e = [self.nets[n](batch.data[n])[0] for n in self.nets]
        pairs = [(e[i] - e[j]).pow(2).sum(-1).add(1e-12).sqrt() for i in range(len(e)) for j in range(i + 1, len(e))]
        return torch.stack(pairs).sum(0)

    def score(self, batch: Batch) -> Tensor:
        """Relatedness score (higher: more related): the negative distance."""
        return -self.distance(batch)


def pair_loss(distance: Tensor, related: Tensor, margin: float) -> Tensor:
    """Hadsell et al. (2006) eq. 4: d^2 for related tuples, max(0, margin - d)^2 otherwise."""
    return torch.where(related, distance.pow(2), (margin - distance).clamp_min(0).pow(2)).mean()


def train_siamese(model: ModelConfig, related: MultimodalDataset, epochs: int = 5, batch_size: int = 128,
                  lr: float = 1e-3, margin: float = 1.0, seed: int = 0, progress: bool = True) -> Siamese:
    """Fit on the related tuples of `related`, each batch with as many re-paired negatives."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = Siamese(model, related.shapes)
        optimizer = torch.optim.Adam(net.parameters(), lr=lr)
        names = list(net.nets)
        for epoch in range(epochs):
            order = torch.randperm(len(related))
            for start in tqdm(range(0, len(related), batch_size), desc=f"siamese {epoch + 1}/{epochs}",
                              disable=not progress, unit="batch"):
                batch = related.batch(order[start:start + batch_size])
                if batch.size < len(names):
                    continue
                rows = torch.arange(batch.size)
                negatives = repaired_batch(batch, names, repaired_indices(rows, len(names), 1))
                d = torch.cat([net.distance(batch), net.distance(negatives)])
                truth = torch.cat([torch.ones(batch.size, dtype=torch.bool), torch.zeros(batch.size, dtype=torch.bool)])
                loss = pair_loss(d, truth, margin)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    return net.eval()
