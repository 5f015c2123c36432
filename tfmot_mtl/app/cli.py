"""`tfmot-mtl` command line: data, train, prune, sparsify, budget, compress, strip, convert, bench, check-arm,
demo."""
from __future__ import annotations

import argparse
import json
import os
import re
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tfmot_mtl.app.cli_compress import DEFAULT_OUT, add_compress_commands, load_keras as _load_keras  # noqa: E402
from tfmot_mtl.masks import ROUND_MODES  # noqa: E402
from tfmot_mtl.selection import COST_FLOOR_SHARE, MIN_CHANNELS, MIN_FRACTION  # noqa: E402
from tfmot_mtl.app.cli_compress import (add_data_spec_args, check_floor_flags, data_error, data_spec,  # noqa: E402
                                    load_model_data, round_to_arg, task_file)


def _cmd_data(args) -> int:
    from tfmot_mtl.datasets.preview import preview

    summary = preview(args.name, n=args.n, out=os.path.join(args.out, f"data_{args.name}"),
                      resolution=args.resolution)
    print(json.dumps(summary, indent=2))
    return 0


def _cmd_train(args) -> int:
    from tfmot_mtl.recipes import experiment as ex
    from tfmot_mtl.tasks import print_results

    data = _training_data(args)
    model = ex.build_model(args.model, data.tasks, data.input_shape, width=args.width, seed=args.seed)
    data = _fitted(args, data, model)
    ex.fit(model, data, epochs=args.epochs, lr=args.lr)
    results = ex.evaluate(model, data)
    print_results(results, title=f"{args.model} on {data.name}")
    folder = os.path.join(args.out, args.name or f"{args.model}_{_file_name(data.name)}")
    path = ex.save_model(model, os.path.join(folder, "model.keras"))
    ex.write_json(os.path.join(folder, "metrics.json"), {"model": args.model, "data": data.name,
                                                         "epochs": args.epochs, "metrics": results})
    print(f"saved {path} and metrics.json")
    return 0


def _file_name(text: str) -> str:
    """``text`` usable as a folder name (a data spec may hold ':' and '/')."""
    return re.sub(r"[^\w.-]+", "_", text).strip("_") or "data"


def _training_data(args):
    """--data for a reference model built from the data's tasks (or --tasks) and input shape."""
    from tfmot_mtl.recipes import experiment as ex
    from tfmot_mtl.app import model_data as md
    from tfmot_mtl.datasets.spec import load_spec

    tasks, spec = task_file(args), data_spec(args)
    shape = None if args.resolution is None else (args.resolution, args.resolution, 3)
    try:
        train, test, data_tasks = load_spec(spec, data_dir=args.data_dir, input_shape=shape,
                                            batch_size=args.batch_size, n_train=args.n_train,
                                            n_test=args.n_test, seed=args.seed)
        input_shape = md.data_input_shape(train)
    except ValueError as err:
        raise data_error(args, err) from None
    tasks = tasks if tasks is not None else data_tasks
    if not tasks:
        raise SystemExit(f"error: --tasks: --data {spec} names no tasks and `train` builds the model's "
                         f"outputs from them: give --tasks FILE.json")
    return ex.Data(spec, train, test, list(tasks), input_shape)


def _fitted(args, data, model):
    """``data`` with the built model's input names, its targets checked against the tasks."""
    import dataclasses

    import tensorflow as tf

    from tfmot_mtl.app import model_data as md

    try:
        train, test = (md.fit_targets(md.adapt_inputs(ds, model), data.tasks, model)
                       for ds in (data.train, data.test))
    except (ValueError, tf.errors.OpError) as err:
        raise data_error(args, err) from None
    return dataclasses.replace(data, train=train, test=test)


