"""Rules of layers acting channel by channel: normalisation, activations, pooling, resizing."""
from __future__ import annotations

from typing import Any

import keras
import numpy as np

from tfmot_mtl.layers.base import CONST, PATTERN, ZERO, Rule, describe, register


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


@register(keras.layers.LayerNormalization, keras.layers.UnitNormalization)
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
    probe = tuple(1 if d is None or i == 0 else d for i, d in enumerate(shape))
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
          keras.layers.SpatialDropout1D, keras.layers.SpatialDropout2D, keras.layers.SpatialDropout3D,
          keras.layers.Cropping1D, keras.layers.Cropping2D, keras.layers.Cropping3D,
          keras.layers.UpSampling1D, keras.layers.UpSampling2D, keras.layers.UpSampling3D)
class SpatialRule(Rule):
    """Moves or averages values within each channel; constants stay constants."""


@register(keras.layers.Dropout, keras.layers.GaussianNoise, keras.layers.GaussianDropout,
          keras.layers.AlphaDropout, keras.layers.ActivityRegularization, keras.layers.Identity)
class PerValueRule(SpatialRule):
    """Acts value by value (dropout, noise, identity): it follows attention heads too."""

    split_axes = "elementwise"


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
