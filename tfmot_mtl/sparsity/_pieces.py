"""The selected weights of ProximalGroupLasso grouped for its graph step (:mod:`._graph_step`).

Each kernel stays in its own shape and all 1-D weights of one dtype form one vector, with, per
position along the channel axis, the global channel it belongs to: the step's per-channel sums
are reductions over a piece's other axes plus one segment sum, and per-channel factors
broadcast back along the channel axis, with no gather, transpose or scatter of a kernel.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

F64 = tf.float64


class Piece:
    """Selected weights the step treats as one tensor: a weight of rank > 1 in its own shape, or
    all 1-D weights of one dtype (biases, BatchNorm gamma / beta) concatenated into one vector,
    so the step costs a few ops per kernel plus a few for all vectors. ``row_of`` gives, per
    position along the channel axis, the global channel it belongs to (``n``, a spare slot, for
    positions outside the selected groups)."""

    def __init__(self, variables: list, axis: int, row_of: list[np.ndarray], n: int):
        self.variables, self.axis = variables, axis
        self.sizes = [len(r) for r in row_of]
        rows = np.concatenate(row_of)
        self.row_of = tf.constant(rows.astype(np.int32))
        self.positions = len(rows)
        rank = len(variables[0].shape)
        self.shape = [1] * rank
        self.shape[axis] = len(rows)
        self.others = [i for i in range(rank) if i != axis]
        self.dtype = variables[0].dtype

    def read(self, tensors=None, dtype=F64):
        """The weights (or ``tensors``, one per weight) as one tensor of ``dtype``."""
        values = [v.value for v in self.variables] if tensors is None else [t.value for t in tensors]
        joined = values[0] if len(values) == 1 else tf.concat(values, 0)
        return tf.cast(joined, dtype)

    def channel_parts(self, t):
        """Per position along the channel axis, the sum of ``t`` over the other axes."""
        return tf.reduce_sum(t, axis=self.others) if self.others else t

    def channel_squares(self, t):
        """Per position along the channel axis, the sum of ``t ** 2`` over the other axes."""
        return self.channel_parts(tf.square(t))

    def spread(self, extended):
        """A channel vector made by :func:`extend` as a tensor broadcasting against the piece."""
        return tf.reshape(tf.gather(extended, self.row_of), self.shape)

    def write(self, value) -> None:
        """Assigns ``value`` (the piece's tensor) back to its weights."""
        value = tf.cast(value, self.dtype)
        parts = [value] if len(self.variables) == 1 else tf.split(value, self.sizes, 0)
        for var, part in zip(self.variables, parts):
            var.assign(part)


def extend(per_channel, spare: float):
    """A length-``n`` channel vector with ``spare`` appended for the positions outside the
    selected groups (what :meth:`Piece.spread` gathers from)."""
    return tf.concat([per_channel, tf.constant([spare], per_channel.dtype)], 0)


def pieces(entries, variables, n: int) -> list[Piece]:
    """The selected weights (``entries`` over ``variables``, as a :class:`~tfmot_mtl.sparsity.plan.ChannelPlan`
    holds them) grouped into :class:`Piece` s."""
    per_var: dict[int, list] = {}
    for e in entries:
        var = variables[e.var]
        plan = per_var.setdefault(id(var), [var, e.axis, np.full(int(var.shape[e.axis]), n, np.int64)])
        if plan[1] != e.axis:
            raise ValueError(f"weight '{var.path}' has selected channels along two axes "
                             f"({plan[1]} and {e.axis}); the proximal step needs one channel axis per weight.")
        plan[2][np.asarray(e.positions, np.int64)] = e.rows
    pieces, vectors = [], {}
    for var, axis, row_of in per_var.values():
        if len(var.shape) == 1:
            vectors.setdefault(str(var.dtype), []).append((var, row_of))
        else:
            pieces.append(Piece([var], axis, [row_of], n))
    for group in vectors.values():
        pieces.append(Piece([v for v, _ in group], 0, [r for _, r in group], n))
    return pieces
