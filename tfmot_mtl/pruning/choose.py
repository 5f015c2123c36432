"""Which channels a pruning step removes: the lowest-scored ones still kept, over all the
selected groups together (``scope="global"``) or group by group (``scope="layer"``), down
to a share of the channels (:func:`remove_lowest`) or to a cost in MACs or parameters
counted on the model as it will be stripped (:func:`remove_to_cost`).

Pure functions on ``{group id: bool keep mask}``; the callback scores the channels, calls
them and rounds the result (:func:`tfmot_mtl.masks.round_masks`). No group goes below the
layer floor (:func:`tfmot_mtl.selection.layer_floor`).
"""
from __future__ import annotations

import math
from typing import Callable, Iterable, Mapping

import numpy as np

from tfmot_mtl.graph import ChannelGroup
from tfmot_mtl.selection import MIN_CHANNELS, MIN_FRACTION, layer_floor

SCOPES = ("global", "layer")
COSTS = ("macs", "params")
LAND = 0.01  # relative band under a cost goal that counts as landed


def min_keep(size: int, min_channels: int = MIN_CHANNELS, round_to: int | None = None,
             min_fraction: float = MIN_FRACTION) -> int:
    """The fewest channels a group of ``size`` may keep: the layer floor, rounded up to a
    multiple of ``round_to`` when rounding (never more than the group)."""
    need = layer_floor(size, min_channels, min_fraction)
    if round_to:
        need = min(size, int(math.ceil(need / round_to)) * round_to)
    return need


def remove_lowest(keep: dict[str, np.ndarray], scores: Mapping[str, np.ndarray],
                  groups: Iterable[ChannelGroup], sparsity: float, scope: str, min_channels: int,
                  round_to: int | None = None, min_fraction: float = 0.0) -> None:
    """Turns off (in ``keep``) the lowest-scored kept channels until ``sparsity`` of the
    ``groups``' channels are removed: of all groups ranked together (``"global"``, scores
    not normalised, as in Garg et al. 2023) or of each group on its own (``"layer"``).
    Channels without a finite score are never chosen; no group goes below :func:`min_keep`."""
    groups = list(groups)
    if scope == "global":
        _remove_global(keep, scores, groups, sparsity, min_channels, round_to, min_fraction)
    elif scope == "layer":
        for g in groups:
            _remove_in_group(keep, scores, g, int(math.floor(sparsity * g.size + 1e-9)),
                             min_keep(g.size, min_channels, round_to, min_fraction))
    else:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")


def remove_to_cost(keep: dict[str, np.ndarray], scores: Mapping[str, np.ndarray],
                   groups: Iterable[ChannelGroup], cost: Callable[[Mapping], float], goal: float,
                   scope: str, min_channels: int, round_to: int | None = None,
                   min_fraction: float = 0.0) -> bool:
    """Removes the fewest lowest-scored channels (as :func:`remove_lowest` ranks them) that
    bring ``cost(keep)`` to ``goal`` or below; ``cost`` is monotone in the kept channels (e.g.
    the MAC share of :class:`tfmot_mtl.profile.MaskedCost`). Returns False when even every
    group at its floor stays above ``goal`` (then every group is left at its floor)."""
    groups = list(groups)
    if cost(keep) <= goal:
        return True
    total = sum(g.size for g in groups)

    def trial(sparsity: float) -> dict[str, np.ndarray]:
        out = {gid: m.copy() for gid, m in keep.items()}
        remove_lowest(out, scores, groups, sparsity, scope, min_channels, round_to, min_fraction)
        return out

    lo, hi = sum(int((~keep[g.id]).sum()) for g in groups), total  # removed channel counts
    best = trial(1.0)
    if cost(best) > goal:
        keep.update(best)
        return False
    while hi - lo > 1:  # smallest removed count whose cost is within the goal
        mid = (lo + hi) // 2
        candidate = trial(mid / total)
        if cost(candidate) <= goal:
            hi, best = mid, candidate
        else:
            lo = mid
    landed = _land(trial(lo / total), scores, groups, cost, goal, min_channels, round_to, min_fraction)
    if landed is not None and cost(best) < cost(landed) <= goal:
        best = landed
    keep.update(best)
    return True


def _land(keep, scores, groups, cost, goal, min_channels, round_to, min_fraction):
    """From a state just above ``goal``, removes single channels, each time from the group whose
    next channel brings the cost within :data:`LAND` below ``goal`` (closest first), else from the
    group whose channel costs least (smallest step, staying above), its lowest-scored channel first. The cost depends only on each group's kept
    count, so one evaluation per group ranks them. None when no channel can go."""
    keep = {gid: m.copy() for gid, m in keep.items()}
    for _ in range(sum(g.size for g in groups)):
        now = cost(keep)
        if now <= goal:
            return keep
        options = []
        for g in groups:
            live = _candidates(keep, scores, g)
            if int(keep[g.id].sum()) > min_keep(g.size, min_channels, round_to, min_fraction) and live:
                c = min(live)[1]
                trial = {**keep, g.id: keep[g.id].copy()}
                trial[g.id][c] = False
                options.append((cost(trial), g.id, c))
        if not options:
            return None
        close = [o for o in options if goal * (1 - LAND) <= o[0] <= goal]
        above = [o for o in options if o[0] > goal]
        under = [o for o in options if o[0] <= goal]
        _, gid, c = max(close or above or under)  # land, else take the smallest step
        keep[gid][c] = False
    return keep if cost(keep) <= goal else None


def _candidates(keep, scores, g: ChannelGroup) -> list[tuple[float, int]]:
    s = np.asarray(scores.get(g.id, np.full(g.size, np.nan)), dtype=np.float64)
    return [(float(s[c]), c) for c in np.flatnonzero(keep[g.id]) if np.isfinite(s[c])]


def _remove_global(keep, scores, groups, sparsity, min_channels, round_to, min_fraction=0.0) -> None:
    total = sum(g.size for g in groups)
    need = int(math.floor(sparsity * total + 1e-9)) - sum(int((~keep[g.id]).sum()) for g in groups)
    if need <= 0:
        return
    capacity = {g.id: int(keep[g.id].sum()) - min_keep(g.size, min_channels, round_to, min_fraction)
                for g in groups}
    pool = [(s, i, g.id, c) for i, g in enumerate(groups) for s, c in _candidates(keep, scores, g)]
    for _, _, gid, c in sorted(pool):
        if need <= 0:
            break
        if capacity[gid] > 0:
            keep[gid][c] = False
            capacity[gid] -= 1
            need -= 1


def _remove_in_group(keep, scores, g: ChannelGroup, target_removed: int, floor: int) -> None:
    need = target_removed - int((~keep[g.id]).sum())
    capacity = int(keep[g.id].sum()) - floor
    for _, c in sorted(_candidates(keep, scores, g))[:max(0, min(need, capacity))]:
        keep[g.id][c] = False
