"""Keras model -> .tflite bytes: float32, dynamic-range, float16, int8 or int16x8.

Conversion route (TF 2.21, Keras 3): the model is exported with `keras.export.ExportArchive` to a
SavedModel in a temporary folder, with one "serving_default" endpoint that takes a dict of named
inputs and returns a dict of named outputs; `tf.lite.TFLiteConverter.from_saved_model` converts it.
`TFLiteConverter.from_keras_model` fails on Keras 3 models ("'NoneType' object is not callable"),
and `from_concrete_functions` on a `tf.function`, like `tf.saved_model.save` of a `tf.Module`
holding the model, keeps the weights as uninitialised resource variables (VAR_HANDLE /
READ_VARIABLE ops): the file lacks the weights and LiteRT returns NaN.

Keras' own ``model.export(path, format="litert")`` (Keras >= 3.13) is the other float32 route
(``convert(model, via="keras")``): on the models of the tests it gives the same ops, the same
named signature and the same outputs (max difference 0). It has no quantization options, so
every quantized file goes through the SavedModel route above.
"""
from __future__ import annotations

import re
import tempfile
import warnings
from typing import Any, Mapping, Sequence

import numpy as np

from tfmot_mtl.lite.io import input_specs, iterate_batches, named_outputs, split_inputs, structure_inputs
from tfmot_mtl.lite.model import progress

QUANTIZATIONS = (None, "dynamic", "float16", "int8", "int16x8")
_CALIBRATED = ("int8", "int16x8")
VIAS = ("saved_model", "keras")


def _representative_dataset(data: Any, specs: Mapping, steps: int, verbose: bool):
    total = steps
    if hasattr(data, "cardinality"):
        cardinality = int(data.cardinality())
        total = min(steps, cardinality) if cardinality >= 0 else steps

    fixed = next(iter(specs.values()))[0][0] if specs else None

    def generate():
        count = 0
        for element in iterate_batches(data, steps):
            inputs, _ = split_inputs(element, specs)
            inputs = {name: inputs[name].astype(dtype) for name, (_, dtype) in specs.items()}
            count += 1
            if fixed is None:
                yield inputs
            else:  # a fixed-batch signature takes exactly `fixed` examples per call: pad the last chunk
                n = len(next(iter(inputs.values())))
                for i in range(0, n, fixed):
                    yield {name: _pad_batch(value[i:i + fixed], fixed) for name, value in inputs.items()}
            progress(count, total, "calibrating", verbose)
        if count == 0:
            raise ValueError("representative_data yielded no batches; pass a non-empty dataset of inputs.")
        if count < total:  # the data ran out before num_calibration_steps
            progress(count, count, "calibrating", verbose)

    return generate


def _pad_batch(value: np.ndarray, size: int) -> np.ndarray:
    if len(value) >= size:
        return value
    return np.concatenate([value, np.repeat(value[-1:], size - len(value), axis=0)])


def float32_compute(model):
    """`model`, or a float32 copy of it when layers compute in float16 / bfloat16 (mixed precision).

    TFLite has no float16 kernels for most ops (conversion fails with "TF Select ops: Conv2D,
    ..."). The variables of a mixed-precision model are float32 already, so the copy computes
    the same function at float32 precision; pass quantization="float16" for float16 weights.
    """
    import keras

    if not any(_low_precision(layer) for layer in _layers(model)):
        return model

    def clone(layer):
        return type(layer).from_config({**layer.get_config(), "dtype": "float32"})

    copy = keras.models.clone_model(model, clone_function=clone, recursive=True)
    copy.set_weights(model.get_weights())
    return copy


def _layers(model) -> list:
    out = []
    for layer in getattr(model, "layers", []):
        out.append(layer)
        out.extend(_layers(layer))
    return out


def _low_precision(layer) -> bool:
    policy = getattr(layer, "dtype_policy", None)
    return getattr(policy, "compute_dtype", "float32") in ("float16", "bfloat16")


def _export_saved_model(model, folder: str, specs: Mapping) -> None:
    import keras
    import tensorflow as tf

    signature = {name: tf.TensorSpec(shape, dtype, name=name) for name, (shape, dtype) in specs.items()}

    def serve(inputs):
        return named_outputs(model, model(structure_inputs(model, inputs), training=False))

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", serve, input_signature=[signature])
    archive.write_out(folder, verbose=False)


def _configure(converter, quantization: str | None, representative) -> None:
    import tensorflow as tf

    if quantization is None:
        return
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif quantization == "int8":
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = converter.inference_output_type = tf.int8
    elif quantization == "int16x8":
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
        converter.inference_input_type = converter.inference_output_type = tf.int16


