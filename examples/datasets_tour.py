"""Tour of the embedded datasets: build each at small size, print shapes and class balance,
and save a PNG grid of samples with their labels.

    python examples/datasets_tour.py [--out saved_models/datasets_tour] [--fast]
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from tfmot_mtl.datasets import multi_digits, multi_domain, synthetic_scenes  # noqa: E402


def balance(labels: np.ndarray, names) -> str:
    """'name: share%' for every class, from integer labels (negative = ignored)."""
    counts = np.bincount(labels[labels >= 0].ravel(), minlength=len(names))
    share = counts / max(counts.sum(), 1)
    return ", ".join(f"{n}: {100 * s:.1f}%" for n, s in zip(names, share))


def describe(title: str, data: dict, seconds: float) -> None:
    print(f"\n{title}  ({seconds:.2f} s)")
    for key, arr in data.items():
        print(f"  {key:13s} {str(arr.shape):20s} {arr.dtype}  range [{arr.min():.3g}, {arr.max():.3g}]")


def save_grid(path: Path, rows: list[list[tuple[np.ndarray, str, dict]]]) -> None:
    """rows of (image, title, imshow kwargs) panels -> one PNG."""
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.6 * n_cols, 1.7 * n_rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for r, row in enumerate(rows):
        for c, (img, title, kwargs) in enumerate(row):
            axes[r, c].imshow(img, **kwargs)
            axes[r, c].set_title(title, fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    print(f"  saved {path}")


def scenes_tour(out: Path, n: int, res: int, shown: int) -> None:
    t = time.perf_counter()
    data = synthetic_scenes.generate(n, res, seed=0)
    describe("synthetic_scenes", data, time.perf_counter() - t)
    print("  class balance:", balance(data["segmentation"], synthetic_scenes.CLASS_NAMES))
    seg_kw = {"cmap": "tab10", "vmin": 0, "vmax": 9, "interpolation": "nearest"}
    rows = []
    for i in range(shown):
        present = np.unique(data["segmentation"][i])
        names = ",".join(synthetic_scenes.CLASS_NAMES[c] for c in present if c >= 3)
        depth = data["depth"][i, ..., 0]
        rows.append([(data["image"][i], "image", {}), (data["segmentation"][i], names or "seg", seg_kw),
                     (depth, f"depth {depth.min():.1f}-{depth.max():.1f} m", {"cmap": "viridis"}),
                     (data["normals"][i] * 0.5 + 0.5, "normals", {})])
    save_grid(out / "synthetic_scenes.png", rows)


def digits_tour(out: Path, n: int, res: int, shown: int) -> None:
    t = time.perf_counter()
    data = multi_digits.generate(n, res, seed=0, split="train")
    describe("multi_digits", data, time.perf_counter() - t)
    print("  pixel balance:", balance(data["segmentation"], multi_digits.CLASS_NAMES))
    print("  left digits:  ", np.bincount(data["left"], minlength=10).tolist())
    print("  right digits: ", np.bincount(data["right"], minlength=10).tolist())
    seg_kw = {"cmap": "tab20", "vmin": 0, "vmax": 19, "interpolation": "nearest"}
    rows = [[], []]
    for i in range(shown):
        title = f"left {data['left'][i]} right {data['right'][i]}"
        rows[0].append((data["image"][i], title, {}))
        rows[1].append((data["segmentation"][i], "segmentation", seg_kw))
    save_grid(out / "multi_digits.png", rows)


def domains_tour(out: Path, n: int, res: int, shown: int) -> None:
    rows = []
    for name, k in multi_domain.DOMAINS:
        t = time.perf_counter()
        data = multi_domain.generate(name, n, "train", seed=0, resolution=res)
        describe(f"multi_domain/{name} ({k} classes)", data, time.perf_counter() - t)
        print("  class balance:", balance(data["label"], multi_domain.CLASS_NAMES[name]))
        rows.append([(data["image"][i], f"{name}: {multi_domain.CLASS_NAMES[name][data['label'][i]]}", {})
                     for i in range(min(shown, n))])
    save_grid(out / "multi_domain.png", rows)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="saved_models/datasets_tour", help="folder for the PNGs")
    parser.add_argument("--fast", action="store_true", help="tiny sizes (a few seconds)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    n, res, shown = (8, 32, 4) if args.fast else (500, 64, 6)
    scenes_tour(out, n, res, shown)
    digits_tour(out, n, res, shown)
    domains_tour(out, n, res, shown)


if __name__ == "__main__":
    main()
