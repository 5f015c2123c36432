"""Structured group sparsity study (Less is More, small scale): lambda and target sweeps.

For each dataset (mtl_resnet): a dense multi-task model; group-sparse multi-task models
(a) over a fixed proximal lambda sweep and (b) over a target-sparsity sweep with the
adaptive controller of ``ProximalGroupLasso(target=...)`` (lambda times a gain growing by
``adapt_rate`` per step until the target share of shared channels is dead, then the zero
pattern is locked and the survivors fine-tune); dense and sparse (target) single-task
models (same architecture, one task). Every sparse model uses the demo's recipe: a small
group-lasso loss term (``apply_group_sparsity(l1=--l1-loss)``, paper scale) plus the
proximal step, same init as the dense model, then ``strip_channels`` and one BatchNorm
recalibration pass over the training split (``batchnorm.recalibrate_batchnorm``; the dense
model gets the same). Per model: shared-
channel and parameter sparsity, params and MACs after stripping, task metrics, delta_m vs
the dense multi-task model and vs the single-task dense models, LiteRT median latency of
the stripped model (float32, batch 1, 1 thread), median time per training step, and for
target runs the effective lambda at lock time (``l1 * gain``) and the lock step. The
training-step overhead of regularizer + proximal step is a ratio measured in one process
with interleaved blocks of steps (plain, sparse, plain, ...) from the same initial weights.

Why a target sweep: with Adam, a fixed proximal lambda is all-or-nothing (no shared channel
dies up to ~0.02, all of them at ~0.7), since a channel dies only when lambda beats the
consistency of its normalised updates; the fixed sweep documents that cliff.

Usage:
    python benchmarks/group_sparsity.py --preset paper-small   # the paper's regime: few images, a wide
                                        # model, early stopping, AdamW + Adam-reweighted proximal step,
                                        # uncertainty weighting, lambda sweep x 3 seeds (group_sparsity_paper.py)
    python benchmarks/group_sparsity.py [--quick | --full] [--datasets synthetic_scenes ...]
        [--lambdas 0.01 0.05 0.2 0.7] [--targets 0.5 0.7 0.85] [--l1-loss 1e-5]
        [--demo-setting] [--out benchmarks/results]
Writes ``<out>/group_sparsity.json`` and ``<out>/group_sparsity.png``.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, replace

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from tfmot_mtl.recipes import experiment as ex  # noqa: E402
from tfmot_mtl.utils.atomic import atomic_savefig  # noqa: E402


# One dataset's training setting: the demo's (1500/300, 64x64, width 1, 8 epochs, lr 2e-3).
DataConfig = ex.TrainingConfig


@dataclass(frozen=True)
class Plan:
    """What to train on one dataset: multi-task sweeps and the single-task models."""

    config: DataConfig
    fixed: tuple = ()  # multi-task fixed proximal lambdas
    targets: tuple = ()  # multi-task target sparsities (adaptive lambda, then locked)
    single_target: float | None = None  # single-task sparse models; dense ones always
    single_task: bool = True
    dataset: str | None = None  # dataset to load when the result key is not its name


DEMO = DataConfig()
# The default keeps the demo's optimizer, width, epochs and number of steps (47 per epoch,
# 376 in all) but halves batch and training set and uses 32x32 images (~1/8 of the cost).
SMALL_DEMO = replace(DEMO, n_train=752, resolution=32, batch_size=16)
TINY = DataConfig(48, 32, 32, 0.25, 1, batch_size=16)
PRESETS = {
    "quick": {
        "synthetic_scenes": Plan(TINY, fixed=(0.02,), targets=(0.5,), single_target=0.5),
        "multi_digits": Plan(TINY, targets=(0.5,), single_task=False),
    },
    "default": {
        "synthetic_scenes": Plan(SMALL_DEMO, fixed=(0.01, 0.05, 0.2, 0.7), targets=(0.7, 0.5, 0.85),
                                 single_target=0.7),
        "multi_digits": Plan(replace(SMALL_DEMO, n_train=400, n_test=200, width=0.5, epochs=4),
                             targets=(0.7,), single_task=False),
    },
    "full": {
        "synthetic_scenes": Plan(DEMO, fixed=(0.005, 0.01, 0.02, 0.05, 0.2, 0.7),
                                 targets=(0.5, 0.6, 0.7, 0.8, 0.85, 0.9), single_target=0.7),
        "multi_digits": Plan(replace(DEMO, epochs=6), fixed=(0.01, 0.05, 0.2, 0.7),
                             targets=(0.5, 0.7, 0.85), single_target=0.7),
    },
}
# --demo-setting: the demo's exact data / model / schedule, dense vs target 0.7.
DEMO_PLAN = Plan(DEMO, targets=(0.7,), single_task=False, dataset="synthetic_scenes")

# ------------------------------------------------------------------------ pure helpers
def step_times(end_times: list[float], skip: int = 1) -> np.ndarray:
    """Seconds per step from consecutive batch-end timestamps, dropping the first ``skip``."""
    t = np.asarray(end_times, float)
    return np.diff(t)[skip:] if len(t) > skip + 1 else np.diff(t)


def overhead_ratio(plain_blocks: list[float], sparse_blocks: list[float]) -> float:
    """Median sparse-step time over median plain-step time (blocks interleaved in one process).

    Each list holds one seconds-per-step value per measured block.
    """
    if not plain_blocks or not sparse_blocks:
        raise ValueError("overhead_ratio needs at least one block of each kind")
    return float(np.median(sparse_blocks) / np.median(plain_blocks))


def run_name(tasks: str, l1: float, target: float | None) -> str:
    """E.g. ``mtl dense``, ``mtl l1=0.05``, ``depth target=0.7``."""
    if target:
        return f"{tasks} target={target:g}"
    return f"{tasks} l1={l1:g}" if l1 else f"{tasks} dense"


def lock_steps(gain: float, adapt_rate: float) -> int:
    """Number of controller steps behind ``gain`` (it grows by ``1 + adapt_rate`` per step)."""
    if gain < 1.0 or not 0.0 < adapt_rate < 1.0:
        raise ValueError(f"lock_steps needs gain >= 1 and adapt_rate in (0, 1), got {gain}, {adapt_rate}")
    return int(round(math.log(gain) / math.log1p(adapt_rate)))


def recommend(rows: list[dict], target: float = 0.7) -> dict | None:
    """The multi-task sparse run with the best delta_m among those at >= ``target`` sparsity,
    else the sparsest one; ``None`` without sparse multi-task runs."""
    sparse = [r for r in rows if r["tasks"] == "mtl" and r["l1"] > 0]
    if not sparse:
        return None
    hit = [r for r in sparse if r["channel_sparsity"] >= target]
    if hit:
        return max(hit, key=lambda r: r.get("delta_m_vs_dense_mtl", float("-inf")))
    return max(sparse, key=lambda r: r["channel_sparsity"])

# ----------------------------------------------------------------------------- running
class StepTimer(keras.callbacks.Callback):
    """Records ``time.perf_counter()`` at every batch end (put it last in the callbacks)."""

    def __init__(self):
        super().__init__()
        self.ends: list[float] = []

    def on_train_batch_end(self, batch, logs=None):
        self.ends.append(time.perf_counter())


def single_task_data(data, task) -> "ex.Data":
    """The dataset restricted to one task's targets."""
    def keep(x, y):
        return x, {task.name: y[task.name]}

    return ex.Data(data.name, data.train.map(keep), data.test.map(keep), [task], data.input_shape)


