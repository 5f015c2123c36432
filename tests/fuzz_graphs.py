"""Hypothesis strategies for random functional multi-task graphs and random channel masks.

Shared by the property suites (``test_fuzz_strip.py``, ``test_fuzz_pipeline.py``). A graph
spec is ``(ops, widths, picks, heads, fraction, seed)``: one op per step applied to the last
tensor (``pick`` chooses the second operand of merges among earlier tensors), then one head
per task reading an earlier tensor: a pooled Dense classifier or a 1x1 conv map.
"""
from __future__ import annotations

import keras
import numpy as np
from hypothesis import strategies as st

from tfmot_mtl.masks import ChannelMasks

L = keras.layers
OPS = ["conv3", "conv1", "depthwise", "separable", "bn", "relu", "sigmoid", "add", "concat", "pool",
       "avgpool", "multiply"]


def _apply(op: str, x, other, width: int, pick: int):
    if op == "conv3":
        return L.Conv2D(width, 3, padding="same")(x)
    if op == "conv1":
        return L.Conv2D(width, 1)(x)
    if op == "depthwise":
        return L.DepthwiseConv2D(3, padding="same", depth_multiplier=1 + pick % 2)(x)
    if op == "separable":
        return L.SeparableConv2D(width, 3, padding="same")(x)
    if op == "bn":
        return L.BatchNormalization()(x)
    if op == "relu":
        return L.ReLU()(x)
    if op == "sigmoid":
        return L.Activation("sigmoid")(x)
    if op == "pool":
        return L.MaxPooling2D(3, strides=1, padding="same")(x)
    if op == "avgpool":
        return L.AveragePooling2D(3, strides=1, padding="same")(x)
    if op in ("add", "multiply"):
        if other.shape[-1] != x.shape[-1]:
            other = L.Conv2D(x.shape[-1], 1)(other)
        return (L.Add() if op == "add" else L.Multiply())([x, other])
    if op == "concat":
        return L.Concatenate()([x, other])
    raise ValueError(f"unknown op {op!r}")


def build_random_model(ops, widths, picks, heads, input_channels: int = 3) -> keras.Model:
    """A functional model named-input "image" (8x8) with dict outputs task0, task1, ..."""
    image = keras.Input((8, 8, input_channels), name="image")
    tensors = [L.Conv2D(widths[0], 3, padding="same")(image)]
    for op, width, pick in zip(ops, widths, picks):
        tensors.append(_apply(op, tensors[-1], tensors[pick % len(tensors)], width, pick))
    outputs = {}
    for k, head in enumerate(heads):
        src = tensors[-1 - (k % len(tensors))]
        name = f"task{k}"
        if head == "dense":
            outputs[name] = L.Dense(3, name=name)(L.GlobalAveragePooling2D()(src))
        else:
            outputs[name] = L.Conv2D(2, 1, name=name)(src)
    return keras.Model(image, outputs)


graphs = st.integers(2, 7).flatmap(lambda n: st.tuples(
    st.lists(st.sampled_from(OPS), min_size=n, max_size=n),
    st.lists(st.integers(2, 8), min_size=n, max_size=n),
    st.lists(st.integers(0, 50), min_size=n, max_size=n),
    st.lists(st.sampled_from(["dense", "conv"]), min_size=1, max_size=3),
    st.floats(0.1, 0.9),
    st.integers(0, 1000),
))


def draw_masks(data, graph) -> ChannelMasks:
    """Random masks drawn through hypothesis (so failures shrink): any subset kept per group,
    at least one channel (empty draws keep channel 0, as ``min_channels=1`` does)."""
    masks = {}
    for group in graph.prunable_groups:
        if group.size == 0:
            continue
        keep = np.asarray(data.draw(st.lists(st.booleans(), min_size=group.size, max_size=group.size),
                                    label=f"mask {group.id}"), bool)
        if not keep.any():
            keep[0] = True
        masks[group.id] = keep
    return ChannelMasks(masks)
