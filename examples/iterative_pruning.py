"""Iterative multi-task channel pruning (Garg, Zhang & Guan 2023), end to end.

1. train a small multi-task VGG (segmentation + depth + normals) on synthetic scenes;
2. keep training while ChannelPruningCallback removes the shared-encoder channels with
   the lowest CosPrune (task-gradient agreement) or Taylor score, step by step;
3. strip the removed channels into a smaller plain Keras model (same outputs);
4. re-initialise the stripped architecture and train it from scratch (the paper's
   "re-init" experiment).

    python examples/iterative_pruning.py --criterion cosprune --target 0.5
    python examples/iterative_pruning.py --fast          # a few seconds, tiny sizes
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from tfmot_mtl import pruning  # noqa: E402
from tfmot_mtl.datasets import synthetic_scenes  # noqa: E402
from tfmot_mtl.models import mtl_vgg  # noqa: E402
from tfmot_mtl.strip import strip_channels  # noqa: E402
from tfmot_mtl.tasks import compile_args  # noqa: E402


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--criterion", choices=["cosprune", "taylor", "magnitude", "random"], default="cosprune")
    p.add_argument("--target", type=float, default=0.5, help="final sparsity of the shared encoder")
    p.add_argument("--epochs", type=int, default=4, help="dense pre-training epochs")
    p.add_argument("--prune-epochs", type=int, default=6)
    p.add_argument("--frequency", type=int, default=20, help="steps between pruning events")
    p.add_argument("--n", type=int, default=512, help="training scenes")
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fast", action="store_true", help="tiny sizes for a smoke run")
    args = p.parse_args()
    if args.fast:
        args.epochs, args.prune_epochs, args.frequency, args.n, args.resolution = 1, 2, 2, 32, 16
    return args


def criterion(name: str):
    return {"cosprune": pruning.CosPrune, "taylor": pruning.Taylor,
            "magnitude": pruning.Magnitude, "random": lambda: pruning.Random(seed=0)}[name]()


def compiled(model, tasks, lr):
    model.compile(keras.optimizers.AdamW(lr), **compile_args(tasks))
    return model


def main() -> None:
    args = parse_args()
    keras.utils.set_random_seed(args.seed)
    tasks = synthetic_scenes.tasks()
    batch = 8 if args.fast else 16
    train = synthetic_scenes.load("train", n=args.n, batch_size=batch, resolution=args.resolution)
    test = synthetic_scenes.load("test", n=max(16, args.n // 4), batch_size=batch,
                                 resolution=args.resolution, shuffle=False)
    res = (args.resolution, args.resolution, 3)
    model = compiled(mtl_vgg(tasks, input_shape=res, base_channels=4 if args.fast else 8,
                             head_channels=8 if args.fast else 16), tasks, 1e-3)
    verbose = 0 if args.fast else 2

    t0 = time.time()
    model.fit(train, epochs=args.epochs, verbose=verbose)
    dense = model.evaluate(test, return_dict=True, verbose=0)
    print(f"dense: {model.count_params():,} params, test loss {dense['loss']:.4f} "
          f"({time.time() - t0:.1f} s)")

    # Prune the shared encoder step by step, fine-tuning in between (lower lr, as in the paper).
    steps_per_epoch = int(train.cardinality())
    events = max(1, args.prune_epochs * steps_per_epoch // args.frequency - 1)
    schedule = pruning.IterativeSchedule(target=args.target, frequency=args.frequency,
                                         step=args.target / events, begin_step=0)
    cb = pruning.ChannelPruningCallback(criterion(args.criterion), schedule, groups="shared",
                                        min_channels=2, data=train.repeat(), score_batches=2,
                                        verbose=1)
    compiled(model, tasks, 3e-4)
    t0 = time.time()
    model.fit(train, epochs=args.prune_epochs, callbacks=[cb], verbose=verbose)
    pruned = model.evaluate(test, return_dict=True, verbose=0)
    print(f"pruned ({args.criterion}): encoder sparsity {cb.sparsity():.3f}, "
          f"test loss {pruned['loss']:.4f} ({time.time() - t0:.1f} s)")

    small, report = strip_channels(model, cb.masks)
    x = next(iter(test))[0]
    ref, got = model.predict(x, verbose=0), small.predict(x, verbose=0)
    err = max(float(np.abs(ref[t] - got[t]).max() / (np.abs(ref[t]).max() + 1e-12)) for t in ref)
    print(f"stripped: {report.totals['params_before']:,} -> {report.totals['params_after']:,} params "
          f"(x{report.param_ratio:.2f}), MACs x{report.mac_ratio:.2f}, max rel. output diff {err:.1e}")

    fresh = compiled(pruning.reinitialize(small, seed=args.seed), tasks, 1e-3)
    fresh.fit(train, epochs=args.epochs + args.prune_epochs, verbose=verbose)
    scratch = fresh.evaluate(test, return_dict=True, verbose=0)
    print(f"reinitialized + trained from scratch: test loss {scratch['loss']:.4f} "
          f"(dense {dense['loss']:.4f}, iteratively pruned {pruned['loss']:.4f})")


if __name__ == "__main__":
    main()
