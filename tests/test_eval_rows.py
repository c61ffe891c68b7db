"""Which test rows a metric over `n` of them evaluates (`evaluate.common.sampled_rows`)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mmdgm.data import MultimodalDataset
from mmdgm.data.pairing import match_by_class
from mmdgm.evaluate import METRICS, EvalContext
from mmdgm.data.sampling import sampled_rows


def test_sampled_rows_are_a_seeded_sample_without_replacement():
    rows = sampled_rows(1000, 200, 7, "random", "metric")
    assert len(rows) == 200 and len(rows.unique()) == 200 and bool((rows[1:] > rows[:-1]).all())
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
