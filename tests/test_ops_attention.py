"""Attention written with keras.ops inside a composite layer (the SegFormer / MiT way): heads found
through reshape -> transpose -> matmul -> softmax -> matmul -> transpose -> reshape, pruned whole."""
import os
import warnings

import keras
import numpy as np
import pytest
from keras import ops

import tfmot_mtl as tm
from tfmot_mtl import lite


class OpsAttention(keras.layers.Layer):
    """Self-attention from Dense layers and keras.ops, heads split by reshape (no MultiHeadAttention)."""

    def __init__(self, dim, heads, swap=False, **kwargs):
        super().__init__(**kwargs)
        self.dim, self.heads, self.swap = dim, heads, swap
        self.q, self.k, self.v = (keras.layers.Dense(dim, name=n) for n in "qkv")
        self.proj = keras.layers.Dense(dim, name="proj")
        self.drop = keras.layers.Dropout(0.1)

    def call(self, x):
        b, n, c = ops.shape(x)
        d = c // self.heads

        def split(t):
            t = ops.reshape(t, (b, -1, self.heads, d))
            return ops.transpose(t, [0, 3, 1, 2] if self.swap else [0, 2, 1, 3])

        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        attn = ops.matmul(q, ops.transpose(k, [0, 1, 3, 2])) * (d ** -0.5)
        attn = self.drop(ops.softmax(attn, axis=-1))
        out = ops.transpose(ops.matmul(attn, v), [0, 2, 1, 3])
        return self.proj(ops.reshape(out, (b, n, c)))


