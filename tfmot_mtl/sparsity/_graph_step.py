"""The proximal step of ProximalGroupLasso as graph ops, run after each optimizer update.

Built from a :class:`ProxPlan` (the callback builds it; the step never reads the callback); its state (gain,
last step, locked and zero patterns, the strength of callable schedules) lives in
non-trainable variables, so the whole step runs inside the compiled train function
(:mod:`tfmot_mtl.training.ingraph`), under ``jit_compile=True`` and on a GPU without host transfers.
The math is that of :mod:`tfmot_mtl.sparsity.prox_ops` (the numpy oracle; ``tests/prox_graph.py`` has the
same operators on flat group-indexed vectors).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from tfmot_mtl.utils import _keras_compat
from tfmot_mtl.training.ingraph import new_variable
from tfmot_mtl.sparsity._pieces import F64, extend


@dataclass(frozen=True)
class ProxPlan:
    """Everything a :class:`ProxStep` needs, built by ProximalGroupLasso from its settings: the
    selected weights as pieces, per selected channel the index of its group and its threshold
    before the learning rate and the strength (``lambda * scale``), the channels each group
    protects, and the controller's settings."""

    pieces: list
    channel_group: np.ndarray
    base_tau: np.ndarray
    gain0: float
    protect: tuple = ()  # (channel indices of a group, how many of its strongest to keep), per group
    strength0: tuple = (True, 1.0)  # (apply?, lambda multiplier) before the first step
    dynamic: bool = False  # lambda or its schedule is callable: the callback sets it every step
    adam: bool = False  # the Adam-reweighted step
    relative: bool = True  # thresholds relative to the group's mean live channel norm
    update_every: int = 1
    ramp_steps: int | None = None
    target: float | None = None
    adapt_rate: float = 0.2

    group_count: int = 0  # how many groups ``channel_group`` indexes

    @property
    def num_channels(self) -> int:
        return len(self.channel_group)


