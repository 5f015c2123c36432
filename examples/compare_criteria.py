"""Pruning criteria compared at equal parameter counts, as Garg et al. (2023) compare them.

1. train one small multi-task VGG (segmentation + depth + normals) on synthetic scenes;
2. for every criterion, prune a copy of it until the model as it will be stripped holds the
   same share of the dense parameters (``target_params``; ``cost_exponent=0`` lets the criterion
   alone rank the channels, the target only decides how many go), training between events;
3. strip each copy, fine-tune it a few steps and print its parameters and delta_m against the
   dense model.

Only the shared trunk is pruned (``groups="shared"``): CosPrune has no score for a group that
feeds one task, so this is where every criterion scores the same channels. For the 3-seed
comparison with a learning-rate sweep, see ``benchmarks/iterative_pruning.py --preset seeds``.

    python examples/compare_criteria.py --params 0.5
    python examples/compare_criteria.py --fast          # tiny sizes, a smoke run
"""
from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfmot_mtl.pruning.run import CRITERIA, compile_for_pruning, prune_model  # noqa: E402
from tfmot_mtl.recipes import experiment as ex  # noqa: E402
from tfmot_mtl.strip import strip_channels  # noqa: E402
from tfmot_mtl.tasks import defined_metrics, delta_m  # noqa: E402


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--params", type=float, default=0.5, help="share of the dense parameters to keep")
    p.add_argument("--criteria", nargs="+", default=list(CRITERIA), choices=list(CRITERIA))
    p.add_argument("--epochs", type=int, default=10, help="dense training epochs")
    p.add_argument("--events", type=int, default=6, help="pruning events (training in between)")
    p.add_argument("--frequency", type=int, default=8, help="training steps between events")
    p.add_argument("--fine-tune", type=int, default=32, help="training steps after stripping")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--fast", action="store_true", help="tiny sizes for a smoke run")
    args = p.parse_args()
    if args.fast:
        args.epochs, args.events, args.frequency, args.fine_tune = 1, 2, 1, 1
    return args


def copy_of(model: keras.Model) -> keras.Model:
    """A fresh model with the same weights: each criterion prunes its own copy."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def main() -> None:
    args = parse_args()
    tf.get_logger().setLevel("ERROR")  # retracing notices: each criterion compiles its own copy
    size = dict(n_train=32, n_test=16, resolution=16, batch_size=8) if args.fast else \
        dict(n_train=256, n_test=128, resolution=32, batch_size=32)
    data = ex.load_data("synthetic_scenes", **size)
    eager = args.fast  # a few steps of a tiny model: tracing would cost more than it saves
    # with BatchNormalization, so that BNScale has scales to rank
    dense = compile_for_pruning(ex.build_model("mtl_vgg", data.tasks, data.input_shape, base_channels=8,
                                               head_channels=8, batch_norm=True, seed=0), data.tasks, args.lr, eager)
    dense.fit(data.train, epochs=args.epochs, verbose=0)
    reference = ex.evaluate(dense, data)
    # metrics a barely trained dense model scores exactly 0 on have no relative change
    chosen = defined_metrics(reference, data.tasks)
    print(f"dense: {dense.count_params():,} params; pruning the shared trunk to {args.params:.0%} of them")
    print(f"{'criterion':<13} {'params':>9} {'share':>6} {'delta_m %':>10}")
    for name in args.criteria:
        model = compile_for_pruning(copy_of(dense), data.tasks, args.lr, eager)
        _, masks, _ = prune_model(model, data, name, target=0.9, step=0.9 / args.events,
                                  frequency=args.frequency, fine_tune_steps=0, groups="shared",
                                  target_params=args.params, cost_exponent=0.0, compile=False)
        small, report = strip_channels(model, masks)
        compile_for_pruning(small, data.tasks, args.lr, eager)
        small.fit(data.train.repeat(), epochs=1, steps_per_epoch=args.fine_tune, verbose=0)
        dm = delta_m(ex.evaluate(small, data), reference, data.tasks, chosen)
        share = report.totals["params_after"] / report.totals["params_before"]
        print(f"{name:<13} {report.totals['params_after']:>9,} {share:>6.3f} {dm:>+10.2f}")


if __name__ == "__main__":
    main()
