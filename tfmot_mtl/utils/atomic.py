"""Atomic file output: a crash never leaves a half-written file where a good one was.

Every writer goes through a temporary file in the destination folder, flushed to disk and
then renamed over the destination (``os.replace`` is atomic on POSIX and Windows), so a
reader sees either the old complete file or the new complete file. The file gets the
permissions a plain ``open(path, "w")`` gives a new file (the umask; see
:func:`replace_via_temp`), never the 0600 of a ``tempfile.mkstemp`` file.
"""
from __future__ import annotations

import io
import os
import secrets
import stat
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


def _create_temp(folder: str, prefix: str, suffix: str) -> tuple[str, int]:
    """Creates a new empty file in `folder` as ``open(name, "w")`` would: mode 0o666 less the
    process umask (and less what a default ACL of the folder masks). Returns its path and mode.

    The kernel applies the umask at creation, so the umask is never read or changed here
    (changing it, even briefly, would race with other threads creating files).
    """
    for _ in range(100):
        tmp = os.path.join(folder, f"{prefix}{secrets.token_hex(6)}{suffix}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        except FileExistsError:
            continue
        try:
            return tmp, stat.S_IMODE(os.fstat(fd).st_mode)
        finally:
            os.close(fd)
    raise FileExistsError(f"could not create a temporary file in {folder!r}: every name tried exists")


def replace_via_temp(path: str | os.PathLike, write: Callable[[str], None], suffix: str = ".tmp") -> str:
    """Calls ``write(tmp)`` on a temporary file next to `path`, then renames it over `path`.

    If ``write`` raises (or the process dies), `path` is untouched and the temporary file is
    removed (after a hard kill it stays behind as a hidden ``.name.*`` file). ``suffix``
    must be the extension writers infer the format from (``.keras``, ``.png``, ...).

    Permissions are those ``open(path, "w")`` gives a new file: 0o666 less the process umask
    (0644 under umask 022, 0600 under 077). `path` is always a new file, also where one
    existed (the rename replaces it), so it gets this mode rather than the old file's (a file
    left 0600 by an earlier writer gets the umask mode when it is rewritten). The mode is set
    after ``write`` ran, so writers that recreate the temporary file do not change it.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp, mode = _create_temp(folder, f".{os.path.basename(path)}.", suffix)
    try:
        write(tmp)
        _chmod(tmp, mode)
        _fsync_file(tmp)
        os.replace(tmp, path)
        _fsync_dir(folder)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _chmod(path: str, mode: int) -> None:
    try:
        os.chmod(path, mode)
    except NotImplementedError:  # platforms without chmod
        pass


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
