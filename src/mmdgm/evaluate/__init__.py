"""Evaluation: digit classifiers for coherence scores, and metrics built on them.

Every module in this package that defines metrics registers them in `METRICS` on import.
"""

import importlib
import pkgutil

from mmdgm.evaluate.context import EvalContext
from mmdgm.evaluate.registry import METRICS

for _module in pkgutil.iter_modules(__path__):
    if _module.name not in ("registry", "context"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["METRICS", "EvalContext"]
