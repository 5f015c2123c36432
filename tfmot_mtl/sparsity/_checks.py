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


def check_channel_weights(weights) -> dict[str, np.ndarray]:
    """``{group_id: per-channel weights}`` as float arrays; each weight finite and > 0."""
    if weights is None:
        return {}
    if not hasattr(weights, "items"):
        raise ValueError(f"channel_weights must be a dict {{group_id: weights}}, got {type(weights).__name__}")
    out = {}
    for gid, values in weights.items():
        w = np.asarray(values, np.float64).reshape(-1)
        if not w.size or not np.all(np.isfinite(w)) or np.any(w <= 0):
            raise ValueError(f"channel_weights[{gid!r}] must hold finite weights > 0, got {values!r}")
        out[str(gid)] = w
    return out
