"""Per-layer-kind channel rules: the only place that knows what a layer does to channels.

A rule answers, for one call of one layer (channels-last):

- ``propagate(ctx)``: the channel map of each output (which *atom* each output channel
  carries), which weight axes slice with which atoms (``role="out"`` for slices a channel
  owns, zeroed when it is masked; ``role="in"`` for a consumer's input rows), which atoms
  must be coupled or frozen (with a reason);
- ``states(ctx, in_states)``: what a masked channel looks like after the layer: exactly
  zero (ZERO), one constant per channel (CONST), or an input-independent spatial
  pattern (PATTERN), so that constants left by f(0) != 0 can be folded exactly;
- ``can_fold`` / ``fold``: whether a consumer absorbs a constant input channel into its
  bias exactly, and doing it;
- ``config``: the layer's config with fewer channels.

The graph walker, the masker and the surgeon are generic over these rules. Supporting a
new layer kind means registering one rule with :func:`register`.
"""
from __future__ import annotations

from typing import Any, Callable

import keras
import numpy as np

ZERO, CONST, PATTERN = 0, 1, 2

_RULES: dict[type, "Rule"] = {}


def register(*classes: type) -> Callable:
    """Class decorator registering a rule instance for the given layer classes."""

    def deco(rule_cls):
        for cls in classes:
            _RULES[cls] = rule_cls()
        return rule_cls

    return deco


def rule_for(layer: Any) -> "Rule":
    """The rule of the most specific registered class in the layer's MRO (else Unknown)."""
    for cls in type(layer).__mro__:
        if cls in _RULES:
            return _RULES[cls]
    return UNKNOWN


def describe(layer: Any) -> str:
    return f"'{getattr(layer, 'name', '?')}' ({type(layer).__name__})"


class Rule:
    """Base rule: pass every channel through unchanged (element-wise on channels)."""

    def propagate(self, ctx) -> list:
        if not self._channels_last(ctx):
            return ctx.freeze_all(f"{describe(ctx.layer)} is not channels-last")
        return [ctx.in_maps[0]]

    def states(self, ctx, in_states: list) -> list:
        return [in_states[0]]

    def can_fold(self, layer: Any) -> bool:
        return False

    def fold(self, layer, weights: list, positions: np.ndarray, values: np.ndarray) -> None:
        raise NotImplementedError

    def config(self, layer, config: dict, in_keep, out_keep) -> dict:
        return config

    @staticmethod
    def _channels_last(ctx) -> bool:
        return getattr(ctx.layer, "data_format", "channels_last") in (None, "channels_last")


class Unknown(Rule):
    """A layer the graph does not understand: everything it touches is frozen."""

    def propagate(self, ctx) -> list:
        return ctx.freeze_all(f"layer {describe(ctx.layer)} is not understood by the channel graph")

    def states(self, ctx, in_states):
        return [np.zeros(n, np.int8) for n in ctx.out_widths]


UNKNOWN = Unknown()


# --------------------------------------------------------------------------- producers


def _own_activation_state(layer: Any, width: int) -> np.ndarray:
    """State of a masked output channel of a layer with a built-in activation f: f(0)."""
    activation = getattr(layer, "activation", None)
    if activation is None:
        return np.zeros(width, np.int8)
    f0 = np.asarray(keras.ops.convert_to_numpy(activation(keras.ops.zeros((1,)))))
    return np.full(width, CONST if np.any(f0) else ZERO, np.int8)


def _fold_dense_like(kernel: np.ndarray, bias: np.ndarray, in_axis: int, positions, values):
    """bias += sum over all other kernel axes of kernel[..., c, ...] * value_c; rows -> 0."""
    rows = np.take(kernel, positions, axis=in_axis)
    rows = np.moveaxis(rows, in_axis, -1)  # (..., out, k) or (k_spatial..., out, k)
    contrib = rows @ values.astype(rows.dtype)
    bias += contrib.reshape(-1, bias.shape[0]).sum(axis=0)
    idx = [slice(None)] * kernel.ndim
    idx[in_axis] = positions
    kernel[tuple(idx)] = 0


