"""The main job (`tfmot-mtl demo`) and `tfmot-mtl train` run end to end in their tiny settings."""
import json

from tfmot_mtl.cli import main
from tfmot_mtl.demo import run_demo


def test_demo_fast_end_to_end(tmp_path):
    report = run_demo(out=str(tmp_path), fast=True, verbose=0)
    assert report["strip_parity_max_rel_err"] <= 1e-4
    rows = report["rows"]
    assert set(rows) == {"dense", "sparse (stripped)"}
    assert rows["sparse (stripped)"]["params"] <= rows["dense"]["params"]
    for name in ("dense.keras", "sparse_stripped.keras", "report.json", "sparsity_pattern.png",
                 "dense_vs_sparse.png"):
        assert (tmp_path / name).exists(), name
    saved = json.loads((tmp_path / "report.json").read_text())
    assert set(saved["rows"]["dense"]["metrics"]) == {"segmentation", "depth", "normals"}


def test_cli_train_writes_model_and_metrics(tmp_path):
    code = main(["train", "--epochs", "1", "--width", "0.25", "--n-train", "16", "--n-test", "8",
                 "--resolution", "32", "--batch-size", "8", "--name", "tiny", "--out", str(tmp_path)])
    assert code == 0
    metrics = json.loads((tmp_path / "tiny" / "metrics.json").read_text())
    assert "miou" in metrics["metrics"]["segmentation"]
    assert (tmp_path / "tiny" / "model.keras").exists()
