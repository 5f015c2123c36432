"""Per-task distillation losses: what a student output should match in its teacher's.

One loss per task kind, each a ``keras.losses.Loss`` of ``(teacher_output, student_output)``
(so Keras reduces it and scales it under ``tf.distribute`` like any loss), and
:class:`TaskDistillation`, a ``keras.distillation.DistillationLoss`` that applies one of
them to one named output of a dict-output teacher and student:

- segmentation, classification logits: KL(softmax(t / T) || softmax(s / T)) * T^2
  (Hinton et al. 2015), summed over classes, averaged over pixels / images;
- binary attributes: sigmoid cross-entropy of the student's logits / T against the
  teacher's probabilities sigmoid(t / T), times T^2;
- depth: L1 to the teacher's depth on the pixels where the teacher predicts a valid
  (positive) depth, so unlabelled images distil too;
- normals: 1 - cos(teacher, student) where the teacher's normal is non-zero.
"""
from __future__ import annotations

import keras

from tfmot_mtl.tasks.losses import batch_mean, unit_vectors
from tfmot_mtl.tasks.specs import Task

DISTILLABLE_KINDS = ("segmentation", "classification", "binary", "depth", "normals")


def check_temperature(temperature) -> float:
    """``temperature`` as a float, or a clear ``ValueError`` unless it is a number > 0."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
        raise ValueError(f"`temperature` must be a number > 0, got {temperature!r}.")
    return float(temperature)


@keras.saving.register_keras_serializable(package="tfmot_mtl")
class SoftTargetKL(keras.losses.Loss):
    """T^2 * KL(softmax(teacher / T) || softmax(student / T)) over the last axis."""

    def __init__(self, temperature: float = 2.0, name: str = "soft_target_kl", **kwargs):
        super().__init__(name=name, **kwargs)
        self.temperature = check_temperature(temperature)

    def call(self, y_true, y_pred):
        t = keras.ops.cast(y_true, "float32") / self.temperature
        s = keras.ops.cast(y_pred, "float32") / self.temperature
        log_p = keras.ops.log_softmax(t, axis=-1)
        log_q = keras.ops.log_softmax(s, axis=-1)
        kl = keras.ops.sum(keras.ops.exp(log_p) * (log_p - log_q), axis=-1)
        return batch_mean(kl * self.temperature**2, keras.ops.ones_like(kl))

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}


@keras.saving.register_keras_serializable(package="tfmot_mtl")
class SoftBinaryCE(keras.losses.Loss):
    """T^2 * sigmoid cross-entropy of ``student / T`` against ``sigmoid(teacher / T)``."""

    def __init__(self, temperature: float = 2.0, name: str = "soft_binary_ce", **kwargs):
        super().__init__(name=name, **kwargs)
        self.temperature = check_temperature(temperature)

    def call(self, y_true, y_pred):
        p = keras.ops.sigmoid(keras.ops.cast(y_true, "float32") / self.temperature)
        x = keras.ops.cast(y_pred, "float32") / self.temperature
        bce = keras.ops.relu(x) - x * p + keras.ops.log1p(keras.ops.exp(-keras.ops.abs(x)))
        return batch_mean(bce * self.temperature**2, keras.ops.ones_like(bce))

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}


@keras.saving.register_keras_serializable(package="tfmot_mtl")
class TeacherL1(keras.losses.Loss):
    """Mean |student - teacher| over pixels where the teacher's depth is > 0."""

    def __init__(self, name: str = "teacher_l1", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        t = keras.ops.cast(y_true, "float32")
        s = keras.ops.cast(y_pred, "float32")
        return batch_mean(keras.ops.abs(s - t), t > 0)


@keras.saving.register_keras_serializable(package="tfmot_mtl")
class TeacherCosine(keras.losses.Loss):
    """Mean 1 - cos(teacher, student) over pixels where the teacher's normal is non-zero."""

    def __init__(self, name: str = "teacher_cosine", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        t = keras.ops.cast(y_true, "float32")
        s = keras.ops.cast(y_pred, "float32")
        cos = keras.ops.sum(unit_vectors(t) * unit_vectors(s), axis=-1)
        return batch_mean(1.0 - cos, keras.ops.sum(keras.ops.square(t), -1) > 0)


def kind_loss(task: Task, temperature: float = 2.0) -> keras.losses.Loss:
    """The distillation loss of ``task``'s kind (see the module docstring)."""
    temperature = check_temperature(temperature)
    name = f"{task.name}_distill"
    if task.kind in ("segmentation", "classification"):
        return SoftTargetKL(temperature, name=name)
    if task.kind == "binary":
        return SoftBinaryCE(temperature, name=name)
    if task.kind == "depth":
        return TeacherL1(name=name)
    if task.kind == "normals":
        return TeacherCosine(name=name)
    raise ValueError(
        f"Task {task.name!r}: no distillation loss for kind {task.kind!r}; "
        f"supported kinds are {DISTILLABLE_KINDS}."
    )


class TaskDistillation(keras.distillation.DistillationLoss):
    """Distils one output of a dict-output model: ``loss(teacher[name], student[name])``.

    Args:
        task: the task whose output is distilled; its kind picks the loss.
        temperature: softening temperature of logits outputs (> 0).
        loss: a ``keras.losses.Loss`` of ``(teacher, student)`` replacing the kind's default.
    """

    def __init__(self, task: Task, temperature: float = 2.0, loss: keras.losses.Loss | None = None):
        if not isinstance(task, Task):
            raise ValueError(f"`task` must be a tfmot_mtl.tasks.Task, got {task!r}.")
        self.task = task
        self.temperature = check_temperature(temperature)
        self.loss = loss if loss is not None else kind_loss(task, temperature)
        self.tracker = None  # a keras.metrics.Mean set by the distiller that logs this loss
        self.scale = None  # a scalar tensor the distiller sets per step (teacher annealing)

    def validate_outputs(self, teacher_outputs, student_outputs):
        for role, outputs in (("teacher", teacher_outputs), ("student", student_outputs)):
            if not isinstance(outputs, dict) or self.task.name not in outputs:
                names = sorted(outputs) if isinstance(outputs, dict) else type(outputs).__name__
                raise ValueError(f"The {role} has no output {self.task.name!r} (outputs: {names}).")

    def compute_loss(self, teacher_outputs, student_outputs, **kwargs):
        teacher = keras.ops.stop_gradient(teacher_outputs[self.task.name])
        student = student_outputs[self.task.name]
        value = self.loss(teacher, student)
        if self.tracker is not None:
            self.tracker.update_state(keras.ops.mean(self.loss.call(teacher, student)))
        return value if self.scale is None else value * self.scale

    def get_config(self):
        return {"task": self.task.get_config(), "temperature": self.temperature,
                "loss": keras.saving.serialize_keras_object(self.loss)}

    @classmethod
    def from_config(cls, config):
        return cls(Task.from_config(config["task"]), config["temperature"],
                   keras.saving.deserialize_keras_object(config["loss"]))
