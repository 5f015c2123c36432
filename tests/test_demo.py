"""The main job (`tfmot-mtl demo`) and `tfmot-mtl train` run end to end in their tiny settings."""
import json

import pytest

from tfmot_mtl.app.cli import main
from tfmot_mtl.app.demo import run_demo


@pytest.mark.slow
def test_demo_fast_group_sparsity_variant(tmp_path):
    from dataclasses import replace

    from tfmot_mtl.app.demo import PRESETS

    cfg = replace(PRESETS["fast"], method="sparsity", l1=20.0, adapt_rate=0.3, finetune_lr=0.05, distill=True)
    report = run_demo(out=str(tmp_path), config=cfg, verbose=0)
    assert report["strip_parity_max_rel_err"] <= 1e-4
    assert report["config"]["method"] == "sparsity"
    assert report["sparsity"]["channel_sparsity"] > 0


@pytest.mark.heavy
def test_demo_fast_end_to_end(tmp_path):
    report = run_demo(out=str(tmp_path), fast=True, verbose=0)
    assert report["strip_parity_max_rel_err"] <= 1e-4
    rows = report["rows"]
    assert set(rows) == {"dense, same budget", "dense parent", "compressed (pruned, stripped, fine-tuned)"}
    small, same = rows["compressed (pruned, stripped, fine-tuned)"], rows["dense, same budget"]
    assert small["params"] < same["params"] and small["macs"] < same["macs"]
    # the compressed model and its baseline saw the same number of epochs; the parent fewer
    budget = report["budget"]
    assert small["epochs"] == same["epochs"] == budget["total_epochs"] == (
        budget["dense_epochs"] + budget["find_epochs"] + budget["finetune_epochs"])
    assert rows["dense parent"]["epochs"] == budget["dense_epochs"]
    assert same["delta_m"] == 0.0 and report["delta_m_vs_same_budget_dense"] == small["delta_m"]
    for name in ("dense.keras", "dense_same_budget.keras", "sparse_stripped.keras", "report.json",
                 "sparsity_pattern.png", "dense_vs_sparse.png"):
        assert (tmp_path / name).exists(), name
    saved = json.loads((tmp_path / "report.json").read_text())
    phases = saved["phase_seconds"]  # each phase's wall time, in the order they ran
    assert list(phases) == ["data", "dense parent", "find channels", "strip", "fine-tune", "same-budget dense",
                            "evaluate", "LiteRT"]
    assert all(t >= 0 for t in phases.values()) and sum(phases.values()) <= saved["seconds"] + 1
    assert set(saved["rows"]["dense parent"]["metrics"]) == {"segmentation", "depth", "normals"}
    # the demo ends on LiteRT: float32 and int8 files of both models with every task metric
    lite = saved["lite"]
    assert [(r["model"], r["quantization"]) for r in lite["rows"]] == [
        ("dense, same budget", "float32"), ("dense, same budget", "int8"),
        ("compressed", "float32"), ("compressed", "int8")]
    for row in lite["rows"]:
        assert set(row["metrics"]) == set(row["task_cost"]) == {"segmentation", "depth", "normals"}
        assert row["median_ms"] > 0 and 0 < row["gzip_bytes"] and row["size_bytes"] > 0
    float_small = next(r for r in lite["rows"] if r == lite["rows"][2])
    assert float_small["max_abs_error"] < 1e-3
    # float32 on LiteRT scores what Keras scores: its Δm is the Keras row's
    assert float_small["delta_m"] == pytest.approx(small["delta_m"], abs=0.05)
    int8_small = lite["rows"][3]
    assert int8_small["size_bytes"] < float_small["size_bytes"]
    assert "than float32 on this CPU" in lite["recommendation"]
    assert (tmp_path / "mobile_int8" / "model.tflite").exists()
    bundle = json.loads((tmp_path / "mobile_int8" / "model.json").read_text())
    assert bundle["quantization"] == "int8"


@pytest.mark.slow  # ~28 s; the demo test trains the same model
def test_cli_train_writes_model_and_metrics(tmp_path):
    code = main(["train", "--epochs", "1", "--width", "0.25", "--n-train", "16", "--n-test", "8",
                 "--resolution", "32", "--batch-size", "8", "--name", "tiny", "--out", str(tmp_path)])
    assert code == 0
    metrics = json.loads((tmp_path / "tiny" / "metrics.json").read_text())
    assert "miou" in metrics["metrics"]["segmentation"]
    assert (tmp_path / "tiny" / "model.keras").exists()
