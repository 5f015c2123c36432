"""Resumable state of ChannelPruningCallback (``get_state`` / ``set_state``, see tfmot_mtl.resume).

Besides masks, history and the last step, the state holds what decides the NEXT pruning
steps: the position in the scoring ``data`` (batches drawn in the current pass), a
gradient criterion's accumulated scores and a random criterion's generator state. With the
same ``data`` a resumed run then draws and scores exactly what the uninterrupted run would.
"""
from __future__ import annotations

import json
from typing import Iterator

import numpy as np

from tfmot_mtl.masks import ChannelMasks, apply_masks_
from tfmot_mtl.resume import check_groups, check_state, jsonable

KIND = "ChannelPruningCallback"


class CountedIterator:
    """Wraps an iterator and counts the items drawn (the scoring-data position)."""

    def __init__(self, iterator: Iterator, count: int = 0):
        self.iterator, self.count = iterator, count

    def __iter__(self):
        return self

    def __next__(self):
        item = next(self.iterator)
        self.count += 1
        return item


def _selected(cb) -> list[list]:
    return [[g.id, int(g.size)] for g in cb.selected]


def _array(a: np.ndarray) -> dict:
    a = np.asarray(a)
    return {"dtype": str(a.dtype), "shape": list(a.shape), "values": a.ravel().tolist()}


def _from_array(d: dict) -> np.ndarray:
    return np.asarray(d["values"], dtype=d["dtype"]).reshape(d["shape"])


def _importance_state(imp) -> dict:
    out: dict = {}
    if isinstance(getattr(imp, "_sum", None), dict):
        out["sum"] = {gid: _array(s) for gid, s in imp._sum.items()}
        out["batches"] = int(imp.batches)
    rng = getattr(imp, "_rng", None)
    if isinstance(rng, np.random.Generator):
        out["rng"] = rng.bit_generator.state
    return out


def _set_importance_state(imp, state: dict) -> None:
    if "sum" in state and isinstance(getattr(imp, "_sum", None), dict):
        imp._sum = {gid: _from_array(s) for gid, s in state["sum"].items()}
        imp.batches = int(state["batches"])
    if "rng" in state and isinstance(getattr(imp, "_rng", None), np.random.Generator):
        imp._rng.bit_generator.state = state["rng"]


def get_state(cb) -> dict:
    """Masks, selected groups, history, last step, data position and criterion state."""
    set_up = cb.graph is not None
    masks = cb.masks
    return {"kind": KIND, "version": 1,
            "selected": _selected(cb) if set_up else None,
            "masks": None if masks is None else json.loads(ChannelMasks(masks, cb.min_channels).to_json()),
            "history": jsonable(cb.history), "last_step": int(cb._last_step),
            "data_position": int(getattr(cb._iter, "count", 0)),
            "importance": jsonable(_importance_state(cb.importance))}


def check(state) -> dict:
    return check_state(state, KIND)


def apply_state(cb, state: dict) -> None:
    """Sets the state on a set-up callback: validates and applies the masks to the model."""
    check_groups(KIND, state["selected"], _selected(cb), "groups=/protect=")
    if state["masks"] is not None:
        masks = ChannelMasks.from_json(json.dumps(state["masks"]))
        try:
            masks.validate(cb.graph)
        except ValueError as err:
            raise ValueError(f"ChannelPruningCallback state does not fit this model: {err}") from None
        cb.masks = ChannelMasks({**ChannelMasks.all_kept(cb.graph, cb.min_channels), **masks},
                                cb.min_channels)
        apply_masks_(cb.graph.model, cb.masks, cb.graph)
        cb._set_variable_masks()
    cb.history = [dict(h) for h in state["history"]]
    cb._last_step = int(state["last_step"])
    _set_importance_state(cb.importance, state.get("importance") or {})
    cb._iter = None
    position = int(state.get("data_position") or 0)
    if position and cb.data is not None and not isinstance(cb.data, tuple):
        cb._iter = cb._data_iterator()
        try:
            for _ in range(position):
                next(cb._iter)
        except StopIteration:
            raise ValueError(f"ChannelPruningCallback state: the scoring data= yields fewer than the "
                             f"{position} batches already drawn from it; pass the same data=") from None
