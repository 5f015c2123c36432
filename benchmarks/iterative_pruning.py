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
    python benchmarks/iterative_pruning.py --preset seeds   # equal parameters, 3 seeds, lr sweep

Writes benchmarks/results/iterative_pruning.json and one plot per model and task
(metric vs parameters) plus one of delta_m vs parameters. Levels are shares of the shared
channels up to 0.93, so the layer floor is ``min_channels=2`` alone (no ``min_fraction``).

The ``seeds`` preset compares the criteria as Garg et al. compare them: at EQUAL PARAMETER
COUNTS. Each criterion prunes the shared encoder until the model as it will be stripped holds a
common share of the dense model's parameters (``target_params``, with ``cost_exponent=0`` so the
criterion alone ranks the channels and the schedule only decides how many go; the layer floor a
quarter of each group, ``min_fraction=0.25``, as measured); a snapshot is
taken at every level, stripped and fine-tuned for the same steps. Each criterion gets its own
small learning-rate sweep (the "careful tuning"), the rate chosen on a validation split (new
scenes of the training distribution, never the test images) by the mean validation delta_m
over the seeds; the table gives the test delta_m at that rate, mean +- std over 3 seeds, each
seed with its own dense model (the reference of its delta_m). Only groups feeding more than one
task are pruned (``groups="shared"``, as in the paper), so every criterion scores the same
channels: CosPrune has no score for a group feeding one task. Writes
``iterative_pruning_seeds.json``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from tfmot_mtl.recipes import experiment as ex  # noqa: E402
from tfmot_mtl.utils.atomic import atomic_savefig  # noqa: E402
from tfmot_mtl.pruning.run import (compile_for_pruning, prune_model,  # noqa: E402
                                   retrain_from_scratch, steps_per_epoch)
from tfmot_mtl.selection import MIN_FRACTION  # noqa: E402
from tfmot_mtl.strip import strip_channels  # noqa: E402
from tfmot_mtl.tasks import defined_metrics, delta_m, delta_m_per_task  # noqa: E402

CRITERIA = ("taylor", "cosprune", "magnitude", "random")
INFORMED = ("taylor", "cosprune", "magnitude")
ALL_CRITERIA = CRITERIA + ("lamp", "fpgm", "second_order", "bnscale")
EQUAL_PARAMS_CRITERIA = INFORMED + ("lamp", "fpgm", "second_order")
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
    # equal parameter counts: shares of the dense model's parameters, reached in `events` pruning
    # events (each level must sit on an event); every snapshot fine-tuned `fine_tune_steps` after strip
    "seeds": dict(n_train=192, n_val=64, n_test=64, batch_size=32, resolution=32, base_channels=8,
                  head_channels=8, dense_epochs=30, frequency=6, events=8, fine_tune_steps=36,
                  param_levels=(0.7, 0.4), score_batches=2, eager=False, seeds=(0, 1, 2),
                  lrs=(5e-4, 1e-3), min_channels=2),
}
EQUAL_PARAMS_TOLERANCE = 0.01  # relative: a snapshot's parameters within 1% of its level
DENSE_LR, PRUNE_LR = 2e-3, 5e-4


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def build_kwargs(name: str, cfg: dict) -> dict:
    kwargs = {"head_channels": cfg["head_channels"]}
    if name == "mtl_vgg":
        kwargs["base_channels"] = cfg["base_channels"]
    else:
        kwargs["width"] = cfg["base_channels"] / 16
    return kwargs


def build(name: str, data, cfg: dict) -> keras.Model:
    return ex.build_model(name, data.tasks, data.input_shape, seed=0, **build_kwargs(name, cfg))


def scored(model, data, dense_metrics, tasks) -> dict:
    metrics = ex.evaluate(model, data)
    out = {"metrics": metrics}
    if dense_metrics is not None:
        # a barely trained dense model (--quick) can score exactly 0, where delta is undefined
        chosen = defined_metrics(dense_metrics, tasks)
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
            min_channels=2, min_fraction=0.0, lr=PRUNE_LR, score_batches=cfg["score_batches"],
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


# ------------------------------------------------------------------ equal parameter counts
PROGRESS_END = 0.9  # the schedule's last scheduled sparsity: with a cost target it reads as progress


def level_steps(levels, events: int) -> dict[float, float]:
    """Scheduled sparsity at which each parameter level is reached (the cost goal at ``s`` is
    ``1 - (s / PROGRESS_END) * (1 - min(levels))``); every level must fall on a pruning event."""
    low = min(levels)
    out = {}
    for level in levels:
        k = events * (1.0 - level) / (1.0 - low)
        if abs(k - round(k)) > 1e-6 or round(k) < 1:
            raise ValueError(f"parameter level {level} falls between pruning events: with {events} events "
                             f"and a lowest level {low}, choose levels with events * (1 - level) / (1 - {low}) "
                             "a positive integer")
        out[float(level)] = PROGRESS_END * round(k) / events
    return out


def evaluate_split(model, data, split: str) -> dict:
    from tfmot_mtl.tasks import evaluate

    return evaluate(model, data.validation if split == "val" else data.test, data.tasks)


