"""The records of a :class:`~tfmot_mtl.graph.ChannelGraph`: channel groups, the weight slices
each group owns, the weight axes the layer rules declare, and the fold sites of masked constants.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Slice:
    """The positions along one axis of one weight that belong to a group.

    ``channels[i]`` is the group channel that owns ``positions[i]``. Role ``"out"``:
    the slice belongs to the channel (zeroed when masked if ``zeroed``); role ``"in"``:
    a consumer's input rows (removed with the channel, never zeroed). ``per_position``: the
    number of weight elements at one position of ``axis`` (the product of the other dims).
    """

    layer: str
    weight: int
    weight_name: str
    axis: int
    role: str
    zeroed: bool
    defines_zero: bool
    positions: np.ndarray
    channels: np.ndarray
    per_position: int = 1


@dataclass
class ChannelGroup:
    """A set of coupled channels; one mask entry removes one channel of the group everywhere."""

    id: str
    size: int
    producers: tuple[str, ...]
    slices: list[Slice]
    tasks: frozenset
    prunable: bool
    reasons: tuple[str, ...] = ()

    @property
    def shared(self) -> bool:
        """True when the group feeds more than one model output (task)."""
        return len(self.tasks) > 1

    @property
    def reason(self) -> str | None:
        return "; ".join(self.reasons) if self.reasons else None

    @property
    def layers(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(s.layer for s in self.slices))

    def params_per_channel(self, roles: tuple[str, ...] = ("out", "in")) -> np.ndarray:
        """Number of weights each channel owns in the slices of the given roles."""
        return self._per_channel(lambda s: s.role in roles)

    def _per_channel(self, keep) -> np.ndarray:
        counts = np.zeros(self.size, np.int64)
        for s in self.slices:
            if keep(s):
                counts += np.bincount(s.channels, minlength=self.size) * s.per_position
        return counts


@dataclass
class Axis:
    """One weight axis of a layer whose positions are channel atoms (what a rule declares)."""

    layer: str
    weight: int
    axis: int
    role: str
    atoms: np.ndarray
    zeroed: bool = True
    defines_zero: bool = True


@dataclass
class FoldSite:
    """A consumer input whose masked channels carry a constant that must be folded."""

    layer: str
    tensor: str
    atoms: np.ndarray
    positions: np.ndarray
