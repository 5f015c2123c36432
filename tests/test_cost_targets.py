"""Cost targets counted from masks: the masked cost model against the stripped model, the landing
on a goal, the per-cost ranking (pruning and group sparsity), and the layer floor and its defaults."""
import numpy as np
import pytest

import tfmot_mtl as tm
from tfmot_mtl.graph import ChannelGraph
from tfmot_mtl.masks import ChannelMasks
from tfmot_mtl.profile import MaskedCost, profile
from tfmot_mtl.pruning.choose import remove_to_cost
from tfmot_mtl.pruning.cost import CostGoal, cost_floor, uniform_keep
from tfmot_mtl.selection import COST_FLOOR_SHARE, MIN_FRACTION, default_min_fraction, layer_floor
from tfmot_mtl.strip import strip_channels

import model_zoo
from test_compress import nested_two_heads

# ----------------------------------------------------------------------- the cost model
@pytest.mark.parametrize("build", [model_zoo.merges, model_zoo.concat_offsets, model_zoo.depthwise(),
                                   model_zoo.separable, model_zoo.nested_and_shared, nested_two_heads])
def test_masked_cost_equals_the_stripped_models_profile(build):
    model = build()
    graph = ChannelGraph.from_model(model)
    cost = MaskedCost(graph)
    dense = profile(model)
    assert (cost.dense_params, cost.dense_macs) == (dense.total_params, dense.total_macs)
    rng = np.random.default_rng(0)
    for fraction in (0.3, 0.7):
        masks = ChannelMasks({g.id: rng.random(g.size) > fraction for g in graph.prunable_groups})
        small, _ = strip_channels(model, masks)
        after = profile(small)
        assert cost(masks) == (after.total_params, after.total_macs)


def test_remove_to_cost_lands_just_below_the_goal_and_respects_the_floor():
    model = nested_two_heads()
    graph = ChannelGraph.from_model(model)
    cost = MaskedCost(graph)
    groups = graph.prunable_groups
    scores = {g.id: np.random.default_rng(1).random(g.size) for g in groups}
    keep = {g.id: np.ones(g.size, bool) for g in groups}
    share = lambda k: cost.share(k)[1]  # noqa: E731
    assert remove_to_cost(keep, scores, groups, share, 0.5, "global", 2, None, 0.25)
    assert share(keep) <= 0.5
    for g in groups:
        assert keep[g.id].sum() >= layer_floor(g.size, 2, 0.25)
    # one more channel back would go above the goal: the fewest channels were removed
    gid, c = next((g.id, int(np.flatnonzero(~keep[g.id])[0])) for g in groups if (~keep[g.id]).any())
    keep[gid][c] = True
    assert share(keep) > 0.5 - 0.05
    keep = {g.id: np.ones(g.size, bool) for g in groups}
    assert not remove_to_cost(keep, scores, groups, share, 0.01, "global", 2, None, 0.25)  # floor wins


def test_channel_costs_and_per_cost_ranking():
    """A channel's price is the cost its removal saves now; scores divide by it per group and keep
    their order inside a group; the proximal step scales its thresholds by the same prices."""
    from tfmot_mtl.pruning.cost import channel_costs, per_cost
    from tfmot_mtl.sparsity.cost_target import CostTarget

    model = nested_two_heads()
    graph = ChannelGraph.from_model(model)
    cost = MaskedCost(graph)
    share = lambda k: cost.share(k)[1]  # noqa: E731
    groups = graph.prunable_groups
    dense = {g.id: np.ones(g.size, bool) for g in groups}
    saved = channel_costs(groups, share, dense)
    for g in groups:
        trial = {**dense, g.id: np.r_[False, np.ones(g.size - 1, bool)]}
        assert saved[g.id] == pytest.approx(1.0 - share(trial))
    by_id = {g.id: g for g in groups}
    # a "fuse" channel (3x3 at 16x16 over a 32-channel concat) saves about twice a "lateral" one
    # (1x1 at 8x8, plus its 3x3 slice of "fuse"'s input after the concat)
    assert 1.5 < saved["fuse"] / saved["lateral"] < 2.5
    scores = {g.id: np.arange(1.0, g.size + 1) for g in groups}
    ranked = per_cost(scores, groups, share, dense)
    for gid, values in ranked.items():
        np.testing.assert_allclose(values, scores[gid] / saved[gid])
    tempered = per_cost(scores, groups, share, dense, exponent=0.5)
    for gid, values in tempered.items():
        np.testing.assert_allclose(values, scores[gid] / np.sqrt(saved[gid]))
    weights = CostTarget(CostGoal(graph, groups, "macs", 0.5, 2, 0.1)).cost_weights()
    mean = sum(weights[g] * by_id[g].size for g in weights) / sum(by_id[g].size for g in weights)
    assert mean == pytest.approx(1.0) and weights["fuse"] / weights["lateral"] == pytest.approx(
        saved["fuse"] / saved["lateral"])
    plain = tm.sparsity.ProximalGroupLasso(l1=0.1).build(model)
    priced = tm.sparsity.ProximalGroupLasso(l1=0.1, target_macs=0.5).build(model)
    for i, g in enumerate(priced.groups):
        rows = priced._channel_group == i
        np.testing.assert_allclose(priced._scale[rows], plain._scale[rows] * weights[g.id])
    # the exponent tempers the price: 0 gives every channel the same threshold, 0.5 the square root
    flat = CostTarget(CostGoal(graph, groups, "macs", 0.5, 2, 0.1), exponent=0.0).cost_weights()
    assert set(flat.values()) == {1.0}
    root = CostTarget(CostGoal(graph, groups, "macs", 0.5, 2, 0.1), exponent=0.5).cost_weights()
    assert root["fuse"] / root["lateral"] == pytest.approx(np.sqrt(weights["fuse"] / weights["lateral"]))
    unpriced = tm.sparsity.ProximalGroupLasso(l1=0.1, target_macs=0.5, cost_exponent=0.0).build(model)
    np.testing.assert_allclose(unpriced._scale, plain._scale)
    assert tm.sparsity.ProximalGroupLasso.from_config(priced.get_config()).cost_exponent == 1.0
    assert tm.sparsity.ProximalGroupLasso.from_config(unpriced.get_config()).cost_exponent == 0.0
    with pytest.raises(ValueError, match="cost_exponent must be in"):
        tm.sparsity.ProximalGroupLasso(l1=0.1, target_macs=0.5, cost_exponent=3)