def _cmd_strip(args) -> int:
    from tfmot_mtl.recipes import experiment as ex
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
    from tfmot_mtl.app import model_data as md
    from tfmot_mtl.lite import save_bundle

    if args.quantization in ("int8", "int16x8") and not args.data:
        raise SystemExit(f"error: --quantization {args.quantization} calibrates activation ranges on data: "
                         f"add --data SPEC (the model's training data: package.module:function, nyuv2:PATH, "
                         f"a TFDS name with --data-dir, or the embedded synthetic_scenes / multi_digits)")
    model = _load_keras(args.model)
    given, data_tasks, representative = task_file(args), None, None
    if args.data:
        representative, data_tasks = _calibration_data(args, model)
    try:
        tasks = md.bundle_tasks(model, given, data_tasks)
    except ValueError as err:
        raise data_error(args, err) from None
    tfl = _convert(model, args.quantization, representative, args.calibration)
    folder = args.output or os.path.splitext(args.model)[0] + f"_{args.quantization or 'float32'}"
    save_bundle(model, tfl, folder, tasks=tasks)
    print(f"wrote {folder}/model.tflite ({len(tfl):,} bytes) and {folder}/model.json")
    return 0


def _calibration_data(args, model):
    """(input batches of --data for calibration, the data's tasks or None)."""
    import tensorflow as tf

    from tfmot_mtl.app import model_data as md
    from tfmot_mtl.datasets.spec import load_spec

    try:
        train, _, tasks = load_spec(args.data, data_dir=args.data_dir, input_shape=md.model_input_shape(model),
                                    batch_size=1, n_train=args.calibration, n_test=1)
        train = md.adapt_inputs(train, model)
    except (ValueError, tf.errors.OpError) as err:
        raise data_error(args, err) from None
    return train.map(lambda x, *rest: x), tasks


def _convert(model, quantization, representative, steps: int) -> bytes:
    from tfmot_mtl.lite import convert

    try:
        return convert(model, quantization=quantization, representative_data=representative,
                       num_calibration_steps=steps)
    except (ValueError, RuntimeError) as err:
        text = " ".join(str(err).split())
        raise SystemExit(f"error: --quantization {quantization or 'float32'}: {text[:2000]}") from None


QUANTIZATIONS = ("float32", "dynamic", "float16", "int8", "int16x8")
TARGETS = {"macs": "MACs to keep: a fraction of the dense model's (0.33) or a count (> 1)",
           "params": "parameters to keep: a fraction of the dense model's (0.33) or a count (> 1)",
           "channels": "share of the selected channels to remove, in (0, 1)"}


def _cmd_compress(args) -> int:
    from tfmot_mtl.recipes import experiment as ex
    from tfmot_mtl.tasks import print_results

    options = _compress_options(args)
    quantizations = _bundles_asked(args.quantization)
    compress = _compress_function()
    model = _load_keras(args.model)
    data = load_model_data(args, model)
    held_out = data.validation if data.validation is not None else data.test
    dense = ex.evaluate(model, data)
    try:
        result = compress(model, data.train, validation=held_out, tasks=data.tasks, verbose=1, **options)
    except ValueError as err:
        raise SystemExit(f"error: compress: {_as_flags(' '.join(str(err).split()))}") from None
    compressed = ex.evaluate(result.model, data)
    folder = args.out or os.path.splitext(args.model)[0] + "_compressed"
    path = ex.save_model(result.model, os.path.join(folder, "model.keras"))
    result.masks.save(os.path.join(folder, "masks.json"))
    report = {**result.to_dict(), "model": args.model, "data": data.name, "options": options,
              "test_metrics": {"dense": dense, "compressed": compressed}, "bundles": {}}
    ex.write_json(os.path.join(folder, "report.json"), report)  # before converting: a failed conversion keeps it
    print_results(compressed, title="compressed vs dense (test split)", baseline=dense, tasks=data.tasks)
    print(f"saved {path}, masks.json, report.json")
    failed = []
    for q in quantizations:
        try:
            report["bundles"][q] = _compressed_bundle(result.model, data, q, args.calibration, folder)
            print(f"saved {report['bundles'][q]['folder']}")
        except SystemExit as err:  # the converter's error, as one line
            report["bundles"][q] = {"error": str(err)}
            failed.append(str(err))
        ex.write_json(os.path.join(folder, "report.json"), report)
    for message in failed:
        print(message, file=sys.stderr)
    return 1 if failed else 0


