"""Group sparsity in its own regime (Less is More, Upadhyay et al. 2024), small scale.

The paper's setting, scaled to a CPU: few training images (NYU-v2 has 795), a model much
wider than the data needs, trained from scratch to convergence with early stopping on a
validation split (restoring the best epoch), AdamW, the Adam-reweighted proximal step
(``ProximalGroupLasso(mode="adam")``) plus the group-lasso loss term at the same lambda,
and uncertainty weighting of the task losses (``distill.TaskWeightedModel``). BatchNorm
statistics are re-estimated on the training split before every validation pass and at the
end (``batchnorm.RecalibrateBatchNorm``): with momentum 0.99 and ~10 steps per epoch the
moving averages otherwise describe weights of several epochs ago, which made every sparse
model look ~70 points of delta_m worse than it is and early stopping judge stale models. Per seed:
the dense multi-task model, one sparse multi-task model per fixed lambda (on ``lambda_seeds``) and per target sparsity
(``targets``: lambda starts at ``target_l1`` and grows by ``adapt_rate`` per proximal step
until the target share of shared channels is dead, then the zero pattern is locked and
early stopping starts watching; the effective lambda at the lock is reported), and (first
seed) one sparse single-task model per task at ``single_lambda`` / ``single_target``.

Why targets: with the Adam-reweighted step every channel's update is normalised, so all
channels die at about the same lambda and a fixed-lambda sweep is a cliff (paper-small,
seed 0: 0% sparsity up to lambda 0.013, 90% at 0.02); the two fixed points document it. Every model is stripped and
evaluated on the test split; delta_m is against the dense multi-task model of the same seed.

Outputs: sparsity vs lambda, delta_m vs sparsity (mean +- std over seeds), multi-task vs
single-task sparse models, the per-layer sparsity pattern (plot), LiteRT latency vs sparsity.

    python benchmarks/group_sparsity.py --preset paper-small    # <= 60 min on 2 CPU cores
    python benchmarks/group_sparsity.py --preset paper-tiny     # smoke run
"""
from __future__ import annotations

import os
import time

import keras
import numpy as np

from tfmot_mtl.recipes import experiment as ex

