"""Run and inspect .tflite files with LiteRT (`ai_edge_litert`), the runtime Android ships.

Nothing here imports TensorFlow or Keras: a deployment machine needs only `ai-edge-litert`.
"""
from __future__ import annotations

import collections
import os
import sys
from pathlib import Path
from typing import Any, Mapping

import numpy as np

TFLITE_IDENTIFIER = b"TFL3"
_QUANTIZED_IO_DTYPES = (np.int8, np.uint8, np.int16)
APIS = ("interpreter", "compiled")
ACCELERATORS = ("cpu", "gpu", "npu")


def read_tflite_bytes(path_or_bytes: str | os.PathLike | bytes | bytearray | memoryview) -> bytes:
    """Returns the content of a .tflite file (path) or bytes, checked to be a TFLite flatbuffer.

    Raises:
        ValueError: if the content is not a TFLite flatbuffer (no "TFL3" file identifier).
        FileNotFoundError: if a path is given that does not exist.
    """
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        content, origin = bytes(path_or_bytes), "the given bytes"
    elif isinstance(path_or_bytes, (str, os.PathLike)):
        content, origin = Path(path_or_bytes).read_bytes(), f"file {os.fspath(path_or_bytes)!r}"
    else:
        raise ValueError(
            f"path_or_bytes must be a path or bytes of a .tflite model, got {type(path_or_bytes).__name__}."
        )
    if len(content) < 8 or content[4:8] != TFLITE_IDENTIFIER:
        raise ValueError(
            f"{origin} is not a TFLite model: a .tflite flatbuffer carries the identifier "
            f"{TFLITE_IDENTIFIER!r} at bytes 4-8. Convert the Keras model with tfmot_mtl.lite.convert."
        )
    return content


def inspect_tflite(content: bytes) -> dict[str, Any]:
    """Parses a TFLite flatbuffer with the LiteRT schema: ops (name, version, count), tensors, metadata.

    Returns:
        dict with "ops" (list of {"name", "version", "count"} in first-use order), "op_counts"
        ({name: count}), "num_operators", "num_tensors", "num_subgraphs", "schema_version",
        "min_runtime_version" (the converter's "min_runtime_version" metadata entry, or None),
        "metadata" (names of all metadata entries) and "tensor_types" ({type name: count}).
    """
    from ai_edge_litert import schema_py_generated as schema

    try:
        model = schema.Model.GetRootAs(content, 0)
        op_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
        type_names = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
        codes = [_op_code_name(model.OperatorCodes(i), op_names, schema) for i in range(model.OperatorCodesLength())]
        counts: collections.Counter = collections.Counter()
        tensor_types: collections.Counter = collections.Counter()
        num_tensors = num_operators = 0
        for g in range(model.SubgraphsLength()):
            subgraph = model.Subgraphs(g)
            num_tensors += subgraph.TensorsLength()
            num_operators += subgraph.OperatorsLength()
            for t in range(subgraph.TensorsLength()):
                tensor_types[type_names.get(subgraph.Tensors(t).Type(), "UNKNOWN")] += 1
            for j in range(subgraph.OperatorsLength()):
                counts[codes[subgraph.Operators(j).OpcodeIndex()]] += 1
        metadata = {model.Metadata(i).Name().decode(): _buffer_bytes(model, model.Metadata(i).Buffer(), content)
                    for i in range(model.MetadataLength())}
    except Exception as exc:  # a flatbuffer with the right identifier but a broken body
        raise ValueError(f"could not parse the TFLite flatbuffer: {exc}") from exc
    min_version = metadata.get("min_runtime_version")
    op_counts: collections.Counter = collections.Counter()
    for (name, _), count in counts.items():
        op_counts[name] += count
    return {
        "ops": [{"name": n, "version": v, "count": c} for (n, v), c in counts.items()],
        "op_counts": dict(op_counts),
        "num_operators": num_operators,
        "num_tensors": num_tensors,
        "num_subgraphs": model.SubgraphsLength(),
        "schema_version": model.Version(),
        "min_runtime_version": min_version.rstrip(b"\0").decode() if min_version else None,
        "metadata": sorted(metadata),
        "tensor_types": dict(tensor_types),
    }