class ProxStep:
    """Graph state and step of one ProximalGroupLasso plan on one model.

    The step works on the selected weights as pieces (:mod:`tfmot_mtl.sparsity._pieces`: each
    kernel in its own shape, all 1-D weights as one vector); the flat-vector ops of
    :mod:`tests/prox_graph` cost several times as much on a CPU. The Adam-reweighted step runs
    its Newton solve, and forms ``c = tau / d``, only in the pieces holding a channel that needs
    a root: once channels are dead or protected that is a small part of the weights. Same math
    and precision (float64) as :mod:`prox_ops`.
    """

    def __init__(self, model, optimizer, plan: ProxPlan):
        self.optimizer, self.plan = optimizer, plan
        self.n = n = plan.num_channels
        self.pieces = plan.pieces
        self.rows = tf.concat([p.row_of for p in self.pieces], 0) if self.pieces else None
        self.base_tau = tf.constant(np.asarray(plan.base_tau, np.float64))
        self.protect = [(tf.constant(np.asarray(idx, np.int32)), int(k)) for idx, k in plan.protect if k]
        go, lam = (True, 1.0) if plan.dynamic else plan.strength0
        self.go = new_variable(model, go, "bool", "prox_go")
        self.lam = new_variable(model, lam, "float64", "prox_lam")
        self.gain = new_variable(model, plan.gain0, "float64", "prox_gain")
        self.last_step = new_variable(model, -1, "int64", "prox_last_step")
        self.locked_flag = new_variable(model, False, "bool", "prox_locked_flag")
        self.locked = new_variable(model, np.zeros(n, bool), "bool", "prox_locked")
        self.zero = new_variable(model, np.zeros(n, bool), "bool", "prox_zero")
        self.sparsity = new_variable(model, 0.0, "float32", "prox_sparsity")
        self.enabled = new_variable(model, True, "bool", "prox_enabled")
        self.ramp_start = new_variable(model, -1, "int64", "prox_ramp_start")
        self._compiled = None  # the XLA-compiled step, made on first use
        self.moments = None
        if plan.adam:
            self.moments = [[_keras_compat.adam_second_moment(optimizer, v) for v in p.variables]
                            for p in self.pieces]

    # ---------------------------------------------------------------- graph
    def _channel_sums(self, tensors, squares: bool = False, spare: bool = False):
        """Per selected channel, the sum of ``tensors`` (one per piece, in its shape; of their
        squares with ``squares``) over its elements; with ``spare``, one more entry sums the
        positions outside the selected groups."""
        parts = [p.channel_squares(t) if squares else p.channel_parts(t) for t, p in zip(tensors, self.pieces)]
        sums = tf.math.unsorted_segment_sum(tf.concat(parts, 0), self.rows, self.n + 1)
        return sums if spare else sums[:self.n]

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

    def _base(self, sq):
        """Per channel, the threshold before the learning rate and strength: ``base_tau``, times
        the mean norm of the live channels of its group with ``relative`` thresholds."""
        if not self.plan.relative:
            return self.base_tau
        norm = tf.sqrt(sq)
        group = tf.constant(self.plan.channel_group.astype(np.int32))
        count = self.plan.group_count
        total = tf.math.unsorted_segment_sum(norm, group, count)
        live = tf.math.unsorted_segment_sum(tf.cast(norm > 0, F64), group, count)
        return self.base_tau * tf.gather(total / tf.maximum(live, 1.0), group)

    def _ahead_of_ramp(self, sq, step):
        """Per channel, True for the strongest ``(1 - ramp target)`` share of all the selected
        channels (strength ``||w_g|| / tau_g``, what the step compares): at most the ramp's share
        of the channels can be dead after this step, so a lambda that grew too far cannot kill
        many channels at once. A sort, so only with ``ramp_steps`` (see :meth:`_protected`)."""
        strength = tf.sqrt(sq) / tf.maximum(self._base(sq), 1e-30)
        spare = tf.cast(tf.math.ceil((1.0 - self._ramp_target(step)) * float(self.n) - 1e-9), tf.int32)
        spare = tf.clip_by_value(spare, 0, self.n)
        ranked = tf.sort(strength, direction="DESCENDING")
        threshold = tf.gather(ranked, tf.maximum(spare - 1, 0))
        return tf.logical_and(spare > 0, strength >= threshold)

    def __call__(self) -> None:
        """Graph ops of one (possibly skipped) proximal step.

        Outside ``tf.distribute`` the step is its own XLA-compiled function: fused, it took 0.6 of
        the time of the same ops run one by one by TensorFlow's executor on a 2-core CPU (inside
        a ``jit_compile=True`` train step it is simply part of the compiled step). Under a
        distribution strategy it stays plain graph ops, which mirrored variables need."""
        if tf.distribute.has_strategy():
            self._due_step()
            return
        if self._compiled is None:
            self._compiled = tf.function(self._due_step, jit_compile=True, autograph=False)
        self._compiled()

    def _due_step(self) -> None:
        self._run_if_due(tf.cast(self.optimizer.iterations, tf.int64) + 1, self.plan.update_every)

    def _run_if_due(self, step, at_least: int) -> None:
        """The step for update number ``step`` when ``at_least`` updates passed since the last one."""
        if not self.pieces:
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
        w = [p.read() for p in self.pieces]
        sums = self._channel_sums(w, squares=True, spare=True)
        sq = sums[:self.n]
        lr = tf.cast(opt.learning_rate, F64)
        tau = lr * self.lam.value * self.gain.value * tf.cast(elapsed, F64) * self._base(sq)
        locked = self.locked_flag.value

        def when_locked():
            return self._plain(w, sq, tf.where(self.locked.value, tf.constant(np.inf, F64), tf.zeros([self.n], F64)))

        def when_free():
            protected = self._protected(sq)
            if self.plan.ramp_steps and self.plan.target is not None:
                protected = tf.logical_or(protected, self._ahead_of_ramp(sq, step))
            t = tf.where(protected, tf.zeros_like(tau), tau)
            if self.moments is None:
                return self._plain(w, sq, t)
            return self._adam(w, sq, t, step)

        new, alive = tf.cond(locked, when_locked, when_free)
        finite = tf.reduce_all(tf.math.is_finite(sums))  # NaN/Inf anywhere in the weights -> in a sum
        return tf.cond(finite, lambda: self._write(new, tf.logical_not(alive), locked, step),
                       lambda: tf.constant(False))

    def _plain(self, w, sq, tau):
        """Group soft-thresholding (:func:`prox_ops.prox_plain`), per piece in its shape (float64,
        returned in the weights' dtype); also returns which channels stay non-zero."""
        norm = tf.sqrt(sq)
        alive = norm > tau
        factor = tf.where(alive, 1.0 - tau / tf.where(alive, norm, tf.ones_like(norm)), tf.zeros_like(norm))
        ext = extend(factor, 1.0)
        return [tf.cast(x * p.spread(ext), p.dtype) for x, p in zip(w, self.pieces)], alive

    def _adam(self, w, sq, tau, step):
        """The Adam-reweighted prox (:func:`prox_ops.prox_adam`), per piece in its shape (float64,
        returned in the weights' dtype); also returns which channels stay non-zero.

        Only channels that stay alive with ``tau > 0`` need the root ``theta`` of
        :meth:`_solve_theta`: the others keep their weights (protected, ``c = 0``) or die. Pieces
        holding such a channel compute ``c = tau / d`` and ``w * theta / (theta + c)`` (exactly 0
        where a channel dies, ``theta = 0``; ``w`` outside the selected groups, ``theta = 1`` and
        ``c = 0``); the others only scale by 1 or 0."""
        opt = self.optimizer
        correction = 1.0 - tf.cast(opt.beta_2, F64) ** tf.cast(tf.maximum(step, 1), F64)
        scale = 1.0 / correction
        d = [tf.sqrt(p.read(m) * scale) + float(opt.epsilon) for p, m in zip(self.pieces, self.moments)]
        alive = tf.sqrt(self._channel_sums([dd * x for dd, x in zip(d, w)], squares=True)) > tau
        active = alive & (tau > 0)
        tau_ext = extend(tau, 0.0)

        def c(i):
            return self.pieces[i].spread(tau_ext) / d[i]

        theta = extend(self._solve_theta(w, sq, c, active, alive), 1.0)
        keep = extend(tf.cast(alive, F64), 1.0)  # the channels without a root: kept or zeroed
        out = []
        for i, (x, p, solved) in enumerate(zip(w, self.pieces, self._holding(active))):
            def shrink(i=i, x=x, p=p):
                th = p.spread(theta)
                return tf.cast(tf.math.divide_no_nan(x * th, th + c(i)), p.dtype)

            def scale_only(p=p):  # exact in the weights' dtype: no float64 copy to write back
                return p.read(dtype=p.dtype) * tf.cast(p.spread(keep), p.dtype)

            out.append(tf.cond(solved, shrink, scale_only))
        return out, alive

    def _holding(self, channels):
        """Per piece, a scalar bool: does it hold one of ``channels`` (a length-``n`` bool)?"""
        flags = extend(channels, False)
        return [tf.reduce_any(tf.gather(flags, p.row_of)) for p in self.pieces]

    def _sums_where_active(self, terms, k: int, active):
        """Per channel, the sums of the ``k`` tensors ``terms(i)`` returns for piece ``i`` (each
        in the piece's shape), as an ``[n, k]`` tensor. Pieces holding no ``active`` channel are
        skipped (their channels get 0): once channels are dead, protected or converged that is
        most of them, so an iteration costs what the pieces of its active channels cost."""
        parts = []
        for i, (p, holds) in enumerate(zip(self.pieces, self._holding(active))):
            def compute(i=i, p=p):
                return tf.stack([p.channel_parts(t) for t in terms(i)], 1)

            def skip(p=p):
                return tf.zeros([p.positions, k], F64)

            parts.append(tf.cond(holds, compute, skip))
        return tf.math.unsorted_segment_sum(tf.concat(parts, 0), self.rows, self.n + 1)[:self.n]

    def _solve_theta(self, w, norm2, c, active, alive, max_iter: int = 100, tol: float = 1e-7):
        """Per channel, the root theta > 0 of ``sum w**2 / (theta + c)**2 = 1``: the safeguarded
        Newton iteration of :func:`prox_ops.solve_theta` on the weights ``w`` (one tensor per
        piece) for the ``active`` channels (the other ``alive`` ones start, and stay, at ``||w||``;
        the rest at 0); ``norm2`` holds each channel's ``sum w**2``, ``c(i)`` makes piece ``i``'s
        ``c``.

        It starts from ``||w|| - cbar`` (``cbar`` the ``w**2``-weighted mean of ``c``), a lower
        bound of the root by Jensen's inequality and the root itself when a channel's ``c`` are
        equal, instead of 0: the same root to ``tol`` in a few iterations instead of tens."""
        n = self.n
        lo = tf.zeros([n], F64)
        hi = tf.sqrt(norm2)
        weighted = self._sums_where_active(lambda i: [tf.square(w[i]) * c(i)], 1, active)[:, 0]
        cbar = weighted / tf.where(norm2 > 0, norm2, 1.0)
        start = tf.where(alive, tf.clip_by_value(hi - cbar, 0.0, hi), lo)

        def sums(theta, active):
            ext = extend(theta, 1.0)  # 1 at positions outside the groups

            def terms(i):
                inv = 1.0 / (self.pieces[i].spread(ext) + c(i))
                term = tf.square(w[i] * inv)  # w**2 / (theta + c)**2
                return [term, term * inv]

            total = self._sums_where_active(terms, 2, active)
            return total[:, 0], -2.0 * total[:, 1]

        def body(i, theta, lo, hi, active):
            f, df = sums(theta, active)
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

    def _write(self, new, zero, locked, step):
        """Stores the new weights and the step's state; ``zero`` marks the channels the step
        zeroed (the others keep a non-zero weight)."""
        self.zero.assign(zero)
        fraction = tf.reduce_mean(tf.cast(zero, F64)) if self.n else tf.constant(0.0, F64)
        self.sparsity.assign(tf.cast(fraction, tf.float32))
        if self.plan.target is not None:
            free = tf.logical_not(locked)
            reached = tf.logical_and(free, fraction >= self.plan.target)
            self.locked.assign(tf.where(reached, zero, self.locked.value))
            self.locked_flag.assign(tf.logical_or(locked, reached))
            below = fraction < self._ramp_target(step)
            rate = self.plan.adapt_rate
            grow = tf.logical_and(free, tf.logical_and(tf.logical_not(reached), below))
            ease = tf.logical_and(free, tf.logical_and(tf.logical_not(reached), tf.logical_not(below)))
            self.gain.assign(tf.where(grow, self.gain.value * (1 + rate),
                                      tf.where(ease, self.gain.value * (1 - rate), self.gain.value)))
        for p, value in zip(self.pieces, new):
            p.write(value)
        return tf.constant(True)


    def _ramp_target(self, step):
        """The sparsity the controller aims at now: ``target`` or, with ``ramp_steps``, a
        linear ramp from 0 at the first proximal step of training to ``target``."""
        target = tf.constant(float(self.plan.target), F64)
        if not self.plan.ramp_steps:
            return target
        step = tf.cast(step, tf.int64)
        self.ramp_start.assign(tf.where(self.ramp_start.value < 0, step, self.ramp_start.value))
        done = tf.cast(step - self.ramp_start.value + 1, F64) / float(self.plan.ramp_steps)
        return target * tf.clip_by_value(done, 0.0, 1.0)