PRESETS = {
    "paper-tiny": dict(n_train=24, n_val=16, n_test=16, resolution=16, width=0.25, batch_size=8,
                       max_epochs=2, patience=1, lr=1e-3, weight_decay=0.1, lambdas=(0.3,),
                       seeds=(0,), single_lambda=0.3, update_every=1, latency_runs=3, eager=True),
    # 160 images (NYU-v2 scale: 795), width 1 (4x the parameters of the default benchmark's
    # width 0.5 model), early stopping (patience 6 of at most 40 epochs; sized for 2 CPU cores).
    "paper-small": dict(n_train=160, n_val=64, n_test=100, resolution=32, width=1.0, batch_size=16,
                        max_epochs=40, patience=6, lr=5e-4, weight_decay=0.1, lambdas=(0.01, 0.02),
                        lambda_seeds=(0,), targets=(0.5, 0.7, 0.85), target_l1=0.01, adapt_rate=0.05,
                        seeds=(0, 1, 2), single_lambda=0.01, single_target=0.7, update_every=4,
                        latency_runs=20),
    # a longer version for a GPU or a long CPU run: the paper's lr, more data and epochs
    "paper-full": dict(n_train=795, n_val=200, n_test=300, resolution=64, width=1.0, batch_size=16,
                       max_epochs=200, patience=25, lr=1e-4, weight_decay=0.1,
                       lambdas=(0.002, 0.004, 0.008, 0.016), seeds=(0, 1, 2), single_lambda=0.004,
                       update_every=1, latency_runs=50),
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class EarlyStoppingAfterLock(keras.callbacks.EarlyStopping):
    """EarlyStopping that starts watching once the proximal step has locked its zero pattern
    (the epochs restored then all have the target sparsity)."""

    def __init__(self, prox, **kwargs):
        super().__init__(**kwargs)
        self.prox, self.lock_epoch = prox, None

    def on_epoch_end(self, epoch, logs=None):
        if self.prox.locked is None:
            return
        if self.lock_epoch is None:
            self.lock_epoch = epoch
        super().on_epoch_end(epoch, logs)


def train(data, cfg: dict, seed: int, lam: float, layers, verbose: int = 0,
          target: float | None = None) -> tuple[keras.Model, dict]:
    """One model from the seed's init: uncertainty-weighted AdamW, early stopping, sparse if
    lam (fixed, or the start of the adaptive lambda when ``target`` is given)."""
    from tfmot_mtl.recipes.batchnorm import RecalibrateBatchNorm
    from tfmot_mtl.distill import TaskWeightedModel
    from tfmot_mtl.sparsity import ProximalGroupLasso, apply_group_sparsity

    model = ex.build_model("mtl_resnet", data.tasks, data.input_shape, width=cfg["width"], seed=seed)
    if lam:
        model = apply_group_sparsity(model, l1=lam * 1e-4, groups=layers)
    trainer = TaskWeightedModel(model, data.tasks, weighting="uncertainty")
    trainer.compile(keras.optimizers.AdamW(cfg["lr"], weight_decay=cfg["weight_decay"]), jit_compile=False,
                    run_eagerly=cfg.get("eager", False))
    trainer.optimizer.build(trainer.trainable_variables)  # the model's and the task weights' slots
    # BN statistics re-estimated before each validation pass: val_loss (early stopping, the epoch
    # restored) and the test metrics are those of the current weights, not of ~100 steps ago
    stop = dict(monitor="val_loss", patience=cfg["patience"], restore_best_weights=True)
    callbacks = [RecalibrateBatchNorm(data.train, model=model)]
    prox = None
    if lam:  # the proximal step acts on the plain model's channels, with the wrapper's Adam moments
        prox = ProximalGroupLasso(l1=lam, groups=layers, mode="adam", update_every=cfg["update_every"],
                                  sparse_model=model, target=target, adapt_rate=cfg.get("adapt_rate", 0.02))
        callbacks.insert(0, prox)
    stopper = EarlyStoppingAfterLock(prox, **stop) if target else keras.callbacks.EarlyStopping(**stop)
    history = trainer.fit(data.train, validation_data=data.validation, epochs=cfg["max_epochs"],
                          callbacks=[*callbacks, stopper], verbose=verbose)
    val = history.history["val_loss"]
    first = getattr(stopper, "lock_epoch", None) or 0
    info = {"epochs_run": len(val), "best_epoch": first + int(np.argmin(val[first:])) + 1 if val[first:] else None}
    if target:
        info.update(locked=prox.locked is not None, lock_epoch=None if stopper.lock_epoch is None
                    else stopper.lock_epoch + 1, effective_lambda=lam * prox.gain)
    return model, info


def measure(model, data, layers, latency_runs: int) -> dict:
    from tfmot_mtl import lite
    from tfmot_mtl.profile import profile
    from tfmot_mtl.sparsity import sparsity_report
    from tfmot_mtl.strip import strip_channels

    report = sparsity_report(model, groups=layers)
    small, _ = strip_channels(model)
    prof = profile(small)
    row = {"channel_sparsity": report["channel_sparsity"], "param_sparsity": report["param_sparsity"],
           "params": int(prof.total_params), "macs": int(prof.total_macs), "metrics": ex.evaluate(small, data),
           "layers": {g: {"sparsity": r["channel_sparsity"], "channels": r["channels"], "dead": r["dead"]}
                      for g, r in report["groups"].items()}}
    if latency_runs:
        bench = lite.benchmark(lite.convert(small, batch_size=1, verbose=False), runs=latency_runs, warmup=3,
                               num_threads=1, verbose=False)
        row["latency_ms"] = bench["median_ms"]
    return row


def single_task_data(data, task):
    def keep(x, y):
        return x, {task.name: y[task.name]}

    return ex.Data(data.name, data.train.map(keep), data.test.map(keep), [task], data.input_shape,
                   data.validation.map(keep))


def shared_layers(data, cfg: dict) -> list[str]:
    from tfmot_mtl.graph import ChannelGraph
    from tfmot_mtl.selection import producer_layers, select_groups

    model = ex.build_model("mtl_resnet", data.tasks, data.input_shape, width=cfg["width"], seed=0)
    graph = ChannelGraph.from_model(model)
    return producer_layers(graph, select_groups(graph, "shared"))


def _dm(metrics: dict, base: dict, tasks) -> float | None:
    from tfmot_mtl.tasks import delta_m

    try:
        return float(delta_m(metrics, base, tasks))
    except ValueError:  # a metric at 0 in the baseline (smoke runs)
        return None


def summarize(rows: list[dict], tasks) -> dict:
    """Mean +- std over seeds per lambda (sparsity, delta_m, latency) and the single-task comparison."""
    dense = {r["seed"]: r for r in rows if r["kind"] == "mtl" and not r["lambda"]}
    for r in rows:
        if r["kind"] == "mtl" and r["seed"] in dense:
            r["delta_m"] = _dm(r["metrics"], dense[r["seed"]]["metrics"], tasks)
    out = {"sweep": []}
    settings = {(r["lambda"], r.get("target")) for r in rows if r["kind"] == "mtl"}
    for lam, target in sorted(settings, key=lambda k: (k[1] is not None, k[1] or 0.0, k[0])):
        sel = [r for r in rows if r["kind"] == "mtl" and r["lambda"] == lam and r.get("target") == target]
        entry = {"lambda": lam, "target": target, "n": len(sel)}
        for key in ("channel_sparsity", "param_sparsity", "delta_m", "latency_ms", "params", "epochs_run",
                    "effective_lambda"):
            vals = [r[key] for r in sel if r.get(key) is not None]
            if vals:
                entry[key] = {"mean": float(np.mean(vals)), "std": float(np.std(vals))}
        out["sweep"].append(entry)
    singles = [r for r in rows if r["kind"] == "single"]
    if singles and singles[0]["seed"] in dense:
        seed = singles[0]["seed"]
        metrics = {t: r["metrics"][t] for r in singles for t in r["metrics"]}
        names = [t for t in tasks if t.name in metrics]
        mtl = [r for r in rows if r["kind"] == "mtl" and r["seed"] == seed and r["lambda"] == singles[0]["lambda"]
               and r.get("target") == singles[0].get("target")]
        out["single_task"] = {
            "lambda": singles[0]["lambda"], "target": singles[0].get("target"), "seed": seed,
            "channel_sparsity": float(np.mean([r["channel_sparsity"] for r in singles])),
            "params_total": int(sum(r["params"] for r in singles)),
            "delta_m": _dm(metrics, dense[seed]["metrics"], names),
            "mtl_delta_m": mtl[0].get("delta_m") if mtl else None,
            "mtl_channel_sparsity": mtl[0]["channel_sparsity"] if mtl else None,
            "mtl_params": mtl[0]["params"] if mtl else None}
    return out


def at_sparsity(summary: dict, target: float = 0.7) -> dict | None:
    """The sweep entry whose mean shared-channel sparsity is closest to `target`."""
    sweep = [e for e in summary["sweep"] if e["lambda"] and "channel_sparsity" in e]
    return min(sweep, key=lambda e: abs(e["channel_sparsity"]["mean"] - target)) if sweep else None


def setting_name(entry: dict) -> str:
    """"0.02" for a fixed lambda, "target 0.7 (λ 0.0153)" for an adaptive one (mean effective lambda)."""
    if entry.get("target") is None:
        return f"{entry['lambda']:g}"
    eff = entry.get("effective_lambda")
    eff = eff["mean"] if isinstance(eff, dict) else eff
    return f"target {entry['target']:g}" + (f" (λ {eff:.3g})" if eff else f" (λ from {entry['lambda']:g})")


def format_tables(result: dict) -> str:
    def pm(e, key, scale=1.0, fmt="{:.1f}"):
        if key not in e:
            return "-"
        return f"{fmt.format(scale * e[key]['mean'])} ± {fmt.replace('+', '').format(scale * e[key]['std'])}"

    s = result["summary"]
    lines = ["| lambda | seeds | shared-channel sparsity % | param sparsity % | Δm vs dense MTL % | "
             "params | LiteRT ms | epochs |", "|---|---|---|---|---|---|---|---|"]
    for e in s["sweep"]:
        lines.append(f"| {setting_name(e)} | {e['n']} | {pm(e, 'channel_sparsity', 100)} | "
                     f"{pm(e, 'param_sparsity', 100)} | {pm(e, 'delta_m', 1, '{:+.2f}')} | "
                     f"{pm(e, 'params', 1, '{:,.0f}')} | {pm(e, 'latency_ms', 1, '{:.2f}')} | "
                     f"{pm(e, 'epochs_run', 1, '{:.0f}')} |")
    st = s.get("single_task")
    if st:
        lines.append(f"\nsingle-task sparse models ({setting_name(st)}, seed {st['seed']}): "
                     f"sparsity {100 * st['channel_sparsity']:.1f}%, {st['params_total']:,} params in all, "
                     f"Δm vs dense MTL {st['delta_m'] if st['delta_m'] is None else round(st['delta_m'], 2)}%; "
                     f"multi-task sparse at the same setting: sparsity "
                     f"{100 * (st['mtl_channel_sparsity'] or 0):.1f}%, {st['mtl_params'] or 0:,} params, "
                     f"Δm {st['mtl_delta_m'] if st['mtl_delta_m'] is None else round(st['mtl_delta_m'], 2)}%")
    hit = result.get("at_target")
    if hit:
        dm = hit.get("delta_m", {}).get("mean")
        lines.append(f"\nat ~{100 * result['target']:.0f}% sparsity ({setting_name(hit)}, "
                     f"{100 * hit['channel_sparsity']['mean']:.1f}%): mean Δm "
                     f"{'n/a' if dm is None else f'{dm:+.2f}'}% -> target Δm >= 0 "
                     f"{'met' if dm is not None and dm >= 0 else 'NOT met'}")
    return "\n".join(lines)


def plot(result: dict, path: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tfmot_mtl.utils.atomic import atomic_savefig

    rows = [r for r in result["rows"] if r["kind"] == "mtl"]
    sparse = [r for r in rows if r["lambda"]]
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.6))
    axes[0].scatter([r.get("effective_lambda") or r["lambda"] for r in sparse], [100 * r["channel_sparsity"] for r in sparse])
    axes[0].set_xscale("log")
    axes[0].set(xlabel="lambda (effective, for targets)", ylabel="shared-channel sparsity %", title="sparsity vs lambda")
    for e in result["summary"]["sweep"]:
        if e["lambda"] and "delta_m" in e:
            axes[1].errorbar(100 * e["channel_sparsity"]["mean"], e["delta_m"]["mean"],
                             xerr=100 * e["channel_sparsity"]["std"], yerr=e["delta_m"]["std"], fmt="o",
                             label=setting_name(e))
    axes[1].axhline(0, color="grey", ls="--")
    axes[1].set(xlabel="shared-channel sparsity %", ylabel="Δm vs dense MTL %", title="Δm vs sparsity")
    axes[1].legend(fontsize=7)
    lat = [r for r in rows if r.get("latency_ms")]
    axes[2].scatter([100 * r["channel_sparsity"] for r in lat], [r["latency_ms"] for r in lat])
    axes[2].set(xlabel="shared-channel sparsity %", ylabel="LiteRT ms (batch 1, 1 thread)", title="latency")
    pick = max(sparse, key=lambda r: -abs(r["channel_sparsity"] - result["target"]), default=None)
    if pick:
        names = list(pick["layers"])
        axes[3].barh(range(len(names)), [100 * pick["layers"][n]["sparsity"] for n in names])
        axes[3].set_yticks(range(len(names)))
        axes[3].set_yticklabels(names, fontsize=5)
        axes[3].invert_yaxis()
        axes[3].set(xlabel="dead channels %", title=f"pattern per layer ({setting_name(pick)}, seed {pick['seed']})")
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=100)
    plt.close(fig)
    return path


