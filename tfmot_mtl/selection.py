"""One vocabulary for the channel groups a method acts on.

Every method picks its channel groups with :func:`select_groups`, so the same words select
the same groups everywhere:

- ``"shared"``: the shared trunk, i.e. the prunable groups that feed more than one model
  output (task or domain). Task heads are left alone. This is what the papers prune.
- ``"all"``: every prunable group, task heads included.
- a list of names: the prunable groups that one of the names produces (a group's id is
  the name of its first producer, so group ids work too; a residual stream joined by an
  ``Add`` is one group with several producers and any of them selects it).
- a callable ``ChannelGroup -> bool``.

``protect`` then removes groups from the selection: a task name (a model output) protects
the groups feeding ONLY that task (its head); any other name must be a layer, and protects
every group with a slice in that layer (as producer, pass-through or consumer), so the
layer keeps its shape.

Only prunable groups with at least one channel are ever selected; the order is the
graph's. The methods' argument names:

- structured filter pruning (Garg et al. 2023): ``ChannelPruningCallback(groups=, protect=)``
  and ``prune_model(groups=, protect=)``;
- group sparsity (Upadhyay et al. 2024): ``ProximalGroupLasso(groups=, protect=)``,
  ``sparsity_report(groups=, protect=)`` and ``apply_group_sparsity(groups=, protect=)``.
  Their older ``layers=`` still works, with a ``DeprecationWarning``: there a callable is called
  with each producer *layer* (``callable_of="layer"``), and ``apply_group_sparsity`` takes any
  layer with a kernel by name (e.g. a head regularized on its input channels, ``axis="input"``);
- budget-aware pruning (dos Santos et al. 2023): ``add_domain_switches(groups=, protect=)``;
  its older ``switch_groups="prunable" | "shared"`` (default ``"prunable"``) means
  ``groups="all" | "shared"``.

Every entry point defaults to ``"all"`` (channels that reach an output are never prunable
anyway, so a task's output width is safe); the paper reproductions pass ``"shared"``.

**The layer floor.** No method takes a group below :func:`layer_floor` channels:
``max(min_channels, ceil(min_fraction * size))`` (never more than the group), with the same
defaults in every entry point: :data:`MIN_CHANNELS` = 2, and ``min_fraction=None``, which means
:data:`MIN_FRACTION` = 0.25 with a share of channels as the target, and with a MAC or parameter
target :data:`COST_FLOOR_SHARE` = 0.75 of the *uniform share*: the share of channels that, kept in
every selected group alike, meets the target (:func:`tfmot_mtl.pruning.cost.cost_floor`; about
0.55 for 0.33x MACs on a plain conv net, so the floor is about 0.4 there). Two
channels keep a path through every layer; a quarter of the group keeps a global ranking from
emptying the layers it finds cheap to cut: with a MAC target the ranking is per unit of cost,
so the wide high-resolution layers of a task head (one 3x3 conv held 54% of the MACs of
``benchmarks/own_models.py``'s MobileNetV2 model) and the 1280-channel head conv of a deep
narrow network went to the floor first. Measured there (``tm.compress(target_macs=0.33)``,
prune): a quarter instead of a tenth took MobileNetV2's segmentation from -9.1 to -4.8 mIoU
points against the same-budget dense model (Δm -0.15% -> +1.43%) and the ResNet's from -6.1
to -2.1 (Δm -3.23% -> -1.10%); the U-Net did not change. The CosPrune reference code keeps at
least 5 filters per layer: pass ``min_channels=5`` to reproduce it.

With a cost target the ranking is per unit of cost, and a quarter still let it concentrate the cut:
group sparsity reached 0.33x MACs by removing 2% of MobileNetV2's channels (its segmentation head's
3x3 conv, mIoU 23.5 against 35.8) and pruned the U-Net's 16-channel stem to 6. With 0.4 of each
group kept (``benchmarks/own_models.py --min-fraction 0.4``, one run, Δm against the same-budget
dense model) group sparsity went from -6.3% to -4.4% on MobileNetV2 and from -18.5% to -10.5% on
the U-Net, and pruning from -1.42% to +0.47% on MobileNetV2 (see the own-models section of
docs/benchmarks.md for all four models). A fixed 0.4 made every target below what 0.4 of each group
costs unreachable (0.2x MACs on the own-models U-Net); a share of the uniform share follows the
target down (0.2x MACs: uniform share 0.41, floor 0.31) and stays 0.4 where it was measured. A
share-of-channels target keeps 0.25: 0.4 would make a target above 60% of the channels (the paper
settings' 70%) unreachable.
"""
from __future__ import annotations

