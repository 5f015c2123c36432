"""Pilot weights for an adaptive group lasso: a data-driven score of the trained model, per channel.

A plain group lasso ranks channels by their norms. In a trained network with BatchNorm the
norms of a layer's channels sit close to their layer mean, so with thresholds relative to the
layer and scaled by cost (what a cost target needs), the cost alone decides which layers
thin. The adaptive group lasso (Wang & Leng 2008, after Zou's adaptive lasso) weighs each
group's penalty by a pilot estimate of its importance; here the pilot is a pruning criterion
(first-order Taylor by default: the loss change of removing the channel, on a few training
batches of the trained model), so the channels the loss needs get smaller thresholds and
survive, as a pruning ranking would keep them.
"""
from __future__ import annotations

import itertools
from typing import Any, Mapping

import keras
import numpy as np

# Weights are clipped into [1 / CLIP, CLIP]: a channel the pilot scores 0 still dies by the
# ranking, not at the first step.
CLIP = 1e3


def pilot_weights(model: keras.Model, data: Any, criterion: Any = None, batches: int = 8,
                  exponent: float = 1.0, graph: Any = None) -> dict[str, np.ndarray]:
    """Per channel group, ``(score / mean score) ** exponent`` (clipped to ``[1/CLIP, CLIP]``)
    for ``criterion`` (default :class:`~tfmot_mtl.pruning.gradient_criteria.Taylor`) on the
    first ``batches`` batches of ``data`` (``(x, {output: y})`` batches). The mean is over the
    finite scores of every scored channel, so the weights compare channels across layers as a
    global pruning ranking does. Channels the criterion cannot score (NaN) weigh 1."""
    from tfmot_mtl.graph import ChannelGraph
    from tfmot_mtl.pruning.gradient_criteria import Taylor

    if batches < 1:
        raise ValueError(f"batches must be >= 1, got {batches}")
    criterion = Taylor() if criterion is None else criterion
    graph = ChannelGraph.of(model) if graph is None else graph
    sample = list(itertools.islice(iter(data), batches))
    if not sample:
        raise ValueError("pilot_weights got no batch of data")
    scores = criterion(model, graph, sample)
    return normalised_weights(scores, exponent)


def normalised_weights(scores: Mapping[str, np.ndarray], exponent: float = 1.0) -> dict[str, np.ndarray]:
    """Scores as weights: over the mean of all finite, non-negative scores, to ``exponent``,
    clipped to ``[1/CLIP, CLIP]``; NaN (unscored) → 1."""
    values = np.concatenate([np.asarray(v, np.float64).reshape(-1) for v in scores.values()]) if scores else np.zeros(0)
    finite = values[np.isfinite(values)]
    mean = float(np.abs(finite).mean()) if finite.size else 0.0
    out = {}
    for gid, v in scores.items():
        v = np.abs(np.asarray(v, np.float64))
        w = np.ones_like(v)
        ok = np.isfinite(v)
        if mean > 0:
            w[ok] = np.clip((v[ok] / mean) ** float(exponent), 1.0 / CLIP, CLIP)
        out[gid] = w
    return out
