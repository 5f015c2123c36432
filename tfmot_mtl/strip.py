"""strip_channels: physically remove masked channels, giving a new, smaller Keras model."""
from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
from keras import tree

from tfmot_mtl import layers as rules
from tfmot_mtl.graph import ChannelGraph
from tfmot_mtl.masks import (ChannelMasks, as_channel_masks, channel_norms, mask_weights, masks_from_zeros,
                             read_weights)
from tfmot_mtl.profile import ModelProfile, profile


def strip_channels(model: keras.Model, masks: ChannelMasks | None = None, round_to: int | None = None,
                   input_shape: Any = None, round_mode: str = "up") -> tuple[keras.Model, "StripReport"]:
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
            ``"nearest"`` may also drop the weakest kept ones (see :func:`round_masks`).
        input_shape: per-example input shape for the MAC counts of models whose spatial
            size is unknown (e.g. ``(64, 64, 3)``).
    """
    if round_to is not None and (isinstance(round_to, bool) or not isinstance(round_to, (int, np.integer))
                                 or round_to < 1):
        raise ValueError(f"round_to must be None or a positive integer (kept channels per group are "
                         f"rounded up to a multiple of it), got {round_to!r}")
    graph = ChannelGraph.from_model(model)
    weights = read_weights(graph)
    masks = masks_from_zeros(model, graph=graph) if masks is None else as_channel_masks(masks)
    masks = masks.validate(graph)
    if round_to is not None and round_to > 1:
        masks = round_masks(graph, masks, int(round_to), weights, mode=round_mode)
    masked, _ = mask_weights(graph, weights, masks)
    structure = keep_nonempty(graph, masks)  # weights stay masked by `masks`: parity holds
    stripped = _rebuild(graph, masked, graph.keep_atoms(structure))
    report = StripReport.build(model, stripped, graph, structure, input_shape)
    return stripped, report


def keep_nonempty(graph: ChannelGraph, masks: ChannelMasks) -> ChannelMasks:
    """`masks` plus one (zeroed) channel wherever they would leave a tensor with no channels.

    A group coupled through a concatenation or a residual Add spans several layers, so a
    mask keeping some of its channels can still remove every channel of one layer (a
    Conv2D with 0 filters cannot be built). That layer keeps one channel; its weights are
    zeroed by the masks, so the stripped model still computes what the masked model does.
    """
    out = {gid: np.array(m) for gid, m in masks.items()}
    keep = graph.keep_atoms(masks)
    for key, atoms in graph.maps.items():
        atoms = np.asarray(atoms)
        if not len(atoms) or keep[atoms].any():
            continue
        gid, channel = graph.atom_group[atoms[0]], int(graph.atom_channel[atoms[0]])
        out[gid][channel] = True
        keep = graph.keep_atoms(ChannelMasks(out, masks.min_channels))
        layer = graph.flat.tensors[key]._keras_history.operation.name
        warnings.warn(f"the masks remove every channel of '{layer}' (group '{gid}'); the stripped model "
                      f"keeps one zeroed channel there (a layer cannot have 0 channels)", stacklevel=3)
    return ChannelMasks(out, masks.min_channels)


def round_masks(graph: ChannelGraph, masks: ChannelMasks, multiple: int, weights=None,
                mode: str = "up") -> ChannelMasks:
    """Makes every group's kept-channel count a multiple of ``multiple``.

    SIMD kernels process channels in vectors (16 floats with AVX-512, 8 with AVX2, 4 with
    NEON), so a layer with a multiple of that width runs closer to its MAC count.

    Args:
        graph, masks: the model's channel graph and the masks to round.
        multiple: the channel multiple (1 leaves the masks unchanged).
        weights: ``read_weights(graph)`` if already at hand (channels are ranked by norm).
        mode: ``"up"`` adds back removed channels (largest norm first) to the next
            multiple, never removing more than ``masks`` does; ``"nearest"`` moves to the
            nearest multiple (ties up), also dropping the weakest kept channels, so the
            overall sparsity stays close to that of ``masks``. Counts never exceed the
            group size and never fall below one multiple.
    """
    if isinstance(multiple, bool) or not isinstance(multiple, (int, np.integer)) or multiple < 1:
        raise ValueError(f"round_to must be a positive integer, got {multiple!r}")
    if mode not in ("up", "nearest"):
        raise ValueError(f"mode must be 'up' or 'nearest', got {mode!r}")
    weights = weights if weights is not None else read_weights(graph)
    out = {}
    for gid, mask in masks.items():
        mask, kept = mask.copy(), int(mask.sum())
        if mode == "up":
            target = math.ceil(kept / multiple) * multiple
        else:
            target = max(multiple, int(math.floor(kept / multiple + 0.5)) * multiple)
        target = min(len(mask), target)
        if target != kept:
            order = np.argsort(-channel_norms(graph, weights, gid), kind="stable")
            if target > kept:
                add = [i for i in order if not mask[i]][:target - kept]
                mask[add] = True
            else:
                drop = [i for i in order[::-1] if mask[i]][:kept - target]
                mask[drop] = False
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
