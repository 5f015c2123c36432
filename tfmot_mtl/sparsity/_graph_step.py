"""The proximal step of ProximalGroupLasso as graph ops, run after each optimizer update.

Built from the callback's plan (entries, channel groups, lambda, scale); its state (gain,
last step, locked and zero patterns, the strength of callable schedules) lives in
non-trainable variables, so the whole step runs inside the compiled train function
(:mod:`tfmot_mtl.ingraph`), under ``jit_compile=True`` and on a GPU without host transfers.
The math is that of :mod:`tfmot_mtl.sparsity.prox_ops` (``prox_graph`` is its graph twin).
"""
from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from tfmot_mtl import _keras_compat
from tfmot_mtl.ingraph import new_variable
from tfmot_mtl.sparsity import prox_graph

F64 = tf.float64


class ProxStep:
    """Graph state and step of one ProximalGroupLasso plan on one model."""

    def __init__(self, cb, model, optimizer):
        self.cb, self.optimizer = cb, optimizer
        n = cb.num_channels
        self.n = n
        self.group = tf.constant(np.concatenate([e.elements for e in cb.entries]).astype(np.int32)
                                 if cb.entries else np.zeros(0, np.int32))
        self.entries = [(cb.variables[e.var], e.axis, tf.constant(np.asarray(e.positions, np.int32)[:, None]),
                         tf.constant(np.asarray(e.positions, np.int32))) for e in cb.entries]
        self.base_tau = tf.constant(np.asarray(cb._lambda * cb._scale, np.float64))
        self.protect = []
        for i, _ in enumerate(cb.groups):
            idx = np.flatnonzero(cb._channel_group == i)
            k = min(len(idx), max(cb.min_channels, int(math.ceil(cb.min_fraction * len(idx)))))
            if k:
                self.protect.append((tf.constant(idx.astype(np.int32)), k))
        self.dynamic = callable(cb.l1) or callable(cb.schedule)
        go, lam = (True, 1.0) if self.dynamic else cb.strength(0)
        self.go = new_variable(model, go, "bool", "prox_go")
        self.lam = new_variable(model, lam, "float64", "prox_lam")
        self.gain = new_variable(model, cb._gain0, "float64", "prox_gain")
        self.last_step = new_variable(model, -1, "int64", "prox_last_step")
        self.locked_flag = new_variable(model, False, "bool", "prox_locked_flag")
        self.locked = new_variable(model, np.zeros(n, bool), "bool", "prox_locked")
        self.zero = new_variable(model, np.zeros(n, bool), "bool", "prox_zero")
        self.sparsity = new_variable(model, 0.0, "float32", "prox_sparsity")
        self.enabled = new_variable(model, True, "bool", "prox_enabled")
        self.moments = None
        if cb.mode == "adam":
            self.moments = [_keras_compat.adam_second_moment(optimizer, var) for var, *_ in self.entries]

    # ---------------------------------------------------------------- graph
    def _gather(self, value, axis, pos):
        moved = tf.experimental.numpy.moveaxis(value, axis, 0)
        return tf.reshape(tf.gather(moved, pos, axis=0), [-1])

    def _protected(self, flat):
        if not self.protect:
            return tf.zeros([self.n], tf.bool)
        norms = prox_graph.group_sums(tf.cast(flat, F64) ** 2, self.group, self.n)
        keep = tf.zeros([self.n], tf.bool)
        for idx, k in self.protect:
            top = tf.gather(idx, tf.math.top_k(tf.gather(norms, idx), k).indices)
            keep = tf.tensor_scatter_nd_update(keep, top[:, None], tf.ones([k], tf.bool))
        return keep

    def __call__(self) -> None:
        """Graph ops of one (possibly skipped) proximal step."""
        self._run_if_due(tf.cast(self.optimizer.iterations, tf.int64) + 1, self.cb.update_every)

    def _run_if_due(self, step, at_least: int) -> None:
        """The step for update number ``step`` when ``at_least`` updates passed since the last one."""
        if not self.entries:
            return
        last = self.last_step.value
        elapsed = tf.where(last >= 0, step - last, tf.ones_like(step))
        due = tf.logical_and(elapsed >= at_least, self.enabled.value)
        tf.cond(due, lambda: self._run(step, elapsed), lambda: tf.constant(False))

    def flush(self) -> None:
        """Graph ops: a proximal step now for the updates since the last one (with
        ``update_every > 1``, so the weights seen between steps carry exact zeros)."""
        self._run_if_due(tf.cast(self.optimizer.iterations, tf.int64), 1)  # the last update's number

    def flush_now(self) -> None:
        """Runs :meth:`flush` (one compiled function, made on first use)."""
        if getattr(self, "_flush_fn", None) is None:
            self._flush_fn = tf.function(self.flush)
        self._flush_fn()

    def _run(self, step, elapsed):
        self.last_step.assign(step)
        return tf.cond(self.go.value, lambda: self._prox(step, elapsed), lambda: tf.constant(False))

    def _prox(self, step, elapsed):
        opt = self.optimizer
        values = [var.value for var, *_ in self.entries]
        blocks = [self._gather(v, axis, pos) for v, (_, axis, _, pos) in zip(values, self.entries)]
        flat = tf.concat(blocks, 0)
        lr = tf.cast(opt.learning_rate, F64)
        tau = lr * self.lam.value * self.gain.value * tf.cast(elapsed, F64) * self.base_tau
        locked = self.locked_flag.value

        def when_locked():
            t = tf.where(self.locked.value, tf.constant(np.inf, F64), tf.zeros([self.n], F64))
            return prox_graph.prox_plain(flat, self.group, t)

        def when_free():
            t = tf.where(self._protected(flat), tf.zeros_like(tau), tau)
            if self.moments is None:
                return prox_graph.prox_plain(flat, self.group, t)
            correction = 1.0 - tf.cast(opt.beta_2, F64) ** tf.cast(tf.maximum(step, 1), F64)
            d = tf.concat([tf.sqrt(tf.cast(self._gather(m.value, axis, pos), F64) / correction)
                           + float(opt.epsilon) for m, (_, axis, _, pos) in zip(self.moments, self.entries)], 0)
            return prox_graph.prox_adam(flat, d, self.group, t)

        new = tf.cond(locked, when_locked, when_free)
        finite = tf.reduce_all(tf.math.is_finite(flat))
        return tf.cond(finite, lambda: self._write(new, values, locked), lambda: tf.constant(False))

    def _write(self, new, values, locked):
        zero = prox_graph.group_sums(tf.cast(new, F64) ** 2, self.group, self.n) == 0
        self.zero.assign(zero)
        fraction = tf.reduce_mean(tf.cast(zero, F64)) if self.n else tf.constant(0.0, F64)
        self.sparsity.assign(tf.cast(fraction, tf.float32))
        if self.cb.target is not None:
            reached = tf.logical_and(tf.logical_not(locked), fraction >= self.cb.target)
            self.locked.assign(tf.where(reached, zero, self.locked.value))
            self.locked_flag.assign(tf.logical_or(locked, reached))
            grow = tf.logical_and(tf.logical_not(locked), tf.logical_not(reached))
            self.gain.assign(tf.where(grow, self.gain.value * (1 + self.cb.adapt_rate), self.gain.value))
        start = 0
        current = {}
        for (var, axis, pos2, pos), v in zip(self.entries, values):
            size = int(np.prod(v.shape)) // int(v.shape[axis]) * int(pos.shape[0])
            part = new[start:start + size]
            start += size
            moved = current.get(id(var))
            if moved is None:
                moved = tf.experimental.numpy.moveaxis(v, axis, 0)
            else:
                moved = tf.experimental.numpy.moveaxis(moved[1], axis, 0)
            shape = [int(pos.shape[0])] + [int(s) for s in moved.shape[1:]]
            moved = tf.tensor_scatter_nd_update(moved, pos2, tf.reshape(tf.cast(part, v.dtype), shape))
            current[id(var)] = (var, tf.experimental.numpy.moveaxis(moved, 0, axis))
        for var, value in current.values():
            var.assign(value)
        return tf.constant(True)


