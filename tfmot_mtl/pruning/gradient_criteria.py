"""Gradient criteria: first-order Taylor (Molchanov et al. 2019), a second-order (OBD / Fisher)
saliency and CosPrune, the task-gradient agreement of Garg et al. 2023.

They average over mini-batches: ``accumulate(model, graph, x, y)`` adds one batch, ``scores()``
returns the average since the last ``reset()``; calling ``criterion(model, graph, data)`` resets,
accumulates every batch of ``data`` and returns the scores. Gradients are taken with
``tf.GradientTape`` with the model called in inference mode (``training=False``), so scoring never
updates BatchNormalization statistics; forward, backward and the per-channel reductions run as one
compiled graph function (:mod:`tfmot_mtl.pruning._gradients`) whose score vectors are added to
running-sum variables on the device; the host reads the sums only in ``scores()``, never a weight
gradient or a per-batch score.
"""
from __future__ import annotations

import itertools
from typing import Callable, Iterable, Mapping

import keras
import numpy as np
import tensorflow as tf

from tfmot_mtl.utils import _keras_compat
from tfmot_mtl.graph import ChannelGraph
from tfmot_mtl.pruning._gradients import channel_sum, compiled_scores, reduce_units, targets as _targets
from tfmot_mtl.pruning.importance import Importance, Scores, iterate_batches
from tfmot_mtl.pruning.units import Part, group_units, is_kernel, scorable_groups
from tfmot_mtl.graph.walk import named_outputs, output_names


def resolve_losses(model: keras.Model, losses: Mapping | None = None) -> dict[str, Callable]:
    """Task name -> loss function, from ``losses`` or the compiled model's ``model.loss``."""
    source = losses if losses is not None else getattr(model, "loss", None)
    names = output_names(model)  # dict keys: the names compile(loss={...}) uses
    if source is None:
        raise ValueError("no per-task losses: compile the model with a dict of losses or pass "
                         "losses={task_name: loss_fn}")
    if _is_mapping(source):
        out = {k: source[k] for k in source.keys()}
    elif isinstance(source, (list, tuple)):
        if len(source) != len(names):
            raise ValueError(f"losses list has {len(source)} entries; the model has outputs {names}")
        out = dict(zip(names, source))
    else:
        out = {name: source for name in names}
    unknown = [t for t in out if names and t not in names]
    if unknown:
        raise ValueError(f"losses name tasks {unknown} that are not model outputs {names}")
    return {t: keras.losses.get(fn) if isinstance(fn, (str, dict)) else fn
            for t, fn in out.items() if fn is not None}


def _is_mapping(obj) -> bool:
    # Keras wraps compile() dicts in a tracking DictWrapper that is not a Mapping.
    return isinstance(obj, Mapping) or (hasattr(obj, "keys") and hasattr(obj, "__getitem__"))


def _loss_weights(model, weights: Mapping | None) -> dict:
    if weights is not None:
        return dict(weights)
    return _keras_compat.user_loss_weights(model)


def _outputs(model, x) -> dict:
    out = model(x, training=False)
    return named_outputs(model, out)


def _task_loss(fn, y_true, y_pred):
    return tf.reduce_mean(tf.cast(fn(y_true, y_pred), tf.float32))


def _shapes(tensors: Mapping) -> dict:
    return {gid: tuple(t.shape) for gid, t in tensors.items()}


