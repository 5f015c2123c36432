"""ChannelGraph: coupling, tasks, frozen groups and their reasons."""
import keras
import numpy as np
import pytest

import model_zoo as zoo
from tfmot_mtl.graph import ChannelGraph

L = keras.layers


def test_residual_add_couples_producers_into_one_group():
    g = ChannelGraph.from_model(zoo.multitask_trunk())
    stem = g.groups["stem"]
    assert set(stem.producers) == {"stem", "res_conv"}
    assert {"stem_bn", "res_bn", "down"} <= set(stem.layers)
    assert "res_conv" not in g.groups  # merged into the stem group


def test_tasks_and_shared_flags():
    g = ChannelGraph.from_model(zoo.multitask_trunk())
    assert g.groups["stem"].tasks == {"seg", "depth", "cls"} and g.groups["stem"].shared
    assert g.groups["seg_head"].tasks == {"seg"} and not g.groups["seg_head"].shared
    assert g.groups["depth_head"].tasks == {"depth"}
    assert [x.id for x in g.shared_groups()] == ["stem", "down"]


def test_groups_reaching_outputs_are_frozen():
    g = ChannelGraph.from_model(zoo.multitask_trunk())
    for name in ("seg_logits", "depth_out", "cls"):
        assert not g.groups[name].prunable
        assert "reaches model output" in g.groups[name].reason
    assert "model input 'image'" in g.groups["image"].reason


def test_concat_offsets_map_each_input_to_its_range():
    g = ChannelGraph.from_model(zoo.concat_offsets())
    # 'c' consumes [a(4), b(6), a(4)]; its input rows split by group with per-channel indices.
    rows = {s.layer + ":" + g.groups[gid].id: s for gid in ("a", "b") for s in g.groups[gid].slices
            if s.layer == "c" and s.role == "in"}
    np.testing.assert_array_equal(rows["c:a"].positions, [0, 1, 2, 3, 10, 11, 12, 13])
    np.testing.assert_array_equal(rows["c:a"].channels, [0, 1, 2, 3, 0, 1, 2, 3])
    np.testing.assert_array_equal(rows["c:b"].positions, np.arange(4, 10))
    bn = [s for s in g.groups["a"].slices if s.layer == "bn" and s.weight == 0][0]
    np.testing.assert_array_equal(bn.positions, [0, 1, 2, 3, 10, 11, 12, 13])


def test_flatten_maps_channel_to_strided_dense_rows():
    g = ChannelGraph.from_model(zoo.flatten_dense())
    rows = [s for s in g.groups["c"].slices if s.layer == "fc" and s.role == "in"][0]
    assert len(rows.positions) == 4 * 4 * 6
    np.testing.assert_array_equal(rows.channels[:12], np.tile(np.arange(6), 2))
    assert rows.per_position == 10


def test_depthwise_multiplier_repeats_channels():
    g = ChannelGraph.from_model(zoo.depthwise(2)())
    group = g.groups["expand"]
    bias = [s for s in group.slices if s.layer == "dw" and s.weight == 1][0]
    np.testing.assert_array_equal(bias.channels, np.repeat(np.arange(8), 2))
    assert "project" in group.layers


@pytest.mark.parametrize("build,group,needle", [
    (zoo.norms_and_activations, "c3", "'ln' (LayerNormalization) normalises across the channel axis"),
    (zoo.reshape_permute, "d", "'perm_move' (Permute) moves the channel axis"),
])
def test_frozen_reason_names_the_layer(build, group, needle):
    g = ChannelGraph.from_model(build())
    assert not g.groups[group].prunable
    assert needle in g.groups[group].reason


def test_grouped_conv_prunes_whole_groups():
    from tfmot_mtl import ChannelMasks, apply_masks, strip_channels

    model = zoo.randomize(zoo.grouped_conv())
    g = ChannelGraph.from_model(model)
    pre = g.groups["pre"]  # 8 channels in 2 convolution groups of 4: one mask entry per group
    assert pre.prunable and pre.size == 2 and "grouped" in pre.layers
    small, _ = strip_channels(model, ChannelMasks({"pre": np.array([False, True])}))
    assert small.get_layer("grouped").groups == 1 and small.get_layer("grouped").filters == 4
    assert small.get_layer("pre").filters == 4
    x = np.random.default_rng(0).random((2, 8, 8, 4)).astype("float32")
    a = apply_masks(model, ChannelMasks({"pre": np.array([False, True])}))(x)["out"]
    np.testing.assert_allclose(np.asarray(small(x)["out"]), np.asarray(a), rtol=1e-4, atol=1e-5)


