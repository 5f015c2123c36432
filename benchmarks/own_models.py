"""Quality of ``tm.compress`` on models and data the library was not designed on.

Four models built the way users build them (not by ``tfmot_mtl.models``), each with heads
of two or three kinds, on a new synthetic dataset of coloured shapes (``shapes``: 96x96
images of 1-3 circles, squares and triangles over a noisy gradient; segmentation of the
shape kinds, the dominant colour channel of the largest shape, binary attributes, a depth map):

- ``mobilenetv2``: ``keras.applications.MobileNetV2(alpha=0.35)`` nested as a feature
  extractor; segmentation with a skip ``Concatenate`` + classification;
- ``resnet``: a keras-hub ``ResNetBackbone`` built small from its constructor (basic blocks,
  widths 64-128); segmentation + depth;
- ``cspnet``: a keras-hub ``CSPNetBackbone`` built small; classification + binary attributes;
- ``unet``: a hand-written functional U-Net with separable convs and residual adds;
  segmentation + depth + classification.

Per model: the dense model is compiled with Keras losses and trained with ``fit`` as a user
would (``--dense-epochs``), then ``tm.compress(target_macs=0.33)`` with defaults only, for both
methods (``--find-epochs`` + ``--finetune-epochs``), against the dense model trained on for the
same total number of epochs (``recipes.train_same_budget``: a copy of the dense model trained
``find + finetune`` more epochs; both get BatchNorm re-estimation). Test metrics on held-out
images.

    python benchmarks/own_models.py                    # all models, both methods
    python benchmarks/own_models.py --models mobilenetv2 --methods prune
    python benchmarks/own_models.py --quick            # smoke run (a minute)
    python benchmarks/own_models.py --cache-dir /tmp/parents   # reuse the trained parents in later runs

Each compressed model is also converted to full int8 (calibrated on training images) and
measured on LiteRT: what int8 costs each task against the model's own float outputs.

Prints a table, writes ``benchmarks/results/own_models.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import time
import warnings

warnings.filterwarnings("ignore", message=".*shuffle=True. was passed.*")

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfmot_mtl as tm  # noqa: E402
from tfmot_mtl.recipes import experiment as ex  # noqa: E402
from tfmot_mtl import recipes  # noqa: E402
from tfmot_mtl.compress import defined_delta_m  # noqa: E402
from tfmot_mtl.tasks import evaluate, infer_tasks  # noqa: E402
from tfmot_mtl.tasks.data import as_dataset  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
SHAPES = ("circle", "square", "triangle")
RES = 96
CE = dict(from_logits=True)


# ------------------------------------------------------------------ data: coloured shapes
def shapes_data(n: int, res: int = RES, seed: int = 0) -> tuple[np.ndarray, dict]:
    """Images and targets: ``seg`` (0 background, 1 + shape kind), ``cls`` (which of red, green,
    blue dominates the largest shape's colour), ``attrs`` (has a red shape, has a circle, has more than one shape), ``depth``
    (each shape at its own depth in front of a sloped background)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:res, 0:res] / res
    x = np.empty((n, res, res, 3), np.float32)
    seg = np.zeros((n, res, res), np.int32)
    depth = np.empty((n, res, res, 1), np.float32)
    cls = np.zeros(n, np.int32)
    attrs = np.zeros((n, 3), np.float32)
    for i in range(n):
        base = rng.uniform(0.2, 0.8, 3)
        img = base + 0.15 * (xx[..., None] - 0.5) * rng.uniform(-1, 1, 3) + rng.normal(0, 0.05, (res, res, 3))
        d = 4.0 + 2.0 * yy
        count = int(rng.integers(1, 4))
        largest = -1.0
        for _ in range(count):
            kind = int(rng.integers(0, 3))
            r = rng.uniform(0.08, 0.22)
            cx, cy = rng.uniform(r, 1 - r, 2)
            if kind == 0:
                inside = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
            elif kind == 1:
                inside = (np.abs(xx - cx) < r * 0.85) & (np.abs(yy - cy) < r * 0.85)
            else:
                inside = (yy - cy < r * 0.8) & (yy - cy > -r) & (np.abs(xx - cx) < (yy - cy + r) * 0.6)
            colour = rng.uniform(0, 1, 3)
            if rng.random() < 0.3:
                colour = np.array([0.9, 0.1, 0.1]) + rng.normal(0, 0.05, 3)
                attrs[i, 0] = 1.0
            img[inside] = colour
            seg[i][inside] = kind + 1
            d[inside] = rng.uniform(1.0, 3.5)
            if kind == 0:
                attrs[i, 1] = 1.0
            if r > largest:  # the class: which of red, green, blue dominates the largest shape's colour
                largest, cls[i] = r, int(np.argmax(colour))
        attrs[i, 2] = float(count > 1)
        x[i], depth[i, ..., 0] = np.clip(img, 0, 1), d
    return x, {"seg": seg, "cls": cls, "attrs": attrs, "depth": depth}


