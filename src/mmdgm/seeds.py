"""Seeds derived for one purpose each, so that independent random streams never share a start."""

from __future__ import annotations

import zlib

import numpy as np


def derived_seed(seed: int, purpose: str) -> int:
    """A seed for `purpose`, a pure function of (seed, purpose), independent across purposes."""
    return int(np.random.SeedSequence([seed, zlib.crc32(purpose.encode())]).generate_state(1)[0])
