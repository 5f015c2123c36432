"""A user's data as the batches the library trains on, checked against the model's outputs.

:func:`as_dataset` takes a ``tf.data.Dataset`` of ``(inputs, {output: target})`` pairs
(batched or not) or numpy arrays ``(x, {output: y})``; :func:`check_targets` compares the
first batches with the model's outputs and the tasks, so that a mismatch is one clear error
before any training, not a shape error deep in a train step.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import keras
import numpy as np
import tensorflow as tf

from tfmot_mtl.tasks.specs import Task


def as_dataset(data: Any, batch_size: int = 32, shuffle: bool = False, seed: int = 0,
               argument: str = "data") -> tf.data.Dataset:
    """Batches of ``(inputs, {output: target})`` from a dataset or numpy arrays.

    A ``tf.data.Dataset`` is used as it is when batched (its elements' inputs have the
    model's rank) and batched with ``batch_size`` otherwise; it is never shuffled here.
    Numpy ``(x, y)`` (``y`` a dict of arrays) becomes a dataset, shuffled every epoch with
    ``shuffle``.
    """
    if isinstance(data, tf.data.Dataset):
        return data if _is_batched(data) else data.batch(batch_size)
    if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[1], Mapping):
        x, y = data
        n = len(next(iter(x.values()))) if isinstance(x, Mapping) else len(x)
        lengths = {k: len(v) for k, v in y.items()}
        if any(v != n for v in lengths.values()):
            raise ValueError(f"`{argument}`: inputs have {n} examples but targets have {lengths}.")
        ds = tf.data.Dataset.from_tensor_slices((x, dict(y)))
        if shuffle:
            ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
        return ds.batch(batch_size).prefetch(2)
    raise ValueError(f"`{argument}` must be a tf.data.Dataset of (inputs, {{output: target}}) pairs or numpy "
                     f"arrays (x, {{output: y}}), got {type(data).__name__}.")


def _is_batched(ds: tf.data.Dataset) -> bool:
    spec = ds.element_spec
    first = spec[0] if isinstance(spec, tuple) else spec
    leaf = tf.nest.flatten(first)[0]
    # images (B, H, W, C) when batched; a batch dim of None is the usual sign of .batch()
    return leaf.shape.rank is not None and (leaf.shape.rank >= 4 or (leaf.shape.rank >= 1 and leaf.shape[0] is None))


def check_targets(ds: tf.data.Dataset, model: keras.Model, tasks: Sequence[Task], argument: str = "data",
                  batches: int = 2) -> None:
    """Raises a ValueError naming the output when the targets do not fit the model and tasks:
    a task without targets, targets for no output, a spatial size or channel count that differs from the output,
    or class labels outside the output's classes."""
    from tfmot_mtl.graph.walk import output_names

    spec = ds.element_spec
    if not isinstance(spec, tuple) or len(spec) < 2 or not isinstance(spec[1], Mapping):
        raise ValueError(f"`{argument}` must yield (inputs, {{output: target}}) pairs; got elements {spec}.")
    shapes = dict(zip(output_names(model), (tuple(t.shape) for t in model.outputs)))
    missing = [t.name for t in tasks if t.name not in spec[1]]
    if missing:
        raise ValueError(f"`{argument}` has targets {sorted(spec[1])} but no target for outputs {missing} "
                         f"of the model (outputs: {sorted(shapes)}).")
    extra = sorted(set(spec[1]) - set(shapes))
    if extra:  # Keras' fit refuses a target structure that differs from the outputs'
        raise ValueError(f"`{argument}` has targets {extra} that are not outputs of the model (outputs: "
                         f"{sorted(shapes)}): leave them out of the targets.")
    for task in tasks:
        _check_shape(task, tuple(spec[1][task.name].shape), shapes[task.name], argument)
    for _, y, *_ in ds.take(batches):
        for task in tasks:
            _check_values(task, np.asarray(y[task.name]), argument)


def _expected(task: Task, out: tuple) -> str:
    if task.kind == "segmentation":
        return f"(B, {out[1]}, {out[2]}) or (B, {out[1]}, {out[2]}, 1) class ids"
    if task.kind == "classification":
        return "(B,) or (B, 1) class ids"
    if task.kind == "binary":
        return f"(B, {out[-1]}) 0/1 values"
    return f"(B, {out[1]}, {out[2]}, {out[-1]})"


def _check_shape(task: Task, found: tuple, out: tuple, argument: str) -> None:
    rank = len(found)
    if task.kind == "segmentation":
        ok = rank in (3, 4) and (rank == 3 or found[3] == 1) and _same(found[1:3], out[1:3])
    elif task.kind == "classification":
        ok = rank == 1 or (rank == 2 and found[1] == 1)
    elif task.kind == "binary":
        ok = rank == 2 and _same(found[1:], out[1:])
    elif task.kind == "depth":
        ok = rank in (3, 4) and (rank == 3 or found[3] == 1) and _same(found[1:3], out[1:3])
    else:
        ok = rank == 4 and _same(found[1:], out[1:])
    if not ok:
        raise ValueError(f"`{argument}`: targets of output '{task.name}' ({task.kind}) have shape {found}; "
                         f"the model's output is {out}, so expected {_expected(task, out)}.")


def _same(a: Sequence, b: Sequence) -> bool:
    return all(x is None or y is None or int(x) == int(y) for x, y in zip(a, b))


def _check_values(task: Task, y: np.ndarray, argument: str) -> None:
    if task.kind not in ("segmentation", "classification") or not y.size:
        return
    labels = y[y != task.ignore_index]
    if labels.size and (labels.max() >= task.output_channels or labels.min() < 0):
        raise ValueError(f"`{argument}`: targets of output '{task.name}' hold class ids up to {int(labels.max())} "
                         f"but the output has {task.output_channels} classes (ids 0..{task.output_channels - 1}).")
