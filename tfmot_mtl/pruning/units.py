"""The units a criterion scores: a channel group's trainable "out" slices, one unit per layer.

A group couples several layers (a residual Add joins producers; BN follows a conv). A criterion
scores each unit -- e.g. a conv's kernel columns and bias, or a BN's gamma and beta -- and then
combines the units of the group (:func:`combine_units`: sum, mean or max, the DepGraph group
importance). Shared by the data-free criteria (:mod:`tfmot_mtl.pruning.importance`) and the
gradient ones (:mod:`tfmot_mtl.pruning.gradient_criteria`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import keras
import numpy as np

from tfmot_mtl.graph import ChannelGraph, ChannelGroup

REDUCTIONS = ("sum", "mean", "max")


@dataclass
class Part:
    """One weight slice of a unit: positions along ``axis`` of ``var`` owned by ``channels``."""

    var: Any
    axis: int
    positions: np.ndarray
    channels: np.ndarray


def group_units(graph: ChannelGraph, group: ChannelGroup, select: Callable,
                consumers: bool = False) -> list[list[Part]]:
    """The group's trainable "out" slices, one list per layer, filtered by ``select(layer, s)``;
    with ``consumers`` also the consumers' input rows of the group's channels (the slices removed
    with a channel, as Torch-Pruning's group importance counts them), one list per consumer."""
    by_layer: dict[str, list[Part]] = {}
    for s in group.slices:
        wanted = s.role == "out" and s.defines_zero or consumers and s.role == "in"
        if not wanted:
            continue
        layer = graph.layer(s.layer)
        if select(layer, s):
            part = Part(layer.weights[s.weight], s.axis, s.positions, s.channels)
            by_layer.setdefault((s.layer, s.role), []).append(part)
    return list(by_layer.values())


def channel_sum(values: np.ndarray, part: Part, size: int) -> np.ndarray:
    """Per-channel sum of ``values`` (shaped like ``part.var``) over the part's positions."""
    rows = np.moveaxis(values, part.axis, 0)[part.positions]
    rows = rows.reshape(len(part.positions), -1).sum(axis=1)
    out = np.zeros(size)
    np.add.at(out, part.channels, rows)
    return out


def combine_units(per_unit: list[np.ndarray], size: int, reduction: str) -> np.ndarray:
    """The units' per-channel scores combined by ``reduction``; NaN (unscorable) without any unit."""
    if not per_unit:
        return np.full(size, np.nan)
    stack = np.stack(per_unit)
    return {"sum": stack.sum, "mean": stack.mean, "max": stack.max}[reduction](axis=0)


def is_kernel(layer, s) -> bool:
    """True for a kernel slice (a weight of rank >= 2), not a bias or a BN parameter."""
    return len(layer.weights[s.weight].shape) >= 2


def is_batchnorm(layer) -> bool:
    """True for a BatchNormalization layer."""
    return isinstance(layer, keras.layers.BatchNormalization)


def scorable_groups(graph: ChannelGraph) -> list[ChannelGroup]:
    """The prunable groups with at least one channel: the ones every criterion scores."""
    return [g for g in graph.prunable_groups if g.size > 0]