# ------------------------------------------------------------------ models
def _seg_head(features, skip, classes: int = 4, name: str = "seg"):
    y = keras.layers.Conv2D(32, 1, activation="relu")(features)
    y = keras.layers.Resizing(skip.shape[1], skip.shape[2], interpolation="bilinear")(y)
    y = keras.layers.Concatenate()([y, skip])
    y = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(y)
    y = keras.layers.Conv2D(classes, 1)(y)
    return keras.layers.Resizing(RES, RES, interpolation="bilinear", name=name)(y)


def _depth_head(features, name: str = "depth"):
    y = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(features)
    y = keras.layers.Conv2D(1, 1)(y)
    return keras.layers.Resizing(RES, RES, interpolation="bilinear", name=name)(y)


def _cls_head(features, units: int, name: str):
    y = keras.layers.GlobalAveragePooling2D()(features)
    y = keras.layers.Dense(64, activation="relu")(y)
    return keras.layers.Dense(units, name=name)(y)


def mobilenetv2() -> keras.Model:
    base = keras.applications.MobileNetV2(input_shape=(RES, RES, 3), alpha=0.35, include_top=False, weights=None)
    features = keras.Model(base.input, [base.get_layer("block_3_expand_relu").output, base.output],
                           name="mobilenet_features")
    image = keras.Input((RES, RES, 3), name="image")
    skip, top = features(image)
    return keras.Model(image, {"seg": _seg_head(top, skip), "cls": _cls_head(top, 3, "cls")})


def resnet() -> keras.Model:
    import keras_hub

    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[3], stackwise_num_filters=[64, 64, 128],
        stackwise_num_blocks=[1, 1, 1], stackwise_num_strides=[1, 2, 2], block_type="basic_block",
        use_pre_activation=False, image_shape=(RES, RES, 3))
    image = keras.Input((RES, RES, 3), name="image")
    pyramid = backbone(image)
    feats = keras.Model(backbone.inputs, [backbone.pyramid_outputs["P2"], backbone.pyramid_outputs["P4"]],
                        name="resnet_features")(image) if hasattr(backbone, "pyramid_outputs") else (pyramid, pyramid)
    skip, top = feats
    return keras.Model(image, {"seg": _seg_head(top, skip), "depth": _depth_head(top)})


def cspnet() -> keras.Model:
    import keras_hub

    backbone = keras_hub.models.CSPNetBackbone(
        stem_filters=32, stem_kernel_size=3, stem_strides=2, stackwise_depth=[1, 2, 2],
        stackwise_strides=[2, 2, 2], stackwise_num_filters=[32, 64, 128], block_type="dark_block",
        stage_type="dark", image_shape=(RES, RES, 3))
    image = keras.Input((RES, RES, 3), name="image")
    top = backbone(image)
    return keras.Model(image, {"cls": _cls_head(top, 3, "cls"), "attrs": _cls_head(top, 3, "attrs")})


def unet() -> keras.Model:
    image = keras.Input((RES, RES, 3), name="image")

    def block(x, filters, stride):
        y = keras.layers.SeparableConv2D(filters, 3, strides=stride, padding="same", use_bias=False)(x)
        y = keras.layers.BatchNormalization()(y)
        y = keras.layers.Activation("relu")(y)
        y = keras.layers.SeparableConv2D(filters, 3, padding="same", use_bias=False)(y)
        y = keras.layers.BatchNormalization()(y)
        short = keras.layers.Conv2D(filters, 1, strides=stride, use_bias=False)(x)
        return keras.layers.Activation("relu")(keras.layers.Add()([y, short]))

    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(image)
    e1 = block(x, 32, 1)
    e2 = block(e1, 64, 2)
    e3 = block(e2, 96, 2)
    u = keras.layers.UpSampling2D(2)(e3)
    u = block(keras.layers.Concatenate()([u, e2]), 48, 1)
    u = keras.layers.UpSampling2D(2)(u)
    u = block(keras.layers.Concatenate()([u, e1]), 32, 1)
    seg = keras.layers.Resizing(RES, RES, interpolation="bilinear", name="seg")(keras.layers.Conv2D(4, 1)(u))
    depth = keras.layers.Resizing(RES, RES, interpolation="bilinear", name="depth")(keras.layers.Conv2D(1, 1)(u))
    return keras.Model(image, {"seg": seg, "depth": depth, "cls": _cls_head(e3, 3, "cls")})


