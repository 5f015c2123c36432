"""Masks applied to weights: zeroing removed channels, folding the constants they leave, reading
the zero pattern of a trained model, and the per-variable multipliers of in-graph masking.

Applying masks zeroes every slice a removed channel owns (producer kernel columns and bias, BN
gamma / beta / moving mean, depthwise slices) so that it contributes nothing downstream. Where an
activation leaves a constant f(0) != 0 in a removed channel, the constant is folded into the
consumer's bias and the consumer's input rows for it are zeroed, so the masked model computes
exactly what the stripped model will.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Iterator

import keras
import numpy as np

from tfmot_mtl import layers as rules
from tfmot_mtl.graph import ChannelGraph
from tfmot_mtl.masks.core import ChannelMasks, as_channel_masks


def read_weights(graph: ChannelGraph) -> dict[str, list[np.ndarray]]:
    """Layer name -> copies of its weights (layer.weights order) as numpy arrays."""
    return {name: [np.array(w.numpy()) for w in layer.weights]
            for name, layer in graph.flat.layers.items() if getattr(layer, "weights", None)}


def channel_norms(graph: ChannelGraph, weights: Mapping, gid: str, ord: float = 2,
                  defines_only: bool = True) -> np.ndarray:
    """Per-channel norm of the slices a group's channels own (role "out")."""
    group = graph.groups[gid]
    acc = np.zeros(group.size)
    for s in group.slices:
        if s.role != "out" or (defines_only and not s.defines_zero):
            continue
        w = np.moveaxis(np.asarray(weights[s.layer][s.weight]), s.axis, 0)[s.positions]
        w = np.abs(w.reshape(len(s.positions), -1))
        np.add.at(acc, s.channels, (w ** ord).sum(axis=1) if ord != np.inf else 0)
        if ord == np.inf:
            np.maximum.at(acc, s.channels, w.max(axis=1, initial=0))
    return acc if ord == np.inf else acc ** (1.0 / ord)


def mask_weights(graph: ChannelGraph, weights: Mapping, masks: ChannelMasks,
                 probe: Mapping | None = None) -> tuple[dict, set]:
    """Masked copies of `weights` and the names of the layers that changed."""
    keep = graph.keep_atoms(masks)
    out = {k: [np.array(w) for w in v] for k, v in weights.items()}
    changed: set[str] = set()
    for name, axes in graph.axes.items():
        for ax in axes:
            drop = np.flatnonzero(~keep[ax.atoms])
            if ax.role != "out" or not ax.zeroed or not len(drop):
                continue
            w = out[name][ax.weight]
            idx = [slice(None)] * w.ndim
            idx[ax.axis] = drop
            w[tuple(idx)] = 0
            changed.add(name)
    sites = [s for s in graph.fold_sites if not keep[s.atoms].all()]
    if sites:
        values = _run_stateless(graph, out, probe)
        for site in sites:
            dropped = ~keep[site.atoms]
            pos = site.positions[dropped]
            x = np.asarray(values[site.tensor])
            consts = x.reshape(-1, x.shape[-1])[:, pos].mean(axis=0)
            layer = graph.layer(site.layer)
            rules.rule_for(layer).fold(layer, out[site.layer], pos, consts)
            changed.add(site.layer)
    return out, changed


def _run_stateless(graph: ChannelGraph, weights: Mapping, probe: Mapping | None) -> dict:
    """Runs the flattened graph with substituted weights (the model is not touched)."""
    inputs = dict(probe) if probe else _probe_inputs(graph)

    def call(node, args, kwargs):
        layer = node.layer
        if not isinstance(layer, keras.layers.Layer) or not layer.weights or node.name not in weights:
            return layer(*args, **kwargs)
        by_id = {id(v): w for v, w in zip(layer.weights, weights[node.name])}
        trainable = [by_id[id(v)] for v in layer.trainable_variables]
        non_trainable = [by_id[id(v)] for v in layer.non_trainable_variables]
        return layer.stateless_call(trainable, non_trainable, *args, **kwargs)[0]

    return {k: keras.ops.convert_to_numpy(v) for k, v in graph.flat.run(inputs, fn=call).items()}


def _probe_inputs(graph: ChannelGraph) -> dict:
    rng = np.random.default_rng(0)
    out = {}
    for name, key in graph.flat.inputs.items():
        t = graph.flat.tensors[key]
        shape = tuple(1 if i == 0 else (d or 16) for i, d in enumerate(t.shape))
        if "int" in str(t.dtype):
            out[name] = np.zeros(shape, dtype=str(t.dtype))
        else:
            out[name] = rng.standard_normal(shape).astype(str(t.dtype))
    return out


def apply_masks_(model: keras.Model, masks: ChannelMasks, graph: ChannelGraph | None = None) -> keras.Model:
    """Applies masks IN PLACE (zeroes removed channels, folds constants); returns the model."""
    graph = ChannelGraph.of(model) if graph is None else graph.check_model(model)
    masks = as_channel_masks(masks).validate(graph)
    new, changed = mask_weights(graph, read_weights(graph), masks)
    for name in changed:
        for var, value in zip(graph.layer(name).weights, new[name]):
            var.assign(value)
    return model


