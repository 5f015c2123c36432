"""Argument checks and selection warnings of ChannelPruningCallback."""
from __future__ import annotations

import warnings

import numpy as np

from tfmot_mtl.graph import ChannelGraph


def check_arguments(importance, groups, accumulate_every) -> None:
    """Clear errors for a criterion class (not instance), an unknown group spec or a bad interval."""
    if isinstance(importance, type) or not callable(importance) or not all(
            hasattr(importance, a) for a in ("accumulate", "reset")):
        raise ValueError("importance must be a criterion instance from tfmot_mtl.pruning, e.g. "
                         f"Magnitude(), BNScale(), Taylor() or CosPrune(); got {importance!r}")
    if isinstance(groups, str) and groups not in ("all", "shared"):
        raise ValueError(f"groups must be 'all', 'shared', a callable ChannelGroup -> bool or a list of "
                         f"group ids, got {groups!r}")
    if accumulate_every is not None and (isinstance(accumulate_every, bool) or not isinstance(
            accumulate_every, (int, np.integer)) or accumulate_every < 1):
        raise ValueError(f"accumulate_every must be None or a positive number of training steps, "
                         f"got {accumulate_every!r}")


def warn_if_empty(selected: list, spec, graph: ChannelGraph) -> list:
    """Warns when the selection is empty (e.g. groups='shared' on a model without shared layers)."""
    if not selected:
        hint = (f"model '{graph.model.name}' has no prunable channel group shared by more than one "
                "task; pass groups='all' to prune task-specific layers" if spec == "shared" else
                "check ChannelGraph.from_model(model).summary() for frozen groups and their reasons")
        warnings.warn(f"ChannelPruningCallback selected no channel group and will prune nothing: {hint}",
                      stacklevel=4)
    return selected


def warn_if_unscored(scores: dict, selected: list, importance) -> None:
    """Warns when the criterion scored none of the selected channels (so nothing can be pruned)."""
    if selected and not any(np.isfinite(np.asarray(scores.get(g.id, []), np.float64)).any() for g in selected):
        warnings.warn(f"{type(importance).__name__} gave no finite score to any selected channel, so nothing "
                      "is pruned (CosPrune scores only groups feeding two or more tasks, which a model "
                      "without shared layers lacks; BNScale(fallback='nan') only groups with "
                      "BatchNormalization): use Magnitude() or Taylor() here", stacklevel=3)
