"""Property test: random functional DAGs x random masks -> strip keeps outputs (parity 1e-4)."""
import pytest
from hypothesis import HealthCheck, given, settings

import model_zoo as zoo
from fuzz_graphs import build_random_model, graphs
from test_strip import _inputs, _outputs, assert_parity
from tfmot_mtl.graph import ChannelGraph
from tfmot_mtl.masks import apply_masks
from tfmot_mtl.strip import strip_channels


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
