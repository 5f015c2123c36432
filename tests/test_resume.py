"""Resume without loss: method states with the weights (BackupAndRestore, .keras), atomic writes.

The kill tests run a deterministic tiny problem per method in a subprocess that dies hard
(``os._exit``, no cleanup) between epochs, resume it in this process from the same backup
folder, and compare with the same problem run uninterrupted here: weights, masks, gains,
multipliers and histories must be EXACTLY equal (same ops on the same values in the same
order; the backup stores float32 weights and optimizer slots bit for bit and the states
as JSON, whose float repr round-trips float64 exactly).
"""
from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import warnings
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfmot_mtl import budget

from tfmot_mtl.training import resume
from tfmot_mtl.utils.atomic import atomic_save_model, atomic_savefig, atomic_write
from tfmot_mtl.pruning import ChannelPruningCallback, IterativeSchedule, Taylor
from tfmot_mtl.sparsity import ProximalGroupLasso

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
L = keras.layers
EPOCHS, KILL_EPOCH = 6, 3


# ------------------------------------------------------------------ tiny problems
def _trunk_model(width: int = 8) -> keras.Model:
    """Shared conv trunk, a dense head 'seg' and a pooled head 'cls' (every layer named)."""
    x = keras.Input((6, 6, 3), name="image")
    h = L.Conv2D(width, 3, padding="same", use_bias=False, name="c1")(x)
    h = L.BatchNormalization(name="bn1")(h)
    h = L.ReLU(name="r1")(h)
    h = L.Conv2D(width, 3, padding="same", activation="relu", name="c2")(h)
    seg = L.Conv2D(2, 1, name="seg")(h)
    p = L.GlobalAveragePooling2D(name="gap")(h)
    cls = L.Dense(3, name="cls")(L.Dense(6, activation="relu", name="hb")(p))
    return keras.Model(x, {"seg": seg, "cls": cls})


def _trunk_data(n: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 6, 6, 3)).astype("float32")
    y = {"seg": rng.random((n, 6, 6, 2)).astype("float32"), "cls": rng.integers(0, 3, n)}
    return x, y


def _compile(model: keras.Model) -> keras.Model:
    model.compile(keras.optimizers.Adam(1e-2),
                  loss={"seg": "mse", "cls": keras.losses.SparseCategoricalCrossentropy(from_logits=True)})
    return model


def _budget_data():
    """Domain a: brightest colour channel (3 classes); b: brightness level (4); 3 batches."""
    rng = np.random.default_rng(0)
    n = 40
    x = rng.random((n, 8, 8, 3)).astype("float32") * 0.5
    dom = (np.arange(n) % 2).astype("int32")
    y = np.where(dom == 0, rng.integers(0, 3, n), rng.integers(0, 4, n)).astype("int32")
    for i in range(n):
        if dom[i] == 0:
            x[i, :, :, y[i]] += 0.5
        else:
            x[i] += 0.12 * y[i]
    ds = tf.data.Dataset.from_tensor_slices(({"image": x, "domain": dom}, {"label": y})).batch(16)
    return budget.domain_targets(ds, ["a", "b"])


def _budget_model() -> keras.Model:
    image = keras.Input((8, 8, 3), name="image")
    x = image
    for i, c in enumerate((6, 8)):
        x = L.Conv2D(c, 3, padding="same", use_bias=False, name=f"c{i}")(x)
        x = L.BatchNormalization(name=f"bn{i}")(x)
        x = L.ReLU(name=f"r{i}")(x)
    backbone = keras.Model({"image": image}, x, name="tiny")
    return budget.add_domain_switches(backbone, [("a", 3), ("b", 4)])


def problem(method: str):
    """(model, method callback, fit kwargs) of a deterministic tiny problem."""
    keras.utils.set_random_seed(0)
    if method == "proximal":
        model = _compile(_trunk_model())
        x, y = _trunk_data(32)
        cb = ProximalGroupLasso(min_channels=0, min_fraction=0.0, groups="shared", l1=0.05, target=0.5, adapt_rate=0.15)  # locks in epoch 3
        return model, cb, dict(x=x, y=y, batch_size=4, shuffle=False)
    if method == "pruning":
        model = _compile(_trunk_model())
        x, y = _trunk_data(16)
        scoring = [_trunk_data(4, seed=s) for s in (1, 2, 3)]  # 3 batches, cycled
        cb = ChannelPruningCallback(Taylor(), IterativeSchedule(target=0.6, frequency=5, step=0.15),
                                    data=scoring, score_batches=2, accumulate_every=3, verbose=0)
        return model, cb, dict(x=x, y=y, batch_size=4, shuffle=False)
    if method == "budget":
        model = _budget_model()
        budget.compile_domain_model(model, keras.optimizers.Adam(0.01))
        cb = budget.BudgetCallback(budget=0.5, sharing="jaccard", multiplier_lr=0.2, frequency=2,
                                   anneal=True)
        return model, cb, dict(x=_budget_data(), shuffle=False)
    raise ValueError(method)


