"""MNIST-SVHN-Text and 3-modality MNIST: the text recipe and alphabet, the categorical
likelihood, the text networks, the digit-word reader, the datasets (pairing, seeding,
caching, partial observation) and the generic paths (models, grids, coherence) on text."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from mmdgm.batch import Batch
from mmdgm.data import DATASETS
from mmdgm.data.idx import write_idx
from mmdgm.data.pairing import pair_by_class
from mmdgm.data.text import ALPHABET, DIGIT_WORDS, decode, encode, placements, read_digits, text_rows
from mmdgm.data.threeview import rotated_view, same_class_draws
from mmdgm.data.twoview import rotate, same_class_partner
from mmdgm.distributions import DISTRIBUTIONS, Categorical
from mmdgm.evaluate.classifier_store import architecture_for, load_classifiers, train_dataset_classifiers
from mmdgm.evaluate.text_classifier import NO_CLASS, DigitWordReader
from mmdgm.modalities import Modality
from mmdgm.models.base import MODELS
from mmdgm.nets import DECODERS, ENCODERS

TEXT = (8, 71)
STREET = {"n_train": 200, "n_test": 100}


def write_mnist(root: Path, split: str, n: int) -> None:
    """Tiny random MNIST IDX files with labels 0..9 in turn."""
    prefix = "train" if split == "train" else "t10k"
    images = np.random.default_rng(0).integers(0, 256, (n, 28, 28), dtype=np.uint8)
    write_idx(root / "mnist" / f"{prefix}-images-idx3-ubyte", images)
    write_idx(root / "mnist" / f"{prefix}-labels-idx1-ubyte", np.arange(n, dtype=np.uint8) % 10)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("textdata")
    write_mnist(path, "train", 120)
    write_mnist(path, "test", 60)
    return path


# ---------------------------------------------------------------- alphabet and recipe

def test_alphabet_is_sutter_et_al_s_71_symbols():
    assert len(ALPHABET) == 71
    assert ALPHABET[:26] == "abcdefghijklmnopqrstuvwxyz" and ALPHABET[26:36] == "0123456789"
    assert (ALPHABET.index(" "), ALPHABET.index("\n")) == (69, 70)
    assert [i for i, c in enumerate(ALPHABET) if c == "-"] == [36, 59]  # listed twice in alphabet.json
    assert not any(c.isupper() for c in ALPHABET)
    assert len(set(ALPHABET)) == 70


def test_placements_are_every_fitting_offset_of_every_word():
    strings, classes, offsets = placements()
    assert len(strings) == sum(8 - len(w) + 1 for w in DIGIT_WORDS) == 50
    for s, c, o in zip(strings, classes.tolist(), offsets.tolist()):
        word = DIGIT_WORDS[c]
        assert len(s) == 8 and s == " " * o + word + " " * (8 - o - len(word))
    assert strings[:2] == ["zero    ", " zero   "] and strings[-1] == "    nine"


def test_text_offsets_are_uniform_over_the_fitting_ones_and_seeded():
    labels = torch.tensor([3, 1] * 20000)  # "three" fits at 4 offsets, "one" at 6
    rows = text_rows(labels, seed=7)
    assert torch.equal(rows, text_rows(labels, seed=7)) and not torch.equal(rows, text_rows(labels, seed=8))
    strings, classes, offsets = placements()
    assert torch.equal(classes[rows], labels)
    for c, fits in ((3, 4), (1, 6)):
        counts = torch.bincount(offsets[rows[labels == c]], minlength=fits)
        assert len(counts) == fits and (counts > 0).all()
        # each of the `fits` offsets within 5 binomial standard deviations of n / fits
        n = 20000
        assert float((counts - n / fits).abs().max()) < 5 * math.sqrt(n / fits)
    with pytest.raises(ValueError, match="digit labels 0..9"):
        text_rows(torch.tensor([10]), 0)


def test_one_hot_round_trip():
    texts = ["  one   ", "seven   ", "a-b,c;.!", "x\n 9Z?"[:0] + "xy   \n\n-"]
    x = encode(texts)
    assert x.shape == (4, 8, 71) and x.dtype == torch.float32 and torch.equal(x.sum(-1), torch.ones(4, 8))
    assert decode(x) == texts and decode(x.argmax(-1)) == texts
    assert decode(torch.softmax(5 * x + torch.rand(4, 8, 71), -1)) == texts
    assert x[0, 2, ALPHABET.index("o")] == 1 and x[2, 1, 36] == 1  # "-" encodes at its first index
    with pytest.raises(ValueError, match="'Z' is not in the 71-symbol text alphabet"):
        encode(["Zero    "])
    with pytest.raises(ValueError, match="exactly 8 characters"):
        encode(["zero"])


# ---------------------------------------------------------------- categorical likelihood

def test_categorical_matches_torch_and_a_hand_computation():
    assert DISTRIBUTIONS.get("categorical") is Categorical
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 2, 8, 71, generator=g)  # (K, B, L, V)
    index = torch.randint(71, (2, 8), generator=g)
    x = torch.nn.functional.one_hot(index, 71).float()
    d = Categorical(logits, 0.75)
    reference = torch.distributions.Categorical(logits=logits).log_prob(index).sum(-1)
    torch.testing.assert_close(d.log_prob_sum(x, 2), reference)
    torch.testing.assert_close(d.log_prob_sum(index, 2), reference)
    # by hand: logit of the symbol minus log sum exp of the position's logits
    k, b, pos = 1, 0, 5
    v = int(index[b, pos])
    hand = logits[k, b, pos, v] - torch.log(torch.exp(logits[k, b, pos]).sum())
    torch.testing.assert_close(d.log_prob(index)[k, b, pos], hand)
    torch.testing.assert_close(d.mean, torch.softmax(logits, -1))
    torch.testing.assert_close(d.mean.sum(-1), torch.ones(3, 2, 8))
    # log p is invariant to a per-position shift of the logits
    torch.testing.assert_close(Categorical(logits + 3.0).log_prob_sum(x, 2), reference)
    with pytest.raises(ValueError, match="indices must lie in 0..70"):
        d.log_prob(torch.full((2, 8), 71))
    with pytest.raises(ValueError, match="one-hot data has 70 symbols"):
        d.log_prob(x[..., :70])
    with pytest.raises(NotImplementedError):
        d.rsample()


def test_categorical_gradient_is_probabilities_minus_one_hot():
    logits = torch.randn(4, 8, 71, requires_grad=True)
    x = torch.nn.functional.one_hot(torch.randint(71, (4, 8)), 71).float()
    Categorical(logits).log_prob_sum(x, 2).sum().backward()
    torch.testing.assert_close(logits.grad, x - torch.softmax(logits.detach(), -1))


def test_categorical_samples_follow_the_probabilities():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2, 0.0]]))  # (L=1, V=4)
    torch.manual_seed(0)
    draws = Categorical(logits).sample((20000,))
    assert draws.shape == (20000, 1, 4) and torch.equal(draws.sum(-1), torch.ones(20000, 1))
    torch.testing.assert_close(draws.mean(0)[0], torch.tensor([0.5, 0.3, 0.2, 0.0]), atol=0.015, rtol=0)


# ---------------------------------------------------------------- networks

def test_text_conv_networks_shapes_and_lengths():
    enc, dec = ENCODERS.get("text-conv")(TEXT, 5, width=16), DECODERS.get("text-conv")(TEXT, 5, width=16)
    loc, raw = enc(encode(["  four  ", "nine    "]))
    assert loc.shape == raw.shape == (2, 5)
    assert dec(torch.randn(3, 2, 5)).shape == (3, 2, 8, 71)
    assert DECODERS.get("text-conv")((12, 71), 5, width=8)(torch.randn(2, 5)).shape == (2, 12, 71)
    with pytest.raises(ValueError, match="L divisible by 4"):
        ENCODERS.get("text-conv")((7, 71), 5)
    with pytest.raises(ValueError, match=r"shape \(L, V\)"):
        DECODERS.get("text-conv")((1, 28, 28), 5)


def test_text_conv_decoder_can_fit_every_text():
    """The decoder with the categorical likelihood learns the 50 texts from one-hot codes."""
    torch.manual_seed(0)
    strings, _, _ = placements()
    x = encode(strings)
    dec = DECODERS.get("text-conv")(TEXT, 50, width=32)
    opt = torch.optim.Adam(dec.parameters(), lr=1e-2)
    z = torch.eye(50)
    for _ in range(150):
        loss = -Categorical(dec(z)).log_prob_sum(x, 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert decode(Categorical(dec(z)).mean) == strings


# ---------------------------------------------------------------- the digit-word reader

def test_reader_reads_every_text_of_the_construction():
    strings, classes, _ = placements()
    assert torch.equal(read_digits(encode(strings)), classes)
    reader = DigitWordReader(TEXT)
    scores = reader(encode(strings))
    assert scores.shape == (50, 11) and torch.equal(scores.argmax(-1), classes)


@pytest.mark.parametrize(
    "text,digit",
    [("zero    ", 0), ("xxsixxx ", 6), ("  none  ", 1), ("eightnin", 8), ("  nine\n ", 9),
     ("        ", -1), ("zer o   ", -1), ("onetwo  ", -1), ("ninenine", 9), ("Seven   ".lower(), 7), ("sevn    ", -1)],
)
def test_reader_rule(text, digit):
    assert int(read_digits(encode([text]))[0]) == digit
    assert int(DigitWordReader(TEXT)(encode([text])).argmax(-1)[0]) == (digit if digit >= 0 else NO_CLASS)


def test_reader_bad_input():
    with pytest.raises(ValueError, match=r"needs \(L, 71\) one-hot strings"):
        DigitWordReader((1, 28, 28))
    with pytest.raises(ValueError, match="11 classes cannot be digits"):
        DigitWordReader(TEXT, classes=11)
    with pytest.raises(ValueError, match="read_digits needs"):
        read_digits(torch.zeros(8))
    assert architecture_for(TEXT) == "digit-word-reader" and architecture_for((16, 71)) == "digit-word-reader"


# ---------------------------------------------------------------- datasets

def test_mnist_synthstreet_text_pairs_text_and_labels(root):
    build = DATASETS.get("mnist-synthstreet-text")
    ds = build("train", root, dm=2, **STREET)
    assert ds.shapes == {"mnist": (1, 28, 28), "synth_street": (3, 32, 32), "text": TEXT}
    assert ds.name == "mnist-synthstreet-text" and ds.sources["text"].shape == (50, 8, 71)
    # the same pairs as the two-modality dataset with the same options (same cache file)
    plain = DATASETS.get("mnist-synthstreet")("train", root, dm=2, **STREET)
    assert torch.equal(ds.index["mnist"], plain.index["mnist"]) and torch.equal(ds.labels, plain.labels)
    assert torch.equal(ds.index["synth_street"], plain.index["synth_street"])
    mnist_labels = torch.arange(120) % 10
    assert torch.equal(mnist_labels[ds.index["mnist"]], ds.labels)
    batch = ds.batch(torch.arange(len(ds)))
    assert torch.equal(read_digits(batch.data["text"]), ds.labels)
    assert batch.data["text"].dtype == torch.float32 and torch.equal(batch.data["text"].sum(-1), torch.ones(len(ds), 8))
    again = build("train", root, dm=2, **STREET)
    assert torch.equal(again.index["text"], ds.index["text"])
    other = build("train", root, dm=2, seed=1, **STREET)
    assert not torch.equal(other.index["text"], ds.index["text"])
    test = build("test", root, dm=2, **STREET)
    assert torch.equal(read_digits(test.batch(torch.arange(len(test))).data["text"]), test.labels)
    offsets = placements()[2][ds.index["text"]]
    assert len(offsets.unique()) >= 4  # offsets vary across rows


def test_mnist_svhn_text_on_tiny_files(tmp_path):
    write_mnist(tmp_path, "train", 60)
    rng = np.random.default_rng(1)
    (tmp_path / "svhn").mkdir()
    y = np.arange(1, 41).reshape(-1, 1) % 10 + 1  # labels 1..10, 10 meaning digit 0
    scipy.io.savemat(tmp_path / "svhn" / "train_32x32.mat",
                     {"X": rng.integers(0, 256, (32, 32, 3, 40), dtype=np.uint8), "y": y})
    ds = DATASETS.get("mnist-svhn-text")("train", tmp_path, dm=3, observed_fraction=0.5, unpaired_scheme="missing:text")
    assert ds.shapes == {"mnist": (1, 28, 28), "svhn": (3, 32, 32), "text": TEXT} and ds.name == "mnist-svhn-text"
    assert len(ds) == 3 * 40  # 4 of each digit in SVHN, 6 in MNIST
    ia, ib, labels = pair_by_class(torch.arange(60) % 10, torch.from_numpy(y[:, 0] % 10), dm=3)
    assert torch.equal(ds.index["mnist"], ia) and torch.equal(ds.index["svhn"], ib) and torch.equal(ds.labels, labels)
    assert int(ds.mask["text"].sum()) == 60 and bool(ds.mask["mnist"].all() and ds.mask["svhn"].all())
    assert ds.protocol["unpaired_scheme"] == "missing:text"
    assert torch.equal(read_digits(ds.sources["text"][ds.index["text"]]), ds.labels)


def test_partial_observation_options(root):
    build = DATASETS.get("mnist-synthstreet-text")
    full = build("train", root, dm=2, **STREET)
    ds = build("train", root, dm=2, observed_fraction=0.25, unpaired_scheme="alternate", **STREET)
    masks = torch.stack([ds.mask[k] for k in ("mnist", "synth_street", "text")])
    n = len(ds)
    assert int(masks.all(0).sum()) == round(0.25 * n) and bool(masks.any(0).all())
    single = ~masks.all(0)
    assert torch.equal(masks[:, single].sum(0), torch.ones(int(single.sum()), dtype=torch.long))
    per_modality = masks[:, single].sum(1)
    assert int(per_modality.max() - per_modality.min()) <= 1  # "alternate" splits them evenly
    assert torch.equal(ds.index["text"], full.index["text"])  # masking keeps the rows
    only = build("train", root, dm=2, observed_fraction=0.0, unpaired_scheme="only:text", **STREET)
    assert bool(only.mask["text"].all()) and not bool(only.mask["mnist"].any())
    half = build("train", root, dm=2, unimodal_fraction=0.5, **STREET)
    assert len(half) < len(full) and torch.equal(read_digits(half.sources["text"][half.index["text"]]), half.labels)
    test = build("test", root, dm=2, observed_fraction=0.25, **STREET)
    assert all(bool(m.all()) for m in test.mask.values())  # only the train split is masked
    with pytest.raises(ValueError, match=r"names modality 'txt' \(did you mean 'text'\?\)"):
        build("train", root, dm=2, unpaired_scheme="missing:txt", **STREET)
    with pytest.raises(ValueError, match=r"observed_fraction must lie in \[0, 1\]"):
        build("train", root, observed_fraction=1.5, **STREET)
    with pytest.raises(ValueError, match="unknown split 'val'"):
        build("val", root)


# ---------------------------------------------------------------- 3-modality MNIST

def test_rotated_view_follows_the_two_view_recipe():
    g = torch.Generator().manual_seed(1)
    images = (torch.rand(40, 1, 28, 28, generator=g) * 255).to(torch.uint8)
    labels = torch.randint(0, 4, (40,), generator=g)
    for mode in ("other", "same"):
        view = rotated_view(images, labels, 5, mode)
        gen = torch.Generator().manual_seed(5)
        angles = (torch.rand(40, generator=gen) * 2 - 1) * (math.pi / 4)
        partner = same_class_partner(labels, gen) if mode == "other" else torch.arange(40)
        expected = (rotate(images[partner].float() / 255, angles) * 255).round().to(torch.uint8)
        assert torch.equal(view, expected) and angles.abs().max() <= math.pi / 4
        assert torch.equal(labels[partner], labels)
        if mode == "other":
            assert (partner != torch.arange(40)).all()
    with pytest.raises(ValueError, match="unknown rotated='twin'"):
        rotated_view(images, labels, 0, "twin")


def test_same_class_draws():
    labels, pool = torch.tensor([0, 1, 1, 2] * 50), torch.tensor([2, 1, 0, 1, 2, 0])
    rows = same_class_draws(labels, pool, seed=3)
    assert torch.equal(pool[rows], labels) and torch.equal(rows, same_class_draws(labels, pool, seed=3))
    assert set(rows[labels == 1].tolist()) == {1, 3}  # both street digits of class 1 are used
    with pytest.raises(ValueError, match="no digit of class 3"):
        same_class_draws(torch.tensor([3]), pool, 0)


def test_three_view_dataset_seeded_and_cached(tmp_path):
    build = DATASETS.get("mnist-rotated-synthstreet")
    options = {"source": "synthetic", "n_train": 150, "n_test": 60}
    ds = build("train", tmp_path, **options)
    assert ds.shapes == {"mnist": (1, 28, 28), "mnist_rotated": (1, 28, 28), "synth_street": (3, 32, 32)}
    assert len(ds) == 150 and ds.name == "mnist-rotated-synthstreet"
    street_labels = DATASETS.get("synthetic-street-digits")("train", tmp_path, n_train=150).labels
    assert torch.equal(street_labels[ds.index["synth_street"]], ds.labels)
    (cached,) = (tmp_path / "cache" / "threeview").glob("*.npz")
    stamp = cached.stat().st_mtime_ns
    again = build("train", tmp_path, **options)
    assert cached.stat().st_mtime_ns == stamp
    assert torch.equal(again.sources["mnist_rotated"], ds.sources["mnist_rotated"])
    assert torch.equal(again.index["synth_street"], ds.index["synth_street"])
    cached.write_bytes(b"broken")
    repaired = build("train", tmp_path, **options)
    assert torch.equal(repaired.sources["mnist_rotated"], ds.sources["mnist_rotated"])
    assert not torch.equal(build("train", tmp_path, seed=1, **options).sources["mnist_rotated"][:20],
                           ds.sources["mnist_rotated"][:20])
    same = build("train", tmp_path, rotated="same", **options)
    assert len(list((tmp_path / "cache" / "threeview").glob("*.npz"))) == 3
    # "same" rotates each row's own digit: the rotation keeps the ink near the centre
    assert torch.equal(same.sources["mnist"], ds.sources["mnist"])
    partial = build("train", tmp_path, observed_fraction=0.5, unpaired_scheme="missing:synth_street", **options)
    assert int(partial.mask["synth_street"].sum()) == 75 and bool(partial.mask["mnist_rotated"].all())
    with pytest.raises(ValueError, match="unknown source 'svhn'"):
        build("train", tmp_path, source="svhn")
    with pytest.raises(ValueError, match="unknown rotated='both'"):
        build("train", tmp_path, rotated="both")
    with pytest.raises(ValueError, match="names modality 'rotated'"):
        build("train", tmp_path, unpaired_scheme="only:rotated", **options)


# ---------------------------------------------------------------- generic paths on text

def text_model(name: str, **options):
    modalities = [
        Modality("mnist", (1, 28, 28), encoder="mnist-mlp", decoder="mnist-mlp", net_options={"hidden": 16}),
        Modality("text", TEXT, kind="text", likelihood="categorical", encoder="text-conv", decoder="text-conv",
                 net_options={"width": 8}, llik_scale=384.0),
    ]
    normal = {"prior": "normal", "posterior": "normal", "posterior_scale": "exp", "prior_scale": "free"}
    return MODELS.get(name)(modalities, 4, **(normal if name == "mvae" else {}), **options)


@pytest.mark.parametrize("name,options", [("mmvae", {"K": 2}), ("mvae", {"K": 1})])
def test_models_train_and_generate_text(root, name, options):
    torch.manual_seed(0)
    ds = DATASETS.get("mnist-synthstreet-text")("test", root, dm=1, **STREET)
    ds = type(ds)({k: ds.sources[k] for k in ("mnist", "text")}, ds.labels,
                  {k: ds.index[k] for k in ("mnist", "text")}, name=ds.name)
    model = text_model(name, **options)
    batch = ds.batch(torch.arange(len(ds)))
    out = model(batch)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert all(p.grad is not None for p in model.decoders["text"].parameters())
    generated = model.cross_generate(batch, "mnist", "text")
    assert generated.shape == (len(ds), 8, 71)
    torch.testing.assert_close(generated.sum(-1), torch.ones(len(ds), 8))
    assert model.sample(3)["text"].shape == (3, 8, 71)
    assert torch.isfinite(model.log_likelihood(batch.select(torch.arange(4)), K=3, chunk=2)).all()


def test_grids_skip_text_and_coherence_reads_it(root, tmp_path):
    from mmdgm.evaluate.context import EvalContext
    from mmdgm.evaluate.registry import METRICS
    from mmdgm.train.grids import write_model_grids

    torch.manual_seed(0)
    ds = DATASETS.get("mnist-synthstreet-text")("test", root, dm=1, **STREET)
    ds = type(ds)({k: ds.sources[k] for k in ("mnist", "text")}, ds.labels,
                  {k: ds.index[k] for k in ("mnist", "text")}, name=ds.name)
    model = text_model("mmvae", K=2).eval()
    paths = write_model_grids(model, ds.batch(torch.arange(4)), tmp_path / "grids", "t", n=4)
    assert [p.name for p in paths] == ["t-joint.png", "t-from-mnist.png", "t-text.txt"]
    lines = paths[-1].read_text().splitlines()
    assert [line.split(":")[0] for line in lines] == ["joint text", "mnist -> text", "data text", "text -> text"]
    data = [s.strip("'") for s in lines[2].split(": ", 1)[1].split(" | ")]
    assert data == decode(ds.batch(torch.arange(4)).data["text"]) and len(data) == 4

    class Zero(torch.nn.Module):  # says "0" to every image
        def forward(self, x):
            return torch.zeros(len(x), 10)

    ctx = EvalContext(model=model, test_set=ds, train_set=None,
                      classifiers={"mnist": Zero(), "text": DigitWordReader(TEXT)},
                      out_dir=tmp_path / "eval", batch_size=16, seed=0, progress=False)
    cross = METRICS.get("cross_coherence")(ctx)
    assert set(cross) >= {"mnist->text", "text->mnist"} and 0.0 <= cross["mnist->text"] <= 1.0
    # an untrained model writes no digit word: text cross coherence is zero, never a crash
    assert cross["mnist->text"] == 0.0
    joint = METRICS.get("joint_coherence")(ctx, n=20)
    assert joint["joint_coherence"] == 0.0
    diversity = METRICS.get("generation_diversity")(ctx, n=20)
    assert diversity["unread"] == {"text": 20} and diversity["entropy"]["text"] is None
    assert sum(diversity["histograms"]["mnist"]) == 20


def test_text_coherence_of_a_perfect_generator(root, tmp_path):
    """cross coherence into text is 1 for a model whose text decoder writes the label's word."""
    from mmdgm.evaluate.coherence import generation_accuracy
    from mmdgm.evaluate.context import EvalContext

    ds = DATASETS.get("mnist-synthstreet-text")("test", root, dm=1, **STREET)
    words = encode(placements()[0])

    class Writer(torch.nn.Module):
        names = ["mnist", "synth_street", "text"]

        def cross_generate(self, batch, sources, target):
            assert target == "text" or sources == ["text"]
            if target == "text":
                return words[torch.searchsorted(placements()[1], batch.labels)]
            return batch.data["mnist"]

    class Ignore(torch.nn.Module):
        def forward(self, x):
            return torch.zeros(len(x), 10)

    ctx = EvalContext(model=Writer(), test_set=ds, train_set=None,
                      classifiers={"mnist": Ignore(), "synth_street": Ignore(), "text": DigitWordReader(TEXT)},
                      out_dir=tmp_path, batch_size=32, seed=0, progress=False)
    accuracies, rows = generation_accuracy(ctx, [("m->t", ("mnist",), "text"), ("s->t", ("synth_street",), "text")], "x")
    assert accuracies == {"m->t": 1.0, "s->t": 1.0} and rows["m->t"] == len(ds)


