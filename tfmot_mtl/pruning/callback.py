"""ChannelPruningCallback: iterative importance-based channel pruning during ``fit``.

At every step where the schedule says so, the callback scores the channels of the selected
groups, removes the lowest-scored ones until the scheduled sparsity is reached, updates
:attr:`ChannelPruningCallback.masks` and zeroes the removed channels with
:func:`~tfmot_mtl.masks.apply_masks_`. The 0/1 masks of the affected variables are
non-trainable variables re-applied inside the compiled train step after every optimizer
update (:class:`tfmot_mtl.training.ingraph.VariableMasks`), so the optimizer never revives a removed
channel (momentum included), also under ``jit_compile=True`` and on a GPU, with no
per-batch host work. Pruning only ever removes more channels.

Keras callbacks do not see the training batches, so gradient criteria (Taylor, CosPrune)
draw their mini-batches from ``data`` (a dataset / iterable of ``(x, y)`` batches, cycled):
``score_batches`` batches at each pruning step, plus one batch every ``accumulate_every``
training steps when that is set (then the average covers the whole interval since the
last pruning step, as in Molchanov et al. 2019 and Garg et al. 2023).

Under ``tf.distribute`` the callback runs once per worker and global step; mask updates are
assigned in cross-replica context (every replica). With several workers the scores are
averaged over the workers (one all-reduce per pruning step), so all workers prune the same
channels even when each draws different scoring batches.
"""
from __future__ import annotations

import json
from typing import Any, Callable, Iterable

import keras
import numpy as np

from tfmot_mtl.training.callbacks import ResumableCallback, check_inner_model
from tfmot_mtl.graph import ChannelGraph, ChannelGroup
from tfmot_mtl.training.ingraph import VariableMasks, refresh_train_function
from tfmot_mtl.masks import (PRUNING_ROUND_MODES, ChannelMasks, apply_masks_, check_round_to, maskable_variables,
                             round_masks, variable_multipliers)
from tfmot_mtl.training.nonfinite import nonfinite_loss, nonfinite_variables, stop_if_nonfinite
from tfmot_mtl.pruning._checks import check_arguments, warn_if_unscored
from tfmot_mtl.pruning._sync import mean_across_workers
from tfmot_mtl.pruning.choose import SCOPES, min_keep, remove_lowest, remove_to_cost
from tfmot_mtl.pruning.cost import CostGoal, check_cost_target, per_cost
from tfmot_mtl.pruning.importance import Importance, normalize_scores
from tfmot_mtl.pruning.schedules import check_schedule, evaluate_schedule
from tfmot_mtl.pruning.scoring_data import ScoringBatches
from tfmot_mtl.pruning.summaries import PruningSummaries
from tfmot_mtl.training.resume import check_groups
from tfmot_mtl.utils.jsonable import jsonable
from tfmot_mtl.selection import MIN_CHANNELS, check_floor, check_protect, default_min_fraction, select_groups


