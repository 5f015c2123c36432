"""Structured group sparsity for multi-task models (Less is More, Upadhyay et al. 2024).

``apply_group_sparsity`` attaches a channel-wise group-lasso regularizer to the kernels of
the shared layers; ``ProximalGroupLasso`` applies the proximal step after each optimizer
update, driving whole channels to exact zeros; ``sparsity_report`` measures the result;
``tfmot_mtl.strip_channels`` then removes the dead channels.
"""
from tfmot_mtl.sparsity.pilot import pilot_weights
from tfmot_mtl.sparsity.prox_ops import prox_adam, prox_plain, solve_theta
from tfmot_mtl.sparsity.proximal import ProximalGroupLasso
from tfmot_mtl.sparsity.regularizer import (ChannelGroupLasso, apply_group_sparsity, regularized_layers,
                                            remove_group_sparsity)
from tfmot_mtl.sparsity.report import format_sparsity_report, plot_sparsity, sparsity_report
from tfmot_mtl.sparsity.strength import evaluate_strength
from tfmot_mtl.selection import select_groups

__all__ = [
    "ChannelGroupLasso", "apply_group_sparsity", "regularized_layers", "remove_group_sparsity", "ProximalGroupLasso",
    "pilot_weights",
    "evaluate_strength", "prox_plain", "prox_adam", "solve_theta", "sparsity_report",
    "format_sparsity_report", "plot_sparsity", "select_groups",
]