def _op_code_name(op_code, op_names: dict, schema) -> tuple[str, int]:
    # Old files only fill deprecated_builtin_code (int8); new ones fill builtin_code (int32).
    code = max(op_code.BuiltinCode(), op_code.DeprecatedBuiltinCode())
    if code == schema.BuiltinOperator.CUSTOM:
        return f"CUSTOM:{(op_code.CustomCode() or b'?').decode()}", op_code.Version()
    return op_names.get(code, f"BUILTIN_{code}"), op_code.Version()


def _buffer_bytes(model, index: int, content: bytes) -> bytes:
    buffer = model.Buffers(index)
    if buffer.DataLength():
        return buffer.DataAsNumpy().tobytes()
    offset, size = buffer.Offset(), buffer.Size()  # models over 2 GB keep buffers after the flatbuffer
    return bytes(content[offset:offset + size]) if size else b""


def quantize(values: np.ndarray, details: Mapping[str, Any]) -> np.ndarray:
    """Converts real values to the tensor's dtype, quantizing with its scale / zero point if it has them."""
    dtype = np.dtype(details["dtype"])
    params = details["quantization_parameters"]
    if len(params["scales"]) == 0 or dtype.type not in _QUANTIZED_IO_DTYPES:
        return np.asarray(values).astype(dtype, copy=False)
    scale, zero_point = _broadcast_params(params, np.ndim(values))
    info = np.iinfo(dtype)
    q = np.round(np.asarray(values, np.float32) / scale) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(values: np.ndarray, details: Mapping[str, Any]) -> np.ndarray:
    """Converts a quantized tensor back to float32 real values (other tensors are returned as they are)."""
    params = details["quantization_parameters"]
    if len(params["scales"]) == 0 or np.dtype(details["dtype"]).type not in _QUANTIZED_IO_DTYPES:
        return np.array(values)
    scale, zero_point = _broadcast_params(params, np.ndim(values))
    return ((np.asarray(values, np.float32) - zero_point) * scale).astype(np.float32)


def _broadcast_params(params: Mapping[str, Any], ndim: int) -> tuple[np.ndarray, np.ndarray]:
    scale = np.asarray(params["scales"], np.float32)
    zero_point = np.asarray(params["zero_points"], np.float32)
    if scale.size > 1:  # per-axis quantization
        shape = [1] * ndim
        shape[params["quantized_dimension"]] = scale.size
        scale, zero_point = scale.reshape(shape), zero_point.reshape(shape)
    return scale, zero_point


def guess_quantization(info: Mapping[str, Any], input_details: Mapping, output_details: Mapping) -> str | None:
    """Names the quantization of a converted model from its tensor types: None means float32."""
    io_types = {np.dtype(d["dtype"]).type for d in (*input_details.values(), *output_details.values())}
    if np.int16 in io_types:
        return "int16x8"
    if np.int8 in io_types or np.uint8 in io_types:
        return "int8"
    if info["tensor_types"].get("FLOAT16"):
        return "float16"
    if info["tensor_types"].get("INT8"):
        # float inputs and outputs around int8 activations: convert(..., float_outputs=...)
        return "int8-mixed" if info["op_counts"].get("QUANTIZE") else "dynamic"
    return None


def progress(step: int, total: int | None, label: str, enabled: bool = True) -> None:
    """Prints a progress counter: one self-rewriting line on a terminal, else a line per 25 %.

    With total None (unknown length) it prints the step alone (every 10th step off a terminal).
    """
    if not enabled:
        return
    if total is None:
        if sys.stdout.isatty() or step % 10 == 0:
            sys.stdout.write(f"\r{label}: {step}" if sys.stdout.isatty() else f"{label}: {step}\n")
            sys.stdout.flush()
        return
    if sys.stdout.isatty():
        sys.stdout.write(f"\r{label}: {step}/{total}" + ("\n" if step >= total else ""))
    elif step >= total or step * 4 // total != (step - 1) * 4 // total:
        sys.stdout.write(f"{label}: {step}/{total}\n")
    else:
        return
    sys.stdout.flush()


