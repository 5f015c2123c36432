"""Head-to-head on LiteRT: dense vs tfmot unstructured pruning vs our structured channel pruning.

Same `mtl_resnet` on `synthetic_scenes`, same training budget: the dense parent is trained E
epochs, then every variant gets the same F fine-tuning epochs (F x steps-per-epoch batches, Adam,
learning rate decaying from 2e-3, or --lr, to 0 on a cosine; default E = 4, F = 24):
  (a) dense: the parent fine-tuned F more epochs on labels;
  (b) tensorflow-model-optimization `prune_low_magnitude` at 50% / 70% + `strip_pruning`, fine-tuned
      F epochs from the same dense weights (the sparsity ramps up over the first 2/3 of the steps;
      benchmarks/_tfmot_worker.py, its own tf_keras process);
  (c) ours: a channel fraction of every prunable group, searched on per-group L1-magnitude masks
      of the dense weights (`channel_norms`) so that the stripped model's parameter count matches
      tfmot's non-zero count at 50% / 70%, plus one at 70% channel sparsity; every group's kept
      count rounded up or down to a multiple of --round-to (the SIMD width: 16 floats for
      AVX-512, 8 for AVX2, 4 for ARM NEON), so the small layers run at full vector width, with
      the total kept count of the fraction (`round_masks(mode="total")`: rounding each group to
      its nearest multiple turned the 70% row into 73%); pruned gradually while fine-tuning F
      epochs (ChannelPruningCallback: first-order Taylor importance on the task losses, the
      fraction of every group removed in 32 steps over the first 34% of the steps, then
      `strip_channels`; `--criterion magnitude` scores channels by the L1 norm of their
      weights, `--prune-until` moves the end of the ramp, `--events` sets the number of pruning
      steps, `--distill` fine-tunes distilled from the dense parent while pruning);
      `--one-shot` strips the masks of the dense weights first and fine-tunes the small model F
      epochs distilled from the dense parent (`recipes.finetune`, MultiTaskDistiller, T = 2).
The worker also fine-tunes the dense weights with its own tf_keras loop and no pruning wrapper
("dense_tf_keras"): each row's "delta_m_own_dense" is its delta_m against the dense model of its
own pipeline (tfmot rows vs dense_tf_keras, ours vs dense), which separates the effect of
pruning from the differences between the two training loops.
Every model (the dense parent, every variant, tfmot's in its worker) has its BatchNorm moving
statistics re-estimated on the training split after its training (`recipes.recalibrate_batchnorm`):
with momentum 0.99 the few hundred steps here leave them far from the final weights' statistics
(the dense model evaluates 42% better in delta_m after it); `--no-recalibrate` keeps them.
Every fine-tuning run starts from the same data and random state (`--seed`, default 0), so
a row does not depend on which rows ran before it (`--rows ch70` reproduces the full run's
row); training noise is measured by running other seeds. Metrics are on 256 test images.
Every variant is converted to float32 .tflite with batch 1 and measured in this process:
raw / gzipped size, LiteRT latency at 1 thread (A/B interleaved: every run times each model
once, in rotating order), task metrics from the TFLite outputs on the test split, delta_m vs
dense, and the ideal speed-up (dense MACs / variant MACs) next to the measured one.

    python benchmarks/vs_tfmot.py [--quick | --full] [--round-to 16] [--width 2] [--resolution 64] [--finetune-epochs 24]
                                  [--lr 2e-3] [--one-shot] [--criterion taylor|magnitude]
                                  [--prune-until 0.34] [--events 32] [--distill] [--no-recalibrate]
                                  [--rows all|ch70] [--seed 0]
    # writes benchmarks/results/vs_tfmot.json + .png

`benchmarks/speedup_sweep.py` explains the settings: the measured / ideal ratio grows with
the width of the layers and with channel counts aligned to the SIMD width.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from tfmot_mtl.utils.atomic import atomic_savefig, atomic_savez, atomic_write  # noqa: E402

SETTINGS = {
    "quick": dict(resolution=32, n_train=64, n_test=16, batch_size=16, width=0.5, epochs=1, finetune_epochs=1,
                  runs=20, round_to=4),
    # width 4: the stages have 64-512 channels, as in ResNet-18/34 (see speedup_sweep.py for why width matters)
    # 24 fine-tuning epochs (288 steps): with 8, tfmot's 70% model was still 11% below dense
    "default": dict(resolution=64, n_train=384, n_test=256, batch_size=32, width=4.0, epochs=4, finetune_epochs=24,
                    runs=100, round_to=16),
    "full": dict(resolution=64, n_train=2000, n_test=500, batch_size=32, width=4.0, epochs=10, finetune_epochs=20,
                 runs=200, round_to=16),
}
SPARSITIES = (0.5, 0.7)
LR = 2e-3  # the fine-tuning learning rate of every variant unless --lr (the dense parent's rate)
RECIPE = dict(criterion="taylor", events=32, prune_until=0.34)  # ours, unless --criterion / --events / --prune-until


def finetune(model, data, epochs: int, teacher=None, lr: float = LR, recalibrate: bool = True) -> float:
    """Fine-tunes in place for `epochs` epochs (cosine-decay Adam from `lr`), distilled from
    `teacher` when given, then re-estimates the BatchNorm statistics if `recalibrate`; returns seconds."""
    from tfmot_mtl import recipes

    start = time.perf_counter()
    recipes.finetune(model, data, epochs, teacher=teacher, lr=lr, weighting="fixed", verbose=2,
                     recalibrate=recalibrate)
    return time.perf_counter() - start


def save_for_worker(model, data, folder: str) -> tuple[str, str]:
    """Dense weights as "layer/i" arrays and the training split as arrays, for the tfmot worker."""
    weights = {f"{layer.name}/{i}": np.asarray(w) for layer in model.layers for i, w in enumerate(layer.weights)}
    wpath, dpath = os.path.join(folder, "dense_weights.npz"), os.path.join(folder, "train.npz")
    atomic_savez(wpath, **weights)
    arrays: dict[str, list] = {}
    for x, y in data.train.as_numpy_iterator():
        for k, v in {**x, **y}.items():
            arrays.setdefault(k, []).append(v)
    atomic_savez(dpath, **{k: np.concatenate(v) for k, v in arrays.items()})
    return wpath, dpath


def run_tfmot(model, data, cfg: dict, folder: str) -> list[dict]:
    from tfmot_mtl.recipes.experiment import steps_per_epoch

    wpath, dpath = save_for_worker(model, data, folder)
    spec = {"weights": wpath, "data": dpath, "tasks": [[t.name, t.kind, t.output_channels] for t in data.tasks],
            "model_kwargs": {"width": cfg["width"]}, "input_shape": list(data.input_shape),
            "sparsities": [0.0, *SPARSITIES], "steps": cfg["finetune_epochs"] * steps_per_epoch(data.train),
            "batch_size": cfg["batch_size"],
            "lr": cfg["lr"], "out": folder, "recalibrate": bool(cfg["recalibrate"])}
    spec_path = os.path.join(folder, "spec.json")
    atomic_write(spec_path, json.dumps(spec))
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    env["TF_USE_LEGACY_KERAS"] = "1"
    subprocess.run([sys.executable, os.path.join(HERE, "_tfmot_worker.py"), spec_path], env=env, check=True)
    with open(os.path.join(folder, "tfmot_results.json")) as f:
        return json.load(f)["results"]


def magnitude_masks(graph, weights, fraction: float, multiple: int = 1):
    """Drops the `fraction` lowest-L1 channels of every prunable group (at least one kept), then
    rounds each kept count up or down to a multiple of `multiple`, keeping the total
    (`round_masks(mode="total")`: the realised channel sparsity stays `fraction`)."""
    from tfmot_mtl.masks import ChannelMasks, channel_norms
    from tfmot_mtl.masks import round_masks

    masks = {}
    for g in graph.prunable_groups:
        norm = channel_norms(graph, weights, g.id, ord=1)
        keep = max(1, int(round((1 - fraction) * len(norm))))
        mask = np.zeros(len(norm), bool)
        mask[np.argsort(-norm, kind="stable")[:keep]] = True
        masks[g.id] = mask
    return round_masks(graph, ChannelMasks(masks), multiple, weights, mode="total")


def match_params(model, target_params: int, multiple: int = 1, iters: int = 12) -> tuple[float, object]:
    """Bisects the channel fraction whose stripped model has ~target_params parameters."""
    from tfmot_mtl.graph import ChannelGraph
    from tfmot_mtl.masks import read_weights
    from tfmot_mtl.strip import strip_channels

    graph = ChannelGraph.from_model(model)
    weights = read_weights(graph)
    lo, hi, best = 0.0, 0.98, None
    for _ in range(iters):
        mid = (lo + hi) / 2
        masks = magnitude_masks(graph, weights, mid, multiple)
        params = strip_channels(model, masks)[1].totals["params_after"]
        if best is None or abs(params - target_params) < abs(best[2] - target_params):
            best = (mid, masks, params)
        lo, hi = (mid, hi) if params > target_params else (lo, mid)
    return best[0], best[1]


def gradual_prune(model, data, fraction: float, epochs: int, multiple: int, events: int = 8,
                  lr: float = LR, criterion: str = "magnitude", until: float = 2 / 3, teacher=None):
    """Prunes ``fraction`` of every prunable group of ``model`` (in place) while training it
    ``epochs`` epochs (cosine-decay Adam from ``lr``): channel pruning by ``criterion``
    ("magnitude": L1 of the weights; "taylor": first-order Taylor on the task losses) in
    ``events`` equal steps over the first ``until`` of the steps (2/3: tfmot's ramp), the
    removed channels held at zero by ChannelPruningCallback; distilled from ``teacher`` when
    given (MultiTaskDistiller, T = 2), else on labels. Returns the final masks."""
    from tfmot_mtl import recipes
    from tfmot_mtl.recipes.experiment import steps_per_epoch
    from tfmot_mtl.pruning import ChannelPruningCallback, IterativeSchedule, Magnitude, Taylor
    from tfmot_mtl.tasks import compile_args

    total = max(1, epochs) * steps_per_epoch(data.train)
    ramp = max(1, int(until * total))
    events = max(1, min(events, ramp))  # every event inside the first `until` of the steps
    frequency = max(1, ramp // events)
    schedule = IterativeSchedule(target=fraction, frequency=frequency, step=fraction / events,
                                 end_step=frequency * (events - 1))
    if criterion == "taylor":
        importance = Taylor(losses={t.name: t.loss for t in data.tasks})
    elif criterion == "magnitude":
        importance = Magnitude(p=1)
    else:
        raise ValueError(f"criterion must be 'magnitude' or 'taylor', got {criterion!r}")
    pruner = ChannelPruningCallback(importance, schedule, scope="layer", groups="all",
                                    round_to=multiple if multiple > 1 else None, round_mode="total", verbose=0,
                                    data=data.train.repeat() if criterion == "taylor" else None,
                                    score_batches=2, pruned_model=model)
    if teacher is not None:
        recipes.finetune(model, data, epochs, teacher=teacher, lr=lr, weighting="fixed", verbose=2,
                         callbacks=[pruner], recalibrate=False)  # the stripped model is, in `ours`
        return pruner.masks
    model.compile(recipes.cosine_adam(lr, epochs, steps_per_epoch(data.train)), jit_compile=False,
                  **compile_args(data.tasks))
    model.fit(data.train.repeat(), epochs=1, steps_per_epoch=total, callbacks=[pruner], verbose=2)
    return pruner.masks


def ours(model, data, fraction_or_params, epochs: int, by_params: bool, multiple: int = 1,
         gradual: bool = True, lr: float = LR, criterion: str = "magnitude", until: float = 2 / 3,
         distill: bool = False, events: int = 8, recalibrate: bool = False):
    """Our variant at a parameter count (``by_params``) or a channel fraction: the fraction of
    every group is found on the dense weights; ``gradual`` prunes it while fine-tuning (then
    strips; by ``criterion`` in ``events`` steps over the first ``until`` of the steps,
    distilled from the dense parent if ``distill``), else the one-shot masks are stripped and
    the small model fine-tuned, distilled; ``recalibrate`` re-estimates the BatchNorm
    statistics of the stripped, fine-tuned model on the training split."""
    from tfmot_mtl import recipes
    from tfmot_mtl.graph import ChannelGraph
    from tfmot_mtl.masks import clone_with_weights, read_weights
    from tfmot_mtl.strip import strip_channels

    graph = ChannelGraph.from_model(model)
    if by_params:
        fraction, masks = match_params(model, fraction_or_params, multiple)
    else:
        fraction = fraction_or_params
        masks = magnitude_masks(graph, read_weights(graph), fraction, multiple)
    start = time.perf_counter()
    if gradual:
        pruned = clone_with_weights(model)
        masks = gradual_prune(pruned, data, fraction, epochs, multiple, lr=lr, criterion=criterion,
                              until=until, teacher=model if distill else None, events=events)
        small, report = strip_channels(pruned, masks)
        train_s = time.perf_counter() - start
    else:
        small, report = strip_channels(model, masks)
        train_s = finetune(small, data, epochs, teacher=model, lr=lr, recalibrate=False)
    if recalibrate:
        recipes.recalibrate_batchnorm(small, data.train)
    return small, {"channel_fraction": fraction, "round_to": multiple, "gradual": gradual,
                   "recalibrated": recalibrate,
                   **({"criterion": criterion, "prune_until": until, "distilled": distill, "events": events}
                      if gradual
                      else {"criterion": "magnitude", "distilled": True}),
                   "channel_sparsity": masks.sparsity(graph, graph.prunable_groups),
                   "params": int(small.count_params()),
                   "nonzero_params": int(sum(np.count_nonzero(np.asarray(w)) for w in small.weights)),
                   "train_s": train_s, "param_ratio": report.param_ratio}


def plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for row in rows:
        kind = row["name"].split("_")[0]
        style = {"dense": "ks", "tfmot": "bo", "ours": "r^"}[kind]
        for ax, key in zip(axes, ("median_ms", "gzip_bytes")):
            value = row[key] / (1024 if key == "gzip_bytes" else 1)
            ax.plot(row["nonzero_params"], value, style)
            ax.annotate(row["name"], (row["nonzero_params"], value), fontsize=7)
    axes[0].set(xlabel="non-zero parameters", ylabel="LiteRT latency, 1 thread (ms, median)")
    axes[1].set(xlabel="non-zero parameters", ylabel=".tflite gzipped (KiB)")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle("mtl_resnet on synthetic_scenes: dense vs tfmot (unstructured) vs ours (channels, stripped)")
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=120)


def run(setting: str, out: str, overrides: dict | None = None) -> dict:
    import keras

    from tfmot_mtl.recipes import experiment as ex
    from tfmot_mtl import lite
    from tfmot_mtl.recipes.experiment import steps_per_epoch
    from tfmot_mtl.profile import profile
    from tfmot_mtl.tasks import evaluate

    cfg = {"lr": LR, "recalibrate": True, "seed": 0, **SETTINGS[setting],
           **{k: v for k, v in (overrides or {}).items() if v is not None}}
    def load():
        return ex.load_data("synthetic_scenes", n_train=cfg["n_train"], n_test=cfg["n_test"],
                            batch_size=cfg["batch_size"], resolution=cfg["resolution"], seed=0)

    def fresh():
        """The data as new and the random state at --seed: each variant trains the same way
        whichever variants ran before it (the training split's shuffling state lives in the dataset)."""
        keras.utils.set_random_seed(cfg["seed"])
        return load()

    data = load()
    dense = ex.build_model("mtl_resnet", data.tasks, data.input_shape, width=cfg["width"], seed=0)
    ex.fit(dense, data, epochs=cfg["epochs"], lr=2e-3)
    if cfg["recalibrate"]:  # the parent every variant starts from (and the teacher of --distill)
        from tfmot_mtl.recipes import recalibrate_batchnorm

        recalibrate_batchnorm(dense, data.train)
    models, info, tfmot_rows, tflites = {}, {}, [], {}
    if cfg.get("rows", "all") == "all":  # "ch70": only dense and ours at 70% channels
        with tempfile.TemporaryDirectory(prefix="vs_tfmot_") as folder:
            tfmot_rows = run_tfmot(dense, data, cfg, folder)
            tflites = {r["name"]: open(r["tflite"], "rb").read() for r in tfmot_rows}
    for r in tfmot_rows:
        info[r["name"]] = {k: v for k, v in r.items() if k != "tflite"}
    recipe = {"multiple": cfg["round_to"], "gradual": cfg.get("gradual", True), "lr": cfg["lr"],
              "criterion": cfg.get("criterion", RECIPE["criterion"]),
              "until": cfg.get("prune_until", RECIPE["prune_until"]),
              "distill": cfg.get("distill", False), "events": cfg.get("events", RECIPE["events"]),
              "recalibrate": bool(cfg["recalibrate"])}
    for r in (r for r in tfmot_rows if r["target_sparsity"] > 0):
        name = f"ours_params{int(round(r['target_sparsity'] * 100))}"
        models[name], info[name] = ours(dense, fresh(), r["nonzero_params"], cfg["finetune_epochs"],
                                        by_params=True, **recipe)
    models["ours_ch70"], info["ours_ch70"] = ours(dense, fresh(), 0.7, cfg["finetune_epochs"], by_params=False,
                                                  **recipe)
    dense_base = keras.models.clone_model(dense)
    dense_base.set_weights(dense.get_weights())
    info["dense"] = {"train_s": finetune(dense_base, fresh(), cfg["finetune_epochs"], lr=cfg["lr"],
                                         recalibrate=cfg["recalibrate"]),
                     "params": int(dense_base.count_params())}
    info["dense"]["nonzero_params"] = int(sum(np.count_nonzero(np.asarray(w)) for w in dense_base.weights))
    models["dense"] = dense_base
    for name, model in models.items():
        tflites[name] = lite.convert(model, batch_size=1, verbose=False)
    dense_macs = profile(dense_base).total_macs
    for name in tflites:
        info[name]["macs"] = profile(models[name]).total_macs if name in models else dense_macs

    lites = {n: lite.LiteModel(tflites[n], num_threads=1) for n in ["dense", *sorted(set(tflites) - {"dense"})]}
    latency = lite.interleaved_latency(lites, cfg["runs"])
    results = {n: evaluate(lambda x, lm=lm: lm.predict(x), data.test, data.tasks) for n, lm in lites.items()}
    rows = []
    for name in lites:
        row = {"name": name, **info[name], **latency[name], "tflite_bytes": len(tflites[name]),
               "gzip_bytes": len(gzip.compress(tflites[name], 9)), "metrics": results[name],
               "delta_m": 0.0 if name == "dense" else safe_delta_m(results[name], results["dense"], data.tasks)}
        own = "dense_tf_keras" if name.startswith(("tfmot_", "dense_tf")) else "dense"  # its pipeline's dense
        row["delta_m_own_dense"] = safe_delta_m(results[name], results[own], data.tasks)
        row["ideal_speedup"] = dense_macs / row["macs"]
        row["measured_speedup"] = latency["dense"]["median_ms"] / row["median_ms"]
        row["speedup_vs_ideal"] = row["measured_speedup"] / row["ideal_speedup"]
        rows.append(row)
    spe = steps_per_epoch(data.train)
    report = {"setting": setting, "config": cfg, "sparsities": SPARSITIES, "rows": rows,
              "training_budget": {"dense_epochs": cfg["epochs"], "finetune_epochs": cfg["finetune_epochs"],
                                  "steps_per_epoch": spe, "finetune_steps": cfg["finetune_epochs"] * spe,
                                  "finetune_lr": cfg["lr"], "same_for_every_variant": True},
              "targets": targets(rows)}
    os.makedirs(out, exist_ok=True)
    ex.write_json(os.path.join(out, "vs_tfmot.json"), report)
    plot(rows, os.path.join(out, "vs_tfmot.png"))
    return report


def safe_delta_m(results: dict, baseline: dict, tasks) -> float:
    """delta_m over the metrics whose dense value is non-zero (an undertrained --quick dense model
    can score 0, e.g. depth delta1, where a relative change is undefined)."""
    from tfmot_mtl.tasks import delta_m

    metrics = {t.name: [m for m in t.metrics if baseline[t.name].get(m, 0) not in (0, 0.0)
                        and np.isfinite(baseline[t.name][m])] for t in tasks}
    return delta_m(results, baseline, tasks=[t for t in tasks if metrics[t.name]],
                   metrics={k: v for k, v in metrics.items() if v})


def targets(rows: list[dict]) -> dict:
    """The acceptance checks: latency and size of ours at 70% channels and matched to tfmot-70
    params; quality of ours against tfmot at matched parameter counts and at 70% channels."""
    by = {r["name"]: r for r in rows}
    tf70 = by.get("tfmot_70")
    checks = {}
    for level in (50, 70):
        r, tf = by.get(f"ours_params{level}"), by.get(f"tfmot_{level}")
        if r is not None and tf is not None:
            checks[f"delta_m_ours_ge_tfmot_{level}"] = r["delta_m"] >= tf["delta_m"]
            checks[f"delta_m_own_dense_ours_ge_tfmot_{level}"] = r["delta_m_own_dense"] >= tf["delta_m_own_dense"]
    if "ours_ch70" in by:
        checks["delta_m_ours_ch70_ge_-5"] = by["ours_ch70"]["delta_m"] >= -5.0
    for name in ("ours_ch70", "ours_params70"):
        r = by.get(name)
        if r is None or tf70 is None:
            continue
        ours_adv, tf_adv = r["measured_speedup"] - 1, tf70["measured_speedup"] - 1
        checks[name] = {
            "speedup_ge_0.8x_ideal": r["speedup_vs_ideal"] >= 0.8,
            "speedup_vs_ideal": r["speedup_vs_ideal"],
            "latency_advantage_ge_2x_tfmot": r["measured_speedup"] >= 2 * tf70["measured_speedup"],
            "speedup_ratio_vs_tfmot": r["measured_speedup"] / tf70["measured_speedup"],
            "latency_saving_ours_vs_tfmot": [ours_adv, tf_adv],
            "gzip_smaller_than_tfmot": r["gzip_bytes"] < tf70["gzip_bytes"],
        }
    return checks


def print_table(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"vs_tfmot ({report['setting']}): mtl_resnet, synthetic_scenes, LiteRT 1 thread")
    cols = ["variant", "ch. sparsity", "params", "nonzero", "tflite KiB", "gzip KiB", "median ms", "speed-up", "ideal",
            "seg mIoU", "depth abs", "normals mean°", "Δm %", "Δm own %"]
    for c in cols:
        table.add_column(c, justify="right")
    for r in report["rows"]:
        m = r["metrics"]
        sparsity = f"{r['channel_sparsity']:.0%}" if "channel_sparsity" in r else "-"
        table.add_row(r["name"], sparsity, f"{r['params']:,}", f"{r['nonzero_params']:,}", f"{r['tflite_bytes'] / 1024:.1f}",
                      f"{r['gzip_bytes'] / 1024:.1f}", f"{r['median_ms']:.2f}", f"{r['measured_speedup']:.2f}x",
                      f"{r['ideal_speedup']:.2f}x", f"{m['segmentation']['miou']:.1f}",
                      f"{m['depth']['abs_err']:.3f}", f"{m['normals']['mean_angle']:.1f}", f"{r['delta_m']:+.1f}",
                      f"{r['delta_m_own_dense']:+.1f}")
    Console(width=170).print(table)
    b = report["training_budget"]
    print(f"budget: dense parent {b['dense_epochs']} epochs, then {b['finetune_epochs']} fine-tuning epochs "
          f"({b['finetune_steps']} steps, Adam from lr {b.get('finetune_lr', LR):g}, cosine) for every variant, "
          "dense included")
    print(json.dumps(report["targets"], indent=2))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_true", help="tiny data and budget (smoke test, ~1-2 min)")
    group.add_argument("--full", action="store_true", help="the whole dataset and a longer budget")
    parser.add_argument("--round-to", type=int, help="channel multiple of our variants (default: the setting's)")
    parser.add_argument("--width", type=float, help="mtl_resnet width multiplier (default: the setting's)")
    parser.add_argument("--resolution", type=int, help="input size (default: the setting's)")
    parser.add_argument("--finetune-epochs", type=int, help="fine-tuning epochs of every variant (default: the setting's)")
    parser.add_argument("--one-shot", action="store_true",
                        help="our variants: strip the dense model's masks, then fine-tune distilled "
                             "(default: prune gradually while fine-tuning, then strip)")
    parser.add_argument("--lr", type=float, help=f"initial fine-tuning learning rate of every variant, tfmot's "
                        f"included (default {LR})")
    parser.add_argument("--criterion", choices=["magnitude", "taylor"],
                        help="channel importance of gradual pruning (default taylor: first-order Taylor on the "
                             "task losses; magnitude: L1 of the weights)")
    parser.add_argument("--prune-until", type=float,
                        help=f"gradual pruning ends after this fraction of the fine-tuning steps "
                             f"(default {RECIPE['prune_until']})")
    parser.add_argument("--distill", action="store_true",
                        help="gradual pruning distils from the dense parent (default: labels only, like tfmot)")
    parser.add_argument("--events", type=int, help=f"pruning steps of gradual pruning (default {RECIPE['events']})")
    parser.add_argument("--no-recalibrate", action="store_true",
                        help="keep the moving BatchNorm statistics of training (default: every model, the "
                             "dense parent and tfmot's included, re-estimates them on the training split "
                             "after its training, recipes.recalibrate_batchnorm)")
    parser.add_argument("--rows", choices=["all", "ch70"], default="all",
                        help="ch70: only the dense model and ours at 70%% channel sparsity (no tfmot, no "
                             "matched-count rows), for longer fine-tuning budgets of that row")
    parser.add_argument("--seed", type=int, default=0,
                        help="random seed of the fine-tuning runs (dropout, scoring); the data and the dense "
                             "parent stay the same, so seeds measure the training noise of each row")
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    args = parser.parse_args(argv)
    setting = "quick" if args.quick else "full" if args.full else "default"
    overrides = {"round_to": args.round_to, "width": args.width, "resolution": args.resolution,
                 "finetune_epochs": args.finetune_epochs, "gradual": not args.one_shot, "lr": args.lr,
                 "criterion": args.criterion, "prune_until": args.prune_until, "distill": args.distill or None,
                 "events": args.events, "recalibrate": not args.no_recalibrate, "rows": args.rows,
                 "seed": args.seed}
    print_table(run(setting, args.out, overrides))
    return 0


if __name__ == "__main__":
    sys.exit(main())
