"""MultiMNIST (MMALI §4.1): rotation direction, the M-way class matching, the builders on
tiny IDX files and synthetic digits, the pairing cache, partial observation and the
per-modality coherence classifiers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mmdgm.data import DATASETS
from mmdgm.data.idx import write_idx
from mmdgm.data.multimnist import modality_names, rotate_ccw
from mmdgm.data.pairing import cached_match_by_class, match_by_class, pair_by_class
from mmdgm.data.procedural import load_or_generate
from mmdgm.evaluate.classifier_store import load_classifiers, source_examples, store_dir, train_dataset_classifiers

SYNTHETIC = {"source": "synthetic", "n_train": 200, "n_test": 100, "pairs": 3}


def write_mnist(root, split: str, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Tiny IDX files of random digits with unbalanced labels, as `mmdgm data get` leaves them."""
    prefix = "train" if split == "train" else "t10k"
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    write_idx(root / "mnist" / f"{prefix}-images-idx3-ubyte", images)
    write_idx(root / "mnist" / f"{prefix}-labels-idx1-ubyte", labels)
    return images, labels


# --- rotation ------------------------------------------------------------------------------


def test_rotation_is_counter_clockwise_by_quarter_turns():
    image = torch.zeros(1, 1, 28, 28, dtype=torch.uint8)
    image[0, 0, 0, 27] = 255  # the top-right corner ...
    image[0, 0, 5, 20:24] = 100  # ... and an asymmetric bar
    quarter = rotate_ccw(image, 1)
    assert quarter[0, 0, 0, 0] == 255 and int((quarter == 255).sum()) == 1  # ... goes to the top left
    # (row r, column c) -> (W - 1 - c, r) under a counter-clockwise quarter turn
    assert all(quarter[0, 0, 27 - c, 5] == 100 for c in range(20, 24))
    # Pillow's ROTATE_90 is documented as a counter-clockwise quarter turn
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(3, 1, 28, 28, generator=g) * 255).to(torch.uint8)
    for k, method in ((1, Image.Transpose.ROTATE_90), (2, Image.Transpose.ROTATE_180), (3, Image.Transpose.ROTATE_270)):
        pil = np.stack([np.asarray(Image.fromarray(im[0].numpy()).transpose(method)) for im in x])[:, None]
        assert torch.equal(rotate_ccw(x, k), torch.from_numpy(pil))
    assert torch.equal(rotate_ccw(x, 0), x) and torch.equal(rotate_ccw(rotate_ccw(x, 1), 3), x)


# --- matching ------------------------------------------------------------------------------


def test_matching_of_three_sets_shares_labels_and_uses_every_example_dm_times():
    g = torch.Generator().manual_seed(0)
    sets = [torch.randint(0, 4, (n,), generator=g) for n in (40, 50, 35)]
    index, labels = match_by_class(sets, dm=5, max_per_class=9, seed=1)
    assert len(index) == 3 and all(i.shape == labels.shape for i in index)
    for y, rows in zip(sets, index):
        assert torch.equal(y[rows], labels)
    for c in range(4):
        n_c = min(*(int((y == c).sum()) for y in sets), 9)
        assert int((labels == c).sum()) == 5 * n_c
        for y, rows in zip(sets, index):
            first = torch.nonzero(y == c).flatten()[:n_c]  # the first n_c of the class, each dm times
            counts = torch.bincount(rows[labels == c], minlength=len(y))
            assert torch.equal(counts[first], torch.full((n_c,), 5)) and int(counts.sum()) == 5 * n_c
    again = match_by_class(sets, dm=5, max_per_class=9, seed=1)
    assert all(torch.equal(a, b) for a, b in zip(index, again[0]))
    assert not torch.equal(index[1], match_by_class(sets, dm=5, max_per_class=9, seed=2)[0][1])
    # two sets: exactly the MMVAE pairing
    ia, ib, la = pair_by_class(sets[0], sets[1], dm=2, seed=3)
    (ja, jb), lb = match_by_class(sets[:2], dm=2, seed=3)
    assert torch.equal(ia, ja) and torch.equal(ib, jb) and torch.equal(la, lb)
    with pytest.raises(ValueError, match="two or more"):
        match_by_class(sets[:1])


