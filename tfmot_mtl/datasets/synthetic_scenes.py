"""Ray-cast indoor scenes with exact segmentation, depth and surface normals (NYU-v2 stand-in).

Each scene is a closed room (floor, walls, ceiling) with three to six objects: boxes,
spheres, cylinders, pedestal tables (slab + column) and floor lamps (pole + shade). A
pinhole camera with random position, yaw, pitch, roll and field of view looks into the
room. Every pixel's ray is intersected analytically with every primitive, for a whole
batch of scenes at once (numpy, float32), so labels are exact:

- segmentation: class id per pixel, see `CLASS_NAMES`;
- depth: metric z-depth along the camera's optical axis (metres, > 0);
- normals: unit surface normals in the camera frame (x right, y down, z forward, the
  OpenCV convention), facing the camera (n . ray < 0).

Appearance is deliberately not a shortcut to the labels: instance colours come from one
palette shared by all classes, textures, directional + ambient + camera-fill lighting,
specular highlights, exposure, vignetting and sensor noise all vary per scene.
"""
from __future__ import annotations

import numpy as np

from tfmot_mtl.datasets._common import (
    check_count, check_resolution, check_split, split_seed, to_dataset)

CLASS_NAMES = ("floor", "wall", "ceiling", "box", "sphere", "cylinder", "table", "lamp")
FLOOR, WALL, CEILING, BOX, SPHERE, CYLINDER, TABLE, LAMP = range(len(CLASS_NAMES))
OBJECT_CLASSES = (BOX, SPHERE, CYLINDER, TABLE, LAMP)
MAX_OBJECTS = 6
DEFAULT_SIZES = {"train": 2000, "test": 500}
TASK_NAMES = ("segmentation", "depth", "normals")

_CHUNK = 128
_EPS = 1e-4
_PALETTE = np.array([
    [0.80, 0.22, 0.20], [0.90, 0.55, 0.15], [0.92, 0.82, 0.30], [0.45, 0.70, 0.25],
    [0.20, 0.55, 0.45], [0.25, 0.55, 0.85], [0.30, 0.30, 0.70], [0.60, 0.35, 0.70],
    [0.85, 0.50, 0.65], [0.55, 0.40, 0.28], [0.75, 0.75, 0.72], [0.25, 0.25, 0.27],
], np.float32)


def _uniform(rng, low, high, size):
    return rng.uniform(low, high, size).astype(np.float32)


