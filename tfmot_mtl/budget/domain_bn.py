"""Domain-specific BatchNormalization: per-domain statistics and affine parameters.

`DomainBatchNorm` holds, for each of D domains, its own gamma, beta, moving mean and moving
variance, each a (D, C) weight. In training the batch statistics of a domain are computed
over that domain's examples only (a mixed batch is split by the one-hot domain input; a
domain absent from the batch keeps its moving statistics), so each domain normalises its
features as a separate BatchNormalization would on its own data.

The layer is registered with the channel graph as channel-wise (its weights slice along
axis 1 with the feature channels), so `strip_channels` keeps the rows of surviving channels.
`domain_bn_to_stock` turns a trained layer into stock layers for export: the inference-time
per-domain ``scale = gamma / sqrt(var + eps)`` and ``shift = beta - mean * scale`` looked up by
two Embeddings of the int domain, ``Add([Multiply([x, Reshape(scale[d])]), Reshape(shift[d])])``.
"""
from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from tfmot_mtl.layers import Rule, describe, register
from tfmot_mtl.recipes.batchnorm import register_normalization


def domain_weights(domain, num_domains: int):
    """(B, D) float one-hot of a domain tensor (int indices (B,) / (B, 1), or a (B, D) one-hot)."""
    if len(domain.shape) == 2 and domain.shape[-1] == num_domains and num_domains > 1:
        return ops.cast(domain, "float32")
    index = ops.reshape(domain[..., :1] if len(domain.shape) == 2 else domain, (-1,))
    if num_domains == 1:
        index = ops.zeros_like(index)
    return ops.one_hot(ops.cast(index, "int32"), num_domains)


