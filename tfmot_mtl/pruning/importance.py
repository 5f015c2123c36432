"""Channel importance criteria over the channel groups of a :class:`ChannelGraph`.

Every criterion returns ``{group_id: np.ndarray}`` with one score per channel for every
prunable group; HIGHER = more important (kept longer). NaN marks a channel the criterion
cannot score; the pruning callback never removes it.

A criterion scores each *unit* of a group -- its trainable "out" slices in ONE layer -- and
combines the units with ``reduction`` = "sum" | "mean" | "max" (:mod:`tfmot_mtl.pruning.units`).

Scores are raw. A criterion's ``normalize`` says how the pruning callback puts groups on one scale
before its global ranking (:func:`normalize_scores`): ``"mean"`` divides each group's scores by
their mean over the group's live channels (Torch-Pruning's default normaliser), ``"max"`` by
their largest, ``None`` ranks the raw scores. Weight-norm criteria (:class:`Magnitude`,
:class:`FPGM`) normalise by default: their raw scale grows with a layer's fan-in, so a raw global
ranking empties the narrow first layers of a VGG-style trunk down to the layer floor (on
``benchmarks/iterative_pruning.py --preset seeds``: Δm −16% at 70% of the parameters, raw,
where Taylor, SecondOrder and LAMP reach +2 to +4%). Taylor, SecondOrder and CosPrune rank raw
as their papers do (a loss change, and cosines, share one scale across layers); LAMP is its own
per-layer normalisation.

Data-free criteria (:class:`Magnitude`, :class:`BNScale`, :class:`LAMP`, :class:`FPGM`,
:class:`Random`) ignore data.
Gradient criteria (:class:`Taylor`, :class:`CosPrune`) live in
:mod:`tfmot_mtl.pruning.gradient_criteria`.
"""
from __future__ import annotations

from typing import Iterable, Iterator

import keras
import numpy as np

from tfmot_mtl.graph import ChannelGraph, ChannelGroup
from tfmot_mtl.pruning.units import (REDUCTIONS, Part, channel_sum, combine_units, group_units, is_batchnorm,
                                     is_kernel, scorable_groups)

Scores = dict[str, np.ndarray]
NORMALIZERS = (None, "mean", "max")


def normalize_scores(scores: Scores, mode: str | None) -> Scores:
    """Each group's scores divided by the mean (``"mean"``) or the largest (``"max"``) absolute
    score of its live channels (finite and non-zero: a pruned channel scores 0); unchanged for
    ``None`` or a group without a live channel. Signs and the order within a group are kept."""
    if mode is None:
        return scores
    if mode not in NORMALIZERS:
        raise ValueError(f"normalize must be one of {NORMALIZERS}, got {mode!r}")
    out = {}
    for gid, values in scores.items():
        values = np.asarray(values, np.float64)
        live = np.abs(values[np.isfinite(values) & (values != 0)])
        scale = (live.mean() if mode == "mean" else live.max()) if live.size else 0.0
        out[gid] = values / scale if scale > 0 else values
    return out


class Importance:
    """Base class: ``criterion(model, graph, data=None) -> {group_id: scores}``."""

    needs_data = False

    def __init__(self, reduction: str = "sum", normalize: str | None = None):
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        if normalize not in NORMALIZERS:
            raise ValueError(f"normalize must be one of {NORMALIZERS}, got {normalize!r}")
        self.reduction, self.normalize = reduction, normalize

    def __call__(self, model: keras.Model, graph: ChannelGraph | None = None, data=None) -> Scores:
        graph = ChannelGraph.of(model) if graph is None else graph
        return {g.id: self.score_group(graph, g) for g in scorable_groups(graph)}

    def score_group(self, graph: ChannelGraph, group: ChannelGroup) -> np.ndarray:
        raise NotImplementedError

    # Gradient-free criteria accumulate nothing; the callback may call these uniformly.
    def accumulate(self, model, graph, x, y) -> None:
        return None

    def reset(self) -> None:
        return None

    # What decides the next scores beyond the weights (saved by ChannelPruningCallback.get_state).
    def get_state(self) -> dict:
        """JSON-serialisable state: empty for criteria that read the weights only."""
        return {}

    def set_state(self, state: dict) -> None:
        """Restores a ``get_state()`` dict."""
        return None

    def get_config(self) -> dict:
        return {"reduction": self.reduction, "normalize": self.normalize}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.get_config().items())})"


