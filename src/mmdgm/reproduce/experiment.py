"""What a reproducible experiment is: runs (config + overrides), metrics, published numbers.

An experiment names one published table or figure. Its rows are runs of built-in configs;
its columns read one value from a run's eval.json (`metric`, `key`, times `scale` plus
`offset`: e.g. 100 for a percentage, or -100 and 100 for an accuracy from an error rate); a
row may read a column from another metric (`Row.metric_for`: the table's reference row
"M-" is a metric, a model may report its own classifier's error). `published` holds the
paper's numbers as typed in from the paper (None where the paper gives none or our copy is
illegible). A scale ("smoke", "cpu", "paper") adds config overrides to every run and
options to the metrics.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from mmdgm.registry import Registry

SCALES = ("smoke", "cpu", "paper")


@dataclass(frozen=True)
class Row:
    """One run per seed of `config` with `overrides`. Rows with `x` are points of the
    curve `series` (the report plots every column against x). A row with `propagation`
    runs `mmdgm label-propagation` with that related fraction instead of one training run;
    its columns read results.json (keys as "a/b/c" paths).

    `metric_for` maps a column label to the (metric, key) this row reads for that column
    instead of the column's own, with the column's scale and offset (e.g. the "M-" row of
    an error column reads `observed_only_classifier`), or to None: no value in that cell.
    Rows of one config and overrides share their runs, so a row that only reads another
    metric of a run costs that metric alone."""

    label: str
    config: str
    overrides: tuple[str, ...] = ()
    series: str = ""
    x: float | None = None
    propagation: float | None = None
    metric_for: dict[str, tuple[str, str] | None] = field(default_factory=dict)


PROPAGATION = "propagation/"


@dataclass(frozen=True)
class Column:
    """`metric`/`key` of a run's eval.json; a metric "propagation/<path>" reads <path> of a
    label-propagation row's results.json (e.g. "propagation/runs/propagated/cross_coherence")."""

    label: str
    metric: str
    key: str
    scale: float = 1.0
    offset: float = 0.0

    def value(self, raw: float) -> float:
        """What the report shows for the metric's value `raw`: raw * scale + offset."""
        return raw * self.scale + self.offset

    @property
    def propagation_path(self) -> str | None:
        return self.metric[len(PROPAGATION):] if self.metric.startswith(PROPAGATION) else None


@dataclass(frozen=True)
class Scale:
    """Config overrides for every run and options per metric at one budget."""

    overrides: tuple[str, ...] = ()
    metric_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    note: str = ""
    # more overrides for rows whose config trains this model name, or (key "contrastive")
    # whose config has a contrastive section: options only some models accept
    by_model: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def overrides_for(self, config: str) -> list[str]:
        """Every override of this scale for a run of built-in config `config`."""
        from mmdgm.config import load_config

        model = load_config(config).model
        extra = self.by_model.get(model.name, ())
        if model.contrastive is not None:
            extra = (*extra, *self.by_model.get("contrastive", ()))
        return [*self.overrides, *extra]


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
    x_label: str = "data used (%)"  # the x axis of curves.png (rows with `x`)
    training_curves: tuple[str, ...] = ()  # logged training metrics the report plots against the step
    run_figures: tuple[str, ...] = ()  # evaluation figures (files in a run's eval/) the report tiles, one per row

    def __post_init__(self) -> None:
        missing = [s for s in SCALES if s not in self.scales]
        if missing:
            raise ValueError(f"experiment {self.name} lacks scales {missing}")
        labels = {r.label for r in self.rows}
        unknown = [r for r in self.published if r not in labels]
        if unknown:
            raise ValueError(f"experiment {self.name}: published numbers for unknown rows {unknown}")
        columns = [c.label for c in self.columns]
        for row in self.rows:
            unknown = [c for c in row.metric_for if c not in columns]
            if unknown:
                raise ValueError(f"experiment {self.name}: row {row.label!r} substitutes unknown columns {unknown}; "
                                 f"the columns are {columns}")
            bad = {c: s for c, s in row.metric_for.items()
                   if s is not None and not (isinstance(s, tuple) and len(s) == 2 and all(isinstance(p, str) for p in s))}
            if bad:
                raise ValueError(f"experiment {self.name}: row {row.label!r} metric_for values must be "
                                 f"(metric, key) pairs or None, got {bad}")

    def column_for(self, row: Row, column: Column) -> Column | None:
        """What `row` reads for `column`: the column, its substitute (`Row.metric_for`) or
        None (no value)."""
        if column.label not in row.metric_for:
            return column
        source = row.metric_for[column.label]
        return None if source is None else replace(column, metric=source[0], key=source[1])

    def metrics_of(self, row: Row) -> list[str]:
        """The metrics a plain (not label-propagation) run of `row` is evaluated with."""
        sources = (self.column_for(row, c) for c in self.columns)
        return list(dict.fromkeys(c.metric for c in sources if c is not None and c.propagation_path is None))


EXPERIMENTS: Registry[Experiment] = Registry("experiment")


def register(experiment: Experiment) -> Experiment:
    EXPERIMENTS.register(experiment.name)(experiment)
    return experiment
