"""Argument checks and warnings of ChannelPruningCallback (group selection: tfmot_mtl.selection)."""
from __future__ import annotations

import warnings

import numpy as np

from tfmot_mtl.selection import check_selection


def check_arguments(importance, groups, accumulate_every):
    """Clear errors for a criterion class (not instance), a bad group selection or a bad interval;
    returns ``groups`` (a list of names as a list)."""
    if isinstance(importance, type) or not callable(importance) or not all(
            hasattr(importance, a) for a in ("accumulate", "reset")):
        raise ValueError("importance must be a criterion instance from tfmot_mtl.pruning, e.g. "
                         f"Magnitude(), BNScale(), Taylor() or CosPrune(); got {importance!r}")
    groups = check_selection(groups, "groups")
    if accumulate_every is not None and (isinstance(accumulate_every, bool) or not isinstance(
            accumulate_every, (int, np.integer)) or accumulate_every < 1):
        raise ValueError(f"accumulate_every must be None or a positive number of training steps, "
                         f"got {accumulate_every!r}")
    return groups


def warn_if_unscored(scores: dict, selected: list, importance) -> None:
    """Warns when the criterion scored none of the selected channels (so nothing can be pruned)."""
    if selected and not any(np.isfinite(np.asarray(scores.get(g.id, []), np.float64)).any() for g in selected):
        warnings.warn(f"{type(importance).__name__} gave no finite score to any selected channel, so nothing "
                      "is pruned (CosPrune scores only groups feeding two or more tasks, which a model "
                      "without shared layers lacks; BNScale(fallback='nan') only groups with "
                      "BatchNormalization): use Magnitude() or Taylor() here", stacklevel=3)
