"""Graph build and strip time on keras.applications models (weights=None).

Usage: python benchmarks/strip_speed.py [--input-size 64] [--fraction 0.5] [--repeats 3]
Writes benchmarks/results/strip_speed.json.
"""
import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from tfmot_mtl.utils.atomic import atomic_write  # noqa: E402
from tfmot_mtl.graph import ChannelGraph  # noqa: E402
from tfmot_mtl.masks import ChannelMasks  # noqa: E402
from tfmot_mtl.strip import strip_channels  # noqa: E402

MODELS = {"ResNet50": keras.applications.ResNet50, "MobileNetV2": keras.applications.MobileNetV2,
          "DenseNet121": keras.applications.DenseNet121}


def random_masks(graph, fraction, seed=0):
    rng = np.random.default_rng(seed)
    return ChannelMasks({g.id: rng.random(g.size) >= fraction for g in graph.prunable_groups})


def measure(name, size, fraction, repeats):
    model = MODELS[name](weights=None, input_shape=(size, size, 3), classes=10)
    graph_s, strip_s = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        graph = ChannelGraph.from_model(model)
        graph_s.append(time.perf_counter() - t)
        masks = random_masks(graph, fraction)
        t = time.perf_counter()
        small, report = strip_channels(model, masks)
        strip_s.append(time.perf_counter() - t)
    x = np.random.default_rng(0).random((1, size, size, 3)).astype("float32")
    return {"model": name, "groups": len(graph.groups), "prunable": len(graph.prunable_groups),
            "graph_s": float(np.median(graph_s)), "strip_s": float(np.median(strip_s)),
            "params_before": report.totals["params_before"], "params_after": report.totals["params_after"],
            "output_shape_kept": tuple(small(x).shape) == tuple(model(x).shape)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--input-size", type=int, default=64)
    ap.add_argument("--fraction", type=float, default=0.5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--models", nargs="*", default=list(MODELS))
    ap.add_argument("--out", default="benchmarks/results/strip_speed.json")
    args = ap.parse_args()
    rows = [measure(n, args.input_size, args.fraction, args.repeats) for n in args.models]
    print(f"{'model':<12} {'groups':>6} {'prunable':>8} {'graph s':>8} {'strip s':>8} {'params':>24}")
    for r in rows:
        print(f"{r['model']:<12} {r['groups']:>6} {r['prunable']:>8} {r['graph_s']:>8.2f} {r['strip_s']:>8.2f} "
              f"{r['params_before']:>11,} -> {r['params_after']:>10,}")
    atomic_write(args.out, json.dumps({"input_size": args.input_size, "fraction": args.fraction, "rows": rows},
                                      indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
