"""Compress-and-recover recipes: dense -> find channels -> strip -> fine-tune from the parent.

:func:`finetune` trains a (stripped) model for a number of epochs with a cosine-decay
learning rate, either on labels with a task weighting or distilled from its dense parent
(:class:`~tfmot_mtl.distill.MultiTaskDistiller`), with optional early stopping on a
validation set. :func:`find_channels` runs one of the methods that make channel masks
(group sparsity with the proximal step, or iterative importance pruning) starting from
the trained dense weights. :func:`compress` chains both around ``strip_channels``, and
:func:`run` is the whole experiment with its fair baseline: the dense parent, the
compressed model, and a dense model trained for the same total number of epochs as the
compressed one has seen (dense + find + fine-tune), side by side.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping, Sequence

import keras

from tfmot_mtl import experiment as ex
from tfmot_mtl.batchnorm import recalibrate_batchnorm  # noqa: F401  (part of the recipes API)

METHODS = ("sparsity", "prune")


@dataclass(frozen=True)
class Budget:
    """Training epochs of each phase; ``total`` is what the same-budget dense model gets."""

    dense: int
    find: int
    finetune: int

    @property
    def total(self) -> int:
        return self.dense + self.find + self.finetune

    def to_dict(self) -> dict:
        return {**asdict(self), "total": self.total}


# Runs with at most this many batches per epoch skip graph tracing (run_eagerly): tracing
# costs more than a tiny run (smoke tests, --fast settings).
EAGER_MAX_STEPS = 4


def _eager(data) -> bool:
    return ex.steps_per_epoch(data.train) <= EAGER_MAX_STEPS


def cosine_adam(lr: float, epochs: int, steps_per_epoch: int, weight_decay: float = 0.0):
    """Adam (AdamW if ``weight_decay``) with the learning rate decaying to 0 over ``epochs``."""
    schedule = keras.optimizers.schedules.CosineDecay(float(lr), max(1, int(epochs) * int(steps_per_epoch)))
    if weight_decay:
        return keras.optimizers.AdamW(schedule, weight_decay=weight_decay)
    return keras.optimizers.Adam(schedule)


def train_dense(model: keras.Model, data: ex.Data, epochs: int, lr: float = 2e-3,
                weighting=None, verbose: int = 0, recalibrate: bool = True) -> keras.Model:
    """Trains ``model`` in place with a cosine-decay Adam (and a task weighting if given); its
    BatchNorm statistics are then re-estimated (``recalibrate``, see :func:`finetune`)."""
    finetune(model, data, epochs, lr=lr, weighting=weighting, verbose=verbose, recalibrate=recalibrate)
    return model


BASELINES = ("continue", "scratch")


def train_same_budget(dense: keras.Model, data: ex.Data, budget: Budget, lr: float = 2e-3,
                      baseline: str = "continue", build: Callable[[], keras.Model] | None = None,
                      verbose: int = 0) -> keras.Model:
    """The dense model a compressed one is compared with: trained for ``budget.total`` epochs.

    ``baseline="continue"`` (default): a copy of the trained parent ``dense`` trained on for
    the ``budget.find + budget.finetune`` epochs the compressed model spent after it, with a
    new cosine decay from ``lr`` (a warm restart, the same shape as the compressed model's
    schedule); the parent's ``budget.dense`` epochs are shared, not trained twice.
    ``"scratch"``: ``build()`` trained from scratch for ``budget.total`` epochs in one cosine
    decay. On the demo's setting (seed 0) the continued model was the stronger baseline,
    delta_m +1.3% against the scratch one, and it costs the parent's epochs less.
    """
    from tfmot_mtl.masks import clone_with_weights

    if baseline not in BASELINES:
        raise ValueError(f"`baseline` must be one of {BASELINES}, got {baseline!r}.")
    if baseline == "scratch":
        if build is None:
            raise ValueError("baseline='scratch' needs `build`, a function returning a new model.")
        return train_dense(build(), data, budget.total, lr, verbose=verbose)
    model = clone_with_weights(dense)
    return train_dense(model, data, budget.find + budget.finetune, lr, verbose=verbose)


def finetune(student: keras.Model, data: ex.Data, epochs: int, teacher: keras.Model | None = None,
             lr: float = 1e-3, weighting: Any = None, temperature: float = 2.0,
             student_loss_weight: float = 0.5, features: Sequence = (),
             validation: Any = None, patience: int | None = None, verbose: int = 0,
             callbacks: Sequence = (), recalibrate: bool = True,
             teacher_annealing: bool = False) -> keras.callbacks.History:
    """Trains ``student`` in place for ``epochs`` epochs on ``data.train``.

    Args:
        student: the model to train (a stripped model, or any dict-output model).
        data: :class:`tfmot_mtl.experiment.Data`.
        epochs: epochs; the learning rate decays from ``lr`` to 0 over them (cosine).
        teacher: the dense parent to distil from; ``None`` trains on labels only.
        weighting: task weighting of the supervised losses ("fixed", "uncertainty", "dwa",
            a ``{task: weight}`` dict, a TaskWeighting or None = all 1).
        temperature, student_loss_weight, features: as in MultiTaskDistiller.
        validation: a dataset of ``(inputs, targets)`` evaluated each epoch (default
            ``data.validation``); with ``patience`` training stops when the validation loss
            has not improved for that many epochs and the best weights are restored.
        teacher_annealing: with a ``teacher``, scale the distillation terms from 1 down to 0
            over the ``epochs`` (``MultiTaskDistiller(anneal_steps=...)``): the student ends
            on its labels alone, so a teacher it outgrows does not hold it back.
        recalibrate: after training, re-estimate the student's BatchNorm moving statistics on
            one pass over ``data.train`` (:func:`recalibrate_batchnorm`). With momentum 0.99
            a few hundred steps leave the moving averages far from the final weights'
            statistics (after 150 steps a quarter of them is still the initial 0 / 1), and the
            model is evaluated, or distilled from as a teacher, with them.

    Returns:
        The Keras History of the training wrapper (per-task losses and weights logged).
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"`epochs` must be an integer >= 0, got {epochs!r}.")
    if patience is not None and (not isinstance(patience, int) or patience < 1):
        raise ValueError(f"`patience` must be an integer >= 1 or None, got {patience!r}.")
    teacher_trainable = None if teacher is None else teacher.trainable
    try:
        history = _fit(student, data, epochs, teacher, lr, weighting, temperature, student_loss_weight,
                       features, validation, patience, verbose, callbacks, teacher_annealing)
        if recalibrate and epochs:
            recalibrate_batchnorm(student, data.train)
        return history
    finally:
        if teacher is not None:  # keras.distillation freezes the teacher; give the user theirs back
            teacher.trainable = teacher_trainable