class _GradientImportance(Importance):
    """Accumulating base: subclasses implement ``_batch_scores(model, graph, x, y)``, which
    returns the batch's score tensors of the scored groups (graph ops, float64).

    The running sums are non-trainable variables updated on the device by one compiled
    call per batch; the host reads them only in ``scores()`` (at a pruning step)."""

    needs_data = True

    def __init__(self, losses: Mapping | None = None, include_bias: bool = True,
                 reduction: str = "sum", normalize: str | None = None):
        super().__init__(reduction, normalize)
        self.losses, self.include_bias = losses, include_bias
        self._sum: dict[str, tf.Variable] = {}
        self._size: dict[str, int] = {}
        self._add = None
        self.batches = 0

    def reset(self) -> None:
        """Zeroes the running sums (the variables and their compiled update are kept)."""
        for var in self._sum.values():
            var.assign(tf.zeros_like(var))
        self.batches = 0

    def _select(self, layer, s) -> bool:
        return self.include_bias or is_kernel(layer, s)

    def _plan(self, graph: ChannelGraph) -> dict[str, list[list[Part]]]:
        if getattr(self, "_plan_graph", None) is not graph:
            consumers = getattr(self, "include_consumers", False)
            self._plan_cache = {g.id: group_units(graph, g, self._select, consumers=consumers)
                                for g in scorable_groups(graph)}
            self._plan_graph = graph
            self._size = {gid: graph.groups[gid].size for gid in self._plan_cache}
        return self._plan_cache

    def _variables(self, plan) -> list:
        parts = (p for units in plan.values() for unit in units for p in unit)
        return list({id(p.var): p.var for p in parts}.values())

    def accumulate(self, model: keras.Model, graph: ChannelGraph, x, y) -> None:
        """Adds one mini-batch ``(x, y)`` (y: dict of targets by task) to the running sums."""
        self._plan(graph)
        batch = self._batch_scores(model, graph, x, y)
        if self._add is None or _shapes(batch) != _shapes(self._sum):  # first batch, or another model
            self._new_sums(batch)
        self._add(batch)
        self.batches += 1

    def _new_sums(self, batch: dict) -> None:
        with tf.init_scope():
            self._sum = {gid: tf.Variable(tf.zeros(t.shape, tf.float64), trainable=False,
                                          name=f"score_sum_{i}")
                         for i, (gid, t) in enumerate(sorted(batch.items()))}
        sums = self._sum

        @tf.function(reduce_retracing=True)
        def add(batch):
            for gid, t in batch.items():
                sums[gid].assign_add(t)

        self._add = add

    def scores(self) -> Scores:
        """Average per-channel scores over the batches accumulated since the last reset; NaN
        for groups with nothing to score (no unit, or for CosPrune no task pair)."""
        if not self.batches:
            raise ValueError(f"{type(self).__name__} has no accumulated batches: call "
                             "accumulate(model, graph, x, y) or pass data=")
        sums = {gid: v.numpy() for gid, v in self._sum.items()}
        return {gid: sums[gid] / self.batches if gid in sums else np.full(size, np.nan)
                for gid, size in self._size.items()}

    def get_state(self) -> dict:
        """The running sums (float64 values by group) and the batch count."""
        return {"sum": {gid: v.numpy().tolist() for gid, v in self._sum.items()},
                "batches": int(self.batches)}

    def set_state(self, state: dict) -> None:
        if "sum" not in state:
            return
        # values: a list, or the {dtype, shape, values} dict of earlier states
        sums = {gid: tf.constant(np.asarray(v["values"] if isinstance(v, dict) else v, np.float64))
                for gid, v in state["sum"].items()}
        if self._add is None or _shapes(sums) != _shapes(self._sum):
            self._new_sums(sums)
        for gid, value in sums.items():
            self._sum[gid].assign(value)
        self.batches = int(state["batches"])

    def __call__(self, model, graph=None, data=None) -> Scores:
        graph = ChannelGraph.of(model) if graph is None else graph
        if data is not None:
            self.reset()
            for x, y in iterate_batches(data):
                self.accumulate(model, graph, x, y)
        return self.scores()

    def get_config(self):
        return {"include_bias": self.include_bias, **super().get_config()}


