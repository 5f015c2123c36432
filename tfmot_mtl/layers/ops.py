"""Rules of ``keras.ops`` nodes in functional graphs (``ops.add(x, y)`` on KerasTensors, and the
ops a traced composite layer records): the same channel semantics as the matching layers."""
from __future__ import annotations

import keras
import numpy as np

from tfmot_mtl.layers.base import CONST, Rule, describe, register_op
from tfmot_mtl.layers import split_heads
from tfmot_mtl.layers.channelwise import ElementwiseRule, GlobalPoolRule
from tfmot_mtl.layers.structure import ConcatRule, MergeRule


def _constant_operands(ctx) -> list:
    """The operands of the op's call that are not symbolic tensors (numbers, arrays, variables)."""
    args = list(ctx.node._node.arguments.args)
    return [a for a in args if not isinstance(a, keras.KerasTensor)]


def _zero_output(ctx) -> np.ndarray | None:
    """The op's output when every tensor input is zero (None when it cannot be computed)."""
    zeros = {k: np.zeros(tuple(1 if d is None or i == 0 else d for i, d in enumerate(s)), np.float32)
             for k, s in zip(ctx.node.inputs, ctx.in_shapes)}
    try:
        return np.asarray(keras.ops.convert_to_numpy(ctx.node.call(zeros)[0]))
    except Exception:  # noqa: BLE001 - cannot prove f(0) == 0
        return None


@register_op("Add", "Subtract", "Multiply", "Maximum", "Minimum", "Divide", "TrueDivide")
class OpMergeRule(MergeRule):
    """``ops.add`` & co.: two tensors merge like the layers; a tensor and a scalar pass through."""

    split_axes = "elementwise"

    def multiplies(self, ctx) -> bool:
        return type(ctx.layer).__name__ == "Multiply"

    def propagate(self, ctx):
        consts = _constant_operands(ctx)
        if any(np.size(keras.ops.convert_to_numpy(c)) > 1 for c in consts):
            return ctx.freeze_all(f"{describe(ctx.layer)} has a constant array operand that cannot "
                                  "lose channels")
        if len(ctx.in_maps) > 1 and type(ctx.layer).__name__ in ("Divide", "TrueDivide"):
            return ctx.freeze_all(f"{describe(ctx.layer)} divides by a tensor (a removed channel "
                                  "would divide by zero)")
        if len(ctx.in_maps) == 1:
            return [ctx.in_maps[0]]
        if any(ctx.in_splits) and (len(set(ctx.in_splits)) > 1 or len(set(ctx.in_shapes)) > 1):
            return ctx.freeze_all(f"{describe(ctx.layer)} merges attention heads with other channels")
        return super().propagate(ctx)

    def states(self, ctx, in_states):
        if len(in_states) > 1:
            return super().states(ctx, in_states)
        f0 = _zero_output(ctx)
        zero_kept = f0 is not None and not np.any(f0)
        return [in_states[0] if zero_kept else np.maximum(in_states[0], CONST)]


@register_op("Concatenate")
class OpConcatRule(ConcatRule):
    """``ops.concatenate([...], axis)``."""


@register_op("Relu", "Relu6", "Gelu", "Silu", "Swish", "Sigmoid", "HardSigmoid", "HardSilu",
             "HardSwish", "Tanh", "LeakyRelu", "Elu", "Selu", "Celu", "Softplus", "Softsign",
             "Mish", "Abs", "Absolute", "Square", "Negative", "Exp", "Sqrt", "Cast", "Log1p",
             "Expm1", "Sin", "Cos", "Clip", "Copy")
class OpElementwiseRule(ElementwiseRule):
    """Unary element-wise ops: channel by channel, zero stays zero only if f(0) == 0."""

    split_axes = "elementwise"

    @staticmethod
    def _mixes_channels(ctx) -> bool:
        return False

    def states(self, ctx, in_states):
        f0 = _zero_output(ctx)
        zero_kept = f0 is not None and not np.any(f0)
        return [in_states[0] if zero_kept else np.maximum(in_states[0], CONST)]


