"""The end-to-end demo: dense vs group-sparse multi-task ResNet on synthetic_scenes, stripped.

1. train a dense multi-task ``mtl_resnet`` (segmentation + depth + normals);
2. train the same architecture from the same initial weights with channel-wise group
   lasso on the shared encoder (a small penalty in the loss, as in the paper) and a
   proximal step after every update that makes whole channels exactly zero; lambda of the
   proximal step grows until the target share of shared channels is dead, then the zero
   pattern is kept and the rest of training fine-tunes the survivors;
3. strip the dead channels (``strip_channels``) and check the stripped model computes
   what the sparse one does;
4. print one table (params, MACs, shared-channel sparsity, every task metric, delta_m vs
   dense) and write models, ``report.json`` and plots under ``out``.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, replace

import numpy as np

from tfmot_mtl import experiment as ex
from tfmot_mtl.atomic import atomic_savefig


@dataclass(frozen=True)
class DemoConfig(ex.TrainingConfig):
    """The training run plus the group-sparsity recipe."""

    l1: float = 0.3
    adapt_rate: float = 0.02
    target: float = 0.7
    l1_loss: float = 1e-5
    min_fraction: float = 0.1
    scale: str = "sqrt_group_size"
    mode: str = "plain"


# The metrics delta_m averages over (the NYU-v2 convention of the multi-task literature).
PRIMARY_METRICS = {"segmentation": ["miou", "pixel_acc"], "depth": ["abs_err", "rel_err"],
                   "normals": ["mean_angle", "median_angle"]}

PRESETS = {
    "default": DemoConfig(),
    "full": DemoConfig(n_train=5000, n_test=1000, epochs=30, width=1.5),
    "fast": DemoConfig(n_train=64, n_test=32, resolution=32, width=0.25, epochs=2, batch_size=16,
                       l1=0.2, adapt_rate=0.3, target=0.5),
}


def run_demo(out: str = "saved_models/demo", full: bool = False, fast: bool = False,
             config: DemoConfig | None = None, verbose: int = 2) -> dict:
    """Runs the demo and returns the report dict (also written to ``out/report.json``)."""
    from tfmot_mtl.profile import profile
    from tfmot_mtl.sparsity import ProximalGroupLasso, apply_group_sparsity, sparsity_report
    from tfmot_mtl.strip import strip_channels

    cfg = config or PRESETS["full" if full else "fast" if fast else "default"]
    os.makedirs(out, exist_ok=True)
    start = time.time()
    print(f"[demo] data: synthetic_scenes {cfg.n_train} train / {cfg.n_test} test at "
          f"{cfg.resolution}x{cfg.resolution}")
    data = ex.load_data("synthetic_scenes", n_train=cfg.n_train, n_test=cfg.n_test,
                        batch_size=cfg.batch_size, resolution=cfg.resolution, seed=cfg.seed)

    print(f"[demo] 1/3 dense mtl_resnet, {cfg.epochs} epochs")
    dense = ex.build_model("mtl_resnet", data.tasks, data.input_shape, width=cfg.width, seed=cfg.seed)
    ex.fit(dense, data, cfg.epochs, lr=cfg.lr, verbose=verbose)
    dense_results = ex.evaluate(dense, data)

    print(f"[demo] 2/3 group-sparse mtl_resnet (proximal {cfg.mode}, lambda {cfg.l1} growing "
          f"until {100 * cfg.target:.0f}% of shared channels are dead), same init")
    init = ex.build_model("mtl_resnet", data.tasks, data.input_shape, width=cfg.width, seed=cfg.seed)
    sparse = apply_group_sparsity(init, l1=cfg.l1_loss, layers="shared")
    prox = ProximalGroupLasso(l1=cfg.l1, layers="shared", mode=cfg.mode, target=cfg.target,
                              adapt_rate=cfg.adapt_rate, min_fraction=cfg.min_fraction,
                              scale=cfg.scale)
    ex.fit(sparse, data, cfg.epochs, lr=cfg.lr, callbacks=[prox], verbose=verbose)
    pattern_png = os.path.join(out, "sparsity_pattern.png")
    sparsity = sparsity_report(sparse, layers="shared", plot_path=pattern_png)

    print("[demo] 3/3 strip dead channels")
    small, strip_report = strip_channels(sparse)
    parity = _parity(sparse, small, data)
    small_results = ex.evaluate(small, data)

    from tfmot_mtl.task_eval import delta_m

    rows = {
        "dense": _row(dense, dense_results, dense_results, data, profile, 0.0),
        "sparse (stripped)": _row(small, small_results, dense_results, data, profile,
                                  sparsity["channel_sparsity"]),
    }
    report = {
        "config": asdict(cfg), "seconds": round(time.time() - start, 1), "rows": rows,
        "delta_m_vs_dense": delta_m(small_results, dense_results, data.tasks, PRIMARY_METRICS),
        "sparsity": sparsity, "strip": strip_report.to_dict()["totals"],
        "strip_parity_max_rel_err": parity,
    }
    ex.save_model(dense, os.path.join(out, "dense.keras"))
    ex.save_model(small, os.path.join(out, "sparse_stripped.keras"))
    ex.write_json(os.path.join(out, "report.json"), report)
    _plot_metrics(rows, os.path.join(out, "dense_vs_sparse.png"))
    print_table(rows, data.tasks)
    print(f"[demo] shared-channel sparsity {100 * sparsity['channel_sparsity']:.1f}%, "
          f"delta_m vs dense {report['delta_m_vs_dense']:+.2f}%, strip parity {parity:.2e}, "
          f"{report['seconds']:.0f} s. Wrote {out}/report.json, models and plots.")
    return report


def _parity(a, b, data) -> float:
    x, _ = next(iter(data.test))
    ya, yb = a.predict_on_batch(x), b.predict_on_batch(x)
    return float(max(np.abs(ya[k] - yb[k]).max() / max(np.abs(ya[k]).max(), 1e-6) for k in ya))


def _row(model, results, baseline, data, profile, sparsity) -> dict:
    from tfmot_mtl.task_eval import delta_m

    prof = profile(model)
    return {"params": prof.total_params, "macs": prof.total_macs, "channel_sparsity": sparsity,
            "metrics": results, "delta_m": delta_m(results, baseline, data.tasks, PRIMARY_METRICS)}


def print_table(rows: dict, tasks) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Dense vs group-sparse multi-task model (synthetic_scenes)")
    table.add_column("model")
    for col in ("params", "MACs", "shared sparsity"):
        table.add_column(col, justify="right")
    metric_cols = [(t.name, m) for t in tasks for m in PRIMARY_METRICS[t.name]]
    for task, metric in metric_cols:
        table.add_column(f"{task}\n{metric}", justify="right")
    table.add_column("Δm vs dense", justify="right")
    for name, row in rows.items():
        cells = [f"{row['params']:,}", f"{row['macs']:,}", f"{100 * row['channel_sparsity']:.1f}%"]
        cells += [f"{row['metrics'][t][m]:.3f}" for t, m in metric_cols]
        table.add_row(name, *cells, f"{row['delta_m']:+.2f}%")
    Console(width=200).print(table)


def _plot_metrics(rows: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(rows)
    fig, axes = plt.subplots(1, 2, figsize=(8, 3))
    axes[0].bar(names, [rows[n]["params"] for n in names], color=["grey", "tab:green"])
    axes[0].set_title("parameters")
    axes[1].bar(names, [rows[n]["macs"] for n in names], color=["grey", "tab:green"])
    axes[1].set_title("MACs per image")
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=100)
    plt.close(fig)


def config_with(**changes) -> DemoConfig:
    """The default configuration with some fields changed (for tests and benchmarks)."""
    return replace(PRESETS["default"], **changes)
