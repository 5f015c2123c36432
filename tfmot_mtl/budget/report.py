"""Stripping a switched multi-domain model, exporting its gates as stock layers, and reporting.

`strip_domain_model` removes the channels no domain uses (union mask) with `strip_channels`
and then replaces every DomainSwitch by stock layers holding the binary gates of the
surviving channels: ``Multiply([features, Reshape(Embedding(D, C)(domain))])``, and every
DomainBatchNorm by its per-domain inference scale and shift in the same form
(`domain_bn.domain_bn_to_stock`). The result loads without custom objects and converts to
TFLite with an int32 "domain" input.

`domain_report` counts, per domain, the channels it uses and the parameters and MACs it
actually needs: a weight slice belongs to a domain only if every channel axis it is sliced
on is on for that domain, so a channel off for a domain costs it nothing (the ideal
executed cost; the stripped model as run computes the union of the domains' channels and
multiplies the others' by zero; both are reported).
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any, Mapping

import keras
import numpy as np
from keras import tree

from tfmot_mtl.utils import _keras_compat
from tfmot_mtl.budget.domain_bn import DomainBatchNorm, domain_bn_to_stock
from tfmot_mtl.budget.switch import DomainSwitch, domain_masks, union_masks
from tfmot_mtl.graph import ChannelGraph
from tfmot_mtl.profile import profile
from tfmot_mtl.strip import StripReport, strip_channels
from tfmot_mtl.graph.walk import flatten


def strip_domain_model(model: keras.Model, export: bool = True, input_shape: Any = None,
                       min_channels: int = 1) -> tuple[keras.Model, StripReport]:
    """Removes the channels no domain uses; keeps each domain's gates on the others.

    Args:
        model: a model built by `add_domain_switches` (after budget training).
        export: replace the DomainSwitch layers by stock Embedding/Reshape/Multiply layers
            (binary gates), so the model needs no custom objects.
        input_shape: per-example image shape for the MAC counts when the model's is unknown.
        min_channels: channels a group keeps even if no domain uses any.

    Returns:
        (stripped model, StripReport). Outputs equal the switched model's for every domain.
    """
    masks = union_masks(model, min_channels=min_channels)
    shape = {"image": input_shape, "domain": ()} if input_shape is not None else None
    small, report = strip_channels(model, masks, input_shape=shape)
    return (gates_to_stock(small) if export else small), report


def gates_to_stock(model: keras.Model) -> keras.Model:
    """The same model with each DomainSwitch replaced by binary gates in stock layers, and each
    DomainBatchNorm by its per-domain inference scale and shift (stock layers too)."""
    flat = flatten(model)
    if "domain" not in flat.inputs:
        raise ValueError("gates_to_stock: the model has no 'domain' input.")
    values, inputs = {}, {}
    for name, key in flat.inputs.items():
        t = flat.tensors[key]
        values[key] = inputs[name] = keras.Input(batch_shape=t.shape, dtype=t.dtype, name=name)
    domain = inputs["domain"]
    tables: dict[str, keras.layers.Embedding] = {}
    for node in flat.nodes:
        if isinstance(node.layer, DomainSwitch):
            layer = node.layer
            gates = layer.binary().astype("float32")
            if node.name not in tables:
                tables[node.name] = keras.layers.Embedding(
                    layer.num_domains, gates.shape[1], name=f"{node.name}_gates",
                    embeddings_initializer=keras.initializers.Constant(gates), trainable=False)
            features = values[node.inputs[0]]
            g = tables[node.name](keras.ops.reshape(domain, (-1,)) if len(domain.shape) != 1 else domain)
            shape = (1,) * (len(features.shape) - 2) + (gates.shape[1],)
            g = keras.layers.Reshape(shape, name=f"{node.name}_gates_{node.call_index}")(g)
            out = keras.layers.Multiply(name=f"{node.name}_{node.call_index}")([features, g])
            values[node.outputs[0]] = out
            continue
        if isinstance(node.layer, DomainBatchNorm):
            values[node.outputs[0]] = domain_bn_to_stock(node.layer, values[node.inputs[0]], domain,
                                                         f"{node.name}_{node.call_index}")
            continue
        for key, val in zip(node.outputs, node.call(values)):
            values[key] = val
    outputs = tree.pack_sequence_as(_keras_compat.outputs_struct(flat.model),
                                    [values[k] for k in flat.outputs.values()])
    return keras.Model(inputs, outputs, name=model.name)


# ------------------------------------------------------------------ per-domain costs


def _axis_factors(graph: ChannelGraph, keep: np.ndarray) -> dict[str, dict[int, float]]:
    """Layer -> weight index -> fraction of the weight a keep-vector leaves."""
    out: dict[str, dict[int, float]] = {}
    for name, axes in graph.axes.items():
        per_axis: dict[tuple[int, int], np.ndarray] = {}
        for ax in axes:
            k = keep[ax.atoms]
            prev = per_axis.get((ax.weight, ax.axis))
            per_axis[(ax.weight, ax.axis)] = k if prev is None or len(prev) != len(k) else prev & k
        weights: dict[int, float] = {}
        for (w, _), k in per_axis.items():
            weights[w] = weights.get(w, 1.0) * (float(k.mean()) if len(k) else 1.0)
        out[name] = weights
    return out


def domain_costs(model: keras.Model, input_shape: Any = None) -> dict[str, dict[str, float]]:
    """Per domain: channels used / total (switched groups), params and MACs it needs.

    Computed on a switched model; a DomainSwitch counts as its own row of gates.
    """
    graph = ChannelGraph.of(model)
    shape = {"image": input_shape, "domain": ()} if input_shape is not None else None
    prof = profile(model, input_shape=shape)
    masks = domain_masks(model, graph=graph)
    out = {}
    for d, (dname, dmask) in enumerate(masks.items()):
        task = dname if isinstance(dname, str) else list(flatten(model).outputs)[d]
        keep = graph.keep_atoms(dmask)
        factors = _axis_factors(graph, keep)
        params = macs = 0.0
        counted: set[str] = set()
        for row in prof.layers:
            if task not in row.tasks:
                continue
            layer = graph.layer(row.name)
            f = factors.get(row.name, {})
            if row.name not in counted:
                counted.add(row.name)
                for i, w in enumerate(layer.weights):
                    size = float(np.prod(w.shape))
                    if isinstance(layer, (DomainSwitch, DomainBatchNorm)):
                        size /= layer.num_domains
                    params += size * f.get(i, 1.0)
            macs += row.macs * f.get(0, 1.0)
        on = sum(int(m.sum()) for m in dmask.values())
        total = sum(len(m) for m in dmask.values())
        out[task] = {"channels": on, "channels_total": total, "params": int(round(params)),
                     "macs": int(round(macs))}
    return out


def baseline_costs(model: keras.Model, input_shape: Any = None) -> dict[str, dict[str, int]]:
    """Per domain: params and MACs of ONE single-domain model (the backbone + that head), no
    switches, one BatchNormalization where the model has a DomainBatchNorm."""
    shape = {"image": input_shape, "domain": ()} if input_shape is not None else None
    prof = profile(model, input_shape=shape)
    layers = flatten(model).layers
    switch_params = sum(r.params for r in prof.layers if r.class_name == "DomainSwitch")
    switch_params += sum(r.params * (1 - 1 / layers[r.name].num_domains) for r in prof.layers
                         if isinstance(layers.get(r.name), DomainBatchNorm))
    switch_params = int(round(switch_params))
    return {t: {"params": v["params"] - switch_params, "macs": v["macs"]} for t, v in prof.per_task.items()}


def decathlon_score(errors: Mapping[str, float], baseline_errors: Mapping[str, float],
                    gamma: float = 2.0) -> dict[str, float]:
    """Visual-Decathlon score per domain and "total": α_d·max(0, Emax_d − E_d)^γ, Emax = 2·E_base.

    α_d = 1000·Emax_d^(−γ) so a domain scores at most 1000 (at zero error). A baseline with
    zero error gives Emax = 0: the domain scores 1000 at zero error, else 0.
    """
    out = {}
    for d, e in errors.items():
        e_max = 2.0 * float(baseline_errors[d])
        if e_max <= 0:
            out[d] = 1000.0 if e <= 0 else 0.0
        else:
            out[d] = 1000.0 * e_max ** (-gamma) * max(0.0, e_max - float(e)) ** gamma
    out["total"] = float(sum(out.values()))
    return out


@dataclass
class DomainReport:
    """Per-domain rows and totals of a budget-pruned multi-domain model."""

    rows: dict[str, dict]
    totals: dict
    baseline: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"rows": self.rows, "totals": self.totals, "baseline": self.baseline}

    def table(self):
        from rich.table import Table

        table = Table(title="budget-aware multi-domain model")
        cols = ("domain", "channels", "params", "MACs", "MACs as run", "accuracy", "decathlon")
        for c in cols:
            table.add_column(c, justify="left" if c == "domain" else "right")
        for d, r in self.rows.items():
            acc = r.get("accuracy")
            table.add_row(d, f"{r['channels']}/{r['channels_total']}", f"{r['params']:,}", f"{r['macs']:,}",
                          f"{r.get('macs_stripped', 0):,}", "-" if acc is None else f"{100 * acc:.1f}",
                          "-" if r.get("decathlon") is None else f"{r['decathlon']:.0f}")
        t = self.totals
        table.add_row("TOTAL model", "", f"{t['params']:,}", "", "",
                      "-" if t.get("mean_accuracy") is None else f"{100 * t['mean_accuracy']:.1f}",
                      "-" if t.get("decathlon") is None else f"{t['decathlon']:.0f}", style="bold")
        b = self.baseline
        if b:
            table.add_row("one single-domain", "", f"{b['one_params']:,}", f"{b['one_macs']:,}", "", "", "")
            table.add_row("separate models", "", f"{b['separate_params']:,}", "", "", "", "")
        return table

    def __str__(self) -> str:
        from rich.console import Console

        console = Console(file=io.StringIO(), width=140)
        console.print(self.table())
        return console.file.getvalue()


def domain_report(model: keras.Model, stripped: keras.Model | None = None,
                  accuracy: Mapping[str, float] | None = None,
                  baseline_errors: Mapping[str, float] | None = None,
                  input_shape: Any = None) -> DomainReport:
    """Per domain: channels, params and MACs it needs, accuracy, decathlon score; totals vs baselines.

    Args:
        model: the switched model (after training).
        stripped: its stripped model (from `strip_domain_model`), for total params and the
            MACs the stripped model runs per example of each domain.
        accuracy: per-domain accuracy in [0, 1].
        baseline_errors: per-domain error of the reference models (for the decathlon score).
        input_shape: per-example image shape when the model's is unknown.
    """
    costs = domain_costs(model, input_shape)
    base = baseline_costs(model, input_shape)
    run = None
    if stripped is not None:
        shape = {"image": input_shape, "domain": ()} if input_shape is not None else None
        run = profile(stripped, input_shape=shape)
    rows = {}
    for d, c in costs.items():
        rows[d] = dict(c)
        if run is not None:
            rows[d]["macs_stripped"] = int(run.per_task[d]["macs"])
        if accuracy is not None:
            rows[d]["accuracy"] = float(accuracy[d])
    totals: dict[str, Any] = {"params": int(run.total_params if run is not None else
                                            profile(model, input_shape=None).total_params)}
    if accuracy is not None:
        totals["mean_accuracy"] = float(np.mean([accuracy[d] for d in costs]))
        if baseline_errors is not None:
            score = decathlon_score({d: 1 - accuracy[d] for d in costs}, baseline_errors)
            for d in costs:
                rows[d]["decathlon"] = score[d]
            totals["decathlon"] = score["total"]
    baseline = {
        "per_domain": base,
        "one_params": int(min(b["params"] for b in base.values())),
        "one_macs": int(min(b["macs"] for b in base.values())),
        "separate_params": int(sum(b["params"] for b in base.values())),
    }
    totals["max_domain_macs"] = int(max((r.get("macs_stripped", r["macs"]) for r in rows.values()), default=0))
    return DomainReport(rows, totals, baseline)
