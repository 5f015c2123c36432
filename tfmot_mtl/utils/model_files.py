"""Loading Keras model files safely, with a clear error for anything that is not one.

`load_model` always loads with ``safe_mode=True``: a Lambda layer carrying Python bytecode is
refused before any of it runs. Files that are not Keras models (text, TFLite flatbuffers,
SavedModel folders, other zip archives) get an error saying what the file is and what to do.
"""
from __future__ import annotations

import os
import zipfile
from typing import Any

_KERAS_HINT = "save a Keras 3 model with model.save('model.keras')"


def load_model(path: str | os.PathLike, custom_objects: dict[str, Any] | None = None, compile: bool = True):
    """Loads a ``.keras`` (or legacy ``.h5``) model with ``safe_mode=True``.

    Raises:
        FileNotFoundError: nothing at ``path``.
        ValueError: ``path`` is not a Keras model file, or holds a Lambda layer with Python
            code (refused, never executed), or names a layer class that is not registered.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ValueError(f"{path} is a folder (a TensorFlow SavedModel?), not a Keras model file. Keras 3 "
                         f"reads .keras files: {_KERAS_HINT}.")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no model file at {path}")
    _check_container(path)
    import keras

    try:
        return keras.saving.load_model(path, custom_objects=custom_objects, compile=compile, safe_mode=True)
    except Exception as err:  # noqa: BLE001 - every loader failure becomes one clear message
        raise ValueError(_explain(path, err)) from err


def _check_container(path: str) -> None:
    with open(path, "rb") as f:
        head = f.read(8)
    if head[4:8] == b"TFL3":
        raise ValueError(f"{path} is a TFLite flatbuffer, not a Keras model: run it with "
                         "tfmot_mtl.lite.LiteModel (or `tfmot-mtl bench`); strip / convert / prune need "
                         "the .keras model it was converted from.")
    if head.startswith(b"\x89HDF"):
        return  # legacy .h5: Keras reads it (also in safe mode)
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is not a loadable .keras model: a .keras file is a zip archive holding "
                         f"config.json and the weights (this file is {os.path.getsize(path)} bytes of "
                         f"something else); {_KERAS_HINT}.")
    with zipfile.ZipFile(path) as archive:
        if "config.json" not in archive.namelist():
            raise ValueError(f"{path} is a zip archive but not a .keras model (no config.json inside); "
                             f"{_KERAS_HINT}.")


def _explain(path: str, err: Exception) -> str:
    text = str(err)
    if "Lambda" in text or "safe_mode" in text:
        return (f"{path} contains a Lambda layer with Python code; it was refused and NOT executed "
                "(safe_mode=True). Rebuild the model without Lambda layers (stock layers, or a custom "
                "layer registered with @keras.saving.register_keras_serializable), or load a file you "
                "trust yourself with keras.saving.load_model(path, safe_mode=False).")
    if "Could not locate" in text or "register_keras_serializable" in text:
        return (f"{path} uses a layer or object Keras does not know ({text.splitlines()[0]}). Import the "
                "module that defines and registers it (@keras.saving.register_keras_serializable) "
                "before loading, or pass custom_objects=.")
    return f"{path} could not be loaded as a Keras model ({type(err).__name__}: {text.splitlines()[0] if text else ''})"
