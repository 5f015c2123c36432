"""The budget penalty and sharing losses as graph ops, added to the training loss.

Graph twins of :mod:`tfmot_mtl.budget.losses` (which stays the numpy reference): the switches
are the STE-binarised latents (value 1[ŝ > 0], identity gradient), so autodiff of these terms
gives exactly ``losses.budget_grads`` / ``losses.sharing_grads``.

:class:`BudgetTerms` puts ``N · (P + γ·S)`` (N: number of switch channels, as in the former
penalty step ``lr · N · ∂/∂ŝ``) into the model's loss through the ``regularizer`` of one
switch latent (Keras adds every trainable weight's regularizer to ``model.losses``, which the
train step adds to the loss), so the reported ``loss`` includes it and its gradient goes
through the compiled optimizer with the task gradients. After each update a hook
(:mod:`tfmot_mtl.training.ingraph`) raises the multipliers ``λ_d += multiplier_lr · max(0, usage_d − β)``
; the loss keeps a copy of the latents the previous batch left while they are finite (what
a NaN/Inf stop restores). Everything stays on the device.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from tfmot_mtl.budget.switch import binarize_ste
from tfmot_mtl.training.ingraph import add_post_update_hook, new_variable

F32 = tf.float32


def usage(switches, costs, served, num_domains: int):
    """(D,) cost-weighted fraction of switches on per domain (graph version of ``losses.usage``)."""
    on = [tf.zeros([], F32)] * num_domains
    total = [0.0] * num_domains
    for s, w, doms in zip(switches, costs, served):
        wt = tf.constant(np.asarray(w, np.float32))
        for d in doms:
            on[d] = on[d] + tf.reduce_sum(wt * s[d])
            total[d] += float(np.sum(w))
    return tf.stack([o / t if t > 0 else tf.zeros([], F32) for o, t in zip(on, total)])


def budget_penalty(u, budget: float, lambdas):
    """Σ_d λ_d · max(0, usage_d − β)."""
    return tf.reduce_sum(tf.cast(lambdas, F32) * tf.maximum(0.0, u - budget))


def _product(rows):
    """The elementwise product of ``rows`` as a chain of multiplies (``tf.reduce_prod``'s gradient
    computes a permutation with an op that only runs on the host)."""
    out = rows[0]
    for row in rows[1:]:
        out = out * row
    return out


def sharing_loss(switches, kind: str, costs, served):
    """The sharing loss ``kind`` of ``losses.sharing_loss`` over the switches serving ≥ 2 domains."""
    inter = union = mean = tf.zeros([], F32)
    weight = 0.0
    for s, w, doms in zip(switches, costs, served):
        if len(doms) < 2:
            continue
        wt = tf.constant(np.asarray(w, np.float32))
        sd = tf.gather(s, doms)
        rows = tf.unstack(sd)
        inter += tf.reduce_sum(wt * _product(rows))
        union += tf.reduce_sum(wt * (1.0 - _product([1.0 - r for r in rows])))
        mean += tf.reduce_mean(tf.linalg.matvec(sd, wt))
        weight += float(np.sum(w))
    if not weight:
        return tf.zeros([], F32)
    if kind == "intersection":
        return (mean - inter) / weight
    if kind == "union":
        return union / weight
    safe = tf.where(union > 0, union, tf.ones_like(union))
    return tf.where(union > 0, 1.0 - inter / safe, tf.zeros_like(union))


@dataclass(frozen=True)
class TermSettings:
    """The settings of a BudgetCallback that its graph terms use (read when the train step is traced)."""

    budget: float
    frequency: int
    sharing: Any
    sharing_weight: float
    multiplier_lr: float


class BudgetTerms:
    """Graph state of a BudgetCallback: multipliers, batch counter, logged values, last finite latents."""

    def __init__(self, model, infos: list, costs: list, served: list, settings: TermSettings):
        """``infos`` are the callback's switches (``switch_infos``), ``costs`` / ``served`` their
        per-channel costs and served domains; the callback renews ``settings`` before each fit."""
        self.settings, self.infos = settings, infos
        self.latents = [i.layer.latent for i in self.infos]
        self.costs, self.served = costs, served
        self.num_domains = self.infos[0].layer.num_domains
        self.lambdas = new_variable(model, np.zeros(self.num_domains), "float64", "budget_lambdas")
        self.counter = new_variable(model, 0, "int64", "budget_counter")
        self.weight = new_variable(model, 1.0, "float32", "budget_loss_weight")
        self.enabled = new_variable(model, False, "bool", "budget_enabled")
        self.penalty = new_variable(model, 0.0, "float32", "budget_penalty")
        self.sharing = new_variable(model, 0.0, "float32", "sharing_loss")
        self.target = new_variable(model, settings.budget, "float64", "budget_target")  # the epoch's budget
        self.good = [new_variable(model, np.asarray(v.numpy()), "float32", f"budget_good_{i}")
                     for i, v in enumerate(self.latents)]
        self.anchor = self.latents[-1]
        self.installed = False

    def _due(self):
        return tf.logical_and(self.enabled.value, (self.counter.value + 1) % self.settings.frequency == 0)

    def loss(self, *_):
        """``N · (P + γ·S)`` on the batches where the penalty step is due (a regularizer); also
        records the values for the logs and a copy of the (finite) latents."""
        switches = [binarize_ste(tf.convert_to_tensor(v)) for v in self.latents]
        u = usage(switches, self.costs, self.served, self.num_domains)
        pen = budget_penalty(u, tf.cast(self.target.value, u.dtype), self.lambdas.value)
        share = sharing_loss(switches, self.settings.sharing, self.costs, self.served) if self.settings.sharing \
            else tf.zeros([], F32)
        self.penalty.assign(tf.stop_gradient(pen))
        self.sharing.assign(tf.stop_gradient(share))
        # The forward pass sees the latents the previous batch left: keep them while finite.
        finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(v.value)) for v in self.latents])
        for good, v in zip(self.good, self.latents):
            good.assign(tf.where(finite, v.value, good.value))
        total = pen + self.settings.sharing_weight * share if self.settings.sharing_weight else pen
        return tf.where(self._due(), self.weight.value * total, tf.zeros_like(total))

    def after_update(self) -> None:
        """Multiplier ascent (when due) and the batch counter."""
        switches = [tf.cast(v.value > 0, F32) for v in self.latents]
        u = tf.cast(usage(switches, self.costs, self.served, self.num_domains), tf.float64)
        step = self.settings.multiplier_lr * tf.maximum(tf.constant(0.0, tf.float64), u - self.target.value)
        due = self._due()
        self.lambdas.assign(tf.where(due, self.lambdas.value + step, self.lambdas.value))
        self.counter.assign_add(tf.where(self.enabled.value, tf.constant(1, tf.int64), tf.constant(0, tf.int64)))

    def install(self) -> bool:
        """Sets the loss term and the post-update hook; True when newly installed."""
        if self.installed:
            return False
        self.anchor.regularizer = self.loss
        add_post_update_hook(self.anchor, f"budget_{id(self)}", self.after_update)
        self.installed = True
        return True
