"""Multi-task ResNet-D with dilated last stages and per-task heads (scaled down from the
architecture of group sparsity, Upadhyay et al. 2024).

The reference setup is a ResNet-D-50 (3x3 stem convs, bottleneck blocks [3, 4, 6, 3],
dilation 2 and 4 in the last stages, output stride 8) with a DeepLabv3 head per dense
task. The defaults here keep the structure but shrink depth and width so the model
trains in seconds per epoch on a laptop CPU; `block="bottleneck", stages=(3, 4, 6, 3),
base_channels=64, aspp_rates=(12, 24, 36), head_channels=256` gives the full-size one.
"""
from __future__ import annotations

from collections.abc import Sequence

import keras

from tfmot_mtl.models.heads import (
    check_input_shape,
    check_positive_int,
    check_tasks,
    check_width,
    conv_bn_relu,
    scaled,
    task_heads,
)
from tfmot_mtl.tasks import Task

BLOCKS = ("basic", "bottleneck")


def _shortcut(x, filters: int, strides: int, name: str):
    """Identity, or a ResNet-D projection (AveragePooling2D when strided, then 1x1 conv + BN)."""
    if strides == 1 and x.shape[-1] == filters:
        return x
    if strides > 1:
        x = keras.layers.AveragePooling2D(strides, strides=strides, padding="same", name=f"{name}_avgpool")(x)
    return conv_bn_relu(x, filters, 1, name, relu=False)


def basic_block(x, filters: int, name: str, strides: int = 1, dilation: int = 1):
    """Two 3x3 conv-BN units with a residual connection, ReLU after the Add."""
    shortcut = _shortcut(x, filters, strides, f"{name}_shortcut")
    y = conv_bn_relu(x, filters, 3, f"{name}_1", strides=strides, dilation=dilation if strides == 1 else 1)
    y = conv_bn_relu(y, filters, 3, f"{name}_2", dilation=dilation, relu=False)
    y = keras.layers.Add(name=f"{name}_add")([shortcut, y])
    return keras.layers.ReLU(name=f"{name}_out")(y)


def bottleneck_block(
    x, filters: int, name: str, strides: int = 1, dilation: int = 1, out_filters: int | None = None
):
    """1x1 reduce -> 3x3 (strided or dilated) -> 1x1 expand to `out_filters`, residual, ReLU.

    `out_filters` defaults to 4 * `filters` (the ResNet-50 expansion).
    """
    out_filters = 4 * filters if out_filters is None else out_filters
    shortcut = _shortcut(x, out_filters, strides, f"{name}_shortcut")
    y = conv_bn_relu(x, filters, 1, f"{name}_1")
    y = conv_bn_relu(y, filters, 3, f"{name}_2", strides=strides, dilation=dilation if strides == 1 else 1)
    y = conv_bn_relu(y, out_filters, 1, f"{name}_3", relu=False)
    y = keras.layers.Add(name=f"{name}_add")([shortcut, y])
    return keras.layers.ReLU(name=f"{name}_out")(y)


def resnet_d_stem(x, channels: Sequence[int], name: str = "stem"):
    """ResNet-D stem: three 3x3 conv units (first strided) then 3x3 max pooling: output stride 4."""
    x = conv_bn_relu(x, channels[0], 3, f"{name}_1", strides=2)
    x = conv_bn_relu(x, channels[1], 3, f"{name}_2")
    x = conv_bn_relu(x, channels[2], 3, f"{name}_3")
    return keras.layers.MaxPooling2D(3, strides=2, padding="same", name=f"{name}_pool")(x)


def _stage_plan(num_stages: int, dilate_last: bool) -> list[tuple[int, int]]:
    """(stride, dilation) of the first block of each stage.

    After the stem (output stride 4) the second stage halves once more (stride 8); later
    stages either keep halving or, with `dilate_last`, stay at stride 8 with dilation
    doubling per stage (2, 4, ...) as in DeepLab.
    """
    plan, dilation = [], 1
    for i in range(num_stages):
        if i == 0:
            plan.append((1, 1))
        elif i == 1 or not dilate_last:
            plan.append((2, 1))
        else:
            dilation *= 2
            plan.append((1, dilation))
    return plan


def mtl_resnet(
    tasks: Sequence[Task],
    input_shape: tuple[int, int, int] = (64, 64, 3),
    width: float = 1.0,
    block: str = "basic",
    stages: Sequence[int] = (1, 1, 1, 1),
    base_channels: int = 16,
    dilate_last: bool = True,
    aspp_rates: Sequence[int] = (1, 2, 3),
    head_channels: int = 32,
    dropout: float = 0.1,
    name: str = "mtl_resnet",
) -> keras.Model:
    """Build a multi-task ResNet-D: shared encoder, ASPP head per dense task, pooled head otherwise.

    Args:
        tasks: the outputs to predict (`tfmot_mtl.tasks.Task`); dense tasks get an ASPP
            head upsampled to the input size, image-level tasks a GAP -> Dense head.
        input_shape: (height, width, channels) of the "image" input; spatial size fixed.
        width: channel multiplier; every conv gets `max(1, round(base * width))` filters.
        block: "basic" (two 3x3 convs) or "bottleneck" (1x1-3x3-1x1, 4x expansion).
        stages: blocks per stage; stage i has `base_channels * 2**i` (bottleneck: mid) channels.
        base_channels: channels of the first stage (the stem uses base, base, 2 * base).
        dilate_last: keep output stride 8 by dilating stages 3+ instead of striding
            (without it the output stride is 4 * 2**(len(stages) - 1)).
        aspp_rates: dilation rates of the ASPP 3x3 branches.
        head_channels: channels of every ASPP branch (scaled by `width` too).
        dropout: dropout after the ASPP projection.
        name: model name.

    Returns:
        A functional `keras.Model` with dict input {"image": ...} and dict outputs keyed by task name.
    """
    tasks = check_tasks(tasks)
    input_shape = check_input_shape(input_shape, fixed=True)
    width = check_width(width)
    if block not in BLOCKS:
        raise ValueError(f"`block` must be one of {BLOCKS}, got {block!r}.")
    if isinstance(stages, (int, str)) or len(stages) == 0:
        raise ValueError(f"`stages` must be a non-empty sequence of block counts, got {stages!r}.")
    for count in stages:
        check_positive_int(count, "stages[i]")
    check_positive_int(base_channels, "base_channels")
    check_positive_int(head_channels, "head_channels")

    image = keras.Input(shape=input_shape, name="image")
    stem = [scaled(base_channels * m, width) for m in (1, 1, 2)]
    x = resnet_d_stem(image, stem)
    for i, ((stride, dilation), count) in enumerate(zip(_stage_plan(len(stages), dilate_last), stages)):
        filters = scaled(base_channels * 2**i, width)
        for j in range(count):
            block_name, strides = f"stage{i + 1}_block{j + 1}", stride if j == 0 else 1
            if block == "basic":
                x = basic_block(x, filters, block_name, strides=strides, dilation=dilation)
            else:
                out = scaled(4 * base_channels * 2**i, width)
                x = bottleneck_block(x, filters, block_name, strides=strides, dilation=dilation, out_filters=out)
    outputs = task_heads(
        x, tasks, input_shape[:2], scaled(head_channels, width), aspp_rates, batch_norm=True, dropout=dropout
    )
    return keras.Model({"image": image}, outputs, name=name)
