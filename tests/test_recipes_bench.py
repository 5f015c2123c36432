"""benchmarks/recipes.py: the summary helper (fast) and a --quick run end to end."""
import json

import pytest

from scripts import load_script


@pytest.fixture(scope="module")
def bench():
    return load_script("benchmarks/recipes.py")


def test_summary_is_mean_and_std_over_seeds(bench):
    rows = [{"target": 0.5, "variant": "+distill", "delta_m": d, "macs": 10.0, "params": 5.0}
            for d in (-1.0, -3.0)]
    rows.append({"target": 0.0, "variant": "dense, same budget", "delta_m": 0.0, "macs": 40.0, "params": 9.0})
    summary = bench.summarise(rows)
    assert [s["variant"] for s in summary] == ["dense, same budget", "+distill"]
    assert summary[1]["delta_m_mean"] == pytest.approx(-2.0) and summary[1]["delta_m_std"] == pytest.approx(1.0)
    assert summary[1]["seeds"] == 2


@pytest.mark.slow
def test_quick_run_writes_every_variant(bench, tmp_path):
    result = bench.main(["--quick", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "recipes.json").read_text())
    assert (tmp_path / "recipes_pareto.png").exists()
    variants = {s["variant"] for s in saved["summary"]}
    assert variants == {"dense, same budget", *bench.VARIANTS}
    dense_macs = next(s["macs"] for s in saved["summary"] if s["target"] == 0.0)
    assert all(s["macs"] < dense_macs for s in saved["summary"] if s["target"] > 0)
    assert saved["budget_epochs"]["dense_reference"] == saved["budget_epochs"]["compressed"][0]["total"]
    assert result["summary"] == saved["summary"]


def test_splits_are_parsed_and_must_share_one_total(bench, tmp_path):
    assert bench.parse_split("8,10,6") == (8, 10, 6)
    assert bench.parse_split("8,10,6,2e-3,1e-3") == (8, 10, 6, 2e-3, 1e-3)
    for bad in ("8,10", "a,b,c", "-1,2,3", "0,0,0", "8,10,6,1e-3", "8,10,6,0,1e-3"):
        with pytest.raises(Exception, match="split is|epochs must"):
            bench.parse_split(bad)
    with pytest.raises(SystemExit):
        bench.main(["--quick", "--splits", "1,1,1", "2,1,1", "--out", str(tmp_path)])


@pytest.mark.slow  # a benchmark's smoke run (~1 min); the split parsing above runs by default
def test_quick_splits_run_compares_each_split_with_one_dense_reference(bench, tmp_path):
    bench.main(["--quick", "--splits", "2,1,1", "1,2,1,2e-3,1e-3", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "recipes_splits.json").read_text())
    assert [s["variant"] for s in saved["summary"]] == ["dense, same budget", "2 + 1 + 1",
                                                        "1 + 2 + 1 lr 0.002/0.001"]
    assert saved["budget_epochs"]["dense_reference"] == 4
    assert [b["total"] for b in saved["budget_epochs"]["compressed"]] == [4, 4]
    assert all(r["sparsity"] > 0 for r in saved["rows"] if r["target"] > 0)


@pytest.mark.slow
def test_variants_option_runs_only_the_named_ones(bench, tmp_path):
    bench.main(["--quick", "--variants", "finetune", "+distill, same-budget teacher", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "recipes.json").read_text())
    assert {s["variant"] for s in saved["summary"]} == {"dense, same budget", "finetune",
                                                         "+distill, same-budget teacher"}
    with pytest.raises(SystemExit):
        bench.main(["--quick", "--variants", "nothing", "--out", str(tmp_path)])