import difflib
import math
import warnings
from typing import Any, Callable, Iterable, Sequence, Union

import numpy as np

from tfmot_mtl.graph import ChannelGraph, ChannelGroup

Selection = Union[str, Sequence[str], Callable[[Any], bool]]
MIN_CHANNELS = 2
MIN_FRACTION = 0.25
COST_FLOOR_SHARE = 0.75
KEYWORDS = ("shared", "all")
ON_EMPTY = ("raise", "warn", "ignore")


def renamed_selection(groups: Any, layers: Any, owner: str) -> tuple[Any, str]:
    """``(selection, callable_of)`` of an entry point that takes ``groups=`` and, deprecated, its
    older name ``layers=``: with ``layers=`` a callable still receives each producer layer
    (``callable_of="layer"``), with ``groups=`` each :class:`ChannelGroup`, as in every method."""
    if layers is None:
        return groups, "group"
    if not (isinstance(groups, str) and groups == "all"):
        raise TypeError(f"{owner}: pass groups= only (layers= is its older name)")
    warnings.warn(f"{owner}(layers=...) is deprecated: pass groups= (the same names and keywords; a "
                  "callable then receives each ChannelGroup instead of a layer)", DeprecationWarning, stacklevel=3)
    return layers, "layer"


def check_selection(groups: Any, argument: str = "groups", callable_of: str = "group") -> Any:
    """Raises a clear ``ValueError`` unless ``groups`` is a selection (no model needed).

    Returns ``groups`` (a list of names as a list).
    """
    kind, names = ("ChannelGroup", "group ids") if callable_of == "group" else ("layer", "layer names")
    expected = f"{argument} must be 'all', 'shared', a callable {kind} -> bool or a list of {names}"
    if isinstance(groups, str):
        if groups in KEYWORDS:
            return groups
        close = difflib.get_close_matches(groups, KEYWORDS, n=1)
        hint = (f" (did you mean {close[0]!r}?)" if close else
                f" (to select one layer, pass a list: {[groups]!r})")
        raise ValueError(f"{expected}, got {groups!r}{hint}")
    if callable(groups):
        return groups
    return list(_names(groups, f"{expected}, got {type(groups).__name__} {groups!r}",
                       f"{expected}, got a list with non-string items"))


def layer_floor(size: int, min_channels: int = MIN_CHANNELS, min_fraction: float = MIN_FRACTION) -> int:
    """The fewest channels a group of ``size`` keeps: ``max(min_channels, ceil(min_fraction *
    size))``, at most ``size``."""
    return min(int(size), max(int(min_channels), int(math.ceil(float(min_fraction) * int(size) - 1e-9))))


def default_min_fraction(min_fraction: float | None, cost_target: bool) -> float | None:
    """``min_fraction``, or where it is None the default for the kind of target: :data:`MIN_FRACTION`
    with a share of channels; with a MAC or parameter target None still, since that floor depends on
    the model and the target and is set once both are known
    (:func:`tfmot_mtl.pruning.cost.cost_floor`; see the module docstring)."""
    if min_fraction is not None or cost_target:
        return min_fraction
    return MIN_FRACTION


