"""ProximalGroupLasso's step state as properties over the graph variables of its
:class:`~tfmot_mtl.sparsity._graph_step.ProxStep` (a mixin of the callback; it reads only the
callback's own ``_step_graph``, ``_gain0``, ``_zero_host`` and ``num_channels``)."""
from __future__ import annotations

import numpy as np


class GraphState:
    """ProximalGroupLasso's step state (gain, locked and zero patterns, last step) as
    properties over the graph variables of its :class:`ProxStep` (plain values before one exists)."""

    def _var(self, name: str):
        return getattr(self._step_graph, name) if self._step_graph is not None else None

    @property
    def gain(self) -> float:
        """The current multiplier of lambda (grows while below ``target``)."""
        var = self._var("gain")
        return self._gain0 if var is None else float(var.numpy())

    @gain.setter
    def gain(self, value: float) -> None:
        self._gain0 = float(value)
        if self._step_graph is not None:
            self._step_graph.gain.assign(float(value))

    @property
    def locked(self) -> np.ndarray | None:
        """The locked zero pattern once ``target`` was reached, else None."""
        if self._step_graph is None or not bool(self._step_graph.locked_flag.numpy()):
            return None
        return np.asarray(self._step_graph.locked.numpy(), bool)

    @locked.setter
    def locked(self, value) -> None:
        if self._step_graph is None:
            return
        self._step_graph.locked_flag.assign(value is not None)
        self._step_graph.locked.assign(np.zeros(self.num_channels, bool) if value is None
                                       else np.asarray(value, bool))

    @property
    def _zero(self) -> np.ndarray | None:
        if self._step_graph is not None and self._zero_host is None:
            return np.asarray(self._step_graph.zero.numpy(), bool)
        return self._zero_host

    @_zero.setter
    def _zero(self, value) -> None:
        if self._step_graph is not None and value is not None:
            self._step_graph.zero.assign(np.asarray(value, bool))
            self._step_graph.sparsity.assign(float(np.mean(value)) if len(value) else 0.0)
            self._zero_host = None
        else:
            self._zero_host = None if value is None else np.asarray(value, bool)

    @property
    def _last_step(self) -> int | None:
        step = None if self._step_graph is None else int(self._step_graph.last_step.numpy())
        return None if step is None or step < 0 else step

    @_last_step.setter
    def _last_step(self, value) -> None:
        if self._step_graph is not None:
            self._step_graph.last_step.assign(-1 if value is None else int(value))

    @property
    def last_step(self) -> int | None:
        """The optimizer step of the last proximal step (or of the start of training)."""
        return self._last_step
