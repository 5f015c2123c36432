"""One recipe for iterative pruning with fine-tuning, shared by the CLI and the benchmark.

:func:`prune_model` compiles a fresh optimizer (so the schedule starts at step 0), then
trains on ``data.train`` while a :class:`ChannelPruningCallback` removes a fixed fraction
(``step``) or number (``count``) of channels every ``frequency`` steps until ``target``,
and fine-tunes ``fine_tune_steps`` more steps after the last event (Garg et al. 2023:
100 filters every 500 iterations). With ``snapshots=(0.5, 0.7, ...)`` it also records the
masks and weights at each level, taken just before the next pruning event (i.e. after
the ``frequency`` fine-tuning steps at that level). :func:`retrain_from_scratch` trains a
re-initialised copy of a stripped architecture (the paper's "re-init" experiment).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import keras

from tfmot_mtl.recipes.experiment import steps_per_epoch  # noqa: F401  (re-exported)
from tfmot_mtl.masks import ChannelMasks
from tfmot_mtl.pruning.callback import ChannelPruningCallback
from tfmot_mtl.pruning.gradient_criteria import CosPrune, SecondOrder, Taylor
from tfmot_mtl.pruning.importance import FPGM, LAMP, BNScale, Importance, Magnitude, Random
from tfmot_mtl.pruning.reinit import reinitialize
from tfmot_mtl.pruning.schedules import IterativeSchedule, evaluate_schedule
from tfmot_mtl.selection import MIN_CHANNELS

CRITERIA = ("taylor", "cosprune", "magnitude", "bnscale", "lamp", "fpgm", "second_order", "random")


def make_criterion(name: str, seed: int = 0) -> Importance:
    """A criterion by name: one of :data:`CRITERIA`."""
    key = str(name).lower()
    if key not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}, got {name!r}")
    if key == "random":
        return Random(seed=seed)
    if key == "magnitude":
        return Magnitude(p=1)
    return {"taylor": Taylor, "cosprune": CosPrune, "bnscale": BNScale, "lamp": LAMP, "fpgm": FPGM,
            "second_order": SecondOrder}[key]()


def compile_for_pruning(model: keras.Model, tasks: Sequence, lr: float,
                        run_eagerly: bool = False) -> keras.Model:
    """Adam with the tasks' losses; no XLA (it compiles for a minute on small CPUs).
    ``run_eagerly`` skips graph tracing: faster overall for a few steps of a tiny model."""
    from tfmot_mtl.tasks import compile_args

    model.compile(keras.optimizers.Adam(lr), jit_compile=False, run_eagerly=run_eagerly,
                  **compile_args(tasks))
    return model


def reset_optimizer(model: keras.Model, lr: float | None = None) -> None:
    """Zeroes the compiled optimizer's state (step count, moments) and sets its learning
    rate, so a compiled model can be trained again as if freshly compiled, without the
    cost of retracing its train function."""
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None or not getattr(model, "compiled", False):
        raise ValueError("reset_optimizer needs a compiled model (or use prune_model(compile=True))")
    for var in optimizer.variables:
        var.assign(keras.ops.zeros(var.shape, var.dtype))
    if lr is not None:
        optimizer.learning_rate = float(lr)


@dataclass
class Snapshot:
    """Masks and weights of the model when the scheduled sparsity first reached ``level``."""

    level: float
    scheduled: float
    sparsity: float
    step: int
    masks: ChannelMasks
    weights: list = field(repr=False)

    def model(self, like: keras.Model) -> keras.Model:
        """A copy of ``like`` (same architecture) holding this snapshot's weights."""
        copy = keras.models.clone_model(like)
        copy.set_weights(self.weights)
        return copy

    def to_dict(self) -> dict:
        return {"level": self.level, "scheduled": self.scheduled, "sparsity": self.sparsity,
                "step": self.step}


