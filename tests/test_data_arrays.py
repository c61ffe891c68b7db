"""`arrays`: a researcher's own .npz / .npy data, its checks, splits, and a model trained
on it from a YAML file alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmdgm import cli
from mmdgm.data import DATASETS
from mmdgm.data.errors import DataFileError
from mmdgm.evaluate.runner import read_eval

build = DATASETS.get("arrays")


def features(n=60, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    centres = rng.normal(size=(3, 6)) * 3
    return {"audio": (centres[y] + rng.normal(size=(n, 6))).astype(np.float32),
            "motion": (centres[y][:, :4] * 2 + rng.normal(size=(n, 4))).astype(np.float64),
            "labels": y}


def test_npz_and_folder_give_the_same_split(tmp_path):
    arrays = features()
    np.savez(tmp_path / "data.npz", **arrays)
    (tmp_path / "folder").mkdir()
    for k, v in arrays.items():
        np.save(tmp_path / "folder" / f"{k}.npy", v)
    train, test = build("train", tmp_path, path="data.npz"), build("test", tmp_path, path="data.npz")
    assert len(train) == 48 and len(test) == 12 and train.shapes == {"audio": (6,), "motion": (4,)}
    rows = torch.cat([train.labels, test.labels]).sort().values
    assert torch.equal(rows, torch.from_numpy(np.sort(arrays["labels"])))
    folder = build("train", tmp_path, path=str(tmp_path / "folder"))
    assert torch.equal(folder.batch(torch.arange(5)).data["audio"], train.batch(torch.arange(5)).data["audio"])
    batch = train.batch(torch.arange(48))
    # rows stay paired: motion is the same row's centre-derived vector
    i = int(torch.nonzero(torch.from_numpy(arrays["audio"]) == batch.data["audio"][0])[0, 0])
    assert torch.allclose(batch.data["motion"][0], torch.from_numpy(arrays["motion"][i]).float())


def test_test_path_partial_observation_and_no_labels(tmp_path):
    np.savez(tmp_path / "train.npz", **{k: v for k, v in features(40).items() if k != "labels"})
    np.savez(tmp_path / "test.npz", **{k: v for k, v in features(10, seed=1).items() if k != "labels"})
    train = build("train", tmp_path, path="train.npz", test_path="test.npz", observed_fraction=0.5)
    test = build("test", tmp_path, path="train.npz", test_path="test.npz")
    assert len(train) == 40 and len(test) == 10 and int(train.labels.sum()) == 0
    both = train.mask["audio"] & train.mask["motion"]
    assert int(both.sum()) == 20 and bool((train.mask["audio"] | train.mask["motion"]).all())


def test_val_fraction_holds_out_training_rows(tmp_path):
    """val_fraction carves a seeded share of the non-test rows out of training: the three
    splits partition the file, the test split is the one without it, val is never masked."""
    arrays = features()
    np.savez(tmp_path / "data.npz", **arrays)
    plain = {s: build(s, tmp_path, path="data.npz") for s in ("train", "test")}
    held = {s: build(s, tmp_path, path="data.npz", val_fraction=0.25, observed_fraction=0.5) for s in ("train", "val", "test")}
    assert (len(held["train"]), len(held["val"]), len(held["test"])) == (36, 12, 12)
    torch.testing.assert_close(held["test"].batch(torch.arange(12)).data["audio"], plain["test"].batch(torch.arange(12)).data["audio"])
    rows = [held[s].batch(torch.arange(len(held[s]))).data["audio"] for s in ("train", "val", "test")]
    everything = torch.cat(rows)
    assert len(torch.unique(everything, dim=0)) == 60
    assert all(bool(m.all()) for m in held["val"].mask.values()) and not held["train"].mask["audio"].all()
    np.savez(tmp_path / "test.npz", **features(10, seed=1))
    other = {s: build(s, tmp_path, path="data.npz", test_path="test.npz", val_fraction=0.1) for s in ("train", "val", "test")}
    assert (len(other["train"]), len(other["val"]), len(other["test"])) == (54, 6, 10)
    with pytest.raises(ValueError, match=r"no 'val' split; set data.options.val_fraction"):
        build("val", tmp_path, path="data.npz")
    with pytest.raises(ValueError, match=r"val_fraction must be in \[0, 1\), got 1.0"):
        build("train", tmp_path, path="data.npz", val_fraction=1.0)
    with pytest.raises(ValueError, match="leave no training rows"):
        build("train", tmp_path, path="data.npz", test_fraction=0.5, val_fraction=0.99)


@pytest.mark.parametrize("damage, message", [
    (lambda a: {k: v for k, v in a.items() if k != "motion"}, "gives 1 modality"),
    (lambda a: {**a, "motion": a["motion"][:-1]}, "row counts differ"),
    (lambda a: {**a, "audio": np.where(np.arange(60)[:, None] == 3, np.nan, a["audio"])}, "NaN or inf in 1 rows"),
    (lambda a: {**a, "audio": a["audio"].astype(np.complex64)}, "dtype complex64"),
    (lambda a: {**a, "labels": a["labels"] - 1}, "non-negative integers"),
    (lambda a: {**a, "labels": a["labels"].astype(np.float32)}, "non-negative integers"),
    (lambda a: {**a, "audio": a["audio"][:, :, None]}, "use \\(N, features\\)"),
], ids=["one-modality", "ragged", "nan", "complex", "negative-labels", "float-labels", "3d"])
def test_malformed_input_is_a_named_error(tmp_path, damage, message):
    arrays = damage(features())
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataFileError, match=message):
        build("train", tmp_path, path="bad.npz")


def test_missing_file_key_and_corrupt_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build("train", tmp_path, path="none.npz")
    np.savez(tmp_path / "d.npz", **features())
    with pytest.raises(DataFileError, match=r"lacks modalities \['video'\]"):
        build("train", tmp_path, path="d.npz", modalities=["audio", "video"])
    (tmp_path / "corrupt.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DataFileError, match="cannot read"):
        build("train", tmp_path, path="corrupt.npz")
    with pytest.raises(ValueError, match="set data.options.path"):
        build("train", tmp_path)


YAML = """
data:
  name: arrays
  options: {{path: {path}, test_fraction: 0.25}}
model:
  name: mvae
  latent_dim: 4
  prior: normal
  posterior: normal
  posterior_scale: exp
  prior_scale: free
  learn_prior: false
  modalities:
    audio: {{encoder: mlp, decoder: mlp, likelihood: normal, likelihood_scale: 1.0, net_options: {{hidden: [16]}}}}
    motion: {{encoder: mlp, decoder: mlp, likelihood: normal, likelihood_scale: 1.0, net_options: {{hidden: [16]}}}}
train:
  epochs: 8
  batch_size: 16
  final_metrics: [latent_accuracy]
"""


def test_any_model_trains_on_arrays_from_a_yaml_file(tmp_path):
    np.savez(tmp_path / "mine.npz", **features(240))
    (tmp_path / "mine.yaml").write_text(YAML.format(path=tmp_path / "mine.npz"))
    assert cli.main(["train", "--config", str(tmp_path / "mine.yaml"), "--run-dir", str(tmp_path / "run")]) == 0
    acc = read_eval(tmp_path / "run")["latent_accuracy"]
    assert set(acc) >= {"audio", "motion"} and min(acc["audio"], acc["motion"]) > 0.6  # chance: 1/3
