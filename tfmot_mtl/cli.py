"""`tfmot-mtl` command line: data, train, prune, strip, convert, bench, demo."""
from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DEFAULT_OUT = "saved_models"


def _cmd_data(args) -> int:
    from tfmot_mtl.datasets.preview import preview

    summary = preview(args.name, n=args.n, out=os.path.join(args.out, f"data_{args.name}"),
                      resolution=args.resolution)
    print(json.dumps(summary, indent=2))
    return 0


def _cmd_train(args) -> int:
    from tfmot_mtl import experiment as ex
    from tfmot_mtl.task_eval import print_results

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


def _load_keras(path: str):
    from tfmot_mtl.model_files import load_model

    try:
        return load_model(path)
    except (OSError, ValueError) as err:
        raise SystemExit(f"error: {err}")


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
    from tfmot_mtl.lite_bundle import save_bundle

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
    from tfmot_mtl.lite_eval import benchmark

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


def _cmd_prune(args) -> int:
    from tfmot_mtl import experiment as ex
    from tfmot_mtl.pruning.run import CRITERIA, prune_model, steps_per_epoch
    from tfmot_mtl.strip import strip_channels
    from tfmot_mtl.task_eval import print_results

    if not 0.0 < args.target < 1.0:
        raise SystemExit(f"error: --target must be a fraction of channels in (0, 1), got {args.target}")
    if args.criterion not in CRITERIA:
        raise SystemExit(f"error: unknown --criterion {args.criterion!r}; choose one of {CRITERIA}")
    model = _load_keras(args.model)
    res = model.inputs[0].shape[1]
    data = ex.load_data(args.data, n_train=args.n_train, n_test=args.n_test,
                        batch_size=args.batch_size, resolution=res, seed=args.seed)
    missing = sorted({t.name for t in data.tasks} - set(model.output_names))
    if missing:
        raise SystemExit(f"error: {args.model} has outputs {sorted(model.output_names)} but "
                         f"{args.data} has tasks {missing} it does not predict")
    dense = ex.evaluate(model, data)
    per_epoch = steps_per_epoch(data.train)
    model, masks, history = prune_model(
        model, data, args.criterion, target=args.target, frequency=args.frequency or per_epoch,
        step=None if args.count else args.step, count=args.count,
        fine_tune_steps=args.epochs * per_epoch, groups=args.groups, min_channels=args.min_channels,
        lr=args.lr, round_to=args.round_to, seed=args.seed, verbose=2)
    small, report = strip_channels(model, masks)
    results = ex.evaluate(small, data)
    folder = args.out or os.path.splitext(args.model)[0] + f"_pruned_{args.criterion}"
    os.makedirs(folder, exist_ok=True)
    path = ex.save_model(small, os.path.join(folder, "pruned_stripped.keras"))
    masks.save(os.path.join(folder, "masks.json"))
    history.pop("snapshots")
    ex.write_json(os.path.join(folder, "report.json"), {
        "model": args.model, "data": args.data, "criterion": args.criterion, "target": args.target,
        "groups": args.groups, "metrics_dense": dense, "metrics_pruned": results,
        "strip": report.to_dict(), "history": history})
    report.print()
    print_results(results, title=f"pruned ({args.criterion}, target {args.target}) vs unpruned",
                  baseline=dense, tasks=data.tasks)
    print(f"saved {path}, masks.json and report.json in {folder}")
    return 0


