"""Multimodal generative models, registered by name in `MODELS`.

Every module in this package registers its models on import; new models need no edit here.
"""

import importlib
import pkgutil

from mmdgm.models.base import MODELS, ModelOutput, MultimodalVAE

for _module in pkgutil.iter_modules(__path__):
    if _module.name not in ("base", "factory"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["MODELS", "ModelOutput", "MultimodalVAE"]
