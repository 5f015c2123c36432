"""CelebAMask-HQ from a local copy of its released layout (nothing is downloaded).

Layout::

    {root}/CelebA-HQ-img/{idx}.jpg
    {root}/CelebAMask-HQ-mask-anno/{idx // 2000}/{idx:05d}_{part}.png   (missing = part absent)
    {root}/CelebAMask-HQ-attribute-anno.txt
        line 1: number of images; line 2: the 40 attribute names;
        then one line per image: "{idx}.jpg" and 40 values in {-1, 1}

Tasks: "segmentation" (background + one class per part group; by default background /
hair / skin as in group sparsity, Upadhyay et al. 2024) and "attributes" (binary, selectable).
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from tfmot_mtl.datasets._common import check_root, image_size, stream_dataset

CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs",
    "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair",
    "Bushy_Eyebrows", "Chubby", "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair",
    "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache",
    "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline",
    "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings",
    "Wearing_Hat", "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young")
PARTS = ("skin", "nose", "eye_g", "l_eye", "r_eye", "l_brow", "r_brow", "l_ear", "r_ear",
         "mouth", "u_lip", "l_lip", "hair", "hat", "ear_r", "neck_l", "neck", "cloth")
# Class order = label order (background is 0) and precedence: a pixel covered by parts
# of several groups gets the first group's class.
DEFAULT_PART_GROUPS = {
    "hair": ("hair",),
    "skin": ("skin", "nose", "l_eye", "r_eye", "l_brow", "r_brow", "l_ear", "r_ear",
             "mouth", "u_lip", "l_lip", "neck"),
}
SPLIT_FRACTIONS = {"train": (0.0, 0.8), "val": (0.8, 0.9), "test": (0.9, 1.0), "all": (0.0, 1.0)}
IMAGE_DIR, MASK_DIR = "CelebA-HQ-img", "CelebAMask-HQ-mask-anno"
ATTRIBUTE_FILE = "CelebAMask-HQ-attribute-anno.txt"
_LAYOUT = (f"{{root}}/{IMAGE_DIR}/{{idx}}.jpg, {{root}}/{MASK_DIR}/{{idx//2000}}/"
           f"{{idx:05d}}_{{part}}.png and {{root}}/{ATTRIBUTE_FILE}")


def read_attributes(path) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    """Parse the attribute file: (names, image indices (n,), values (n, K) in {0, 1})."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CelebAMask-HQ: missing attribute file {str(path)!r}; "
                                f"expected {_LAYOUT}")
    lines = [ln.split() for ln in path.read_text().splitlines() if ln.strip()]
    if len(lines) < 2 or len(lines[0]) != 1 or not lines[0][0].isdigit():
        raise ValueError(f"CelebAMask-HQ: {str(path)!r} must start with a line holding the "
                         f"image count, then a line of attribute names")
    names, rows = tuple(lines[1]), lines[2:]
    if int(lines[0][0]) != len(rows):
        raise ValueError(f"CelebAMask-HQ: {str(path)!r} announces {lines[0][0]} images on line "
                         f"1 but lists {len(rows)}")
    indices, values = [], []
    for number, row in enumerate(rows, start=3):
        stem = row[0].rsplit(".", 1)[0]
        if len(row) != len(names) + 1 or not stem.isdigit() or any(
                v not in ("1", "-1") for v in row[1:]):
            raise ValueError(f"CelebAMask-HQ: {str(path)!r} line {number} must be '<idx>.jpg' "
                             f"followed by {len(names)} values in {{-1, 1}}, got {' '.join(row)!r}")
        indices.append(int(stem))
        values.append([v == "1" for v in row[1:]])
    return names, np.array(indices, np.int64), np.array(values, np.float32).reshape(-1, len(names))


def _check_groups(part_groups: Mapping[str, Sequence[str]]) -> dict[str, tuple[str, ...]]:
    if not part_groups:
        raise ValueError("part_groups must map at least one class name to mask part names")
    out = {}
    for name, parts in part_groups.items():
        parts = (parts,) if isinstance(parts, str) else tuple(parts)
        unknown = [p for p in parts if p not in PARTS]
        if unknown or not parts:
            raise ValueError(f"part_groups[{name!r}] has unknown or no parts {unknown}; "
                             f"known parts: {PARTS}")
        out[str(name)] = parts
    return out


