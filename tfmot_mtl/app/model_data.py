"""A user's data fitted to a user's model: the CLI's ``--data`` loaded at the model's input shape,
its inputs matched by name, its tasks resolved (``--tasks``, the data's, or inferred) and its
targets checked against the outputs before any training.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import keras

from tfmot_mtl.recipes.experiment import Data


class DataMismatch(ValueError):
    """Data or tasks that do not fit the model; ``argument`` names what to fix ("data", "tasks",
    "patience"), so that a command line can name its flag."""

    def __init__(self, argument: str, message: str):
        super().__init__(message)
        self.argument = argument


def load_for_model(spec: str, model: keras.Model, *, tasks: Sequence | None = None,
                   data_dir: str | None = None, batch_size: int = 32, n_train: int | None = None,
                   n_test: int | None = None, seed: int = 0, n_val: int = 0) -> Data:
    """The data of ``spec`` ready for ``model``: input names, tasks and targets checked.

    Args:
        spec: a data spec (:func:`tfmot_mtl.datasets.spec.load_spec`), generated / resized at
            the model's input height and width where the source allows it.
        model: the Keras model to train or evaluate.
        tasks: the tasks to use (e.g. :func:`tfmot_mtl.tasks.load_tasks`); default: the
            data's own, else inferred from the model (:func:`tfmot_mtl.tasks.infer_tasks`).
        n_val: images of a validation split (embedded datasets only: new scenes of the
            training generator, another seed).

    Raises:
        DataMismatch: the spec cannot be loaded, its inputs or targets do not fit the model,
            or the tasks are not the model's outputs (one line naming input / output, what the
            model has and what the data give).
    """
    from tfmot_mtl.datasets.spec import embedded_tasks, load_spec

    known = embedded_tasks(spec)
    if tasks is not None or known is not None:
        resolve_tasks(model, tasks, known)  # fails before generating or reading any data
    input_shape = model_input_shape(model)
    options = dict(input_shape=input_shape, batch_size=batch_size, seed=seed)
    validation = _validation(spec, n_val, **options) if n_val else None
    try:
        train, test, data_tasks = load_spec(spec, data_dir=data_dir, n_train=n_train, n_test=n_test,
                                            **options)
    except ValueError as err:
        raise DataMismatch("data", str(err)) from None
    resolved = resolve_tasks(model, tasks, data_tasks)
    splits = [fit_targets(adapt_inputs(ds, model), resolved, model) if ds is not None else None
              for ds in (train, test, validation)]
    return Data(spec, splits[0], splits[1], resolved, input_shape, splits[2])


def _validation(spec: str, n_val: int, **options):
    from tfmot_mtl.datasets.spec import EMBEDDED, VALIDATION_SEED_OFFSET, load_embedded

    if spec not in EMBEDDED:
        raise DataMismatch("patience", f"early stopping needs a validation split, which only the "
                                       f"embedded datasets {list(EMBEDDED)} generate; {spec!r} has none")
    options["seed"] += VALIDATION_SEED_OFFSET
    return load_embedded(spec, "train", n_val, shuffle=False, **options)


def model_input_shape(model: keras.Model) -> tuple:
    """Per-example shape of the model's image input (its first rank-4 input, else its first)."""
    shapes = [tuple(t.shape[1:]) for t in model.inputs]
    return next((s for s in shapes if len(s) == 3), shapes[0])


def data_input_shape(dataset) -> tuple:
    """Per-example shape of a dataset's one input; DataMismatch when it has several."""
    x = _element(dataset)[0]
    if isinstance(x, Mapping) and len(x) == 1:
        x = next(iter(x.values()))
    if isinstance(x, (Mapping, list, tuple)):
        raise DataMismatch("data", f"the data give several inputs {_input_keys(x)}; a reference model "
                                   f"takes one image")
    return tuple(x.shape[1:])


