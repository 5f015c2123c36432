"""Build every reference model, print its size and run one forward pass.

    python examples/build_models.py          # default sizes, 64x64 input
    python examples/build_models.py --fast   # tiny widths, 32x32 input (seconds)

The multi-task models get the synthetic-scenes tasks (segmentation with 8 classes,
depth, surface normals); the multi-domain ResNet-26 gets four domains.
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from tfmot_mtl import models  # noqa: E402
from tfmot_mtl.tasks import Task  # noqa: E402

SCENE_TASKS = [
    Task("segmentation", "segmentation", 8),
    Task("depth", "depth", 1),
    Task("normals", "normals", 3),
]
DOMAINS = [("digits", 10), ("shapes", 4), ("textures", 12), ("letters", 26)]


def conv_dense_macs(model: keras.Model) -> int:
    """Multiply-accumulates of the Conv2D and Dense layers for one image (a rough count)."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            _, height, width, _ = layer.output.shape
            total += height * width * int(np.prod(layer.kernel.shape))
        elif isinstance(layer, keras.layers.Dense):
            total += int(np.prod(layer.kernel.shape))
    return total


def describe(model: keras.Model, image: np.ndarray) -> None:
    """Print parameters, MACs and output shapes of one forward pass."""
    start = time.perf_counter()
    outputs = model({"image": image}, training=False)
    seconds = time.perf_counter() - start
    print(f"{model.name}: {model.count_params():,} params, {conv_dense_macs(model) / 1e6:.1f} M MACs/image")
    for key in sorted(outputs):  # dict keys (task names), not model.output_names (the layers' names)
        print(f"  {key:<14} {tuple(outputs[key].shape)}")
    print(f"  forward pass on {len(image)} images: {seconds:.2f} s")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fast", action="store_true", help="tiny widths and 32x32 input")
    args = parser.parse_args(argv)

    size, width = (32, 0.25) if args.fast else (64, 1.0)
    image = np.random.default_rng(0).random((4, size, size, 3), dtype=np.float32)
    print(f"available models: {', '.join(models.available())}")
    for name in models.available():
        tasks_or_domains = DOMAINS if name == "mdl_resnet26" else SCENE_TASKS
        model = models.build(name, tasks_or_domains, input_shape=(size, size, 3), width=width)
        describe(model, image)


if __name__ == "__main__":
    main()
