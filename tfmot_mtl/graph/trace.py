"""Seeing through composite layers: trace a custom layer's ``call`` on symbolic tensors.

Calling a layer's ``call`` (not ``__call__``) with fresh KerasTensors records every Keras
layer and ``keras.ops`` operation it uses as functional nodes; :func:`trace_call` turns
them into a ``keras.Function`` that the walker inlines like a nested model. A call that
cannot be recorded faithfully is refused with a reason: one that branches on tensor
values or uses raw TensorFlow ops (both raise on KerasTensors), one that reads variables
directly (``ops.matmul(x, self.kernel)``: the stripped model could not own them), or one
whose outputs differ from those the layer's node recorded.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

import keras
import numpy as np
from keras import tree

from tfmot_mtl.utils import _keras_compat as compat


BATCH = 9973
"""The batch size a call is traced with when its batch is unknown (``ops.shape(x)[0]`` must be a
number for most calls); a prime no shape has by chance, so a traced op that baked it into a shape
argument (``ops.reshape(x, (batch, -1))``) is found and the trace refused."""


class TraceRefused(Exception):
    """The layer's call cannot be traced; ``str(exc)`` says why."""


def trace_call(layer: Any, node: Any) -> tuple[keras.Function, dict[int, int], dict[int, Any], list | None]:
    """Traces ``layer.call`` with the arguments of ``node`` (one call of the layer).

    Returns the traced function, ``{id(fresh input): id(outer KerasTensor)}`` so the caller can
    seed the function's inputs with the outer tensors, ``{id(op): replacement}`` for reshapes
    whose traced shape holds the batch size (replayed with ``-1`` there instead), and the
    positions of the recorded outputs that the function computes (None: all of them; outputs
    that the call returns as constant empty tensors are left out, and the caller must check
    that nothing uses them). Raises
    :class:`TraceRefused` with the reason when the call cannot be traced faithfully.
    """
    fresh_of: dict[int, keras.KerasTensor] = {}
    outer_of: dict[int, int] = {}

    def fresh(x):
        if not isinstance(x, keras.KerasTensor):
            return x
        if id(x) not in fresh_of:
            shape = tuple(x.shape)
            shape = ((BATCH if shape[0] is None else shape[0]),) + shape[1:] if shape else shape
            t = keras.KerasTensor(shape, dtype=x.dtype, sparse=x.sparse, ragged=x.ragged)
            fresh_of[id(x)] = t
            outer_of[id(t)] = id(x)
        return fresh_of[id(x)]

    args = tree.map_structure(fresh, list(node.arguments.args))
    kwargs = tree.map_structure(fresh, dict(node.arguments.kwargs))
    if not fresh_of:
        raise TraceRefused("it has no tensor input")
    try:
        with _inline_non_tensor_calls(layer):
            out = layer.call(*args, **kwargs)
            fresh_ids = {id(t) for t in fresh_of.values()}
            outs = [keras.ops.copy(t) if id(t) in fresh_ids else t for t in tree.flatten(out)]
    except Exception as exc:  # noqa: BLE001 - any failure means the call is not traceable
        raise TraceRefused(f"its call cannot run on symbolic tensors ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0][:160]}); it branches on tensor values or "
                           "uses ops other than Keras layers and keras.ops") from None
    recorded = tree.flatten(node.outputs)
    kept = [i for i, t in enumerate(outs) if not _is_empty_constant(t)]
    if len(outs) == len(recorded) and kept and len(kept) < len(outs):
        outs, recorded = [outs[i] for i in kept], [recorded[i] for i in kept]
    if not outs or not all(isinstance(t, keras.KerasTensor) for t in outs):
        raise TraceRefused("its call returns something other than symbolic tensors")
    if len(outs) != len(recorded) or not all(_same_shape(a.shape, b.shape) for a, b in zip(outs, recorded)):
        raise TraceRefused("its traced outputs do not match the outputs of its recorded call "
                           f"({[tuple(t.shape) for t in outs]} vs {[tuple(t.shape) for t in recorded]})")
    inputs = list(fresh_of.values())
    try:
        with _unique_names(outs):
            fn = keras.Function(inputs, outs)
    except Exception as exc:  # noqa: BLE001
        raise TraceRefused(f"its traced graph is not a function of its inputs ({exc})") from None
    replace = _batch_free_reshapes(fn)
    _check_nodes(fn, layer, replace)
    return fn, outer_of, replace, kept if len(kept) < len(tree.flatten(node.outputs)) else None


_NON_TENSOR = "returned a non-tensor"  # Keras' error for a symbolic call returning None


