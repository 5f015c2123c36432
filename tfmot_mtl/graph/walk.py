"""Flatten a Keras 3 functional model into one topologically ordered list of layer calls.

Nested functional sub-models are inlined (their layers keep their own names, prefixed
with the sub-model's name only where two layers would otherwise share one), Sequential
models are read through their functional graph, composite custom layers without a
channel rule are seen through (their ``call`` traced on symbolic tensors, see
:mod:`tfmot_mtl.graph.trace`; their sub-layers are named ``<layer>_<attribute>``), and a layer
called more than once appears once per call. Every tensor gets a string key that is unique in the flattened
graph, also when a nested model is called twice.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import keras
from keras import tree

from tfmot_mtl.utils import _keras_compat as compat
from tfmot_mtl import layers as rules
from tfmot_mtl.graph.trace import TraceRefused, trace_call


@dataclass
class FlatNode:
    """One call of one layer (or keras op) in the flattened graph."""

    layer: Any
    name: str
    call_index: int
    inputs: list[str]
    outputs: list[str]
    _node: Any = field(repr=False)
    _keys: dict[int, str] = field(repr=False)

    def fill_in(self, values: dict[str, Any]) -> tuple[list, dict]:
        """The node's call arguments with each symbolic tensor replaced by `values[key]`."""

        def sub(x):
            if isinstance(x, keras.KerasTensor):
                return values[self._keys[id(x)]]
            return x

        args = tree.map_structure(sub, list(self._node.arguments.args))
        kwargs = tree.map_structure(sub, dict(self._node.arguments.kwargs))
        return args, _accepted(self.layer, kwargs)

    def call(self, values: dict[str, Any], layer: Any = None) -> list:
        """Calls `layer` (default: this node's layer) on the values; returns flat outputs."""
        args, kwargs = self.fill_in(values)
        out = (layer or self.layer)(*args, **kwargs)
        return tree.flatten(out)


def _accepted(layer: Any, kwargs: dict) -> dict:
    """``kwargs`` without those the layer's ``call`` does not take (Keras' ``__call__`` drops e.g. an
    unused ``training``, but ``compute_output_spec`` would not)."""
    if not kwargs or not isinstance(layer, keras.layers.Layer):
        return kwargs
    try:
        params = inspect.signature(layer.call).parameters
    except (TypeError, ValueError):
        return kwargs
    if any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return kwargs
    return {k: v for k, v in kwargs.items() if k in params}


@dataclass
class FlatGraph:
    """A functional model flattened to layer calls in topological order."""

    model: keras.Model
    nodes: list[FlatNode]
    tensors: dict[str, keras.KerasTensor]
    inputs: dict[str, str]
    outputs: dict[str, str]
    layers: dict[str, Any]
    untraced: dict[str, str] = field(default_factory=dict)
    """Layer name -> why its call could not be traced (layers without a channel rule)."""

    def consumers(self) -> dict[str, list[FlatNode]]:
        """Tensor key -> nodes that read it."""
        out: dict[str, list[FlatNode]] = {k: [] for k in self.tensors}
        for node in self.nodes:
            for key in node.inputs:
                out[key].append(node)
        return out

    def reachable_outputs(self) -> dict[str, frozenset[str]]:
        """Tensor key -> names of the model outputs that depend on it."""
        reach: dict[str, set[str]] = {k: set() for k in self.tensors}
        for name, key in self.outputs.items():
            reach[key].add(name)
        for node in reversed(self.nodes):
            below = set().union(*(reach[k] for k in node.outputs)) if node.outputs else set()
            for key in node.inputs:
                reach[key] |= below
        return {k: frozenset(v) for k, v in reach.items()}

    def run(self, inputs: dict[str, Any], fn: Callable | None = None) -> dict[str, Any]:
        """Executes the graph eagerly and returns every tensor's value by key.

        `fn(node, args, kwargs)` may replace the layer call (default: call the layer
        with `training=False` semantics as recorded in the graph).
        """
        values = {self.inputs[name]: x for name, x in inputs.items()}
        for node in self.nodes:
            if fn is None:
                outs = node.call(values)
            else:
                args, kwargs = node.fill_in(values)
                outs = tree.flatten(fn(node, args, kwargs))
            for key, val in zip(node.outputs, outs):
                values[key] = val
        return values


def as_functional(model: Any) -> keras.Model:
    """The functional graph behind `model` (Functional or Sequential), or a clear error."""
    if isinstance(model, keras.Sequential):
        functional = compat.sequential_functional(model)
        if functional is None:
            raise ValueError(
                f"Sequential model '{model.name}' has no known input shape; build it with "
                "`keras.Input(shape)` as its first layer (or call `model.build(shape)`)."
            )
        return functional
    if not compat.has_functional_graph(model):
        raise ValueError(
            f"'{getattr(model, 'name', model)}' ({type(model).__name__}) is not a Keras "
            "functional or Sequential model. Subclassed models have no inspectable graph: "
            "rebuild it with the functional API (keras.Input -> layers -> keras.Model), or "
            "wrap its layers in a functional model, then pass that."
        )
    return model


