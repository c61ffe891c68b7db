"""Strict, typed run configurations loaded from YAML.

Every section is a dataclass; an unknown key is an error that names the key, its place
and the nearest valid key, and so is a value out of its field's range (`at_least`,
`positive`). `key=value` overrides use dotted paths (`train.epochs=2`).
"""

from __future__ import annotations

import dataclasses
import operator
import re
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from mmdgm.registry import nearest


class ConfigError(ValueError):
    """A configuration file or override is invalid."""


BOUNDS = {">=": operator.ge, ">": operator.gt}
PRECISIONS = ("fp32", "bf16", "fp16")


def at_least(minimum: int, default: int | None) -> Any:
    """A dataclass field whose value, unless None, must be >= `minimum`."""
    return field(default=default, metadata={"bound": (">=", minimum)})


def positive(default: float | None) -> Any:
    """A dataclass field whose value, unless None, must be > 0."""
    return field(default=default, metadata={"bound": (">", 0)})


def positive_items() -> Any:
    """A list field whose every item must be > 0 (empty by default)."""
    return field(default_factory=list, metadata={"bound": (">", 0)})


def check_bound(f: dataclasses.Field, value: Any, where: str) -> None:
    """Raise a ConfigError naming `where` if `value` (or, for a list, an item of it) is
    outside the range of field `f`."""
    if value is None or "bound" not in f.metadata:
        return
    if isinstance(value, list):
        for i, item in enumerate(value):
            check_bound(f, item, f"{where}[{i}]")
        return
    op, limit = f.metadata["bound"]
    if not BOUNDS[op](value, limit):
        raise ConfigError(f"{where} must be {op} {limit}, got {value}")


@dataclass
class ModalityConfig:
    """Model-side settings of one modality (its shape comes from the dataset)."""

    encoder: str = "mlp"
    decoder: str = "mlp"
    likelihood: str = "laplace"
    likelihood_scale: float = positive(0.75)
    llik_scale: float = positive(1.0)
    net_options: dict[str, Any] = field(default_factory=dict)  # both networks
    encoder_options: dict[str, Any] = field(default_factory=dict)  # over net_options, encoder only
    decoder_options: dict[str, Any] = field(default_factory=dict)  # over net_options, decoder only


@dataclass
class DataConfig:
    name: str = "synthetic-pairs"
    root: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    # a .pt file of {modality: (n,) train-row indices}: train on these re-paired tuples instead
    train_rows: str | None = None


@dataclass
class ContrastiveConfig:
    """"Relating by contrasting" (Shi et al. 2021, eq. 4/14) over the model's objective."""

    estimator: str = "iwae"  # term 2's bound: iwae (cI-<model>) or cubo (cC-<model>)
    gamma: float = at_least(1, 2.0)  # weight of term 1, the model's own objective
    n_negatives: int = at_least(1, 5)  # N re-paired tuples per data point
    K: int | None = at_least(1, None)  # draws per bound of term 2; None: the model's K (1 if it has none)
    negatives: str = "anchored"  # anchored (eq. 2-4: one item of the pair replaced) or repaired (eq. 12-14)


@dataclass
class ModelConfig:
    name: str = "mmvae"
    latent_dim: int = at_least(1, 20)
    prior: str = "laplace"
    posterior: str = "laplace"
    posterior_scale: str = "softmax"
    prior_scale: str = "softmax"
    learn_prior: bool = True
    options: dict[str, Any] = field(default_factory=dict)
    modalities: dict[str, ModalityConfig] = field(default_factory=dict)
    contrastive: ContrastiveConfig | None = None  # set (even to {}) to train contrastively


@dataclass
class OptimizerConfig:
    """Adam settings of one of the model's parameter groups (`model.parameter_groups()`)."""

    lr: float | None = positive(None)  # None: train.lr
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    amsgrad: bool | None = None  # None: train.amsgrad

    def __post_init__(self) -> None:
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"betas must be two numbers in [0, 1), got {self.betas}")


@dataclass
class EMAConfig:
    """Exponential moving average of a parameter group's weights (Yazici et al. 2019):
    after step t, ema = w if t <= start_step else decay * ema + (1 - decay) * w."""

    decay: float = positive(0.9999)
    start_step: int = at_least(0, 0)
    params: str = "generator"  # the parameter group averaged

    def __post_init__(self) -> None:
        if not self.decay < 1.0:
            raise ConfigError(f"decay must be < 1, got {self.decay}")


