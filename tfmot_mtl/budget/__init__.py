"""Budget-aware pruning for multi-domain learning (dos Santos et al., 2023/2025).

    mdl = budget.add_domain_switches(backbone, domains=[("a", 10), ("b", 5)])
    budget.compile_domain_model(mdl)
    mdl.fit(budget.domain_targets(ds, ["a", "b"]), callbacks=[budget.BudgetCallback(0.5, sharing="jaccard")])
    small, report = budget.strip_domain_model(mdl)   # union mask + stock-layer gates, serves every domain

`budget.pipeline.run` runs the whole recipe on `multi_domain` + ResNet-26 (`tfmot-mtl budget`);
`finetune_stripped` recovers a stripped model (optionally distilled from its dense parent).

This namespace is the user API. The budget and parameter-sharing terms and their gradients
(`losses`: `usage`, `budget_penalty`, `sharing_loss`, `project_to_budget`, ...), the
straight-through estimator (`switch.binarize_ste`), the graph rule of `DomainSwitch`
(`switch.DomainSwitchRule`) and `switch.switch_infos` stay importable from their modules.
"""
from tfmot_mtl.budget import pipeline
from tfmot_mtl.budget.build import (add_domain_switches, compile_domain_model, domain_accuracy,
                                    domain_targets, predict_own_domain)
from tfmot_mtl.budget.callback import BudgetCallback
from tfmot_mtl.budget.domain_bn import DomainBatchNorm
from tfmot_mtl.budget.finetune import finetune_stripped
from tfmot_mtl.budget.report import (DomainReport, baseline_costs, decathlon_score, domain_costs,
                                     domain_report, gates_to_stock, strip_domain_model)
from tfmot_mtl.budget.switch import DomainSwitch, domain_masks, freeze_switches, switch_layers, union_masks

__all__ = [
    # build and train
    "add_domain_switches", "compile_domain_model", "domain_targets", "BudgetCallback", "DomainSwitch",
    "switch_layers", "freeze_switches", "DomainBatchNorm",
    # masks, stripping, fine-tuning
    "domain_masks", "union_masks", "strip_domain_model", "gates_to_stock", "finetune_stripped",
    # evaluation and reports
    "domain_accuracy", "predict_own_domain", "domain_report", "DomainReport", "domain_costs",
    "baseline_costs", "decathlon_score",
    # the whole recipe
    "pipeline",
]
