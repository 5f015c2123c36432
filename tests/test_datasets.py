"""Embedded datasets: determinism, exact labels, splits, tf.data specs, tfds builders, tour script."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tfmot_mtl.datasets import multi_digits, multi_domain, synthetic_scenes
from tfmot_mtl.datasets._common import sklearn_digits, split_seed

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def scenes():
    return synthetic_scenes.generate(48, resolution=32, seed=7)


@pytest.fixture(scope="module")
def digits():
    return multi_digits.generate(300, resolution=48, seed=3, split="train")


# ---------------------------------------------------------------- synthetic_scenes


def test_scenes_shapes_dtypes_and_ranges(scenes):
    assert scenes["image"].shape == (48, 32, 32, 3) and scenes["image"].dtype == np.float32
    assert scenes["segmentation"].shape == (48, 32, 32) and scenes["segmentation"].dtype == np.int32
    assert scenes["depth"].shape == (48, 32, 32, 1) and scenes["depth"].dtype == np.float32
    assert scenes["normals"].shape == (48, 32, 32, 3) and scenes["normals"].dtype == np.float32
    assert 0.0 <= scenes["image"].min() and scenes["image"].max() <= 1.0
    assert (scenes["depth"] > 0).all() and np.isfinite(scenes["depth"]).all()
    np.testing.assert_allclose(np.linalg.norm(scenes["normals"], axis=-1), 1.0, atol=1e-4)
    seg = scenes["segmentation"]
    assert seg.min() >= 0 and seg.max() < len(synthetic_scenes.CLASS_NAMES)


def test_scenes_every_class_appears(scenes):
    counts = np.bincount(scenes["segmentation"].ravel(), minlength=len(synthetic_scenes.CLASS_NAMES))
    assert len(synthetic_scenes.CLASS_NAMES) >= 7
    assert (counts > 0).all(), dict(zip(synthetic_scenes.CLASS_NAMES, counts))


def test_scenes_deterministic_per_seed():
    a = synthetic_scenes.generate(4, 24, seed=11)
    b = synthetic_scenes.generate(4, 24, seed=11)
    c = synthetic_scenes.generate(4, 24, seed=12)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["image"], c["image"])
    assert not np.array_equal(a["depth"], c["depth"])


def _empty_room_scene(res):
    """Camera at (0, 1.5, 0) looking straight down +z in a 6 x 3 x 5 m room, no objects."""
    s = synthetic_scenes._sample_scenes(np.random.default_rng(0), 1)
    s.update(cam=np.array([[0.0, 1.5, 0.0]], np.float32), room=np.array([[6.0, 3.0, 5.0]], np.float32),
             yaw=np.zeros(1, np.float32), pitch=np.zeros(1, np.float32),
             roll=np.zeros(1, np.float32), fov=np.array([np.pi / 2], np.float32))
    for key in ("box_on", "sph_on", "cyl_on", "present"):
        s[key] = np.zeros_like(s[key])
    return s


def test_scenes_hand_computed_room_geometry():
    res = 16
    s = _empty_room_scene(res)
    out = synthetic_scenes._render(s, res, np.random.default_rng(0))
    seg, depth, normals = out["segmentation"][0], out["depth"][0, ..., 0], out["normals"][0]
    focal = 0.5 * res / np.tan(np.pi / 4)  # 8 pixels
    # Centre pixels see the back wall (z = 5) head-on: z-depth 5, normal towards the camera.
    assert seg[8, 8] == synthetic_scenes.WALL
    np.testing.assert_allclose(depth[6:10, 6:10], 5.0, rtol=1e-5)
    np.testing.assert_allclose(normals[8, 8], [0, 0, -1], atol=1e-6)
    # Bottom row, v = 7.5 / 8: the ray drops 1.5 m to the floor at z = 1.5 / v = 1.6 m.
    v = (15 + 0.5 - res / 2) / focal
    assert seg[15, 8] == synthetic_scenes.FLOOR
    np.testing.assert_allclose(depth[15, 8], 1.5 / v, rtol=1e-5)
    np.testing.assert_allclose(normals[15, 8], [0, -1, 0], atol=1e-6)  # up = -y (y points down)
    # Top row reaches the 3 m ceiling, same height above as the floor is below.
    assert seg[0, 8] == synthetic_scenes.CEILING
    np.testing.assert_allclose(depth[0, 8], 1.5 / v, rtol=1e-5)
    # Right-most column hits the x = 3 side wall: normal -x.
    u = (15 + 0.5 - res / 2) / focal
    np.testing.assert_allclose(depth[8, 15], 3.0 / u, rtol=1e-5)
    np.testing.assert_allclose(normals[8, 15], [-1, 0, 0], atol=1e-6)


def test_scenes_hand_computed_sphere():
    res = 16
    s = _empty_room_scene(res)
    s["sph_on"][0, 0] = True
    s["cls"][0, 0] = synthetic_scenes.SPHERE
    s["sph_c"][0, 0] = [0.0, 1.5, 3.0]
    s["sph_r"][0, 0] = 0.5
    out = synthetic_scenes._render(s, res, np.random.default_rng(0))
    seg, depth = out["segmentation"][0], out["depth"][0, ..., 0]
    # Ray (u, v, 1), u = v = 0.5 / 8: solve |t (u, v, 1) - (0, 0, 3)|^2 = 0.25 for the near root.
    u = 0.5 / 8
    a, b, c = 2 * u * u + 1, -6.0, 9 - 0.25
    t = (-b - np.sqrt(b * b - 4 * a * c)) / (2 * a)
    assert seg[8, 8] == synthetic_scenes.SPHERE
    np.testing.assert_allclose(depth[8, 8], t, rtol=1e-5)
    # Sphere spans atan(0.5 / sqrt(9 - 0.25)) -> about +-1.36 px of 8 px focal around centre.
    assert seg[8, 3] == synthetic_scenes.WALL and seg[8, 12] == synthetic_scenes.WALL
    normal = out["normals"][0, 8, 8]
    hit = t * np.array([u, u, 1.0])
    np.testing.assert_allclose(normal, (hit - [0, 0, 3]) / 0.5, atol=1e-4)


def test_scenes_colour_does_not_identify_object_class(scenes):
    seg, image = scenes["segmentation"].ravel(), scenes["image"].reshape(-1, 3)
    classes = list(synthetic_scenes.OBJECT_CLASSES)
    keep = np.isin(seg, classes)
    x, y = image[keep], seg[keep]
    centroids = np.stack([x[y == c].mean(0) for c in classes])
    pred = np.array(classes)[np.argmin(((x[:, None] - centroids[None]) ** 2).sum(-1), 1)]
    assert (pred == y).mean() < 0.5


def test_scenes_forced_object_class():
    lamps = synthetic_scenes.generate(6, 24, seed=0, object_class=[synthetic_scenes.LAMP] * 6)
    present = set(np.unique(lamps["segmentation"]))
    assert synthetic_scenes.LAMP in present
    assert present <= {synthetic_scenes.FLOOR, synthetic_scenes.WALL, synthetic_scenes.CEILING,
                       synthetic_scenes.LAMP}
    with pytest.raises(ValueError, match="object_class must hold 2 ids"):
        synthetic_scenes.generate(2, 24, object_class=[synthetic_scenes.WALL] * 2)


def test_scenes_load_spec_and_splits():
    ds = synthetic_scenes.load("train", n=10, batch_size=4, resolution=16, seed=1)
    x, y = ds.element_spec
    assert set(x) == {"image"} and set(y) == {"segmentation", "depth", "normals"}
    assert x["image"].shape.as_list() == [None, 16, 16, 3] and x["image"].dtype == tf.float32
    assert y["segmentation"].dtype == tf.int32 and y["segmentation"].shape.as_list() == [None, 16, 16]
    assert y["depth"].shape.as_list() == [None, 16, 16, 1]
    assert y["normals"].shape.as_list() == [None, 16, 16, 3]
    assert [b[0]["image"].shape[0] for b in ds] == [4, 4, 2]
    train = next(iter(synthetic_scenes.load("train", n=3, resolution=16, shuffle=False)))[1]["depth"]
    test = next(iter(synthetic_scenes.load("test", n=3, resolution=16, shuffle=False)))[1]["depth"]
    assert not np.array_equal(train.numpy(), test.numpy())
    ref = synthetic_scenes.generate(3, 16, split_seed(0, "train"))["depth"]
    np.testing.assert_array_equal(train.numpy(), ref)


def test_scenes_tasks_and_bad_arguments():
    tasks = synthetic_scenes.tasks()
    assert [(t.name, t.kind, t.output_channels) for t in tasks] == [
        ("segmentation", "segmentation", 8), ("depth", "depth", 1), ("normals", "normals", 3)]
    assert tasks[0].class_names == synthetic_scenes.CLASS_NAMES
    with pytest.raises(ValueError, match="split"):
        synthetic_scenes.load("validation")
    with pytest.raises(ValueError, match="resolution"):
        synthetic_scenes.generate(2, resolution=4)
    with pytest.raises(ValueError, match="batch_size"):
        synthetic_scenes.load("test", n=2, batch_size=0)
    assert synthetic_scenes.generate(0, 16)["image"].shape == (0, 16, 16, 3)


# ---------------------------------------------------------------- multi_digits


def test_digit_sources_disjoint_and_cover_all():
    train, test = multi_digits.source_indices("train"), multi_digits.source_indices("test")
    assert len(np.intersect1d(train, test)) == 0
    assert len(train) + len(test) == 1797
    np.testing.assert_array_equal(np.union1d(train, test), np.arange(1797))
    _, labels = sklearn_digits()
    assert set(labels[test]) == set(range(10))  # stratified
    canvases = multi_digits.generate(200, 32, seed=0, split="test")["sources"]
    used = canvases[canvases >= 0]
    assert np.isin(used, test).all() and not np.isin(used, train).any()


def test_digits_labels_consistent_with_sources(digits):
    _, labels = sklearn_digits()
    src = digits["sources"]
    count = (src >= 0).sum(1)
    assert set(count) == {2, 3}
    assert (src[:, :2] >= 0).all()
    np.testing.assert_array_equal(digits["left"], labels[src[:, 0]])
    np.testing.assert_array_equal(digits["right"], labels[src[np.arange(len(src)), count - 1]])
    for i in range(len(src)):
        allowed = {0} | {labels[s] + 1 for s in src[i] if s >= 0}
        assert set(np.unique(digits["segmentation"][i])) <= allowed


def test_digits_shapes_ranges_and_class_coverage(digits):
    assert digits["image"].shape == (300, 48, 48, 3) and digits["image"].dtype == np.float32
    assert 0 <= digits["image"].min() and digits["image"].max() <= 1
    seg = digits["segmentation"]
    assert seg.dtype == np.int32 and seg.min() == 0 and seg.max() <= 10
    assert (np.bincount(seg.ravel(), minlength=11) > 0).all()
    assert set(digits["left"]) == set(range(10)) and set(digits["right"]) == set(range(10))
    assert 0.03 < (seg > 0).mean() < 0.4  # digits are drawn, but most pixels are background


def test_digits_deterministic_and_split_specific():
    a = multi_digits.generate(5, 32, seed=4)
    b = multi_digits.generate(5, 32, seed=4)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["image"], multi_digits.generate(5, 32, seed=5)["image"])
    assert not np.array_equal(a["sources"], multi_digits.generate(5, 32, seed=4, split="test")["sources"])


def test_digits_load_spec_and_tasks():
    ds = multi_digits.load("test", n=6, batch_size=4, resolution=32)
    x, y = ds.element_spec
    assert x["image"].shape.as_list() == [None, 32, 32, 3]
    assert y["segmentation"].shape.as_list() == [None, 32, 32] and y["segmentation"].dtype == tf.int32
    assert y["left"].shape.as_list() == [None] and y["left"].dtype == tf.int32
    assert y["right"].dtype == tf.int32
    assert sum(int(b[0]["image"].shape[0]) for b in ds) == 6
    tasks = multi_digits.tasks()
    assert [(t.name, t.kind, t.output_channels) for t in tasks] == [
        ("segmentation", "segmentation", 11), ("left", "classification", 10),
        ("right", "classification", 10)]


# ---------------------------------------------------------------- multi_domain


def test_domains_generate_labels():
    assert len(multi_domain.DOMAINS) >= 4
    for name, k in multi_domain.DOMAINS:
        data = multi_domain.generate(name, 120, "train", seed=0, resolution=32)
        assert data["image"].shape == (120, 32, 32, 3) and data["image"].dtype == np.float32
        assert data["label"].dtype == np.int32
        assert 0 <= data["image"].min() and data["image"].max() <= 1
        assert set(data["label"]) == set(range(k)), name


def test_domains_deterministic_and_disjoint_digit_scans():
    a = multi_domain.generate("shapes", 6, "train", seed=2, resolution=24)
    b = multi_domain.generate("shapes", 6, "train", seed=2, resolution=24)
    np.testing.assert_array_equal(a["image"], b["image"])
    assert not np.array_equal(a["image"], multi_domain.generate("shapes", 6, "test", 2, 24)["image"])
    with pytest.raises(ValueError, match="domain must be one of"):
        multi_domain.generate("imagenet", 3)


def test_shape_masks_hand_computed_areas():
    res = 200
    g = (np.arange(res) + 0.5) / res * 2 - 1
    x, y = np.broadcast_to(g[None, None, :], (6, res, res)), np.broadcast_to(g[None, :, None], (6, res, res))
    masks = multi_domain._shape_masks(np.arange(6), x, y, np.full((6, 1, 1), 0.5))
    area = masks.mean((1, 2)) * 4  # square [-1, 1]^2 has area 4
    np.testing.assert_allclose(area[0], np.pi * 0.25, rtol=0.02)  # circle
    np.testing.assert_allclose(area[1], 0.8 ** 2, rtol=0.02)  # square, half-side 0.4
    np.testing.assert_allclose(area[2], 3 * np.sqrt(3) / 4 * 0.5 ** 2, rtol=0.03)  # inradius 0.25
    np.testing.assert_allclose(area[4], np.pi * (0.25 - 0.09), rtol=0.03)  # ring 0.3..0.5
    np.testing.assert_allclose(area[5], 2 * 0.32 * 1.0 - 0.32 ** 2, rtol=0.03)  # cross, arms 0.32 x 1


def test_domains_load_mixed_and_single():
    ds = multi_domain.load("train", batch_size=8, n_per_domain=5, domains=["textures", "digits"],
                           resolution=24)
    x, y = ds.element_spec
    assert set(x) == {"image", "domain"} and set(y) == {"label"}
    assert x["domain"].dtype == tf.int32 and x["domain"].shape.as_list() == [None]
    assert y["label"].dtype == tf.int32
    dom = np.concatenate([b[0]["domain"].numpy() for b in ds])
    np.testing.assert_array_equal(np.bincount(dom), [5, 5])
    single = multi_domain.load_domain("digits", "test", n=4, batch_size=4, resolution=24)
    xs, ys = single.element_spec
    assert set(xs) == {"image"} and set(ys) == {"digits"}
    assert [t.name for t in multi_domain.tasks()] == [n for n, _ in multi_domain.DOMAINS]
    with pytest.raises(ValueError, match="duplicates"):
        multi_domain.load(domains=["digits", "digits"])


# ---------------------------------------------------------------- tfds builders + tour


def test_tfds_builders_tiny(tmp_path):
    import tensorflow_datasets as tfds

    import tfmot_mtl.datasets  # noqa: F401  (registers the builders)

    scenes = tfds.load("synthetic_scenes/tiny", data_dir=str(tmp_path), split="test")
    got = sorted(float(e["depth"].sum()) for e in tfds.as_numpy(scenes))
    ref = synthetic_scenes.generate(8, 32, split_seed(0, "test"))["depth"]
    np.testing.assert_allclose(got, sorted(ref.sum((1, 2, 3))), rtol=1e-6)

    digits = tfds.load("multi_digits/tiny", data_dir=str(tmp_path), split="train", as_supervised=True)
    x, y = digits.element_spec
    assert x["image"].shape.as_list() == [32, 32, 3] and y["segmentation"].dtype == tf.int32
    assert len(list(digits)) == 16

    domains = tfds.load("multi_domain/tiny", data_dir=str(tmp_path), split="test", as_supervised=True)
    dom = np.array([int(x["domain"]) for x, _ in domains])
    np.testing.assert_array_equal(np.bincount(dom), [8] * len(multi_domain.DOMAINS))


@pytest.mark.slow  # ~14 s
def test_datasets_tour_fast(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "datasets_tour.py"), "--fast",
                             "--out", str(tmp_path)], capture_output=True, text=True, timeout=180,
                            cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    for name in ("synthetic_scenes.png", "multi_digits.png", "multi_domain.png"):
        assert (tmp_path / name).stat().st_size > 1000
    assert "class_balance" in result.stdout


def test_preview_summary_and_cli(tmp_path):
    from tfmot_mtl.app.cli import main
    from tfmot_mtl.datasets.preview import preview

    summary = preview("synthetic_scenes", n=4, out=tmp_path, resolution=32, shown=2)
    assert summary["arrays"]["image"]["shape"] == [4, 32, 32, 3]
    assert abs(sum(summary["class_balance"].values()) - 100) < 0.1
    with pytest.raises(ValueError, match="unknown dataset"):
        preview("nope", out=tmp_path)
    assert main(["data", "multi_domain", "--n", "3", "--resolution", "32", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "data_multi_domain" / "multi_domain.png").exists()
