import numpy as np
import pytest
import torch

from mmdgm.data import DATASETS
from mmdgm.data.procedural import cache_path, generate, load_or_generate

STREET, HAND = "synthetic-street-digits", "synthetic-handwritten-digits"
SHAPES = {STREET: (3, 32, 32), HAND: (1, 28, 28)}


@pytest.fixture(scope="module")
def samples():
    return {name: generate(name, "train", 2000, seed=0, progress=False) for name in SHAPES}


@pytest.mark.parametrize("name", [STREET, HAND])
def test_deterministic_per_seed(name, samples):
    images, labels = samples[name]
    again, again_labels = generate(name, "train", 200, seed=0, progress=False)
    other, _ = generate(name, "train", 200, seed=1, progress=False)
    test, _ = generate(name, "test", 200, seed=0, progress=False)
    assert torch.equal(generate(name, "train", 200, seed=0, progress=False)[0], again)
    assert not torch.equal(again, other) and not torch.equal(again, test)
    assert images.shape == (2000, *SHAPES[name]) and images.dtype == torch.uint8


@pytest.mark.parametrize("name", [STREET, HAND])
def test_values_and_balance(name, samples):
    images, labels = samples[name]
    assert torch.equal(torch.bincount(labels, minlength=10), torch.full((10,), 200))
    assert int(images.min()) == 0 or name == STREET
    assert int(images.max()) > 200
    per_image_std = images.float().flatten(1).std(1)
    assert (per_image_std > 5).float().mean() > 0.95
    if name == HAND:
        border = torch.cat([images[:, 0, :2].flatten(1), images[:, 0, -2:].flatten(1)], 1)
        assert border.float().mean() < 2


def _nearest_mean_accuracy(images, labels):
    """Nearest class mean of polarity-free grey features (distance from the median)."""
    x = images.float().mean(1).flatten(1) / 255
    x = (x - x.median(1, keepdim=True).values).abs()
    x = (x - x.mean(1, keepdim=True)) / (x.std(1, keepdim=True) + 1e-6)
    train, test = slice(0, 1500), slice(1500, None)
    means = torch.stack([x[train][labels[train] == c].mean(0) for c in range(10)])
    return float(((x[test] @ means.T).argmax(1) == labels[test]).float().mean())


def test_images_carry_the_label(samples):
    hand = _nearest_mean_accuracy(*samples[HAND])
    street = _nearest_mean_accuracy(*samples[STREET])
    assert hand > 0.5
    assert 0.25 < street < 0.8


def test_builder_cache_reuse_and_repair(tmp_path):
    ds = DATASETS.get(STREET)("test", tmp_path, n_test=50)
    assert ds.shapes == {"synth_street": (3, 32, 32)} and len(ds) == 50
    path = cache_path(tmp_path, STREET, "test", 50, 0)
    assert path.is_file()
    stamp = path.stat().st_mtime_ns
    again = DATASETS.get(STREET)("test", tmp_path, n_test=50)
    assert path.stat().st_mtime_ns == stamp
    assert torch.equal(again.sources["synth_street"], ds.sources["synth_street"])
    path.write_bytes(path.read_bytes()[:100])
    repaired, _ = load_or_generate(STREET, "test", tmp_path, 50, 0)
    assert torch.equal(repaired, ds.sources["synth_street"])
    with np.load(path) as f:
        assert f["images"].shape == (50, 3, 32, 32)


def test_unknown_option_rejected(tmp_path):
    with pytest.raises(TypeError, match="n_tset"):
        DATASETS.get(HAND)("train", tmp_path, n_tset=5)


def test_synthetic_pairs(tmp_path):
    ds = DATASETS.get("synthetic-pairs")("train", tmp_path, n_train=100, dm=2)
    assert ds.shapes == {"synth_hand": (1, 28, 28), "synth_street": (3, 32, 32)}
    assert len(ds) == 200
    hand = DATASETS.get(HAND)("train", tmp_path, n_train=100)
    street = DATASETS.get(STREET)("train", tmp_path, n_train=100)
    assert torch.equal(hand.labels[ds.index["synth_hand"]], ds.labels)
    assert torch.equal(street.labels[ds.index["synth_street"]], ds.labels)
    batch = ds.batch(torch.arange(8))
    assert batch.data["synth_street"].shape == (8, 3, 32, 32) and batch.complete


def low_contrast_share(images: torch.Tensor) -> float:
    """Share of images whose luminance spread (95th - 5th percentile) is below 0.2."""
    lum = images.float().mean(1).flatten(1) / 255
    q = torch.quantile(lum, torch.tensor([0.05, 0.95]), dim=1)
    return float(((q[1] - q[0]) < 0.2).float().mean())


def test_clean_street_digits_are_the_easy_variant(samples, tmp_path):
    """The clean variant (demo data) shares labels with the cluttered one, has far fewer
    low-contrast crops (measured 1% vs 6%) and no clutter beside the digit: its border
    columns (where neighbouring digits sit) vary less."""
    clean, labels = generate("synthetic-clean-street-digits", "train", 2000, seed=0, progress=False)
    cluttered, _ = samples[STREET]
    assert clean.shape == (2000, 3, 32, 32) and torch.equal(torch.bincount(labels, minlength=10), torch.full((10,), 200))
    assert low_contrast_share(clean) < low_contrast_share(cluttered) / 3
    border = lambda x: x.float()[..., :, :4].std((1, 2, 3)).mean()  # noqa: E731
    assert border(clean) < 0.7 * border(cluttered)
    pairs = DATASETS.get("synthetic-pairs-clean")("train", tmp_path, n_train=100, n_test=50, dm=1)
    assert pairs.shapes == {"synth_hand": (1, 28, 28), "synth_street": (3, 32, 32)} and len(pairs) == 100
