"""Shared building blocks of the reference models: argument checks, conv units and task heads.

Everything here builds on standard `keras.layers` only (no Lambda, no raw ops on
KerasTensors), so the channel graph can follow every layer and the models save as
plain `.keras` files that load with `safe_mode=True`.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import keras

from tfmot_mtl.tasks import KINDS, Task, TasksLike, as_task_list


# ---------------------------------------------------------------- argument checks


def scaled(base: int, width: float) -> int:
    """Channel count for `base` channels at width multiplier `width` (at least 1)."""
    return max(1, round(base * width))


def check_width(width: float) -> float:
    """Return `width` as a float, or raise if it is not a positive number."""
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not width > 0:
        raise ValueError(f"`width` must be a number > 0 (1.0 = reference width), got {width!r}.")
    return float(width)


def check_positive_int(value: int, argument: str) -> int:
    """Return `value`, or raise naming `argument` if it is not an int >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{argument}` must be an integer >= 1, got {value!r}.")
    return value


def check_input_shape(input_shape: Sequence, fixed: bool = True) -> tuple:
    """Validate an NHWC image shape `(height, width, channels)` without the batch axis.

    Args:
        input_shape: the shape; channels must be a positive int.
        fixed: if True the spatial size must be known (dense heads upsample to it);
            if False `None` is accepted for height and width.
    """
    shape = tuple(input_shape) if isinstance(input_shape, Sequence) else None
    if shape is None or len(shape) != 3:
        raise ValueError(
            f"`input_shape` must be (height, width, channels) without the batch axis, got {input_shape!r}."
        )
    for i, dim in enumerate(shape):
        if dim is None and i < 2 and not fixed:
            continue
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            need = "a positive int" if fixed or i == 2 else "a positive int or None"
            raise ValueError(f"`input_shape[{i}]` must be {need}, got {dim!r} in {input_shape!r}.")
    return shape


def check_tasks(tasks: TasksLike | Task) -> list[Task]:
    """Normalise `tasks` (Tasks, a {name: Task} mapping or one Task) to a non-empty list.

    Raises a ValueError for an empty or non-Task input, duplicate names or an unknown kind.
    """
    if tasks is None or isinstance(tasks, (str, bytes)) or not isinstance(tasks, (Task, Iterable)):
        raise ValueError(f"`tasks` must be a non-empty sequence of tfmot_mtl.tasks.Task, got {tasks!r}.")
    items = as_task_list(tasks)
    if not items:
        raise ValueError("`tasks` is empty: give at least one tfmot_mtl.tasks.Task.")
    for task in items:
        if task.kind not in KINDS:
            raise ValueError(f"Task {task.name!r} has unknown kind {task.kind!r}; use one of {KINDS}.")
        check_positive_int(task.output_channels, f"Task {task.name!r}.output_channels")
    return items


# ---------------------------------------------------------------- layer units


def conv_bn_relu(
    x,
    filters: int,
    kernel_size: int,
    name: str,
    strides: int = 1,
    dilation: int = 1,
    batch_norm: bool = True,
    relu: bool = True,
):
    """Conv2D ('same' padding) -> optional BatchNormalization -> optional ReLU."""
    x = keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        dilation_rate=dilation,
        padding="same",
        use_bias=not batch_norm,
        kernel_initializer="he_normal",
        name=f"{name}_conv",
    )(x)
    if batch_norm:
        x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    if relu:
        x = keras.layers.ReLU(name=f"{name}_relu")(x)
    return x


def resize_to(x, height: int, width: int, name: str, interpolation: str = "bilinear"):
    """Resize a feature map to (height, width): UpSampling2D for integer factors, else Resizing."""
    fh, fw = x.shape[1], x.shape[2]
    if (fh, fw) == (height, width):
        # An identity upsampling keeps the output named as promised.
        return keras.layers.UpSampling2D(size=(1, 1), interpolation=interpolation, name=name)(x)
    if height % fh == 0 and width % fw == 0:
        size = (height // fh, width // fw)
        return keras.layers.UpSampling2D(size=size, interpolation=interpolation, name=name)(x)
    return keras.layers.Resizing(height, width, interpolation=interpolation, name=name)(x)


# ---------------------------------------------------------------- task heads


def aspp_head(
    x,
    task: Task,
    output_size: tuple[int, int],
    channels: int,
    rates: Sequence[int] = (1, 2, 3),
    image_pooling: bool = True,
    batch_norm: bool = True,
    dropout: float = 0.1,
):
    """DeepLabv3-style ASPP head for one dense task, upsampled to `output_size`.

    Branches on the shared features `x`: a 1x1 conv, one 3x3 conv per dilation rate,
    and (optionally) image pooling (global average -> 1x1 conv -> broadcast back to
    the feature size). They are concatenated, projected by a 1x1 conv, passed through
    Dropout, mapped to `task.output_channels` by a 1x1 conv and bilinearly upsampled
    to `output_size`. The upsampling layer is named `task.name`.

    Args:
        x: shared feature map (KerasTensor, NHWC) with a static spatial size.
        task: the dense task the head predicts.
        output_size: (height, width) of the model input.
        channels: channels of every branch and of the projection.
        rates: dilation rates of the 3x3 branches.
        image_pooling: add the global-context branch.
        batch_norm: BatchNormalization after each branch conv and the projection.
        dropout: dropout rate after the projection (0 disables it).
    """
    prefix = f"{task.name}_aspp"
    branches = [conv_bn_relu(x, channels, 1, f"{prefix}_1x1", batch_norm=batch_norm)]
    for rate in rates:
        branches.append(conv_bn_relu(x, channels, 3, f"{prefix}_rate{rate}", dilation=rate, batch_norm=batch_norm))
    if image_pooling:
        pooled = keras.layers.GlobalAveragePooling2D(keepdims=True, name=f"{prefix}_pool")(x)
        pooled = conv_bn_relu(pooled, channels, 1, f"{prefix}_pool", batch_norm=batch_norm)
        # 1x1 -> feature size: nearest and bilinear agree on a constant map; nearest is exact in int8.
        branches.append(
            keras.layers.UpSampling2D(
                size=(x.shape[1], x.shape[2]), interpolation="nearest", name=f"{prefix}_pool_up"
            )(pooled)
        )
    y = keras.layers.Concatenate(name=f"{prefix}_concat")(branches) if len(branches) > 1 else branches[0]
    y = conv_bn_relu(y, channels, 1, f"{prefix}_project", batch_norm=batch_norm)
    if dropout > 0:
        y = keras.layers.Dropout(dropout, name=f"{prefix}_dropout")(y)
    y = keras.layers.Conv2D(task.output_channels, 1, name=f"{task.name}_logits")(y)
    return resize_to(y, output_size[0], output_size[1], name=task.name)


def pooled_head(x, task: Task):
    """Image-level head: GlobalAveragePooling2D -> Dense(task.output_channels) named `task.name`."""
    y = keras.layers.GlobalAveragePooling2D(name=f"{task.name}_pool")(x)
    return keras.layers.Dense(task.output_channels, name=task.name)(y)


def task_heads(
    features,
    tasks: Sequence[Task],
    output_size: tuple[int, int],
    channels: int,
    rates: Sequence[int],
    batch_norm: bool = True,
    dropout: float = 0.1,
) -> dict:
    """One head per task on shared `features`: ASPP for dense tasks, pooled for image-level ones."""
    if isinstance(rates, (int, str)) or not isinstance(rates, Sequence):
        raise ValueError(f"`aspp_rates` must be a sequence of dilation rates, got {rates!r}.")
    for rate in rates:
        check_positive_int(rate, "aspp_rates[i]")
    if len(set(rates)) != len(rates):
        raise ValueError(f"`aspp_rates` must not repeat a rate, got {tuple(rates)}.")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ValueError(f"`dropout` must be a number in [0, 1), got {dropout!r}.")
    outputs = {}
    for task in tasks:
        if task.is_dense:
            outputs[task.name] = aspp_head(
                features, task, output_size, channels, rates, batch_norm=batch_norm, dropout=dropout
            )
        else:
            outputs[task.name] = pooled_head(features, task)
    return outputs
