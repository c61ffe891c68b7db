"""Build a model from its config section and the dataset's modality shapes."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable

from mmdgm.config import ConfigError, ModalityConfig, ModelConfig
from mmdgm.distributions import DISTRIBUTIONS, Categorical
from mmdgm.modalities import Modality
from mmdgm.models.base import MODELS, MultimodalVAE
from mmdgm.models.contrastive import contrastive_class
from mmdgm.nets import DECODERS, ENCODERS
from mmdgm.registry import nearest


def model_options(cls: type) -> list[str]:
    """Keyword options a model class accepts beyond the shared base ones."""
    base = set(inspect.signature(MultimodalVAE.__init__).parameters)
    own = inspect.signature(cls.__init__).parameters
    return [n for n, p in own.items() if n not in base and p.kind is p.KEYWORD_ONLY]


def network_options(builder: Callable) -> list[str] | None:
    """Keyword options a network builder accepts beyond (shape, latent_dim); None: any."""
    params = list(inspect.signature(builder).parameters.values())[2:]
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def check_network_options(where: str, m: ModalityConfig) -> None:
    """Every option given to a modality's encoder or decoder must be one its builder accepts."""
    for part, registry in (("encoder", ENCODERS), ("decoder", DECODERS)):
        name = getattr(m, part)
        allowed = network_options(registry.get(name))
        for section in ("net_options", f"{part}_options"):
            for key in getattr(m, section):
                if allowed is not None and key not in allowed:
                    raise ConfigError(
                        f"unknown config key {where}.{section}.{key}{nearest(key, allowed)}; "
                        f"{part} {name!r} accepts {allowed}"
                    )


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
    for n, m in cfg.modalities.items():
        check_network_options(f"model.modalities.{n}", m)
    modalities = [
        Modality(
            name=n,
            shape=shapes[n],
            kind="image" if len(shapes[n]) == 3 else "text" if issubclass(DISTRIBUTIONS.get(m.likelihood), Categorical) else "vector",
            likelihood=m.likelihood,
            llik_scale=m.llik_scale,
            encoder=m.encoder,
            decoder=m.decoder,
            likelihood_scale=m.likelihood_scale,
            net_options=m.net_options,
            encoder_options=m.encoder_options,
            decoder_options=m.decoder_options,
        )
        for n, m in cfg.modalities.items()
    ]
    contrastive = {}
    if cfg.contrastive is not None:
        cls = contrastive_class(cls)
        contrastive = {"contrastive": dataclasses.asdict(cfg.contrastive)}
    return cls(
        modalities,
        cfg.latent_dim,
        prior=cfg.prior,
        posterior=cfg.posterior,
        posterior_scale=cfg.posterior_scale,
        prior_scale=cfg.prior_scale,
        learn_prior=cfg.learn_prior,
        **cfg.options,
        **contrastive,
    )
