"""Attention heads, transformer MLP widths and GroupNormalization groups as channel groups."""
import warnings

import keras
import numpy as np
import pytest

import tfmot_mtl as tm
from tfmot_mtl import lite


def transformer(seed=0, heads=4, hidden=24, dim=16, tokens=6):
    """Pre-norm transformer block (LN -> MHA -> add, LN -> Dense-gelu-Dense -> add), two task heads."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((tokens, 8), name="tokens")
    x = keras.layers.Dense(dim, name="embed")(inp)
    h = keras.layers.LayerNormalization(name="ln1")(x)
    h = keras.layers.MultiHeadAttention(heads, 8, value_dim=6, name="mha")(h, h)
    x = keras.layers.Add(name="res1")([x, h])
    h = keras.layers.LayerNormalization(name="ln2")(x)
    h = keras.layers.Dense(hidden, activation="gelu", name="fc1")(h)
    h = keras.layers.Dense(dim, name="fc2")(h)
    x = keras.layers.Add(name="res2")([x, h])
    x = keras.layers.GlobalAveragePooling1D()(x)
    return keras.Model(inp, {"a": keras.layers.Dense(3, name="a")(x), "b": keras.layers.Dense(2, name="b")(x)})


def _random_masks(graph, seed=0, p=0.5):
    rng = np.random.default_rng(seed)
    return tm.ChannelMasks({g.id: rng.random(g.size) > p for g in graph.prunable_groups})


def _max_diff(a, b):
    return max(float(np.max(np.abs(np.asarray(a[k]) - np.asarray(b[k])))) for k in a)


def _tokens(n=4, tokens=6, seed=1):
    return np.random.default_rng(seed).standard_normal((n, tokens, 8)).astype("float32")


def test_heads_mlp_width_are_groups_and_stream_is_frozen():
    graph = tm.ChannelGraph.from_model(transformer())
    heads = graph.groups["mha:heads"]
    assert heads.prunable and heads.size == 4 and heads.shared
    layers = {(s.layer, s.role) for s in heads.slices}
    assert layers == {("mha", "out"), ("mha", "in")}
    # per head: query/key kernels (16*8 each) + value kernel (16*6) + biases, and 6*16 output rows
    assert list(heads.params_per_channel(("out",))) == [16 * 8 * 2 + 16 * 6 + 8 + 8 + 6] * 4
    assert list(heads.params_per_channel(("in",))) == [6 * 16] * 4
    assert graph.groups["fc1"].prunable and graph.groups["fc1"].size == 24
    stream = graph.groups["embed"]
    assert not stream.prunable and "LayerNormalization" in stream.reason
    assert "mha" in stream.layers and "fc2" in stream.layers  # the residual stream is one group


def test_strip_heads_and_mlp_parity():
    model = transformer()
    graph = tm.ChannelGraph.from_model(model)
    masks = tm.ChannelMasks({"mha:heads": np.array([True, False, True, False]),
                             "fc1": np.arange(24) % 3 == 0})
    small, report = tm.strip_channels(model, masks)
    mha = small.get_layer("mha")
    assert mha.num_heads == 2 and tuple(mha.weights[0].shape) == (16, 2, 8)
    assert small.get_layer("fc1").units == 8 and report.param_ratio < 0.8
    x = _tokens()
    expected = tm.apply_masks(model, masks).predict(x, verbose=0)
    assert _max_diff(expected, small.predict(x, verbose=0)) < 1e-5
    # the masked heads really contributed: removing them changes the dense model's output
    assert _max_diff(model.predict(x, verbose=0), expected) > 1e-4
    assert graph.groups["mha:heads"].size == 4


def test_every_head_masked_keeps_one_with_a_warning():
    model = transformer(heads=2)
    masks = tm.ChannelMasks({"mha:heads": np.array([False, False])}, min_channels=0)
    with pytest.warns(UserWarning, match="every head"):
        small, _ = tm.strip_channels(model, masks)
    assert small.get_layer("mha").num_heads == 1
    x = _tokens()
    assert _max_diff(tm.apply_masks(model, masks).predict(x, verbose=0), small.predict(x, verbose=0)) < 1e-5


def test_importance_scores_heads():
    model = transformer()
    graph = tm.ChannelGraph.from_model(model)
    mha = model.get_layer("mha")
    kernel = mha.weights[4]  # value kernel (16, heads, 6): scale head 2 up
    k = np.array(kernel.numpy())
    k[:, 2] *= 50
    kernel.assign(k)
    mag = tm.pruning.Magnitude()(model, graph)["mha:heads"]
    assert mag.shape == (4,) and np.argmax(mag) == 2
    model.compile(loss={"a": "mse", "b": "mse"})
    x = _tokens(8)
    y = {"a": np.ones((8, 3), "float32"), "b": np.zeros((8, 2), "float32")}
    taylor = tm.pruning.Taylor()(model, graph, data=[(x, y)])["mha:heads"]
    assert taylor.shape == (4,) and np.all(np.isfinite(taylor)) and np.any(taylor > 0)


def test_shared_mha_called_twice_couples_heads():
    keras.utils.set_random_seed(0)
    a, b = keras.Input((5, 8), name="a"), keras.Input((5, 8), name="b")
    mha = keras.layers.MultiHeadAttention(3, 4, name="mha")
    pa, pb = keras.layers.Dense(8, name="pa")(a), keras.layers.Dense(8, name="pb")(b)
    out = keras.layers.Concatenate()([mha(pa, pb), mha(pb, pa)])
    model = keras.Model([a, b], {"o": keras.layers.Dense(2, name="o")(keras.layers.Flatten()(out))})
    graph = tm.ChannelGraph.from_model(model)
    assert graph.groups["mha:heads"].size == 3 and graph.groups["mha:heads"].prunable
    masks = tm.ChannelMasks({g.id: np.arange(g.size) % 2 == 0 for g in graph.prunable_groups})
    small, _ = tm.strip_channels(model, masks)
    xs = [np.random.default_rng(i).standard_normal((2, 5, 8)).astype("float32") for i in (0, 1)]
    assert _max_diff(tm.apply_masks(model, masks).predict(xs, verbose=0), small.predict(xs, verbose=0)) < 1e-5


def group_norm_model(seed=0):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((8, 8, 3), name="image")
    x = keras.layers.Conv2D(12, 3, padding="same", name="c1")(inp)
    x = keras.layers.GroupNormalization(groups=4, name="gn")(x)
    x = keras.layers.Activation("swish")(x)
    x = keras.layers.Conv2D(8, 3, name="c2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, {"a": keras.layers.Dense(2, name="a")(x), "b": keras.layers.Dense(3, name="b")(x)})


def test_group_norm_prunes_whole_groups():
    model = group_norm_model()
    graph = tm.ChannelGraph.from_model(model)
    group = graph.groups["c1"]
    assert group.prunable and group.size == 4  # 12 channels in 4 normalisation groups of 3
    assert list(group.params_per_channel(("out",))) == [3 * (3 * 3 * 3 + 1) + 3 * 2] * 4
    masks = tm.ChannelMasks({"c1": np.array([True, False, False, True]), "c2": np.arange(8) < 5})
    small, _ = tm.strip_channels(model, masks)
    assert small.get_layer("gn").groups == 2 and small.get_layer("c1").filters == 6
    x = np.random.default_rng(0).random((2, 8, 8, 3)).astype("float32")
    expected = tm.apply_masks(model, masks).predict(x, verbose=0)
    assert _max_diff(expected, small.predict(x, verbose=0)) < 1e-4


def test_group_norm_on_a_non_channel_axis_is_frozen():
    inp = keras.Input((6, 8), name="x")
    h = keras.layers.Dense(8, name="d")(inp)
    h = keras.layers.GroupNormalization(groups=2, axis=1, name="gn")(h)
    model = keras.Model(inp, {"o": keras.layers.Dense(2, name="o")(keras.layers.Flatten()(h))})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = tm.ChannelGraph.from_model(model)
    assert not graph.groups["d"].prunable and "'gn'" in graph.groups["d"].reason


@pytest.mark.slow  # three TFLite conversions; examples/prune_transformer.py checks one by default
def test_stripped_attention_and_group_norm_models_match_on_litert():
    model = transformer()
    masks = tm.ChannelMasks({"mha:heads": np.array([True, False, True, False]),
                             "fc1": np.arange(24) % 3 == 0})
    small, _ = tm.strip_channels(model, masks)
    x = _tokens()
    lm = lite.LiteModel(lite.convert(small, verbose=False))
    assert _max_diff(small.predict(x[:1], verbose=0), lm.predict({"tokens": x[:1]})) < 1e-4
    model = group_norm_model()
    small, _ = tm.strip_channels(model, tm.ChannelMasks({"c1": np.array([True, False, False, True])}))
    x = np.random.default_rng(0).random((1, 8, 8, 3)).astype("float32")
    lm = lite.LiteModel(lite.convert(small, verbose=False))
    assert _max_diff(small.predict(x, verbose=0), lm.predict({"image": x})) < 1e-4
