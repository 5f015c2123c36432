"""Budget-aware multi-domain pruning on `multi_domain` with ResNet-26 (seed 3 benchmark).

Protocol: one multi-domain ResNet-26 (switches frozen on = the unpruned model) is trained
for `pretrain` epochs; then, for every budget x sharing loss, a copy is trained `budget`
epochs with `BudgetCallback` (switches learn, budget projected at the end) and fine-tuned
`finetune` epochs with the switches frozen; it is stripped with the union mask and the
stripped model is evaluated. The unpruned reference trains the same total epochs. The
decathlon score uses the unpruned multi-domain model's errors as baseline. Writes benchmarks/results/budget_mdl.json and a plot.

    python benchmarks/budget_mdl.py --quick      # smoke run, budgets 1.0 / 0.5 only, a few minutes on 2 CPU cores
    python benchmarks/budget_mdl.py              # default
    python benchmarks/budget_mdl.py --full       # 64x64, more data/epochs, all sharing losses
"""
from __future__ import annotations

import argparse
import json
import os
import time

import keras
import numpy as np

from tfmot_mtl import budget
from tfmot_mtl.datasets import multi_domain as md
from tfmot_mtl.models import resnet26_backbone

HERE = os.path.dirname(os.path.abspath(__file__))
PRESETS = {
    "quick": dict(res=32, width=0.5, n=200, pretrain=6, budget_epochs=2, finetune=1,
                  budgets=[1.0, 0.5], sharing=["none", "jaccard"]),
    "default": dict(res=32, width=0.5, n=800, pretrain=15, budget_epochs=4, finetune=3,
                    budgets=[1.0, 0.75, 0.5, 0.25], sharing=["none", "jaccard", "union"]),
    "full": dict(res=64, width=1.0, n=1000, pretrain=30, budget_epochs=8, finetune=5,
                 budgets=[1.0, 0.75, 0.5, 0.25], sharing=["none", "jaccard", "intersection", "union"]),
}


def build(cfg, names):
    backbone = resnet26_backbone((cfg["res"], cfg["res"], 3), width=cfg["width"])
    return budget.add_domain_switches(backbone, md.DOMAINS)


def fit(model, data, epochs, lr, callbacks=(), switches=False):
    budget.freeze_switches(model, frozen=not switches)
    budget.compile_domain_model(model, keras.optimizers.Adam(lr))
    if epochs:
        model.fit(data, epochs=epochs, verbose=0, callbacks=list(callbacks))


def run(cfg, out_path, lr=2e-3):
    names = [n for n, _ in md.DOMAINS]
    train = budget.domain_targets(md.load("train", 64, cfg["n"], resolution=cfg["res"]), names)
    test = md.load("test", 128, max(100, cfg["n"] // 4), resolution=cfg["res"], shuffle=False)
    shape = (cfg["res"], cfg["res"], 3)
    t0 = time.time()
    keras.utils.set_random_seed(0)
    base = build(cfg, names)
    fit(base, train, cfg["pretrain"], lr)
    pretrained = base.get_weights()
    fit(base, train, cfg["budget_epochs"] + cfg["finetune"], lr / 4)
    acc0 = budget.domain_accuracy(base, test, names)
    base_err = {d: 1 - a for d, a in acc0.items()}
    ref = budget.domain_report(base, accuracy=acc0, baseline_errors=base_err, input_shape=shape)
    print(f"unpruned: mean acc {100 * np.mean(list(acc0.values())):.1f}  ({time.time() - t0:.0f}s)")
    results = {"config": cfg, "unpruned": {"accuracy": acc0, "report": ref.to_dict()}, "runs": []}
    for beta in cfg["budgets"]:
        for sharing in cfg["sharing"]:
            t = time.time()
            model = build(cfg, names)
            model.set_weights(pretrained)
            cb = budget.BudgetCallback(beta, sharing=None if sharing == "none" else sharing)
            fit(model, train, cfg["budget_epochs"], lr / 4, [cb], switches=True)
            fit(model, train, cfg["finetune"], lr / 4)
            small, strip_report = budget.strip_domain_model(model)
            acc = budget.domain_accuracy(small, test, names)
            rep = budget.domain_report(model, small, acc, base_err, input_shape=shape)
            row = {"budget": beta, "sharing": sharing, "accuracy": acc,
                   "mean_accuracy": rep.totals["mean_accuracy"], "params": rep.totals["params"],
                   "max_macs_as_run": rep.totals["max_domain_macs"], "decathlon": rep.totals["decathlon"],
                   "usage": cb.history[-1]["usage"] if cb.history else None,
                   "lambdas": cb.lambdas.tolist(), "report": rep.to_dict(),
                   "strip": strip_report.totals, "seconds": time.time() - t}
            results["runs"].append(row)
            _write(results, out_path)
            print(f"budget {beta:.2f} sharing {sharing:8s}: mean acc {100 * row['mean_accuracy']:.1f} "
                  f"params {row['params']:,} MACs {row['max_macs_as_run']:,} S {row['decathlon']:.0f} "
                  f"({row['seconds']:.0f}s)")
    results["baseline"] = ref.baseline
    results["seconds"] = time.time() - t0
    _write(results, out_path)
    table(results)
    plot(results, out_path.replace(".json", ".png"))
    return results


def _write(results, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(results, f, indent=1, default=float)


def table(results):
    b = results["baseline"]
    acc0 = 100 * np.mean(list(results["unpruned"]["accuracy"].values()))
    print(f"\none single-domain baseline: params {b['one_params']:,}  MACs {b['one_macs']:,}; "
          f"separate models: params {b['separate_params']:,}; unpruned multi-domain mean acc {acc0:.1f}")
    print("| budget | sharing | mean acc | Δacc | params | < 1 baseline | MACs as run (max domain) | "
          "< 1 baseline | decathlon S |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results["runs"]:
        acc = 100 * r["mean_accuracy"]
        print(f"| {r['budget']} | {r['sharing']} | {acc:.1f} | {acc - acc0:+.1f} | {r['params']:,} | "
              f"{'yes' if r['params'] < b['one_params'] else 'no'} | {r['max_macs_as_run']:,} | "
              f"{'yes' if r['max_macs_as_run'] < b['one_macs'] else 'no'} | {r['decathlon']:.0f} |")


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    domains = list(results["unpruned"]["accuracy"])
    fig, axes = plt.subplots(1, len(domains), figsize=(4 * len(domains), 3.5), squeeze=False)
    for ax, d in zip(axes[0], domains):
        for sharing in dict.fromkeys(r["sharing"] for r in results["runs"]):
            runs = [r for r in results["runs"] if r["sharing"] == sharing]
            ax.plot([r["report"]["rows"][d]["params"] for r in runs], [100 * r["accuracy"][d] for r in runs],
                    "o-", label=sharing)
        ax.axhline(100 * results["unpruned"]["accuracy"][d], color="gray", ls="--", label="unpruned")
        ax.set_title(d)
        ax.set_xlabel("params used by the domain")
        ax.set_ylabel("accuracy (%)")
    axes[0][0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"wrote {path}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run")
    parser.add_argument("--full", action="store_true", help="64x64, width 1, all sharing losses")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "budget_mdl.json"))
    args = parser.parse_args()
    cfg = PRESETS["quick" if args.quick else "full" if args.full else "default"]
    run(cfg, args.out)


if __name__ == "__main__":
    main()