def delta_vs(metrics: dict, dense: dict, tasks, per_task: bool = False):
    """delta_m (or its per-task dict) over the metrics whose dense value is not 0."""
    chosen = defined_metrics(dense, tasks)
    return (delta_m_per_task if per_task else delta_m)(metrics, dense, tasks, chosen)


def prune_equal_params(model, data, cfg: dict, criterion: str, lr: float, seed: int, dense_params: int,
                       dense: dict) -> list[dict]:
    """One criterion at one learning rate from the trained dense weights in ``model``: prune to
    every parameter level, strip, fine-tune, score on the validation and the test split."""
    levels = sorted(cfg["param_levels"], reverse=True)
    at = level_steps(levels, cfg["events"])
    t0 = time.perf_counter()
    _, _, history = prune_model(
        model, data, criterion, target=PROGRESS_END, frequency=cfg["frequency"], step=PROGRESS_END / cfg["events"],
        fine_tune_steps=0, groups="shared", min_channels=cfg["min_channels"], min_fraction=MIN_FRACTION, lr=lr,
        score_batches=cfg["score_batches"], snapshots=list(at.values()), target_params=min(levels),
        cost_exponent=0.0, seed=seed, verbose=0, compile=False)
    prune_seconds = time.perf_counter() - t0
    rows = []
    for level, snap in zip(levels, sorted(history["snapshots"], key=lambda s: s.level)):
        t1 = time.perf_counter()
        small, report = strip_channels(snap.model(model), snap.masks)
        share = report.totals["params_after"] / dense_params
        compile_for_pruning(small, data.tasks, lr, cfg["eager"])
        small.fit(data.train.repeat(), epochs=1, steps_per_epoch=cfg["fine_tune_steps"], verbose=0)
        val, test = evaluate_split(small, data, "val"), evaluate_split(small, data, "test")
        rows.append({"criterion": criterion, "lr": lr, "seed": seed, "level": level, "params": small.count_params(),
                     "param_share": share, "on_target": abs(share / level - 1.0) <= EQUAL_PARAMS_TOLERANCE,
                     "macs": report.totals["macs_after"], "val_delta_m": delta_vs(val, dense["val"], data.tasks),
                     "delta_m": delta_vs(test, dense["test"], data.tasks),
                     "delta_m_same_budget": delta_vs(test, dense["same_budget"]["metrics"], data.tasks),
                     "delta_m_per_task": delta_vs(test, dense["test"], data.tasks, per_task=True), "metrics": test,
                     "kept": {gid: f"{int(m.sum())}/{m.size}" for gid, m in snap.masks.items() if not m.all()},
                     "seconds": prune_seconds / len(levels) + time.perf_counter() - t1})
    return rows


def run_equal_params(name: str, data, cfg: dict, criteria, verbose: int) -> dict:
    """Per seed: a dense model, then every criterion at every learning rate of the sweep."""
    rows, dense_runs = [], {}
    for seed in cfg["seeds"]:
        keras.utils.set_random_seed(seed)
        model = compile_for_pruning(ex.build_model(name, data.tasks, data.input_shape, seed=seed,
                                                   **build_kwargs(name, cfg)), data.tasks, DENSE_LR, cfg["eager"])
        t0 = time.perf_counter()
        model.fit(data.train, epochs=cfg["dense_epochs"], verbose=verbose)
        dense = {"val": evaluate_split(model, data, "val"), "test": evaluate_split(model, data, "test"),
                 "params": model.count_params(), "seconds": time.perf_counter() - t0}
        dense_runs[seed] = dense
        log(f"{name} seed {seed} dense: {dense['params']:,} params, {dense['seconds']:.0f} s")
        weights = model.get_weights()
        # the same-budget reference: the dense model trained as many more steps as pruning + fine-tuning
        extra = cfg["events"] * cfg["frequency"] + cfg["fine_tune_steps"]
        model.fit(data.train.repeat(), epochs=1, steps_per_epoch=extra, verbose=0)
        longer = evaluate_split(model, data, "test")
        dense["same_budget"] = {"steps": extra, "metrics": longer, "delta_m": delta_vs(longer, dense["test"], data.tasks)}
        log(f"  dense trained {extra} more steps: dm {dense['same_budget']['delta_m']:+.2f}%")
        compile_for_pruning(model, data.tasks, DENSE_LR, cfg["eager"])  # a fresh optimizer for the runs
        for criterion in criteria:
            for lr in cfg["lrs"]:
                model.set_weights(weights)
                got = prune_equal_params(model, data, cfg, criterion, lr, seed, dense["params"], dense)
                rows += got
                log(f"  {criterion} lr {lr:g}: " + ", ".join(
                    f"{r['param_share']:.3f} params dm {r['delta_m']:+.2f}% (val {r['val_delta_m']:+.2f}%)"
                    for r in got))
    return {"dense": dense_runs, "runs": rows, "summary": summarize_equal(rows)}


