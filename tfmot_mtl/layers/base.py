"""Rule protocol, registry and lookup shared by every per-layer channel rule."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

ZERO, CONST, PATTERN = 0, 1, 2

_RULES: dict[type, "Rule"] = {}


def register(*classes: type) -> Callable:
    """Class decorator registering a rule instance for the given layer classes."""

    def deco(rule_cls):
        for cls in classes:
            _RULES[cls] = rule_cls()
        return rule_cls

    return deco


def rule_for(layer: Any) -> "Rule":
    """The rule of the most specific registered class in the layer's MRO (else Unknown)."""
    for cls in type(layer).__mro__:
        if cls in _RULES:
            return _RULES[cls]
    return UNKNOWN


def describe(layer: Any) -> str:
    return f"'{getattr(layer, 'name', '?')}' ({type(layer).__name__})"


class Rule:
    """Base rule: pass every channel through unchanged (element-wise on channels)."""

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

    @staticmethod
    def _channels_last(ctx) -> bool:
        return getattr(ctx.layer, "data_format", "channels_last") in (None, "channels_last")


class Unknown(Rule):
    """A layer the graph does not understand: everything it touches is frozen."""

    def propagate(self, ctx) -> list:
        return ctx.freeze_all(f"layer {describe(ctx.layer)} is not understood by the channel graph")

    def states(self, ctx, in_states):
        return [np.zeros(n, np.int8) for n in ctx.out_widths]


UNKNOWN = Unknown()
