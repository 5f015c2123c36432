"""The deployment table: Keras models converted at several quantizations and measured on LiteRT.

    report = deploy.deployment_report({"dense": dense, "compressed": small}, test, tasks,
                                      reference=keras_metrics_of_the_baseline, calibration=train)
    print(report.table())

For every model and quantization: file size (raw and gzip), LiteRT median latency (1 thread,
all files timed interleaved), every task metric on LiteRT on the test set, Δm against a
reference (e.g. the same-budget dense float Keras model), the max error against the model's
own Keras outputs, and what the conversion cost each task (LiteRT minus Keras of the same
model, on the primary metric). A task loses "too much" when it falls more than 1 point
(accuracy, mIoU: metrics in %) or more than 1% relative (errors).
"""
from __future__ import annotations

import dataclasses
import gzip
from typing import Any, Mapping, Sequence

from tfmot_mtl.lite.convert import convert_all
from tfmot_mtl.lite.evaluate import cpu_features, interleaved_latency, parity, recommend_quantization
from tfmot_mtl.lite.model import LiteModel

POINTS_LIMIT = 1.0     # percentage points, for metrics where higher is better
RELATIVE_LIMIT = 1.0   # percent of the value, for errors


@dataclasses.dataclass
class Deployment:
    """Rows of (model, quantization) measured on LiteRT, the CPU and a recommendation."""

    rows: list[dict]
    cpu: dict
    recommendation: str
    tflite: dict = dataclasses.field(repr=False)  # {(model, quantization): .tflite bytes}

    def to_dict(self) -> dict:
        return {"rows": self.rows, "cpu": self.cpu, "recommendation": self.recommendation}

    def table(self, title: str = "On LiteRT (1 thread)") -> Any:
        """A rich Table (print it with rich's Console)."""
        from rich.table import Table

        table = Table(title=f"{title}, {self.cpu['arch']} ({', '.join(self.cpu['features']) or '-'})")
        for col in ("model", "quant.", "size KiB", "gzip KiB", "median ms"):
            table.add_column(col, justify="left" if col in ("model", "quant.") else "right")
        primary = [(t, m) for t, m in self.rows[0]["primary"].items()] if self.rows else []
        for task, metric in primary:
            table.add_column(f"{task}\n{metric}", justify="right")
        for col in ("Δm vs\nreference", "worst task\nvs own Keras", "max abs err\nvs Keras"):
            table.add_column(col, justify="right")
        for r in self.rows:
            worst = min(r["task_cost"].items(), key=lambda kv: kv[1]["score"]) if r["task_cost"] else None
            worst_text = "" if worst is None else f"{worst[0]} {worst[1]['text']}"
            table.add_row(r["model"], r["quantization"], f"{r['size_bytes'] / 1024:.0f}",
                          f"{r['gzip_bytes'] / 1024:.0f}", f"{r['median_ms']:.3f}",
                          *[f"{r['metrics'][t][m]:.3f}" for t, m in primary],
                          f"{round(r['delta_m'], 2) or 0.0:+.2f}%", worst_text, f"{r['max_abs_error']:.2g}")
        return table

    @property
    def over_limit(self) -> list[str]:
        """``"model/quantization/task"`` for every task the conversion cost more than the limit."""
        return [f"{r['model']}/{r['quantization']}/{t}" for r in self.rows
                for t, c in r["task_cost"].items() if c["over_limit"]]


def task_cost(lite_metrics: Mapping, keras_metrics: Mapping, tasks: Sequence, primary: Mapping[str, str]) -> dict:
    """Per task: the primary metric on LiteRT minus on Keras, as points or relative change."""
    out = {}
    for task in tasks:
        metric = primary[task.name]
        got, ref = float(lite_metrics[task.name][metric]), float(keras_metrics[task.name][metric])
        if task.higher_is_better[metric]:
            points = got - ref
            out[task.name] = {"metric": metric, "points": points, "score": points / POINTS_LIMIT,
                              "over_limit": points < -POINTS_LIMIT, "text": f"{points:+.2f} pts"}
        else:
            relative = 100.0 * (ref - got) / max(abs(ref), 1e-12)  # positive = better
            out[task.name] = {"metric": metric, "relative": relative, "score": relative / RELATIVE_LIMIT,
                              "over_limit": relative < -RELATIVE_LIMIT, "text": f"{-relative:+.2f}% err"}
    return out


