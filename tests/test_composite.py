"""Composite custom layers are seen through, keras.ops nodes have rules, unchanged layers are carried."""
import keras
import numpy as np
import pytest
from keras import ops

import tfmot_mtl as tm
from tfmot_mtl import lite


class ResBlock(keras.layers.Layer):
    """conv -> BN -> relu -> conv -> BN, plus a residual add: Keras layers and keras.ops only."""

    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.conv1 = keras.layers.Conv2D(filters, 3, padding="same")
        self.bn1 = keras.layers.BatchNormalization()
        self.conv2 = keras.layers.Conv2D(filters, 3, padding="same")
        self.bn2 = keras.layers.BatchNormalization()

    def call(self, x, training=None):
        y = ops.relu(self.bn1(self.conv1(x), training=training))
        return ops.relu(ops.add(x, self.bn2(self.conv2(y), training=training)))

    def get_config(self):
        return {**super().get_config(), "filters": self.filters}


class NoRoundTrip(keras.layers.Layer):
    """Scales its input by a constant; its config does not rebuild it (like keras-hub layers)."""

    def __init__(self, scale, **kwargs):
        super().__init__(**kwargs)
        self.scale = scale
        self.w = self.add_weight(shape=(), initializer="ones", name="w")

    def call(self, x):
        return x * self.w * self.scale

    def get_config(self):
        return {**super().get_config(), "not_an_argument": 1}


class RawTF(keras.layers.Layer):
    def call(self, x):
        import tensorflow as tf

        return tf.nn.relu(x)


class Branchy(keras.layers.Layer):
    def compute_output_shape(self, shape):
        return shape

    def call(self, x):
        return x if ops.mean(x) > 0 else -x


