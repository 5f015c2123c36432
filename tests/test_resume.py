"""Resume without loss: method states with the weights (BackupAndRestore, .keras).

The kill tests run a deterministic tiny problem per method in a subprocess that dies hard
(``os._exit``, no cleanup) between epochs, resume it in this process from the same backup
folder, and compare with the same problem run uninterrupted here: weights, masks, gains,
multipliers and histories must be EXACTLY equal (same ops on the same values in the same
order; the backup stores float32 weights and optimizer slots bit for bit and the states
as JSON, whose float repr round-trips float64 exactly).

The problems and the kill harness are in ``resume_problems.py``; atomic writes and backup
crashes in ``test_atomic_writes.py``.
"""
from __future__ import annotations

import json
import os
import zipfile

import keras
import numpy as np
import pytest

from tfmot_mtl.training import resume
from tfmot_mtl.utils.atomic import atomic_save_model
from tfmot_mtl.pruning import ChannelPruningCallback, IterativeSchedule, Taylor

from resume_problems import (EPOCHS, KILL_EPOCH, _compile, _Crash, _trunk_model, assert_same, killed_run, problem,
                             run, summary, uninterrupted)


# --------------------------------------------------------------------- kill tests
# A killed process per method, in the slow run (~25 s each; the checkpoint tests below resume all
# three in-process by default).
@pytest.mark.slow
@pytest.mark.parametrize("method", ["proximal", "pruning", "budget"])
def test_killed_between_epochs_resumes_to_the_uninterrupted_result(method, tmp_path):
    backup_dir = str(tmp_path / "backup")
    killed_run(method, backup_dir, kill_epoch=KILL_EPOCH)
    pointer = json.loads((tmp_path / "backup" / "backup.json").read_text())
    assert pointer["current"]["epoch"] == KILL_EPOCH  # the kill came after epoch 3's backup
    # resumed in this (another) process, with the callbacks in the other order
    resumed = summary(*run(method, backup_dir, method_first=True))
    assert not os.path.exists(backup_dir)  # finished: Keras deletes the backup
    assert_same(resumed, uninterrupted(method))
    state = resumed["state"]
    if method == "proximal":  # the gain grew and the zero pattern locked after the kill
        assert state["gain"] > 1.5 and state["locked"] is not None
        assert 0.5 <= resumed["sparsity"] < 1
    elif method == "pruning":  # pruning events on both sides of the kill (steps 0..20)
        assert [h["step"] for h in state["history"]] == [0, 5, 10, 15, 20]
        assert resumed["sparsity"] == pytest.approx(0.6, abs=0.05)
    else:
        assert len(state["history"]) == EPOCHS and max(state["lambdas"]) > 0
        assert state["step"] == 3 * EPOCHS  # batches counted across the kill


@pytest.mark.slow  # ~12 s
def test_crash_inside_a_backup_keeps_the_previous_pair(tmp_path, monkeypatch):
    """A crash after backup 3's files are written but before backup.json names them: the
    resumed run starts from backup 2 (whose weights and state match) and ends the same."""
    backup_dir = str(tmp_path / "backup")

    def crash(self, pointer):
        if pointer["current"]["epoch"] == KILL_EPOCH:
            raise _Crash("killed while committing the backup")
        resume.atomic_write(os.path.join(self.backup_dir, resume.POINTER), json.dumps(pointer))

    monkeypatch.setattr(resume.BackupAndRestore, "_commit", crash)
    with pytest.raises(_Crash):
        run("proximal", backup_dir)
    monkeypatch.undo()
    names = sorted(os.listdir(backup_dir))
    assert "weights-000003.weights.h5" in names and "state-000003.json" in names  # written, not committed
    pointer = json.loads((tmp_path / "backup" / "backup.json").read_text())
    assert pointer["current"]["epoch"] == KILL_EPOCH - 1 and pointer["current"]["seq"] == 2
    assert resume.load_state(backup_dir)["epoch"] == KILL_EPOCH - 1
    assert_same(summary(*run("proximal", backup_dir)), uninterrupted("proximal"))


# ------------------------------------------------------------------- .keras files
class _CrashAt(keras.callbacks.Callback):
    def __init__(self, epoch: int):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise _Crash(f"interrupted at epoch {epoch}")


@pytest.mark.parametrize("method", ["proximal", pytest.param("pruning", marks=pytest.mark.slow),
                                    pytest.param("budget", marks=pytest.mark.slow)])
