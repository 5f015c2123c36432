"""Training phases of a recipe: the dense model, the same-budget dense baseline and the fine-tuning
of a stripped model (on labels or distilled from its dense parent), with cosine-decay Adam and
BatchNorm statistics re-estimated after every phase."""
from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from typing import Any, Callable, Mapping, Sequence

import keras

from tfmot_mtl.recipes import experiment as ex
from tfmot_mtl.recipes.batchnorm import recalibrate_batchnorm

METHODS = ("sparsity", "prune")


@dataclass(frozen=True)
class Epochs:
    """Training epochs of each phase of a recipe (``dense``, ``find``, ``finetune``); ``total``
    is what the same-budget dense model gets."""

    dense: int
    find: int
    finetune: int

    @property
    def total(self) -> int:
        return self.dense + self.find + self.finetune

    def to_dict(self) -> dict:
        return {**asdict(self), "total": self.total}


@dataclass(frozen=True)
class Budget(Epochs):
    """Deprecated name of :class:`Epochs` (confusable with the :mod:`tfmot_mtl.budget` method)."""

    def __post_init__(self):
        warnings.warn("tfmot_mtl.recipes.Budget is deprecated: use tfmot_mtl.recipes.Epochs (the same "
                      "fields: dense, find, finetune)", DeprecationWarning, stacklevel=3)


# Runs with at most this many batches per epoch skip graph tracing (run_eagerly): tracing
# costs more than a tiny run (smoke tests, --fast settings).
EAGER_MAX_STEPS = 4


def runs_eagerly(data) -> bool:
    """Whether a phase on ``data`` runs eagerly: at most ``EAGER_MAX_STEPS`` batches per epoch."""
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


def train_same_budget(dense: keras.Model, data: ex.Data, budget: Epochs, lr: float = 2e-3,
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
        data: :class:`tfmot_mtl.recipes.experiment.Data`.
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
                    run_eagerly=runs_eagerly(data))
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
