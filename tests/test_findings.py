"""benchmarks/findings.py: the judging rules (fast) and a tiny end-to-end run (slow)."""
import json
import os
import subprocess
import sys

import pytest

from scripts import load_script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "findings.py")


@pytest.fixture(scope="module")
def findings():
    return load_script("benchmarks/findings.py")


def _garg_runs():
    runs = []
    for crit, dms in (("taylor", (-2.0, -20.0)), ("cosprune", (-3.0, -18.0)), ("magnitude", (-1.0, -25.0)),
                      ("random", (-12.0, -40.0))):
        for level, dm in zip((0.5, 0.9), dms):
            r = {"criterion": crit, "level": level, "delta_m": dm}
            if level == 0.9:
                r["reinit"] = {"delta_m": dm + 5}
            runs.append(r)
    return runs


def test_judge_garg(findings):
    rows = findings.judge_garg(_garg_runs())
    assert [r["holds"] for r in rows] == [True, True, True]
    assert rows[0]["numbers"]["spread"] == pytest.approx(2.0)  # random is not an informed criterion
    flat = [dict(r, delta_m=-1.0, reinit={"delta_m": -3.0}) if r["level"] == 0.9 else r for r in _garg_runs()]
    rows = findings.judge_garg(flat)
    assert [r["holds"] for r in rows[1:]] == [False, False]


def _equal_summary(means, std=1.0):
    """summarize_equal-like rows: {level: {criterion: mean delta_m}}."""
    return [{"criterion": c, "level": lv, "lr": 5e-4, "seeds": 3, "delta_m_mean": dm, "delta_m_std": std}
            for lv, row in means.items() for c, dm in row.items()]


def test_judge_garg_criteria_row_at_equal_parameters(findings):
    near = {0.7: {"taylor": 1.0, "cosprune": -2.0, "magnitude": -1.5, "random": -30.0},
            0.4: {"taylor": -1.0, "cosprune": -4.5, "magnitude": -3.0}}
    rows = findings.judge_garg(_garg_runs(), _equal_summary(near))
    assert rows[0]["holds"] is True and rows[0]["finding"].endswith("equal parameter counts")
    assert rows[0]["numbers"]["spread"] == {0.7: pytest.approx(3.0), 0.4: pytest.approx(3.5)}  # random ignored
    assert "± 1.0" in rows[0]["measured"] and "3 seed(s)" in rows[0]["measured"]
    far = {0.7: {"taylor": 1.0, "cosprune": -2.0}, 0.4: {"taylor": 1.0, "cosprune": -4.5}}
    assert findings.judge_garg(_garg_runs(), _equal_summary(far))[0]["holds"] is False  # 5.5 at one level
    assert findings.judge_garg(_garg_runs(), _equal_summary({0.7: {"taylor": 1.0}}))[0]["holds"] is None


def test_equal_parameter_levels_sit_on_pruning_events_and_the_rate_is_chosen_on_validation():
    ip = load_script("benchmarks/iterative_pruning.py")
    assert ip.level_steps((0.7, 0.4), 8) == {0.7: pytest.approx(0.45), 0.4: pytest.approx(0.9)}
    with pytest.raises(ValueError, match="between pruning events"):
        ip.level_steps((0.6, 0.4), 8)
    rows = [{"criterion": "taylor", "level": 0.7, "lr": lr, "seed": seed, "val_delta_m": val, "delta_m": test,
             "delta_m_same_budget": test - 1.0, "params": 100, "param_share": 0.7, "on_target": True}
            for lr, val, test in ((1e-3, -5.0, 3.0), (5e-4, -1.0, -2.0)) for seed in (0, 1)]
    rows[2]["delta_m"] = -4.0  # lr 5e-4, seed 0
    (summary,) = ip.summarize_equal(rows)
    assert summary["lr"] == 5e-4  # best on validation, although worse on test
    assert summary["delta_m_mean"] == pytest.approx(-3.0) and summary["delta_m_std"] == pytest.approx(1.0)
    assert summary["delta_m_same_budget_mean"] == pytest.approx(-3.0)  # -2 - 1 on both seeds


def _sweep(entries):
    return {"summary": {"sweep": [{"lambda": lam, "n": 3, "channel_sparsity": {"mean": s, "std": 0.01},
                                   "delta_m": {"mean": dm, "std": 1.0}} for lam, s, dm in entries]}}


def test_judge_upadhyay(findings):
    rows = findings.judge_upadhyay(_sweep([(0.0, 0.0, 0.0), (0.1, 0.3, 1.0), (0.3, 0.68, 0.5), (1.0, 0.9, -4.0)]))
    assert [r["holds"] for r in rows] == [True, True]
    assert rows[1]["numbers"]["lambda"] == 0.3
    rows = findings.judge_upadhyay(_sweep([(0.1, 0.5, 1.0), (0.3, 0.4, -2.0), (1.0, 0.72, -2.0)]))
    assert [r["holds"] for r in rows] == [False, False]
    rows = findings.judge_upadhyay(_sweep([(0.1, 0.1, 1.0), (0.3, 0.95, -2.0)]))
    assert rows[1]["holds"] is None and "no sweep point" in rows[1]["measured"]


def test_judge_upadhyay_picks_a_target_setting_and_judges_monotonicity_on_fixed_lambdas(findings):
    result = _sweep([(0.0, 0.0, 0.0), (0.1, 0.3, 1.0), (0.3, 0.9, -4.0)])
    result["summary"]["sweep"].append({"lambda": 0.05, "target": 0.7, "n": 3, "channel_sparsity": {"mean": 0.71, "std": 0.0},
                                       "delta_m": {"mean": 0.5, "std": 0.2}, "effective_lambda": {"mean": 0.2, "std": 0}})
    rows = findings.judge_upadhyay(result)
    assert [r["holds"] for r in rows] == [True, True]  # 0.05 -> 71% does not break the fixed-lambda order
    assert rows[1]["numbers"]["target"] == 0.7 and "target 0.7 (λ 0.2): 71% sparsity" in rows[1]["measured"]


def test_judge_dos_santos_and_table(findings):
    result = {"unpruned": {"accuracy": {"a": 0.8, "b": 0.6}},
              "baseline": {"one_params": 1000, "one_macs": 5000},
              "runs": [{"budget": 0.5, "sharing": "none", "mean_accuracy": 0.68, "params": 900,
                        "max_macs_as_run": 4000, "decathlon": 1500.0},
                       {"budget": 0.5, "sharing": "jaccard", "mean_accuracy": 0.695, "params": 1100,
                        "max_macs_as_run": 4000, "decathlon": 1800.0}]}
    rows = findings.judge_dos_santos(result)
    assert [r["holds"] for r in rows] == [True, False]  # the best-accuracy run (jaccard) is judged
    assert rows[0]["numbers"]["delta_points"] == pytest.approx(-0.5)
    assert findings.judge_dos_santos(result, budget=0.25)[0]["holds"] is None
    table = findings.format_table(rows)
    assert "does not hold" in table and table.count("\n") == 3


@pytest.mark.slow
def test_tiny_preset_writes_json(tmp_path):
    proc = subprocess.run([sys.executable, SCRIPT, "--preset", "tiny", "--out", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "findings_tiny.json").read_text())
    assert result["complete"] and set(result["raw"]) == {"garg", "upadhyay", "dos_santos"}
    papers = [r["paper"] for r in result["rows"]]
    assert len(result["rows"]) == 7 and len(set(papers)) == 3
    for r in result["rows"]:
        assert r["holds"] in (True, False, None) and r["measured"]
    assert "| paper | finding |" in proc.stdout
