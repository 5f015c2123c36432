"""Training losses of the task kinds, masked to the valid targets and written in ``keras.ops``.

Each returns per-sample values whose Keras mean is the batch-wide masked mean (see
:func:`batch_mean`), so ``tf.distribute`` scaling and sample weights work as for stock losses.
"""
from __future__ import annotations

import keras


def batch_mean(values, valid):
    """Per-sample losses (B,) whose Keras mean equals the mean of ``values`` over ``valid``.

    Returning per-sample values rather than a scalar matters: Keras only divides
    per-sample losses by the replica count under ``tf.distribute`` (a scalar loss would
    give N-times too large gradients on N replicas).

    Sample ``i`` gets ``sum_valid_i(values) * B / n_valid``, so Keras' default
    ``sum_over_batch_size`` reduction (which also handles ``tf.distribute`` scaling and
    per-sample weights) yields the exact batch-wide masked mean; 0 when nothing is valid.
    """
    valid = keras.ops.cast(valid, values.dtype)
    values = keras.ops.where(valid > 0, values, keras.ops.zeros_like(values))
    axes = tuple(range(1, len(values.shape)))
    per_sample = keras.ops.sum(values * valid, axis=axes) if axes else values * valid
    batch = keras.ops.cast(keras.ops.shape(values)[0], values.dtype)
    return per_sample * batch / keras.ops.maximum(keras.ops.sum(valid), 1.0)


def unit_vectors(v):
    """``v`` divided by its L2 norm over the last axis (a zero vector stays zero)."""
    return v * keras.ops.rsqrt(keras.ops.maximum(keras.ops.sum(keras.ops.square(v), -1, keepdims=True), 1e-12))


def _drop_channel_axis(y_true, y_pred):
    """Labels given as (..., 1) next to predictions of the same rank become (...)."""
    if len(y_true.shape) == len(y_pred.shape) and y_true.shape[-1] == 1:
        return keras.ops.squeeze(y_true, axis=-1)
    return y_true


@keras.saving.register_keras_serializable(package="tfmot_mtl")
class MaskedSparseCrossEntropy(keras.losses.Loss):
    """Softmax cross-entropy from logits, averaged over labels != ``ignore_index``.

    ``y_true``: int class ids in [0, C) or ``ignore_index``, shape (B, ...) (a trailing
    1 axis is accepted); ``y_pred``: logits (B, ..., C). A batch with no valid label
    gives 0, never NaN. As for every loss here, calling it returns the batch-wide masked
    mean; per-sample weights weight whole samples.
    """

    def __init__(self, ignore_index: int = -1, name: str = "masked_sparse_ce", **kwargs):
        super().__init__(name=name, **kwargs)
        self.ignore_index = int(ignore_index)

    def call(self, y_true, y_pred):
        y_pred = keras.ops.cast(y_pred, "float32")
        labels = keras.ops.cast(_drop_channel_axis(y_true, y_pred), "int32")
        valid = labels != self.ignore_index
        safe = keras.ops.where(valid, labels, keras.ops.zeros_like(labels))
        ce = keras.ops.sparse_categorical_crossentropy(safe, y_pred, from_logits=True)
        return batch_mean(ce, valid)

    def get_config(self):
        return {**super().get_config(), "ignore_index": self.ignore_index}


@keras.saving.register_keras_serializable(package="tfmot_mtl")
class MaskedL1(keras.losses.Loss):
    """Mean absolute error over pixels whose target is > 0 (0 / NaN = invalid depth)."""

    def __init__(self, name: str = "masked_l1", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        y_pred = keras.ops.cast(y_pred, "float32")
        y_true = keras.ops.cast(y_true, "float32")
        if len(y_true.shape) == len(y_pred.shape) - 1:
            y_true = keras.ops.expand_dims(y_true, -1)
        valid = y_true > 0
        safe = keras.ops.where(valid, y_true, keras.ops.zeros_like(y_true))
        return batch_mean(keras.ops.abs(y_pred - safe), valid)


@keras.saving.register_keras_serializable(package="tfmot_mtl")
class MaskedCosineDistance(keras.losses.Loss):
    """1 - cos(pred, target) over pixels with a non-zero target normal.

    Both vectors are normalised inside, so the model output needs no normalisation.
    """

    def __init__(self, name: str = "masked_cosine", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        y_pred = keras.ops.cast(y_pred, "float32")
        y_true = keras.ops.cast(y_true, "float32")
        sq = keras.ops.sum(keras.ops.square(y_true), axis=-1)
        valid = sq > 0
        safe = keras.ops.where(valid[..., None], y_true, keras.ops.zeros_like(y_true))

        cos = keras.ops.sum(unit_vectors(y_pred) * unit_vectors(safe), axis=-1)
        return batch_mean(1.0 - cos, valid)


@keras.saving.register_keras_serializable(package="tfmot_mtl")
class MaskedBinaryCrossEntropy(keras.losses.Loss):
    """Sigmoid cross-entropy from logits, averaged over targets >= 0 (negative = ignore)."""

    def __init__(self, name: str = "masked_binary_ce", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        y_pred = keras.ops.cast(y_pred, "float32")
        y_true = keras.ops.cast(y_true, "float32")
        valid = y_true >= 0
        safe = keras.ops.where(valid, y_true, keras.ops.zeros_like(y_true))
        # Numerically stable form of BCE with logits: max(x,0) - x*z + log(1+exp(-|x|)).
        bce = (
            keras.ops.relu(y_pred)
            - y_pred * safe
            + keras.ops.log1p(keras.ops.exp(-keras.ops.abs(y_pred)))
        )
        return batch_mean(bce, valid)


def default_loss(kind: str, name: str, ignore_index: int = -1) -> keras.losses.Loss:
    """The training loss of a task kind, named ``{name}_loss``."""
    if kind in ("segmentation", "classification"):
        return MaskedSparseCrossEntropy(ignore_index, name=f"{name}_loss")
    return {"depth": MaskedL1, "normals": MaskedCosineDistance, "binary": MaskedBinaryCrossEntropy}[
        kind
    ](name=f"{name}_loss")
