"""Atomic writes: a crash inside any write (a file, a .keras model, a figure, a backup pair)
leaves the previous file whole; backups stay consistent at batch level and on NaN stops."""
from __future__ import annotations

import json
import os
import warnings

import keras
import numpy as np
import pytest

from tfmot_mtl.training import resume
from tfmot_mtl.utils.atomic import atomic_savefig, atomic_write

from resume_problems import EPOCHS, _Crash, _trunk_model, problem


# ------------------------------------------------------------------ atomic writes
def _torn_writer(payload: bytes):
    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(payload[: len(payload) // 2])
        raise _Crash("died while writing")

    return write


def test_atomic_write_crash_leaves_previous_file(tmp_path):
    path = tmp_path / "report.json"
    atomic_write(path, '{"good": true}')
    from tfmot_mtl.utils.atomic import replace_via_temp

    with pytest.raises(_Crash):
        replace_via_temp(path, _torn_writer(b'{"new": "value that never lands"}'))
    assert json.loads(path.read_text()) == {"good": True}
    assert os.listdir(tmp_path) == ["report.json"]  # no temporary left behind


def test_save_model_crash_keeps_previous_keras_file_and_state(tmp_path, monkeypatch):
    model, cb, fit = problem("pruning")
    model.fit(epochs=1, callbacks=[cb], verbose=0, **fit)
    path = resume.save_with_state(model, tmp_path / "m.keras", callbacks=[cb], epoch=1)
    before = (tmp_path / "m.keras").read_bytes()
    model.fit(epochs=2, initial_epoch=1, callbacks=[cb], verbose=0, **fit)
    monkeypatch.setattr(keras.Model, "save", lambda self, p, **kw: _torn_writer(before)(p))
    with pytest.raises(_Crash):
        resume.save_with_state(model, path, callbacks=[cb], epoch=2)
    monkeypatch.undo()
    assert (tmp_path / "m.keras").read_bytes() == before and os.listdir(tmp_path) == ["m.keras"]
    assert resume.load_state(path)["epoch"] == 1
    keras.saving.load_model(path, safe_mode=True)


@pytest.mark.slow  # ~10 s; test_backup_is_kept_when_a_method_stops_on_nan covers the backup
def test_backup_crash_while_writing_keeps_previous_backup(tmp_path, monkeypatch):
    model, cb, fit = problem("budget")
    folder = tmp_path / "b"

    class CrashOnSecondBackup(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                monkeypatch.setattr(resume, "atomic_save_weights",
                                    lambda m, p: resume.replace_via_temp(p, _torn_writer(b"x" * 100)))

    with pytest.raises(_Crash):
        model.fit(epochs=3, verbose=0, callbacks=[resume.BackupAndRestore(str(folder), callbacks=[cb]),
                                                  cb, CrashOnSecondBackup()], **fit)
    monkeypatch.undo()
    assert sorted(os.listdir(folder)) == ["backup.json", "state-000001.json", "weights-000001.weights.h5"]
    assert resume.load_state(folder)["epoch"] == 1
    model, cb, fit = problem("budget")
    history = model.fit(epochs=3, callbacks=[resume.BackupAndRestore(str(folder), callbacks=[cb]), cb],
                        verbose=0, **fit)
    assert len(history.history["loss"]) == 2 and len(cb.history) == 3


def test_atomic_savefig(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    path = atomic_savefig(fig, tmp_path / "plot.png", dpi=50)
    good = open(path, "rb").read()
    assert good.startswith(b"\x89PNG")
    fig.savefig = lambda p, **kw: _torn_writer(b"\x89PNG" + b"0" * 64)(p)
    with pytest.raises(_Crash):
        atomic_savefig(fig, path)
    plt.close(fig)
    assert open(path, "rb").read() == good and os.listdir(tmp_path) == ["plot.png"]


def test_batch_level_backups_keep_one_consistent_pair(tmp_path):
    """save_freq=3 batches (4 batches per epoch): backups after batch 2 of epoch 0 and after
    batch 1 of epoch 1; each is written at the start of the next batch."""
    model, cb, fit = problem("pruning")
    folder = tmp_path / "b"
    backup = resume.BackupAndRestore(str(folder), callbacks=[cb], save_freq=3, delete_checkpoint=False)
    model.fit(epochs=2, callbacks=[backup, cb], verbose=0, **fit)
    pointer = json.loads((folder / "backup.json").read_text())["current"]
    assert (pointer["seq"], pointer["epoch"], pointer["batch"]) == (2, 1, 1)
    assert sorted(os.listdir(folder)) == ["backup.json", "state-000002.json", "weights-000002.weights.h5"]
    state = resume.load_state(folder)["callbacks"]["ChannelPruningCallback"]
    # written at the start of step 6, before the pruning callback (listed after it) saw step 6
    assert state["last_step"] == 5


def test_backup_callbacks_must_also_be_fit_callbacks(tmp_path):
    model, cb, fit = problem("proximal")
    backup = resume.BackupAndRestore(str(tmp_path / "b"), callbacks=[cb])
    with pytest.raises(ValueError, match=r"states of \['ProximalGroupLasso'\], but they are not callbacks"):
        model.fit(epochs=1, callbacks=[backup], verbose=0, **fit)


def test_backup_is_kept_when_a_method_stops_on_nan(tmp_path):
    model, cb, fit = problem("proximal")
    folder = tmp_path / "b"

    class Poison(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_begin(self, batch, logs=None):
            if self.epoch == 2 and batch == 1:
                kernel = self.model.get_layer("c1").kernel
                kernel.assign(np.full(kernel.shape, np.nan, "float32"))

    with warnings.catch_warnings(record=True) as seen:  # the NaN stop warns too
        warnings.simplefilter("always")
        model.fit(epochs=EPOCHS, callbacks=[resume.BackupAndRestore(str(folder), callbacks=[cb]), cb,
                                            Poison()], verbose=0, **fit)
    assert any("last good backup" in str(w.message) and "is kept" in str(w.message) for w in seen)
    assert cb.nonfinite and resume.load_state(folder)["epoch"] == 2
    model, cb, fit = problem("proximal")
    backup = resume.BackupAndRestore(str(folder), callbacks=[cb])
    model.fit(epochs=3, callbacks=[backup, cb], verbose=0, **fit)  # epoch 2 again, from finite weights
    assert all(np.isfinite(w).all() for w in model.get_weights()) and len(cb.get_state()["zero"]) == 16


def test_save_model_is_the_deprecated_name_of_save_with_state(tmp_path):
    with pytest.warns(DeprecationWarning, match="use save_with_state"):
        path = resume.save_model(_trunk_model(), tmp_path / "m.keras")
    assert resume.load_state(path)["callbacks"] == {}
