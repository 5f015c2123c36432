"""Atomic file output: a crash never leaves a half-written file where a good one was."""
from __future__ import annotations

import os
import tempfile
from typing import Any, Callable


def _replace_via_temp(path: str | os.PathLike, write: Callable[[str], None], suffix: str = ".tmp") -> str:
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=suffix)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def atomic_write(path: str | os.PathLike, data: str | bytes) -> str:
    """Writes text or bytes to `path` through a temporary file in the same folder."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())

    return _replace_via_temp(path, write)


def atomic_save_model(model: Any, path: str | os.PathLike) -> str:
    """Saves a Keras model to a `.keras` file atomically."""
    return _replace_via_temp(path, model.save, suffix=".keras")