def encoder_layers(data, cfg: DataConfig) -> list[str]:
    """Producer layers of the multi-task model's shared groups (the single-task sparse target)."""
    from tfmot_mtl.graph import ChannelGraph
    from tfmot_mtl.selection import producer_layers, select_groups

    model = ex.build_model("mtl_resnet", data.tasks, data.input_shape, width=cfg.width, seed=cfg.seed)
    graph = ChannelGraph.from_model(model)
    return producer_layers(graph, select_groups(graph, "shared"))


class LockWatcher(keras.callbacks.Callback):
    """Records the optimizer step at which a ``ProximalGroupLasso`` locked (put it after it)."""

    def __init__(self, prox):
        super().__init__()
        self.prox, self.step = prox, None

    def on_train_batch_end(self, batch, logs=None):
        if self.step is None and self.prox.locked is not None:
            self.step = int(np.asarray(self.model.optimizer.iterations))


def sparse_setup(model, l1: float, target: float | None, layers, l1_loss: float, mode: str = "plain",
                 adapt_rate: float = 0.02):
    """(model, proximal callback): the demo's recipe, a ``l1_loss`` group-lasso term in the loss
    (skipped at 0) and the proximal step at ``l1`` (adaptive up to ``target`` when given)."""
    from tfmot_mtl.sparsity import ProximalGroupLasso, apply_group_sparsity

    clone = apply_group_sparsity(model, l1=l1_loss, groups=layers) if l1_loss else model
    return clone, ProximalGroupLasso(l1=l1, groups=layers, mode=mode, target=target,
                                     adapt_rate=adapt_rate)


