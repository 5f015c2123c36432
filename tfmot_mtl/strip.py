"""strip_channels: physically remove masked channels, giving a new, smaller Keras model."""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
from keras import tree

from tfmot_mtl.utils import _keras_compat
from tfmot_mtl import layers as rules
from tfmot_mtl.graph import ChannelGraph
from tfmot_mtl.masks import (ChannelMasks, as_channel_masks, check_round_to, keep_nonempty, mask_weights,
                             masks_from_zeros, read_weights, round_masks)
from tfmot_mtl.profile import ModelProfile, profile


def strip_channels(model: keras.Model, masks: ChannelMasks | None = None, round_to: int | None = None,
                   input_shape: Any = None, round_mode: str = "up",
                   graph: ChannelGraph | None = None) -> tuple[keras.Model, "StripReport"]:
    """Returns a new functional model without the masked channels, and a report.

    The input model is not modified. Masks are applied first (removed channels zeroed,
    constants left by f(0) != 0 activations folded into consumer biases), then every
    weight slice of a removed channel is cut out. The result uses only stock Keras
    layers, so it saves and loads as a plain ``.keras`` file without custom objects.

    Args:
        model: a Keras functional or Sequential model (nested sub-models are inlined).
        masks: channel masks (True = keep). ``None`` strips channels whose weights are
            already exactly zero (e.g. after group-sparsity training).
        round_to: keep each group's channel count a multiple of this: the SIMD width of
            the target (16 for x86 AVX-512, 8 for AVX2, 4 for ARM NEON) lets small layers
            run closer to their MAC count (see ``benchmarks/speedup_sweep.py``).
        round_mode: ``"up"`` adds back the removed channels with the largest weight norm;
            ``"nearest"`` may also drop the weakest kept ones; ``"total"`` rounds each group
            up or down so that the total kept count stays that of ``masks`` (see :func:`round_masks`).
        input_shape: per-example input shape for the MAC counts of models whose spatial
            size is unknown (e.g. ``(64, 64, 3)``).
        graph: the :class:`ChannelGraph` of ``model`` itself, if at hand (default: the one
            :meth:`ChannelGraph.of` keeps for it); one built from another model is refused.
    """
    round_to = check_round_to(round_to)
    graph = ChannelGraph.of(model) if graph is None else graph.check_model(model)
    weights = read_weights(graph)
    masks = masks_from_zeros(model, graph=graph) if masks is None else as_channel_masks(masks)
    masks = masks.validate(graph)
    if round_to is not None and round_to > 1:
        masks = round_masks(graph, masks, round_to, weights, mode=round_mode)
    masked, _ = mask_weights(graph, weights, masks)
    structure = keep_nonempty(graph, masks)  # weights stay masked by `masks`: parity holds
    stripped = _rebuild(graph, masked, graph.keep_atoms(structure))
    report = StripReport.build(model, stripped, graph, structure, input_shape)
    return stripped, report


def _rebuild(graph: ChannelGraph, weights: dict, keep: np.ndarray) -> keras.Model:
    flat = graph.flat
    functional = flat.model
    values: dict[str, Any] = {}
    for key in flat.inputs.values():
        t = flat.tensors[key]
        values[key] = keras.Input(batch_shape=t.shape, dtype=t.dtype,
                                  name=_keras_compat.tensor_operation(t).name)
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
            sliced = _slice(graph, node.name, weights[node.name], keep)
            if _shares_weights(new, node.layer):
                if any(not np.array_equal(v, np.asarray(w.numpy())) for v, w in zip(sliced, new.weights)):
                    raise ValueError(f"layer '{node.name}' ({type(new).__name__}) is carried as it is but the "
                                     "masks change its weights (constants folded into it)")
            else:
                new.set_weights(sliced)
    inputs = tree.pack_sequence_as(_keras_compat.inputs_struct(functional),
                                   [values[k] for k in flat.inputs.values()])
    outputs = tree.pack_sequence_as(_keras_compat.outputs_struct(functional),
                                    [values[k] for k in flat.outputs.values()])
    return keras.Model(inputs, outputs, name=functional.name)


def _new_layer(graph: ChannelGraph, node, keep: np.ndarray):
    """The layer of ``node`` in the stripped model: an unchanged layer is carried (see
    :func:`_carry`: a custom layer whose ``get_config`` does not round-trip never makes strip
    fail), a changed one is rebuilt from its rule's smaller config."""
    layer = node.layer
    in_keep = keep[graph.maps[node.inputs[0]]] if node.inputs else None
    out_keep = keep[graph.maps[node.outputs[0]]] if node.outputs else None
    axes_keep = [(ax, keep[ax.atoms]) for ax in graph.axes.get(node.name, [])]
    rule = rules.rule_for(layer)
    resizes = type(rule).config is not rules.Rule.config or type(rule).resize is not rules.Rule.resize
    changed = node.name not in graph.frozen_layers and (
        any(not k.all() for _, k in axes_keep)
        or (resizes and any(not keep[graph.maps[k]].all() for k in (*node.inputs, *node.outputs))))
    if not isinstance(layer, keras.layers.Layer):  # a keras.ops operation: stateless
        if not changed:
            return layer
        config = rules.rule_for(layer).resize(layer, layer.get_config(), in_keep, out_keep, axes_keep)
        return _from_config(layer, config, node.name)
    if not changed:
        return _carry(layer, node.name)
    try:
        config = {**layer.get_config(), "name": node.name}
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"cannot rebuild layer '{node.name}' ({type(layer).__name__}) with fewer channels: "
                         f"its get_config() failed ({type(exc).__name__}: {str(exc).strip()[:200]}). Implement "
                         "get_config, or protect its channel groups from pruning.") from exc
    config = rules.rule_for(layer).resize(layer, config, in_keep, out_keep, axes_keep)
    return _from_config(layer, config, node.name)


def _shares_weights(new, layer) -> bool:
    return new is layer or (bool(layer.weights) and len(new.weights) == len(layer.weights)
                            and new.weights[0] is layer.weights[0])


def _from_config(layer, config: dict, name: str):
    try:
        return type(layer).from_config(config)
    except Exception as exc:  # noqa: BLE001 - name the layer and why, whatever the layer raised
        raise ValueError(f"cannot rebuild layer '{name}' ({type(layer).__name__}) with fewer channels: "
                         f"{type(layer).__name__}.from_config(get_config() with the new channel counts) "
                         f"failed ({type(exc).__name__}: {exc}). Make its get_config/from_config round-trip, "
                         f"or protect its channel groups from pruning.") from exc


def _carry(layer, name: str):
    """An unchanged layer in the stripped model, never rebuilt from a config that may not round-trip.

    A stock Keras layer (whose config round-trips) becomes a new layer of the same class that gets
    the weights, so training the stripped model leaves the original alone. A custom layer is carried
    as it is: its config need not rebuild it faithfully, and stripping does not change its weights."""
    if type(layer).__module__.startswith("keras."):
        try:
            return type(layer).from_config({**layer.get_config(), "name": name})
        except Exception:  # noqa: BLE001 - fall back to carrying the layer itself
            pass
    warnings.warn(f"layer '{name}' ({type(layer).__name__}) is unchanged by the masks and is carried into "
                  "the stripped model as it is (its weights are shared with the original model)",
                  stacklevel=4)
    if layer.name == name:
        return layer
    alias = object.__new__(type(layer))  # same state and variables, the flat graph's unique name
    alias.__dict__.update(layer.__dict__)
    alias.name = name
    return alias


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
