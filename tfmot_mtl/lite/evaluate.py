"""Checks of a converted model: parity with Keras, latency / memory, older-runtime compatibility."""
from __future__ import annotations

import resource
import sys
import time
from typing import Any, Mapping, Sequence

import numpy as np

from tfmot_mtl.lite.io import iterate_batches, named_outputs, split_inputs, structure_inputs
from tfmot_mtl.lite.model import LiteModel, inspect_tflite, progress, read_tflite_bytes


def _as_lite_model(lite_model_or_bytes, num_threads: int | None = None, api: str | None = None) -> LiteModel:
    if isinstance(lite_model_or_bytes, LiteModel):
        same = lite_model_or_bytes
        if (num_threads is None or num_threads == same.num_threads) and (api is None or api == same.api):
            return same
        return LiteModel(same.model_content, num_threads=num_threads or same.num_threads,
                         signature_key=same.signature_key, api=api or same.api, accelerator=same.accelerator)
    return LiteModel(lite_model_or_bytes, num_threads=num_threads or 1, api=api or "interpreter")


# /proc/cpuinfo flags that decide which LiteRT kernels run: wide float SIMD and int8 dot products
_X86_FEATURES = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8")
_ARM_FEATURES = ("asimd", "asimddp", "i8mm", "bf16", "sve", "sve2", "sme")


def cpu_features(cpuinfo: str | None = None, machine: str | None = None) -> dict[str, Any]:
    """The measuring CPU: architecture, model name and the SIMD features LiteRT's kernels use
    (AVX2 / AVX-512 / VNNI on x86-64; NEON, dot product (asimddp), i8mm on ARM64).

    ``int8_dot`` says whether the CPU has int8 dot-product instructions (VNNI, asimddp, i8mm):
    without them int8 convolutions are emulated with wider multiplies and int8 models often run
    slower than float32 (measured on an AVX2 machine: see the README's deployment table).
    """
    import platform

    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
        except OSError:
            cpuinfo = ""
    machine = machine or platform.machine()
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip().lower(), value.strip())
    flags = set((fields.get("flags") or fields.get("features") or "").split())
    arm = machine.lower() in ("aarch64", "arm64") or "asimd" in flags
    wanted = _ARM_FEATURES if arm else _X86_FEATURES
    present = [f for f in wanted if f in flags]
    dot = {"asimddp", "i8mm"} if arm else {"avx512_vnni", "avx_vnni", "amx_int8"}
    return {"arch": "arm64" if arm else machine, "model": fields.get("model name") or fields.get("cpu part", ""),
            "features": present, "int8_dot": bool(dot & flags)}


def recommend_quantization(float_ms: float, int8_ms: float, cpu: Mapping[str, Any] | None = None) -> str:
    """One line: which of float32 and full int8 to ship for this CPU, from measured latencies."""
    cpu = cpu if cpu is not None else cpu_features()
    name = f"{cpu['arch']} with {', '.join(cpu['features']) or 'no SIMD flags read'}"
    if int8_ms > float_ms:
        why = ("" if cpu["int8_dot"] else
               " (no int8 dot-product instructions here: int8 convolutions run on wider multiplies)")
        return (f"int8 is {int8_ms / float_ms:.2f}x slower than float32 on this CPU ({name}){why}: ship float32 "
                "(or float16 weights) for x86 CPUs like this one; int8 still pays on ARM64 phones with "
                "the dot-product extension (Cortex-A76 and later) and saves ~4x of the file size")
    return (f"int8 is {float_ms / int8_ms:.2f}x faster than float32 on this CPU ({name}): ship int8 "
            "if its task metrics hold")


