"""Resumable state of ProximalGroupLasso (``get_state`` / ``set_state``, see tfmot_mtl.resume)."""
from __future__ import annotations

import numpy as np

from tfmot_mtl.resume import check_groups, check_state

KIND = "ProximalGroupLasso"


def _groups(cb) -> list[list]:
    return [[g.id, int(g.size)] for g in cb.groups]


def _bools(value) -> list[bool] | None:
    return None if value is None else [bool(v) for v in value]


def get_state(cb) -> dict:
    """Gain, locked and zero patterns (per selected channel), last proximal step, groups."""
    built = cb._plan_model is not None
    return {"kind": KIND, "version": 1, "groups": _groups(cb) if built else None,
            "gain": float(cb.gain), "locked": _bools(cb.locked), "zero": _bools(cb._zero),
            "last_step": None if cb._last_step is None else int(cb._last_step)}


def check(state) -> dict:
    return check_state(state, KIND)


def apply_state(cb, state: dict) -> None:
    """Sets the state on a built callback; the channel groups must match its plan."""
    check_groups(KIND, state["groups"], _groups(cb), "the layers= selection")
    for key in ("locked", "zero"):
        if state[key] is not None and len(state[key]) != cb.num_channels:
            raise ValueError(f"ProximalGroupLasso state '{key}' has {len(state[key])} entries; the "
                             f"selected channels number {cb.num_channels}")
    cb.gain = float(state["gain"])
    cb.locked = None if state["locked"] is None else np.asarray(state["locked"], bool)
    cb._zero = None if state["zero"] is None else np.asarray(state["zero"], bool)
    cb._last_step = None if state["last_step"] is None else int(state["last_step"])
