"""Rule protocol, registry and lookup shared by every per-layer channel rule."""
from __future__ import annotations

import contextlib
import contextvars
from typing import Any, Callable, NamedTuple

import keras
import numpy as np

ZERO, CONST, PATTERN = 0, 1, 2



class Split(NamedTuple):
    """Where a tensor's channels are when they do not all sit on its last axis: attention heads
    after ``reshape(x, (B, N, heads, head_dim))`` and the transposes that follow. ``axes``
    (ascending) hold the channels, ``sizes`` their lengths; the tensor's channel map is the
    row-major flattening of those axes (``heads * head_dim`` atoms, head-major)."""

    axes: tuple[int, ...]
    sizes: tuple[int, ...]

    @property
    def width(self) -> int:
        return int(np.prod(self.sizes))


_RULES: dict[type, "Rule"] = {}
_OP_RULES: dict[str, "Rule"] = {}


def register(*classes: type) -> Callable:
    """Class decorator registering a rule instance for the given layer classes."""

    def deco(rule_cls):
        for cls in classes:
            _RULES[cls] = rule_cls()
        return rule_cls

    return deco


def register_op(*names: str) -> Callable:
    """Class decorator registering a rule for Keras' own ``keras.ops`` operations by class name
    (``"Add"``, ``"Reshape"``, ...): the nodes a functional graph records for ops on KerasTensors."""

    def deco(rule_cls):
        for name in names:
            _OP_RULES[name] = rule_cls()
        return rule_cls

    return deco


def rule_for(layer: Any) -> "Rule":
    """The rule of the most specific registered class in the layer's MRO (else Unknown)."""
    for cls in type(layer).__mro__:
        if cls in _RULES:
            return _RULES[cls]
    if is_keras_op(layer):
        return _OP_RULES.get(type(layer).__name__, UNKNOWN)
    return UNKNOWN


def is_keras_op(layer: Any) -> bool:
    """True for an operation of ``keras.ops`` (not a layer, not a user-defined operation)."""
    return (isinstance(layer, keras.Operation) and not isinstance(layer, keras.layers.Layer)
            and type(layer).__module__.startswith("keras."))


_NAMES: contextvars.ContextVar[dict] = contextvars.ContextVar("tfmot_mtl_layer_names", default={})


@contextlib.contextmanager
def naming(layers: dict):
    """Within the block, :func:`describe` names layers by their flat-graph name (``{name: layer}``):
    a sub-layer of a traced composite layer by ``<composite>_<attribute>``, not its Keras name."""
    token = _NAMES.set({id(layer): name for name, layer in layers.items()})
    try:
        yield
    finally:
        _NAMES.reset(token)


def describe(layer: Any) -> str:
    name = _NAMES.get().get(id(layer), getattr(layer, "name", "?"))
    return f"'{name}' ({type(layer).__name__})"


class Rule:
    """Base rule: pass every channel through unchanged (element-wise on channels).

    ``split_axes`` says what the rule does with an input whose channels span several axes
    (a :class:`Split`): False (the default) freezes the layer; ``"elementwise"`` passes the
    split on to an output of the same shape; True: the rule sets ``ctx.out_splits`` itself."""

    split_axes: bool | str = False

    def propagate(self, ctx) -> list:
        if not self._channels_last(ctx):
            return ctx.freeze_all(f"{describe(ctx.layer)} is not channels-last")
        return [ctx.in_maps[0]]

    def states(self, ctx, in_states: list) -> list:
        return [in_states[0]]

    def can_fold(self, layer: Any) -> bool:
        return False

    def fold(self, layer, weights: list, positions: np.ndarray, values: np.ndarray) -> None:
        raise NotImplementedError

    def config(self, layer, config: dict, in_keep, out_keep) -> dict:
        return config

    def resize(self, layer, config: dict, in_keep, out_keep, axes_keep: list) -> dict:
        """The config with fewer channels; ``axes_keep``: ``[(Axis, keep flags)]`` of the layer's
        declared weight axes (for layers whose config counts something else, e.g. heads)."""
        return self.config(layer, config, in_keep, out_keep)

    @staticmethod
    def _channels_last(ctx) -> bool:
        return getattr(ctx.layer, "data_format", "channels_last") in (None, "channels_last")


class Unknown(Rule):
    """A layer the graph does not understand: everything it touches is frozen."""

    def propagate(self, ctx) -> list:
        why = getattr(ctx.graph.flat, "untraced", {}).get(ctx.name)
        return ctx.freeze_all(f"layer {describe(ctx.layer)} is not understood by the channel graph"
                              + (f" and cannot be seen through: {why}" if why else ""))

    def states(self, ctx, in_states):
        return [np.zeros(n, np.int8) for n in ctx.out_widths]


UNKNOWN = Unknown()
