"""Exact, dataset-wide metrics per task kind, accumulated in numpy.

Each accumulator follows the Keras metric protocol: ``update_state(y_true, y_pred)`` (numpy
arrays or eager tensors, one batch), ``result() -> {metric: float}`` and ``reset_state()``.
Units: ``miou``, ``pixel_acc``, ``delta*``, ``within_*``, ``accuracy``, ``f1`` in percent
(0-100); angles in degrees; ``abs_err`` and ``rmse`` in the depth target's units;
``rel_err`` as a fraction.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from tfmot_mtl.tasks.specs import Task

# kind -> (metrics reported by default, extra metrics available on request)
KIND_METRICS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "segmentation": (("miou", "pixel_acc"), ()),
    "depth": (("abs_err", "rel_err", "delta1", "delta2", "delta3"), ("rmse",)),
    "normals": (
        ("mean_angle", "median_angle", "within_11.25", "within_22.5", "within_30"),
        ("within_45",),
    ),
    "classification": (("accuracy", "f1"), ()),
    "binary": (("accuracy", "f1"), ()),
}

#: Direction of every metric the package computes (True: higher is better).
HIGHER_IS_BETTER: dict[str, bool] = {
    "miou": True, "pixel_acc": True,
    "abs_err": False, "rel_err": False, "rmse": False,
    "delta1": True, "delta2": True, "delta3": True,
    "mean_angle": False, "median_angle": False,
    "within_11.25": True, "within_22.5": True, "within_30": True, "within_45": True,
    "accuracy": True, "f1": True,
}  # fmt: skip


def _np(x) -> np.ndarray:
    return np.asarray(x.numpy() if hasattr(x, "numpy") else x)


def _pct(num, den) -> float:
    return float(100.0 * num / den) if den else float("nan")


def _mean_pct(num: np.ndarray, den: np.ndarray) -> float:
    """Mean over entries with den > 0 of num/den in %; NaN when no entry counts."""
    keep = den > 0
    return float(np.mean(100.0 * num[keep] / den[keep])) if keep.any() else float("nan")


class _Accumulator:
    """Base: exact dataset-wide metrics in numpy. ``result()`` gives ``task.metrics`` only.

    A metric with nothing to average (no valid pixel / label yet) is NaN.
    """

    def __init__(self, task: "Task"):
        self.task = task
        self.reset_state()

    def reset_state(self) -> None:
        raise NotImplementedError

    def update_state(self, y_true, y_pred) -> None:
        raise NotImplementedError

    def _all_metrics(self) -> dict[str, float]:
        raise NotImplementedError

    def result(self) -> dict[str, float]:
        values = self._all_metrics()
        return {m: float(values[m]) for m in self.task.metrics}

    def _shape_error(self, y_true, y_pred, expected: str) -> ValueError:
        return ValueError(
            f"Task {self.task.name!r} ({self.task.kind}): target shape {y_true.shape} and "
            f"prediction shape {y_pred.shape} do not match; expected {expected}."
        )


class ConfusionAccumulator(_Accumulator):
    """Segmentation and classification: an exact C x C confusion matrix (rows = truth).

    ``y_pred`` is logits (..., C) or class ids with the target's shape. Metrics (all %):
    ``miou`` mean IoU over classes present in truth or prediction, ``pixel_acc`` /
    ``accuracy`` share of correct labels, ``f1`` macro F1 over the same classes.
    Labels equal to ``task.ignore_index`` are skipped.
    """

    def reset_state(self) -> None:
        c = self.task.output_channels
        self.confusion = np.zeros((c, c), dtype=np.int64)

    def update_state(self, y_true, y_pred) -> None:
        t, p = _np(y_true), _np(y_pred)
        c = self.task.output_channels
        if t.ndim == p.ndim and t.ndim > 1 and t.shape[-1] == 1 and p.shape[-1] == c:
            t = t[..., 0]
        if p.ndim == t.ndim + 1:
            if p.shape[-1] != c:
                raise self._shape_error(t, p, f"logits with {c} channels")
            p = p.argmax(-1)
        if p.shape != t.shape:
            raise self._shape_error(t, p, "logits (..., C) or labels shaped like the target")
        valid = t != self.task.ignore_index
        tv, pv = t[valid].astype(np.int64), p[valid].astype(np.int64)
        for what, v in (("target", tv), ("prediction", pv)):
            if v.size and (v.min() < 0 or v.max() >= c):
                raise ValueError(
                    f"Task {self.task.name!r}: {what} labels must lie in [0, {c}) or equal "
                    f"ignore_index={self.task.ignore_index}; got range [{v.min()}, {v.max()}]."
                )
        self.confusion += np.bincount(tv * c + pv, minlength=c * c).reshape(c, c)

    def per_class_iou(self) -> np.ndarray:
        """IoU per class in %, NaN for classes absent from truth and prediction."""
        tp = np.diag(self.confusion).astype(np.float64)
        union = self.confusion.sum(0) + self.confusion.sum(1) - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, 100.0 * tp / union, np.nan)

    def _all_metrics(self) -> dict[str, float]:
        cm = self.confusion
        tp = np.diag(cm).astype(np.float64)
        union = cm.sum(0) + cm.sum(1) - tp
        acc = _pct(tp.sum(), cm.sum())
        return {
            "miou": _mean_pct(tp, union),
            "pixel_acc": acc,
            "accuracy": acc,
            "f1": _mean_pct(2 * tp, cm.sum(0) + cm.sum(1)),
        }


def _squeeze_depth(a: np.ndarray) -> np.ndarray:
    return a[..., 0] if a.ndim == 4 and a.shape[-1] == 1 else a


class DepthAccumulator(_Accumulator):
    """Depth over pixels with target > 0: ``abs_err`` mean |d - d*| and ``rmse`` (target
    units), ``rel_err`` mean |d - d*| / d* (fraction), ``delta{1,2,3}`` % of pixels with
    max(d/d*, d*/d) < 1.25^k (a prediction <= 0 never counts as within)."""

    def reset_state(self) -> None:
        self.count = 0
        self.sums = dict.fromkeys(("abs", "rel", "sq", "d1", "d2", "d3"), 0.0)

    def update_state(self, y_true, y_pred) -> None:
        t = _squeeze_depth(_np(y_true).astype(np.float64))
        p = _squeeze_depth(_np(y_pred).astype(np.float64))
        if t.shape != p.shape:
            raise self._shape_error(t, p, "(B, H, W, 1) for both")
        valid = t > 0
        t, p = t[valid], p[valid]
        err = np.abs(p - t)
        ratio = np.full(t.shape, np.inf)
        pos = p > 0
        ratio[pos] = np.maximum(p[pos] / t[pos], t[pos] / p[pos])
        self.count += int(t.size)
        self.sums["abs"] += err.sum()
        self.sums["rel"] += (err / t).sum()
        self.sums["sq"] += (err**2).sum()
        for k in (1, 2, 3):
            self.sums[f"d{k}"] += float((ratio < 1.25**k).sum())

    def _all_metrics(self) -> dict[str, float]:
        n, s = self.count, self.sums
        mean = (lambda v: v / n) if n else (lambda v: float("nan"))
        out = {"abs_err": mean(s["abs"]), "rel_err": mean(s["rel"]), "rmse": mean(s["sq"]) ** 0.5}
        out.update({f"delta{k}": _pct(s[f"d{k}"], n) for k in (1, 2, 3)})
        return out


NORMAL_THRESHOLDS = (11.25, 22.5, 30.0, 45.0)


class NormalsAccumulator(_Accumulator):
    """Normals over pixels with a non-zero target: angle between prediction and target
    (both normalised) in degrees; ``mean_angle``, ``median_angle`` (exact: the angles are
    kept, as float32), ``within_T`` % of pixels with angle < T degrees. A zero prediction
    counts as 90 degrees."""

    def reset_state(self) -> None:
        self.angles: list[np.ndarray] = []
        self.sum = 0.0
        self.within = dict.fromkeys(NORMAL_THRESHOLDS, 0)

    def update_state(self, y_true, y_pred) -> None:
        t, p = _np(y_true).astype(np.float64), _np(y_pred).astype(np.float64)
        if t.shape != p.shape or t.shape[-1] != 3:
            raise self._shape_error(t, p, "(B, H, W, 3) for both")
        t, p = t.reshape(-1, 3), p.reshape(-1, 3)
        t_norm = np.linalg.norm(t, axis=-1)
        valid = (t_norm > 0) & np.isfinite(t_norm)
        t = t[valid] / t_norm[valid, None]
        p = p[valid] / np.maximum(np.linalg.norm(p[valid], axis=-1, keepdims=True), 1e-12)
        angle = np.degrees(np.arccos(np.clip((t * p).sum(-1), -1.0, 1.0)))
        self.angles.append(angle.astype(np.float32))
        self.sum += angle.sum()
        for thr in NORMAL_THRESHOLDS:
            self.within[thr] += int((angle < thr).sum())

    def _all_metrics(self) -> dict[str, float]:
        n = sum(a.size for a in self.angles)
        angles = np.concatenate(self.angles) if n else np.zeros(0)
        out = {
            "mean_angle": self.sum / n if n else float("nan"),
            "median_angle": float(np.median(angles)) if n else float("nan"),
        }
        out.update({f"within_{thr:g}": _pct(self.within[thr], n) for thr in NORMAL_THRESHOLDS})
        return out


class BinaryAccumulator(_Accumulator):
    """Binary attributes, ``y_pred`` logits (B, K) thresholded at 0, targets in {0, 1}
    (negative = ignore). ``accuracy``: mean over attributes of per-attribute accuracy (%);
    ``f1``: mean over attributes of positive-class F1 (%), attributes with no positive in
    truth or prediction (F1 undefined) left out of the mean."""

    def reset_state(self) -> None:
        k = self.task.output_channels
        self.counts = {key: np.zeros(k, np.int64) for key in ("tp", "fp", "fn", "tn")}

    def update_state(self, y_true, y_pred) -> None:
        t, p = _np(y_true).astype(np.float64), _np(y_pred).astype(np.float64)
        k = self.task.output_channels
        if t.shape != p.shape or t.shape[-1] != k:
            raise self._shape_error(t, p, f"(B, {k}) for both")
        t, p = t.reshape(-1, k), p.reshape(-1, k)
        valid, tpos, ppos = t >= 0, t > 0.5, p > 0
        for key, sel in (
            ("tp", tpos & ppos), ("fp", ~tpos & ppos), ("fn", tpos & ~ppos), ("tn", ~tpos & ~ppos)
        ):  # fmt: skip
            self.counts[key] += (sel & valid).sum(0)

    def _all_metrics(self) -> dict[str, float]:
        c = self.counts
        n = c["tp"] + c["fp"] + c["fn"] + c["tn"]
        return {
            "accuracy": _mean_pct(c["tp"] + c["tn"], n),
            "f1": _mean_pct(2 * c["tp"], 2 * c["tp"] + c["fp"] + c["fn"]),
        }


def make_accumulator(task: "Task") -> _Accumulator:
    """The accumulator for a task's kind (same as ``task.accumulator()``)."""
    cls = {"depth": DepthAccumulator, "normals": NormalsAccumulator, "binary": BinaryAccumulator}
    return cls.get(task.kind, ConfusionAccumulator)(task)