def test_matching_cache_is_reused_and_rebuilt_when_corrupt_or_inconsistent(tmp_path):
    g = torch.Generator().manual_seed(0)
    sets = [torch.randint(0, 3, (30,), generator=g) for _ in range(3)]
    first = cached_match_by_class(tmp_path, "k", sets, dm=2)
    (path,) = tmp_path.iterdir()
    assert "-na30-nb30-nc30-dm2-" in path.name
    stamp = path.stat().st_mtime_ns
    again = cached_match_by_class(tmp_path, "k", sets, dm=2)
    assert path.stat().st_mtime_ns == stamp and all(torch.equal(a, b) for a, b in zip(first[0], again[0]))
    for bad in (b"garbage", None):
        if bad is None:  # readable, but its rows do not carry the shared labels
            np.savez(path.open("wb"), labels=first[1].numpy(), index_a=first[0][0].numpy(),
                     index_b=first[0][0].flip(0).numpy(), index_c=first[0][2].numpy())
        else:
            path.write_bytes(bad)
        repaired = cached_match_by_class(tmp_path, "k", sets, dm=2)
        assert all(torch.equal(a, b) for a, b in zip(first[0], repaired[0])) and torch.equal(first[1], repaired[1])
    assert not list(tmp_path.glob("*.part"))


# --- the builders ----------------------------------------------------------------------------


@pytest.mark.parametrize("m", [2, 3, 4])
def test_synthetic_multimnist_rotates_and_matches(tmp_path, m):
    ds = DATASETS.get(f"multimnist-{m}")("train", tmp_path, **SYNTHETIC)
    names = modality_names(m)
    assert ds.name == f"multimnist-{m}-synthetic" and list(ds.shapes) == names == ["rot0", "rot90", "rot180", "rot270"][:m]
    assert all(shape == (1, 28, 28) for shape in ds.shapes.values())
    base, base_labels = load_or_generate("synthetic-handwritten-digits", "train", tmp_path, 200, 0)
    for k, name in enumerate(names):
        assert torch.equal(ds.sources[name], rotate_ccw(base, k))  # modality k: the pool turned by 90k degrees
        assert torch.equal(base_labels[ds.index[name]], ds.labels)
        assert torch.equal(torch.bincount(ds.index[name], minlength=200), torch.full((200,), 3))
    assert len(ds) == 3 * 200
    # each rot0 digit's partners in another modality are random digits of the whole same-class pool
    partners = ds.index["rot90"][ds.index["rot0"] == 0]
    assert len(partners) == 3 and (base_labels[partners] == base_labels[0]).all()
    batch = ds.batch(torch.arange(4))
    for k, name in enumerate(names):
        torch.testing.assert_close(batch.data[name], rotate_ccw(base[ds.index[name][:4]], k).float() / 255)


def test_real_source_from_tiny_idx_files_limits_and_caches(tmp_path):
    images, labels = write_mnist(tmp_path, "train", 120)
    write_mnist(tmp_path, "test", 50, seed=1)
    build = DATASETS.get("multimnist-3")
    ds = build("train", tmp_path, pairs=4, n_train=100)
    assert ds.name == "multimnist-3" and list(ds.shapes) == ["rot0", "rot90", "rot180"]
    counts = np.bincount(labels[:100], minlength=10)
    assert len(ds) == 4 * 100 and torch.equal(torch.bincount(ds.labels, minlength=10), torch.from_numpy(4 * counts))
    assert torch.equal(ds.sources["rot180"][:, 0], torch.from_numpy(images[:100, ::-1, ::-1].copy()))
    assert len(build("test", tmp_path)) == 30 * 50  # the paper's 30 by default
    (cache,) = (tmp_path / "cache" / "pairings").glob("multimnist-3-train-*")
    stamp = cache.stat().st_mtime_ns
    again = build("train", tmp_path, pairs=4, n_train=100)
    assert cache.stat().st_mtime_ns == stamp and all(torch.equal(ds.index[k], again.index[k]) for k in ds.index)
    cache.write_bytes(b"corrupt")
    rebuilt = build("train", tmp_path, pairs=4, n_train=100)
    assert all(torch.equal(ds.index[k], rebuilt.index[k]) for k in ds.index)
    other = build("train", tmp_path, pairs=4, n_train=100, seed=1)
    assert not torch.equal(other.index["rot90"], ds.index["rot90"])
    capped = build("train", tmp_path, pairs=2, max_per_class=3)
    expected = 2 * np.minimum(np.bincount(labels, minlength=10), 3)  # max_per_class caps each class's pool
    assert torch.equal(torch.bincount(capped.labels, minlength=10), torch.from_numpy(expected).long())
    with pytest.raises(ValueError, match="n_train=121 exceeds the 120 mnist train digits"):
        build("train", tmp_path, n_train=121)