class _Crash(Exception):
    pass


class _Kill(keras.callbacks.Callback):
    """Dies hard (no cleanup, no flush) at the start of epoch `epoch`."""

    def __init__(self, epoch: int):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            os._exit(17)


def run(method: str, backup_dir: str, method_first: bool = False, kill_epoch: int | None = None,
        kill_in_commit: int | None = None):
    """Trains `method`'s problem for EPOCHS epochs with a BackupAndRestore on `backup_dir`.

    kill_epoch: die at the start of that epoch (after its backup was written);
    kill_in_commit: die inside the backup taken after that many epochs, after its weights
    and state files are written but before backup.json names them.
    """
    model, cb, fit = problem(method)
    backup = resume.BackupAndRestore(backup_dir, callbacks=[cb])
    if kill_in_commit is not None:
        commit = backup._commit

        def dying_commit(pointer):
            if pointer["current"]["epoch"] == kill_in_commit:
                os._exit(17)
            commit(pointer)

        backup._commit = dying_commit
    callbacks = [cb, backup] if method_first else [backup, cb]
    if kill_epoch is not None:
        callbacks.append(_Kill(kill_epoch))
    model.fit(epochs=EPOCHS, callbacks=callbacks, verbose=0, **fit)
    return model, cb


def killed_run(method: str, backup_dir: str, **kill) -> None:
    """`run` in a fresh Python process that must die with exit code 17."""
    args = ", ".join(f"{k}={v!r}" for k, v in kill.items())
    code = (f"import sys; sys.path.insert(0, {HERE!r}); import test_resume as t; "
            f"t.run({method!r}, {backup_dir!r}, {args}); sys.exit(3)")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="tensorflow")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=300)
    assert proc.returncode == 17, proc.stderr[-3000:]


def summary(model: keras.Model, cb) -> dict:
    """Everything that must match: weights, optimizer slots and the method's state."""
    state = json.loads(json.dumps(cb.get_state()))
    out = {"weights": [np.asarray(w) for w in model.get_weights()],
           "optimizer": [np.asarray(v) for v in model.optimizer.variables], "state": state}
    if isinstance(cb, ChannelPruningCallback):
        out["sparsity"] = cb.sparsity()
    elif isinstance(cb, ProximalGroupLasso):
        out["sparsity"] = cb.sparsity()
        out["zero"] = {k: v.tolist() for k, v in cb.zero_channels().items()}
    else:
        out["usage"] = cb.usage().tolist()
        out["masks"] = {d: {g: m.tolist() for g, m in ms.items()}
                        for d, ms in budget.domain_masks(model).items()}
    return out


@functools.lru_cache(maxsize=None)
def uninterrupted(method: str) -> dict:
    """`summary` of `method`'s problem trained EPOCHS epochs in one go (computed once)."""
    model, cb, fit = problem(method)
    model.fit(epochs=EPOCHS, callbacks=[cb], verbose=0, **fit)
    return summary(model, cb)


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if key in ("weights", "optimizer"):
            assert len(a[key]) == len(b[key])
            for i, (u, v) in enumerate(zip(a[key], b[key])):
                assert np.array_equal(u, v), f"{key}[{i}] differs by {np.abs(u - v).max()}"
        else:
            assert a[key] == b[key], key


# --------------------------------------------------------------------- kill tests
# A killed process per method: proximal by default; pruning and budget in the slow run (the
# checkpoint tests below resume all three in-process by default).
@pytest.mark.parametrize("method", ["proximal", pytest.param("pruning", marks=pytest.mark.slow),
                                    pytest.param("budget", marks=pytest.mark.slow)])
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


@pytest.mark.parametrize("method", ["proximal", "pruning", "budget"])
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