def parity(keras_model, lite_model, dataset, tasks: Sequence | None = None,
           max_batches: int | None = None, verbose: bool = False) -> dict[str, Any]:
    """Compares a Keras model with its TFLite conversion on a dataset, output by output.

    Errors are taken over every element of every batch: `max_abs_error` = max |keras - tflite|,
    `max_rel_error` = max_abs_error / max |keras output| of that task (one scale per task, so
    near-zero logits do not blow the ratio up), `mean_abs_error` = mean |keras - tflite|.
    With `tasks` (tfmot_mtl.tasks.Task objects) each task's metrics are also computed on the
    dataset's targets for both models, side by side: the figure that matters for quantized models.

    Args:
        keras_model: the Keras model that was converted.
        lite_model: a LiteModel, or .tflite bytes / path.
        dataset: tf.data.Dataset (or iterable) of `(inputs, targets)` batches, or of inputs alone
            when `tasks` is None.
        tasks: tasks whose metrics to compare; each needs `task.accumulator()`.
        max_batches: stop after this many batches; None = the whole dataset.
        verbose: print a progress line (batches done / total when the dataset's size is known).

    Returns:
        A dict: ``num_examples``, ``quantization``, ``max_abs_error`` and ``max_rel_error``
        (worst over outputs), ``errors`` (``{output: {max_abs_error, max_rel_error,
        mean_abs_error, keras_max_abs}}``), ``metrics`` (``{task: {"keras": {...}, "tflite":
        {...}}}``, only with tasks).
    """

    lite = _as_lite_model(lite_model)
    tasks = list(tasks or [])
    unknown = [t.name for t in tasks if t.name not in lite.output_names]
    if unknown:
        raise ValueError(f"tasks {unknown} are not outputs of the TFLite model {lite.output_names}.")
    accumulators = {t.name: (t.accumulator(), t.accumulator()) for t in tasks}
    stats: dict[str, list[float]] = {}
    examples = 0
    cardinality = int(dataset.cardinality()) if hasattr(dataset, "cardinality") else -1
    total = min(v for v in (max_batches, cardinality if cardinality >= 0 else None) if v is not None) \
        if (max_batches is not None or cardinality >= 0) else None
    for step, element in enumerate(iterate_batches(dataset, max_batches), 1):
        inputs, targets = split_inputs(element, lite.input_names)
        raw = keras_model(structure_inputs(keras_model, inputs), training=False)
        expected = {k: np.asarray(v) for k, v in named_outputs(keras_model, raw).items()}
        actual = lite.predict(inputs)
        if set(expected) != set(actual):
            raise ValueError(f"Keras outputs {sorted(expected)} differ from TFLite outputs {sorted(actual)}.")
        for name, ref in expected.items():
            diff = np.abs(ref.astype(np.float64) - actual[name])
            s = stats.setdefault(name, [0.0, 0.0, 0.0, 0])
            s[0], s[1] = max(s[0], float(diff.max(initial=0.0))), max(s[1], float(np.abs(ref).max(initial=0.0)))
            s[2], s[3] = s[2] + float(diff.sum()), s[3] + diff.size
        if accumulators:
            _update_metrics(accumulators, targets, expected, actual)
        examples += len(next(iter(inputs.values())))
        progress(step, total, "parity", verbose)
    if not stats:
        raise ValueError("dataset yielded no batches; parity needs at least one.")
    if verbose and total is None and sys.stdout.isatty():
        sys.stdout.write("\n")
    errors = {name: {"max_abs_error": s[0], "max_rel_error": s[0] / max(s[1], 1e-12),
                     "mean_abs_error": s[2] / max(s[3], 1), "keras_max_abs": s[1]} for name, s in stats.items()}
    result = {"num_examples": examples, "quantization": lite.quantization or "float32",
              "max_abs_error": max(e["max_abs_error"] for e in errors.values()),
              "max_rel_error": max(e["max_rel_error"] for e in errors.values()), "errors": errors}
    if accumulators:
        result["metrics"] = {name: {"keras": _floats(k.result()), "tflite": _floats(t.result())}
                             for name, (k, t) in accumulators.items()}
    return result