def _cmd_budget(args) -> int:
    from tfmot_mtl import experiment as ex
    from tfmot_mtl.budget import pipeline

    if not 0.0 < args.budget <= 1.0:
        raise SystemExit(f"error: --budget must be the fraction of channels each domain may use, in (0, 1], "
                         f"got {args.budget}")
    result = pipeline.run(budget=args.budget, sharing=args.sharing, resolution=args.resolution,
                          width=args.width, n_train=args.n_train, epochs=args.epochs,
                          budget_epochs=args.budget_epochs, finetune=args.finetune, lr=args.lr,
                          sharing_weight=args.sharing_weight, measure=args.measure, seed=args.seed,
                          verbose=2 if args.verbose else 0)
    folder = args.out
    os.makedirs(folder, exist_ok=True)
    path = ex.save_model(result["model"], os.path.join(folder, "budget_stripped.keras"))
    ex.write_json(os.path.join(folder, "masks.json"), {
        "union": json.loads(result["union"].to_json()),
        "domains": {d: json.loads(m.to_json()) for d, m in result["domains"].items()}})
    ex.write_json(os.path.join(folder, "report.json"), {
        "budget": args.budget, "sharing": args.sharing, "measure": args.measure,
        "unpruned_accuracy": result["unpruned_accuracy"], "accuracy": result["accuracy"],
        "usage": result["usage"], "summary": result["summary"], "report": result["report"].to_dict(),
        "strip": result["strip"].totals})
    print(result["report"])
    s = result["summary"]
    print(f"unpruned mean accuracy {100 * s['unpruned_mean_accuracy']:.1f}%, stripped {100 * s['mean_accuracy']:.1f}%; "
          f"params {s['params_vs_one']:.2f}x and MACs {s['macs_vs_one']:.2f}x of ONE single-domain model")
    print(f"saved {path}, masks.json and report.json in {folder}")
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
    p.add_argument("--round-to", type=int, default=None,
                   help="kept channels per group a multiple of this (SIMD width: 16 AVX-512, 8 AVX2, 4 NEON)")
    p.add_argument("--round-mode", default="up", choices=["up", "nearest"],
                   help="up: add channels back; nearest: also drop the weakest to stay near the masks' sparsity")
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

    p = sub.add_parser("prune", help="iterative importance pruning with fine-tuning, then strip")
    p.add_argument("model", help="a trained multi-task .keras model")
    p.add_argument("--criterion", default="taylor",
                   help="taylor | cosprune | magnitude | bnscale | random")
    p.add_argument("--target", type=float, default=0.7, help="fraction of the channels to remove")
    p.add_argument("--data", default="synthetic_scenes", choices=["synthetic_scenes", "multi_digits"])
    p.add_argument("--frequency", type=int, default=None, help="steps between pruning events (default: one epoch)")
    p.add_argument("--step", type=float, default=0.05, help="fraction removed per event")
    p.add_argument("--count", type=int, default=None, help="channels removed per event (instead of --step)")
    p.add_argument("--epochs", type=int, default=2, help="fine-tuning epochs after the last event")
    p.add_argument("--groups", default="shared", choices=["shared", "all"])
    p.add_argument("--min-channels", type=int, default=2)
    p.add_argument("--round-to", type=int, default=None)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--n-train", type=int, default=None)
    p.add_argument("--n-test", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="output folder (default: next to the model)")
    p.set_defaults(fn=_cmd_prune)

    p = sub.add_parser("budget", help="budget-aware multi-domain pruning of mdl_resnet26 on multi_domain")
    p.add_argument("--budget", type=float, default=0.5, help="fraction of channels each domain may use, (0, 1]")
    p.add_argument("--sharing", default="jaccard", choices=["none", "jaccard", "intersection", "union"])
    p.add_argument("--sharing-weight", type=float, default=1.0)
    p.add_argument("--measure", default="channels", choices=["channels", "macs"])
    p.add_argument("--epochs", type=int, default=8, help="multi-domain pre-training epochs (switches on)")
    p.add_argument("--budget-epochs", type=int, default=3, help="epochs training the switches under the budget")
    p.add_argument("--finetune", type=int, default=2, help="fine-tuning epochs on the final switches")
    p.add_argument("--width", type=float, default=0.5)
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--n-train", type=int, default=400, help="training images per domain")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--verbose", action="store_true")
    p.add_argument("--out", default=os.path.join(DEFAULT_OUT, "budget"))
    p.set_defaults(fn=_cmd_budget)

    p = sub.add_parser("demo", help="end-to-end demo on synthetic_scenes (dense vs group-sparse, stripped)")
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
