"""The tiny deterministic problems of the resume tests (one per method), run with a
BackupAndRestore, killed hard in a subprocess, and compared bit for bit with an uninterrupted run."""
from __future__ import annotations

import functools
import json
import os
import subprocess
import sys

import keras
import numpy as np
import tensorflow as tf

from tfmot_mtl import budget
from tfmot_mtl.training import resume
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
    code = (f"import sys; sys.path.insert(0, {HERE!r}); import resume_problems as t; "
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
