"""Learned task weighting: how the per-task losses of a multi-task model add up.

- :class:`UncertaintyWeighting` (Kendall, Gal & Cipolla 2018), the default combination of
  the Less-is-More reference code: one trainable log-variance ``s_t`` per task and
  ``L = sum_t exp(-s_t) * L_t + s_t``; a task whose loss stays high (a noisy task) gets a
  larger ``s_t`` and so a smaller weight.
- :class:`DynamicWeightAveraging` (Liu, Johns & Davison 2019): ``w_t = T * softmax(r / tau)_t``
  with ``r_t`` the ratio of task ``t``'s mean loss over the last two windows of
  ``period`` training steps (the paper's window is an epoch); 1 for the first two windows.
- :class:`FixedWeighting`: constant weights (the plain ``loss_weights`` of ``compile``).

A weighting is a Keras layer owned by the training wrapper (:class:`TaskWeightedModel` or
:class:`~tfmot_mtl.distill.MultiTaskDistiller`), so its variables train and checkpoint with
it, while the wrapped model stays a plain Keras model: export ``wrapper.model`` /
``distiller.student`` and the weighting is left behind. All updates run in the compiled
train step. Each task's effective weight and unweighted loss are logged as
``{task}_weight`` and ``{task}_task_loss`` (history, progress bar, TensorBoard).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import keras

from tfmot_mtl.tasks import Task, TasksLike, as_task_list

SCHEMES = ("fixed", "uncertainty", "dwa")


class TaskWeighting(keras.layers.Layer):
    """Base: per-task weighted terms of the loss, and their logs.

    Subclasses implement :meth:`weighted` (per-sample losses of one task -> weighted
    per-sample terms) and may implement :meth:`update` (called once per training step
    after all tasks' losses are computed).
    """

    def __init__(self, task_names: Sequence[str], **kwargs):
        super().__init__(**kwargs)
        names = [str(n) for n in task_names]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"`task_names` must be distinct and non-empty, got {names}.")
        self.task_names = names
        self.index = {n: i for i, n in enumerate(names)}
        self.loss_trackers = {n: keras.metrics.Mean(name=f"{n}_task_loss") for n in names}
        self.weight_trackers = {n: keras.metrics.Mean(name=f"{n}_weight") for n in names}
        self.built = True

    @property
    def trackers(self) -> list:
        return [*self.loss_trackers.values(), *self.weight_trackers.values()]

    def weight(self, name: str):
        """The current weight of task ``name`` (a scalar tensor)."""
        raise NotImplementedError

    def weighted(self, name: str, values):
        """Per-sample weighted terms of task ``name`` from its per-sample losses ``values``."""
        return self.weight(name) * values

    def observe(self, name: str, mean_loss) -> None:
        """Records task ``name``'s unweighted mean loss of this batch (logs, DWA windows)."""
        self.loss_trackers[name].update_state(mean_loss)
        self.weight_trackers[name].update_state(self.weight(name))

    def update(self) -> None:
        """Once per training step, after every task's loss (no-op by default)."""

    def get_config(self):
        return {**super().get_config(), "task_names": list(self.task_names)}


@keras.saving.register_keras_serializable(package="tfmot_mtl")
class FixedWeighting(TaskWeighting):
    """Constant weights per task (1.0 for tasks not named)."""

    def __init__(self, task_names: Sequence[str], weights: Mapping[str, float] | None = None, **kwargs):
        super().__init__(task_names, **kwargs)
        weights = dict(weights or {})
        unknown = sorted(set(weights) - set(self.task_names))
        if unknown:
            raise ValueError(f"`weights` names unknown tasks {unknown}; tasks are {self.task_names}.")
        bad = {k: v for k, v in weights.items() if not float(v) >= 0}
        if bad:
            raise ValueError(f"`weights` must be >= 0, got {bad}.")
        self.weights_by_task = {n: float(weights.get(n, 1.0)) for n in self.task_names}

    def weight(self, name):
        return keras.ops.convert_to_tensor(self.weights_by_task[name], "float32")

    def get_config(self):
        return {**super().get_config(), "weights": dict(self.weights_by_task)}


@keras.saving.register_keras_serializable(package="tfmot_mtl")
class UncertaintyWeighting(TaskWeighting):
    """Homoscedastic-uncertainty weighting: ``exp(-s_t) * L_t + s_t``, ``s_t`` trainable.

    Args:
        task_names: the tasks.
        initial_log_variance: starting ``s_t`` (0 = weight 1).
    """

    def __init__(self, task_names: Sequence[str], initial_log_variance: float = 0.0, **kwargs):
        super().__init__(task_names, **kwargs)
        self.initial_log_variance = float(initial_log_variance)
        self.log_variance = self.add_weight(
            shape=(len(self.task_names),), name="log_variance", trainable=True,
            initializer=keras.initializers.Constant(self.initial_log_variance))

    def weight(self, name):
        return keras.ops.exp(-self.log_variance[self.index[name]])

    def weighted(self, name, values):
        return self.weight(name) * values + self.log_variance[self.index[name]]

    def get_config(self):
        return {**super().get_config(), "initial_log_variance": self.initial_log_variance}


@keras.saving.register_keras_serializable(package="tfmot_mtl")
class DynamicWeightAveraging(TaskWeighting):
    """Dynamic weight averaging over windows of ``period`` training steps.

    Args:
        task_names: the tasks.
        temperature: softmax temperature ``tau`` (> 0; larger = closer to equal weights).
        period: training steps per window (the paper uses one epoch: pass the steps per epoch).
    """

    def __init__(self, task_names: Sequence[str], temperature: float = 2.0, period: int = 50, **kwargs):
        super().__init__(task_names, **kwargs)
        if not float(temperature) > 0:
            raise ValueError(f"`temperature` must be > 0, got {temperature!r}.")
        if isinstance(period, bool) or not isinstance(period, int) or period < 1:
            raise ValueError(f"`period` must be an integer >= 1, got {period!r}.")
        self.temperature = float(temperature)
        self.period = period
        n = len(self.task_names)

        def state(name, shape, value=0.0):
            return self.add_weight(shape=shape, name=name, trainable=False,
                                   initializer=keras.initializers.Constant(value))

        self.weights_var = state("weights", (n,), 1.0)
        self.window_sum = state("window_sum", (n,))
        self.batch_loss = state("batch_loss", (n,))
        self.previous = state("previous", (2, n))  # mean loss of the last and second-last window
        self.steps = state("steps", ())
        self.windows = state("windows", ())

    def weight(self, name):
        return self.weights_var[self.index[name]]

    def observe(self, name, mean_loss):
        super().observe(name, mean_loss)
        i = self.index[name]
        one_hot = keras.ops.one_hot(i, len(self.task_names))
        self.batch_loss.assign(self.batch_loss * (1 - one_hot) + one_hot * keras.ops.cast(mean_loss, "float32"))

    def update(self):
        ops = keras.ops
        self.window_sum.assign_add(ops.stop_gradient(self.batch_loss))
        self.steps.assign_add(1.0)
        closed = ops.cast(self.steps >= self.period, "float32")
        mean = self.window_sum / ops.maximum(self.steps, 1.0)
        previous = closed * ops.stack([mean, self.previous[0]]) + (1 - closed) * self.previous
        windows = self.windows + closed
        ratio = previous[0] / ops.maximum(previous[1], 1e-12)
        n = float(len(self.task_names))
        dwa = n * ops.softmax(ratio / self.temperature)
        ready = ops.cast(windows >= 2, "float32") * closed
        self.weights_var.assign(ready * dwa + (1 - ready) * self.weights_var)
        self.previous.assign(previous)
        self.windows.assign(windows)
        self.window_sum.assign(self.window_sum * (1 - closed))
        self.steps.assign(self.steps * (1 - closed))

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature, "period": self.period}


