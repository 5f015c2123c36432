"""keras-hub vision backbones (random init from their constructors, no downloads) prune and strip."""
import pytest

from scripts import load_script

pytest.importorskip("keras_hub")
cov = load_script("benchmarks/coverage.py")

CONV = ["hub.ResNet", "hub.VGG", "hub.DenseNet", "hub.Xception", "hub.MobileNetV3", "hub.EfficientNet", "hub.CSPNet",
        "hub.HGNetV2"]
ATTENTION = ["hub.ViT", "hub.DINOV2", "hub.DeiT"]
OTHER = ["hub.MiT", "hub.Swin"]


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
