"""Evaluate a multi-task model over a dataset, compare results with Δm, print tables."""
from __future__ import annotations

import io
import math
from typing import Any, Callable, Mapping, Sequence, Union

import keras

from tfmot_mtl.tasks.metrics import HIGHER_IS_BETTER
from tfmot_mtl.tasks.specs import Task, as_task_list

Results = Mapping[str, Mapping[str, float]]


def _task_list(tasks) -> list[Task]:
    return as_task_list(tasks)


def _split_batch(batch) -> tuple[Any, Any]:
    if isinstance(batch, (tuple, list)) and len(batch) in (2, 3):
        return batch[0], batch[1]
    raise ValueError(
        "dataset must yield (inputs, {task_name: target}) or (inputs, targets, weights) "
        f"tuples, got {type(batch).__name__}."
    )


def evaluate(
    model: Union[keras.Model, Callable[[Any], Mapping[str, Any]]],
    dataset,
    tasks,
    steps: int | None = None,
    verbose: int = 0,
) -> dict[str, dict[str, float]]:
    """Exact metrics of ``model`` over ``dataset`` for every task.

    Args:
        model: a Keras model (run with ``predict_on_batch``, i.e. inference mode) or any
            callable ``inputs -> {task_name: prediction}`` (e.g. a TFLite runner).
        dataset: iterable (e.g. ``tf.data.Dataset``) of ``(inputs, {task_name: target})``
            batches; a third element (sample weights) is ignored.
        tasks: Tasks (sequence or ``{name: Task}``) to score.
        steps: stop after this many batches (default: the whole dataset).
        verbose: 1 shows a Keras progress bar.

    Returns:
        ``{task_name: {metric: value}}`` (units: see :mod:`tfmot_mtl.tasks.metrics`).

    Raises:
        ValueError: a task is missing from the model outputs or from the targets, or the
            dataset yields no batch.
    """
    tasks = _task_list(tasks)
    accumulators = {t.name: t.accumulator() for t in tasks}
    predict = model.predict_on_batch if hasattr(model, "predict_on_batch") else model
    bar = keras.utils.Progbar(steps, unit_name="batch") if verbose else None
    seen = 0
    for batch in dataset:
        if steps is not None and seen >= steps:
            break
        x, y = _split_batch(batch)
        outputs = predict(x)
        if not isinstance(outputs, Mapping) and len(tasks) == 1:
            outputs = {tasks[0].name: outputs}
        if not isinstance(y, Mapping) and len(tasks) == 1:
            y = {tasks[0].name: y}
        for task in tasks:
            for what, found in (("model outputs", outputs), ("dataset targets", y)):
                keys = sorted(found) if isinstance(found, Mapping) else type(found).__name__
                if not isinstance(found, Mapping) or task.name not in found:
                    raise ValueError(
                        f"Task {task.name!r} is missing from the {what} (found {keys})."
                    )
            accumulators[task.name].update_state(y[task.name], outputs[task.name])
        seen += 1
        if bar is not None:
            bar.update(seen)
    if seen == 0:
        raise ValueError("evaluate: the dataset yielded no batches.")
    return {name: acc.result() for name, acc in accumulators.items()}


# -------------------------------------------------------------------------- delta m


def _selection(results: Results, baseline: Results, tasks, metrics) -> dict[str, dict[str, bool]]:
    """{task: {metric: higher_is_better}} to compare, with clear errors for gaps."""
    if tasks is None:
        items = list(baseline)
    else:
        items = list(tasks.values() if isinstance(tasks, Mapping) else tasks)
    chosen: dict[str, dict[str, bool]] = {}
    for item in items:
        name = item.name if isinstance(item, Task) else str(item)
        for what, res in (("results", results), ("baseline", baseline)):
            if name not in res:
                raise ValueError(
                    f"delta_m: task {name!r} is missing from {what} (has {sorted(res)})."
                )
        if isinstance(metrics, Mapping):
            if name not in metrics:
                raise ValueError(f"delta_m: metrics mapping has no entry for task {name!r}.")
            names = list(metrics[name])
        elif metrics is not None:
            names = [m for m in metrics if m in baseline[name]]
        else:
            names = list(item.metrics) if isinstance(item, Task) else list(baseline[name])
        if not names:
            raise ValueError(f"delta_m: no metric selected for task {name!r}.")
        directions = dict(item.higher_is_better) if isinstance(item, Task) else {}
        chosen[name] = {}
        for m in names:
            if m not in directions and m not in HIGHER_IS_BETTER:
                raise ValueError(
                    f"delta_m: direction of metric {m!r} (task {name!r}) is unknown; "
                    "pass tasks=[Task, ...] or choose metrics=."
                )
            chosen[name][m] = directions.get(m, HIGHER_IS_BETTER.get(m))
    return chosen


