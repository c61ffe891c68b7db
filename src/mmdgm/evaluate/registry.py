"""The metric registry: `fn(ctx: EvalContext, **options) -> dict` (JSON-serialisable)."""

from mmdgm.registry import Registry

METRICS: Registry = Registry("metric")
