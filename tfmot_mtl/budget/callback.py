"""BudgetCallback: keeps each domain's switches within a budget and pushes domains to share.

During ``fit`` the budget penalty and the sharing loss are part of the training loss, inside
the compiled train step (:mod:`tfmot_mtl.budget.graph_terms`):

    loss = task losses + k · N · (P + γ·S)                    (every `frequency`-th batch)
    λ_d ← λ_d + multiplier_lr · max(0, usage_d − β)          (after the update, while violated)

with P the budget penalty and S the sharing loss of `budget.losses` (STE gradients), N the
number of switch channels, γ `sharing_weight` and k = `lr` / the optimizer's learning rate
(1 when `lr` is None). With SGD this is the former penalty step ŝ ← ŝ − lr · N · ∂(P + γ·S)/∂ŝ
taken together with the task step; with Adam the terms share the normalised update, so a
switch goes off once λ_d outweighs its task gradient. P and S are logged as
``budget_penalty`` and ``sharing_loss``; ``loss`` includes them. λ_d only grows, so once a
domain has been pushed under its budget any new violation is corrected at once. The host
step :meth:`BudgetCallback.step` (numpy, `budget.losses`) is the reference of one penalty step.

Projection (``project=True``): at the end of training the switches of a domain still over
budget are turned off until it is within budget; with ``anneal=True`` this also happens at
the end of every epoch against a budget falling linearly from 1 to β over the epochs, so
the network adapts to the removed channels gradually, and the penalty and the multipliers
aim at the epoch's annealed budget in place of β (`epoch_budget`). With ``align`` (the default when a
sharing loss is set) every domain turns channels off in one common order, by the domains'
summed latents: the domains then keep nested subsets of the same channels and the union
mask, hence the stripped model, is about as small as one domain's share (the STE sharing
gradients alone barely align domains whose switches all start on: every sharing loss is at
its minimum there).
"""
from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfmot_mtl.training import ingraph
from tfmot_mtl.budget import losses
from tfmot_mtl.budget.graph_terms import BudgetTerms, TermSettings
from tfmot_mtl.budget.switch import switch_infos, union_masks
from tfmot_mtl.training.callbacks import ResumableCallback
from tfmot_mtl.utils.jsonable import jsonable
from tfmot_mtl.training.nonfinite import nonfinite_loss, stop_if_nonfinite


