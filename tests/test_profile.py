"""Tests for tfmot_mtl.profile: MAC formulas, parameter counts, task split, dynamic shapes."""
import json

import keras
import pytest

from tfmot_mtl.profile import count_macs, count_params, profile

L = keras.layers


def _single(layer, shape):
    x = keras.Input(shape, name="image")
    return keras.Model(x, layer(x))


@pytest.mark.parametrize("shape, layer, expected", [
    # out 8x8, kernel 3x3x3x4
    ((8, 8, 3), L.Conv2D(4, 3, padding="same"), 8 * 8 * 3 * 3 * 3 * 4),
    # 9x9 valid stride 2 -> 4x4
    ((9, 9, 3), L.Conv2D(4, 3, strides=2, padding="valid"), 4 * 4 * 3 * 3 * 3 * 4),
    # dilation 2: effective kernel 5, 10x10 valid -> 6x6
    ((10, 10, 3), L.Conv2D(4, 3, dilation_rate=2), 6 * 6 * 3 * 3 * 3 * 4),
    # groups=2: each output sees Cin/groups = 2 channels
    ((8, 8, 4), L.Conv2D(6, 3, padding="same", groups=2), 8 * 8 * 3 * 3 * 2 * 6),
    ((3, 8, 8), L.Conv2D(4, 3, padding="same", data_format="channels_first"),
     8 * 8 * 3 * 3 * 3 * 4),
    ((10, 3), L.Conv1D(4, 3), 8 * 3 * 3 * 4),
    ((4, 4, 4, 2), L.Conv3D(3, 2), 3 * 3 * 3 * 2 * 2 * 2 * 2 * 3),
    ((10,), L.Dense(7), 10 * 7),
    ((5, 10), L.Dense(7), 5 * 10 * 7),
    ((8, 8, 3), L.DepthwiseConv2D(3, depth_multiplier=2, padding="same"), 8 * 8 * 3 * 3 * 3 * 2),
    # depthwise 8x8x(3x3)x3x2 + pointwise 8x8x6x4
    ((8, 8, 3), L.SeparableConv2D(4, 3, padding="same", depth_multiplier=2),
     8 * 8 * 3 * 3 * 3 * 2 + 8 * 8 * 6 * 4),
    # transposed: every one of the 5x5 input pixels scatters a 3x3x3x4 kernel
    ((5, 5, 3), L.Conv2DTranspose(4, 3, strides=2, padding="same"), 5 * 5 * 3 * 3 * 3 * 4),
    ((8, 8, 3), L.BatchNormalization(), 0),
    ((8, 8, 3), L.UpSampling2D(interpolation="bilinear"), 0),
])
def test_layer_macs_match_hand_formula(shape, layer, expected):
    model = _single(layer, shape)
    prof = profile(model)
    assert prof.total_macs == expected
    assert count_macs(model) == expected
    assert prof.total_params == model.count_params()
    assert prof.uncounted == []


def test_transpose_output_shape_and_row_fields():
    prof = profile(_single(L.Conv2DTranspose(4, 3, strides=2, padding="same", name="up"), (5, 5, 3)))
    (row,) = prof.layers
    assert (row.name, row.class_name, row.output_shape) == ("up", "Conv2DTranspose", (None, 10, 10, 4))
    assert row.params == row.trainable_params == 3 * 3 * 4 * 3 + 4


