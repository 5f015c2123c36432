"""Summaries and sample grids of the embedded datasets (used by `tfmot-mtl data` and the tour)."""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from tfmot_mtl.utils.atomic import atomic_savefig
from tfmot_mtl.datasets import multi_digits, multi_domain, synthetic_scenes

NAMES = ("synthetic_scenes", "multi_digits", "multi_domain")


def balance(labels: np.ndarray, names) -> dict[str, float]:
    """Share (%) of every class among integer labels (negative = ignored)."""
    counts = np.bincount(labels[labels >= 0].ravel(), minlength=len(names))
    share = counts / max(counts.sum(), 1)
    return {str(n): round(100 * float(s), 2) for n, s in zip(names, share)}


def describe(data: dict) -> dict[str, dict]:
    return {k: {"shape": list(a.shape), "dtype": str(a.dtype),
                "range": [float(a.min()), float(a.max())]} for k, a in data.items()}


def save_grid(path: Path, rows: list[list[tuple[np.ndarray, str, dict]]]) -> str:
    """Rows of (image, title, imshow kwargs) panels -> one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.6 * n_cols, 1.7 * n_rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for r, row in enumerate(rows):
        for c, (img, title, kwargs) in enumerate(row):
            axes[r, c].imshow(img, **kwargs)
            axes[r, c].set_title(title, fontsize=7)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=80)
    plt.close(fig)
    return str(path)


def _scenes(out: Path, n: int, res: int, shown: int) -> dict:
    data = synthetic_scenes.generate(n, res, seed=0)
    seg_kw = {"cmap": "tab10", "vmin": 0, "vmax": 9, "interpolation": "nearest"}
    rows = []
    for i in range(min(shown, n)):
        present = np.unique(data["segmentation"][i])
        names = ",".join(synthetic_scenes.CLASS_NAMES[c] for c in present if c >= 3)
        depth = data["depth"][i, ..., 0]
        rows.append([(data["image"][i], "image", {}), (data["segmentation"][i], names or "seg", seg_kw),
                     (depth, f"depth {depth.min():.1f}-{depth.max():.1f} m", {"cmap": "viridis"}),
                     (data["normals"][i] * 0.5 + 0.5, "normals", {})])
    return {"arrays": describe(data),
            "class_balance": balance(data["segmentation"], synthetic_scenes.CLASS_NAMES),
            "grid": save_grid(out / "synthetic_scenes.png", rows)}


def _digits(out: Path, n: int, res: int, shown: int) -> dict:
    data = multi_digits.generate(n, res, seed=0, split="train")
    seg_kw = {"cmap": "tab20", "vmin": 0, "vmax": 19, "interpolation": "nearest"}
    rows = [[], []]
    for i in range(min(shown, n)):
        rows[0].append((data["image"][i], f"left {data['left'][i]} right {data['right'][i]}", {}))
        rows[1].append((data["segmentation"][i], "segmentation", seg_kw))
    return {"arrays": describe(data),
            "pixel_balance": balance(data["segmentation"], multi_digits.CLASS_NAMES),
            "left_counts": np.bincount(data["left"], minlength=10).tolist(),
            "right_counts": np.bincount(data["right"], minlength=10).tolist(),
            "grid": save_grid(out / "multi_digits.png", rows)}


def _domains(out: Path, n: int, res: int, shown: int) -> dict:
    rows, summary = [], {}
    for name, k in multi_domain.DOMAINS:
        data = multi_domain.generate(name, n, "train", seed=0, resolution=res)
        summary[name] = {"classes": k, "arrays": describe(data),
                         "class_balance": balance(data["label"], multi_domain.CLASS_NAMES[name])}
        rows.append([(data["image"][i], f"{name}: {multi_domain.CLASS_NAMES[name][data['label'][i]]}", {})
                     for i in range(min(shown, n))])
    summary["grid"] = save_grid(out / "multi_domain.png", rows)
    return summary


_BUILDERS = {"synthetic_scenes": _scenes, "multi_digits": _digits, "multi_domain": _domains}


def preview(name: str, n: int = 16, out: str | os.PathLike = "saved_models/data", resolution: int = 64,
            shown: int = 6) -> dict:
    """Generates `n` examples of an embedded dataset; returns a summary and writes a PNG grid."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown dataset '{name}'; choose one of {NAMES}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    summary = _BUILDERS[name](out, n, resolution, shown)
    return {"dataset": name, "examples": n, "resolution": resolution,
            "seconds": round(time.perf_counter() - start, 2), **summary}
