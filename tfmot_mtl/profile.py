"""Parameters and MACs per layer call, per task head, shared vs task-specific.

MACs are multiply-accumulates for ONE example (batch size 1). Only layers with a
weight contraction are counted: convolutions (plain, depthwise, separable, transposed)
and Dense. Element-wise work (bias adds, BatchNormalization, activations, pooling,
merges, resizing, bilinear upsampling) is counted as 0 MACs, following the usual
convention of FLOP counters for CNNs; it is small next to the contractions. A layer
that owns weights but has no formula here is listed in `ModelProfile.uncounted`.

Parameters of a layer are counted once (on its first call), however often it is
called; its MACs are counted once per call. A layer's `tasks` are the model outputs
that depend on its output; `shared` means more than one.
"""
from __future__ import annotations

import io
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import keras
import numpy as np
from rich.console import Console
from rich.table import Table

from tfmot_mtl.graph.walk import FlatGraph, FlatNode, flatten

def _classes(*names: str) -> tuple[type, ...]:
    return tuple(getattr(keras.layers, n) for n in names if hasattr(keras.layers, n))


_CONV = _classes("Conv1D", "Conv2D", "Conv3D", "DepthwiseConv1D", "DepthwiseConv2D")
_SEPARABLE = _classes("SeparableConv1D", "SeparableConv2D")
_TRANSPOSED = _classes("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose")
# Layers with weights whose MACs are 0 by the element-wise convention above.
_ZERO_MAC = _classes("BatchNormalization", "LayerNormalization", "GroupNormalization",
                     "Embedding", "PReLU", "Normalization")


@dataclass
class LayerProfile:
    """One call of one layer: its parameters (first call only) and its MACs."""

    name: str
    class_name: str
    call_index: int
    output_shape: Any
    params: int
    trainable_params: int
    macs: int
    tasks: tuple[str, ...]

    @property
    def shared(self) -> bool:
        return len(self.tasks) > 1


