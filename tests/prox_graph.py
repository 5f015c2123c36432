"""Group-lasso proximal operators as flat TensorFlow graph ops (XLA- and GPU-ready): a second
oracle for the in-graph step of :mod:`tfmot_mtl.sparsity._graph_step`, which works on pieces instead.

The same math as :mod:`tfmot_mtl.sparsity.prox_ops` (which stays the numpy reference and
test oracle), on flat group-indexed tensors: ``group[i]`` is the group of weight ``i``,
``tau`` (length ``n``) each group's threshold. Everything is computed in float64 (the
reference's precision; the vectors are the selected weights only) and cast back. The
Newton iteration of :func:`solve_theta` is a ``tf.while_loop`` with at most ``max_iter``
iterations, so the ops compile under ``jit_compile=True``.
"""
from __future__ import annotations

import tensorflow as tf

F64 = tf.float64


def group_sums(values, group, n: int):
    """Per-group sums of ``values`` (float64)."""
    return tf.math.unsorted_segment_sum(tf.cast(values, F64), group, n)


def prox_plain(w, group, tau):
    """Group soft-thresholding ``w_g <- max(0, 1 - tau_g / ||w_g||) w_g`` (groups with
    ``||w_g|| <= tau_g`` become exactly zero)."""
    w64 = tf.cast(w, F64)
    tau = tf.cast(tau, F64)
    norm = tf.sqrt(group_sums(w64 * w64, group, tau.shape[0]))
    alive = norm > tau
    factor = tf.where(alive, 1.0 - tau / tf.where(alive, norm, tf.ones_like(norm)), tf.zeros_like(norm))
    return tf.cast(w64 * tf.gather(factor, group), w.dtype)


def prox_adam(w, d, group, tau, max_iter: int = 100, tol: float = 1e-7):
    """Group lasso prox in the metric ``diag(d)`` (see :func:`prox_ops.prox_adam`)."""
    w64, d = tf.cast(w, F64), tf.cast(d, F64)
    tau = tf.cast(tau, F64)
    n = tau.shape[0]
    dnorm = tf.sqrt(group_sums((d * w64) ** 2, group, n))
    alive = dnorm > tau
    tau_e = tf.gather(tau, group)
    c = tau_e / d
    theta = solve_theta(w64, c, group, n, max_iter, tol, active=alive)
    theta_e = tf.gather(theta, group)
    out = tf.where(tf.gather(alive, group), w64 * theta_e / (theta_e + c), tf.zeros_like(w64))
    return tf.cast(out, w.dtype)


def solve_theta(w, c, group, n: int, max_iter: int = 100, tol: float = 1e-7, active=None):
    """Per group, the root ``theta > 0`` of ``sum_i w_i**2 / (theta + c_i)**2 = 1`` (the
    safeguarded Newton-Raphson of :func:`prox_ops.solve_theta`); groups where ``active`` is
    False are left at 0."""
    w2 = tf.cast(w, F64) ** 2
    c = tf.cast(c, F64)
    lo = tf.zeros([n], F64)
    hi = tf.sqrt(group_sums(w2, group, n))
    active = tf.ones([n], tf.bool) if active is None else active

    def body(i, theta, lo, hi, active):
        q = tf.gather(theta, group) + c
        f = group_sums(w2 / q ** 2, group, n)
        df = -2.0 * group_sums(w2 / q ** 3, group, n)
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

    _, theta, *_ = tf.while_loop(cond, body, (tf.constant(0), lo, lo, hi, active),
                                 maximum_iterations=max_iter)
    return theta