def _fit(student, data, epochs, teacher, lr, weighting, temperature, student_loss_weight, features,
         validation, patience, verbose, callbacks, teacher_annealing=False) -> keras.callbacks.History:
    from tfmot_mtl.distill import MultiTaskDistiller, TaskWeightedModel

    if teacher is not None:
        anneal = max(1, epochs * ex.steps_per_epoch(data.train)) if teacher_annealing else None
        trainer = MultiTaskDistiller(teacher, student, data.tasks, temperature=temperature,
                                     student_loss_weight=student_loss_weight, weighting=weighting,
                                     features=features, anneal_steps=anneal)
    else:
        trainer = TaskWeightedModel(student, data.tasks, weighting=weighting)
    trainer.compile(cosine_adam(lr, epochs, ex.steps_per_epoch(data.train)), jit_compile=False,
                    run_eagerly=_eager(data))
    validation = getattr(data, "validation", None) if validation is None else validation
    callbacks = list(callbacks)
    if patience is not None:
        if validation is None:
            raise ValueError("early stopping (`patience`) needs a validation set: pass `validation` "
                             "or load the data with n_val > 0.")
        callbacks.append(keras.callbacks.EarlyStopping("val_loss", patience=patience,
                                                       restore_best_weights=True))
    if not epochs:
        return keras.callbacks.History()
    return trainer.fit(data.train, epochs=epochs, validation_data=validation, callbacks=callbacks,
                       verbose=verbose)


