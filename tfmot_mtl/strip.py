"""strip_channels: physically remove masked channels, giving a new, smaller Keras model."""
from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
from keras import tree

from tfmot_mtl import layers as rules
from tfmot_mtl.graph import ChannelGraph
from tfmot_mtl.masks import ChannelMasks, channel_norms, mask_weights, masks_from_zeros, read_weights
from tfmot_mtl.profile import ModelProfile, profile


def strip_channels(model: keras.Model, masks: ChannelMasks | None = None, round_to: int | None = None,
                   input_shape: Any = None) -> tuple[keras.Model, "StripReport"]:
    """Returns a new functional model without the masked channels, and a report.

    The input model is not modified. Masks are applied first (removed channels zeroed,
    constants left by f(0) != 0 activations folded into consumer biases), then every
    weight slice of a removed channel is cut out. The result uses only stock Keras
    layers, so it saves and loads as a plain ``.keras`` file without custom objects.

    Args:
        model: a Keras functional or Sequential model (nested sub-models are inlined).
        masks: channel masks (True = keep). ``None`` strips channels whose weights are
            already exactly zero (e.g. after group-sparsity training).
        round_to: keep each group's channel count a multiple of this (hardware-friendly);
            the channels added back are the removed ones with the largest weight norm.
        input_shape: per-example input shape for the MAC counts of models whose spatial
            size is unknown (e.g. ``(64, 64, 3)``).
    """
    graph = ChannelGraph.from_model(model)
    weights = read_weights(graph)
    masks = masks_from_zeros(model, graph=graph) if masks is None else masks
    masks = masks.validate(graph)
    if round_to:
        masks = round_masks(graph, masks, int(round_to), weights)
    masked, _ = mask_weights(graph, weights, masks)
    keep = graph.keep_atoms(masks)
    stripped = _rebuild(graph, masked, keep)
    report = StripReport.build(model, stripped, graph, masks, input_shape)
    return stripped, report


def round_masks(graph: ChannelGraph, masks: ChannelMasks, multiple: int, weights=None) -> ChannelMasks:
    """Adds back removed channels (largest norm first) until each count is a multiple."""
    if multiple < 1:
        raise ValueError(f"round_to must be a positive integer, got {multiple}")
    weights = weights if weights is not None else read_weights(graph)
    out = {}
    for gid, mask in masks.items():
        mask = mask.copy()
        target = min(len(mask), math.ceil(mask.sum() / multiple) * multiple)
        if mask.sum() < target:
            norms = channel_norms(graph, weights, gid)
            for i in np.argsort(-norms, kind="stable"):
                if mask.sum() >= target:
                    break
                mask[i] = True
        out[gid] = mask
    return ChannelMasks(out, masks.min_channels)


def _rebuild(graph: ChannelGraph, weights: dict, keep: np.ndarray) -> keras.Model:
    flat = graph.flat
    functional = flat.model
    values: dict[str, Any] = {}
    for key in flat.inputs.values():
        t = flat.tensors[key]
        values[key] = keras.Input(batch_shape=t.shape, dtype=t.dtype,
                                  name=t._keras_history.operation.name)
    created: dict[str, Any] = {}
    for node in flat.nodes:
        new = created.get(node.name)
        fresh = new is None
        if fresh:
            new = created[node.name] = _new_layer(graph, node, keep)
        outs = node.call(values, layer=new)
        for key, val in zip(node.outputs, outs):
            values[key] = val
        if fresh and node.name in weights and weights[node.name]:
            new.set_weights(_slice(graph, node.name, weights[node.name], keep))
    inputs = tree.pack_sequence_as(functional._inputs_struct, [values[k] for k in flat.inputs.values()])
    outputs = tree.pack_sequence_as(functional._outputs_struct, [values[k] for k in flat.outputs.values()])
    return keras.Model(inputs, outputs, name=functional.name)


def _new_layer(graph: ChannelGraph, node, keep: np.ndarray):
    layer = node.layer
    if not isinstance(layer, keras.layers.Layer):
        try:
            return type(layer).from_config(layer.get_config())
        except Exception:  # noqa: BLE001 - stateless op objects can be called again as they are
            return layer
    in_keep = keep[graph.maps[node.inputs[0]]] if node.inputs else None
    out_keep = keep[graph.maps[node.outputs[0]]] if node.outputs else None
    config = {**layer.get_config(), "name": node.name}
    if node.name not in graph.frozen_layers:  # a frozen layer keeps every channel as it is
        config = rules.rule_for(layer).config(layer, config, in_keep, out_keep)
    return type(layer).from_config(config)


