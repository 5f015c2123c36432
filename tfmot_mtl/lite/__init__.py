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
- ``convert``: :func:`convert` (Keras 3 -> SavedModel -> TFLiteConverter);
- ``evaluate``: :func:`parity`, :func:`benchmark`, :func:`runtime_compat`;
- ``bundle``: :func:`save_bundle` / :func:`load_bundle`.
"""
from tfmot_mtl.lite.bundle import describe_bundle, load_bundle, save_bundle
from tfmot_mtl.lite.convert import QUANTIZATIONS, convert, float32_compute
from tfmot_mtl.lite.evaluate import benchmark, parity, random_inputs, runtime_compat
from tfmot_mtl.lite.io import input_specs, iterate_batches, named_outputs, split_inputs, structure_inputs
from tfmot_mtl.lite.model import LiteModel, dequantize, inspect_tflite, progress, quantize, read_tflite_bytes

__all__ = ["QUANTIZATIONS", "convert", "LiteModel", "parity", "benchmark", "runtime_compat",
           "save_bundle", "load_bundle", "describe_bundle", "inspect_tflite", "quantize", "dequantize",
           "input_specs", "split_inputs", "named_outputs", "iterate_batches", "structure_inputs",
           "float32_compute", "random_inputs", "read_tflite_bytes", "progress"]
