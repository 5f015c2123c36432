"""Visual Decathlon domains from a local copy (nothing is downloaded).

Layout::

    {root}/data/{domain}/...image files
    {root}/annotations/{domain}_{train,val}.json   COCO-style:
        {"images": [{"id", "file_name"}], "annotations": [{"image_id", "category_id"}],
         "categories": [{"id", "name"}]}

`file_name` may be relative to `root` (as in the released files: "data/aircraft/...")
or to `root/data` or `root/data/{domain}`. Labels are category ids ranked 0..K-1.
Batches match `multi_domain`: `load_visual_decathlon` gives `({"image"}, {domain: y})`,
`load_visual_decathlon_mixed` gives `({"image", "domain"}, {"label"})`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from tfmot_mtl.datasets._common import check_root, image_size, stream_dataset

DECATHLON_SPLITS = ("train", "val")
_LAYOUT = ("{root}/data/{domain}/<images> and {root}/annotations/{domain}_{train,val}.json "
           "(COCO-style images / annotations / categories)")


def visual_decathlon_domains(root) -> list[tuple[str, int]]:
    """(domain, number of classes) for every `annotations/{domain}_train.json` under `root`."""
    root = check_root(root, "Visual Decathlon", _LAYOUT)
    files = sorted((root / "annotations").glob("*_train.json"))
    if not files:
        raise FileNotFoundError(f"Visual Decathlon: no {str(root / 'annotations')}/"
                                f"<domain>_train.json files; expected {_LAYOUT}")
    return [(f.name[:-len("_train.json")], len(_read_json(f)["categories"])) for f in files]


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"Visual Decathlon: missing annotation file {str(path)!r}; "
                                f"expected {_LAYOUT}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"Visual Decathlon: {str(path)!r} is not valid JSON ({err})") from err
    required = (("images", ("id", "file_name")), ("annotations", ("image_id", "category_id")),
                ("categories", ("id",)))
    for key, fields in required:
        items = data.get(key) if isinstance(data, dict) else None
        if not isinstance(items, list) or not all(
                isinstance(it, dict) and all(f in it for f in fields) for it in items):
            raise ValueError(f"Visual Decathlon: {str(path)!r} needs a list {key!r} of objects "
                             f"with fields {fields}")
    return data


def _resolve(root: Path, domain: str, file_name: str) -> Path:
    for base in (root, root / "data", root / "data" / domain):
        if (base / file_name).is_file():
            return base / file_name
    raise FileNotFoundError(f"Visual Decathlon: image {file_name!r} of domain {domain!r} not "
                            f"found as {str(root / 'data' / domain / file_name)!r} (nor relative "
                            f"to {str(root)!r}); expected {_LAYOUT}")


def _samples(root: Path, domain: str, split: str) -> tuple[list[Path], np.ndarray, int]:
    """Image paths, labels 0..K-1 and K for one domain and split."""
    if split not in DECATHLON_SPLITS:
        raise ValueError(f"split must be one of {DECATHLON_SPLITS}, got {split!r}")
    path = root / "annotations" / f"{domain}_{split}.json"
    data = _read_json(path)
    category_ids = sorted({c["id"] for c in data["categories"]})
    rank = {c: i for i, c in enumerate(category_ids)}
    label_of = {a["image_id"]: a["category_id"] for a in data["annotations"]}
    unknown = {c for c in label_of.values() if c not in rank}
    if unknown:
        raise ValueError(f"Visual Decathlon: {str(path)!r} annotates category ids "
                         f"{sorted(unknown)[:5]} that are not in its 'categories'")
    unlabeled = [im["file_name"] for im in data["images"] if im["id"] not in label_of]
    if unlabeled:
        raise ValueError(f"Visual Decathlon: {len(unlabeled)} image(s) in {str(path)!r} have no "
                         f"annotation, e.g. {unlabeled[0]!r}")
    if not data["images"]:
        raise ValueError(f"Visual Decathlon: {str(path)!r} lists no images")
    paths = [_resolve(root, domain, im["file_name"]) for im in data["images"]]
    labels = np.array([rank[label_of[im["id"]]] for im in data["images"]], np.int32)
    return paths, labels, len(category_ids)


def _read_image(path: Path, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB").resize(size[::-1], Image.BILINEAR), np.float32) / 255


def load_visual_decathlon(root, domain: str, split: str = "train", batch_size: int = 32,
                          resolution=64, shuffle: bool = True, seed: int = 0):
    """Batches of one domain as `({"image"}, {domain: label})`, images resized to `resolution`."""
    import tensorflow as tf

    root = check_root(root, "Visual Decathlon", _LAYOUT)
    paths, labels, _ = _samples(root, domain, split)
    size = image_size(resolution)
    structure = ({"image": tf.TensorSpec(size + (3,), tf.float32)},
                 {domain: tf.TensorSpec((), tf.int32)})
    return stream_dataset(len(paths), lambda i: ({"image": _read_image(paths[i], size)},
                                     {domain: labels[i]}),
                          structure, batch_size, shuffle, seed)


def load_visual_decathlon_mixed(root, domains: Sequence[str], split: str = "train",
                                batch_size: int = 32, resolution=64, shuffle: bool = True,
                                seed: int = 0):
    """Mixed batches `({"image", "domain"}, {"label"})`; "domain" indexes `domains`."""
    import tensorflow as tf

    root = check_root(root, "Visual Decathlon", _LAYOUT)
    if isinstance(domains, str) or not domains:
        raise ValueError(f"domains must be a non-empty list of domain names, got {domains!r}")
    paths, labels, ids = [], [], []
    for d, name in enumerate(domains):
        p, y, _ = _samples(root, name, split)
        paths += p
        labels.append(y)
        ids.append(np.full(len(p), d, np.int32))
    labels, ids = np.concatenate(labels), np.concatenate(ids)
    size = image_size(resolution)
    structure = ({"image": tf.TensorSpec(size + (3,), tf.float32),
                  "domain": tf.TensorSpec((), tf.int32)},
                 {"label": tf.TensorSpec((), tf.int32)})

    def read(i):
        return {"image": _read_image(paths[i], size), "domain": ids[i]}, {"label": labels[i]}

    return stream_dataset(len(paths), read, structure, batch_size, shuffle, seed)


def visual_decathlon_tasks(root, domains: Sequence[str] | None = None) -> list:
    """One classification Task per domain (classes counted from its train annotations)."""
    from tfmot_mtl import tasks as T

    found = dict(visual_decathlon_domains(root))
    names = list(found) if domains is None else list(domains)
    missing = [n for n in names if n not in found]
    if missing:
        raise ValueError(f"domains {missing} have no train annotations in {str(root)!r}; "
                         f"found {sorted(found)}")
    return [T.classification(n, found[n]) for n in names]
