"""Which channels a pruning step removes: the lowest-scored ones still kept, over all the
selected groups together (``scope="global"``) or group by group (``scope="layer"``).

Pure functions on ``{group id: bool keep mask}``; the callback scores the channels, calls
:func:`remove_lowest` and rounds the result (:func:`tfmot_mtl.strip.round_masks`).
"""
from __future__ import annotations

import math
from typing import Iterable, Mapping

import numpy as np

from tfmot_mtl.graph import ChannelGroup

SCOPES = ("global", "layer")


def min_keep(size: int, min_channels: int, round_to: int | None) -> int:
    """The fewest channels a group of ``size`` may keep: ``min_channels``, rounded up to a
    multiple of ``round_to`` when rounding (never more than the group)."""
    need = min(size, min_channels)
    if round_to:
        need = min(size, int(math.ceil(need / round_to)) * round_to)
    return need


def remove_lowest(keep: dict[str, np.ndarray], scores: Mapping[str, np.ndarray],
                  groups: Iterable[ChannelGroup], sparsity: float, scope: str, min_channels: int,
                  round_to: int | None = None) -> None:
    """Turns off (in ``keep``) the lowest-scored kept channels until ``sparsity`` of the
    ``groups``' channels are removed: of all groups ranked together (``"global"``, scores
    not normalised, as in Garg et al. 2023) or of each group on its own (``"layer"``).
    Channels without a finite score are never chosen; no group goes below :func:`min_keep`."""
    groups = list(groups)
    if scope == "global":
        _remove_global(keep, scores, groups, sparsity, min_channels, round_to)
    elif scope == "layer":
        for g in groups:
            _remove_in_group(keep, scores, g, int(math.floor(sparsity * g.size + 1e-9)),
                             min_keep(g.size, min_channels, round_to))
    else:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")


def _candidates(keep, scores, g: ChannelGroup) -> list[tuple[float, int]]:
    s = np.asarray(scores.get(g.id, np.full(g.size, np.nan)), dtype=np.float64)
    return [(float(s[c]), c) for c in np.flatnonzero(keep[g.id]) if np.isfinite(s[c])]


def _remove_global(keep, scores, groups, sparsity, min_channels, round_to) -> None:
    total = sum(g.size for g in groups)
    need = int(math.floor(sparsity * total + 1e-9)) - sum(int((~keep[g.id]).sum()) for g in groups)
    if need <= 0:
        return
    capacity = {g.id: int(keep[g.id].sum()) - min_keep(g.size, min_channels, round_to) for g in groups}
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