@dataclass
class ModelProfile:
    """Per-layer rows and the totals: whole model, shared trunk, task-specific, per task.

    `per_task[t]` is what a forward pass for task `t` alone needs (every layer reaching
    `t`); `task_specific[t]` only the layers reaching exactly `t`; `shared` the layers
    reaching more than one task. Parameters of a layer called for different tasks count
    as shared.
    """

    layers: list[LayerProfile]
    total_params: int
    trainable_params: int
    total_macs: int
    shared: dict[str, int]
    task_specific: dict[str, dict[str, int]]
    per_task: dict[str, dict[str, int]]
    uncounted: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-serialisable form."""
        out = asdict(self)
        for row, layer in zip(out["layers"], self.layers):
            row["tasks"] = list(layer.tasks)
            row["shared"] = layer.shared
            row["output_shape"] = _shape_json(layer.output_shape)
        return out

    def table(self, max_rows: int | None = None) -> Table:
        """A rich table: one row per layer call, then the totals."""
        table = Table(title="Model profile (MACs per example)", show_lines=False)
        for col, just in (("Layer", "left"), ("Class", "left"), ("Output shape", "left"),
                          ("Params", "right"), ("MACs", "right"), ("Tasks", "left")):
            table.add_column(col, justify=just)
        rows = self.layers if max_rows is None else self.layers[:max_rows]
        for r in rows:
            name = r.name if r.call_index == 0 else f"{r.name} (call {r.call_index})"
            tasks = ", ".join(r.tasks) or "-"
            table.add_row(name, r.class_name, _shape_str(r.output_shape), f"{r.params:,}",
                          f"{r.macs:,}", f"[bold]{tasks}[/]" if r.shared else tasks)
        if len(rows) < len(self.layers):
            table.add_row(f"... {len(self.layers) - len(rows)} more", "", "", "", "", "")
        table.add_section()
        table.add_row("[bold]Total", "", "", f"{self.total_params:,}", f"{self.total_macs:,}", "")
        table.add_row("Shared", "", "", f"{self.shared['params']:,}",
                      f"{self.shared['macs']:,}", "> 1 task")
        for task, v in self.task_specific.items():
            table.add_row(f"Only {task}", "", "", f"{v['params']:,}", f"{v['macs']:,}", task)
        for task, v in self.per_task.items():
            table.add_row(f"Forward {task}", "", "", f"{v['params']:,}", f"{v['macs']:,}", task)
        if self.uncounted:
            table.caption = "MACs not counted (no formula): " + ", ".join(self.uncounted)
        return table

    def print(self, max_rows: int | None = None, console: Console | None = None) -> None:
        """Prints the table to `console` (default: a new rich console on stdout)."""
        (console or Console()).print(self.table(max_rows))

    def __str__(self) -> str:
        buf = io.StringIO()
        Console(file=buf, width=120, color_system=None).print(self.table())
        return buf.getvalue()


def profile(model: keras.Model, input_shape: Any = None) -> ModelProfile:
    """Profiles a functional/Sequential Keras model.

    Args:
        model: the model; nested functional sub-models are inlined.
        input_shape: per-example input shape without the batch dim, e.g. `(64, 64, 3)`,
            used where the model's inputs have `None` dims; a dict `{input_name: shape}`
            for several inputs. Needed only when a counted layer's shape is unknown.
    """
    graph = flatten(model)
    shapes = _concrete_shapes(graph, input_shape)
    reach = graph.reachable_outputs()
    tasks_of = {id(n): frozenset().union(*(reach[k] for k in n.outputs)) for n in graph.nodes}
    layer_tasks: dict[int, frozenset] = {}
    for n in graph.nodes:
        layer_tasks[id(n.layer)] = layer_tasks.get(id(n.layer), frozenset()) | tasks_of[id(n)]

    seen: set[int] = set()
    rows, uncounted = [], []
    task_names = list(graph.outputs)
    shared = {"params": 0, "macs": 0}
    specific = {t: {"params": 0, "macs": 0} for t in task_names}
    per_task = {t: {"params": 0, "macs": 0} for t in task_names}
    for node in graph.nodes:
        params, trainable = _new_params(node.layer, seen)
        macs = _macs(node, shapes)
        if macs is None:
            uncounted += [] if node.name in uncounted else [node.name]
            macs = 0
        tasks = tasks_of[id(node)]
        for amount, key, owners in ((params, "params", layer_tasks[id(node.layer)]),
                                    (macs, "macs", tasks)):
            if len(owners) > 1:
                shared[key] += amount
            elif owners:
                specific[next(iter(owners))][key] += amount
            for t in owners:
                per_task[t][key] += amount
        out_shapes = [shapes[k] for k in node.outputs]
        rows.append(LayerProfile(
            name=node.name, class_name=type(node.layer).__name__, call_index=node.call_index,
            output_shape=out_shapes[0] if len(out_shapes) == 1 else out_shapes,
            params=params, trainable_params=trainable, macs=macs,
            tasks=tuple(t for t in task_names if t in tasks),
        ))
    return ModelProfile(
        layers=rows, total_params=sum(r.params for r in rows),
        trainable_params=sum(r.trainable_params for r in rows),
        total_macs=sum(r.macs for r in rows), shared=shared, task_specific=specific,
        per_task=per_task, uncounted=uncounted,
    )


def count_params(model: keras.Model) -> int:
    """Number of scalars in the model's weights, each variable counted once."""
    return _new_params(model, set())[0]


def count_macs(model: keras.Model, input_shape: Any = None) -> int:
    """MACs per example of a whole forward pass (see `profile`)."""
    return profile(model, input_shape).total_macs


def _new_params(layer: Any, seen: set[int]) -> tuple[int, int]:
    """(all, trainable) scalars of the layer's weights not yet in `seen`."""
    trainable_ids = {id(w) for w in getattr(layer, "trainable_weights", [])}
    total = train = 0
    for w in getattr(layer, "weights", []):
        if id(w) in seen:
            continue
        seen.add(id(w))
        size = math.prod(w.shape)
        total += size
        train += size if id(w) in trainable_ids else 0
    return total, train


