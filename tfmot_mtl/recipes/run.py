"""A whole recipe run with its fair baseline: the dense parent trained, compressed with
:func:`tfmot_mtl.compress`, and compared with a dense model trained for the same total budget."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import keras

from tfmot_mtl.recipes import experiment as ex
from tfmot_mtl.recipes.train import BASELINES, Epochs, train_dense, train_same_budget


@dataclass
class RecipeResult:
    """The three models of one recipe run and their comparison."""

    budget: Epochs
    dense: keras.Model
    compressed: keras.Model
    same_budget: keras.Model | None
    rows: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"budget": self.budget.to_dict(), "rows": self.rows, "seconds": round(self.seconds, 1),
                "info": {k: v for k, v in self.info.items() if k != "masks"}}


def run(data: Any, model: Any = "mtl_resnet", width: float = 1.0, method: str = "sparsity",
        target: float | None = 0.7, budget: Epochs = Epochs(12, 4, 4), lr: float = 2e-3,
        finetune_lr: float = 1e-3, distill: bool = True, weighting: Any = None,
        same_budget: bool = True, baseline: str = "continue", primary_metrics: Mapping | None = None,
        seed: int = 0, options: Mapping[str, Any] | None = None, log=print, verbose: int = 0,
        groups: Any = "all", target_macs: float | None = None, target_params: float | None = None,
        tasks: Any = None) -> RecipeResult:
    """Trains the dense parent, compresses it with :func:`tfmot_mtl.compress`, and trains the
    same-budget dense baseline (``baseline``: the parent trained on, or a model from scratch;
    see :func:`train_same_budget`).

    Args:
        data: an :class:`~tfmot_mtl.recipes.experiment.Data`, or plain ``(train, test)`` datasets of
            ``(inputs, {output: target})`` batches (tasks then come from ``tasks`` or the
            model's compiled losses).
        model: a reference architecture's name (:mod:`tfmot_mtl.models`), a Keras model (an
            untrained one; a copy is trained) or a function returning a new model.
        target: the share of the selected channels to remove; ``target_macs`` /
            ``target_params`` aim at a cost instead (see :func:`tfmot_mtl.compress`).
        groups: the channel groups the method acts on (:mod:`tfmot_mtl.selection`).

    ``rows`` has one entry per model ("dense parent", "compressed", "dense, same budget"):
    params, MACs, epochs, metrics and delta_m against the same-budget dense model (against
    the parent when ``same_budget=False``).
    """
    from tfmot_mtl.compress import compress
    from tfmot_mtl.profile import profile
    from tfmot_mtl.tasks import delta_m

    if baseline not in BASELINES:
        raise ValueError(f"`baseline` must be one of {BASELINES}, got {baseline!r}.")
    start = time.time()
    build = _builder(model, data, width, seed)
    data = _as_data(data, build, tasks)
    name = model if isinstance(model, str) else "model"
    log(f"[recipe] dense {name}: {budget.dense} epochs")
    dense = train_dense(build(), data, budget.dense, lr, verbose=verbose)
    targets = {"target_macs": target_macs, "target_params": target_params}
    if target_macs is None and target_params is None:
        targets["target_channels"] = target
    log(f"[recipe] {method} to {', '.join(f'{k}={v:g}' for k, v in targets.items() if v is not None)}: "
        f"{budget.find} epochs; strip; fine-tune {budget.finetune} epochs"
        f"{' distilled from the dense parent' if distill else ''}")
    result = compress(dense, data.train, validation=data.validation, tasks=data.tasks, method=method,
                      groups=groups, find_epochs=budget.find, finetune_epochs=budget.finetune, distill=distill,
                      lr=finetune_lr, weighting=weighting, options=options, verbose=verbose, **targets)
    small = result.model
    info = {"target": result.target, "strip": result.report.to_dict()["totals"], "masks": result.masks,
            "find": result.history.get("find", {}), "warnings": result.warnings}
    if same_budget:
        how = "the parent trained on" if baseline == "continue" else "from scratch"
        log(f"[recipe] dense {name}, same total budget: {budget.total} epochs ({how})")
        reference_model = train_same_budget(dense, data, budget, lr, baseline, verbose=verbose, build=build)
    else:
        reference_model = None
    models = {"dense parent": (dense, budget.dense), "compressed": (small, budget.total)}
    if reference_model is not None:
        models["dense, same budget"] = (reference_model, budget.total)
    results = {key: ex.evaluate(m, data) for key, (m, _) in models.items()}
    reference = results["dense, same budget" if reference_model is not None else "dense parent"]
    rows = {}
    for key, (m, epochs) in models.items():
        prof = profile(m)
        rows[key] = {"params": prof.total_params, "macs": prof.total_macs, "epochs": epochs,
                     "metrics": results[key],
                     "delta_m": delta_m(results[key], reference, data.tasks, primary_metrics)}
    return RecipeResult(budget, dense, small, reference_model, rows, info, time.time() - start)


def _builder(model: Any, data: Any, width: float, seed: int) -> Callable[[], keras.Model]:
    """A function returning a new, untrained model with deterministic initial weights."""
    if isinstance(model, str):
        if not isinstance(data, ex.Data):
            raise ValueError("a reference architecture by name needs `data` as an experiment.Data (its tasks "
                             "and input shape); with plain datasets pass your model as `model=`.")
        return lambda: ex.build_model(model, data.tasks, data.input_shape, width=width, seed=seed)
    if isinstance(model, keras.Model):
        template = model

        def copy() -> keras.Model:
            keras.utils.set_random_seed(seed)
            new = keras.models.clone_model(template)
            if getattr(template, "compiled", False):
                new.compile(loss=template.loss)
            return new
        return copy
    if callable(model):
        def fresh() -> keras.Model:
            keras.utils.set_random_seed(seed)
            return model()
        return fresh
    raise ValueError(f"`model` must be a reference architecture's name, a Keras model or a function returning "
                     f"one, got {type(model).__name__}.")


def _as_data(data: Any, build: Callable[[], keras.Model], tasks: Any) -> ex.Data:
    """``data`` as an experiment.Data: plain ``(train, test)`` get the tasks of ``build()``'s model."""
    if isinstance(data, ex.Data):
        return data
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise ValueError("`data` must be an experiment.Data or a pair (train, test) of datasets of "
                         f"(inputs, {{output: target}}) batches, got {type(data).__name__}.")
    from tfmot_mtl.tasks import infer_tasks
    from tfmot_mtl.tasks.data import as_dataset

    probe = build()
    train, test = (as_dataset(d, argument=a) for d, a in zip(data, ("train", "test")))
    return ex.Data("user", train, test, infer_tasks(probe, tasks), tuple(probe.inputs[0].shape[1:]))
