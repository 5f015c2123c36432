"""Per-layer-kind channel rules: the only place that knows what a layer does to channels.

A rule answers, for one call of one layer (channels-last):

- ``propagate(ctx)``: the channel map of each output (which *atom* each output channel
  carries), which weight axes slice with which atoms (``role="out"`` for slices a channel
  owns, zeroed when it is masked; ``role="in"`` for a consumer's input rows), which atoms
  must be coupled or frozen (with a reason);
- ``states(ctx, in_states)``: what a masked channel looks like after the layer: exactly
  zero (ZERO), one constant per channel (CONST), or an input-independent spatial
  pattern (PATTERN), so that constants left by f(0) != 0 can be folded exactly;
- ``can_fold`` / ``fold``: whether a consumer absorbs a constant input channel into its
  bias exactly, and doing it;
- ``config``: the layer's config with fewer channels.

The graph walker, the masker and the surgeon are generic over these rules. Supporting a
new layer kind means registering one rule with :func:`register`.
"""
from tfmot_mtl.layers.base import (CONST, PATTERN, UNKNOWN, ZERO, Rule, Split, Unknown, describe, is_keras_op,
                                   naming, register, register_op, rule_for)
from tfmot_mtl.layers import attention, channelwise, ops, producers, split_heads, structure  # noqa: F401  (register the rules)
from tfmot_mtl.layers.channelwise import zero_response

__all__ = ["CONST", "PATTERN", "ZERO", "UNKNOWN", "Rule", "Split", "Unknown", "describe", "is_keras_op", "naming", "register",
           "register_op", "rule_for", "zero_response"]