def check_floor(min_channels: Any, min_fraction: Any, least: int = 1) -> tuple[int, float | None]:
    """Validates the layer floor pair; returns it as ``(int, float)`` (``min_fraction`` None, the
    floor a cost target sets once the model is known, stays None)."""
    if isinstance(min_channels, bool) or not isinstance(min_channels, (int, np.integer)) or min_channels < least:
        raise ValueError(f"min_channels must be >= {least} (an integer), got {min_channels!r}")
    if min_fraction is None:
        return int(min_channels), None
    if isinstance(min_fraction, bool) or not isinstance(min_fraction, (int, float)) or \
            not 0.0 <= float(min_fraction) < 1.0:
        raise ValueError(f"min_fraction must be a number in [0, 1), got {min_fraction!r}")
    return int(min_channels), float(min_fraction)


def check_protect(protect: Any) -> tuple[str, ...]:
    """``protect`` as a tuple of names (a single string is one name)."""
    if isinstance(protect, str):
        return (protect,)
    if protect is None:
        return ()
    return _names(protect, f"protect must be a task or layer name or a list of them, got {protect!r}",
                  "protect must hold task or layer names (strings), got")


def _names(items: Any, not_a_list: str, not_strings: str) -> tuple[str, ...]:
    """``items`` as a tuple of strings, or ValueError(not_a_list) / ValueError(not_strings + the bad items)."""
    if isinstance(items, (bytes, dict)) or not isinstance(items, Iterable):
        raise ValueError(not_a_list)
    names = tuple(items)
    bad = [n for n in names if not isinstance(n, str)]
    if bad:
        raise ValueError(f"{not_strings} {bad!r}")
    return names


def select_groups(graph: ChannelGraph, groups: Selection = "all", protect: Iterable[str] = (), *,
                  on_empty: str = "raise", argument: str = "groups", callable_of: str = "group",
                  context: str | None = None) -> list[ChannelGroup]:
    """The prunable, non-empty channel groups of ``graph`` picked by ``groups`` minus ``protect``.

    Args:
        graph: the model's :class:`~tfmot_mtl.graph.ChannelGraph`.
        groups: ``"shared"``, ``"all"``, a list of group ids / producer layer names, or a
            callable (see the module docstring).
        protect: task names (protect the task's own head) or layer names (protect every group
            with a slice in the layer).
        on_empty: what an empty selection does: ``"raise"`` (``ValueError``), ``"warn"``
            (``UserWarning``, returns ``[]``) or ``"ignore"``.
        argument: the caller's argument name, used in messages (e.g. ``"layers"``).
        callable_of: ``"group"``: a callable gets each :class:`ChannelGroup`; ``"layer"``: it
            gets each producer layer (true for one of them selects the group).
        context: the start of the empty-selection message (default names the argument).

    Raises:
        ValueError: for a selection of the wrong type, an unknown string, a name that is no
            group or layer of the model (close matches are listed), a name that produces no
            prunable group, an unknown protect name, and (``on_empty="raise"``) an empty result.
    """
    if on_empty not in ON_EMPTY:
        raise ValueError(f"on_empty must be one of {ON_EMPTY}, got {on_empty!r}")
    if callable_of not in ("group", "layer"):
        raise ValueError(f"callable_of must be 'group' or 'layer', got {callable_of!r}")
    spec = check_selection(groups, argument, callable_of)
    candidates = [g for g in graph.groups.values() if g.prunable and g.size > 0]
    if isinstance(spec, str):
        chosen = candidates if spec == "all" else [g for g in candidates if g.shared]
    elif callable(spec):
        if callable_of == "layer":  # true for one producer layer (model inputs are no layers)
            layers = graph.flat.layers
            chosen = [g for g in candidates
                      if any(p in layers and bool(spec(layers[p])) for p in g.producers)]
        else:
            chosen = [g for g in candidates if bool(spec(g))]
    else:
        wanted = _check_names(graph, spec, argument)
        chosen = [g for g in candidates if wanted.intersection((g.id,) + g.producers)]
    protected = protected_groups(graph, protect)
    picked = [g for g in chosen if g.id not in protected]
    if not picked and on_empty != "ignore":
        message = f"{context or f'{argument}={_short(groups)} selects no prunable channel group'}: " \
                  f"{empty_hint(graph, spec, argument, bool(chosen))}"
        if on_empty == "raise":
            raise ValueError(message)
        warnings.warn(message, stacklevel=3)
    return picked


