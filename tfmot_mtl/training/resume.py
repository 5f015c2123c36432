"""Resume training without loss: the method states travel with the weights.

The method callbacks (``ProximalGroupLasso``, ``ChannelPruningCallback``, ``BudgetCallback``)
hold training state that is not in the model's weights: masks, pruning history, the
proximal gain and locked zero pattern, budget multipliers, step counters. Each has
``get_state() -> dict`` (JSON) and ``set_state(state)``. This module saves those states
together with the weights, atomically, and restores them:

* :class:`BackupAndRestore` -- Keras's ``BackupAndRestore`` that backs up the states with
  every weight backup and restores both on the resumed ``fit``;
* :func:`save_with_state` / :func:`load_state` / :func:`restore` -- a ``.keras`` file with the
  states embedded, and continuing from it.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import warnings
import zipfile
from typing import Any, Iterable, Sequence

import keras

from tfmot_mtl.utils import _keras_compat
from tfmot_mtl.utils.jsonable import jsonable
from tfmot_mtl.utils.atomic import atomic_save_weights, atomic_write, replace_via_temp

FORMAT = "tfmot_mtl.training_state"
STATE_MEMBER = "tfmot_mtl_state.json"  # extra member of a .keras zip; Keras ignores it
BACKUP_FORMAT = "tfmot_mtl.backup"
POINTER = "backup.json"
_BACKUP_FILE = re.compile(r"^\.?(weights-\d+\.weights\.h5|state-\d+\.json|backup\.json)(\..*)?$")

__all__ = ["BackupAndRestore", "ModelCheckpoint", "save_with_state", "save_model", "load_state", "restore", "collect_states",
           "check_state", "jsonable"]


# --------------------------------------------------------------------- protocol helpers
def check_state(state: Any, kind: str, version: int = 1) -> dict:
    """Checks that `state` is a ``get_state()`` dict of a `kind` callback; returns it."""
    if not isinstance(state, dict) or "kind" not in state:
        raise ValueError(f"{kind}.set_state needs a dict from {kind}.get_state(), got "
                         f"{type(state).__name__}")
    if state["kind"] != kind:
        raise ValueError(f"this state belongs to a {state['kind']}, not to a {kind}")
    if state.get("version") != version:
        raise ValueError(f"{kind} state version {state.get('version')!r} is not supported "
                         f"(expected {version}); it was written by another tfmot_mtl version")
    return state


def check_groups(kind: str, saved: list | None, current: list, selection: str) -> None:
    """Raises unless a state's ``[[group id, size], ...]`` equals the callback's own."""
    if saved is None or saved == current:
        return

    def describe(groups):
        ids = [g for g, _ in groups]
        return (f"{ids[:6]}{' ...' if len(ids) > 6 else ''} ({len(ids)} groups, "
                f"{sum(n for _, n in groups)} channels)")

    raise ValueError(f"{kind} state was saved for the channel groups {describe(saved)}; this model and "
                     f"{selection} select {describe(current)}. Restore it into the same model with the "
                     "same selection.")


def _checked_callbacks(callbacks: Iterable) -> list:
    callbacks = list(callbacks)
    for i, cb in enumerate(callbacks):
        if not (callable(getattr(cb, "get_state", None)) and callable(getattr(cb, "set_state", None))):
            raise ValueError(f"callbacks[{i}] ({type(cb).__name__}) has no get_state/set_state; pass "
                             "the tfmot_mtl method callbacks (ProximalGroupLasso, "
                             "ChannelPruningCallback, BudgetCallback)")
    return callbacks


def _keys(callbacks: Sequence) -> list[str]:
    """One key per callback: its class name, numbered from the second of a kind on."""
    seen: dict[str, int] = {}
    out = []
    for cb in callbacks:
        name = type(cb).__name__
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return out


def collect_states(callbacks: Iterable, epoch: int | None = None) -> dict:
    """The states of `callbacks` as one JSON-serialisable dict (what the files hold)."""
    callbacks = _checked_callbacks(callbacks)
    states = {key: jsonable(cb.get_state()) for key, cb in zip(_keys(callbacks), callbacks)}
    return {"format": FORMAT, "version": 1, "epoch": None if epoch is None else int(epoch),
            "callbacks": states}


def restore(callbacks: Iterable, state: dict) -> int:
    """Hands each callback its saved state (``set_state``); returns the epoch to resume at.

    Callbacks are matched to the saved states by class (the second of a kind to the second
    saved, ...). The return value is the ``initial_epoch`` for ``fit`` (0 if unknown).
    """
    callbacks = _checked_callbacks(callbacks)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"not a tfmot_mtl training state: expected a dict with \"format\": "
                         f"\"{FORMAT}\" (from load_state or collect_states)")
    saved = state.get("callbacks") or {}
    for key, cb in zip(_keys(callbacks), callbacks):
        if key not in saved:
            raise ValueError(f"the saved state has no entry for {key}; it holds "
                             f"{sorted(saved) or 'no callback states'}. Pass the same kinds of "
                             "callbacks, in the same order, as when it was saved.")
        cb.set_state(saved[key])
    return int(state.get("epoch") or 0)


# -------------------------------------------------------------------------- .keras files
def save_with_state(model: keras.Model, path: str | os.PathLike, callbacks: Iterable = (),
                    epoch: int | None = None) -> str:
    """Saves `model` to a ``.keras`` file atomically, with the callbacks' states embedded.

    The states are an extra JSON member of the ``.keras`` zip: ``keras.saving.load_model``
    (also with ``safe_mode=True``) loads the file as usual, :func:`load_state` reads them.
    `epoch` (the number of epochs done) is stored for :func:`restore`.
    """
    path = os.fspath(path)
    if not path.endswith(".keras"):
        raise ValueError(f"save_with_state writes a .keras file; the path must end in '.keras', got {path!r}")
    payload = json.dumps(collect_states(callbacks, epoch))

    def write(tmp: str) -> None:
        model.save(tmp)
        with zipfile.ZipFile(tmp, "a") as zf:
            zf.writestr(STATE_MEMBER, payload)

    return replace_via_temp(path, write, suffix=".keras")


def save_model(model: keras.Model, path: str | os.PathLike, callbacks: Iterable = (),
               epoch: int | None = None) -> str:
    """Deprecated name of :func:`save_with_state` (``recipes.experiment.save_model`` saves a model
    without states)."""
    warnings.warn("tfmot_mtl.training.resume.save_model is deprecated: use save_with_state", DeprecationWarning,
                  stacklevel=2)
    return save_with_state(model, path, callbacks, epoch)


def load_state(path: str | os.PathLike) -> dict:
    """The training state saved in a ``.keras`` file (:func:`save_with_state`), a state JSON
    file, or a :class:`BackupAndRestore` folder (its latest backup)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ValueError(f"load_state: {path!r} does not exist")
    if os.path.isdir(path):
        pointer = _read_pointer(path)
        if pointer is None:
            raise ValueError(f"load_state: {path!r} holds no tfmot_mtl backup ({POINTER} is missing)")
        return _read_json(os.path.join(path, pointer["current"]["state"]))
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            if STATE_MEMBER not in zf.namelist():
                raise ValueError(f"load_state: {path!r} has no tfmot_mtl training state; save it with "
                                 "tfmot_mtl.training.resume.save_with_state(model, path, callbacks=[...])")
            text = zf.read(STATE_MEMBER).decode()
        return _parse_state(text, path)
    with open(path, encoding="utf-8") as f:
        return _parse_state(f.read(), path)


