"""The strength arguments of ProximalGroupLasso (``l1``, ``schedule``): a float, a
``schedule(step) -> (should_apply, value)`` (tfmot's ``PruningSchedule`` protocol), a plain
``step -> float`` callable or None; evaluated on the host and serialized with the callback."""
from __future__ import annotations

from typing import Any, Callable, Union

import keras
import numpy as np

Strength = Union[float, Callable[[int], Any], None]


def evaluate_strength(strength: Strength, step: int) -> tuple[bool, float]:
    """(should_apply, value) of a float, a ``schedule(step) -> (bool, value)`` or ``step -> float``."""
    if strength is None:
        return True, 1.0
    if not callable(strength):
        return True, float(strength)
    out = strength(step)
    if isinstance(out, (tuple, list)):
        if len(out) != 2:
            raise ValueError("a strength schedule must return (should_apply, value) or a float; "
                             f"got a sequence of length {len(out)}")
        return bool(np.asarray(out[0])), float(np.asarray(out[1]))
    return True, float(np.asarray(out))


def serialize_strength(value: Strength, name: str):
    """A float, None or a schedule's Keras serialization (plain callables cannot be saved)."""
    if value is None or not callable(value):
        return value if value is None else float(value)
    if hasattr(value, "get_config"):
        return keras.saving.serialize_keras_object(value)
    raise ValueError(f"ProximalGroupLasso `{name}` is a plain callable and cannot be serialized; "
                     "use a float or a schedule object with get_config")