def plan_jobs(cfg: dict, task_names: list[str]) -> list[tuple]:
    """(seed, "mtl" or a task name, lambda, target or None) of every model of a preset, in order:
    per seed the dense model, the target runs, the fixed lambdas (on ``lambda_seeds``); then
    the first seed's single-task sparse models."""
    seeds = list(cfg["seeds"])
    jobs = []
    for seed in seeds:
        jobs.append((seed, "mtl", 0.0, None))
        jobs += [(seed, "mtl", cfg["target_l1"], t) for t in cfg.get("targets", ())]
        if seed in cfg.get("lambda_seeds", seeds):
            jobs += [(seed, "mtl", lam, None) for lam in cfg.get("lambdas", ())]
    if cfg.get("single_lambda"):
        jobs += [(seeds[0], name, cfg["single_lambda"], cfg.get("single_target")) for name in task_names]
    return jobs


def run(preset: str, out_dir: str, verbose: int = 0, target: float = 0.7, cfg: dict | None = None,
        name: str = "group_sparsity_paper") -> dict:
    """Runs a preset (or `cfg`), writes ``<out_dir>/<name>.json`` and ``.png``, prints the tables."""
    cfg = {**PRESETS.get(preset, {}), **(cfg or {})}
    t0 = time.time()
    data = ex.load_data("synthetic_scenes", cfg["n_train"], cfg["n_test"], cfg["batch_size"], cfg["resolution"],
                        seed=0, n_val=cfg["n_val"])
    shared = shared_layers(data, cfg)
    result = {"preset": preset, "config": cfg, "dataset": "synthetic_scenes", "target": target,
              "recipe": "AdamW + uncertainty weighting + early stopping on val_loss (best epoch restored; "
                        "BatchNorm statistics re-estimated before each validation and at the end); "
                        "sparse: group-lasso loss (lambda * 1e-4) + Adam-reweighted proximal step (lambda; "
                        "targets: adaptive lambda, early stopping from the lock)",
              "rows": [], "complete": False}
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{name}.json")
    for seed, kind, lam, goal in plan_jobs(cfg, [t.name for t in data.tasks]):
        t = time.time()
        task = next((x for x in data.tasks if x.name == kind), None)
        d = data if task is None else single_task_data(data, task)
        layers = "shared" if task is None else shared
        model, info = train(d, cfg, seed, lam, layers, verbose, target=goal)
        lat = cfg["latency_runs"] if task is None and seed == cfg["seeds"][0] else 0
        row = {"seed": seed, "kind": "mtl" if task is None else "single", "task": kind, "lambda": lam,
               "target": goal, **info, **measure(model, d, layers, lat), "seconds": round(time.time() - t, 1)}
        result["rows"].append(row)
        result["summary"] = summarize(result["rows"], data.tasks)
        result["at_target"] = at_sparsity(result["summary"], target)
        result["seconds"] = round(time.time() - t0, 1)
        ex.write_json(path, result)
        log(f"seed {seed} {kind} {setting_name(row)}: sparsity {100 * row['channel_sparsity']:.1f}% "
            f"dm {row.get('delta_m')} epochs {row['epochs_run']} ({row['seconds']:.0f} s, total {result['seconds']:.0f} s)")
    result["complete"] = True
    ex.write_json(path, result)
    plot(result, os.path.join(out_dir, f"{name}.png"))
    print(format_tables(result), flush=True)
    log(f"wrote {path} ({result['seconds']:.0f} s)")
    return result
