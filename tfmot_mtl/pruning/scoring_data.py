"""The scoring batches of a gradient criterion: drawn from the user's ``data`` in a cycle, with
the position in the current pass counted so that a resumed run draws what the uninterrupted
run would have drawn."""
from __future__ import annotations

from typing import Any

from tfmot_mtl.pruning.importance import CountedIterator, iterate_batches


class ScoringBatches:
    """Cycles over ``data`` (a dataset / iterable of ``(x, y)`` batches, or one ``(x, y)`` tuple
    that is returned every time) and counts the batches drawn in the current pass."""

    def __init__(self, data: Any):
        self.data = data
        self._iter: CountedIterator | None = None

    @property
    def position(self) -> int:
        """Batches drawn in the current pass over ``data``."""
        return int(getattr(self._iter, "count", 0))

    def next(self) -> tuple:
        """The next ``(x, y)`` batch; a new pass starts when the current one is exhausted."""
        if self.data is None:
            raise ValueError("this criterion needs scoring batches: pass data= to the callback")
        if isinstance(self.data, tuple):
            return next(iterate_batches(self.data))
        for _ in range(2):
            if self._iter is None:
                self._iter = CountedIterator(iterate_batches(self.data))
            try:
                return next(self._iter)
            except StopIteration:
                self._iter = None
        raise ValueError("scoring data= yielded no batches")

    def restart_at(self, position: int) -> None:
        """Starts a new pass over ``data`` moved past the ``position`` batches drawn before a resume."""
        self._iter = None
        if not position or self.data is None or isinstance(self.data, tuple):
            return
        self._iter = CountedIterator(iterate_batches(self.data))
        try:
            for _ in range(position):
                next(self._iter)
        except StopIteration:
            raise ValueError(f"ChannelPruningCallback state: the scoring data= yields fewer than the "
                             f"{position} batches already drawn from it; pass the same data=") from None
