"""ChannelGraph: which channels of a Keras functional model must be removed together.

Every output channel of a producer (Conv, Dense, ...) and every model-input channel is an
*atom*. Layer rules (:mod:`tfmot_mtl.layers`) say how atoms flow from inputs to outputs
and which weight slices they own; element-wise merges couple atoms (union-find), and a
layer called more than once couples the atoms of its call sites. Coupled atoms form one
*channel*; channels whose atoms come from the same producers form one *channel group*
(the unit a mask is defined on). This is the dependency-graph idea of Torch-Pruning,
done on the Keras functional graph.
"""
from __future__ import annotations

import hashlib
import io
import json
from typing import Any

import numpy as np

from tfmot_mtl import layers as rules
from tfmot_mtl.graph.records import Axis, ChannelGroup, FoldSite, Slice
from tfmot_mtl.graph.walk import FlatGraph, FlatNode, flatten

__all__ = ["ChannelGraph", "ChannelGroup", "GroupId", "Slice", "Axis", "FoldSite"]


class GroupId(str):
    """A channel group id: the readable name (a ``str``, equal to it) that also knows its place.

    ``graph`` is the :attr:`ChannelGraph.fingerprint` of the graph it comes from and ``position``
    the group's index in that graph's ``groups``. Layer names are not stable (``clone_model`` and
    a ``.keras`` reload renumber auto-named layers; keras-hub renames layers it rebuilds from
    its arguments): masks keyed by these ids match any graph of the same fingerprint by position.
    """

    graph: str | None
    position: int | None

    def __new__(cls, name: str, graph: str | None = None, position: int | None = None) -> "GroupId":
        self = super().__new__(cls, name)
        self.graph, self.position = graph, position
        return self

    def __reduce__(self):
        return GroupId, (str(self), self.graph, self.position)


# The attribute of a model object that holds (its layers' ids, its graph) for ChannelGraph.of: on
# the model itself, so the graph lives exactly as long as the model (a weak-keyed cache would keep
# every model alive, since the graph holds its model's layers).
_CACHE_ATTRIBUTE = "_tfmot_mtl_channel_graph"


