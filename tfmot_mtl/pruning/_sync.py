"""Agreement of host-side pruning decisions across the workers of a tf.distribute strategy.

Keras runs callbacks once per worker, in cross-replica context. Under
``MultiWorkerMirroredStrategy`` every worker scores channels on its own: gradient criteria
on its own scoring batches, ``Random`` with its own generator, so the scores (and with them
the masks) could differ between workers. :func:`mean_across_workers` replaces each
worker's scores by their mean over all workers (one collective all-reduce), so every
worker ranks the same numbers and takes the same decision.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf


def num_workers(strategy: tf.distribute.Strategy | None) -> int:
    """Number of workers (processes) taking part in ``strategy`` (1 without multi-worker)."""
    if strategy is None or strategy.num_replicas_in_sync <= 1:
        return 1
    try:
        local = len(strategy.extended.worker_devices)
    except (AttributeError, RuntimeError):  # strategies without local replicas
        return 1
    return max(1, strategy.num_replicas_in_sync // max(1, local))


def mean_across_workers(scores: dict[str, np.ndarray],
                        strategy: tf.distribute.Strategy | None) -> dict[str, np.ndarray]:
    """``scores`` averaged over every worker of ``strategy`` (unchanged with one worker).

    Every worker must call this at the same point with the same keys and shapes (the
    callbacks do: they call it at the same global steps). NaN (unscorable) stays NaN.
    """
    if num_workers(strategy) <= 1 or not scores:
        return scores
    keys = sorted(scores)
    arrays = [np.asarray(scores[k], np.float64) for k in keys]
    flat = np.concatenate([a.reshape(-1) for a in arrays]) if arrays else np.zeros(0)
    with strategy.scope():
        local = strategy.run(lambda: tf.constant(flat, tf.float64))
        total = strategy.reduce(tf.distribute.ReduceOp.MEAN, local, axis=None)
    mean = np.asarray(total.numpy(), np.float64)
    out, start = {}, 0
    for k, a in zip(keys, arrays):
        out[k] = mean[start:start + a.size].reshape(a.shape)
        start += a.size
    return out
