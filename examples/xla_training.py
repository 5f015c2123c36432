"""The three methods with an XLA-compiled train step (``jit_compile=True``).

    python examples/xla_training.py           # 32x32 synthetic scenes, small ResNet
    python examples/xla_training.py --gpu     # the same on the first GPU
    python examples/xla_training.py --fast    # two heads, fewer steps (the test's setting)

Each method's per-step work runs inside the compiled step (tfmot_mtl.training.ingraph): the group-lasso
proximal step, the pruning masks, the budget and sharing terms of the loss. The script trains
each for a few steps and prints what each produced: the exactly-zero channels of group
sparsity, the pruned channels (with a count of non-zero weights left in them: 0), and the
per-domain usage of the budget run, which the budget multipliers bring under the budget.
"""
from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402


def domain_data(n: int = 128, seed: int = 0):
    """Two learnable 8x8 domains: "a" = which colour channel is bright, "b" = which quadrant."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    domain = (np.arange(n) % 2).astype("int32")
    image = 0.5 * rng.random((n, 8, 8, 3)).astype("float32")
    label = np.where(domain == 0, rng.integers(0, 3, n), rng.integers(0, 4, n)).astype("int32")
    for i in range(n):
        if domain[i] == 0:
            image[i, :, :, label[i]] += 0.5
        else:
            r, c = divmod(int(label[i]), 2)
            image[i, 4 * r:4 * r + 4, 4 * c:4 * c + 4] += 0.5
    return tf.data.Dataset.from_tensor_slices(({"image": image, "domain": domain}, {"label": label})).batch(16)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", action="store_true", help="run on the first GPU")
    parser.add_argument("--steps", type=int, default=12, help="training steps of the two ResNet runs")
    parser.add_argument("--budget-epochs", type=int, default=12, help="epochs of the budget run (8 steps each)")
    parser.add_argument("--fast", action="store_true",
                        help="segmentation + depth only, 6 steps, 8 budget epochs (the test's setting)")
    args = parser.parse_args(argv)
    if args.fast:
        args.steps, args.budget_epochs = 6, 8
    if not args.gpu:
        os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")
    from tfmot_mtl import budget, nonzero_in_removed
    from tfmot_mtl.datasets import synthetic_scenes
    from tfmot_mtl.masks import masks_from_zeros
    from tfmot_mtl.models import mtl_resnet
    from tfmot_mtl.pruning import ChannelPruningCallback, IterativeSchedule, Magnitude
    from tfmot_mtl.sparsity import ProximalGroupLasso
    from tfmot_mtl.tasks import compile_args

    keras.utils.set_random_seed(0)
    tasks = synthetic_scenes.tasks()
    if args.fast:  # two heads compile in about half the time of three
        tasks = [t for t in tasks if t.name in ("segmentation", "depth")]
    names = [t.name for t in tasks]
    train = synthetic_scenes.load("train", n=8 * args.steps, batch_size=8, resolution=32)
    train = train.map(lambda x, y: (x, {k: y[k] for k in names}))
    out = {}

    def model():
        m = mtl_resnet(tasks, input_shape=(32, 32, 3), width=0.5, stages=(1, 1), head_channels=16)
        m.compile(keras.optimizers.Adam(1e-2), jit_compile=True, **compile_args(tasks))
        return m

    # 1. group lasso: the proximal step zeroes whole channels inside the compiled step
    sparse = model()
    prox = ProximalGroupLasso(l1=5.0, min_fraction=0.25)
    hist = sparse.fit(train, epochs=1, verbose=0, callbacks=[prox])
    dead = sum(int((~m).sum()) for m in masks_from_zeros(sparse, min_channels=0).values())
    out["group_sparsity"], out["zero_channels"] = hist.history["group_sparsity"][-1], dead
    print(f"group sparsity: {out['group_sparsity']:.3f} of the selected channels exactly zero "
          f"({dead} channels)")

    # 2. pruning: masks are variables multiplied in after each update
    pruned = model()
    cb = ChannelPruningCallback(Magnitude(), IterativeSchedule(0.5, 1, step=0.5, end_step=1), verbose=0)
    pruned.fit(train, epochs=1, verbose=0, callbacks=[cb])
    out["pruned_channels"] = cb.pruned_channels()
    out["nonzero_in_pruned"] = nonzero_in_removed(cb.graph, cb.masks)
    print(f"pruning: {out['pruned_channels']} channels pruned, {out['nonzero_in_pruned']} non-zero "
          "weights left in them")

    # 3. budget: the budget and sharing terms are part of the compiled loss
    image = keras.Input((8, 8, 3), name="image")
    x = image
    for i, c in enumerate((8, 8)):
        x = keras.layers.Conv2D(c, 3, padding="same", use_bias=False, name=f"c{i}")(x)
        x = keras.layers.ReLU(name=f"r{i}")(keras.layers.BatchNormalization(name=f"bn{i}")(x))
    mdl = budget.add_domain_switches(keras.Model({"image": image}, x), [("a", 3), ("b", 4)])
    budget.compile_domain_model(mdl, keras.optimizers.SGD(0.05), jit_compile=True)
    bcb = budget.BudgetCallback(budget=0.5, sharing="jaccard", multiplier_lr=0.1)
    hist = mdl.fit(budget.domain_targets(domain_data(), ["a", "b"]), epochs=args.budget_epochs, verbose=0,
                   callbacks=[bcb])
    out["usage"] = bcb.usage().tolist()
    out["lambdas"] = bcb.lambdas.tolist()
    out["terms"] = {k: float(hist.history[k][-1]) for k in ("budget_penalty", "sharing_loss")}
    out["accuracy"] = {d: float(hist.history[f"{d}_accuracy"][-1]) for d in ("a", "b")}
    print(f"budget 0.5: usage per domain {np.round(bcb.usage(), 3)}, multipliers {np.round(bcb.lambdas, 3)}, "
          f"last-epoch terms { {k: round(v, 4) for k, v in out['terms'].items()} }, "
          f"accuracy { {k: round(v, 3) for k, v in out['accuracy'].items()} }")
    return out


if __name__ == "__main__":
    main()