def train_one(data, cfg: DataConfig, l1: float, target: float | None, layers, args) -> tuple:
    """Trains one model from the seed's initial weights; returns (model, s per step, extra)."""
    model = ex.build_model("mtl_resnet", data.tasks, data.input_shape, width=cfg.width, seed=cfg.seed)
    callbacks, extra = [], {}
    if l1:
        model, prox = sparse_setup(model, l1, target, layers, args.l1_loss, args.mode, args.adapt_rate)
        watcher = LockWatcher(prox)
        callbacks += [prox, watcher]
    timer = StepTimer()
    ex.fit(model, data, cfg.epochs, lr=cfg.lr, callbacks=callbacks + [timer], verbose=args.verbose)
    if l1:
        extra = {"gain": prox.gain, "effective_l1": l1 * prox.gain, "lock_step": watcher.step,
                 "gain_steps": lock_steps(prox.gain, args.adapt_rate) if target else None,
                 "total_steps": cfg.epochs * int(data.train.cardinality())}
    return model, float(np.median(step_times(timer.ends))), extra


def measure_row(model, data, layers, latency_runs: int) -> dict:
    """Sparsity, stripped size, metrics and LiteRT latency of a trained model (its stripped copy
    evaluated after one BatchNorm recalibration pass over the training split)."""
    from tfmot_mtl import lite
    from tfmot_mtl.recipes.batchnorm import recalibrate_batchnorm
    from tfmot_mtl.profile import profile
    from tfmot_mtl.sparsity import sparsity_report
    from tfmot_mtl.strip import strip_channels

    report = sparsity_report(model, groups=layers)
    small, strip_report = strip_channels(model)
    recalibrate_batchnorm(small, data.train)
    prof = profile(small)
    latency = lite.benchmark(lite.convert(small, batch_size=1, verbose=False),
                                  runs=latency_runs, warmup=3, num_threads=1, verbose=False)
    return {"channel_sparsity": report["channel_sparsity"], "param_sparsity": report["param_sparsity"],
            "params": int(prof.total_params), "macs": int(prof.total_macs),
            "params_before_strip": int(strip_report.totals["params_before"]),
            "metrics": ex.evaluate(small, data), "latency_ms": latency["median_ms"]}


def measure_overhead(data, cfg: DataConfig, args, rounds: int, steps: int) -> dict:
    """Interleaved plain / sparse (target 0.7 recipe) blocks of ``steps`` steps; medians and ratio."""
    plain = ex.build_model("mtl_resnet", data.tasks, data.input_shape, width=cfg.width, seed=cfg.seed)
    init = ex.build_model("mtl_resnet", data.tasks, data.input_shape, width=cfg.width, seed=cfg.seed)
    sparse, prox = sparse_setup(init, args.l1, 0.7, "shared", args.l1_loss, args.mode, args.adapt_rate)
    for m in (plain, sparse):
        ex.compile_model(m, data.tasks, lr=cfg.lr)
    batches = data.train.take(steps).cache()
    blocks: dict[str, list[float]] = {"plain": [], "sparse": []}
    for r in range(rounds + 1):  # round 0 warms up (tracing), not recorded
        for kind, model, cbs in (("plain", plain, []), ("sparse", sparse, [prox])):
            timer = StepTimer()
            model.fit(batches, epochs=1, verbose=0, callbacks=cbs + [timer])
            if r:
                blocks[kind].append(float(np.median(step_times(timer.ends, skip=0))))
    return {"l1": args.l1, "target": 0.7, "l1_loss": args.l1_loss, "mode": args.mode, "rounds": rounds,
            "steps_per_block": steps, "plain_step_s": float(np.median(blocks["plain"])),
            "sparse_step_s": float(np.median(blocks["sparse"])),
            "ratio": overhead_ratio(blocks["plain"], blocks["sparse"]), "blocks": blocks}