@register_op("Softmax", "LogSoftmax")
class OpSoftmaxRule(OpElementwiseRule):
    def propagate(self, ctx):
        rank = len(ctx.in_shapes[0])
        channel_axes = split_heads.standard(ctx, 0).axes
        if any(a % rank in channel_axes for a in np.atleast_1d(getattr(ctx.layer, "axis", -1))):
            return ctx.freeze_all(f"{describe(ctx.layer)} mixes channels (softmax over the channel axis)")
        return [ctx.in_maps[0]]


@register_op("Reshape")
class OpReshapeRule(Rule):
    """``ops.reshape``: supported when the channel axis is kept as it is, and for the split of
    channels into attention heads and their merge (:mod:`tfmot_mtl.layers.split_heads`)."""

    split_axes = True

    def propagate(self, ctx):
        out = split_heads.split_reshape(ctx) or split_heads.merge_reshape(ctx)
        if out is not None:
            return out
        if ctx.in_splits[0] is not None:
            return ctx.freeze_all(f"{describe(ctx.layer)} reshapes attention heads "
                                  f"({ctx.in_shapes[0]} -> {ctx.out_shapes[0]})")
        if ctx.out_shapes[0][-1] != ctx.in_shapes[0][-1] or ctx.in_shapes[0][-1] is None:
            return ctx.freeze_all(f"{describe(ctx.layer)} does not keep the channel axis "
                                  f"({ctx.in_shapes[0]} -> {ctx.out_shapes[0]})")
        if int(np.atleast_1d(getattr(ctx.layer, "newshape", (-1,)))[-1]) == -1:
            return ctx.freeze_all(f"{describe(ctx.layer)} infers the channel axis (-1)")
        return [ctx.in_maps[0]]

    def config(self, layer, config, in_keep, out_keep):
        split = split_heads.split_reshape_config(config, in_keep)
        if split is not None:
            return split
        shape = list(np.atleast_1d(config["newshape"]).tolist())
        shape[-1] = int(in_keep.sum())
        return {**config, "newshape": tuple(shape)}


@register_op("Transpose")
class OpTransposeRule(Rule):
    split_axes = True

    def propagate(self, ctx):
        axes = getattr(ctx.layer, "axes", None)
        rank = len(ctx.in_shapes[0])
        if axes is not None and ctx.in_splits[0] is not None:
            return split_heads.transpose_split(ctx, [int(a) % rank for a in axes])
        if axes is None or int(axes[-1]) % rank != rank - 1:
            return ctx.freeze_all(f"{describe(ctx.layer)} moves the channel axis (axes={axes})")
        return [ctx.in_maps[0]]


@register_op("Mean", "Sum", "Max", "Min", "Amax", "Amin")
class OpReduceRule(GlobalPoolRule):
    """Reductions over axes other than the channel axis act channel by channel."""

    def propagate(self, ctx):
        axis = getattr(ctx.layer, "axis", None)
        rank = len(ctx.in_shapes[0])
        if axis is None or any(int(a) % rank == rank - 1 for a in np.atleast_1d(axis)):
            return ctx.freeze_all(f"{describe(ctx.layer)} reduces over the channel axis")
        return [ctx.in_maps[0]]


@register_op("GetItem")
class OpGetItemRule(Rule):
    """``x[...]`` that leaves the channel axis whole (``x[:, 0]``, ``x[:, 1:]``, ``x[..., :]``)."""

    def propagate(self, ctx):
        args = list(ctx.node._node.arguments.args)
        key = args[1] if len(args) > 1 else None
        key = key if isinstance(key, tuple) else (key,)
        rank = len(ctx.in_shapes[0])
        if _keeps_last_axis(key, rank) and ctx.out_shapes[0][-1] == ctx.in_shapes[0][-1]:
            return [ctx.in_maps[0]]
        return ctx.freeze_all(f"{describe(ctx.layer)} indexes the channel axis (key {key!r})")


def _keeps_last_axis(key: tuple, rank: int) -> bool:
    if any(k is None or isinstance(k, keras.KerasTensor) for k in key):
        return False
    if Ellipsis in key:
        rest = key[key.index(Ellipsis) + 1:]
        return all(k == slice(None) for k in rest)
    if len(key) < rank:
        return True
    return key[rank - 1] == slice(None)
