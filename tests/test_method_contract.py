"""The contract the three methods share: each callback exposes ``.graph`` (the ChannelGraph of the
model it trains, the one ``ChannelGraph.of`` keeps) and ``.masks`` (ChannelMasks, True = keep),
which ``strip_channels`` takes with that graph."""
import keras
import numpy as np
import pytest

from test_budget import DOMAINS, random_latents, tiny_backbone
from test_compress import arrays, nested_two_heads
from tfmot_mtl import budget
from tfmot_mtl.graph import ChannelGraph
from tfmot_mtl.masks import ChannelMasks, masks_from_zeros
from tfmot_mtl.pruning import ChannelPruningCallback, IterativeSchedule, Magnitude
from tfmot_mtl.sparsity import ProximalGroupLasso
from tfmot_mtl.strip import strip_channels


def _check(cb, model):
    assert cb.graph is ChannelGraph.of(model)
    masks = cb.masks
    assert isinstance(masks, ChannelMasks)
    masks.validate(cb.graph)
    small, report = strip_channels(model, masks, graph=cb.graph)
    return masks, small


@pytest.mark.heavy
def test_pruning_and_sparsity_callbacks_expose_graph_and_masks():
    x, y = arrays(32)
    model = nested_two_heads()
    prune = ChannelPruningCallback(Magnitude(), IterativeSchedule(0.5, frequency=1, count=2), groups="all")
    model.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[prune])
    masks, small = _check(prune, model)
    assert masks.sparsity() > 0 and small.count_params() < model.count_params()

    assert ProximalGroupLasso(l1=0.5, groups="all").masks is None  # before it has seen a model
    model = nested_two_heads()
    prox = ProximalGroupLasso(l1=0.5, groups="all", target=0.4, ramp_steps=2)
    model.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[prox])
    masks, _ = _check(prox, model)  # the zero pattern so far
    zeros = masks_from_zeros(model, graph=prox.graph)
    assert all(np.array_equal(masks[g], zeros[g]) for g in zeros)
    model = nested_two_heads()
    prox = ProximalGroupLasso(l1=0.5, groups="all", target_macs=0.6, ramp_steps=2)
    model.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[prox])
    masks, small = _check(prox, model)  # the landed masks
    assert masks is prox.masks and masks.sparsity() > 0 and small.count_params() < model.count_params()


def test_budget_callback_exposes_graph_and_the_union_masks():
    model = budget.add_domain_switches(tiny_backbone(), DOMAINS)
    random_latents(model)
    cb = budget.BudgetCallback(budget=0.5)
    assert cb.masks is None
    cb.attach(model)
    masks, _ = _check(cb, model)
    union = budget.union_masks(model)
    assert dict(masks).keys() == dict(union).keys()
    assert all(np.array_equal(masks[g], union[g]) for g in union)
    assert isinstance(model, keras.Model)
