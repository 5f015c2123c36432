"""Tour of the embedded datasets: build each at small size, print shapes and class balance,
and save a PNG grid of samples with their labels.

    python examples/datasets_tour.py [--out saved_models/datasets_tour] [--fast]
"""
from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from tfmot_mtl.datasets.preview import NAMES, preview  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="saved_models/datasets_tour", help="folder for the PNGs")
    parser.add_argument("--fast", action="store_true", help="tiny sizes (a few seconds)")
    args = parser.parse_args(argv)
    n, res, shown = (8, 32, 4) if args.fast else (500, 64, 6)
    for name in NAMES:
        summary = preview(name, n=n, out=args.out, resolution=res, shown=shown)
        print(json.dumps(summary, indent=1)[:3000])
        print(f"saved {summary['grid'] if 'grid' in summary else args.out}")


if __name__ == "__main__":
    main()