@register(keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
class ConvRule(Rule):
    """Kernel (*k, Cin/groups, Cout): consumes the input group, produces a new group."""

    in_axis, out_axis = -2, -1

    def propagate(self, ctx):
        layer = ctx.layer
        if not self._channels_last(ctx):
            return ctx.freeze_all(f"{describe(layer)} is not channels-last")
        if getattr(layer, "groups", 1) != 1:
            return ctx.freeze_all(f"{describe(layer)} is a grouped convolution (groups={layer.groups})")
        out = ctx.new_atoms(layer.filters)
        ctx.axis(0, self.out_axis, "out", out)
        if layer.use_bias:
            ctx.axis(1, 0, "out", out)
        ctx.axis(0, self.in_axis, "in", ctx.in_maps[0])
        return [out]

    def states(self, ctx, in_states):
        return [_own_activation_state(ctx.layer, ctx.out_widths[0])]

    def can_fold(self, layer):
        kernel_one = all(k == 1 for k in layer.kernel_size)
        return layer.use_bias and (layer.padding == "valid" or kernel_one)

    def fold(self, layer, weights, positions, values):
        _fold_dense_like(weights[0], weights[1], self.in_axis % weights[0].ndim, positions, values)

    def config(self, layer, config, in_keep, out_keep):
        return {**config, "filters": int(out_keep.sum())}


@register(keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose)
class ConvTransposeRule(ConvRule):
    """Kernel (*k, Cout, Cin)."""

    in_axis, out_axis = -1, -2

    def can_fold(self, layer):
        ones = all(k == 1 for k in layer.kernel_size) and all(s == 1 for s in layer.strides)
        return layer.use_bias and ones


@register(keras.layers.Dense)
class DenseRule(ConvRule):
    """Kernel (Cin, units) on the last axis of any rank."""

    in_axis, out_axis = 0, -1

    def propagate(self, ctx):
        layer = ctx.layer
        out = ctx.new_atoms(layer.units)
        ctx.axis(0, -1, "out", out)
        if layer.use_bias:
            ctx.axis(1, 0, "out", out)
        ctx.axis(0, 0, "in", ctx.in_maps[0])
        return [out]

    def states(self, ctx, in_states):
        return [_own_activation_state(ctx.layer, ctx.out_widths[0])]

    def can_fold(self, layer):
        return layer.use_bias

    def fold(self, layer, weights, positions, values):
        _fold_dense_like(weights[0], weights[1], 0, positions, values)

    def config(self, layer, config, in_keep, out_keep):
        return {**config, "units": int(out_keep.sum())}


@register(keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)
class DepthwiseRule(Rule):
    """Kernel (*k, C, m): output channel c*m+j belongs to input channel c."""

    def propagate(self, ctx):
        layer = ctx.layer
        if not self._channels_last(ctx):
            return ctx.freeze_all(f"{describe(layer)} is not channels-last")
        in_map = ctx.in_maps[0]
        out = np.repeat(in_map, layer.depth_multiplier)
        ctx.axis(0, -2, "out", in_map)
        if layer.use_bias:
            ctx.axis(1, 0, "out", out)
        return [out]

    def states(self, ctx, in_states):
        return [_own_activation_state(ctx.layer, ctx.out_widths[0])]


@register(keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)
class SeparableRule(Rule):
    """Depthwise (*k, C, m) then pointwise (1.., C*m, Cout) + bias (Cout)."""

    def propagate(self, ctx):
        layer = ctx.layer
        if not self._channels_last(ctx):
            return ctx.freeze_all(f"{describe(layer)} is not channels-last")
        in_map = ctx.in_maps[0]
        out = ctx.new_atoms(layer.filters)
        ctx.axis(0, -2, "in", in_map)
        ctx.axis(1, -2, "in", np.repeat(in_map, layer.depth_multiplier))
        ctx.axis(1, -1, "out", out)
        if layer.use_bias:
            ctx.axis(2, 0, "out", out)
        return [out]

    def states(self, ctx, in_states):
        return [_own_activation_state(ctx.layer, ctx.out_widths[0])]

    def config(self, layer, config, in_keep, out_keep):
        return {**config, "filters": int(out_keep.sum())}


# ------------------------------------------------------------------ normalisation


@register(keras.layers.BatchNormalization)
class BatchNormRule(Rule):
    """Per-channel gamma, beta, moving mean and variance on the last axis."""

    def propagate(self, ctx):
        layer = ctx.layer
        rank = len(ctx.in_shapes[0])
        if layer.axis not in (-1, rank - 1) and list(np.atleast_1d(layer.axis)) not in ([-1], [rank - 1]):
            return ctx.freeze_all(f"{describe(layer)} normalises axis {layer.axis}, not the channel axis")
        in_map = ctx.in_maps[0]
        names = [w.name for w in layer.weights]
        for i, name in enumerate(names):
            trainable = name in ("gamma", "beta")
            zeroed = name != "moving_variance"
            ctx.axis(i, 0, "out", in_map, zeroed=zeroed, defines_zero=trainable)
        return [in_map]

    def states(self, ctx, in_states):
        if ctx.layer.scale:
            return [np.zeros_like(in_states[0])]
        return [in_states[0]]


@register(keras.layers.LayerNormalization, keras.layers.UnitNormalization,
          keras.layers.GroupNormalization)
class CrossChannelNormRule(Rule):
    """Normalises across channels: removing one channel changes all the others."""

    def propagate(self, ctx):
        layer = ctx.layer
        rank = len(ctx.in_shapes[0])
        axes = [a % rank for a in np.atleast_1d(getattr(layer, "axis", -1))]
        reason = (f"{describe(layer)} normalises across the channel axis: removing a channel "
                  "changes the others")
        if rank - 1 not in axes:
            reason = f"{describe(layer)} normalises axes {axes}, which the channel graph does not model"
        return ctx.freeze_all(reason)

    def states(self, ctx, in_states):
        return [np.zeros(n, np.int8) for n in ctx.out_widths]


@register(keras.layers.Normalization)
class NormalizationRule(Rule):
    """Per-channel mean/variance statistics (axis -1); f(0) = -mean/std is a constant."""

    def propagate(self, ctx):
        layer = ctx.layer
        axis = tuple(a % len(ctx.in_shapes[0]) for a in (layer.axis or ()))
        if axis != (len(ctx.in_shapes[0]) - 1,):
            return ctx.freeze_all(f"{describe(layer)} keeps statistics over axes {axis}")
        width = len(ctx.in_maps[0])
        for i, w in enumerate(layer.weights):
            if len(w.shape) and w.shape[-1] == width:
                ctx.axis(i, -1, "out", ctx.in_maps[0], zeroed=False, defines_zero=False)
        return [ctx.in_maps[0]]

    def states(self, ctx, in_states):
        return [np.maximum(in_states[0], CONST)]

    def config(self, layer, config, in_keep, out_keep):
        config = dict(config)
        for key in ("mean", "variance"):
            value = config.get(key)
            if value is not None and np.size(value) == len(in_keep):
                config[key] = np.asarray(value).reshape(-1)[in_keep].tolist()
        return config


# -------------------------------------------------------------------- pass-through


def zero_response(layer: Any, shape: tuple) -> np.ndarray | None:
    """Output of a stateless element-wise layer at input 0 (None if it cannot be probed)."""
    probe = tuple(1 if d is None else d for d in shape)
    try:
        out = layer(np.zeros(probe, np.float32), training=False)
    except Exception:  # noqa: BLE001 - any failure means we cannot prove f(0) == 0
        return None
    return np.asarray(keras.ops.convert_to_numpy(out))


@register(keras.layers.Activation, keras.layers.ReLU, keras.layers.LeakyReLU, keras.layers.ELU,
          keras.layers.PReLU, keras.layers.Rescaling, keras.layers.Softmax)
class ElementwiseRule(Rule):
    """Acts channel by channel: zero stays zero only if f(0) == 0."""

    def propagate(self, ctx):
        layer = ctx.layer
        if self._mixes_channels(ctx):
            return ctx.freeze_all(f"{describe(layer)} mixes channels (softmax over the channel axis)")
        if isinstance(layer, keras.layers.PReLU):
            alpha = layer.weights[0]
            if alpha.shape[-1] == len(ctx.in_maps[0]) and len(ctx.in_maps[0]) > 1:
                ctx.axis(0, -1, "out", ctx.in_maps[0], zeroed=False, defines_zero=False)
        if isinstance(layer, keras.layers.Rescaling) and (np.ndim(layer.scale) or np.ndim(layer.offset)):
            return ctx.freeze_all(f"{describe(layer)} has per-channel scale/offset arrays")
        return [ctx.in_maps[0]]

    @staticmethod
    def _mixes_channels(ctx) -> bool:
        layer, rank = ctx.layer, len(ctx.in_shapes[0])
        if isinstance(layer, keras.layers.Softmax):
            axes = [a % rank for a in np.atleast_1d(layer.axis)]
            return rank - 1 in axes
        if isinstance(layer, keras.layers.Activation):
            name = getattr(layer.activation, "__name__", "")
            return name in ("softmax", "log_softmax")
        return False

    def states(self, ctx, in_states):
        f0 = zero_response(ctx.layer, ctx.in_shapes[0])
        zero_kept = f0 is not None and not np.any(f0)
        state = in_states[0]
        return [state if zero_kept else np.maximum(state, CONST)]


@register(keras.layers.MaxPooling1D, keras.layers.MaxPooling2D, keras.layers.MaxPooling3D,
          keras.layers.AveragePooling1D, keras.layers.AveragePooling2D, keras.layers.AveragePooling3D,
          keras.layers.Dropout, keras.layers.SpatialDropout1D, keras.layers.SpatialDropout2D,
          keras.layers.SpatialDropout3D, keras.layers.GaussianNoise, keras.layers.GaussianDropout,
          keras.layers.AlphaDropout, keras.layers.ActivityRegularization, keras.layers.Identity,
          keras.layers.Cropping1D, keras.layers.Cropping2D, keras.layers.Cropping3D,
          keras.layers.UpSampling1D, keras.layers.UpSampling2D, keras.layers.UpSampling3D)
class SpatialRule(Rule):
    """Moves or averages values within each channel; constants stay constants."""


@register(keras.layers.Resizing)
class ResizingRule(Rule):
    def states(self, ctx, in_states):
        if getattr(ctx.layer, "pad_to_aspect_ratio", False):
            return [np.where(in_states[0] == ZERO, ZERO, PATTERN).astype(np.int8)]
        return [in_states[0]]


@register(keras.layers.ZeroPadding1D, keras.layers.ZeroPadding2D, keras.layers.ZeroPadding3D)
class ZeroPaddingRule(Rule):
    """Pads with zeros: a constant channel becomes a border pattern."""

    def states(self, ctx, in_states):
        return [np.where(in_states[0] == ZERO, ZERO, PATTERN).astype(np.int8)]


@register(keras.layers.GlobalAveragePooling1D, keras.layers.GlobalAveragePooling2D,
          keras.layers.GlobalAveragePooling3D, keras.layers.GlobalMaxPooling1D,
          keras.layers.GlobalMaxPooling2D, keras.layers.GlobalMaxPooling3D)
class GlobalPoolRule(Rule):
    """Reduces space: any input-independent pattern becomes one constant."""

    def states(self, ctx, in_states):
        return [np.minimum(in_states[0], CONST)]


# --------------------------------------------------------------------------- merges

_MERGE_CLASSES = (keras.layers.Add, keras.layers.Subtract, keras.layers.Multiply,
                  keras.layers.Average, keras.layers.Maximum, keras.layers.Minimum)


@register(*_MERGE_CLASSES)
class MergeRule(Rule):
    """Element-wise merge: the channels of all full-width inputs are the same channels."""

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
        if narrow and not isinstance(ctx.layer, keras.layers.Multiply):
            ctx.freeze(full_maps[0], f"{describe(ctx.layer)} adds a channel-broadcast input: removed "
                                     "channels would still carry it")
        return [full_maps[0]]

    def states(self, ctx, in_states):
        full = max(len(s) for s in in_states)
        states = np.stack([s for s in in_states if len(s) == full])
        if isinstance(ctx.layer, keras.layers.Multiply):
            return [np.where(states.min(axis=0) == ZERO, ZERO, states.max(axis=0)).astype(np.int8)]
        return [states.max(axis=0)]


@register(keras.layers.Concatenate)
class ConcatRule(Rule):
    """Channel-axis concat maps each input to an offset range; other axes couple inputs."""

    def propagate(self, ctx):
        rank = len(ctx.in_shapes[0])
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