MODELS = {"mobilenetv2": mobilenetv2, "resnet": resnet, "cspnet": cspnet, "unet": unet}
LOSSES = {"seg": keras.losses.SparseCategoricalCrossentropy(**CE),
          "cls": keras.losses.SparseCategoricalCrossentropy(**CE),
          "attrs": keras.losses.BinaryCrossentropy(**CE), "depth": keras.losses.MeanAbsoluteError()}


def build(name: str, seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    model = MODELS[name]()
    model.compile(keras.optimizers.Adam(2e-3), loss={k: LOSSES[k] for k in model.output.keys()})
    return model


def _subset(y: dict, names) -> dict:
    return {k: v for k, v in y.items() if k in names}


def _cache_stem(name: str, cfg: dict) -> str | None:
    """Where ``--cache-dir`` keeps a model's dense and same-budget models: one file set per model
    and training setting, so a changed setting trains afresh."""
    if not cfg.get("cache_dir"):
        return None
    keys = ("seed", "n_train", "batch_size", "dense_epochs", "find_epochs", "finetune_epochs", "lr")
    return os.path.join(cfg["cache_dir"], name + "-" + "-".join(f"{k}{cfg[k]}" for k in keys))


def _load_parents(name: str, cfg: dict):
    """``(dense, same_budget, dense_seconds, same_seconds)`` from the cache, or None."""
    stem = _cache_stem(name, cfg)
    if not stem or not os.path.exists(stem + ".json"):
        return None
    with open(stem + ".json") as f:
        seconds = json.load(f)
    load = keras.models.load_model
    return load(stem + "-dense.keras"), load(stem + "-same.keras"), seconds["dense"], seconds["same"]


def _save_parents(name: str, cfg: dict, dense, same, dense_seconds: float, same_seconds: float) -> None:
    stem = _cache_stem(name, cfg)
    if not stem:
        return
    os.makedirs(cfg["cache_dir"], exist_ok=True)
    dense.save(stem + "-dense.keras")
    same.save(stem + "-same.keras")
    ex.write_json(stem + ".json", {"dense": dense_seconds, "same": same_seconds})  # last: marks a complete set


def run_model(name: str, methods, cfg: dict, log=print) -> dict:
    """Trains the dense model, the same-budget dense model and one compressed model per method."""
    from tfmot_mtl.graph.walk import output_names

    x, y = shapes_data(cfg["n_train"], seed=cfg["seed"])
    xt, yt = shapes_data(cfg["n_test"], seed=cfg["seed"] + 1000)
    model = build(name, cfg["seed"])
    outs = output_names(model)
    y, yt = _subset(y, outs), _subset(yt, outs)
    tasks = infer_tasks(model)
    test = as_dataset((xt, yt), cfg["batch_size"])
    train = as_dataset((x, y), cfg["batch_size"], shuffle=True, seed=cfg["seed"])
    data = ex.Data("shapes", train, test, tasks, (RES, RES, 3))
    budget = recipes.Epochs(cfg["dense_epochs"], cfg["find_epochs"], cfg["finetune_epochs"])
    cached = _load_parents(name, cfg)
    if cached:
        model, same, dense_seconds, same_seconds = cached
        log(f"[{name}] dense and same-budget models from {cfg['cache_dir']}")
    else:
        t0 = time.time()
        steps = int(np.ceil(cfg["n_train"] / cfg["batch_size"]))
        model.compile(keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(cfg["lr"], cfg["dense_epochs"] * steps)),
                      loss={k: LOSSES[k] for k in outs})
        model.fit(x, y, batch_size=cfg["batch_size"], epochs=cfg["dense_epochs"], verbose=0, shuffle=True)
        dense_seconds = time.time() - t0
        t0 = time.time()
        same = recipes.train_same_budget(model, data, budget, cfg["lr"])
        same_seconds = time.time() - t0
        _save_parents(name, cfg, model, same, dense_seconds, same_seconds)
    reference = evaluate(same, test, tasks)
    dense_prof = tm.profile.profile(model)
    rows = {"dense, same budget": {"macs": dense_prof.total_macs, "params": dense_prof.total_params,
                                   "metrics": reference, "delta_m": 0.0, "epochs": budget.total,
                                   "seconds": round(dense_seconds + same_seconds, 1)}}
    log(f"[{name}] dense {dense_prof.total_params:,} params, {dense_prof.total_macs:,} MACs; "
        f"same budget ({budget.total} epochs): {_fmt(reference, tasks)}")
    for method in methods:
        t0 = time.time()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", tm.CompressWarning)
            result = tm.compress(model, (x, y), target_macs=cfg["target"], method=method,
                                 find_epochs=cfg["find_epochs"], finetune_epochs=cfg["finetune_epochs"],
                                 batch_size=cfg["batch_size"], distill=cfg.get("distill", False), verbose=0,
                                 **({"min_fraction": cfg["min_fraction"]} if cfg.get("min_fraction") is not None else {}))
        seconds = time.time() - t0
        metrics = evaluate(result.model, test, tasks)
        prof = tm.profile.profile(result.model)
        row = {"macs": prof.total_macs, "params": prof.total_params, "mac_share": prof.total_macs / dense_prof.total_macs,
               "metrics": metrics, "delta_m": defined_delta_m(metrics, reference, tasks), "epochs": budget.total,
               "seconds": round(dense_seconds + seconds, 1), "warnings": result.warnings,
               "trimmed": result.trimmed, "at_floor": len(result.at_floor), "worst": _worst(metrics, reference, tasks)}
        if cfg.get("int8", True):
            row["int8"] = int8_cost(result.model, train, test, tasks, reference)
        rows[method] = row
        log(f"[{name}] {method}: {row['mac_share']:.4f} of the MACs, {prof.total_params:,} params, "
            f"delta_m {row['delta_m']:+.2f}%, {_fmt(metrics, tasks)} ({seconds:.0f} s)"
            + (f"; full int8 on LiteRT: delta_m {row['int8']['delta_m']:+.2f}%, per task vs its Keras model "
               + ", ".join(f"{t} {c['text']}" for t, c in row["int8"]["task_cost"].items()) if "int8" in row else "")
            + (f"; with {row['int8']['fixed']['float_outputs']} in float: "
               + ", ".join(f"{t} {c['text']}" for t, c in row["int8"]["fixed"]["task_cost"].items())
               if "fixed" in row.get("int8", {}) else "")
            + ("; in int16x8: " + ", ".join(f"{t} {c['text']}" for t, c in row["int8"]["int16x8"]["task_cost"].items())
               if "int16x8" in row.get("int8", {}) else ""))
    return {"tasks": [t.get_config() for t in tasks], "rows": rows}