def make_weighting(weighting: str | TaskWeighting | Mapping[str, float] | None,
                   tasks: TasksLike, **kwargs) -> TaskWeighting:
    """A weighting by name (``"fixed"``, ``"uncertainty"``, ``"dwa"``), a ``{task: weight}``
    mapping (fixed weights), ``None`` (all 1) or a :class:`TaskWeighting` instance."""
    names = [t.name for t in as_task_list(tasks)]
    if isinstance(weighting, TaskWeighting):
        missing = sorted(set(names) - set(weighting.task_names))
        if missing:
            raise ValueError(f"the weighting has no weight for tasks {missing}.")
        return weighting
    if weighting is None or isinstance(weighting, Mapping):
        return FixedWeighting(names, weighting, **kwargs)
    key = str(weighting).lower()
    if key == "fixed":
        return FixedWeighting(names, **kwargs)
    if key == "uncertainty":
        return UncertaintyWeighting(names, **kwargs)
    if key == "dwa":
        return DynamicWeightAveraging(names, **kwargs)
    raise ValueError(f"`weighting` must be one of {SCHEMES}, a {{task: weight}} dict or a "
                     f"TaskWeighting, got {weighting!r}.")


@keras.saving.register_keras_serializable(package="tfmot_mtl")
class WeightedTaskLoss(keras.losses.Loss):
    """One task's loss with its learned weight applied (used by the training wrappers)."""

    def __init__(self, task: Task, weighting: TaskWeighting, **kwargs):
        kwargs.setdefault("name", f"{task.name}_weighted")
        super().__init__(**kwargs)
        self.task = task
        self.weighting = weighting

    def call(self, y_true, y_pred):
        values = self.task.loss.call(y_true, y_pred)
        self.weighting.observe(self.task.name, keras.ops.mean(values))
        return self.weighting.weighted(self.task.name, values)


