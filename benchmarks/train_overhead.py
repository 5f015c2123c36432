"""Per-batch training overhead of each method's per-step work against plain training.

Same model (the demo's ``mtl_resnet``, same seed), same batches, A/B interleaved: each round
runs ``--steps`` batches of every variant in turn; the per-batch time is the median of the
intervals between consecutive batch ends (step + every callback). Prints the table and writes
JSON. ``--jit`` compiles the train step with XLA; ``--device gpu`` runs on the first GPU.

    python benchmarks/train_overhead.py --rounds 5 --steps 10 [--jit] [--device gpu]
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np


class _Times:
    def __init__(self):
        import keras

        class CB(keras.callbacks.Callback):
            def __init__(cb):
                super().__init__()
                cb.last, cb.times = None, []

            def on_train_batch_end(cb, batch, logs=None):
                now = time.perf_counter()
                if cb.last is not None:
                    cb.times.append(now - cb.last)
                cb.last = now

            def on_train_begin(cb, logs=None):
                cb.last = None

        self.cb = CB()


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--jit", action="store_true")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--out", default="saved_models/train_overhead.json")
    args = parser.parse_args(argv)
    if args.device == "cpu":
        os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")
    import keras
    import tensorflow as tf

    from tfmot_mtl import experiment as ex
    from tfmot_mtl.pruning import ChannelPruningCallback, IterativeSchedule, Magnitude
    from tfmot_mtl.sparsity import ProximalGroupLasso
    from tfmot_mtl.tasks import compile_args

    if args.device == "gpu" and not tf.config.list_physical_devices("GPU"):
        raise SystemExit("--device gpu: no GPU visible to TensorFlow")
    device = "/GPU:0" if args.device == "gpu" else "/CPU:0"
    data = ex.load_data("synthetic_scenes", n_train=args.batch * args.steps, n_test=args.batch,
                        batch_size=args.batch, resolution=args.resolution, seed=0)
    batches = data.train.take(args.steps).cache()

    def variant(name):
        with tf.device(device):
            model = ex.build_model("mtl_resnet", data.tasks, data.input_shape, width=args.width, seed=0)
            model.compile(keras.optimizers.Adam(1e-3), jit_compile=args.jit, **compile_args(data.tasks))
        if name == "plain":
            cbs = []
        elif name == "group_sparsity":
            cbs = [ProximalGroupLasso(l1=0.3, target=0.6, adapt_rate=0.01, min_fraction=0.1)]
        elif name == "group_sparsity_adam":
            cbs = [ProximalGroupLasso(l1=0.3, mode="adam", min_fraction=0.1)]
        else:  # masks set at step 0, re-applied in the step afterwards
            cbs = [ChannelPruningCallback(Magnitude(), IterativeSchedule(0.5, 1, step=0.5, end_step=1),
                                          groups="shared", verbose=0)]
        return model, cbs

    names = ["plain", "group_sparsity", "group_sparsity_adam", "pruning"]
    runs = {n: variant(n) for n in names}
    times = {n: [] for n in names}
    for r in range(args.rounds + 1):  # round 0 traces and warms up
        for n in names:
            model, cbs = runs[n]
            timer = _Times().cb
            with tf.device(device):
                model.fit(batches, epochs=1, verbose=0, callbacks=[*cbs, timer])
            if r:
                times[n].extend(timer.times)
    median = {n: float(np.median(t)) for n, t in times.items()}
    result = {"device": args.device, "jit": args.jit, "batch": args.batch, "resolution": args.resolution,
              "width": args.width, "rounds": args.rounds, "steps": args.steps,
              "median_s": median, "ratio": {n: median[n] / median["plain"] for n in names}}
    print(f"per-batch median ({args.device}, jit={args.jit}, batch {args.batch}, "
          f"{args.resolution}x{args.resolution}, width {args.width})")
    for n in names:
        print(f"  {n:22s} {median[n] * 1e3:8.1f} ms  x{result['ratio'][n]:.3f}")
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
