"""Group sparsity aimed at a cost: the MACs or parameters of the model as it will be stripped.

The proximal step kills channels by their group norm, which knows nothing about what a
channel costs, so a cost target is reached in two moves (:class:`CostTarget`):

1. before training, a ranking says which share of the selected channels the cost needs
   (:meth:`CostTarget.channel_share`); the step's ramped target aims at :data:`AIM` of it, a
   little short, because the step does not kill exactly the ranking's channels;
2. after training, :meth:`CostTarget.land` trims the lowest-ranked live channels until the
   cost is at the target, or, when the step overshot, keeps as many of the zeroed channels
   as still fit (they are stripped in at zero, and the fine-tuning trains them again).

The ranking is the one the proximal step applies when it aims at a cost
(:meth:`CostTarget.cost_weights`): a channel's L2 norm per unit of the cost it saves. L2,
not L1: with fan-in-scaled weights the L2 norm of a channel is about the same in every layer,
while its L1 norm grows with the fan-in, so an L1 ranking empties the layers with few inputs
(a stem convolution) first. Per unit of cost, so that the channels removed are the ones that
bring the cost down for the least weight, as the pruning callback ranks them
(:func:`tfmot_mtl.pruning.cost.per_cost`). With pilot weights (the adaptive group lasso of
:mod:`tfmot_mtl.sparsity.pilot`, what ``find_sparse`` uses) the norm is multiplied by the
channel's weight, as the step divides its threshold by it.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

# Share of the channels a cost needs that the proximal step aims at; the trim does the rest.
AIM = 0.85
# At most this many single channels are tried when filling up to the cost target.
MAX_FILL = 256


class CostTarget:
    """Group sparsity's side of a :class:`~tfmot_mtl.pruning.cost.CostGoal`: the ranking of the
    goal's selected channels by norm per unit of cost (``relative``: the norm over the mean of its
    group's live channels; ``exponent``: the power of the cost; ``channel_weights``: per group, a
    weight per channel that multiplies its norm), the share of channels the goal
    needs, and the landing on it after training. The goal holds the target, the cost model and
    the layer floor.
    """

    def __init__(self, goal, relative: bool = False, exponent: float = 1.0,
                 channel_weights: Mapping[str, np.ndarray] | None = None):
        self.graph, self.groups, self.kind = goal.graph, list(goal.selected), goal.kind
        self.channel_weights = dict(channel_weights or {})
        self.min_channels, self.min_fraction = goal.min_channels, goal.min_fraction
        self.relative, self.exponent = relative, float(exponent)
        self.cost, self.share, self.goal = goal.model, goal.share, goal.target

    def cost_weights(self) -> dict[str, float]:
        """Per group, the cost one of its channels saves in the dense model, over the mean of
        that over all selected channels (1 = an average channel)."""
        from tfmot_mtl.pruning.cost import channel_costs

        saved = channel_costs(self.groups, self.share, {g.id: np.ones(g.size, bool) for g in self.groups})
        total = sum(g.size for g in self.groups if g.id in saved)
        mean = sum(saved[g.id] * g.size for g in self.groups if g.id in saved) / max(1, total)
        return {gid: (value / max(mean, 1e-12)) ** self.exponent for gid, value in saved.items()}

    def ranking(self, model, masks: Mapping) -> dict[str, np.ndarray]:
        """Channel scores (higher = kept longer): L2 norm per unit of the cost saved; with
        ``relative``, the norm over the mean norm of the group's live channels; times the
        channel's weight where ``channel_weights`` has one."""
        from tfmot_mtl.pruning.cost import per_cost
        from tfmot_mtl.pruning.importance import Magnitude

        scores = Magnitude(p=2)(model, self.graph)
        if self.relative:
            for g in (g for g in self.groups if g.id in scores):
                live = np.asarray(masks[g.id], bool) & (scores[g.id] > 0)
                if live.any():
                    scores[g.id] = scores[g.id] / scores[g.id][live].mean()
        for gid, weight in self.channel_weights.items():
            if gid in scores:
                scores[gid] = scores[gid] * weight
        return per_cost(scores, self.groups, self.share, masks, self.exponent)

    def channel_share(self, model) -> float:
        """The share of the selected channels the ranking removes to reach the goal."""
        from tfmot_mtl.pruning.choose import remove_to_cost

        keep = {g.id: np.ones(g.size, bool) for g in self.groups}
        remove_to_cost(keep, self.ranking(model, keep), self.groups, self.share, self.goal, "global",
                       self.min_channels, None, self.min_fraction)
        total = sum(g.size for g in self.groups)
        return sum(int((~keep[g.id]).sum()) for g in self.groups) / max(1, total)

    def land(self, model, masks) -> tuple[Any, int]:
        """``masks`` (True = keep) brought to the goal: the lowest-ranked live channels
        trimmed, or zeroed channels kept when below it. Returns the new ChannelMasks and the
        channels removed (negative: kept back)."""
        from tfmot_mtl.masks import ChannelMasks
        from tfmot_mtl.pruning.choose import remove_to_cost

        keep = {g.id: np.asarray(masks[g.id], bool).copy() for g in self.groups}
        before = sum(int(m.sum()) for m in keep.values())

        def share(k):
            return self.share({**dict(masks), **k})

        remove_to_cost(keep, self.ranking(model, {**dict(masks), **keep}), self.groups, share, self.goal,
                       "global", self.min_channels, None, self.min_fraction)
        _restore(keep, self.groups, share, self.goal)
        after = sum(int(m.sum()) for m in keep.values())
        return ChannelMasks({**dict(masks), **keep}, masks.min_channels), before - after


def _restore(keep: dict, groups, share, goal: float) -> None:
    """Below ``goal``: keeps zeroed channels back, spread evenly over the groups, as many as fit,
    then, cheapest first, any single one that still fits (a small model's channels are coarse)."""
    if share(keep) >= goal * (1 - 1e-3):
        return
    dead = []
    for g in groups:
        idx = np.flatnonzero(~keep[g.id])
        dead += [((i + 0.5) / len(idx), g.id, int(c)) for i, c in enumerate(idx)]
    dead.sort()

    def revived(n: int) -> dict:
        out = {gid: m.copy() for gid, m in keep.items()}
        for _, gid, c in dead[:n]:
            out[gid][c] = True
        return out

    lo, hi = 0, len(dead)  # the longest prefix whose cost stays within the goal
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if share(revived(mid)) <= goal:
            lo = mid
        else:
            hi = mid - 1
    keep.update(revived(lo))
    for _ in range(MAX_FILL):  # the cost depends on each group's count: one trial per group
        fits = []
        for g in groups:
            dead_here = np.flatnonzero(~keep[g.id])
            if len(dead_here):
                trial = {**keep, g.id: _with(keep[g.id], int(dead_here[0]))}
                if share(trial) <= goal:
                    fits.append((share(trial), g.id, trial[g.id]))
        if not fits:
            return
        _, gid, mask = max(fits, key=lambda f: f[0])
        keep[gid] = mask


def _with(mask: np.ndarray, channel: int) -> np.ndarray:
    out = mask.copy()
    out[channel] = True
    return out