class Taylor(_GradientImportance):
    """First-order Taylor importance on the TOTAL loss (Molchanov et al. 2019).

    Per unit and batch ``z_c = sum_{w in channel c} w * dL/dw`` (the gate view:
    ``g * dL/dg`` for an all-ones gate on the unit's output); ``I_c = z_c**2``, averaged
    over the batches since the last reset, then reduced over the group's units. The total
    loss is ``sum_t weight_t * loss_t`` plus the model's regularization losses; losses
    and weights come from the compiled model unless ``losses`` / ``loss_weights`` are given.

    ``include_consumers`` adds one unit per layer reading the channel (its input rows: the
    first-order change of removing the channel's activation, as Torch-Pruning's
    ``GroupTaylorImportance`` counts the coupled group); off by default, as Molchanov et al. score
    the filter. ``per_weight`` scores ``sum_w |w * dL/dw|`` (Torch-Pruning's per-weight form)
    instead of the square of the channel's sum.
    """

    def __init__(self, losses: Mapping | None = None, loss_weights: Mapping | None = None,
                 include_bias: bool = True, reduction: str = "sum", normalize: str | None = None,
                 include_consumers: bool = False, per_weight: bool = False):
        super().__init__(losses, include_bias, reduction, normalize)
        self.loss_weights = loss_weights
        self.include_consumers, self.per_weight = bool(include_consumers), bool(per_weight)

    def _batch_scores(self, model, graph, x, y) -> dict:
        plan = self._plan(graph)
        variables = self._variables(plan)
        fns = resolve_losses(model, self.losses)
        weights = _loss_weights(model, self.loss_weights)
        def total(out, y):  # noqa: E306
            loss = tf.add_n([weights.get(t, 1.0) * _task_loss(fn, y[t], out[t]) for t, fn in fns.items()])
            if model.losses:
                loss += tf.add_n([tf.cast(l, tf.float32) for l in model.losses])
            return [loss]

        def scores_of(grads):  # graph ops: one score per unit and channel, reduced over the units
            return {gid: reduce_units([self._unit_score(grads, unit, graph.groups[gid].size) for unit in units],
                                      self.reduction)
                    for gid, units in plan.items() if units}

        tag = (type(self).__name__, id(graph), tuple(fns), tuple(sorted(weights.items())), self.reduction)
        fn = compiled_scores(self, model, variables, total, tag, _outputs, scores_of)
        return fn(x, _targets(y, fns))

    def _unit_score(self, grads, unit, size):
        """``z_c**2`` with ``z_c = sum of w * dL/dw`` over the unit's slices of channel c; with
        ``per_weight`` the sum of ``|w * dL/dw|`` instead."""
        terms = [grads[id(p.var)][0] * tf.cast(p.var.value, tf.float64) for p in unit]
        if self.per_weight:
            return tf.add_n([channel_sum(tf.abs(t), p, size) for t, p in zip(terms, unit)])
        return tf.add_n([channel_sum(t, p, size) for t, p in zip(terms, unit)]) ** 2

    def get_config(self):
        return {"loss_weights": self.loss_weights, "include_consumers": self.include_consumers,
                "per_weight": self.per_weight, **super().get_config()}


class SecondOrder(Taylor):
    """Second-order saliency (Optimal Brain Damage, LeCun et al. 1990) with the Fisher
    approximation of the Hessian diagonal: removing weight ``w`` costs about
    ``0.5 * H_ww * w**2`` at a minimum, with ``H_ww ~ E[(dL/dw)**2]``.

    Per unit and batch ``I_c = 0.5 * sum_{w in channel c} (dL/dw)**2 * w**2`` on the total loss
    (the squared mini-batch gradient stands in for the per-sample Fisher: one backward pass per
    batch, like Taylor), averaged over the batches, reduced over the group's units. Unlike
    Taylor's ``(sum w g)**2`` the terms cannot cancel, so a channel whose weights pull in
    opposite directions still counts as important.
    """

    def _unit_score(self, grads, unit, size):
        return 0.5 * tf.add_n([channel_sum(tf.square(grads[id(p.var)][0] * tf.cast(p.var.value, tf.float64)), p, size)
                               for p in unit])