def int8_cost(model, train, test, tasks, reference: dict) -> dict:
    """The compressed model in full int8 (calibrated on 8 training batches) on LiteRT: its task
    metrics, Δm against the same-budget dense Keras model, and what int8 cost each task against
    the model's own float Keras outputs (points for percentages, relative for errors). A task
    that loses more than 1 point / 1% is measured again with the last two operations of its head
    kept in float (``lite.convert(..., float_outputs=...)``): ``"fixed"``, and with int16
    activations throughout (``"int16x8"``: int8 weights, float input and outputs; XNNPACK has no
    int16 kernels, so this is the accurate, not the fast, file)."""
    from tfmot_mtl import lite
    from tfmot_mtl.lite.deploy import task_cost

    def measure(float_outputs=None, quantization: str = "int8") -> dict:
        tflite = lite.convert(model, quantization, representative_data=train, num_calibration_steps=8,
                              verbose=False, float_outputs=float_outputs)
        checked = lite.parity(model, lite.LiteModel(tflite), test, tasks=tasks)
        on_lite = {t: sides["tflite"] for t, sides in checked["metrics"].items()}
        on_keras = {t: sides["keras"] for t, sides in checked["metrics"].items()}
        cost = task_cost(on_lite, on_keras, tasks, {t.name: t.metrics[0] for t in tasks})
        return {"metrics": on_lite, "delta_m": defined_delta_m(on_lite, reference, tasks), "task_cost": cost,
                "over_limit": [t for t, c in cost.items() if c["over_limit"]], "size_bytes": len(tflite)}

    out = measure()
    if out["over_limit"]:  # the fix: the last two operations of those heads in float
        out["fixed"] = {"float_outputs": {t: 2 for t in out["over_limit"]},
                        **measure({t: 2 for t in out["over_limit"]})}
        out["int16x8"] = measure(quantization="int16x8")
    return out


