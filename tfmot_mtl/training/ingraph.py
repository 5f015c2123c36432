"""Per-step work of the three methods inside the compiled train step.

Mechanism: Keras 3's ``BaseOptimizer.apply`` (the body of ``apply_gradients``, inside the
traced / XLA-compiled train function) first applies every gradient update and then runs
``variable.assign(variable.constraint(variable))`` for each trainable variable, before it
increments ``optimizer.iterations``. :func:`add_post_update_hook` chains graph functions
onto the constraint of one *anchor* variable: they run once per optimizer step, on the
device, after all weights are updated, with ``optimizer.iterations`` still holding the
count the update saw (so ``optimizer.learning_rate`` is the rate just used). The anchor's
own constraint (if any) still runs after the hooks.

Why this and not an optimizer wrapper or a ``train_step`` override: it works with the
optimizer and model class the user compiled (no change to the checkpoint layout of the
optimizer, ``model.save`` stays plain, no subclass), under ``jit_compile=True``, under
``tf.distribute`` (the hook runs in every replica on identical values, like Keras's own
constraints), and with ``run_eagerly=True``. Cost: the anchor must receive a gradient in
the step (the methods pick one of the weights they act on), and a train function traced
before a hook was added is re-made (:func:`refresh_train_function`).

:class:`VariableMasks` is the one mask mechanism: 0/1 masks kept as non-trainable
variables next to the variables they mask and re-applied by a hook after every update,
so masked slices stay exactly zero with no host work; the host only re-assigns the
masks when they change (a pruning event, a restored state).
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

import keras
import numpy as np
import tensorflow as tf


class _HookedConstraint:
    """A variable constraint that first runs named hooks, then the original constraint."""

    def __init__(self, original: Callable | None):
        self.original = original
        self.hooks: dict[str, Callable[[], Any]] = {}

    def __call__(self, variable):
        for hook in list(self.hooks.values()):
            hook()
        value = variable.value if hasattr(variable, "value") else variable
        return self.original(value) if self.original is not None else value


def add_post_update_hook(anchor, key: str, fn: Callable[[], Any]) -> bool:
    """Runs ``fn()`` (graph ops, no return value needed) after every optimizer update of
    ``anchor``. Returns True when the hook is new (the train function must be re-made)."""
    constraint = getattr(anchor, "constraint", None)
    if not isinstance(constraint, _HookedConstraint):
        constraint = _HookedConstraint(constraint)
        anchor.constraint = constraint
    new = key not in constraint.hooks
    constraint.hooks[key] = fn
    return new


def remove_post_update_hook(anchor, key: str) -> None:
    """Removes the hook ``key`` of ``anchor`` (restoring its own constraint when it was the last)."""
    constraint = getattr(anchor, "constraint", None)
    if isinstance(constraint, _HookedConstraint):
        constraint.hooks.pop(key, None)
        if not constraint.hooks:
            anchor.constraint = constraint.original


def refresh_train_function(model) -> None:
    """Re-makes ``model``'s train function so the next step traces the current hooks."""
    if getattr(model, "train_function", None) is not None:
        model.make_train_function(force=True)


def pick_anchor(variables: Iterable, model=None):
    """The first trainable variable of ``variables`` (else of ``model``) the optimizer updates."""
    for var in variables:
        if getattr(var, "trainable", False):
            return var
    if model is not None and model.trainable_variables:
        return model.trainable_variables[0]
    return None


def new_variable(model, value, dtype, name: str):
    """A non-trainable state variable created in ``model``'s distribution strategy scope."""
    strategy = getattr(model, "distribute_strategy", None) or tf.distribute.get_strategy()
    with strategy.scope():
        return keras.Variable(np.asarray(value), dtype=dtype, trainable=False, name=name)


