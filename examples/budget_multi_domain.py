"""Budget-aware pruning of a multi-domain ResNet-26: one model, four domains, half the channels.

1. Build a multi-domain model from a backbone with one DomainSwitch per prunable channel group.
2. Train it on mixed-domain batches (each example trains only its own domain's head).
3. Train the switches under a budget (at most 50% of the channels per domain) with a
   Jaccard sharing loss that pushes the domains onto the same channels; fine-tune.
4. Strip the channels no domain uses; the stripped plain-Keras model serves every domain.

    python examples/budget_multi_domain.py [--fast]
"""
import argparse

import keras
import numpy as np

from tfmot_mtl import budget
from tfmot_mtl.datasets import multi_domain as md
from tfmot_mtl.models import resnet26_backbone


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--fast", action="store_true", help="tiny data and epochs (smoke test)")
    parser.add_argument("--budget", type=float, default=0.5)
    parser.add_argument("--sharing", default="jaccard", choices=["none", "jaccard", "intersection", "union"])
    args = parser.parse_args()
    res, n, epochs = (32, 48, 1) if args.fast else (32, 600, 8)
    names = [name for name, _ in md.DOMAINS]

    model = budget.add_domain_switches(resnet26_backbone((res, res, 3), width=0.25 if args.fast else 0.5),
                                       md.DOMAINS)
    train = budget.domain_targets(md.load("train", 32, n, resolution=res), names)
    test = md.load("test", 64, max(32, n // 4), resolution=res, shuffle=False)

    budget.freeze_switches(model)  # plain multi-domain training first: every switch on
    budget.compile_domain_model(model, keras.optimizers.Adam(2e-3))
    model.fit(train, epochs=2 * epochs, verbose=2)
    print("unpruned accuracy:", budget.domain_accuracy(model, test, names))

    budget.freeze_switches(model, frozen=False)
    budget.compile_domain_model(model, keras.optimizers.Adam(5e-4))
    sharing = None if args.sharing == "none" else args.sharing
    callback = budget.BudgetCallback(budget=args.budget, sharing=sharing)
    model.fit(train, epochs=epochs, verbose=2, callbacks=[callback])
    print("channel usage per domain:", np.round(callback.usage(), 3))

    budget.freeze_switches(model)
    budget.compile_domain_model(model, keras.optimizers.Adam(5e-4))
    model.fit(train, epochs=max(1, epochs // 2), verbose=2)

    small, strip_report = budget.strip_domain_model(model)
    accuracy = budget.domain_accuracy(small, test, names)
    print(budget.domain_report(model, small, accuracy))
    print(f"stripped: {strip_report.totals['params_before']:,} -> {strip_report.totals['params_after']:,} params, "
          f"{strip_report.totals['macs_before']:,} -> {strip_report.totals['macs_after']:,} MACs")


if __name__ == "__main__":
    main()