def _concrete_shapes(graph: FlatGraph, input_shape: Any) -> dict[str, tuple]:
    """Tensor key -> shape; re-derived from fixed input shapes when `input_shape` is given."""
    stored = {k: tuple(t.shape) for k, t in graph.tensors.items()}
    if input_shape is None:
        return stored
    specs = {}
    for name, key in graph.inputs.items():
        t = graph.tensors[key]
        specs[name] = keras.KerasTensor((None,) + _fixed_shape(name, t, input_shape, graph),
                                        dtype=t.dtype)

    def spec(node: FlatNode, args: list, kwargs: dict) -> Any:
        return node.layer.compute_output_spec(*args, **kwargs)

    values = graph.run(specs, fn=spec)
    return {**stored, **{k: tuple(v.shape) for k, v in values.items()}}


def _fixed_shape(name: str, tensor: Any, input_shape: Any, graph: FlatGraph) -> tuple:
    """The per-example shape for input `name`: `tensor`'s own where fully known."""
    own = tuple(tensor.shape[1:])
    if isinstance(input_shape, dict):
        given = input_shape.get(name)
    elif None not in own:
        given = None
    else:
        dynamic = [n for n, k in graph.inputs.items() if None in graph.tensors[k].shape[1:]]
        if len(dynamic) > 1:
            raise ValueError(f"input_shape: inputs {dynamic} have unknown dims; pass a dict "
                             "{input_name: shape} instead of one shape.")
        given = input_shape
    if given is None:
        if None in own:
            raise ValueError(f"input_shape: no shape given for input '{name}' with shape "
                             f"{own}; add it to the input_shape dict.")
        return own
    given = tuple(int(d) for d in given)
    if len(given) != len(own) or any(o is not None and o != g for o, g in zip(own, given)):
        raise ValueError(f"input_shape {given} does not fit input '{name}' of per-example "
                         f"shape {own} (give the shape without the batch dim).")
    return given


def _spatial(layer: Any, shape: tuple, name: str) -> int:
    """Product of the spatial dims of a conv input/output shape."""
    dims = shape[2:] if getattr(layer, "data_format", None) == "channels_first" else shape[1:-1]
    if any(d is None for d in dims):
        raise ValueError(f"Layer '{name}' has unknown spatial dims {shape}: pass "
                         "input_shape=(H, W, C) to profile() to fix the input size.")
    return math.prod(dims)


def _macs(node: FlatNode, shapes: dict[str, tuple]) -> int | None:
    """MACs of one call per example; None when the layer has weights but no formula."""
    layer, name = node.layer, node.name
    out = shapes[node.outputs[0]] if node.outputs else ()
    size = lambda w: math.prod(w.shape)  # noqa: E731
    if isinstance(layer, keras.layers.Dense):
        return _spatial(layer, out, name) * size(layer.kernel)
    if isinstance(layer, _SEPARABLE):
        return _spatial(layer, out, name) * (size(layer.depthwise_kernel)
                                             + size(layer.pointwise_kernel))
    if isinstance(layer, _TRANSPOSED):  # each input pixel scatters the whole kernel
        return _spatial(layer, shapes[node.inputs[0]], name) * size(layer.kernel)
    if isinstance(layer, _CONV):
        # kernel (*k, Cin/groups, Cout) or (*k, Cin, multiplier): one MAC per kernel entry
        return _spatial(layer, out, name) * size(layer.kernel)
    if not getattr(layer, "weights", None) or isinstance(layer, _ZERO_MAC):
        return 0
    return None


def _shape_str(shape: Any) -> str:
    if isinstance(shape, list):
        return ", ".join(_shape_str(s) for s in shape)
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"


def _shape_json(shape: Any) -> Any:
    if isinstance(shape, list):
        return [_shape_json(s) for s in shape]
    return [None if d is None else int(d) for d in shape]


