"""strip_channels: physically remove masked channels, giving a new, smaller Keras model."""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
from keras import tree

from tfmot_mtl import _keras_compat
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
            ``"nearest"`` may also drop the weakest kept ones; ``"total"`` rounds each group
            up or down so that the total kept count stays that of ``masks`` (see :func:`round_masks`).
        input_shape: per-example input shape for the MAC counts of models whose spatial
            size is unknown (e.g. ``(64, 64, 3)``).
    """
    round_to = check_round_to(round_to)
    graph = ChannelGraph.from_model(model)
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


def keep_nonempty(graph: ChannelGraph, masks: ChannelMasks) -> ChannelMasks:
    """`masks` plus one (zeroed) channel wherever they would leave a tensor with no channels.

    A group coupled through a concatenation or a residual Add spans several layers, so a
    mask keeping some of its channels can still remove every channel of one layer (a
    Conv2D with 0 filters cannot be built). That layer keeps one channel; its weights are
    zeroed by the masks, so the stripped model still computes what the masked model does.
    """
    out = {gid: np.array(m) for gid, m in masks.items()}
    keep = graph.keep_atoms(masks)
    sets = [(key, atoms, "channel") for key, atoms in graph.maps.items()]
    sets += [(key, atoms, "head") for key, inner in graph.inner_maps.items() for atoms in inner]
    for key, atoms, what in sets:
        atoms = np.asarray(atoms)
        if not len(atoms) or keep[atoms].any():
            continue
        gid, channel = graph.atom_group[atoms[0]], int(graph.atom_channel[atoms[0]])
        out[gid][channel] = True
        keep = graph.keep_atoms(ChannelMasks(out, masks.min_channels))
        layer = _keras_compat.tensor_operation(graph.flat.tensors[key]).name
        warnings.warn(f"the masks remove every {what} of '{layer}' (group '{gid}'); the stripped model "
                      f"keeps one zeroed {what} there (a layer cannot have 0 {what}s)", stacklevel=3)
    return ChannelMasks(out, masks.min_channels)


def check_round_to(round_to: Any, allow_none: bool = True) -> int | None:
    """``round_to`` as an int, or a clear ``ValueError``: the one check of every ``round_to``
    argument (strip_channels, round_masks, ChannelPruningCallback, prune_model, the CLI)."""
    if round_to is None and allow_none:
        return None
    if isinstance(round_to, bool) or not isinstance(round_to, (int, np.integer)) or round_to < 1:
        raise ValueError(f"round_to must be {'None or ' if allow_none else ''}a positive integer (kept "
                         f"channels per group become a multiple of it), got {round_to!r}")
    return int(round_to)


ROUND_MODES = ("up", "nearest", "total")


def round_masks(graph: ChannelGraph, masks: ChannelMasks, multiple: int, weights=None,
                mode: str = "up", scores=None, previous: ChannelMasks | None = None) -> ChannelMasks:
    """Makes every group's kept-channel count a multiple of ``multiple``.

    SIMD kernels process channels in vectors (16 floats with AVX-512, 8 with AVX2, 4 with
    NEON), so a layer with a multiple of that width runs closer to its MAC count. The one
    rounding routine of the package (``strip_channels(round_to=)`` and
    ``ChannelPruningCallback(round_to=)`` use it).

    Args:
        graph, masks: the model's channel graph and the masks to round.
        multiple: the channel multiple (1 leaves the masks unchanged).
        weights: ``read_weights(graph)`` if already at hand (channels are ranked by norm).
        mode: ``"up"`` adds back removed channels (strongest first) to the next multiple,
            never removing more than ``masks`` does; ``"nearest"`` moves each group to its
            nearest allowed count (ties up), also dropping the weakest kept channels;
            ``"total"`` rounds each group down or up (to one of its two nearest allowed
            counts) so that the kept channels of all groups together stay as close as
            possible to those of ``masks``: groups with the largest remainders go up first
            (the largest-remainder method). Rounding every group to its nearest count can
            move the overall sparsity a lot (a 70% target kept 32 of 128 channels, 75%, in
            every group of 128); ``"total"`` keeps it. Counts never exceed the group size
            (which is always allowed); ``"nearest"`` and ``"total"`` never go below
            ``masks.min_channels`` rounded up to a multiple (at least one multiple).
        scores: optional ``{group id: per-channel score}`` ranking channels instead of their
            weight norm (higher = stronger; NaN/Inf ranks strongest), e.g. importance scores.
        previous: optional masks these ones were pruned from (a pruning step): rounding never
            brings back a channel ``previous`` removes, so a group keeps at most its count in
            ``previous``, and a group whose count did not change is left as it is.
    """
    multiple = check_round_to(multiple, allow_none=False)
    if mode not in ROUND_MODES:
        raise ValueError(f"mode must be one of {ROUND_MODES}, got {mode!r}")
    counts = {}  # group id -> (kept, [allowed counts to choose from])
    before_of = {gid: np.asarray(previous[gid], bool) for gid in masks if previous is not None and gid in previous}
    for gid, mask in masks.items():
        kept, before = int(np.sum(mask)), before_of.get(gid)
        cap = len(mask) if before is None else min(len(mask), int(before.sum()))
        if before is not None and kept == cap:
            counts[gid] = (kept, [kept])
        else:
            counts[gid] = (kept, _allowed_counts(kept, multiple, cap, max(1, masks.min_channels), mode))
    targets = _balanced_counts(counts) if mode == "total" else {gid: c[1][0] for gid, c in counts.items()}
    out = {}
    for gid, mask in masks.items():
        mask, kept, target = np.array(mask, bool), counts[gid][0], targets[gid]
        if target != kept:
            if gid in (scores or {}):
                rank = np.asarray(scores[gid], np.float64)
            else:
                weights = weights if weights is not None else read_weights(graph)
                rank = channel_norms(graph, weights, gid)
            rank = np.where(np.isfinite(rank), rank, np.inf)
            if target > kept:  # bring back the strongest removed channels
                before = before_of.get(gid)
                pool = np.flatnonzero(~mask if before is None else before & ~mask)
                mask[pool[np.argsort(-rank[pool], kind="stable")][:target - kept]] = True
            else:  # drop the weakest kept ones
                alive = np.flatnonzero(mask)
                mask[alive[np.argsort(rank[alive], kind="stable")][:kept - target]] = False
        out[gid] = mask
    return ChannelMasks(out, masks.min_channels)


def _allowed_counts(kept: int, multiple: int, cap: int, min_channels: int, mode: str) -> list[int]:
    """The kept counts a group may round to, the preferred one first: a multiple of
    ``multiple`` or ``cap`` (the most allowed). ``"total"`` gets the count below and the
    count above (the one below first), the other modes one count."""
    if kept >= cap:
        return [kept]
    if mode == "up":
        return [min(cap, -(-kept // multiple) * multiple)]
    floor = min(cap, -(-min_channels // multiple) * multiple)
    if kept % multiple == 0 and kept >= floor:
        return [kept]
    up = min(cap, max(floor, -(-kept // multiple) * multiple))
    down = (kept // multiple) * multiple
    if down < floor:
        return [up]
    if mode == "total":
        return [down, up]
    return [up if up - kept <= kept - down else down]


def _balanced_counts(counts: dict[str, tuple[int, list[int]]]) -> dict[str, int]:
    """Per group one of its allowed counts, every group at its lower count first, then the
    groups with the largest remainder ``(kept - down) / (up - down)`` raised one by one
    while that brings the total closer to the total of the unrounded counts."""
    targets = {gid: allowed[0] for gid, (_, allowed) in counts.items()}
    want = sum(kept for kept, _ in counts.values())
    total = sum(targets.values())
    options = [((kept - allowed[0]) / (allowed[1] - allowed[0]), gid) for gid, (kept, allowed) in counts.items()
               if len(allowed) == 2]
    for _, gid in sorted(options, key=lambda o: -o[0]):  # stable: ties keep the groups' order
        step = counts[gid][1][1] - targets[gid]
        if abs(total + step - want) >= abs(total - want):
            continue
        targets[gid] += step
        total += step
    return targets


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
