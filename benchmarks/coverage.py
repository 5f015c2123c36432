"""Channel-graph coverage of real-world architectures: keras.applications and keras-hub vision backbones.

Every model is built offline with random weights (keras-hub backbones from their class constructors,
never ``from_preset``), wrapped with two task heads, and measured: the share of its channels that is
prunable, attention heads and MLP widths found, graph and strip time, the parameter ratio at random
50% masks, the parity of the stripped model with the masked one (max |diff| / max |output|), and
whether the masks (through their JSON file) apply to the model's ``keras.models.clone_model`` copy and
to its ``.keras`` reload, whose layer names may differ (keras-hub rebuilds models from their arguments).

    python benchmarks/coverage.py --out saved_models/coverage.json            # everything
    python benchmarks/coverage.py --only ViT,MobileNetV3 --size 32             # a subset

keras-hub is a test/benchmark extra: ``pip install -e .[test]``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402

import tfmot_mtl as tm  # noqa: E402
from tfmot_mtl.masks import apply_masks_, clone_with_weights  # noqa: E402

APPS = ["MobileNet", "MobileNetV2", "MobileNetV3Small", "ResNet50", "ResNet50V2", "VGG16", "DenseNet121",
        "Xception", "InceptionV3", "EfficientNetB0", "EfficientNetV2B0", "ConvNeXtTiny", "NASNetMobile",
        "InceptionResNetV2"]
_APP_MIN = {"InceptionV3": 75, "InceptionResNetV2": 75, "Xception": 71, "NASNetMobile": 32}


def _hub_builders(size: int) -> dict:
    import keras_hub as kh

    m = kh.models
    img = (size, size, 3)
    return {
        "hub.ResNet": lambda: m.ResNetBackbone(input_conv_filters=[16], input_conv_kernel_sizes=[3],
                                               stackwise_num_filters=[64, 32], stackwise_num_blocks=[2, 2],
                                               stackwise_num_strides=[1, 2], block_type="bottleneck_block",
                                               image_shape=img),
        "hub.VGG": lambda: m.VGGBackbone(stackwise_num_repeats=[1, 2], stackwise_num_filters=[16, 32],
                                         image_shape=img),
        "hub.DenseNet": lambda: m.DenseNetBackbone(stackwise_num_repeats=[2, 2], growth_rate=8, image_shape=img),
        "hub.Xception": lambda: m.XceptionBackbone(
            stackwise_conv_filters=[[16, 32], [32, 64], [64, 64], [64, 96]],
            stackwise_pooling=[False, True, False, False], image_shape=img),
        "hub.MobileNetV3": lambda: m.MobileNetBackbone(
            stackwise_expansion=[[40, 56], [64, 144]], stackwise_num_blocks=[2, 2],
            stackwise_num_filters=[[16, 16], [24, 24]], stackwise_kernel_size=[[3, 3], [5, 5]],
            stackwise_num_strides=[[2, 1], [2, 1]], stackwise_se_ratio=[[None, None], [0.25, 0.25]],
            stackwise_activation=[["relu", "relu"], ["hard_swish", "hard_swish"]],
            stackwise_padding=[[1, 1], [2, 2]], output_num_filters=64, depthwise_filters=8,
            depthwise_stride=2, depthwise_residual=False, squeeze_and_excite=0.5,
            last_layer_filter=64, input_activation="hard_swish", output_activation="hard_swish",
            input_num_filters=16, image_shape=img),
        "hub.EfficientNet": lambda: m.EfficientNetBackbone(
            stackwise_kernel_sizes=[3, 3, 3], stackwise_num_repeats=[1, 2, 2],
            stackwise_input_filters=[16, 16, 24], stackwise_output_filters=[16, 24, 32],
            stackwise_expansion_ratios=[1, 4, 4], stackwise_squeeze_and_excite_ratios=[0.0, 0.25, 0.25],
            stackwise_strides=[1, 2, 2], stackwise_block_types=["fused", "unfused", "unfused"],
            width_coefficient=1.0, depth_coefficient=1.0, image_shape=img),
        "hub.CSPNet": lambda: m.CSPNetBackbone(stem_filters=16, stem_kernel_size=3, stem_strides=1,
                                               stackwise_depth=[1, 2], stackwise_strides=[1, 2],
                                               stackwise_num_filters=[16, 32], block_type="dark_block", stage_type="dark",
                                               image_shape=img),
        "hub.HGNetV2": lambda: m.HGNetV2Backbone(
            depths=[1, 1], embedding_size=16, hidden_sizes=[32, 64], stem_channels=[3, 8, 16], hidden_act="relu",
            use_learnable_affine_block=False,
            stackwise_stage_filters=[(16, 8, 32, 1, 1, 3), (32, 16, 64, 1, 1, 3)],
            apply_downsample=[False, True], use_lightweight_conv_block=[False, False], image_shape=img),
        "hub.ViT": lambda: m.ViTBackbone(image_shape=img, patch_size=8, num_layers=2, num_heads=4, hidden_dim=32,
                                         mlp_dim=64),
        "hub.DeiT": lambda: m.DeiTBackbone(image_shape=img, patch_size=8, num_layers=2, num_heads=4,
                                           hidden_dim=32, intermediate_dim=64),
        "hub.MiT": lambda: m.MiTBackbone(layerwise_depths=[1, 1], num_layers=2, layerwise_num_heads=[1, 2],
                                         layerwise_sr_ratios=[2, 1], max_drop_path_rate=0.0,
                                         layerwise_patch_sizes=[7, 3], layerwise_strides=[4, 2],
                                         hidden_dims=[16, 32], image_shape=img),
        "hub.DINOV2": lambda: m.DINOV2Backbone(patch_size=8, num_layers=2, hidden_dim=32, num_heads=4,
                                               intermediate_dim=64, image_shape=(size - size % 8,) * 2 + (3,),
                                               position_embedding_shape=(size - size % 8,) * 2),
        "hub.DeepLabV3": lambda: m.DeepLabV3Backbone(
            image_encoder=m.ResNetBackbone(input_conv_filters=[16], input_conv_kernel_sizes=[3],
                                           stackwise_num_filters=[64, 32], stackwise_num_blocks=[2, 2],
                                           stackwise_num_strides=[1, 2], block_type="bottleneck_block",
                                           image_shape=img),
            low_level_feature_keys=["P2"], spatial_pyramid_pooling_key="P3", upsampling_size=4,
            dilation_rates=[2, 4], projection_filters=16),
        "hub.Swin": lambda: m.SwinTransformerBackbone(image_shape=img, embed_dim=16, depths=[1, 1],
                                                      num_heads=[2, 4], window_size=4, patch_size=4),
    }


def _two_heads(backbone: keras.Model, name: str, size: int) -> keras.Model:
    """The backbone under a two-task wrapper (pooling, two Dense heads), as a multi-task model."""
    shape = tuple(backbone.inputs[0].shape[1:])
    shape = tuple(size if d is None else d for d in shape[:-1]) + shape[-1:]
    inp = keras.Input(shape, name="image")
    feat = backbone(inp)
    if isinstance(feat, dict):
        feat = feat[sorted(feat)[-1]]
    elif isinstance(feat, (list, tuple)):
        feat = feat[-1]
    pool = keras.layers.GlobalAveragePooling2D() if len(feat.shape) == 4 else keras.layers.GlobalAveragePooling1D()
    x = pool(feat)
    return keras.Model(inp, {"a": keras.layers.Dense(4, name="task_a")(x),
                             "b": keras.layers.Dense(3, name="task_b")(x)}, name=name)


def _randomize(model: keras.Model, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for w in model.weights:
        if not w.dtype.startswith("float"):
            continue
        shape = tuple(w.shape)
        if "variance" in w.name or "gamma" in w.name:
            w.assign(rng.uniform(0.5, 1.5, shape).astype(w.dtype))
        elif "moving_mean" in w.name or "beta" in w.name or "bias" in w.name:
            w.assign((rng.standard_normal(shape) * 0.1).astype(w.dtype))


def _stats(graph) -> dict:
    internal = [g for g in graph.groups.values() if g.size and not any(
        r.startswith("model input") or r.startswith("reaches model output") for r in g.reasons)]
    total = sum(g.size for g in internal)
    prunable = sum(g.size for g in internal if g.prunable)
    heads = [g for g in graph.prunable_groups if any(p.endswith(":heads") for p in g.producers)]
    mlp = [g for g in graph.prunable_groups if g not in heads and g.producers[0] in graph.flat.layers
           and isinstance(graph.layer(g.producers[0]), keras.layers.Dense)
           and any(len(graph.flat.tensors[k].shape) == 3 for k, m in graph.maps.items()
                   if len(m) and graph.atom_group[m[0]] == g.id)]
    reasons: dict[str, int] = {}
    for g in internal:
        if not g.prunable:
            reasons[g.reasons[0][:400]] = reasons.get(g.reasons[0][:400], 0) + g.size
    top = sorted(reasons.items(), key=lambda kv: -kv[1])[:2]
    return {"channels": total, "prunable_channels": prunable, "prunable_share": prunable / max(1, total),
            "prunable_heads": sum(g.size for g in heads), "head_groups": len(heads),
            "prunable_mlp_units": sum(g.size for g in mlp), "frozen_top_reasons": top}


def _transfer(model: keras.Model, graph, masks: tm.ChannelMasks, x: np.ndarray) -> dict:
    """Masks made on `model`, through their JSON file, applied to its ``clone_model`` copy and to its
    ``.keras`` reload: ``"<kind>_rel"`` (max |diff| / max |output| from `model` masked in place) or
    ``"<kind>_error"`` for kind clone and reload, and ``"transfer_ok"``. `model` is left as it was."""
    row: dict = {}
    with tempfile.TemporaryDirectory(prefix="coverage_") as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = os.path.join(folder, "model.keras")
        masks.save(os.path.join(folder, "masks.json"))
        loaded = tm.ChannelMasks.load(os.path.join(folder, "masks.json"))
        copies = {"clone": lambda: clone_with_weights(model),
                  "reload": lambda: (model.save(path), keras.saving.load_model(path))[1]}
        built = {}
        for kind, make in copies.items():
            try:
                built[kind] = make()
            except Exception as exc:  # noqa: BLE001 - recorded in the row
                row[f"{kind}_error"] = f"making the copy: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
        dense = model.get_weights()
        expected = apply_masks_(model, masks, graph).predict(x, verbose=0)
        model.set_weights(dense)
        scale = max(float(np.max(np.abs(expected[k]))) for k in expected)
        for kind, copy in built.items():
            try:
                got = apply_masks_(copy, loaded).predict(x, verbose=0)
                diff = max(float(np.max(np.abs(expected[k] - got[k]))) for k in expected)
                row[f"{kind}_rel"] = diff / max(scale, 1e-12)
            except Exception as exc:  # noqa: BLE001 - recorded in the row
                row[f"{kind}_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
    row["transfer_ok"] = all(row.get(f"{k}_rel", np.inf) <= 1e-4 for k in copies)
    return row


def measure(name: str, build, size: int, transfer: bool = True) -> dict:
    """One row of the table; ``transfer``: also check that the masks apply to the model's clone and reload."""
    row: dict = {"model": name}
    try:
        keras.utils.set_random_seed(0)
        model = _two_heads(build(), name.replace(".", "_"), size)
        _randomize(model)
        row["params"] = int(model.count_params())
        t0 = time.perf_counter()
        graph = tm.ChannelGraph.from_model(model)
        row["graph_s"] = round(time.perf_counter() - t0, 2)
        row.update(_stats(graph))
        rng = np.random.default_rng(0)
        masks = tm.ChannelMasks({g.id: rng.random(g.size) >= 0.5 for g in graph.prunable_groups})
        x = np.random.default_rng(1).random((2,) + tuple(model.inputs[0].shape[1:])).astype("float32")
        if transfer:
            row.update(_transfer(model, graph, masks, x))
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            small, report = tm.strip_channels(model, masks, input_shape=tuple(model.inputs[0].shape[1:]))
        row["strip_s"] = round(time.perf_counter() - t0, 2)
        row["param_ratio"] = round(report.param_ratio, 4)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            apply_masks_(model, masks, graph)  # in place: some configs do not round-trip through a clone
        a, b = model.predict(x, verbose=0), small.predict(x, verbose=0)
        diff = max(float(np.max(np.abs(a[k] - b[k]))) for k in a)
        scale = max(float(np.max(np.abs(a[k]))) for k in a)
        row["parity_rel"] = diff / max(scale, 1e-12)
        row["ok"] = bool(row["parity_rel"] <= 1e-4) and row.get("transfer_ok", True)
    except Exception as exc:  # noqa: BLE001 - a benchmark row records the failure and goes on
        row["ok"] = False
        row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
        row["trace"] = traceback.format_exc().splitlines()[-16:]
    return row


