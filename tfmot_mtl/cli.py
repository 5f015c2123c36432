"""`tfmot-mtl` command line: data, train, prune, sparsify, budget, strip, convert, bench, demo."""
from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tfmot_mtl.cli_compress import DEFAULT_OUT, add_compress_commands, load_keras as _load_keras  # noqa: E402
from tfmot_mtl.cli_compress import round_to_arg  # noqa: E402


def _cmd_data(args) -> int:
    from tfmot_mtl.datasets.preview import preview

    summary = preview(args.name, n=args.n, out=os.path.join(args.out, f"data_{args.name}"),
                      resolution=args.resolution)
    print(json.dumps(summary, indent=2))
    return 0


def _cmd_train(args) -> int:
    from tfmot_mtl import experiment as ex
    from tfmot_mtl.tasks import print_results

    data = ex.load_data(args.data, n_train=args.n_train, n_test=args.n_test,
                        batch_size=args.batch_size, resolution=args.resolution, seed=args.seed)
    model = ex.build_model(args.model, data.tasks, data.input_shape, width=args.width, seed=args.seed)
    ex.fit(model, data, epochs=args.epochs, lr=args.lr)
    results = ex.evaluate(model, data)
    print_results(results, title=f"{args.model} on {args.data}")
    folder = os.path.join(args.out, args.name or f"{args.model}_{args.data}")
    path = ex.save_model(model, os.path.join(folder, "model.keras"))
    ex.write_json(os.path.join(folder, "metrics.json"), {"model": args.model, "data": args.data,
                                                         "epochs": args.epochs, "metrics": results})
    print(f"saved {path} and metrics.json")
    return 0


def _cmd_strip(args) -> int:
    from tfmot_mtl import experiment as ex
    from tfmot_mtl.masks import ChannelMasks
    from tfmot_mtl.strip import strip_channels

    model = _load_keras(args.model)
    try:
        masks = ChannelMasks.load(args.masks) if args.masks else None
        small, report = strip_channels(model, masks, round_to=args.round_to, round_mode=args.round_mode)
    except (OSError, ValueError) as err:
        raise SystemExit(f"error: {err}")
    out = args.output or os.path.splitext(args.model)[0] + "_stripped.keras"
    ex.save_model(small, out)
    ex.write_json(os.path.splitext(out)[0] + "_report.json", report.to_dict())
    report.print()
    print(f"saved {out}")
    return 0


def _cmd_convert(args) -> int:
    from tfmot_mtl import experiment as ex
    from tfmot_mtl.lite import convert
    from tfmot_mtl.lite import save_bundle

    if args.quantization in ("int8", "int16x8") and not args.data:
        raise SystemExit(f"error: --quantization {args.quantization} calibrates activation ranges on data: "
                         f"add --data synthetic_scenes (or multi_digits)")
    model = _load_keras(args.model)
    tasks, representative = None, None
    if args.data:
        res = model.inputs[0].shape[1]
        data = ex.load_data(args.data, n_train=args.calibration, n_test=8, batch_size=1, resolution=res)
        tasks, representative = data.tasks, data.representative(args.calibration)
    tfl = convert(model, quantization=args.quantization, representative_data=representative,
                  num_calibration_steps=args.calibration)
    folder = args.output or os.path.splitext(args.model)[0] + f"_{args.quantization or 'float32'}"
    save_bundle(model, tfl, folder, tasks=tasks)
    print(f"wrote {folder}/model.tflite ({len(tfl):,} bytes) and {folder}/model.json")
    return 0


def _cmd_bench(args) -> int:
    from tfmot_mtl import experiment as ex
    from tfmot_mtl.lite import benchmark

    path = args.model
    if os.path.isdir(path):
        path = os.path.join(path, "model.tflite")
    if not os.path.isfile(path):
        raise SystemExit(f"error: no .tflite file at {path} (give a .tflite file or a bundle folder)")
    try:
        result = benchmark(path, runs=args.runs, warmup=args.warmup, num_threads=args.threads)
    except ValueError as err:
        raise SystemExit(f"error: {err}")
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"LiteRT benchmark: {path}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in result.items():
        table.add_row(k, f"{v:.3f}" if isinstance(v, float) else str(v))
    Console().print(table)
    if args.json:
        ex.write_json(args.json, result)
    print(json.dumps(result))
    return 0

def _cmd_demo(args) -> int:
    from tfmot_mtl.demo import run_demo

    run_demo(out=args.out, full=args.full, fast=args.fast)
    return 0

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tfmot-mtl",
        description="Make multi-task / multi-domain Keras models smaller and faster: find "
                    "channels to remove, strip them, ship to TFLite.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("data", help="build an embedded dataset, print a summary, save a sample grid")
    p.add_argument("name", choices=["synthetic_scenes", "multi_digits", "multi_domain"])
    p.add_argument("--n", type=int, default=16, help="examples to generate for the summary")
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--out", default=DEFAULT_OUT)
    p.set_defaults(fn=_cmd_data)

    p = sub.add_parser("train", help="train a reference model on an embedded dataset")
    p.add_argument("--model", default="mtl_resnet", choices=["mtl_resnet", "mtl_vgg"])
    p.add_argument("--data", default="synthetic_scenes", choices=["synthetic_scenes", "multi_digits"])
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--n-train", type=int, default=None)
    p.add_argument("--n-test", type=int, default=None)
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", default=None, help="output folder name under --out")
    p.add_argument("--out", default=DEFAULT_OUT)
    p.set_defaults(fn=_cmd_train)

    p = sub.add_parser("strip", help="remove masked (or all-zero) channels from a .keras model")
    p.add_argument("model")
    p.add_argument("--masks", default=None, help="ChannelMasks JSON; default: strip all-zero channels")
    p.add_argument("--round-to", type=round_to_arg, default=None,
                   help="kept channels per group a multiple of this (SIMD width: 16 AVX-512, 8 AVX2, 4 NEON)")
    p.add_argument("--round-mode", default="up", choices=["up", "nearest", "total"],
                   help="up: add channels back; nearest: each group to its nearest multiple (may also drop "
                        "the weakest); total: groups up or down so the total kept count stays the masks'")
    p.add_argument("--output", default=None)
    p.set_defaults(fn=_cmd_strip)

    p = sub.add_parser("convert", help="convert a .keras model to a TFLite mobile bundle")
    p.add_argument("model")
    p.add_argument("--quantization", default=None,
                   choices=[None, "dynamic", "float16", "int8", "int16x8"])
    p.add_argument("--data", default=None, choices=["synthetic_scenes", "multi_digits"],
                   help="embedded dataset for int8 calibration and task descriptions")
    p.add_argument("--calibration", type=int, default=64, help="calibration examples")
    p.add_argument("--output", default=None, help="bundle folder")
    p.set_defaults(fn=_cmd_convert)

    p = sub.add_parser("bench", help="LiteRT latency / size / memory of a .tflite (or bundle folder)")
    p.add_argument("model")
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None, help="also write the result to this JSON file")
    p.set_defaults(fn=_cmd_bench)

    add_compress_commands(sub)

    p = sub.add_parser("demo", help="end-to-end demo on synthetic_scenes (dense vs compressed: pruned, stripped, fine-tuned)")
    p.add_argument("--full", action="store_true", help="longer, more faithful setting")
    p.add_argument("--fast", action="store_true", help="tiny smoke-test setting (seconds)")
    p.add_argument("--out", default=os.path.join(DEFAULT_OUT, "demo"))
    p.set_defaults(fn=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