def test_options_and_errors(tmp_path):
    build = DATASETS.get("multimnist-3")
    partial = build("train", tmp_path, **SYNTHETIC, observed_fraction=0.5)
    present = torch.stack([partial.mask[k] for k in modality_names(3)])
    assert int(present.all(0).sum()) == 300 and (present.sum(0) >= 1).all()
    assert [int(present[i][~present.all(0)].sum()) for i in range(3)] == [100, 100, 100]  # alternate
    assert partial.protocol["observed_fraction"] == 0.5
    assert bool(torch.stack(list(build("test", tmp_path, **SYNTHETIC, observed_fraction=0.5).mask.values())).all())
    only = build("train", tmp_path, **SYNTHETIC, observed_fraction=0.0, unpaired_scheme="only:rot90")
    assert not only.mask["rot0"].any() and only.mask["rot90"].all()
    fewer = build("train", tmp_path, **SYNTHETIC, unimodal_fraction=0.5)
    for k in modality_names(3):  # half of each class of each modality's pool, before matching
        assert len(fewer.index[k].unique()) == 100
    assert not torch.equal(fewer.index["rot0"].unique(), fewer.index["rot90"].unique())
    with pytest.raises(ValueError, match="multimnist-3: unknown source 'svhn'"):
        build("train", tmp_path, source="svhn")
    with pytest.raises(ValueError, match="pairs and max_per_class must be positive"):
        build("train", tmp_path, **{**SYNTHETIC, "pairs": 0})
    with pytest.raises(ValueError, match="names modality 'rot270'"):
        build("train", tmp_path, **SYNTHETIC, unpaired_scheme="missing:rot270")
    with pytest.raises(ValueError, match="n_train must be positive"):
        build("train", tmp_path, **{**SYNTHETIC, "n_train": 0})
    with pytest.raises(TypeError):
        build("train", tmp_path, dm=3)


def test_every_modality_gets_a_digit_classifier_of_its_rotated_images(tmp_path):
    options = {"source": "synthetic", "n_train": 300, "n_test": 100, "pairs": 2}
    accuracies = train_dataset_classifiers("multimnist-2", tmp_path, options, epochs=3, progress=False)
    assert set(accuracies) == {"rot0", "rot90"}
    train = DATASETS.get("multimnist-2")("train", tmp_path, **options)
    x0, y0 = source_examples(train, "rot0")
    x90, y90 = source_examples(train, "rot90")
    assert torch.equal(x90, rotate_ccw(x0, 1)) and torch.equal(y0, y90)  # trained on the rotated digits
    loaded = load_classifiers("multimnist-2", ["rot0", "rot90"], tmp_path, floor=0.0, options=options)
    assert set(loaded) == {"rot0", "rot90"} and store_dir("multimnist-2", tmp_path, options).name.startswith("multimnist-2-")
    # each classifier reads its own orientation better than the other one's
    test = DATASETS.get("multimnist-2")("test", tmp_path, **options)
    x, y = source_examples(test, "rot0")
    with torch.no_grad():
        own = (loaded["rot90"](rotate_ccw(x, 1).float() / 255).argmax(1) == y).float().mean()
        other = (loaded["rot90"](x.float() / 255).argmax(1) == y).float().mean()
    assert own > other, (own, other)
