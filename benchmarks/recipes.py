"""Ablation of the fine-tuning recipe after stripping: what recovers a compressed model's quality.

On ``synthetic_scenes``, per seed: train the dense parent (``dense_epochs``) and a dense model
for the whole budget (``dense_epochs + find_epochs + finetune_epochs``: the parent trained on
for the epochs the compressed models spend after it, ``recipes.train_same_budget``; the
reference of every delta_m); prune the shared channels of the parent to each target (Taylor, iterative, over
``find_epochs``), strip, then fine-tune the stripped model ``finetune_epochs`` four ways:

- ``finetune``: labels only, fixed task weights;
- ``+distill``: distilled from the dense parent (MultiTaskDistiller, T = 2, label-loss weight
  ``--student-loss-weight``, default 0.5);
- ``+weighting``: labels only, uncertainty weighting (Kendall et al. 2018);
- ``+both``: distillation and uncertainty weighting;
- ``+distill, annealed``: distilled from the dense parent with teacher annealing (Clark et
  al. 2019): the distillation terms fade linearly to 0 over the fine-tuning, so the student
  ends on its labels (``recipes.finetune(teacher_annealing=True)``);
- ``+distill, same-budget teacher``: distilled from the same-budget dense model instead of
  the parent (a teacher that saw all the epochs: it shows what distillation gives when the
  teacher is better than the student, at the cost of training that teacher; the other
  variants' total budget is the compressed model's own).

Prints mean +- std over seeds per (target, variant), writes
``benchmarks/results/recipes.json`` and ``recipes_pareto.png`` (delta_m against MACs, with the
dense point at 0).

    python benchmarks/recipes.py --quick     # smoke run, about a minute
    python benchmarks/recipes.py             # default preset (see PRESETS for the budgets)
    python benchmarks/recipes.py --preset demo   # the demo's setting, one seed
    python benchmarks/recipes.py --preset demo --splits 16,2,6 10,2,12 8,10,6   # one budget spent 3 ways
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from tfmot_mtl.recipes import experiment as ex  # noqa: E402
from tfmot_mtl import recipes  # noqa: E402
from tfmot_mtl.utils.atomic import atomic_savefig  # noqa: E402
from tfmot_mtl.app.demo import PRIMARY_METRICS  # noqa: E402
from tfmot_mtl.masks import clone_with_weights  # noqa: E402
from tfmot_mtl.profile import profile  # noqa: E402
from tfmot_mtl.strip import strip_channels  # noqa: E402
from tfmot_mtl.tasks import delta_m  # noqa: E402

# variant -> (teacher: None, the dense "parent" or the "same"-budget dense model; task weighting;
# teacher annealing)
VARIANTS = {"finetune": (None, "fixed", False), "+distill": ("parent", "fixed", False),
            "+weighting": (None, "uncertainty", False), "+both": ("parent", "uncertainty", False),
            "+distill, annealed": ("parent", "fixed", True),
            "+distill, same-budget teacher": ("same", "fixed", False)}
PRESETS = {
    "quick": dict(n_train=32, n_test=16, batch_size=16, resolution=32, width=0.25, dense_epochs=1,
                  find_epochs=1, finetune_epochs=1, targets=(0.5,), seeds=(0,)),
    # the demo's recipe (8 dense + 10 pruning + 6 fine-tuning epochs, all at 2e-3) on smaller data
    "default": dict(n_train=500, n_test=200, batch_size=32, resolution=32, width=0.5, dense_epochs=8,
                    find_epochs=10, finetune_epochs=6, targets=(0.5, 0.7), seeds=(0, 1, 2)),
    # the setting of `make demo` (tfmot_mtl.app.demo.DemoConfig), one seed: about 20 minutes
    "demo": dict(n_train=1500, n_test=300, batch_size=32, resolution=64, width=1.0, dense_epochs=8,
                 find_epochs=10, finetune_epochs=6, targets=(0.62,), seeds=(0,)),
}
LR = 2e-3  # every phase's initial learning rate (cosine decay within each), as in the demo


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run_seed(cfg: dict, seed: int) -> list[dict]:
    data = ex.load_data("synthetic_scenes", n_train=cfg["n_train"], n_test=cfg["n_test"],
                        batch_size=cfg["batch_size"], resolution=cfg["resolution"], seed=seed)
    budget = recipes.Epochs(cfg["dense_epochs"], cfg["find_epochs"], cfg["finetune_epochs"])

    def build():
        return ex.build_model("mtl_resnet", data.tasks, data.input_shape, width=cfg["width"], seed=seed)

    dense = recipes.train_dense(build(), data, budget.dense, LR)
    same = recipes.train_same_budget(dense, data, budget, LR, build=build)  # the parent trained on
    reference = ex.evaluate(same, data)
    rows = [{"seed": seed, "target": 0.0, "variant": "dense, same budget", "macs": profile(same).total_macs,
             "params": profile(same).total_params, "delta_m": 0.0, "metrics": reference}]
    for target in cfg["targets"]:
        found, masks, info = recipes.find_channels(dense, data, "prune", target, budget.find, lr=LR,
                                                   options={"criterion": "taylor"})
        stripped, _ = strip_channels(found, masks)
        for variant in cfg.get("variants", list(VARIANTS)):
            teacher, weighting, anneal = VARIANTS[variant]
            small = clone_with_weights(stripped)
            teacher = {None: None, "parent": dense, "same": same}[teacher]
            recipes.finetune(small, data, budget.finetune, teacher=teacher, lr=LR, weighting=weighting,
                             student_loss_weight=cfg.get("student_loss_weight", 0.5), teacher_annealing=anneal)
            metrics = ex.evaluate(small, data)
            prof = profile(small)
            rows.append({"seed": seed, "target": target, "variant": variant, "macs": prof.total_macs,
                         "params": prof.total_params, "sparsity": info["sparsity"], "metrics": metrics,
                         "delta_m": delta_m(metrics, reference, data.tasks, PRIMARY_METRICS)})
            log(f"seed {seed} target {target:.0%} {variant:>10}: delta_m {rows[-1]['delta_m']:+.2f}% "
                f"at {prof.total_macs / rows[0]['macs']:.2f}x the dense MACs")
    return rows


def run_splits(cfg: dict, seed: int, splits: list[tuple[int, int, int]]) -> list[dict]:
    """The same total budget spent in other ways: per ``(dense, find, finetune)`` split, a dense
    parent, Taylor pruning to the preset's first target over ``find`` epochs, strip, and
    fine-tuning on labels with uncertainty weighting (learning rates 1e-3 unless the split
    names them); all against one dense model trained for
    the whole budget."""
    data = ex.load_data("synthetic_scenes", n_train=cfg["n_train"], n_test=cfg["n_test"],
                        batch_size=cfg["batch_size"], resolution=cfg["resolution"], seed=seed)

    def build():
        return ex.build_model("mtl_resnet", data.tasks, data.input_shape, width=cfg["width"], seed=seed)

    total = sum(splits[0][:3])
    same = recipes.train_dense(build(), data, total)
    reference = ex.evaluate(same, data)
    rows = [{"seed": seed, "target": 0.0, "variant": "dense, same budget", "macs": profile(same).total_macs,
             "params": profile(same).total_params, "delta_m": 0.0, "metrics": reference}]
    target = cfg["targets"][0]
    for d, f, t, *rates in splits:
        find_lr, tune_lr = rates or (1e-3, 1e-3)
        dense = recipes.train_dense(build(), data, d)
        found, masks, info = recipes.find_channels(dense, data, "prune", target, f, lr=find_lr,
                                                   options={"criterion": "taylor"})
        small, _ = strip_channels(found, masks)
        recipes.finetune(small, data, t, lr=tune_lr, weighting="uncertainty")
        name = f"{d} + {f} + {t}" + (f" lr {find_lr:g}/{tune_lr:g}" if rates else "")
        metrics, prof = ex.evaluate(small, data), profile(small)
        rows.append({"seed": seed, "target": target, "variant": name, "macs": prof.total_macs,
                     "params": prof.total_params, "sparsity": info["sparsity"], "metrics": metrics,
                     "delta_m": delta_m(metrics, reference, data.tasks, PRIMARY_METRICS)})
        log(f"seed {seed} split {name} epochs: delta_m {rows[-1]['delta_m']:+.2f}% "
            f"at {prof.total_macs / rows[0]['macs']:.2f}x the dense MACs")
    return rows


def parse_split(text: str) -> tuple:
    """``DENSE,FIND,FINETUNE`` epochs, optionally followed by ``,FIND_LR,FINETUNE_LR``."""
    parts = text.split(",")
    try:
        if len(parts) not in (3, 5):
            raise ValueError
        d, f, t = (int(v) for v in parts[:3])
        rates = tuple(float(v) for v in parts[3:])
    except ValueError:
        raise argparse.ArgumentTypeError(f"a split is DENSE,FIND,FINETUNE epochs (and optionally "
                                         f",FIND_LR,FINETUNE_LR), got {text!r}") from None
    if min(d, f, t) < 0 or d + f + t == 0 or any(r <= 0 for r in rates):
        raise argparse.ArgumentTypeError(f"epochs must be >= 0 and not all 0, rates > 0, got {text!r}")
    return (d, f, t) + rates


def summarise(rows: list[dict]) -> list[dict]:
    out = []
    order = list(VARIANTS)  # the ablation's variants in their order; others (splits) as they ran
    keys = sorted(dict.fromkeys((r["target"], r["variant"]) for r in rows),
                  key=lambda k: (k[0], order.index(k[1]) if k[1] in order else -1))
    for target, variant in keys:
        sel = [r for r in rows if r["target"] == target and r["variant"] == variant]
        dm = np.array([r["delta_m"] for r in sel])
        out.append({"target": target, "variant": variant, "seeds": len(sel),
                    "delta_m_mean": float(dm.mean()), "delta_m_std": float(dm.std()),
                    "macs": float(np.mean([r["macs"] for r in sel])),
                    "params": float(np.mean([r["params"] for r in sel]))})
    return out


def plot(summary: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for variant in dict.fromkeys(s["variant"] for s in summary if s["target"] > 0):
        pts = sorted((s["macs"], s["delta_m_mean"], s["delta_m_std"]) for s in summary if s["variant"] == variant)
        if pts:
            x, y, e = zip(*pts)
            ax.errorbar(x, y, yerr=e, marker="o", capsize=3, label=variant)
    dense = [s for s in summary if s["target"] == 0.0]
    if dense:
        ax.scatter([dense[0]["macs"]], [0.0], marker="*", s=150, color="black", label="dense, same budget")
    ax.set_xlabel("MACs per image")
    ax.set_ylabel("Δm vs dense, same budget (%)")
    ax.set_title("Fine-tuning after stripping: accuracy at a size")
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=110)
    plt.close(fig)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the smoke preset (same as --preset quick)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="default")
    parser.add_argument("--seeds", type=int, nargs="*", default=None)
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), metavar="VARIANT",
                        help=f"the fine-tuning variants to run (default: all of {list(VARIANTS)})")
    parser.add_argument("--student-loss-weight", type=float, default=0.5,
                        help="weight of the label loss in the distilled variants (1 - the distillation weight)")
    parser.add_argument("--splits", type=parse_split, nargs="+", metavar="DENSE,FIND,FINETUNE[,FIND_LR,FINETUNE_LR]",
                        help="instead of the ablation, compare ways to spend one total budget, e.g. "
                             "--splits 16,2,6 10,2,12 8,10,6 (all with the same total)")
    parser.add_argument("--width", type=float, help="mtl_resnet width multiplier (default: the preset's)")
    parser.add_argument("--resolution", type=int, help="input size (default: the preset's)")
    parser.add_argument("--target", type=float, help="the one channel-sparsity target (default: the preset's)")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    if args.splits and len({sum(split[:3]) for split in args.splits}) > 1:
        parser.error(f"--splits must share one total budget, got {args.splits}")
    preset = "quick" if args.quick else args.preset
    cfg = dict(PRESETS[preset], preset=preset, student_loss_weight=args.student_loss_weight)
    if args.seeds:
        cfg["seeds"] = tuple(args.seeds)
    if args.variants:
        cfg["variants"] = tuple(args.variants)
    for key in ("width", "resolution"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    if args.target is not None:
        if not 0 < args.target < 1:
            parser.error(f"--target must be in (0, 1), got {args.target}")
        cfg["targets"] = (args.target,)
    start = time.time()
    if args.splits:
        rows = [row for seed in cfg["seeds"] for row in run_splits(cfg, seed, args.splits)]
    else:
        rows = [row for seed in cfg["seeds"] for row in run_seed(cfg, seed)]
    summary = summarise(rows)
    print(f"{'target':>7} {'variant':>20} {'delta_m (mean +- std)':>24} {'MACs':>12}")
    for s in summary:
        print(f"{s['target']:>7.0%} {s['variant']:>20} {s['delta_m_mean']:>+15.2f} +- {s['delta_m_std']:<5.2f} "
              f"{s['macs']:>12,.0f}")
    if args.splits:
        budgets = [recipes.Epochs(*split[:3]).to_dict() for split in args.splits]
    else:
        budgets = [recipes.Epochs(cfg["dense_epochs"], cfg["find_epochs"], cfg["finetune_epochs"]).to_dict()]
    result = {"config": {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()},
              "budget_epochs": {"compressed": budgets, "dense_reference": budgets[0]["total"]},
              "summary": summary, "rows": rows, "seconds": round(time.time() - start, 1)}
    os.makedirs(args.out, exist_ok=True)
    stem = ("recipes" if preset in ("default", "quick") else f"recipes_{preset}") + ("_splits" if args.splits else "")
    ex.write_json(os.path.join(args.out, f"{stem}.json"), result)
    plot(summary, os.path.join(args.out, f"{stem}_pareto.png"))
    log(f"wrote {args.out}/{stem}.json and {stem}_pareto.png ({result['seconds']:.0f} s)")
    return result


if __name__ == "__main__":
    keras.config.disable_interactive_logging()
    main()
