"""Chance level of each task and a check for tasks that collapsed to it.

Chance is the score of a predictor that ignores the input: the majority class (segmentation,
classification), each attribute's majority value (binary), the mean target (depth) and the
mean direction (normals), measured with the task's own metrics on the given targets. A task
has *collapsed* when its main metric (the first of ``Task.metrics``: mIoU, accuracy, abs_err,
mean angle) keeps less than a tenth of the reference model's advantage over chance.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from tfmot_mtl.tasks.metrics import HIGHER_IS_BETTER
from tfmot_mtl.tasks.specs import Task

COLLAPSE_SHARE = 0.1


def main_metric(task: Task) -> str:
    """The metric a task is judged by: the first of its metrics."""
    return task.metrics[0]


def chance_results(tasks: Sequence[Task], batches: Iterable) -> dict[str, dict[str, float]]:
    """``{task: {metric: value}}`` of the input-blind predictor of each task on ``batches``
    (``(inputs, {task: target})`` pairs; read twice, so a list or a finite dataset)."""
    batches = list(batches)
    if not batches:
        raise ValueError("chance_results: no batch to measure chance on")
    out = {}
    for task in tasks:
        targets = [np.asarray(b[1][task.name]) for b in batches]
        constant = _constant(task, targets)
        acc = task.accumulator()
        for y in targets:
            acc.update_state(y, _prediction(task, y, constant))
        out[task.name] = {k: float(v) for k, v in acc.result().items()}
    return out


def collapsed(results: Mapping[str, Mapping[str, float]], chance: Mapping[str, Mapping[str, float]],
              reference: Mapping[str, Mapping[str, float]], tasks: Sequence[Task]) -> list[str]:
    """Tasks whose main metric kept less than :data:`COLLAPSE_SHARE` of ``reference``'s
    advantage over ``chance`` (tasks where the reference is no better than chance are skipped)."""
    out = []
    for task in tasks:
        m = main_metric(task)
        sign = 1.0 if HIGHER_IS_BETTER[m] else -1.0
        gap = sign * (reference[task.name][m] - chance[task.name][m])
        if gap > 0 and sign * (results[task.name][m] - chance[task.name][m]) < COLLAPSE_SHARE * gap:
            out.append(task.name)
    return out


def _labels(task: Task, y: np.ndarray) -> np.ndarray:
    if task.kind in ("segmentation", "classification") and y.ndim >= 1 and y.shape[-1:] == (1,) and \
            (task.kind == "classification" or y.ndim == 4):
        y = y[..., 0]
    return y


def _constant(task: Task, targets: list[np.ndarray]) -> Any:
    if task.kind in ("segmentation", "classification"):
        labels = np.concatenate([_labels(task, y).reshape(-1) for y in targets]).astype(np.int64)
        labels = labels[(labels >= 0) & (labels < task.output_channels)]
        return int(np.bincount(labels, minlength=task.output_channels).argmax()) if labels.size else 0
    if task.kind == "binary":
        y = np.concatenate([t.reshape(-1, task.output_channels) for t in targets]).astype(np.float64)
        valid = y >= 0
        pos = ((y > 0.5) & valid).sum(0)
        return np.where(pos * 2 > valid.sum(0), 1.0, -1.0)
    if task.kind == "depth":
        y = np.concatenate([t.reshape(-1) for t in targets]).astype(np.float64)
        y = y[y > 0]
        return float(y.mean()) if y.size else 0.0
    y = np.concatenate([t.reshape(-1, 3) for t in targets]).astype(np.float64)
    y = y[np.abs(y).sum(1) > 0]
    mean = y.mean(0) if len(y) else np.array([0.0, 0.0, 1.0])
    return mean / max(np.linalg.norm(mean), 1e-12)


def _prediction(task: Task, y: np.ndarray, constant: Any) -> np.ndarray:
    if task.kind in ("segmentation", "classification"):
        labels = _labels(task, y)
        pred = np.zeros(labels.shape + (task.output_channels,), np.float32)
        pred[..., constant] = 1.0
        return pred
    if task.kind == "binary":
        return np.broadcast_to(constant, y.reshape(-1, task.output_channels).shape).reshape(y.shape).astype(np.float32)
    if task.kind == "depth":
        shape = y.shape if y.ndim == 4 else y.shape + (1,)
        return np.full(shape, constant, np.float32)
    return np.broadcast_to(constant, y.shape).astype(np.float32)
