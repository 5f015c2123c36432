"""Loaders for real datasets on disk, on tiny fake copies written to tmp_path."""
import json

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tfmot_mtl.datasets import (
    celebamask_hq_tasks, load_celebamask_hq, load_nyuv2, load_visual_decathlon,
    load_visual_decathlon_mixed, nyuv2_tasks, visual_decathlon_domains, visual_decathlon_tasks)


def _batches(ds):
    """All batches concatenated: (inputs, targets) dicts of numpy arrays."""
    parts = list(ds.as_numpy_iterator())
    return tuple({k: np.concatenate([p[i][k] for p in parts]) for k in parts[0][i]} for i in (0, 1))


# ---------------------------------------------------------------- NYU-v2


def _write_nyu(root, split="train", n=2, h=6, w=8, depth_2d=False):
    rng = np.random.default_rng(0)
    samples = []
    for i in range(n):
        image = rng.uniform(0, 255, (h, w, 3)).astype(np.float32)  # 0..255 copy
        label = rng.integers(-1, 15, (h, w)).astype(np.float32)  # 13 and 14 out of range
        depth = rng.uniform(0.5, 5, (h, w) if depth_2d else (h, w, 1)).astype(np.float32)
        depth[0, 0] = 0.0
        normal = rng.normal(size=(h, w, 3)).astype(np.float32)
        normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
        normal[1, 1] = 0.0
        for sub, arr in (("image", image), ("label", label), ("depth", depth), ("normal", normal)):
            (root / split / sub).mkdir(parents=True, exist_ok=True)
            np.save(root / split / sub / f"{i}.npy", arr)
        samples.append((image, label, depth, normal))
    return samples


def test_nyuv2_values_match_files(tmp_path):
    samples = _write_nyu(tmp_path, "val", n=3, depth_2d=True)
    x, y = _batches(load_nyuv2(tmp_path, "test", batch_size=2, shuffle=False))
    image, label, depth, normal = samples[2]
    np.testing.assert_allclose(x["image"][2], image / 255.0, rtol=1e-6)
    expected = np.where((label >= 0) & (label < 13), label, -1).astype(np.int32)
    np.testing.assert_array_equal(y["segmentation"][2], expected)
    np.testing.assert_allclose(y["depth"][2], depth[..., None])
    assert y["depth"][2, 0, 0, 0] == 0.0
    np.testing.assert_allclose(y["normals"][2], normal, atol=1e-6)
    np.testing.assert_array_equal(y["normals"][2, 1, 1], [0, 0, 0])
    assert y["segmentation"].dtype == np.int32 and x["image"].shape == (3, 6, 8, 3)


def test_nyuv2_resize_and_spec(tmp_path):
    _write_nyu(tmp_path, "train", n=3)
    ds = load_nyuv2(tmp_path, "train", batch_size=2, resolution=(3, 4), seed=1)
    x, y = ds.element_spec
    assert x["image"].shape.as_list() == [None, 3, 4, 3]
    assert y["segmentation"].shape.as_list() == [None, 3, 4] and y["segmentation"].dtype == tf.int32
    assert y["depth"].shape.as_list() == [None, 3, 4, 1]
    assert y["normals"].shape.as_list() == [None, 3, 4, 3]
    xs, ys = _batches(ds)
    assert xs["image"].shape == (3, 3, 4, 3)
    assert set(np.unique(ys["segmentation"])) <= set(range(-1, 13))
    assert [t.name for t in nyuv2_tasks()] == ["segmentation", "depth", "normals"]
    assert nyuv2_tasks()[0].output_channels == 13


def test_nyuv2_bad_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"expected \{root\}/\{train,val\}/\{image,label,depth,normal\}"):
        load_nyuv2(tmp_path / "nope")
    _write_nyu(tmp_path, "train", n=2)
    with pytest.raises(FileNotFoundError, match=r"missing folder .*val/image"):
        load_nyuv2(tmp_path, "val")
    (tmp_path / "train" / "depth" / "1.npy").unlink()
    with pytest.raises(ValueError, match=r"no depth file, e.g. .*train/depth/1\.npy"):
        load_nyuv2(tmp_path, "train")
    np.save(tmp_path / "train" / "depth" / "1.npy", np.ones((6, 8, 1), np.float32))
    np.save(tmp_path / "train" / "normal" / "0.npy", np.ones((6, 8), np.float32))
    with pytest.raises(ValueError, match=r"normal/0\.npy' has shape \(6, 8\), expected \(6, 8, 3\)"):
        load_nyuv2(tmp_path, "train")
    with pytest.raises(ValueError, match="split must be one of"):
        load_nyuv2(tmp_path, "training")


# ---------------------------------------------------------------- CelebAMask-HQ


ATTRS = ("Male", "Smiling", "Young")


