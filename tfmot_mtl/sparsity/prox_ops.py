"""Proximal operators of the group lasso on flat, group-indexed numpy vectors.

Every function works on a 1-D vector ``w`` holding the weights of many groups at once;
``group[i]`` says which group weight ``i`` belongs to (``0 <= group[i] < n``), and
``tau`` (length ``n``) is each group's threshold ``lr * lambda * c_g``.
"""
from __future__ import annotations

import numpy as np


def group_sums(values: np.ndarray, group: np.ndarray, n: int) -> np.ndarray:
    """Per-group sums of ``values`` (float64)."""
    return np.bincount(group, weights=np.asarray(values, np.float64), minlength=n)


def prox_plain(w: np.ndarray, group: np.ndarray, tau: np.ndarray) -> np.ndarray:
    """Group soft-thresholding: ``w_g <- max(0, 1 - tau_g / ||w_g||) * w_g``.

    Groups with ``||w_g|| <= tau_g`` become exactly zero.
    """
    w64 = np.asarray(w, np.float64)
    tau = np.asarray(tau, np.float64)
    norm = np.sqrt(group_sums(w64 * w64, group, len(tau)))
    factor = np.zeros_like(norm)
    alive = norm > tau
    factor[alive] = 1.0 - tau[alive] / norm[alive]
    return (w64 * factor[group]).astype(np.asarray(w).dtype)


def prox_adam(w: np.ndarray, d: np.ndarray, group: np.ndarray, tau: np.ndarray,
              max_iter: int = 100, tol: float = 1e-7) -> np.ndarray:
    """Group lasso prox in the metric ``diag(d)`` (Adam-reweighted, Less-is-More code).

    ``||d * w_g|| <= tau_g`` -> the group becomes zero; otherwise
    ``w_g <- (d * theta) / (d * theta + tau_g) * w_g`` with ``theta > 0`` solving
    ``sum_i w_i**2 / (theta + tau_g / d_i)**2 = 1`` (see :func:`solve_theta`).
    """
    w64 = np.asarray(w, np.float64)
    d = np.asarray(d, np.float64)
    tau = np.asarray(tau, np.float64)
    n = len(tau)
    dnorm = np.sqrt(group_sums((d * w64) ** 2, group, n))
    alive = dnorm > tau
    out = np.zeros_like(w64)
    if alive.any():
        sel = alive[group]
        idx = np.cumsum(alive) - 1  # old group id -> compact id among alive groups
        g = idx[group[sel]]
        t = tau[alive]
        theta = solve_theta(w64[sel], t[g] / d[sel], g, int(alive.sum()), max_iter, tol)
        out[sel] = w64[sel] * theta[g] / (theta[g] + t[g] / d[sel])
    return out.astype(np.asarray(w).dtype)


def solve_theta(w: np.ndarray, c: np.ndarray, group: np.ndarray, n: int,
                max_iter: int = 100, tol: float = 1e-7) -> np.ndarray:
    """Per group, the root ``theta > 0`` of ``f(theta) = sum_i w_i**2 / (theta + c_i)**2 = 1``.

    Vectorised safeguarded Newton-Raphson on ``h = f**-1/2``, which is increasing and
    nearly linear in theta (exactly linear when all ``c_i`` of a group are equal), kept
    inside the bracket ``[0, ||w_g||]`` (``f(0) > 1`` is required, ``f(||w_g||) < 1``
    always holds); a step leaving the bracket bisects instead. Stops after ``max_iter``
    iterations or once every group has ``|f - 1| <= tol``.
    """
    w2 = np.asarray(w, np.float64) ** 2
    c = np.asarray(c, np.float64)
    lo = np.zeros(n)
    hi = np.sqrt(group_sums(w2, group, n))
    theta = lo.copy()
    active = np.ones(n, bool)
    for _ in range(max_iter):
        q = theta[group] + c
        f = group_sums(w2 / q ** 2, group, n)
        df = -2.0 * group_sums(w2 / q ** 3, group, n)
        active &= np.abs(f - 1.0) > tol
        if not active.any():
            break
        below = f > 1.0  # theta is left of the root
        lo = np.where(active & below, theta, lo)
        hi = np.where(active & ~below, theta, hi)
        h = f ** -0.5
        dh = -0.5 * f ** -1.5 * df
        with np.errstate(divide="ignore", invalid="ignore"):
            step = theta - (h - 1.0) / dh
        inside = np.isfinite(step) & (step > lo) & (step < hi)
        new = np.where(inside, step, 0.5 * (lo + hi))
        theta = np.where(active, new, theta)
    return theta