def is_nested_model(layer: Any) -> bool:
    return compat.has_functional_graph(layer)


def output_names(model: keras.Model) -> list[str]:
    """Names of the model outputs, in ``model.outputs`` order: the dict keys when outputs are a
    dict (Keras 3 names dict outputs by their keys, e.g. in ``compile(loss={...})``, while
    ``model.output_names`` lists the output *layers'* names), else the output layers' names.

    The one place that names a model's outputs (tasks): use it rather than ``model.output_names``.
    A Sequential model (no ``output_names``) is named by its last layer, as Keras names its output.
    """
    struct = compat.outputs_struct(model, functional_only=True)
    if isinstance(struct, dict):
        return [str(k) for k, _ in _dict_items(struct)]
    names = getattr(model, "output_names", None)
    if names:
        return list(names)
    if isinstance(model, keras.Sequential) and model.layers:
        return [model.layers[-1].name]
    as_functional(model)  # a subclassed model or an unbuilt Sequential: raises why, and the fix
    raise ValueError(f"cannot name the outputs of '{getattr(model, 'name', model)}' ({type(model).__name__}).")


def named_outputs(model: keras.Model, outputs: Any) -> dict:
    """A call's outputs as ``{output name: tensor}``: a dict as it is (also Keras' tracked
    dict wrappers), a list or a single tensor named by :func:`output_names`."""
    if isinstance(outputs, Mapping) or (hasattr(outputs, "keys") and hasattr(outputs, "__getitem__")):
        return {k: outputs[k] for k in outputs.keys()}
    return dict(zip(output_names(model), tree.flatten(outputs)))


def input_names(model: keras.Model) -> list[str]:
    struct = compat.inputs_struct(model, functional_only=True)
    if isinstance(struct, dict):
        return [str(k) for k, _ in _dict_items(struct)]
    return [compat.tensor_operation(t).name for t in model.inputs]


def _dict_items(struct: dict) -> list[tuple[str, Any]]:
    # keras.tree flattens dicts in sorted-key order; follow it so names match model.outputs.
    return [(k, struct[k]) for k in sorted(struct)]


def flatten(model: Any) -> FlatGraph:
    """Flattens a functional/Sequential model (nested sub-models inlined)."""
    model = as_functional(model)
    builder = _Builder()
    in_keys = [builder.key((), t) for t in model.inputs]
    for t, k in zip(model.inputs, in_keys):
        builder.tensors[k] = t
    builder.walk(model, (), dict(zip((id(t) for t in model.inputs), in_keys)))
    out_keys = [builder.resolve(builder.key((), t)) for t in model.outputs]
    return FlatGraph(
        model=model,
        nodes=builder.nodes,
        tensors=builder.tensors,
        inputs=dict(zip(input_names(model), in_keys)),
        outputs=dict(zip(output_names(model), out_keys)),
        layers=builder.layers,
        untraced=builder.untraced,
    )