@keras.saving.register_keras_serializable(package="tfmot_mtl")
class BudgetCallback(ResumableCallback):
    """Budget-aware training of the DomainSwitch latents of a multi-domain model.

    Args:
        budget: β in (0, 1], the fraction of channels (or MACs) each domain may keep on.
        sharing: None, "intersection", "union" or "jaccard" (see `budget.losses`).
        sharing_weight: γ, the weight of the sharing loss.
        measure: "channels" (each switch counts 1) or "macs" (each switch counts its MACs).
        multiplier_lr: step of the multipliers λ_d.
        lr: step of the penalty update of the latents (None: the optimizer's learning rate).
        project: enforce the budget exactly at the end of training.
        anneal: also project at every epoch end onto a budget falling linearly to β.
        align: project in one order common to all domains (None: True iff `sharing`).
        balance: project in the order of each latent's rank inside its own switch, so every
            layer keeps about the budget's share of its channels (`losses.project_to_budget`).
        input_shape: per-example image shape for the MAC measure when the model's is unknown.
        frequency: apply the penalty step every `frequency` batches.

    Attributes: ``lambdas`` (D,), ``history`` (one dict per epoch: usage, lambdas, losses).

    A NaN/Inf loss or switch latent stops training with a ``NonFiniteWarning``
    (:mod:`tfmot_mtl.training.nonfinite`) after restoring the latents of the last finite batch;
    ``nonfinite`` holds the message.
    """

    def __init__(self, budget: float = 0.5, sharing: str | None = None, sharing_weight: float = 1.0,
                 measure: str = "channels", multiplier_lr: float = 0.05, lr: float | None = None,
                 project: bool = True, input_shape: Any = None, frequency: int = 1,
                 anneal: bool = False, align: bool | None = None, balance: bool = False):
        super().__init__()
        self.budget = losses.check_budget(budget)
        self.sharing = losses.check_sharing(sharing)
        if measure not in losses.MEASURES:
            raise ValueError(f"measure must be one of {losses.MEASURES}, got {measure!r}")
        for arg, value in (("sharing_weight", sharing_weight), ("multiplier_lr", multiplier_lr),
                           ("lr", 0.0 if lr is None else lr)):
            if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or \
                    not (0 <= value < np.inf):
                raise ValueError(f"{arg} must be a finite number >= 0, got {value!r}")
        if not isinstance(frequency, int) or frequency < 1:
            raise ValueError(f"frequency must be a positive int, got {frequency!r}")
        self.sharing_weight, self.measure = float(sharing_weight), measure
        self.multiplier_lr, self.project = float(multiplier_lr), bool(project)
        self.lr = None if lr is None else float(lr)
        self.input_shape, self.frequency = input_shape, frequency
        self.anneal = bool(anneal)
        self.align = bool(self.sharing) if align is None else bool(align)
        self.balance = bool(balance)
        self._lambdas: np.ndarray | None = None
        self.history: list[dict] = []
        self._infos: list = []
        self.graph = None  # the ChannelGraph of the model, once attached
        self._terms: BudgetTerms | None = None
        self._step = 0

    @property
    def masks(self):
        """The :class:`~tfmot_mtl.masks.ChannelMasks` (True = keep) of the channels some domain
        uses (:func:`~tfmot_mtl.budget.union_masks`: what ``strip_channels`` may remove), the
        contract the three methods share. None before the callback has seen a model."""
        if self.graph is None:
            return None
        return union_masks(self.graph.source, graph=self.graph)

    @property
    def lambdas(self) -> np.ndarray | None:
        """(D,) the budget multipliers λ_d."""
        if self._terms is not None and self._terms.enabled.numpy():
            return np.asarray(self._terms.lambdas.numpy(), np.float64)
        return self._lambdas

    @lambdas.setter
    def lambdas(self, value) -> None:
        self._lambdas = None if value is None else np.asarray(value, np.float64)
        if self._terms is not None and value is not None and len(value) == self._terms.num_domains:
            self._terms.lambdas.assign(self._lambdas)

    # ------------------------------------------------------------------ state
    def attach(self, model) -> None:
        """Reads the model's switches (called at the start of training)."""
        from tfmot_mtl.graph import ChannelGraph

        self.graph = ChannelGraph.of(model)
        self._infos = switch_infos(model, self.measure, self.input_shape, graph=self.graph)
        if not self._infos:
            raise ValueError(f"BudgetCallback: model '{model.name}' has no DomainSwitch of a prunable group; "
                             "build it with budget.add_domain_switches.")
        num_domains = self._infos[0].layer.num_domains
        if self.lambdas is None or len(self.lambdas) != num_domains:
            self.lambdas = np.zeros(num_domains)
        bad = [i.layer.name for i, x in zip(self._infos, self._latents()) if not np.isfinite(x).all()]
        if bad:
            raise ValueError(f"BudgetCallback: the switch latents of {bad} hold NaN/Inf, so the switch "
                             "states are undefined; restore them from a checkpoint first.")

    def _latents(self) -> list[np.ndarray]:
        return [np.asarray(keras.ops.convert_to_numpy(i.layer.latent), np.float64) for i in self._infos]

    def _assign(self, latents: list[np.ndarray]) -> None:
        for info, value in zip(self._infos, latents):
            info.layer.latent.assign(np.clip(value, -info.layer.clip, info.layer.clip).astype("float32"))

    def _args(self):
        return [i.cost for i in self._infos], [i.domains for i in self._infos]

    def usage(self) -> np.ndarray:
        """(D,) fraction of channels (or MACs) each domain currently uses."""
        costs, served = self._args()
        switches = [(x > 0).astype(np.float64) for x in self._latents()]
        return losses.usage(switches, costs, served, len(self.lambdas))

    def penalties(self) -> dict[str, float]:
        """Current budget penalty and sharing loss."""
        costs, served = self._args()
        switches = [(x > 0).astype(np.float64) for x in self._latents()]
        u = losses.usage(switches, costs, served, len(self.lambdas))
        out = {"budget_penalty": losses.budget_penalty(u, self.budget, self.lambdas)}
        if self.sharing:
            out["sharing_loss"] = losses.sharing_loss(switches, self.sharing, costs, served)
        return out

    # ------------------------------------------------------------ the step
    def step(self) -> np.ndarray:
        """One multiplier update and one penalty step on the latents; returns the usage before it."""
        costs, served = self._args()
        latents = self._latents()
        switches = [(x > 0).astype(np.float64) for x in latents]
        u = losses.usage(switches, costs, served, len(self.lambdas))
        self.lambdas = self.lambdas + self.multiplier_lr * np.maximum(0.0, u - self.budget)
        grads = losses.budget_grads(u, self.budget, self.lambdas, switches, costs, served)
        if self.sharing and self.sharing_weight:
            share = losses.sharing_grads(switches, self.sharing, costs, served)
            grads = [g + self.sharing_weight * s for g, s in zip(grads, share)]
        scale = self._lr() * sum(len(c) for c in costs)
        self._assign([x - scale * g for x, g in zip(latents, grads)])
        return u

    def _lr(self) -> float:
        if self.lr is not None:
            return self.lr
        optimizer = getattr(getattr(self, "model", None), "optimizer", None)
        rate = getattr(optimizer, "learning_rate", None)
        if rate is None:
            return 1e-3
        return float(keras.ops.convert_to_numpy(rate(optimizer.iterations) if callable(rate) else rate))

    def enforce(self, budget: float | None = None) -> None:
        """Projects every domain onto `budget` (default β); see `losses.project_to_budget`."""
        costs, served = self._args()
        target = self.budget if budget is None else budget
        self._assign(losses.project_to_budget(self._latents(), costs, served, target, align=self.align,
                                                  balance=self.balance))

    def epoch_budget(self, epoch: int) -> float:
        """The budget the penalty and the multipliers aim at during `epoch`: the annealed one
        when annealing (so the multipliers do not grow against a budget the projection
        reaches only later, which made every switch fall off together), else β."""
        return self.annealed_budget(epoch) if self.anneal and self.project else self.budget

    def _term_settings(self) -> TermSettings:
        return TermSettings(self.budget, self.frequency, self.sharing, self.sharing_weight, self.multiplier_lr)

    def annealed_budget(self, epoch: int) -> float:
        """The budget projected on at the end of `epoch` when annealing (β at the last epoch)."""
        epochs = max(1, int((getattr(self, "params", None) or {}).get("epochs") or 1))
        return max(self.budget, 1.0 - (1.0 - self.budget) * (epoch + 1) / epochs)

    # ------------------------------------------------------------ Keras hooks
    def on_train_begin(self, logs=None):
        self.nonfinite = None
        self.attach(self.model)
        lambdas = self.lambdas
        if self._terms is None or self._terms.latents[0] is not self._infos[0].layer.latent:
            self._terms = BudgetTerms(self.model, self._infos, *self._args(), self._term_settings())
        terms = self._terms
        terms.settings = self._term_settings()
        for good, info in zip(terms.good, self._infos):
            good.assign(info.layer.latent.value)
        terms.weight.assign(sum(len(c) for c in terms.costs) * self._loss_scale())
        terms.enabled.assign(True)
        self.lambdas = lambdas
        self._step = 0
        terms.counter.assign(0)
        if terms.install():
            ingraph.refresh_train_function(self.model)
        super().on_train_begin(logs)

    def _loss_scale(self) -> float:
        """k = lr / the optimizer's learning rate (1 without `lr`)."""
        if self.lr is None:
            return 1.0
        rate = getattr(getattr(self.model, "optimizer", None), "learning_rate", None)
        rate = float(keras.ops.convert_to_numpy(rate)) if rate is not None else 0.0
        return self.lr / rate if rate > 0 else 1.0

    def on_train_batch_end(self, batch, logs=None):
        if self._stopped_on_nonfinite(logs):
            return
        self._step += 1  # the graph counter (terms.counter) counts the same batches
        self._add_logs(logs)

    def _add_logs(self, logs, host: bool = False) -> None:
        """The last batch's budget penalty and sharing loss: device snapshots per batch,
        floats at the epoch end."""
        if logs is not None and self._terms is not None:
            read = (lambda v: float(v.numpy())) if host else (lambda v: tf.identity(v.value))
            logs["budget_penalty"] = read(self._terms.penalty)
            if self.sharing:
                logs["sharing_loss"] = read(self._terms.sharing)

    def _stopped_on_nonfinite(self, logs) -> bool:
        """Stops training (warning) on a NaN/Inf loss or switch latent, after restoring the
        latents of the last finite batch: the switches never come from NaN values."""
        def problem():
            flags = ingraph.finite_flags([i.layer.latent for i in self._infos])
            bad = [i.layer.name for i, ok in zip(self._infos, flags) if not ok]
            return f"the switch latents of {bad} hold NaN/Inf values" if bad else nonfinite_loss(logs)

        def restore():  # on the device: the copy the graph kept of the last finite latents
            if self._terms is not None:
                for good, info in zip(self._terms.good, self._infos):
                    info.layer.latent.assign(good.value)

        return stop_if_nonfinite(self, problem, "The switch latents were restored to those of the last "
                                 "finite batch.", restore)

    def on_epoch_begin(self, epoch, logs=None):
        if self._terms is not None:
            self._terms.target.assign(self.epoch_budget(epoch))

    def on_epoch_end(self, epoch, logs=None):
        if self.anneal and self.project:
            self.enforce(self.annealed_budget(epoch))
        u = self.usage()
        record = {"epoch": epoch, "usage": u.tolist(), "lambdas": self.lambdas.tolist(), **self.penalties()}
        self.history.append(record)
        if logs is not None:
            logs.update({f"usage_{d}": float(x) for d, x in enumerate(u)})
            self._add_logs(logs, host=True)

    def on_train_end(self, logs=None):
        super().on_train_end(logs)
        if self._terms is not None:  # the terms stay in the traced step, switched off
            self._lambdas = self.lambdas
            self._terms.enabled.assign(False)
        if self.project:
            self.enforce()

    # ------------------------------------------------------------ resumable state
    state_kind = "BudgetCallback"

    def _state_ready(self) -> bool:
        return bool(self._infos)

    def _read_state(self) -> dict[str, Any]:
        """Multipliers, batch counter, history, switch shapes (the switch latents are model
        weights and travel with the model)."""
        return {"switches": self._switch_shapes() or None,
                "lambdas": None if self.lambdas is None else [float(v) for v in self.lambdas],
                "step": int(self._step), "history": jsonable(self.history)}

    def _switch_shapes(self) -> list:
        return [[i.layer.name, *map(int, i.layer.latent.shape)] for i in self._infos]

    def _write_state(self, state: dict[str, Any]) -> None:
        if state["switches"] is not None and state["switches"] != self._switch_shapes():
            raise ValueError(f"BudgetCallback state was saved for the switches (name, domains, "
                             f"channels) {state['switches']}; this model has {self._switch_shapes()}. "
                             "Restore it into the same multi-domain model.")
        lambdas = state["lambdas"]
        if lambdas is not None and len(lambdas) != len(self.lambdas):
            raise ValueError(f"BudgetCallback state has {len(lambdas)} multipliers; the model has "
                             f"{len(self.lambdas)} domains")
        if lambdas is not None:
            self.lambdas = np.asarray(lambdas, np.float64)
        self._step = int(state["step"])
        if self._terms is not None:
            self._terms.counter.assign(self._step)
        self.history = [dict(h) for h in state["history"]]

    def get_config(self) -> dict[str, Any]:
        return {"budget": self.budget, "sharing": self.sharing, "sharing_weight": self.sharing_weight,
                "measure": self.measure, "multiplier_lr": self.multiplier_lr, "lr": self.lr,
                "project": self.project, "input_shape": self.input_shape, "frequency": self.frequency,
                "anneal": self.anneal, "align": self.align,
                "balance": self.balance}

    @classmethod
    def from_config(cls, config: dict) -> "BudgetCallback":
        return cls(**config)