def _sample_scenes(rng: np.random.Generator, b: int,
                   object_class: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Random room, camera, objects, materials and lights for `b` scenes.

    `object_class` (b,), if given, makes every object of scene i of that class.
    """
    k = MAX_OBJECTS
    s = {"room": np.stack([_uniform(rng, 4.0, 7.0, b), _uniform(rng, 2.5, 3.2, b),
                           _uniform(rng, 5.0, 8.0, b)], 1)}  # width, height, far-wall z
    cam = np.stack([_uniform(rng, -0.25, 0.25, b) * s["room"][:, 0],
                    _uniform(rng, 0.9, 1.8, b), _uniform(rng, 0.0, 0.8, b)], 1)
    s["cam"], s["yaw"] = cam, _uniform(rng, -0.45, 0.45, b)
    s["pitch"], s["roll"] = _uniform(rng, -0.5, 0.1, b), _uniform(rng, -0.06, 0.06, b)
    s["fov"] = _uniform(rng, 0.9, 1.35, b)  # horizontal, radians
    s["present"] = np.arange(k) < rng.integers(3, k + 1, b)[:, None]
    s["cls"] = rng.choice(OBJECT_CLASSES, (b, k)).astype(np.int32)
    if object_class is not None:
        s["cls"] = np.repeat(np.asarray(object_class, np.int32)[:, None], k, 1)
    # Objects stand inside the horizontal field of view, 1-4.5 m away, inside the room.
    angle = s["yaw"][:, None] + _uniform(rng, -0.45, 0.45, (b, k)) * s["fov"][:, None]
    dist = _uniform(rng, 1.0, 4.5, (b, k))
    half_w, far = s["room"][:, 0:1] / 2 - 0.45, s["room"][:, 2:3] - 0.45
    x = np.clip(cam[:, 0:1] + dist * np.sin(angle), -half_w, half_w)
    z = np.clip(cam[:, 2:3] + dist * np.cos(angle), cam[:, 2:3] + 1.0, far)
    cls = s["cls"]
    is_table = cls == TABLE
    box_h = np.stack([_uniform(rng, 0.15, 0.5, (b, k)), _uniform(rng, 0.12, 0.6, (b, k)),
                      _uniform(rng, 0.15, 0.5, (b, k))], -1)
    top_h = np.stack([_uniform(rng, 0.35, 0.7, (b, k)), _uniform(rng, 0.025, 0.05, (b, k)),
                      _uniform(rng, 0.3, 0.55, (b, k))], -1)
    top_y = _uniform(rng, 0.55, 0.85, (b, k))
    s["box_h"] = np.where(is_table[..., None], top_h, box_h)
    box_y = np.where(is_table, top_y, s["box_h"][..., 1])
    s["box_c"] = np.stack([x, box_y, z], -1)
    s["box_rot"] = _uniform(rng, 0.0, np.pi, (b, k))
    s["box_on"] = s["present"] & ((cls == BOX) | is_table)
    # Cylinders: plain cylinders, table columns, lamp poles.
    pole_h = _uniform(rng, 1.0, 1.7, (b, k))
    s["cyl_r"] = np.select([cls == CYLINDER, is_table], [_uniform(rng, 0.1, 0.35, (b, k)),
                           _uniform(rng, 0.04, 0.09, (b, k))], _uniform(rng, 0.02, 0.05, (b, k)))
    s["cyl_y1"] = np.select([cls == CYLINDER, is_table],
                            [_uniform(rng, 0.3, 1.6, (b, k)), top_y - s["box_h"][..., 1]], pole_h)
    s["cyl_xz"] = np.stack([x, z], -1)
    s["cyl_on"] = s["present"] & ((cls == CYLINDER) | is_table | (cls == LAMP))
    # Spheres: balls on the floor, lamp shades on top of their pole.
    shade_r, ball_r = _uniform(rng, 0.12, 0.25, (b, k)), _uniform(rng, 0.15, 0.45, (b, k))
    s["sph_r"] = np.where(cls == LAMP, shade_r, ball_r)
    sph_y = np.where(cls == LAMP, pole_h + 0.6 * shade_r, ball_r)
    s["sph_c"] = np.stack([x, sph_y, z], -1)
    s["sph_on"] = s["present"] & ((cls == SPHERE) | (cls == LAMP))
    # Materials: instance 0 floor, 1 walls, 2 ceiling, 3 + j object slot j.
    n_inst = 3 + k
    base = _PALETTE[rng.integers(0, len(_PALETTE), (b, n_inst))]
    col = base * _uniform(rng, 0.7, 1.15, (b, n_inst, 1)) + rng.normal(0, 0.05, (b, n_inst, 3))
    pastel = _uniform(rng, 0.2, 0.75, (b, 2, 1))
    col[:, 1:3] = pastel * col[:, 1:3] + (1 - pastel) * 0.85  # light walls and ceiling
    s["albedo"] = np.clip(col, 0.03, 1.0).astype(np.float32)
    s["tex_amp"] = _uniform(rng, 0.0, 0.25, (b, n_inst))
    s["spec"] = _uniform(rng, 0.0, 0.35, (b, n_inst)) * (rng.random((b, n_inst)) < 0.6)
    s["tex_freq"], s["tex_phase"] = _uniform(rng, 2, 9, (b, 3)), _uniform(rng, 0, 6.3, (b, 3))
    s["tile"] = _uniform(rng, 0.3, 0.8, b) * (rng.random(b) < 0.5)  # 0 = plain floor
    light = np.stack([_uniform(rng, -1, 1, b), _uniform(rng, 0.5, 2.0, b),
                      _uniform(rng, -1, 1, b)], 1)
    s["light"] = light / np.linalg.norm(light, axis=1, keepdims=True)
    s["light_i"], s["ambient"] = _uniform(rng, 0.35, 0.9, b), _uniform(rng, 0.15, 0.45, b)
    s["fill"], s["shiny"] = _uniform(rng, 0.0, 0.35, b), _uniform(rng, 8, 40, b)
    s["tint"] = (1 + rng.normal(0, 0.06, (b, 3))).astype(np.float32)
    s["exposure"], s["vignette"] = _uniform(rng, 0.8, 1.25, b), _uniform(rng, 0.0, 0.35, b)
    s["noise"], s["grain"] = _uniform(rng, 0.005, 0.04, b), _uniform(rng, 0.01, 0.07, b)
    return s


def _camera(s: dict, res: int):
    """Camera axes (b, 3, 3) as rows right/down/forward, and world rays (3, b, P) with z_cam = 1."""
    yaw, pitch, roll = s["yaw"], s["pitch"], s["roll"]
    fwd = np.stack([np.sin(yaw) * np.cos(pitch), np.sin(pitch), np.cos(yaw) * np.cos(pitch)], 1)
    right0 = np.stack([np.cos(yaw), np.zeros_like(yaw), -np.sin(yaw)], 1)
    down0 = np.cross(right0, fwd)
    c, sn = np.cos(roll)[:, None], np.sin(roll)[:, None]
    right, down = c * right0 + sn * down0, c * down0 - sn * right0
    axes = np.stack([right, down, fwd], 1).astype(np.float32)
    focal = 0.5 * res / np.tan(s["fov"] / 2)
    grid = (np.arange(res, dtype=np.float32) + 0.5 - res / 2)
    u = np.broadcast_to(grid[None, :], (res, res)).reshape(-1)
    v = np.broadcast_to(grid[:, None], (res, res)).reshape(-1)
    u, v = u[None] / focal[:, None], v[None] / focal[:, None]  # (b, P)
    rays = u[None] * axes[:, 0].T[:, :, None] + v[None] * axes[:, 1].T[:, :, None]
    rays += axes[:, 2].T[:, :, None]
    return axes, rays.astype(np.float32)


def _div(num, den):
    with np.errstate(divide="ignore", invalid="ignore"):
        return num / den


class _ZBuffer:
    """Nearest hit so far per pixel: depth t, world normal (3, b, P), class, instance."""

    def __init__(self, t, normal, label, inst):
        self.t, self.normal, self.label, self.inst = t, normal, label, inst

    def update(self, idx, t, normal, label, inst):
        old = self.t[idx]
        closer = t < old
        self.t[idx] = np.where(closer, t, old)
        self.normal[:, idx] = np.where(closer[None], normal, self.normal[:, idx])
        self.label[idx] = np.where(closer, label[:, None], self.label[idx])
        self.inst[idx] = np.where(closer, inst, self.inst[idx])


def _room(o, d, room) -> _ZBuffer:
    """Exit point of every ray from the room box: floor, ceiling or a wall."""
    half_w, height, far = room[:, 0:1] / 2, room[:, 1:2], room[:, 2:3]
    tx = _div(np.where(d[0] > 0, half_w, -half_w) - o[0], d[0])
    ty = _div(np.where(d[1] > 0, height, 0.0) - o[1], d[1])
    tz = _div(np.where(d[2] > 0, far, -1.5) - o[2], d[2])
    ts = np.stack([tx, ty, tz])
    ts[~np.isfinite(ts) | (ts <= 0)] = np.inf
    axis = np.argmin(ts, 0)
    t = np.min(ts, 0)
    normal = np.zeros_like(d)
    for a in range(3):
        normal[a] = np.where(axis == a, -np.sign(d[a]), 0.0)
    label = np.where(axis == 1, np.where(d[1] < 0, FLOOR, CEILING), WALL).astype(np.int32)
    inst = np.where(label == FLOOR, 0, np.where(label == CEILING, 2, 1)).astype(np.int32)
    return _ZBuffer(t, normal, label, inst)


def _boxes(o, d, c, h, rot):
    """Entry of rays into boxes rotated about the vertical axis: t (n, P), world normal."""
    cs, sn = np.cos(rot)[:, None], np.sin(rot)[:, None]
    rel = o - c.T[:, :, None]
    o_l = np.stack([cs * rel[0] + sn * rel[2], rel[1], cs * rel[2] - sn * rel[0]])
    d_l = np.stack([cs * d[0] + sn * d[2], d[1], cs * d[2] - sn * d[0]])
    hh = h.T[:, :, None]
    t1, t2 = _div(-hh - o_l, d_l), _div(hh - o_l, d_l)
    near = np.minimum(t1, t2)
    t_near, t_far = near.max(0), np.maximum(t1, t2).min(0)
    axis = near.argmax(0)
    t = np.where((t_near <= t_far) & (t_near > _EPS), t_near, np.inf)
    n_l = [np.where(axis == a, -np.sign(d_l[a]), 0.0) for a in range(3)]
    normal = np.stack([cs * n_l[0] - sn * n_l[2], n_l[1], sn * n_l[0] + cs * n_l[2]])
    return t.astype(np.float32), normal.astype(np.float32)


def _spheres(o, d, dd, c, r):
    rel = o - c.T[:, :, None]
    half_b = d[0] * rel[0] + d[1] * rel[1] + d[2] * rel[2]
    cq = (rel ** 2).sum(0) - (r ** 2)[:, None]
    disc = half_b ** 2 - dd * cq
    t = _div(-half_b - np.sqrt(np.maximum(disc, 0)), dd)
    t = np.where((disc > 0) & (t > _EPS), t, np.inf)
    hit = np.where(np.isfinite(t), t, 0.0)
    normal = (rel + hit * d) / r[:, None]
    return t.astype(np.float32), normal.astype(np.float32)


def _cylinders(o, d, xz, r, y1):
    """Vertical cylinders standing on the floor: side wall and top cap."""
    rx, rz = o[0] - xz[:, 0:1], o[2] - xz[:, 1:2]
    a = d[0] ** 2 + d[2] ** 2
    half_b = d[0] * rx + d[2] * rz
    disc = half_b ** 2 - a * (rx ** 2 + rz ** 2 - (r ** 2)[:, None])
    t_side = _div(-half_b - np.sqrt(np.maximum(disc, 0)), a)
    y = o[1] + t_side * d[1]
    t_side = np.where((disc > 0) & (t_side > _EPS) & (y >= 0) & (y <= y1[:, None]),
                      t_side, np.inf)
    t_cap = _div(y1[:, None] - o[1], d[1])
    cap_x, cap_z = rx + t_cap * d[0], rz + t_cap * d[2]
    on_cap = (t_cap > _EPS) & (cap_x ** 2 + cap_z ** 2 <= (r ** 2)[:, None]) & (o[1] > y1[:, None])
    t_cap = np.where(on_cap, t_cap, np.inf)
    side = t_side <= t_cap
    hit = np.where(np.isfinite(t_side), t_side, 0.0)
    inv_r = 1.0 / r[:, None]
    normal = np.stack([np.where(side, (rx + hit * d[0]) * inv_r, 0.0),
                       np.where(side, 0.0, 1.0),
                       np.where(side, (rz + hit * d[2]) * inv_r, 0.0)])
    return np.minimum(t_side, t_cap).astype(np.float32), normal.astype(np.float32)


def _intersect(s: dict, o: np.ndarray, d: np.ndarray) -> _ZBuffer:
    zb = _room(o, d, s["room"])
    dd = (d ** 2).sum(0)
    for j in range(MAX_OBJECTS):
        cls = s["cls"][:, j]
        for key, hit_fn in (("box", _boxes), ("sph", _spheres), ("cyl", _cylinders)):
            idx = np.flatnonzero(s[key + "_on"][:, j])
            if idx.size == 0:
                continue
            oi, di = o[:, idx], d[:, idx]
            if key == "box":
                t, n = hit_fn(oi, di, s["box_c"][idx, j], s["box_h"][idx, j], s["box_rot"][idx, j])
            elif key == "sph":
                t, n = hit_fn(oi, di, dd[idx], s["sph_c"][idx, j], s["sph_r"][idx, j])
            else:
                t, n = hit_fn(oi, di, s["cyl_xz"][idx, j], s["cyl_r"][idx, j], s["cyl_y1"][idx, j])
            zb.update(idx, t, n, cls[idx], np.int32(3 + j))
    return zb


def _shade(s: dict, zb: _ZBuffer, o, d, rng, res: int) -> np.ndarray:
    """Lit, textured, noisy RGB (b, P, 3) from the z-buffer."""
    b = o.shape[1]
    rows = np.arange(b)[:, None]
    n, t = zb.normal, zb.t
    p = o + t * d
    albedo = s["albedo"][rows, zb.inst]  # (b, P, 3)
    f, ph = s["tex_freq"].T[:, :, None], s["tex_phase"].T[:, :, None]
    pattern = np.sin(f[0] * p[0] + ph[0]) * np.sin(f[1] * p[1] + ph[1])
    pattern *= np.sin(f[2] * p[2] + ph[2])
    tile = np.maximum(s["tile"], 1e-3)[:, None]
    checker = (np.floor(p[0] / tile) + np.floor(p[2] / tile)) % 2 - 0.5
    checker *= (zb.label == FLOOR) & (s["tile"] > 0)[:, None]
    grain = rng.standard_normal(t.shape, dtype=np.float32) * s["grain"][:, None]
    texture = 1 + s["tex_amp"][rows, zb.inst] * pattern + 0.25 * checker + grain
    view = d / np.sqrt((d ** 2).sum(0))
    light = s["light"].T[:, :, None]
    diffuse = np.maximum((n * light).sum(0), 0.0)
    fill = s["fill"][:, None] * np.maximum(-(n * view).sum(0), 0.0) / (1 + 0.05 * t ** 2)
    half = light - view
    half /= np.sqrt((half ** 2).sum(0)) + 1e-8
    spec = s["spec"][rows, zb.inst] * np.maximum((n * half).sum(0), 0.0) ** s["shiny"][:, None]
    irradiance = s["ambient"][:, None] + s["light_i"][:, None] * diffuse + fill
    rgb = (albedo * (texture * irradiance)[..., None] + spec[..., None]) * s["tint"][:, None]
    grid = (np.arange(res, dtype=np.float32) + 0.5) / res - 0.5
    r2 = (grid[None, :] ** 2 + grid[:, None] ** 2).reshape(1, -1) * 2
    rgb *= (s["exposure"][:, None] * (1 - s["vignette"][:, None] * r2))[..., None]
    rgb += rng.standard_normal(rgb.shape, dtype=np.float32) * s["noise"][:, None, None]
    return np.clip(rgb, 0.0, 1.0).astype(np.float32)


def _render(s: dict, res: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    b = len(s["yaw"])
    axes, d = _camera(s, res)
    o = s["cam"].T[:, :, None].astype(np.float32)
    zb = _intersect(s, o, d)
    n_world = zb.normal / np.sqrt((zb.normal ** 2).sum(0, keepdims=True))
    zb.normal = n_world.astype(np.float32)
    image = _shade(s, zb, o, d, rng, res)
    n_cam = np.einsum("bij,jbp->bpi", axes, zb.normal)
    n_cam /= np.linalg.norm(n_cam, axis=-1, keepdims=True)
    return {"image": image.reshape(b, res, res, 3),
            "segmentation": zb.label.reshape(b, res, res).astype(np.int32),
            "depth": zb.t.reshape(b, res, res, 1).astype(np.float32),
            "normals": n_cam.reshape(b, res, res, 3).astype(np.float32)}


def generate(n: int, resolution: int = 64, seed: int = 0, *,
             object_class=None) -> dict[str, np.ndarray]:
    """Render `n` scenes; same (n, resolution, seed) gives identical arrays.

    Returns a dict with "image" (n, H, W, 3) float32 in [0, 1], "segmentation" (n, H, W)
    int32 ids into `CLASS_NAMES`, "depth" (n, H, W, 1) float32 metres > 0, and "normals"
    (n, H, W, 3) float32 unit vectors in the camera frame (x right, y down, z forward).

    `object_class`: optional (n,) ids from `OBJECT_CLASSES`; all objects of scene i are
    then of class `object_class[i]` (used for scene-level labels).
    """
    n, res = check_count(n), check_resolution(resolution)
    if object_class is not None:
        object_class = np.asarray(object_class, np.int32).reshape(-1)
        if len(object_class) != n or not np.isin(object_class, OBJECT_CLASSES).all():
            raise ValueError(f"object_class must hold {n} ids from OBJECT_CLASSES "
                             f"{OBJECT_CLASSES}, got {object_class!r}")
    parts = []
    for chunk, start in enumerate(range(0, n, _CHUNK)):
        rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, chunk])
        forced = None if object_class is None else object_class[start:start + _CHUNK]
        scenes = _sample_scenes(rng, min(_CHUNK, n - start), forced)
        parts.append(_render(scenes, res, rng))
    if not parts:
        return {"image": np.zeros((0, res, res, 3), np.float32),
                "segmentation": np.zeros((0, res, res), np.int32),
                "depth": np.zeros((0, res, res, 1), np.float32),
                "normals": np.zeros((0, res, res, 3), np.float32)}
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def load(split: str = "train", n: int | None = None, batch_size: int = 32,
         resolution: int = 64, seed: int = 0, shuffle: bool = True):
    """Batched `tf.data.Dataset` of `({"image"}, {"segmentation", "depth", "normals"})`.

    Train and test scenes come from different random streams of `seed`. `n` defaults to
    `DEFAULT_SIZES[split]` (2,000 train, 500 test).
    """
    check_split(split)
    n = DEFAULT_SIZES[split] if n is None else n
    data = generate(n, resolution, split_seed(seed, split))
    return to_dataset({"image": data["image"]}, {k: data[k] for k in TASK_NAMES},
                      batch_size, shuffle, seed)


def tasks() -> list:
    """Task specs of this dataset: 8-class segmentation, depth, normals."""
    from tfmot_mtl import tasks as T

    return [T.segmentation("segmentation", len(CLASS_NAMES), class_names=CLASS_NAMES),
            T.depth("depth"), T.normals("normals")]
