"""Word-level captions: vocabulary, padded likelihood, caption networks, the synthetic
image-caption benchmark, its parser and attribute coherence, grids and a tiny training."""

from __future__ import annotations

import math
import types

import numpy as np
import pytest
import torch
from torch import nn

from mmdgm.batch import Batch, BatchError
from mmdgm.config import load_config
from mmdgm.data import DATASETS
from mmdgm.data.errors import DataFileError
from mmdgm.data.scene_captions import caption, parse_caption
from mmdgm.data.scenes import ATTRIBUTES, level_attributes, sample_attributes
from mmdgm.data.vocabulary import Vocabulary, tokenise
from mmdgm.distributions import DISTRIBUTIONS
from mmdgm.evaluate.attributes import CaptionAttributeReader, attribute_coherence
from mmdgm.evaluate.context import EvalContext
from mmdgm.nets import DECODERS, ENCODERS
from mmdgm.run import load_dataset

OPTS = dict(level=5, n_train=120, n_test=40, captions_per_image=5)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tmp_path_factory.mktemp("captions-data")


def test_vocabulary_min_count_specials_unknowns_and_length(tmp_path):
    captions = ["a red bird.", "a red bird", "a blue bird", "a red fish"]
    vocab = Vocabulary.build(captions, min_count=3, max_length=4)
    assert vocab.words == ["<pad>", "<unk>", "<eos>", "a", "red", "bird"]  # blue, fish, "." seen < 3 times
    x = vocab.encode(["a red bird", "a blue fish swims far away", "red"])
    assert x.dtype == torch.long and x.shape == (3, 4)
    assert x.tolist() == [[3, 4, 5, 2], [3, 1, 1, 2], [4, 2, 0, 0]]  # 3 words + end; unknowns; padding
    assert vocab.tokens(x) == [["a", "red", "bird"], ["a", "<unk>", "<unk>"], ["red"]]
    one_hot = torch.nn.functional.one_hot(x, len(vocab)).float()
    assert vocab.decode(one_hot) == ["a red bird", "a <unk> <unk>", "red"]
    vocab.save(tmp_path / "v.json")
    assert Vocabulary.load(tmp_path / "v.json") == vocab
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataFileError, match="corrupt"):
        Vocabulary.load(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="max_length"):
        Vocabulary([], max_length=1)
    assert tokenise("The bird's beak, short.") == ["the", "bird's", "beak", ",", "short", "."]


def test_padded_categorical_matches_hand_computation_and_ignores_padding():
    logits = torch.randn(2, 3, 4, 5, requires_grad=True)  # (K, B, L, V)
    x = torch.tensor([[1, 3, 2, 0], [4, 2, 0, 0], [0, 0, 0, 0]])  # 0 = padding
    lik = DISTRIBUTIONS.get("categorical-padded")(logits)
    total = lik.log_prob_sum(x, 2)
    lp = torch.log_softmax(logits, -1)
    hand = torch.zeros(2, 3)
    for k in range(2):
        for b in range(3):
            for pos in range(4):
                if x[b, pos] != 0:
                    hand[k, b] += lp[k, b, pos, x[b, pos]]
    torch.testing.assert_close(total, hand)
    assert float(total.detach()[:, 2].abs().max()) == 0.0  # an all-padding caption has log p = 0
    one_hot = torch.nn.functional.one_hot(x, 5).float()
    torch.testing.assert_close(lik.log_prob_sum(one_hot, 2), hand)
    total.sum().backward()
    assert float(logits.grad[:, 2].abs().max()) == 0.0
    assert float(logits.grad[:, 0, 3].abs().max()) == 0.0 and float(logits.grad[:, 1, 2:].abs().max()) == 0.0
    assert float(logits.grad[:, 0, 0].abs().max()) > 0


