"""Property test: random functional DAGs x random masks -> strip keeps outputs (parity 1e-4)."""
import keras
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import model_zoo as zoo
from test_strip import _inputs, _outputs, assert_parity
from tfmot_mtl.graph import ChannelGraph
from tfmot_mtl.masks import apply_masks
from tfmot_mtl.strip import strip_channels

L = keras.layers
OPS = ["conv3", "conv1", "depthwise", "bn", "relu", "sigmoid", "add", "concat", "pool", "multiply"]


def build_random_model(ops, widths, picks, heads):
    i = keras.Input((8, 8, 3), name="image")
    tensors = [L.Conv2D(widths[0], 3, padding="same")(i)]
    for op, w, pick in zip(ops, widths, picks):
        x = tensors[-1]
        other = tensors[pick % len(tensors)]
        if op == "conv3":
            y = L.Conv2D(w, 3, padding="same")(x)
        elif op == "conv1":
            y = L.Conv2D(w, 1)(x)
        elif op == "depthwise":
            y = L.DepthwiseConv2D(3, padding="same", depth_multiplier=1 + pick % 2)(x)
        elif op == "bn":
            y = L.BatchNormalization()(x)
        elif op == "relu":
            y = L.ReLU()(x)
        elif op == "sigmoid":
            y = L.Activation("sigmoid")(x)
        elif op == "pool":
            y = L.MaxPooling2D(3, strides=1, padding="same")(x)
        elif op in ("add", "multiply"):
            if other.shape[-1] != x.shape[-1]:
                other = L.Conv2D(x.shape[-1], 1)(other)
            y = (L.Add() if op == "add" else L.Multiply())([x, other])
        else:  # concat
            y = L.Concatenate()([x, other])
        tensors.append(y)
    outputs = {}
    for k, head in enumerate(heads):
        src = tensors[-1 - (k % len(tensors))]
        if head == "dense":
            outputs[f"task{k}"] = L.Dense(3, name=f"task{k}")(L.GlobalAveragePooling2D()(src))
        else:
            outputs[f"task{k}"] = L.Conv2D(2, 1, name=f"task{k}")(src)
    return keras.Model(i, outputs)


graphs = st.integers(2, 7).flatmap(lambda n: st.tuples(
    st.lists(st.sampled_from(OPS), min_size=n, max_size=n),
    st.lists(st.integers(2, 8), min_size=n, max_size=n),
    st.lists(st.integers(0, 50), min_size=n, max_size=n),
    st.lists(st.sampled_from(["dense", "conv"]), min_size=1, max_size=3),
    st.floats(0.1, 0.9),
    st.integers(0, 1000),
))


def check_random_graph(spec):
    ops, widths, picks, heads, fraction, seed = spec
    model = zoo.randomize(build_random_model(ops, widths, picks, heads), seed=seed)
    graph = ChannelGraph.from_model(model)
    masks = zoo.random_masks(graph, fraction, seed=seed)
    masked = apply_masks(model, masks)
    small, report = strip_channels(masked, masks)
    xs = _inputs(model)
    assert_parity(_outputs(masked, xs), _outputs(small, xs))
    assert report.totals["params_after"] <= report.totals["params_before"]


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(graphs)
def test_random_dags_strip_with_parity(spec):
    check_random_graph(spec)


@pytest.mark.slow
@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(graphs)
def test_random_dags_strip_with_parity_long(spec):
    check_random_graph(spec)
