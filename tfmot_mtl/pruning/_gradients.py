"""Compiled gradient functions of the gradient criteria (Taylor, CosPrune).

One ``tf.function`` per criterion, model, scored variables and loss set: the forward and
backward pass of a scoring batch run as one graph (traced once per batch shape); only the
gradients of the scored weights come back to the host for the per-channel sums.
"""
from __future__ import annotations

from typing import Callable

import tensorflow as tf


def targets(y, tasks) -> dict:
    """The targets of ``tasks`` only, as tensors (what the compiled function takes)."""
    return {t: tf.convert_to_tensor(y[t]) for t in tasks}


def compiled_gradients(owner, model, variables: list, losses_of: Callable, tag, outputs: Callable):
    """A cached ``fn(x, y) -> [[grad per variable] per loss]`` where ``losses_of(out, y)`` lists
    the losses; cached on ``owner`` for (model, variables, tag)."""
    key = (id(model), tuple(id(v) for v in variables), tag)
    cached = getattr(owner, "_fn_cache", None)
    if cached is not None and cached[0] == key and cached[1] is model:
        return cached[2]

    @tf.function(reduce_retracing=True)
    def fn(x, y):
        with tf.GradientTape(persistent=True) as tape:
            losses = losses_of(outputs(model, x), y)
        grads = [[tf.zeros_like(v) if g is None else g for g, v in zip(tape.gradient(t, variables), variables)]
                 for t in losses]
        del tape
        return grads

    owner._fn_cache = (key, model, fn)
    return fn
