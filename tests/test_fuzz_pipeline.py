"""Property suite over the whole pipeline: random graph -> random masks -> strip -> TFLite -> LiteRT.

For every random functional multi-task graph and random masks: the stripped Keras model
equals the masked one (parity 1e-4), LiteRT runs the float32 conversion of the stripped model
and matches it per task name (1e-4), and every weight shrinks exactly as the masks say.
The default run draws a handful of examples; ``-m slow`` draws many more.
"""
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import model_zoo as zoo
from fuzz_graphs import build_random_model, draw_masks, graphs
from test_strip import _inputs, _outputs, assert_parity
from tfmot_mtl import lite
from tfmot_mtl.graph import ChannelGraph
from tfmot_mtl.masks import apply_masks
from tfmot_mtl.masks import keep_nonempty
from tfmot_mtl.strip import strip_channels


def expected_params(graph: ChannelGraph, masks) -> int:
    """Parameter count after removing the masked channels, from the graph's weight axes alone
    (a layer the masks would empty keeps one zeroed channel: ``keep_nonempty``)."""
    keep = graph.keep_atoms(keep_nonempty(graph, masks))
    total = 0
    for name, layer in graph.flat.layers.items():
        for index, weight in enumerate(getattr(layer, "weights", [])):
            dims = list(weight.shape)
            for ax in graph.axes.get(name, []):
                if ax.weight == index:
                    dims[ax.axis] = int(keep[ax.atoms].sum())
            total += int(np.prod(dims))
    return total


def check_pipeline(spec, data):
    ops, widths, picks, heads, _, seed = spec
    model = zoo.randomize(build_random_model(ops, widths, picks, heads), seed=seed)
    graph = ChannelGraph.from_model(model)
    masks = draw_masks(data, graph)
    masked = apply_masks(model, masks)
    small, report = strip_channels(masked, masks)
    xs = _inputs(model, batch=3, seed=seed)
    stripped_out = _outputs(small, xs)
    assert_parity(_outputs(masked, xs), stripped_out)

    params = expected_params(graph, masks)
    assert small.count_params() == params == report.totals["params_after"]
    removed = sum(int((~m).sum()) for m in masks.values())
    assert (params < model.count_params()) == (removed > 0)

    runtime = lite.LiteModel(lite.convert(small, verbose=False))
    assert sorted(runtime.output_names) == sorted(stripped_out)
    assert_parity(stripped_out, runtime.predict({"image": xs[0]}))


@pytest.mark.slow  # ~17 s; test_fuzz_strip fuzzes the surgeon
@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
@given(graphs, st.data())
def test_random_graphs_through_strip_convert_and_litert(spec, data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        check_pipeline(spec, data)


@pytest.mark.slow
@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(graphs, st.data())
def test_random_graphs_through_strip_convert_and_litert_long(spec, data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        check_pipeline(spec, data)
