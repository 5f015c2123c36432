"""Rules of layers that create channels: convolutions, Dense, depthwise, separable."""
from __future__ import annotations

from typing import Any

import keras
import numpy as np

from tfmot_mtl.layers.base import CONST, ZERO, Rule, describe, register


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
            return self._grouped(ctx)
        out = ctx.new_atoms(layer.filters)
        ctx.axis(0, self.out_axis, "out", out)
        if layer.use_bias:
            ctx.axis(1, 0, "out", out)
        ctx.axis(0, self.in_axis, "in", ctx.in_maps[0])
        return [out]

    def _grouped(self, ctx):
        """Grouped convolution: whole groups go. The input channels of a group are coupled and its
        output channels carry them (like a depthwise convolution with ``filters / groups`` outputs
        per group); the kernel's input axis indexes within a group and is never sliced."""
        layer, in_map = ctx.layer, ctx.in_maps[0]
        groups = layer.groups
        if self.in_axis != -2 or len(in_map) % groups or layer.filters % groups:
            return ctx.freeze_all(f"{describe(layer)} is a grouped convolution (groups={groups})")
        per_in, per_out = len(in_map) // groups, layer.filters // groups
        for g in range(groups):
            part = in_map[g * per_in:(g + 1) * per_in]
            ctx.couple(np.repeat(part[:1], len(part)), part)
        out = np.repeat(in_map[::per_in], per_out)
        ctx.axis(0, -1, "out", out)
        if layer.use_bias:
            ctx.axis(1, 0, "out", out)
        return [out]

    def states(self, ctx, in_states):
        return [_own_activation_state(ctx.layer, ctx.out_widths[0])]

    def can_fold(self, layer):
        if getattr(layer, "groups", 1) != 1:
            return False
        kernel_one = all(k == 1 for k in layer.kernel_size)
        return layer.use_bias and (layer.padding == "valid" or kernel_one)

    def fold(self, layer, weights, positions, values):
        _fold_dense_like(weights[0], weights[1], self.in_axis % weights[0].ndim, positions, values)

    def config(self, layer, config, in_keep, out_keep):
        config = {**config, "filters": int(out_keep.sum())}
        if getattr(layer, "groups", 1) != 1:
            config["groups"] = int(out_keep.sum()) // (layer.filters // layer.groups)
        return config


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