def deployment_report(models: Mapping[str, Any], test: Any, tasks: Sequence, reference: Mapping | str,
                      calibration: Any, quantizations: Sequence[str | None] = (None, "int8"),
                      metrics: Mapping[str, Sequence[str]] | None = None, calibration_steps: int = 8,
                      runs: int = 100, max_batches: int | None = None, verbose: bool = True) -> Deployment:
    """Converts each Keras model at each quantization and measures it on LiteRT.

    Args:
        models: ``{name: keras model}``.
        test: the test set, ``(inputs, targets)`` batches.
        tasks: the tasks (each with an accumulator and metric directions).
        reference: Keras metrics ``{task: {metric: value}}`` that Δm is measured against, or
            the name of one of ``models``: its Keras metrics on the same test batches.
        calibration: batches of training inputs for the int8 quantizations.
        quantizations: e.g. ``(None, "int8")``; None is float32.
        metrics: ``{task: [metrics]}`` that Δm averages (default: every metric of the task); the
            first of each is the task's primary metric.
        calibration_steps: calibration batches.
        runs: timed runs per file (interleaved).
        max_batches: evaluate on the first this many test batches (None: all).
        verbose: print a line per conversion.
    """
    from tfmot_mtl.tasks import delta_m

    metrics = {t.name: list(metrics[t.name]) if metrics and t.name in metrics else list(t.metrics) for t in tasks}
    primary = {name: chosen[0] for name, chosen in metrics.items()}
    files, measured = {}, {}
    for name, model in models.items():
        if verbose:
            print(f"[lite] {name}: convert to {[q or 'float32' for q in quantizations]} and evaluate on LiteRT",
                  flush=True)
        converted = convert_all(model, quantizations, representative_data=calibration,
                                num_calibration_steps=calibration_steps, verbose=False)
        for label, content in converted.items():
            files[(name, label)] = content
            measured[(name, label)] = parity(model, LiteModel(content), test, tasks=tasks, max_batches=max_batches)
    if isinstance(reference, str):
        if reference not in models:
            raise ValueError(f"reference {reference!r} is not one of the models {list(models)}")
        first = next(key for key in measured if key[0] == reference)
        reference = {task: sides["keras"] for task, sides in measured[first]["metrics"].items()}
    latency = interleaved_latency({key: LiteModel(content) for key, content in files.items()}, runs)
    rows = []
    for (name, label), content in files.items():
        checked = measured[(name, label)]
        on_lite = {task: sides["tflite"] for task, sides in checked["metrics"].items()}
        on_keras = {task: sides["keras"] for task, sides in checked["metrics"].items()}
        rows.append({"model": name, "quantization": label, "size_bytes": len(content),
                     "gzip_bytes": len(gzip.compress(content)), **latency[(name, label)],
                     "metrics": on_lite, "keras_metrics": on_keras, "primary": primary,
                     "delta_m": delta_m(on_lite, reference, tasks, metrics),
                     "max_abs_error": checked["max_abs_error"],
                     "task_cost": task_cost(on_lite, on_keras, tasks, primary)})
    cpu = cpu_features()
    speed = {(r["model"], r["quantization"]): r["median_ms"] for r in rows}
    last = list(models)[-1]
    recommendation = (recommend_quantization(speed[(last, "float32")], speed[(last, "int8")], cpu)
                      if (last, "float32") in speed and (last, "int8") in speed else "")
    return Deployment(rows, cpu, recommendation, files)
