"""Channel masks, the one home of mask algebra.

* :mod:`~tfmot_mtl.masks.core`: :class:`ChannelMasks` (group id -> boolean keep-array, True =
  keep), validated against a model's channel graph, saved as JSON;
* :mod:`~tfmot_mtl.masks.weights`: masks applied to weights (:func:`apply_masks`,
  :func:`mask_weights`), the zero pattern of a trained model (:func:`masks_from_zeros`), the
  per-variable multipliers of in-graph masking (:func:`variable_multipliers`);
* :mod:`~tfmot_mtl.masks.rounding`: kept counts rounded for SIMD widths (:func:`round_masks`,
  :func:`check_round_to`, :data:`ROUND_MODES`) and :func:`keep_nonempty`.
"""
from tfmot_mtl.masks.core import FORMAT, ChannelMasks, as_channel_masks
from tfmot_mtl.masks.rounding import (PRUNING_ROUND_MODES, ROUND_MODES, check_round_to, keep_nonempty,
                                      round_masks)
from tfmot_mtl.masks.weights import (apply_masks, apply_masks_, channel_norms, clone_with_weights,
                                     mask_weights, maskable_variables, masks_from_zeros, nonzero_in_removed,
                                     read_weights, removed_slices, variable_multipliers)

__all__ = [
    "FORMAT", "PRUNING_ROUND_MODES", "ROUND_MODES", "ChannelMasks", "apply_masks", "apply_masks_",
    "as_channel_masks", "channel_norms", "check_round_to", "clone_with_weights", "keep_nonempty",
    "mask_weights", "maskable_variables", "masks_from_zeros", "nonzero_in_removed", "read_weights",
    "removed_slices", "round_masks", "variable_multipliers",
]