def test_sentence_networks_shapes_and_tied_weights():
    from mmdgm.config import ModalityConfig, ModelConfig
    from mmdgm.models.factory import build_model

    enc = ENCODERS.get("cub-sentence")((32, 1590), 64)
    dec = DECODERS.get("cub-sentence")((32, 1590), 64)
    assert enc.embedding.weight.shape == (1590, 128)  # MMVAE: 1590 x 128, 1 x 32 x 128 image
    loc, raw = enc(torch.randint(0, 1590, (3, 32)))
    assert loc.shape == raw.shape == (3, 64)
    assert dec(torch.randn(2, 3, 64)).shape == (2, 3, 32, 1590)
    cfg = ModelConfig(name="mmvae", latent_dim=8, modalities={
        "image": ModalityConfig(encoder="cub-conv", decoder="cub-conv", net_options={"width": 4}),
        "caption": ModalityConfig(encoder="cub-sentence", decoder="cub-sentence", likelihood="categorical-padded",
                                  net_options={"embedding_dim": 32, "width": 4}),
    })
    model = build_model(cfg, {"image": (3, 64, 64), "caption": (16, 11)})
    assert model.decoders["caption"].out.weight is model.encoders["caption"].embedding.weight
    assert model.modalities["caption"].kind == "text"
    # indices and their one-hot rows embed identically
    x = torch.randint(0, 11, (4, 16))
    e = model.encoders["caption"].eval()
    torch.testing.assert_close(e(x)[0], e(torch.nn.functional.one_hot(x, 11).float())[0])
    with pytest.raises(ValueError, match="divisible by 8"):
        ENCODERS.get("cub-sentence")((20, 11), 8)


def test_batch_validates_token_indices():
    from mmdgm.modalities import Modality

    spec = {"caption": Modality("caption", (4, 6), kind="text", likelihood="categorical-padded")}
    Batch({"caption": torch.tensor([[1, 2, 0, 0]])}).validate(spec)
    with pytest.raises(BatchError, match="outside"):
        Batch({"caption": torch.tensor([[1, 6, 0, 0]])}).validate(spec)
    with pytest.raises(BatchError, match="token shape"):
        Batch({"caption": torch.tensor([[1, 2, 0]])}).validate(spec)


@pytest.mark.parametrize("level", [1, 2, 3, 4, 5])
def test_parser_inverts_every_template_and_synonym(level):
    rng = np.random.default_rng(level)
    names = level_attributes(level)
    attributes = sample_attributes(300, level, rng)
    templates = set()
    for row in attributes.tolist():
        text = caption({a: names[a][v] for a, v in zip(names, row)}, rng)
        assert parse_caption(tokenise(text), level) == row, text
        templates.add(text.split()[0] + text.split()[1])
    assert len(templates) >= 4  # several phrasings are drawn
    assert len(list(names)) == level and list(names) == list(ATTRIBUTES)[:level]  # levels add attributes


@pytest.mark.parametrize("template", range(6))
def test_parser_inverts_each_template_at_every_level(template, monkeypatch):
    import mmdgm.data.scene_captions as grammar

    monkeypatch.setattr(grammar, "TEMPLATES", (grammar.TEMPLATES[template],))
    rng = np.random.default_rng(template)
    for level in range(1, 6):
        names = level_attributes(level)
        for row in sample_attributes(60, level, rng).tolist():
            text = grammar.caption({a: names[a][v] for a, v in zip(names, row)}, rng)
            assert parse_caption(tokenise(text), level) == row, text
            assert "  " not in text and len(tokenise(text)) < 24  # fits max_length with the end token


def test_parser_rejects_missing_and_contradicting_words():
    assert parse_caption("a red blue circle".split(), 3) == [0, -1, -1]
    assert parse_caption("a big circle at the top".split(), 4) == [0, 1, -1, -1]