class ChannelGraph:
    """Channel groups of a Keras 3 functional (or Sequential) model.

    Build with :meth:`from_model`, or get the one already built for a model object with
    :meth:`of`. A graph is bound to the layer objects of the model it was built from (it reads
    their weights when asked, so training does not outdate it); a clone or a stripped copy of
    the model has a graph of its own (:meth:`check_model`). ``groups`` maps group id -> :class:`ChannelGroup`; the ids
    are :class:`GroupId` strings (the producer layer's flattened name) that also record the
    group's place in the graph, and ``fingerprint`` identifies the graph's channel structure
    (equal for a model, its ``clone_model`` copy and its ``.keras`` reload).
    """

    def __init__(self, flat: FlatGraph):
        self.flat = flat
        self.model = flat.model
        self._parent: list[int] = []
        self._origin: list[tuple[str, int, int]] = []
        self._frozen: dict[int, list[str]] = {}
        self._n_origins = 0
        self._producers: dict[tuple, np.ndarray] = {}
        self.axes: dict[str, list[Axis]] = {}
        self.maps: dict[str, np.ndarray] = {}
        self.splits: dict[str, rules.Split] = {}  # tensors whose channels span several axes
        self.inner_maps: dict[str, list[np.ndarray]] = {}
        self.states: dict[str, np.ndarray] = {}
        self.fold_sites: list[FoldSite] = []
        self.calls: dict[str, int] = {}
        self.frozen_layers: set[str] = set()
        self.groups: dict[str, ChannelGroup] = {}
        self.fingerprint: str = ""
        self.source: Any = flat.model  # the model object passed to from_model

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_model(cls, model: Any) -> "ChannelGraph":
        """Walks the model and groups its channels. Never fails on unknown layers: it freezes them."""
        graph = cls(flatten(model))
        with rules.naming(graph.flat.layers):
            graph._walk()
        graph._build_groups()
        graph.source = model
        try:  # object.__setattr__: not a tracked attribute of a Keras layer
            object.__setattr__(model, _CACHE_ATTRIBUTE, (_layer_ids(model), graph))
        except (AttributeError, TypeError):  # an object that takes no attributes: nothing to cache on
            pass
        return graph

    @classmethod
    def of(cls, model: Any) -> "ChannelGraph":
        """The graph of ``model``, built on first use and reused while the model object lives
        (and keeps its layers): the methods, the reports and the surgeon that see the same model
        share one graph instead of walking it again."""
        ids, graph = getattr(model, _CACHE_ATTRIBUTE, (None, None))
        if graph is not None and ids == _layer_ids(model):
            return graph
        return cls.from_model(model)

    def check_model(self, model: Any, argument: str = "graph") -> "ChannelGraph":
        """``self`` when it was built from ``model`` itself; a clear error otherwise (a graph
        holds the layer objects of its own model, so using it on a clone or on a stripped copy
        would read and write the wrong weights)."""
        if self.source is not model:
            raise ValueError(f"`{argument}` was built from the model '{getattr(self.source, 'name', '?')}', not "
                             f"from '{getattr(model, 'name', '?')}' (a ChannelGraph is bound to one model "
                             "object; a clone or a stripped copy has its own): pass graph=None, or "
                             "ChannelGraph.of(model)")
        return self

    def _alloc(self, n: int, origin: str, frozen: str | None = None) -> np.ndarray:
        start = len(self._parent)
        rank = self._n_origins
        self._n_origins += 1
        self._parent.extend(range(start, start + n))
        self._origin.extend((origin, i, rank) for i in range(n))
        atoms = np.arange(start, start + n)
        if frozen:
            self._freeze(atoms, frozen)
        return atoms

    def _find(self, a: int) -> int:
        parent = self._parent
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    def _union(self, a: int, b: int) -> None:
        ra, rb = self._find(a), self._find(b)
        if ra != rb:
            self._parent[rb] = ra
            if rb in self._frozen:
                self._frozen.setdefault(ra, []).extend(self._frozen.pop(rb))

    def _freeze(self, atoms, reason: str) -> None:
        for a in np.asarray(atoms).reshape(-1):
            reasons = self._frozen.setdefault(self._find(int(a)), [])
            if reason not in reasons:
                reasons.append(reason)

    def _walk(self) -> None:
        flat = self.flat
        for name, key in flat.inputs.items():
            width = _width(flat.tensors[key])
            self.maps[key] = self._alloc(width, name, frozen=f"model input '{name}'")
            self.states[key] = np.zeros(width, np.int8)
        for node in flat.nodes:
            self._visit(node)
        for name, key in flat.outputs.items():
            self._freeze(self.maps[key], f"reaches model output '{name}'")
        self._check_folds()

    def _visit(self, node: FlatNode) -> None:
        ctx = _CallContext(self, node)
        rule = rules.rule_for(node.layer)
        if not ctx.maps_consistent():
            rule = rules.UNKNOWN
        if any(ctx.in_splits) and not rule.split_axes:
            out_maps = ctx.freeze_all(f"{rules.describe(node.layer)} gets a tensor whose channels span "
                                      "several axes (attention heads) and its rule does not follow them")
            rule = rules.UNKNOWN
        else:
            out_maps = rule.propagate(ctx)
        if rule.split_axes == "elementwise" and ctx.in_splits and ctx.in_splits[0] and not ctx.frozen_all:
            for i, shape in enumerate(ctx.out_shapes):
                if shape == ctx.in_shapes[0] and len(out_maps[i]) == ctx.in_splits[0].width:
                    ctx.out_splits[i] = ctx.in_splits[0]
        widths = [sp.width if sp and not ctx.frozen_all else w for sp, w in zip(ctx.out_splits, ctx.out_widths)]
        if any(len(m) != w for m, w in zip(out_maps, widths)):
            out_maps = ctx.freeze_all(f"{rules.describe(node.layer)} changed the channel count "
                                      "in a way its rule did not predict")
            rule = rules.UNKNOWN
        if ctx.frozen_all:
            self.frozen_layers.add(node.name)
        in_states = [self.states[k] for k in node.inputs]
        out_states = rule.states(ctx, in_states) if not ctx.frozen_all else \
            [np.zeros(w, np.int8) for w in ctx.out_widths]
        for i, (key, m, s) in enumerate(zip(node.outputs, out_maps, out_states)):
            self.maps[key] = np.asarray(m, dtype=np.int64)
            self.states[key] = np.asarray(s, dtype=np.int8)
            if ctx.out_splits[i] and not ctx.frozen_all:
                self.splits[key] = ctx.out_splits[i]
        self.calls[node.name] = self.calls.get(node.name, 0) + 1
        if node.inputs and not ctx.frozen_all:
            self._record_folds(node, rule, in_states)

    def _record_folds(self, node: FlatNode, rule, in_states) -> None:
        in_axes = [a for a in self.axes.get(node.name, []) if a.role == "in"]
        if not in_axes:
            return
        state = in_states[0]
        const = np.flatnonzero(state >= rules.CONST)
        if not len(const):
            return
        atoms = self.maps[node.inputs[0]][const]
        bad = np.flatnonzero(state[const] > rules.CONST) if rule.can_fold(node.layer) else np.arange(len(const))
        if len(bad):
            self._freeze(atoms[bad], f"a removed channel would leave a constant (f(0) != 0) that "
                                     f"{rules.describe(node.layer)} cannot absorb exactly")
        self.fold_sites.append(FoldSite(node.name, node.inputs[0], atoms, const))

    def _check_folds(self) -> None:
        for site in self.fold_sites:
            if self.calls[site.layer] > 1:
                self._freeze(site.atoms, f"layer '{site.layer}' is called more than once and would "
                                         "need a different constant folded at each call")

    # ---------------------------------------------------------------------- groups
    def _build_groups(self) -> None:
        n = len(self._parent)
        roots = np.array([self._find(a) for a in range(n)], dtype=np.int64)
        # Channels (roots) sharing a producer belong to one group.
        link = list(range(n))

        def find(a):
            while link[a] != a:
                link[a] = link[link[a]]
                a = link[a]
            return a

        first_root_of: dict[str, int] = {}
        for a in range(n):
            origin = self._origin[a][0]
            r = roots[a]
            if origin in first_root_of:
                ra, rb = find(first_root_of[origin]), find(r)
                if ra != rb:
                    link[rb] = ra
            else:
                first_root_of[origin] = r
        comp = np.array([find(r) for r in roots], dtype=np.int64)
        order = sorted(range(n), key=lambda a: (self._origin[a][2], self._origin[a][1]))

        self.atom_group = np.empty(n, dtype=object)
        self.atom_channel = np.zeros(n, dtype=np.int64)
        members: dict[int, dict[int, int]] = {}
        group_ids: dict[int, str] = {}
        producers: dict[int, list[str]] = {}
        for a in order:
            c, r = comp[a], roots[a]
            chans = members.setdefault(c, {})
            if r not in chans:
                chans[r] = len(chans)
            group_ids.setdefault(c, self._origin[a][0])
            prods = producers.setdefault(c, [])
            if self._origin[a][0] not in prods:
                prods.append(self._origin[a][0])
        for a in range(n):
            self.atom_group[a] = group_ids[comp[a]]
            self.atom_channel[a] = members[comp[a]][roots[a]]

        reach = self.flat.reachable_outputs()
        tasks: dict[str, set] = {gid: set() for gid in group_ids.values()}
        for key, m in self.maps.items():
            for gid in set(self.atom_group[m]) if len(m) else ():
                tasks[gid] |= reach.get(key, frozenset())
        for key, inner in self.inner_maps.items():
            for m in inner:
                for gid in set(self.atom_group[m]):
                    tasks[gid] |= reach.get(key, frozenset())

        slices: dict[str, list[Slice]] = {gid: [] for gid in group_ids.values()}
        for layer_name, axes in self.axes.items():
            layer = self.flat.layers[layer_name]
            for ax in axes:
                self._split_axis(layer, ax, slices)

        records = []
        for c, gid in group_ids.items():
            reasons = []
            for r in members[c]:
                reasons.extend(x for x in self._frozen.get(int(r), []) if x not in reasons)
            records.append(ChannelGroup(
                id=gid, size=len(members[c]), producers=tuple(producers[c]),
                slices=slices[gid], tasks=frozenset(tasks[gid]),
                prunable=not reasons, reasons=tuple(reasons),
            ))
        self._key_groups(records)

    def _key_groups(self, records: list[ChannelGroup]) -> None:
        """Fills ``groups`` (and ``atom_group``) with :class:`GroupId` ids: each group's name plus
        its position in this graph and the graph's :attr:`fingerprint`."""
        self.fingerprint = _fingerprint([self._structure_of(g) for g in records])
        ids = {g.id: GroupId(g.id, self.fingerprint, i) for i, g in enumerate(records)}
        for g in records:
            g.id = ids[g.id]
            self.groups[g.id] = g
        for a, gid in enumerate(self.atom_group):
            self.atom_group[a] = ids[gid]

    def _structure_of(self, group: ChannelGroup) -> list:
        """What a group is, without any layer name: size, producer kinds, prunable, tasks."""
        kinds = [self._origin_kind(origin) for origin in group.producers]
        return [group.size, kinds, group.prunable, sorted(group.tasks)]

    def _origin_kind(self, origin: str) -> str:
        """The class of the layer an atom origin names (``"<layer>"``, ``"<layer>:<tag>"``), or "Input"."""
        layers = self.flat.layers
        if origin in layers:
            return type(layers[origin]).__name__
        base, sep, tag = origin.rpartition(":")
        if sep and base in layers:
            return f"{type(layers[base]).__name__}:{tag}"
        return "Input"

    def _split_axis(self, layer, ax: Axis, slices: dict[str, list[Slice]]) -> None:
        weight = layer.weights[ax.weight]
        shape = tuple(weight.shape)
        per_position = int(np.prod(shape)) // shape[ax.axis]
        gids = self.atom_group[ax.atoms]
        for gid in dict.fromkeys(gids):
            pos = np.flatnonzero(gids == gid)
            slices[gid].append(Slice(ax.layer, ax.weight, weight.name, ax.axis % len(shape), ax.role,
                                     ax.zeroed, ax.defines_zero, pos, self.atom_channel[ax.atoms[pos]],
                                     per_position))

    # -------------------------------------------------------------------- queries
    @property
    def prunable_groups(self) -> list[ChannelGroup]:
        return [g for g in self.groups.values() if g.prunable]

    def shared_groups(self) -> list[ChannelGroup]:
        return [g for g in self.groups.values() if g.prunable and g.shared]

    def keep_atoms(self, masks) -> np.ndarray:
        """Boolean keep flag of every atom for a ChannelMasks (absent groups keep all)."""
        keep = np.ones(len(self.atom_channel), dtype=bool)
        for gid, mask in masks.items():
            sel = self.atom_group == gid
            keep[sel] = np.asarray(mask)[self.atom_channel[sel]]
        return keep

    def layer(self, name: str):
        return self.flat.layers[name]

    def layer_atoms(self, name: str) -> np.ndarray | None:
        """The atoms of layer ``name``'s first sliced weight axis (``atom_group[atoms]``,
        ``atom_channel[atoms]``: their groups and channels), or None if none is sliced."""
        axes = self.axes.get(name)
        return None if axes is None else axes[0].atoms

    def summary(self, print_fn=None) -> str:
        """A readable table of the groups: id, size, producers, tasks, shared, prunable, reason."""
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"Channel groups of '{self.model.name}'")
        for col in ("group", "size", "layers", "tasks", "shared", "prunable / reason"):
            table.add_column(col, overflow="fold")
        for g in self.groups.values():
            if g.size == 0:
                continue
            layers_ = ", ".join(g.layers[:4]) + (" ..." if len(g.layers) > 4 else "")
            table.add_row(g.id, str(g.size), layers_, ", ".join(sorted(g.tasks)) or "-",
                          "yes" if g.shared else "no", "yes" if g.prunable else f"no: {g.reason}")
        console = Console(width=160, file=io.StringIO())
        console.print(table)
        (print_fn or print)(text := console.file.getvalue())
        return text


