"""Argument checks of ProximalGroupLasso."""
from __future__ import annotations

import numpy as np


def check_strengths(l1, gain) -> None:
    """Clear errors for a negative / NaN / non-numeric ``l1`` and a non-positive ``gain``."""
    if l1 is not None and not callable(l1):
        try:
            value = float(l1)
        except (TypeError, ValueError):
            raise ValueError(f"l1 must be a number >= 0, a schedule or None, got {l1!r}") from None
        if not np.isfinite(value) or value < 0:
            raise ValueError(f"l1 must be a finite number >= 0, got {l1!r}")
    if isinstance(gain, str) and gain == "auto":
        return
    if isinstance(gain, bool) or not isinstance(gain, (int, float, np.number)) or \
            not np.isfinite(gain) or gain <= 0:
        raise ValueError(f"gain must be a finite number > 0 (the initial multiplier of l1) or \"auto\", got {gain!r}")
