"""`tfmot-mtl` compress-and-recover commands: prune, sparsify, budget (and their shared
fine-tuning flags: --finetune-epochs, --distill, --weighting, --patience)."""
from __future__ import annotations

import argparse
import json
import os

DEFAULT_OUT = "saved_models"
DEFAULT_DATA = "synthetic_scenes"


def load_keras(path: str):
    """A .keras / .h5 model (safe_mode), or exit with the loader's explanation."""
    import tfmot_mtl.sparsity  # noqa: F401  registers the group-lasso regularizers a model may carry
    import tfmot_mtl.tasks  # noqa: F401  registers the task losses saved with a compiled model (`train`)
    from tfmot_mtl.utils.model_files import load_model

    try:
        return load_model(path)
    except (OSError, ValueError) as err:
        raise SystemExit(f"error: {err}")


def round_to_arg(text: str) -> int:
    """argparse type of ``--round-to``: :func:`tfmot_mtl.masks.check_round_to` on the number."""
    from tfmot_mtl.masks import check_round_to

    try:
        value = int(text)
    except ValueError:
        value = text
    try:
        return check_round_to(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _check_recovery(args) -> None:
    """The fine-tuning flags shared by prune, sparsify and budget."""
    if args.finetune_epochs < 0:
        raise SystemExit(f"error: --finetune-epochs must be >= 0 (0: no fine-tuning after stripping), "
                         f"got {args.finetune_epochs}")
    if args.patience is not None and args.patience < 1:
        raise SystemExit(f"error: --patience must be >= 1 epoch, got {args.patience}")
    used = [flag for flag, on in (("--distill", args.distill), (f"--weighting {args.weighting}", args.weighting != "fixed"),
                                  ("--patience", args.patience is not None),
                                  ("--anneal", getattr(args, "anneal", False))) if on]
    if used and not args.finetune_epochs:
        raise SystemExit(f"error: {', '.join(used)} act on the fine-tuning after stripping: add --finetune-epochs N")
    if getattr(args, "anneal", False) and not args.distill:
        raise SystemExit("error: --anneal fades the distillation terms out: it needs --distill")


def add_data_spec_args(p: argparse.ArgumentParser, default: str | None = DEFAULT_DATA) -> None:
    """--data SPEC, --data-dir and --tasks FILE.json of every command that reads data."""
    from tfmot_mtl.datasets.spec import FORMS

    shown = f" (default {default})" if default else ""
    p.add_argument("--data", default=None, metavar="SPEC", help=f"the data{shown}: {FORMS}")
    p.add_argument("--data-dir", default=None, help="tensorflow-datasets data directory (a TFDS name in --data)")
    p.add_argument("--tasks", default=None, metavar="FILE.json",
                   help='task specs, a JSON list of Task configs or {output: config}, e.g. '
                        '[{"name": "seg", "kind": "segmentation", "output_channels": 13}] '
                        "(default: the data's, else inferred from the model's compiled losses)")
    p.set_defaults(data_default=default)


def data_spec(args) -> str:
    """The --data value, or the command's default."""
    return args.data or args.data_default


def task_file(args):
    """The tasks of --tasks FILE.json (None without one), or exit naming the file and entry."""
    if not getattr(args, "tasks", None):
        return None
    from tfmot_mtl.tasks.files import load_tasks

    try:
        return load_tasks(args.tasks)
    except ValueError as err:
        raise SystemExit(f"error: --tasks: {err}")


def data_error(args, err: Exception) -> SystemExit:
    """One ``error: --flag VALUE: message`` line for a DataMismatch (or a loading error)."""
    from tfmot_mtl.datasets.spec import FORMS

    argument = getattr(err, "argument", "data")
    if argument == "data":
        shown = args.data or f"(default {args.data_default})"
        flag = f"--data {shown}"
    else:
        flag = f"--{argument}" + (f" {args.tasks}" if argument == "tasks" and args.tasks else "")
    lines = str(err).strip().splitlines() or [type(err).__name__]
    text = " ".join(lines) if isinstance(err, ValueError) else lines[0]
    if argument == "data" and text.startswith(f"{data_spec(args)}: "):
        text = text[len(data_spec(args)) + 2:]
    if argument == "data" and "not outputs of the model" in text:
        text += f" as --data SPEC: {FORMS}"
    return SystemExit(f"error: {flag}: {text}")


def _task_data(args, model):
    """The --data for the model (+ a validation split for --patience), inputs, tasks and targets checked."""
    from tfmot_mtl import datasets
    from tfmot_mtl.datasets.spec import EMBEDDED
    from tfmot_mtl.recipes import validation_size

    n_val, spec = 0, data_spec(args)
    if args.patience is not None:
        default = getattr(datasets, spec).DEFAULT_SIZES["train"] if spec in EMBEDDED else 0
        n_val = validation_size(args.n_train, default)
    return load_model_data(args, model, n_val=n_val)


def load_model_data(args, model, n_val: int = 0):
    """:func:`tfmot_mtl.app.model_data.load_for_model` of the command's flags, or exit with one line."""
    import tensorflow as tf

    from tfmot_mtl.app import model_data as md

    tasks = task_file(args)
    try:
        return md.load_for_model(data_spec(args), model, tasks=tasks, data_dir=args.data_dir,
                                 batch_size=args.batch_size, n_train=args.n_train, n_test=args.n_test,
                                 seed=args.seed, n_val=n_val)
    except (ValueError, OSError, tf.errors.OpError) as err:
        raise data_error(args, err) from None


def _recover_and_save(args, small, dense_model, data, dense, masks, strip_report, find_epochs, folder,
                      filename, title, extra, legacy: str | None = None) -> None:
    """Fine-tunes the stripped model (flags), evaluates, writes model + masks + report, prints.
    ``legacy``: also write the metrics as "metrics_dense" / "metrics_<legacy>" (earlier reports)."""
    from tfmot_mtl.recipes import experiment as ex
    from tfmot_mtl import recipes
    from tfmot_mtl.tasks import print_results

    stripped = ex.evaluate(small, data) if args.finetune_epochs else None
    phase = recipes.recover(small, dense_model, data, args.finetune_epochs, distill=args.distill,
                            weighting=args.weighting, lr=args.lr, patience=args.patience, verbose=2,
                            teacher_annealing=args.anneal)
    results = ex.evaluate(small, data)
    budget = recipes.phase_budget("loaded", find_epochs, args.finetune_epochs, phase["epochs_run"])
    os.makedirs(folder, exist_ok=True)
    path = ex.save_model(small, os.path.join(folder, filename))
    masks.save(os.path.join(folder, "masks.json"))
    report = {"model": args.model, "data": data.name, "target": args.target, "training_budget": budget,
              "metrics": {"dense": dense, "stripped": stripped or results, "compressed": results},
              **extra, "strip": strip_report.to_dict(), "finetune": phase}
    if legacy:
        report.update({"metrics_dense": dense, f"metrics_{legacy}": results})
    same = None
    if getattr(args, "same_budget", False):
        epochs = max(1, int(round(find_epochs))) + phase["epochs_run"]
        print(f"dense, same budget: the loaded model trained {epochs} more epochs (as many as the compressed one)")
        reference = recipes.train_same_budget(dense_model, data, recipes.Epochs(0, epochs, 0), lr=args.lr,
                                              verbose=2)
        same = ex.evaluate(reference, data)
        report["metrics"]["dense, same budget"] = same
        report["same_budget"] = {"epochs_after_loading": epochs, "baseline": "continue"}
        ex.save_model(reference, os.path.join(folder, "dense_same_budget.keras"))
    ex.write_json(os.path.join(folder, "report.json"), report)
    strip_report.print()
    print(recipes.format_budget(budget, phase))
    print_results(results, title=f"{title} vs dense (baseline)", baseline=dense, tasks=data.tasks)
    if same is not None:
        print_results(results, title=f"{title} vs the dense model trained as long", baseline=same,
                      tasks=data.tasks)
    print(f"saved {path}, masks.json and report.json in {folder}")


def _cmd_prune(args) -> int:
    from tfmot_mtl.recipes import experiment as ex
    from tfmot_mtl.masks import clone_with_weights
    from tfmot_mtl.pruning.run import CRITERIA, prune_model, steps_per_epoch
    from tfmot_mtl.strip import strip_channels

    if not 0.0 < args.target < 1.0:
        raise SystemExit(f"error: --target must be a fraction of channels in (0, 1), got {args.target}")
    if args.criterion not in CRITERIA:
        raise SystemExit(f"error: unknown --criterion {args.criterion!r}; choose one of {CRITERIA}")
    _check_recovery(args)
    model = load_keras(args.model)
    data = _task_data(args, model)
    dense = ex.evaluate(model, data)
    # prune_model trains `model` in place: keep the dense parent for distillation / the baseline
    parent = clone_with_weights(model) if args.distill or args.same_budget else None
    per_epoch = steps_per_epoch(data.train)
    model, masks, history = prune_model(
        model, data, args.criterion, target=args.target, frequency=args.frequency or per_epoch,
        step=None if args.count else args.step, count=args.count,
        fine_tune_steps=args.epochs * per_epoch, groups=args.groups, min_channels=args.min_channels,
        min_fraction=args.min_fraction, lr=args.lr, round_to=args.round_to, seed=args.seed, verbose=2,
        **_cost_targets(args))
    small, report = strip_channels(model, masks)
    history.pop("snapshots")
    folder = args.out or os.path.splitext(args.model)[0] + f"_pruned_{args.criterion}"
    _recover_and_save(args, small, parent, data, dense, masks, report, history["steps"] / per_epoch,
                      folder, "pruned_stripped.keras", f"pruned ({args.criterion}, target {args.target})",
                      {"criterion": args.criterion, "groups": args.groups, "history": history}, legacy="pruned")
    return 0


def _cmd_sparsify(args) -> int:
    from tfmot_mtl.recipes import experiment as ex
    from tfmot_mtl.recipes import find_channels
    from tfmot_mtl.strip import strip_channels

    if not 0.0 < args.target < 1.0:
        raise SystemExit(f"error: --target must be a fraction of channels in (0, 1), got {args.target}")
    if args.epochs < 1 or not args.l1 > 0:
        raise SystemExit(f"error: --epochs must be >= 1 and --l1 > 0, got {args.epochs} and {args.l1}")
    _check_recovery(args)
    model = load_keras(args.model)
    data = _task_data(args, model)
    dense = ex.evaluate(model, data)
    found, masks, info = find_channels(model, data, "sparsity", args.target, args.epochs, lr=args.lr,
                                       groups=args.groups, options={"l1": args.l1}, verbose=2,
                                       min_channels=args.min_channels, min_fraction=args.min_fraction,
                                       **_cost_targets(args))
    try:
        small, report = strip_channels(found, masks)
    except ValueError as err:
        raise SystemExit(f"error: {err}")
    folder = args.out or os.path.splitext(args.model)[0] + "_sparsified"
    _recover_and_save(args, small, model, data, dense, masks, report, args.epochs, folder,
                      "sparse_stripped.keras", f"group-sparse (l1 {args.l1}, target {args.target})",
                      {"method": "sparsity", "l1": args.l1, "groups": args.groups,
                       "sparsity": info["sparsity"], "sparsity_report": info["report"]})
    return 0


def _cmd_budget(args) -> int:
    from tfmot_mtl.recipes import experiment as ex
    from tfmot_mtl import recipes
    from tfmot_mtl.budget import pipeline

    if args.data not in (None, "multi_domain"):
        raise SystemExit(f"error: --data {args.data}: budget trains its own mdl_resnet26 on the embedded "
                         f"multi_domain dataset (the only --data it takes); for your own model and data use "
                         f"prune, sparsify or compress")
    if not 0.0 < args.budget <= 1.0:
        raise SystemExit(f"error: --budget must be the fraction of channels each domain may use, in (0, 1], "
                         f"got {args.budget}")
    _check_recovery(args)
    if args.weighting != "fixed":
        raise SystemExit("error: --weighting: each multi-domain example trains one domain head, one loss of "
                         "one kind; only --weighting fixed applies to `budget`")
    result = pipeline.run(budget=args.budget, sharing=args.sharing, resolution=args.resolution,
                          width=args.width, n_train=args.n_train, epochs=args.epochs,
                          budget_epochs=args.budget_epochs, finetune=args.finetune, lr=args.lr,
                          sharing_weight=args.sharing_weight, measure=args.measure, seed=args.seed,
                          verbose=2 if args.verbose else 0, finetune_epochs=args.finetune_epochs,
                          distill=args.distill, patience=args.patience)
    phase = result.get("finetune", {"epochs": 0, "epochs_run": 0, "distilled": False, "history": {}})
    budget = recipes.phase_budget(args.epochs, args.budget_epochs + args.finetune, args.finetune_epochs,
                                  phase["epochs_run"])
    metrics = {"dense": result["unpruned_accuracy"], "stripped": result.get("stripped_accuracy", result["accuracy"]),
               "compressed": result["accuracy"]}
    folder = args.out
    os.makedirs(folder, exist_ok=True)
    path = ex.save_model(result["model"], os.path.join(folder, "budget_stripped.keras"))
    ex.write_json(os.path.join(folder, "masks.json"), {
        "union": json.loads(result["union"].to_json()),
        "domains": {d: json.loads(m.to_json()) for d, m in result["domains"].items()}})
    ex.write_json(os.path.join(folder, "report.json"), {
        "budget": args.budget, "sharing": args.sharing, "measure": args.measure, "training_budget": budget,
        "metrics": metrics, "unpruned_accuracy": result["unpruned_accuracy"], "accuracy": result["accuracy"],
        "usage": result["usage"], "summary": result["summary"], "report": result["report"].to_dict(),
        "strip": result["strip"].totals, "finetune": phase})
    print(result["report"])
    print(recipes.format_budget(budget, phase))
    print(pipeline.accuracy_table(metrics))
    s = result["summary"]
    print(f"unpruned mean accuracy {100 * s['unpruned_mean_accuracy']:.1f}%, stripped {100 * s['mean_accuracy']:.1f}%; "
          f"params {s['params_vs_one']:.2f}x and MACs {s['macs_vs_one']:.2f}x of ONE single-domain model")
    print(f"saved {path}, masks.json and report.json in {folder}")
    return 0


def _add_data_args(p) -> None:
    """Data size, seed and output folder of the commands that load a trained model."""
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--n-train", type=int, default=None)
    p.add_argument("--n-test", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="output folder (default: next to the model)")


def _add_recovery_args(p: argparse.ArgumentParser, same_budget: bool = True) -> None:
    g = p.add_argument_group("fine-tuning after stripping")
    g.add_argument("--finetune-epochs", type=int, default=0,
                   help="epochs fine-tuning the stripped model (default 0: none)")
    g.add_argument("--distill", action="store_true",
                   help="fine-tune distilled from the dense parent (keras.distillation)")
    g.add_argument("--weighting", default="fixed", choices=["fixed", "uncertainty", "dwa"],
                   help="how the task losses add up during the fine-tuning")
    g.add_argument("--patience", type=int, default=None,
                   help="early stopping on a validation split of max(32, n_train/10) new training images")
    if same_budget:
        g.add_argument("--anneal", action="store_true",
                       help="with --distill: teacher annealing, the distillation terms fade from full weight to 0 "
                            "over the fine-tuning (the student ends on its labels; for a parent it can outgrow)")
        g.add_argument("--same-budget", action="store_true",
                       help="also train a copy of the loaded dense model for as many epochs as the compressed "
                            "one trained after loading, and compare with it (the fair baseline)")


def _add_selection_args(p) -> None:
    """Which groups, the layer floor and a cost target: the same flags on prune and sparsify."""
    from tfmot_mtl.selection import COST_FLOOR_SHARE, MIN_CHANNELS, MIN_FRACTION

    p.add_argument("--groups", default="all", choices=["all", "shared"],
                   help="all: every prunable group (default); shared: the shared trunk only")
    p.add_argument("--min-channels", type=int, default=MIN_CHANNELS, help="layer floor: channels kept per group")
    p.add_argument("--min-fraction", type=float, default=None,
                   help=f"layer floor: share of each group kept (default {MIN_FRACTION:g}; with --target-macs / "
                        f"--target-params {COST_FLOOR_SHARE:g} of the share that, kept in every group alike, "
                        "meets the target)")
    cost = p.add_mutually_exclusive_group()
    cost.add_argument("--target-macs", type=float, default=None,
                      help="aim at this fraction of the dense MACs (or, > 1, this many MACs) instead of --target")
    cost.add_argument("--target-params", type=float, default=None,
                      help="aim at this fraction of the dense parameters (or, > 1, a count) instead of --target")


def check_floor_flags(args) -> None:
    """``--min-channels`` / ``--min-fraction`` checked (None: the entry point's default), or exit with one line."""
    from tfmot_mtl.selection import MIN_CHANNELS, check_floor

    try:
        check_floor(MIN_CHANNELS if args.min_channels is None else args.min_channels, args.min_fraction)
    except ValueError as err:
        raise SystemExit(f"error: --{str(err).replace('_', '-')}") from None


def _cost_targets(args) -> dict:
    """``target_macs`` / ``target_params`` from the flags (checked), for the method's call."""
    check_floor_flags(args)
    out = {}
    for name in ("macs", "params"):
        value = getattr(args, f"target_{name}")
        if value is not None:
            if not value > 0:
                raise SystemExit(f"error: --target-{name} must be > 0 (a fraction of the dense model's, or a "
                                 f"count above 1), got {value}")
            out[f"target_{name}"] = value
    return out


def add_compress_commands(sub) -> None:
    """Adds the prune, sparsify and budget sub-commands to the `tfmot-mtl` parser."""
    p = sub.add_parser("prune", help="iterative importance pruning with fine-tuning, then strip")
    p.add_argument("model", help="a trained multi-task .keras model")
    p.add_argument("--criterion", default="taylor",
                   help="taylor | cosprune | second_order | magnitude | bnscale | lamp | fpgm | random")
    p.add_argument("--target", type=float, default=0.7, help="fraction of the channels to remove")
    add_data_spec_args(p)
    p.add_argument("--frequency", type=int, default=None, help="steps between pruning events (default: one epoch)")
    p.add_argument("--step", type=float, default=0.05, help="fraction removed per event")
    p.add_argument("--count", type=int, default=None, help="channels removed per event (instead of --step)")
    p.add_argument("--epochs", type=int, default=2, help="fine-tuning epochs after the last event")
    _add_selection_args(p)
    p.add_argument("--round-to", type=round_to_arg, default=None,
                   help="kept channels per group a multiple of this (SIMD width: 16 AVX-512, 8 AVX2, 4 NEON)")
    p.add_argument("--lr", type=float, default=5e-4)
    _add_data_args(p)
    _add_recovery_args(p)
    p.set_defaults(fn=_cmd_prune)

    p = sub.add_parser("sparsify", help="group-sparsity training (proximal group lasso) to a target, then strip")
    p.add_argument("model", help="a trained multi-task .keras model")
    p.add_argument("--target", type=float, default=0.7, help="fraction of the channels to remove")
    add_data_spec_args(p)
    p.add_argument("--epochs", type=int, default=4, help="group-sparsity training epochs")
    p.add_argument("--l1", type=float, default=0.3, help="initial proximal strength (adapted toward the target)")
    _add_selection_args(p)
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate (sparsity training and fine-tuning)")
    _add_data_args(p)
    _add_recovery_args(p)
    p.set_defaults(fn=_cmd_sparsify)

    p = sub.add_parser("budget", help="budget-aware multi-domain pruning of mdl_resnet26 on multi_domain")
    p.add_argument("--budget", type=float, default=0.5, help="fraction of channels each domain may use, (0, 1]")
    p.add_argument("--data", default=None, metavar="multi_domain",
                   help="the data: the embedded multi_domain dataset (budget builds and trains its own model)")
    p.add_argument("--sharing", default="jaccard", choices=["none", "jaccard", "intersection", "union"])
    p.add_argument("--sharing-weight", type=float, default=1.0)
    p.add_argument("--measure", default="channels", choices=["channels", "macs"])
    p.add_argument("--epochs", type=int, default=4, help="multi-domain pre-training epochs (switches on)")
    p.add_argument("--budget-epochs", type=int, default=10, help="epochs training the switches under the budget")
    p.add_argument("--finetune", type=int, default=3, help="fine-tuning epochs on the final switches, before stripping "
                   "(--finetune-epochs: after stripping)")
    p.add_argument("--width", type=float, default=0.5)
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--n-train", type=int, default=400, help="training images per domain")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--verbose", action="store_true")
    p.add_argument("--out", default=os.path.join(DEFAULT_OUT, "budget"))
    _add_recovery_args(p, same_budget=False)  # pipeline.run trains its unpruned reference
    p.set_defaults(fn=_cmd_budget)
