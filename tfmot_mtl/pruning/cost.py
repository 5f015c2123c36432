"""Pruning to a cost: MACs or parameters of the model as it will be stripped.

:class:`CostGoal` turns a ``target_macs`` / ``target_params`` into the cost share each pruning
event prunes to (the schedule's sparsity read as progress) and refuses, before training, a
target that the selected groups cannot reach with every group at its layer floor.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from tfmot_mtl.pruning.choose import min_keep


def check_cost_target(target_macs: Any, target_params: Any) -> tuple[str | None, float | None]:
    """``(kind, value)`` of the one cost target given, ``(None, None)`` for none."""
    given = [(k, v) for k, v in (("macs", target_macs), ("params", target_params)) if v is not None]
    if len(given) > 1:
        raise ValueError("give one of target_macs and target_params, not both")
    if not given:
        return None, None
    kind, value = given[0]
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or value <= 0:
        raise ValueError(f"target_{kind} must be a fraction of the dense model's {kind} in (0, 1] or an "
                         f"absolute count > 1, got {value!r}")
    return kind, float(value)


def channel_costs(groups: Sequence, share, masks: Mapping) -> dict[str, float]:
    """Per group, the cost share that removing one more of its live channels saves now
    (``share(masks) -> float`` prices a ``{group_id: keep}`` dict, e.g. ``CostGoal.share``)."""
    base = share(dict(masks))
    out = {}
    for g in groups:
        live = np.flatnonzero(masks[g.id])
        if not len(live):
            continue
        trial = np.asarray(masks[g.id], bool).copy()
        trial[live[0]] = False
        out[g.id] = max(base - share({**dict(masks), g.id: trial}), 1e-12)
    return out


def per_cost(scores: Mapping, groups: Sequence, share, masks: Mapping, exponent: float = 1.0) -> dict:
    """Scores per unit of cost: each group's scores divided by the cost share one of its
    channels saves (:func:`channel_costs`) to the power ``exponent``, so a cost target is met by
    removing the least importance per MAC (or parameter), not the least importance; within a
    group the order is unchanged."""
    out = dict(scores)
    for gid, saved in channel_costs([g for g in groups if g.id in scores], share, masks).items():
        out[gid] = np.asarray(scores[gid], np.float64) / saved ** exponent
    return out


def uniform_keep(cost, groups: Sequence, kind: str, target: float, min_channels: int,
                 round_to: int | None = None) -> float | None:
    """The share of channels that, kept alike in every one of ``groups`` (each at least
    ``min_channels``, rounded up to ``round_to``), brings the cost (a
    :class:`~tfmot_mtl.profile.MaskedCost`) down to ``target`` (a share of the dense cost); None
    where even ``min_channels`` per group costs more."""
    def share(fraction: float) -> float:
        params, macs = cost.share(at_floor(groups, min_channels, round_to, fraction))
        return macs if kind == "macs" else params

    if share(0.0) > target + 1e-9:
        return None
    low, high = 0.0, 1.0  # share(low) <= target; the cost grows with the kept share
    for _ in range(20):
        middle = (low + high) / 2
        if share(middle) <= target + 1e-9:
            low = middle
        else:
            high = middle
    return low


def cost_floor(cost, groups: Sequence, kind: str, target: float, min_channels: int,
               round_to: int | None = None) -> float:
    """The default layer floor's share under a cost target: :data:`~tfmot_mtl.selection.COST_FLOOR_SHARE`
    of :func:`uniform_keep`, so the ranking can move the cut between layers but not pile it on the
    layers it finds cheapest, at any target (0 where the target is below ``min_channels``' cost: the
    goal then reports the reachable range)."""
    from tfmot_mtl.selection import COST_FLOOR_SHARE

    uniform = uniform_keep(cost, groups, kind, target, min_channels, round_to)
    return 0.0 if uniform is None else round(COST_FLOOR_SHARE * uniform, 4)


class CostGoal:
    """A cost target over the ``selected`` groups of ``graph``, as a share of the dense cost.

    ``min_fraction=None`` sets the layer floor from the target (:func:`cost_floor`); the floor in
    use is ``goal.min_fraction``.

    Raises:
        ValueError: the target is below what the selected groups reach at their floor (the
            message gives the reachable range and, when other groups hold more of the MACs,
            suggests ``groups='all'``).
    """

    def __init__(self, graph, selected: Sequence, kind: str, value: float, min_channels: int,
                 min_fraction: float | None, round_to: int | None = None, group_spec: Any = None):
        from tfmot_mtl.profile import MaskedCost

        self.kind, self.value = kind, float(value)
        self.graph, self.selected, self.min_channels = graph, list(selected), int(min_channels)
        self.model = MaskedCost(graph)
        dense = self.model.dense_macs if kind == "macs" else self.model.dense_params
        self.target = self.value if self.value <= 1.0 else self.value / max(1, dense)
        if min_fraction is None:
            min_fraction = cost_floor(self.model, selected, kind, self.target, min_channels, round_to)
        self.min_fraction = float(min_fraction)  # the floor's share, set from the target where not given
        lowest = self.share(at_floor(selected, min_channels, round_to, min_fraction))
        if self.target < lowest - 1e-9:
            raise ValueError(
                f"target_{kind}={self.value:g} cannot be reached: with groups={_short(group_spec)} and the layer "
                f"floor (min_channels={min_channels}, min_fraction={min_fraction:g}) the pruned model keeps at "
                f"least {lowest:.3f} of the dense {kind} (reachable: {lowest:.3f} to 1.0)"
                f"{_hint(graph, selected, self.model, min_fraction)}")

    def share(self, masks: Mapping) -> float:
        """The cost of ``masks`` as a share of the dense model's."""
        params, macs = self.model.share(masks)
        return macs if self.kind == "macs" else params

    def goal(self, sparsity: float, schedule: Any) -> float:
        """The share to prune to at a scheduled ``sparsity``: ``1 - (s / S) * (1 - target)``
        for a schedule ending at ``S``, so its last event lands the target."""
        final = _final_sparsity(schedule)
        progress = 1.0 if not final else min(1.0, max(0.0, float(sparsity) / final))
        return 1.0 - progress * (1.0 - self.target)


