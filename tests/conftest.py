"""Shared fixtures: an isolated data directory and a tiny registered test dataset."""

from __future__ import annotations

import pytest
import torch

from mmdgm.data import DATASETS, MultimodalDataset


@pytest.fixture(autouse=True, scope="session")
def isolated_data_dir(tmp_path_factory):
    """Procedural datasets cache into a per-session directory, never the user's."""
    mp = pytest.MonkeyPatch()
    mp.setenv("MMDGM_DATA_DIR", str(tmp_path_factory.mktemp("data")))
    yield
    mp.undo()


def tiny_pairs(split: str, root, seed: int = 0, n: int = 96) -> MultimodalDataset:
    """Two small image modalities whose pixels depend on a shared class (fast to train on)."""
    g = torch.Generator().manual_seed(seed + (0 if split == "train" else 1))
    labels = torch.randint(0, 10, (n,), generator=g)
    base = torch.rand(10, 1, 28, 28, generator=g)
    a = (base[labels] * 200 + torch.rand(n, 1, 28, 28, generator=g) * 55).to(torch.uint8)
    b = (base[labels, :, 2:26, 2:26].mean(1, keepdim=True).repeat(1, 3, 1, 1)[..., :32, :32] * 255).to(torch.uint8)
    b = torch.nn.functional.pad(b, (4, 4, 4, 4))
    return MultimodalDataset({"a": a, "b": b}, labels, name="tiny-pairs")


if "tiny-pairs" not in DATASETS:
    DATASETS.register("tiny-pairs")(tiny_pairs)


TINY_CONFIG = [
    "data.name=tiny-pairs",
    "model.modalities={a: {encoder: mnist-mlp, decoder: mnist-mlp, net_options: {hidden: 32}}, "
    "b: {encoder: svhn-conv, decoder: svhn-conv, net_options: {width: 4}}}",
    "model.options={K: 3, objective: dreg}",
    "model.latent_dim=4",
    "train.epochs=2",
    "train.batch_size=32",
    "train.log_every=1",
    "train.eval_batches=1",
    "train.grid_size=4",
    "train.final_metrics=[]",
]
