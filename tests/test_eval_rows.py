"""Which test rows a metric over `n` of them evaluates (`evaluate.common.sampled_rows`)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mmdgm.data import MultimodalDataset
from mmdgm.data.pairing import match_by_class
from mmdgm.data.sampling import sampled_rows
from mmdgm.evaluate import METRICS, EvalContext
from tests.test_eval_fast import small_model
from tests.test_eval_likelihood import context as likelihood_context
from tests.test_eval_likelihood import linear_gaussian


def test_sampled_rows_are_a_seeded_sample_without_replacement():
    rows = sampled_rows(1000, 200, 7, "random", "metric")
    assert len(rows) == 200 and len(rows.unique()) == 200 and 0 <= int(rows.min()) and int(rows.max()) < 1000
    assert torch.equal(rows, sampled_rows(1000, 200, 7, "random", "metric"))
    assert not torch.equal(rows, sampled_rows(1000, 200, 8, "random", "metric"))
    assert torch.equal(sampled_rows(1000, 200, 7, "first", "metric"), torch.arange(200))
    for n in (None, 1000, 5000):
        assert torch.equal(sampled_rows(1000, n, 7, "random", "metric"), torch.arange(1000))
    with pytest.raises(ValueError, match="metric: rows must be one of"):
        sampled_rows(1000, 200, 7, "last", "metric")
    with pytest.raises(ValueError, match="metric: no rows"):
        sampled_rows(1000, 0, 7, "random", "metric")


class ClassZero(nn.Module):
    """Predicts class 0 for every row."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    names = ["a", "b"]

    def predict(self, batch) -> torch.Tensor:
        return torch.nn.functional.one_hot(torch.zeros(batch.size, dtype=torch.long), 10).float()


def test_a_class_sorted_test_set_is_sampled_across_classes(tmp_path):
    """Paired test sets are stored grouped by class (`match_by_class`), so the first 100 rows
    are all digit 0: a classifier that always says 0 scores no error there, and about 90 %
    on a random sample, as on the whole set."""
    labels = torch.arange(2000) % 10
    (rows_a, rows_b), shared = match_by_class([labels, labels], dm=1, seed=0)
    test = MultimodalDataset({"a": torch.randn(2000, 3), "b": torch.randn(2000, 3)}, shared,
                             {"a": rows_a, "b": rows_b}, name="sorted")
    assert bool((shared[:100] == 0).all())
    ctx = EvalContext(model=ClassZero(), test_set=test, out_dir=tmp_path, batch_size=64, seed=3, progress=False)
    error = METRICS.get("prediction_error")
    assert error(ctx, n=100, rows="first") == {"error": 0.0, "n": 100}
    sampled = error(ctx, n=400)["error"]
    assert abs(sampled - 0.9) < 4 * (0.9 * 0.1 / 400) ** 0.5
    assert error(ctx)["error"] == pytest.approx(0.9)


def test_the_likelihood_is_of_the_sampled_rows_exactly():
    """On the exact linear-Gaussian MMVAE, the joint log-likelihood over n=5 rows equals the
    closed form averaged over `sampled_rows`' five rows, not over the first five."""
    model, data, exact = linear_gaussian(40)
    chosen = sampled_rows(40, 5, 0, "random", "test")
    assert not torch.equal(chosen.sort().values, torch.arange(5))
    out = METRICS.get("joint_log_likelihood")(likelihood_context(model, data), K=2000, chunk=500, n=5)
    assert out["n"] == 5 and abs(out["log p(u,v)"] - float(exact["u,v"][chosen].mean())) < 0.02
    assert abs(float(exact["u,v"][chosen].mean()) - float(exact["u,v"][:5].mean())) > 0.1
    first = METRICS.get("joint_log_likelihood")(likelihood_context(model, data), K=2000, chunk=500, n=5, rows="first")
    assert abs(first["log p(u,v)"] - float(exact["u,v"][:5].mean())) < 0.02


ROW_METRICS = {
    "joint_log_likelihood": ("mmvae", {"K": 2}),
    "conditional_log_likelihoods": ("mmvae", {"K": 2}),
    "latent_kl": ("mmvae", {"mc_samples": 2}),
    "posterior_collapse": ("mmvae", {"mc_samples": 2}),
    "w2_relatedness": ("mmvae", {}),
    "missing_rmse": ("mmvae", {"observed": ["a"]}),
    "meme_directional_likelihood": ("meme", {"K": 2}),
    "latent_traversals": ("mmvae", {}),
}


@pytest.mark.parametrize("metric", sorted(ROW_METRICS))
def test_every_metric_over_n_rows_draws_them_as_rows_says(metric, tmp_path, monkeypatch):
    """Each metric with a `rows` option hands it to the row sampler, with its `n`."""
    from mmdgm.evaluate import common, latent_structure, relatedness

    asked = []

    def recording(size, n, seed, rows, desc):
        asked.append((n, rows))
        return sampled_rows(size, n, seed, rows, desc)

    for module in (common, latent_structure, relatedness):
        monkeypatch.setattr(module, "sampled_rows", recording)
    name, options = ROW_METRICS[metric]
    g = torch.Generator().manual_seed(0)
    test = MultimodalDataset({m: torch.randn(30, 5, generator=g) for m in "ab"}, torch.arange(30) % 10, name="vectors")
    ctx = EvalContext(model=small_model(name), test_set=test, out_dir=tmp_path, batch_size=8, seed=1, progress=False)
    size = "examples" if metric == "latent_traversals" else "n"
    for rows in ("first", "random"):
        METRICS.get(metric)(ctx, **options, **{size: 6}, rows=rows)
        assert asked and all(a == (6, rows) for a in asked), asked
        asked.clear()
