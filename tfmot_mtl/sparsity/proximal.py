"""ProximalGroupLasso: a callback applying the group-lasso proximal step after each update.

The proximal step is what produces *exact* zeros: a channel whose weights fall under the
threshold becomes zero in every slice it owns (producer kernel columns, bias, BN gamma
and beta, depthwise slices), so it is truly dead and ``strip_channels`` removes it.

The step runs inside the compiled train step (:mod:`tfmot_mtl.training.ingraph`: a hook after the
optimizer's update; graph ops in :mod:`tfmot_mtl.sparsity._graph_step`), so it works with
``jit_compile=True`` and on a GPU without copying weights to the host. The host reads the
state only when asked (``zero_channels``, ``get_state``) and, per batch, one device-computed
NaN/Inf flag per selected weight.
"""
from __future__ import annotations

import warnings
from typing import Any, Mapping

import keras
import numpy as np
import tensorflow as tf

from tfmot_mtl.utils import _keras_compat

from tfmot_mtl.training import ingraph
from tfmot_mtl.training.callbacks import ResumableCallback, check_inner_model
from tfmot_mtl.graph import ChannelGraph
from tfmot_mtl.training.nonfinite import nonfinite_loss, nonfinite_variables, stop_if_nonfinite
from tfmot_mtl.training.resume import check_groups
from tfmot_mtl.sparsity._checks import check_channel_weights, check_strengths
from tfmot_mtl.sparsity._graph_step import ProxPlan, ProxStep
from tfmot_mtl.sparsity._pieces import pieces
from tfmot_mtl.sparsity._state import GraphState
from tfmot_mtl.sparsity.plan import SCALES, Entry, group_strengths, per_channel, plan_channels, trainable
from tfmot_mtl.sparsity.strength import Strength, evaluate_strength, serialize_strength
from tfmot_mtl.selection import (MIN_CHANNELS, Selection, check_protect, check_selection, default_min_fraction,
                                 layer_floor, renamed_selection, select_groups)

MODES = ("plain", "adam")


def _unwrap(optimizer):
    while hasattr(optimizer, "inner_optimizer"):
        optimizer = optimizer.inner_optimizer
    return optimizer


