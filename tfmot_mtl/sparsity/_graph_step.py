"""The proximal step of ProximalGroupLasso as graph ops, run after each optimizer update.

Built from the callback's plan (entries, channel groups, lambda, scale); its state (gain,
last step, locked and zero patterns, the strength of callable schedules) lives in
non-trainable variables, so the whole step runs inside the compiled train function
(:mod:`tfmot_mtl.ingraph`), under ``jit_compile=True`` and on a GPU without host transfers.
The math is that of :mod:`tfmot_mtl.sparsity.prox_ops` (the numpy oracle; ``prox_graph`` has the
same operators on flat group-indexed vectors).
"""
from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from tfmot_mtl import _keras_compat
from tfmot_mtl.ingraph import new_variable

F64 = tf.float64


class _VarPlan:
    """One selected weight: its channel axis and, per position along it, the global channel it
    belongs to (``n``, a spare slot, for positions outside the selected groups)."""

    def __init__(self, var, axis: int, row_of: np.ndarray, n: int):
        self.var, self.axis = var, axis
        self.row_of = tf.constant(row_of.astype(np.int32))
        self.selected = tf.constant(row_of < n)
        self.shape = [1] * len(var.shape)
        self.shape[axis] = int(var.shape[axis])
        self.others = [i for i in range(len(var.shape)) if i != axis]

    def spread(self, per_channel, spare):
        """A length-``n`` channel vector as a tensor broadcasting against the weight (``spare``
        at positions outside the selected groups)."""
        ext = tf.concat([per_channel, tf.reshape(tf.cast(spare, per_channel.dtype), [1])], 0)
        return tf.reshape(tf.gather(ext, self.row_of), self.shape)


