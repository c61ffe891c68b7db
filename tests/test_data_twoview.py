"""Two-view MNIST: rotation, same-class partners, noise, seeding and the cache."""

from __future__ import annotations

import math

import pytest
import torch

from mmdgm.data import DATASETS
from mmdgm.data.twoview import make_views, rotate, same_class_partner

build = DATASETS.get("two-view-mnist")
OPTIONS = {"source": "synthetic", "n_train": 300, "n_test": 100}


def test_rotation_by_zero_and_by_a_quarter_turn():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 1, 28, 28, generator=g)
    torch.testing.assert_close(rotate(x, torch.zeros(3)), x, atol=1e-5, rtol=0)
    quarter = rotate(x, torch.full((3,), math.pi / 2))
    # a quarter turn of a square grid about its centre is a permutation of its pixels
    assert min(float((quarter - torch.rot90(x, k=k, dims=(2, 3))).abs().max()) for k in (1, 3)) < 1e-4
    assert float((rotate(x, torch.full((3,), math.pi / 4)) - x).abs().max()) > 0.1


def test_partners_share_the_class_and_are_other_images():
    labels = torch.tensor([0, 1, 0, 2, 1, 0, 3])
    partner = same_class_partner(labels, torch.Generator().manual_seed(0))
    assert torch.equal(labels[partner], labels)
    alone = torch.tensor([int((labels == c).sum()) == 1 for c in labels])
    assert (partner[~alone] != torch.arange(7)[~alone]).all() and (partner[alone] == torch.arange(7)[alone]).all()


def test_views_follow_the_recipe():
    g = torch.Generator().manual_seed(1)
    images = (torch.rand(50, 1, 28, 28, generator=g) * 255).to(torch.uint8)
    labels = torch.randint(0, 5, (50,), generator=g)
    v1, v2 = make_views(images, labels, seed=3)
    assert v1.dtype == v2.dtype == torch.uint8 and v1.shape == v2.shape == images.shape
    torch.manual_seed(0)
    again = make_views(images, labels, seed=3)
    assert torch.equal(v1, again[0]) and torch.equal(v2, again[1])
    # view 2 = round(255 * clip(partner + U(0, 1))) with the generator's draws in order
    gen = torch.Generator().manual_seed(3)
    angles = (torch.rand(50, generator=gen) * 2 - 1) * (math.pi / 4)
    partner = same_class_partner(labels, gen)
    noise = torch.rand(images.shape, generator=gen)
    assert torch.equal(v2, ((images[partner].float() / 255 + noise).clamp(0, 1) * 255).round().to(torch.uint8))
    assert torch.equal(labels[partner], labels) and angles.abs().max() <= math.pi / 4
    assert torch.equal(v1, (rotate(images.float() / 255, angles) * 255).round().to(torch.uint8))


def test_dataset_is_seeded_and_cached(tmp_path):
    train = build("train", tmp_path, **OPTIONS)
    assert train.shapes == {"view1": (1, 28, 28), "view2": (1, 28, 28)} and len(train) == 300
    cached = list((tmp_path / "cache" / "twoview").glob("*.npz"))
    assert len(cached) == 1
    stamp = cached[0].stat().st_mtime_ns
    again = build("train", tmp_path, **OPTIONS)
    assert cached[0].stat().st_mtime_ns == stamp
    assert torch.equal(again.sources["view1"], train.sources["view1"])
    cached[0].write_bytes(b"corrupt")
    rebuilt = build("train", tmp_path, **OPTIONS)
    assert torch.equal(rebuilt.sources["view2"], train.sources["view2"])
    other = build("train", tmp_path, **{**OPTIONS, "seed": 1})
    assert not torch.equal(other.sources["view1"], train.sources["view1"])
    partial = build("train", tmp_path, **OPTIONS, observed_fraction=0.5)
    assert int((partial.mask["view1"] & partial.mask["view2"]).sum()) == 150
    with pytest.raises(ValueError, match="unknown source"):
        build("train", tmp_path, source="svhn")