class CosPrune(_GradientImportance):
    """Task-gradient agreement (Garg, Zhang & Guan 2023): prune the most conflicting first.

    Per task t, ``G_t`` is the gradient of task t's loss alone with respect to the
    channel's own weights in a unit. ``c = mean over task pairs of cos(G_t, G_t')``,
    averaged over batches, reduced over units (default "mean"). The score IS ``c``: high
    (agreeing tasks) = keep, low (opposing gradients) = pruned first. Only tasks the group
    feeds are paired (a head feeding one task has no pair): groups feeding fewer than two
    of ``tasks`` score NaN and are never pruned by this criterion. A channel whose
    gradient for a task is exactly zero gets cos = 0 for that pair.

    The paper's reference code (``gargsid/MTLCosPrune``, ``cosine_pruning_engine.py``) scores
    the same thing: per filter of each shared convolution, the cosine between two tasks'
    gradients of the filter's kernel (no bias, no BatchNorm: its VGG-16 has none), averaged
    over task pairs and summed over the batches since the last pruning step; the lowest
    cosine is pruned first in one ranking over all layers (cosines share the [-1, 1] scale, so
    there is no per-layer normalisation and no Taylor term in the cosine ranking), a layer
    keeping at least 5 filters; only the shared trunk is scored. Differences here: bias
    slices count unless ``include_bias=False``; a group with several layers (a residual add)
    averages its layers' cosines; the layer floor is :func:`tfmot_mtl.selection.layer_floor`
    (``min_channels=5`` reproduces the reference's).

    Comparing criteria: a group feeding one task has no cosine, so a comparison prunes only the
    shared trunk (``groups="shared"``, as the paper does) and every criterion then scores the
    same channels; with ``groups="all"`` the heads keep their channels under CosPrune while other
    criteria may prune them, which is not a like-for-like comparison. The paper compares at equal
    parameter counts (``benchmarks/iterative_pruning.py --preset seeds``): rank by the criterion
    alone (``cost_exponent=0``) and let ``target_params`` decide how many channels go.
    """

    def __init__(self, tasks: Iterable[str] | None = None, losses: Mapping | None = None,
                 include_bias: bool = True, reduction: str = "mean", eps: float = 1e-12,
                 normalize: str | None = None):
        super().__init__(losses, include_bias, reduction, normalize)
        self.tasks = list(tasks) if tasks is not None else None
        self.eps = eps

    def _batch_scores(self, model, graph, x, y) -> dict:
        plan = self._plan(graph)
        variables = self._variables(plan)
        fns = resolve_losses(model, self.losses)
        tasks = self.tasks or list(fns)
        missing = [t for t in tasks if t not in fns]
        if missing:
            raise ValueError(f"CosPrune tasks {missing} have no loss; losses are known for {list(fns)}")
        pairs = {gid: list(itertools.combinations([i for i, t in enumerate(tasks) if t in graph.groups[gid].tasks], 2))
                 for gid in plan}

        def scores_of(grads):  # graph ops: per unit the mean task-pair cosine, reduced over units
            return {gid: reduce_units([self._unit_cos(unit, grads, pairs[gid], graph.groups[gid].size)
                                       for unit in units], self.reduction)
                    for gid, units in plan.items() if units and pairs[gid]}

        fn = compiled_scores(self, model, variables, lambda out, y: [
            _task_loss(fns[t], y[t], out[t]) for t in tasks], ("cosprune", id(graph), tuple(tasks), self.reduction),
            _outputs, scores_of)
        return fn(x, _targets(y, tasks))

    def _unit_cos(self, unit, grads, pairs, size):
        def dot(a, b):
            return tf.add_n([channel_sum(grads[id(p.var)][a] * grads[id(p.var)][b], p, size) for p in unit])

        cos = []
        for a, b in pairs:
            denom = tf.sqrt(dot(a, a) * dot(b, b))
            cos.append(tf.where(denom > self.eps, dot(a, b) / tf.maximum(denom, self.eps),
                                tf.zeros_like(denom)))
        return tf.reduce_mean(tf.stack(cos), axis=0)

    def get_config(self):
        return {"tasks": self.tasks, "eps": self.eps, **super().get_config()}