def _write_celeba(root, n=4, size=16):
    (root / "CelebA-HQ-img").mkdir(parents=True)
    values = np.array([[1, -1, 1], [-1, -1, 1], [1, 1, -1], [-1, 1, -1], [1, 1, 1]])[:n]
    for idx in range(n):
        Image.fromarray(np.full((size, size, 3), 40 * idx + 20, np.uint8)).save(
            root / "CelebA-HQ-img" / f"{idx}.jpg", quality=100)
    masks = root / "CelebAMask-HQ-mask-anno" / "0"
    masks.mkdir(parents=True)
    hair = np.zeros((size, size), np.uint8)
    hair[: size // 2] = 255  # top half
    skin = np.zeros((size, size), np.uint8)
    skin[size // 4:, : size // 2] = 255  # left, overlapping hair in rows 4..7
    nose = np.zeros((size, size), np.uint8)
    nose[-2:, -2:] = 255
    Image.fromarray(hair).save(masks / "00000_hair.png")
    Image.fromarray(skin).save(masks / "00000_skin.png")
    Image.fromarray(nose).save(masks / "00000_nose.png")
    Image.fromarray(np.stack([skin] * 3, -1)).save(masks / "00001_cloth.png")  # RGB mask
    lines = [str(n), " ".join(ATTRS)] + [
        f"{idx}.jpg " + " ".join(str(v) for v in values[idx]) for idx in range(n)]
    (root / "CelebAMask-HQ-attribute-anno.txt").write_text("\n".join(lines) + "\n")
    return hair, skin, nose, values


def test_celebamask_hq_masks_attributes_and_precedence(tmp_path):
    hair, skin, nose, values = _write_celeba(tmp_path)
    x, y = _batches(load_celebamask_hq(tmp_path, "all", batch_size=3, resolution=16, shuffle=False))
    expected = np.zeros((16, 16), np.int32)
    expected[(skin > 0) | (nose > 0)] = 2
    expected[hair > 0] = 1  # hair comes first in the default groups, so it wins overlaps
    np.testing.assert_array_equal(y["segmentation"][0], expected)
    np.testing.assert_array_equal(y["segmentation"][1], 0)  # only 'cloth': background
    np.testing.assert_array_equal(y["attributes"], (values > 0).astype(np.float32))
    np.testing.assert_allclose(x["image"][:, 0, 0, 0], (40 * np.arange(4) + 20) / 255, atol=3 / 255)
    assert y["attributes"].dtype == np.float32 and y["segmentation"].dtype == np.int32


def test_celebamask_hq_custom_groups_resolution_and_attributes(tmp_path):
    hair, skin, _, values = _write_celeba(tmp_path)
    groups = {"skin": ["skin"], "hair": "hair", "nose": ["nose"]}
    ds = load_celebamask_hq(tmp_path, "all", batch_size=4, resolution=8, part_groups=groups,
                            attributes=["Smiling"], shuffle=False)
    x, y = ds.element_spec
    assert x["image"].shape.as_list() == [None, 8, 8, 3]
    assert y["attributes"].shape.as_list() == [None, 1]
    xs, ys = _batches(ds)
    seg = ys["segmentation"][0]  # nearest 16 -> 8 keeps source rows / cols 1, 3, 5, ...
    assert seg[3, 0] == 1 and seg[2, 0] == 1  # skin and hair: skin is listed first, wins
    assert seg[1, 0] == 2 and seg[1, 5] == 2  # hair only
    assert seg[7, 7] == 3 and seg[7, 6] == 0 and seg[5, 6] == 0
    np.testing.assert_array_equal(ys["attributes"][:, 0], values[:, 1] > 0)
    tasks = celebamask_hq_tasks(groups, ["Smiling", "Male"])
    assert tasks[0].class_names == ("background", "skin", "hair", "nose")
    assert (tasks[1].kind, tasks[1].output_channels) == ("binary", 2)
    assert celebamask_hq_tasks()[0].output_channels == 3  # background / hair / skin


def test_celebamask_hq_splits(tmp_path):
    _write_celeba(tmp_path, n=5)  # 80/10/10 % of 5 images: 4 / 0 / 1

    def count(split):
        ds = load_celebamask_hq(tmp_path, split, resolution=8, shuffle=False)
        return np.concatenate([b[0]["image"][:, 0, 0, 0].numpy() for b in ds])

    np.testing.assert_allclose(count("test"), [(40 * 4 + 20) / 255], atol=3 / 255)  # the last one
    assert len(count("train")) == 4 and len(count("all")) == 5
    with pytest.raises(ValueError, match="split 'val' of .* is empty"):
        load_celebamask_hq(tmp_path, "val")


def test_celebamask_hq_bad_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"expected \{root\}/CelebA-HQ-img/\{idx\}\.jpg"):
        load_celebamask_hq(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="missing attribute file"):
        load_celebamask_hq(tmp_path)
    _write_celeba(tmp_path)
    with pytest.raises(ValueError, match=r"attributes \['Bald'\] not in the attribute file"):
        load_celebamask_hq(tmp_path, attributes=["Bald"])
    with pytest.raises(ValueError, match="unknown or no parts"):
        load_celebamask_hq(tmp_path, part_groups={"face": ["face"]})
    (tmp_path / "CelebA-HQ-img" / "2.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 image\(s\) .* missing, e.g. .*CelebA-HQ-img/2\.jpg"):
        load_celebamask_hq(tmp_path)
    attr = tmp_path / "CelebAMask-HQ-attribute-anno.txt"
    attr.write_text("2\nMale Smiling Young\n0.jpg 1 -1 1\n1.jpg 1 0 1\n")
    with pytest.raises(ValueError, match="line 4 must be '<idx>.jpg' followed by 3 values"):
        load_celebamask_hq(tmp_path)
    attr.write_text("3\nMale Smiling Young\n0.jpg 1 -1 1\n")
    with pytest.raises(ValueError, match="announces 3 images on line 1 but lists 1"):
        load_celebamask_hq(tmp_path)


# ---------------------------------------------------------------- Visual Decathlon


def _write_decathlon(root, domain="aircraft", split="train", n=4, categories=(10000001, 10000007)):
    folder = root / "data" / domain / split
    folder.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(n):
        name = f"{i:07d}.png"
        Image.fromarray(np.full((10, 12, 3), 30 * i, np.uint8)).save(folder / name)
        images.append({"id": 100 + i, "file_name": f"data/{domain}/{split}/{name}"})
        annotations.append({"id": i, "image_id": 100 + i, "category_id": categories[i % len(categories)]})
    (root / "annotations").mkdir(exist_ok=True)
    cats = [{"id": c, "name": f"class{c}"} for c in categories]
    data = {"images": images, "annotations": annotations, "categories": cats}
    (root / "annotations" / f"{domain}_{split}.json").write_text(json.dumps(data))
    return data


def test_visual_decathlon_domain_loader(tmp_path):
    _write_decathlon(tmp_path, "aircraft", "train", n=4, categories=(10000007, 10000001))
    ds = load_visual_decathlon(tmp_path, "aircraft", "train", batch_size=3, resolution=8, shuffle=False)
    x, y = ds.element_spec
    assert set(x) == {"image"} and set(y) == {"aircraft"}
    assert x["image"].shape.as_list() == [None, 8, 8, 3] and y["aircraft"].dtype == tf.int32
    xs, ys = _batches(ds)
    np.testing.assert_array_equal(ys["aircraft"], [1, 0, 1, 0])  # category ids ranked
    np.testing.assert_allclose(xs["image"][:, 0, 0, 0], 30 * np.arange(4) / 255, atol=1e-6)


def test_visual_decathlon_relative_names_and_mixed(tmp_path):
    _write_decathlon(tmp_path, "aircraft", "val", n=2)
    data = _write_decathlon(tmp_path, "dtd", "train", n=3, categories=(5, 6, 7))
    data["images"] = [dict(im, file_name=im["file_name"].split("/", 2)[2]) for im in data["images"]]
    (tmp_path / "annotations" / "dtd_train.json").write_text(json.dumps(data))  # 'train/000.png'
    _write_decathlon(tmp_path, "aircraft", "train", n=2)
    assert visual_decathlon_domains(tmp_path) == [("aircraft", 2), ("dtd", 3)]
    ds = load_visual_decathlon_mixed(tmp_path, ["dtd", "aircraft"], "train", batch_size=8,
                                     resolution=8, shuffle=False)
    xs, ys = _batches(ds)
    np.testing.assert_array_equal(xs["domain"], [0, 0, 0, 1, 1])
    np.testing.assert_array_equal(ys["label"], [0, 1, 2, 0, 1])
    assert [(t.name, t.output_channels) for t in visual_decathlon_tasks(tmp_path)] == [
        ("aircraft", 2), ("dtd", 3)]


def test_visual_decathlon_bad_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"expected \{root\}/data/\{domain\}/<images>"):
        load_visual_decathlon(tmp_path / "none", "aircraft")
    with pytest.raises(FileNotFoundError, match=r"missing annotation file .*annotations/aircraft_train\.json"):
        load_visual_decathlon(tmp_path, "aircraft")
    data = _write_decathlon(tmp_path, "aircraft", "train", n=2)
    (tmp_path / "data" / "aircraft" / "train" / "0000001.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"image 'data/aircraft/train/0000001\.png' of domain 'aircraft' not found"):
        load_visual_decathlon(tmp_path, "aircraft")
    del data["categories"]
    (tmp_path / "annotations" / "aircraft_train.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="needs a list 'categories' of objects with fields"):
        load_visual_decathlon(tmp_path, "aircraft")
    (tmp_path / "annotations" / "aircraft_train.json").write_text("{not json")
    with pytest.raises(ValueError, match="is not valid JSON"):
        load_visual_decathlon(tmp_path, "aircraft")
    with pytest.raises(ValueError, match="split must be one of"):
        load_visual_decathlon(tmp_path, "aircraft", "test")