class VariableMasks:
    """Masks of model variables, re-applied inside the train step after each update.

    ``set(arrays)`` assigns ``{variable: 0/1 array}`` (kept as bool); a variable without an entry keeps
    all of its values. Mask variables are made for ``candidates`` (every variable the
    method may ever mask) at construction, so a mask change never retraces the step.

    The masks stay in the model's train step after training ends (a later ``fit`` keeps the
    masked slices at zero), until another ``VariableMasks`` of the same ``role`` is made for the
    same model: that one supersedes them (the earlier hook is removed), so a second pruning run
    on a model whose dense weights were restored starts from its own masks, not the first run's.
    """

    def __init__(self, model, candidates: Iterable, key: str, role: str | None = None):
        self.model, self.key = model, key
        if role is not None:
            registry = _role_registry(model)
            previous = registry.get(role)
            if previous is not None:
                previous.uninstall()
            registry[role] = self
        self.pairs: list[tuple[Any, Any]] = []
        seen = set()
        for var in candidates:
            if id(var) in seen:
                continue
            seen.add(id(var))
            mask = new_variable(model, np.ones(tuple(var.shape), bool), "bool", f"{key}_mask_{len(self.pairs)}")
            self.pairs.append((var, mask))
        self.active = new_variable(model, False, "bool", f"{key}_active")
        self.anchor = pick_anchor([v for v, _ in self.pairs], model)

    def apply(self) -> None:
        """Graph ops: ``var <- where(mask, var, 0)`` for every masked variable (when any mask is set)."""
        def zero():
            for var, mask in self.pairs:  # bool masks, a scalar zero: one select and one assign each
                var.assign(tf.where(mask.value, var.value, tf.zeros((), var.dtype)))
            return tf.constant(True)

        tf.cond(self.active.value, zero, lambda: tf.constant(False))

    def install(self) -> bool:
        """Adds the re-zeroing hook to the anchor; True when it was not installed before."""
        return self.anchor is not None and add_post_update_hook(self.anchor, self.key, self.apply)

    def uninstall(self) -> None:
        if self.anchor is not None:
            remove_post_update_hook(self.anchor, self.key)

    def set(self, arrays: dict[int, np.ndarray]) -> None:
        """Assigns the masks (``{id(variable): array}``) and zeroes the masked values now."""
        any_zero = False
        for var, mask in self.pairs:
            m = arrays.get(id(var))
            m = np.ones(tuple(var.shape), bool) if m is None else np.asarray(m) > 0
            any_zero = any_zero or not m.all()
            mask.assign(m)
            if not m.all():
                var.assign(np.where(m, np.asarray(keras.ops.convert_to_numpy(var)), 0).astype(var.dtype))
        self.active.assign(any_zero)


def _role_registry(model) -> dict:
    """``{role: VariableMasks}`` kept on the model object itself (untracked by Keras: it lives
    exactly as long as the model and is never saved)."""
    registry = getattr(model, "__dict__", {}).get("_tfmot_mtl_variable_masks")
    if registry is None:
        registry = {}
        try:
            object.__setattr__(model, "_tfmot_mtl_variable_masks", registry)
        except (AttributeError, TypeError):  # an object without a __dict__: masks are not shared
            pass
    return registry


_FINITE_CACHE: dict[tuple, tuple[list, Callable]] = {}


def finite_flags(variables: list) -> np.ndarray:
    """One bool per variable, True where every value is finite, computed on the device by one
    compiled function (only the flags come back to the host)."""
    key = tuple(id(v) for v in variables)
    captured, fn = _FINITE_CACHE.get(key, (None, None))
    if fn is None or any(a is not b for a, b in zip(captured, variables)):
        captured = list(variables)

        @tf.function
        def fn():
            return tf.stack([tf.reduce_all(tf.math.is_finite(v.value)) for v in captured])

        if len(_FINITE_CACHE) > 64:
            _FINITE_CACHE.clear()
        _FINITE_CACHE[key] = (captured, fn)
    if not variables:
        return np.zeros(0, bool)
    return np.asarray(fn())
