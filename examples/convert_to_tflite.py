"""Convert a multi-task Keras model to TFLite (float32 / float16 / int8), check it on LiteRT and time it.

    python examples/convert_to_tflite.py --fast
    python examples/convert_to_tflite.py --model my_model.keras --out saved_models/tflite

Without --model a small two-task model (per-pixel "seg", pooled "cls") is built with random
weights; int8 is calibrated on random images in [0, 1]. Each variant is written as a bundle
(model.tflite + model.json) under --out/<quantization>/.
"""
import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfmot_mtl import lite  # noqa: E402
from tfmot_mtl.utils.model_files import load_model  # noqa: E402
from tfmot_mtl.tasks import Task  # noqa: E402


def build_model(size: int, width: int) -> tuple[keras.Model, list[Task]]:
    image = keras.Input((size, size, 3), name="image")
    x = image
    for filters in (width, 2 * width, 2 * width):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.ReLU()(x)
    seg = keras.layers.Conv2D(5, 1, name="seg")(x)
    cls = keras.layers.Dense(10, name="cls")(keras.layers.GlobalAveragePooling2D()(x))
    tasks = [Task("seg", "segmentation", 5), Task("cls", "classification", 10)]
    return keras.Model({"image": image}, {"seg": seg, "cls": cls}), tasks


def synthetic_data(model: keras.Model, n: int, batch: int, tasks: list[Task]) -> tf.data.Dataset:
    """Random inputs (floats in [0, 1], integer inputs 0) and, for known tasks, random targets."""
    rng = np.random.default_rng(0)
    inputs = {}
    for name, (shape, dtype) in lite.input_specs(model).items():
        shape = (n,) + tuple(shape[1:])
        inputs[name] = rng.random(shape).astype(dtype) if dtype.startswith("float") else np.zeros(shape, dtype)
    if not tasks:
        return tf.data.Dataset.from_tensor_slices(inputs).batch(batch)
    outputs = lite.named_outputs(model, model.output)
    targets = {}
    for task in tasks:
        spatial = tuple(outputs[task.name].shape[1:-1])
        targets[task.name] = rng.integers(0, task.output_channels, (n,) + spatial).astype(np.int32)
    return tf.data.Dataset.from_tensor_slices((inputs, targets)).batch(batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a .keras model to convert (default: build a small two-task model)")
    parser.add_argument("--out", default="saved_models/tflite_example", help="folder for the bundles")
    parser.add_argument("--fast", action="store_true", help="tiny model, few calibration steps and runs")
    args = parser.parse_args()

    size, width, runs, steps = (16, 8, 10, 2) if args.fast else (64, 16, 50, 20)
    if args.model:
        model, tasks = load_model(args.model), []
    else:
        model, tasks = build_model(size, width)
    data = synthetic_data(model, n=16 if args.fast else 64, batch=4, tasks=tasks)
    print(f"model {model.name}: {model.count_params():,} parameters, inputs {list(lite.input_specs(model))}, "
          f"outputs {list(lite.named_outputs(model, model.output))}")

    rows = []
    for quantization in ("float32", "float16", "int8"):
        tflite = lite.convert(model, quantization, representative_data=data, num_calibration_steps=steps)
        lm = lite.LiteModel(tflite)
        check = lite.parity(model, lm, data, tasks=tasks, max_batches=2 if args.fast else None)
        times = {t: lite.benchmark(lm, runs=runs, num_threads=t, verbose=False) for t in (1, 2)}
        lite.save_bundle(model, tflite, os.path.join(args.out, quantization), tasks=tasks)
        rows.append((quantization, lm.size_bytes, check, times))
        for task, metrics in check.get("metrics", {}).items():
            side_by_side = ", ".join(f"{m} {metrics['keras'][m]:.2f} -> {metrics['tflite'][m]:.2f}"
                                     for m in metrics["keras"])
            print(f"  {quantization:<8} {task}: keras -> tflite  {side_by_side}")

    print(f"\n{'quantization':<13}{'size KiB':>10}{'max_abs_error':>15}{'max_rel_error':>15}"
          f"{'median ms 1t':>14}{'p90 ms 1t':>11}{'median ms 2t':>14}")
    for quantization, size_bytes, check, times in rows:
        print(f"{quantization:<13}{size_bytes / 1024:>10.1f}{check['max_abs_error']:>15.2e}"
              f"{check['max_rel_error']:>15.2e}{times[1]['median_ms']:>14.3f}{times[1]['p90_ms']:>11.3f}"
              f"{times[2]['median_ms']:>14.3f}")
    print(f"\npeak RSS {rows[-1][3][2]['peak_rss_bytes'] / 2**20:.0f} MiB; bundles in {args.out}/")


if __name__ == "__main__":
    main()