@keras.saving.register_keras_serializable(package="tfmot_mtl")
@register_normalization
class DomainBatchNorm(keras.layers.Layer):
    """BatchNormalization with one set of statistics and affine parameters per domain.

    Call on ``[features, domain]``: features (B, ..., C) channels-last; domain a (B, D)
    one-hot (what `add_domain_switches` feeds) or int indices (B,).

    Args:
        num_domains: number of domains D.
        momentum, epsilon, center, scale: as in `keras.layers.BatchNormalization`.
    """

    def __init__(self, num_domains: int, momentum: float = 0.99, epsilon: float = 1e-3,
                 center: bool = True, scale: bool = True, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(num_domains, (int, np.integer)) or num_domains < 1:
            raise ValueError(f"DomainBatchNorm num_domains must be a positive int, got {num_domains!r}")
        if not 0 <= momentum < 1:
            raise ValueError(f"DomainBatchNorm momentum must be in [0, 1), got {momentum!r}")
        self.num_domains, self.momentum, self.epsilon = int(num_domains), float(momentum), float(epsilon)
        self.center, self.scale = bool(center), bool(scale)

    def build(self, input_shape):
        channels = input_shape[0][-1]
        if channels is None:
            raise ValueError(f"DomainBatchNorm '{self.name}' needs a known channel count, got {input_shape[0]}")
        shape = (self.num_domains, int(channels))
        self.gamma = self.add_weight(name="gamma", shape=shape, initializer="ones",
                                     trainable=True) if self.scale else None
        self.beta = self.add_weight(name="beta", shape=shape, initializer="zeros",
                                    trainable=True) if self.center else None
        self.moving_mean = self.add_weight(name="moving_mean", shape=shape, initializer="zeros",
                                           trainable=False)
        self.moving_variance = self.add_weight(name="moving_variance", shape=shape, initializer="ones",
                                               trainable=False)

    def _batch_stats(self, x, w):
        axes = tuple(range(1, len(x.shape) - 1))
        count = ops.sum(w, axis=0)  # examples per domain in the batch
        denom = ops.maximum(count, 1.0)[:, None]
        wt = ops.transpose(w)
        mean = ops.matmul(wt, ops.mean(x, axis=axes)) / denom
        var = ops.relu(ops.matmul(wt, ops.mean(ops.square(x), axis=axes)) / denom - ops.square(mean))
        present = ops.greater(count, 0)[:, None]
        m = self.momentum
        self.moving_mean.assign(ops.where(present, m * self.moving_mean + (1 - m) * mean, self.moving_mean))
        self.moving_variance.assign(ops.where(present, m * self.moving_variance + (1 - m) * var,
                                              self.moving_variance))
        return ops.where(present, mean, self.moving_mean), ops.where(present, var, self.moving_variance)

    def call(self, inputs, training=None):
        x, domain = inputs
        w = domain_weights(domain, self.num_domains)
        x32 = ops.cast(x, "float32")
        if training:
            mean, var = self._batch_stats(x32, w)
        else:
            mean, var = self.moving_mean, self.moving_variance
        inv = ops.rsqrt(var + self.epsilon)
        if self.gamma is not None:
            inv = inv * self.gamma
        shift = -mean * inv + (self.beta if self.beta is not None else 0.0)
        shape = (-1,) + (1,) * (len(x.shape) - 2) + (inv.shape[-1],)
        out = x32 * ops.reshape(ops.matmul(w, inv), shape) + ops.reshape(ops.matmul(w, shift), shape)
        return ops.cast(out, x.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def scale_shift(self) -> tuple[np.ndarray, np.ndarray]:
        """Inference-time per-domain (scale, shift), each (D, C): ``y = x * scale[d] + shift[d]``."""
        mean = np.asarray(ops.convert_to_numpy(self.moving_mean), np.float64)
        var = np.asarray(ops.convert_to_numpy(self.moving_variance), np.float64)
        scale = 1.0 / np.sqrt(var + self.epsilon)
        if self.gamma is not None:
            scale = scale * np.asarray(ops.convert_to_numpy(self.gamma))
        shift = -mean * scale
        if self.beta is not None:
            shift = shift + np.asarray(ops.convert_to_numpy(self.beta))
        return scale.astype("float32"), shift.astype("float32")

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "num_domains": self.num_domains, "momentum": self.momentum,
                "epsilon": self.epsilon, "center": self.center, "scale": self.scale}


class DomainBatchNormRule(Rule):
    """Channel-wise on the features; every (D, C) weight slices along axis 1."""

    def propagate(self, ctx):
        if len(ctx.in_shapes[0]) < 2:
            return ctx.freeze_all(f"{describe(ctx.layer)} normalises rank-1 features")
        in_map = ctx.in_maps[0]
        for i, w in enumerate(ctx.layer.weights):
            name = w.name.split("/")[-1]
            ctx.axis(i, 1, "out", in_map, zeroed=name != "moving_variance",
                     defines_zero=name in ("gamma", "beta"))
        return [in_map]

    def states(self, ctx, in_states):
        if ctx.layer.scale:
            return [np.zeros_like(in_states[0])]
        return [in_states[0]]


register(DomainBatchNorm)(DomainBatchNormRule)


def is_channel_bn(layer: Any, rank: int) -> bool:
    """True for a BatchNormalization normalising the last (channel) axis of rank-`rank` inputs."""
    if not isinstance(layer, keras.layers.BatchNormalization) or rank < 2:
        return False
    axis = np.atleast_1d(layer.axis).tolist()
    return len(axis) == 1 and axis[0] % rank == rank - 1


def from_batch_norm(layer: keras.layers.BatchNormalization, num_domains: int,
                    momentum: float | None = None) -> DomainBatchNorm:
    """A (not yet built) DomainBatchNorm with the settings and name of `layer`; see `tile_weights`."""
    return DomainBatchNorm(num_domains, momentum=layer.momentum if momentum is None else momentum,
                           epsilon=layer.epsilon, center=layer.center, scale=layer.scale, name=layer.name)


def tile_weights(layer: keras.layers.BatchNormalization, num_domains: int) -> list[np.ndarray]:
    """The BatchNormalization's weights repeated for every domain, in DomainBatchNorm's order."""
    return [np.tile(np.asarray(w)[None], (num_domains, 1)) for w in layer.get_weights()]


def domain_bn_to_stock(layer: DomainBatchNorm, features, domain, name: str):
    """Stock layers computing ``layer`` at inference on ``features`` for the int ``domain`` tensor."""
    scale, shift = layer.scale_shift()
    index = ops.reshape(domain, (-1,)) if len(domain.shape) != 1 else domain
    shape = (1,) * (len(features.shape) - 2) + (scale.shape[1],)
    parts = []
    for kind, table in (("scale", scale), ("shift", shift)):
        emb = keras.layers.Embedding(layer.num_domains, table.shape[1], name=f"{name}_{kind}",
                                     embeddings_initializer=keras.initializers.Constant(table))
        parts.append(keras.layers.Reshape(shape, name=f"{name}_{kind}_reshape")(emb(index)))
    scaled = keras.layers.Multiply(name=f"{name}_mul")([features, parts[0]])
    return keras.layers.Add(name=name)([scaled, parts[1]])