def adapt_inputs(dataset, model: keras.Model):
    """Batches whose inputs have the structure the model was built with (a dict by input name,
    a list or one tensor): a lone input (tensor or one-key dict) feeds a one-input model under
    any name; every input's shape is checked against the model's."""
    names, tensors, kind = _model_inputs(model)
    x = _element(dataset)[0]
    keys = _match_inputs(x, names)
    for name, key, tensor in zip(names, keys, tensors):
        _check_input_shape(name, tuple(tensor.shape[1:]), _pick(x, key).shape)
    if kind == "dict" and isinstance(x, Mapping) and keys == names and sorted(x) == sorted(names):
        return dataset
    if kind == "single" and keys == [None]:
        return dataset

    def pack(x):
        values = [_pick(x, k) for k in keys]
        return dict(zip(names, values)) if kind == "dict" else values if kind == "list" else values[0]

    return dataset.map(lambda x, *rest: (pack(x), *rest))


def _model_inputs(model: keras.Model) -> tuple[list[str], list, str]:
    """(input names, input tensors, "dict" | "list" | "single": how the model takes them)."""
    from tfmot_mtl.utils import _keras_compat as compat

    struct = compat.inputs_struct(model, functional_only=True)
    if isinstance(struct, Mapping):
        return list(struct), list(struct.values()), "dict"
    tensors = list(model.inputs)
    return [t.name for t in tensors], tensors, "list" if isinstance(struct, (list, tuple)) else "single"


def _element(dataset) -> tuple:
    spec = dataset.element_spec
    if not isinstance(spec, tuple) or len(spec) not in (2, 3):
        raise DataMismatch("data", f"the data yield {_describe(spec)}, not (inputs, {{output: target}}) "
                                   f"batches")
    return spec


def _match_inputs(x, names: list[str]) -> list:
    """For each model input, the key (dict), index (list) or None (lone tensor) of the data's."""
    if isinstance(x, Mapping):
        if all(n in x for n in names):
            return list(names)
        if len(names) == 1 and len(x) == 1:
            return list(x)
    elif isinstance(x, (list, tuple)):
        if len(x) == len(names):
            return list(range(len(names)))
    elif len(names) == 1:
        return [None]
    raise DataMismatch("data", f"the model takes the inputs {names}; the data give {_input_keys(x)}")


def _pick(x, key):
    return x if key is None else x[key]


def _input_keys(x) -> str:
    if isinstance(x, Mapping):
        return str(sorted(x))
    if isinstance(x, (list, tuple)):
        return f"a list of {len(x)} inputs"
    return "one tensor"


def _check_input_shape(name: str, wanted: tuple, batch_shape) -> None:
    """``wanted``: the model's per-example shape; ``batch_shape``: the data's, batch axis first."""
    batch_shape = tuple(batch_shape.as_list() if hasattr(batch_shape, "as_list") else batch_shape)
    if len(batch_shape) == len(wanted) and len(wanted) > 1:
        raise DataMismatch("data", f"input {name!r}: the data yield single examples of shape "
                                   f"{_shape(batch_shape)}; the model takes batches of them: batch the dataset")
    found = batch_shape[1:]
    if len(found) != len(wanted) or any(w is not None and f is not None and w != f
                                        for w, f in zip(wanted, found)):
        raise DataMismatch("data", f"input {name!r}: the model takes {_shape(wanted)} per example, the "
                                   f"data give {_shape(found)}")


def _shape(shape) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


def _describe(spec) -> str:
    return type(spec).__name__ if not isinstance(spec, tuple) else f"tuples of {len(spec)}"


def output_shapes(model: keras.Model) -> dict[str, tuple]:
    """``{output name: shape}`` with the batch axis."""
    from tfmot_mtl.graph.walk import output_names

    return dict(zip(output_names(model), (tuple(t.shape) for t in model.outputs)))


