"""Compiled scoring functions of the gradient criteria (Taylor, CosPrune).

One ``tf.function`` per criterion, model, graph and loss set: the forward and backward
pass of a scoring batch AND the per-channel reductions of the gradients (the sums over
each channel's weight slices, Taylor's squares, CosPrune's task-pair cosines) run as one
graph, traced once per batch shape. Only one float64 score vector per channel group comes
back to the host, never the gradients of the weights.
"""
from __future__ import annotations

from typing import Callable

import tensorflow as tf


def targets(y, tasks) -> dict:
    """The targets of ``tasks`` only, as tensors (what the compiled function takes)."""
    return {t: tf.convert_to_tensor(y[t]) for t in tasks}


def channel_sum(values, part, size: int):
    """Per-channel sum of ``values`` (shaped like ``part.var``) over the part's positions:
    the graph twin of ``importance._channel_sum``."""
    rows = tf.gather(values, part.positions, axis=part.axis)
    others = [a for a in range(len(values.shape)) if a != part.axis]
    if others:
        rows = tf.reduce_sum(rows, axis=others)
    return tf.math.unsorted_segment_sum(rows, part.channels, size)


def reduce_units(per_unit: list, reduction: str):
    """Combines the unit scores of a group ("sum" | "mean" | "max")."""
    stack = tf.stack(per_unit)
    return {"sum": tf.reduce_sum, "mean": tf.reduce_mean, "max": tf.reduce_max}[reduction](stack, axis=0)


def compiled_scores(owner, model, variables: list, losses_of: Callable, tag, outputs: Callable,
                    scores_of: Callable):
    """A cached ``fn(x, y) -> {group_id: float64 scores}``: ``losses_of(out, y)`` lists the
    losses, ``scores_of(grads)`` maps ``{id(variable): [float64 gradient per loss]}`` to the
    group scores with graph ops; cached on ``owner`` for (model, variables, tag)."""
    key = (id(model), tuple(id(v) for v in variables), tag)
    cached = getattr(owner, "_fn_cache", None)
    if cached is not None and cached[0] == key and cached[1] is model:
        return cached[2]

    @tf.function(reduce_retracing=True)
    def fn(x, y):
        with tf.GradientTape(persistent=True) as tape:
            losses = losses_of(outputs(model, x), y)
        grads = {id(v): [] for v in variables}
        for loss in losses:
            for g, v in zip(tape.gradient(loss, variables), variables):
                grads[id(v)].append(tf.zeros(v.shape, tf.float64) if g is None else tf.cast(g, tf.float64))
        del tape
        return scores_of(grads)

    owner._fn_cache = (key, model, fn)
    return fn