def _fmt(results: dict, tasks) -> str:
    return ", ".join(f"{t.name} {t.metrics[0]} {results[t.name][t.metrics[0]]:.3f}" for t in tasks)


def _worst(metrics: dict, reference: dict, tasks) -> dict:
    """Per task, the change of its main metric: points for percentages, relative for errors."""
    from tfmot_mtl.lite.deploy import task_cost

    cost = task_cost(metrics, reference, tasks, {t.name: t.metrics[0] for t in tasks})
    return {name: c.get("points", c.get("relative")) for name, c in cost.items()}


def check_targets(results: dict, target: float) -> dict:
    """The issue's acceptance numbers: MACs within 2% of target, per-task drops, mean delta_m."""
    verdict = {}
    for method in ("prune", "sparsity"):
        rows = [r["rows"][method] for r in results.values() if method in r["rows"]]
        if not rows:
            continue
        verdict[method] = {
            "macs_within_2pct": all(abs(r["mac_share"] / target - 1) <= 0.02 for r in rows),
            "worst_task_change": min(min(r["worst"].values()) for r in rows),
            "mean_delta_m": float(np.mean([r["delta_m"] for r in rows])),
            "min_delta_m": float(min(r["delta_m"] for r in rows)),
        }
    return verdict


PRESETS = {
    "default": dict(n_train=512, n_test=256, batch_size=32, dense_epochs=12, find_epochs=4, finetune_epochs=4,
                    lr=2e-3, target=0.33, seed=0),
    "quick": dict(n_train=32, n_test=16, batch_size=16, dense_epochs=1, find_epochs=1, finetune_epochs=1,
                  lr=2e-3, target=0.33, seed=0, int8=False),
}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--methods", nargs="+", default=["prune", "sparsity"], choices=["prune", "sparsity"])
    ap.add_argument("--quick", action="store_true", help="smoke-test setting")
    ap.add_argument("--distill", action="store_true",
                    help="fine-tune distilled from the dense parent (default: on labels only, as compress does)")
    ap.add_argument("--min-fraction", type=float, default=None,
                    help="the layer floor's share of each group (default: compress's)")
    ap.add_argument("--seed", type=int, default=None, help="data, initialisation and training seed (default 0)")
    ap.add_argument("--no-int8", action="store_true", help="skip the int8 conversion and its LiteRT measurement")
    ap.add_argument("--cache-dir", default=None,
                    help="keep the trained dense and same-budget models here and reuse them in later runs "
                         "(same setting only): compare compress options without retraining the parents")
    ap.add_argument("--out", default=os.path.join(RESULTS, "own_models.json"))
    args = ap.parse_args(argv)
    cfg = {**PRESETS["quick" if args.quick else "default"], "distill": args.distill, "min_fraction": args.min_fraction,
           "cache_dir": args.cache_dir, **({"int8": False} if args.no_int8 else {}),
           **({"seed": args.seed} if args.seed is not None else {})}
    start = time.time()
    results = {}
    for name in args.models:  # the JSON is rewritten after every model: a late failure keeps the rest
        results[name] = run_model(name, args.methods, cfg)
        ex.write_json(args.out, {"config": cfg, "results": results, "partial": True})
    verdict = check_targets(results, cfg["target"])
    out = {"config": cfg, "results": results, "verdict": verdict, "seconds": round(time.time() - start, 1)}
    print_table(results)
    print(verdict)
    ex.write_json(args.out, out)
    print(f"wrote {args.out} ({out['seconds']:.0f} s)")
    return out


def print_table(results: dict) -> None:
    print(f"{'model':<12}{'method':<20}{'MACs':>8}{'params':>10}{'delta_m':>9}  per-task (main metric)")
    for name, res in results.items():
        for method, row in res["rows"].items():
            per = ", ".join(f"{t}: {v[next(iter(v))]:.2f}" for t, v in row["metrics"].items())
            share = row.get("mac_share", 1.0)
            print(f"{name:<12}{method:<20}{share:>8.4f}{row['params']:>10,}{row['delta_m']:>+9.2f}  {per}")


if __name__ == "__main__":
    main()
