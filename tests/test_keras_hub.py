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
    assert row["transfer_ok"], row  # the masks apply to the clone_model copy and the .keras reload
    if name in CONV:
        assert row["prunable_share"] >= 0.8, row
        assert row["param_ratio"] < 0.8, row
    if name in ATTENTION:
        assert row["prunable_heads"] > 0 and row["prunable_mlp_units"] > 0, row


@pytest.mark.parametrize("name", ["hub.HGNetV2", "hub.DeepLabV3"])
def test_masks_apply_to_the_clone_and_the_keras_reload_whose_layer_names_differ(name):
    """keras-hub rebuilds these from their arguments: auto-numbered composite layers get new numbers
    (DeepLabV3) and layer names gain the backbone's name as a prefix (HGNetV2)."""
    import keras
    import numpy as np

    import tfmot_mtl as tm

    keras.utils.set_random_seed(0)
    model = cov._two_heads(cov._hub_builders(32)[name](), name.replace(".", "_"), 32)
    cov._randomize(model)
    graph = tm.ChannelGraph.from_model(model)
    clone_graph = tm.ChannelGraph.from_model(keras.models.clone_model(model))
    assert set(clone_graph.groups) != set(graph.groups) and clone_graph.fingerprint == graph.fingerprint
    rng = np.random.default_rng(0)
    masks = tm.ChannelMasks({g.id: rng.random(g.size) >= 0.5 for g in graph.prunable_groups})
    x = np.random.default_rng(1).random((2, 32, 32, 3)).astype("float32")
    row = cov._transfer(model, graph, masks, x)
    assert row["transfer_ok"], row


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
