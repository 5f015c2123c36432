"""The budget-aware multi-domain recipe on `multi_domain` + ResNet-26, shared by the CLI,
the example and the benchmark.

    setup = pipeline.setup(resolution=32, width=0.5, n_train=400)
    pretrain(setup.model, setup.train, epochs=4)            # switches frozen on
    cb = budget_phase(setup.model, setup.train, 0.5, "jaccard", epochs=10, finetune=3, lr=2e-3,
                      balance=True)
    result = finish(setup.model, setup, baseline_errors)    # strip, evaluate, report

`run(..., finetune_epochs=N, distill=True)` also fine-tunes the stripped model for N epochs,
distilled from a copy of the unpruned (pre-trained) model (`budget.finetune`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from tfmot_mtl.recipes.batchnorm import recalibrate_batchnorm
from tfmot_mtl.budget.build import add_domain_switches, compile_domain_model, domain_accuracy, domain_targets
from tfmot_mtl.budget.callback import BudgetCallback
from tfmot_mtl.budget.losses import check_budget, check_sharing
from tfmot_mtl.budget.report import DomainReport, domain_report, strip_domain_model
from tfmot_mtl.budget.switch import domain_masks, freeze_switches, union_masks


@dataclass
class Setup:
    """Data and a freshly built switched ResNet-26 for `multi_domain`."""

    model: keras.Model
    train: Any
    test: Any
    names: list[str]
    input_shape: tuple
    mixed: Any = None  # the training batches as loaded, `(x, {"label"})`
    validation: Any = None  # mixed batches of new training-distribution images (early stopping)


def build(resolution: int = 32, width: float = 0.5, bn_momentum: float = 0.9,
          domain_bn: bool = False) -> keras.Model:
    """mdl_resnet26 backbone + per-domain heads + one DomainSwitch per prunable group
    (+ domain-specific BatchNormalization if `domain_bn`)."""
    from tfmot_mtl.datasets import multi_domain as md
    from tfmot_mtl.models import resnet26_backbone

    backbone = resnet26_backbone((resolution, resolution, 3), width=width)
    return add_domain_switches(backbone, md.DOMAINS, bn_momentum=bn_momentum, domain_bn=domain_bn)


def setup(resolution: int = 32, width: float = 0.5, n_train: int = 400, n_test: int | None = None,
          batch_size: int = 64, seed: int = 0, n_val: int = 0, domain_bn: bool = False) -> Setup:
    """Builds the model (seeded) and the mixed-domain train / test data (counts per domain);
    ``n_val > 0`` adds that many validation images per domain (training generator, another seed)."""
    from tfmot_mtl.datasets import multi_domain as md

    names = [n for n, _ in md.DOMAINS]
    keras.utils.set_random_seed(seed)
    model = build(resolution, width, domain_bn=domain_bn)
    mixed = md.load("train", batch_size, n_train, resolution=resolution, seed=seed)
    test = md.load("test", 128, n_test or max(50, n_train // 4), resolution=resolution, shuffle=False, seed=seed)
    validation = None
    if n_val:
        validation = md.load("train", batch_size, n_val, resolution=resolution, shuffle=False, seed=seed + 7919)
    return Setup(model, domain_targets(mixed, names), test, names, (resolution, resolution, 3), mixed, validation)


def fit(model: keras.Model, data, epochs: int, lr: float, callbacks=(), switches: bool = False,
        verbose: int = 0, eager: bool = False) -> None:
    """Compiles (no XLA; no graph at all if `eager`) and fits; the switch latents train only if `switches`."""
    freeze_switches(model, frozen=not switches)
    compile_domain_model(model, keras.optimizers.Adam(lr), jit_compile=False, run_eagerly=eager)
    if epochs:
        model.fit(data, epochs=epochs, verbose=verbose, callbacks=list(callbacks))


def pretrain(model: keras.Model, data, epochs: int, lr: float = 2e-3, verbose: int = 0,
             eager: bool = False, recalibrate: bool = True) -> None:
    """Plain multi-domain training, every switch on; then (``recalibrate``) the BatchNorm
    statistics re-estimated on ``data``."""
    fit(model, data, epochs, lr, verbose=verbose, eager=eager)
    if recalibrate and epochs:
        recalibrate_batchnorm(model, data)


def budget_phase(model: keras.Model, data, budget: float, sharing: str | None, epochs: int,
                 finetune: int, lr: float = 5e-4, sharing_weight: float = 1.0, measure: str = "channels",
                 verbose: int = 0, eager: bool = False, balance: bool = False) -> BudgetCallback:
    """Trains the switches under the budget (annealed, aligned when sharing), then fine-tunes
    the weights with the switches frozen. Returns the callback (usage, multipliers, history)."""
    callback = BudgetCallback(budget, sharing=check_sharing(sharing), sharing_weight=sharing_weight,
                              measure=measure, anneal=True, balance=balance)
    fit(model, data, max(1, epochs), lr, [callback], switches=True, verbose=verbose, eager=eager)
    fit(model, data, finetune, lr, verbose=verbose, eager=eager)
    return callback


def finish(model: keras.Model, s: Setup, baseline_errors: dict | None = None, recover=None,
           recalibrate: bool = True) -> dict:
    """Strips with the union mask, evaluates the stripped model per domain, builds the report.

    With ``recalibrate`` the (domain-specific) BatchNorm statistics are first re-estimated on
    the training batches (`batchnorm.recalibrate_batchnorm`): the moving averages otherwise
    describe the weights of the last few batches before the switches froze.

    ``recover(small)``, if given, runs between stripping and the evaluation (a fine-tuning);
    the accuracy before it is then in "stripped_accuracy" and its return value in "finetune".
    """
    if recalibrate:
        recalibrate_batchnorm(model, s.train)
    small, strip_report = strip_domain_model(model)
    extra = {}
    if recover is not None:
        extra["stripped_accuracy"] = domain_accuracy(small, s.test, s.names)
        extra["finetune"] = recover(small)
    accuracy = domain_accuracy(small, s.test, s.names)
    report = domain_report(model, small, accuracy, baseline_errors, input_shape=s.input_shape)
    return {"model": small, "strip": strip_report, "accuracy": accuracy, "report": report,
            "union": union_masks(model), "domains": domain_masks(model), **extra}


def summary_row(report: DomainReport) -> dict:
    """Totals of a report compared with ONE single-domain baseline."""
    b, t = report.baseline, report.totals
    return {"params": t["params"], "max_macs_as_run": t["max_domain_macs"],
            "params_vs_one": t["params"] / b["one_params"], "macs_vs_one": t["max_domain_macs"] / b["one_macs"],
            "mean_accuracy": t.get("mean_accuracy"), "decathlon": t.get("decathlon")}


def accuracy_table(columns: dict[str, dict[str, float]]) -> str:
    """Per-domain accuracies side by side: ``{column: {domain: accuracy}}`` -> text table (%)."""
    names = list(next(iter(columns.values())))
    width = max(8, *(len(c) for c in columns))
    lines = ["domain".ljust(10) + "".join(c.rjust(width + 2) for c in columns)]
    for d in [*names, "mean"]:
        values = [np.mean(list(col.values())) if d == "mean" else col[d] for col in columns.values()]
        lines.append(d.ljust(10) + "".join(f"{100 * v:.1f}%".rjust(width + 2) for v in values))
    return "\n".join(lines)


def run(budget: float = 0.5, sharing: str | None = "jaccard", resolution: int = 32, width: float = 0.5,
        n_train: int = 400, epochs: int = 4, budget_epochs: int = 10, finetune: int = 3, lr: float = 2e-3,
        sharing_weight: float = 1.0, measure: str = "channels", seed: int = 0, verbose: int = 0,
        eager: bool | None = None, finetune_epochs: int = 0, distill: bool = False,
        patience: int | None = None, temperature: float = 2.0, student_loss_weight: float = 0.5,
        domain_bn: bool = False, phase_lr: float | None = None, balance: bool = True) -> dict:
    """The whole recipe for one budget: pretrain, budget phase + fine-tune, strip, evaluate.

    The default spends most epochs training the switches (pruning while training) at the
    pretraining rate (``phase_lr``, default ``lr``), with the layer-balanced projection
    (``balance``, `BudgetCallback`); BatchNorm statistics are re-estimated after pretraining
    and before stripping.

    `eager` (default: when there are at most 2 batches per epoch) skips graph tracing, which
    costs more than a tiny run. `finetune_epochs > 0` fine-tunes the stripped model (at
    ``lr / 4``, cosine decay), distilled from a copy of the pre-trained, unpruned model if
    `distill` (`budget.finetune`); with `patience` it stops early on a validation split of
    ``max(32, n_train // 10)`` images per domain. `domain_bn` gives each domain its own
    BatchNormalization statistics and affine parameters (`budget.domain_bn`).

    Returns `finish`'s dict plus "unpruned_accuracy" (after pretraining), "usage" and "callback".
    """
    from tfmot_mtl.budget.finetune import finetune_stripped
    from tfmot_mtl.masks import clone_with_weights

    check_budget(budget)
    sharing = check_sharing(sharing)
    if isinstance(finetune_epochs, bool) or not isinstance(finetune_epochs, int) or finetune_epochs < 0:
        raise ValueError(f"`finetune_epochs` must be an integer >= 0, got {finetune_epochs!r}.")
    s = setup(resolution, width, n_train, seed=seed,
              n_val=max(32, n_train // 10) if patience is not None and finetune_epochs else 0, domain_bn=domain_bn)
    if eager is None:
        eager = n_train * len(s.names) <= 128
    pretrain(s.model, s.train, epochs, lr, verbose=verbose, eager=eager)
    acc0 = domain_accuracy(s.model, s.test, s.names)
    teacher = clone_with_weights(s.model) if distill and finetune_epochs else None
    phase_lr = lr if phase_lr is None else phase_lr
    callback = budget_phase(s.model, s.train, budget, sharing, budget_epochs, finetune, phase_lr,
                            sharing_weight, measure, verbose, eager, balance=balance)

    def recover(small):
        history = finetune_stripped(small, s.mixed, finetune_epochs, s.names, teacher=teacher, lr=lr / 4,
                                    temperature=temperature, student_loss_weight=student_loss_weight,
                                    validation=s.validation, patience=patience, verbose=verbose, eager=eager)
        hist = {k: [float(v) for v in vals] for k, vals in history.history.items()}
        return {"epochs": finetune_epochs, "epochs_run": len(hist.get("loss", [])),
                "distilled": teacher is not None, "patience": patience, "history": hist}

    out = finish(s.model, s, {d: 1 - a for d, a in acc0.items()}, recover if finetune_epochs else None)
    out.update(unpruned_accuracy=acc0, usage=callback.usage().tolist(), callback=callback, setup=s)
    out["summary"] = summary_row(out["report"])
    out["summary"]["unpruned_mean_accuracy"] = float(np.mean(list(acc0.values())))
    return out
