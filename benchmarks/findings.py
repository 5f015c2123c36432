"""Each seed paper's headline findings, measured at small scale, in one table.

Runs the three benchmarks at one preset and judges each finding with a stated rule:

- Garg et al. 2023 (`iterative_pruning.py`): (1) the informed criteria (Taylor, CosPrune,
  Magnitude) differ little at equal parameter counts (the equal-parameter mode: spread of the
  criteria's mean delta_m <= 5 points at every parameter level; the quick preset runs one seed
  at one learning rate, ``iterative_pruning.py --preset seeds`` three seeds with a learning-rate
  sweep); (2) iterative pruning degrades sharply at extreme levels (delta_m at the highest
  level >= 3 points below the lowest); (3) re-initialised + retrained pruned architectures do
  better there (higher delta_m at the highest level, averaged over criteria).
- Upadhyay et al. 2024 (`group_sparsity_paper.py`): (1) sparsity grows with lambda (over the
  fixed lambdas); (2) at ~70% shared-channel sparsity (the sparse setting closest to it, fixed
  lambda or target, within 50-85%) the multi-task model's mean delta_m vs its dense model is >= 0.
- dos Santos et al. 2023 (`budget_mdl.py`, domain-specific BN): at budget 0.5 (1) mean
  accuracy within 1 point of the unpruned multi-domain model; (2) parameters and MACs
  (as run, the most expensive domain) below ONE single-domain baseline.

    python benchmarks/findings.py                  # quick preset, <= 20 min on 2 CPU cores
    python benchmarks/findings.py --preset full    # the benchmarks' long versions (hours)
    python benchmarks/findings.py --preset tiny    # smoke run (numbers meaningless)

Writes ``<out>/findings.json`` (rows + every benchmark's raw result) and prints the table.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import numpy as np  # noqa: E402

INFORMED = ("taylor", "cosprune", "magnitude")
PRESETS = {
    "tiny": {
        "garg": dict(n_train=16, n_test=8, batch_size=8, resolution=16, base_channels=4, head_channels=4,
                     dense_epochs=1, frequency=1, step=0.3, fine_tune_steps=1, levels=(0.3, 0.6),
                     reinit_levels=(0.6,), score_batches=1, eager=True, criteria=("taylor", "magnitude"),
                     equal_params=dict(seeds=(0,), lrs=(1e-3,), n_train=16, n_val=8, n_test=8, resolution=16,
                                       base_channels=4, head_channels=4, dense_epochs=1, frequency=1, events=2,
                                       fine_tune_steps=1, param_levels=(0.85, 0.7), eager=True)),
        "upadhyay": dict(n_train=16, n_val=8, n_test=8, resolution=16, width=0.25, batch_size=8, max_epochs=1,
                         patience=1, lr=1e-3, weight_decay=0.1, lambdas=(0.3, 3.0), seeds=(0,),
                         single_lambda=None, update_every=1, latency_runs=0, eager=True),
        "dos_santos": dict(res=16, width=0.25, n=8, pretrain=1, budget_epochs=1, finetune=0, budgets=[0.5],
                           sharing=["jaccard"], domain_bn=True, eager=True),
    },
    "quick": {
        "garg": dict(n_train=192, n_test=64, batch_size=32, resolution=32, base_channels=8, head_channels=8,
                     dense_epochs=8, frequency=6, step=0.1, fine_tune_steps=12, levels=(0.5, 0.9),
                     reinit_levels=(0.9,), score_batches=1, eager=False,
                     criteria=("taylor", "cosprune", "magnitude"),
                     equal_params=dict(seeds=(0,), lrs=(5e-4,))),
        "upadhyay": dict(n_train=128, n_val=48, n_test=64, resolution=32, width=0.5, batch_size=16,
                         max_epochs=10, patience=3, lr=5e-4, weight_decay=0.1, lambdas=(0.03, 0.08), seeds=(0,),
                         targets=(0.7,), target_l1=0.02, adapt_rate=0.05, single_lambda=None, update_every=2,
                         latency_runs=0),
        "dos_santos": "seeds05",  # budget_mdl's own setting at budget 0.5, one seed (~3 min)
    },
    "full": {"garg": "default", "upadhyay": "paper-small", "dos_santos": "default"},
}
PAPERS = ("garg", "upadhyay", "dos_santos")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def row(paper: str, finding: str, measured: str, holds: bool | None, **numbers) -> dict:
    return {"paper": paper, "finding": finding, "measured": measured,
            "holds": None if holds is None else bool(holds), "numbers": numbers}


# ------------------------------------------------------------------ judging (pure)
def judge_criteria(summary: list[dict]) -> dict:
    """The criteria row from the equal-parameter mode's summary (iterative_pruning.summarize_equal):
    per parameter level the spread of the informed criteria's mean test delta_m; holds when every
    level's spread is <= 5 points."""
    paper = "Garg et al. 2023"
    levels = sorted({r["level"] for r in summary}, reverse=True)
    at = {lv: {r["criterion"]: r for r in summary if r["level"] == lv and r["criterion"] in INFORMED}
          for lv in levels}
    spreads = {lv: max(r["delta_m_mean"] for r in v.values()) - min(r["delta_m_mean"] for r in v.values())
               for lv, v in at.items() if len(v) > 1}
    if not spreads:
        return row(paper, "criteria differ little at equal parameter counts", "n/a (one criterion)", None)
    seeds = max(r["seeds"] for r in summary)

    def cell(r):
        return f"{r['criterion']} {r['delta_m_mean']:+.1f}" + (f" ± {r['delta_m_std']:.1f}" if seeds > 1 else "")

    measured = "; ".join(f"Δm at {100 * lv:.0f}% of the params: " + ", ".join(cell(r) for r in at[lv].values())
                         + f" (spread {spreads[lv]:.1f} pts)" for lv in spreads)
    measured += f" — {seeds} seed(s), rule: spread <= 5 at every level"
    return row(paper, "criteria differ little at equal parameter counts", measured,
               all(v <= 5.0 for v in spreads.values()), spread=spreads, seeds=seeds,
               delta_m={lv: {c: r["delta_m_mean"] for c, r in v.items()} for lv, v in at.items()})