class Magnitude(Importance):
    """L_p norm of each channel's own weights (L1: Li et al. 2017, "Pruning filters").

    Per unit (layer) the score is ``||w_c||_p`` over the channel's producer kernel
    columns (depthwise slices included); ``include_bias`` adds 1-D slices (bias and, when
    ``include_bn``, BN gamma/beta). BN layers count only with ``include_bn=True``.
    ``include_consumers`` (default) adds one unit per layer that reads the channel: its input
    rows (the whole coupled group, as Torch-Pruning's ``GroupMagnitudeImportance`` scores it: a
    channel whose readers ignore it is unimportant however large its own filter). Ranked with
    ``normalize="mean"`` by default (module doc). On ``benchmarks/iterative_pruning.py --preset
    seeds`` (seed 0, lr 1e-3) the own filter alone, normalised, gave Δm −3.7% / −1.9% at 70% / 40%
    of the parameters; with the readers −0.7% / −0.1%; raw and without them −16%.
    """

    def __init__(self, p: float = 1, include_bias: bool = False, include_bn: bool = False,
                 reduction: str = "sum", normalize: str | None = "mean", include_consumers: bool = True):
        super().__init__(reduction, normalize)
        if p not in (1, 2):
            raise ValueError(f"p must be 1 or 2, got {p!r}")
        self.p, self.include_bias, self.include_bn = p, include_bias, include_bn
        self.include_consumers = bool(include_consumers)

    def _select(self, layer, s) -> bool:
        if is_batchnorm(layer):
            return self.include_bn
        return is_kernel(layer, s) or self.include_bias

    def score_group(self, graph, group):
        per_unit = []
        for unit in group_units(graph, group, self._select, consumers=self.include_consumers):
            acc = sum(channel_sum(np.abs(np.asarray(p.var.numpy())) ** self.p, p, group.size)
                      for p in unit)
            per_unit.append(acc ** (1.0 / self.p))
        return combine_units(per_unit, group.size, self.reduction)

    def get_config(self):
        return {"p": self.p, "include_bias": self.include_bias, "include_bn": self.include_bn,
                "include_consumers": self.include_consumers, **super().get_config()}


class BNScale(Importance):
    """|gamma| of the group's BatchNormalization layers (network slimming, Liu et al. 2017).

    Groups without a BN scale are scored by ``fallback``: ``"nan"`` (default: NaN, so they
    are never pruned -- |gamma| and kernel norms are not comparable in a global ranking)
    or ``"magnitude"`` (L1 kernel norm, :class:`Magnitude`).
    """

    def __init__(self, fallback: str = "nan", reduction: str = "sum", normalize: str | None = None):
        super().__init__(reduction, normalize)
        if fallback not in ("nan", "magnitude"):
            raise ValueError(f"fallback must be 'nan' or 'magnitude', got {fallback!r}")
        self.fallback = fallback

    def score_group(self, graph, group):
        select = lambda layer, s: is_batchnorm(layer) and layer.weights[s.weight] is getattr(layer, "gamma", None)
        per_unit = [sum(channel_sum(np.abs(np.asarray(p.var.numpy())), p, group.size) for p in unit)
                    for unit in group_units(graph, group, select)]
        if not per_unit and self.fallback == "magnitude":
            return Magnitude(p=1, reduction=self.reduction).score_group(graph, group)
        return combine_units(per_unit, group.size, self.reduction)

    def get_config(self):
        return {"fallback": self.fallback, **super().get_config()}


class LAMP(Importance):
    """Layer-adaptive magnitude (Lee et al. 2021, "Layer-adaptive sparsity for the magnitude-based
    pruning"), per channel as Torch-Pruning's ``LAMPImportance`` applies it to groups.

    A channel's magnitude ``m_c`` is the sum of squares of its coupled kernel slices (every
    layer of the group, ``include_bias`` adds 1-D slices, ``include_consumers`` (default) the
    input rows of the layers reading it, as Torch-Pruning's ``LAMPImportance`` does); its score is
    ``m_c / sum(m_j for the group's channels j with m_j >= m_c)``: the share of the group's
    remaining magnitude it holds if channels are removed weakest first. The strongest channel
    of every group scores 1, so a global ranking compares layers on a common scale and never
    ranks a whole layer below another only because its weights are smaller.
    """

    def __init__(self, include_bias: bool = False, include_consumers: bool = True):
        super().__init__("sum")
        self.include_bias, self.include_consumers = include_bias, bool(include_consumers)

    def score_group(self, graph, group):
        squares = Magnitude(p=2, include_bias=self.include_bias,
                            include_consumers=self.include_consumers).score_group(graph, group) ** 2
        return lamp_scores(squares)

    def get_config(self):
        return {"include_bias": self.include_bias, "include_consumers": self.include_consumers}