class LiteModel:
    """A .tflite model running on LiteRT, called with and returning named float arrays.

    `predict` goes through the model's signature runner, so inputs are matched by name and outputs
    come back keyed by task name whatever order the converter gave the tensors. The runner resizes
    the input tensors to the batch of each call (tensors are re-allocated only when the shape
    changes), so any batch size works on models converted with a dynamic batch dimension; a model
    converted with a fixed batch size is run in chunks of that size (the last one padded).
    Quantized (int8 / int16) inputs and outputs are quantized and dequantized with each tensor's
    own scale and zero point: callers always pass and get real (float) values.

    Two LiteRT APIs run the model: ``api="interpreter"`` (the TFLite Interpreter, LiteRT's
    compatibility path, XNNPACK on CPU) and ``api="compiled"`` (LiteRT's ``CompiledModel`` with
    tensor buffers, the current API, which picks a hardware accelerator). On CPU both run the
    same XNNPACK kernels and give identical outputs. The Interpreter is loaded in both cases:
    the tensor details (quantization parameters, shape signatures) come from it.

    Args:
        path_or_bytes: a .tflite file path or its bytes.
        num_threads: CPU threads LiteRT may use.
        signature_key: which signature to run; None = the only one (or "serving_default").
        api: ``"interpreter"`` or ``"compiled"``.
        accelerator: with ``api="compiled"``: ``"cpu"``, ``"gpu"`` or ``"npu"`` (the latter two
            only where the runtime finds the device and runs every op of the model on it).

    Raises:
        ValueError: for content that is not a TFLite model, a model without signatures, or an
            accelerator the runtime does not offer here.
    """

    def __init__(self, path_or_bytes, num_threads: int = 1, signature_key: str | None = None,
                 api: str = "interpreter", accelerator: str = "cpu"):
        from ai_edge_litert.interpreter import Interpreter

        if not isinstance(num_threads, int) or num_threads < 1:
            raise ValueError(f"num_threads must be a positive int, got {num_threads!r}.")
        if api not in APIS:
            raise ValueError(f"api must be one of {APIS}, got {api!r}.")
        if accelerator not in ACCELERATORS:
            raise ValueError(f"accelerator must be one of {ACCELERATORS}, got {accelerator!r}.")
        if api == "interpreter" and accelerator != "cpu":
            raise ValueError(f"accelerator={accelerator!r} needs api='compiled' (the Interpreter runs on CPU).")
        self.api, self.accelerator = api, accelerator
        self.model_content = read_tflite_bytes(path_or_bytes)
        self.num_threads = num_threads
        try:
            self._interpreter = Interpreter(model_content=self.model_content, num_threads=num_threads)
        except (ValueError, RuntimeError) as exc:
            raise ValueError(f"LiteRT could not load the model: {exc}") from exc
        signatures = self._interpreter.get_signature_list()
        if not signatures:
            raise ValueError("the TFLite model has no signature; convert it with tfmot_mtl.lite.convert, "
                             "which keeps named inputs and outputs.")
        if signature_key is None:
            signature_key = "serving_default" if "serving_default" in signatures else next(iter(signatures))
        if signature_key not in signatures:
            raise ValueError(f"signature_key {signature_key!r} not in the model; it has {sorted(signatures)}.")
        self.signature_key = signature_key
        self._runner = self._interpreter.get_signature_runner(signature_key)
        self._info: dict[str, Any] | None = None
        self._compiled = _compile(self.model_content, accelerator, num_threads) if api == "compiled" else None

    @property
    def input_details(self) -> dict[str, dict]:
        """LiteRT details (dtype, shape, shape_signature, quantization_parameters...) per input name."""
        return self._runner.get_input_details()

    @property
    def output_details(self) -> dict[str, dict]:
        """LiteRT details per output name (the task names for models of this package)."""
        return self._runner.get_output_details()

    @property
    def input_names(self) -> list[str]:
        return list(self.input_details)

    @property
    def output_names(self) -> list[str]:
        return list(self.output_details)

    @property
    def size_bytes(self) -> int:
        """Size of the .tflite flatbuffer in bytes."""
        return len(self.model_content)

    @property
    def quantization(self) -> str | None:
        """"int8", "int8-mixed" (float inputs and outputs, some operations kept in float), "int16x8",
        "float16", "dynamic" or None (float32), read from the tensor types."""
        return guess_quantization(self._inspect(), self.input_details, self.output_details)

    def _inspect(self) -> dict[str, Any]:
        if self._info is None:
            self._info = inspect_tflite(self.model_content)
        return self._info

    def describe(self) -> dict[str, Any]:
        """Size, quantization, signature, ops (name, version, count), tensor count, min runtime version."""
        info = self._inspect()

        def io(details):
            return {name: {"shape": [int(s) for s in d["shape_signature"]],
                           "dtype": np.dtype(d["dtype"]).name,
                           "quantized": len(d["quantization_parameters"]["scales"]) > 0}
                    for name, d in details.items()}

        return {
            "size_bytes": self.size_bytes,
            "quantization": self.quantization or "float32",
            "signature": self.signature_key,
            "inputs": io(self.input_details),
            "outputs": io(self.output_details),
            **{k: info[k] for k in ("ops", "op_counts", "num_operators", "num_tensors", "num_subgraphs",
                                    "min_runtime_version", "schema_version", "metadata")},
        }

    def feed(self, inputs: Any) -> dict[str, np.ndarray]:
        """Checks named (or, for one-input models, bare) real inputs and converts them to the tensor dtypes."""
        details = self.input_details
        if not isinstance(inputs, Mapping):
            if len(details) != 1:
                raise ValueError(f"inputs must be a dict with keys {sorted(details)} for this "
                                 f"{len(details)}-input model, got {type(inputs).__name__}.")
            inputs = {next(iter(details)): inputs}
        missing, unknown = set(details) - set(inputs), set(inputs) - set(details)
        if missing or unknown:
            raise ValueError(f"inputs must have exactly the keys {sorted(details)}; "
                             f"missing {sorted(missing)}, unknown {sorted(unknown)}.")
        feed, batch = {}, None
        for name, d in details.items():
            value = np.asarray(inputs[name])
            expected = [int(s) for s in d["shape_signature"]]
            if value.ndim != len(expected) or any(e not in (-1, v) for e, v in zip(expected[1:], value.shape[1:])):
                raise ValueError(f"input {name!r} has shape {value.shape}; the model expects {expected} "
                                 f"(-1 = any size).")
            if batch is not None and value.shape[:1] != batch:
                raise ValueError(f"inputs have different batch sizes: {name!r} has {value.shape[:1]}, "
                                 f"others {batch}.")
            batch = value.shape[:1]
            if value.shape[0] == 0:
                raise ValueError(f"input {name!r} is an empty batch.")
            feed[name] = quantize(value, d)
        return feed

    def predict(self, inputs: Any, batch_size: int | None = None) -> dict[str, np.ndarray]:
        """Runs the model: real-valued outputs keyed by output (task) name.

        Args:
            inputs: dict {input name: array with a batch dimension}; a bare array for one-input models.
            batch_size: run the batch in chunks of this many examples (bounds memory); None = all at
                once. Models converted with a fixed batch size always run in chunks of that size.
        """
        feed = self.feed(inputs)
        total = len(next(iter(feed.values())))
        fixed = self.fixed_batch_size
        if fixed is not None:
            batch_size = fixed
        if batch_size is None or (total <= batch_size and fixed is None):
            return self._run(feed)
        chunks = [self._run({k: v[i:i + batch_size] for k, v in feed.items()}) for i in range(0, total, batch_size)]
        return {name: np.concatenate([c[name] for c in chunks]) for name in chunks[0]}

    @property
    def fixed_batch_size(self) -> int | None:
        """The batch size the model was converted with, or None for a dynamic batch dimension."""
        sizes = {int(d["shape_signature"][0]) for d in self.input_details.values() if len(d["shape_signature"])}
        return None if not sizes or -1 in sizes else sizes.pop()

    def _run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n, fixed = len(next(iter(feed.values()))), self.fixed_batch_size
        if fixed is not None and n < fixed:  # pad the last chunk of a fixed-batch model
            feed = {k: np.concatenate([v, np.repeat(v[-1:], fixed - n, axis=0)]) for k, v in feed.items()}
        raw = self.run_raw(feed)
        details = self.output_details
        return {name: dequantize(raw[name], details[name])[:n] for name in details}

    def run_raw(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One run on tensors of the model's own dtypes (see :meth:`feed`); raw output tensors."""
        if self._compiled is None:
            return self._runner(**feed)
        run = self._compiled_call(feed)
        return run()

    def _compiled_call(self, feed: dict[str, np.ndarray]):
        """Writes ``feed`` into CompiledModel input buffers; returns a function that runs the model
        and reads the outputs (``.run`` alone runs without reading)."""
        compiled, key = self._compiled, self.signature_key
        current = compiled.get_input_tensor_details(key)
        for name, value in feed.items():
            if [int(s) for s in current[name]["shape"]] != list(value.shape):
                compiled.resize_input_tensor_by_name(key, name, list(value.shape))
        inputs = {}
        for name, value in feed.items():
            inputs[name] = compiled.create_input_buffer_by_name(key, name)
            inputs[name].write(np.ascontiguousarray(value))
        details = compiled.get_output_tensor_details(key)
        outputs = {name: compiled.create_output_buffer_by_name(key, name) for name in details}

        def run() -> dict[str, np.ndarray]:
            compiled.run_by_name(key, inputs, outputs)
            return {name: outputs[name].read(int(np.prod(d["shape"])), np.dtype(d["dtype"])).reshape(d["shape"])
                    for name, d in details.items()}

        run.run = lambda: compiled.run_by_name(key, inputs, outputs)
        return run

    def invoke_timer(self, feed: dict[str, np.ndarray]):
        """Sets the inputs once and returns a function running only the model (no input copy or
        output read)."""
        if self._compiled is not None:
            return self._compiled_call(feed).run
        self._runner(**feed)  # resizes, allocates and fills the input tensors
        # Interpreter.invoke() refuses to run while a signature runner holds the wrapper, so invoke the
        # runner's subgraph through the wrapper; without those attributes, time the whole runner call.
        wrapper = getattr(self._runner, "_interpreter_wrapper", None)
        subgraph = getattr(self._runner, "_subgraph_index", None)
        if wrapper is not None and subgraph is not None:
            return lambda: wrapper.Invoke(subgraph)
        return lambda: self._runner(**feed)

    def __repr__(self) -> str:
        return (f"LiteModel(inputs={self.input_names}, outputs={self.output_names}, "
                f"size_bytes={self.size_bytes}, quantization={self.quantization or 'float32'}, "
                f"num_threads={self.num_threads}, api={self.api!r}, accelerator={self.accelerator!r})")


def _compile(content: bytes, accelerator: str, num_threads: int):
    """A LiteRT CompiledModel on ``accelerator``; ValueError when the runtime cannot place the
    whole model there."""
    from ai_edge_litert.compiled_model import CompiledModel
    from ai_edge_litert.hardware_accelerator import HardwareAccelerator
    from ai_edge_litert.options import CpuOptions, Options

    target = {"cpu": HardwareAccelerator.CPU, "gpu": HardwareAccelerator.GPU, "npu": HardwareAccelerator.NPU}
    options = Options(hardware_accelerators=target[accelerator], cpu_options=CpuOptions(num_threads=num_threads))
    try:
        compiled = CompiledModel.from_buffer(content, options=options)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[-200:]
        raise ValueError(f"LiteRT cannot run this model on the {accelerator.upper()} here ({detail}); "
                         "use accelerator='cpu'") from exc
    if accelerator != "cpu" and not compiled.is_fully_accelerated():
        raise ValueError(f"LiteRT runs only part of this model on the {accelerator.upper()}; use accelerator='cpu'")
    return compiled
