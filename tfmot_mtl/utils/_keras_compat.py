"""Every read or write of private Keras API in tfmot_mtl, in one place.

Written for and tested with Keras 3.15 (3.15.1, TensorFlow backend). Each function names the
private attribute it touches; when that attribute is missing (another Keras version moved or
renamed it) it raises :class:`KerasCompatError`, naming the attribute, the Keras version found
and the one tested, instead of an ``AttributeError`` deep inside a callback or a rebuild.
``tests/test_keras_compat.py`` checks each function on real Keras objects and that no other
module of the package reads a private Keras attribute.

This module imports no other tfmot_mtl module, so any module may import it.
"""
from __future__ import annotations

import types
from typing import Any

import keras
import numpy as np

KERAS_TESTED = "3.15"

_MISSING = object()


class KerasCompatError(RuntimeError):
    """A private Keras attribute tfmot_mtl relies on is missing in the installed Keras."""


def _error(obj: Any, attribute: str, purpose: str) -> KerasCompatError:
    owner = obj.__name__ if isinstance(obj, (type, types.ModuleType)) else type(obj).__name__
    return KerasCompatError(
        f"tfmot_mtl reads the private Keras attribute `{owner}.{attribute}` ({purpose}), which this "
        f"{owner} does not have. Installed: Keras {keras.__version__}; tfmot_mtl was written and "
        f"tested for Keras {KERAS_TESTED}.x. Install keras~={KERAS_TESTED}.0, or update "
        f"tfmot_mtl/_keras_compat.py for this Keras version.")


def _get(obj: Any, attribute: str, purpose: str) -> Any:
    value = getattr(obj, attribute, _MISSING)
    if value is _MISSING:
        raise _error(obj, attribute, purpose)
    return value


# ------------------------------------------------------------------------ optimizers


def learning_rate(optimizer: Any, step: int) -> float:
    """The learning rate ``optimizer`` used for its update number ``step`` (1-based).

    A ``LearningRateSchedule`` is evaluated at ``step - 1`` (the iteration count the update
    saw); a constant or variable learning rate is read as it is. Private: ``_learning_rate``
    (the public ``learning_rate`` evaluates a schedule at the current iteration count).
    """
    lr = _get(optimizer, "_learning_rate", "the learning rate or its schedule")
    if isinstance(lr, keras.optimizers.schedules.LearningRateSchedule):
        return float(np.asarray(lr(max(step - 1, 0))))
    return float(np.asarray(keras.ops.convert_to_numpy(optimizer.learning_rate)))


def adam_second_moment(optimizer: Any, variable: Any) -> Any:
    """Adam's (AdamW's) second-moment estimate ``v`` of ``variable``, not bias-corrected.

    With ``amsgrad=True`` the running maximum ``v_hat`` (what the update divides by).
    Private: ``_velocities`` / ``_velocity_hats`` and ``_get_variable_index``.
    """
    attribute = "_velocity_hats" if optimizer.amsgrad else "_velocities"
    velocities = _get(optimizer, attribute, "Adam's second moments")
    index = _get(optimizer, "_get_variable_index", "the slot index of a variable")
    return velocities[index(variable)]


# ---------------------------------------------------------------------------- models


def user_loss_weights(model: Any) -> dict:
    """The ``loss_weights`` passed to ``model.compile`` as a plain dict, ``{}`` when they were
    not a dict or the model is not compiled. Private: ``_compile_loss._user_loss_weights``."""
    compile_loss = _get(model, "_compile_loss", "the compiled loss")
    if compile_loss is None:
        return {}
    found = _get(compile_loss, "_user_loss_weights", "the loss_weights given to compile")
    # Keras wraps compile() dicts in a tracking DictWrapper that is not a Mapping.
    if found is None or not (hasattr(found, "keys") and hasattr(found, "__getitem__")):
        return {}
    return {k: found[k] for k in found.keys()}


def outputs_struct(model: Any, functional_only: bool = False) -> Any:
    """The nested structure (dict, list, single tensor) of a functional model's outputs, as
    given to ``keras.Model(inputs, outputs)``. Private: ``_outputs_struct``.

    With ``functional_only`` a model without a functional graph (Sequential, subclassed)
    gives None instead of an error."""
    if functional_only and not has_functional_graph(model):
        return None
    return _get(model, "_outputs_struct", "the structure of the model outputs")


def inputs_struct(model: Any, functional_only: bool = False) -> Any:
    """The nested structure of a functional model's inputs. Private: ``_inputs_struct``.
    ``functional_only`` as in :func:`outputs_struct`."""
    if functional_only and not has_functional_graph(model):
        return None
    return _get(model, "_inputs_struct", "the structure of the model inputs")


def nodes_by_depth(model: Any) -> dict:
    """``{depth: [Node]}`` of a functional model's graph. Private: ``_nodes_by_depth``."""
    return _get(model, "_nodes_by_depth", "the nodes of the functional graph")


def has_functional_graph(model: Any) -> bool:
    """True when ``model`` is a Keras model with an inspectable functional graph."""
    return isinstance(model, keras.Model) and hasattr(model, "_nodes_by_depth")