def _bundles_asked(values: list) -> list:
    """The --quantization values, with ``none`` (alone) for no bundle."""
    if "none" in values:
        if len(values) > 1:
            raise SystemExit(f"error: --quantization none means no bundle; it cannot be combined with {values}")
        return []
    return list(dict.fromkeys(values))


def _as_flags(text: str) -> str:
    """A message of `compress` with its keyword arguments named as the command's flags."""
    for name in (*(f"target_{t}" for t in TARGETS), "find_epochs", "finetune_epochs", "round_to",
                 "min_channels", "min_fraction", "groups"):
        text = re.sub(rf"(?<![\w-]){name}\b", "--" + name.replace("_", "-"), text)
    return text


def _compress_function():
    try:
        from tfmot_mtl.compress import compress
    except ImportError as err:
        raise SystemExit(f"error: compress: tfmot_mtl.compress is not available ({err})") from None
    return compress


def _compress_options(args) -> dict:
    """The keyword arguments of `tfmot_mtl.compress.compress` the flags set (others keep its defaults)."""
    options = {}
    for name in TARGETS:
        value = getattr(args, f"target_{name}")
        if value is not None:
            if not value > 0:
                raise SystemExit(f"error: --target-{name} must be > 0 ({TARGETS[name]}), got {value}")
            count = name != "channels" and value > 1
            options[f"target_{name}"] = int(round(value)) if count else value
    for flag in ("find_epochs", "finetune_epochs"):
        value = getattr(args, flag)
        if value is not None and value < 0:
            raise SystemExit(f"error: --{flag.replace('_', '-')} must be >= 0, got {value}")
    if args.calibration < 1:
        raise SystemExit(f"error: --calibration must be >= 1 batch, got {args.calibration}")
    check_floor_flags(args)
    if args.lr is not None and not 0 < args.lr < 1:
        raise SystemExit(f"error: --lr must be in (0, 1), got {args.lr}")
    for name in ("method", "groups", "find_epochs", "finetune_epochs", "distill", "round_to", "min_channels",
                 "min_fraction", "lr"):
        if getattr(args, name) is not None:
            options[name] = getattr(args, name)
    return options


def _compressed_bundle(model, data, quantization: str, calibration: int, folder: str) -> dict:
    """Converts ``model`` and writes ``folder/<quantization>/`` (calibrated on training inputs)."""
    from tfmot_mtl.lite import save_bundle

    representative = data.representative(calibration) if quantization in ("int8", "int16x8") else None
    tfl = _convert(model, None if quantization == "float32" else quantization, representative, calibration)
    out = os.path.join(folder, quantization)
    save_bundle(model, tfl, out, tasks=data.tasks)
    return {"folder": out, "tflite_size_bytes": len(tfl)}


