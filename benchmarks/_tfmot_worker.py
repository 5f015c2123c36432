"""tensorflow-model-optimization side of benchmarks/vs_tfmot.py; runs in its OWN process.

tfmot needs legacy Keras (tf_keras, TF_USE_LEGACY_KERAS=1), which must never load in the
Keras 3 process. This worker rebuilds the same `mtl_resnet` with tf_keras (the package's own
builder, imported with `keras` aliased to `tf_keras`; it uses only common layer APIs), loads
the dense weights by layer name, fine-tunes with `prune_low_magnitude` (PolynomialDecay from 0
to the target sparsity over the first 2/3 of the steps, then held; Adam with the learning rate
decaying to 0 on a cosine, as the main process fine-tunes its own models), `strip_pruning`, and
writes a float32 .tflite with a fixed batch of 1 (the same setting the main process uses for
its own models) plus a JSON of parameter counts.

    TF_USE_LEGACY_KERAS=1 python benchmarks/_tfmot_worker.py SPEC.json

SPEC.json: {"weights": npz of "layer/i" arrays, "data": npz with image + targets, "tasks":
[[name, kind, channels], ...], "model_kwargs": {...}, "input_shape": [h, w, c],
"sparsities": [0.5, 0.7] (0 adds the dense reference "dense_tf_keras": the same
fine-tuning loop without the pruning wrapper), "steps": int, "batch_size": int, "lr": float, "out": folder,
"recalibrate": bool (re-estimate the BatchNorm statistics after fine-tuning, as the main process does
unless --no-recalibrate)}.
"""
from __future__ import annotations

import json
import os
import sys
import time
import types

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def import_builder():
    """tfmot_mtl's mtl_resnet builder running on tf_keras (package __init__s bypassed)."""
    sys.modules["keras"] = tf_keras
    package = os.path.join(ROOT, "tfmot_mtl")
    for name, path in (("tfmot_mtl", package), ("tfmot_mtl.models", os.path.join(package, "models"))):
        module = types.ModuleType(name)
        module.__path__ = [path]
        sys.modules[name] = module
    from tfmot_mtl.models.mtl_resnet import mtl_resnet
    from tfmot_mtl.tasks import Task

    return mtl_resnet, Task


def seg_loss(y_true, y_pred):
    """Sparse softmax cross-entropy over pixels with label >= 0 (-1 = ignore)."""
    y_true = tf.cast(tf.reshape(y_true, tf.shape(y_pred)[:-1]), tf.int32)
    valid = tf.cast(y_true >= 0, tf.float32)
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(tf.maximum(y_true, 0), y_pred)
    return tf.reduce_sum(ce * valid) / tf.maximum(tf.reduce_sum(valid), 1.0)


def depth_loss(y_true, y_pred):
    """L1 over pixels with depth > 0."""
    valid = tf.cast(y_true > 0, tf.float32)
    return tf.reduce_sum(tf.abs(y_true - y_pred) * valid) / tf.maximum(tf.reduce_sum(valid), 1.0)


def normals_loss(y_true, y_pred):
    """1 - cosine similarity over pixels with a non-zero target normal."""
    valid = tf.cast(tf.reduce_sum(tf.abs(y_true), -1) > 0, tf.float32)
    cos = tf.reduce_sum(tf.math.l2_normalize(y_true, -1) * tf.math.l2_normalize(y_pred, -1), -1)
    return tf.reduce_sum((1.0 - cos) * valid) / tf.maximum(tf.reduce_sum(valid), 1.0)


LOSSES = {"segmentation": seg_loss, "depth": depth_loss, "normals": normals_loss}


def load_weights(model, path: str) -> None:
    arrays = np.load(path)
    by_layer: dict[str, dict[int, np.ndarray]] = {}
    for key in arrays.files:
        layer, index = key.rsplit("/", 1)
        by_layer.setdefault(layer, {})[int(index)] = arrays[key]
    for layer in model.layers:
        if layer.weights:
            values = by_layer.pop(layer.name)
            layer.set_weights([values[i] for i in range(len(values))])
    if by_layer:
        raise ValueError(f"weights for unknown layers: {sorted(by_layer)[:5]}")


def dataset(path: str, tasks, batch_size: int, steps: int):
    data = np.load(path)
    targets = {t.name: data[t.name] for t in tasks}
    ds = tf.data.Dataset.from_tensor_slices(({"image": data["image"]}, targets))
    return ds.shuffle(len(data["image"]), seed=0).repeat().batch(batch_size).take(steps)