class ChannelPruningCallback(ResumableCallback):
    """Prunes channel groups of the model being trained, following a schedule.

    Args:
        importance: a criterion from :mod:`tfmot_mtl.pruning.importance` (higher = keep).
        schedule: ``schedule(step) -> (should_prune, sparsity)``, e.g. ``IterativeSchedule``
            or tfmot's ``PolynomialDecay`` / ``ConstantSparsity``. ``step`` is the
            optimizer's iteration count before the batch; sparsity is the fraction of the
            selected channels removed.
        scope: ``"global"`` ranks all selected channels together, each group's scores first
            put on the criterion's common scale (its ``normalize``: none for Taylor,
            SecondOrder and CosPrune, as in Garg et al. 2023; the group mean for Magnitude and
            FPGM; see :mod:`tfmot_mtl.pruning.importance`); ``"layer"`` prunes every group to the
            sparsity on its own.
        groups: which groups may be pruned, in the vocabulary of :mod:`tfmot_mtl.selection`
            shared by the three methods: ``"all"`` prunable groups, ``"shared"`` (the shared
            trunk: groups feeding > 1 task), a callable ``ChannelGroup -> bool``, or a list of
            group ids / producer layer names.
        min_channels, min_fraction: the layer floor (:func:`tfmot_mtl.selection.layer_floor`):
            no group keeps fewer than ``max(min_channels, ceil(min_fraction * size))`` channels
            (``min_fraction=None``: 0.25, or with a cost target 0.75 of the share that, kept in
            every group alike, meets the target, set when the model is known; see
            :func:`tfmot_mtl.selection.default_min_fraction`).
        target_macs, target_params: prune to a cost instead of a share of channels: a fraction
            of the dense model's MACs / parameters (e.g. 0.33) or, above 1, an absolute count,
            counted on the model as it will be stripped (:class:`tfmot_mtl.profile.MaskedCost`,
            heads included when selected). The schedule's sparsity then reads as progress:
            at scheduled sparsity ``s`` of a schedule ending at ``S`` the cost is brought to
            ``1 - (s / S) * (1 - target)`` of the dense cost, so the last event lands the
            target. Channels are then ranked by importance per unit of cost (each group's
            scores divided by the cost one of its channels saves, to the power
            ``cost_exponent``). A target below what the selected groups can reach (all at
            their floor) raises a ValueError at set-up with the reachable range.
        cost_exponent: with a cost target, how strongly the ranking favours removing costly
            channels: 1 (default) removes the least importance per MAC, 0 ignores the cost.
            At 1 the few layers that hold most of the MACs (a high-resolution segmentation
            head) go to their floor; 0.5 spreads the cut. On ``benchmarks/own_models.py`` 0.5
            kept MobileNetV2's segmentation within 4.4 mIoU points of the dense model (9.1 at
            1) but lost more on ResNet (10.2 points instead of 6.1) and on average (mean
            Δm -2.7% instead of -1.6%), so 1 stays the default.
        round_to: kept counts are rounded to a multiple (hardware-friendly widths) by
            :func:`tfmot_mtl.masks.round_masks` (ranked by the criterion's scores, never
            bringing back a channel pruned earlier).
        round_mode: ``"nearest"`` (default) rounds every group to its nearest multiple, so
            the realised sparsity may differ from the schedule's (a group of 128 at 70% keeps
            32, 75%); ``"total"`` rounds groups up or down so that the selected channels'
            sparsity stays the schedule's.
        protect: names never pruned (:mod:`tfmot_mtl.selection`). A task name (a model
            output) protects the groups feeding ONLY that task (its head); any other name must
            be a layer, and protects every group with a slice in that layer (the layer keeps
            its shape).
        data: batches ``(x, y)`` for gradient criteria (required by Taylor / CosPrune).
        score_batches: batches drawn from ``data`` at each pruning step.
        accumulate_every: also accumulate one ``data`` batch every N training steps.
        log_dir: write per-group sparsity summaries for TensorBoard there.
        verbose: 1 prints one line per pruning step, 0 is silent.
        masks: initial masks (e.g. to resume); default keeps everything.
        pruned_model: the model whose channels are pruned when it is not the model being
            fitted but a part of it: the student of a
            :class:`~tfmot_mtl.distill.MultiTaskDistiller` or the model inside a
            :class:`~tfmot_mtl.distill.TaskWeightedModel` (prune while distilling). Its
            masks are applied after every update of the fitted model's optimizer. Gradient
            criteria then need their ``losses`` given, as the inner model is not compiled.

    A NaN/Inf loss (any batch) or weight (checked before each pruning step) stops training
    with a ``NonFiniteWarning`` (:mod:`tfmot_mtl.training.nonfinite`); ``masks`` stay the last ones
    computed from finite weights and ``nonfinite`` holds the message.
    """

    def __init__(self, importance: Importance, schedule: Any, scope: str = "global",
                 groups: str | Callable | Iterable[str] = "all", min_channels: int = MIN_CHANNELS,
                 round_to: int | None = None, round_mode: str = "nearest", protect: Iterable[str] = (),
                 data=None, min_fraction: float | None = None, target_macs: float | None = None,
                 target_params: float | None = None, cost_exponent: float = 1.0,
                 score_batches: int = 4, accumulate_every: int | None = None,
                 log_dir: str | None = None, verbose: int = 1, masks: ChannelMasks | None = None,
                 pruned_model: keras.Model | None = None):
        super().__init__()
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
        self.cost_kind, self.cost_target = check_cost_target(target_macs, target_params)
        min_channels, min_fraction = check_floor(min_channels,
                                                 default_min_fraction(min_fraction, self.cost_kind is not None))
        if isinstance(cost_exponent, bool) or not 0.0 <= float(cost_exponent) <= 2.0:
            raise ValueError(f"cost_exponent must be in [0, 2], got {cost_exponent!r}")
        self.cost_exponent = float(cost_exponent)
        if int(score_batches) < 1:
            raise ValueError(f"score_batches must be >= 1, got {score_batches}")
        groups = check_arguments(importance, groups, accumulate_every)
        if getattr(importance, "needs_data", False) and data is None:
            raise ValueError(f"{type(importance).__name__} needs gradients: pass data= (a dataset "
                             "or iterable of (x, y) batches) to draw scoring batches from")
        self.importance, self.schedule = importance, check_schedule(schedule)
        self.scope, self.group_spec = scope, groups
        self.min_channels, self.min_fraction = min_channels, min_fraction
        self.cost: CostGoal | None = None  # with a cost target, once set up
        self.round_to = check_round_to(round_to)
        if round_mode not in PRUNING_ROUND_MODES:
            raise ValueError(f"round_mode must be {' or '.join(map(repr, PRUNING_ROUND_MODES))}, got {round_mode!r}")
        self.round_mode = round_mode
        self.protect = check_protect(protect)
        self.score_batches = int(score_batches)
        self._batches = ScoringBatches(data)
        self.accumulate_every = accumulate_every
        self.log_dir, self.verbose = log_dir, verbose
        self._initial_masks = masks
        self._pruned_model = pruned_model
        self.graph: ChannelGraph | None = None
        self.masks: ChannelMasks | None = masks
        self.history: list[dict] = []
        self._last_step = -1
        self._var_masks: VariableMasks | None = None
        self._logged: tuple[float, int] | None = None
        self._summaries: PruningSummaries | None = None
        self.nonfinite: str | None = None  # the message, once training was stopped on NaN/Inf

    # ------------------------------------------------------------------ config
    def get_config(self) -> dict:
        """The arguments that rebuild this callback with :meth:`from_config` (criterion, schedule,
        selection, floor, targets, rounding), as JSON-able values. The scoring ``data``, initial
        ``masks`` and ``pruned_model`` are objects of a run, not settings, and are left out."""
        if callable(self.group_spec) and not isinstance(self.group_spec, str):
            raise ValueError("ChannelPruningCallback with a callable `groups` cannot be serialized; "
                             "pass a list of group ids instead")
        config = {"importance": {"class_name": type(self.importance).__name__,
                                 "config": self.importance.get_config()},
                  "schedule": keras.saving.serialize_keras_object(self.schedule),
                  "scope": self.scope,
                  "groups": self.group_spec if isinstance(self.group_spec, str) else list(self.group_spec),
                  "min_channels": self.min_channels, "min_fraction": self.min_fraction,
                  "round_to": self.round_to, "round_mode": self.round_mode, "protect": list(self.protect),
                  "cost_exponent": self.cost_exponent, "score_batches": self.score_batches,
                  "accumulate_every": self.accumulate_every, "log_dir": self.log_dir, "verbose": self.verbose}
        if self.cost_kind:
            config[f"target_{self.cost_kind}"] = self.cost_target
        return config

    @classmethod
    def from_config(cls, config: dict, data=None) -> "ChannelPruningCallback":
        """A callback from :meth:`get_config`; ``data``: the scoring batches of a gradient criterion."""
        from tfmot_mtl.pruning import gradient_criteria, importance

        config = dict(config)
        spec = config.pop("importance")
        criterion = getattr(importance, spec["class_name"], None) or getattr(gradient_criteria, spec["class_name"], None)
        if not (isinstance(criterion, type) and issubclass(criterion, Importance)):
            raise ValueError(f"unknown pruning criterion {spec['class_name']!r} in the config")
        schedule = keras.saving.deserialize_keras_object(config.pop("schedule"))
        return cls(criterion(**spec["config"]), schedule, data=data, **config)

    # ------------------------------------------------------------------ setup
    @property
    def data(self):
        """The scoring batches' source (``data=``)."""
        return self._batches.data

    @property
    def net(self) -> keras.Model | None:
        """The model being pruned: ``pruned_model`` if given, else the fitted model."""
        return self._pruned_model if self._pruned_model is not None else self.model

    def on_train_begin(self, logs=None):
        self.nonfinite = None
        check_inner_model(self._pruned_model, self.model, "pruned_model")
        if self.graph is None or self.graph.model is not self.net:
            self.setup(self.net)
        if self._var_masks.install():
            refresh_train_function(self.model)
        self._set_variable_masks()
        super().on_train_begin(logs)

    def setup(self, model: keras.Model) -> None:
        if self.model is None or (self.model is not model and self._pruned_model is None):
            self.set_model(model)
        self.graph = ChannelGraph.of(model)
        self.selected = self._select_groups(self.graph)
        masks = dict(ChannelMasks.all_kept(self.graph, self.min_channels))
        if self._initial_masks is not None:
            masks.update(self._initial_masks)
        self.masks = ChannelMasks(masks, self.min_channels).validate(self.graph)
        if self.cost_kind is not None:
            self._setup_cost()
        total = sum(g.size for g in self.selected)
        if getattr(self.schedule, "count", None) is not None and \
                getattr(self.schedule, "total_channels", 0) is None:
            self.schedule.total_channels = total
        if self.log_dir and (self._summaries is None or self._summaries.log_dir != self.log_dir):
            self._summaries = PruningSummaries(self.log_dir)
        if self._initial_masks is not None:
            apply_masks_(model, self.masks, self.graph)
        if self._var_masks is None or self._var_masks.model is not model:
            if self._var_masks is not None:
                self._var_masks.uninstall()
            self._var_masks = VariableMasks(model, self._candidate_variables(), f"prune_{id(self)}", role="prune")
        self._set_variable_masks()

    def _select_groups(self, graph: ChannelGraph) -> list[ChannelGroup]:
        return select_groups(graph, self.group_spec, self.protect, on_empty="warn",
                             context="ChannelPruningCallback selected no channel group and will prune nothing")

    # --------------------------------------------------------------- training
    def on_train_batch_begin(self, batch, logs=None):
        step = self._step()
        if step == self._last_step:
            return
        self._last_step = step
        every = self.accumulate_every
        if every and self.importance.needs_data and step % int(every) == 0:
            x, y = self._next_batch()
            self.importance.accumulate(self.net, self.graph, x, y)
        should, sparsity = evaluate_schedule(self.schedule, step)
        if should and not self._stopped_on_nonfinite(None, check_weights=True):
            self.prune_to(sparsity, step)

    def on_train_batch_end(self, batch, logs=None):
        if self._stopped_on_nonfinite(logs):
            return
        self._add_logs(logs)

    def on_epoch_end(self, epoch, logs=None):
        self._add_logs(logs)

    def on_train_end(self, logs=None):
        super().on_train_end(logs)
        if self._var_masks is not None:  # the hook stays in the traced step, switched off
            self._var_masks.active.assign(False)
        if self._summaries is not None:
            self._summaries.flush()

    def _stopped_on_nonfinite(self, logs, check_weights: bool = False) -> bool:
        """Stops training (warning) on a NaN/Inf loss, or weights before a pruning step; the
        masks then stay the last ones computed from finite weights."""
        return stop_if_nonfinite(
            self, lambda: nonfinite_loss(logs) or (nonfinite_variables(self.net.weights) if check_weights
                                                   else None),
            "The masks (cb.masks) are the last ones computed from finite weights.")

    def _step(self) -> int:
        optimizer = getattr(self.model, "optimizer", None)
        iterations = getattr(optimizer, "iterations", None)
        return int(iterations.numpy()) if iterations is not None else self._last_step + 1

    def _add_logs(self, logs) -> None:
        if logs is not None and self.graph is not None:
            if self._logged is None:  # masks change only at pruning events
                self._logged = (self.sparsity(), self.pruned_channels())
            logs["channel_sparsity"], logs["pruned_channels"] = self._logged

    # ---------------------------------------------------------------- pruning
    def sparsity(self) -> float:
        """Fraction of the selected channels removed so far."""
        return self.masks.sparsity(self.graph, self.selected) if self.selected else 0.0

    def pruned_channels(self) -> int:
        return sum(int((~self.masks[g.id]).sum()) for g in self.selected)

    def prune_to(self, sparsity: float, step: int | None = None) -> ChannelMasks:
        """Scores the channels now and prunes the selection up to ``sparsity``."""
        if self.graph is None or self.graph.model is not self.net:
            self.setup(self.net)
        problem = nonfinite_variables(self.net.weights)
        if problem:
            raise ValueError(f"prune_to: {problem}; channel scores would be NaN, so the masks are left "
                             "unchanged. Restore finite weights (e.g. from a checkpoint) first.")
        scores = self._scores()
        warn_if_unscored(scores, self.selected, self.importance)
        keep = {g.id: self.masks[g.id].copy() for g in self.selected}
        if self.cost_kind is None:
            remove_lowest(keep, scores, self.selected, sparsity, self.scope, self.min_channels, self.round_to,
                          self.min_fraction)
        else:
            remove_to_cost(keep, self._per_cost(scores), self.selected, self._cost_share, self.cost_goal(sparsity),
                           self.scope, self.min_channels, self.round_to, self.min_fraction)
        if self.round_to:  # never brings back a channel pruned before this step
            keep = dict(round_masks(self.graph, ChannelMasks(keep, self.min_channels), self.round_to,
                                    mode=self.round_mode, scores=scores, previous=self.masks))
        masks = dict(self.masks)
        masks.update(keep)
        self.masks = ChannelMasks(masks, self.min_channels)
        apply_masks_(self.net, self.masks, self.graph)
        self._set_variable_masks()
        self._report(sparsity, step)
        return self.masks

    # ------------------------------------------------------------------ cost target
    def _setup_cost(self) -> None:
        self.cost = CostGoal(self.graph, self.selected, self.cost_kind, self.cost_target, self.min_channels,
                             self.min_fraction, self.round_to, self.group_spec)
        self.min_fraction = self.cost.min_fraction  # None until now: the floor the target sets

    def _cost_share(self, keep) -> float:
        return self.cost.share({**dict(self.masks), **keep})

    def _per_cost(self, scores: dict) -> dict:
        """Scores per unit of cost (:func:`tfmot_mtl.pruning.cost.per_cost`)."""
        return per_cost(scores, self.selected, self.cost.share, self.masks, self.cost_exponent)

    def cost_goal(self, sparsity: float) -> float:
        """The cost share to prune to at scheduled ``sparsity`` (see ``target_macs``)."""
        return self.cost.goal(sparsity, self.schedule)

    def reached(self) -> dict:
        """Params and MACs of the model as it would be stripped now, as counts and shares of
        the dense model's (a :class:`~tfmot_mtl.profile.MaskedCost` of the current masks)."""
        from tfmot_mtl.profile import MaskedCost

        cost = self.cost.model if self.cost is not None else MaskedCost(self.graph)
        params, macs = cost(self.masks)
        return {"params": params, "macs": macs, "params_share": params / max(1, cost.dense_params),
                "macs_share": macs / max(1, cost.dense_macs)}

    def groups_at_floor(self) -> list[str]:
        """Selected groups pruned down to their layer floor."""
        return [g.id for g in self.selected if g.size > min_keep(g.size, self.min_channels, self.round_to,
                                                                 self.min_fraction)
                and int(self.masks[g.id].sum()) <= min_keep(g.size, self.min_channels, self.round_to,
                                                            self.min_fraction)]

    def _scores(self) -> dict[str, np.ndarray]:
        imp = self.importance
        if imp.needs_data:
            for _ in range(self.score_batches):
                x, y = self._next_batch()
                imp.accumulate(self.net, self.graph, x, y)
        scores = imp(self.net, self.graph)
        imp.reset()
        # Each worker scored on its own batches: rank the workers' mean so masks agree.
        scores = mean_across_workers(scores, getattr(self.model, "distribute_strategy", None))
        return normalize_scores(scores, getattr(imp, "normalize", None))  # the criterion's scale across groups

    def _candidate_variables(self) -> list:
        """Every variable a mask of the selected (or initially pruned) groups can touch."""
        groups = {g.id for g in self.selected} | {gid for gid, m in self.masks.items() if not m.all()}
        return maskable_variables(self.graph, groups)

    def _set_variable_masks(self) -> None:
        """Assigns the in-graph mask variables from ``masks`` (host, at pruning events only)."""
        self._logged = None
        if self._var_masks is not None:
            self._var_masks.set({id(var): m for var, m in variable_multipliers(self.graph, self.masks)})

    def _next_batch(self):
        return self._batches.next()

    # ------------------------------------------------------------------ state
    # Besides masks, history and the last step, the state holds what decides the NEXT pruning
    # steps: the position in the scoring ``data`` (batches drawn in the current pass) and the
    # criterion's own state (a gradient criterion's running sums, a random generator). With
    # the same ``data`` a resumed run draws and scores exactly what the uninterrupted run would.
    state_kind = "ChannelPruningCallback"

    def _state_ready(self) -> bool:
        return self.graph is not None and (self.net is None or self.graph.model is self.net)

    def _selected_groups(self) -> list[list]:
        return [[g.id, int(g.size)] for g in self.selected]

    def _read_state(self) -> dict:
        """Masks, selected groups, history, last step, data position and criterion state."""
        masks = self.masks
        return {"selected": self._selected_groups() if self.graph is not None else None,
                "masks": None if masks is None else json.loads(ChannelMasks(masks, self.min_channels).to_json()),
                "history": jsonable(self.history), "last_step": int(self._last_step),
                "data_position": self._batches.position,
                "importance": jsonable(self.importance.get_state())}

    def _write_state(self, state: dict) -> None:
        """Validates the state against the set-up callback and applies its masks to the model."""
        check_groups(self.state_kind, state["selected"], self._selected_groups(), "groups=/protect=")
        if state["masks"] is not None:
            masks = ChannelMasks.from_json(json.dumps(state["masks"]))
            try:
                masks = masks.validate(self.graph)
            except ValueError as err:
                raise ValueError(f"ChannelPruningCallback state does not fit this model: {err}") from None
            self.masks = ChannelMasks({**ChannelMasks.all_kept(self.graph, self.min_channels), **masks},
                                      self.min_channels)
            apply_masks_(self.graph.model, self.masks, self.graph)
            self._set_variable_masks()
        self.history = [dict(h) for h in state["history"]]
        self._last_step = int(state["last_step"])
        self.importance.set_state(state.get("importance") or {})
        self._batches.restart_at(int(state.get("data_position") or 0))

    def _report(self, target: float, step: int | None) -> None:
        per_group = {g.id: float((~self.masks[g.id]).mean()) for g in self.selected}
        entry = {"step": step, "target": float(target), "sparsity": self.sparsity(),
                 "pruned": self.pruned_channels(), "total": sum(g.size for g in self.selected),
                 "per_group": per_group}
        self.history.append(entry)
        if self.verbose:
            print(f"\n[ChannelPruning] step {step}: sparsity {entry['sparsity']:.3f} "
                  f"(scheduled {target:.3f}), pruned {entry['pruned']}/{entry['total']} channels "
                  f"in {len(self.selected)} groups ({type(self.importance).__name__})")
        if self._summaries is not None and step is not None:
            self._summaries.write(step, entry["sparsity"], entry["pruned"], per_group)