def at_floor(groups: Sequence, min_channels: int, round_to: int | None, min_fraction: float) -> dict:
    """Masks that keep every one of ``groups`` at its layer floor (its first channels)."""
    return {g.id: _first(g.size, min_keep(g.size, min_channels, round_to, min_fraction)) for g in groups}


def _first(size: int, keep: int) -> np.ndarray:
    mask = np.zeros(size, bool)
    mask[:keep] = True
    return mask


def _final_sparsity(schedule) -> float | None:
    """The sparsity a schedule ends at (IterativeSchedule.target, tfmot's final / target sparsity)."""
    for attr in ("target", "final_sparsity", "target_sparsity"):
        value = getattr(schedule, attr, None)
        if isinstance(value, (int, float)) and value > 0:
            return float(value)
    return None


def _short(spec) -> str:
    return repr(spec) if isinstance(spec, str) or spec is None else type(spec).__name__


def _hint(graph, selected, cost, min_fraction: float) -> str:
    """Which share of the MACs the selected groups touch, and what to widen or lower."""
    touched = 1.0 - cost.share({g.id: _first(g.size, 0) for g in selected})[1]
    possible = 1.0 - cost.share({g.id: _first(g.size, 0) for g in graph.prunable_groups})[1]
    if possible > touched + 0.05:
        return (f"; the selected groups hold only {100 * touched:.0f}% of the MACs, every prunable group "
                f"{100 * possible:.0f}%: use groups='all'")
    return "; lower min_channels / min_fraction, or aim higher" if min_fraction > 0 else \
        "; lower min_channels, or aim higher"
