"""NYU-v2 from a local folder in the common preprocessed layout (as used by MTAN and others).

Layout (nothing is downloaded)::

    {root}/{train,val}/image/{N}.npy    H x W x 3 float, values in [0, 1] (or [0, 255])
    {root}/{train,val}/label/{N}.npy    H x W class ids, -1 = ignore
    {root}/{train,val}/depth/{N}.npy    H x W x 1 (or H x W) metres, 0 = invalid
    {root}/{train,val}/normal/{N}.npy   H x W x 3 in [-1, 1], all-zero = invalid

Batches match `synthetic_scenes.load`: `({"image"}, {"segmentation", "depth", "normals"})`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from tfmot_mtl.datasets._common import check_root, image_size, stream_dataset

NYUV2_13_CLASS_NAMES = ("bed", "books", "ceiling", "chair", "floor", "furniture", "objects",
                        "picture", "sofa", "table", "tv", "wall", "window")
NYUV2_SPLITS = {"train": "train", "val": "val", "test": "val"}
_FOLDERS = ("image", "label", "depth", "normal")
_LAYOUT = "{root}/{train,val}/{image,label,depth,normal}/{N}.npy"


def _scan(root: Path, split: str) -> tuple[Path, list[str]]:
    """Split folder and the sorted sample names present in all four sub-folders."""
    folder = root / NYUV2_SPLITS[split]
    names: dict[str, set[str]] = {}
    for sub in _FOLDERS:
        path = folder / sub
        if not path.is_dir():
            raise FileNotFoundError(f"NYU-v2: missing folder {str(path)!r}; expected {_LAYOUT}")
        names[sub] = {p.stem for p in path.glob("*.npy")}
    if not names["image"]:
        raise ValueError(f"NYU-v2: no .npy files in {str(folder / 'image')!r}; expected {_LAYOUT}")
    for sub in _FOLDERS[1:]:
        missing = sorted(names["image"] - names[sub])
        if missing:
            raise ValueError(f"NYU-v2: {len(missing)} sample(s) of {str(folder / 'image')!r} have "
                             f"no {sub} file, e.g. {str(folder / sub / (missing[0] + '.npy'))!r}")
    bad = sorted(n for n in names["image"] if not n.isdigit())
    if bad:
        raise ValueError(f"NYU-v2: file names must be integers {{N}}.npy, found {bad[0]!r}.npy "
                         f"in {str(folder / 'image')!r}")
    return folder, sorted(names["image"], key=int)


def _read(folder: Path, name: str, num_classes: int):
    """One sample as `({"image"}, {"segmentation", "depth", "normals"})`, package conventions."""
    image = np.load(folder / "image" / f"{name}.npy").astype(np.float32)
    label = np.load(folder / "label" / f"{name}.npy")
    depth = np.load(folder / "depth" / f"{name}.npy").astype(np.float32)
    normal = np.load(folder / "normal" / f"{name}.npy").astype(np.float32)
    if depth.ndim == 2:
        depth = depth[..., None]
    if label.ndim == 3 and label.shape[-1] == 1:
        label = label[..., 0]
    h, w = label.shape[:2] if label.ndim >= 2 else (None, None)
    expected = {"image": (image, (h, w, 3)), "label": (label, (h, w)),
                "depth": (depth, (h, w, 1)), "normal": (normal, (h, w, 3))}
    for sub, (arr, shape) in expected.items():
        if arr.shape != shape:
            raise ValueError(f"NYU-v2: {str(folder / sub / (name + '.npy'))!r} has shape "
                             f"{arr.shape}, expected {shape} (H x W from the label file)")
    if np.nanmax(image) > 1.5:
        image = image / 255.0
    label = np.nan_to_num(label.astype(np.float64), nan=-1)
    label = np.where((label >= 0) & (label < num_classes), label, -1).astype(np.int32)
    depth = np.where(np.isfinite(depth) & (depth > 0), depth, 0).astype(np.float32)
    normal = np.nan_to_num(normal)
    norm = np.linalg.norm(normal, axis=-1, keepdims=True)
    normal = np.where(norm > 1e-6, normal / np.maximum(norm, 1e-6), 0).astype(np.float32)
    image = np.clip(np.nan_to_num(image), 0, 1).astype(np.float32)
    return {"image": image}, {"segmentation": label, "depth": depth, "normals": normal}


def load_nyuv2(root, split: str = "train", batch_size: int = 8, resolution=None,
               shuffle: bool = True, seed: int = 0, num_classes: int = 13):
    """Batched NYU-v2 `({"image"}, {"segmentation", "depth", "normals"})` read from `root`.

    Args:
        root: folder holding `train/` and `val/` in the layout of this module's docstring.
        split: "train" or "val" ("test" is an alias of "val").
        resolution: None keeps the stored size; an int or (height, width) resizes
            (bilinear for the image, nearest for the labels, so no label is invented).
        num_classes: label ids outside [0, num_classes) become -1 (ignored).
    """
    if split not in NYUV2_SPLITS:
        raise ValueError(f"split must be one of {tuple(NYUV2_SPLITS)}, got {split!r}")
    import tensorflow as tf

    root = check_root(root, "NYU-v2", _LAYOUT)
    folder, names = _scan(root, split)
    h, w = _read(folder, names[0], num_classes)[1]["segmentation"].shape
    structure = ({"image": tf.TensorSpec((h, w, 3), tf.float32)},
                 {"segmentation": tf.TensorSpec((h, w), tf.int32),
                  "depth": tf.TensorSpec((h, w, 1), tf.float32),
                  "normals": tf.TensorSpec((h, w, 3), tf.float32)})
    ds = stream_dataset(len(names), lambda i: _read(folder, names[i], num_classes), structure,
                        batch_size, shuffle, seed)
    if resolution is None:
        return ds
    size = image_size(resolution)

    def resize(inputs, targets):
        image = tf.image.resize(inputs["image"], size, "bilinear")
        nearest = {k: tf.image.resize(v[..., None] if k == "segmentation" else v, size,
                                      "nearest") for k, v in targets.items()}
        nearest["segmentation"] = nearest["segmentation"][..., 0]
        return {"image": tf.clip_by_value(image, 0.0, 1.0)}, nearest

    return ds.map(resize, num_parallel_calls=tf.data.AUTOTUNE)


def nyuv2_tasks(num_classes: int = 13, class_names=None) -> list:
    """Task specs for NYU-v2: segmentation (13 classes by default), depth, normals."""
    from tfmot_mtl import tasks as T

    if class_names is None:
        class_names = NYUV2_13_CLASS_NAMES if num_classes == 13 else ()
    return [T.segmentation("segmentation", num_classes, class_names=tuple(class_names)),
            T.depth("depth"), T.normals("normals")]
