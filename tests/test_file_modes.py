"""Files the package writes get the permissions of the user's umask (never the 0600 of a temp file)."""
import os
import stat

import keras
import numpy as np
import pytest

from tfmot_mtl.utils.atomic import atomic_save_model, atomic_save_weights, atomic_savez, atomic_write
from tfmot_mtl.recipes.experiment import write_json
from tfmot_mtl.masks import ChannelMasks

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")


@pytest.fixture(params=[0o022, 0o077, 0o002], ids=lambda u: f"umask{u:03o}")
def umask(request):
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def _tiny_model() -> keras.Model:
    inp = keras.Input((4,), name="x")
    return keras.Model(inp, {"y": keras.layers.Dense(2, name="y")(inp)})


def _writers(folder):
    """(what, path, write) for each writer of the package."""
    yield "atomic_write", folder / "data.bin", lambda p: atomic_write(p, b"\x00\x01")
    yield "atomic_save_model", folder / "model.keras", lambda p: atomic_save_model(_tiny_model(), p)
    yield "ChannelMasks.save", folder / "masks.json", ChannelMasks({"g": np.array([True, False])}).save
    yield "write_json", folder / "report.json", lambda p: write_json(p, {"a": np.int64(1)})
    yield "atomic_save_weights", folder / "w.weights.h5", lambda p: atomic_save_weights(_tiny_model(), p)
    yield "atomic_savez", folder / "arrays.npz", lambda p: atomic_savez(p, a=np.zeros(2))


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_new_files_get_the_umask_mode(tmp_path, umask):
    expected = 0o666 & ~umask
    for what, path, write in _writers(tmp_path):
        write(path)
        assert _mode(path) == expected, f"{what}: {oct(_mode(path))} != {oct(expected)} under umask {oct(umask)}"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(path.name for _, path, _ in _writers(tmp_path))


def test_rewriting_a_file_gives_it_the_umask_mode(tmp_path, umask):
    """A rewrite replaces the file (atomic rename): a file left 0600 gets the umask mode."""
    for what, path, write in _writers(tmp_path):
        path.write_bytes(b"old")
        os.chmod(path, 0o600 if umask != 0o077 else 0o644)
        write(path)
        assert _mode(path) == 0o666 & ~umask, what
        assert path.read_bytes() != b"old", what


def test_umask_is_unchanged_by_writing(tmp_path, umask):
    atomic_write(tmp_path / "a.txt", "x")
    current = os.umask(umask)
    os.umask(current)
    assert current == umask
