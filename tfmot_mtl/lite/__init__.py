"""Mobile deployment: Keras model -> verified .tflite file running on LiteRT.

    tfl = lite.convert(model, quantization="int8", representative_data=ds)
    lm = lite.LiteModel(tfl, num_threads=4)
    lm.predict({"image": x})                 # {task name: float array}
    lite.parity(model, lm, ds, tasks=tasks)  # max errors (+ task metrics side by side)
    lite.benchmark(lm)                       # latency, size, memory
    lite.save_bundle(model, tfl, "out/", tasks=tasks)   # model.tflite + model.json for the app

Modules, each importing only the ones above it:

- ``io``: input/output names, dataset elements split into named inputs and targets;
- ``model``: :class:`LiteModel` (the LiteRT interpreter), .tflite inspection through LiteRT's
  schema, (de)quantization of int tensors;
- ``convert``: :func:`convert`, :func:`convert_all` (Keras 3 -> SavedModel -> TFLiteConverter);
- ``evaluate``: :func:`parity`, :func:`benchmark`, :func:`runtime_compat`, :func:`cpu_features`,
  :func:`recommend_quantization`;
- ``bundle``: :func:`save_bundle` / :func:`load_bundle`;
- ``deploy``: :func:`tfmot_mtl.lite.deploy.deployment_report`, the table of ``make demo``'s last stage;
- ``arm``: :func:`tfmot_mtl.lite.arm.check_arm`, the model on LiteRT's ARM64 build under qemu
  (imported on use: ``from tfmot_mtl.lite import arm``).
"""
from tfmot_mtl.lite.bundle import describe_bundle, load_bundle, save_bundle
from tfmot_mtl.lite.convert import QUANTIZATIONS, convert, convert_all, float32_compute
from tfmot_mtl.lite.evaluate import (benchmark, cpu_features, interleaved_latency, parity, random_inputs,
                                     recommend_quantization, runtime_compat)
from tfmot_mtl.lite.io import input_specs, iterate_batches, named_outputs, split_inputs, structure_inputs
from tfmot_mtl.lite.model import LiteModel, dequantize, inspect_tflite, progress, quantize, read_tflite_bytes

__all__ = ["QUANTIZATIONS", "convert", "convert_all", "LiteModel", "parity", "benchmark", "runtime_compat",
           "save_bundle", "load_bundle", "describe_bundle", "inspect_tflite", "quantize", "dequantize",
           "input_specs", "split_inputs", "named_outputs", "iterate_batches", "structure_inputs",
           "float32_compute", "random_inputs", "read_tflite_bytes", "progress", "cpu_features",
           "recommend_quantization", "interleaved_latency"]