def protected_groups(graph: ChannelGraph, protect: Iterable[str] = ()) -> set[str]:
    """Ids of the groups ``protect`` names (see the module docstring)."""
    tasks = list(graph.flat.outputs)
    out: set[str] = set()
    for name in check_protect(protect):
        if name in tasks:
            out |= {g.id for g in graph.groups.values() if g.tasks == frozenset([name])}
        elif name in graph.flat.layers:
            out |= {g.id for g in graph.groups.values() if name in g.layers}
        else:
            close = difflib.get_close_matches(name, tasks + list(graph.flat.layers), n=3)
            raise ValueError(f"protect names '{name}', which is neither a task (model outputs: "
                             f"{sorted(tasks)}) nor a layer of the model"
                             + (f"; close matches: {close}" if close else ""))
    return out


def producer_layers(graph: ChannelGraph, groups: Sequence[ChannelGroup]) -> list[str]:
    """Names of the layers producing the given groups (model inputs excluded), in graph order."""
    out: dict[str, None] = {}
    for g in groups:
        for p in g.producers:
            if p in graph.flat.layers:
                out[p] = None
    return list(out)


def empty_hint(graph: ChannelGraph, spec: Any, argument: str = "groups", protected: bool = False) -> str:
    """What to do about an empty selection."""
    if protected:
        return "protect= removes every selected group"
    if isinstance(spec, str) and spec == "shared":
        return (f"model '{graph.model.name}' has no prunable channel group shared by more than one "
                f"task; pass {argument}='all' to act on task-specific layers")
    return "check ChannelGraph.from_model(model).summary() for frozen groups and their reasons"


def check_layer_names(graph: ChannelGraph, names: Iterable[str], argument: str = "layers") -> list[str]:
    """``names`` as a list, after checking that each is a layer (or group id) of the model;
    an unknown name raises a ``ValueError`` listing close matches and the selectable names."""
    names = check_selection(list(names), argument)
    known = set(graph.groups) | set(graph.flat.layers)
    unknown = [n for n in names if n not in known]
    if unknown:
        pool = sorted(_selectable(graph)) or sorted(known)
        close = {n: difflib.get_close_matches(n, sorted(known), n=3) for n in unknown}
        close = {n: c for n, c in close.items() if c}
        raise ValueError(f"{argument} names unknown layer(s) {unknown}"
                         + (f" (close matches: {close})" if close else "")
                         + f"; the model's prunable groups are produced by {pool[:12]}"
                         + (" ..." if len(pool) > 12 else ""))
    return names


def _selectable(graph: ChannelGraph) -> set[str]:
    return {n for g in graph.groups.values() if g.prunable and g.size > 0 for n in (g.id,) + g.producers}


def _check_names(graph: ChannelGraph, names: list[str], argument: str) -> set[str]:
    """The names, after checking that each one selects a prunable group."""
    check_layer_names(graph, names, argument)
    selectable = _selectable(graph)
    idle = [n for n in names if n not in selectable]
    if idle:
        why = {n: _why_not(graph, n) for n in idle}
        raise ValueError(f"{argument} names {idle}, which produce no prunable channel group ("
                         + "; ".join(f"'{n}': {w}" for n, w in why.items())
                         + f"); prunable groups are produced by {sorted(selectable)[:12]}")
    return set(names)


def _why_not(graph: ChannelGraph, name: str) -> str:
    produced = [g for g in graph.groups.values() if name == g.id or name in g.producers]
    if not produced:
        users = [g.id for g in graph.groups.values() if name in g.layers]
        return (f"it only carries or consumes the channels of groups {users}: name their producers" if users
                else "it has no weights of its own (it passes channels through): name the layer producing them")
    frozen = [g for g in produced if not g.prunable]
    if frozen:
        return f"frozen: {frozen[0].reason}"
    return "its group has no channels"


def _short(value: Any) -> str:
    if callable(value) and not isinstance(value, str):
        return getattr(value, "__name__", type(value).__name__)
    text = repr(value if isinstance(value, str) else list(value))
    return text if len(text) <= 60 else text[:57] + "..."
