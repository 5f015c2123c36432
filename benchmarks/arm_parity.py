"""The demo's compressed model on LiteRT's ARM64 build (qemu) against x86 LiteRT and Keras.

For each quantization (float32, float16, dynamic-range, full int8 calibrated on training
images) the stripped model of ``make demo`` is converted once and run on test images of the
demo's dataset by the aarch64 ``ai-edge-litert`` wheel under qemu user-mode emulation, on
three CPU models: Cortex-A53 (NEON only), Cortex-A76 (dot product) and qemu's ``max`` without
SME (dot product and i8mm). Every output is compared with x86 LiteRT on the same input
tensors (max abs / rel error, share of differing elements, quantization steps for int8
outputs) and with the Keras model. Emulation checks outputs, never speed.

    make demo                           # writes saved_models/demo/sparse_stripped.keras
    python benchmarks/arm_parity.py     # prints the table, writes benchmarks/results/arm_parity.json
    python benchmarks/arm_parity.py --model other.keras --images 2 --cpus cortex-a53 "max,sme=off"

Needs root (or qemu-user-static and mmdebstrap installed) and the package index the first time;
the aarch64 environment is then cached (``tfmot_mtl.lite.arm.cache_folder``).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

QUANTIZATIONS = (None, "float16", "dynamic", "int8")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=os.path.join("saved_models", "demo", "sparse_stripped.keras"))
    parser.add_argument("--images", type=int, default=4, help="test images run on every CPU model")
    parser.add_argument("--cpus", nargs="+", default=["cortex-a53", "cortex-a76", "max,sme=off"])
    parser.add_argument("--install-tools", action="store_true", help="apt-get install qemu / mmdebstrap (root)")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "arm_parity.json"))
    args = parser.parse_args(argv)
    if not os.path.isfile(args.model):
        raise SystemExit(f"error: no model at {args.model}: run `make demo` first, or pass --model")

    import keras
    import numpy as np

    from tfmot_mtl.recipes import experiment as ex
    from tfmot_mtl import lite
    from tfmot_mtl.lite import arm

    model = keras.models.load_model(args.model, compile=False)
    resolution = int(model.inputs[0].shape[1])
    data = ex.load_data("synthetic_scenes", n_train=64, n_test=args.images, resolution=resolution)
    batch = next(iter(data.test))[0]
    x = ({k: np.asarray(v)[:args.images] for k, v in batch.items()} if isinstance(batch, dict)
         else np.asarray(batch)[:args.images])
    t0 = time.time()
    env = arm.prepare(install=args.install_tools)
    prepare_s = time.time() - t0
    rows, seconds = [], {}
    for quantization in QUANTIZATIONS:
        tflite = lite.convert(model, quantization=quantization, representative_data=data.train,
                              num_calibration_steps=2, verbose=False)
        t0 = time.time()
        report = arm.check_arm(tflite, x, args.cpus, keras_model=model, env=env)
        name = quantization or "float32"
        seconds[name] = round(time.time() - t0, 1)
        print(f"\n{name} ({len(tflite) / 1024:.0f} KiB, {seconds[name]} s under emulation)")
        print(report.table())
        rows += [{"quantization": name, **row} for row in report.rows]
    result = {"model": args.model, "images": args.images, "cpus": args.cpus,
              "litert": env.litert_version, "numpy": env.numpy_version, "prepare_s": round(prepare_s, 1),
              "emulation_s": seconds, "ok": all(r["delegate"] and (r["max_steps"] is None or r["max_steps"] <= 1)
                                                for r in rows), "rows": rows}
    print(f"\nenvironment ready in {prepare_s:.1f} s; all delegates created and int8 within one step: {result['ok']}")
    ex.write_json(args.out, result)
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
