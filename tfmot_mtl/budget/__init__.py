"""Seed 3: budget-aware pruning for multi-domain learning (dos Santos et al., 2023/2025).

    mdl = budget.add_domain_switches(backbone, domains=[("a", 10), ("b", 5)])
    budget.compile_domain_model(mdl)
    mdl.fit(budget.domain_targets(ds, ["a", "b"]), callbacks=[budget.BudgetCallback(0.5, sharing="jaccard")])
    small, report = budget.strip_domain_model(mdl)   # union mask + stock-layer gates, serves every domain

`budget.pipeline` runs the whole recipe on `multi_domain` + ResNet-26 (`tfmot-mtl budget`).
"""
from tfmot_mtl.budget.build import (add_domain_switches, compile_domain_model, domain_accuracy,
                                    domain_targets, predict_own_domain)
from tfmot_mtl.budget.callback import BudgetCallback
from tfmot_mtl.budget.losses import (budget_grads, budget_penalty, project_to_budget, shared_scores,
                                     sharing_grads, sharing_loss, usage)
from tfmot_mtl.budget.report import (DomainReport, baseline_costs, decathlon_score, domain_costs,
                                     domain_report, gates_to_stock, strip_domain_model)
from tfmot_mtl.budget.switch import (DomainSwitch, DomainSwitchRule, binarize_ste, domain_masks, freeze_switches,
                                     switch_infos, switch_layers, union_masks)

__all__ = [
    "DomainSwitch", "DomainSwitchRule", "binarize_ste", "add_domain_switches", "compile_domain_model",
    "domain_targets", "domain_accuracy", "predict_own_domain", "BudgetCallback", "usage",
    "budget_penalty", "budget_grads", "sharing_loss", "sharing_grads", "project_to_budget", "shared_scores",
    "domain_masks", "union_masks", "switch_infos", "switch_layers", "freeze_switches", "strip_domain_model", "gates_to_stock",
    "domain_costs", "baseline_costs", "decathlon_score", "domain_report", "DomainReport",
]
