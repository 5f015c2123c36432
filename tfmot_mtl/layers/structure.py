"""Rules of layers that combine or reshape tensors: merges, concatenation, flatten, reshape."""
from __future__ import annotations


import keras
import numpy as np

from tfmot_mtl.layers.base import CONST, PATTERN, ZERO, Rule, describe, register


# --------------------------------------------------------------------------- merges

_MERGE_CLASSES = (keras.layers.Add, keras.layers.Subtract, keras.layers.Multiply,
                  keras.layers.Average, keras.layers.Maximum, keras.layers.Minimum)


@register(*_MERGE_CLASSES)
class MergeRule(Rule):
    """Element-wise merge: the channels of all full-width inputs are the same channels."""

    def multiplies(self, ctx) -> bool:
        return isinstance(ctx.layer, keras.layers.Multiply)

    def propagate(self, ctx):
        widths = [len(m) for m in ctx.in_maps]
        full = max(widths)
        full_maps = [m for m in ctx.in_maps if len(m) == full]
        for m in full_maps[1:]:
            ctx.couple(full_maps[0], m)
        narrow = [m for m in ctx.in_maps if len(m) != full]
        for m in narrow:
            if len(m) != 1:
                return ctx.freeze_all(f"{describe(ctx.layer)} merges {widths} channels")
            ctx.freeze(m, f"broadcast across channels in {describe(ctx.layer)}")
        if narrow and not self.multiplies(ctx):
            ctx.freeze(full_maps[0], f"{describe(ctx.layer)} adds a channel-broadcast input: removed "
                                     "channels would still carry it")
        return [full_maps[0]]

    def states(self, ctx, in_states):
        full = max(len(s) for s in in_states)
        states = np.stack([s for s in in_states if len(s) == full])
        if self.multiplies(ctx):
            return [np.where(states.min(axis=0) == ZERO, ZERO, states.max(axis=0)).astype(np.int8)]
        return [states.max(axis=0)]


@register(keras.layers.Concatenate)
class ConcatRule(Rule):
    """Channel-axis concat maps each input to an offset range; other axes couple inputs."""

    def propagate(self, ctx):
        rank = len(ctx.in_shapes[0])
        if any(len(s) != rank for s in ctx.in_shapes):
            return ctx.freeze_all(f"{describe(ctx.layer)} joins tensors of different ranks")
        if ctx.layer.axis % rank == rank - 1:
            return [np.concatenate(ctx.in_maps)]
        for m in ctx.in_maps[1:]:
            ctx.couple(ctx.in_maps[0], m)
        return [ctx.in_maps[0]]

    def states(self, ctx, in_states):
        rank = len(ctx.in_shapes[0])
        if ctx.layer.axis % rank == rank - 1:
            return [np.concatenate(in_states)]
        states = np.stack(in_states)
        same = np.all(states == ZERO, axis=0)
        return [np.where(same, ZERO, PATTERN).astype(np.int8)]


# ------------------------------------------------------------------------- reshapes


@register(keras.layers.Flatten)
class FlattenRule(Rule):
    """(..., C) -> (prod * C): channel c appears at every position p as row p*C + c."""

    def propagate(self, ctx):
        shape = ctx.in_shapes[0]
        if not self._channels_last(ctx) or any(d is None for d in shape[1:]):
            return ctx.freeze_all(f"{describe(ctx.layer)} needs a static channels-last input shape")
        reps = int(np.prod(shape[1:-1])) if len(shape) > 2 else 1
        return [np.tile(ctx.in_maps[0], reps)]

    def states(self, ctx, in_states):
        shape = ctx.in_shapes[0]
        reps = int(np.prod(shape[1:-1])) if len(shape) > 2 else 1
        return [np.tile(np.minimum(in_states[0], CONST), reps)]


@register(keras.layers.Reshape)
class ReshapeRule(Rule):
    """Supported only when the last (channel) axis is kept as it is."""

    def propagate(self, ctx):
        if ctx.out_shapes[0][-1] != ctx.in_shapes[0][-1] or ctx.in_shapes[0][-1] is None:
            return ctx.freeze_all(f"{describe(ctx.layer)} does not keep the channel axis "
                                  f"({ctx.in_shapes[0]} -> {ctx.out_shapes[0]})")
        return [ctx.in_maps[0]]

    def config(self, layer, config, in_keep, out_keep):
        target = list(config["target_shape"])
        target[-1] = int(in_keep.sum())
        return {**config, "target_shape": tuple(target)}


@register(keras.layers.Permute)
class PermuteRule(Rule):
    def propagate(self, ctx):
        dims = tuple(ctx.layer.dims)
        if dims[-1] != len(dims):
            return ctx.freeze_all(f"{describe(ctx.layer)} moves the channel axis (dims={dims})")
        return [ctx.in_maps[0]]
