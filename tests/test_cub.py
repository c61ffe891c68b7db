"""The CUB image-caption loaders on tiny CUB-like trees built on disk."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mmdgm.data import DATASETS
from mmdgm.data.errors import DataFileError
from mmdgm.data.vocabulary import Vocabulary

TRAIN = {"001.Black_footed_Albatross": 2, "003.Sooty_Albatross": 1}
TEST = {"002.Laysan_Albatross": 1}


def image(path, colour, size=(50, 37)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def captions_of(cls: str, i: int) -> list[str]:
    return [f"this bird {cls.split('.')[1].lower().replace('_', '')} number {i} has wings" for _ in range(10)]


def standard_tree(root):
    cub = root / "cub"
    for split, classes in (("trainvalclasses.txt", TRAIN), ("testclasses.txt", TEST)):
        (cub).mkdir(parents=True, exist_ok=True)
        (cub / split).write_text("\n".join(classes) + "\n")
        for c, n in classes.items():
            for i in range(n):
                image(cub / "images" / c / f"{c}_{i}.jpg", (40 * i, 100, 200))
                (cub / "text_c10" / c).mkdir(parents=True, exist_ok=True)
                (cub / "text_c10" / c / f"{c}_{i}.txt").write_text("\n".join(captions_of(c, i)) + "\n")
    return cub


def mmvae_tree(root):
    cub = root / "cub"
    for folder, text, classes in (("train", "text_trainvalclasses.txt", TRAIN), ("test", "text_testclasses.txt", TEST)):
        lines = []
        for c in sorted(classes):
            for i in range(classes[c]):
                image(cub / folder / c / f"img{i}.jpg", (200, 40 * i, 10))
                lines += captions_of(c, i)
        (cub / text).write_text("\n".join(lines) + "\n")
    return cub


@pytest.mark.parametrize("layout", [standard_tree, mmvae_tree])
def test_cub_rows_pair_each_caption_with_its_image(tmp_path, layout):
    layout(tmp_path)
    train = DATASETS.get("cub")("train", tmp_path, min_count=1)
    assert len(train) == 30 and train.shapes["image"] == (3, 64, 64)
    assert train.sources["image"].shape == (3, 3, 64, 64)  # resized
    assert torch.equal(train.index["image"], torch.arange(30) // 10)
    assert train.labels.tolist() == [0] * 20 + [2] * 10  # class folder number - 1
    vocab = train.vocabularies["caption"]
    assert train.shapes["caption"] == (32, len(vocab))
    words = vocab.tokens(train.sources["caption"])
    assert words[0] == "this bird blackfootedalbatross number 0 has wings".split()
    assert words[10][4] == "1" and words[20][2] == "sootyalbatross"
    test = DATASETS.get("cub")("test", tmp_path, min_count=1)
    assert test.vocabularies["caption"] == vocab  # built from the train captions, cached
    assert len(test) == 10 and test.labels.tolist() == [1] * 10
    assert "<unk>" in vocab.tokens(test.sources["caption"])[0]  # "laysanalbatross" is not a train word


def test_cub_vocabulary_min_count_and_max_length(tmp_path):
    standard_tree(tmp_path)
    ds = DATASETS.get("cub")("train", tmp_path, min_count=20, max_length=8)
    words = ds.vocabularies["caption"].words
    assert "this" in words and "blackfootedalbatross" in words and "sootyalbatross" not in words  # 20 vs 10
    assert ds.shapes["caption"][0] == 8


def test_cub_features_from_user_array(tmp_path):
    cub = standard_tree(tmp_path)
    (cub / "features").mkdir()
    np.save(cub / "features" / "train.npy", np.arange(3 * 2048, dtype=np.float32).reshape(3, 2048))
    ds = DATASETS.get("cub-features")("train", tmp_path, min_count=1)
    assert ds.shapes["features"] == (2048,)
    assert torch.equal(ds.batch(torch.tensor([25])).data["features"][0, :2], torch.tensor([4096.0, 4097.0]))
    with pytest.raises(FileNotFoundError, match="test.npy"):
        DATASETS.get("cub-features")("test", tmp_path, min_count=1)
    np.save(cub / "features" / "test.npy", np.zeros((2, 2048), dtype=np.float32))
    with pytest.raises(DataFileError, match=r"\(1, 2048\)"):
        DATASETS.get("cub-features")("test", tmp_path, min_count=1)


def test_cub_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="cub/"):
        DATASETS.get("cub")("train", tmp_path)
    cub = standard_tree(tmp_path / "a")
    (cub / "text_c10" / "003.Sooty_Albatross" / "003.Sooty_Albatross_0.txt").unlink()
    with pytest.raises(FileNotFoundError, match="003.Sooty_Albatross_0.txt"):
        DATASETS.get("cub")("train", tmp_path / "a")
    cub = standard_tree(tmp_path / "b")
    (cub / "text_c10" / "003.Sooty_Albatross" / "003.Sooty_Albatross_0.txt").write_text("one caption\n")
    with pytest.raises(DataFileError, match="1 captions"):
        DATASETS.get("cub")("train", tmp_path / "b")
    cub = standard_tree(tmp_path / "c")
    (cub / "images" / "002.Laysan_Albatross" / "002.Laysan_Albatross_0.jpg").write_bytes(b"not a jpeg")
    DATASETS.get("cub")("train", tmp_path / "c", min_count=1)
    with pytest.raises(DataFileError, match="cannot be read"):
        DATASETS.get("cub")("test", tmp_path / "c", min_count=1)
    cub = mmvae_tree(tmp_path / "d")
    (cub / "text_testclasses.txt").write_text("too few\n")
    DATASETS.get("cub")("train", tmp_path / "d", min_count=1)
    with pytest.raises(DataFileError, match="expected 10 per image"):
        DATASETS.get("cub")("test", tmp_path / "d", min_count=1)


def test_cub_configs_build_their_models():
    from mmdgm.config import load_config
    from mmdgm.models.factory import build_model

    shapes = {"image": (3, 64, 64), "caption": (32, 50)}
    for name in ("mmvae-cub", "mvae-cub", "jmvae-cub", "meme-cub", "ci-mmvae-cub"):
        cfg = load_config(name)
        cfg.model.latent_dim = 8
        for m in cfg.model.modalities.values():
            m.net_options = {"width": 4} if m.encoder == "cub-conv" else {"embedding_dim": 32, "width": 4}
        model = build_model(cfg.model, shapes)
        assert model.decoders["caption"].out.weight is model.encoders["caption"].embedding.weight
        assert isinstance(Vocabulary.eos, int)
