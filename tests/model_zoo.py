"""Tiny models covering every layer kind the channel graph understands (test helpers)."""
from __future__ import annotations

import keras
import numpy as np

L = keras.layers


def randomize(model: keras.Model, seed: int = 0) -> keras.Model:
    """Random weights everywhere (non-trivial BN statistics and biases) for parity tests."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        shape = tuple(w.shape)
        if "variance" in w.name:
            w.assign(rng.uniform(0.5, 1.5, shape).astype(w.dtype))
        elif "gamma" in w.name:
            w.assign(rng.uniform(0.5, 1.5, shape).astype(w.dtype))
        else:
            w.assign((rng.standard_normal(shape) * 0.3).astype(w.dtype))
    return model


def random_masks(graph, fraction: float, seed: int = 0):
    from tfmot_mtl.masks import ChannelMasks

    rng = np.random.default_rng(seed)
    masks = {}
    for g in graph.prunable_groups:
        drop = rng.permutation(g.size)[: int(round(fraction * g.size))]
        mask = np.ones(g.size, bool)
        mask[drop] = False
        masks[g.id] = mask
    return ChannelMasks(masks)


def _model(inp, out, name):
    return keras.Model(inp, out, name=name)


def conv2d_variants():
    i = keras.Input((12, 12, 3), name="image")
    x = L.Conv2D(8, 3, padding="same", dilation_rate=2, name="dil")(i)
    x = L.Conv2D(8, 3, strides=2, padding="valid", name="strided")(x)
    x = L.Conv2D(6, 1, use_bias=False, name="nobias")(x)
    return _model(i, {"out": L.Conv2D(4, 3, padding="same", name="out")(x)}, "conv2d_variants")


def conv1d():
    i = keras.Input((20, 3), name="seq")
    x = L.Conv1D(8, 3, padding="causal", name="c1")(i)
    x = L.MaxPooling1D(2)(x)
    x = L.AveragePooling1D(2, padding="same")(x)
    x = L.Conv1D(6, 3, name="c2")(x)
    x = L.GlobalAveragePooling1D()(x)
    return _model(i, {"out": L.Dense(2, name="out")(x)}, "conv1d")


def grouped_conv():
    i = keras.Input((8, 8, 4), name="image")
    x = L.Conv2D(8, 3, padding="same", name="pre")(i)
    x = L.Conv2D(8, 3, padding="same", groups=2, name="grouped")(x)
    x = L.Conv2D(6, 1, name="post")(x)
    return _model(i, {"out": L.Conv2D(2, 1, name="out")(x)}, "grouped_conv")


def conv_transpose():
    i = keras.Input((6, 6, 3), name="image")
    x = L.Conv2D(8, 3, padding="same", name="c")(i)
    x = L.Conv2DTranspose(6, 3, strides=2, padding="same", name="up")(x)
    x = L.ReLU()(x)
    return _model(i, {"out": L.Conv2D(2, 1, name="out")(x)}, "conv_transpose")


def depthwise(multiplier: int = 1):
    def build():
        i = keras.Input((10, 10, 3), name="image")
        x = L.Conv2D(8, 1, name="expand")(i)
        x = L.BatchNormalization(name="bn")(x)
        x = L.ReLU(max_value=6.0)(x)
        x = L.DepthwiseConv2D(3, padding="same", depth_multiplier=multiplier, name="dw")(x)
        x = L.BatchNormalization(name="dw_bn")(x)
        x = L.Conv2D(5, 1, name="project")(x)
        return _model(i, {"out": L.Conv2D(2, 1, name="out")(x)}, f"depthwise_m{multiplier}")

    build.__name__ = f"depthwise_m{multiplier}"
    return build


def separable():
    i = keras.Input((10, 10, 3), name="image")
    x = L.Conv2D(8, 3, padding="same", name="c")(i)
    x = L.SeparableConv2D(6, 3, padding="same", depth_multiplier=2, name="sep")(x)
    x = L.ELU()(x)
    return _model(i, {"out": L.Conv2D(2, 1, name="out")(x)}, "separable")


def dense_rank3():
    i = keras.Input((5, 7), name="tokens")
    x = L.Dense(8, name="d1", activation="relu")(i)
    x = L.Dense(6, name="d2")(x)
    x = L.LeakyReLU(negative_slope=0.2)(x)
    return _model(i, {"out": L.Dense(3, name="out")(x)}, "dense_rank3")


def norms_and_activations():
    i = keras.Input((8, 8, 3), name="image")
    x = L.Normalization(mean=[0.1, 0.2, 0.3], variance=[1.0, 2.0, 3.0], name="norm")(i)
    x = L.Conv2D(8, 3, padding="same", name="c1")(x)
    x = L.PReLU(shared_axes=[1, 2], name="prelu")(x)
    x = L.Conv2D(8, 3, padding="same", name="c2")(x)
    x = L.Softmax(axis=1, name="spatial_softmax")(x)
    x = L.Conv2D(8, 1, name="c3")(x)
    x = L.LayerNormalization(name="ln")(x)
    return _model(i, {"out": L.Conv2D(2, 1, name="out")(x)}, "norms_and_activations")


def spatial_ops():
    i = keras.Input((12, 12, 3), name="image")
    x = L.Conv2D(8, 3, padding="same", name="c1")(i)
    x = L.Dropout(0.3)(x)
    x = L.SpatialDropout2D(0.2)(x)
    x = L.GaussianNoise(0.1)(x)
    x = L.ZeroPadding2D(1)(x)
    x = L.Cropping2D(2)(x)
    x = L.UpSampling2D(2, interpolation="bilinear")(x)
    x = L.Resizing(16, 16)(x)
    x = L.Rescaling(0.5)(x)
    x = L.Conv2D(6, 3, name="c2")(x)
    x = L.MaxPooling2D(2)(x)
    x = L.AveragePooling2D(2)(x)
    x = L.GlobalMaxPooling2D()(x)
    return _model(i, {"out": L.Dense(2, name="out")(x)}, "spatial_ops")


def merges():
    i = keras.Input((8, 8, 3), name="image")
    a = L.Conv2D(8, 3, padding="same", name="a")(i)
    b = L.Conv2D(8, 3, padding="same", name="b")(i)
    c = L.Conv2D(8, 1, name="c")(i)
    x = L.Add(name="add")([a, b])
    x = L.Subtract(name="sub")([x, c])
    x = L.Average(name="avg")([x, a])
    x = L.Maximum(name="max")([x, b])
    x = L.Minimum(name="min")([x, c])
    s = L.GlobalAveragePooling2D(keepdims=True)(x)
    s = L.Conv2D(4, 1, activation="relu", name="se_reduce")(s)
    s = L.Conv2D(8, 1, activation="sigmoid", name="se_expand")(s)
    x = L.Multiply(name="se")([x, s])
    return _model(i, {"out": L.Conv2D(2, 1, name="out")(x)}, "merges")


def concat_offsets():
    i = keras.Input((8, 8, 3), name="image")
    a = L.Conv2D(4, 3, padding="same", name="a")(i)
    b = L.Conv2D(6, 3, padding="same", name="b")(i)
    x = L.Concatenate(name="cat")([a, b, a])
    x = L.BatchNormalization(name="bn")(x)
    x = L.Conv2D(5, 3, padding="same", name="c")(x)
    return _model(i, {"out": L.Conv2D(2, 1, name="out")(x)}, "concat_offsets")


def flatten_dense():
    i = keras.Input((8, 8, 3), name="image")
    x = L.Conv2D(6, 3, strides=2, padding="same", name="c")(i)
    x = L.Flatten()(x)
    x = L.Dense(10, activation="relu", name="fc")(x)
    return _model(i, {"out": L.Dense(3, name="out")(x)}, "flatten_dense")


def reshape_permute():
    i = keras.Input((6, 6, 3), name="image")
    x = L.Conv2D(8, 3, padding="same", name="c1")(i)
    x = L.Reshape((36, 8), name="keep_channels")(x)
    x = L.Permute((1, 2), name="perm_keep")(x)
    x = L.Dense(6, name="d")(x)
    y = L.Permute((2, 1), name="perm_move")(x)
    y = L.Dense(4, name="d2")(y)
    return _model(i, {"out": L.Dense(2, name="out")(y)}, "reshape_permute")


def sigmoid_fold():
    """f(0) != 0 activations: folded into a 1x1 conv / Dense; frozen before a 3x3 'same' conv."""
    i = keras.Input((8, 8, 3), name="image")
    a = L.Conv2D(6, 3, padding="same", name="a", activation="sigmoid")(i)
    x = L.Conv2D(5, 1, name="pointwise")(a)
    b = L.Conv2D(6, 3, padding="same", name="b", activation="softplus")(i)
    y = L.Conv2D(5, 3, padding="same", name="same3x3")(b)
    z = L.Add(name="add")([x, y])
    p = L.GlobalAveragePooling2D()(L.Conv2D(4, 3, padding="same", name="c", activation="sigmoid")(z))
    return _model(i, {"seg": L.Conv2D(2, 1, name="seg")(z), "cls": L.Dense(3, name="cls")(p)},
                  "sigmoid_fold")


def multitask_trunk():
    """A shared trunk feeding a segmentation head, a depth head and a pooled classifier."""
    i = keras.Input((16, 16, 3), name="image")
    x = L.Conv2D(8, 3, padding="same", name="stem")(i)
    x = L.BatchNormalization(name="stem_bn")(x)
    x = L.ReLU()(x)
    y = L.Conv2D(8, 3, padding="same", name="res_conv")(x)
    y = L.BatchNormalization(name="res_bn")(y)
    x = L.ReLU()(L.Add(name="res_add")([x, y]))
    x = L.Conv2D(12, 3, strides=2, padding="same", name="down")(x)
    seg = L.Conv2D(6, 3, padding="same", name="seg_head", activation="relu")(x)
    seg = L.UpSampling2D(2, interpolation="bilinear", name="seg")(L.Conv2D(5, 1, name="seg_logits")(seg))
    dep = L.Conv2D(6, 3, padding="same", name="depth_head", activation="relu")(x)
    dep = L.UpSampling2D(2, name="depth")(L.Conv2D(1, 1, name="depth_out")(dep))
    cls = L.Dense(4, name="cls")(L.GlobalAveragePooling2D()(x))
    return _model(i, {"seg": seg, "depth": dep, "cls": cls}, "multitask_trunk")


def unet():
    i = keras.Input((16, 16, 3), name="image")
    e1 = L.Conv2D(8, 3, padding="same", activation="relu", name="e1")(i)
    e2 = L.Conv2D(12, 3, padding="same", activation="relu", name="e2")(L.MaxPooling2D()(e1))
    b = L.Conv2D(16, 3, padding="same", activation="relu", name="bott")(L.MaxPooling2D()(e2))
    u2 = L.Concatenate(name="skip2")([L.UpSampling2D()(b), e2])
    d2 = L.Conv2D(12, 3, padding="same", activation="relu", name="d2")(u2)
    u1 = L.Concatenate(name="skip1")([L.Conv2DTranspose(8, 2, strides=2, name="up1")(d2), e1])
    d1 = L.Conv2D(8, 3, padding="same", activation="relu", name="d1")(u1)
    return _model(i, {"seg": L.Conv2D(3, 1, name="seg")(d1)}, "unet")


def nested_and_shared():
    inner_in = keras.Input((8, 8, 6))
    inner = keras.Model(inner_in, L.Conv2D(6, 3, padding="same", name="inner_conv")(inner_in), name="block")
    i = keras.Input((8, 8, 3), name="image")
    x = L.Conv2D(6, 3, padding="same", name="stem")(i)
    shared = L.Conv2D(6, 3, padding="same", name="shared_conv")
    a = shared(x)
    b = shared(L.ReLU()(inner(x)))
    x = L.Add(name="merge")([a, b])
    return _model(i, {"out": L.Conv2D(2, 1, name="out")(x)}, "nested_and_shared")


def sequential():
    return keras.Sequential([keras.Input((8, 8, 3)), L.Conv2D(6, 3, padding="same", name="c1"),
                             L.BatchNormalization(name="bn"), L.ReLU(), L.Conv2D(4, 3, name="c2"),
                             L.GlobalAveragePooling2D(), L.Dense(2, name="out")], name="seq")


PARITY_MODELS = [conv2d_variants, conv1d, grouped_conv, conv_transpose, depthwise(1), depthwise(2),
                 separable, dense_rank3, norms_and_activations, spatial_ops, merges, concat_offsets,
                 flatten_dense, reshape_permute, sigmoid_fold, multitask_trunk, unet,
                 nested_and_shared, sequential]