@contextlib.contextmanager
def _inline_non_tensor_calls(layer: Any) -> Iterator[None]:
    """While ``layer``'s call is traced, a custom sub-layer whose symbolic call fails because it
    returns something other than tensors (keras-hub's encoder blocks return ``(x, None)`` when no
    attention scores are asked for) runs its own ``call`` instead, so its layers and ops are
    recorded in the trace. The classes are patched only for the duration of the trace."""
    classes = {type(sub) for sub in compat.sublayers(layer, include_self=False)
               if not type(sub).__module__.startswith("keras.")}
    saved = {cls: cls.__dict__.get("__call__") for cls in classes}

    def patched(base):
        def __call__(self, *args, **kwargs):
            try:
                return base(self, *args, **kwargs)
            except ValueError as exc:
                if _NON_TENSOR not in str(exc):
                    raise
                return self.call(*args, **kwargs)
        return __call__

    for cls in classes:
        cls.__call__ = patched(cls.__call__)
    try:
        yield
    finally:
        for cls, own in saved.items():
            if own is None:
                del cls.__call__
            else:
                cls.__call__ = own


@contextlib.contextmanager
def _unique_names(outputs: list) -> Iterator[None]:
    """Distinct names, while the traced function is built, for the operations of a trace whose
    names repeat (the same sub-layer names in every inlined block); restored afterwards. The
    walker names the traced operations itself (by attribute and kind), not by these names."""
    ops, seen, stack = [], set(), list(outputs)
    while stack:
        produced = compat.producing_node(stack.pop())
        if produced is None or id(produced[0]) in seen:
            continue
        seen.add(id(produced[0]))
        ops.append(produced[0])
        stack.extend(tree.flatten(produced[1].input_tensors))
    names = [op.name for op in ops]
    renamed = [(op, op.name) for op in ops if names.count(op.name) > 1]
    for i, (op, name) in enumerate(renamed):
        op.name = f"{name}__{i}"
    try:
        yield
    finally:
        for op, name in renamed:
            op.name = name


def _is_empty_constant(t: Any) -> bool:
    """A concrete tensor with no elements (``ops.empty((0, ...))``: a placeholder for results
    that were not asked for, e.g. keras-hub's hidden states and attention scores)."""
    return (not isinstance(t, keras.KerasTensor) and keras.ops.is_tensor(t)
            and int(np.prod(t.shape)) == 0)


def _unknown(d) -> bool:
    """A dimension that would be wrong in a replayed graph: unknown, or computed from the batch."""
    if d is None:
        return True
    return isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d != 0 and d % BATCH == 0


def _same_shape(traced, recorded) -> bool:
    """Equal ranks and channel axes; a traced dim may be unknown where the recorded one is static."""
    traced, recorded = tuple(traced), tuple(recorded)
    if len(traced) != len(recorded) or (traced and traced[-1] != recorded[-1]):
        return False
    if traced and recorded[0] is None and traced[0] == BATCH:
        traced = (None,) + traced[1:]
    return all(a is None or a == b for a, b in zip(traced, recorded))


def _batch_free_reshapes(fn: keras.Function) -> dict[int, Any]:
    """``ops.reshape(x, (batch, ...))`` replayed as ``(-1, ...)`` where the rest of the traced shape
    is static: the same result for every batch size (keras-hub's ``(B, H * W, C)`` pattern)."""
    out = {}
    for nodes in compat.nodes_by_depth(fn).values():
        for n in nodes:
            op = n.operation
            shape = getattr(op, "newshape", None)
            if type(op).__name__ != "Reshape" or isinstance(op, keras.layers.Layer) or not shape:
                continue
            result = tuple(tree.flatten(n.outputs)[0].shape)
            if shape[0] == BATCH and result[0] == BATCH and all(isinstance(d, int) and not _unknown(d)
                                                                for d in result[1:]):
                out[id(op)] = type(op)(newshape=(-1,) + result[1:])
    return out


def _check_nodes(fn: keras.Function, layer: Any, replace: dict) -> None:
    own = {id(v) for v in layer.weights}
    for nodes in compat.nodes_by_depth(fn).values():
        for n in nodes:
            if n.operation is None or n.is_input or id(n.operation) in replace:
                continue
            attrs = () if isinstance(n.operation, keras.layers.Layer) else tuple(vars(n.operation).values())
            for x in (*n.arguments.args, *n.arguments.kwargs.values(), *attrs):
                if isinstance(x, (tuple, list)) and any(_unknown(d) for d in x):
                    raise TraceRefused(f"its call computes a shape from an unknown dimension ({x!r} in "
                                       f"'{n.operation.name}'); traced on symbolic tensors it would be fixed")
            for x in tree.flatten((n.arguments.args, n.arguments.kwargs)):
                if isinstance(x, keras.Variable):
                    what = "its own" if id(x) in own else "a"
                    raise TraceRefused(f"its call reads {what} variable '{x.path}' directly in "
                                       f"'{n.operation.name}' (only weights of its sub-layers can be "
                                       "carried into a stripped model)")
                if keras.ops.is_tensor(x) and not isinstance(x, keras.KerasTensor):
                    raise TraceRefused(f"its call computes a constant tensor {tuple(x.shape)} for "
                                       f"'{n.operation.name}' outside the traced graph (from a variable or "
                                       "the batch size)")