def test_params_with_bn_frozen_layer_shared_call_and_nested_model():
    inner_in = keras.Input((8, 8, 4))
    y = L.Conv2D(4, 3, padding="same", name="inner_conv")(inner_in)
    y = L.BatchNormalization(name="inner_bn")(y)
    inner = keras.Model(inner_in, y, name="block")

    x = keras.Input((8, 8, 3), name="image")
    h = L.Conv2D(4, 3, padding="same", name="stem")(x)
    h = L.BatchNormalization(name="bn")(h)
    h = inner(h)
    h = inner(h)  # nested model called twice: params once, MACs twice
    shared_conv = L.Conv2D(4, 1, name="twice")
    h = shared_conv(shared_conv(h))
    frozen = L.Dense(3, name="frozen")
    frozen.trainable = False
    out = frozen(L.GlobalAveragePooling2D()(h))
    model = keras.Model(x, {"cls": out})

    prof = profile(model)
    assert prof.total_params == model.count_params() == count_params(model)
    assert prof.trainable_params == sum(int(keras.ops.size(w)) for w in model.trainable_weights)
    conv_macs = 64 * 9 * 3 * 4 + 2 * 64 * 9 * 4 * 4 + 2 * 64 * 4 * 4
    assert prof.total_macs == conv_macs + 4 * 3
    calls = [(r.name, r.call_index, r.params) for r in prof.layers if r.name in ("inner_conv", "twice")]
    assert calls == [("inner_conv", 0, 3 * 3 * 4 * 4 + 4), ("inner_conv", 1, 0),
                     ("twice", 0, 20), ("twice", 1, 0)]
    bn = next(r for r in prof.layers if r.name == "bn")
    assert (bn.params, bn.trainable_params) == (16, 8)
    assert next(r for r in prof.layers if r.name == "frozen").trainable_params == 0


def test_sequential_model():
    model = keras.Sequential([keras.Input((6,)), L.Dense(5), L.ReLU(), L.Dense(2)])
    prof = profile(model)
    assert prof.total_params == model.count_params() == 5 * 6 + 5 + 2 * 5 + 2
    assert prof.total_macs == 6 * 5 + 5 * 2


def _two_head_model(spatial=(8, 8)):
    x = keras.Input((*spatial, 3), name="image")
    h = L.Conv2D(8, 3, padding="same", name="t1")(x)
    h = L.BatchNormalization(name="t_bn")(h)
    h = L.ReLU(name="t_relu")(h)
    h = L.Conv2D(8, 3, strides=2, padding="same", name="t2")(h)
    seg = L.Conv2D(5, 1, name="seg")(L.UpSampling2D(name="up")(h))
    cls = L.Dense(10, name="cls")(L.GlobalAveragePooling2D(name="gap")(h))
    return keras.Model(x, {"seg": seg, "cls": cls})


TRUNK = {"params": (3 * 9 * 8 + 8) + 4 * 8 + (8 * 9 * 8 + 8), "macs": 64 * 27 * 8 + 16 * 72 * 8}
SEG = {"params": 8 * 5 + 5, "macs": 64 * 8 * 5}
CLS = {"params": 8 * 10 + 10, "macs": 8 * 10}


def test_shared_trunk_and_task_heads():
    prof = profile(_two_head_model())
    assert prof.shared == TRUNK
    assert prof.task_specific == {"cls": CLS, "seg": SEG}
    assert prof.per_task == {t: {k: TRUNK[k] + head[k] for k in TRUNK}
                             for t, head in (("cls", CLS), ("seg", SEG))}
    assert prof.total_params == TRUNK["params"] + SEG["params"] + CLS["params"]
    assert prof.total_macs == TRUNK["macs"] + SEG["macs"] + CLS["macs"]
    rows = {r.name: r for r in prof.layers}
    assert rows["t2"].tasks == ("cls", "seg") and rows["t2"].shared
    assert rows["up"].tasks == ("seg",) and not rows["up"].shared
    assert rows["gap"].tasks == ("cls",)


def test_layer_called_for_two_tasks_shares_params_not_macs():
    x = keras.Input((6,), name="image")
    a, b = L.Dense(4, name="a")(x), L.Dense(4, name="b")(x)
    head = L.Dense(2, name="head")
    model = keras.Model(x, {"ta": L.Identity(name="ta")(head(a)),
                            "tb": L.Identity(name="tb")(head(b))})
    prof = profile(model)
    assert prof.shared == {"params": 10, "macs": 0}
    assert prof.task_specific["ta"] == {"params": 28, "macs": 24 + 8}
    assert prof.per_task["tb"] == {"params": 38, "macs": 32}


