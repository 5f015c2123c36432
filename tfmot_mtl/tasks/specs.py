"""Task specifications for multi-task models: what each output predicts and how it is scored.

A :class:`Task` names one model output, its kind, its training loss (built from
``keras.ops``) and its evaluation metrics. Metrics accumulate exactly over a whole
dataset in numpy (:meth:`Task.accumulator`); :func:`evaluate` runs a model over a
``tf.data`` dataset and :func:`delta_m` compares two sets of results.

Units: metrics named ``miou``, ``pixel_acc``, ``delta*``, ``within_*``, ``accuracy``
and ``f1`` are percentages (0-100); angles are in degrees; ``abs_err`` and ``rmse``
are in the depth target's units; ``rel_err`` is a fraction.
"""
from __future__ import annotations

import types
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence, Union

import keras

from tfmot_mtl.tasks.losses import default_loss
from tfmot_mtl.tasks.metrics import HIGHER_IS_BETTER, KIND_METRICS, make_accumulator

DENSE_KINDS = ("segmentation", "depth", "normals")
IMAGE_KINDS = ("classification", "binary")
KINDS = DENSE_KINDS + IMAGE_KINDS

@dataclass(frozen=True)
class Task:
    """One output of a multi-task model.

    Attributes:
        name: the output key (the model's dict output and the dataset's target key).
        kind: one of "segmentation", "depth", "normals", "classification", "binary".
        output_channels: channels of the model output (classes, 1 for depth, 3 for normals,
            attributes for binary).
        class_names: optional names of classes / attributes.
        ignore_index: label ignored by segmentation / classification loss and metrics.
        metrics: metric names reported by the accumulator and used by :func:`delta_m`;
            empty means the kind's defaults (see ``KIND_METRICS``).
        loss: Keras loss ``(y_true, y_pred) -> scalar``; None builds the kind's default
            (masked CE / masked L1 / masked cosine / masked sigmoid CE).

    Equality and hashing ignore ``loss`` (it is derived from the other fields unless given).
    """

    name: str
    kind: str
    output_channels: int
    class_names: tuple[str, ...] = field(default=())
    ignore_index: int = -1
    metrics: tuple[str, ...] = field(default=())
    loss: Any = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"Task name must be a non-empty string, got {self.name!r}.")
        if self.kind not in KINDS:
            raise ValueError(f"Task {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}.")
        channels = int(self.output_channels)
        fixed = {"depth": 1, "normals": 3}.get(self.kind)
        if channels < 1 or (fixed is not None and channels != fixed):
            need = fixed if fixed is not None else "a positive integer"
            raise ValueError(
                f"Task {self.name!r}: output_channels for kind {self.kind!r} must be {need}, "
                f"got {self.output_channels!r}."
            )
        if self.kind in ("segmentation", "classification") and channels < 2:
            raise ValueError(f"Task {self.name!r}: {self.kind} needs >= 2 classes.")
        names = tuple(str(n) for n in self.class_names)
        if names and len(names) != channels:
            raise ValueError(
                f"Task {self.name!r}: got {len(names)} class_names for {channels} output channels."
            )
        default, extra = KIND_METRICS[self.kind]
        metrics = tuple(self.metrics) or default
        unknown = [m for m in metrics if m not in default + extra]
        if unknown:
            raise ValueError(
                f"Task {self.name!r}: unknown metrics {unknown} for kind {self.kind!r}; "
                f"choose from {default + extra}."
            )
        object.__setattr__(self, "output_channels", channels)
        object.__setattr__(self, "class_names", names)
        object.__setattr__(self, "ignore_index", int(self.ignore_index))
        object.__setattr__(self, "metrics", metrics)
        if self.loss is None:
            object.__setattr__(self, "loss", default_loss(self.kind, self.name, self.ignore_index))

    @property
    def is_dense(self) -> bool:
        """True for per-pixel tasks (the model output has the image's spatial size)."""
        return self.kind in DENSE_KINDS

    @property
    def higher_is_better(self) -> Mapping[str, bool]:
        """Read-only mapping metric name -> True when a larger value is better."""
        return types.MappingProxyType({m: HIGHER_IS_BETTER[m] for m in self.metrics})

    def accumulator(self):
        """A fresh numpy accumulator with ``update_state(y_true, y_pred)``, ``result()`` and
        ``reset_state()`` (the Keras metric protocol)."""
        return make_accumulator(self)

    def get_config(self) -> dict:
        """JSON-serializable dict (Keras' ``get_config`` convention); a non-default loss is
        stored via Keras serialization."""
        config = {
            "name": self.name,
            "kind": self.kind,
            "output_channels": self.output_channels,
            "class_names": list(self.class_names),
            "ignore_index": self.ignore_index,
            "metrics": list(self.metrics),
        }
        default = default_loss(self.kind, self.name, self.ignore_index)
        ser = keras.saving.serialize_keras_object
        if ser(self.loss) != ser(default):
            config["loss"] = ser(self.loss)
        return config

    @classmethod
    def from_config(cls, config: Mapping) -> "Task":
        """Inverse of :meth:`get_config`."""
        config = dict(config)
        if config.get("loss") is not None:
            config["loss"] = keras.saving.deserialize_keras_object(config["loss"])
        config["class_names"] = tuple(config.get("class_names", ()))
        config["metrics"] = tuple(config.get("metrics", ()))
        return cls(**config)


