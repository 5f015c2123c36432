"""Prune attention heads and MLP widths of a small multi-task vision transformer, strip, check on LiteRT.

The encoder blocks are a composite custom layer (LayerNormalization, MultiHeadAttention, an MLP and
residual adds, built from Keras layers and keras.ops only): the channel graph sees through them, so
whole heads and MLP hidden units are channel groups, while the LayerNorm-bounded residual stream
stays frozen with its reason. Heads and units are ranked by weight magnitude.

    python examples/prune_transformer.py            # 4 blocks, 8 heads, 64x64 images
    python examples/prune_transformer.py --fast     # tiny, seconds
"""
import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

import tfmot_mtl as tm  # noqa: E402
from tfmot_mtl import lite  # noqa: E402


@keras.saving.register_keras_serializable(package="examples")
class EncoderBlock(keras.layers.Layer):
    """Pre-norm transformer block: x + MHA(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, dim, heads, mlp_dim, **kwargs):
        super().__init__(**kwargs)
        self.dim, self.heads, self.mlp_dim = dim, heads, mlp_dim
        self.ln1 = keras.layers.LayerNormalization()
        self.mha = keras.layers.MultiHeadAttention(heads, dim // heads)
        self.ln2 = keras.layers.LayerNormalization()
        self.fc1 = keras.layers.Dense(mlp_dim, activation="gelu")
        self.fc2 = keras.layers.Dense(dim)

    def call(self, x):
        h = self.ln1(x)
        x = ops.add(x, self.mha(h, h))
        return ops.add(x, self.fc2(self.fc1(self.ln2(x))))

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "heads": self.heads, "mlp_dim": self.mlp_dim}


def build(size, patch, dim, heads, depth):
    image = keras.Input((size, size, 3), name="image")
    x = keras.layers.Conv2D(dim, patch, strides=patch, name="patchify")(image)
    x = keras.layers.Reshape(((size // patch) ** 2, dim), name="tokens")(x)
    for i in range(depth):
        x = EncoderBlock(dim, heads, 2 * dim, name=f"block{i}")(x)
    x = keras.layers.GlobalAveragePooling1D()(keras.layers.LayerNormalization(name="final_ln")(x))
    return keras.Model(image, {"cls": keras.layers.Dense(10, name="cls")(x),
                               "attr": keras.layers.Dense(4, name="attr")(x)}, name="tiny_vit")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fast", action="store_true", help="tiny model, quick run")
    ap.add_argument("--fraction", type=float, default=0.5, help="fraction of heads / MLP units to remove")
    args = ap.parse_args()
    keras.utils.set_random_seed(0)
    size, depth, heads = (32, 2, 4) if args.fast else (64, 4, 8)
    model = build(size, 8, 32 if args.fast else 64, heads, depth)

    graph = tm.ChannelGraph.from_model(model)
    heads_groups = [g for g in graph.prunable_groups if g.id.endswith(":heads")]
    mlp_groups = [g for g in graph.prunable_groups if g.id.endswith("_fc1")]
    print(f"{len(heads_groups)} head groups ({sum(g.size for g in heads_groups)} heads), "
          f"{len(mlp_groups)} MLP groups ({sum(g.size for g in mlp_groups)} units) are prunable")
    print("residual stream:", graph.groups["patchify"].reason)

    scores = tm.pruning.Magnitude()(model, graph)
    masks = {}
    for g in heads_groups + mlp_groups:
        keep = np.ones(g.size, bool)
        keep[np.argsort(scores[g.id])[: int(args.fraction * g.size)]] = False
        masks[g.id] = keep
    masks = tm.ChannelMasks(masks)

    small, report = tm.strip_channels(model, masks)
    print(f"params {report.totals['params_before']:,} -> {report.totals['params_after']:,}  "
          f"MACs {report.totals['macs_before']:,} -> {report.totals['macs_after']:,}")
    print("heads per block:", [small.get_layer(f"block{i}_mha").num_heads for i in range(depth)])

    x = np.random.default_rng(0).random((2, size, size, 3)).astype("float32")
    masked = tm.apply_masks(model, masks).predict(x, verbose=0)
    stripped = small.predict(x, verbose=0)
    keras_err = max(float(np.abs(masked[k] - stripped[k]).max()) for k in masked)
    lm = lite.LiteModel(lite.convert(small, verbose=False))
    on_device = lm.predict({"image": x[:1]})
    lite_err = max(float(np.abs(stripped[k][:1] - on_device[k]).max()) for k in stripped)
    print(f"parity (stripped vs masked): {keras_err:.1e}; LiteRT vs Keras: {lite_err:.1e}")
    if keras_err > 1e-4 or lite_err > 1e-4:
        raise SystemExit("parity check failed")


if __name__ == "__main__":
    main()
