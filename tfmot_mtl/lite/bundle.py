"""A deployment bundle: model.tflite plus model.json, everything an app needs to feed and read it."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from tfmot_mtl.utils.atomic import atomic_write
from tfmot_mtl.lite.io import named_outputs
from tfmot_mtl.lite.model import LiteModel

BUNDLE_FORMAT = "tfmot_mtl.lite.bundle"
MODEL_FILE, DESCRIPTION_FILE = "model.tflite", "model.json"

OUTPUT_MEANINGS = {
    "segmentation": "per-pixel class logits (batch, height, width, classes); argmax over the last axis "
                    "gives the class id",
    "depth": "per-pixel depth (batch, height, width, 1) in the units of the training targets",
    "normals": "per-pixel surface normal (batch, height, width, 3), not unit length: L2-normalise over "
               "the last axis",
    "classification": "class logits (batch, classes); argmax (or softmax) over the last axis",
    "binary": "per-attribute logits (batch, attributes); sigmoid > 0.5 (logit > 0) means present",
}


def _quantization(details: Mapping) -> dict[str, Any] | None:
    params = details["quantization_parameters"]
    if len(params["scales"]) == 0:
        return None
    scales, zero_points = params["scales"].tolist(), params["zero_points"].tolist()
    return {"scale": scales[0] if len(scales) == 1 else scales,
            "zero_point": zero_points[0] if len(zero_points) == 1 else zero_points,
            "quantize": "q = clamp(round(x / scale) + zero_point)",
            "dequantize": "x = (q - zero_point) * scale"}


def _normalisation(name: str, details: Mapping, input_normalisation) -> str:
    if isinstance(input_normalisation, Mapping) and name in input_normalisation:
        return input_normalisation[name]
    real_float = np.issubdtype(np.dtype(details["dtype"]), np.floating) or _quantization(details)
    if not real_float:
        kind = "domain index in [0, number of domains)" if name == "domain" else "integer value"
        return f"{np.dtype(details['dtype']).name} {kind}, no normalisation"
    if isinstance(input_normalisation, str):
        return input_normalisation
    return "float32, no normalisation stated"


def describe_bundle(lite: LiteModel, tasks: Sequence = (), input_normalisation: Any = "float32 RGB in [0, 1]",
                    model_name: str | None = None) -> dict[str, Any]:
    """The model.json content for a LiteModel (see save_bundle)."""
    tasks_by_name = {t.name: t for t in tasks}
    unknown = sorted(set(tasks_by_name) - set(lite.output_names))
    if unknown:
        raise ValueError(f"tasks {unknown} are not outputs of the model {lite.output_names}.")
    info = lite.describe()

    def tensor(name: str, details: Mapping) -> dict[str, Any]:
        return {"name": name, "shape": [int(s) for s in details["shape_signature"]],
                "dtype": np.dtype(details["dtype"]).name, "quantization": _quantization(details)}

    inputs = [{**tensor(n, d), "real_dtype": "float32" if _quantization(d) else np.dtype(d["dtype"]).name,
               "normalisation": _normalisation(n, d, input_normalisation)} for n, d in lite.input_details.items()]
    outputs = []
    for name, details in lite.output_details.items():
        task = tasks_by_name.get(name)
        outputs.append({**tensor(name, details), "real_dtype": "float32",
                        "task_kind": task.kind if task else None,
                        "meaning": OUTPUT_MEANINGS.get(task.kind, task.kind) if task else "raw model output",
                        "class_names": list(task.class_names) if task else []})
    return {
        "format": BUNDLE_FORMAT, "format_version": 1, "model_name": model_name,
        "model_file": MODEL_FILE, "tflite_size_bytes": lite.size_bytes,
        "sha256": hashlib.sha256(lite.model_content).hexdigest(),
        "quantization": info["quantization"], "runtime": "LiteRT (ai-edge-litert / org.tensorflow:tensorflow-lite)",
        "signature": lite.signature_key, "min_runtime_version": info["min_runtime_version"],
        "batch_dimension": "-1 in a shape is the batch size: resize the input tensors to the batch before running",
        "inputs": inputs, "outputs": outputs, "op_counts": info["op_counts"],
    }


def save_bundle(model, tflite_bytes: bytes, folder: str | os.PathLike, tasks: Sequence | None = None,
                input_normalisation: str | Mapping[str, str] = "float32 RGB in [0, 1]") -> dict[str, Any]:
    """Writes `folder/model.tflite` and `folder/model.json` (each atomically) for a mobile app.

    model.json lists every input (name, shape with -1 for the batch, dtype, quantization scale and
    zero point when quantized, normalisation of the real values) and every output (name = task,
    shape, dtype, quantization, meaning derived from the task kind, class names), the
    quantization mode, the tflite size and sha256, and the ops.

    Args:
        model: the Keras model that was converted (gives the bundle its name; may be None).
        tflite_bytes: output of `tfmot_mtl.lite.convert`.
        folder: created if missing; existing bundle files are replaced.
        tasks: tfmot_mtl.tasks.Task objects naming each output's kind and classes.
        input_normalisation: the real-value convention of float inputs, one string for all or
            {input name: text}.

    Returns:
        The model.json content as a dict.
    """

    lite = LiteModel(tflite_bytes)
    names = sorted(named_outputs(model, model.output)) if model is not None else sorted(lite.output_names)
    if names != sorted(lite.output_names):
        raise ValueError(f"model outputs {names} differ from the TFLite outputs {sorted(lite.output_names)}: "
                         f"was tflite_bytes converted from this model?")
    description = describe_bundle(lite, tasks or (), input_normalisation, getattr(model, "name", None))
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / MODEL_FILE, lite.model_content)
    atomic_write(folder / DESCRIPTION_FILE, (json.dumps(description, indent=2) + "\n").encode())
    return description


def load_bundle(folder: str | os.PathLike, num_threads: int = 1) -> tuple[LiteModel, dict[str, Any]]:
    """Reads a bundle written by save_bundle: (LiteModel, model.json content)."""
    folder = Path(folder)
    description = json.loads((folder / DESCRIPTION_FILE).read_text())
    if description.get("format") != BUNDLE_FORMAT:
        raise ValueError(f"{folder / DESCRIPTION_FILE} is not a {BUNDLE_FORMAT} description.")
    return LiteModel(folder / description["model_file"], num_threads=num_threads), description
