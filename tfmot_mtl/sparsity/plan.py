"""Where the proximal step of :class:`~tfmot_mtl.sparsity.ProximalGroupLasso` acts: per selected
weight, the positions that belong to selected channels, each channel's strength and size.

Channels of all selected groups are numbered in one global row space (group after group), so
the step's per-channel sums are segment sums over these rows (:mod:`._pieces`). Only the slices
that define a channel's zero (producer kernel columns, bias, BatchNorm gamma and beta,
depthwise slices) are planned: a channel is dead when all of them are zero.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tfmot_mtl.graph import ChannelGraph
from tfmot_mtl.sparsity.regularizer import regularized_layers

SCALES = ("sqrt_group_size", "sqrt_num_groups", "none")


@dataclass
class Entry:
    """The positions of one weight (along one axis) that belong to selected channels."""

    var: int  # index into the plan's variable list
    axis: int
    positions: np.ndarray
    rows: np.ndarray  # global channel id of each position
    elements: np.ndarray  # global channel id of each element of the gathered block


@dataclass
class ChannelPlan:
    """The planned groups, their weights (``variables``, each once) and ``entries``, and per
    global channel its group index, its strength (lambda multiplier) and its element count."""

    groups: list
    variables: list
    entries: list[Entry]
    channel_group: np.ndarray
    strength: np.ndarray
    elements: np.ndarray

    @property
    def num_channels(self) -> int:
        return len(self.channel_group)

    def scale(self, kind: str) -> np.ndarray:
        """Per channel, the factor of its threshold: sqrt of its element count, sqrt of its
        group's size, or 1 (``kind`` one of :data:`SCALES`)."""
        if kind not in SCALES:
            raise ValueError(f"scale must be one of {SCALES}, got {kind!r}")
        if kind == "sqrt_group_size":
            return np.sqrt(self.elements)
        if kind == "sqrt_num_groups":
            sizes = np.asarray([g.size for g in self.groups], float)
            return np.sqrt(sizes)[self.channel_group] if len(sizes) else np.zeros(0)
        return np.ones(self.num_channels)


def trainable(graph: ChannelGraph, group) -> bool:
    """Whether every weight that defines the group's zeros is trainable (a frozen one would
    bring a zeroed channel back on the next update)."""
    return all(graph.layer(s.layer).weights[s.weight].trainable
               for s in group.slices if s.role == "out" and s.defines_zero)


def group_strengths(model, groups, l1) -> dict[str, float]:
    """Per group, its lambda multiplier: 1 with an explicit ``l1``; else the strongest
    ``ChannelGroupLasso`` regularizer among its producers (groups without one are left out)."""
    if l1 is not None:
        return {g.id: 1.0 for g in groups}
    regs = regularized_layers(model)
    out = {}
    for g in groups:
        found = [regs[p].l1 for p in g.producers if p in regs]
        if found:
            out[g.id] = max(found)
    if groups and not out:
        raise ValueError("ProximalGroupLasso(l1=None) takes lambda from ChannelGroupLasso "
                         "regularizers, but no selected layer has one: pass l1=... or build "
                         "the model with apply_group_sparsity")
    return out


def plan_channels(graph: ChannelGraph, groups, strengths: dict[str, float]) -> ChannelPlan:
    """The plan of ``groups`` (each with a strength in ``strengths``)."""
    variables: list = []
    entries: list[Entry] = []
    var_index: dict[int, int] = {}
    offset = 0
    sizes, lam = [], []
    for g in groups:
        for s in g.slices:
            if s.role != "out" or not s.defines_zero:
                continue
            var = graph.layer(s.layer).weights[s.weight]
            if id(var) not in var_index:
                var_index[id(var)] = len(variables)
                variables.append(var)
            rest = int(np.prod(var.shape)) // int(var.shape[s.axis])
            rows = offset + np.asarray(s.channels, np.int64)
            entries.append(Entry(var_index[id(var)], s.axis, np.asarray(s.positions), rows, np.repeat(rows, rest)))
        sizes.append(g.size)
        lam.append(np.full(g.size, strengths[g.id]))
        offset += g.size
    elements = np.zeros(offset)
    for e in entries:
        elements += np.bincount(e.elements, minlength=offset)
    return ChannelPlan(list(groups), variables, entries,
                       np.repeat(np.arange(len(groups)), sizes).astype(np.int64),
                       np.concatenate(lam) if lam else np.zeros(0), elements)


def per_channel(weights: dict, groups: list, channel_group: np.ndarray) -> np.ndarray:
    """``{group_id: per-channel weights}`` laid out as a plan's selected channels (group ``i`` of
    ``groups`` owns the positions where ``channel_group == i``); 1 where a group has none."""
    out = np.ones(len(channel_group))
    for i, g in enumerate(groups):
        if g.id in weights:
            w = np.asarray(weights[g.id], np.float64)
            if w.shape != (g.size,):
                raise ValueError(f"channel_weights[{g.id!r}] has {w.size} values; the group has {g.size} channels")
            out[channel_group == i] = w
    return out
