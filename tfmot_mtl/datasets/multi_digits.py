"""Canvases of two or three real handwritten digits (CelebAMask-HQ stand-in).

Source scans are scikit-learn's bundled 1,797 8x8 handwritten digits (no download).
Each canvas holds two or three of them, left to right, each upscaled (bilinear) with
its own scale, rotation and jitter, in its own ink colour, over a coloured gradient
background with blotches, clutter strokes and pixel noise. Tasks:

- "segmentation": per pixel, 0 = background, d + 1 = digit d (11 classes);
- "left": class of the leftmost digit (10 classes);
- "right": class of the rightmost digit (10 classes).

Train and test canvases draw on disjoint scans (`source_indices(split)`), so test
accuracy measures generalisation to unseen handwriting, not memorised scans.
"""
from __future__ import annotations

import numpy as np

from tfmot_mtl.datasets._common import (
    bilinear_sample, check_count, check_resolution, check_split, digit_source_indices,
    sklearn_digits, split_seed, to_dataset)

CLASS_NAMES = ("background",) + tuple(str(d) for d in range(10))
DIGIT_NAMES = tuple(str(d) for d in range(10))
MAX_DIGITS = 3
DEFAULT_SIZES = {"train": 2000, "test": 500}
TASK_NAMES = ("segmentation", "left", "right")
INK_THRESHOLD = 0.35  # fraction of full ink above which a pixel belongs to a digit

_CHUNK = 256
_STROKES = 4


def source_indices(split: str) -> np.ndarray:
    """Indices into `sklearn.datasets.load_digits()` that canvases of `split` may use."""
    return digit_source_indices(split)


def _uniform(rng, low, high, size):
    return rng.uniform(low, high, size).astype(np.float32)


def _smooth_noise(rng, n: int, res: int, cells: int = 4) -> np.ndarray:
    """Low-frequency noise (n, res, res) in about [-1, 1]: bilinear upsampling of a coarse grid."""
    coarse = rng.uniform(-1, 1, (n, cells, cells)).astype(np.float32)
    grid = (np.arange(res, dtype=np.float32) + 0.5) * cells / res - 0.5
    x = np.broadcast_to(grid[None, None, :], (n, res, res))
    y = np.broadcast_to(grid[None, :, None], (n, res, res))
    return bilinear_sample(coarse, np.clip(x, 0, cells - 1), np.clip(y, 0, cells - 1))


def _background(rng, n: int, res: int, dark: np.ndarray) -> np.ndarray:
    """Coloured gradient + blotches + clutter strokes, (n, res, res, 3)."""
    low = np.where(dark[:, None], 0.0, 0.55)
    base = (low + rng.uniform(0, 0.45, (n, 3))).astype(np.float32)
    grid = (np.arange(res, dtype=np.float32) + 0.5) / res - 0.5
    slope = rng.uniform(-0.25, 0.25, (n, 2, 3)).astype(np.float32)
    bg = (base[:, None, None] + grid[None, None, :, None] * slope[:, None, None, 0]
          + grid[None, :, None, None] * slope[:, None, None, 1])
    bg += 0.12 * _smooth_noise(rng, n, res)[..., None] * _uniform(rng, 0, 1, (n, 1, 1, 1))
    # Clutter: thin random strokes, drawn under the digits and labelled background.
    xs = np.arange(res, dtype=np.float32)
    px, py = xs[None, None, None, :], xs[None, None, :, None]
    a = _uniform(rng, 0, res, (n, _STROKES, 2))
    b = (a + rng.normal(0, res / 5, (n, _STROKES, 2))).astype(np.float32)
    ab = b - a
    apx, apy = px - a[..., 0, None, None], py - a[..., 1, None, None]
    t = (apx * ab[..., 0, None, None] + apy * ab[..., 1, None, None])
    t = np.clip(t / ((ab ** 2).sum(-1)[..., None, None] + 1e-6), 0, 1)
    dist = np.hypot(apx - t * ab[..., 0, None, None], apy - t * ab[..., 1, None, None])
    width = _uniform(rng, 0.4, 1.3, (n, _STROKES, 1, 1))
    used = rng.random((n, _STROKES, 1, 1)) < 0.7
    alpha = np.clip(width + 0.5 - dist, 0, 1) * _uniform(rng, 0.2, 0.6, (n, _STROKES, 1, 1)) * used
    stroke_col = rng.uniform(0, 1, (n, _STROKES, 3)).astype(np.float32)
    for k in range(_STROKES):
        a_k = alpha[:, k, ..., None].astype(np.float32)
        bg = bg * (1 - a_k) + stroke_col[:, k, None, None] * a_k
    return bg