def _transfer_cell(row: dict) -> str:
    if "transfer_ok" not in row:
        return "-"
    return "yes" if row["transfer_ok"] else "NO: " + ", ".join(k for k in ("clone", "reload")
                                                             if row.get(f"{k}_rel", np.inf) > 1e-4)


def builders(size: int, hub: bool = True) -> dict:
    out = {}
    for app in APPS:
        s = max(size, _APP_MIN.get(app, 32))
        out[f"apps.{app}"] = (lambda app=app, s=s: getattr(keras.applications, app)(
            weights=None, input_shape=(s, s, 3), include_top=False))
    if hub:
        try:
            out.update(_hub_builders(size))
        except ImportError:
            print("keras-hub is not installed: `pip install -e .[test]`; keras.applications only")
    return out


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="input height/width (default 64)")
    parser.add_argument("--only", default="", help="comma-separated model names (substring match)")
    parser.add_argument("--no-hub", action="store_true", help="keras.applications only")
    parser.add_argument("--no-transfer", action="store_true",
                        help="skip applying the masks to the clone_model copy and the .keras reload")
    parser.add_argument("--out", default="saved_models/coverage.json")
    args = parser.parse_args(argv)
    todo = builders(args.size, hub=not args.no_hub)
    if args.only:
        keys = [k.strip() for k in args.only.split(",") if k.strip()]
        todo = {n: b for n, b in todo.items() if any(k in n for k in keys)}
    rows = []
    print(f"{'model':22s} {'ok':3s} {'prunable':>9s} {'heads':>5s} {'mlp':>5s} {'params':>7s} "
          f"{'parity':>8s} {'graph s':>7s} {'strip s':>7s} {'masks on clone/reload':>21s}")
    for name, build in todo.items():
        row = measure(name, build, args.size, transfer=not args.no_transfer)
        rows.append(row)
        if "error" in row:
            print(f"{name:22s} ERR {row['error'][:120]} (masks on clone/reload: {_transfer_cell(row)})")
        else:
            print(f"{name:22s} {'yes' if row['ok'] else 'NO':3s} {row['prunable_share']:9.1%} "
                  f"{row['prunable_heads']:5d} {row['prunable_mlp_units']:5d} {row['param_ratio']:7.3f} "
                  f"{row['parity_rel']:8.1e} {row['graph_s']:7.2f} {row['strip_s']:7.2f} "
                  f"{_transfer_cell(row):>21s}", flush=True)
        keras.backend.clear_session()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"size": args.size, "keras": keras.__version__, "rows": rows}, f, indent=1, default=str)
    ok = sum(r["ok"] for r in rows)
    print(f"{ok}/{len(rows)} models strip with parity <= 1e-4; table written to {args.out}")
    return rows


if __name__ == "__main__":
    main()