def summarize_equal(rows: list[dict]) -> list[dict]:
    """Per criterion and level: the learning rate with the best mean validation delta_m over the
    seeds, and the test delta_m at that rate (mean, std, per seed)."""
    out = []
    for criterion in dict.fromkeys(r["criterion"] for r in rows):
        for level in sorted({r["level"] for r in rows}, reverse=True):
            mine = [r for r in rows if r["criterion"] == criterion and r["level"] == level]
            by_lr = {lr: [r for r in mine if r["lr"] == lr] for lr in dict.fromkeys(r["lr"] for r in mine)}
            lr = max(by_lr, key=lambda v: np.mean([r["val_delta_m"] for r in by_lr[v]]))
            test = [r["delta_m"] for r in by_lr[lr]]
            same = [r["delta_m_same_budget"] for r in by_lr[lr]]
            out.append({"criterion": criterion, "level": level, "lr": lr, "seeds": len(test),
                        "delta_m_mean": float(np.mean(test)), "delta_m_std": float(np.std(test)),
                        "delta_m_same_budget_mean": float(np.mean(same)),
                        "delta_m_same_budget_std": float(np.std(same)),
                        "delta_m": test, "params_mean": float(np.mean([r["params"] for r in by_lr[lr]])),
                        "param_share_mean": float(np.mean([r["param_share"] for r in by_lr[lr]])),
                        "on_target": all(r["on_target"] for r in mine)})
    return out


def print_equal_table(summary: list[dict]) -> None:
    print(f"\n{'criterion':<12} {'level':>6} {'params':>9} {'share':>6} {'lr':>8} {'dm % vs dense':>18} "
          f"{'dm % vs same budget':>20}  (test, mean ± std)")
    for r in summary:
        print(f"{r['criterion']:<12} {r['level']:>6.2f} {r['params_mean']:>9,.0f} {r['param_share_mean']:>6.3f} "
              f"{r['lr']:>8.2g} {r['delta_m_mean']:>+11.2f} ± {r['delta_m_std']:.2f} "
              f"{r['delta_m_same_budget_mean']:>+13.2f} ± {r['delta_m_same_budget_std']:.2f} (n={r['seeds']})")


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
    size.add_argument("--preset", choices=sorted(PRESETS), help="a preset by name (seeds: equal parameters)")
    p.add_argument("--seeds", type=int, nargs="+", help="seeds of the seeds preset (default 0 1 2)")
    p.add_argument("--lrs", type=float, nargs="+", help="learning rates of the seeds preset's sweep")
    p.add_argument("--models", nargs="+", default=["mtl_vgg"], choices=["mtl_vgg", "mtl_resnet"])
    p.add_argument("--criteria", nargs="+", default=None, choices=list(ALL_CRITERIA),
                   help=f"default {' '.join(CRITERIA)} ({' '.join(EQUAL_PARAMS_CRITERIA)} with --preset seeds)")
    p.add_argument("--out", default=None, help="JSON path (plots go next to it)")
    p.add_argument("--verbose", type=int, default=0, help="Keras fit verbosity")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    preset = args.preset or ("quick" if args.quick else "full" if args.full else "default")
    if preset == "seeds":
        return main_equal_params(args)
    if args.seeds or args.lrs:
        raise SystemExit("--seeds and --lrs belong to --preset seeds")
    cfg = PRESETS[preset]
    args.criteria = args.criteria or list(CRITERIA)
    out = args.out or os.path.join("benchmarks", "results",
                                   "iterative_pruning_quick.json" if preset == "quick" else "iterative_pruning.json")
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


def load_equal_data(cfg: dict):
    return ex.load_data("synthetic_scenes", n_train=cfg["n_train"], n_test=cfg["n_test"], n_val=cfg["n_val"],
                        batch_size=cfg["batch_size"], resolution=cfg["resolution"])


def main_equal_params(args) -> int:
    cfg = dict(PRESETS["seeds"])
    cfg.update({k: tuple(v) for k, v in (("seeds", args.seeds), ("lrs", args.lrs)) if v})
    criteria = args.criteria or list(EQUAL_PARAMS_CRITERIA)
    out = args.out or os.path.join("benchmarks", "results", "iterative_pruning_seeds.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    t0 = time.perf_counter()
    data = load_equal_data(cfg)
    log(f"preset seeds: {steps_per_epoch(data.train)} steps/epoch, seeds {cfg['seeds']}, lrs {cfg['lrs']}, "
        f"parameter levels {cfg['param_levels']}, criteria {criteria}")
    results = {name: run_equal_params(name, data, cfg, criteria, args.verbose) for name in args.models}
    seconds = time.perf_counter() - t0
    for name, res in results.items():
        print(f"\n{name}: test delta_m at equal parameter counts (lr chosen on the validation split)")
        print_equal_table(res["summary"])
        longer = [d["same_budget"]["delta_m"] for d in res["dense"].values()]
        print(f"dense trained as long as pruning + fine-tuning: dm {np.mean(longer):+.2f} ± {np.std(longer):.2f}")
    ex.write_json(out, {"preset": "seeds", "config": cfg, "criteria": criteria, "dense_lr": DENSE_LR,
                        "groups": "shared", "cost_exponent": 0.0, "seconds": seconds, "results": results})
    log(f"wrote {out} ({seconds:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