def weighted_losses(tasks: Sequence[Task], weighting: TaskWeighting) -> dict:
    """``{task name: WeightedTaskLoss}`` for ``compile(loss=...)`` of a dict-output model."""
    return {t.name: WeightedTaskLoss(t, weighting) for t in tasks}


class TaskWeightedModel(keras.Model):
    """Trains ``model`` with learned task weights; ``.model`` is the plain model to export.

    ``compile`` takes no ``loss``: the tasks' losses, weighted, are used. Regularization
    losses of ``model`` (e.g. group lasso) are added as usual.

    Example::

        trainer = tm.distill.TaskWeightedModel(model, tasks, weighting="uncertainty")
        trainer.compile(keras.optimizers.Adam(1e-3))
        trainer.fit(train, epochs=8)   # logs {task}_weight and {task}_task_loss
        trainer.model.save("model.keras")
    """

    def __init__(self, model: keras.Model, tasks: TasksLike,
                 weighting: str | TaskWeighting | Mapping[str, float] | None = "uncertainty",
                 name: str | None = None, **kwargs):
        super().__init__(name=name or f"{model.name}_task_weighted", **kwargs)
        if not isinstance(model, keras.Model):
            raise ValueError(f"`model` must be a keras.Model, got {type(model).__name__}.")
        self.tasks = as_task_list(tasks)
        _check_outputs(model, self.tasks)
        self.model = model
        self.weighting = make_weighting(weighting, self.tasks)

    def call(self, inputs, training=None):
        return self.model(inputs, training=training)

    def compile(self, optimizer="adam", loss=None, **kwargs):
        if loss is not None:
            raise ValueError("TaskWeightedModel.compile takes no `loss`: it uses the tasks' losses.")
        super().compile(optimizer=optimizer, loss=weighted_losses(self.tasks, self.weighting), **kwargs)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        loss = super().compute_loss(x, y, y_pred, sample_weight, training=training)
        if training:
            self.weighting.update()
        return loss


def _check_outputs(model: keras.Model, tasks: Sequence[Task]) -> None:
    from tfmot_mtl.graph.walk import output_names

    names = set(output_names(model))
    missing = sorted({t.name for t in tasks} - names)
    if missing:
        raise ValueError(f"the model has no outputs {missing} for these tasks; its outputs are "
                         f"{sorted(names)}.")
