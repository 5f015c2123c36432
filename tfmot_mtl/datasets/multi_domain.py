"""Four image-classification domains with their own label spaces (Visual Decathlon stand-in).

All domains give RGB images of one size (default 64x64) but differ in content, label
space and input statistics:

- "digits" (10 classes): one real sklearn handwritten digit, scaled, rotated, coloured,
  on a noisy background; train and test use disjoint scans;
- "shapes" (6 classes): circle, square, triangle, star, ring, cross in random colours,
  sizes, positions and rotations over a textured background;
- "textures" (8 classes): sinusoidal gratings, 4 orientations x 2 frequency bands, with
  random phase, colours, orientation jitter, contrast and noise;
- "scenes" (5 classes): a `synthetic_scenes` room whose three to six objects all share
  one class (box, sphere, cylinder, table, lamp), labelled with that class.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from tfmot_mtl.datasets import multi_digits, synthetic_scenes
from tfmot_mtl.datasets._common import (
    bilinear_sample, check_count, check_resolution, check_split, digit_source_indices,
    sklearn_digits, split_seed, to_dataset)

SHAPE_NAMES = ("circle", "square", "triangle", "star", "ring", "cross")
TEXTURE_NAMES = tuple(f"{angle}deg_{band}" for band in ("low", "high")
                      for angle in (0, 45, 90, 135))
SCENE_NAMES = tuple(synthetic_scenes.CLASS_NAMES[c] for c in synthetic_scenes.OBJECT_CLASSES)
CLASS_NAMES = {"digits": multi_digits.DIGIT_NAMES, "shapes": SHAPE_NAMES,
               "textures": TEXTURE_NAMES, "scenes": SCENE_NAMES}
DOMAINS = [(name, len(names)) for name, names in CLASS_NAMES.items()]
DEFAULT_SIZES = {"train": 1000, "test": 250}  # per domain


def _uniform(rng, low, high, size):
    return rng.uniform(low, high, size).astype(np.float32)


def _grid(res: int):
    g = (np.arange(res, dtype=np.float32) + 0.5) / res * 2 - 1  # [-1, 1]
    return g[None, None, :], g[None, :, None]  # x (1, 1, W), y (1, H, 1)


def _finish(rng, image: np.ndarray, low: float, high: float) -> np.ndarray:
    sigma = _uniform(rng, low, high, (len(image), 1, 1, 1))
    noise = rng.standard_normal(image.shape, np.float32) * sigma
    return np.clip(image + noise, 0, 1).astype(np.float32)


def _digits(rng, n: int, res: int, split: str):
    scans, labels = sklearn_digits()
    pool = digit_source_indices(split)
    src = pool[rng.integers(0, len(pool), n)]
    x, y = _grid(res)
    size = _uniform(rng, 0.9, 1.6, (n, 1, 1))  # digit side in [-1, 1] units
    cx, cy = _uniform(rng, -0.25, 0.25, (n, 1, 1)), _uniform(rng, -0.25, 0.25, (n, 1, 1))
    ang = _uniform(rng, -0.35, 0.35, (n, 1, 1))
    dx, dy = x - cx, y - cy
    u = (np.cos(ang) * dx + np.sin(ang) * dy) * 8 / size + 3.5
    v = (np.cos(ang) * dy - np.sin(ang) * dx) * 8 / size + 3.5
    ink = np.clip(bilinear_sample(scans[src], u, v) * 1.3, 0, 1)[..., None]
    dark = rng.random((n, 1, 1, 1)) < 0.5
    bg = np.where(dark, 0.0, 0.55) + _uniform(rng, 0, 0.45, (n, 1, 1, 3))
    fg = np.where(dark, 0.55, 0.0) + _uniform(rng, 0, 0.45, (n, 1, 1, 3))
    image = bg * (1 - ink) + fg * ink
    return _finish(rng, image, 0.02, 0.08), labels[src].astype(np.int32)


def _shape_masks(label, x, y, r):
    """Inside-masks for the six shapes given rotated coords x, y and radius r, (n, H, W)."""
    rad, theta = np.hypot(x, y), np.arctan2(y, x)
    tri = np.ones_like(rad, dtype=bool)
    for k in range(3):  # equilateral triangle: three half-planes
        a = np.pi / 2 + k * 2 * np.pi / 3
        tri &= x * np.cos(a) + y * np.sin(a) >= -0.5 * r
    star = rad <= r * (0.45 + 0.55 * np.abs(np.cos(2.5 * theta)) ** 4)  # five points
    arm = 0.32 * r
    masks = [rad <= r, np.maximum(abs(x), abs(y)) <= 0.8 * r, tri, star,
             (rad <= r) & (rad >= 0.6 * r),
             ((abs(x) <= arm) & (abs(y) <= r)) | ((abs(y) <= arm) & (abs(x) <= r))]
    return np.select([label[:, None, None] == k for k in range(len(masks))], masks, False)


def _shapes(rng, n: int, res: int, split: str):
    label = rng.integers(0, len(SHAPE_NAMES), n).astype(np.int32)
    x, y = _grid(res)
    r = _uniform(rng, 0.35, 0.8, (n, 1, 1))
    cx = _uniform(rng, -1, 1, (n, 1, 1)) * (1 - r)
    cy = _uniform(rng, -1, 1, (n, 1, 1)) * (1 - r)
    ang = _uniform(rng, 0, 2 * np.pi, (n, 1, 1))
    dx, dy = x - cx, y - cy
    u, v = np.cos(ang) * dx + np.sin(ang) * dy, np.cos(ang) * dy - np.sin(ang) * dx
    mask = _shape_masks(label, u, v, r)[..., None]
    base = _uniform(rng, 0, 1, (n, 1, 1, 3)) * _uniform(rng, 0.3, 1, (n, 1, 1, 1))
    fg = _uniform(rng, 0, 1, (n, 1, 1, 3))
    fg = np.where(abs(fg - base).mean(-1, keepdims=True) < 0.25, 1 - fg, fg)
    stripes = np.sin(x[..., None] * _uniform(rng, 0, 12, (n, 1, 1, 1))
                     + y[..., None] * _uniform(rng, 0, 12, (n, 1, 1, 1)))
    bg = base + 0.08 * stripes
    shade = 1 + 0.2 * (u * _uniform(rng, -1, 1, (n, 1, 1)))[..., None]
    return _finish(rng, np.where(mask, fg * shade, bg), 0.01, 0.06), label


def _textures(rng, n: int, res: int, split: str):
    label = rng.integers(0, len(TEXTURE_NAMES), n).astype(np.int32)
    angle = np.deg2rad(45.0 * (label % 4) + rng.uniform(-8, 8, n)).astype(np.float32)
    high = label >= 4
    cycles = np.where(high, rng.uniform(7, 11, n), rng.uniform(2.5, 4.5, n)).astype(np.float32)
    x, y = _grid(res)
    a, c = angle[:, None, None], cycles[:, None, None]
    phase = _uniform(rng, 0, 2 * np.pi, (n, 1, 1))
    wave = np.sin(np.pi * c * (x * np.cos(a) + y * np.sin(a)) + phase)
    wave = wave * _uniform(rng, 0.3, 1.0, (n, 1, 1))
    col_a, col_b = _uniform(rng, 0, 1, (n, 1, 1, 3)), _uniform(rng, 0, 1, (n, 1, 1, 3))
    col_b = np.where(abs(col_a - col_b).mean(-1, keepdims=True) < 0.3, 1 - col_a, col_b)
    t = (wave[..., None] + 1) / 2
    image = col_a * (1 - t) + col_b * t
    return _finish(rng, image, 0.03, 0.15), label


def _scenes(rng, n: int, res: int, split: str):
    """Rooms whose objects all belong to one class; the label is that class.

    Scenes where no object is visible are re-rendered.
    """
    classes = np.array(synthetic_scenes.OBJECT_CLASSES)
    label = rng.integers(0, len(classes), n).astype(np.int32)
    image = np.zeros((n, res, res, 3), np.float32)
    todo = np.arange(n)
    while todo.size:
        data = synthetic_scenes.generate(todo.size, res, int(rng.integers(0, 2**31)),
                                         object_class=classes[label[todo]])
        seen = (data["segmentation"] == classes[label[todo], None, None]).any((1, 2))
        image[todo[seen]] = data["image"][seen]
        todo = todo[~seen]
    return image, label


_GENERATORS = {"digits": _digits, "shapes": _shapes, "textures": _textures, "scenes": _scenes}


def _check_domain(domain: str) -> str:
    if domain not in CLASS_NAMES:
        raise ValueError(f"domain must be one of {list(CLASS_NAMES)}, got {domain!r}")
    return domain


def generate(domain: str, n: int, split: str = "train", seed: int = 0,
             resolution: int = 64) -> dict[str, np.ndarray]:
    """`n` images of `domain`: {"image": (n, H, W, 3) float32 in [0, 1], "label": (n,) int32}.

    Deterministic for (domain, n, split, seed, resolution); train and test use different
    random streams (and disjoint scans for "digits").
    """
    _check_domain(domain)
    n, res = check_count(n), check_resolution(resolution)
    check_split(split)
    domain_id = list(CLASS_NAMES).index(domain)
    rng = np.random.default_rng([split_seed(seed, split), domain_id])
    image, label = _GENERATORS[domain](rng, n, res, split)
    return {"image": image.reshape(n, res, res, 3), "label": label.reshape(n)}


def _domain_list(domains: Sequence[str] | None) -> list[str]:
    names = list(CLASS_NAMES) if domains is None else list(domains)
    if not names:
        raise ValueError("domains must name at least one domain (or be None for all)")
    for name in names:
        _check_domain(name)
    if len(set(names)) != len(names):
        raise ValueError(f"domains has duplicates: {names}")
    return names


def load(split: str = "train", batch_size: int = 32, n_per_domain: int | None = None,
         domains: Sequence[str] | None = None, shuffle: bool = True, resolution: int = 64,
         seed: int = 0):
    """Mixed-domain batches `({"image", "domain"}, {"label"})`.

    "domain" is the int32 index of the example's domain in `domains` (default: all of
    `DOMAINS`, in order); "label" is the int32 class id within that domain's label space.
    `n_per_domain` defaults to `DEFAULT_SIZES[split]`.
    """
    check_split(split)
    names = _domain_list(domains)
    n = DEFAULT_SIZES[split] if n_per_domain is None else check_count(n_per_domain, "n_per_domain")
    parts = [generate(name, n, split, seed, resolution) for name in names]
    image = np.concatenate([p["image"] for p in parts])
    label = np.concatenate([p["label"] for p in parts]).astype(np.int32)
    domain = np.repeat(np.arange(len(names), dtype=np.int32), n)
    return to_dataset({"image": image, "domain": domain}, {"label": label},
                      batch_size, shuffle, seed)


def load_domain(name: str, split: str = "train", n: int | None = None, batch_size: int = 32,
                shuffle: bool = True, resolution: int = 64, seed: int = 0):
    """Batches of one domain as `({"image"}, {name: label})`; `n` defaults to DEFAULT_SIZES."""
    check_split(split)
    n = DEFAULT_SIZES[split] if n is None else n
    data = generate(_check_domain(name), n, split, seed, resolution)
    return to_dataset({"image": data["image"]}, {name: data["label"]}, batch_size, shuffle, seed)


def tasks(domains: Sequence[str] | None = None) -> list:
    """One classification Task per domain, named after the domain."""
    from tfmot_mtl import tasks as T

    return [T.classification(name, len(CLASS_NAMES[name]), CLASS_NAMES[name])
            for name in _domain_list(domains)]
