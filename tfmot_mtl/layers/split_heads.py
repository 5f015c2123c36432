"""Attention heads written with ``keras.ops`` (SegFormer / MiT, hand-written ViT blocks).

Such a block splits the projected channels into heads, ``reshape(q, (B, N, heads, head_dim))``,
moves the heads next to the batch (``transpose``), multiplies per head (``q @ k^T``, ``attn @ v``)
and merges them back (``reshape(.., (B, N, heads * head_dim))``). Between the split and the merge
the channels span two axes; the graph follows them as a :class:`~tfmot_mtl.layers.base.Split`,
and a head (its ``head_dim`` channels in q, k and v, its rows of the output projection) is
one channel of one group. The split couples each head's channels and adds a ``"<split>:heads"``
origin to the group, so heads are pruned whole and the stripped reshapes get the new head count.
"""
from __future__ import annotations

import numpy as np

from tfmot_mtl.layers.base import CONST, PATTERN, ZERO, Rule, Split, describe, register_op


def standard(ctx, i: int) -> Split:
    """Input ``i``'s split, or the plain layout (channels on the last axis)."""
    sp = ctx.in_splits[i]
    return sp if sp is not None else Split((len(ctx.in_shapes[i]) - 1,), (len(ctx.in_maps[i]),))


def split_reshape(ctx) -> list | None:
    """``(..., C) -> (..., heads, head_dim)`` with the leading dims unchanged: the channels become
    ``heads`` blocks of ``head_dim``, each coupled to one new head atom. None: not a split."""
    src, dst = ctx.in_shapes[0], ctx.out_shapes[0]
    if ctx.in_splits[0] is not None or len(dst) != len(src) + 1 or tuple(src[1:-1]) != tuple(dst[1:-2]):
        return None
    heads, head_dim = dst[-2], dst[-1]
    if None in (heads, head_dim, src[-1]) or heads * head_dim != src[-1] or head_dim == src[-1]:
        return None
    blocks = ctx.in_maps[0].reshape(heads, head_dim)
    head_atoms = ctx.new_atoms(heads, tag="heads")
    for h in range(heads):
        ctx.couple(np.full(head_dim, head_atoms[h]), blocks[h])
    rank = len(dst)
    ctx.out_splits[0] = Split((rank - 2, rank - 1), (heads, head_dim))
    return [ctx.in_maps[0]]


def merge_reshape(ctx) -> list | None:
    """``(..., heads, head_dim) -> (..., heads * head_dim)`` of a split whose channels are the two
    last axes: the plain layout again. None: not such a merge."""
    sp, src, dst = ctx.in_splits[0], ctx.in_shapes[0], ctx.out_shapes[0]
    rank = len(src)
    if sp is None or sp.axes != (rank - 2, rank - 1) or len(dst) != rank - 1:
        return None
    if tuple(src[1:-2]) != tuple(dst[1:-1]) or dst[-1] != sp.width:
        return None
    return [ctx.in_maps[0]]


def transpose_split(ctx, perm) -> list:
    """A transpose of a split tensor: the channel axes move, in the same order."""
    sp = ctx.in_splits[0]
    moved = tuple(list(perm).index(a) for a in sp.axes)
    if list(moved) != sorted(moved):
        return ctx.freeze_all(f"{describe(ctx.layer)} reorders the axes of attention heads (axes={perm})")
    rank = len(ctx.in_shapes[0])
    ctx.out_splits[0] = None if moved == (rank - 1,) else Split(moved, sp.sizes)
    return [ctx.in_maps[0]]


def split_reshape_config(config: dict, in_keep: np.ndarray) -> dict | None:
    """The config of a split reshape with the kept heads (None: the reshape is not a split)."""
    shape = list(np.atleast_1d(config["newshape"]).tolist())
    if len(shape) < 2 or shape[-2] * shape[-1] != len(in_keep) or shape[-1] == len(in_keep):
        return None
    shape[-2] = int(in_keep.sum()) // shape[-1]
    return {**config, "newshape": tuple(shape)}


def _heads(ctx) -> int:
    """The number of heads of a matmul's first operand: its channels on leading (batch) axes."""
    sp, rank = standard(ctx, 0), len(ctx.in_shapes[0])
    return int(np.prod([n for a, n in zip(sp.axes, sp.sizes) if a < rank - 2]))


@register_op("Matmul")
class MatmulHeadsRule(Rule):
    """``a @ b`` per head: the heads of ``a`` and ``b`` (leading axes) are the same heads, the
    contracted channels (``q @ k^T`` over ``head_dim``) are coupled, ``a``'s rows are tokens. The
    output keeps the heads (and ``b``'s channel columns, ``attn @ v``). Any other matmul of
    channels mixes them and is frozen."""

    split_axes = True

    def propagate(self, ctx):
        if len(ctx.in_maps) != 2 or not any(ctx.in_splits):
            return ctx.freeze_all(f"{describe(ctx.layer)} multiplies channels together")
        ra, rb = len(ctx.in_shapes[0]), len(ctx.in_shapes[1])
        sa, sb = standard(ctx, 0), standard(ctx, 1)
        batch_a = [(a, n) for a, n in zip(sa.axes, sa.sizes) if a < ra - 2]
        batch_b = [(a, n) for a, n in zip(sb.axes, sb.sizes) if a < rb - 2]
        why = None
        if ra != rb or ra < 3 or not batch_a or batch_a != batch_b:
            why = "its operands do not carry the same attention heads"
        elif ra - 2 in sa.axes:
            why = "it contracts the token rows of one operand with channels"
        elif (ra - 1 in sa.axes) != (rb - 2 in sb.axes):
            why = "it contracts channels of one operand with tokens of the other"
        elif tuple(ctx.out_shapes[0][:-2]) != tuple(ctx.in_shapes[0][:-2]):
            why = "it broadcasts its heads"
        if why:
            return ctx.freeze_all(f"{describe(ctx.layer)}: {why}")
        heads = _heads(ctx)
        a_heads = ctx.in_maps[0].reshape(heads, -1)
        b_heads = ctx.in_maps[1].reshape(heads, -1)
        for h in range(heads):
            ctx.couple(np.full(a_heads.shape[1], a_heads[h, 0]), a_heads[h])
            ctx.couple(np.full(b_heads.shape[1], a_heads[h, 0]), b_heads[h])
        axes = tuple(a for a, _ in batch_a)
        if rb - 1 in sb.axes:  # b's columns are channels (attn @ v): the output carries them
            cols = sb.sizes[-1]
            out_map = b_heads.reshape(heads, -1, cols)[:, 0, :].reshape(-1)
            ctx.out_splits[0] = Split(axes + (ra - 1,), tuple(n for _, n in batch_a) + (cols,))
        else:
            out_map = a_heads[:, 0]
            ctx.out_splits[0] = Split(axes, tuple(n for _, n in batch_a))
        return [out_map]

    def states(self, ctx, in_states):
        heads = _heads(ctx)
        sa = in_states[0].reshape(heads, -1)
        sb = in_states[1].reshape(heads, -1)
        zero = (sa == ZERO).all(axis=1) | (sb == ZERO).all(axis=1)
        const = (sa <= CONST).all(axis=1) & (sb <= CONST).all(axis=1)
        per_head = np.where(zero, ZERO, np.where(const, CONST, PATTERN)).astype(np.int8)
        width = ctx.out_splits[0].width if ctx.out_splits[0] else ctx.out_widths[0]
        return [np.repeat(per_head, width // heads)]
