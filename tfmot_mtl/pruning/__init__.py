"""Structured filter pruning for multi-task networks (Garg, Zhang, Guan 2023): importance-based
iterative channel pruning.

Criteria (:mod:`.importance`) score channel groups, schedules (:mod:`.schedules`) say when
and how far to prune, :class:`ChannelPruningCallback` prunes during ``fit`` and exposes
``masks`` for :func:`tfmot_mtl.strip.strip_channels`; :func:`reinitialize` rebuilds a
stripped architecture with fresh weights for training from scratch.
"""
from tfmot_mtl.pruning.callback import ChannelPruningCallback
from tfmot_mtl.pruning.gradient_criteria import CosPrune, SecondOrder, Taylor, resolve_losses
from tfmot_mtl.pruning.importance import FPGM, LAMP, BNScale, Importance, Magnitude, Random
from tfmot_mtl.pruning.reinit import reinitialize
from tfmot_mtl.pruning.run import prune_model, retrain_from_scratch
from tfmot_mtl.pruning.schedules import IterativeSchedule, evaluate_schedule

__all__ = ["ChannelPruningCallback", "Importance", "Magnitude", "BNScale", "LAMP", "FPGM", "Taylor", "SecondOrder", "CosPrune",
           "Random", "IterativeSchedule", "evaluate_schedule", "reinitialize", "resolve_losses", "prune_model",
           "retrain_from_scratch"]
