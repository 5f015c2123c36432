"""Inputs and outputs of Keras models and datasets, as the LiteRT side names them.

Every LiteRT tensor is named: inputs by their ``keras.Input`` names, outputs by the model's
output names. These helpers map Keras structures (dicts, lists, single tensors) and
Keras-convention dataset elements (``(x, y[, sample_weight])``) onto those names.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import numpy as np


def input_specs(model, batch_size: int | None = None) -> dict[str, tuple[tuple[int | None, ...], str]]:
    """{input name: (shape with the batch dimension, dtype name)} of a Keras functional model.

    `batch_size` replaces the batch dimension (None keeps the model's, usually dynamic).
    """
    specs = {}
    for tensor in model.inputs:
        if tensor.name in specs:
            raise ValueError(f"model has two inputs named {tensor.name!r}; give each keras.Input a unique name.")
        shape = tuple(tensor.shape)
        if batch_size is not None:
            shape = (batch_size,) + shape[1:]
        specs[tensor.name] = (shape, str(tensor.dtype))
    return specs


def named_outputs(model, outputs: Any) -> dict:
    """A model call's outputs as {output name: tensor} (see :func:`tfmot_mtl.graph.walk.named_outputs`)."""
    from tfmot_mtl.graph.walk import named_outputs as by_name  # keras loads only when a model is at hand

    return by_name(model, outputs)


def structure_inputs(model, inputs: Mapping[str, Any]) -> Any:
    """Arranges {input name: value} in the structure the model was built with (tensor, list or dict)."""
    import keras

    if isinstance(model, keras.Sequential):  # one input; `.input` is undefined until it is called
        return inputs[model.inputs[0].name]
    return keras.tree.map_structure(lambda tensor: inputs[tensor.name], model.input)


def split_inputs(element: Any, input_names: Iterable[str]) -> tuple[dict[str, np.ndarray], Any]:
    """Splits a dataset element into ({input name: array}, targets or None).

    Elements follow Keras' conventions: `(inputs, targets[, sample_weights])` or inputs alone, where
    inputs is a dict keyed by input name (extra keys are ignored), a single array (one-input models)
    or a list (not a tuple: tuples are `(x, y, sample_weight)` as in Keras) in `model.inputs` order.
    """
    names = list(input_names)
    targets = None
    if isinstance(element, tuple) and 1 <= len(element) <= 3:  # Keras: (x,), (x, y), (x, y, sample_weight)
        element, targets = element[0], (element[1] if len(element) > 1 else None)
    if isinstance(element, Mapping):
        missing = [n for n in names if n not in element]
        if missing:
            raise ValueError(f"dataset inputs lack {missing}; they have keys {sorted(element)}.")
        inputs = {n: element[n] for n in names}
    elif isinstance(element, (list, tuple)):
        if len(element) != len(names):
            raise ValueError(f"dataset gives {len(element)} inputs as a list; the model takes {names}.")
        inputs = dict(zip(names, element))
    else:
        if len(names) != 1:
            raise ValueError(f"dataset gives one array; the model takes the named inputs {names}: yield a dict.")
        inputs = {names[0]: element}
    return {k: np.asarray(v) for k, v in inputs.items()}, targets


def iterate_batches(data: Any, limit: int | None = None):
    """Yields numpy elements of a tf.data.Dataset (or any iterable of batches), at most `limit` of them."""
    if hasattr(data, "as_numpy_iterator"):
        data = data.take(limit) if limit is not None else data
        data = data.as_numpy_iterator()
    for i, element in enumerate(data):
        if limit is not None and i >= limit:
            return
        yield element