def test_checkpoint_keras_file_continues_like_the_uninterrupted_run(method, tmp_path):
    """ModelCheckpoint .keras files embed the states; load + restore continues exactly."""
    model, cb, fit = problem(method)
    checkpoint = resume.ModelCheckpoint(str(tmp_path / "ckpt-{epoch}.keras"), callbacks=[cb])
    with pytest.raises(_Crash):
        model.fit(epochs=EPOCHS, callbacks=[cb, checkpoint, _CrashAt(KILL_EPOCH)], verbose=0, **fit)
    path = tmp_path / f"ckpt-{KILL_EPOCH}.keras"  # written after epoch index KILL_EPOCH - 1
    assert resume.STATE_MEMBER in zipfile.ZipFile(path).namelist()
    saved = resume.load_state(path)
    assert saved["epoch"] == KILL_EPOCH

    loaded = keras.saving.load_model(path, safe_mode=True)  # the extra member is ignored
    _, fresh, _ = problem(method)
    initial_epoch = resume.restore([fresh], saved)
    assert initial_epoch == KILL_EPOCH
    loaded.fit(epochs=EPOCHS, initial_epoch=initial_epoch, callbacks=[fresh], verbose=0, **fit)
    assert_same(summary(loaded, fresh), uninterrupted(method))


def test_save_model_embeds_the_state(tmp_path):
    model, cb, fit = problem("pruning")
    model.fit(epochs=2, callbacks=[cb], verbose=0, **fit)
    path = resume.save_with_state(model, tmp_path / "m.keras", callbacks=[cb], epoch=2)
    state = resume.load_state(path)
    assert state["epoch"] == 2
    assert state["callbacks"]["ChannelPruningCallback"] == json.loads(json.dumps(cb.get_state()))
    loaded = keras.saving.load_model(path, safe_mode=True)
    x = fit["x"][:2]
    for task, out in model.predict(x, verbose=0).items():
        assert np.array_equal(out, loaded.predict(x, verbose=0)[task])
    with pytest.raises(ValueError, match="save_weights_only"):
        resume.ModelCheckpoint(str(tmp_path / "w.weights.h5"), callbacks=[cb], save_weights_only=True)


def test_set_state_applies_now_when_set_up_and_after_on_train_begin_otherwise():
    model, cb, fit = problem("pruning")
    model.fit(epochs=2, callbacks=[cb], verbose=0, **fit)
    state = cb.get_state()
    assert state["masks"]["masks"] and json.loads(json.dumps(state)) == state  # plain JSON
    # steps 0-7: accumulate at 0, 3, 6 and prune (2 batches) at 0, 5: 7 draws from 3 batches,
    # so the next draw is the 2nd batch; Taylor holds step 6's batch since the last prune
    assert state["data_position"] == 1 and state["importance"]["batches"] == 1

    other, pending, _ = problem("pruning")
    pending.set_state(state)  # not set up: kept for on_train_begin
    assert pending.masks is None
    pending.set_model(other)
    pending.on_train_begin()
    assert pending.get_state() == state
    kept = [int(m.sum()) for m in pending.masks.values()]
    assert sum(kept) < sum(g.size for g in pending.selected)
    dead = [gid for gid, m in pending.masks.items() if not m.all()][0]
    assert not np.any(other.get_layer(pending.graph.groups[dead].producers[0]).kernel.numpy()
                      [..., ~pending.masks[dead]])  # the removed channels were zeroed

    cb.set_state(pending.get_state() | {"history": []})  # set up: applied at once
    assert cb.history == []


def test_budget_and_proximal_states_round_trip():
    for method in ("budget", "proximal"):
        model, cb, fit = problem(method)
        model.fit(epochs=2, callbacks=[cb], verbose=0, **fit)
        state = cb.get_state()
        assert json.loads(json.dumps(state)) == state
        _, again, _ = problem(method)
        again.set_model(model)
        again.set_state(state)
        again.on_train_begin()  # resets counters, then applies the pending state
        assert again.get_state() == state


# -------------------------------------------------------------------- bad states
def _trained(method, model=None):
    m, cb, fit = problem(method)
    model = model or m
    if method != "budget":
        _compile(model)
    cb.set_model(model)
    cb.on_train_begin()
    return model, cb


