"""The main job (`tfmot-mtl demo`) and `tfmot-mtl train` run end to end in their tiny settings."""
import json

import pytest

from tfmot_mtl.cli import main
from tfmot_mtl.demo import run_demo


@pytest.mark.slow
def test_demo_fast_group_sparsity_variant(tmp_path):
    from dataclasses import replace

    from tfmot_mtl.demo import PRESETS

    cfg = replace(PRESETS["fast"], method="sparsity", l1=20.0, adapt_rate=0.3, finetune_lr=0.05, distill=True)
    report = run_demo(out=str(tmp_path), config=cfg, verbose=0)
    assert report["strip_parity_max_rel_err"] <= 1e-4
    assert report["config"]["method"] == "sparsity"
    assert report["sparsity"]["channel_sparsity"] > 0


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
                            "evaluate"]
    assert all(t >= 0 for t in phases.values()) and sum(phases.values()) <= saved["seconds"] + 1
    assert set(saved["rows"]["dense parent"]["metrics"]) == {"segmentation", "depth", "normals"}


def test_cli_train_writes_model_and_metrics(tmp_path):
    code = main(["train", "--epochs", "1", "--width", "0.25", "--n-train", "16", "--n-test", "8",
                 "--resolution", "32", "--batch-size", "8", "--name", "tiny", "--out", str(tmp_path)])
    assert code == 0
    metrics = json.loads((tmp_path / "tiny" / "metrics.json").read_text())
    assert "miou" in metrics["metrics"]["segmentation"]
    assert (tmp_path / "tiny" / "model.keras").exists()
