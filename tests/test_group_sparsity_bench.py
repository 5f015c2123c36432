"""benchmarks/group_sparsity.py: pure helpers (fast) and a --quick smoke run (slow)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from scripts import load_script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "group_sparsity.py")


@pytest.fixture(scope="module")
def bench():
    return load_script("benchmarks/group_sparsity.py")


def test_step_times_and_overhead_ratio(bench):
    ends = [10.0, 12.0, 12.5, 13.0, 13.75]
    np.testing.assert_allclose(bench.step_times(ends), [0.5, 0.5, 0.75])  # first (tracing) step dropped
    np.testing.assert_allclose(bench.step_times(ends, skip=0), [2.0, 0.5, 0.5, 0.75])
    np.testing.assert_allclose(bench.step_times([1.0, 3.0]), [2.0])  # too short to drop a step
    assert bench.overhead_ratio([0.2, 0.4, 0.3], [0.33, 0.36, 0.9]) == pytest.approx(0.36 / 0.3)
    with pytest.raises(ValueError, match="at least one block"):
        bench.overhead_ratio([], [1.0])


def test_names_and_lock_steps(bench):
    assert bench.run_name("mtl", 0.0, None) == "mtl dense"
    assert bench.run_name("mtl", 0.05, None) == "mtl l1=0.05"
    assert bench.run_name("depth", 0.02, 0.7) == "depth target=0.7"
    assert bench.lock_steps(1.0, 0.02) == 0
    assert bench.lock_steps(1.02 ** 57, 0.02) == 57
    assert bench.lock_steps(1.5 ** 3, 0.5) == 3
    with pytest.raises(ValueError, match="gain"):
        bench.lock_steps(0.5, 0.02)


def _row(name, tasks, l1, sparsity, dm=None, metrics=None):
    row = {"name": name, "tasks": tasks, "l1": l1, "channel_sparsity": sparsity, "metrics": metrics}
    if dm is not None:
        row["delta_m_vs_dense_mtl"] = dm
    return row


def test_recommend_prefers_best_delta_m_above_target(bench):
    rows = [_row("mtl dense", "mtl", 0.0, 0.0, 0.0), _row("a", "mtl", 0.7, 0.4, 1.0),
            _row("b", "mtl", 1.0, 0.75, -2.0), _row("c", "mtl", 1.2, 0.9, -1.0),
            _row("st", "depth", 1.0, 0.95)]
    assert bench.recommend(rows)["name"] == "c"
    assert bench.recommend(rows, target=0.95)["name"] == "c"  # none reaches it: the sparsest
    assert bench.recommend(rows[:1]) is None


def test_add_deltas_against_dense_and_single_task(bench):
    from tfmot_mtl import tasks as T

    tasks = [T.classification("left", 10), T.classification("right", 10)]
    m = lambda a, b: {"left": {"accuracy": a, "f1": a}, "right": {"accuracy": b, "f1": b}}  # noqa: E731
    rows = [_row("mtl dense", "mtl", 0.0, 0.0, metrics=m(50.0, 40.0)),
            _row("mtl l1=1", "mtl", 1.0, 0.8, metrics=m(55.0, 40.0)),
            _row("left dense", "left", 0.0, 0.0, metrics={"left": m(25.0, 0)["left"]}),
            _row("right dense", "right", 0.0, 0.0, metrics={"right": m(0, 80.0)["right"]})]
    bench.add_deltas(rows, tasks)
    assert rows[1]["delta_m_vs_dense_mtl"] == pytest.approx((10.0 + 0.0) / 2)
    # vs single-task: left +120%, right -50%
    assert rows[1]["delta_m_vs_single_task"] == pytest.approx((120.0 - 50.0) / 2)
    assert rows[1]["delta_m_vs_single_task_per_task"] == pytest.approx({"left": 120.0, "right": -50.0})
    assert rows[2]["delta_m_vs_single_task"] == pytest.approx(0.0)
    assert "delta_m_vs_dense_mtl" not in rows[2]


def test_plan_jobs_order_and_build_plans(bench):
    plan = bench.Plan(bench.TINY, fixed=(1.0, 2.0), targets=(0.7, 0.5), single_target=0.6)
    jobs = bench.plan_jobs(plan, ["a", "b"], 0.02)
    assert jobs == [("mtl", 0.0, None), ("mtl", 0.02, 0.7), ("mtl", 0.02, 0.5),
                    ("a", 0.0, None), ("b", 0.0, None), ("mtl", 1.0, None), ("mtl", 2.0, None),
                    ("a", 0.02, 0.6), ("b", 0.02, 0.6)]
    no_st = bench.plan_jobs(bench.replace(plan, single_task=False), ["a"], 0.02)
    assert [j[0] for j in no_st] == ["mtl"] * 5
    args = bench.parse_args(["--datasets", "synthetic_scenes", "--lambdas", "0.5", "0.9",
                             "--targets", "0.8", "--epochs", "3", "--demo-setting"])
    assert args.l1_loss == 1e-5 and args.l1 == 0.02 and args.adapt_rate == 0.02
    plans = bench.build_plans(args)
    assert list(plans) == ["synthetic_scenes", "synthetic_scenes (demo setting)"]
    p = plans["synthetic_scenes"]
    assert p.fixed == (0.5, 0.9) and p.targets == (0.8,) and p.config.epochs == 3
    demo = plans["synthetic_scenes (demo setting)"]
    assert demo.dataset == "synthetic_scenes" and demo.config == bench.DEMO and demo.targets == (0.7,)
    default = bench.PRESETS["default"]["synthetic_scenes"]
    assert len(default.fixed) >= 4 and default.targets == (0.7, 0.5, 0.85) and default.single_target == 0.7
    assert bench.PRESETS["default"]["multi_digits"].targets == (0.7,)
    with pytest.raises(ValueError, match="--datasets"):
        bench.build_plans(bench.parse_args(["--datasets", "nyuv2"]))


@pytest.mark.slow
def test_quick_run_writes_json(tmp_path):
    out = tmp_path / "res"
    proc = subprocess.run([sys.executable, SCRIPT, "--quick", "--datasets", "synthetic_scenes",
                           "--out", str(out), "--verbose", "0"], cwd=ROOT, capture_output=True,
                          text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "group_sparsity.json").read_text())
    assert result["complete"] and result["preset"] == "quick"
    res = result["datasets"]["synthetic_scenes"]
    assert {"config", "tasks", "rows", "overhead", "recommended", "encoder_layers"} <= set(res)
    assert res["overhead"]["ratio"] > 0
    names = [r["name"] for r in res["rows"]]
    assert names == ["mtl dense", "mtl target=0.5", "segmentation dense", "depth dense", "normals dense",
                     "mtl l1=0.02", "segmentation target=0.5", "depth target=0.5", "normals target=0.5"]
    target_row = res["rows"][1]
    assert target_row["effective_l1"] >= 0.02 and target_row["l1_loss"] == pytest.approx(1e-5)
    for r in res["rows"]:
        assert {"channel_sparsity", "param_sparsity", "params", "macs", "metrics", "latency_ms",
                "train_step_s"} <= set(r)
        assert 0.0 <= r["channel_sparsity"] <= 1.0 and r["latency_ms"] > 0
    mtl = res["rows"][0]
    assert mtl["delta_m_vs_dense_mtl"] == pytest.approx(0.0)
    assert "delta_m_vs_single_task" in mtl or "delta_m_error" in mtl
    assert (out / "group_sparsity.png").stat().st_size > 0


@pytest.fixture(scope="module")
def paper():
    return load_script("benchmarks/group_sparsity_paper.py")


def _paper_rows():
    m = lambda a, b: {"left": {"accuracy": a, "f1": a}, "right": {"accuracy": b, "f1": b}}  # noqa: E731
    rows = []
    for seed, (d, s1, s2) in enumerate([(50.0, 55.0, 45.0), (40.0, 44.0, 38.0)]):
        rows += [{"seed": seed, "kind": "mtl", "task": "mtl", "lambda": 0.0, "channel_sparsity": 0.0,
                  "param_sparsity": 0.0, "params": 100, "metrics": m(d, d), "latency_ms": 2.0, "epochs_run": 9},
                 {"seed": seed, "kind": "mtl", "task": "mtl", "lambda": 0.01, "channel_sparsity": 0.4 + 0.1 * seed,
                  "param_sparsity": 0.5, "params": 60, "metrics": m(s1, s1), "epochs_run": 8},
                 {"seed": seed, "kind": "mtl", "task": "mtl", "lambda": 0.03, "channel_sparsity": 0.7,
                  "param_sparsity": 0.8, "params": 30, "metrics": m(s2, s2), "epochs_run": 7}]
    rows += [{"seed": 0, "kind": "single", "task": t, "lambda": 0.03, "channel_sparsity": 0.6, "params": 20,
              "metrics": {t: m(45.0, 45.0)[t]}} for t in ("left", "right")]
    return rows


def test_paper_summary_mean_std_and_single_task(paper):
    from tfmot_mtl import tasks as T

    tasks = [T.classification("left", 10), T.classification("right", 10)]
    rows = _paper_rows()
    s = paper.summarize(rows, tasks)
    assert [e["lambda"] for e in s["sweep"]] == [0.0, 0.01, 0.03]
    e = s["sweep"][1]
    assert e["n"] == 2 and e["channel_sparsity"]["mean"] == pytest.approx(0.45)
    assert e["delta_m"]["mean"] == pytest.approx((10.0 + 10.0) / 2)  # +10% on both seeds
    assert s["sweep"][2]["delta_m"]["mean"] == pytest.approx((-10.0 - 5.0) / 2)
    st = s["single_task"]
    assert st["delta_m"] == pytest.approx(-10.0) and st["params_total"] == 40
    assert st["mtl_delta_m"] == pytest.approx(-10.0) and st["mtl_params"] == 30
    hit = paper.at_sparsity(s, 0.7)
    assert hit["lambda"] == 0.03
    text = paper.format_tables({"summary": s, "at_target": hit, "target": 0.7})
    assert "NOT met" in text and "| 0.01 | 2 | 45.0 ± 5.0 |" in text


def test_paper_presets_and_cli(bench, paper):
    small = paper.PRESETS["paper-small"]
    assert small["n_train"] <= 800 and len(small["seeds"]) == 3 and len(small["lambdas"]) + len(small["targets"]) >= 3
    jobs = paper.plan_jobs(small, ["a", "b"])
    assert jobs[:5] == [(0, "mtl", 0.0, None), (0, "mtl", 0.01, 0.5), (0, "mtl", 0.01, 0.7), (0, "mtl", 0.01, 0.85),
                        (0, "mtl", 0.01, None)]
    assert (1, "mtl", 0.02, None) not in jobs and (2, "mtl", 0.01, 0.7) in jobs  # fixed lambdas on seed 0 only
    assert jobs[-2:] == [(0, "a", 0.01, 0.7), (0, "b", 0.01, 0.7)]
    assert paper.setting_name({"lambda": 0.02, "target": None}) == "0.02"
    assert paper.setting_name({"lambda": 0.01, "target": 0.7, "effective_lambda": {"mean": 0.0153}}) \
        == "target 0.7 (λ 0.0153)"
    assert bench.parse_args(["--preset", "paper-small"]).preset == "paper-small"
