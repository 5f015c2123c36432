"""The three methods with an XLA-compiled train step (``jit_compile=True``).

    python examples/xla_training.py           # 32x32 synthetic scenes, small ResNet
    python examples/xla_training.py --gpu     # the same on the first GPU

Each method's per-step work runs inside the compiled step (tfmot_mtl.ingraph): the group-lasso
proximal step, the pruning masks, the budget and sharing terms of the loss. The script trains
each for a few steps, checks that the zeroed channels are exactly zero, and prints the logs.
"""
from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", action="store_true", help="run on the first GPU")
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args(argv)
    if not args.gpu:
        os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")
    from tfmot_mtl import budget
    from tfmot_mtl.datasets import synthetic_scenes
    from tfmot_mtl.masks import masks_from_zeros
    from tfmot_mtl.models import mtl_resnet
    from tfmot_mtl.pruning import ChannelPruningCallback, IterativeSchedule, Magnitude
    from tfmot_mtl.sparsity import ProximalGroupLasso
    from tfmot_mtl.tasks import compile_args

    tasks = synthetic_scenes.tasks()
    train = synthetic_scenes.load("train", n=8 * args.steps, batch_size=8, resolution=32)
    out = {}

    def model():
        m = mtl_resnet(tasks, input_shape=(32, 32, 3), width=0.5, stages=(1, 1), head_channels=16)
        m.compile(keras.optimizers.Adam(1e-2), jit_compile=True, **compile_args(tasks))
        return m

    sparse = model()
    prox = ProximalGroupLasso(l1=2.0, min_fraction=0.25)
    hist = sparse.fit(train, epochs=1, verbose=0, callbacks=[prox])
    dead = sum(int((~m).sum()) for m in masks_from_zeros(sparse, min_channels=0).values())
    out["group_sparsity"] = hist.history["group_sparsity"][-1]
    print(f"group sparsity: {out['group_sparsity']:.3f} of the selected channels exactly zero ({dead} channels)")

    pruned = model()
    cb = ChannelPruningCallback(Magnitude(), IterativeSchedule(0.5, 1, step=0.5, end_step=1), verbose=0)
    pruned.fit(train, epochs=1, verbose=0, callbacks=[cb])
    nonzero = 0
    for gid, mask in cb.masks.items():
        for s in cb.graph.groups[gid].slices:
            drop = s.positions[~mask[s.channels]]
            if s.role == "out" and s.zeroed and len(drop):
                w = np.moveaxis(cb.graph.layer(s.layer).weights[s.weight].numpy(), s.axis, 0)[drop]
                nonzero += int((w != 0).sum())
    out["pruned_channels"], out["nonzero_in_pruned"] = cb.pruned_channels(), nonzero
    print(f"pruning: {cb.pruned_channels()} channels pruned, {nonzero} non-zero weights left in them")

    import tensorflow as tf

    image = keras.Input((8, 8, 3), name="image")
    x = image
    for i, c in enumerate((8, 8)):
        x = keras.layers.Conv2D(c, 3, padding="same", use_bias=False, name=f"c{i}")(x)
        x = keras.layers.ReLU(name=f"r{i}")(keras.layers.BatchNormalization(name=f"bn{i}")(x))
    mdl = budget.add_domain_switches(keras.Model({"image": image}, x), [("a", 3), ("b", 4)])
    budget.compile_domain_model(mdl, keras.optimizers.SGD(0.05))
    mdl.compile(mdl.optimizer, loss=mdl.loss, jit_compile=True)
    rng = np.random.default_rng(0)
    n = 64
    dom = (np.arange(n) % 2).astype("int32")
    y = np.where(dom == 0, rng.integers(0, 3, n), rng.integers(0, 4, n)).astype("int32")
    ds = tf.data.Dataset.from_tensor_slices(({"image": rng.random((n, 8, 8, 3)).astype("float32"),
                                              "domain": dom}, {"label": y})).batch(16)
    bcb = budget.BudgetCallback(budget=0.5, sharing="jaccard", multiplier_lr=0.5)
    hist = mdl.fit(budget.domain_targets(ds, ["a", "b"]), epochs=3, verbose=0, callbacks=[bcb])
    out["usage"] = bcb.usage().tolist()
    print(f"budget: usage per domain {np.round(bcb.usage(), 3)}, logged terms "
          f"{ {k: round(v[-1], 4) for k, v in hist.history.items() if k in ('budget_penalty', 'sharing_loss')} }")
    return out


if __name__ == "__main__":
    main()
