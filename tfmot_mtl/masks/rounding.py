"""Rounding masks for the hardware, and keeping every layer buildable.

Kept channel counts rounded to a multiple of the SIMD width (:func:`round_masks`, the one
rounding routine of the package: the surgeon and the pruning callback use it), the one check of
every ``round_to`` argument (:func:`check_round_to`), the rounding modes (:data:`ROUND_MODES`),
and the one zeroed channel a layer keeps when masks would empty it (:func:`keep_nonempty`).
"""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from tfmot_mtl.utils import _keras_compat
from tfmot_mtl.graph import ChannelGraph
from tfmot_mtl.masks.core import ChannelMasks
from tfmot_mtl.masks.weights import channel_norms, read_weights


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


# The surgeon's modes; "up" (its default) may bring back channels a pruning step just removed,
# so pruning rounds with the others (PRUNING_ROUND_MODES).
ROUND_MODES = ("up", "nearest", "total")
PRUNING_ROUND_MODES = tuple(m for m in ROUND_MODES if m != "up")


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