@dataclass
class TrainConfig:
    epochs: int = at_least(1, 5)
    batch_size: int = at_least(1, 128)
    lr: float = positive(1e-3)
    amsgrad: bool = True
    seed: int = at_least(0, 1)
    deterministic: bool = False
    threads: int | None = at_least(1, None)
    log_every: int = at_least(1, 50)
    checkpoint_every: int = at_least(1, 200)
    grid_size: int = at_least(1, 8)
    grad_clip: float | None = positive(None)
    tensorboard: bool = False
    eval_batches: int = at_least(1, 20)
    final_metrics: list[str] = field(default_factory=list)
    snapshot_steps: list[int] = positive_items()  # global steps at which snapshots/step{N}.pt is saved
    optimizers: dict[str, OptimizerConfig] = field(default_factory=dict)  # by parameter group; absent: defaults
    ema: EMAConfig | None = None  # set to average weights for evaluation and sampling
    device: str = "auto"  # auto (CUDA when available), cpu, cuda or cuda:N; see docs/scale.md
    precision: str = "fp32"  # fp32, or bf16 / fp16 autocast of the networks (GPUs only)

    def __post_init__(self) -> None:
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {list(PRECISIONS)}, got {self.precision!r}")


@dataclass
class Config:
    name: str = "default"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def _check_type(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _check_type(value, option, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: must not be None")
    if dataclasses.is_dataclass(hint):
        return build(hint, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        (item,) = typing.get_args(hint)
        return [_check_type(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        _, vt = typing.get_args(hint)
        return {str(k): _check_type(v, vt, f"{where}.{k}") for k, v in value.items()}
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool):
        if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
            raise ConfigError(f"{where}: expected {hint.__name__}, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported type {hint}")


def build(cls: type, raw: Any, where: str = "config") -> Any:
    """Instantiate dataclass `cls` from a mapping, strictly."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    names = list(fields)
    kwargs = {}
    for key, value in raw.items():
        if key not in names:
            raise ConfigError(f"unknown config key {where}.{key}{nearest(str(key), names)}; valid keys: {names}")
        kwargs[key] = _check_type(value, hints[key], f"{where}.{key}")
        check_bound(fields[key], kwargs[key], f"{where}.{key}")
    try:
        return cls(**kwargs)
    except ConfigError as e:  # a check across fields (__post_init__)
        raise ConfigError(f"{where}: {e}") from e


def set_dotted(raw: dict, dotted: str, value: Any) -> None:
    """Set `a.b.c` in a nested mapping, creating levels as needed."""
    keys = dotted.split(".")
    node = raw
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted}: {k} is not a section")
    node[keys[-1]] = value


def parse_overrides(items: list[str]) -> list[tuple[str, Any]]:
    """`key=value` strings -> (key, YAML-parsed value)."""
    out = []
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. train.epochs=2)")
        key, text = item.split("=", 1)
        out.append((key.strip(), yaml.safe_load(text)))
    return out


def builtin_configs() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("mmdgm.configs").iterdir() if p.name.endswith(".yaml"))


def merged(base: dict, over: dict) -> dict:
    """`base` with `over` laid on top, mappings merged key by key."""
    out = dict(base)
    for key, value in over.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def read_yaml(name_or_path: str, seen: tuple[str, ...] = ()) -> dict:
    """Raw mapping of a built-in config name or a YAML file path. A top-level `base: NAME`
    starts from that config's mapping and lays this one over it."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        text = path.read_text()
    else:
        names = builtin_configs()
        if name_or_path not in names:
            raise ConfigError(f"unknown config {name_or_path!r}{nearest(name_or_path, names)}; built-in: {names}")
        text = resources.files("mmdgm.configs").joinpath(f"{name_or_path}.yaml").read_text()
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config {name_or_path}: invalid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"config {name_or_path}: top level must be a mapping")
    raw.setdefault("name", path.stem if path.suffix else name_or_path)
    if "base" in raw:
        base = raw.pop("base")
        if not isinstance(base, str):
            raise ConfigError(f"config {name_or_path}: base must be a config name or path, got {base!r}")
        if base in seen:
            raise ConfigError(f"config {name_or_path}: circular base chain {' -> '.join((*seen, base))}")
        raw = merged(read_yaml(base, (*seen, name_or_path)), raw)
    return raw


def load_config(name_or_path: str = "default", overrides: list[str] | None = None) -> Config:
    """Load a config by built-in name or path, apply `key=value` overrides, validate."""
    raw = read_yaml(name_or_path)
    for key, value in parse_overrides(overrides or []):
        set_dotted(raw, key, value)
    return build(Config, raw)


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def differences(a: Config, b: Config, ignore: tuple[str, ...] = ()) -> list[str]:
    """Dotted keys whose values differ between `a` and `b` (those in `ignore` left out)."""

    def flat(node: Any, prefix: str) -> dict[str, Any]:
        if isinstance(node, dict) and node:
            return {k: v for key, value in node.items() for k, v in flat(value, f"{prefix}{key}.").items()}
        return {prefix[:-1]: node}

    fa, fb = flat(to_dict(a), ""), flat(to_dict(b), "")
    keys = (fa.keys() | fb.keys()) - set(ignore)
    return sorted(k for k in keys if fa.get(k, "<absent>") != fb.get(k, "<absent>"))