def _render(rng, sources: np.ndarray, count: np.ndarray, res: int):
    """Place the scans `sources` (n, MAX_DIGITS; -1 = unused) on noisy canvases."""
    scans, labels = sklearn_digits()
    n = len(sources)
    shape = (n, MAX_DIGITS)
    slot = (res / count).astype(np.float32)  # horizontal slot width per canvas
    size = _uniform(rng, 0.7, 1.05, shape) * np.minimum(slot * 1.1, res * 0.75)[:, None]
    cx = (np.arange(MAX_DIGITS)[None] + 0.5 + _uniform(rng, -0.15, 0.15, shape)) * slot[:, None]
    cy = res / 2 + _uniform(rng, -0.3, 0.3, shape) * (res - size)
    angle, shear = _uniform(rng, -0.3, 0.3, shape), _uniform(rng, -0.2, 0.2, shape)
    grid = np.arange(res, dtype=np.float32) + 0.5
    dx = grid[None, None, None, :] - cx[..., None, None]
    dy = grid[None, None, :, None] - cy[..., None, None]
    cos, sin = np.cos(angle)[..., None, None], np.sin(angle)[..., None, None]
    scale = (8.0 / size)[..., None, None]
    u = (cos * dx + sin * dy) * scale
    v = (cos * dy - sin * dx) * scale
    u = u + shear[..., None, None] * v + 3.5
    v = v + 3.5
    src = scans[np.maximum(sources, 0).reshape(-1)]
    ink = bilinear_sample(src, u.reshape(-1, res, res),
                          v.reshape(-1, res, res)).reshape(n, MAX_DIGITS, res, res)
    ink *= (sources >= 0)[..., None, None]
    strongest = ink.argmax(1)
    max_ink = np.take_along_axis(ink, strongest[:, None], 1)[:, 0]
    digit = labels[np.maximum(sources, 0)]
    strongest_digit = np.take_along_axis(digit, strongest.reshape(n, -1), 1).reshape(n, res, res)
    seg = np.where(max_ink > INK_THRESHOLD, strongest_digit + 1, 0)
    dark = rng.random(n) < 0.5
    image = _background(rng, n, res, dark)
    ink_col = np.where(dark[:, None, None], 0.55, 0.0) + rng.uniform(0, 0.45, (n, MAX_DIGITS, 3))
    for k in range(MAX_DIGITS):
        alpha = np.clip(ink[:, k] * _uniform(rng, 1.0, 1.5, (n, 1, 1)), 0, 1)[..., None]
        image = image * (1 - alpha) + ink_col[:, k, None, None].astype(np.float32) * alpha
    image += rng.standard_normal(image.shape, np.float32) * _uniform(rng, 0.01, 0.06, (n, 1, 1, 1))
    last = np.take_along_axis(digit, (count - 1)[:, None], 1)[:, 0]
    return {"image": np.clip(image, 0, 1).astype(np.float32),
            "segmentation": seg.astype(np.int32),
            "left": digit[:, 0].astype(np.int32), "right": last.astype(np.int32)}


def generate(n: int, resolution: int = 64, seed: int = 0,
             split: str = "train") -> dict[str, np.ndarray]:
    """Render `n` canvases from the scans of `split`, deterministic for all four arguments.

    Returns "image" (n, H, W, 3) float32 in [0, 1], "segmentation" (n, H, W) int32 in
    [0, 10], "left" and "right" (n,) int32 in [0, 9], and "sources" (n, 3) int64: the
    sklearn scan index of each digit left to right, -1 where a canvas has only two.
    """
    n, res = check_count(n), check_resolution(resolution)
    pool = source_indices(check_split(split))
    parts = []
    for chunk, start in enumerate(range(0, n, _CHUNK)):
        rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, chunk])
        m = min(_CHUNK, n - start)
        count = rng.integers(2, MAX_DIGITS + 1, m)
        sources = pool[rng.integers(0, len(pool), (m, MAX_DIGITS))]
        sources = np.where(np.arange(MAX_DIGITS)[None] < count[:, None], sources, -1)
        part = _render(rng, sources, count, res)
        part["sources"] = sources.astype(np.int64)
        parts.append(part)
    if not parts:
        return {"image": np.zeros((0, res, res, 3), np.float32),
                "segmentation": np.zeros((0, res, res), np.int32),
                "left": np.zeros((0,), np.int32), "right": np.zeros((0,), np.int32),
                "sources": np.zeros((0, MAX_DIGITS), np.int64)}
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def load(split: str = "train", n: int | None = None, batch_size: int = 32,
         resolution: int = 64, seed: int = 0, shuffle: bool = True):
    """Batched `tf.data.Dataset` of `({"image"}, {"segmentation", "left", "right"})`.

    `n` defaults to `DEFAULT_SIZES[split]` (2,000 train, 500 test).
    """
    check_split(split)
    n = DEFAULT_SIZES[split] if n is None else n
    data = generate(n, resolution, split_seed(seed, split), split)
    return to_dataset({"image": data["image"]}, {k: data[k] for k in TASK_NAMES},
                      batch_size, shuffle, seed)


def tasks() -> list:
    """Task specs: 11-class segmentation, and 10-class "left" / "right" digit classification."""
    from tfmot_mtl import tasks as T

    return [T.segmentation("segmentation", len(CLASS_NAMES), class_names=CLASS_NAMES),
            T.classification("left", 10, DIGIT_NAMES),
            T.classification("right", 10, DIGIT_NAMES)]
