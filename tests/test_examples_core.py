"""The core examples and benchmarks run end to end in their fast settings."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args, timeout=300):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc.stdout


def test_strip_any_model_example(tmp_path):
    out = run("examples/strip_any_model.py", "--fast", "--out", str(tmp_path / "s.keras"))
    assert "parity (stripped vs masked)" in out
    assert (tmp_path / "s.keras").exists()


def test_strip_speed_benchmark_runs(tmp_path):
    out = run("benchmarks/strip_speed.py", "--input-size", "32", "--repeats", "1", "--models",
              "MobileNetV2", "--out", str(tmp_path / "s.json"))
    assert "MobileNetV2" in out and (tmp_path / "s.json").exists()