def sequential_functional(model: Any) -> Any:
    """The functional model a built Sequential wraps, or None when it has no known input shape.
    Private: ``Sequential._functional``."""
    return _get(model, "_functional", "the functional graph of a Sequential")


def sublayers(layer: Any, include_self: bool = True) -> list:
    """Every layer tracked inside ``layer`` (nested models and composite layers included), once
    each. Private: ``Layer._flatten_layers``."""
    return list(_get(layer, "_flatten_layers", "the layers nested in a layer")(include_self=include_self))


def tensor_operation(tensor: Any) -> Any:
    """The operation (layer) that produced a symbolic KerasTensor (its ``keras.Input`` for a
    model input). Private: ``KerasTensor._keras_history``."""
    return _get(tensor, "_keras_history", "the layer that produced a symbolic tensor").operation


def producing_node(tensor: Any) -> Any:
    """``(operation, node)`` of the call that produced a symbolic tensor, or None for a tensor no
    operation produced (a fresh KerasTensor). Private: ``_keras_history``, ``_inbound_nodes``."""
    history = getattr(tensor, "_keras_history", None)
    operation = getattr(history, "operation", None)
    if operation is None:
        return None
    return operation, _get(operation, "_inbound_nodes", "the calls of an operation")[history.node_index]


def set_initial_epoch(model: Any, epoch: int) -> None:
    """Makes the running ``fit`` continue from ``epoch`` (what Keras's own BackupAndRestore does
    on restore). Private: ``Trainer._initial_epoch``."""
    _get(model, "_initial_epoch", "the epoch fit starts from")
    model._initial_epoch = int(epoch)


def untrack_student_loss(distiller: Any) -> None:
    """Replaces a compiled ``keras.distillation.Distiller``'s student-loss dict by a plain dict.

    Keras 3.15: Distiller stores the loss dict as an attribute, which wraps it in a TrackedDict
    that keras.tree no longer matches against the plain dict of targets. A structure that is not
    a dict (one loss, a list) is left as it is. Private: ``Distiller._student_loss``.
    """
    loss = _get(distiller, "_student_loss", "the student loss of a Distiller")
    if hasattr(loss, "keys") and hasattr(loss, "__getitem__"):
        object.__setattr__(distiller, "_student_loss", dict(loss))


# -------------------------------------------------------------------- tf.distribute

_PATCHED = "_tfmot_mtl_multi_worker_patch"


def multi_worker_fit_patched() -> bool:
    """True when :func:`patch_multi_worker_fit` is in place in this process."""
    from keras.src.backend.tensorflow import trainer

    return bool(getattr(trainer, _PATCHED, False))


def patch_multi_worker_fit() -> bool:
    """Replaces Keras 3.15's ``reduce_per_replica`` and ``TensorFlowTrainer._maybe_symbolic_build``
    so that ``fit`` runs under MultiWorkerMirroredStrategy (keras-team/keras#20585).

    Only multi-worker strategies take the new path (``_collective_all_reduce_multi_worker``
    decides). Idempotent; returns True. See :func:`tfmot_mtl.training.distribute.patch_keras_multi_worker_fit`.
    """
    import tensorflow as tf
    from keras.src.backend.tensorflow import trainer

    if getattr(trainer, _PATCHED, False):
        return True
    multi = _get(trainer, "_collective_all_reduce_multi_worker", "whether a strategy spans workers")
    reduce_per_replica = _get(trainer, "reduce_per_replica", "the reduction of per-replica logs")
    build = _get(trainer.TensorFlowTrainer, "_maybe_symbolic_build", "the symbolic build before fit")

    def reduce_logs(values, strategy, reduction):
        if reduction == "auto" and multi(strategy):  # logs are scalars: reduce without an axis
            return tf.nest.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
        return reduce_per_replica(values, strategy, reduction)

    def symbolic_build(self, iterator=None, data_batch=None):
        if iterator is not None and multi(self.distribute_strategy):
            for _, _, it in iterator:  # shapes from this worker's first replica
                batch = next(it)
                break
            local = self.distribute_strategy.experimental_local_results
            iterator, data_batch = None, tf.nest.map_structure(lambda v: local(v)[0], batch)
        return build(self, iterator=iterator, data_batch=data_batch)

    trainer.reduce_per_replica = reduce_logs
    trainer.TensorFlowTrainer._maybe_symbolic_build = symbolic_build
    setattr(trainer, _PATCHED, True)
    return True


def keras_is_tested_version() -> bool:
    """True when the installed Keras is the version this module was tested with."""
    return keras.__version__ == KERAS_TESTED or keras.__version__.startswith(KERAS_TESTED + ".")


__all__ = [
    "KERAS_TESTED", "KerasCompatError", "adam_second_moment", "has_functional_graph", "inputs_struct",
    "keras_is_tested_version", "learning_rate", "multi_worker_fit_patched", "nodes_by_depth",
    "outputs_struct", "patch_multi_worker_fit", "sequential_functional", "set_initial_epoch",
    "tensor_operation", "untrack_student_loss", "user_loss_weights",
]