def test_dynamic_spatial_dims_need_input_shape():
    model = _two_head_model(spatial=(None, None))
    assert count_params(model) == model.count_params()
    with pytest.raises(ValueError, match="input_shape"):
        profile(model)
    prof = profile(model, input_shape=(8, 8, 3))
    static = profile(_two_head_model())
    assert (prof.total_macs, prof.per_task, prof.shared) == (
        static.total_macs, static.per_task, static.shared)
    assert next(r for r in prof.layers if r.name == "seg").output_shape == (None, 8, 8, 5)
    assert profile(model, input_shape=(16, 16, 3)).total_macs == 4 * static.total_macs - 3 * 80
    with pytest.raises(ValueError, match="does not fit"):
        profile(model, input_shape=(8, 8))
    with pytest.raises(ValueError, match="does not fit"):
        profile(model, input_shape=(8, 8, 4))


def test_dynamic_dims_with_second_fixed_input():
    image = keras.Input((None, None, 3), name="image")
    domain = keras.Input((), dtype="int32", name="domain")
    emb = L.Embedding(2, 4, name="emb")(domain)
    h = L.Conv2D(4, 3, padding="same", name="conv")(image)
    gate = L.Reshape((1, 1, 4))(emb)
    out = L.Conv2D(1, 1, name="depth")(L.Multiply()([h, gate]))
    model = keras.Model({"image": image, "domain": domain}, {"depth": out})
    by_tuple = profile(model, input_shape=(6, 6, 3))
    by_dict = profile(model, input_shape={"image": (6, 6, 3)})
    assert by_tuple.total_macs == by_dict.total_macs == 36 * 27 * 4 + 36 * 4
    assert by_tuple.total_params == model.count_params()
    assert by_tuple.uncounted == []


def test_uncounted_layer_is_reported():
    model = _single(L.EinsumDense("ab,bc->ac", output_shape=3, name="ein"), (4,))
    prof = profile(model)
    assert prof.uncounted == ["ein"] and prof.total_macs == 0
    assert "ein" in str(prof)


def test_to_dict_and_table():
    prof = profile(_two_head_model())
    data = json.loads(json.dumps(prof.to_dict()))
    assert data["total_macs"] == prof.total_macs
    assert data["layers"][0]["tasks"] == ["cls", "seg"] and data["layers"][0]["shared"]
    assert data["layers"][0]["output_shape"] == [None, 8, 8, 8]
    n_layers = len(prof.layers)
    full = prof.table()
    assert full.row_count == n_layers + 1 + 1 + 2 + 2  # rows, total, shared, only x2, fwd x2
    assert prof.table(max_rows=2).row_count == 2 + 1 + 6
    text = str(prof)
    for word in ("t1", "Conv2D", "(?, 4, 4, 8)", f"{prof.total_macs:,}", "Forward seg"):
        assert word in text


def test_dynamic_dims_through_nested_model_called_twice_and_keras_ops():
    inner_in = keras.Input((None, None, 4))
    inner = keras.Model(inner_in, L.Dropout(0.1)(L.Conv2D(4, 3, padding="same")(inner_in)))
    x = keras.Input((None, None, 3), name="image")
    h = inner(inner(L.Conv2D(4, 1)(x)))
    h = L.Resizing(4, 4)(keras.ops.concatenate([h, keras.ops.relu(h)], axis=-1))
    model = keras.Model(x, {"seg": L.Conv2D(2, 1, name="seg")(h)})
    prof = profile(model, input_shape=(8, 8, 3))
    assert prof.total_macs == 64 * 3 * 4 + 2 * 64 * 9 * 4 * 4 + 16 * 8 * 2
    assert prof.total_params == model.count_params()