def _fingerprint(structure: list) -> str:
    return hashlib.sha256(json.dumps(structure).encode()).hexdigest()[:16]


def _width(tensor) -> int:
    shape = tuple(tensor.shape)
    if len(shape) < 2 or shape[-1] is None:
        return 0
    return int(shape[-1])


class _CallContext:
    """What a rule sees and may do for one layer call."""

    def __init__(self, graph: ChannelGraph, node: FlatNode):
        self.graph, self.node, self.layer, self.name = graph, node, node.layer, node.name
        self.in_maps = [graph.maps[k] for k in node.inputs]
        self.in_shapes = [tuple(graph.flat.tensors[k].shape) for k in node.inputs]
        self.out_shapes = [tuple(graph.flat.tensors[k].shape) for k in node.outputs]
        self.out_widths = [_width(graph.flat.tensors[k]) for k in node.outputs]
        self.in_splits = [graph.splits.get(k) for k in node.inputs]
        self.out_splits: list = [None] * len(node.outputs)  # set by rules whose outputs are split
        self.frozen_all = False

    def maps_consistent(self) -> bool:
        """The first input carries channels; others do too, or have no channel axis (rank < 2)."""
        if not self.in_maps:
            return False
        for i, (m, s) in enumerate(zip(self.in_maps, self.in_shapes)):
            if self.in_splits[i] is not None:
                if len(m) != self.in_splits[i].width or len(m) == 0:
                    return False
                continue
            has_axis = len(s) >= 2 and s[-1] is not None
            if not has_axis and i > 0:
                continue
            if not has_axis or len(m) != s[-1] or len(m) == 0:
                return False
        return True

    def new_atoms(self, n: int, tag: str = "out") -> np.ndarray:
        """The layer's own new channels (the same atoms at every call); a ``tag`` other than
        "out" names a second set (e.g. attention heads: group ``"<layer>:heads"``)."""
        key = (self.name, tag)
        if key not in self.graph._producers:
            origin = self.name if tag == "out" else f"{self.name}:{tag}"
            self.graph._producers[key] = self.graph._alloc(n, origin)
        return self.graph._producers[key]

    def inner(self, atoms: np.ndarray) -> None:
        """Records atoms that live inside the layer (no tensor carries them, e.g. attention heads):
        they feed the tasks of the layer's outputs, and a mask may not remove all of them."""
        for key in self.node.outputs[:1]:
            self.graph.inner_maps.setdefault(key, []).append(np.asarray(atoms))

    def axis(self, weight: int, axis: int, role: str, atoms: np.ndarray, zeroed: bool = True,
             defines_zero: bool = True) -> None:
        axes = self.graph.axes.setdefault(self.name, [])
        for ax in axes:
            if ax.weight == weight and ax.axis == axis and ax.role == role:
                self.couple(ax.atoms, atoms)  # a later call of a shared layer
                return
        if role == "in" or self.node.call_index == 0:
            axes.append(Axis(self.name, weight, axis, role, np.asarray(atoms), zeroed, defines_zero))

    def couple(self, a: np.ndarray, b: np.ndarray) -> None:
        for x, y in zip(np.asarray(a).reshape(-1), np.asarray(b).reshape(-1)):
            self.graph._union(int(x), int(y))

    def freeze(self, atoms: np.ndarray, reason: str) -> None:
        self.graph._freeze(atoms, reason)

    def freeze_all(self, reason: str) -> list[np.ndarray]:
        """Freezes every input channel and gives each output new frozen atoms."""
        self.frozen_all = True
        for m in self.in_maps:
            self.freeze(m, reason)
        outs = []
        for i, w in enumerate(self.out_widths):
            key = (self.name, "frozen", self.node.call_index, i)
            if key not in self.graph._producers:
                self.graph._producers[key] = self.graph._alloc(w, f"{self.name}:{i}" if i else self.name,
                                                               frozen=reason)
            outs.append(self.graph._producers[key])
        return outs


def _layer_ids(model: Any) -> tuple[int, ...]:
    """What may change in a model object without a new object: its list of layers (Sequential.add)."""
    return tuple(id(layer) for layer in getattr(model, "layers", ()))
