"""keras-hub vision backbones (random init from their constructors, no downloads) prune and strip."""
import pytest

from scripts import load_script

pytest.importorskip("keras_hub")
cov = load_script("benchmarks/coverage.py")

CONV = ["hub.ResNet", "hub.VGG", "hub.DenseNet", "hub.Xception", "hub.MobileNetV3", "hub.EfficientNet", "hub.CSPNet",
        "hub.HGNetV2"]
ATTENTION = ["hub.ViT", "hub.DINOV2", "hub.DeiT", "hub.MiT"]
OTHER = ["hub.Swin"]


@pytest.mark.slow
@pytest.mark.parametrize("name", CONV + ATTENTION + OTHER)
def test_keras_hub_backbone_strips_with_parity(name):
    row = cov.measure(name, cov._hub_builders(32)[name], 32)
    assert "error" not in row, row
    assert row["parity_rel"] <= 1e-4, row
    if name in CONV:
        assert row["prunable_share"] >= 0.8, row
        assert row["param_ratio"] < 0.8, row
    if name in ATTENTION:
        assert row["prunable_heads"] > 0 and row["prunable_mlp_units"] > 0, row


@pytest.mark.slow
def test_mit_matmul_heads_strip_and_match_on_litert():
    """SegFormer's attention (keras.ops matmuls, no MultiHeadAttention): one of two heads removed."""
    import keras
    import numpy as np

    import tfmot_mtl as tm
    from tfmot_mtl import lite

    model = cov._two_heads(cov._hub_builders(32)["hub.MiT"](), "mit", 32)
    cov._randomize(model)
    graph = tm.ChannelGraph.from_model(model)
    heads = [g for g in graph.prunable_groups if any(p.endswith(":heads") for p in g.producers)]
    assert heads and all(g.size == 2 for g in heads)
    masks = tm.ChannelMasks({g.id: np.array([False, True]) for g in heads})
    small, _ = tm.strip_channels(model, masks)
    q = [layer for layer in small.layers if layer.name.endswith("1_0_attn_q")][0]
    assert isinstance(q, keras.layers.Dense) and q.units == 16
    x = np.random.default_rng(0).random((2, 32, 32, 3)).astype("float32")
    expected = tm.apply_masks(model, masks).predict(x, verbose=0)
    got = small.predict(x, verbose=0)
    assert all(np.max(np.abs(expected[k] - got[k])) < 1e-4 for k in expected)
    lm = lite.LiteModel(lite.convert(small, verbose=False))
    out = lm.predict({small.inputs[0].name: x[:1]})
    ref = small.predict(x[:1], verbose=0)
    assert all(np.max(np.abs(ref[k] - out[k])) < 1e-4 for k in ref)