class ProxStep:
    """Graph state and step of one ProximalGroupLasso plan on one model.

    The step works on each selected weight in its own shape: per-channel sums are reductions
    over the weight's other axes followed by one segment sum over the (few) channels, and
    per-channel factors broadcast back along the channel axis, so no weight is gathered,
    transposed or scattered (the flat-vector ops of :mod:`prox_graph` cost several times as
    much on a CPU). Same math and precision (float64) as :mod:`prox_ops`.
    """

    def __init__(self, cb, model, optimizer):
        self.cb, self.optimizer = cb, optimizer
        n = cb.num_channels
        self.n = n
        per_var: dict[int, list] = {}
        for e in cb.entries:
            var = cb.variables[e.var]
            plan = per_var.setdefault(id(var), [var, e.axis, np.full(int(var.shape[e.axis]), n, np.int64)])
            if plan[1] != e.axis:
                raise ValueError(f"weight '{var.path}' has selected channels along two axes "
                                 f"({plan[1]} and {e.axis}); the proximal step needs one channel axis per weight.")
            plan[2][np.asarray(e.positions, np.int64)] = e.rows
        self.plans = [_VarPlan(var, axis, row_of, n) for var, axis, row_of in per_var.values()]
        self.rows = tf.constant(np.concatenate([p.row_of.numpy() for p in self.plans]) if self.plans
                                else np.zeros(0, np.int32))
        # The Newton loop treats the 1-D weights (biases, BatchNorm gamma / beta) as one
        # concatenated vector: a few ops per iteration instead of a few per weight.
        self.vector_plans = [i for i, p in enumerate(self.plans) if len(p.var.shape) == 1]
        self.tensor_plans = [i for i, p in enumerate(self.plans) if len(p.var.shape) > 1]
        vector_rows = [self.plans[i].row_of for i in self.vector_plans]
        self.vector_rows = tf.concat(vector_rows, 0) if vector_rows else None
        self.loop_rows = tf.concat([self.plans[i].row_of for i in self.tensor_plans] + vector_rows, 0) \
            if self.plans else None
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
            self.moments = [_keras_compat.adam_second_moment(optimizer, p.var) for p in self.plans]

    # ---------------------------------------------------------------- graph
    def _channel_sums(self, tensors):
        """Per selected channel, the sum of ``tensors`` (one per weight, in its shape) over its elements."""
        parts = [tf.reduce_sum(t, axis=p.others) for t, p in zip(tensors, self.plans)]
        return tf.math.unsorted_segment_sum(tf.concat(parts, 0), self.rows, self.n + 1)[:self.n]

    def _protected(self, sq):
        """Per channel, True for the ``k`` strongest channels of each protected group (ties to
        the lower index, as ``top_k``). Ranked by pairwise comparison instead of a sort: a sort
        anywhere in an XLA CPU module makes the compiler inline and fuse the dropout random
        number generators of the train step badly (measured: +40 ms on a 265 ms step)."""
        keep = tf.zeros([self.n], tf.bool)
        for idx, k in self.protect:
            v = tf.gather(sq, idx)
            order = tf.range(tf.size(idx))
            ahead = (v[None, :] > v[:, None]) | ((v[None, :] == v[:, None]) & (order[None, :] < order[:, None]))
            rank = tf.reduce_sum(tf.cast(ahead, tf.int32), axis=1)  # channels stronger than each
            keep = tf.tensor_scatter_nd_update(keep, idx[:, None], rank < k)
        return keep

    def __call__(self) -> None:
        """Graph ops of one (possibly skipped) proximal step."""
        self._run_if_due(tf.cast(self.optimizer.iterations, tf.int64) + 1, self.cb.update_every)

    def _run_if_due(self, step, at_least: int) -> None:
        """The step for update number ``step`` when ``at_least`` updates passed since the last one."""
        if not self.plans:
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
        w = [tf.cast(p.var.value, F64) for p in self.plans]
        w2 = [x * x for x in w]
        sq = self._channel_sums(w2)
        lr = tf.cast(opt.learning_rate, F64)
        tau = lr * self.lam.value * self.gain.value * tf.cast(elapsed, F64) * self.base_tau
        locked = self.locked_flag.value

        def when_locked():
            return self._plain(w, sq, tf.where(self.locked.value, tf.constant(np.inf, F64), tf.zeros([self.n], F64)))

        def when_free():
            t = tf.where(self._protected(sq), tf.zeros_like(tau), tau)
            if self.moments is None:
                return self._plain(w, sq, t)
            return self._adam(w, w2, t, step)

        new = tf.cond(locked, when_locked, when_free)
        finite = tf.reduce_all(tf.math.is_finite(sq))  # NaN/Inf in a selected weight -> in its sum
        return tf.cond(finite, lambda: self._write(new, locked), lambda: tf.constant(False))

    def _plain(self, w, sq, tau):
        """Group soft-thresholding (:func:`prox_ops.prox_plain`), per weight in its shape."""
        norm = tf.sqrt(sq)
        alive = norm > tau
        factor = tf.where(alive, 1.0 - tau / tf.where(alive, norm, tf.ones_like(norm)), tf.zeros_like(norm))
        return [tf.cast(x * p.spread(factor, 1.0), p.var.dtype) for x, p in zip(w, self.plans)]

    def _adam(self, w, w2, tau, step):
        """The Adam-reweighted prox (:func:`prox_ops.prox_adam`), per weight in its shape."""
        opt = self.optimizer
        correction = 1.0 - tf.cast(opt.beta_2, F64) ** tf.cast(tf.maximum(step, 1), F64)
        d = [tf.sqrt(tf.cast(m.value, F64) / correction) + float(opt.epsilon) for m in self.moments]
        alive = tf.sqrt(self._channel_sums([(dd * x) ** 2 for dd, x in zip(d, w)])) > tau
        c = [p.spread(tau, 0.0) / dd for p, dd in zip(self.plans, d)]
        theta = self._solve_theta(w2, c, alive)
        out = []
        for x, cc, p in zip(w, c, self.plans):
            th = p.spread(theta, 1.0)
            shrunk = tf.where(p.spread(tf.cast(alive, F64), 1.0) > 0, x * th / (th + cc), tf.zeros_like(x))
            out.append(tf.cast(tf.where(tf.reshape(p.selected, p.shape), shrunk, x), p.var.dtype))
        return out

    def _solve_theta(self, w2, c, active, max_iter: int = 100, tol: float = 1e-7):
        """Per channel, the root theta > 0 of ``sum w**2 / (theta + c)**2 = 1``: the safeguarded
        Newton iteration of :func:`prox_ops.solve_theta` (channels not ``active`` stay 0).

        It starts from ``||w|| - cbar`` (``cbar`` the ``w**2``-weighted mean of ``c``), a lower
        bound of the root by Jensen's inequality and the root itself when a channel's ``c`` are
        equal, instead of 0: the same root to ``tol`` in a few iterations instead of tens."""
        n = self.n
        lo = tf.zeros([n], F64)
        norm2 = self._channel_sums(w2)
        hi = tf.sqrt(norm2)
        cbar = self._channel_sums([a * cc for a, cc in zip(w2, c)]) / tf.where(norm2 > 0, norm2, 1.0)
        start = tf.where(active, tf.clip_by_value(hi - cbar, 0.0, hi), lo)
        pieces = [(w2[i], c[i], self.plans[i]) for i in self.tensor_plans]
        if self.vector_plans:
            pieces.append((tf.concat([w2[i] for i in self.vector_plans], 0),
                           tf.concat([c[i] for i in self.vector_plans], 0), None))

        def sums(theta):
            ext = tf.concat([theta, tf.ones([1], F64)], 0)  # 1 at positions outside the groups
            f_parts, df_parts = [], []
            for a, cc, plan in pieces:
                if plan is None:
                    th = tf.gather(ext, self.vector_rows)
                else:
                    th = tf.reshape(tf.gather(ext, plan.row_of), plan.shape)
                inv = 1.0 / (th + cc)
                term = a * inv * inv  # w**2 / (theta + c)**2
                if plan is None:
                    f_parts.append(term)
                    df_parts.append(term * inv)
                else:
                    f_parts.append(tf.reduce_sum(term, axis=plan.others))
                    df_parts.append(tf.reduce_sum(term * inv, axis=plan.others))
            both = tf.stack([tf.concat(f_parts, 0), tf.concat(df_parts, 0)], 1)
            total = tf.math.unsorted_segment_sum(both, self.loop_rows, n + 1)[:n]
            return total[:, 0], -2.0 * total[:, 1]

        def body(i, theta, lo, hi, active):
            f, df = sums(theta)
            active = tf.logical_and(active, tf.abs(f - 1.0) > tol)
            below = f > 1.0
            lo = tf.where(tf.logical_and(active, below), theta, lo)
            hi = tf.where(tf.logical_and(active, tf.logical_not(below)), theta, hi)
            h = f ** -0.5
            dh = -0.5 * f ** -1.5 * df
            step = theta - (h - 1.0) / dh
            inside = tf.math.is_finite(step) & (step > lo) & (step < hi)
            new = tf.where(inside, step, 0.5 * (lo + hi))
            return i + 1, tf.where(active, new, theta), lo, hi, active

        def cond(i, theta, lo, hi, active):
            return tf.logical_and(i < max_iter, tf.reduce_any(active))

        _, theta, *_ = tf.while_loop(cond, body, (tf.constant(0), start, lo, hi, active),
                                     maximum_iterations=max_iter)
        return theta

    def _write(self, new, locked):
        zero = self._channel_sums([tf.square(tf.cast(v, F64)) for v in new]) == 0
        self.zero.assign(zero)
        fraction = tf.reduce_mean(tf.cast(zero, F64)) if self.n else tf.constant(0.0, F64)
        self.sparsity.assign(tf.cast(fraction, tf.float32))
        if self.cb.target is not None:
            reached = tf.logical_and(tf.logical_not(locked), fraction >= self.cb.target)
            self.locked.assign(tf.where(reached, zero, self.locked.value))
            self.locked_flag.assign(tf.logical_or(locked, reached))
            grow = tf.logical_and(tf.logical_not(locked), tf.logical_not(reached))
            self.gain.assign(tf.where(grow, self.gain.value * (1 + self.cb.adapt_rate), self.gain.value))
        for p, value in zip(self.plans, new):
            p.var.assign(value)
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