class GraphState:
    """ProximalGroupLasso's step state (gain, locked and zero patterns, last step) as
    properties over the graph variables of its :class:`ProxStep` (plain values before one exists)."""

    def _var(self, name: str):
        return getattr(self._step_graph, name) if self._step_graph is not None else None

    @property
    def gain(self) -> float:
        """The current multiplier of lambda (grows while below ``target``)."""
        var = self._var("gain")
        return self._gain0 if var is None else float(var.numpy())

    @gain.setter
    def gain(self, value: float) -> None:
        self._gain0 = float(value)
        if self._step_graph is not None:
            self._step_graph.gain.assign(float(value))

    @property
    def locked(self) -> np.ndarray | None:
        """The locked zero pattern once ``target`` was reached, else None."""
        if self._step_graph is None or not bool(self._step_graph.locked_flag.numpy()):
            return None
        return np.asarray(self._step_graph.locked.numpy(), bool)

    @locked.setter
    def locked(self, value) -> None:
        if self._step_graph is None:
            return
        self._step_graph.locked_flag.assign(value is not None)
        self._step_graph.locked.assign(np.zeros(self.num_channels, bool) if value is None
                                       else np.asarray(value, bool))

    @property
    def _zero(self) -> np.ndarray | None:
        if self._step_graph is not None and self._zero_host is None:
            return np.asarray(self._step_graph.zero.numpy(), bool)
        return self._zero_host

    @_zero.setter
    def _zero(self, value) -> None:
        if self._step_graph is not None and value is not None:
            self._step_graph.zero.assign(np.asarray(value, bool))
            self._step_graph.sparsity.assign(float(np.mean(value)) if len(value) else 0.0)
            self._zero_host = None
        else:
            self._zero_host = None if value is None else np.asarray(value, bool)

    @property
    def _last_step(self) -> int | None:
        step = None if self._step_graph is None else int(self._step_graph.last_step.numpy())
        return None if step is None or step < 0 else step

    @_last_step.setter
    def _last_step(self, value) -> None:
        if self._step_graph is not None:
            self._step_graph.last_step.assign(-1 if value is None else int(value))

    @property
    def last_step(self) -> int | None:
        """The optimizer step of the last proximal step (or of the start of training)."""
        return self._last_step