def plan_jobs(plan: Plan, task_names: list[str], l1: float) -> list[tuple]:
    """(tasks, l1, target) in run order: dense MTL, the target sweep, the single-task dense
    baselines, the fixed-lambda sweep, then the single-task sparse models."""
    jobs = [("mtl", 0.0, None)] + [("mtl", l1, t) for t in plan.targets]
    jobs += [(t, 0.0, None) for t in task_names] if plan.single_task else []
    jobs += [("mtl", lam, None) for lam in plan.fixed]
    if plan.single_task and plan.single_target:
        jobs += [(t, l1, plan.single_target) for t in task_names]
    return jobs


def add_deltas(rows: list[dict], tasks) -> None:
    """Adds delta_m vs the dense MTL model and vs the single-task dense models (when trained)."""
    from tfmot_mtl.tasks import delta_m, delta_m_per_task

    dense = next((r for r in rows if r["name"] == "mtl dense"), None)
    singles = {r["tasks"]: r["metrics"][r["tasks"]] for r in rows if r["tasks"] != "mtl" and not r["l1"]}
    for r in rows:
        picked = tasks if r["tasks"] == "mtl" else [t for t in tasks if t.name == r["tasks"]]
        try:
            if r["tasks"] == "mtl" and dense is not None:
                r["delta_m_vs_dense_mtl"] = delta_m(r["metrics"], dense["metrics"], picked)
            if all(t.name in singles for t in picked):
                base = {t.name: singles[t.name] for t in picked}
                r["delta_m_vs_single_task"] = delta_m(r["metrics"], base, picked)
                r["delta_m_vs_single_task_per_task"] = delta_m_per_task(r["metrics"], base, picked)
        except ValueError as err:  # e.g. a metric at 0 in a baseline (tiny smoke runs)
            r["delta_m_error"] = str(err)


def run_dataset(name: str, plan: Plan, args, checkpoint=lambda result: None) -> dict:
    """Trains and measures every job of ``plan``; ``checkpoint(result)`` is called after each."""
    cfg = plan.config
    data = ex.load_data(plan.dataset or name, cfg.n_train, cfg.n_test, cfg.batch_size, cfg.resolution,
                        cfg.seed)
    shared = encoder_layers(data, cfg)
    start = time.time()
    result = {"config": asdict(cfg), "dataset": plan.dataset or name, "single_target": plan.single_target, "tasks": [t.name for t in data.tasks],
              "metrics": {t.name: list(t.metrics) for t in data.tasks}, "encoder_layers": shared,
              "rows": [], "overhead": None, "recommended": None, "seconds": 0.0}
    if args.overhead_rounds:
        print(f"[{name}] overhead: interleaved plain / sparse training blocks", flush=True)
        o = measure_overhead(data, cfg, args, args.overhead_rounds, args.overhead_steps)
        result["overhead"] = o
        print(f"[{name}] overhead ratio {o['ratio']:.3f} (sparse / plain step time)", flush=True)
    for tasks, l1, target in plan_jobs(plan, result["tasks"], args.l1):
        label = run_name(tasks, l1, target)
        print(f"[{name}] {label} ({time.time() - start:.0f} s)", flush=True)
        task_data = data if tasks == "mtl" else single_task_data(
            data, next(t for t in data.tasks if t.name == tasks))
        layers = "shared" if tasks == "mtl" else shared
        model, step_s, extra = train_one(task_data, cfg, l1, target, layers, args)
        row = {"name": label, "tasks": tasks, "l1": l1, "target": target,
               "l1_loss": args.l1_loss if l1 else 0.0, "mode": args.mode if l1 else None,
               "train_step_s": step_s, **extra, **measure_row(model, task_data, layers, args.latency_runs)}
        result["rows"].append(row)
        add_deltas(result["rows"], data.tasks)
        best = recommend(result["rows"], args.target)
        result["recommended"] = best["name"] if best else None
        result["seconds"] = round(time.time() - start, 1)
        lock = f" eff.l1 {row['effective_l1']:.3g} lock@{row['lock_step']}" if target else ""
        print(f"[{name}]   sparsity {100 * row['channel_sparsity']:.1f}%{lock} params {row['params']:,} "
              f"MACs {row['macs']:,} latency {row['latency_ms']:.2f} ms "
              f"dm vs dense MTL {row.get('delta_m_vs_dense_mtl', float('nan')):+.2f}%", flush=True)
        checkpoint(result)
    return result