def test_classifier_store_keeps_the_reader_untrained(root):
    accuracies = train_dataset_classifiers("mnist-synthstreet-text", root, {"dm": 1, **STREET}, epochs=1, progress=False)
    assert accuracies["text"] == 1.0
    loaded = load_classifiers("mnist-synthstreet-text", ["text"], root, floor=0.99, options={"dm": 1, **STREET})
    assert isinstance(loaded["text"], DigitWordReader)
    record = json.loads(next(root.glob("cache/classifiers/*/text.json")).read_text())
    assert record["architecture"] == "digit-word-reader" and record["epochs"] == 0


def test_batch_of_text_passes_model_validation(root):
    model = text_model("mmvae", K=1)
    x = encode(["  two   "])
    Batch({"mnist": torch.rand(1, 1, 28, 28), "text": x}).validate(model.modalities)
    with pytest.raises(Exception, match="sample shape"):
        Batch({"mnist": torch.rand(1, 1, 28, 28), "text": x[:, :4]}).validate(model.modalities)


@pytest.mark.parametrize("config,k", [("mmvae-mnist-synthstreet-text", 2), ("mvae-mnist-synthstreet-text", 1)])
def test_builtin_text_configs_train_and_evaluate(root, tmp_path, config, k):
    from mmdgm import cli
    from mmdgm.evaluate.runner import read_eval

    run = tmp_path / "run"
    overrides = [
        f"data.root={root}", "data.options={dm: 1, n_train: 200, n_test: 100}", "model.latent_dim=4",
        f"model.options.K={k}", "model.modalities.mnist.net_options={hidden: 16}",
        "model.modalities.synth_street.net_options={width: 4}", "model.modalities.text.net_options={width: 8}",
        "train.epochs=1", "train.batch_size=32", "train.eval_batches=1", "train.grid_size=4", "train.final_metrics=[]",
    ]
    assert cli.main(["train", "--config", config, "--run-dir", str(run), *overrides]) == 0
    assert sorted(p.name.split("-", 1)[1] for p in (run / "grids").iterdir()) == [
        "from-mnist.png", "from-synth_street.png", "joint.png", "text.txt"]
    from mmdgm.config import load_config
    from mmdgm.models.factory import build_model

    model = build_model(load_config(config).model, {"mnist": (1, 28, 28), "synth_street": (3, 32, 32), "text": TEXT})
    assert [m.kind for m in model.modalities.values()] == ["image", "image", "text"]
    assert cli.main(["evaluate", str(run), "--metrics", "cross_coherence,joint_coherence", "--floor", "0",
                     "--train-classifiers"]) == 0
    cross = read_eval(run)["cross_coherence"]
    assert {"mnist->text", "synth_street->text", "{mnist,synth_street}->text", "text->mnist"} <= set(cross)
    assert all(v is None or 0.0 <= v <= 1.0 for k, v in cross.items() if "->" in k)