def _parse_state(text: str, path: str) -> dict:
    try:
        state = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ValueError(f"load_state: {path!r} is neither a .keras file nor a training state "
                         "JSON file") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"load_state: {path!r} is not a tfmot_mtl training state (no \"format\": "
                         f"\"{FORMAT}\")")
    return state


def _read_json(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.loads(f.read())


def _read_pointer(folder: str) -> dict | None:
    path = os.path.join(folder, POINTER)
    if not os.path.exists(path):
        return None
    pointer = _read_json(path)
    if pointer.get("format") != BACKUP_FORMAT:
        raise ValueError(f"{path} is not a tfmot_mtl backup pointer")
    return pointer


# ------------------------------------------------------------------------- backups
class BackupAndRestore(keras.callbacks.BackupAndRestore):
    """Keras ``BackupAndRestore`` that also backs up and restores the method states.

    Every backup writes ``weights-N.weights.h5`` (weights and optimizer state, so the
    schedule position ``optimizer.iterations`` too) and ``state-N.json`` (the states of
    `callbacks` and the epoch), each atomically, and only then ``backup.json`` naming the
    pair; older pairs are deleted after that. A kill at any moment leaves ``backup.json``
    naming a complete, matching pair. On the next ``fit`` with the same folder the weights,
    the epoch to start at and the callback states are restored (order in the ``fit``
    callback list does not matter).

    A backup is taken once every callback has finished the epoch (or batch, for an integer
    ``save_freq``): at the start of the next one, so it includes what other callbacks did
    at the epoch end (e.g. ``BudgetCallback(anneal=True)``'s projection). With
    ``save_freq="epoch"`` a resumed run repeats exactly what the uninterrupted run does
    (given the same data order). With an integer ``save_freq``, Keras restarts the
    interrupted epoch from its first batch, with the mid-epoch weights.

    Args:
        backup_dir: folder for the backups, used by nothing else.
        callbacks: the tfmot_mtl method callbacks of the ``fit`` (also pass them to ``fit``).
        save_freq, double_checkpoint, delete_checkpoint: as in Keras. ``double_checkpoint``
            keeps the previous pair as well and falls back to it if the latest cannot be read.
    """

    def __init__(self, backup_dir: str, callbacks: Iterable = (), save_freq: str | int = "epoch",
                 double_checkpoint: bool = False, delete_checkpoint: bool = True):
        super().__init__(backup_dir, save_freq=save_freq, double_checkpoint=double_checkpoint,
                         delete_checkpoint=delete_checkpoint)
        self.method_callbacks = _checked_callbacks(callbacks)
        self._pointer: dict | None = None
        self._due = False

    # ------------------------------------------------------------------ restore
    def on_train_begin(self, logs=None):
        if not self.model.built:
            raise ValueError("To use BackupAndRestore the model must be built before fit(): call it "
                             "on a batch of data first.")
        missing = [type(cb).__name__ for cb in self.method_callbacks if cb.model is not self.model]
        if missing:
            raise ValueError(f"BackupAndRestore saves the states of {missing}, but they are not "
                             "callbacks of this fit: pass them to fit(callbacks=[...]) as well")
        self._due = False
        self._pointer = _read_pointer(self.backup_dir) if os.path.isdir(self.backup_dir) else None
        if self._pointer is None:
            return
        entries = [self._pointer["current"], self._pointer.get("previous")]
        entries = [e for e in entries if e]
        for i, entry in enumerate(entries):
            try:
                self._restore(entry)
                if i:  # the latest was unreadable: the next backup replaces it
                    self._pointer = dict(self._pointer, current=entry, previous=None)
                return
            except (OSError, json.JSONDecodeError) as err:
                if i + 1 == len(entries):
                    raise
                warnings.warn(f"BackupAndRestore: backup {entry['seq']} unreadable ({err}); "
                              "restoring the previous one", stacklevel=2)

    def _restore(self, entry: dict) -> None:
        optimizer = self.model.optimizer
        if optimizer is not None and not optimizer.built:
            optimizer.build(self.model.trainable_variables)  # its variables must exist to load
        self.model.load_weights(os.path.join(self.backup_dir, entry["weights"]))
        state = _read_json(os.path.join(self.backup_dir, entry["state"]))
        restore(self.method_callbacks, state)
        _keras_compat.set_initial_epoch(self.model, int(entry["epoch"]))
        self._current_epoch = int(entry["epoch"])

    # ------------------------------------------------------------------- backup
    def on_epoch_begin(self, epoch, logs=None):
        self._flush()

    def on_train_batch_begin(self, batch, logs=None):
        self._flush()

    def on_epoch_end(self, epoch, logs=None):
        self._current_epoch = epoch + 1
        self._last_batch_seen = 0
        if self.save_freq == "epoch":
            self._due = True

    def on_train_batch_end(self, batch, logs=None):
        if self._should_save_on_batch(batch):
            self._due = True

    def on_train_end(self, logs=None):
        stopped = [type(cb).__name__ for cb in self.method_callbacks if getattr(cb, "nonfinite", None)]
        if stopped and self.delete_checkpoint:
            warnings.warn(f"BackupAndRestore: {stopped} stopped training on NaN/Inf values; the "
                          f"last good backup in {self.backup_dir} is kept", stacklevel=2)
            return
        if self.delete_checkpoint:
            self._due = False
            if os.path.exists(self.backup_dir):
                shutil.rmtree(self.backup_dir)
        else:
            self._flush()

    def _flush(self) -> None:
        if self._due:
            self._due = False
            self._save_model()

    def _save_model(self) -> None:
        """Writes weights and states of backup N+1, then commits it in ``backup.json``."""
        seq = (self._pointer["seq"] if self._pointer else 0) + 1
        entry = {"seq": seq, "epoch": int(self._current_epoch), "batch": int(self._last_batch_seen),
                 "weights": f"weights-{seq:06d}.weights.h5", "state": f"state-{seq:06d}.json"}
        os.makedirs(self.backup_dir, exist_ok=True)
        states = collect_states(self.method_callbacks, epoch=entry["epoch"])
        atomic_save_weights(self.model, os.path.join(self.backup_dir, entry["weights"]))
        atomic_write(os.path.join(self.backup_dir, entry["state"]), json.dumps(states))
        previous = self._pointer["current"] if (self._pointer and self.double_checkpoint) else None
        pointer = {"format": BACKUP_FORMAT, "version": 1, "seq": seq, "current": entry,
                   "previous": previous}
        self._commit(pointer)
        self._pointer = pointer
        self._remove_stale({entry["weights"], entry["state"]} |
                           ({previous["weights"], previous["state"]} if previous else set()))

    def _commit(self, pointer: dict) -> None:
        atomic_write(os.path.join(self.backup_dir, POINTER), json.dumps(pointer))

    def _remove_stale(self, keep: set[str]) -> None:
        """Deletes older backup files and temporaries left by a killed write."""
        for name in os.listdir(self.backup_dir):
            if name in keep or name == POINTER or not _BACKUP_FILE.match(name):
                continue
            try:
                os.remove(os.path.join(self.backup_dir, name))
            except OSError:
                pass


# ---------------------------------------------------------------------- checkpoints
class ModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """Keras ``ModelCheckpoint`` whose ``.keras`` files embed the method states (atomically).

    Each checkpoint is written by :func:`save_with_state` with the epochs done, so
    ``restore(callbacks, load_state(path))`` returns the ``initial_epoch`` to continue at.
    Keras calls callbacks in list order and this one saves at the end of the epoch: list it
    after the method callbacks, so the checkpoint holds what they did at the epoch end.

    Args:
        filepath: a ``.keras`` path, with Keras's ``{epoch}`` / ``{metric}`` formatting.
        callbacks: the tfmot_mtl method callbacks whose states to embed.
        **kwargs: as in Keras (``monitor``, ``save_best_only``, ``save_freq``, ...), except
            ``save_weights_only``: weight files cannot carry the states (use
            :class:`BackupAndRestore` for weights + states).
    """

    def __init__(self, filepath: str, callbacks: Iterable = (), **kwargs: Any):
        if kwargs.get("save_weights_only"):
            raise ValueError("tfmot_mtl.training.resume.ModelCheckpoint writes .keras files with the method "
                             "states; save_weights_only=True cannot hold them (use BackupAndRestore)")
        if not os.fspath(filepath).endswith(".keras"):
            raise ValueError(f"ModelCheckpoint filepath must end in '.keras', got {filepath!r}")
        super().__init__(filepath, **kwargs)
        self.method_callbacks = _checked_callbacks(callbacks)

    def _save_model(self, epoch, batch, logs):
        filepath = self._get_file_path(epoch, batch, logs)
        if self._should_save_model(epoch, batch, logs, filepath):
            done = epoch + 1 if batch is None else epoch  # mid-epoch: that epoch runs again
            save_with_state(self.model, filepath, self.method_callbacks, epoch=done)
