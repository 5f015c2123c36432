"""Channel importance criteria over the channel groups of a :class:`ChannelGraph`.

Every criterion returns ``{group_id: np.ndarray}`` with one score per channel for every
prunable group; HIGHER = more important (kept longer). NaN marks a channel the criterion
cannot score; the pruning callback never removes it.

A group couples several layers (a residual Add joins producers; BN follows a conv). A
criterion first scores each *unit* -- the group's trainable "out" slices in ONE layer
(e.g. conv kernel columns + bias, or BN gamma + beta) -- and then combines the units with
``reduction`` = "sum" | "mean" | "max" (the DepGraph group importance).

Data-free criteria (:class:`Magnitude`, :class:`BNScale`, :class:`Random`) ignore data.
Gradient criteria (:class:`Taylor`, :class:`CosPrune`) average over mini-batches:
``accumulate(model, graph, x, y)`` adds one batch, ``scores()`` returns the average since
the last ``reset()``; calling ``criterion(model, graph, data)`` resets, accumulates every
batch of ``data`` and returns the scores. Gradients are taken with ``tf.GradientTape``
with the model called in inference mode (``training=False``), so scoring never updates
BatchNormalization statistics; forward, backward and the per-channel reductions run as one
compiled graph function (:mod:`tfmot_mtl.pruning._gradients`) whose score vectors are
added to running-sum variables on the device; the host reads the sums only in ``scores()``,
never a weight gradient or a per-batch score.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

import keras
import numpy as np
import tensorflow as tf

from tfmot_mtl import _keras_compat
from tfmot_mtl.graph import ChannelGraph, ChannelGroup
from tfmot_mtl.pruning._gradients import channel_sum, compiled_scores, reduce_units, targets as _targets
from tfmot_mtl.walk import named_outputs, output_names

REDUCTIONS = ("sum", "mean", "max")
Scores = dict[str, np.ndarray]


@dataclass
class _Part:
    """One weight slice of a unit: positions along ``axis`` of ``var`` owned by ``channels``."""

    var: Any
    axis: int
    positions: np.ndarray
    channels: np.ndarray


def _units(graph: ChannelGraph, group: ChannelGroup, select: Callable) -> list[list[_Part]]:
    """The group's trainable "out" slices, one list per layer, filtered by ``select(layer, s)``."""
    by_layer: dict[str, list[_Part]] = {}
    for s in group.slices:
        if s.role != "out" or not s.defines_zero:
            continue
        layer = graph.layer(s.layer)
        if select(layer, s):
            part = _Part(layer.weights[s.weight], s.axis, s.positions, s.channels)
            by_layer.setdefault(s.layer, []).append(part)
    return list(by_layer.values())


def _channel_sum(values: np.ndarray, part: _Part, size: int) -> np.ndarray:
    """Per-channel sum of ``values`` (shaped like ``part.var``) over the part's positions."""
    rows = np.moveaxis(values, part.axis, 0)[part.positions]
    rows = rows.reshape(len(part.positions), -1).sum(axis=1)
    out = np.zeros(size)
    np.add.at(out, part.channels, rows)
    return out


def _reduce(per_unit: list[np.ndarray], size: int, reduction: str) -> np.ndarray:
    if not per_unit:
        return np.full(size, np.nan)
    stack = np.stack(per_unit)
    return {"sum": stack.sum, "mean": stack.mean, "max": stack.max}[reduction](axis=0)


def _is_kernel(layer, s) -> bool:
    return len(layer.weights[s.weight].shape) >= 2


def _is_bn(layer) -> bool:
    return isinstance(layer, keras.layers.BatchNormalization)


def _scorable(graph: ChannelGraph) -> list[ChannelGroup]:
    return [g for g in graph.prunable_groups if g.size > 0]


