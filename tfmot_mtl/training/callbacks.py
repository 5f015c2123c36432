"""ResumableCallback: the get_state / set_state protocol shared by the method callbacks.

``ProximalGroupLasso``, ``ChannelPruningCallback`` and ``BudgetCallback`` hold training state
outside the model's weights (see :mod:`tfmot_mtl.training.resume`). Each names its ``state_kind`` and
implements ``_read_state`` / ``_write_state`` on its own attributes, and says when it is ready
to take a state (``_state_ready``: set up for its model). ``set_state`` then applies the
state at once if ready and, in any case, again at the end of the next ``on_train_begin``,
so the order of callbacks in ``fit`` does not matter; a state set during a ``fit`` is
never applied again after it (cleared in ``on_train_end``). ``nonfinite`` (the NaN/Inf
message, :mod:`tfmot_mtl.training.nonfinite`) is reset at the start of every ``fit``.
"""
from __future__ import annotations

from typing import Any

import keras

from tfmot_mtl.training.resume import check_state


class ResumableCallback(keras.callbacks.Callback):
    """Base of the method callbacks: resumable state with a pending copy, reset per ``fit``."""

    state_kind: str = ""  # the "kind" of the state dicts: the class name of the method callback
    state_version: int = 1

    def __init__(self):
        super().__init__()
        self._pending_state: dict | None = None
        self.nonfinite: str | None = None  # the message, once training was stopped on NaN/Inf

    # ------------------------------------------------------------- the protocol
    def get_state(self) -> dict:
        """JSON-serialisable training state (see the subclass for what it holds)."""
        return {"kind": self.state_kind, "version": self.state_version, **self._read_state()}

    def set_state(self, state: dict) -> None:
        """Restores a ``get_state()`` dict: at once if set up for its model, and (again) at the
        end of the next ``on_train_begin``, so the order of callbacks in ``fit`` does not matter."""
        self._pending_state = check_state(state, self.state_kind, self.state_version)
        if self._state_ready():
            self._write_state(state)

    def _apply_pending_state(self) -> None:
        state, self._pending_state = self._pending_state, None
        if state is not None:
            self._write_state(state)

    # ------------------------------------------------------ subclass interface
    def _state_ready(self) -> bool:
        """True when the callback is set up for its model and can take a state now."""
        raise NotImplementedError

    def _read_state(self) -> dict[str, Any]:
        """The state's fields (``kind`` and ``version`` are added by ``get_state``)."""
        raise NotImplementedError

    def _write_state(self, state: dict[str, Any]) -> None:
        """Applies a checked state to the set-up callback; raises ValueError if it does not fit."""
        raise NotImplementedError

    # ------------------------------------------------------------- Keras hooks
    def on_train_begin(self, logs=None):
        """Subclasses set up first, then call this: applies a pending state."""
        self._apply_pending_state()

    def on_train_end(self, logs=None):
        self._pending_state = None  # a state set during this fit is applied; never re-apply it


def check_inner_model(inner: keras.Model | None, outer: keras.Model | None, argument: str) -> None:
    """``inner`` (a callback's ``pruned_model`` / ``sparse_model``) must be trained by the fitted
    model ``outer`` (the student of a distiller, the model inside a TaskWeightedModel), or what the
    callback does to it would have no effect on training."""
    if inner is None or outer is None or inner is outer:
        return
    trained = {id(v) for v in outer.trainable_variables}
    if not any(id(v) in trained for v in inner.trainable_variables):
        raise ValueError(f"{argument} {inner.name!r} is not part of the fitted model {outer.name!r}: "
                         "none of its trainable variables is trained by it (pass the student of the "
                         "distiller, or the model inside the TaskWeightedModel, that is fitted)")
