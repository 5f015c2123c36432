"""Pruning schedules following tensorflow-model-optimization's ``PruningSchedule`` protocol.

A schedule is called with the training step (optimizer iterations) and returns
``(should_prune: bool tensor, sparsity: float tensor)``; sparsity is the fraction of the
selected channels that should be removed once that step's pruning has run. Any object with
that ``__call__`` is accepted -- including tfmot's own ``PolynomialDecay`` and
``ConstantSparsity`` -- without importing tensorflow_model_optimization here (importing it
sets ``TF_USE_LEGACY_KERAS=1`` for the whole process).
"""
from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np
import tensorflow as tf


@keras.saving.register_keras_serializable(package="tfmot_mtl")
class IterativeSchedule:
    """Every ``frequency`` steps from ``begin_step``, raise sparsity by a fixed amount.

    The k-th pruning event (k = 1 at ``begin_step``) asks for sparsity
    ``min(target, k * step)`` or, with ``count``, ``min(target, k * count / total_channels)``
    (``total_channels``: the number of selectable channels; the pruning callback sets it
    when the schedule does not know it). Events stop after ``end_step`` (-1: never).
    Garg et al. 2023 prune 100 filters every 500 iterations: ``count=100, frequency=500``.

    Args:
        target: final sparsity in (0, 1).
        frequency: steps between pruning events (>= 1).
        step: sparsity added per event, in (0, 1]. Exactly one of ``step`` / ``count``.
        count: channels removed per event (>= 1).
        begin_step: first pruning step (>= 0).
        end_step: last step at which pruning may happen, or -1.
        total_channels: channel total for ``count``; may be set later.
    """

    def __init__(self, target: float, frequency: int, step: float | None = None,
                 count: int | None = None, begin_step: int = 0, end_step: int = -1,
                 total_channels: int | None = None):
        if not 0.0 < float(target) < 1.0:
            raise ValueError(f"target must be a sparsity in (0, 1), got {target}")
        if int(frequency) < 1:
            raise ValueError(f"frequency must be >= 1 step, got {frequency}")
        if (step is None) == (count is None):
            raise ValueError("give exactly one of step= (sparsity per event) or count= (channels per event)")
        if step is not None and not 0.0 < float(step) <= 1.0:
            raise ValueError(f"step must be a sparsity increment in (0, 1], got {step}")
        if count is not None and int(count) < 1:
            raise ValueError(f"count must be >= 1 channel, got {count}")
        if int(begin_step) < 0:
            raise ValueError(f"begin_step must be >= 0, got {begin_step}")
        if int(end_step) != -1 and int(end_step) < int(begin_step):
            raise ValueError(f"end_step must be -1 or >= begin_step ({begin_step}), got {end_step}")
        self.target, self.frequency = float(target), int(frequency)
        self.step = None if step is None else float(step)
        self.count = None if count is None else int(count)
        self.begin_step, self.end_step = int(begin_step), int(end_step)
        self.total_channels = None if total_channels is None else int(total_channels)

    def increment(self) -> float:
        """Sparsity added per pruning event."""
        if self.step is not None:
            return self.step
        if not self.total_channels:
            raise ValueError("IterativeSchedule(count=...) needs total_channels; the pruning "
                             "callback sets it, or pass total_channels=")
        return self.count / self.total_channels

    def events_to_target(self) -> int:
        """Number of pruning events until the target is reached."""
        return max(1, math.ceil(self.target / self.increment() - 1e-9))

    def __call__(self, step) -> tuple[tf.Tensor, tf.Tensor]:
        step = tf.cast(step, tf.int64)
        begin = tf.constant(self.begin_step, tf.int64)
        in_range = step >= begin
        if self.end_step != -1:
            in_range = tf.logical_and(in_range, step <= self.end_step)
        turn = tf.equal(tf.math.floormod(step - begin, self.frequency), 0)
        events = tf.maximum(tf.math.floordiv(step - begin, self.frequency) + 1, 0)
        sparsity = tf.minimum(tf.cast(events, tf.float32) * self.increment(), self.target)
        return tf.logical_and(in_range, turn), sparsity

    def get_config(self) -> dict[str, Any]:
        return {"target": self.target, "frequency": self.frequency, "step": self.step,
                "count": self.count, "begin_step": self.begin_step, "end_step": self.end_step,
                "total_channels": self.total_channels}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "IterativeSchedule":
        return cls(**config)

    def __repr__(self) -> str:
        return "IterativeSchedule(" + ", ".join(f"{k}={v!r}" for k, v in self.get_config().items()) + ")"


def check_schedule(schedule: Any) -> Any:
    """Returns ``schedule`` if it follows the protocol, else raises a clear ValueError."""
    if not callable(schedule):
        raise ValueError(f"schedule must be callable as schedule(step) -> (should_prune, sparsity), "
                         f"got {type(schedule).__name__}")
    return schedule


def evaluate_schedule(schedule: Any, step: int) -> tuple[bool, float]:
    """Calls any protocol schedule at ``step``; returns plain ``(bool, float)``."""
    result = schedule(tf.constant(int(step), tf.int64))
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise ValueError(f"schedule {schedule!r} must return (should_prune, sparsity), got {result!r}")
    should, sparsity = (np.asarray(keras.ops.convert_to_numpy(v)) for v in result)
    sparsity = float(sparsity)
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"schedule {schedule!r} asked for sparsity {sparsity} at step {step}; "
                         "it must be in [0, 1)")
    return bool(should), sparsity
