"""Multi-task knowledge distillation from a dense parent, on ``keras.distillation``.

:class:`MultiTaskDistiller` is a ``keras.distillation.Distiller`` whose distillation losses
are made from the :class:`~tfmot_mtl.tasks.Task` specs (one :class:`TaskDistillation` per
task, weighted per task), whose supervised loss is the tasks' own losses combined by a
:mod:`task weighting <tfmot_mtl.distill.weighting>`, and which can also match intermediate
features at named layers through a trainable 1x1 adapter where the student is narrower than
the teacher (a stripped model usually is). The student keeps its own widths; only its
output names must be the teacher's. ``distiller.student`` is the plain Keras model to save:
the adapters and the weighting stay with the distiller.

Per batch it minimises ``a * sum_t weighted(L_t) + (1 - a) * s * (sum_t d_t * D_t + f * sum F)``
with ``a = student_loss_weight``, ``D_t`` the task's distillation loss, ``d_t`` its weight,
``F`` the feature losses and ``s`` 1, or with teacher annealing (Clark et al. 2019, "BAM!
Born-Again Multi-Task Networks") ``max(0, 1 - step / anneal_steps)``: the student first
follows the teacher and ends on its labels alone, so it is not held back by a teacher it
can outgrow (a briefly trained parent). It logs ``{task}_distill_loss`` (unscaled) and
``distill_scale`` next to Keras' own ``student_loss``, ``distillation_loss`` and ``total_loss``.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import keras

from tfmot_mtl.utils import _keras_compat
from tfmot_mtl.distill.losses import TaskDistillation, check_temperature
from tfmot_mtl.distill.weighting import TaskWeighting, make_weighting, weighted_losses
from tfmot_mtl.tasks import TasksLike, as_task_list
from tfmot_mtl.graph.walk import output_names


class AdaptedFeatureDistillation(keras.distillation.FeatureDistillation):
    """Mean squared error between a teacher layer's output and ``adapter(student layer)``.

    ``adapter`` is a 1x1 convolution (or a Dense layer on non-image features) from the
    student's channels to the teacher's, or None when the widths match.
    """

    def __init__(self, teacher_layer_name: str, student_layer_name: str, adapter=None):
        super().__init__(loss=keras.losses.MeanSquaredError(), teacher_layer_name=teacher_layer_name,
                         student_layer_name=student_layer_name)
        self.adapter = adapter

    scale = None  # a scalar tensor the distiller sets per step (teacher annealing)

    def validate_outputs(self, teacher_outputs, student_outputs):
        pass  # the adapter reconciles the channel axis; spatial shapes are checked at build

    def compute_loss(self, teacher_outputs, student_outputs, **kwargs):
        student = self.adapter(student_outputs) if self.adapter is not None else student_outputs
        value = super().compute_loss(keras.ops.stop_gradient(teacher_outputs), student)
        return value if self.scale is None else value * self.scale


class MultiTaskDistiller(keras.distillation.Distiller):
    """Distils a multi-task teacher into a student with the same output names.

    Args:
        teacher: the trained dense model (dict outputs). ``Distiller`` sets its
            ``trainable`` to False.
        student: the model to train, e.g. ``strip_channels``' result.
        tasks: the Task specs of the outputs (their kinds pick the distillation losses).
        temperature: softening temperature of logits outputs (> 0).
        distill_weights: ``{task: weight >= 0}`` of the distillation terms (default 1).
        student_loss_weight: ``a`` in [0, 1], the share of the supervised loss.
        weighting: how the supervised task losses add up: "fixed", "uncertainty", "dwa",
            a ``{task: weight}`` dict or a TaskWeighting (see :mod:`.weighting`).
        features: layer names present in both models, or ``(teacher_layer, student_layer)``
            pairs, whose outputs are matched (MSE) through a 1x1 adapter when the widths differ.
        feature_weight: weight of each feature term (>= 0).
        anneal_steps: teacher annealing: the distillation terms are scaled by
            ``max(0, 1 - step / anneal_steps)`` (``step`` the optimizer's iteration count),
            reaching 0 after ``anneal_steps`` updates; ``None`` (default) keeps them at full
            weight. Give the number of training steps, e.g. ``epochs * steps_per_epoch``.
    """

    def __init__(self, teacher: keras.Model, student: keras.Model, tasks: TasksLike,
                 temperature: float = 2.0, distill_weights: Mapping[str, float] | None = None,
                 student_loss_weight: float = 0.5,
                 weighting: str | TaskWeighting | Mapping[str, float] | None = None,
                 features: Sequence[str | tuple[str, str]] = (), feature_weight: float = 1.0,
                 anneal_steps: int | None = None, name: str = "multitask_distiller", **kwargs):
        tasks = as_task_list(tasks)
        _check_models(teacher, student, tasks)
        temperature = check_temperature(temperature)
        weights = _check_weights(distill_weights, tasks, "distill_weights")
        if isinstance(feature_weight, bool) or not float(feature_weight) >= 0:
            raise ValueError(f"`feature_weight` must be a number >= 0, got {feature_weight!r}.")
        if anneal_steps is not None and (isinstance(anneal_steps, bool) or not isinstance(anneal_steps, int)
                                         or anneal_steps < 1):
            raise ValueError(f"`anneal_steps` must be an integer >= 1 or None, got {anneal_steps!r}.")
        losses = [TaskDistillation(t, temperature) for t in tasks]
        loss_weights = [weights[t.name] for t in tasks]
        feature_losses = [_feature_loss(teacher, student, pair) for pair in features]
        super().__init__(teacher=teacher, student=student,
                         distillation_losses=losses + feature_losses,
                         distillation_loss_weights=loss_weights + [float(feature_weight)] * len(feature_losses),
                         student_loss_weight=student_loss_weight, name=name, **kwargs)
        self.tasks = tasks
        self.temperature = temperature
        self.weighting = make_weighting(weighting, tasks)
        self.feature_adapters = [f.adapter for f in feature_losses if f.adapter is not None]
        self.distill_trackers = [keras.metrics.Mean(name=f"{t.name}_distill_loss") for t in tasks]
        for loss, tracker in zip(losses, self.distill_trackers):
            loss.tracker = tracker
        self.anneal_steps = anneal_steps
        self.scale_tracker = keras.metrics.Mean(name="distill_scale") if anneal_steps else None

    def distill_scale(self):
        """The factor of the distillation terms at the current optimizer step (1 without annealing)."""
        if not self.anneal_steps:
            return keras.ops.convert_to_tensor(1.0)
        step = keras.ops.cast(self.optimizer.iterations, "float32")
        return keras.ops.clip(1.0 - step / float(self.anneal_steps), 0.0, 1.0)

    def compile(self, optimizer="adam", loss=None, metrics=None, **kwargs):
        """Compiles with the tasks' own losses, weighted (no ``loss`` argument)."""
        if loss is not None:
            raise ValueError("MultiTaskDistiller.compile takes no `loss`: it uses the tasks' losses.")
        super().compile(optimizer=optimizer, loss=weighted_losses(self.tasks, self.weighting),
                        metrics=metrics, **kwargs)
        # Keras 3.15: the student-loss dict is wrapped in a TrackedDict keras.tree does not match.
        _keras_compat.untrack_student_loss(self)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if self.anneal_steps:
            scale = self.distill_scale()
            for term in self.distillation_losses:
                term.scale = scale
            self.scale_tracker.update_state(scale)
        loss = super().compute_loss(x, y, y_pred, sample_weight, training=training)
        if training:
            self.weighting.update()
        return loss


def multitask_distiller(teacher: keras.Model, student: keras.Model, tasks: TasksLike,
                        **kwargs) -> MultiTaskDistiller:
    """A :class:`MultiTaskDistiller` (see there for the arguments)."""
    return MultiTaskDistiller(teacher, student, tasks, **kwargs)


def _check_models(teacher, student, tasks) -> None:
    for role, model in (("teacher", teacher), ("student", student)):
        if not isinstance(model, keras.Model):
            raise ValueError(f"`{role}` must be a keras.Model, got {type(model).__name__}.")
    t_names, s_names = set(output_names(teacher)), set(output_names(student))
    if t_names != s_names:
        raise ValueError(f"teacher and student outputs differ: teacher {sorted(t_names)}, "
                         f"student {sorted(s_names)}; the student must keep the teacher's output names.")
    missing = sorted({t.name for t in tasks} - t_names)
    if missing:
        raise ValueError(f"tasks {missing} are not outputs of the models ({sorted(t_names)}).")


def _check_weights(weights, tasks, argument: str) -> dict:
    weights = dict(weights or {})
    names = [t.name for t in tasks]
    unknown = sorted(set(weights) - set(names))
    if unknown:
        raise ValueError(f"`{argument}` names unknown tasks {unknown}; tasks are {names}.")
    for key, value in weights.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise ValueError(f"`{argument}[{key!r}]` must be a number >= 0, got {value!r}.")
    return {n: float(weights.get(n, 1.0)) for n in names}


def _feature_loss(teacher, student, pair) -> AdaptedFeatureDistillation:
    t_name, s_name = (pair, pair) if isinstance(pair, str) else tuple(pair)
    shapes = {}
    for role, model, layer_name in (("teacher", teacher, t_name), ("student", student, s_name)):
        try:
            shapes[role] = tuple(model.get_layer(layer_name).output.shape)
        except ValueError:
            raise ValueError(f"`features`: the {role} has no layer {layer_name!r}.") from None
    t_shape, s_shape = shapes["teacher"], shapes["student"]
    if t_shape[:-1] != s_shape[:-1]:
        raise ValueError(f"`features`: teacher layer {t_name!r} {t_shape} and student layer "
                         f"{s_name!r} {s_shape} differ in more than the channel axis.")
    adapter = None
    if t_shape[-1] != s_shape[-1]:
        if len(s_shape) == 4:
            adapter = keras.layers.Conv2D(t_shape[-1], 1, use_bias=False, name=f"adapt_{s_name}")
        else:
            adapter = keras.layers.Dense(t_shape[-1], use_bias=False, name=f"adapt_{s_name}")
        adapter.build(s_shape)
    return AdaptedFeatureDistillation(t_name, s_name, adapter)