def judge_garg(runs: list[dict], equal_summary: list[dict] | None = None) -> list[dict]:
    """Rows from iterative_pruning run rows (criterion, level, delta_m, reinit.delta_m) and, for
    the criteria row, the equal-parameter mode's summary (without it: equal shares of channels)."""
    paper = "Garg et al. 2023"
    levels = sorted({r["level"] for r in runs})
    lo, hi = levels[0], levels[-1]
    if equal_summary is not None:
        out = [judge_criteria(equal_summary)]
    else:
        first = {r["criterion"]: r["delta_m"] for r in runs if r["level"] == lo and r["criterion"] in INFORMED}
        spread = max(first.values()) - min(first.values()) if len(first) > 1 else None
        out = [row(paper, "criteria differ little at equal shares of channels",
                   "n/a (one criterion)" if spread is None else
                   f"Δm at level {lo:g}: " + ", ".join(f"{c} {v:+.1f}" for c, v in first.items()) +
                   f" (spread {spread:.1f} pts, rule <= 5)", None if spread is None else spread <= 5.0,
                   spread=spread, level=lo, delta_m=first)]
    at = {lv: float(np.mean([r["delta_m"] for r in runs if r["level"] == lv])) for lv in (lo, hi)}
    drop = at[hi] - at[lo]
    out.append(row(paper, "iterative pruning degrades sharply at extreme levels",
                   f"mean Δm {at[lo]:+.1f}% at {lo:g} -> {at[hi]:+.1f}% at {hi:g} (rule: >= 3 pts lower)",
                   drop <= -3.0, delta_m_low=at[lo], delta_m_high=at[hi]))
    re = [(r["delta_m"], r["reinit"]["delta_m"]) for r in runs if r["level"] == hi and "reinit" in r]
    if re:
        it, rt = float(np.mean([a for a, _ in re])), float(np.mean([b for _, b in re]))
        out.append(row(paper, "re-initialised + retrained pruned nets do better at extreme levels",
                       f"at level {hi:g}: iterative Δm {it:+.1f}% vs re-init {rt:+.1f}%", rt > it,
                       iterative=it, reinit=rt))
    return out


def judge_upadhyay(result: dict, target: float = 0.7) -> list[dict]:
    """Rows from a group_sparsity_paper result (its summary sweep): monotonicity over the fixed
    lambdas, delta_m at the sparse setting (fixed or target) closest to `target`."""
    import group_sparsity_paper as gsp

    paper = "Upadhyay et al. 2024"
    sparse = [e for e in result["summary"]["sweep"] if e["lambda"]]
    sweep = [e for e in sparse if e.get("target") is None]
    sp = [e["channel_sparsity"]["mean"] for e in sweep]
    mono = all(b >= a for a, b in zip(sp, sp[1:]))
    out = [row(paper, "sparsity grows with lambda",
               ", ".join(f"λ={e['lambda']:g}: {100 * s:.0f}%" for e, s in zip(sweep, sp)), mono and len(sp) > 1,
               sparsity={e["lambda"]: s for e, s in zip(sweep, sp)})]
    near = [e for e in sparse if 0.5 <= e["channel_sparsity"]["mean"] <= 0.85 and "delta_m" in e]
    if near:
        e = min(near, key=lambda e: abs(e["channel_sparsity"]["mean"] - target))
        dm = e["delta_m"]
        name = gsp.setting_name(e)
        out.append(row(paper, "multi-task models at ~70% sparsity outperform their dense equivalents",
                       f"{'λ=' if e.get('target') is None else ''}{name}: "
                       f"{100 * e['channel_sparsity']['mean']:.0f}% sparsity, Δm "
                       f"{dm['mean']:+.2f} ± {dm['std']:.2f}% over {e['n']} seed(s) (rule: mean >= 0)",
                       dm["mean"] >= 0, **{"lambda": e["lambda"], "target": e.get("target"),
                                           "delta_m": dm["mean"]}))
    else:
        out.append(row(paper, "multi-task models at ~70% sparsity outperform their dense equivalents",
                       "no sweep point at 50-85% sparsity: " + ", ".join(
                           f"{100 * e['channel_sparsity']['mean']:.0f}%" for e in sparse), None))
    return out


