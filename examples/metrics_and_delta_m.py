"""Score two tiny multi-task models with exact metrics and compare them with Δm.

Builds two dict-output models (segmentation + depth), a reference one and a slimmer
one, trains both for a few steps with the task presets' losses, evaluates them on
random batches and prints the metric tables and Δm of the slim model against the
reference (negative Δm = the slim model is worse).

    python examples/metrics_and_delta_m.py [--fast]
"""
import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfmot_mtl import tasks as T  # noqa: E402


def build_model(size: int, classes: int, width: int) -> keras.Model:
    """Two-head conv net; each head's final layer is named after its task."""
    keras.utils.set_random_seed(0)
    image = keras.Input((size, size, 3), name="image")
    h = keras.layers.Conv2D(width, 3, padding="same", activation="relu")(image)
    h = keras.layers.Conv2D(width, 3, padding="same", activation="relu")(h)
    seg = keras.layers.Conv2D(classes, 1, name="segmentation")(h)
    # Start near the targets' mean depth so the depth ratios are meaningful early on.
    dep = keras.layers.Conv2D(
        1, 1, activation="softplus", bias_initializer=keras.initializers.Constant(3.0), name="depth"
    )(h)
    return keras.Model({"image": image}, {"segmentation": seg, "depth": dep})


def make_dataset(n: int, size: int, classes: int, batch: int) -> tf.data.Dataset:
    """Random images whose labels are a simple function of the pixels (learnable)."""
    rng = np.random.default_rng(0)
    x = rng.random((n, size, size, 3), dtype=np.float32)
    seg = np.minimum((x[..., 0] * classes).astype(np.int32), classes - 1)
    seg[rng.random(seg.shape) < 0.1] = -1  # ignored pixels
    depth = (1.0 + 4.0 * x[..., 1:2]) * (rng.random((n, size, size, 1)) > 0.2)  # 0 = invalid
    targets = {"segmentation": seg, "depth": depth.astype(np.float32)}
    return tf.data.Dataset.from_tensor_slices(({"image": x}, targets)).batch(batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="tiny sizes, seconds")
    args = parser.parse_args()
    size, n, epochs = (8, 64, 4) if args.fast else (32, 512, 10)
    classes = 4

    tasks = [T.segmentation("segmentation", classes), T.depth("depth")]
    data = make_dataset(n, size, classes, batch=16)

    results = {}
    for label, width in (("reference", 16), ("slim", 4)):
        model = build_model(size, classes, width)
        model.compile(keras.optimizers.Adam(1e-2), **T.compile_args(tasks))
        model.fit(data, epochs=epochs, verbose=0, shuffle=False)
        results[label] = T.evaluate(model, data, tasks)

    T.print_results(results["reference"], title="reference model (baseline)")
    T.print_results(results["slim"], title="slim model", baseline=results["reference"], tasks=tasks)
    change = T.delta_m_per_task(results["slim"], results["reference"], tasks)
    print("per-task Δ:", ", ".join(f"{k} {v:+.2f} %" for k, v in change.items()))
    dm = T.delta_m(results["slim"], results["reference"], tasks)
    print(f"Δm (slim vs reference): {dm:+.2f} %")

if __name__ == "__main__":
    main()