def _slice(graph: ChannelGraph, name: str, weights: list, keep: np.ndarray) -> list[np.ndarray]:
    out = list(weights)
    for ax in graph.axes.get(name, []):
        idx = np.flatnonzero(keep[ax.atoms])
        if len(idx) != len(ax.atoms):
            out[ax.weight] = np.take(out[ax.weight], idx, axis=ax.axis)
    return out


@dataclass
class StripReport:
    """Channels, parameters and MACs before/after, per layer, in total and per task."""

    layers: list[dict]
    totals: dict
    per_task: dict
    groups: dict = field(default_factory=dict)

    @classmethod
    def build(cls, before: keras.Model, after: keras.Model, graph: ChannelGraph,
              masks: ChannelMasks, input_shape: Any = None) -> "StripReport":
        p0, p1 = _profile(before, input_shape), _profile(after, input_shape)
        rows1 = {(r.name, r.call_index): r for r in p1.layers}
        layers = []
        for r0 in p0.layers:
            r1 = rows1.get((r0.name, r0.call_index))
            layers.append({
                "name": r0.name, "class": r0.class_name, "call": r0.call_index,
                "channels_before": _channels(r0.output_shape),
                "channels_after": _channels(r1.output_shape) if r1 else None,
                "params_before": r0.params, "params_after": r1.params if r1 else 0,
                "macs_before": r0.macs, "macs_after": r1.macs if r1 else 0,
            })
        totals = {"params_before": p0.total_params, "params_after": p1.total_params,
                  "macs_before": p0.total_macs, "macs_after": p1.total_macs}
        per_task = {t: {"params_before": v["params"], "params_after": p1.per_task[t]["params"],
                        "macs_before": v["macs"], "macs_after": p1.per_task[t]["macs"]}
                    for t, v in p0.per_task.items()}
        groups = {gid: {"kept": int(m.sum()), "size": int(len(m))} for gid, m in masks.items()}
        return cls(layers, totals, per_task, groups)

    @property
    def param_ratio(self) -> float:
        return self.totals["params_after"] / max(1, self.totals["params_before"])

    @property
    def mac_ratio(self) -> float:
        return self.totals["macs_after"] / max(1, self.totals["macs_before"])

    def to_dict(self) -> dict:
        return {"layers": self.layers, "totals": self.totals, "per_task": self.per_task,
                "groups": self.groups}

    def table(self, changed_only: bool = True):
        from rich.table import Table

        table = Table(title="strip_channels report")
        for col in ("layer", "class", "channels", "params", "MACs"):
            table.add_column(col, justify="left" if col in ("layer", "class") else "right")
        for r in self.layers:
            if changed_only and r["params_before"] == r["params_after"] and r["macs_before"] == r["macs_after"]:
                continue
            table.add_row(r["name"], r["class"], f"{r['channels_before']} -> {r['channels_after']}",
                          f"{r['params_before']:,} -> {r['params_after']:,}",
                          f"{r['macs_before']:,} -> {r['macs_after']:,}")
        t = self.totals
        table.add_row("TOTAL", "", "", f"{t['params_before']:,} -> {t['params_after']:,}",
                      f"{t['macs_before']:,} -> {t['macs_after']:,}", style="bold")
        for task, v in self.per_task.items():
            table.add_row(f"task {task}", "", "", f"{v['params_before']:,} -> {v['params_after']:,}",
                          f"{v['macs_before']:,} -> {v['macs_after']:,}")
        return table

    def __str__(self) -> str:
        from rich.console import Console

        console = Console(file=io.StringIO(), width=140)
        console.print(self.table())
        return console.file.getvalue()

    def print(self) -> None:
        print(str(self))


def _profile(model: keras.Model, input_shape: Any) -> ModelProfile:
    return profile(model, input_shape=input_shape)


def _channels(shape) -> int | None:
    return shape[-1] if shape and isinstance(shape[-1], int) else None
