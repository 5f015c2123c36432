"""Reference architectures: functional Keras models with dict input {"image": ...} and dict outputs.

Inputs are declared as a dict so batches shaped like the datasets' `({"image": x}, targets)`
feed in without structure warnings; outputs are keyed by task (or domain) name and the
final layer of each output carries that name.

- `mtl_resnet`: ResNet-D encoder with dilated last stages and per-task ASPP heads
  (group sparsity, Upadhyay et al. 2024).
- `mtl_vgg`: VGG-16 encoder with per-task ASPP heads, rates (1, 2, 4, 6)
  (structured filter pruning for multi-task networks, Garg et al. 2023).
- `mdl_resnet26`: ResNet-26 backbone with one classifier per domain
  (budget-aware pruning for multi-domain learning, dos Santos et al. 2023).

`build(name, tasks_or_domains, **kwargs)` picks one by name.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import keras

from tfmot_mtl.models.heads import aspp_head, pooled_head
from tfmot_mtl.models.mdl_resnet26 import check_domains, mdl_resnet26, resnet26_backbone
from tfmot_mtl.models.mtl_resnet import mtl_resnet
from tfmot_mtl.models.mtl_vgg import mtl_vgg

_REGISTRY: dict[str, Callable[..., keras.Model]] = {
    "mtl_resnet": mtl_resnet,
    "mtl_vgg": mtl_vgg,
    "mdl_resnet26": mdl_resnet26,
}


def available() -> tuple[str, ...]:
    """Names accepted by `build`."""
    return tuple(_REGISTRY)


def build(name: str, tasks_or_domains: Sequence, /, **kwargs) -> keras.Model:
    """Build the reference model `name` for the given tasks (or domains for "mdl_resnet26").

    Args:
        name: one of `available()`.
        tasks_or_domains: `Task`s for the multi-task models; (name, num_classes) pairs
            for "mdl_resnet26".
        **kwargs: passed to the builder (input_shape, width, name, ...).
    """
    if name not in _REGISTRY:
        raise ValueError(f"Unknown model {name!r}; choose one of {available()}.")
    return _REGISTRY[name](tasks_or_domains, **kwargs)


__all__ = [
    "available",
    "aspp_head",
    "build",
    "check_domains",
    "mdl_resnet26",
    "mtl_resnet",
    "mtl_vgg",
    "pooled_head",
    "resnet26_backbone",
]
