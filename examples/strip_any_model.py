"""Strip channels out of any Keras functional model: graph -> masks -> strip -> parity -> .keras.

    python examples/strip_any_model.py                 # MobileNetV2 (weights=None) at 96x96
    python examples/strip_any_model.py --model my.keras --fraction 0.5
    python examples/strip_any_model.py --fast
"""
import argparse
import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfmot_mtl as tm  # noqa: E402
from tfmot_mtl.utils.atomic import atomic_save_model  # noqa: E402
from tfmot_mtl.masks import channel_norms, read_weights  # noqa: E402
from tfmot_mtl.utils.model_files import load_model  # noqa: E402


def smallest_norm_masks(graph, fraction):
    """Drop the `fraction` of channels with the smallest L2 norm in every prunable group."""
    weights = read_weights(graph)
    masks = {}
    for group in graph.prunable_groups:
        norms = channel_norms(graph, weights, group.id)
        keep = np.ones(group.size, bool)
        keep[np.argsort(norms)[: int(fraction * group.size)]] = False
        masks[group.id] = keep
    return tm.ChannelMasks(masks)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="a .keras file (default: keras.applications.MobileNetV2)")
    ap.add_argument("--fraction", type=float, default=0.5, help="fraction of channels to remove per group")
    ap.add_argument("--fast", action="store_true", help="tiny input, quick run")
    ap.add_argument("--out", default=None, help="where to save the stripped .keras")
    args = ap.parse_args()

    if args.model:
        model = load_model(args.model)
    else:
        size = 32 if args.fast else 96
        model = keras.applications.MobileNetV2(weights=None, input_shape=(size, size, 3), classes=10,
                                               alpha=0.35 if args.fast else 1.0)
    graph = tm.ChannelGraph.from_model(model)
    graph.summary(print_fn=lambda text: print(text[:3000]))
    masks = smallest_norm_masks(graph, args.fraction)
    print(masks)

    masked = tm.apply_masks(model, masks)
    small, report = tm.strip_channels(masked, masks)
    print(report)
    x = np.random.default_rng(0).random((2,) + tuple(model.inputs[0].shape[1:])).astype("float32")
    a, b = np.asarray(masked(x)), np.asarray(small(x))
    rel = np.abs(a - b).max() / max(np.abs(a).max(), 1e-6)
    print(f"parity (stripped vs masked): max relative error {rel:.2e}")
    out = args.out or os.path.join(tempfile.mkdtemp(), "stripped.keras")
    atomic_save_model(small, out)  # never a half-written file where a good one was
    keras.saving.load_model(out, safe_mode=True)
    print(f"params {model.count_params():,} -> {small.count_params():,}; saved {out}")
    if rel > 1e-4:
        raise SystemExit("parity check failed")


if __name__ == "__main__":
    main()