class Importance:
    """Base class: ``criterion(model, graph, data=None) -> {group_id: scores}``."""

    needs_data = False

    def __init__(self, reduction: str = "sum"):
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        self.reduction = reduction

    def __call__(self, model: keras.Model, graph: ChannelGraph | None = None, data=None) -> Scores:
        graph = graph or ChannelGraph.from_model(model)
        return {g.id: self.score_group(graph, g) for g in _scorable(graph)}

    def score_group(self, graph: ChannelGraph, group: ChannelGroup) -> np.ndarray:
        raise NotImplementedError

    # Gradient-free criteria accumulate nothing; the callback may call these uniformly.
    def accumulate(self, model, graph, x, y) -> None:
        return None

    def reset(self) -> None:
        return None

    # What decides the next scores beyond the weights (saved by ChannelPruningCallback.get_state).
    def get_state(self) -> dict:
        """JSON-serialisable state: empty for criteria that read the weights only."""
        return {}

    def set_state(self, state: dict) -> None:
        """Restores a ``get_state()`` dict."""
        return None

    def get_config(self) -> dict:
        return {"reduction": self.reduction}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.get_config().items())})"


class Magnitude(Importance):
    """L_p norm of each channel's own weights (L1: Li et al. 2017, "Pruning filters").

    Per unit (layer) the score is ``||w_c||_p`` over the channel's producer kernel
    columns (depthwise slices included); ``include_bias`` adds 1-D slices (bias and, when
    ``include_bn``, BN gamma/beta). BN layers count only with ``include_bn=True``.
    """

    def __init__(self, p: float = 1, include_bias: bool = False, include_bn: bool = False,
                 reduction: str = "sum"):
        super().__init__(reduction)
        if p not in (1, 2):
            raise ValueError(f"p must be 1 or 2, got {p!r}")
        self.p, self.include_bias, self.include_bn = p, include_bias, include_bn

    def _select(self, layer, s) -> bool:
        if _is_bn(layer):
            return self.include_bn
        return _is_kernel(layer, s) or self.include_bias

    def score_group(self, graph, group):
        per_unit = []
        for unit in _units(graph, group, self._select):
            acc = sum(_channel_sum(np.abs(np.asarray(p.var.numpy())) ** self.p, p, group.size)
                      for p in unit)
            per_unit.append(acc ** (1.0 / self.p))
        return _reduce(per_unit, group.size, self.reduction)

    def get_config(self):
        return {"p": self.p, "include_bias": self.include_bias, "include_bn": self.include_bn,
                **super().get_config()}


class BNScale(Importance):
    """|gamma| of the group's BatchNormalization layers (network slimming, Liu et al. 2017).

    Groups without a BN scale are scored by ``fallback``: ``"nan"`` (default: NaN, so they
    are never pruned -- |gamma| and kernel norms are not comparable in a global ranking)
    or ``"magnitude"`` (L1 kernel norm, :class:`Magnitude`).
    """

    def __init__(self, fallback: str = "nan", reduction: str = "sum"):
        super().__init__(reduction)
        if fallback not in ("nan", "magnitude"):
            raise ValueError(f"fallback must be 'nan' or 'magnitude', got {fallback!r}")
        self.fallback = fallback

    def score_group(self, graph, group):
        select = lambda layer, s: _is_bn(layer) and layer.weights[s.weight] is getattr(layer, "gamma", None)
        per_unit = [sum(_channel_sum(np.abs(np.asarray(p.var.numpy())), p, group.size) for p in unit)
                    for unit in _units(graph, group, select)]
        if not per_unit and self.fallback == "magnitude":
            return Magnitude(p=1, reduction=self.reduction).score_group(graph, group)
        return _reduce(per_unit, group.size, self.reduction)

    def get_config(self):
        return {"fallback": self.fallback, **super().get_config()}


