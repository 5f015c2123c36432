"""Budget-aware pruning of a multi-domain ResNet-26: one model, four domains, half the channels.

1. Build a multi-domain model from a backbone with one DomainSwitch per prunable channel group.
2. Train it on mixed-domain batches (each example trains only its own domain's head).
3. Train the switches under a budget (at most 50% of the channels per domain, annealed from
   100%, every layer by about the same share) with a Jaccard sharing loss; the domains switch
   channels off in one common order, so they end on the same channels. Fine-tune on the
   final switches.
4. Strip the channels no domain uses; the stripped plain-Keras model serves every domain.

    python examples/budget_multi_domain.py [--fast]

The same recipe is `tfmot-mtl budget` (tfmot_mtl.budget.pipeline).
"""
import argparse
import time

import numpy as np

from tfmot_mtl.budget import pipeline


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--fast", action="store_true", help="tiny data and epochs (smoke test, seconds)")
    parser.add_argument("--budget", type=float, default=0.5)
    parser.add_argument("--sharing", default="jaccard", choices=["none", "jaccard", "intersection", "union"])
    args = parser.parse_args()
    if args.fast:
        cfg = dict(resolution=16, width=0.125, n_train=8, epochs=1, budget_epochs=1, finetune=0)
    else:
        cfg = dict(resolution=32, width=0.5, n_train=400, epochs=4, budget_epochs=10, finetune=3)
    t0 = time.time()
    result = pipeline.run(budget=args.budget, sharing=args.sharing, **cfg)
    print("unpruned accuracy:", {d: round(a, 3) for d, a in result["unpruned_accuracy"].items()})
    print("channel usage per domain:", np.round(result["usage"], 3))
    print(result["report"])
    s, strip = result["summary"], result["strip"].totals
    print(f"stripped: {strip['params_before']:,} -> {strip['params_after']:,} params, "
          f"{strip['macs_before']:,} -> {strip['macs_after']:,} MACs; "
          f"{s['params_vs_one']:.2f}x the params and {s['macs_vs_one']:.2f}x the MACs of ONE "
          f"single-domain model ({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
