"""Stopping training cleanly when the loss or the weights stop being finite (NaN / Inf).

The three method callbacks (``ProximalGroupLasso``, ``ChannelPruningCallback``,
``BudgetCallback``) check after every batch; weights are checked on the device (one compiled
function, a flag per variable comes back), never copied to the host. On a NaN/Inf they warn with
:class:`NonFiniteWarning`, set ``model.stop_training = True`` (Keras ends ``fit`` after
the current batch) and change nothing more: their masks / zero pattern / switches stay
the last ones computed from finite values. The weights themselves may already be
non-finite; restore them from a checkpoint (``keras.callbacks.BackupAndRestore`` or
``ModelCheckpoint``).
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Callable, Iterable

import keras
import numpy as np

from tfmot_mtl.training.ingraph import finite_flags


class NonFiniteWarning(RuntimeWarning):
    """Training was stopped because the loss or a weight became NaN or Inf."""


def nonfinite_loss(logs: Any) -> str | None:
    """A description of a NaN/Inf ``loss`` in batch logs, else None."""
    if not logs or "loss" not in logs:
        return None
    try:
        value = float(np.asarray(keras.ops.convert_to_numpy(logs["loss"])).mean())
    except (TypeError, ValueError):
        return None
    return None if math.isfinite(value) else f"the training loss is {value}"


def nonfinite_variables(variables: Iterable[Any]) -> str | None:
    """A description of the first variable holding a NaN/Inf value, else None.

    The check runs on the device in one compiled function (:func:`tfmot_mtl.training.ingraph.finite_flags`);
    only one flag per variable comes back to the host."""
    floats = [v for v in variables if "float" in str(getattr(v, "dtype", ""))]
    flags = finite_flags(floats)
    for var, ok in zip(floats, flags):
        if not ok:
            return f"weight '{getattr(var, 'path', None) or var.name}' holds NaN/Inf values"
    return None


def stop_training(callback: Any, problem: str, kept: str) -> str:
    """Warns, sets ``model.stop_training = True`` and returns the message."""
    optimizer = getattr(callback.model, "optimizer", None)
    step = getattr(optimizer, "iterations", None)
    at = f" at step {int(np.asarray(step))}" if step is not None else ""
    message = (f"{type(callback).__name__}: {problem}{at}; training stopped "
               f"(model.stop_training = True). {kept} The model's weights may already be "
               "non-finite: restore them from a checkpoint (keras.callbacks.BackupAndRestore or "
               "ModelCheckpoint), then lower the learning rate or check the data and losses.")
    warnings.warn(message, NonFiniteWarning, stacklevel=4)
    callback.model.stop_training = True
    return message


def stop_if_nonfinite(callback: Any, find_problem: Callable[[], str | None], kept: str,
                      restore: Callable[[], None] | None = None) -> bool:
    """True when training is (now or already) stopped on a NaN/Inf found by ``find_problem``.

    The first time, ``restore()`` (if given) runs before the warning and the message is kept in
    ``callback.nonfinite``; ``model.stop_training`` is set again on every later call.
    """
    if callback.nonfinite is None:
        problem = find_problem()
        if problem is None:
            return False
        if restore is not None:
            restore()
        callback.nonfinite = stop_training(callback, problem, kept)
    callback.model.stop_training = True
    return True
