"""The core examples and benchmarks run end to end in their fast settings."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args, timeout=300):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc.stdout


@pytest.mark.heavy
def test_strip_any_model_example(tmp_path):
    out = run("examples/strip_any_model.py", "--fast", "--out", str(tmp_path / "s.keras"))
    assert "parity (stripped vs masked)" in out
    assert (tmp_path / "s.keras").exists()


@pytest.mark.slow  # a benchmark's smoke run; the examples run by default
def test_strip_speed_benchmark_runs(tmp_path):
    out = run("benchmarks/strip_speed.py", "--input-size", "32", "--repeats", "1", "--models",
              "MobileNetV2", "--out", str(tmp_path / "s.json"))
    assert "MobileNetV2" in out and (tmp_path / "s.json").exists()


@pytest.mark.slow  # a benchmark's smoke run; the examples run by default
def test_speedup_sweep_benchmark_runs(tmp_path):
    import json

    out = run("benchmarks/speedup_sweep.py", "--quick", "--out", str(tmp_path / "sweep.json"))
    rows = json.loads((tmp_path / "sweep.json").read_text())["rows"]
    assert [r["round_to"] for r in rows] == [1, 4] and "all configurations" in out
    for r in rows:
        assert 0.6 < r["channel_sparsity"] < 0.8, r
        assert r["ideal_speedup"] > 3 and r["measured_speedup"] > 0 and r["macs"] < r["dense_macs"]
        assert r["speedup_vs_ideal"] == r["measured_speedup"] / r["ideal_speedup"]


@pytest.mark.slow  # ~35 s; test_distill covers distillation
def test_distill_finetune_example(tmp_path):
    import keras

    out = run("examples/distill_finetune.py", "--fast", "--anneal", "--out", str(tmp_path / "student.keras"))
    assert "stripped + distilled fine-tuning (baseline: dense)" in out and "learned task weights" in out
    assert "distillation weight fading to 0 (last epoch's mean 0.75)" in out  # 1 epoch of 2 steps: 1, 0.5
    student = keras.saving.load_model(tmp_path / "student.keras", safe_mode=True)
    assert sorted(student.output_names) == ["depth", "normals", "segmentation"]


@pytest.mark.slow  # ~60 s; test_prune_cli and test_criteria cover the criteria
def test_compare_criteria_example_lands_every_criterion_on_the_same_parameter_count():
    out = run("examples/compare_criteria.py", "--fast", "--criteria", "bnscale", "cosprune")
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.split()[:1] in (["bnscale"], ["cosprune"])}
    assert set(rows) == {"bnscale", "cosprune"}
    for name, cells in rows.items():
        assert abs(float(cells[2]) - 0.5) <= 0.005, cells  # the share of the dense parameters