def recalibrate_batchnorm(model, path: str, batch_size: int) -> None:
    """The moving statistics of every BatchNormalization layer re-estimated on one pass over the
    training split: the mean of the batch statistics (momentum k / (k + 1) at batch k; the same
    procedure as the main process's ``recipes.recalibrate_batchnorm``, on tf_keras)."""
    layers = [l for l in model.submodules if isinstance(l, tf_keras.layers.BatchNormalization)]
    images = np.load(path)["image"]
    momentum = [l.momentum for l in layers]
    for k, start in enumerate(range(0, len(images), batch_size)):
        for layer in layers:
            layer.momentum = k / (k + 1)
        model({"image": images[start:start + batch_size]}, training=True)
    for layer, m in zip(layers, momentum):
        layer.momentum = m


def to_tflite(model, input_shape) -> bytes:
    """float32 .tflite, batch fixed to 1, outputs named by task (signature keys)."""
    spec = {"image": tf.TensorSpec((1,) + tuple(input_shape), tf.float32, name="image")}
    fn = tf.function(lambda inputs: dict(model(inputs, training=False))).get_concrete_function(spec)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn], model)
    return converter.convert()


def prune_one(spec: dict, sparsity: float, build) -> dict:
    """Fine-tunes the dense weights ``spec["steps"]`` steps under ``prune_low_magnitude`` up to
    ``sparsity`` (0: the same loop with no pruning wrapper, the dense reference of this
    pipeline), strips the wrappers and writes the .tflite; returns its row."""
    import tensorflow_model_optimization as tfmot

    model = build()
    load_weights(model, spec["weights"])
    steps = int(spec["steps"])
    callbacks = []
    if sparsity > 0:
        schedule = tfmot.sparsity.keras.PolynomialDecay(
            initial_sparsity=0.0, final_sparsity=sparsity, begin_step=0,
            end_step=max(1, (2 * steps) // 3), frequency=max(1, steps // 10))
        # Output dicts keep the task keys (the wrapped final layers are renamed prune_low_magnitude_*).
        model = tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule)
        callbacks = [tfmot.sparsity.keras.UpdatePruningStep()]
    tasks = list(build.tasks)
    lr = tf_keras.optimizers.schedules.CosineDecay(spec["lr"], steps)  # as recipes.finetune
    model.compile(tf_keras.optimizers.Adam(lr), loss={t.name: LOSSES[t.kind] for t in tasks})
    start = time.perf_counter()
    model.fit(dataset(spec["data"], tasks, spec["batch_size"], steps), epochs=1, verbose=2,
              callbacks=callbacks)
    train_s = time.perf_counter() - start
    stripped = tfmot.sparsity.keras.strip_pruning(model) if sparsity > 0 else model
    if spec.get("recalibrate"):
        recalibrate_batchnorm(stripped, spec["data"], int(spec["batch_size"]))
    weights = stripped.get_weights()
    kernels = [w for layer in stripped.layers for w in layer.weights if "kernel" in w.name]
    name = f"tfmot_{int(round(sparsity * 100))}" if sparsity > 0 else "dense_tf_keras"
    path = os.path.join(spec["out"], f"{name}.tflite")
    from tfmot_mtl.utils.atomic import atomic_write  # found through import_builder's package stub

    atomic_write(path, to_tflite(stripped, spec["input_shape"]))
    return {"name": name, "tflite": path, "target_sparsity": sparsity, "train_s": train_s,
            "params": int(sum(w.size for w in weights)),
            "nonzero_params": int(sum(np.count_nonzero(w) for w in weights)),
            "kernel_sparsity": float(1 - sum(np.count_nonzero(k.numpy()) for k in kernels)
                                     / sum(int(np.prod(k.shape)) for k in kernels))}


def main(spec_path: str) -> None:
    with open(spec_path) as f:
        spec = json.load(f)
    mtl_resnet, Task = import_builder()
    tasks = [Task(name, kind, channels) for name, kind, channels in spec["tasks"]]

    def build():
        tf_keras.utils.set_random_seed(0)
        return mtl_resnet(tasks, input_shape=tuple(spec["input_shape"]), **spec["model_kwargs"])

    build.tasks = tasks
    results = [prune_one(spec, s, build) for s in spec["sparsities"]]
    from tfmot_mtl.utils.atomic import atomic_write

    atomic_write(os.path.join(spec["out"], "tfmot_results.json"),
                 json.dumps({"tf_keras": tf_keras.__version__, "results": results}, indent=2))


if __name__ == "__main__":
    main(sys.argv[1])