def test_state_of_another_model_is_refused_with_a_clear_message():
    _, prox = _trained("proximal")
    _, narrow = _trained("proximal", _compile(_trunk_model(width=6)))
    with pytest.raises(ValueError, match="ProximalGroupLasso state was saved for the channel groups"):
        narrow.set_state(prox.get_state())

    _, prune = _trained("pruning")
    _, other = _trained("pruning", _compile(_trunk_model(width=6)))
    with pytest.raises(ValueError, match="ChannelPruningCallback state was saved for the channel groups"):
        other.set_state(prune.get_state())
    wrong = prune.get_state()
    wrong["masks"]["masks"] = {gid: bits[:-1] for gid, bits in wrong["masks"]["masks"].items()}
    with pytest.raises(ValueError, match="does not fit this model.*entries"):
        prune.set_state(wrong)

    _, bud = _trained("budget")
    state = bud.get_state()
    state["switches"][0][2] += 1
    with pytest.raises(ValueError, match="BudgetCallback state was saved for the switches"):
        bud.set_state(state)
    with pytest.raises(ValueError, match="belongs to a BudgetCallback, not to a ProximalGroupLasso"):
        prox.set_state(bud.get_state())
    with pytest.raises(ValueError, match="needs a dict"):
        prox.set_state([1, 2])


def test_restore_and_load_state_errors(tmp_path):
    _, prox = _trained("proximal")
    _, prune = _trained("pruning")
    state = resume.collect_states([prox])
    with pytest.raises(ValueError, match="no entry for ChannelPruningCallback"):
        resume.restore([prune], state)
    with pytest.raises(ValueError, match="no get_state/set_state"):
        resume.collect_states([keras.callbacks.History()])
    with pytest.raises(ValueError, match="not a tfmot_mtl training state"):
        resume.restore([prox], {"callbacks": {}})
    (tmp_path / "x.keras").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="neither a .keras file nor a training state"):
        resume.load_state(tmp_path / "x.keras")
    plain = atomic_save_model(_trunk_model(), tmp_path / "plain.keras")
    with pytest.raises(ValueError, match="has no tfmot_mtl training state"):
        resume.load_state(plain)
    with pytest.raises(ValueError, match="must end in '.keras'"):
        resume.save_with_state(_trunk_model(), tmp_path / "m.h5")


def test_backup_with_another_selection_fails_clearly(tmp_path):
    model, cb, fit = problem("pruning")
    backup = resume.BackupAndRestore(str(tmp_path / "b"), callbacks=[cb], delete_checkpoint=False)
    model.fit(epochs=1, callbacks=[cb, backup], verbose=0, **fit)
    assert os.path.exists(tmp_path / "b" / "backup.json")  # kept: delete_checkpoint=False
    model, _, fit = problem("pruning")
    shared_only = ChannelPruningCallback(Taylor(), IterativeSchedule(target=0.6, frequency=5, step=0.15),
                                         groups="shared", data=cb.data, verbose=0)
    again = resume.BackupAndRestore(str(tmp_path / "b"), callbacks=[shared_only])
    with pytest.raises(ValueError, match="saved for the channel groups .* Restore it into the same model"):
        model.fit(epochs=2, callbacks=[again, shared_only], verbose=0, **fit)


def test_double_checkpoint_falls_back_when_the_latest_weights_are_corrupt(tmp_path):
    model, cb, fit = problem("budget")
    folder = tmp_path / "b"
    backup = resume.BackupAndRestore(str(folder), callbacks=[cb], double_checkpoint=True,
                                     delete_checkpoint=False)
    model.fit(epochs=3, callbacks=[backup, cb], verbose=0, **fit)
    pointer = json.loads((folder / "backup.json").read_text())
    assert (pointer["current"]["epoch"], pointer["previous"]["epoch"]) == (3, 2)
    assert len(list(folder.glob("weights-*"))) == 2  # older pairs deleted
    (folder / pointer["current"]["weights"]).write_bytes(b"torn")
    model, cb, fit = problem("budget")
    with pytest.warns(UserWarning, match="unreadable.*restoring the previous one"):
        history = model.fit(epochs=4, callbacks=[resume.BackupAndRestore(str(folder), callbacks=[cb]), cb],
                            verbose=0, **fit)
    assert len(history.history["loss"]) == 2  # epochs 2 and 3 ran again
    assert len(cb.history) == 4 and [h["epoch"] for h in cb.history] == [0, 1, 2, 3]
