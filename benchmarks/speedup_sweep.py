"""Measured LiteRT speed-up of stripped models against their ideal MAC ratio.

Channel pruning removes MACs quadratically (a layer losing 70% of its input and output
channels keeps 9% of its MACs) but memory traffic only linearly, and SIMD kernels work on
whole vectors of channels (16 floats with AVX-512, 8 with AVX2, 4 with ARM NEON). How close
the measured speed-up comes to the ideal one (dense MACs / pruned MACs) therefore depends on
how wide the layers are and whether the kept channel counts are multiples of the vector
width. This sweep measures exactly that, on untrained models (latency depends only on the
shapes): for each model, width, input size and channel multiple, magnitude masks remove
`--fraction` of every prunable group (kept counts rounded to the nearest multiple),
`strip_channels` removes them, and dense and stripped .tflite files are timed A/B
interleaved on LiteRT with 1 thread.

    python benchmarks/speedup_sweep.py [--quick] [--widths 1 2] [--resolutions 64 128] [--round-to 1 8 16]
    # prints a table, writes benchmarks/results/speedup_sweep.json
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

MODELS = ("mtl_resnet", "mobilenetv2")


def build(name: str, width: float, resolution: int):
    import keras

    keras.utils.set_random_seed(0)
    if name == "mtl_resnet":
        from tfmot_mtl.datasets import synthetic_scenes
        from tfmot_mtl.models import mtl_resnet

        return mtl_resnet(synthetic_scenes.tasks(), (resolution, resolution, 3), width=width)
    if name == "mobilenetv2":
        return keras.applications.MobileNetV2(input_shape=(resolution, resolution, 3), alpha=width,
                                              weights=None, classes=10)
    raise ValueError(f"unknown model {name!r}; choose from {MODELS}")


def measure(name: str, width: float, resolution: int, multiples: list[int], fraction: float,
            runs: int) -> list[dict]:
    """One dense model against its stripped variants, one per channel multiple, timed together."""
    from tfmot_mtl import lite
    from tfmot_mtl.graph import ChannelGraph
    from tfmot_mtl.masks import read_weights
    from tfmot_mtl.profile import profile
    from tfmot_mtl.strip import strip_channels
    from tfmot_mtl.lite import interleaved_latency
    from vs_tfmot import magnitude_masks

    dense = build(name, width, resolution)
    graph = ChannelGraph.from_model(dense)
    weights = read_weights(graph)
    models, sparsity = {"dense": dense}, {}
    for multiple in multiples:
        masks = magnitude_masks(graph, weights, fraction, multiple)
        models[f"r{multiple}"] = strip_channels(dense, masks)[0]
        sparsity[f"r{multiple}"] = masks.sparsity(graph, graph.prunable_groups)
    lites = {k: lite.LiteModel(lite.convert(m, batch_size=1, verbose=False), num_threads=1)
             for k, m in models.items()}
    latency = interleaved_latency(lites, runs)
    dense_macs, dense_ms = profile(dense).total_macs, latency["dense"]["median_ms"]
    rows = []
    for multiple in multiples:
        key = f"r{multiple}"
        macs = profile(models[key]).total_macs
        ideal, measured = dense_macs / macs, dense_ms / latency[key]["median_ms"]
        rows.append({"model": name, "width": width, "resolution": resolution, "round_to": multiple,
                     "channel_sparsity": sparsity[key], "dense_macs": dense_macs, "macs": macs,
                     "dense_ms": dense_ms, "ms": latency[key]["median_ms"], "ideal_speedup": ideal,
                     "measured_speedup": measured, "speedup_vs_ideal": measured / ideal})
    return rows


def print_rows(rows: list[dict]) -> None:
    head = f"{'model':<12}{'width':>6}{'size':>6}{'round':>6}{'ch.sp.':>8}{'dense ms':>10}{'ms':>8}" \
           f"{'ideal':>8}{'measured':>10}{'ratio':>7}"
    print(head)
    for r in rows:
        print(f"{r['model']:<12}{r['width']:>6g}{r['resolution']:>6}{r['round_to']:>6}{r['channel_sparsity']:>8.1%}"
              f"{r['dense_ms']:>10.2f}{r['ms']:>8.2f}{r['ideal_speedup']:>7.2f}x{r['measured_speedup']:>9.2f}x"
              f"{r['speedup_vs_ideal']:>7.2f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["mtl_resnet"], choices=MODELS)
    parser.add_argument("--widths", nargs="+", type=float, default=[1.0, 2.0])
    parser.add_argument("--resolutions", nargs="+", type=int, default=[64, 128])
    parser.add_argument("--round-to", nargs="+", type=int, default=[1, 8, 16])
    parser.add_argument("--fraction", type=float, default=0.7, help="channels removed per group")
    parser.add_argument("--runs", type=int, default=60, help="timed runs per model (median)")
    parser.add_argument("--quick", action="store_true", help="one tiny configuration (smoke test)")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "speedup_sweep.json"))
    args = parser.parse_args(argv)
    if args.quick:
        args.widths, args.resolutions, args.round_to, args.runs = [0.5], [32], [1, 4], 5
    rows = []
    for name, width, resolution in itertools.product(args.models, args.widths, args.resolutions):
        rows += measure(name, width, resolution, args.round_to, args.fraction, args.runs)
        print_rows(rows[-len(args.round_to):])
    print("\nall configurations:")
    print_rows(rows)
    from tfmot_mtl.utils.atomic import atomic_write

    atomic_write(args.out, json.dumps({"fraction": args.fraction, "runs": args.runs, "rows": rows}, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
