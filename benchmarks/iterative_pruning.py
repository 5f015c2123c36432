"""Iterative multi-task filter pruning vs re-init + retrain (Garg, Zhang & Guan 2023), small scale.

On ``synthetic_scenes`` (segmentation + depth + normals): train a dense multi-task model,
then for each criterion (Taylor, CosPrune, Magnitude, Random) prune the shared encoder
iteratively (a fixed fraction every ``frequency`` steps, fine-tuning in between) and
snapshot the model at several levels of removed channels; strip each snapshot and
evaluate it (per-task metrics, delta_m vs dense, parameter count). Each pruned
architecture is also re-initialised and trained from scratch with the dense model's
epoch budget (dashed lines in the plots).

    python benchmarks/iterative_pruning.py --quick          # smoke run, about a minute
    python benchmarks/iterative_pruning.py                  # ~15-25 min on 2 CPU cores
    python benchmarks/iterative_pruning.py --full --models mtl_vgg mtl_resnet

Writes benchmarks/results/iterative_pruning.json and one plot per model and task
(metric vs parameters) plus one of delta_m vs parameters.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402

from tfmot_mtl.recipes import experiment as ex  # noqa: E402
from tfmot_mtl.utils.atomic import atomic_savefig  # noqa: E402
from tfmot_mtl.pruning.run import (compile_for_pruning, prune_model,  # noqa: E402
                                   retrain_from_scratch, steps_per_epoch)
from tfmot_mtl.strip import strip_channels  # noqa: E402
from tfmot_mtl.tasks import delta_m, delta_m_per_task  # noqa: E402

CRITERIA = ("taylor", "cosprune", "magnitude", "random")
PRESETS = {
    "quick": dict(n_train=32, n_test=16, batch_size=8, resolution=16, base_channels=4,
                  head_channels=4, dense_epochs=1, frequency=2, step=0.25, fine_tune_steps=2,
                  levels=(0.5, 0.85), reinit_levels=(0.85,), score_batches=1, eager=True),
    "default": dict(n_train=512, n_test=128, batch_size=32, resolution=32, base_channels=8,
                    head_channels=16, dense_epochs=15, frequency=16, step=0.05, fine_tune_steps=32,
                    levels=(0.5, 0.7, 0.85, 0.93), reinit_levels=None, score_batches=2, eager=False),
    "full": dict(n_train=2000, n_test=500, batch_size=32, resolution=64, base_channels=16,
                 head_channels=32, dense_epochs=30, frequency=63, step=0.05, fine_tune_steps=126,
                 levels=(0.5, 0.7, 0.85, 0.93), reinit_levels=None, score_batches=4, eager=False),
}
DENSE_LR, PRUNE_LR = 2e-3, 5e-4


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def build(name: str, data, cfg: dict) -> keras.Model:
    kwargs = {"head_channels": cfg["head_channels"]}
    if name == "mtl_vgg":
        kwargs["base_channels"] = cfg["base_channels"]
    else:
        kwargs["width"] = cfg["base_channels"] / 16
    return ex.build_model(name, data.tasks, data.input_shape, seed=0, **kwargs)


def scored(model, data, dense_metrics, tasks) -> dict:
    metrics = ex.evaluate(model, data)
    out = {"metrics": metrics}
    if dense_metrics is not None:
        # a barely trained dense model (--quick) can score exactly 0, where delta is undefined
        chosen = {t.name: [m for m in t.metrics if dense_metrics[t.name][m] != 0] for t in tasks}
        out["delta_m"] = delta_m(metrics, dense_metrics, tasks, chosen)
        out["delta_m_per_task"] = delta_m_per_task(metrics, dense_metrics, tasks, chosen)
    return out


def run_model(name: str, data, cfg: dict, criteria, verbose: int) -> dict:
    """Dense training, then iterative pruning + re-init per criterion, for one architecture."""
    model = compile_for_pruning(build(name, data, cfg), data.tasks, DENSE_LR, cfg["eager"])
    t0 = time.perf_counter()
    model.fit(data.train, epochs=cfg["dense_epochs"], verbose=verbose)
    dense = scored(model, data, None, data.tasks)
    dense.update(params=model.count_params(), seconds=time.perf_counter() - t0)
    log(f"{name} dense: {dense['params']:,} params, {dense['seconds']:.0f} s")
    dense_weights = model.get_weights()
    runs = []
    reinit_levels = cfg["reinit_levels"] or cfg["levels"]
    for criterion in criteria:
        model.set_weights(dense_weights)
        t0 = time.perf_counter()
        _, _, history = prune_model(
            model, data, criterion, target=max(cfg["levels"]), frequency=cfg["frequency"],
            step=cfg["step"], fine_tune_steps=cfg["fine_tune_steps"], groups="shared",
            min_channels=2, lr=PRUNE_LR, score_batches=cfg["score_batches"],
            snapshots=cfg["levels"], verbose=0, compile=False)
        log(f"{name} {criterion}: pruned to {history['sparsity']:.3f} in {history['steps']} steps "
            f"({time.perf_counter() - t0:.0f} s)")
        for snap in history["snapshots"]:
            small, report = strip_channels(snap.model(model), snap.masks)
            row = {"criterion": criterion, **snap.to_dict(), "params": report.totals["params_after"],
                   "macs": report.totals["macs_after"], "param_ratio": report.param_ratio,
                   **scored(small, data, dense["metrics"], data.tasks)}
            if any(abs(snap.level - v) < 1e-9 for v in reinit_levels):
                t1 = time.perf_counter()
                fresh = retrain_from_scratch(small, data, cfg["dense_epochs"], DENSE_LR, seed=0,
                                             run_eagerly=cfg["eager"])
                row["reinit"] = {**scored(fresh, data, dense["metrics"], data.tasks),
                                 "seconds": time.perf_counter() - t1}
            runs.append(row)
            re = row.get("reinit", {}).get("delta_m")
            log(f"  level {snap.level:.2f}: {row['params']:,} params, dm {row['delta_m']:+.2f} %"
                + (f", re-init dm {re:+.2f} %" if re is not None else ""))
    return {"dense": dense, "runs": runs}


def primary(tasks) -> dict[str, str]:
    return {t.name: t.metrics[0] for t in tasks}


def print_table(results: dict, tasks) -> None:
    metric = primary(tasks)
    heads = [f"{t}:{m}" for t, m in metric.items()]
    print(f"\n{'model':<10} {'criterion':<10} {'level':>5} {'params':>8} "
          + " ".join(f"{h:>22}" for h in heads) + f" {'dm %':>15}")
    print(" " * 42 + " ".join(f"{'iter / re-init':>22}" for _ in heads) + f" {'iter / re-init':>15}")
    for name, res in results.items():
        d = res["dense"]
        print(f"{name:<10} {'dense':<10} {'0':>5} {d['params']:>8,} "
              + " ".join(f"{d['metrics'][t][m]:>22.3f}" for t, m in metric.items()) + f" {0.0:>15.2f}")
        for r in res["runs"]:
            re = r.get("reinit")
            cells = [f"{r['metrics'][t][m]:.3f}" + (f" / {re['metrics'][t][m]:.3f}" if re else "")
                     for t, m in metric.items()]
            dm = f"{r['delta_m']:+.2f}" + (f" / {re['delta_m']:+.2f}" if re else "")
            print(f"{name:<10} {r['criterion']:<10} {r['level']:>5.2f} {r['params']:>8,} "
                  + " ".join(f"{c:>22}" for c in cells) + f" {dm:>15}")


def plot(results: dict, tasks, folder: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    colors = dict(zip(CRITERIA, ("tab:blue", "tab:orange", "tab:green", "tab:gray")))
    targets = [(t, m) for t, m in primary(tasks).items()] + [(None, "delta_m")]
    for name, res in results.items():
        for task, metric in targets:
            value = (lambda r: r["delta_m"]) if task is None else (lambda r: r["metrics"][task][metric])
            fig, ax = plt.subplots(figsize=(5, 3.6))
            for crit in dict.fromkeys(r["criterion"] for r in res["runs"]):
                rows = sorted((r for r in res["runs"] if r["criterion"] == crit), key=lambda r: r["params"])
                c = colors.get(crit)
                ax.plot([r["params"] for r in rows], [value(r) for r in rows], "o-", color=c, label=crit)
                rein = [r for r in rows if "reinit" in r]
                if rein:
                    ax.plot([r["params"] for r in rein], [value(r["reinit"]) for r in rein], "s--",
                            color=c, alpha=0.8, label=f"{crit} re-init")
            dense = res["dense"]
            ax.plot([dense["params"]], [0.0 if task is None else dense["metrics"][task][metric]],
                    "k*", markersize=10, label="dense")
            ax.set_xscale("log")
            ax.set_xlabel("parameters")
            ax.set_ylabel("Δm vs dense (%)" if task is None else f"{task} {metric}")
            ax.set_title(f"{name}: iterative pruning (solid) vs re-init (dashed)", fontsize=9)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=6, ncol=2)
            fig.tight_layout()
            path = os.path.join(folder, f"iterative_pruning_{name}_{task or 'delta_m'}.png")
            atomic_savefig(fig, path, dpi=120)
            plt.close(fig)
            paths.append(path)
    return paths


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="smoke run: tiny sizes, eager, about a minute")
    size.add_argument("--full", action="store_true", help="larger data, resolution and models")
    p.add_argument("--models", nargs="+", default=["mtl_vgg"], choices=["mtl_vgg", "mtl_resnet"])
    p.add_argument("--criteria", nargs="+", default=list(CRITERIA), choices=list(CRITERIA))
    p.add_argument("--out", default=None, help="JSON path (plots go next to it)")
    p.add_argument("--verbose", type=int, default=0, help="Keras fit verbosity")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    preset = "quick" if args.quick else "full" if args.full else "default"
    cfg = PRESETS[preset]
    out = args.out or os.path.join("benchmarks", "results",
                                   "iterative_pruning_quick.json" if args.quick else "iterative_pruning.json")
    folder = os.path.dirname(os.path.abspath(out))
    os.makedirs(folder, exist_ok=True)
    t0 = time.perf_counter()
    data = ex.load_data("synthetic_scenes", n_train=cfg["n_train"], n_test=cfg["n_test"],
                        batch_size=cfg["batch_size"], resolution=cfg["resolution"])
    log(f"preset {preset}: {steps_per_epoch(data.train)} steps/epoch, models {args.models}, "
        f"criteria {args.criteria}")
    results = {name: run_model(name, data, cfg, args.criteria, args.verbose) for name in args.models}
    seconds = time.perf_counter() - t0
    print_table(results, data.tasks)
    payload = {"preset": preset, "config": cfg, "criteria": args.criteria, "dense_lr": DENSE_LR,
               "prune_lr": PRUNE_LR, "groups": "shared", "seconds": seconds, "results": results}
    ex.write_json(out, payload)
    plots = plot(results, data.tasks, folder)
    log(f"wrote {out} and {len(plots)} plots in {folder} ({seconds:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
