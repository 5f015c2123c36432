"""Multi-task VGG-16 with per-task ASPP heads (scaled down from the architecture of structured
filter pruning for multi-task networks, Garg et al. 2023).

VGG-16's 13 convs in 5 blocks, ReLU, no BatchNormalization. As in DeepLab, only the
first three blocks end in 2x2 max pooling and the fifth block is dilated, so the
shared features have output stride 8. Each dense task gets an ASPP head with rates
(1, 2, 4, 6); image-level tasks get a pooled head. `base_channels=64` gives VGG-16's
widths (64, 128, 256, 512, 512).
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

# (convs, channel multiple of base, max-pool after the block, dilation) per VGG-16 block.
VGG16_BLOCKS = ((2, 1, True, 1), (2, 2, True, 1), (3, 4, True, 1), (3, 8, False, 1), (3, 8, False, 2))


def vgg16_encoder(image, width: float = 1.0, base_channels: int = 16, batch_norm: bool = False):
    """Apply the VGG-16 conv blocks to `image` and return the output-stride-8 features."""
    x = image
    for b, (convs, multiple, pool, dilation) in enumerate(VGG16_BLOCKS, start=1):
        filters = scaled(base_channels * multiple, width)
        for c in range(1, convs + 1):
            x = conv_bn_relu(x, filters, 3, f"block{b}_{c}", dilation=dilation, batch_norm=batch_norm)
        if pool:
            x = keras.layers.MaxPooling2D(2, strides=2, padding="same", name=f"block{b}_pool")(x)
    return x


def mtl_vgg(
    tasks: Sequence[Task],
    input_shape: tuple[int, int, int] = (64, 64, 3),
    width: float = 1.0,
    base_channels: int = 16,
    aspp_rates: Sequence[int] = (1, 2, 4, 6),
    head_channels: int = 32,
    batch_norm: bool = False,
    dropout: float = 0.1,
    name: str = "mtl_vgg",
) -> keras.Model:
    """Build a multi-task VGG-16: shared 13-conv encoder, ASPP head per dense task.

    Args:
        tasks: the outputs to predict (`tfmot_mtl.tasks.Task`).
        input_shape: (height, width, channels) of the "image" input; spatial size fixed.
        width: channel multiplier; every conv gets `max(1, round(base * width))` filters.
        base_channels: channels of the first block (later blocks: 2x, 4x, 8x, 8x).
        aspp_rates: dilation rates of the ASPP 3x3 branches.
        head_channels: channels of every ASPP branch (scaled by `width` too).
        batch_norm: add BatchNormalization after every conv (VGG-16 has none; off by default).
        dropout: dropout after the ASPP projection.
        name: model name.

    Returns:
        A functional `keras.Model` with dict input {"image": ...} and dict outputs keyed by task name.
    """
    tasks = check_tasks(tasks)
    input_shape = check_input_shape(input_shape, fixed=True)
    width = check_width(width)
    check_positive_int(base_channels, "base_channels")
    check_positive_int(head_channels, "head_channels")

    image = keras.Input(shape=input_shape, name="image")
    features = vgg16_encoder(image, width, base_channels, batch_norm)
    outputs = task_heads(
        features,
        tasks,
        input_shape[:2],
        scaled(head_channels, width),
        aspp_rates,
        batch_norm=batch_norm,
        dropout=dropout,
    )
    return keras.Model({"image": image}, outputs, name=name)
