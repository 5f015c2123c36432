"""Per-batch training overhead of each method's per-step work against plain training.

Same model (the demo's ``mtl_resnet``, same seed), same batches, A/B interleaved: each round
runs ``--steps`` batches of every variant in turn, the order rotating from round to round (the
variant that runs first after another model's epoch is measurably slower on this CPU); the
per-batch time is the median of the intervals between consecutive batch ends (step + every
callback); a variant's ratio is the median over rounds of its median against its baseline's
median in the same round (with the interquartile range of those per-round ratios), as this
machine's speed drifts between rounds by more than a method's per-step work costs. "p10"
compares the 10th percentiles of all batches instead: interference only adds time, so the
fast batches show a method's own cost with less noise. "plain_repeat" is a second plain model
trained the same way: its ratio (an A/A comparison) is the noise floor.

Budget-aware pruning needs a multi-domain model: its pair is the budget benchmark's
``mdl_resnet26`` with domain switches (and domain-specific BatchNorm) on mixed-domain batches
of the same size, trained plainly ("plain_domains", the switches learning from the task loss
alone) and with ``BudgetCallback`` ("budget": budget 0.5, Jaccard sharing; the budget and
sharing terms in the loss); its ratio is against "plain_domains". Group sparsity runs plain and
Adam-reweighted every step, and Adam-reweighted every 4 steps ("group_sparsity_adam_every4",
``update_every=4`` as in the paper preset: the same total shrinkage, a quarter of the Newton
solves). Prints the table and writes JSON. ``--jit`` compiles the train step with XLA;
``--device gpu`` runs on the first GPU.

    python benchmarks/train_overhead.py --rounds 5 --steps 10 [--jit] [--device gpu] [--variants group_sparsity_adam]
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


VARIANTS = ("plain", "plain_repeat", "group_sparsity", "group_sparsity_adam", "group_sparsity_adam_every4",
            "pruning", "plain_domains", "budget")


def _baseline(name: str) -> str:
    """The plain run a variant's ratio is taken against (the multi-domain pair has its own)."""
    return "plain_domains" if name in ("plain_domains", "budget") else "plain"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--jit", action="store_true")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, metavar="VARIANT",
                        help=f"run only these (their plain baselines are added); default all of {VARIANTS}")
    parser.add_argument("--out", default="saved_models/train_overhead.json")
    args = parser.parse_args(argv)
    if args.device == "cpu":
        os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")
    import keras
    import tensorflow as tf

    from tfmot_mtl.recipes import experiment as ex
    from tfmot_mtl.budget import BudgetCallback, compile_domain_model, pipeline
    from tfmot_mtl.pruning import ChannelPruningCallback, IterativeSchedule, Magnitude
    from tfmot_mtl.sparsity import ProximalGroupLasso
    from tfmot_mtl.tasks import compile_args

    if args.device == "gpu" and not tf.config.list_physical_devices("GPU"):
        raise SystemExit("--device gpu: no GPU visible to TensorFlow")
    device = "/GPU:0" if args.device == "gpu" else "/CPU:0"
    data = ex.load_data("synthetic_scenes", n_train=args.batch * args.steps, n_test=args.batch,
                        batch_size=args.batch, resolution=args.resolution, seed=0)
    batches = data.train.take(args.steps).cache()
    domains = pipeline.setup(resolution=args.resolution, width=0.5 * args.width, batch_size=args.batch,
                             n_train=args.batch * args.steps, seed=0, domain_bn=True)
    domain_batches = domains.train.take(args.steps).cache()

    def domain_variant(name):
        with tf.device(device):
            keras.utils.set_random_seed(0)
            model = pipeline.build(args.resolution, 0.5 * args.width, domain_bn=True)
            compile_domain_model(model, keras.optimizers.Adam(1e-3), jit_compile=args.jit)
        cbs = [BudgetCallback(0.5, sharing="jaccard")] if name == "budget" else []
        return model, cbs, domain_batches

    def variant(name):
        if name in ("plain_domains", "budget"):
            return domain_variant(name)
        with tf.device(device):
            model = ex.build_model("mtl_resnet", data.tasks, data.input_shape, width=args.width, seed=0)
            model.compile(keras.optimizers.Adam(1e-3), jit_compile=args.jit, **compile_args(data.tasks))
        if name in ("plain", "plain_repeat"):
            cbs = []
        elif name == "group_sparsity":
            cbs = [ProximalGroupLasso(l1=0.3, target=0.6, adapt_rate=0.01, min_fraction=0.1)]
        elif name == "group_sparsity_adam":
            cbs = [ProximalGroupLasso(l1=0.3, mode="adam", min_fraction=0.1)]
        elif name == "group_sparsity_adam_every4":  # the paper preset's update_every
            cbs = [ProximalGroupLasso(l1=0.3, mode="adam", min_fraction=0.1, update_every=4)]
        else:  # masks set at step 0, re-applied in the step afterwards
            cbs = [ChannelPruningCallback(Magnitude(), IterativeSchedule(0.5, 1, step=0.5, end_step=1),
                                          groups="shared", verbose=0)]
        return model, cbs, batches

    chosen = set(args.variants or VARIANTS)
    names = [n for n in VARIANTS if n in chosen or n in {_baseline(c) for c in chosen}]
    runs = {n: variant(n) for n in names}
    times = {n: [] for n in names}
    rounds = {n: [] for n in names}  # per-round medians
    for r in range(args.rounds + 1):  # round 0 traces and warms up
        for n in names[r % len(names):] + names[:r % len(names)]:  # each variant takes every place in turn
            model, cbs, train = runs[n]
            timer = _Times().cb
            with tf.device(device):
                model.fit(train, epochs=1, verbose=0, callbacks=[*cbs, timer])
            if r:
                times[n].extend(timer.times)
                rounds[n].append(float(np.median(timer.times)))
    median = {n: float(np.median(t)) for n, t in times.items()}
    # Ratios per round (a variant against its baseline of the same round), then their median
    # and spread: the machine's speed drifts between rounds by more than a method costs.
    per_round = {n: [a / b for a, b in zip(rounds[n], rounds[_baseline(n)])] for n in names}
    result = {"device": args.device, "jit": args.jit, "batch": args.batch, "resolution": args.resolution,
              "width": args.width, "rounds": args.rounds, "steps": args.steps,
              "median_s": median, "round_medians_s": rounds,
              "ratio": {n: float(np.median(per_round[n])) for n in names},
              "ratio_iqr": {n: [float(np.percentile(per_round[n], q)) for q in (25, 75)] for n in names},
              "ratio_of_medians": {n: median[n] / median[_baseline(n)] for n in names},
              "ratio_p10": {n: float(np.percentile(times[n], 10) / np.percentile(times[_baseline(n)], 10))
                            for n in names}}
    print(f"per-batch median ({args.device}, jit={args.jit}, batch {args.batch}, "
          f"{args.resolution}x{args.resolution}, width {args.width}); ratio = median over rounds of "
          "the variant's median / its baseline's median in the same round [interquartile range]; "
          "p10 = the same for the 10th percentiles of all batches")
    for n in names:
        lo, hi = result["ratio_iqr"][n]
        ratio = "" if n == _baseline(n) else (f"  x{result['ratio'][n]:.3f} [{lo:.3f}-{hi:.3f}] "
                                              f"p10 x{result['ratio_p10'][n]:.3f} vs {_baseline(n)}")
        print(f"  {n:26s} {median[n] * 1e3:8.1f} ms{ratio}")
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
