"""Channel and parameter sparsity of a model's channel groups, with an optional plot."""
from __future__ import annotations

import os
from typing import Any

import keras
import numpy as np

from tfmot_mtl.utils.atomic import atomic_savefig
from tfmot_mtl.graph import ChannelGraph
from tfmot_mtl.masks import masks_from_zeros
from tfmot_mtl.selection import Selection, renamed_selection, select_groups


def sparsity_report(model: keras.Model, groups: Selection = "all",
                    plot_path: str | os.PathLike | None = None, protect=(), *,
                    layers: Selection | None = None) -> dict[str, Any]:
    """How many of the selected channel groups' channels (and parameters) are exactly zero.

    A channel is zero when every trainable slice it owns (kernel columns, bias, BN gamma
    and beta) is exactly zero (``masks_from_zeros`` with ``atol=0``). Its parameters are
    ``ChannelGroup.params_per_channel()`` (its own slices and its consumers' input rows:
    everything ``strip_channels`` removes with it).

    Returns:
        ``{"channels", "zero_channels", "channel_sparsity", "params", "zero_params",
        "param_sparsity", "groups": {group_id: {...same keys..., "layers", "tasks",
        "dead": [channel indices]}}}``; sparsities are fractions in [0, 1].

    Args:
        model: the (trained) model.
        groups: which groups count, as in :func:`tfmot_mtl.selection.select_groups`
            (``"shared"``, ``"all"``, producer layer names or a callable ``ChannelGroup -> bool``).
        plot_path: if given, a PNG with one row per group and one column per channel,
            dead channels marked.
        protect: task or layer names whose groups do not count.
        layers: deprecated older name of ``groups`` (a callable then receives each layer).
    """
    spec, callable_of = renamed_selection(groups, layers, "sparsity_report")
    graph = ChannelGraph.of(model)
    groups = select_groups(graph, spec, protect, on_empty="warn", argument="groups", callable_of=callable_of,
                           context="sparsity_report selected no channel group")
    masks = masks_from_zeros(model, graph=graph, min_channels=0)
    per_group = {}
    for g in groups:
        dead = ~masks[g.id]
        params = g.params_per_channel()
        per_group[g.id] = {
            "layers": list(g.producers), "tasks": sorted(g.tasks),
            **_counts(g.size, int(dead.sum()), int(params.sum()), int(params[dead].sum())),
            "dead": np.flatnonzero(dead).tolist(),
        }
    total = _counts(*(sum(r[k] for r in per_group.values())
                      for k in ("channels", "zero_channels", "params", "zero_params")))
    report = {**total, "groups": per_group}
    if plot_path is not None:
        plot_sparsity(report, plot_path, title=f"Dead channels of '{model.name}'")
    return report


def _counts(channels: int, zero: int, params: int, zero_params: int) -> dict[str, Any]:
    return {"channels": channels, "zero_channels": zero,
            "channel_sparsity": zero / channels if channels else 0.0,
            "params": params, "zero_params": zero_params,
            "param_sparsity": zero_params / params if params else 0.0}


def format_sparsity_report(report: dict[str, Any]) -> str:
    """A readable table of a :func:`sparsity_report` result."""
    lines = [f"{'group':<28} {'dead/channels':>14} {'channel %':>10} {'param %':>8}"]
    for gid, r in report["groups"].items():
        lines.append(f"{gid[:28]:<28} {r['zero_channels']:>6}/{r['channels']:<7} "
                     f"{100 * r['channel_sparsity']:>10.1f} {100 * r['param_sparsity']:>8.1f}")
    lines.append(f"{'TOTAL':<28} {report['zero_channels']:>6}/{report['channels']:<7} "
                 f"{100 * report['channel_sparsity']:>10.1f} {100 * report['param_sparsity']:>8.1f}")
    return "\n".join(lines)


def plot_sparsity(report: dict[str, Any], path: str | os.PathLike, title: str = "") -> str:
    """Writes a PNG: one row per group, one column per channel; dark = dead, light = alive."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    rows = list(report["groups"].items())
    width = max((r["channels"] for _, r in rows), default=1)
    grid = np.full((max(len(rows), 1), width), np.nan)
    for i, (_, r) in enumerate(rows):
        grid[i, :r["channels"]] = 1.0
        grid[i, r["dead"]] = 0.0
    fig, ax = plt.subplots(figsize=(min(4 + width / 8, 20), 1 + 0.3 * max(len(rows), 1)))
    cmap = ListedColormap(["#b2182b", "#d9f0d3"]).with_extremes(bad="white")
    ax.imshow(np.ma.masked_invalid(grid), aspect="auto", cmap=cmap, vmin=0, vmax=1,
              interpolation="nearest")
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([f"{gid} ({100 * r['channel_sparsity']:.0f}%)" for gid, r in rows], fontsize=7)
    ax.set_xlabel("channel (red = exactly zero)")
    ax.set_title(title or "Dead channels per group", fontsize=9)
    fig.tight_layout()
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_savefig(fig, path, dpi=100)
    plt.close(fig)
    return path