def test_unknown_layer_frozen_never_raises():
    class Custom(L.Layer):  # raw TensorFlow inside: cannot be traced on KerasTensors
        def call(self, x):
            import tensorflow as tf

            return tf.multiply(x, 2.0)

    i = keras.Input((8, 8, 3), name="image")
    a = L.Conv2D(4, 3, padding="same", name="a")(i)
    x = Custom(name="mystery")(a)
    b = L.Conv2D(4, 3, padding="same", name="b")(x)
    y = L.Conv2D(4, 1, name="c")(b) + b  # a raw keras op in the graph
    m = keras.Model(i, {"out": L.Conv2D(2, 1, name="out")(y)})
    g = ChannelGraph.from_model(m)
    assert "'mystery' (Custom) is not understood" in g.groups["a"].reason
    assert "cannot run on symbolic tensors" in g.groups["a"].reason
    assert g.groups["mystery"].prunable is False
    assert g.groups["b"].prunable and "c" in g.groups["b"].producers  # the op `+` couples b and c


def test_keras_ops_only_custom_layer_is_seen_through():
    class Custom(L.Layer):
        def call(self, x):
            return x * 2.0

    i = keras.Input((8, 8, 3), name="image")
    a = L.Conv2D(4, 3, padding="same", name="a")(i)
    b = L.Conv2D(4, 3, padding="same", name="b")(Custom(name="double")(a))
    m = keras.Model(i, {"out": L.Conv2D(2, 1, name="out")(b)})
    g = ChannelGraph.from_model(m)
    assert g.groups["a"].prunable and g.groups["b"].prunable and "double" not in g.flat.layers


def test_shared_layer_couples_call_sites_and_nested_model_inlined():
    g = ChannelGraph.from_model(zoo.nested_and_shared())
    assert "inner_conv" in g.groups["stem"].layers  # inlined nested model consumes the stem
    shared = g.groups["shared_conv"]
    assert shared.prunable and shared.size == 6
    # the shared conv is called on `stem` output and on `inner_conv` output: both coupled
    assert "inner_conv" in {p for p in g.groups["stem"].producers}


def test_sigmoid_constant_freezes_only_where_fold_is_inexact():
    g = ChannelGraph.from_model(zoo.sigmoid_fold())
    assert g.groups["a"].prunable  # sigmoid into a 1x1 conv: folded exactly
    assert g.groups["c"].prunable  # sigmoid -> global pooling -> Dense: folded exactly
    assert not g.groups["b"].prunable
    assert "cannot absorb exactly" in g.groups["b"].reason and "same3x3" in g.groups["b"].reason


def test_broadcast_multiply_freezes_single_channel_operand():
    i = keras.Input((8, 8, 3), name="image")
    x = L.Conv2D(6, 3, padding="same", name="x")(i)
    att = L.Conv2D(1, 1, activation="sigmoid", name="att")(x)
    y = L.Multiply(name="mul")([x, att])
    m = keras.Model(i, {"out": L.Conv2D(2, 1, name="out")(y)})
    g = ChannelGraph.from_model(m)
    assert g.groups["x"].prunable
    assert not g.groups["att"].prunable and "broadcast" in g.groups["att"].reason


def test_subclassed_model_gets_clear_error():
    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = L.Dense(2)

        def call(self, x):
            return self.d(x)

    with pytest.raises(ValueError, match="functional API"):
        ChannelGraph.from_model(Sub())


def test_summary_lists_groups():
    g = ChannelGraph.from_model(zoo.multitask_trunk())
    text = g.summary(print_fn=lambda s: None)
    assert "stem" in text and "reaches model output" in text


def test_params_per_channel():
    g = ChannelGraph.from_model(zoo.flatten_dense())
    # conv c: kernel 3*3*3 + bias 1 per channel (out); fc rows: 16 positions * 10 units (in)
    np.testing.assert_array_equal(g.groups["c"].params_per_channel(("out",)), [28] * 6)
    np.testing.assert_array_equal(g.groups["c"].params_per_channel(("in",)), [160] * 6)