def resolve_tasks(model: keras.Model, given: Sequence | None, data_tasks: Sequence | None) -> list:
    """The tasks to train and score: ``given`` (a task file), else the data's, checked against
    the model's outputs; outputs without a task are inferred from the model's compiled losses."""
    from tfmot_mtl.tasks import infer_tasks

    shapes = output_shapes(model)
    source, tasks = ("tasks", list(given)) if given is not None else ("data", list(data_tasks or ()))
    what = "the task file describes" if source == "tasks" else "the data describe"
    foreign = sorted(t.name for t in tasks if t.name not in shapes)
    if foreign:
        hint = "" if source == "tasks" else "; give the model's own data"
        raise DataMismatch(source, f"{what} the tasks {foreign}, which are not outputs of the model "
                                   f"(its outputs: {sorted(shapes)}){hint}")
    for task in tasks:
        check_output(task, shapes[task.name], source)
    if {t.name for t in tasks} == set(shapes):
        return tasks
    try:
        return infer_tasks(model, tasks or None)
    except ValueError as err:
        if tasks:
            return tasks
        raise DataMismatch("tasks", f"the data name no tasks and the model does not say them: {err} "
                                    f"Give them with --tasks FILE.json") from None


def check_output(task, shape: tuple, source: str = "tasks") -> None:
    """DataMismatch naming the output when ``task`` does not fit an output of ``shape``."""
    what = "the task file expects" if source == "tasks" else "the data expect"
    layout = "(batch, height, width, channels)" if task.is_dense else "(batch, channels)"
    if len(shape) != (4 if task.is_dense else 2):
        raise DataMismatch(source, f"output {task.name!r} has shape {_shape(shape)}, but {what} a {task.kind} "
                                   f"task, whose output is {layout}")
    if shape[-1] is not None and shape[-1] != task.output_channels:
        unit = "classes" if task.kind in ("segmentation", "classification") else "channels"
        raise DataMismatch(source, f"output {task.name!r}: {what} {task.output_channels} {unit} "
                                   f"({task.kind}), the model's output has {shape[-1]} channels")


def fit_targets(dataset, tasks: Sequence, model: keras.Model, scan_batches: int = 2):
    """Batches whose targets are exactly ``{task name: target}``, checked against the model's
    outputs (:func:`tfmot_mtl.tasks.data.check_targets`: a target per task, its shape, and the
    class ids of the first ``scan_batches`` batches)."""
    from tfmot_mtl.tasks.data import check_targets

    y = _element(dataset)[1]
    if not isinstance(y, Mapping):
        if len(tasks) != 1:
            raise DataMismatch("data", f"the data's targets are one tensor; a model with several outputs needs "
                                       f"{{output: target}} dicts with {[t.name for t in tasks]}")
        name = tasks[0].name
        dataset = dataset.map(lambda x, y, *w: (x, {name: y}, *w))
        y = {name: y}
    try:
        check_targets(dataset, model, tasks, argument="data", batches=scan_batches)
    except ValueError as err:
        raise DataMismatch("data", str(err).removeprefix("`data`: ")) from None
    if sorted(y) == sorted(t.name for t in tasks):
        return dataset
    names = [t.name for t in tasks]
    return dataset.map(lambda x, y, *w: (x, {n: y[n] for n in names}, *w))


def bundle_tasks(model: keras.Model, given: Sequence | None = None,
                 data_tasks: Sequence | None = None) -> list | None:
    """Task descriptions of a TFLite bundle: ``given`` (checked against the outputs), else the
    data's tasks that are outputs of the model, completed from its compiled losses; None when
    no output's task is known."""
    from tfmot_mtl.tasks import infer_tasks

    if given is not None:
        return resolve_tasks(model, given, None)
    shapes = output_shapes(model)
    fitting = [t for t in data_tasks or () if t.name in shapes and _fits(t, shapes[t.name])]
    try:
        return infer_tasks(model, fitting or None)
    except ValueError:
        return fitting or None


def _fits(task, shape: tuple) -> bool:
    try:
        check_output(task, shape)
    except DataMismatch:
        return False
    return True
