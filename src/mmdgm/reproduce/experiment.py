"""What a reproducible experiment is: runs (config + overrides), metrics, published numbers.

An experiment names one published table or figure. Its rows are runs of built-in configs;
its columns read one value from a run's eval.json (`metric`, `key`, multiplied by `scale`,
e.g. 100 for a percentage); `published` holds the paper's numbers as typed in from the
paper (None where the paper gives none or our copy is illegible). A scale ("smoke", "cpu",
"paper") adds config overrides to every run and options to the metrics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mmdgm.registry import Registry

SCALES = ("smoke", "cpu", "paper")


@dataclass(frozen=True)
class Row:
    label: str
    config: str
    overrides: tuple[str, ...] = ()


@dataclass(frozen=True)
class Column:
    label: str
    metric: str
    key: str
    scale: float = 1.0


@dataclass(frozen=True)
class Scale:
    """Config overrides for every run and options per metric at one budget."""

    overrides: tuple[str, ...] = ()
    metric_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    note: str = ""


@dataclass(frozen=True)
class Experiment:
    name: str
    title: str
    reference: str
    dataset: str
    rows: tuple[Row, ...]
    columns: tuple[Column, ...]
    published: dict[str, dict[str, float | None]]
    scales: dict[str, Scale]
    notes: str = ""

    def __post_init__(self) -> None:
        missing = [s for s in SCALES if s not in self.scales]
        if missing:
            raise ValueError(f"experiment {self.name} lacks scales {missing}")
        labels = {r.label for r in self.rows}
        unknown = [r for r in self.published if r not in labels]
        if unknown:
            raise ValueError(f"experiment {self.name}: published numbers for unknown rows {unknown}")

    @property
    def metrics(self) -> list[str]:
        return list(dict.fromkeys(c.metric for c in self.columns))


EXPERIMENTS: Registry[Experiment] = Registry("experiment")


def register(experiment: Experiment) -> Experiment:
    EXPERIMENTS.register(experiment.name)(experiment)
    return experiment
