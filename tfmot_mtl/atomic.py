"""Atomic file output: a crash never leaves a half-written file where a good one was.

Every writer goes through a temporary file in the destination folder, flushed to disk and
then renamed over the destination (``os.replace`` is atomic on POSIX and Windows), so a
reader sees either the old complete file or the new complete file.
"""
from __future__ import annotations

import io
import os
import tempfile
from typing import Any, Callable


def _fsync_file(path: str) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(folder: str) -> None:
    """Makes the rename itself durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def replace_via_temp(path: str | os.PathLike, write: Callable[[str], None], suffix: str = ".tmp") -> str:
    """Calls ``write(tmp)`` on a temporary file next to `path`, then renames it over `path`.

    If ``write`` raises (or the process dies), `path` is untouched and the temporary file is
    removed (after a hard kill it stays behind as a hidden ``.name.*`` file). ``suffix``
    must be the extension writers infer the format from (``.keras``, ``.png``, ...).
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=suffix)
    os.close(fd)
    try:
        write(tmp)
        _fsync_file(tmp)
        os.replace(tmp, path)
        _fsync_dir(folder)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def atomic_write(path: str | os.PathLike, data: str | bytes) -> str:
    """Writes text (UTF-8) or bytes to `path` atomically."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)

    return replace_via_temp(path, write)


def atomic_save_model(model: Any, path: str | os.PathLike) -> str:
    """Saves a Keras model to a `.keras` file atomically."""
    return replace_via_temp(path, model.save, suffix=".keras")


def atomic_save_weights(model: Any, path: str | os.PathLike) -> str:
    """Saves a Keras model's weights (and optimizer state) to a `.weights.h5` file atomically."""
    if not os.fspath(path).endswith(".weights.h5"):
        raise ValueError(f"Keras weight files must end in '.weights.h5', got {os.fspath(path)!r}")
    return replace_via_temp(path, lambda tmp: model.save_weights(tmp, overwrite=True), suffix=".weights.h5")


def atomic_savefig(fig: Any, path: str | os.PathLike, **kwargs: Any) -> str:
    """``fig.savefig(path, **kwargs)`` atomically (the format follows the extension of `path`)."""
    ext = os.path.splitext(os.fspath(path))[1]
    if ext and "format" not in kwargs:
        kwargs["format"] = ext[1:].lower()
    return replace_via_temp(path, lambda tmp: fig.savefig(tmp, **kwargs), suffix=ext or ".tmp")


def atomic_savez(path: str | os.PathLike, **arrays: Any) -> str:
    """``np.savez(path, **arrays)`` atomically (`path` is used as given, no ``.npz`` added)."""
    import numpy as np

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return atomic_write(path, buffer.getvalue())