# ------------------------------------------------------------------------------ output
def format_table(name: str, result: dict) -> str:
    """Plain-text table of one dataset's rows."""
    heads = [(t, m) for t in result["tasks"] for m in result["metrics"][t][:2]]
    cols = ["run", "eff.l1", "lock", "ch.sp%", "par.sp%", "params", "MACs", "ms", "step s"]
    cols += [f"{t[:5]}.{m[:8]}" for t, m in heads] + ["dm MTL%", "dm ST%"]
    lines = [f"== {name} ==", " | ".join(cols)]
    for r in result["rows"]:
        eff = r.get("effective_l1", r["l1"])
        cells = [r["name"], f"{eff:.3g}" if eff else "-", str(r.get("lock_step") or "-"),
                 f"{100 * r['channel_sparsity']:.1f}", f"{100 * r['param_sparsity']:.1f}",
                 f"{r['params']:,}", f"{r['macs']:,}", f"{r['latency_ms']:.2f}", f"{r['train_step_s']:.3f}"]
        cells += [f"{r['metrics'][t][m]:.3f}" if t in r["metrics"] else "-" for t, m in heads]
        cells += [f"{r[k]:+.2f}" if k in r else "-" for k in ("delta_m_vs_dense_mtl", "delta_m_vs_single_task")]
        lines.append(" | ".join(cells))
    o = result["overhead"]
    if o:
        lines.append(f"training-step overhead (loss l1={o['l1_loss']:g} + proximal {o['mode']} target "
                     f"{o['target']:g}): {o['sparse_step_s']:.3f} s / {o['plain_step_s']:.3f} s = x{o['ratio']:.3f}")
    lines.append(f"recommended: {result['recommended']}")
    return "\n".join(lines)


