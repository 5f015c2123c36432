"""tfmot_mtl: structured compression of multi-task and multi-domain Keras 3 models.

Every method produces channel masks; one surgeon (`strip_channels`) removes the masked
channels from any functional model; `lite` ships the result to TFLite / LiteRT.
`compress` runs the whole path on a user's trained model and data in one call.
"""
from tfmot_mtl.compress import CompressResult, CompressWarning, compress
from tfmot_mtl.graph import ChannelGraph, ChannelGroup
from tfmot_mtl.masks import (ChannelMasks, apply_masks, apply_masks_, masks_from_zeros, nonzero_in_removed,
                             round_masks)
from tfmot_mtl.selection import select_groups
from tfmot_mtl.strip import StripReport, strip_channels

__version__ = "0.1.0"

__all__ = [
    "ChannelGraph", "ChannelGroup", "ChannelMasks", "CompressResult", "CompressWarning", "compress", "StripReport", "apply_masks", "apply_masks_",
    "masks_from_zeros", "nonzero_in_removed", "round_masks", "select_groups", "strip_channels", "__version__",
]


# Modules that live in a sub-package, reachable as before: `tm.experiment`, `tm.resume`, ...
_MOVED = {"experiment": "tfmot_mtl.recipes.experiment", "batchnorm": "tfmot_mtl.recipes.batchnorm",
          "resume": "tfmot_mtl.training.resume", "distribute": "tfmot_mtl.training.distribute"}


def __getattr__(name):
    # Sub-packages load on first use: `tm.sparsity`, `tm.pruning`, `tm.budget`, `tm.distill`, `tm.lite`, ...
    import importlib

    if name in ("sparsity", "pruning", "budget", "lite", "tasks", "models", "datasets", "profile", "distill",
                "recipes", "training", "utils", "app"):
        return importlib.import_module(f"tfmot_mtl.{name}")
    if name in _MOVED:
        return importlib.import_module(_MOVED[name])
    raise AttributeError(f"module 'tfmot_mtl' has no attribute {name!r}")
