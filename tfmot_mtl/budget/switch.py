"""DomainSwitch: per-domain binary channel gates with a straight-through gradient.

For domain d and channel c the layer keeps a real latent ŝ[d, c]; the forward pass uses
the binary switch s = 1[ŝ > 0] and multiplies the features' channel c by s[domain, c].
The backward pass treats the binarisation as the identity (straight-through estimator),
so the task loss moves every latent, also those of switches that are currently off.

The layer is registered with the channel graph as a channel pass-through whose latent
slices along axis 1 with the feature channels, so `strip_channels` keeps the gates of
the surviving channels.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import keras
import numpy as np
from keras import ops

from tfmot_mtl.layers import Rule, describe, register

if TYPE_CHECKING:
    from tfmot_mtl.masks import ChannelMasks


def binarize_ste(latent):
    """1[latent > 0] in the forward pass, identity gradient to `latent` in the backward pass."""
    binary = ops.cast(ops.greater(latent, 0), latent.dtype)
    return latent + ops.stop_gradient(binary - latent)


@keras.saving.register_keras_serializable(package="tfmot_mtl")
class DomainSwitch(keras.layers.Layer):
    """Gates channels per domain: ``features * 1[latent[domain] > 0]`` (STE in training).

    Call on ``[features, domain]``: features (B, ..., C); domain either int indices of shape
    (B,) or (B, 1), or a one-hot / soft float matrix (B, num_domains) (which is what
    `add_domain_switches` feeds: a rank-2 domain tensor keeps the channel graph able to
    read the layer, see `budget.build`).

    Args:
        num_domains: number of domains D (rows of the latent).
        init: initial latent value of every switch (> 0: all channels start on).
        clip: latents are kept in [-clip, clip] so an off switch can come back.
        domains: indices of the domains whose outputs this switch feeds (default all);
            only those count for budgets, sharing and masks.
        domain_names: optional names of the D domains (masks are then keyed by name).
    """

    def __init__(self, num_domains: int, init: float = 0.05, clip: float = 1.0,
                 domains: list[int] | None = None, domain_names: list[str] | None = None, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(num_domains, (int, np.integer)) or num_domains < 1:
            raise ValueError(f"DomainSwitch num_domains must be a positive int, got {num_domains!r}")
        if clip <= 0:
            raise ValueError(f"DomainSwitch clip must be > 0, got {clip!r}")
        self.num_domains = int(num_domains)
        self.init = float(init)
        self.clip = float(clip)
        self.domain_names = None if domain_names is None else [str(n) for n in domain_names]
        if self.domain_names is not None and len(self.domain_names) != self.num_domains:
            raise ValueError(f"DomainSwitch domain_names needs {num_domains} names, got {domain_names!r}")
        self.domains = list(range(self.num_domains)) if domains is None else [int(d) for d in domains]
        bad = [d for d in self.domains if not 0 <= d < self.num_domains]
        if bad or not self.domains:
            raise ValueError(f"DomainSwitch domains must be indices in [0, {num_domains}), got {domains!r}")

    def build(self, input_shape):
        channels = input_shape[0][-1]
        if channels is None:
            raise ValueError(f"DomainSwitch '{self.name}' needs a known channel count, got {input_shape[0]}")
        self.latent = self.add_weight(
            name="latent", shape=(self.num_domains, int(channels)),
            initializer=keras.initializers.Constant(self.init), trainable=True,
            constraint=lambda w: ops.clip(w, -self.clip, self.clip))

    def gates(self, domain):
        """(B, C) gates for a domain tensor (indices or one-hot), STE-binarised."""
        switches = binarize_ste(self.latent)
        if len(domain.shape) == 2 and domain.shape[-1] == self.num_domains and self.num_domains > 1:
            return ops.matmul(ops.cast(domain, switches.dtype), switches)
        index = ops.cast(ops.reshape(domain[..., :1] if len(domain.shape) == 2 else domain, (-1,)), "int32")
        if self.num_domains == 1:  # a (B, 1) one-hot column is all ones: every example is domain 0
            index = ops.zeros_like(index)
        return ops.take(switches, index, axis=0)

    def call(self, inputs):
        features, domain = inputs
        gates = self.gates(domain)
        shape = (-1,) + (1,) * (len(features.shape) - 2) + (gates.shape[-1],)
        return features * ops.cast(ops.reshape(gates, shape), features.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def binary(self) -> np.ndarray:
        """Current binary switches, (D, C) bool."""
        latent = np.asarray(keras.ops.convert_to_numpy(self.latent))
        if not np.isfinite(latent).all():
            raise ValueError(f"DomainSwitch '{self.name}': latents hold NaN/Inf, so the switch states "
                             "(and masks) are undefined; restore the latents from a checkpoint "
                             "(BudgetCallback restores the last finite ones when it stops training).")
        return latent > 0

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "num_domains": self.num_domains, "init": self.init,
                "clip": self.clip, "domains": list(self.domains), "domain_names": self.domain_names}


class DomainSwitchRule(Rule):
    """Channel pass-through on the features; the latent (D, C) slices along axis 1."""

    def propagate(self, ctx):
        if len(ctx.in_shapes[0]) < 2:
            return ctx.freeze_all(f"{describe(ctx.layer)} gates rank-1 features")
        ctx.axis(0, 1, "out", ctx.in_maps[0], zeroed=False, defines_zero=False)
        return [ctx.in_maps[0]]


register(DomainSwitch)(DomainSwitchRule)


def switch_layers(model) -> list[DomainSwitch]:
    """Every DomainSwitch of a model (nested models included), each once, in graph order."""
    from tfmot_mtl.graph.walk import flatten

    seen, out = set(), []
    for node in flatten(model).nodes:
        if isinstance(node.layer, DomainSwitch) and id(node.layer) not in seen:
            seen.add(id(node.layer))
            out.append(node.layer)
    return out


# ------------------------------------------------------------------ switches <-> groups


def switch_infos(model, measure: str = "channels", input_shape: Any = None, graph=None) -> list:
    """A `losses.SwitchInfo` per DomainSwitch: channel group, served domains, per-channel cost.

    "macs" cost of a channel: the MACs of every contraction (conv / dense) it is an input
    or output channel of, divided by that axis' width (first-order: a channel's share of
    each layer it touches), summed over calls.
    """
    from tfmot_mtl.budget.losses import MEASURES, SwitchInfo
    from tfmot_mtl.graph import ChannelGraph

    if measure not in MEASURES:
        raise ValueError(f"measure must be one of {MEASURES}, got {measure!r}")
    graph = ChannelGraph.of(model) if graph is None else graph
    layer_macs = _layer_macs(model, input_shape) if measure == "macs" else {}
    infos = []
    for layer in switch_layers(model):
        name = next(n for n, l in graph.flat.layers.items() if l is layer)
        atoms = graph.layer_atoms(name)
        if atoms is None:
            continue  # frozen by the graph: not a switch of a prunable group
        gid = graph.atom_group[atoms[0]]
        channels = graph.atom_channel[atoms]
        cost = np.ones(len(atoms))
        if measure == "macs":
            group = graph.groups[gid]
            per_channel = np.zeros(group.size)
            for s in group.slices:
                macs = layer_macs.get(s.layer, 0)
                if macs and s.weight == 0:
                    width = graph.layer(s.layer).weights[0].shape[s.axis]
                    per_channel += np.bincount(s.channels, minlength=group.size) * macs / width
            cost = np.maximum(per_channel[channels], 1e-9)
        infos.append(SwitchInfo(layer, gid, channels, list(layer.domains), cost))
    return infos


def _layer_macs(model, input_shape) -> dict[str, int]:
    from tfmot_mtl.profile import profile

    out: dict[str, int] = {}
    for row in profile(model, input_shape=input_shape).layers:
        out[row.name] = out.get(row.name, 0) + row.macs
    return out


def domain_masks(model, graph=None) -> dict:
    """Per domain (name if the switches know the names, else index): ChannelMasks of the switched groups (True = the domain uses it).

    Keyed by the channel-graph group ids, which are the backbone's producer names, so the
    masks apply to the switched model and, by group id, to the plain backbone.
    """
    from tfmot_mtl.masks import ChannelMasks

    infos = switch_infos(model, graph=graph)
    num_domains = infos[0].layer.num_domains if infos else 0
    out = {}
    for d in range(num_domains):
        masks = {}
        for info in infos:
            if d not in info.domains:
                continue
            keep = np.zeros(len(info.channels), bool)
            keep[info.channels] = info.layer.binary()[d]
            masks[info.group] = keep
        names = infos[0].layer.domain_names
        out[names[d] if names else d] = ChannelMasks(masks, min_channels=0)
    return out


def union_masks(model, graph=None, min_channels: int = 1) -> "ChannelMasks":
    """Keep a channel if ANY domain it serves uses it (the channels strip_channels may remove)."""
    from tfmot_mtl.masks import ChannelMasks

    infos = switch_infos(model, graph=graph)
    masks = {}
    for info in infos:
        keep = np.zeros(len(info.channels), bool)
        keep[info.channels] = info.layer.binary()[info.domains].any(axis=0)
        masks[info.group] = keep
    return ChannelMasks(masks, min_channels=min_channels)


def freeze_switches(model, frozen: bool = True) -> None:
    """Stops (or resumes) training of every switch latent, e.g. to fine-tune the weights on
    the final switches after budget training. Recompile the model afterwards."""
    for layer in switch_layers(model):
        layer.trainable = not frozen
