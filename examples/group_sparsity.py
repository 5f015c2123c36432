"""Group sparsity on a multi-task ResNet: train, report which channels died, strip, check parity.

    python examples/group_sparsity.py           # 64x64 synthetic scenes, a few epochs
    python examples/group_sparsity.py --fast    # tiny model and data (seconds)

The shared trunk gets a channel-wise group-lasso regularizer (`apply_group_sparsity`) and
the `ProximalGroupLasso` callback drives whole channels to exact zeros; `strip_channels`
then removes them, and the stripped model must reproduce the trained one.
`RecalibrateBatchNorm` re-estimates the BatchNorm statistics at the end of training (and
before any validation pass): the proximal step shrinks the channels faster than the moving
averages follow, and a model evaluated with stale statistics looks far worse than it is.
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfmot_mtl.sparsity as sp  # noqa: E402
from tfmot_mtl.recipes.batchnorm import RecalibrateBatchNorm  # noqa: E402
from tfmot_mtl.strip import strip_channels  # noqa: E402


def build(fast: bool):
    """A multi-task ResNet on synthetic scenes (segmentation, depth, normals)."""
    from tfmot_mtl.datasets import synthetic_scenes
    from tfmot_mtl.models import mtl_resnet
    from tfmot_mtl.tasks import compile_args

    res = 32 if fast else 64
    tasks = synthetic_scenes.tasks()
    model = mtl_resnet(tasks, input_shape=(res, res, 3), width=0.5 if fast else 1.0,
                       stages=(1, 1) if fast else (1, 1, 1), head_channels=16 if fast else 32)
    train = synthetic_scenes.load("train", n=64 if fast else 1000, batch_size=8 if fast else 16, resolution=res)
    test = synthetic_scenes.load("test", n=16 if fast else 200, batch_size=16, resolution=res,
                                 shuffle=False)
    return model, train, test, compile_args(tasks)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="tiny model and data")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--l1", type=float, default=None, help="group-lasso strength lambda")
    parser.add_argument("--mode", default="plain", choices=["plain", "adam"])
    parser.add_argument("--out", default="saved_models/group_sparsity", help="folder for the plot")
    args = parser.parse_args(argv)
    keras.utils.set_random_seed(0)
    epochs = args.epochs or (3 if args.fast else 10)
    l1 = args.l1 if args.l1 is not None else (0.85 if args.fast else 0.5)

    dense, train, test, compile_kwargs = build(args.fast)
    model = sp.apply_group_sparsity(dense, l1=1e-4, groups="shared")
    model.compile(keras.optimizers.Adam(1e-3 if not args.fast else 1e-2), **compile_kwargs)
    prox = sp.ProximalGroupLasso(l1=l1, groups="shared", mode=args.mode)
    start = time.perf_counter()
    model.fit(train, epochs=epochs, callbacks=[prox, RecalibrateBatchNorm(train)], verbose=2)
    print(f"trained {epochs} epochs in {time.perf_counter() - start:.1f} s; "
          f"group sparsity {100 * prox.sparsity():.1f}%")

    plot = os.path.join(args.out, "sparsity_pattern.png")
    report = sp.sparsity_report(model, groups="shared", plot_path=plot)
    print(sp.format_sparsity_report(report))
    print(f"sparsity pattern written to {plot}")

    small, strip_report = strip_channels(model)
    print(strip_report)
    x = next(iter(test))[0]
    ref, out = model.predict(x, verbose=0), small.predict(x, verbose=0)
    worst = max(float(np.abs(ref[k] - out[k]).max() / (np.abs(ref[k]).max() + 1e-12)) for k in ref)
    print(f"max relative output difference, trained vs stripped: {worst:.2e}")
    if worst > 1e-4:
        raise SystemExit("parity FAILED")
    print(f"parity OK; params {strip_report.totals['params_before']:,} -> "
          f"{strip_report.totals['params_after']:,}")


if __name__ == "__main__":
    main()