def delta_m_breakdown(
    results: Results, baseline: Results, tasks=None, metrics=None
) -> dict[str, dict[str, float]]:
    """Signed relative change per task and metric, in %: (−1)^{l_m} (M_m − B_m)/|B_m| · 100.

    Positive means better than the baseline. ``tasks``: Tasks or task names (default: the
    baseline's tasks); a Task brings its ``metrics`` and directions, a name uses every
    metric in the baseline with directions from ``HIGHER_IS_BETTER``. ``metrics``: a list
    applied to every task (those the task has) or ``{task: [metrics]}``.
    """
    out: dict[str, dict[str, float]] = {}
    for name, chosen in _selection(results, baseline, tasks, metrics).items():
        out[name] = {}
        for m, higher in chosen.items():
            for what, res in (("results", results), ("baseline", baseline)):
                if m not in res[name]:
                    raise ValueError(f"delta_m: metric {m!r} of task {name!r} missing from {what}.")
            r, b = float(results[name][m]), float(baseline[name][m])
            if math.isnan(r) or math.isnan(b):
                raise ValueError(
                    f"delta_m: metric {m!r} of task {name!r} is NaN; leave it out with metrics=."
                )
            if b == 0:
                raise ValueError(
                    f"delta_m: baseline {m!r} of task {name!r} is 0, so the relative change is "
                    "undefined; leave it out with metrics= or use another baseline."
                )
            out[name][m] = (1.0 if higher else -1.0) * (r - b) / abs(b) * 100.0
    return out


def delta_m_per_task(
    results: Results, baseline: Results, tasks=None, metrics=None
) -> dict[str, float]:
    """Mean signed relative change (%) over each task's metrics (see :func:`delta_m`)."""
    parts = delta_m_breakdown(results, baseline, tasks, metrics)
    return {name: sum(v.values()) / len(v) for name, v in parts.items()}


def delta_m(results: Results, baseline: Results, tasks=None, metrics=None) -> float:
    """Multi-task performance change Δm in % (Maninis et al. 2019, Vandenhende et al. 2021).

    Δm = (1/T) Σ_t (1/|M_t|) Σ_{m ∈ M_t} (−1)^{l_m} (M_m − B_m) / B_m · 100,
    with l_m = 1 when lower is better for metric m. Positive = better than the baseline
    (e.g. the dense multi-task model, or single-task models with the same backbone).
    ``|B_m|`` is used in the denominator, identical for the usual positive metrics.
    ``tasks`` / ``metrics`` select what is compared (see :func:`delta_m_breakdown`).

    Raises:
        ValueError: a task or metric is missing, NaN, or its baseline value is 0.
    """
    per_task = delta_m_per_task(results, baseline, tasks, metrics)
    return sum(per_task.values()) / len(per_task)


def defined_metrics(baseline: Results, tasks) -> dict[str, list[str]]:
    """Per task, its metrics whose ``baseline`` value is not 0 (the ``metrics=`` of a Δm that is
    defined: a barely trained model can score exactly 0, e.g. the F1 of attributes it never
    predicts positive); tasks left with none map to an empty list."""
    return {t.name: [m for m in t.metrics if baseline[t.name][m] != 0] for t in tasks}


# --------------------------------------------------------------------------- tables

_UNITS = {"abs_err": "", "rel_err": "", "rmse": "", "mean_angle": "°", "median_angle": "°"}


def _fmt(v: float) -> str:
    if v is None or math.isnan(v):
        return "nan"
    return f"{v:.2f}" if abs(v) >= 10 else f"{v:.4f}"


def _change(results: Results, baseline: Results, name: str, metric: str) -> float | None:
    """One metric's signed relative change in %, None when it is undefined."""
    try:
        part = delta_m_breakdown(results, baseline, [name], {name: [metric]})
    except ValueError:
        return None
    return part[name][metric]


def _table(results: Results, title, baseline, tasks):
    from rich.table import Table

    table = Table(title=title)
    for col in ("task", "metric", "value") + (("baseline", "Δ %") if baseline else ()):
        table.add_column(col, justify="left" if col in ("task", "metric") else "right")
    for name, values in results.items():
        for i, (m, v) in enumerate(values.items()):
            arrow = {True: " ↑", False: " ↓"}.get(HIGHER_IS_BETTER.get(m), "")
            unit = _UNITS.get(m, "%" if m in HIGHER_IS_BETTER else "")
            row = [name if i == 0 else "", f"{m}{f' ({unit})' if unit else ''}{arrow}", _fmt(v)]
            if baseline:
                b = baseline.get(name, {}).get(m)
                d = _change(results, baseline, name, m) if b is not None else None
                row += [_fmt(b) if b is not None else "", f"{d:+.2f}" if d is not None else "n/a"]
            table.add_row(*row)
        table.add_section()
    if baseline:
        try:
            dm = delta_m(results, baseline, tasks)
            table.caption = f"Δm = {dm:+.2f} % (positive = better than baseline)"
        except ValueError as err:
            table.caption = f"Δm undefined: {err}"
    return table


def format_results(
    results: Results, title: str | None = None, baseline: Results | None = None, tasks=None
) -> str:
    """Results as a plain-text table (task, metric with unit and ↑/↓, value); with a
    ``baseline``, also the baseline value, the signed change Δ % and Δm."""
    from rich.console import Console

    buffer = io.StringIO()
    console = Console(file=buffer, width=100, color_system=None, force_terminal=False)
    console.print(_table(results, title, baseline, tasks))
    return buffer.getvalue()


def print_results(
    results: Results, title: str | None = None, baseline: Results | None = None, tasks=None
) -> None:
    """Print :func:`format_results`' table to the terminal with rich."""
    from rich.console import Console

    Console().print(_table(results, title, baseline, tasks))


__all__: Sequence[str] = (
    "evaluate", "delta_m", "delta_m_breakdown", "delta_m_per_task",
    "format_results", "print_results",
)  # fmt: skip
