"""``tm.compress``: a user's trained multi-task model and data in, a small plain Keras model out.

One call runs the whole path on any functional (or Sequential) multi-output model:
tasks inferred from the compiled losses (:func:`tfmot_mtl.tasks.infer_tasks`), channels found
by iterative Taylor pruning (``method="prune"``) or group sparsity (``method="sparsity"``) until
a target in MACs, parameters or channels is reached, the masked channels stripped
(:func:`tfmot_mtl.strip.strip_channels`), and the small model fine-tuned on the labels
(``distill=True``: distilled from the dense one). BatchNorm statistics are re-estimated after every phase that changes weights,
and on a copy of the parent when its own are stale (a warning says so; the user's model is never changed).
A task monitor evaluates every task after each epoch and warns when one falls to chance.

Example::

    import tfmot_mtl as tm
    result = tm.compress(model, train_ds, validation=val_ds, target_macs=0.33)
    print(result)                       # per-task before/after, MACs and params reached
    result.model.save("small.keras")    # a plain Keras model, no custom objects
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import keras
import numpy as np

from tfmot_mtl.selection import MIN_CHANNELS, default_min_fraction

METHODS = ("prune", "sparsity")
# Δm (%) by which re-estimating the parent's BatchNorm statistics must improve it to be reported.
STALE_GAIN = 5.0
TOLERANCE = 0.02  # relative miss of a cost target that still counts as reached
DEFAULT_LR = 1e-3  # the learning rate when the model was not compiled with an Adam-family optimizer
PRUNE_LR_SHARE = 0.5  # pruning's share of the model's own learning rate (see `compress`'s lr)


class CompressWarning(UserWarning):
    """A target missed, a task collapsed to chance, or layers cut to their floor."""


@dataclass
class CompressResult:
    """What :func:`compress` made and measured.

    Attributes:
        model: the stripped, fine-tuned plain Keras model.
        masks: the :class:`~tfmot_mtl.masks.ChannelMasks` that were stripped.
        report: the :class:`~tfmot_mtl.strip.StripReport` (params and MACs per layer).
        tasks: the tasks (given or inferred).
        before, after: ``{task: {metric: value}}`` of the dense and the small model (``before`` with
            re-estimated BatchNorm statistics when the model's own were stale, see ``warnings``).
        evaluated_on: "validation" or "train" (where before/after were measured).
        target: what was asked and reached (``kind``, ``asked``, ``reached``, ``missed_by``).
        history: per phase, the Keras history and the task monitor's per-epoch metrics.
        warnings: the messages of every :class:`CompressWarning` raised.
        trimmed: channels removed by the final magnitude trim (group sparsity).
        at_floor: channel groups cut to their layer floor.
        seconds: wall time per phase.
        lr: the learning rate both phases started from (given, or the model's own).
    """

    model: keras.Model
    masks: Any
    report: Any
    tasks: list
    before: dict
    after: dict
    evaluated_on: str
    target: dict
    history: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)
    trimmed: int = 0
    at_floor: list = field(default_factory=list)
    seconds: dict = field(default_factory=dict)
    lr: float = 0.0

    def delta_m(self) -> float:
        """Δm (%) of the small model against the dense one it came from, over the metrics whose
        dense value is not 0 (a relative change from 0 is undefined; NaN when no metric is left)."""
        return defined_delta_m(self.after, self.before, self.tasks)

    def to_dict(self) -> dict:
        """Plain JSON-able numbers (the model and masks left out)."""
        totals = self.report.to_dict()["totals"]
        return {"target": self.target, "strip": totals, "tasks": [t.get_config() for t in self.tasks],
                "before": self.before, "after": self.after, "evaluated_on": self.evaluated_on,
                "delta_m": self.delta_m(), "warnings": list(self.warnings), "trimmed": self.trimmed,
                "at_floor": list(self.at_floor), "history": self.history, "seconds": self.seconds,
                "lr": self.lr}

    def table(self) -> str:
        """Per task and metric: dense, compressed and the change; then params and MACs."""
        lines = [f"{'task':<14}{'metric':<14}{'dense':>10}{'compressed':>12}{'change':>10}"]
        for task in self.tasks:
            for metric in task.metrics:
                a, b = self.before[task.name][metric], self.after[task.name][metric]
                lines.append(f"{task.name:<14}{metric:<14}{a:>10.3f}{b:>12.3f}{b - a:>+10.3f}")
        t = self.report.to_dict()["totals"]
        lines.append(f"params {t['params_before']:,} -> {t['params_after']:,} "
                     f"({t['params_after'] / max(1, t['params_before']):.3f}x), MACs {t['macs_before']:,} -> "
                     f"{t['macs_after']:,} ({t['macs_after'] / max(1, t['macs_before']):.3f}x); "
                     f"delta_m {self.delta_m():+.2f}% on {self.evaluated_on}")
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def compress(model: keras.Model, train: Any, *, validation: Any = None, tasks: Any = None,
             target_macs: float | None = None, target_params: float | None = None,
             target_channels: float | None = None, method: str = "prune", groups: Any = "all",
             protect: Sequence[str] = (), find_epochs: int = 4, finetune_epochs: int = 4,
             distill: bool = False, round_to: int | None = None, lr: float | None = None,
             criterion: str = "taylor", min_channels: int = MIN_CHANNELS, min_fraction: float | None = None,
             batch_size: int = 32, options: Mapping[str, Any] | None = None, weighting: Any = None,
             verbose: int = 1) -> CompressResult:
    """Compresses a trained multi-task model to a target; ``model`` itself is never modified.

    Args:
        model: a trained functional or Sequential Keras model with one output per task.
        train: ``tf.data.Dataset`` of ``(inputs, {output: target})`` batches, or a numpy pair
            ``(x, {output: y})`` (batched with ``batch_size``, shuffled each epoch).
        validation: the same, held out; before/after are measured on it (else on ``train``).
        tasks: Tasks, ``{name: Task}`` or a JSON task file; outputs without one are inferred
            from the compiled losses (:func:`tfmot_mtl.tasks.infer_tasks`).
        target_macs, target_params: the small model's MACs / parameters, as a fraction of
            the dense model's (e.g. 0.33) or an absolute count (> 1).
        target_channels: the share of the selected channels to remove, in (0, 1).
            Exactly one target is needed.
        method: ``"prune"`` (iterative Taylor pruning, Garg et al. 2023) or ``"sparsity"``
            (group lasso and the proximal step, Upadhyay et al. 2024).
        groups, protect: which channel groups may go (:mod:`tfmot_mtl.selection`).
        find_epochs, finetune_epochs: epochs of finding the channels and of fine-tuning.
        distill: fine-tune distilled from the dense model; the default trains on the labels
            only: a parent that is itself short of converged passes its errors on (measured on
            the four models of ``benchmarks/own_models.py``: distilled Δm -2.2% to -70% where
            labels alone gave -0.02% to -3.2%), and the user's model is rarely trained to the end.
        round_to: kept channels per group a multiple of this (SIMD width).
        lr: learning rate of both phases (Adam, cosine decay to 0 in each). ``None``: from the
            initial learning rate of the Adam-family optimizer the model was compiled with (the
            rate it was trained at): that rate for group sparsity, half of it for pruning
            (:data:`PRUNE_LR_SHARE`); :data:`DEFAULT_LR` for a model compiled otherwise. Measured
            on ``benchmarks/own_models.py`` (parents trained with Adam at 2e-3; Δm against the
            dense model trained on at 2e-3): group sparsity at 1e-3 / 2e-3 gave mean Δm -4.45% /
            -2.05% (CSPNet -5.4 / +1.1, U-Net -11.6 / -7.3); pruning -0.07% / -2.95%
            (MobileNetV2 +2.8 / -6.4). Pruning keeps the weights it does not remove, so it
            fine-tunes them gently; the proximal step moves every selected weight and its
            survivors need the rate the model learned at.
        criterion: the pruning criterion (``"taylor"``, ``"magnitude"``, ``"cosprune"``, ...).
        min_channels, min_fraction: the layer floor (:func:`tfmot_mtl.selection.layer_floor`);
            ``min_fraction=None`` keeps 0.25 of each group with ``target_channels``, and with a
            MAC or parameter target 0.75 of the share that, kept in every group alike, meets the
            target (about 0.4 at 0.33x MACs; :func:`tfmot_mtl.pruning.cost.cost_floor`).
        options: method options (see :func:`tfmot_mtl.recipes.find_channels`).
        weighting: task weighting of the fine-tuning (see :func:`tfmot_mtl.recipes.finetune`).
        verbose: 1 prints the phases and Keras progress, 0 is silent.

    Raises:
        ValueError: no or several targets; a target the selected groups cannot reach (with the
            reachable range); data whose targets do not fit the outputs; an output whose task
            cannot be inferred.
    """
    from tfmot_mtl.recipes import experiment as ex
    from tfmot_mtl.recipes.find import find_channels
    from tfmot_mtl.recipes.train import finetune
    from tfmot_mtl.tasks.data import as_dataset, check_targets
    from tfmot_mtl.strip import strip_channels
    from tfmot_mtl.tasks import infer_tasks

    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    kind, asked = _target(target_macs, target_params, target_channels)
    lr = _learning_rate(model, lr, PRUNE_LR_SHARE if method == "prune" else 1.0)
    min_fraction = default_min_fraction(min_fraction, kind != "channels")
    tasks = infer_tasks(model, tasks)
    train_ds = as_dataset(train, batch_size, shuffle=True, argument="train")
    val_ds = None if validation is None else as_dataset(validation, batch_size, argument="validation")
    for name, ds in (("train", train_ds), ("validation", val_ds)):
        if ds is not None:
            check_targets(ds, model, tasks, argument=name)
    eval_ds = val_ds if val_ds is not None else train_ds
    data = ex.Data("user", train_ds, eval_ds, tasks, tuple(model.inputs[0].shape[1:]), val_ds)
    say = print if verbose else (lambda *a, **k: None)
    seconds: dict[str, float] = {}
    t0 = time.time()
    dense = _frozen_copy(model)
    before, stale = _recalibrated_parent(dense, data, tasks, train_ds, say)
    chance = _chance(tasks, train_ds)
    monitor = TaskMonitor(tasks, eval_ds, chance, before, recalibrate_on=train_ds)
    seconds["evaluate"] = time.time() - t0

    t0 = time.time()
    say(f"[compress] find channels: {method}, {find_epochs} epochs, target {kind} {asked:g}, groups={groups!r}, "
        f"lr {lr:g}")
    cost = {"target_macs": asked} if kind == "macs" else {"target_params": asked} if kind == "params" else {}
    opts = dict(options or {})
    if method == "prune":
        opts.setdefault("criterion", criterion)
    found, masks, info = find_channels(
        dense, data, "prune" if method == "prune" else "sparsity", asked if kind == "channels" else 0.5,
        find_epochs, lr=lr, groups=groups, options={**opts, **({"protect": tuple(protect)} if protect else {})},
        verbose=2 if verbose else 0, min_channels=min_channels, min_fraction=min_fraction,
        callbacks=[monitor.watching(None, "find")], **cost)
    seconds["find"] = time.time() - t0

    t0 = time.time()
    small, report = strip_channels(found, masks, round_to=round_to)
    seconds["strip"] = time.time() - t0
    t0 = time.time()
    say(f"[compress] stripped: {report.param_ratio:.3f}x params, {report.mac_ratio:.3f}x MACs; "
        f"fine-tune {finetune_epochs} epochs{' distilled from the dense model' if distill else ''}")
    history = finetune(small, data, finetune_epochs, teacher=dense if distill else None, lr=lr,
                               weighting=weighting, verbose=2 if verbose else 0,
                               callbacks=[monitor.watching(small, "finetune")])
    after = ex.evaluate(small, data)
    seconds["finetune"] = time.time() - t0

    target = _reached(kind, asked, report, info)
    at_floor = list(info.get("at_floor", []))
    min_fraction = info.get("min_fraction", min_fraction)  # the floor in use (a cost target sets a None one)
    news = [target["missed"]] if target.get("missed") else []
    if at_floor:
        news.append(f"{len(at_floor)} channel groups were cut to their layer floor (min_channels="
                    f"{min_channels}, min_fraction={min_fraction:g}): {', '.join(at_floor[:6])}"
                    f"{' ...' if len(at_floor) > 6 else ''}")
    for message in news:
        warnings.warn(message, CompressWarning, stacklevel=2)
    messages = ([stale] if stale else []) + list(monitor.messages) + news
    result = CompressResult(small, masks, report, tasks, before, after,
                            "validation" if val_ds is not None else "train", target,
                            {"find": {k: v for k, v in info.items() if k not in ("report", "events")},
                             "finetune": {k: [float(x) for x in v] for k, v in history.history.items()},
                             "monitor": monitor.records},
                            messages, int(info.get("trimmed", 0)), at_floor,
                            {k: round(v, 1) for k, v in seconds.items()}, lr)
    say(result.table())
    return result


def defined_delta_m(results: Mapping, baseline: Mapping, tasks) -> float:
    """:func:`tfmot_mtl.tasks.delta_m` over each task's metrics whose baseline is not 0 (e.g. the
    F1 of attributes a model never predicts positive); NaN when no metric is left."""
    from tfmot_mtl.tasks import defined_metrics, delta_m

    metrics = defined_metrics(baseline, tasks)
    kept = [t for t in tasks if metrics[t.name]]
    return delta_m(results, baseline, kept, {t.name: metrics[t.name] for t in kept}) if kept else float("nan")


def _target(target_macs, target_params, target_channels) -> tuple[str, float]:
    given = [(k, v) for k, v in (("macs", target_macs), ("params", target_params),
                                 ("channels", target_channels)) if v is not None]
    if len(given) != 1:
        raise ValueError("give exactly one target: target_macs= or target_params= (a fraction of the dense "
                         "model's, e.g. 0.33, or an absolute count) or target_channels= (a share of the "
                         f"selected channels to remove); got {[f'target_{k}' for k, _ in given] or 'none'}")
    kind, value = given[0]
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or value <= 0 \
            or (kind == "channels" and not value < 1):
        need = "in (0, 1)" if kind == "channels" else "a fraction in (0, 1] or an absolute count > 1"
        raise ValueError(f"target_{kind} must be {need}, got {value!r}")
    return kind, float(value)


def _learning_rate(model: keras.Model, lr: float | None, share: float = 1.0) -> float:
    """``lr`` checked, or with None ``share`` times the initial learning rate of the model's compiled
    Adam-family optimizer (a schedule's value at its first step), else :data:`DEFAULT_LR`. Only Adam's:
    compress trains with Adam, and an SGD rate means something else to it."""
    if lr is not None:
        if isinstance(lr, bool) or not isinstance(lr, (int, float, np.floating)) or not 0 < float(lr) < 1:
            raise ValueError(f"lr must be a learning rate in (0, 1) or None (the model's own), got {lr!r}")
        return float(lr)
    optimizer = getattr(model, "optimizer", None)
    if not isinstance(optimizer, (keras.optimizers.Adam, keras.optimizers.AdamW, keras.optimizers.Nadam,
                                  keras.optimizers.Adamax)):
        return DEFAULT_LR
    from tfmot_mtl.utils import _keras_compat

    rate = _keras_compat.learning_rate(optimizer, 1)  # a schedule at its first step
    return float(f"{share * rate:.6g}") if np.isfinite(rate) and 0 < rate < 1 else DEFAULT_LR


def _frozen_copy(model: keras.Model) -> keras.Model:
    """A copy of the user's model holding its weights (the original is never trained)."""
    from tfmot_mtl.masks import clone_with_weights

    return clone_with_weights(model)


def _recalibrated_parent(dense: keras.Model, data, tasks, train_ds, say) -> tuple[dict, str | None]:
    """Re-estimates the BatchNorm statistics of the parent's copy on the training data; returns
    its metrics and the warning given, if any. A model trained for a few hundred steps keeps
    moving averages far from its weights' statistics (keras.applications' MobileNetV2 uses
    momentum 0.999), which makes the "before" column, and a teacher distilling from the parent,
    worse than the model is."""
    from tfmot_mtl.recipes.batchnorm import recalibrate_batchnorm
    from tfmot_mtl.recipes import experiment as ex

    stored = ex.evaluate(dense, data)
    weights = dense.get_weights()
    if not recalibrate_batchnorm(dense, train_ds):
        return stored, None
    before = ex.evaluate(dense, data)
    gain = defined_delta_m(before, stored, tasks)
    if gain <= STALE_GAIN:  # the model's own statistics are fine: keep them
        dense.set_weights(weights)
        return stored, None
    message = (f"the model's BatchNorm statistics are stale: re-estimated on the training data (on a copy), "
               f"its metrics change by Δm {gain:+.1f}% ({_fmt_metrics(stored, tasks)} -> "
               f"{_fmt_metrics(before, tasks)}); 'before' and the distillation teacher use the re-estimated "
               "copy (tfmot_mtl.recipes.batchnorm.recalibrate_batchnorm(model, data) fixes the model itself)")
    warnings.warn(message, CompressWarning, stacklevel=3)
    say(f"[compress] {message}")
    return before, message


def _fmt_metrics(metrics: Mapping, tasks) -> str:
    return ", ".join(f"{t.name} {t.metrics[0]} {metrics[t.name][t.metrics[0]]:.3g}" for t in tasks)


def _chance(tasks, train_ds, batches: int = 8) -> dict:
    from tfmot_mtl.tasks.chance import chance_results

    return chance_results(tasks, [(x, {k: np.asarray(v) for k, v in y.items()})
                                  for x, y, *_ in train_ds.take(batches)])


def _reached(kind: str, asked: float, report, info: Mapping) -> dict:
    """The target asked and the value measured on the stripped model."""
    totals = report.to_dict()["totals"]
    out = {"kind": kind, "asked": asked}
    if kind == "channels":
        out["reached"] = float(info.get("sparsity", 0.0))
        return out
    before, after = (totals["macs_before"], totals["macs_after"]) if kind == "macs" else \
        (totals["params_before"], totals["params_after"])
    goal = asked if asked > 1 else asked * before
    out.update(reached=after / max(1, before), reached_count=int(after), goal_count=int(round(goal)),
               missed_by=after / max(1.0, goal) - 1.0)
    if abs(out["missed_by"]) > TOLERANCE:
        out["missed"] = (f"target_{kind}={asked:g} missed: the stripped model has {after:,} {kind} "
                         f"({after / max(1, before):.3f} of dense), {100 * out['missed_by']:+.1f}% from the goal "
                         f"of {int(round(goal)):,}" + (" (round_to changed the kept counts)" if totals.get("rounded")
                                                       else ""))
    return out


class TaskMonitor(keras.callbacks.Callback):
    """After every epoch, re-estimates BatchNorm statistics on a few training batches and
    scores every task on a few evaluation batches; warns (once per task and phase) when a
    task falls to chance (:func:`tfmot_mtl.tasks.chance.collapsed`)."""

    def __init__(self, tasks, data, chance, reference, recalibrate_on=None, batches: int = 4):
        super().__init__()
        self.tasks, self.data, self.chance, self.reference = tasks, data, chance, reference
        self.recalibrate_on, self.batches = recalibrate_on, batches
        self.records: list[dict] = []
        self.messages: list[str] = []
        self._net, self._phase = None, ""

    def watching(self, net, phase: str) -> "TaskMonitor":
        """This monitor set to score ``net`` (None: the fitted model) in ``phase``."""
        self._net, self._phase = net, phase
        return self

    def on_epoch_end(self, epoch, logs=None):
        from tfmot_mtl.recipes.batchnorm import recalibrate_batchnorm
        from tfmot_mtl.tasks import evaluate
        from tfmot_mtl.tasks.chance import collapsed, main_metric

        net = self._net if self._net is not None else self.model
        if self.recalibrate_on is not None:
            recalibrate_batchnorm(net, self.recalibrate_on, batches=2 * self.batches)
        results = evaluate(net, self.data.take(self.batches), self.tasks)
        self.records.append({"phase": self._phase, "epoch": int(epoch), "metrics": results})
        for name in collapsed(results, self.chance, self.reference, self.tasks):
            metric = main_metric(next(t for t in self.tasks if t.name == name))
            message = (f"task '{name}' fell to chance level during {self._phase} (epoch {epoch + 1}): "
                       f"{metric} {results[name][metric]:.4g}, chance {self.chance[name][metric]:.4g}, "
                       f"dense {self.reference[name][metric]:.4g}")
            if not any(m.startswith(f"task '{name}' fell to chance level during {self._phase}")
                       for m in self.messages):
                self.messages.append(message)
                warnings.warn(message, CompressWarning, stacklevel=2)