class _Builder:
    def __init__(self):
        self.nodes: list[FlatNode] = []
        self.tensors: dict[str, keras.KerasTensor] = {}
        self.layers: dict[str, Any] = {}
        self.calls: dict[int, int] = {}
        self.alias: dict[str, str] = {}
        self.untraced: dict[str, str] = {}
        self.replace: dict[int, dict[int, Any]] = {}

    @staticmethod
    def key(ctx: tuple, tensor: Any) -> str:
        return "/".join(map(str, ctx + (id(tensor),)))

    def resolve(self, key: str) -> str:
        while key in self.alias:
            key = self.alias[key]
        return key

    def layer_name(self, layer: Any, ctx_names: tuple[str, ...], local: str | None = None) -> str:
        for name, known in self.layers.items():
            if known is layer:
                return name
        name = layer.name if local is None else f"{ctx_names[-1]}_{local}"
        if name in self.layers:
            name = "_".join(ctx_names + (layer.name,))
        while name in self.layers:
            name += "_"
        self.layers[name] = layer
        return name

    def walk(self, model: keras.Model, ctx: tuple, seeds: dict[int, str],
             ctx_names: tuple[str, ...] = (), owner: Any = None) -> None:
        by_depth = compat.nodes_by_depth(model)
        model_nodes = [n for d in sorted(by_depth, reverse=True) for n in by_depth[d]]
        local = _local_names(owner, model_nodes) if owner is not None else {}
        replace = self.replace.get(id(model), {})
        used = {id(t) for n in model_nodes for t in tree.flatten(n.input_tensors)}
        used |= {id(t) for t in tree.flatten(model.outputs)}
        for t in model.inputs:
            if self.key(ctx, t) != seeds[id(t)]:
                self.alias[self.key(ctx, t)] = seeds[id(t)]
        for node in model_nodes:
            op = node.operation
            if op is None or node.is_input:
                continue
            in_keys = [self.resolve(self.key(ctx, t)) for t in node.input_tensors]
            out_tensors = tree.flatten(node.outputs)
            own = local.get(id(op))
            scope = op.name if own is None else f"{ctx_names[-1]}_{own}"
            traced = self.trace(op, node, ctx, ctx_names, own, used)
            if is_nested_model(op) or traced is not None:
                inner = as_functional(op) if traced is None else traced[0]
                call = self.calls.get(id(op), 0)
                self.calls[id(op)] = call + 1
                inner_ctx = ctx + (f"{op.name}@{call}",)
                if traced is None:
                    inner_seeds = {id(t): k for t, k in zip(inner.inputs, in_keys)}
                else:
                    self.replace[id(inner)] = traced[2]
                    outer = {id(t): self.resolve(self.key(ctx, t)) for t in node.arguments.keras_tensors}
                    inner_seeds = {id(t): outer[traced[1][id(t)]] for t in inner.inputs}
                self.walk(inner, inner_ctx, inner_seeds, ctx_names + (scope,),
                          owner=None if traced is None else op)
                kept = out_tensors if traced is None or traced[3] is None else [out_tensors[i] for i in traced[3]]
                for t_out, t_in in zip(kept, inner.outputs):
                    self.alias[self.key(ctx, t_out)] = self.resolve(self.key(inner_ctx, t_in))
                continue
            keys = {id(t): self.resolve(self.key(ctx, t)) for t in node.arguments.keras_tensors}
            out_keys = [self.key(ctx, t) for t in out_tensors]
            for t, k in zip(out_tensors, out_keys):
                self.tensors[k] = t
            call = self.calls.get(id(op), 0)
            self.calls[id(op)] = call + 1
            name = self.layer_name(op, ctx_names, local.get(id(op)))
            if id(op) in replace:
                op = self.layers[name] = replace[id(op)]
            self.nodes.append(FlatNode(
                layer=op, name=name, call_index=call,
                inputs=in_keys, outputs=out_keys, _node=node, _keys=keys,
            ))

    def trace(self, op: Any, node: Any, ctx: tuple, ctx_names: tuple[str, ...], own: str | None,
              used: set[int]):
        """:func:`~tfmot_mtl.graph.trace.trace_call`'s result for a composite layer without a rule, else None
        (the reason a trace was refused is kept in ``untraced``). ``used``: ids of the tensors that
        the walked graph consumes or returns."""
        if (is_nested_model(op) or not isinstance(op, keras.layers.Layer)
                or rules.rule_for(op) is not rules.UNKNOWN or len(ctx) > 32):
            return None
        try:
            traced = trace_call(op, node)
            outputs = tree.flatten(node.outputs)
            dropped = [] if traced[3] is None else [i for i in range(len(outputs)) if i not in traced[3]]
            if any(id(outputs[i]) in used for i in dropped):
                raise TraceRefused(f"its call returns constant empty tensors (outputs {dropped}) that the "
                                   "model uses")
            return traced
        except TraceRefused as exc:
            name = self.layer_name(op, ctx_names, own)
            self.untraced.setdefault(name, str(exc))
            return None


def _local_names(owner: Any, nodes: list) -> dict[int, str]:
    """Names of the operations of a traced call that do not depend on Keras' global name counters
    (which differ in a clone, or between two traces): the sub-layer's attribute on the composite
    layer (``"conv"``, ``"convs_1"``), else its kind and position (``"add"``, ``"add_1"``)."""
    names: dict[int, str] = {}
    attrs = sorted((a for a in vars(owner) if a != "_layers"), key=lambda a: a.startswith("_"))
    for attr in attrs:
        value = vars(owner)[attr]
        items = value if isinstance(value, (list, tuple)) else [value]
        for i, item in enumerate(items):
            if isinstance(item, keras.Operation) and id(item) not in names:
                names[id(item)] = attr.lstrip("_") + (f"_{i}" if isinstance(value, (list, tuple)) else "")
    counts: dict[str, int] = {}
    for node in nodes:
        op = node.operation
        if op is None or node.is_input or id(op) in names:
            continue
        kind = type(op).__name__.lower()
        names[id(op)] = kind + (f"_{counts[kind]}" if counts.get(kind) else "")
        counts[kind] = counts.get(kind, 0) + 1
    return names
