"""ChannelMasks: which channels of each group to keep, as an immutable, versioned JSON value.

A :class:`ChannelMasks` maps group id -> boolean array (True = keep). It checks itself against
a model's :class:`~tfmot_mtl.graph.ChannelGraph` (:meth:`ChannelMasks.validate`), matches a
clone or a reloaded copy of that model by structure, and saves as JSON. Applying masks to
weights is :mod:`tfmot_mtl.masks.weights`; rounding kept counts is :mod:`tfmot_mtl.masks.rounding`.
"""
from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping
from typing import Any, Iterator

import numpy as np

from tfmot_mtl.utils.atomic import atomic_write
from tfmot_mtl.graph import ChannelGraph, GroupId

FORMAT = "tfmot_mtl.ChannelMasks"


class ChannelMasks(Mapping):
    """Group id -> boolean keep-array. Immutable mapping; validated against a graph.

    Ids taken from a :class:`~tfmot_mtl.graph.ChannelGraph` (``group.id``, the keys of
    ``graph.groups``) are :class:`~tfmot_mtl.graph.GroupId` strings that also record the
    group's place in the graph's structure; the masks keep them (and :meth:`to_json` writes
    them), so :meth:`validate` can match the masks to a ``keras.models.clone_model`` copy or a
    ``.keras`` reload of the model even where its layer names changed (see :meth:`match`).

    Args:
        masks: mapping of group id to a boolean sequence (True = keep the channel).
        min_channels: a mask never keeps fewer channels than this; a mask that would drop
            every channel keeps the first ``min_channels`` (or the best by ``scores`` when
            built through :meth:`from_scores`).
    """

    def __init__(self, masks: Mapping[str, Any] | None = None, min_channels: int = 1):
        if masks is not None and not isinstance(masks, Mapping):
            raise ValueError(f"masks must be a mapping {{group id: boolean array}} (e.g. a dict), "
                             f"got {type(masks).__name__}")
        self.min_channels = _check_min_channels(min_channels)
        self._masks: dict[str, np.ndarray] = {}
        for gid, mask in (masks or {}).items():
            self._masks[_key(gid)] = self._enforce_min(_key(gid), _as_bool(gid, mask))

    def _enforce_min(self, gid: str, mask: np.ndarray, scores: np.ndarray | None = None) -> np.ndarray:
        need = min(self.min_channels, len(mask))
        if mask.sum() >= need:
            return mask
        warnings.warn(f"mask for group '{gid}' keeps {int(mask.sum())} of {len(mask)} channels; "
                      f"keeping {need} (min_channels)", stacklevel=3)
        mask = mask.copy()
        order = np.argsort(-scores, kind="stable") if scores is not None else np.arange(len(mask))
        for i in order:
            if mask.sum() >= need:
                break
            mask[i] = True
        return mask

    @classmethod
    def from_scores(cls, keep: Mapping[str, Any], scores: Mapping[str, np.ndarray],
                    min_channels: int = 1) -> "ChannelMasks":
        """Masks whose emptied groups keep their highest-scoring channels."""
        out = cls({}, min_channels=min_channels)
        for gid, mask in keep.items():
            mask = _as_bool(gid, mask)
            if gid not in scores or np.shape(scores[gid]) != mask.shape:
                got = "none" if gid not in scores else f"shape {np.shape(scores[gid])}"
                raise ValueError(f"from_scores: group '{gid}' has a mask of {len(mask)} channels but "
                                 f"{got} scores; pass one score per channel for every group of `keep`")
            out._masks[gid] = out._enforce_min(gid, mask, np.asarray(scores[gid], dtype=np.float64))
        return out

    @classmethod
    def all_kept(cls, graph: ChannelGraph, min_channels: int = 1) -> "ChannelMasks":
        return cls({g.id: np.ones(g.size, bool) for g in graph.prunable_groups}, min_channels)

    # Mapping protocol
    def __getitem__(self, gid: str) -> np.ndarray:
        return self._masks[gid]

    def __iter__(self) -> Iterator[str]:
        return iter(self._masks)

    def __len__(self) -> int:
        return len(self._masks)

    def __repr__(self) -> str:
        kept = sum(int(m.sum()) for m in self._masks.values())
        total = sum(len(m) for m in self._masks.values())
        return f"ChannelMasks({len(self)} groups, {kept}/{total} channels kept)"

    def replace(self, gid: str, mask: Any) -> "ChannelMasks":
        """A copy with one group's mask replaced."""
        return ChannelMasks({**self._masks, gid: mask}, self.min_channels)

    # ---------------------------------------------------------------- validation
    def match(self, graph: ChannelGraph) -> "ChannelMasks":
        """These masks keyed by `graph`'s group ids.

        A mask whose id comes from a graph with the same structure as `graph` (the same
        :attr:`~tfmot_mtl.graph.ChannelGraph.fingerprint`: the model itself, a
        ``clone_model`` copy, a ``.keras`` reload, in this process or another) goes to the
        group at the same position, whatever the layer names are now; any other mask keeps
        its id (matched by name, as masks written before ids carried structure are). Where
        two masks land on one group, the later one wins, as in a dict merge
        (``{**ChannelMasks.all_kept(graph), **masks}``). Returns self when no id changes.
        Does not check the masks: :meth:`validate` does.
        """
        ids = list(graph.groups)
        out: dict[str, np.ndarray] = {}
        for gid, mask in self._masks.items():
            out[_matched(gid, graph.fingerprint, ids)] = mask
        if len(out) == len(self._masks) and all(a is b for a, b in zip(out, self._masks)):
            return self
        return ChannelMasks(out, self.min_channels)

    def validate(self, graph: ChannelGraph) -> "ChannelMasks":
        """Checks ids, lengths and frozen groups against `graph`; returns the masks keyed by
        `graph`'s ids (:meth:`match`: self when every id is already one of them)."""
        masks = self.match(graph)
        for gid, mask in masks._masks.items():
            if gid not in graph.groups:
                raise ValueError(_unknown_group(gid, graph))
            group = graph.groups[gid]
            if len(mask) != group.size:
                raise ValueError(f"mask for group '{gid}' has {len(mask)} entries; the group has "
                                 f"{group.size} channels")
            if not group.prunable and not mask.all():
                raise ValueError(f"group '{gid}' is frozen ({group.reason}); its mask must keep "
                                 "every channel")
        return masks

    def sparsity(self, graph: ChannelGraph | None = None, groups=None) -> float:
        """Fraction of channels removed, over the given groups (default: all masked groups)."""
        ids = [g.id for g in groups] if groups is not None else list(self._masks)
        sizes = {g.id: g.size for g in graph.groups.values()} if graph else {}
        total = removed = 0
        for gid in ids:
            mask = self._masks.get(gid)
            n = len(mask) if mask is not None else sizes.get(gid, 0)
            total += n
            removed += 0 if mask is None else int((~mask).sum())
        return removed / total if total else 0.0

    # ---------------------------------------------------------------------- JSON
    def to_json(self) -> str:
        """The masks as JSON text (what :meth:`save` writes). Masks keyed by ids of one graph
        also store that graph's fingerprint and each group's position (``"structure"``), so
        the file applies to the model's clone or reload whose layer names differ."""
        data = {"format": FORMAT, "version": 1, "min_channels": self.min_channels,
                "masks": {gid: m.astype(int).tolist() for gid, m in self._masks.items()}}
        structure = _structure(self._masks)
        if structure:
            data["structure"] = structure
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> "ChannelMasks":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"channel masks JSON is corrupt: {err}") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT or "masks" not in data:
            raise ValueError(f"not a channel masks file: expected a JSON object with "
                             f"\"format\": \"{FORMAT}\" and \"masks\"")
        if data.get("version", 1) != 1:
            raise ValueError(f"channel masks JSON has version {data.get('version')!r}; this tfmot_mtl "
                             "reads version 1 (upgrade tfmot_mtl)")
        if not isinstance(data["masks"], dict):
            raise ValueError("channel masks JSON: \"masks\" must be an object {group id: [0/1, ...]}, "
                             f"got {type(data['masks']).__name__}")
        ids = _ids_from_structure(data.get("structure"), data["masks"])
        masks = {}
        for gid, bits in data["masks"].items():
            if not isinstance(bits, list) or any(b not in (0, 1, True, False) for b in bits):
                raise ValueError(f"channel masks JSON: group '{gid}' must be a list of 0/1")
            masks[ids.get(gid, gid)] = np.asarray(bits, dtype=bool)
        try:
            min_channels = _check_min_channels(data.get("min_channels", 1))
        except ValueError as err:
            raise ValueError(f"channel masks JSON: {err}") from None
        return cls(masks, min_channels=min_channels)

    def save(self, path: str | os.PathLike) -> None:
        atomic_write(path, self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ChannelMasks":
        """Reads a file written by :meth:`save`; a corrupt or foreign file raises a ValueError naming it."""
        with open(path, "rb") as f:
            raw = f.read()
        try:
            return cls.from_json(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise ValueError(f"{os.fspath(path)} is not a channel masks file (not UTF-8 JSON text); "
                             "write masks with ChannelMasks.save") from None
        except ValueError as err:
            raise ValueError(f"{os.fspath(path)}: {err}") from None


def as_channel_masks(masks: Any) -> "ChannelMasks":
    """`masks` as a :class:`ChannelMasks` (a plain ``{group id: bool array}`` dict is converted)."""
    if isinstance(masks, ChannelMasks):
        return masks
    if isinstance(masks, Mapping):
        return ChannelMasks(masks)
    raise ValueError(f"masks must be a ChannelMasks or a dict {{group id: boolean array}}, "
                     f"got {type(masks).__name__}")


def _key(gid: Any) -> str:
    """A mask's key: a :class:`GroupId` as it is (it keeps its structure), anything else as ``str``."""
    return gid if isinstance(gid, GroupId) else str(gid)


def _matched(gid: str, fingerprint: str, ids: list[str]) -> str:
    """The id in a graph (`fingerprint`, group `ids` in order) of the group a mask id names."""
    if isinstance(gid, GroupId) and gid.graph == fingerprint and gid.position is not None \
            and gid.position < len(ids):
        return ids[gid.position]
    return gid


def _unknown_group(gid: str, graph: ChannelGraph) -> str:
    known = ", ".join(list(graph.groups)[:8])
    text = (f"mask for unknown channel group '{gid}' (groups include: {known} ...); "
            "were the masks made for another model?")
    if isinstance(gid, GroupId) and gid.graph and gid.graph != graph.fingerprint:
        text += (f" They were made for a model whose channel structure (fingerprint {gid.graph}) differs "
                 f"from that of '{graph.model.name}' (fingerprint {graph.fingerprint}).")
    return text


def _structure(masks: Mapping) -> dict | None:
    """``{"graph": fingerprint, "positions": {id: position}}`` of the ids that come from one graph
    (None when no id does, or when they come from several graphs)."""
    placed = [gid for gid in masks if isinstance(gid, GroupId) and gid.graph and gid.position is not None]
    graphs = {gid.graph for gid in placed}
    if len(graphs) != 1:
        return None
    return {"graph": graphs.pop(), "positions": {gid: gid.position for gid in placed}}


def _ids_from_structure(structure: Any, masks: Mapping) -> dict[str, GroupId]:
    """The :class:`GroupId` of each mask id that a JSON ``"structure"`` places (absent: none)."""
    if structure is None:
        return {}
    positions = structure.get("positions") if isinstance(structure, dict) else None
    if not (isinstance(positions, dict) and isinstance(structure.get("graph"), str)
            and all(_is_position(p) for p in positions.values())):
        raise ValueError("channel masks JSON: \"structure\" must be an object {\"graph\": fingerprint, "
                         "\"positions\": {group id: position >= 0}} (or be left out)")
    return {gid: GroupId(gid, structure["graph"], pos) for gid, pos in positions.items() if gid in masks}


def _is_position(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_min_channels(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"min_channels must be an integer >= 0, got {value!r}")
    return int(value)


def _as_bool(gid, mask) -> np.ndarray:
    arr = np.asarray(mask)
    if arr.dtype != bool:
        raise ValueError(f"mask for group '{gid}' must be boolean (True = keep), got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"mask for group '{gid}' must be 1-D, got shape {arr.shape}")
    return arr.copy()