def composite_model(seed=0, tail=None):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((8, 8, 3), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", name="stem")(inp)
    x = ResBlock(8, name="block1")(x)
    x = ResBlock(8, name="block2")(x)
    x = keras.layers.Conv2D(12, 1, name="proj")(x)
    if tail is not None:
        x = tail(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, {"a": keras.layers.Dense(2, name="a")(x), "b": keras.layers.Dense(3, name="b")(x)})


def _masks(graph, seed=0):
    rng = np.random.default_rng(seed)
    return tm.ChannelMasks({g.id: rng.random(g.size) > 0.5 for g in graph.prunable_groups})


def _max_diff(a, b):
    return max(float(np.max(np.abs(np.asarray(a[k]) - np.asarray(b[k])))) for k in a)


def _images(n=2):
    return np.random.default_rng(3).random((n, 8, 8, 3)).astype("float32")


def test_composite_layer_is_seen_through_and_strips_to_stock_layers(tmp_path):
    model = composite_model()
    graph = tm.ChannelGraph.from_model(model)
    # the residual couples the stem with both blocks' second convs; each block's inner width is free
    assert set(graph.groups["stem"].layers) >= {"stem", "block1_conv2", "block2_conv2", "proj"}
    for gid in ("stem", "block1_conv1", "block2_conv1"):
        assert graph.groups[gid].prunable, graph.groups[gid].reason
    masks = _masks(graph)
    masked = tm.apply_masks(model, masks)
    small, report = tm.strip_channels(model, masks)
    assert {type(l).__module__.split(".")[0] for l in small.layers} == {"keras"}
    assert report.param_ratio < 0.7
    x = _images()
    assert _max_diff(masked.predict(x, verbose=0), small.predict(x, verbose=0)) < 1e-5
    path = tmp_path / "small.keras"
    small.save(path)  # plain Keras: no custom objects needed
    again = keras.saving.load_model(path)
    assert _max_diff(small.predict(x, verbose=0), again.predict(x, verbose=0)) < 1e-6


def test_group_ids_of_traced_layers_do_not_depend_on_name_counters():
    a = tm.ChannelGraph.from_model(composite_model(seed=1))
    b = tm.ChannelGraph.from_model(composite_model(seed=1))
    assert list(a.groups) == list(b.groups) and "block1_conv1" in a.groups


def test_untraceable_layers_are_frozen_with_the_reason():
    for layer, words in ((RawTF(name="raw"), "cannot run on symbolic tensors"),
                         (Branchy(name="branchy"), "cannot run on symbolic tensors")):
        model = composite_model(tail=layer)
        graph = tm.ChannelGraph.from_model(model)
        proj = graph.groups["proj"]
        assert not proj.prunable and f"'{layer.name}'" in proj.reason and words in proj.reason
        assert graph.groups["stem"].prunable  # the rest of the model is still understood
        small, _ = tm.strip_channels(model, _masks(graph))  # carried as it is
        assert any(type(l) is type(layer) for l in small.layers)


def test_layer_whose_config_does_not_round_trip_is_carried():
    model = composite_model(tail=NoRoundTrip(2.0, name="nrt"))
    graph = tm.ChannelGraph.from_model(model)
    assert "reads its own variable" in graph.groups["proj"].reason
    masks = _masks(graph)
    with pytest.warns(UserWarning, match="'nrt' .*carried into the stripped model as it is"):
        small, _ = tm.strip_channels(model, masks)
    assert small.get_layer("nrt") is model.get_layer("nrt")  # never through its broken config
    assert small.get_layer("proj") is not model.get_layer("proj")  # stock layers are copies
    x = _images()
    expected = model.predict(x, verbose=0)
    small_out = small.predict(x, verbose=0)
    tm.masks.apply_masks_(model, masks)  # apply_masks would clone through the broken config
    assert _max_diff(model.predict(x, verbose=0), small_out) < 1e-5
    assert _max_diff(expected, small_out) > 1e-4


def test_changed_layer_that_cannot_be_rebuilt_names_the_layer():
    class BadConv(keras.layers.Conv2D):
        def get_config(self):
            return {**super().get_config(), "bogus": 1}

    keras.utils.set_random_seed(0)
    inp = keras.Input((6, 6, 3), name="image")
    x = BadConv(6, 3, name="badconv")(inp)
    model = keras.Model(inp, {"o": keras.layers.Dense(2)(keras.layers.Flatten()(x))})
    masks = tm.ChannelMasks({"badconv": np.arange(6) < 3})
    with pytest.raises(ValueError, match="'badconv' \\(BadConv\\).*bogus"):
        tm.strip_channels(model, masks)


def ops_model(seed=0):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((6, 6, 3), name="image")
    a = keras.layers.Conv2D(8, 3, padding="same", name="ca")(inp)
    b = keras.layers.Conv2D(8, 3, padding="same", name="cb")(inp)
    x = ops.add(a, b)
    x = ops.multiply(x, ops.sigmoid(keras.layers.Conv2D(8, 1, name="gate")(x)))
    c = keras.layers.Conv2D(4, 1, name="cc")(inp)
    x = ops.concatenate([ops.relu(x), c * 2.0], axis=-1)
    x = ops.reshape(x, (-1, 36, 12))
    x = ops.transpose(x, (0, 1, 2))
    x = keras.layers.Dense(10, name="d1")(x)
    x = ops.mean(ops.gelu(x), axis=1)
    return keras.Model(inp, {"a": keras.layers.Dense(2, name="a")(x), "b": keras.layers.Dense(3, name="b")(x)})


def test_keras_ops_nodes_have_rules():
    model = ops_model()
    graph = tm.ChannelGraph.from_model(model)
    for gid in ("ca", "cc", "d1"):
        assert graph.groups[gid].prunable, graph.groups[gid].reason
    assert "cb" in graph.groups["ca"].producers and "gate" in graph.groups["ca"].producers
    masks = _masks(graph, seed=2)
    small, _ = tm.strip_channels(model, masks)
    x = np.random.default_rng(0).random((2, 6, 6, 3)).astype("float32")
    expected = tm.apply_masks(model, masks).predict(x, verbose=0)
    assert _max_diff(expected, small.predict(x, verbose=0)) < 1e-5


@pytest.mark.slow  # TFLite conversions
def test_stripped_composite_and_ops_models_match_on_litert():
    for build, size in ((composite_model, 8), (ops_model, 6)):
        model = build()
        small, _ = tm.strip_channels(model, _masks(tm.ChannelGraph.from_model(model), seed=2))
        x = np.random.default_rng(0).random((1, size, size, 3)).astype("float32")
        lm = lite.LiteModel(lite.convert(small, verbose=False))
        assert _max_diff(small.predict(x, verbose=0), lm.predict({"image": x})) < 1e-4


def test_ops_that_touch_the_channel_axis_are_frozen():
    inp = keras.Input((4, 6), name="x")
    h = keras.layers.Dense(6, name="d")(inp)
    h = ops.transpose(h, (0, 2, 1))
    model = keras.Model(inp, {"o": keras.layers.Dense(2, name="o")(keras.layers.Flatten()(h))})
    reason = tm.ChannelGraph.from_model(model).groups["d"].reason
    assert "moves the channel axis" in reason
    inp = keras.Input((4, 6), name="x")
    h = ops.add(keras.layers.Dense(6, name="d")(inp), np.arange(6, dtype="float32"))
    model = keras.Model(inp, {"o": keras.layers.Dense(2, name="o")(h)})
    assert "constant array operand" in tm.ChannelGraph.from_model(model).groups["d"].reason


class TokenMLP(keras.layers.Layer):
    """keras-hub style: flatten space with the batch read from ops.shape, an MLP on the tokens."""

    def __init__(self, hidden, **kwargs):
        super().__init__(**kwargs)
        self.hidden = hidden
        self.fc1 = keras.layers.Dense(hidden, activation="gelu")
        self.fc2 = keras.layers.Dense(12)

    def call(self, x):
        b, h, w, c = ops.shape(x)
        tokens = ops.reshape(x, (b, h * w, c))
        return ops.reshape(self.fc2(self.fc1(tokens)), (b, h, w, 12))

    def get_config(self):
        return {**super().get_config(), "hidden": self.hidden}


class BatchConstant(keras.layers.Layer):
    """Broadcasts its own weight to the batch size: not expressible as a replayable graph."""

    def build(self, shape):
        self.token = self.add_weight(shape=(1, 1, 1, shape[-1]), initializer="ones", name="token")

    def call(self, x):
        return ops.concatenate([x, ops.broadcast_to(self.token, (ops.shape(x)[0], 1, 8, 12))], axis=1)


def test_batch_size_read_in_call_is_replayed_for_any_batch():
    model = composite_model(tail=TokenMLP(20, name="tokens"))
    graph = tm.ChannelGraph.from_model(model)
    assert graph.groups["tokens_fc1"].prunable and graph.groups["tokens_fc1"].size == 20
    masks = _masks(graph)
    small, _ = tm.strip_channels(model, masks)
    assert small.get_layer("tokens_fc1").units == int(masks["tokens_fc1"].sum())
    for n in (1, 3):  # neither is the batch size it was traced with
        x = np.random.default_rng(n).random((n, 8, 8, 3)).astype("float32")
        assert _max_diff(tm.apply_masks(model, masks).predict(x, verbose=0), small.predict(x, verbose=0)) < 1e-5


def test_call_that_bakes_the_batch_into_a_constant_is_frozen():
    model = composite_model(tail=BatchConstant(name="bconst"))
    graph = tm.ChannelGraph.from_model(model)
    reason = graph.groups["proj"].reason
    assert "'bconst'" in reason and ("variable" in reason or "unknown dimension" in reason)
    x = _images(3)
    small, _ = tm.strip_channels(model, _masks(graph))
    assert small.predict(x, verbose=0)["a"].shape == (3, 2)


class TokenBlock(keras.layers.Layer):
    """Residual token MLP returning ``(x, None)`` (keras-hub's encoder blocks return their unused
    attention scores as None); its sub-layers have fixed names, the same in every block."""

    def __init__(self, width, hidden, **kwargs):
        super().__init__(**kwargs)
        self.fc1 = keras.layers.Dense(hidden, activation="relu", name="fc1")
        self.fc2 = keras.layers.Dense(width, name="fc2")

    def call(self, x):
        return ops.add(x, self.fc2(self.fc1(x))), None


class TokenEncoder(keras.layers.Layer):
    """Two TokenBlocks; also returns an empty constant placeholder, like keras-hub's hidden states."""

    def __init__(self, width, hidden, **kwargs):
        super().__init__(**kwargs)
        self.blocks = [TokenBlock(width, hidden, name=f"block_{i}") for i in range(2)]

    def call(self, x):
        for block in self.blocks:
            x, _ = block(x)
        return x, ops.empty((0,) + tuple(x.shape[1:]))


def token_model(use_placeholder=False, seed=0):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((6, 4), name="tokens")
    x = keras.layers.Dense(8, name="embed")(inp)
    x, placeholder = TokenEncoder(8, 16, name="encoder")(x)
    if use_placeholder:
        x = ops.add(x, ops.sum(placeholder))
    x = keras.layers.GlobalAveragePooling1D()(x)
    return keras.Model(inp, {"a": keras.layers.Dense(2, name="a")(x), "b": keras.layers.Dense(3, name="b")(x)})


def test_blocks_returning_none_and_empty_placeholders_are_seen_through():
    model = token_model()
    names = [l.name for l in model._flatten_layers()]
    graph = tm.ChannelGraph.from_model(model)
    assert [l.name for l in model._flatten_layers()] == names  # trace-time renames undone
    assert names.count("fc1") == 2
    hidden = [g for g in graph.prunable_groups if g.size == 16]
    assert len(hidden) == 2, [(g.id, g.size, g.reason) for g in graph.groups.values()]  # fc1 of each block
    masks = _masks(graph)
    x = np.random.default_rng(3).random((3, 6, 4)).astype("float32")
    small, report = tm.strip_channels(model, masks)
    assert report.param_ratio < 1.0
    assert {type(l).__module__.split(".")[0] for l in small.layers} == {"keras"}
    masked = tm.apply_masks(model, masks)
    assert _max_diff(masked.predict(x, verbose=0), small.predict(x, verbose=0)) < 1e-5


def test_a_used_empty_placeholder_freezes_the_layer_with_the_reason():
    model = token_model(use_placeholder=True)
    graph = tm.ChannelGraph.from_model(model)
    reasons = " ".join(g.reason or "" for g in graph.groups.values())
    assert "'encoder'" in reasons and "constant empty tensors" in reasons
    assert not any(g.size == 16 for g in graph.prunable_groups)
    small, _ = tm.strip_channels(model, _masks(graph))  # carried as it is
    x = np.random.default_rng(3).random((3, 6, 4)).astype("float32")
    masked = tm.apply_masks(model, _masks(graph))
    assert _max_diff(masked.predict(x, verbose=0), small.predict(x, verbose=0)) < 1e-5