# ------------------------------------------------------------------------- presets


def segmentation(
    name: str = "segmentation",
    num_classes: int = 2,
    ignore_index: int = -1,
    class_names: Sequence[str] = (),
    metrics: Sequence[str] = (),
) -> Task:
    """Semantic segmentation: masked softmax CE; mIoU (%) and pixel accuracy (%)."""
    return Task(name, "segmentation", num_classes, tuple(class_names), ignore_index, tuple(metrics))


def depth(name: str = "depth", metrics: Sequence[str] = ()) -> Task:
    """Depth: L1 on valid pixels (target > 0); abs_err, rel_err, delta1-3 (%), optional rmse."""
    return Task(name, "depth", 1, metrics=tuple(metrics))


def normals(name: str = "normals", metrics: Sequence[str] = ()) -> Task:
    """Surface normals: 1 - cosine on non-zero targets; angles (deg), within_* (%)."""
    return Task(name, "normals", 3, metrics=tuple(metrics))


def classification(
    name: str = "classification",
    num_classes: int = 2,
    class_names: Sequence[str] = (),
    metrics: Sequence[str] = (),
) -> Task:
    """Image classification: softmax CE from logits; accuracy (%) and macro F1 (%)."""
    return Task(name, "classification", num_classes, tuple(class_names), metrics=tuple(metrics))


def binary(
    name: str = "attributes",
    num_attributes: int = 1,
    attribute_names: Sequence[str] = (),
    metrics: Sequence[str] = (),
) -> Task:
    """Binary attributes: sigmoid CE from logits; accuracy and positive-class F1 (%, mean
    over attributes)."""
    return Task(name, "binary", num_attributes, tuple(attribute_names), metrics=tuple(metrics))


TasksLike = Union[Sequence[Task], Mapping[str, Task]]


def as_task_list(tasks: TasksLike | Task) -> list[Task]:
    """Normalise a Task, a sequence of Tasks or a {name: Task} mapping to a list."""
    if isinstance(tasks, Task):
        return [tasks]
    items = list(tasks.values()) if isinstance(tasks, Mapping) else list(tasks)
    for t in items:
        if not isinstance(t, Task):
            raise ValueError(f"tasks must contain Task objects, got {type(t).__name__}: {t!r}.")
    names = [t.name for t in items]
    if len(set(names)) != len(names):
        raise ValueError(f"tasks have duplicate names: {names}.")
    return items


def compile_args(
    tasks: TasksLike, loss_weights: Mapping[str, float] | None = None
) -> dict[str, dict[str, Any]]:
    """Keyword arguments for ``model.compile`` of a dict-output model.

    Returns ``{"loss": {name: task.loss}, "loss_weights": {name: weight}}``; tasks not
    in ``loss_weights`` get weight 1.0. Use as ``model.compile(opt, **compile_args(tasks))``.
    """
    tasks = as_task_list(tasks)
    weights = dict(loss_weights or {})
    unknown = sorted(set(weights) - {t.name for t in tasks})
    if unknown:
        raise ValueError(
            f"loss_weights names unknown tasks {unknown}; tasks are {[t.name for t in tasks]}."
        )
    return {
        "loss": {t.name: t.loss for t in tasks},
        "loss_weights": {t.name: float(weights.get(t.name, 1.0)) for t in tasks},
    }