def block_model(seed=0, heads=4, dim=16, tokens=6, swap=False):
    """Embed -> LN -> OpsAttention -> add -> LN -> MLP -> add, pooled into two task heads."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((tokens, 8), name="tokens")
    x = keras.layers.Dense(dim, name="embed")(inp)
    h = OpsAttention(dim, heads, swap=swap, name="attn")(keras.layers.LayerNormalization(name="ln1")(x))
    x = keras.layers.Add(name="res1")([x, h])
    h = keras.layers.Dense(24, activation="gelu", name="fc1")(keras.layers.LayerNormalization(name="ln2")(x))
    x = keras.layers.Add(name="res2")([x, keras.layers.Dense(dim, name="fc2")(h)])
    x = keras.layers.GlobalAveragePooling1D()(x)
    model = keras.Model(inp, {"a": keras.layers.Dense(3, name="a")(x), "b": keras.layers.Dense(2, name="b")(x)})
    rng = np.random.default_rng(seed)
    for w in model.weights:  # non-zero biases, so a masked head that leaked would show
        if w.name == "bias":
            w.assign(rng.standard_normal(tuple(w.shape)).astype("float32") * 0.3)
    return model


def _tokens(n=4, tokens=6, seed=1):
    return np.random.default_rng(seed).standard_normal((n, tokens, 8)).astype("float32")


def _max_diff(a, b):
    return max(float(np.max(np.abs(np.asarray(a[k]) - np.asarray(b[k])))) for k in a)


def _heads_group(graph):
    found = [g for g in graph.groups.values() if any(p.endswith(":heads") for p in g.producers)]
    assert len(found) == 1, [g.id for g in graph.groups.values()]
    return found[0]


def test_matmul_heads_are_one_group_and_the_stream_is_frozen():
    graph = tm.ChannelGraph.from_model(block_model())
    heads = _heads_group(graph)
    assert heads.prunable and heads.size == 4
    sliced = {(s.layer, s.role) for s in heads.slices}
    assert sliced == {("attn_q", "out"), ("attn_k", "out"), ("attn_v", "out"), ("attn_proj", "in")}
    # per head: 4 columns of the q, k and v kernels (16 rows) and biases; 4 rows of the projection
    assert list(heads.params_per_channel(("out",))) == [3 * (16 * 4 + 4)] * 4
    assert list(heads.params_per_channel(("in",))) == [4 * 16] * 4
    assert graph.groups["fc1"].prunable
    stream = graph.groups["embed"]
    assert not stream.prunable and "LayerNormalization" in stream.reason


def test_strip_matmul_heads_parity_and_stock_layers():
    model = block_model()
    graph = tm.ChannelGraph.from_model(model)
    gid = _heads_group(graph).id
    masks = tm.ChannelMasks({gid: np.array([True, False, False, True]), "fc1": np.arange(24) % 2 == 0})
    small, report = tm.strip_channels(model, masks)
    assert small.get_layer("attn_q").units == 8 and small.get_layer("attn_proj").kernel.shape == (8, 16)
    assert all(type(layer).__module__.startswith("keras.") for layer in small.layers)
    x = _tokens()
    expected = tm.apply_masks(model, masks).predict(x, verbose=0)
    got = small.predict(x, verbose=0)
    assert _max_diff(expected, got) < 1e-5
    assert _max_diff(model.predict(x, verbose=0), expected) > 1e-4  # the removed heads mattered
    assert report.param_ratio < 0.8
    # a batch size other than the traced one
    assert _max_diff(tm.apply_masks(model, masks).predict(_tokens(7), verbose=0),
                     small.predict(_tokens(7), verbose=0)) < 1e-5


def test_stripped_matmul_heads_round_trip_keras_file(tmp_path):
    model = block_model()
    graph = tm.ChannelGraph.from_model(model)
    small, _ = tm.strip_channels(model, tm.ChannelMasks({_heads_group(graph).id: np.array([0, 1, 1, 0], bool)}))
    path = os.path.join(tmp_path, "small.keras")
    small.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    x = _tokens()
    assert _max_diff(small.predict(x, verbose=0), loaded.predict(x, verbose=0)) < 1e-6


def test_every_matmul_head_masked_keeps_one_with_a_warning():
    model = block_model(heads=2)
    graph = tm.ChannelGraph.from_model(model)
    masks = tm.ChannelMasks({_heads_group(graph).id: np.array([False, False])}, min_channels=0)
    with pytest.warns(UserWarning, match="every"):
        small, _ = tm.strip_channels(model, masks)
    assert small.get_layer("attn_q").units == 8  # one head of 8 channels
    x = _tokens()
    assert _max_diff(tm.apply_masks(model, masks).predict(x, verbose=0), small.predict(x, verbose=0)) < 1e-5


def test_importance_scores_matmul_heads():
    model = block_model()
    graph = tm.ChannelGraph.from_model(model)
    gid = _heads_group(graph).id
    v = model.get_layer("attn").v.kernel
    k = np.array(v.numpy())
    k[:, 8:12] *= 50  # head 2's value columns
    v.assign(k)
    mag = tm.pruning.Magnitude()(model, graph)[gid]
    assert mag.shape == (4,) and np.argmax(mag) == 2
    model.compile(loss={"a": "mse", "b": "mse"})
    x = _tokens(8)
    y = {"a": np.ones((8, 3), "float32"), "b": np.zeros((8, 2), "float32")}
    taylor = tm.pruning.Taylor()(model, graph, data=[(x, y)])[gid]
    assert taylor.shape == (4,) and np.all(np.isfinite(taylor)) and np.any(taylor > 0)


def test_heads_reordered_with_head_dim_are_frozen_with_the_reason():
    graph = tm.ChannelGraph.from_model(block_model(swap=True))
    q = graph.groups["attn_q"]
    assert not q.prunable and "reorders the axes of attention heads" in q.reason


def test_matmul_of_channels_is_frozen():
    inp = keras.Input((5, 8))
    x = keras.layers.Dense(8, name="d")(inp)
    gram = ops.matmul(x, ops.transpose(x, [0, 2, 1]))  # (B, 5, 5): mixes every channel
    model = keras.Model(inp, keras.layers.Dense(2, name="out")(keras.layers.Flatten()(gram)))
    graph = tm.ChannelGraph.from_model(model)
    assert not graph.groups["d"].prunable


def test_stripped_matmul_heads_match_on_litert():
    model = block_model()
    graph = tm.ChannelGraph.from_model(model)
    masks = tm.ChannelMasks({_heads_group(graph).id: np.array([True, False, True, True])})
    small, _ = tm.strip_channels(model, masks)
    x = _tokens(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lm = lite.LiteModel(lite.convert(small, verbose=False))
    assert _max_diff(small.predict(x, verbose=0), lm.predict({"tokens": x})) < 1e-4
