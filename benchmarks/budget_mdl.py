"""Budget-aware multi-domain pruning on `multi_domain` with ResNet-26 (budget-aware pruning, dos Santos et al. 2023).

Protocol (`tfmot_mtl.budget.pipeline`): one multi-domain ResNet-26 (switches frozen on =
the unpruned model) is trained for `pretrain` epochs; then, for every budget x sharing
loss, a copy is trained `budget` epochs with `BudgetCallback` (switches learn; the budget is
annealed from 1 to beta by per-epoch projections, layer by layer (`balance`), in one order
common to all domains when a sharing loss is set) and fine-tuned `finetune` epochs with the
switches frozen, both at `phase_lr`; BatchNorm statistics are re-estimated on the training
images, the model is stripped with the union mask and the stripped model is evaluated. Every preset but "shared-bn" gives each domain its own
BatchNormalization (statistics and affine parameters, as in the paper; `add_domain_switches(...,
domain_bn=True)`); the stripped model serves every domain with stock layers. The unpruned reference trains the same total epochs (the pretrained model continued at `phase_lr`). The
decathlon score uses the unpruned multi-domain model's errors as baseline. Writes benchmarks/results/budget_mdl.json and a plot.

    python benchmarks/budget_mdl.py --quick      # smoke run, budgets 1.0 / 0.5 only, a few minutes on 2 CPU cores
    python benchmarks/budget_mdl.py              # default (~15 min on 2 free cores)
    python benchmarks/budget_mdl.py --full       # 64x64, more data/epochs, all sharing losses
    python benchmarks/budget_mdl.py --preset shared-bn --out benchmarks/results/budget_mdl_shared_bn.json
    python benchmarks/budget_mdl.py --preset seeds05 --seeds 0 1 2 --out benchmarks/results/budget_mdl_seeds.json
                                                 # budget 0.5, Jaccard, 3 seeds: mean +- std
    python benchmarks/budget_mdl.py --preset long05 --out benchmarks/results/budget_mdl_long05.json
                                                 # budget 0.5 only, 2x longer budget phase and fine-tuning
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from tfmot_mtl import budget
from tfmot_mtl.recipes.batchnorm import recalibrate_batchnorm
from tfmot_mtl.utils.atomic import atomic_savefig, atomic_write
from tfmot_mtl.budget import pipeline

HERE = os.path.dirname(os.path.abspath(__file__))
# Most of each budget is spent training the switches (pruning while training, at the pretraining
# learning rate): 4 + 10 + 3 epochs reach 58% at budget 0.5 where 12 + 3 + 2 reached 43%
# (36% with its phases at half the rate; seed 0, the same 17 epochs).
PRESETS = {
    "quick": dict(res=32, width=0.5, n=200, pretrain=2, budget_epochs=3, finetune=1, phase_lr=2e-3,
                  budgets=[1.0, 0.5], sharing=["none", "jaccard"], domain_bn=True),
    "default": dict(res=32, width=0.5, n=400, n_test=500, pretrain=4, budget_epochs=10, finetune=3, phase_lr=2e-3,
                    budgets=[1.0, 0.75, 0.5, 0.25], sharing=["none", "jaccard"], domain_bn=True),
    "seeds05": dict(res=32, width=0.5, n=400, n_test=500, pretrain=4, budget_epochs=10, finetune=3, phase_lr=2e-3,
                    budgets=[0.5], sharing=["jaccard"], domain_bn=True),
    # the default with one BatchNormalization shared by all domains (the setting before domain BN)
    "shared-bn": dict(res=32, width=0.5, n=400, n_test=500, pretrain=4, budget_epochs=10, finetune=3, phase_lr=2e-3,
                      budgets=[1.0, 0.75, 0.5, 0.25], sharing=["none", "jaccard"], domain_bn=False),
    "long05": dict(res=32, width=0.5, n=400, n_test=500, pretrain=4, budget_epochs=20, finetune=6, phase_lr=2e-3,
                   budgets=[0.5], sharing=["none", "jaccard"], domain_bn=True),
    "full": dict(res=64, width=1.0, n=1000, pretrain=10, budget_epochs=20, finetune=5, phase_lr=2e-3,
                 budgets=[1.0, 0.75, 0.5, 0.25], sharing=["none", "jaccard", "intersection", "union"],
                 domain_bn=True),
}


def run(cfg, out_path, lr=2e-3, seed=0):
    dbn = cfg.get("domain_bn", True)
    s = pipeline.setup(cfg["res"], cfg["width"], cfg["n"], n_test=cfg.get("n_test", max(100, cfg["n"] // 4)),
                       domain_bn=dbn,
                       seed=seed)
    t0 = time.time()
    base = s.model
    eager = cfg.get("eager", False)  # tiny smoke runs: no graph tracing
    pipeline.pretrain(base, s.train, cfg["pretrain"], lr, eager=eager)
    pretrained = base.get_weights()
    phase_lr = cfg.get("phase_lr", lr / 2)
    pipeline.fit(base, s.train, cfg["budget_epochs"] + cfg["finetune"], phase_lr, eager=eager)
    recalibrate_batchnorm(base, s.train)
    acc0 = budget.domain_accuracy(base, s.test, s.names)
    base_err = {d: 1 - a for d, a in acc0.items()}
    ref = budget.domain_report(base, accuracy=acc0, baseline_errors=base_err, input_shape=s.input_shape)
    print(f"unpruned: mean acc {100 * np.mean(list(acc0.values())):.1f}  ({time.time() - t0:.0f}s)", flush=True)
    results = {"config": cfg, "seed": seed, "unpruned": {"accuracy": acc0, "report": ref.to_dict()}, "baseline": ref.baseline,
               "runs": []}
    for beta in cfg["budgets"]:
        for sharing in cfg["sharing"]:
            t = time.time()
            model = pipeline.build(cfg["res"], cfg["width"], domain_bn=dbn)
            model.set_weights(pretrained)
            cb = pipeline.budget_phase(model, s.train, beta, sharing, cfg["budget_epochs"], cfg["finetune"], phase_lr,
                                       eager=eager, balance=cfg.get("balance", True))
            out = pipeline.finish(model, s, base_err)
            rep, acc = out["report"], out["accuracy"]
            row = {"budget": beta, "sharing": sharing, "accuracy": acc,
                   "mean_accuracy": rep.totals["mean_accuracy"], "params": rep.totals["params"],
                   "max_macs_as_run": rep.totals["max_domain_macs"], "decathlon": rep.totals["decathlon"],
                   "usage": cb.usage().tolist(), "union_channels": int(sum(m.sum() for m in out["union"].values())),
                   "lambdas": cb.lambdas.tolist(), "report": rep.to_dict(),
                   "strip": out["strip"].totals, "seconds": time.time() - t}
            results["runs"].append(row)
            _write(results, out_path)
            print(f"budget {beta:.2f} sharing {sharing:8s}: mean acc {100 * row['mean_accuracy']:.1f} "
                  f"params {row['params']:,} MACs {row['max_macs_as_run']:,} S {row['decathlon']:.0f} "
                  f"({row['seconds']:.0f}s)", flush=True)
    results["seconds"] = time.time() - t0
    _write(results, out_path)
    table(results)
    plot(results, out_path.replace(".json", ".png"))
    return results


def _write(results, path):
    atomic_write(path, json.dumps(results, indent=1, default=float))


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
    atomic_savefig(fig, path, dpi=100)
    print(f"wrote {path}")


def over_seeds(per_seed: list[dict]) -> list[dict]:
    """Per (budget, sharing): mean and std over seeds of the accuracy change against each seed's
    own unpruned model (points), and the mean parameters / MACs."""
    rows = {}
    for res in per_seed:
        acc0 = np.mean(list(res["unpruned"]["accuracy"].values()))
        for r in res["runs"]:
            rows.setdefault((r["budget"], r["sharing"]), []).append(
                (100 * (r["mean_accuracy"] - acc0), r["params"], r["max_macs_as_run"]))
    out = []
    for (beta, sharing), vals in rows.items():
        d, p, m = (np.array(v, float) for v in zip(*vals))
        out.append({"budget": beta, "sharing": sharing, "seeds": len(vals), "delta_acc_mean": float(d.mean()),
                    "delta_acc_std": float(d.std()), "delta_acc": d.tolist(), "params": float(p.mean()),
                    "max_macs_as_run": float(m.mean())})
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run")
    parser.add_argument("--full", action="store_true", help="64x64, width 1, all sharing losses")
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None, help="a named preset (overrides the flags)")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "budget_mdl.json"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="data and model seeds; with more than one, each seed writes <out>_seed<k>.json "
                             "and <out> holds the mean +- std over seeds")
    args = parser.parse_args()
    cfg = PRESETS[args.preset or ("quick" if args.quick else "full" if args.full else "default")]
    if len(args.seeds) == 1:
        run(cfg, args.out, seed=args.seeds[0])
        return
    per_seed = [run(cfg, args.out.replace(".json", f"_seed{k}.json"), seed=k) for k in args.seeds]
    summary = over_seeds(per_seed)
    _write({"config": cfg, "seeds": args.seeds, "summary": summary, "baseline": per_seed[0]["baseline"],
            "unpruned_mean_accuracy": [float(np.mean(list(r["unpruned"]["accuracy"].values()))) for r in per_seed]},
           args.out)
    print("\n| budget | sharing | seeds | Δacc vs unpruned (pts, mean ± std) | params | MACs as run |")
    print("|---|---|---|---|---|---|")
    for r in summary:
        print(f"| {r['budget']} | {r['sharing']} | {r['seeds']} | {r['delta_acc_mean']:+.1f} ± {r['delta_acc_std']:.1f} | "
              f"{r['params']:,.0f} | {r['max_macs_as_run']:,.0f} |")


if __name__ == "__main__":
    main()
