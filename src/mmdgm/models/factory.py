"""Build a model from its config section and the dataset's modality shapes."""

from __future__ import annotations

import inspect

from mmdgm.config import ConfigError, ModelConfig
from mmdgm.modalities import Modality
from mmdgm.models.base import MODELS, MultimodalVAE
from mmdgm.registry import nearest


def model_options(cls: type) -> list[str]:
    """Keyword options a model class accepts beyond the shared base ones."""
    base = set(inspect.signature(MultimodalVAE.__init__).parameters)
    own = inspect.signature(cls.__init__).parameters
    return [n for n, p in own.items() if n not in base and p.kind is p.KEYWORD_ONLY]


def build_model(cfg: ModelConfig, shapes: dict[str, tuple[int, ...]]) -> MultimodalVAE:
    """The model named by `cfg`, with one modality per dataset modality."""
    cls = MODELS.get(cfg.name)
    missing = [n for n in shapes if n not in cfg.modalities]
    extra = [n for n in cfg.modalities if n not in shapes]
    if missing or extra:
        raise ConfigError(
            f"model.modalities must name exactly the dataset's modalities {sorted(shapes)}; "
            f"missing {missing}, not in the dataset {extra}"
        )
    allowed = model_options(cls)
    for key in cfg.options:
        if key not in allowed:
            raise ConfigError(f"unknown config key model.options.{key}{nearest(key, allowed)}; {cfg.name} accepts {allowed}")
    modalities = [
        Modality(
            name=n,
            shape=shapes[n],
            kind="image" if len(shapes[n]) == 3 else "vector",
            likelihood=m.likelihood,
            llik_scale=m.llik_scale,
            encoder=m.encoder,
            decoder=m.decoder,
            likelihood_scale=m.likelihood_scale,
            net_options=m.net_options,
        )
        for n, m in cfg.modalities.items()
    ]
    return cls(
        modalities,
        cfg.latent_dim,
        prior=cfg.prior,
        posterior=cfg.posterior,
        posterior_scale=cfg.posterior_scale,
        prior_scale=cfg.prior_scale,
        learn_prior=cfg.learn_prior,
        **cfg.options,
    )