def _select_attributes(names: tuple[str, ...], attributes) -> list[int]:
    if attributes is None:
        return list(range(len(names)))
    if isinstance(attributes, str):
        attributes = [attributes]
    unknown = [a for a in attributes if a not in names]
    if unknown or not attributes:
        raise ValueError(f"attributes {unknown or attributes} not in the attribute file; "
                         f"available: {names}")
    return [names.index(a) for a in attributes]


def _read(root: Path, idx: int, groups, size, columns_row):
    """One example: resized image, grouped part mask, attribute row."""
    from PIL import Image

    with Image.open(root / IMAGE_DIR / f"{idx}.jpg") as im:
        image = np.asarray(im.convert("RGB").resize(size[::-1], Image.BILINEAR), np.float32) / 255
    seg = np.zeros(size, np.int32)
    folder = root / MASK_DIR / str(idx // 2000)
    for cls in range(len(groups), 0, -1):  # later groups first so earlier ones win overlaps
        for part in groups[cls - 1]:
            path = folder / f"{idx:05d}_{part}.png"
            if path.is_file():
                with Image.open(path) as m:
                    mask = np.asarray(m.convert("L").resize(size[::-1], Image.NEAREST)) > 127
                seg[mask] = cls
    return {"image": image}, {"segmentation": seg, "attributes": columns_row}


def load_celebamask_hq(root, split: str = "train", batch_size: int = 32, resolution=64,
                       part_groups: Mapping[str, Sequence[str]] | None = None,
                       attributes: Sequence[str] | None = None, shuffle: bool = True,
                       seed: int = 0):
    """Batched CelebAMask-HQ `({"image"}, {"segmentation", "attributes"})` read from `root`.

    Args:
        split: "train" / "val" / "test" / "all": contiguous 80 / 10 / 10 % ranges of the
            images in attribute-file order (`SPLIT_FRACTIONS`).
        resolution: int or (height, width); images bilinear, masks nearest.
        part_groups: ordered {class name: mask parts}; class ids follow the order after
            background = 0 (default `DEFAULT_PART_GROUPS`: hair = 1, skin = 2).
        attributes: attribute names for the binary task (default: all in the file).
    """
    if split not in SPLIT_FRACTIONS:
        raise ValueError(f"split must be one of {tuple(SPLIT_FRACTIONS)}, got {split!r}")
    import tensorflow as tf

    root = check_root(root, "CelebAMask-HQ", _LAYOUT)
    groups = tuple(_check_groups(part_groups or DEFAULT_PART_GROUPS).values())
    size = image_size(resolution)
    names, indices, values = read_attributes(root / ATTRIBUTE_FILE)
    columns = _select_attributes(names, attributes)
    for sub in (IMAGE_DIR, MASK_DIR):
        if not (root / sub).is_dir():
            raise FileNotFoundError(f"CelebAMask-HQ: missing folder {str(root / sub)!r}; "
                                    f"expected {_LAYOUT}")
    present = {p.name for p in (root / IMAGE_DIR).iterdir()}
    missing = [i for i in indices if f"{i}.jpg" not in present]
    if missing:
        raise FileNotFoundError(f"CelebAMask-HQ: {len(missing)} image(s) of the attribute file "
                                f"are missing, e.g. {str(root / IMAGE_DIR)}/{missing[0]}.jpg")
    lo, hi = SPLIT_FRACTIONS[split]
    keep = slice(int(round(lo * len(indices))), int(round(hi * len(indices))))
    indices, targets = indices[keep], values[keep][:, columns]
    if len(indices) == 0:
        raise ValueError(f"CelebAMask-HQ: split {split!r} of {str(root)!r} is empty")
    structure = ({"image": tf.TensorSpec(size + (3,), tf.float32)},
                 {"segmentation": tf.TensorSpec(size, tf.int32),
                  "attributes": tf.TensorSpec((len(columns),), tf.float32)})
    return stream_dataset(len(indices),
                          lambda i: _read(root, int(indices[i]), groups, size, targets[i]),
                          structure, batch_size, shuffle, seed)


def celebamask_hq_tasks(part_groups: Mapping[str, Sequence[str]] | None = None,
                        attributes: Sequence[str] | None = None) -> list:
    """Task specs: segmentation (background + part groups) and binary attributes."""
    from tfmot_mtl import tasks as T

    groups = _check_groups(part_groups or DEFAULT_PART_GROUPS)
    columns = _select_attributes(CELEBA_ATTRIBUTES, attributes)
    attr_names = tuple(CELEBA_ATTRIBUTES[c] for c in columns)
    return [T.segmentation("segmentation", 1 + len(groups),
                           class_names=("background",) + tuple(groups)),
            T.binary("attributes", len(attr_names), attr_names)]