def apply_masks(model: keras.Model, masks: ChannelMasks) -> keras.Model:
    """A masked copy of `model` (same architecture and names); `model` is not modified.

    The masks are checked against, and applied through, the channel graph of `model` itself
    (the model they were made for); the copy gets the masked weights by position, so layer
    names that ``clone_model`` changes do not matter.
    """
    graph = ChannelGraph.of(model)
    masks = as_channel_masks(masks).validate(graph)
    new, changed = mask_weights(graph, read_weights(graph), masks)
    values = model.get_weights()
    index = {id(v): i for i, v in enumerate(model.weights)}
    for name in changed:
        for var, value in zip(graph.layer(name).weights, new[name]):
            if id(var) not in index:
                return apply_masks_(clone_with_weights(model), masks)
            values[index[id(var)]] = value
    clone = keras.models.clone_model(model)
    clone.set_weights(values)
    return clone


def clone_with_weights(model: keras.Model) -> keras.Model:
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def removed_slices(graph: ChannelGraph, masks: Any) -> Iterator[tuple[str, int, int, np.ndarray]]:
    """(layer, weight index, axis, positions) of every slice that masking zeroes in removed channels."""
    for gid, mask in as_channel_masks(masks).items():
        for s in graph.groups[gid].slices:
            drop = s.positions[~mask[s.channels]]
            if s.role == "out" and s.zeroed and len(drop):
                yield s.layer, s.weight, s.axis, drop


def nonzero_in_removed(graph: ChannelGraph, masks: Any) -> int:
    """How many weights in the slices of removed channels are not exactly zero.

    Counts every slice a removed channel owns that masking zeroes (kernel columns, bias,
    BN parameters): 0 right after :func:`apply_masks_` and after every step of a pruning
    callback, whose masks keep the removed channels at exactly zero.
    """
    count = 0
    for layer, weight, axis, drop in removed_slices(graph, masks):
        value = keras.ops.convert_to_numpy(graph.layer(layer).weights[weight])
        count += int(np.count_nonzero(np.moveaxis(value, axis, 0)[drop]))
    return count


def masks_from_zeros(model: keras.Model, atol: float = 0.0, graph: ChannelGraph | None = None,
                     min_channels: int = 1) -> ChannelMasks:
    """Masks removing every prunable channel whose own weights are all |w| <= atol.

    Only trainable slices count (kernel columns, biases, BN gamma and beta); running
    statistics do not. With ``atol=0`` a channel must be exactly zero.

    ``min_channels`` is not the methods' layer floor (:mod:`tfmot_mtl.selection`, which decides
    what a method may remove): these masks only read what is already zero, and a group left
    with fewer than ``min_channels`` non-zero channels keeps its first ones, with a warning
    (:class:`ChannelMasks`; 1: every group stays non-empty, so the stripped model still connects).
    """
    graph = ChannelGraph.of(model) if graph is None else graph.check_model(model)
    weights = read_weights(graph)
    masks = {}
    for group in graph.prunable_groups:
        if group.size == 0:
            continue
        peak = channel_norms(graph, weights, group.id, ord=np.inf)
        if not np.isfinite(peak).all():
            raise ValueError(f"channel group '{group.id}' (layers {', '.join(group.layers[:3])}) has NaN/Inf "
                             "weights, so which channels are zero is undefined: restore finite weights "
                             "(e.g. from a checkpoint) first. After a ProximalGroupLasso run stopped on "
                             "NaN, its zero_channels() holds the last finite zero pattern.")
        masks[group.id] = peak > atol
    return ChannelMasks(masks, min_channels=min_channels)


def maskable_variables(graph: ChannelGraph, group_ids) -> list:
    """Every variable a mask of the groups ``group_ids`` can touch: the slices their channels own
    that masking zeroes, and the consumer input rows of every fold site."""
    out = []
    for gid in sorted(group_ids):
        for s in graph.groups[gid].slices:
            if s.role == "out" and s.zeroed:
                out.append(graph.layer(s.layer).weights[s.weight])
    for site in graph.fold_sites:
        for ax in graph.axes.get(site.layer, []):
            if ax.role == "in":
                out.append(graph.layer(site.layer).weights[ax.weight])
    return out


def variable_multipliers(graph: ChannelGraph, masks: Any) -> list[tuple[Any, np.ndarray]]:
    """``(variable, 0/1 array of its shape)`` for every variable holding slices of channels that
    ``masks`` removes: multiplying by it after each optimizer step keeps them at exactly zero
    (the pruning callback's in-graph masks). The consumer rows a constant was folded out of are
    zeroed too; the folding itself is :func:`mask_weights`' job."""
    masks = as_channel_masks(masks)
    arrays: dict[tuple[str, int], np.ndarray] = {}

    def zero(layer_name, weight, axis, positions):
        var = graph.layer(layer_name).weights[weight]
        m = arrays.setdefault((layer_name, weight), np.ones(tuple(var.shape), np.float32))
        idx = [slice(None)] * m.ndim
        idx[axis] = positions
        m[tuple(idx)] = 0.0

    for layer_name, weight, axis, drop in removed_slices(graph, masks):
        zero(layer_name, weight, axis, drop)
    keep = graph.keep_atoms(masks)
    for site in graph.fold_sites:
        drop = site.positions[~keep[site.atoms]]
        for ax in graph.axes.get(site.layer, []):
            if ax.role == "in" and len(drop):
                zero(site.layer, ax.weight, ax.axis, drop)
    return [(graph.layer(name).weights[weight], m) for (name, weight), m in arrays.items()]