def judge_dos_santos(result: dict, budget: float = 0.5) -> list[dict]:
    """Rows from a budget_mdl result (unpruned accuracy, runs, baseline)."""
    paper = "dos Santos et al. 2023"
    acc0 = float(np.mean(list(result["unpruned"]["accuracy"].values())))
    runs = [r for r in result["runs"] if abs(r["budget"] - budget) < 1e-9]
    if not runs:
        return [row(paper, f"budget {budget:g}: accuracy kept", "no run at this budget", None)]
    r = max(runs, key=lambda r: r["mean_accuracy"])
    b = result["baseline"]
    d = 100 * (r["mean_accuracy"] - acc0)
    small = r["params"] < b["one_params"] and r["max_macs_as_run"] < b["one_macs"]
    return [row(paper, f"budget {budget:g}: accuracy within 1 point of the unpruned multi-domain model",
                f"{100 * r['mean_accuracy']:.1f}% vs {100 * acc0:.1f}% ({d:+.1f} pts, sharing {r['sharing']}); "
                f"decathlon S {r['decathlon']:.0f}", d >= -1.0, delta_points=d, decathlon=r["decathlon"]),
            row(paper, f"budget {budget:g}: fewer params and MACs than ONE single-domain model",
                f"params {r['params']:,} vs {b['one_params']:,}; MACs {r['max_macs_as_run']:,} vs "
                f"{b['one_macs']:,}", small, params=r["params"], macs=r["max_macs_as_run"])]


# ------------------------------------------------------------------------ running
def run_garg(cfg, out_dir: str) -> tuple[list[dict], dict]:
    import iterative_pruning as ip

    from tfmot_mtl.recipes import experiment as ex

    if isinstance(cfg, str):
        cfg = dict(ip.PRESETS[cfg], criteria=ip.CRITERIA, equal_params={})
    data = ex.load_data("synthetic_scenes", n_train=cfg["n_train"], n_test=cfg["n_test"],
                        batch_size=cfg["batch_size"], resolution=cfg["resolution"])
    res = ip.run_model("mtl_vgg", data, cfg, list(cfg["criteria"]), 0)
    equal_cfg = {**ip.PRESETS["seeds"], **cfg.get("equal_params", {})}
    criteria = [c for c in cfg["criteria"] if c in INFORMED]
    res["equal_params"] = ip.run_equal_params("mtl_vgg", ip.load_equal_data(equal_cfg), equal_cfg, criteria, 0)
    return judge_garg(res["runs"], res["equal_params"]["summary"]), res


def run_upadhyay(cfg, out_dir: str) -> tuple[list[dict], dict]:
    import group_sparsity_paper as gsp

    res = gsp.run(cfg if isinstance(cfg, str) else "custom", out_dir, cfg=None if isinstance(cfg, str) else cfg,
                  name="findings_group_sparsity")
    return judge_upadhyay(res, res["target"]), res


def run_dos_santos(cfg, out_dir: str) -> tuple[list[dict], dict]:
    import budget_mdl

    cfg = budget_mdl.PRESETS[cfg] if isinstance(cfg, str) else cfg
    res = budget_mdl.run(cfg, os.path.join(out_dir, "findings_budget_mdl.json"))
    return judge_dos_santos(res), res


RUNNERS = {"garg": run_garg, "upadhyay": run_upadhyay, "dos_santos": run_dos_santos}


def format_table(rows: list[dict]) -> str:
    lines = ["| paper | finding | measured | holds |", "|---|---|---|---|"]
    for r in rows:
        verdict = "n/a" if r["holds"] is None else "holds" if r["holds"] else "does not hold"
        lines.append(f"| {r['paper']} | {r['finding']} | {r['measured']} | {verdict} |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    ap.add_argument("--only", nargs="+", choices=PAPERS, default=list(PAPERS))
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    t0 = time.time()
    out = {"preset": args.preset, "rows": [], "raw": {}, "seconds": {}, "complete": False}
    path = os.path.join(args.out, "findings.json" if args.preset != "tiny" else "findings_tiny.json")
    for paper in args.only:
        t = time.time()
        log(f"{paper}: running ({args.preset})")
        rows, raw = RUNNERS[paper](PRESETS[args.preset][paper], args.out)
        out["rows"] += rows
        out["raw"][paper] = raw
        out["seconds"][paper] = round(time.time() - t, 1)
        with open(path, "w") as f:
            json.dump(out, f, indent=1, default=lambda x: x.tolist() if hasattr(x, "tolist") else str(x))
    out["complete"], out["seconds"]["total"] = True, round(time.time() - t0, 1)
    with open(path, "w") as f:
        json.dump(out, f, indent=1, default=lambda x: x.tolist() if hasattr(x, "tolist") else str(x))
    print(format_table(out["rows"]), flush=True)
    log(f"wrote {path} ({out['seconds']['total']:.0f} s)")
    return out


if __name__ == "__main__":
    main()
