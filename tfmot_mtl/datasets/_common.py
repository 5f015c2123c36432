"""Helpers shared by the dataset modules: split seeds, tf.data assembly, real digit scans."""
from __future__ import annotations

import functools
from typing import Mapping

import numpy as np

SPLITS = ("train", "test")
_DIGIT_TEST_FRACTION = 0.2
_DIGIT_SPLIT_SEED = 20240917


def check_split(split: str, allowed: tuple[str, ...] = SPLITS) -> str:
    """Return `split` if it is one of `allowed`, else raise a ValueError naming the choices."""
    if split not in allowed:
        raise ValueError(f"split must be one of {allowed}, got {split!r}")
    return split


def split_seed(seed: int, split: str) -> int:
    """A 32-bit seed for (seed, split): train and test never share a random stream."""
    check_split(split)
    return int(np.random.SeedSequence([int(seed), SPLITS.index(split) + 1]).generate_state(1)[0])


def check_resolution(resolution: int) -> int:
    """Validate an image side length (pixels)."""
    if not isinstance(resolution, (int, np.integer)) or resolution < 8:
        raise ValueError(f"resolution must be an int >= 8 (pixels per side), got {resolution!r}")
    return int(resolution)


def check_count(n: int, name: str = "n") -> int:
    """Validate a number of examples."""
    if not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"{name} must be a non-negative int, got {n!r}")
    return int(n)


def to_dataset(inputs: Mapping[str, np.ndarray], targets: Mapping[str, np.ndarray],
               batch_size: int, shuffle: bool, seed: int):
    """Batched `tf.data.Dataset` of `(inputs, targets)` dicts from in-memory arrays."""
    import tensorflow as tf

    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    n = len(next(iter(inputs.values())))
    ds = tf.data.Dataset.from_tensor_slices((dict(inputs), dict(targets)))
    if shuffle and n > 1:
        ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    return ds.batch(int(batch_size)).prefetch(tf.data.AUTOTUNE)


@functools.lru_cache(maxsize=1)
def sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 real 8x8 handwritten digit scans bundled with scikit-learn, scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = (data.images / 16.0).astype(np.float32)
    images.setflags(write=False)
    labels = data.target.astype(np.int32)
    labels.setflags(write=False)
    return images, labels


def digit_source_indices(split: str) -> np.ndarray:
    """Indices of the sklearn digit scans reserved for `split` (train and test are disjoint).

    The split is stratified by class and fixed (independent of any user seed), so a scan
    used in a training canvas never appears in a test canvas.
    """
    check_split(split)
    _, labels = sklearn_digits()
    rng = np.random.default_rng(_DIGIT_SPLIT_SEED)
    train, test = [], []
    for digit in range(10):
        idx = rng.permutation(np.flatnonzero(labels == digit))
        n_test = int(round(len(idx) * _DIGIT_TEST_FRACTION))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    out = np.sort(np.concatenate(train if split == "train" else test)).astype(np.int64)
    return out


def bilinear_sample(images: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Sample `images` (N, h, w) at float pixel coords (N, ...) with zero padding outside."""
    n, h, w = images.shape
    padded = np.zeros((n, h + 2, w + 2), np.float32)
    padded[:, 1:-1, 1:-1] = images
    x = np.clip(x + 1.0, 0.0, w + 1.0)
    y = np.clip(y + 1.0, 0.0, h + 1.0)
    x0 = np.minimum(np.floor(x), w)
    y0 = np.minimum(np.floor(y), h)
    fx = (x - x0).astype(np.float32)
    fy = (y - y0).astype(np.float32)
    stride = w + 2
    flat = padded.reshape(-1)
    base = (np.arange(n) * (h + 2) * stride).reshape((n,) + (1,) * (x.ndim - 1))
    idx = base + y0.astype(np.int64) * stride + x0.astype(np.int64)
    top = flat[idx] * (1 - fx) + flat[idx + 1] * fx
    bottom = flat[idx + stride] * (1 - fx) + flat[idx + stride + 1] * fx
    return top * (1 - fy) + bottom * fy


def stream_dataset(n: int, load_one, structure, batch_size: int, shuffle: bool, seed: int):
    """Batched dataset of `n` examples read lazily by `load_one(i) -> (inputs, targets)`.

    `structure` is `(inputs, targets)` with a `tf.TensorSpec` per array that `load_one`
    returns (numpy arrays with exactly those dtypes); files are read in parallel by tf.data.
    """
    import tensorflow as tf

    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    specs = tf.nest.flatten(structure)

    def read(i):
        arrays = tf.numpy_function(lambda j: tf.nest.flatten(load_one(int(j))), [i],
                                   [s.dtype for s in specs])
        for a, s in zip(arrays, specs):
            a.set_shape(s.shape)
        return tf.nest.pack_sequence_as(structure, arrays)

    ds = tf.data.Dataset.range(n)
    if shuffle and n > 1:
        ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(read, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(int(batch_size)).prefetch(tf.data.AUTOTUNE)


def check_root(root, what: str, layout: str):
    """`root` as a Path, or FileNotFoundError saying which layout was expected there."""
    from pathlib import Path

    path = Path(root).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"{what} folder {str(path)!r} does not exist; expected {layout}")
    return path


def image_size(resolution) -> tuple[int, int]:
    """(height, width) from an int or a pair."""
    if isinstance(resolution, (int, np.integer)):
        resolution = (resolution, resolution)
    if (len(resolution) != 2 or not all(isinstance(r, (int, np.integer)) and r > 0
                                        for r in resolution)):
        raise ValueError(f"resolution must be an int or (height, width) of positive ints, "
                         f"got {resolution!r}")
    return int(resolution[0]), int(resolution[1])
