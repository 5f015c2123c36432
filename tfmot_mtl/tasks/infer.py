"""Task specs of a user's model, read from its compiled losses and output shapes.

A model compiled the usual way (``model.compile(loss={"seg": "sparse_categorical_crossentropy",
"cls": ...})``) already says what each output predicts; :func:`infer_tasks` turns that into
:class:`~tfmot_mtl.tasks.Task` objects so that nobody writes task specs by hand:

=========================================  ==================  ================
compiled loss                              output shape        task kind
=========================================  ==================  ================
sparse categorical cross-entropy           (B, H, W, C)        segmentation (C classes)
sparse categorical cross-entropy           (B, C)              classification (C classes)
binary cross-entropy (``from_logits``)     (B, K)              binary (K attributes)
L1 / L2 / Huber                            (B, H, W, 1)        depth
cosine similarity / distance               (B, H, W, 3)        normals
=========================================  ==================  ================

Anything else (no loss for an output, a loss of another kind, a shape that does not fit) is
ambiguous: the error names the output, what was found and the accepted kinds, and the task
can be given instead (``tasks=[tm.tasks.segmentation("seg", 13), ...]`` or a JSON file). Each
inferred task trains with the model's own compiled loss object.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import keras

from tfmot_mtl.tasks.specs import KINDS, Task, as_task_list

# The loss families recognised, by the lower-cased class or function name of the loss.
_FAMILIES = {
    "ce": ("sparsecategoricalcrossentropy", "sparse_categorical_crossentropy", "maskedsparsecrossentropy"),
    "bce": ("binarycrossentropy", "binary_crossentropy", "binaryfocalcrossentropy",
            "binary_focal_crossentropy", "maskedbinarycrossentropy"),
    "regression": ("meanabsoluteerror", "mean_absolute_error", "mae", "meansquarederror",
                   "mean_squared_error", "mse", "huber", "maskedl1"),
    "cosine": ("cosinesimilarity", "cosine_similarity", "maskedcosinedistance"),
}
ACCEPTED = (
    "sparse categorical cross-entropy on a (B, H, W, C) output -> segmentation, on a (B, C) output -> "
    "classification; binary cross-entropy with from_logits=True on a (B, K) output -> binary; "
    "L1/L2/Huber on a (B, H, W, 1) output -> depth; cosine similarity on a (B, H, W, 3) output -> normals"
)


def infer_tasks(model: keras.Model, tasks: Any = None) -> list[Task]:
    """One :class:`Task` per model output, in the model's output order.

    Args:
        model: a functional or Sequential Keras model; outputs without a given task need the
            model compiled with a loss for them.
        tasks: optional tasks to use as given: a Task, a list or ``{name: Task}`` of Tasks,
            or a path to a JSON task file (:func:`tfmot_mtl.tasks.load_tasks`). Outputs
            without one are inferred.

    Raises:
        ValueError: a given task that is not an output of the model or whose channel count
            differs from the output's; an output whose kind cannot be inferred (the message
            names it, what was found and the accepted kinds).
    """
    from tfmot_mtl.graph.walk import output_names

    names = output_names(model)
    given = {t.name: t for t in _given(tasks)}
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise ValueError(f"tasks {unknown} are not outputs of model '{model.name}'; its outputs are {names}.")
    shapes = dict(zip(names, (tuple(t.shape) for t in model.outputs)))
    losses = _compiled_losses(model, names)
    out = []
    for name in names:
        task = given.get(name) or _infer_one(name, shapes[name], losses.get(name))
        _check_channels(task, shapes[name])
        out.append(task)
    return out


def _given(tasks: Any) -> list[Task]:
    if tasks is None:
        return []
    if isinstance(tasks, (str, bytes)) or hasattr(tasks, "__fspath__"):
        from tfmot_mtl.tasks.files import load_tasks

        return load_tasks(tasks)
    return as_task_list(tasks)


def _compiled_losses(model: keras.Model, names: Sequence[str]) -> dict[str, Any]:
    """``{output name: loss}`` as given to ``compile`` (a dict, a list or one loss)."""
    loss = getattr(model, "loss", None)
    if loss is None:
        return {}
    if isinstance(loss, Mapping) or (hasattr(loss, "keys") and hasattr(loss, "__getitem__")):
        return {str(k): loss[k] for k in loss.keys()}  # also Keras' tracked dict wrapper
    if isinstance(loss, (list, tuple)):
        return dict(zip(names, loss))
    return {names[0]: loss} if len(names) == 1 else {name: loss for name in names}


def _family(loss: Any) -> str | None:
    if isinstance(loss, str):
        key = loss.lower()
    else:
        fn = getattr(loss, "fn", None)  # keras.losses.LossFunctionWrapper of a function
        key = (type(loss).__name__ if not callable(loss) or isinstance(loss, keras.losses.Loss)
               else getattr(loss, "__name__", type(loss).__name__)).lower()
        if fn is not None and type(loss).__name__ == "LossFunctionWrapper":
            key = getattr(fn, "__name__", key).lower()
    for family, keys in _FAMILIES.items():
        if key in keys:
            return family
    return None


def _from_logits(loss: Any) -> bool:
    if isinstance(loss, str):
        return False
    if hasattr(loss, "from_logits"):
        return bool(loss.from_logits)
    return bool(getattr(loss, "_fn_kwargs", {}).get("from_logits", False))


def _loss_name(loss: Any) -> str:
    return repr(loss) if isinstance(loss, str) else type(loss).__name__


def _infer_one(name: str, shape: tuple, loss: Any) -> Task:
    if loss is None:
        raise ValueError(f"output '{name}' (shape {shape}) has no compiled loss to infer its task from: "
                         f"compile the model with loss={{'{name}': ...}} or pass tasks= (a Task of kind "
                         f"{list(KINDS)} or a JSON task file). Inferred: {ACCEPTED}.")
    family, rank, channels = _family(loss), len(shape), shape[-1]
    fn = loss if not isinstance(loss, str) else keras.losses.get(loss)
    if family == "ce" and rank == 4 and channels and channels >= 2:
        return Task(name, "segmentation", channels, loss=fn)
    if family == "ce" and rank == 2 and channels and channels >= 2:
        return Task(name, "classification", channels, loss=fn)
    if family == "bce" and rank == 2 and channels:
        if not _from_logits(loss):
            raise ValueError(f"output '{name}': binary attributes are scored from logits, but its loss "
                             f"{_loss_name(loss)} has from_logits=False: end the head with a linear layer "
                             "and compile with BinaryCrossentropy(from_logits=True), or pass tasks=.")
        return Task(name, "binary", channels, loss=fn)
    if family == "regression" and rank == 4 and channels == 1:
        return Task(name, "depth", 1, loss=fn)
    if family == "cosine" and rank == 4 and channels == 3:
        return Task(name, "normals", 3, loss=fn)
    raise ValueError(f"output '{name}': cannot infer its task from loss {_loss_name(loss)} on an output of "
                     f"shape {shape}; pass tasks= (a Task of kind {list(KINDS)} or a JSON task file). "
                     f"Inferred: {ACCEPTED}.")


def _check_channels(task: Task, shape: tuple) -> None:
    if shape and shape[-1] is not None and int(shape[-1]) != task.output_channels:
        raise ValueError(f"task '{task.name}' ({task.kind}) expects {task.output_channels} output "
                         f"channels but the model's output '{task.name}' has shape {shape}.")
