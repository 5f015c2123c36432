"""The transformer pruning example runs end to end in its fast setting."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.heavy
def test_prune_transformer_example():
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "examples/prune_transformer.py", "--fast"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "2 head groups (8 heads)" in proc.stdout and "heads per block: [2, 2]" in proc.stdout
    assert "block0_ln1" in proc.stdout  # the frozen stream is explained by the traced sub-layer's name
    assert "parity (stripped vs masked)" in proc.stdout