def convert(model, quantization: str | None = None, representative_data: Any = None,
            num_calibration_steps: int = 100, batch_size: int | None = None, verbose: bool = True,
            via: str = "saved_model", float_outputs: Mapping[str, int] | None = None) -> bytes:
    """Converts a Keras functional model to a .tflite flatbuffer with a named "serving_default" signature.

    The signature keeps the model's input names (e.g. "image", "domain") and names the outputs by
    the dict output keys (task names), so `LiteModel.predict` returns outputs keyed by task.

    Args:
        model: a built Keras functional model (named inputs, dict or list outputs).
        quantization: None (float32), "dynamic" (int8 weights, float activations; the converter
            keeps weight tensors under 1024 elements in float32), "float16" (float16 weights),
            "int8" (full-integer: int8 weights, activations, inputs and outputs), or "int16x8"
            (int16 activations, int8 weights; float inputs only).
        representative_data: calibration data for "int8" / "int16x8": a tf.data.Dataset (or iterable)
            of batches `(inputs, targets)` or of inputs alone; inputs as in `split_inputs`.
        num_calibration_steps: how many batches of representative_data to calibrate on.
        batch_size: None keeps a dynamic batch dimension (any batch runs); an int fixes it. A
            fixed batch (1 for a phone app) lets the converter drop shape arithmetic and fuse
            dilated convolutions (no SPACE_TO_BATCH_ND / BATCH_TO_SPACE_ND), so the model is
            smaller and faster; LiteModel.predict then runs larger batches in chunks.
        verbose: print a progress line while calibrating.
        via: ``"saved_model"`` (the route above, every quantization) or ``"keras"`` (Keras'
            ``model.export(format="litert")``, float32 only).
        float_outputs: with ``"int8"``: ``{output name: k}`` keeps the last ``k`` operations
            on the way to that output in float (the fix for a task that full int8 costs too
            much, e.g. ``{"depth": 2}``); the model's inputs and outputs are then float32 and
            the other operations int8 (TensorFlow's quantization debugger, selective mode).

    Returns:
        The .tflite file content (write it to a .tflite file, or pass it to LiteModel / save_bundle).

    Raises:
        ValueError: unknown quantization, missing calibration data, or a model int16x8 cannot handle.
        RuntimeError: when the TFLite converter fails (its message is kept).
    """
    if via not in VIAS:
        raise ValueError(f"via must be one of {VIAS}, got {via!r}.")
    if via == "keras":
        if _label(quantization) != "float32" or batch_size is not None:
            raise ValueError("via='keras' (model.export(format='litert')) converts float32 models with a dynamic "
                             "batch only; use via='saved_model' for quantization or a fixed batch_size.")
        return _keras_export(model)
    if float_outputs:
        if quantization != "int8":
            raise ValueError(f"float_outputs keeps parts of an int8 model in float; got quantization={quantization!r}")
        return _selective_int8(model, float_outputs, representative_data, num_calibration_steps, batch_size,
                               verbose)
    return convert_all(model, (quantization,), representative_data, num_calibration_steps, batch_size,
                       verbose)[_label(quantization)]


def convert_all(model, quantizations: Sequence[str | None] = (None, "int8"), representative_data: Any = None,
                num_calibration_steps: int = 100, batch_size: int | None = None,
                verbose: bool = True) -> dict[str, bytes]:
    """Several quantizations of one model from a single SavedModel export (each :func:`convert`
    call exports the model again): ``{"float32" | quantization: .tflite bytes}``. Arguments and
    errors as in :func:`convert`."""
    quantizations = [None if q == "float32" else q for q in quantizations]
    for quantization in quantizations:
        if quantization not in QUANTIZATIONS:
            raise ValueError(f"quantization must be one of {QUANTIZATIONS} (or 'float32'), got {quantization!r}.")
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be None (dynamic) or a positive int, got {batch_size!r}.")
    specs = input_specs(model, batch_size)
    calibrated = [q for q in quantizations if q in _CALIBRATED]
    if calibrated:
        if representative_data is None:
            raise ValueError(f"quantization={calibrated[0]!r} calibrates activation ranges: pass "
                             f"representative_data, a tf.data.Dataset of (inputs, targets) or input batches.")
        if not isinstance(num_calibration_steps, int) or num_calibration_steps < 1:
            raise ValueError(f"num_calibration_steps must be a positive int, got {num_calibration_steps!r}.")
    non_float = [n for n, (_, dtype) in specs.items() if not dtype.startswith("float")]
    if "int16x8" in quantizations and non_float:
        raise ValueError(f"quantization='int16x8' cannot calibrate the integer inputs {non_float} (the TFLite "
                         f"16x8 quantizer needs a range for every input); use 'int8' for this model.")
    try:
        return _convert_specs(model, quantizations, specs, representative_data, num_calibration_steps, verbose)
    except NeedsFlexOps as err:
        if batch_size is not None:
            raise
        # TensorFlow's converter leaves some ops of a dynamic-batch graph unlowered (seen: a
        # convolution after two UpSampling2D in a row); the same model at a fixed batch converts.
        warnings.warn(f"{err} With a dynamic batch; converted with batch_size=1 instead (LiteModel.predict "
                      "runs larger batches one example at a time).", stacklevel=2)
        return _convert_specs(model, quantizations, input_specs(model, 1), representative_data,
                              num_calibration_steps, verbose)


