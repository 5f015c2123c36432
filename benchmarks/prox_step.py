"""Time of ProximalGroupLasso's in-graph step measured alone, as graph ops and XLA-compiled.

The demo's ``mtl_resnet`` is trained ``--warmup`` batches with the callback (so Adam's moments
and the zero pattern are those of a real run), then the proximal step of that state is timed
on its own, ``--reps`` times per form, the two forms interleaved and the weights restored
after every call: "graph" runs the step's ops one by one in TensorFlow's executor (what a
``tf.distribute`` train step runs), "xla" is the fused function the train step calls otherwise.
Both must write the same weights. Prints the medians and writes JSON.

    python benchmarks/prox_step.py [--mode adam|plain] [--reps 200]
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("adam", "plain"), default="adam")
    parser.add_argument("--warmup", type=int, default=8, help="training batches before timing")
    parser.add_argument("--reps", type=int, default=200)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--out", default="saved_models/prox_step.json")
    args = parser.parse_args(argv)
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")
    import keras
    import tensorflow as tf

    from tfmot_mtl.recipes import experiment as ex
    from tfmot_mtl.sparsity import ProximalGroupLasso
    from tfmot_mtl.tasks import compile_args

    data = ex.load_data("synthetic_scenes", n_train=args.batch * args.warmup, n_test=args.batch,
                        batch_size=args.batch, resolution=args.resolution, seed=0)
    model = ex.build_model("mtl_resnet", data.tasks, data.input_shape, width=args.width, seed=0)
    model.compile(keras.optimizers.Adam(1e-3), **compile_args(data.tasks))
    cb = ProximalGroupLasso(l1=0.3, mode=args.mode, min_fraction=0.1)
    model.fit(data.train.take(args.warmup), epochs=1, verbose=0, callbacks=[cb])
    step = cb._step_graph
    step.enabled.assign(True)  # fit switches the step off at its end
    saved = [v.numpy() for v in cb.variables]
    state = {v: getattr(step, v).numpy() for v in ("last_step", "zero", "sparsity", "gain")}

    def restore():
        for var, value in zip(cb.variables, saved):
            var.assign(value)
        for name, value in state.items():
            getattr(step, name).assign(value)

    forms = {"graph": tf.function(step._due_step, autograph=False),
             "xla": tf.function(step._due_step, autograph=False, jit_compile=True)}
    written = {}
    for name, fn in forms.items():  # trace / compile, and keep what each form writes
        step.last_step.assign(-1)  # the step is due
        fn()
        written[name] = [v.numpy() for v in cb.variables]
        restore()
    times = {name: [] for name in forms}
    for i in range(args.reps):
        for name in (("graph", "xla") if i % 2 else ("xla", "graph")):
            step.last_step.assign(-1)
            start = time.perf_counter()
            forms[name]()
            times[name].append(time.perf_counter() - start)
            restore()
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(written["graph"], written["xla"]))
    result = {"mode": args.mode, "warmup": args.warmup, "reps": args.reps,
              "selected_weights": int(sum(np.prod(v.shape) for v in cb.variables)),
              "channels": int(step.n), "zero_channels": int(np.sum(step.zero.numpy())),
              "median_ms": {n: float(np.median(t) * 1e3) for n, t in times.items()},
              "p10_ms": {n: float(np.percentile(t, 10) * 1e3) for n, t in times.items()},
              "max_abs_difference": diff,
              "changed_weights": any(not np.array_equal(a, b) for a, b in zip(written["xla"], saved))}
    print(f"proximal step alone ({args.mode}, {result['selected_weights']:,} selected weights, "
          f"{result['zero_channels']} of {result['channels']} channels zero): "
          + ", ".join(f"{n} {result['median_ms'][n]:.2f} ms (p10 {result['p10_ms'][n]:.2f})" for n in forms)
          + f"; max |graph - xla| = {diff:.2g}")
    ex.write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