def test_layer_floor():
    assert layer_floor(64) == 16 and layer_floor(8) == 2 and layer_floor(1) == 1 and layer_floor(10) == 3
    assert layer_floor(64, min_fraction=0.1) == 7
    assert layer_floor(100, min_channels=5, min_fraction=0.0) == 5


def test_the_floor_share_defaults_by_the_kind_of_target_in_every_entry_point():
    assert (MIN_FRACTION, COST_FLOOR_SHARE) == (0.25, 0.75)
    assert default_min_fraction(None, cost_target=False) == 0.25
    assert default_min_fraction(None, cost_target=True) is None  # set from the model and the target
    assert default_min_fraction(0.1, cost_target=True) == 0.1  # a given value always wins
    model = nested_two_heads()
    graph = tm.ChannelGraph.from_model(model)
    goal = CostGoal(graph, graph.prunable_groups, "macs", 0.33, 2, None)
    uniform = uniform_keep(goal.model, graph.prunable_groups, "macs", 0.33, 2)
    assert goal.min_fraction == pytest.approx(0.75 * uniform, abs=1e-4)
    sched = tm.pruning.IterativeSchedule(target=0.5, frequency=1, step=0.5)
    assert tm.pruning.ChannelPruningCallback(tm.pruning.Magnitude(), sched).min_fraction == 0.25
    pruner = tm.pruning.ChannelPruningCallback(tm.pruning.Magnitude(), sched, target_macs=0.33)
    assert pruner.min_fraction is None
    pruner.setup(model)
    assert pruner.min_fraction == goal.min_fraction
    assert tm.pruning.ChannelPruningCallback(tm.pruning.Magnitude(), sched, target_params=0.5,
                                             min_fraction=0.1).min_fraction == 0.1
    assert tm.sparsity.ProximalGroupLasso(l1=0.1, target=0.5).min_fraction == 0.25
    prox = tm.sparsity.ProximalGroupLasso(l1=0.1, target_macs=0.33)
    assert prox.min_fraction is None and prox.get_config()["min_fraction"] is None
    prox.build(model)
    assert prox.min_fraction == goal.min_fraction


def test_the_cost_floor_follows_the_target_so_every_target_above_two_channels_a_group_is_reachable():
    model = nested_two_heads()
    graph = tm.ChannelGraph.from_model(model)
    groups, cost = graph.prunable_groups, MaskedCost(graph)
    floors = [cost_floor(cost, groups, "macs", t, 2) for t in (0.15, 0.33, 0.6)]
    assert floors[0] < floors[1] < floors[2] < 0.75
    for target, floor in zip((0.15, 0.33, 0.6), floors):
        at_floor = {g.id: np.arange(g.size) < layer_floor(g.size, 2, floor) for g in groups}
        assert cost.share(at_floor)[1] <= target  # the target stays inside the reachable range
        uniform = {g.id: np.arange(g.size) < layer_floor(g.size, 2, floor / 0.75 + 1e-3) for g in groups}
        assert cost.share(uniform)[1] > target  # and the uniform share is the least that meets it
    lowest = cost.share({g.id: np.arange(g.size) < 2 for g in groups})[1]
    assert uniform_keep(cost, groups, "macs", lowest * 0.9, 2) is None
    assert cost_floor(cost, groups, "macs", lowest * 0.9, 2) == 0.0
    with pytest.raises(ValueError, match=r"cannot be reached.*min_fraction=0\).*lower min_channels, or aim higher"):
        CostGoal(graph, groups, "macs", lowest * 0.9, 2, None)  # no advice to lower a floor share of 0