def find_channels(dense: keras.Model, data: ex.Data, method: str = "sparsity", target: float = 0.7,
                  epochs: int = 4, lr: float = 1e-3, groups: Any = "shared",
                  options: Mapping[str, Any] | None = None, verbose: int = 0):
    """Finds the channels to remove, starting from a copy of the trained ``dense`` model.

    ``method="sparsity"`` (Upadhyay et al. 2024): group lasso on the selected groups and the
    proximal step, lambda growing until ``target`` of their channels are exactly zero, then
    the zero pattern is locked for the rest of the ``epochs``. ``options`` may set
    ``l1`` (0.3), ``l1_loss`` (1e-5), ``adapt_rate`` (0.05), ``min_fraction`` (0.1), ``mode``.

    ``method="prune"`` (Garg et al. 2023): iterative pruning with ``options["criterion"]``
    ("taylor" by default) in equal steps spread over ``epochs``, fine-tuning in between.

    Returns ``(model, masks, info)``: the copy with the removed channels at zero, their
    :class:`ChannelMasks` and a dict with the method's numbers (sparsity, events, ...).
    """
    from tfmot_mtl.masks import clone_with_weights, masks_from_zeros

    opts = dict(options or {})
    if method not in METHODS:
        raise ValueError(f"`method` must be one of {METHODS}, got {method!r}.")
    steps = ex.steps_per_epoch(data.train)
    if method == "sparsity":
        from tfmot_mtl.sparsity import ProximalGroupLasso, apply_group_sparsity, sparsity_report
        from tfmot_mtl.tasks import compile_args

        model = apply_group_sparsity(dense, l1=opts.pop("l1_loss", 1e-5), layers=groups)
        prox = ProximalGroupLasso(l1=opts.pop("l1", 0.3), layers=groups, target=target,
                                  adapt_rate=opts.pop("adapt_rate", 0.05),
                                  min_fraction=opts.pop("min_fraction", 0.1), **opts)
        model.compile(cosine_adam(lr, epochs, steps), jit_compile=False, run_eagerly=_eager(data),
                      **compile_args(data.tasks))
        model.fit(data.train, epochs=max(1, epochs), callbacks=[prox], verbose=verbose)
        report = sparsity_report(model, layers=groups)
        return model, masks_from_zeros(model), {"method": method, "sparsity": report["channel_sparsity"],
                                                "report": report}
    from tfmot_mtl.pruning.run import prune_model

    criterion = opts.pop("criterion", "taylor")
    total = max(1, epochs) * steps
    events = max(1, min(int(opts.pop("events", 7)), total))  # at most one event per training step
    frequency = max(1, total // (events + 1))
    model = clone_with_weights(dense)
    model, masks, history = prune_model(model, data, criterion, target=target, frequency=frequency,
                                        step=target / events, fine_tune_steps=total - frequency * (events - 1),
                                        groups=groups, lr=lr, verbose=verbose,
                                        run_eagerly=opts.pop("run_eagerly", _eager(data)), **opts)
    history.pop("snapshots", None)
    return model, masks, {"method": method, "criterion": criterion, "sparsity": history["sparsity"],
                          "events": history["events"]}


def compress(dense: keras.Model, data: ex.Data, method: str = "sparsity", target: float = 0.7,
             find_epochs: int = 4, finetune_epochs: int = 4, distill: bool = True,
             weighting: Any = None, lr: float = 1e-3, temperature: float = 2.0,
             student_loss_weight: float = 0.5, patience: int | None = None,
             round_to: int | None = None, options: Mapping[str, Any] | None = None,
             verbose: int = 0) -> tuple[keras.Model, dict]:
    """``dense`` (trained, not modified) -> find channels -> strip -> fine-tune.

    Returns ``(small, info)``: the stripped, fine-tuned plain Keras model and a dict with
    the method's numbers, the strip totals and the fine-tuning history.
    """
    from tfmot_mtl.strip import strip_channels

    found, masks, info = find_channels(dense, data, method, target, find_epochs, lr=lr,
                                       options=options, verbose=verbose)
    small, report = strip_channels(found, masks, round_to=round_to)
    info["before_finetune"] = ex.evaluate(small, data)
    history = finetune(small, data, finetune_epochs, teacher=dense if distill else None, lr=lr,
                       weighting=weighting, temperature=temperature,
                       student_loss_weight=student_loss_weight, patience=patience, verbose=verbose)
    info.update(strip=report.to_dict()["totals"], masks=masks,
                finetune_history={k: [float(v) for v in vals] for k, vals in history.history.items()})
    return small, info


def recover(small: keras.Model, dense: keras.Model, data: ex.Data, epochs: int, distill: bool = True,
            weighting: Any = None, lr: float = 1e-3, temperature: float = 2.0,
            student_loss_weight: float = 0.5, patience: int | None = None, verbose: int = 0,
            teacher_annealing: bool = False) -> dict:
    """:func:`finetune` of a stripped model (in place), distilled from ``dense`` if ``distill``
    (with ``teacher_annealing``: the distillation terms fade to 0 over the epochs).

    Returns the phase's record: epochs asked and run (fewer after an early stop), whether
    it was distilled (and annealed), the weighting's name, the patience and the history (plain floats).
    """
    history = finetune(small, data, epochs, teacher=dense if distill else None, lr=lr, weighting=weighting,
                       temperature=temperature, student_loss_weight=student_loss_weight,
                       patience=patience, verbose=verbose, teacher_annealing=teacher_annealing)
    hist = {k: [float(v) for v in vals] for k, vals in history.history.items()}
    return {"epochs": epochs, "epochs_run": len(hist.get("loss", [])), "distilled": bool(distill and epochs),
            "teacher_annealing": bool(distill and epochs and teacher_annealing),
            "weighting": weighting if isinstance(weighting, str) else ("fixed" if weighting is None else
                                                                        type(weighting).__name__),
            "patience": patience, "history": hist}


def validation_size(n_train: int | None, default: int) -> int:
    """Images of an early-stopping split: a tenth of the training images (``default`` when
    ``n_train`` is None), at least 32."""
    return max(32, (default if n_train is None else int(n_train)) // 10)


def phase_budget(dense: int | str, find: float, finetune: int, finetune_run: int | None = None) -> dict:
    """Training epochs of each phase: ``dense`` ("loaded" for a model read from a file),
    ``find`` (finding the channels), ``finetune`` (after stripping, asked) and
    ``finetune_run`` (run: fewer after an early stop); "total" when every phase is known."""
    out = {"dense": dense, "find": round(float(find), 3) if isinstance(find, float) else find,
           "finetune": finetune, "finetune_run": finetune if finetune_run is None else finetune_run}
    if not isinstance(dense, str):
        out["total"] = round(dense + out["find"] + out["finetune_run"], 3)
    return out


def format_budget(budget: Mapping[str, Any], phase: Mapping[str, Any] | None = None) -> str:
    """One line: the epochs of each phase (and how the fine-tuning was done)."""
    dense = budget["dense"] if isinstance(budget["dense"], str) else f"{budget['dense']} epochs"
    tune = f"{budget['finetune_run']} epochs"
    if budget["finetune_run"] != budget["finetune"]:
        tune += f" of {budget['finetune']} (early stop)"
    if phase and budget["finetune"]:
        how = "distilled from the dense parent" if phase.get("distilled") else "on labels"
        if phase.get("weighting"):
            how += f", {phase['weighting']} task weighting"
        tune += f" ({how})"
    line = f"training budget: dense {dense} | find channels {budget['find']} epochs | fine-tune {tune}"
    return line + (f" | total {budget['total']} epochs" if "total" in budget else "")


@dataclass
class RecipeResult:
    """The three models of one recipe run and their comparison."""

    budget: Budget
    dense: keras.Model
    compressed: keras.Model
    same_budget: keras.Model | None
    rows: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"budget": self.budget.to_dict(), "rows": self.rows, "seconds": round(self.seconds, 1),
                "info": {k: v for k, v in self.info.items() if k != "masks"}}


def run(data: ex.Data, model: str = "mtl_resnet", width: float = 1.0, method: str = "sparsity",
        target: float = 0.7, budget: Budget = Budget(12, 4, 4), lr: float = 2e-3,
        finetune_lr: float = 1e-3, distill: bool = True, weighting: Any = None,
        same_budget: bool = True, baseline: str = "continue", primary_metrics: Mapping | None = None,
        seed: int = 0, options: Mapping[str, Any] | None = None, log=print,
        verbose: int = 0) -> RecipeResult:
    """Trains the dense parent, compresses it, and trains the same-budget dense baseline
    (``baseline``: the parent trained on, or a model from scratch; see :func:`train_same_budget`).

    ``rows`` has one entry per model ("dense parent", "compressed", "dense, same budget"):
    params, MACs, epochs, metrics and delta_m against the same-budget dense model (against
    the parent when ``same_budget=False``).
    """
    from tfmot_mtl.profile import profile
    from tfmot_mtl.tasks import delta_m

    if baseline not in BASELINES:
        raise ValueError(f"`baseline` must be one of {BASELINES}, got {baseline!r}.")
    start = time.time()
    log(f"[recipe] dense {model} x{width}: {budget.dense} epochs")
    dense = train_dense(ex.build_model(model, data.tasks, data.input_shape, width=width, seed=seed),
                        data, budget.dense, lr, verbose=verbose)
    log(f"[recipe] {method} to {100 * target:.0f}% of the shared channels: {budget.find} epochs; "
        f"strip; fine-tune {budget.finetune} epochs{' distilled from the dense parent' if distill else ''}")
    small, info = compress(dense, data, method, target, budget.find, budget.finetune, distill=distill,
                           weighting=weighting, lr=finetune_lr, options=options, verbose=verbose)
    if same_budget:
        how = "the parent trained on" if baseline == "continue" else "from scratch"
        log(f"[recipe] dense {model} x{width}, same total budget: {budget.total} epochs ({how})")
        reference_model = train_same_budget(
            dense, data, budget, lr, baseline, verbose=verbose,
            build=lambda: ex.build_model(model, data.tasks, data.input_shape, width=width, seed=seed))
    else:
        reference_model = None
    models = {"dense parent": (dense, budget.dense), "compressed": (small, budget.total)}
    if reference_model is not None:
        models["dense, same budget"] = (reference_model, budget.total)
    results = {name: ex.evaluate(m, data) for name, (m, _) in models.items()}
    reference = results["dense, same budget" if reference_model is not None else "dense parent"]
    rows = {}
    for name, (m, epochs) in models.items():
        prof = profile(m)
        rows[name] = {"params": prof.total_params, "macs": prof.total_macs, "epochs": epochs,
                      "metrics": results[name],
                      "delta_m": delta_m(results[name], reference, data.tasks, primary_metrics)}
    return RecipeResult(budget, dense, small, reference_model, rows, info, time.time() - start)
