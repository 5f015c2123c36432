"""Channel-wise group-lasso kernel regularizer and `apply_group_sparsity`."""
from __future__ import annotations

import warnings
from typing import Any

import keras
import numpy as np
from keras import ops

from tfmot_mtl.graph import ChannelGraph
from tfmot_mtl.selection import (Selection, check_layer_names, check_selection, producer_layers, renamed_selection,
                                 protected_groups, select_groups)

SCALES = ("sqrt_group_size", "sqrt_num_groups", "none")
AXES = ("output", "input")


@keras.saving.register_keras_serializable(package="tfmot_mtl")
class ChannelGroupLasso(keras.regularizers.Regularizer):
    """Group lasso over the channels of a conv / dense kernel (plus an optional l2 term).

    ``value = l1 * sum_g c_g * ||W_g||_2 + l2 * sum(W**2)``, one group ``W_g`` per
    output channel (a slice along the last kernel axis) or per input channel (axis -2:
    the input-channel axis of Conv1D/2D/3D kernels, axis 0 of a Dense kernel).

    Args:
        l1: group-lasso strength (lambda), >= 0.
        l2: plain weight-decay strength, >= 0.
        axis: ``"output"`` (axis -1), ``"input"`` (axis -2), or an explicit integer axis
            (e.g. -2 for the output channels of a ``Conv2DTranspose`` kernel).
        scale: weight ``c_g`` of each group: ``"sqrt_group_size"`` (textbook, sqrt of the
            number of weights in the group), ``"sqrt_num_groups"`` (sqrt of the number of
            groups in the kernel, as in the Less-is-More reference code), or ``"none"``.

    The norm has a zero (sub)gradient at an all-zero group, so groups zeroed by
    :class:`ProximalGroupLasso` never produce NaN gradients.
    """

    def __init__(self, l1: float = 1e-4, l2: float = 0.0, axis: str | int = "output",
                 scale: str = "sqrt_group_size"):
        if float(l1) < 0 or float(l2) < 0:
            raise ValueError(f"l1 and l2 must be >= 0, got l1={l1}, l2={l2}")
        if not (axis in AXES or (isinstance(axis, (int, np.integer)) and not isinstance(axis, bool))):
            raise ValueError(f"axis must be 'output', 'input' or an integer axis, got {axis!r}")
        if scale not in SCALES:
            raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
        self.l1, self.l2 = float(l1), float(l2)
        self.axis = int(axis) if not isinstance(axis, str) else axis
        self.scale = scale

    def group_axis(self, ndim: int) -> int:
        """Non-negative axis whose slices are the groups, for a kernel of rank ``ndim``."""
        if ndim < 2:
            raise ValueError(f"ChannelGroupLasso needs a kernel of rank >= 2, got rank {ndim}")
        axis = {"output": -1, "input": -2}.get(self.axis, self.axis)
        if not -ndim <= axis < ndim:
            raise ValueError(f"axis {self.axis} is out of range for a kernel of rank {ndim}")
        return axis % ndim

    def group_norms(self, x) -> Any:
        """The l2 norm of each group (a vector, one entry per channel)."""
        axis = self.group_axis(len(x.shape))
        reduce_axes = tuple(i for i in range(len(x.shape)) if i != axis)
        sq = ops.sum(ops.square(x), axis=reduce_axes)
        positive = ops.greater(sq, 0)
        # sqrt'(0) is infinite: take the root of 1 where the group is zero, then drop it.
        return ops.where(positive, ops.sqrt(ops.where(positive, sq, ops.ones_like(sq))),
                         ops.zeros_like(sq))

    def group_scale(self, shape) -> float:
        axis = self.group_axis(len(shape))
        num_groups = int(shape[axis])
        group_size = int(np.prod(shape)) // max(num_groups, 1)
        return {"sqrt_group_size": float(np.sqrt(group_size)),
                "sqrt_num_groups": float(np.sqrt(num_groups)), "none": 1.0}[self.scale]

    def __call__(self, x):
        value = ops.convert_to_tensor(0.0, dtype=x.dtype)
        if self.l1:
            value = value + ops.cast(self.l1 * self.group_scale(tuple(x.shape)), x.dtype) * \
                ops.sum(self.group_norms(x))
        if self.l2:
            value = value + ops.cast(self.l2, x.dtype) * ops.sum(ops.square(x))
        return value

    def get_config(self) -> dict:
        return {"l1": self.l1, "l2": self.l2, "axis": self.axis, "scale": self.scale}

    @classmethod
    def from_config(cls, config: dict) -> "ChannelGroupLasso":
        return cls(**config)

    def __repr__(self) -> str:
        return (f"ChannelGroupLasso(l1={self.l1}, l2={self.l2}, axis={self.axis!r}, "
                f"scale={self.scale!r})")


# --------------------------------------------------------------------------- cloning
_TRANSPOSED = ("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose")


def _kernel_key(layer) -> str | None:
    """The config key of the regularizer of the layer's channel-producing kernel."""
    if not isinstance(layer, keras.layers.Layer) or isinstance(layer, keras.Model):
        return None
    config = layer.get_config()
    for key in ("kernel_regularizer", "pointwise_regularizer", "depthwise_regularizer"):
        if key in config:
            return key
    return None


