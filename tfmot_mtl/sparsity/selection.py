"""Which channel groups (and producer layers) a sparsity method acts on."""
from __future__ import annotations

import warnings
from typing import Any, Callable, Sequence, Union

from tfmot_mtl.graph import ChannelGraph, ChannelGroup

LayerSelection = Union[str, Sequence[str], Callable[[Any], bool]]


def select_groups(graph: ChannelGraph, layers: LayerSelection = "shared",
                  warn: bool = True) -> list[ChannelGroup]:
    """Prunable, non-empty channel groups picked by ``layers``.

    Args:
        graph: the model's channel graph.
        layers: ``"shared"`` (groups feeding more than one task), ``"all"`` (every
            prunable group), a list of producer layer names, or a callable
            ``layer -> bool`` evaluated on each group's producer layers.
        warn: warn when ``"shared"`` finds no shared group.
    """
    candidates = [g for g in graph.prunable_groups if g.size > 0]
    if isinstance(layers, str):
        if layers == "all":
            return candidates
        if layers == "shared":
            picked = [g for g in candidates if g.shared]
            if not picked and warn:
                warnings.warn(f"model '{graph.model.name}' has no prunable channel group shared by "
                              "more than one task; no layer selected (pass layers='all' or a list "
                              "of layer names to act on task-specific layers)", stacklevel=3)
            return picked
        raise ValueError(f"layers must be 'shared', 'all', a list of layer names or a callable "
                         f"layer -> bool; got the string {layers!r}")
    if callable(layers):
        return [g for g in candidates if any(_safe_layer(graph, p) is not None
                                             and bool(layers(_safe_layer(graph, p)))
                                             for p in g.producers)]
    names = list(layers)
    if not all(isinstance(n, str) for n in names):
        raise ValueError(f"layers must be 'shared', 'all', a list of layer names or a callable; "
                         f"got a sequence with non-string items: {names!r}")
    unknown = [n for n in names if n not in graph.flat.layers]
    if unknown:
        raise ValueError(f"layers names unknown layer(s) {unknown}; the model has layers such as "
                         f"{list(graph.flat.layers)[:8]}")
    wanted = set(names)
    return [g for g in candidates if wanted.intersection(g.producers)]


def producer_layers(graph: ChannelGraph, groups: Sequence[ChannelGroup]) -> list[str]:
    """Names of the layers producing the given groups (model inputs excluded), in graph order."""
    out: dict[str, None] = {}
    for g in groups:
        for p in g.producers:
            if p in graph.flat.layers:
                out[p] = None
    return list(out)


def _safe_layer(graph: ChannelGraph, name: str):
    return graph.flat.layers.get(name)
