"""The end-to-end demo: a compressed multi-task ResNet against a dense one trained as long.

On ``synthetic_scenes`` (segmentation + depth + normals), with one fixed training budget:

1. train a dense multi-task ``mtl_resnet`` (the parent) for ``dense_epochs``;
2. from the parent's weights, remove ``target`` of the shared encoder's channels over
   ``find_epochs``: iterative Taylor pruning with training in between (Garg et al. 2023,
   ``method="prune"``, the default: it keeps the most quality when starting from trained
   weights) or channel-wise group lasso with the proximal step until ``target`` of the
   shared channels are exactly zero (Upadhyay et al. 2024, ``method="sparsity"``). The
   default budget spends the larger part of the epochs here, training while pruning, at the
   dense model's learning rate (2e-3, for pruning and fine-tuning): at the same 24 epochs,
   8 dense + 10 pruning + 6 fine-tuning reached Δm +1.3% at 2e-3 against −4.1% at 1e-3, and
   16 + 2 + 6 −9.3% (``benchmarks/recipes.py --preset demo --splits ...``, the
   experiment table in docs/benchmarks.md);
3. strip the dead channels (``strip_channels``) and check that the stripped model computes
   what the sparse one does;
4. fine-tune the stripped model for ``finetune_epochs`` with a cosine-decay learning rate and
   uncertainty task weighting, on labels (``distill=True`` distils from the dense parent with
   ``tfmot_mtl.distill``; in this short budget the parent is far from converged and
   distilling from it costs accuracy, see ``benchmarks/recipes.py``);
5. the fair baseline: a dense model trained for the same total number of epochs as the
   compressed one has seen (``dense_epochs + find_epochs + finetune_epochs``). By default
   (``baseline="continue"``) it is a copy of the parent trained on for ``find_epochs +
   finetune_epochs`` more, with a new cosine decay: the compressed model's schedule without
   the pruning. Seed 0 of this setting: it scored delta_m +1.3% against a dense model
   trained 24 epochs from scratch (``baseline="scratch"``), so it is the stronger baseline,
   and it does not train the parent's 8 epochs twice (~95 s of the 10-minute budget);
6. print one table (params, MACs, epochs, shared-channel sparsity, every task metric,
   delta_m vs the same-budget dense model) and write models, ``report.json`` and plots;
7. on LiteRT, the runtime Android ships: the same-budget dense and the compressed model in
   float32 and full int8 (calibrated on training images), every task metric on the first
   ``lite_batches`` test batches (128 images; the reference's Keras metrics on the same ones),
   file size, median latency (1 thread, interleaved), Δm against the same-budget dense float
   Keras model and the max error against Keras; the compressed int8 model is written as a
   mobile bundle (``mobile_int8/``: ``model.tflite`` + ``model.json``) and ``report.json`` gets
   a ``lite`` section. A line says whether int8 or float32 is faster on this CPU.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, replace

import numpy as np

from tfmot_mtl.recipes import experiment as ex
from tfmot_mtl.utils.atomic import atomic_savefig


@dataclass(frozen=True)
class DemoConfig:
    """The data and model, the budget of each phase and the channel-finding recipe."""

    # 640 / 256 images are whole batches of 32 (a partial last batch is traced again): with the
    # LiteRT stage and the install, the demo fits 10 minutes on a 2-core CPU, and the
    # compressed model keeps Δm >= 0 against the same-budget dense one.
    n_train: int = 640
    n_test: int = 256
    resolution: int = 64
    width: float = 1.0
    lr: float = 2e-3
    batch_size: int = 32
    seed: int = 0
    method: str = "prune"
    criterion: str = "taylor"
    dense_epochs: int = 8
    find_epochs: int = 10
    finetune_epochs: int = 6
    finetune_lr: float = 2e-3
    l1: float = 0.3
    adapt_rate: float = 0.01
    target: float = 0.62
    l1_loss: float = 1e-5
    min_fraction: float = 0.1
    distill: bool = False
    temperature: float = 2.0
    student_loss_weight: float = 0.5
    weighting: str = "uncertainty"
    baseline: str = "continue"
    lite: bool = True
    lite_batches: int | None = 4

    @property
    def total_epochs(self) -> int:
        return self.dense_epochs + self.find_epochs + self.finetune_epochs


COMPRESSED = "compressed (pruned, stripped, fine-tuned)"

# The metrics delta_m averages over (the NYU-v2 convention of the multi-task literature).
PRIMARY_METRICS = {"segmentation": ["miou", "pixel_acc"], "depth": ["abs_err", "rel_err"],
                   "normals": ["mean_angle", "median_angle"]}

PRESETS = {
    "default": DemoConfig(),
    "full": DemoConfig(n_train=5000, n_test=1000, width=1.5, dense_epochs=15, find_epochs=18,
                       finetune_epochs=9),
    "fast": DemoConfig(n_train=64, n_test=32, resolution=32, width=0.25, batch_size=16,
                       dense_epochs=1, find_epochs=1, finetune_epochs=1, target=0.5),
}


def run_demo(out: str = "saved_models/demo", full: bool = False, fast: bool = False,
             config: DemoConfig | None = None, verbose: int = 2) -> dict:
    """Runs the demo and returns the report dict (also written to ``out/report.json``)."""
    from tfmot_mtl import recipes
    from tfmot_mtl.sparsity import sparsity_report
    from tfmot_mtl.strip import strip_channels

    cfg = config or PRESETS["full" if full else "fast" if fast else "default"]
    if cfg.baseline not in recipes.BASELINES:
        raise ValueError(f"DemoConfig.baseline must be one of {recipes.BASELINES}, got {cfg.baseline!r}.")
    os.makedirs(out, exist_ok=True)
    start = time.time()
    clock = _PhaseClock()
    print(f"[demo] data: synthetic_scenes {cfg.n_train} train / {cfg.n_test} test at "
          f"{cfg.resolution}x{cfg.resolution}")
    data = ex.load_data("synthetic_scenes", n_train=cfg.n_train, n_test=cfg.n_test,
                        batch_size=cfg.batch_size, resolution=cfg.resolution, seed=cfg.seed)

    def build():
        return ex.build_model("mtl_resnet", data.tasks, data.input_shape, width=cfg.width, seed=cfg.seed)

    clock.end("data")
    print(f"[demo] 1/6 dense mtl_resnet (the parent), {cfg.dense_epochs} epochs")
    dense = recipes.train_dense(build(), data, cfg.dense_epochs, cfg.lr, verbose=verbose)

    clock.end("dense parent")
    if cfg.method == "prune":
        how = f"iterative {cfg.criterion} pruning (Garg et al. 2023)"
        options = {"criterion": cfg.criterion}
    else:
        how = "group sparsity with the proximal step (Upadhyay et al. 2024)"
        options = {"l1": cfg.l1, "l1_loss": cfg.l1_loss, "adapt_rate": cfg.adapt_rate}
    print(f"[demo] 2/6 from the parent's weights, {how} of {100 * cfg.target:.0f}% of the shared "
          f"channels, {cfg.find_epochs} epochs")
    sparse, masks, _ = recipes.find_channels(dense, data, cfg.method, cfg.target, cfg.find_epochs,
                                             lr=cfg.finetune_lr, groups="shared", options=options,
                                             verbose=verbose, min_fraction=cfg.min_fraction)
    pattern_png = os.path.join(out, "sparsity_pattern.png")
    sparsity = sparsity_report(sparse, groups="shared", plot_path=pattern_png)

    clock.end("find channels")
    print("[demo] 3/6 strip the dead channels")
    small, strip_report = strip_channels(sparse, masks)
    parity = _parity(sparse, small, data)
    before = ex.evaluate(small, data)

    clock.end("strip")
    print(f"[demo] 4/6 fine-tune the stripped model, {cfg.finetune_epochs} epochs"
          + (", distilled from the dense parent" if cfg.distill else ", on labels"))
    recipes.finetune(small, data, cfg.finetune_epochs, teacher=dense if cfg.distill else None, lr=cfg.finetune_lr,
                     weighting=cfg.weighting, temperature=cfg.temperature,
                     student_loss_weight=cfg.student_loss_weight, verbose=verbose)

    clock.end("fine-tune")
    how = (f"the parent trained {cfg.find_epochs + cfg.finetune_epochs} more epochs"
           if cfg.baseline == "continue" else "from scratch")
    print(f"[demo] 5/6 dense mtl_resnet with the same total budget, {cfg.total_epochs} epochs ({how})")
    budget = recipes.Epochs(cfg.dense_epochs, cfg.find_epochs, cfg.finetune_epochs)
    baseline = recipes.train_same_budget(dense, data, budget, cfg.lr, cfg.baseline, build=build,
                                         verbose=verbose)
    clock.end("same-budget dense")

    from tfmot_mtl.profile import profile
    from tfmot_mtl.tasks import delta_m

    results = {"dense, same budget": ex.evaluate(baseline, data), "dense parent": ex.evaluate(dense, data),
               COMPRESSED: ex.evaluate(small, data)}
    reference = results["dense, same budget"]
    epochs = {"dense, same budget": cfg.total_epochs, "dense parent": cfg.dense_epochs,
              COMPRESSED: cfg.total_epochs}
    models = {"dense, same budget": baseline, "dense parent": dense, COMPRESSED: small}
    rows = {}
    for name, model in models.items():
        prof = profile(model)
        rows[name] = {"params": prof.total_params, "macs": prof.total_macs, "epochs": epochs[name],
                      "channel_sparsity": sparsity["channel_sparsity"] if model is small else 0.0,
                      "metrics": results[name],
                      "delta_m": delta_m(results[name], reference, data.tasks, PRIMARY_METRICS)}
    compressed = rows[COMPRESSED]
    report = {
        "config": asdict(cfg), "seconds": round(time.time() - start, 1), "rows": rows,
        "budget": {"dense_epochs": cfg.dense_epochs, "find_epochs": cfg.find_epochs,
                   "finetune_epochs": cfg.finetune_epochs, "total_epochs": cfg.total_epochs,
                   "same_budget_dense_epochs": cfg.total_epochs, "same_budget_dense": cfg.baseline},
        "delta_m_vs_same_budget_dense": compressed["delta_m"],
        "delta_m_before_finetune": delta_m(before, reference, data.tasks, PRIMARY_METRICS),
        "macs_reduction": rows["dense, same budget"]["macs"] / compressed["macs"],
        "sparsity": sparsity, "strip": strip_report.to_dict()["totals"],
        "strip_parity_max_rel_err": parity,
    }
    clock.end("evaluate")
    ex.save_model(dense, os.path.join(out, "dense.keras"))
    ex.save_model(baseline, os.path.join(out, "dense_same_budget.keras"))
    ex.save_model(small, os.path.join(out, "sparse_stripped.keras"))
    _plot_metrics(rows, os.path.join(out, "dense_vs_sparse.png"))
    print_table(rows, data.tasks)
    print(f"[demo] shared-channel sparsity {100 * sparsity['channel_sparsity']:.1f}%, "
          f"{report['macs_reduction']:.1f}x fewer MACs, delta_m vs the dense model trained as long "
          f"({cfg.total_epochs} epochs) {compressed['delta_m']:+.2f}% (before fine-tuning "
          f"{report['delta_m_before_finetune']:+.2f}%), strip parity {parity:.2e}")
    if cfg.lite:
        report["lite"] = _lite_stage(baseline, small, data, out, cfg.lite_batches)
        clock.end("LiteRT")
    report["phase_seconds"] = clock.seconds
    report["seconds"] = round(time.time() - start, 1)
    ex.write_json(os.path.join(out, "report.json"), report)
    print(f"[demo] {report['seconds']:.0f} s. Wrote {out}/report.json, models, plots"
          f"{' and the int8 mobile bundle ' + report['lite']['bundle'] if cfg.lite else ''}.")
    return report


def _lite_stage(baseline, small, data, out: str, lite_batches: int | None) -> dict:
    """Float32 and int8 files of the same-budget dense and the compressed model, measured on
    LiteRT against the same-budget dense float Keras model (on the same ``lite_batches`` test
    batches); the compressed int8 bundle saved."""
    from rich.console import Console

    from tfmot_mtl.lite import save_bundle
    from tfmot_mtl.lite.deploy import deployment_report

    print("[demo] 6/6 on LiteRT: float32 and int8 (calibrated on training images) files of both models")
    deployment = deployment_report({"dense, same budget": baseline, "compressed": small}, data.test, data.tasks,
                                   "dense, same budget", calibration=data.train, metrics=PRIMARY_METRICS,
                                   max_batches=lite_batches, verbose=False)
    Console(width=200).print(deployment.table("On LiteRT (1 thread); Δm vs the same-budget dense float Keras model"))
    print(f"[demo] {deployment.recommendation}")
    if deployment.over_limit:
        print(f"[demo] conversion costs more than 1 point / 1% on: {', '.join(deployment.over_limit)}")
    bundle = os.path.join(out, "mobile_int8")
    save_bundle(small, deployment.tflite[("compressed", "int8")], bundle, tasks=data.tasks)
    return {**deployment.to_dict(), "bundle": bundle}


class _PhaseClock:
    """Wall time of each demo phase, printed as it ends (the demo's budget is 10 minutes)."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._last = time.time()

    def end(self, phase: str) -> None:
        now = time.time()
        self.seconds[phase] = round(now - self._last, 1)
        self._last = now
        print(f"[demo]     {phase}: {self.seconds[phase]:.0f} s")


def _parity(a, b, data) -> float:
    x, _ = next(iter(data.test))
    ya, yb = a.predict_on_batch(x), b.predict_on_batch(x)
    return float(max(np.abs(ya[k] - yb[k]).max() / max(np.abs(ya[k]).max(), 1e-6) for k in ya))


def print_table(rows: dict, tasks) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Dense vs compressed multi-task model (synthetic_scenes); "
                        "epochs = total training budget")
    table.add_column("model")
    for col in ("epochs", "params", "MACs", "shared sparsity"):
        table.add_column(col, justify="right")
    metric_cols = [(t.name, m) for t in tasks for m in PRIMARY_METRICS[t.name]]
    for task, metric in metric_cols:
        table.add_column(f"{task}\n{metric}", justify="right")
    table.add_column("Δm vs dense\nsame budget", justify="right")
    for name, row in rows.items():
        cells = [str(row["epochs"]), f"{row['params']:,}", f"{row['macs']:,}",
                 f"{100 * row['channel_sparsity']:.1f}%"]
        cells += [f"{row['metrics'][t][m]:.3f}" for t, m in metric_cols]
        table.add_row(name, *cells, f"{row['delta_m']:+.2f}%")
    Console(width=200).print(table)


def _plot_metrics(rows: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(rows)
    colors = ["grey", "silver", "tab:green"][: len(names)]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3))
    for ax, key, title in zip(axes, ("params", "macs", "delta_m"),
                              ("parameters", "MACs per image", "Δm vs dense, same budget (%)")):
        ax.bar(names, [rows[n][key] for n in names], color=colors)
        ax.set_title(title)
        ax.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=100)
    plt.close(fig)


def config_with(**changes) -> DemoConfig:
    """The default configuration with some fields changed (for tests and benchmarks)."""
    return replace(PRESETS["default"], **changes)