class MaskedCost:
    """Parameters and MACs of a model as :func:`~tfmot_mtl.strip.strip_channels` would leave it,
    computed from channel masks alone (no stripping, a few milliseconds per call).

    A weight keeps ``size * prod(kept share of each of its channel axes)`` elements: a
    convolution's kernel depends on the kept channels of both its input and its output group.
    A layer's MACs scale with its MAC-bearing kernels (both kernels of a separable conv).
    Build once per :class:`~tfmot_mtl.graph.ChannelGraph`; call with masks as often as needed::

        cost = MaskedCost(graph)
        params, macs = cost(masks)
        cost.macs_share(masks)   # the reached fraction of the dense MACs
    """

    def __init__(self, graph: Any, input_shape: Any = None):
        self.graph = graph
        flat = graph.flat
        shapes = _concrete_shapes(flat, input_shape)
        n_atoms = len(graph.atom_channel)
        gids = sorted(graph.groups)
        self._group_index = {gid: i for i, gid in enumerate(gids)}
        index = {gid: i for i, gid in enumerate(gids)}
        self._atom_group = np.array([index[g] for g in graph.atom_group], np.int64) if n_atoms else \
            np.zeros(0, np.int64)
        self._offsets = np.zeros(len(gids) + 1, np.int64)
        self._offsets[1:] = np.cumsum([graph.groups[g].size for g in gids])
        self._atom_flat = self._offsets[self._atom_group] + graph.atom_channel if n_atoms else self._atom_group
        self._gids = gids
        # per weight (by id): (size, atoms of each channel axis, one entry per axis)
        axes_of: dict[int, dict[int, np.ndarray]] = {}
        sizes: dict[int, int] = {}
        for layer_name, axes in graph.axes.items():
            layer = graph.layer(layer_name)
            for ax in axes:
                var = layer.weights[ax.weight]
                sizes[id(var)] = math.prod(var.shape)
                axes_of.setdefault(id(var), {}).setdefault(ax.axis % len(var.shape), np.asarray(ax.atoms))
        self._weights = {wid: (sizes[wid], list(by_axis.values())) for wid, by_axis in axes_of.items()}
        self._all_weights: dict[int, int] = {}
        self._mac_terms: list[tuple[float, list[int]]] = []  # (MACs per kernel element, kernel ids)
        for node in flat.nodes:
            for w in getattr(node.layer, "weights", []):
                self._all_weights.setdefault(id(w), math.prod(w.shape))
            macs = _macs(node, shapes) or 0
            kernels = _mac_kernels(node.layer)
            if macs and kernels:
                total = sum(math.prod(k.shape) for k in kernels)
                self._mac_terms.append((macs / total, [id(k) for k in kernels]))
            elif macs:
                self._mac_terms.append((float(macs), []))
        self.dense_params, self.dense_macs = self(None)

    def _keep_flat(self, masks: Any) -> np.ndarray:
        keep = np.ones(int(self._offsets[-1]), bool)
        for gid, mask in (masks or {}).items():
            i = self._group_index.get(gid)
            if i is not None:
                keep[self._offsets[i]:self._offsets[i + 1]] = np.asarray(mask, bool)
        return keep

    def __call__(self, masks: Any) -> tuple[int, int]:
        """``(params, MACs)`` of the model with ``masks`` (None: the dense model) stripped."""
        keep_atoms = self._keep_flat(masks)[self._atom_flat] if len(self._atom_flat) else self._atom_flat

        def kept(wid: int) -> float:
            size, axes = self._weights.get(wid, (self._all_weights[wid], []))
            share = 1.0
            for atoms in axes:
                share *= float(keep_atoms[atoms].mean()) if len(atoms) else 1.0
            return size * share

        params = sum(kept(wid) for wid in self._all_weights)
        macs = sum(per * sum(kept(k) for k in kernels) if kernels else per
                   for per, kernels in self._mac_terms)
        return int(round(params)), int(round(macs))

    def share(self, masks: Any) -> tuple[float, float]:
        """``(params, MACs)`` with ``masks`` as fractions of the dense model's."""
        params, macs = self(masks)
        return params / max(1, self.dense_params), macs / max(1, self.dense_macs)


def _mac_kernels(layer: Any) -> list:
    """The weights a layer's MAC count is proportional to (see :func:`_macs`)."""
    if isinstance(layer, _SEPARABLE):
        return [layer.depthwise_kernel, layer.pointwise_kernel]
    kernel = getattr(layer, "kernel", None)
    if isinstance(layer, (keras.layers.Dense,) + _CONV + _TRANSPOSED) and kernel is not None:
        return [kernel]
    return []