class _SnapshotCallback(keras.callbacks.Callback):
    """Records levels reached, right before each pruning event and at the end."""

    def __init__(self, pruner: ChannelPruningCallback, levels: Iterable[float]):
        super().__init__()
        self.pruner = pruner
        self.pending = sorted(float(v) for v in levels)
        self.taken: list[Snapshot] = []
        self._last = -1

    def on_train_batch_begin(self, batch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        if step != self._last:
            self._last = step
            if evaluate_schedule(self.pruner.schedule, step)[0]:
                self.record(step)

    def record(self, step: int) -> None:
        if not self.pruner.history or not self.pending:
            return
        scheduled = self.pruner.history[-1]["target"]
        reached = [v for v in self.pending if scheduled >= v - 1e-6]
        for level in reached:
            self.taken.append(Snapshot(level, scheduled, self.pruner.sparsity(), step,
                                       ChannelMasks(dict(self.pruner.masks), self.pruner.min_channels),
                                       [w.copy() for w in self.pruner.model.get_weights()]))
            self.pending.remove(level)


def prune_model(model: keras.Model, data, criterion: str | Importance = "taylor", target: float = 0.7,
                frequency: int = 20, step: float | None = None, count: int | None = None,
                fine_tune_steps: int | None = None, groups: Any = "all", min_channels: int = MIN_CHANNELS,
                lr: float = 5e-4, score_batches: int = 2, round_to: int | None = None,
                protect: Iterable[str] = (), snapshots: Iterable[float] = (), seed: int = 0,
                verbose: int = 0, compile: bool = True, run_eagerly: bool = False,
                min_fraction: float | None = None, target_macs: float | None = None,
                target_params: float | None = None, cost_exponent: float = 1.0,
                callbacks: Iterable = ()) -> tuple[keras.Model, ChannelMasks, dict]:
    """Iteratively prunes ``model`` IN PLACE, fine-tuning on ``data.train`` in between.

    Args:
        model: a trained multi-task model with dict outputs named like ``data.tasks``.
        data: :class:`tfmot_mtl.recipes.experiment.Data` (``train`` batches and ``tasks``).
        criterion: a name from :data:`CRITERIA` or an :class:`Importance` instance.
        target: final fraction of the selected channels removed, in (0, 1); with
            ``target_macs`` / ``target_params`` the schedule's progress (see
            :class:`ChannelPruningCallback`).
        frequency: training steps between pruning events.
        step / count: sparsity or channels removed per event; default ``step = 0.05``.
        fine_tune_steps: training steps after the last event (default ``frequency``).
        groups: "all" (default), "shared" (the shared trunk: groups feeding > 1 task), a list of
            group ids / layer names or a callable (:func:`tfmot_mtl.selection.select_groups`).
        min_channels, min_fraction: the layer floor (:func:`tfmot_mtl.selection.layer_floor`;
            ``min_fraction=None``: :func:`tfmot_mtl.selection.default_min_fraction`).
        target_macs, target_params, cost_exponent: prune to a cost (:class:`ChannelPruningCallback`).
        callbacks: more Keras callbacks for the fits (e.g. a task monitor).
        lr: Adam learning rate of the fine-tuning.
        score_batches: batches of ``data.train`` scored at each event (Taylor, CosPrune).
        round_to, protect: as in :class:`ChannelPruningCallback`.
        snapshots: sparsity levels at which to record masks and weights (see module doc).
        seed: seed of the Random criterion.
        verbose: Keras fit verbosity (0 silent, 2 one line per pruning interval).
        compile: compile a fresh Adam(``lr``) with the tasks' losses; ``False`` keeps the
            model's compiled train function and only resets its optimizer
            (:func:`reset_optimizer`) -- much faster when pruning one model repeatedly.
        run_eagerly: passed to ``compile`` (tiny smoke runs).

    Returns:
        ``(model, masks, history)``: the same model with the removed channels at zero,
        the final :class:`ChannelMasks`, and a dict with ``events`` (one entry per pruning
        event), ``snapshots`` (:class:`Snapshot` list), ``steps``, ``sparsity``, ``seconds``.
    """
    if not 0.0 < float(target) < 1.0:
        raise ValueError(f"target must be a fraction of channels in (0, 1), got {target}")
    if step is None and count is None:
        step = 0.05
    fine_tune_steps = int(frequency) if fine_tune_steps is None else int(fine_tune_steps)
    if fine_tune_steps < 0:
        raise ValueError(f"fine_tune_steps must be >= 0, got {fine_tune_steps}")
    importance = make_criterion(criterion, seed) if isinstance(criterion, str) else criterion
    schedule = IterativeSchedule(target=target, frequency=frequency, step=step, count=count)
    train = data.train.repeat()
    pruner = ChannelPruningCallback(importance, schedule, groups=groups, min_channels=min_channels,
                                    round_to=round_to, protect=protect, data=train,
                                    score_batches=score_batches, verbose=int(verbose > 0),
                                    min_fraction=min_fraction, target_macs=target_macs,
                                    target_params=target_params, cost_exponent=cost_exponent)
    if compile:
        compile_for_pruning(model, data.tasks, lr, run_eagerly)
    else:
        reset_optimizer(model, lr)
    pruner.set_model(model)
    pruner.setup(model)
    if not pruner.selected:
        raise ValueError(f"groups={groups!r} selects no prunable channel group of this model")
    shots = _SnapshotCallback(pruner, snapshots)
    events = schedule.events_to_target()
    t0 = time.perf_counter()
    if verbose and events > 1:
        print(f"[prune] {events} pruning events {int(frequency)} steps apart, then {fine_tune_steps} steps; "
              f"Keras shows each interval between events as an epoch")
    if events > 1:  # every event but the last, each followed by `frequency` steps
        model.fit(train, epochs=events - 1, steps_per_epoch=int(frequency),
                  callbacks=[shots, pruner, *callbacks], verbose=verbose)
    if fine_tune_steps:  # the last event happens at this fit's first step
        model.fit(train, epochs=1, steps_per_epoch=fine_tune_steps, callbacks=[shots, pruner, *callbacks],
                  verbose=verbose)
    else:
        last = int(model.optimizer.iterations.numpy())
        shots.record(last)
        pruner.prune_to(evaluate_schedule(schedule, (events - 1) * int(frequency))[1], last)
    shots.record(int(model.optimizer.iterations.numpy()))
    history = {"criterion": type(importance).__name__, "target": float(target),
               "events": pruner.history, "snapshots": shots.taken,
               "steps": int(model.optimizer.iterations.numpy()), "sparsity": pruner.sparsity(),
               "seconds": time.perf_counter() - t0, "reached": pruner.reached(),
               "at_floor": pruner.groups_at_floor(), "min_fraction": pruner.min_fraction}
    return model, pruner.masks, history


def retrain_from_scratch(stripped: keras.Model, data, epochs: int, lr: float = 2e-3,
                         seed: int = 0, verbose: int = 0, run_eagerly: bool = False) -> keras.Model:
    """Re-initialises ``stripped`` (:func:`reinitialize`) and trains it ``epochs`` epochs on
    ``data.train`` with Adam(``lr``); returns the trained copy (``stripped`` is untouched)."""
    if int(epochs) < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    fresh = compile_for_pruning(reinitialize(stripped, seed=seed), data.tasks, lr, run_eagerly)
    fresh.fit(data.train, epochs=int(epochs), verbose=verbose)
    return fresh