@keras.saving.register_keras_serializable(package="tfmot_mtl")
class ProximalGroupLasso(GraphState, ResumableCallback):
    """Applies the group-lasso proximal operator to whole channels after optimizer steps.

    A channel's vector is the concatenation of every trainable slice it owns (role
    ``"out"``, ``defines_zero``) in the model's :class:`ChannelGraph`. With threshold
    ``tau_g = lr * lambda * c_g * k`` (``lr`` the learning rate of the step just taken,
    ``c_g = sqrt(p_g)`` for ``p_g`` weights in the channel, ``k`` optimizer steps since the
    last application):

    * ``mode="plain"``: ``W_g <- max(0, 1 - tau_g / ||W_g||) W_g``;
    * ``mode="adam"`` (Less-is-More reference code, Adam/AdamW only): with
      ``D = sqrt(v_hat) + eps`` from the optimizer's bias-corrected second moments, zero if
      ``||D W_g|| <= tau_g``, else ``W_g <- D theta / (D theta + tau_g) W_g`` where theta
      solves ``sum_i W_i^2 / (theta + tau_g / D_i)^2 = 1``.

    Args:
        l1: lambda. A float; a schedule ``schedule(step) -> (should_apply, value)`` (the
            tfmot ``PruningSchedule`` protocol, e.g. ``ConstantSparsity``); a plain
            callable ``step -> float``; or ``None`` to use, per channel group, the ``l1``
            of the :class:`ChannelGroupLasso` on its producer's kernel (groups without
            one are skipped). ``step`` is the optimizer's iteration count after the update.
        schedule: optional multiplier of ``l1`` with the same protocol (e.g. a ramp from 0
            to 1); the step is skipped when either says ``should_apply=False``.
        groups: the groups to act on, in the selection vocabulary shared by the three
            methods (:func:`tfmot_mtl.selection.select_groups`): ``"shared"`` (the shared
            trunk), ``"all"``, producer layer names or a callable ``ChannelGroup -> bool``.
        layers: deprecated older name of ``groups`` (a callable then receives each producer
            layer); gives a ``DeprecationWarning``.
        protect: task names (their heads) or layer names whose groups are left alone.
        mode: ``"plain"`` or ``"adam"``.
        update_every: apply every this many optimizer steps (the threshold grows with the
            steps elapsed, so the total shrinkage stays the same). With ``update_every > 1``
            a step for the updates since the last one is also taken before each validation
            pass of ``fit``, at the end of every epoch and of training, so what validation,
            checkpoints, ``EarlyStopping(restore_best_weights=True)`` and the trained model
            see always carries exact zeros.
        scale: ``c_g``: ``"sqrt_group_size"`` (default), ``"sqrt_num_groups"`` (sqrt of the
            group's channel count) or ``"none"``.
        log_key: name of the logged group sparsity (fraction of selected channels that are
            exactly zero), added to the batch and epoch ``logs``.
        target: optional channel sparsity to stop at. While the selected channels' sparsity
            is below ``target`` the step runs with lambda times a gain that grows by
            ``adapt_rate`` per step; once it is reached the zero pattern is locked: dead
            channels are kept exactly zero and the others train freely (fine-tuning).
            With Adam the proximal step competes with normalised updates, so whether a
            channel dies depends on lambda against the consistency of its gradient: a
            fixed lambda tends to kill nothing or almost everything, while the growing
            gain stops at the level that gives the target.
        adapt_rate: relative growth of the gain per step while below ``target``.
        gain: the starting multiplier of ``l1``; ``"auto"`` picks the one at which the weakest
            5% of the channels would die within a quarter of ``ramp_steps`` (at most 10 steps),
            so that ``l1`` needs no tuning.
        ramp_steps: with ``target``, aim at a target that grows linearly from 0 to ``target``
            over this many optimizer steps (from the first step of training) instead of at
            ``target`` from the start: the gain grows while the sparsity is below the ramp and
            shrinks by ``adapt_rate`` while it is above, so channels die at the pace of the
            ramp rather than in one cliff when lambda crosses the level at which many channels
            die at once. The pattern is locked when ``target`` itself is reached.
        target_macs, target_params: aim at a cost instead of a share of channels: a fraction
            of the dense model's MACs / parameters (e.g. 0.33) or, above 1, an absolute count,
            counted on the model as it will be stripped (:mod:`tfmot_mtl.sparsity.cost_target`):
            each channel's threshold is scaled by the cost it saves (relative to the average
            channel), ``target`` becomes 85% of the channel share that a ranking by L2 norm per
            unit of cost says the cost needs, and at the end of training the lowest-ranked live
            channels are zeroed until the cost is reached (or zeroed channels kept back when the
            step overshot): ``trimmed``;
            the landed masks are then ``masks`` (use them rather than ``masks_from_zeros``,
            which drops the kept-back channels: they are zero until fine-tuned).
        cost_exponent: with a cost target, how strongly the price of a channel scales its
            threshold and its rank in the trim: the saved cost to this power (1, default: the
            least norm per MAC goes first; 0: the cost is ignored, every layer thins at the same
            relative rate and the trim alone lands the cost), as in ``ChannelPruningCallback``.
            With layer-relative norms (all near 1) any exponent above 0 concentrates the cut in
            the costliest groups; on ``benchmarks/own_models.py`` neither 0 nor 0.5 beat 1 on
            every model (see the own-models section of docs/benchmarks.md).
        relative: thresholds relative to the layer: each channel's ``tau_g`` is also multiplied
            by the mean norm of the live channels of its group, so a channel dies when it is
            weak against the other channels of its layer rather than against one threshold for
            every layer. The scale of a kernel followed by BatchNormalization is free (the
            normalisation undoes it), so absolute norms of different layers are not
            comparable and an absolute threshold empties whole layers at once.
        min_channels, min_fraction: the layer floor (:func:`tfmot_mtl.selection.layer_floor`):
            the strongest ``max(min_channels, ceil(min_fraction * size))`` channels of every
            group are never shrunk, so no layer loses all (or nearly all) of its channels
            (``min_fraction=None``: 0.25, or with a cost target 0.75 of the share that, kept in
            every group alike, meets the target, set when the model is built; see
            :func:`tfmot_mtl.selection.default_min_fraction`).
        channel_weights: optional ``{group_id: per-channel weights}`` (higher = kept longer), an
            adaptive group lasso: each channel's threshold is divided by its weight, and with a
            cost target its rank in the trim multiplied by it. :func:`tfmot_mtl.sparsity.pilot_weights`
            makes them from a data-driven score of the trained model (what ``find_sparse`` does by
            default), so which layers thin is decided by what the channels do for the loss, not by
            their norms alone (with layer-relative norms all near 1, the cost alone would decide).
            Groups without weights weigh 1.
        sparse_model: the model whose channels are shrunk when it is not the model being
            fitted but a part of it: the model inside a
            :class:`~tfmot_mtl.distill.TaskWeightedModel` (learned task weighting) or the
            student of a :class:`~tfmot_mtl.distill.MultiTaskDistiller`. The step runs
            after every update of the fitted model's optimizer (with ``mode="adam"``, on
            that optimizer's second moments of ``sparse_model``'s weights).

    A NaN/Inf loss or selected weight stops training with a ``NonFiniteWarning``
    (:mod:`tfmot_mtl.training.nonfinite`); ``zero_channels()`` keeps the last finite zero pattern and
    ``nonfinite`` holds the message.
    """

    def __init__(self, l1: Strength = None, schedule: Strength = None,
                 groups: Selection = "all", mode: str = "plain", update_every: int = 1,
                 scale: str = "sqrt_group_size", log_key: str = "group_sparsity",
                 target: float | None = None, adapt_rate: float = 0.02, gain: float | str = 1.0,
                 min_channels: int = MIN_CHANNELS, min_fraction: float | None = None, protect=(),
                 sparse_model: keras.Model | None = None, ramp_steps: int | None = None,
                 target_macs: float | None = None, target_params: float | None = None,
                 relative: bool = False, cost_exponent: float = 1.0, layers: Selection | None = None,
                 channel_weights: Mapping[str, Any] | None = None):
        super().__init__()
        self.channel_weights = check_channel_weights(channel_weights)
        if isinstance(cost_exponent, bool) or not 0.0 <= float(cost_exponent) <= 2.0:
            raise ValueError(f"cost_exponent must be in [0, 2], got {cost_exponent!r}")
        self.cost_exponent = float(cost_exponent)
        self._sparse_model = sparse_model
        self.relative = bool(relative)
        min_fraction = default_min_fraction(min_fraction, target_macs is not None or target_params is not None)
        if int(min_channels) < 0 or (min_fraction is not None and not 0.0 <= float(min_fraction) < 1.0):
            raise ValueError(f"min_channels must be >= 0 and min_fraction in [0, 1), got "
                             f"{min_channels}, {min_fraction}")
        self.min_channels = int(min_channels)
        self.min_fraction = None if min_fraction is None else float(min_fraction)  # None: set by the cost target
        if target is not None and not 0.0 < float(target) < 1.0:
            raise ValueError(f"target sparsity must be in (0, 1), got {target}")
        if not 0.0 < float(adapt_rate) < 1.0:
            raise ValueError(f"adapt_rate must be in (0, 1), got {adapt_rate}")
        self.target = None if target is None else float(target)
        if ramp_steps is not None and (isinstance(ramp_steps, bool) or int(ramp_steps) < 1):
            raise ValueError(f"ramp_steps must be a positive number of steps or None, got {ramp_steps!r}")
        self.ramp_steps = None if ramp_steps is None else int(ramp_steps)
        self.cost_kind, self.cost_value = _cost_target(target_macs, target_params, target)
        self.cost_target = None  # a CostTarget, once built
        self.trimmed = 0  # channels the landing on the cost target removed (negative: kept back)
        self.graph: ChannelGraph | None = None  # the graph of the model, once built
        self._landed = None  # with a cost target: the landed ChannelMasks, at the end of training
        self.auto_gain = isinstance(gain, str)
        self.adapt_rate, self._gain0 = float(adapt_rate), 1.0 if self.auto_gain else float(gain)
        self._step_graph: ProxStep | None = None
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if scale not in SCALES:
            raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
        if int(update_every) < 1:
            raise ValueError(f"update_every must be a positive integer, got {update_every}")
        check_strengths(l1, gain)
        self.l1, self.schedule = l1, schedule
        spec, self._callable_of = renamed_selection(groups, layers, "ProximalGroupLasso")
        self.group_spec = check_selection(spec, "groups" if layers is None else "layers", self._callable_of)
        self.protect = check_protect(protect)
        self.mode, self.update_every, self.scale, self.log_key = mode, int(update_every), scale, log_key
        self._plan_model = None
        self._zero_host: np.ndarray | None = None
        self.nonfinite: str | None = None  # the message, once training was stopped on NaN/Inf

    # ---------------------------------------------------------------------- plan
    @property
    def net(self) -> keras.Model | None:
        """The model whose channels are shrunk: ``sparse_model`` if given, else the fitted model."""
        return self._sparse_model if self._sparse_model is not None else self.model

    def on_train_begin(self, logs=None):
        self.nonfinite = None
        check_inner_model(self._sparse_model, self.model, "sparse_model")
        self.build(self.net)
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is not None:
            optimizer = _unwrap(optimizer)
            self._check_optimizer(optimizer)
            if not optimizer.built:
                optimizer.build(self.model.trainable_variables)
            self._attach(optimizer)
            self._last_step = int(np.asarray(optimizer.iterations))
        super().on_train_begin(logs)

    def _attach(self, optimizer) -> None:
        """Creates the graph state (once per model and optimizer) and installs the step hook."""
        graph = self._step_graph
        if graph is None or graph.optimizer is not optimizer or graph.model is not self.model:
            previous = None if graph is None else (graph.gain.numpy(), self._zero, self.locked)
            if previous is None and self.auto_gain:
                self._gain0 = self._starting_gain(optimizer)
            self._step_graph = ProxStep(self.model, optimizer, self._step_plan())
            self._step_graph.model = self.model
            self._zero = self._zero_from_weights() if previous is None else previous[1]
            if previous is not None:
                self.gain, self.locked = float(previous[0]), previous[2]
        self._step_graph.enabled.assign(True)
        anchor = ingraph.pick_anchor(self.variables, self.model)
        if anchor is not None and ingraph.add_post_update_hook(anchor, f"prox_{id(self)}", self._step_graph):
            ingraph.refresh_train_function(self.model)

    def _step_plan(self) -> ProxPlan:
        """What the graph step needs, from this callback's plan and settings."""
        protect = []
        for i, group in enumerate(self.groups):
            idx = np.flatnonzero(self._channel_group == i)
            protect.append((idx, layer_floor(len(idx), self.min_channels, self.min_fraction)))
        return ProxPlan(pieces(self.entries, self.variables, self.num_channels), self._channel_group,
                        self._lambda * self._scale, self._gain0, protect=tuple(protect),
                        group_count=len(self.groups), strength0=self.strength(0),
                        dynamic=callable(self.l1) or callable(self.schedule), adam=self.mode == "adam",
                        relative=self.relative, update_every=self.update_every, ramp_steps=self.ramp_steps,
                        target=self.target, adapt_rate=self.adapt_rate)

    def _starting_gain(self, optimizer) -> float:
        """``gain="auto"``: the gain at which the weakest 5% of the channels (by ``||w_g|| /
        c_g``, what the step compares) would die within a quarter of ``ramp_steps`` (at most 10
        steps) at the first learning rate."""
        sq = np.zeros(self.num_channels)
        for e in self.entries:
            block = self._gather(np.asarray(keras.ops.convert_to_numpy(self.variables[e.var])), e)
            sq += np.bincount(e.elements, weights=np.square(block.reshape(-1), dtype=np.float64),
                              minlength=self.num_channels)
        base = self._lambda * self._scale * (self._group_mean_norm(sq) if self.relative else 1.0)
        live = (sq > 0) & (base > 0)
        if not live.any():
            return 1.0
        _, lam = self.strength(1)
        step = self.learning_rate(optimizer, 1) * max(float(lam), 1e-12)
        within = min(10.0, max(1.0, (self.ramp_steps or 40) / 4.0))
        return float(max(np.quantile(np.sqrt(sq[live]) / base[live], 0.05) / (within * step), 1e-6))

    @property
    def masks(self):
        """The :class:`~tfmot_mtl.masks.ChannelMasks` (True = keep) the method has found so far, the
        contract the three methods share: with a cost target, the landed masks once training
        ended; otherwise (and before) the channels the step has not zeroed. None before the
        callback has seen a model."""
        from tfmot_mtl.masks import masks_from_zeros

        if self._landed is not None:
            return self._landed
        if self.graph is None:
            return None
        return masks_from_zeros(self.graph.source, graph=self.graph)

    def build(self, model: keras.Model) -> "ProximalGroupLasso":
        """Precomputes, per weight, the gather indices of the selected channels."""
        graph = ChannelGraph.of(model)
        groups = select_groups(graph, self.group_spec, self.protect, on_empty="warn", argument="groups",
                               callable_of=self._callable_of, context="ProximalGroupLasso selected no channel group; "
                               "it will do nothing")
        strengths = group_strengths(model, groups, self.l1)
        plan = plan_channels(graph, [g for g in groups if g.id in strengths and trainable(graph, g)], strengths)
        self.graph = graph
        self.groups, self.variables, self.entries = plan.groups, plan.variables, plan.entries
        self.num_channels = plan.num_channels
        self._channel_group, self._lambda = plan.channel_group, plan.strength
        self._scale = plan.scale(self.scale)
        self._plan_model = model
        if self.cost_kind is not None and self.cost_target is None:
            from tfmot_mtl.pruning.cost import CostGoal
            from tfmot_mtl.sparsity.cost_target import AIM, CostTarget

            # refuses an unreachable target before training; sets the floor a None min_fraction leaves open
            goal = CostGoal(graph, self.groups, self.cost_kind, self.cost_value, self.min_channels,
                            self.min_fraction, None, self.group_spec)
            self.min_fraction = goal.min_fraction
            self.cost_target = CostTarget(goal, self.relative, self.cost_exponent, self.channel_weights)
            self.target = min(0.95, max(0.01, AIM * self.cost_target.channel_share(model)))
            # Thresholds per unit of cost: a channel that saves k times the average cost dies
            # at k times the average threshold (the ranking the trim and channel_share use).
            weights = self.cost_target.cost_weights()
            self._scale = self._scale * np.asarray([weights.get(g.id, 1.0) for g in self.groups])[self._channel_group]
        if self.channel_weights:
            self._scale = self._scale / per_channel(self.channel_weights, self.groups, self._channel_group)
        if groups and not self.groups:
            warnings.warn("ProximalGroupLasso selected no channel group; it will do nothing",
                          stacklevel=2)
        return self

    def _check_optimizer(self, optimizer) -> None:
        if self.mode == "adam" and not isinstance(optimizer, keras.optimizers.Adam):
            raise ValueError(f"mode='adam' reads Adam's second moments and needs a "
                             f"keras.optimizers.Adam or AdamW optimizer; the model uses "
                             f"{type(optimizer).__name__}. Use mode='plain' instead.")

    # ---------------------------------------------------------------------- step
    def on_train_batch_begin(self, batch, logs=None):
        graph = self._step_graph
        if graph is not None and graph.plan.dynamic:  # a callable strength: evaluated on the host
            go, lam = self.strength(int(np.asarray(graph.optimizer.iterations)) + 1)
            graph.go.assign(bool(go))
            graph.lam.assign(float(lam))

    def on_train_batch_end(self, batch, logs=None):
        if self._stopped_on_nonfinite(logs):
            return
        if logs is not None and self._step_graph is not None:
            logs[self.log_key] = tf.identity(self._step_graph.sparsity.value)  # a snapshot, no host copy

    def on_train_end(self, logs=None):
        self._flush()
        if self.cost_target is not None and self.nonfinite is None:
            self._land()
        super().on_train_end(logs)
        if self._step_graph is not None:  # the hook stays in the traced step, switched off
            self._step_graph.enabled.assign(False)

    def on_test_begin(self, logs=None):
        self._flush()  # only acts inside fit: the step is disabled outside training

    def _flush(self) -> None:
        """A proximal step for the updates since the last one (``update_every > 1``)."""
        if self._step_graph is not None and self.update_every > 1 and self.nonfinite is None:
            self._step_graph.flush_now()

    def on_epoch_end(self, epoch, logs=None):
        self._flush()
        if logs is not None and self._plan_model is not None and self.nonfinite is None:
            logs[self.log_key] = self.sparsity()

    def _stopped_on_nonfinite(self, logs) -> bool:
        """Stops training (warning) on a NaN/Inf loss or selected weight (flags computed on the
        device); the zero pattern (``zero_channels()``, ``locked``) is then the last one computed
        in the step from finite weights."""
        return stop_if_nonfinite(self, lambda: nonfinite_loss(logs) or nonfinite_variables(self.variables),
                                 "The zero pattern (zero_channels()) is the last one computed from "
                                 "finite weights.")

    def learning_rate(self, optimizer, step: int) -> float:
        """The learning rate the optimizer used for its update number ``step`` (1-based)."""
        return _keras_compat.learning_rate(optimizer, step)

    def strength(self, step: int) -> tuple[bool, float]:
        """(should_apply, lambda multiplier) at ``step``."""
        go_a, a = evaluate_strength(self.l1, step)
        go_b, b = evaluate_strength(self.schedule, step)
        return go_a and go_b, a * b

    def apply(self) -> None:
        """Runs one proximal step now (the step the train function runs after each update)."""
        if self._step_graph is None:
            optimizer = _unwrap(self.model.optimizer)
            self._check_optimizer(optimizer)
            self._attach(optimizer)
        self._step_graph()

    def _group_mean_norm(self, sq: np.ndarray) -> np.ndarray:
        """Per channel, the mean norm of the live channels of its group (``relative``)."""
        norm = np.sqrt(sq)
        total = np.bincount(self._channel_group, weights=norm, minlength=len(self.groups))
        live = np.bincount(self._channel_group, weights=(norm > 0).astype(float), minlength=len(self.groups))
        return (total / np.maximum(live, 1.0))[self._channel_group]

    @staticmethod
    def _gather(value: np.ndarray, e: Entry) -> np.ndarray:
        return np.moveaxis(value, e.axis, 0)[e.positions]

    def _preconditioners(self, optimizer, step: int) -> list[np.ndarray]:
        """Per entry, ``D = sqrt(v_hat) + eps`` of the entry's variable."""
        self._check_optimizer(optimizer)
        correction = 1.0 - float(optimizer.beta_2) ** max(step, 1)
        out = []
        for e in self.entries:
            v = _keras_compat.adam_second_moment(optimizer, self.variables[e.var])
            v_hat = np.asarray(keras.ops.convert_to_numpy(v), np.float64) / correction
            out.append(np.sqrt(v_hat) + float(optimizer.epsilon))
        return out

    def _land(self) -> None:
        """Zeroes (or keeps back) channels so that the cost target is met exactly."""
        from tfmot_mtl.masks import apply_masks_, masks_from_zeros

        graph = self.cost_target.graph
        masks, self.trimmed = self.cost_target.land(self.net, masks_from_zeros(self.net, graph=graph))
        apply_masks_(self.net, masks, graph)
        self._landed = masks  # zeroed channels kept back are all-zero: the zeros alone would drop them
        self._zero = self._zero_from_weights()

    # ------------------------------------------------------------------ queries
    def sparsity(self) -> float:
        """Fraction of the selected channels that are exactly zero (read from the model)."""
        if self._plan_model is None:
            if self.net is None:
                raise ValueError("sparsity() needs a model: call build(model) or fit first")
            self.build(self.net)
        zero = self._zero_from_weights()
        if self.nonfinite is None:
            self._zero = zero
        return float(zero.mean()) if self.num_channels else 0.0

    def _zero_from_weights(self) -> np.ndarray:
        norms = np.zeros(self.num_channels)
        for e in self.entries:
            block = self._gather(np.asarray(keras.ops.convert_to_numpy(self.variables[e.var])), e)
            norms += np.bincount(e.elements, weights=np.abs(block.reshape(-1)).astype(np.float64),
                                 minlength=self.num_channels)
        return norms == 0

    def zero_channels(self) -> dict[str, np.ndarray]:
        """Group id -> boolean array, True where the channel is exactly zero (last known)."""
        if self._zero is None:
            self.sparsity()
        return {g.id: self._zero[self._channel_group == i] for i, g in enumerate(self.groups)}

    # ------------------------------------------------------------------- state
    state_kind = "ProximalGroupLasso"

    def _state_ready(self) -> bool:
        return self._plan_model is not None and (self.net is None or self._plan_model is self.net)

    def _state_groups(self) -> list[list]:
        return [[g.id, int(g.size)] for g in self.groups]

    def _read_state(self) -> dict:
        """Gain, locked and zero patterns (per selected channel), last proximal step, groups."""
        def bools(value):
            return None if value is None else [bool(v) for v in value]

        return {"groups": self._state_groups() if self._plan_model is not None else None,
                "gain": float(self.gain), "locked": bools(self.locked), "zero": bools(self._zero),
                "last_step": None if self._last_step is None else int(self._last_step)}

    def _write_state(self, state: dict) -> None:
        """Sets the state on a built callback; the channel groups must match its plan."""
        check_groups(self.state_kind, state["groups"], self._state_groups(), "the groups= selection")
        for key in ("locked", "zero"):
            if state[key] is not None and len(state[key]) != self.num_channels:
                raise ValueError(f"ProximalGroupLasso state '{key}' has {len(state[key])} entries; "
                                 f"the selected channels number {self.num_channels}")
        self.gain = float(state["gain"])
        self.locked = None if state["locked"] is None else np.asarray(state["locked"], bool)
        self._zero = None if state["zero"] is None else np.asarray(state["zero"], bool)
        self._last_step = None if state["last_step"] is None else int(state["last_step"])

    # ------------------------------------------------------------------ config
    def get_config(self) -> dict:
        if callable(self.group_spec) and not isinstance(self.group_spec, str):
            raise ValueError("ProximalGroupLasso with a callable `groups` cannot be serialized; "
                             "pass a list of layer names instead")
        return {"l1": serialize_strength(self.l1, "l1"), "schedule": serialize_strength(self.schedule, "schedule"),
                "groups": self.group_spec if isinstance(self.group_spec, str) else list(self.group_spec),
                "mode": self.mode, "update_every": self.update_every, "scale": self.scale,
                "log_key": self.log_key, "target": None if self.cost_kind else self.target, "adapt_rate": self.adapt_rate,
                "gain": "auto" if self.auto_gain and self._step_graph is None else self.gain, "min_channels": self.min_channels,
                "min_fraction": self.min_fraction, "protect": list(self.protect), "ramp_steps": self.ramp_steps,
                "relative": self.relative, "cost_exponent": self.cost_exponent,
                "channel_weights": ({gid: np.asarray(w).tolist() for gid, w in self.channel_weights.items()}
                                    if self.channel_weights else None),
                **({f"target_{self.cost_kind}": self.cost_value} if self.cost_kind else {})}

    @classmethod
    def from_config(cls, config: dict) -> "ProximalGroupLasso":
        config = dict(config)
        if "layers" in config:  # written before `groups`: names and keywords mean the same
            config["groups"] = config.pop("layers")
        for key in ("l1", "schedule"):
            if isinstance(config.get(key), dict):
                config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)


def _cost_target(target_macs, target_params, target) -> tuple[str | None, float | None]:
    from tfmot_mtl.pruning.cost import check_cost_target

    kind, value = check_cost_target(target_macs, target_params)
    if kind is not None and target is not None:
        raise ValueError("give one of target, target_macs and target_params")
    return kind, value