def add_compress_command(sub) -> None:
    """The `compress` sub-command: a user's trained model + data -> small model, masks, report, bundles."""
    p = sub.add_parser("compress", help="compress a trained model to a MACs / params / channels target "
                                        "(find channels, strip, fine-tune), then convert to TFLite")
    p.add_argument("model", help="a trained .keras model (dict outputs named by task)")
    add_data_spec_args(p)
    target = p.add_mutually_exclusive_group()
    for name, text in TARGETS.items():
        target.add_argument(f"--target-{name}", type=float, default=None, help=text)
    p.add_argument("--method", default=None, choices=["prune", "sparsity"])
    p.add_argument("--groups", default=None, choices=["all", "shared"])
    p.add_argument("--find-epochs", type=int, default=None, help="epochs finding the channels")
    p.add_argument("--finetune-epochs", type=int, default=None, help="epochs fine-tuning the stripped model")
    p.add_argument("--distill", default=None, action=argparse.BooleanOptionalAction,
                   help="fine-tune distilled from the dense model")
    p.add_argument("--lr", type=float, default=None,
                   help="learning rate of both phases (default: the initial rate of the Adam optimizer the model "
                        "was compiled with, half of it for pruning; else 1e-3)")
    p.add_argument("--round-to", type=round_to_arg, default=None,
                   help="kept channels per group a multiple of this (SIMD width: 16 AVX-512, 8 AVX2, 4 NEON)")
    p.add_argument("--min-channels", type=int, default=None,
                   help=f"layer floor: channels kept per group (default {MIN_CHANNELS})")
    p.add_argument("--min-fraction", type=float, default=None,
                   help=f"layer floor: share of each group kept (default: {COST_FLOOR_SHARE:g} of the share that, "
                        f"kept in every group alike, meets a MAC / parameter target; {MIN_FRACTION:g} with "
                        "--target-channels)")
    p.add_argument("--quantization", nargs="*", default=["float32", "int8"], choices=(*QUANTIZATIONS, "none"),
                   help="TFLite bundles to write, one folder each (default: float32 int8; none: no bundle)")
    p.add_argument("--calibration", type=int, default=64, help="training batches calibrating int8")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--n-train", type=int, default=None)
    p.add_argument("--n-test", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="output folder (default: next to the model, <name>_compressed)")
    p.set_defaults(fn=_cmd_compress)


def _cmd_bench(args) -> int:
    from tfmot_mtl.recipes import experiment as ex
    from tfmot_mtl.lite import benchmark, cpu_features, recommend_quantization

    paths = []
    for path in args.model:
        path = os.path.join(path, "model.tflite") if os.path.isdir(path) else path
        if not os.path.isfile(path):
            raise SystemExit(f"error: no .tflite file at {path} (give .tflite files or bundle folders)")
        paths.append(path)
    apis = ["interpreter", "compiled"] if args.api == "both" else [args.api]
    try:
        results = [{"model": path, **benchmark(path, runs=args.runs, warmup=args.warmup, num_threads=args.threads,
                                               api=api, verbose=False)}
                   for path in paths for api in apis]
    except ValueError as err:
        raise SystemExit(f"error: {err}")
    from rich.console import Console
    from rich.table import Table

    cpu = cpu_features()
    table = Table(title=f"LiteRT benchmark, {args.threads} thread(s), {cpu['arch']} "
                        f"({', '.join(cpu['features']) or 'no SIMD flags read'})")
    for col in ("model", "api", "quantization", "size KiB", "median ms", "p90 ms"):
        table.add_column(col, justify="left" if col in ("model", "api", "quantization") else "right")
    for r in results:
        table.add_row(r["model"], r["api"], r["quantization"], f"{r['size_bytes'] / 1024:.0f}",
                      f"{r['median_ms']:.3f}", f"{r['p90_ms']:.3f}")
    Console().print(table)
    by_kind = {r["quantization"]: r["median_ms"] for r in results if r["api"] == apis[0]}
    if "float32" in by_kind and "int8" in by_kind:
        print(recommend_quantization(by_kind["float32"], by_kind["int8"], cpu))
    if args.json:
        ex.write_json(args.json, results if len(results) > 1 else results[0])
    print(json.dumps(results if len(results) > 1 else results[0]))
    return 0


def _cmd_check_arm(args) -> int:
    from tfmot_mtl.recipes import experiment as ex
    from tfmot_mtl.lite import LiteModel, arm, random_inputs

    path = os.path.join(args.model, "model.tflite") if os.path.isdir(args.model) else args.model
    if not os.path.isfile(path):
        raise SystemExit(f"error: no .tflite file at {path} (give a .tflite file or a bundle folder)")
    try:
        lite = LiteModel(path)
        inputs = random_inputs(lite, args.images, seed=args.seed)
        keras_model = _load_keras(args.keras) if args.keras else None
        env = arm.prepare(args.cache, install=args.install_tools)
        report = arm.check_arm(path, inputs, args.cpu, keras_model=keras_model, env=env)
    except (ValueError, arm.ArmSetupError) as err:
        raise SystemExit(f"error: {err}")
    print(report.table())
    print("ok: the delegate was created on every CPU and int outputs are within one quantization step of x86"
          if report.ok else "MISMATCH: see the rows above (no delegate, or int outputs > 1 step from x86)")
    if args.json:
        ex.write_json(args.json, report.to_dict())
    return 0 if report.ok else 1