def lamp_scores(magnitude: np.ndarray) -> np.ndarray:
    """``m_c / sum(m_j >= m_c)`` per channel (ties ordered by index); NaN stays NaN."""
    m = np.asarray(magnitude, np.float64)
    out = np.full(m.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(m))
    order = ok[np.argsort(m[ok], kind="stable")]  # weakest first
    tail = np.cumsum(m[order][::-1])[::-1]  # the magnitude left when each is reached
    out[order] = m[order] / np.maximum(tail, 1e-300)
    return out


class FPGM(Importance):
    """Filter pruning via the geometric median (He et al. 2019): a channel whose filter is close
    to the other filters of its layer is replaceable by them.

    Per layer of the group, each channel's filter (its kernel slices, flattened) scores the sum
    of its Euclidean distances to the other filters of that layer; the layers' scores combine
    with ``reduction``. Filters near the geometric median score lowest and go first. Ranked with
    ``normalize="mean"`` by default (module doc): the distances grow with a layer's width and fan-in.
    """

    def __init__(self, reduction: str = "sum", normalize: str | None = "mean"):
        super().__init__(reduction, normalize)

    def score_group(self, graph, group):
        per_unit = []
        for unit in group_units(graph, group, is_kernel):
            filters = _filters(unit, group.size)
            if filters is None:
                continue
            gram = filters @ filters.T
            sq = np.diag(gram)
            dist = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2.0 * gram, 0.0))
            per_unit.append(dist.sum(axis=1))
        return combine_units(per_unit, group.size, self.reduction)


def _filters(unit: list[Part], size: int) -> np.ndarray | None:
    """The unit's per-channel filters as rows ``(size, n)``; None when a channel of the group has
    no slice here or channels own slices of different sizes (the distance is undefined)."""
    rows: dict[int, list[np.ndarray]] = {}
    for part in unit:
        values = np.moveaxis(np.asarray(part.var.numpy(), np.float64), part.axis, 0)
        for position, channel in zip(part.positions, part.channels):
            rows.setdefault(int(channel), []).append(values[position].reshape(-1))
    if len(rows) != size:
        return None
    flat = [np.concatenate(rows[c]) for c in range(size)]
    if len({len(f) for f in flat}) != 1:
        return None
    return np.stack(flat)


class Random(Importance):
    """Uniform random scores (control baseline); reproducible with ``seed``."""

    def __init__(self, seed: int | None = None):
        super().__init__("sum")
        self.seed = seed
        self._rng = np.random.default_rng(seed)

    def score_group(self, graph, group):
        return self._rng.random(group.size)

    def get_state(self) -> dict:
        """The generator's state (the next scores follow from it)."""
        return {"rng": self._rng.bit_generator.state}

    def set_state(self, state: dict) -> None:
        if "rng" in state:
            self._rng.bit_generator.state = state["rng"]

    def get_config(self):
        return {"seed": self.seed}


# ----------------------------------------------------------------- gradient criteria


def iterate_batches(data) -> Iterable[tuple]:
    """Yields (x, y) from a dataset / iterable of batches, or one ``(x, y)`` tuple."""
    if isinstance(data, tuple) and len(data) in (2, 3) and not isinstance(data[0], tuple):
        yield data[0], data[1]
        return
    for batch in data:
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise ValueError("scoring data must yield (x, y) batches with y a dict of targets by task")
        yield batch[0], batch[1]


class CountedIterator:
    """Wraps an iterator and counts the items drawn (the scoring-data position)."""

    def __init__(self, iterator: Iterator, count: int = 0):
        self.iterator, self.count = iterator, count

    def __iter__(self):
        return self

    def __next__(self):
        item = next(self.iterator)
        self.count += 1
        return item
