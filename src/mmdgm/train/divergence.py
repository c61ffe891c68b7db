"""Whether a run's test loss has risen far above its best: a run that diverged (the
contrastive MMVAE on the synthetic captions) or overfitted badly, whose last model should
not be read as a trained one."""

from __future__ import annotations

import json
from pathlib import Path


def logged_test_losses(path: Path) -> list[tuple[int, float]]:
    """(step, loss) of every test line of a run's metrics.jsonl at `path`, in order."""
    if not path.exists():
        return []
    records = map(json.loads, filter(None, path.read_text().splitlines()))
    return [(r["step"], float(r["loss"])) for r in records
            if r.get("split") == "test" and isinstance(r.get("loss"), (int, float))]


def loss_rise(losses: list[tuple[int, float]]) -> str | None:
    """"best B (step s) -> last L" when the last loss L exceeds the best B by more than
    0.5 |B| + 10, else None."""
    if not losses:
        return None
    step, best = min(losses, key=lambda sl: sl[1])
    last = losses[-1][1]
    if last - best <= 0.5 * abs(best) + 10:
        return None
    return f"best {best:.4g} (step {step}) -> last {last:.4g}"