def _convert_specs(model, quantizations, specs, representative_data, num_calibration_steps, verbose) -> dict:
    import tensorflow as tf

    out = {}
    with tempfile.TemporaryDirectory(prefix="tfmot_mtl_export_") as folder:
        _export_saved_model(float32_compute(model), folder, specs)
        for quantization in quantizations:
            representative = (_representative_dataset(representative_data, specs, num_calibration_steps, verbose)
                              if quantization in _CALIBRATED else None)
            converter = tf.lite.TFLiteConverter.from_saved_model(folder)
            _configure(converter, quantization, representative)
            out[_label(quantization)] = _run_converter(converter, quantization)
    return out


def float_tail(content: bytes, outputs: Mapping[str, int]) -> list[str]:
    """Names of the output tensors of the last ``k`` operations before each named output of a
    float .tflite (operations closer than ``k`` steps along any path to the output)."""
    from ai_edge_litert import schema_py_generated as schema

    from tfmot_mtl.lite.model import LiteModel

    lite = LiteModel(content)
    unknown = sorted(set(outputs) - set(lite.output_names))
    if unknown:
        raise ValueError(f"float_outputs names {unknown}, not outputs of the model {lite.output_names}")
    for name, k in outputs.items():
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"float_outputs[{name!r}] must be a positive number of operations, got {k!r}")
    graph = schema.Model.GetRootAs(content, 0).Subgraphs(0)
    producer = {}
    for i in range(graph.OperatorsLength()):
        for t in graph.Operators(i).OutputsAsNumpy():
            producer[int(t)] = i
    keep: set[int] = set()
    for name, k in outputs.items():
        frontier = {lite.output_details[name]["index"]}
        for _ in range(k):
            ops = {producer[t] for t in frontier if t in producer}
            keep |= {int(t) for op in ops for t in graph.Operators(op).OutputsAsNumpy()}
            frontier = {int(t) for op in ops for t in graph.Operators(op).InputsAsNumpy() if t >= 0}
    return sorted(graph.Tensors(t).Name().decode() for t in keep)


def _selective_int8(model, float_outputs, representative_data, steps, batch_size, verbose) -> bytes:
    """Int8 with the last operations of some outputs left in float (float32 model inputs/outputs)."""
    import tensorflow as tf

    if representative_data is None:
        raise ValueError("quantization='int8' calibrates activation ranges: pass representative_data, a "
                         "tf.data.Dataset of (inputs, targets) or input batches.")
    specs = input_specs(model, batch_size)
    tail = float_tail(convert(model, batch_size=batch_size, verbose=False), dict(float_outputs))
    representative = _representative_dataset(representative_data, specs, steps, verbose)

    def samples():  # the debugger feeds inputs in the signature's order
        for inputs in representative():
            yield [inputs[name] for name in specs]

    with tempfile.TemporaryDirectory(prefix="tfmot_mtl_export_") as folder:
        _export_saved_model(float32_compute(model), folder, specs)
        converter = tf.lite.TFLiteConverter.from_saved_model(folder)
        _configure(converter, "int8", representative)
        converter.inference_input_type = converter.inference_output_type = tf.float32
        options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=tail)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"(?s).*tf\.lite\.Interpreter is deprecated")
            debugger = tf.lite.experimental.QuantizationDebugger(converter=converter, debug_dataset=samples,
                                                                 debug_options=options)
            return debugger.get_nondebug_quantized_model()


def _label(quantization: str | None) -> str:
    return "float32" if quantization in (None, "float32") else quantization


class NeedsFlexOps(RuntimeError):
    """The converter left TensorFlow ops that TFLite's builtin kernels cannot run."""


def _run_converter(converter, quantization: str | None) -> bytes:
    try:
        with warnings.catch_warnings():  # calibration runs the deprecated tf.lite.Interpreter internally
            warnings.filterwarnings("ignore", message=r"(?s).*tf\.lite\.Interpreter is deprecated")
            return converter.convert()
    except Exception as exc:
        if isinstance(exc, ValueError) and "representative_data" in str(exc):
            raise  # our own message about the calibration data
        text = " ".join(str(exc).split())
        flex = re.search(r"TF Select ops: ([\w, ]+?)(?: Details|$)", text)
        if flex:
            raise NeedsFlexOps(f"TFLite conversion (quantization={quantization!r}) failed: TFLite's builtin ops do "
                               f"not cover {flex.group(1)} as the converter left them.") from exc
        hint = " Ops without an int8 kernel need quantization='dynamic'." if quantization == "int8" else ""
        raise RuntimeError(f"TFLite conversion (quantization={quantization!r}) failed: {text[:600]}.{hint}") from exc


def _keras_export(model) -> bytes:
    """Float32 .tflite bytes from Keras' own LiteRT export."""
    import os

    with tempfile.TemporaryDirectory(prefix="tfmot_mtl_export_") as folder:
        path = os.path.join(folder, "model.tflite")
        try:
            float32_compute(model).export(path, format="litert", verbose=False)
        except Exception as exc:
            raise RuntimeError(f"Keras' LiteRT export failed: {exc}; use via='saved_model'.") from exc
        with open(path, "rb") as f:
            return f.read()