def _regularizer_for(layer, key: str, l1: float, l2: float, axis: str, scale: str) -> ChannelGroupLasso:
    ax: str | int = axis
    if type(layer).__name__ in _TRANSPOSED:  # kernel layout (..., out, in)
        ax = -2 if axis == "output" else -1
    elif key == "depthwise_regularizer":  # (kh, kw, channels, multiplier)
        ax = -2
    return ChannelGroupLasso(l1, l2, axis=ax, scale=scale)


def apply_group_sparsity(model: keras.Model, l1: float, l2: float = 0.0,
                         groups: Selection = "all", axis: str = "output",
                         scale: str = "sqrt_group_size", protect=(), *,
                         layers: Selection | None = None) -> keras.Model:
    """A clone of ``model`` with :class:`ChannelGroupLasso` on the selected kernels.

    The input model is not modified; the clone gets the same weights and is not compiled.

    Args:
        model: a Keras functional or Sequential multi-task model.
        l1, l2, axis, scale: the regularizer's arguments (see :class:`ChannelGroupLasso`).
        groups: whose producers' kernels get the regularizer, in the selection vocabulary
            shared by the three methods (:mod:`tfmot_mtl.selection`): ``"shared"`` (the shared
            trunk's groups, those feeding more than one task; a model without any gets a
            warning and no regularizer), ``"all"`` (every prunable group), producer layer
            names, or a callable ``ChannelGroup -> bool``.
        protect: task or layer names whose groups' producers get no regularizer
            (see :func:`tfmot_mtl.selection.select_groups`).
        layers: deprecated older name of ``groups``, where names and callables act on layers:
            any layer with a kernel may be named (e.g. a head regularized on its input
            channels with ``axis="input"``), and a callable receives each layer.
    """
    if axis not in AXES:
        raise ValueError(f"axis must be 'output' or 'input', got {axis!r}")
    ChannelGroupLasso(l1, l2, axis, scale)  # validates the numbers early
    spec, callable_of = renamed_selection(groups, layers, "apply_group_sparsity")
    argument = "groups" if layers is None else "layers"
    spec = check_selection(spec, argument, callable_of)
    graph = ChannelGraph.of(model)
    if isinstance(spec, str) or callable_of == "group":
        names = producer_layers(graph, select_groups(
            graph, spec, protect, on_empty="warn", argument=argument,
            context="apply_group_sparsity selected no channel group, so no regularizer is added"))
    elif callable(spec):
        names = [n for n, lay in graph.flat.layers.items()
                 if _kernel_key(lay) is not None and bool(spec(lay))]
    else:
        names = list(dict.fromkeys(check_layer_names(graph, spec, "layers")))
    if protect and callable_of == "layer" and not isinstance(spec, str):
        kept = set(producer_layers(graph, [graph.groups[i] for i in protected_groups(graph, protect)]))
        names = [n for n in names if n not in kept]
    targets: dict[int, tuple[str, ChannelGroupLasso]] = {}
    for name in names:
        layer = graph.layer(name)
        key = _kernel_key(layer)
        if key is None:
            warnings.warn(f"layer '{name}' ({type(layer).__name__}) has no kernel regularizer "
                          "argument; skipped", stacklevel=2)
            continue
        targets[id(layer)] = (key, _regularizer_for(layer, key, l1, l2, axis, scale))

    def clone_layer(layer):
        config = layer.get_config()
        if id(layer) in targets:
            key, reg = targets[id(layer)]
            config[key] = keras.regularizers.serialize(reg)
        return layer.__class__.from_config(config)

    clone = keras.models.clone_model(model, clone_function=clone_layer, recursive=True)
    clone.set_weights(model.get_weights())
    return clone


def regularized_layers(model: keras.Model) -> dict[str, ChannelGroupLasso]:
    """Layer name -> the ChannelGroupLasso on its kernel, for every layer that has one."""
    graph = ChannelGraph.of(model)
    out = {}
    for name, layer in graph.flat.layers.items():
        for attr in ("kernel_regularizer", "pointwise_regularizer", "depthwise_regularizer"):
            reg = getattr(layer, attr, None)
            if isinstance(reg, ChannelGroupLasso):
                out[name] = reg
                break
    return out


def remove_group_sparsity(model: keras.Model) -> int:
    """Takes every :class:`ChannelGroupLasso` off ``model``'s layers, in place (the layer's
    setting, so its config and any ``.keras`` file no longer name it, and its variables, so
    training no longer adds the penalty); other regularizers stay. For a model whose lasso has
    done its job, e.g. before stripping: the result then loads in plain Keras. Returns how many
    were removed."""
    graph = ChannelGraph.of(model)
    removed = 0
    for layer in graph.flat.layers.values():
        for attr in ("kernel_regularizer", "pointwise_regularizer", "depthwise_regularizer"):
            reg = getattr(layer, attr, None)
            if not isinstance(reg, ChannelGroupLasso):
                continue
            setattr(layer, attr, None)
            for var in layer.weights:
                if var.regularizer is reg:
                    var.regularizer = None
            removed += 1
    return removed