def _update_metrics(accumulators: Mapping, targets: Any, expected: Mapping, actual: Mapping) -> None:
    if targets is None:
        raise ValueError("parity with tasks needs targets: the dataset must yield (inputs, targets) batches.")
    if not isinstance(targets, Mapping):
        if len(accumulators) != 1:
            raise ValueError(f"targets must be a dict keyed by task name for tasks {sorted(accumulators)}.")
        targets = {next(iter(accumulators)): targets}
    for name, (keras_acc, lite_acc) in accumulators.items():
        if name not in targets:
            raise ValueError(f"targets lack task {name!r}; they have {sorted(targets)}.")
        y_true = np.asarray(targets[name])
        keras_acc.update_state(y_true, expected[name])
        lite_acc.update_state(y_true, actual[name])


def _floats(result: Mapping) -> dict[str, float]:
    return {k: float(v) for k, v in result.items()}


def random_inputs(lite: LiteModel, batch_size: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    """Synthetic real-valued inputs: floats uniform in [0, 1] (the image convention), integers 0."""
    rng = np.random.default_rng(seed)
    inputs = {}
    for name, d in lite.input_details.items():
        shape = [int(s) for s in d["shape_signature"]]
        if shape and shape[0] == -1:
            shape[0] = batch_size
        if -1 in shape:
            raise ValueError(f"input {name!r} has dynamic dimensions {shape}; pass inputs= to benchmark.")
        if np.issubdtype(np.dtype(d["dtype"]), np.floating) or len(d["quantization_parameters"]["scales"]):
            inputs[name] = rng.random(shape, dtype=np.float32)
        else:
            inputs[name] = np.zeros(shape, np.dtype(d["dtype"]))
    return inputs


def peak_rss_bytes() -> int:
    """Peak resident memory of this process so far (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def benchmark(lite_model_or_bytes, runs: int = 50, warmup: int = 5, num_threads: int | None = 1,
              batch_size: int = 1, inputs: Mapping | None = None, verbose: bool = True,
              api: str | None = None) -> dict[str, Any]:
    """Times the interpreter's invoke (time.perf_counter around each call) on fixed inputs.

    Args:
        lite_model_or_bytes: a LiteModel, or .tflite bytes / path.
        runs, warmup: timed and untimed invokes.
        num_threads: LiteRT threads (the LiteModel is re-created if it has another count);
            None = the LiteModel's own count (1 for bytes).
        batch_size: batch of the synthetic inputs (floats uniform in [0, 1], integer inputs 0).
        inputs: real inputs to time instead of synthetic ones.
        verbose: print a progress line.
        api: ``"interpreter"`` or ``"compiled"`` (LiteRT's CompiledModel); None = the
            LiteModel's own (the Interpreter for bytes).

    Inputs are set once; only `invoke` is timed. `peak_rss_bytes` is the whole process's peak
    resident memory (TensorFlow included when it is loaded), an upper bound for the model.

    Returns:
        A dict: ``median_ms``, ``p90_ms``, ``mean_ms``, ``min_ms``, ``max_ms``, ``runs``,
        ``warmup``, ``batch_size``, ``num_threads``, ``size_bytes``, ``peak_rss_bytes``,
        ``quantization``, ``api`` and ``cpu`` (:func:`cpu_features` of the measuring machine).
    """
    for arg, value, low in (("runs", runs, 1), ("warmup", warmup, 0), ("batch_size", batch_size, 1)):
        if not isinstance(value, int) or value < low:
            raise ValueError(f"{arg} must be an int >= {low}, got {value!r}.")
    lite = _as_lite_model(lite_model_or_bytes, num_threads, api)
    feed = lite.feed(inputs if inputs is not None else random_inputs(lite, batch_size))
    batch_size = int(next(iter(feed.values())).shape[0]) if feed else batch_size
    invoke = lite.invoke_timer(feed)
    for _ in range(warmup):
        invoke()
    times = np.empty(runs)
    for i in range(runs):
        start = time.perf_counter()
        invoke()
        times[i] = (time.perf_counter() - start) * 1e3
        progress(i + 1, runs, f"benchmark ({lite.num_threads} thread(s))", verbose)
    return {"median_ms": float(np.median(times)), "p90_ms": float(np.percentile(times, 90)),
            "mean_ms": float(times.mean()), "min_ms": float(times.min()), "max_ms": float(times.max()),
            "runs": runs, "warmup": warmup, "batch_size": batch_size, "num_threads": lite.num_threads,
            "size_bytes": lite.size_bytes, "peak_rss_bytes": peak_rss_bytes(),
            "quantization": lite.quantization or "float32", "api": lite.api, "cpu": cpu_features()}


def interleaved_latency(lites: Mapping[str, LiteModel], runs: int = 100, warmup: int = 5,
                        batch_size: int = 1) -> dict[str, dict]:
    """Median / p90 invoke time (ms) of several models timed together: each run times every model
    once, the order rotating per run, so a slow spell of the machine hits all of them alike.

    Returns:
        {name: {"median_ms", "p90_ms", "runs"}}
    """
    if not isinstance(runs, int) or runs < 1:
        raise ValueError(f"runs must be an int >= 1, got {runs!r}.")
    names = list(lites)
    timers = {n: lites[n].invoke_timer(lites[n].feed(random_inputs(lites[n], batch_size))) for n in names}
    for _ in range(warmup):
        for n in names:
            timers[n]()
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(runs):
        for n in names[r % len(names):] + names[:r % len(names)]:
            start = time.perf_counter()
            timers[n]()
            times[n].append((time.perf_counter() - start) * 1e3)
    return {n: {"median_ms": float(np.median(t)), "p90_ms": float(np.percentile(t, 90)), "runs": runs}
            for n, t in times.items()}


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split(".") if p.isdigit())


def runtime_compat(tflite_bytes, target_version: str = "2.14.0") -> dict[str, Any]:
    """Whether a model's ops and op versions would run on an older TFLite runtime.

    The converter records the oldest runtime that has every (op, version) of the model as the
    "min_runtime_version" metadata entry; it is compared with `target_version`. Custom ops are
    listed because a stock runtime lacks them. If the old `tflite-runtime` package is installed
    the model is also loaded with it; that package is dead (last release 2.14, no Python 3.12
    wheels, built against NumPy 1) and is never required: when absent the check is skipped.

    Returns:
        A dict: ``min_runtime_version``, ``target_version``, ``compatible`` (None if unknown),
        ``ops``, ``custom_ops`` and ``tflite_runtime`` (``{installed, version, loads, error}``).
    """
    content = read_tflite_bytes(tflite_bytes)
    info = inspect_tflite(content)
    minimum = info["min_runtime_version"]
    custom = [op["name"] for op in info["ops"] if op["name"].startswith("CUSTOM:")]
    compatible = None if minimum is None else _version_tuple(minimum) <= _version_tuple(target_version)
    if custom and compatible:
        compatible = False
    old = _load_with_tflite_runtime(content)
    if old.get("loads") is False:
        compatible = False
    return {"min_runtime_version": minimum, "target_version": target_version, "compatible": compatible,
            "ops": info["ops"], "custom_ops": custom, "tflite_runtime": old}


def _load_with_tflite_runtime(content: bytes) -> dict[str, Any]:
    try:
        from tflite_runtime import interpreter as old_runtime  # optional, usually absent
    except ImportError:
        return {"installed": False, "version": None, "loads": None,
                "error": "tflite-runtime is not installed (optional; check skipped)"}
    version = getattr(sys.modules.get("tflite_runtime"), "__version__", None)
    try:
        old_runtime.Interpreter(model_content=content).allocate_tensors()
    except Exception as exc:  # any failure means the old runtime cannot run the model
        return {"installed": True, "version": version, "loads": False, "error": str(exc)}
    return {"installed": True, "version": version, "loads": True, "error": None}
