"""Run a .tflite on LiteRT's ARM64 build (the kernels Android phones run) under qemu and compare
every output with x86 LiteRT and Keras.

    python examples/check_on_arm.py --fast
    python examples/check_on_arm.py --model my_model.keras --cpus cortex-a53 cortex-a76 "max,sme=off"

Without --model a small two-task model with random weights is used. The first run builds the
aarch64 environment (qemu-user-static and mmdebstrap needed; ``--install-tools`` installs them
with apt-get as root) and caches it; later runs start at once. Same check from the shell:
``tfmot-mtl check-arm model.tflite --keras model.keras``.
"""
import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from tfmot_mtl import lite  # noqa: E402
from tfmot_mtl.lite import arm  # noqa: E402


def small_model(size: int) -> keras.Model:
    keras.utils.set_random_seed(0)
    image = keras.Input((size, size, 3), name="image")
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(image)
    x = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(32, 1, activation="relu")(x)
    seg = keras.layers.Conv2D(4, 1, name="seg_logits")(x)
    cls = keras.layers.Dense(3, name="cls_logits")(keras.layers.GlobalAveragePooling2D()(x))
    return keras.Model(image, {"seg": seg, "cls": cls})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a .keras model (default: a small two-task model)")
    parser.add_argument("--cpus", nargs="+", default=list(arm.DEFAULT_CPUS), help="qemu CPU models")
    parser.add_argument("--install-tools", action="store_true", help="apt-get install qemu / mmdebstrap (root)")
    parser.add_argument("--fast", action="store_true", help="one CPU model, two images")
    args = parser.parse_args()

    model = keras.models.load_model(args.model, compile=False) if args.model else small_model(16)
    shape = (2 if args.fast else 4,) + tuple(model.inputs[0].shape[1:])
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    cpus = args.cpus[:1] if args.fast else args.cpus
    try:
        env = arm.prepare(install=args.install_tools)
    except arm.ArmSetupError as err:
        raise SystemExit(f"error: {err}")
    for quantization in (None, "int8"):
        tflite = lite.convert(model, quantization, representative_data=[x], verbose=False)
        report = arm.check_arm(tflite, x, cpus, keras_model=model, env=env)
        print(f"\n{report.quantization}: {'ok' if report.ok else 'MISMATCH'}")
        print(report.table())


if __name__ == "__main__":
    main()