def _cmd_demo(args) -> int:
    from tfmot_mtl.app.demo import run_demo

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

    p = sub.add_parser("train", help="train a reference model (mtl_resnet / mtl_vgg) on --data")
    p.add_argument("--model", default="mtl_resnet", choices=["mtl_resnet", "mtl_vgg"])
    add_data_spec_args(p)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--n-train", type=int, default=None)
    p.add_argument("--n-test", type=int, default=None)
    p.add_argument("--resolution", type=int, default=None,
                   help="image side for the embedded (default 64) and local-folder datasets; passed as "
                        "input_shape to a module:function")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", default=None, help="output folder name under --out")
    p.add_argument("--out", default=DEFAULT_OUT)
    p.set_defaults(fn=_cmd_train)

    p = sub.add_parser("strip", help="remove masked (or all-zero) channels from a .keras model")
    p.add_argument("model")
    p.add_argument("--masks", default=None, help="ChannelMasks JSON; default: strip all-zero channels")
    p.add_argument("--round-to", type=round_to_arg, default=None,
                   help="kept channels per group a multiple of this (SIMD width: 16 AVX-512, 8 AVX2, 4 NEON)")
    p.add_argument("--round-mode", default="up", choices=ROUND_MODES,
                   help="up: add channels back; nearest: each group to its nearest multiple (may also drop "
                        "the weakest); total: groups up or down so the total kept count stays the masks'")
    p.add_argument("--output", default=None)
    p.set_defaults(fn=_cmd_strip)

    p = sub.add_parser("convert", help="convert a .keras model to a TFLite mobile bundle")
    p.add_argument("model")
    p.add_argument("--quantization", default=None,
                   choices=[None, "dynamic", "float16", "int8", "int16x8"])
    add_data_spec_args(p, default=None)
    p.add_argument("--calibration", type=int, default=64, help="calibration examples")
    p.add_argument("--output", default=None, help="bundle folder")
    p.set_defaults(fn=_cmd_convert)

    p = sub.add_parser("bench", help="LiteRT latency / size / memory of .tflite files (or bundle folders); "
                                     "with a float32 and an int8 file, which one to ship for this CPU")
    p.add_argument("model", nargs="+")
    p.add_argument("--api", default="interpreter", choices=["interpreter", "compiled", "both"],
                   help="LiteRT's Interpreter, its CompiledModel API, or both")
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None, help="also write the result to this JSON file")
    p.set_defaults(fn=_cmd_bench)

    p = sub.add_parser("check-arm", help="run a .tflite on LiteRT's ARM64 build under qemu emulation and "
                                         "compare its outputs with x86 LiteRT (and Keras)")
    p.add_argument("model", help=".tflite file or bundle folder")
    p.add_argument("--cpu", nargs="+", default=["cortex-a53", "cortex-a76", "max,sme=off"],
                   help="qemu CPU models, separated by spaces (a comma belongs to one model: max,sme=off)")
    p.add_argument("--keras", default=None, help="the .keras model the file came from, to compare with too")
    p.add_argument("--images", type=int, default=2, help="random inputs in [0, 1] to run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", default=None, help="folder of prepared aarch64 environments "
                                                 "(default $TFMOT_MTL_CACHE or ~/.cache/tfmot_mtl)")
    p.add_argument("--install-tools", action="store_true",
                   help="apt-get install qemu-user-static and mmdebstrap when missing (root)")
    p.add_argument("--json", default=None, help="also write the comparison to this JSON file")
    p.set_defaults(fn=_cmd_check_arm)

    add_compress_commands(sub)
    add_compress_command(sub)

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
