"""Rules of attention and grouped normalisation: MultiHeadAttention heads, GroupNormalization groups."""
from __future__ import annotations

import inspect

import keras
import numpy as np

from tfmot_mtl.layers.base import ZERO, Rule, describe, register


def _mha_weights(layer) -> dict[tuple[str, str], int]:
    """``{(projection, "kernel"|"bias"): index in layer.weights}`` of a MultiHeadAttention."""
    out = {}
    for i, w in enumerate(layer.weights):
        parts = w.path.split("/")
        if len(parts) >= 2:
            out[(parts[-2], parts[-1])] = i
    return out


def _bound_tensors(ctx) -> dict[str, np.ndarray]:
    """The channel maps of the call's ``query``, ``value`` and ``key`` arguments."""
    arguments = ctx.node._node.arguments
    try:
        bound = inspect.signature(ctx.layer.call).bind(*arguments.args, **arguments.kwargs).arguments
    except TypeError:
        return {}
    maps = {}
    for name in ("query", "value", "key"):
        t = bound.get(name)
        if isinstance(t, keras.KerasTensor):
            maps[name] = ctx.graph.maps[ctx.node._keys[id(t)]]
    if "key" not in maps and "value" in maps:
        maps["key"] = maps["value"]
    return maps


@register(keras.layers.MultiHeadAttention)
class MultiHeadAttentionRule(Rule):
    """Whole heads are one channel group: the head's query, key and value kernel/bias slices
    (owned, zeroed when masked: a masked head outputs exactly zero) and its rows of the output
    projection (consumed). The output projection's columns are new channels; the query, key and
    value inputs are consumed by their kernels' input rows."""

    def propagate(self, ctx):
        layer = ctx.layer
        config = layer.get_config()
        bound = ctx.node._node.arguments.kwargs
        if config.get("use_gate") or bound.get("return_attention_scores"):
            return ctx.freeze_all(f"{describe(layer)} uses a gate or returns its attention scores")
        index = _mha_weights(layer)
        maps = _bound_tensors(ctx)
        names = {"query": "query", "key": "key", "value": "value"}
        if not all((p, "kernel") in index for p in (*names, "attention_output")) or len(maps) != 3:
            return ctx.freeze_all(f"{describe(layer)} has weights or arguments the channel graph does "
                                  "not recognise")
        heads = ctx.new_atoms(layer.num_heads, tag="heads")
        for proj in names:
            ctx.axis(index[(proj, "kernel")], 1, "out", heads)
            if (proj, "bias") in index:
                ctx.axis(index[(proj, "bias")], 0, "out", heads)
            ctx.axis(index[(proj, "kernel")], 0, "in", maps[proj])
        ctx.axis(index[("attention_output", "kernel")], 0, "in", heads)
        out = ctx.new_atoms(ctx.out_widths[0])
        ctx.axis(index[("attention_output", "kernel")], -1, "out", out)
        if ("attention_output", "bias") in index:
            ctx.axis(index[("attention_output", "bias")], 0, "out", out)
        ctx.inner(heads)
        return [out]

    def states(self, ctx, in_states):
        return [np.full(ctx.out_widths[0], ZERO, np.int8)]

    def resize(self, layer, config, in_keep, out_keep, axes_keep):
        heads = next((k for ax, k in axes_keep if ax.role == "in" and ax.axis == 0
                      and ax.weight == _mha_weights(layer)[("attention_output", "kernel")]), None)
        config = dict(config)
        if heads is not None:
            config["num_heads"] = int(heads.sum())
        if (in_keep is not None and not in_keep.all()) or (out_keep is not None and not out_keep.all()):
            config["output_shape"] = (int(out_keep.sum()),)
        return config


@register(keras.layers.GroupNormalization)
class GroupNormRule(Rule):
    """Normalises within groups of channels: the channels of one group go (or stay) together, so
    whole groups are pruned; ``groups`` is updated on rebuild."""

    def propagate(self, ctx):
        layer = ctx.layer
        rank = len(ctx.in_shapes[0])
        if int(np.atleast_1d(layer.axis)[0]) % rank != rank - 1:
            return ctx.freeze_all(f"{describe(layer)} normalises groups of axis {layer.axis}, not the "
                                  "channel axis")
        in_map = ctx.in_maps[0]
        size = len(in_map) // layer.groups
        for g in range(layer.groups):
            part = in_map[g * size:(g + 1) * size]
            ctx.couple(np.repeat(part[:1], len(part)), part)
        for i in range(len(layer.weights)):
            ctx.axis(i, 0, "out", in_map)
        return [in_map]

    def states(self, ctx, in_states):
        return [np.zeros_like(in_states[0])] if ctx.layer.scale else [in_states[0]]

    def config(self, layer, config, in_keep, out_keep):
        size = len(in_keep) // layer.groups
        return {**config, "groups": int(in_keep.sum()) // size}
