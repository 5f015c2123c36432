"""Multi-domain ResNet-26 (the Visual Decathlon / budget-aware adapters backbone, as in
budget-aware pruning for multi-domain learning, dos Santos et al. 2023).

ResNet-26 = a 3x3 stem conv + 3 stages x 4 basic blocks (24 convs) + a classifier.
Stages have 2x, 4x, 8x the stem's channels and each starts with stride 2 (64x64 input
-> 8x8 features). Strided blocks use a ResNet-D projection shortcut (average pooling +
1x1 conv); the original's zero-padded shortcut cannot be written with standard layers.
`base_channels=32` gives the original widths (32, 64, 128, 256); the default is half of
that so the model trains quickly on a CPU.

The backbone is a model of its own (`resnet26_backbone`) so that the budget module can
rebuild it with per-domain channel switches; `mdl_resnet26` adds one
GlobalAveragePooling2D -> Dense classifier per domain on the backbone's output.
"""
from __future__ import annotations

from collections.abc import Sequence

import keras

from tfmot_mtl.models.heads import check_input_shape, check_positive_int, check_width, conv_bn_relu, scaled
from tfmot_mtl.models.mtl_resnet import basic_block
from tfmot_mtl.tasks import Task

STAGES = 3
BLOCKS_PER_STAGE = 4


def resnet26_backbone(
    input_shape: tuple = (64, 64, 3),
    width: float = 1.0,
    base_channels: int = 16,
    name: str = "resnet26_backbone",
) -> keras.Model:
    """ResNet-26 feature extractor: input "image" -> features at output stride 8.

    Args:
        input_shape: (height, width, channels); height and width may be None.
        width: channel multiplier; every conv gets `max(1, round(base * width))` filters.
        base_channels: stem channels; stages use 2x, 4x and 8x this.
        name: model name.

    Returns:
        A functional `keras.Model` with dict input {"image": ...} and one output, the
        final block's ReLU (layer "stage3_block4_out").
    """
    input_shape = check_input_shape(input_shape, fixed=False)
    width = check_width(width)
    check_positive_int(base_channels, "base_channels")

    image = keras.Input(shape=input_shape, name="image")
    x = conv_bn_relu(image, scaled(base_channels, width), 3, "stem")
    for s in range(1, STAGES + 1):
        filters = scaled(base_channels * 2**s, width)
        for b in range(1, BLOCKS_PER_STAGE + 1):
            x = basic_block(x, filters, f"stage{s}_block{b}", strides=2 if b == 1 else 1)
    return keras.Model({"image": image}, x, name=name)


def check_domains(domains) -> list[tuple[str, int]]:
    """Normalise `domains` to [(name, num_classes)], accepting pairs or classification Tasks."""
    if isinstance(domains, (str, Task)) or not isinstance(domains, Sequence) or len(domains) == 0:
        raise ValueError(f"`domains` must be a non-empty sequence of (name, num_classes) pairs, got {domains!r}.")
    pairs, seen = [], set()
    for domain in domains:
        if isinstance(domain, Task):
            domain = (domain.name, domain.output_channels)
        if not isinstance(domain, Sequence) or isinstance(domain, str) or len(domain) != 2:
            raise ValueError(f"Each domain must be a (name, num_classes) pair, got {domain!r}.")
        domain_name, classes = domain
        if not isinstance(domain_name, str) or not domain_name:
            raise ValueError(f"Domain names must be non-empty strings, got {domain_name!r}.")
        check_positive_int(classes, f"num_classes of domain {domain_name!r}")
        if domain_name in seen:
            raise ValueError(f"Domain names must be unique; {domain_name!r} appears twice.")
        seen.add(domain_name)
        pairs.append((domain_name, classes))
    return pairs


def domain_classifiers(features, domains: Sequence[tuple[str, int]]) -> dict:
    """One GlobalAveragePooling2D -> Dense(num_classes, name=domain) classifier per domain."""
    outputs = {}
    for domain_name, classes in domains:
        pooled = keras.layers.GlobalAveragePooling2D(name=f"{domain_name}_pool")(features)
        outputs[domain_name] = keras.layers.Dense(classes, name=domain_name)(pooled)
    return outputs


def mdl_resnet26(
    domains: Sequence,
    input_shape: tuple = (64, 64, 3),
    width: float = 1.0,
    base_channels: int = 16,
    name: str = "mdl_resnet26",
) -> keras.Model:
    """Build a multi-domain ResNet-26: shared backbone, one classifier per domain.

    Args:
        domains: (name, num_classes) pairs (or classification `Task`s), one per domain.
        input_shape: (height, width, channels); height and width may be None.
        width: channel multiplier.
        base_channels: stem channels (32 = the original ResNet-26 widths).
        name: model name.

    Returns:
        A flat functional `keras.Model` with dict input {"image": ...} and dict outputs of logits
        (batch, num_classes) keyed by domain name. It shares its layers with the
        backbone built by `resnet26_backbone`.
    """
    domains = check_domains(domains)
    backbone = resnet26_backbone(input_shape, width, base_channels)
    # Heads go on the backbone's own output tensor so the result stays one flat graph.
    outputs = domain_classifiers(backbone.output, domains)
    return keras.Model(backbone.input, outputs, name=name)