def test_synthetic_captions_dataset_is_seeded_cached_and_levelled(data_root):
    build = DATASETS.get("synthetic-captions")
    a, b = build("train", data_root, **OPTS), build("train", data_root, **OPTS)
    assert torch.equal(a.sources["image"], b.sources["image"]) and torch.equal(a.sources["caption"], b.sources["caption"])
    other = build("train", data_root, **{**OPTS, "seed": 1})
    assert not torch.equal(a.sources["image"], other.sources["image"])
    assert len(a) == 600 and a.shapes["image"] == (3, 64, 64) and a.shapes["caption"] == (24, len(a.vocabularies["caption"]))
    test = build("test", data_root, **OPTS)
    assert test.vocabularies["caption"] == a.vocabularies["caption"]  # the train vocabulary, cached
    batch = a.batch(torch.arange(10))
    assert batch.data["caption"].dtype == torch.long and batch.data["image"].dtype == torch.float32
    assert torch.equal(a.index["image"][:10], torch.arange(10) // 5)
    reader = CaptionAttributeReader(a.shapes["caption"], [len(v) for v in a.attributes.values()])
    reader.set_vocabulary(a.vocabularies["caption"])
    truth = a.attribute_values()
    got = reader.attributes(a.sources["caption"])
    known = (a.sources["caption"] != Vocabulary.unk).all(1)  # words rarer than min_count in this tiny set
    assert known.float().mean() > 0.9 and torch.equal(got[known], truth[known])
    small = build("train", data_root, **{**OPTS, "level": 1})
    assert list(small.attributes) == ["shape"] and int(small.labels.max()) < 4


class Oracle(nn.Module):
    """An exact image attribute reader for the test: looks images up among known ones."""

    def __init__(self, images: torch.Tensor, attributes: torch.Tensor) -> None:
        super().__init__()
        self.images, self.values = images.float().div(255).flatten(1), attributes

    def attributes(self, x: torch.Tensor) -> torch.Tensor:
        return self.values[torch.cdist(x.flatten(1), self.images).argmin(1)]


class FakeModel(nn.Module):
    """Generates the row's own other modality (perfect) or a random row's (chance)."""

    def __init__(self, ds, perfect: bool) -> None:
        super().__init__()
        self.ds, self.perfect, self.names = ds, perfect, ["image", "caption"]
        self.dummy = nn.Parameter(torch.zeros(1))

    def cross_generate(self, batch, source, target):
        x = batch.data[target]
        return x if self.perfect else x[torch.randperm(len(x))]

    def sample(self, n, names=None):
        rows = torch.randint(len(self.ds), (n,))
        other = rows if self.perfect else torch.randint(len(self.ds), (n,))
        return {"image": self.ds.batch(rows).data["image"], "caption": self.ds.batch(other).data["caption"]}


def test_attribute_coherence_perfect_and_random(data_root):
    ds = DATASETS.get("synthetic-captions")("test", data_root, **{**OPTS, "n_test": 200})
    image_truth = ds.attribute_values(ds.labels[torch.arange(0, len(ds), 5)])
    reader = CaptionAttributeReader(ds.shapes["caption"], [len(v) for v in ds.attributes.values()])
    reader.set_vocabulary(ds.vocabularies["caption"])
    ds = ds.subset(torch.nonzero((ds.sources["caption"] != Vocabulary.unk).all(1)).flatten())
    classifiers = {"image": Oracle(ds.sources["image"], image_truth), "caption": reader}
    for perfect in (True, False):
        ctx = EvalContext(model=FakeModel(ds, perfect), test_set=ds, classifiers=classifiers,
                          batch_size=256, progress=False)
        out = attribute_coherence(ctx, n=500)
        assert out["data"]["mean"] == 1.0
        if perfect:
            for key in ("image->caption", "caption->image", "joint"):
                assert out[key]["mean"] == 1.0 and out[key]["all"] == 1.0, key
        else:
            for key in ("image->caption", "caption->image", "joint"):
                for a, values in ds.attributes.items():  # chance: 1/k for uniform attributes
                    assert abs(out[key][a] - 1 / len(values)) < 0.1, (key, a, out[key][a])


def test_captioned_grid_and_text_lines(tmp_path):
    from PIL import Image

    from mmdgm.train.grids import save_captioned_grid

    rows = [(torch.rand(3, 3, 64, 64), ["a big red circle", "a tiny blue square at the top left corner", ""]),
            (None, ["x", "y", "z"])]
    save_captioned_grid(rows, tmp_path / "g.png")
    with Image.open(tmp_path / "g.png") as im:
        assert im.width == 3 * (128 + 4) + 4 and im.height > 128 + 20


def test_tiny_training_through_the_config(tmp_path, monkeypatch):
    from mmdgm.config import load_config
    from mmdgm.run import train

    monkeypatch.setenv("MMDGM_DATA_DIR", str(tmp_path / "data"))
    cfg = load_config("mmvae-captions", [
        "data.options.n_train=16", "data.options.n_test=8", "data.options.captions_per_image=2",
        "data.options.min_count=1", "train.epochs=1", "train.batch_size=16", "train.grid_size=4",
        "model.options.K=2",
    ])
    run = train(cfg, tmp_path / "run")
    grids = sorted(p.name for p in (run / "grids").iterdir())
    assert "epoch001-captions-joint.png" in grids and "epoch001-captions-from-image.png" in grids
    assert "caption ->" in (run / "grids" / "epoch001-text.txt").read_text()
    import json

    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert records and all(math.isfinite(r["loss"]) for r in records)
    from mmdgm.cli import main

    assert main(["evaluate", str(run), "--metrics", "latent_kl", "--split", "val", "--device", "cpu"]) == 0
    assert (run / "val" / "eval.json").is_file() and (run / "val" / "eval" / "latent-kl.png").is_file()
    assert not (run / "eval.json").exists()  # the test split's results are not touched
    assert main(["evaluate", str(run), "--metrics", "latent_kl", "--device", "cpu"]) == 0
    val, test = (json.loads(p.read_text())["latent_kl"] for p in (run / "val" / "eval.json", run / "eval.json"))
    assert val != test
    with pytest.raises(SystemExit):
        main(["evaluate", str(run), "--metrics", "latent_kl", "--split", "train"])


@pytest.mark.parametrize("name,options,contrastive", [
    ("mvae", {"K": 1}, None), ("jmvae", {}, None), ("meme", {"n_pseudo": 3, "inner_samples": 2}, None),
    ("mmvae", {"K": 2}, {"n_negatives": 2, "K": 2}),
])
def test_caption_models_take_a_training_step(data_root, name, options, contrastive):
    from mmdgm.config import ContrastiveConfig, ModalityConfig, ModelConfig
    from mmdgm.models.factory import build_model

    ds = DATASETS.get("synthetic-captions")("train", data_root, **OPTS)
    cfg = ModelConfig(
        name=name, latent_dim=4, prior="normal", posterior="normal", posterior_scale="softplus", prior_scale="free",
        learn_prior=False, options=options,
        contrastive=None if contrastive is None else ContrastiveConfig(**contrastive),
        modalities={
            "image": ModalityConfig(encoder="cub-conv", decoder="cub-conv", net_options={"width": 2}),
            "caption": ModalityConfig(encoder="cub-sentence", decoder="cub-sentence", likelihood="categorical-padded",
                                      net_options={"embedding_dim": 32, "width": 2}),
        })
    model = build_model(cfg, ds.shapes)
    model.initialise_from_data(ds)
    batch = ds.batch(torch.arange(8))
    out = model(batch)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    embedding = model.encoders["caption"].embedding.weight
    assert embedding.grad is not None and float(embedding.grad.abs().sum()) > 0
    generated = model.cross_generate(batch, "image", "caption")
    assert generated.shape == (8, *ds.shapes["caption"])


class PartnerModel(torch.nn.Module):
    """Cross generation returns each row's real partner (a perfect model); joint samples
    pair test images with the captions of rows 17 further on (other images: the rows of an
    image are consecutive, 5 captions each)."""

    def __init__(self, ds):
        super().__init__()
        self.ds = ds
        self.names = ["image", "caption"]
        self.modalities = {m: types.SimpleNamespace(shape=tuple(s)) for m, s in ds.shapes.items()}

    def cross_generate(self, batch, source, target):
        return batch.data[target]

    def sample(self, n, names=None):
        rows = torch.arange(n) % len(self.ds)
        batch = self.ds.batch(rows)
        return {"image": batch.data["image"], "caption": batch.data["caption"].roll(17, 0)}


def test_cca_coherence_of_a_perfect_model_equals_the_ground_truth(data_root):
    """Cross generations that return the real partner score exactly the ground truth (the
    same pairs); joint samples of unrelated pairs score near 0 and below it; the evaluator
    is fitted on the training pairs."""
    from mmdgm.evaluate import METRICS

    train = DATASETS.get("synthetic-captions")("train", data_root, **{**OPTS, "n_train": 300})
    test = DATASETS.get("synthetic-captions")("test", data_root, **{**OPTS, "n_test": 80})
    ctx = EvalContext(model=PartnerModel(test), test_set=test, train_set=train, batch_size=64, progress=False)
    out = METRICS.get("cca_coherence")(ctx, n_train=None, n=None, k=8, backend="ppmi-svd", pca_components=32)
    assert out["n"] == len(test) and out["n_train"] == len(train)
    assert out["ground_truth"] > 0.3
    assert out["image->caption"] == pytest.approx(out["ground_truth"], abs=1e-9)
    assert out["caption->image"] == pytest.approx(out["ground_truth"], abs=1e-9)
    assert abs(out["joint"]) < out["ground_truth"] / 2
    with pytest.raises(ValueError, match="needs the run's training pairs"):
        METRICS.get("cca_coherence")(EvalContext(model=PartnerModel(test), test_set=test, progress=False))
    options = dict(n_train=None, n=None, k=8, backend="ppmi-svd", pca_components=32)
    data = [f"data.root={data_root}", *(f"data.options.{k}={v}" for k, v in {**OPTS, "n_train": 300}.items())]
    protocols = {"masked": ["data.options.observed_fraction=0.1", "data.options.unpaired_scheme=only:caption"],
                 "sub-sampled": ["data.options.unimodal_fraction=0.2"]}
    for name, protocol in protocols.items():
        config = load_config("mmvae-captions", data + protocol)
        run_train = load_dataset(config, "train")
        ctx = EvalContext(model=PartnerModel(test), test_set=test, train_set=run_train, batch_size=64,
                          progress=False, full_train=lambda: load_dataset(config, "train", full=True))
        every = METRICS.get("cca_coherence")(ctx, **options, fit_pairs="all")
        assert every["n_train"] == len(train), name
        assert every["ground_truth"] == pytest.approx(out["ground_truth"], abs=1e-9), name
        observed = METRICS.get("cca_coherence")(ctx, **options)
        assert observed["n_train"] == int((run_train.mask["image"] & run_train.mask["caption"]).sum()) < len(train) / 4
    with pytest.raises(ValueError, match="fit_pairs must be"):
        METRICS.get("cca_coherence")(ctx, **options, fit_pairs="complete")


def test_procedural_datasets_draw_an_independent_validation_split(data_root):
    """'val' is drawn like 'test' (n_test images, complete, the train vocabulary) but from its
    own seed; datasets of real files have no 'val' and say which datasets do."""
    build = DATASETS.get("synthetic-captions")
    train, test = build("train", data_root, **OPTS), build("test", data_root, **OPTS)
    val = build("val", data_root, **OPTS, observed_fraction=0.25, unimodal_fraction=0.5)
    assert len(val) == len(test) and val.vocabularies == train.vocabularies
    assert all(bool(m.all()) for m in val.mask.values())
    assert torch.equal(val.sources["image"], build("val", data_root, **OPTS).sources["image"])
    for other in (train, test):
        assert not (val.sources["image"][:, None] == other.sources["image"][None]).flatten(2).all(-1).any()
    street = DATASETS.get("synthetic-street-digits")
    s_val, s_test = (street(split, data_root, n_train=20, n_test=20) for split in ("val", "test"))
    assert len(s_val) == 20 and not torch.equal(s_val.sources["synth_street"], s_test.sources["synth_street"])
    with pytest.raises(ValueError, match="unknown split 'val'; this dataset has 'train', 'test'; a 'val' split is drawn by the procedural"):
        DATASETS.get("mnist")("val", data_root)
    with pytest.raises(ValueError, match="unknown split 'dev'; this dataset has 'train', 'val', 'test'$"):
        build("dev", data_root, **OPTS)


def test_synthetic_captions_fraction_protocols(data_root):
    """unimodal_fraction keeps whole images (all their captions, a share of each attribute
    combination); observed_fraction masks rows by the scheme; the test split is untouched."""
    build = DATASETS.get("synthetic-captions")
    full = build("train", data_root, **OPTS)
    part = build("train", data_root, **OPTS, unimodal_fraction=0.5)
    images = part.index["image"].view(-1, OPTS["captions_per_image"])
    assert (images == images[:, :1]).all() and len(images.unique()) == len(images)
    assert (part.index["caption"] // OPTS["captions_per_image"] == part.index["image"]).all()
    assert torch.equal(part.labels, full.labels[part.index["caption"]])
    per_class = torch.bincount(full.labels[:: OPTS["captions_per_image"]])
    kept = torch.bincount(part.labels[:: OPTS["captions_per_image"]], minlength=len(per_class))
    assert torch.equal(kept, torch.round(per_class * 0.5).long())
    only = build("train", data_root, **OPTS, observed_fraction=0.25, unpaired_scheme="only:caption")
    both = only.mask["image"] & only.mask["caption"]
    assert int(both.sum()) == round(0.25 * len(only)) and only.mask["caption"].all()
    assert build("test", data_root, **OPTS, observed_fraction=0.25).mask["image"].all()
    with pytest.raises(ValueError, match="names modality 'captions'"):
        build("train", data_root, **OPTS, observed_fraction=0.5, unpaired_scheme="only:captions")


def test_the_caption_tables_cca_fits_on_the_smallest_synthetic_training_set(data_root):
    """The cpu and paper scales' CCA k fits the word vectors of the synthetic captions of 120
    scenes (contrastive-table2's 20 % of 600), whose vocabulary bounds their dimension: k=40
    (the papers') failed there with 38 dimensions."""
    from mmdgm.evaluate.cca_core import CCAEvaluator
    from mmdgm.reproduce import EXPERIMENTS
    from mmdgm.reproduce.captions import CCA_K

    ds = DATASETS.get("synthetic-captions")("train", data_root, n_train=120)
    batch = ds.batch(torch.arange(len(ds)))
    sentences = ds.vocabularies["caption"].tokens(batch.data["caption"])
    images = batch.data["image"].numpy()
    summary = CCAEvaluator(k=CCA_K, backend="ppmi-svd").fit(images, sentences).summary()
    assert summary["word_dim"] >= CCA_K
    for name in ("mmvae-table4", "contrastive-table2", "meme-table5"):
        for scale in ("cpu", "paper"):
            options = EXPERIMENTS.get(name).scales[scale].metric_options["cca_coherence"]
            assert options["k"] == CCA_K and options["backend"] == "ppmi-svd"  # pinned: not 'auto'
        assert EXPERIMENTS.get(name).scales["smoke"].metric_options["cca_coherence"]["backend"] == "ppmi-svd"
