"""Compress your own model: a Keras multi-task model and numpy data in, a 3x cheaper model out.

The model is built the way users build them: a keras.applications MobileNetV2 (random
weights) nested as a feature extractor, a segmentation head with a skip connection and a
classification head, dict outputs, compiled with ordinary Keras losses. Its tasks are
inferred from those losses; ``tm.compress`` prunes it to a third of its MACs, strips the
channels and fine-tunes the small model on the labels.

    python examples/compress_own_model.py                      # Taylor pruning to 0.33x MACs
    python examples/compress_own_model.py --method sparsity    # group sparsity instead
    python examples/compress_own_model.py --fast               # tiny setting (seconds)
"""
import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfmot_mtl as tm  # noqa: E402


def build_model(res: int, tiny: bool) -> keras.Model:
    if tiny:  # a small stand-in with the same structure: nested backbone, two outputs
        x = keras.Input((res, res, 3))
        skip = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(x)
        top = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(skip)
        features = keras.Model(x, [skip, top], name="features")
    else:
        base = keras.applications.MobileNetV2(input_shape=(res, res, 3), alpha=0.35, include_top=False,
                                              weights=None)
        features = keras.Model(base.input, [base.get_layer("block_3_expand_relu").output, base.output],
                               name="features")
    image = keras.Input((res, res, 3), name="image")
    skip, top = features(image)
    y = keras.layers.Conv2D(16, 1, activation="relu")(top)
    y = keras.layers.Resizing(skip.shape[1], skip.shape[2])(y)
    y = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(keras.layers.Concatenate()([y, skip]))
    seg = keras.layers.Resizing(res, res, name="seg")(keras.layers.Conv2D(3, 1)(y))
    cls = keras.layers.Dense(2, name="cls")(keras.layers.GlobalAveragePooling2D()(top))
    model = keras.Model(image, {"seg": seg, "cls": cls})
    model.compile(keras.optimizers.Adam(2e-3),
                  loss={"seg": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                        "cls": keras.losses.SparseCategoricalCrossentropy(from_logits=True)})
    return model


def make_data(n: int, res: int, seed: int):
    """Bright squares (class 1) or discs (class 2) on a dark noisy background; cls: which one."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:res, 0:res]
    x = rng.normal(0.2, 0.05, (n, res, res, 3)).astype("float32")
    seg = np.zeros((n, res, res), "int32")
    cls = rng.integers(0, 2, n).astype("int32")
    for i in range(n):
        r = rng.integers(res // 8, res // 4)
        cy, cx = rng.integers(r, res - r, 2)
        inside = (np.abs(yy - cy) < r) & (np.abs(xx - cx) < r) if cls[i] == 0 else (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        x[i][inside] = rng.uniform(0.6, 1.0, 3)
        seg[i][inside] = 1 + cls[i]
    return x, {"seg": seg, "cls": cls}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", default="prune", choices=["prune", "sparsity"])
    ap.add_argument("--target-macs", type=float, default=0.33)
    ap.add_argument("--fast", action="store_true", help="tiny model and data (a smoke test)")
    ap.add_argument("--out", default=os.path.join("saved_models", "own_model_small.keras"))
    args = ap.parse_args()
    res, n, epochs = (32, 32, 1) if args.fast else (96, 512, 8)
    model = build_model(res, args.fast)
    train, val = make_data(n, res, 0), make_data(n // 4, res, 1)
    model.fit(*train, batch_size=32, epochs=epochs, verbose=0 if args.fast else 2)
    print("tasks inferred from the compiled losses:", [(t.name, t.kind) for t in tm.tasks.infer_tasks(model)])
    result = tm.compress(model, train, validation=val, target_macs=args.target_macs, method=args.method,
                         find_epochs=1 if args.fast else 4, finetune_epochs=1 if args.fast else 4,
                         verbose=0 if args.fast else 1)
    print(result.table())
    result.model.save(args.out)
    print(f"saved {args.out}: {result.report.mac_ratio:.3f}x MACs, {result.report.param_ratio:.3f}x params")


if __name__ == "__main__":
    main()