class Random(Importance):
    """Uniform random scores (control baseline); reproducible with ``seed``."""

    def __init__(self, seed: int | None = None):
        super().__init__("sum")
        self.seed = seed
        self._rng = np.random.default_rng(seed)

    def score_group(self, graph, group):
        return self._rng.random(group.size)

    def get_state(self) -> dict:
        """The generator's state (the next scores follow from it)."""
        return {"rng": self._rng.bit_generator.state}

    def set_state(self, state: dict) -> None:
        if "rng" in state:
            self._rng.bit_generator.state = state["rng"]

    def get_config(self):
        return {"seed": self.seed}


# ----------------------------------------------------------------- gradient criteria


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


def iterate_batches(data) -> Iterable[tuple]:
    """Yields (x, y) from a dataset / iterable of batches, or one ``(x, y)`` tuple."""
    if isinstance(data, tuple) and len(data) in (2, 3) and not isinstance(data[0], tuple):
        yield data[0], data[1]
        return
    for batch in data:
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise ValueError("scoring data must yield (x, y) batches with y a dict of targets by task")
        yield batch[0], batch[1]


def _shapes(tensors: Mapping) -> dict:
    return {gid: tuple(t.shape) for gid, t in tensors.items()}


class _GradientImportance(Importance):
    """Accumulating base: subclasses implement ``_batch_scores(model, graph, x, y)``, which
    returns the batch's score tensors of the scored groups (graph ops, float64).

    The running sums are non-trainable variables updated on the device by one compiled
    call per batch; the host reads them only in ``scores()`` (at a pruning step)."""

    needs_data = True

    def __init__(self, losses: Mapping | None = None, include_bias: bool = True,
                 reduction: str = "sum"):
        super().__init__(reduction)
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
        return self.include_bias or _is_kernel(layer, s)

    def _plan(self, graph: ChannelGraph) -> dict[str, list[list[_Part]]]:
        if getattr(self, "_plan_graph", None) is not graph:
            self._plan_cache = {g.id: _units(graph, g, self._select) for g in _scorable(graph)}
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
        graph = graph or ChannelGraph.from_model(model)
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
    """

    def __init__(self, losses: Mapping | None = None, loss_weights: Mapping | None = None,
                 include_bias: bool = True, reduction: str = "sum"):
        super().__init__(losses, include_bias, reduction)
        self.loss_weights = loss_weights

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

        def scores_of(grads):  # graph ops: z_c per unit, squared, reduced over the units
            def z(p, size):
                return channel_sum(grads[id(p.var)][0] * tf.cast(p.var.value, tf.float64), p, size)
            return {gid: reduce_units([tf.add_n([z(p, graph.groups[gid].size) for p in unit]) ** 2
                                       for unit in units], self.reduction)
                    for gid, units in plan.items() if units}

        tag = ("taylor", id(graph), tuple(fns), tuple(sorted(weights.items())), self.reduction)
        fn = compiled_scores(self, model, variables, total, tag, _outputs, scores_of)
        return fn(x, _targets(y, fns))

    def get_config(self):
        return {"loss_weights": self.loss_weights, **super().get_config()}


class CosPrune(_GradientImportance):
    """Task-gradient agreement (Garg, Zhang & Guan 2023): prune the most conflicting first.

    Per task t, ``G_t`` is the gradient of task t's loss alone with respect to the
    channel's own weights in a unit. ``c = mean over task pairs of cos(G_t, G_t')``,
    averaged over batches, reduced over units (default "mean"). The score IS ``c``: high
    (agreeing tasks) = keep, low (opposing gradients) = pruned first. Only tasks the group
    feeds are paired (a head feeding one task has no pair): groups feeding fewer than two
    of ``tasks`` score NaN and are never pruned by this criterion. A channel whose
    gradient for a task is exactly zero gets cos = 0 for that pair.
    """

    def __init__(self, tasks: Iterable[str] | None = None, losses: Mapping | None = None,
                 include_bias: bool = True, reduction: str = "mean", eps: float = 1e-12):
        super().__init__(losses, include_bias, reduction)
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