def plot(results: dict, path: str) -> str:
    """Metric vs shared-channel sparsity: one panel per (dataset, task, headline metric)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(d, t, m) for d, res in results.items() for t in res["tasks"] for m in res["metrics"][t][:2]]
    ncol = min(4, len(panels))
    nrow = -(-len(panels) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.6 * ncol, 2.9 * nrow), squeeze=False)
    for ax, (d, t, m) in zip(axes.flat, panels):
        rows = results[d]["rows"]
        dense = next((r for r in rows if r["name"] == "mtl dense"), None)
        if dense:
            ax.axhline(dense["metrics"][t][m], color="grey", ls="--", label="dense MTL")
        st = [r for r in rows if r["tasks"] == t and not r["l1"]]
        if st:
            ax.axhline(st[0]["metrics"][t][m], color="black", ls=":", label="dense single-task")
        groups = (("MTL fixed lambda", "o", "tab:blue", lambda r: r["tasks"] == "mtl" and not r["target"], "l1"),
                  ("MTL target", "s", "tab:green", lambda r: r["tasks"] == "mtl" and r["target"], "target"),
                  ("single-task target", "x", "black", lambda r: r["tasks"] == t and r["target"], "target"))
        for label, marker, color, keep, key in groups:
            pts = [r for r in rows if r["l1"] and keep(r)]
            if not pts:
                continue
            xs, ys = [100 * r["channel_sparsity"] for r in pts], [r["metrics"][t][m] for r in pts]
            ax.scatter(xs, ys, marker=marker, color=color, label=label)
            for r, x, y in zip(pts, xs, ys):
                ax.annotate(f"{r[key]:g}", (x, y), fontsize=6)
        ax.set_title(f"{d}: {t} {m}", fontsize=8)
        ax.set_xlabel("shared-channel sparsity %", fontsize=7)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=100)
    plt.close(fig)
    return path


def build_plans(args) -> dict[str, Plan]:
    """The preset's plans, restricted to ``--datasets`` and overridden by the sweep flags."""
    preset = PRESETS["quick" if args.quick else "full" if args.full else "default"]
    unknown = [d for d in args.datasets if d not in preset]
    if unknown:
        raise ValueError(f"--datasets: unknown {unknown}; choose from {sorted(preset)}")
    plans = {}
    for d in args.datasets:
        plan = preset[d]
        if args.lambdas is not None:
            plan = replace(plan, fixed=tuple(args.lambdas))
        if args.targets is not None:
            plan = replace(plan, targets=tuple(args.targets))
        if args.epochs:
            plan = replace(plan, config=replace(plan.config, epochs=args.epochs))
        if args.resolution:
            plan = replace(plan, config=replace(plan.config, resolution=args.resolution))
        if args.no_single_task:
            plan = replace(plan, single_task=False)
        plans[d] = plan
    if args.demo_setting:
        plans["synthetic_scenes (demo setting)"] = DEMO_PLAN
    return plans


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="smoke run, tiny (< 2 min)")
    size.add_argument("--full", action="store_true", help="demo-size data everywhere, more points")
    ap.add_argument("--datasets", nargs="+", default=["synthetic_scenes", "multi_digits"])
    ap.add_argument("--lambdas", nargs="*", type=float, help="fixed proximal lambdas (replace the preset's)")
    ap.add_argument("--targets", nargs="*", type=float, help="multi-task target sparsities")
    ap.add_argument("--l1", type=float, default=0.02, help="proximal lambda the target controller starts at")
    ap.add_argument("--adapt-rate", type=float, default=0.02, help="controller gain growth per step")
    ap.add_argument("--l1-loss", type=float, default=1e-5, help="group-lasso loss term (0: proximal only)")
    ap.add_argument("--mode", choices=("plain", "adam"), default="plain", help="proximal mode")
    ap.add_argument("--demo-setting", action="store_true",
                    help="also dense vs target 0.7 at the demo's exact setting (synthetic_scenes)")
    ap.add_argument("--epochs", type=int, help="override the preset's epochs")
    ap.add_argument("--resolution", type=int, help="override the preset's resolution")
    ap.add_argument("--no-single-task", action="store_true")
    ap.add_argument("--target", type=float, default=0.7, help="shared-channel sparsity judged by")
    ap.add_argument("--latency-runs", type=int, default=30)
    ap.add_argument("--overhead-rounds", type=int, default=3, help="0 skips the overhead measurement")
    ap.add_argument("--overhead-steps", type=int, default=8)
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--verbose", type=int, default=2)
    ap.add_argument("--preset", choices=("paper-tiny", "paper-small", "paper-full"), default=None,
                    help="the paper's regime instead of the sweeps above (benchmarks/group_sparsity_paper.py)")
    return ap.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.preset:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import group_sparsity_paper

        os.makedirs(args.out, exist_ok=True)
        return group_sparsity_paper.run(args.preset, args.out, verbose=0 if args.verbose == 2 else args.verbose,
                                        target=args.target)
    if args.quick:
        args.latency_runs, args.overhead_rounds, args.overhead_steps = 5, 1, 3
    plans = build_plans(args)
    start = time.time()
    results: dict = {}
    out = {"preset": "quick" if args.quick else "full" if args.full else "default",
           "argv": sys.argv[1:] if argv is None else list(argv), "target_sparsity": args.target,
           "recipe": {"l1_loss": args.l1_loss, "l1": args.l1, "adapt_rate": args.adapt_rate,
                      "mode": args.mode},
           "latency": "LiteRT float32, batch 1, 1 thread, median of invoke(), stripped model",
           "overhead": "median s/step of interleaved plain and sparse (regularizer + proximal) "
                       "training blocks in one process, after a warm-up round",
           "datasets": results, "complete": False}

    def save(partial: dict | None = None, name: str | None = None) -> None:
        if name is not None:
            results[name] = partial
        out["seconds"] = round(time.time() - start, 1)
        os.makedirs(args.out, exist_ok=True)
        ex.write_json(os.path.join(args.out, "group_sparsity.json"), out)
        if any(r["rows"] for r in results.values()):
            plot({d: r for d, r in results.items() if r["rows"]},
                 os.path.join(args.out, "group_sparsity.png"))

    for d, plan in plans.items():
        results[d] = run_dataset(d, plan, args, checkpoint=lambda res, d=d: save(res, d))
        print(format_table(d, results[d]), flush=True)
    out["complete"] = True
    save()
    print(f"wrote {args.out}/group_sparsity.json and group_sparsity.png ({out['seconds']:.0f} s)")
    return out


if __name__ == "__main__":
    main()
