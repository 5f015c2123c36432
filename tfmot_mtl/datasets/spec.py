"""Datasets named by one string (the CLI's ``--data SPEC``): embedded, local folders, TFDS, user code.

Accepted forms of ``spec`` (:data:`FORMS`):

- ``synthetic_scenes``, ``multi_digits``: the embedded datasets, generated at the height and
  width of ``input_shape`` (64 x 64 without one). A non-square size is generated square at
  the longer side and resized: the image bilinear, every per-pixel target nearest (class ids,
  depths and unit normals stay exact values), image-level labels unchanged;
- ``nyuv2:PATH``, ``celebamask_hq:PATH``, ``visual_decathlon:PATH[:DOMAIN]``: the local-folder
  loaders of :mod:`tfmot_mtl.datasets` (images resized to ``input_shape`` when given; NYU-v2
  tests on its ``val`` split, Visual Decathlon on ``val``; DOMAIN may be left out when the
  folder holds one domain);
- a tensorflow-datasets name (``name[/config][:version]``) with ``data_dir``: read with
  ``tfds.load(name, data_dir=data_dir, download=False)``; the dataset's supervised keys must
  already give ``(inputs, {output: target})`` pairs;
- ``package.module:function``: imported (the working directory is searched too) and called
  with the keyword arguments it accepts among ``input_shape``, ``batch_size`` and ``seed``;
  it returns ``(train, test)`` or ``(train, test, tasks)``, each split a ``tf.data.Dataset``
  of ``(inputs, {output: target})`` (batched here when it is not) or numpy ``(x, {output: y})``
  arrays (batched here, the training split shuffled), tasks as Task objects or configs
  (:func:`tfmot_mtl.tasks.files.parse_tasks`).

``n_train`` / ``n_test`` cap the examples of a split: the embedded generators make that many,
other sources take the first that many of each pass (of a shuffled split: a new draw per epoch).
"""
from __future__ import annotations

import importlib
import inspect
import os
import re
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

EMBEDDED = ("synthetic_scenes", "multi_digits")
LOCAL = ("nyuv2", "celebamask_hq", "visual_decathlon")
FORMS = ("an embedded dataset (synthetic_scenes, multi_digits), nyuv2:PATH, celebamask_hq:PATH, "
         "visual_decathlon:PATH[:DOMAIN], a TFDS dataset name with a data directory (--data-dir), "
         "or package.module:function returning (train, test[, tasks])")
DEFAULT_SIDE = 64
VALIDATION_SEED_OFFSET = 7919
_TFDS_NAME = re.compile(r"^[A-Za-z][\w-]*(/[\w.-]+)?(:[\d.*]+)?$")
_MODULE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


def load_spec(spec: str, *, data_dir: str | os.PathLike | None = None, input_shape: Sequence | None = None,
              batch_size: int = 32, n_train: int | None = None, n_test: int | None = None,
              seed: int = 0) -> tuple[Any, Any, list | None]:
    """``(train, test, tasks or None)`` for a data spec (see the module docstring for the forms).

    Args:
        spec: the dataset, in one of :data:`FORMS`.
        data_dir: the tensorflow-datasets data directory (TFDS names only).
        input_shape: the model's per-example input shape ``(height, width[, channels])``;
            sets the size of the embedded and local-folder images.
        batch_size, n_train, n_test, seed: batching, split sizes and shuffling seed.

    Raises:
        ValueError: an unknown form or name, a missing folder, a function that cannot be
            imported or returns something else; one line naming the spec.
    """
    kind, target = parse_spec(spec, data_dir)
    options = dict(input_shape=input_shape, batch_size=_check_batch(batch_size), n_train=n_train,
                   n_test=n_test, seed=seed)
    if kind == "embedded":
        return _embedded(target, **options)
    if kind == "local":
        return _local(spec, *target, **options)
    if kind == "tfds":
        return _tfds(target, data_dir, **options)
    return _function(spec, *target, **options)


def parse_spec(spec: Any, data_dir: Any = None) -> tuple[str, Any]:
    """The form of a spec: ("embedded", name), ("local", (loader, path)), ("tfds", name) or
    ("function", (module, function)); ValueError listing the accepted forms otherwise."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"data spec {spec!r} is empty; accepted forms: {FORMS}")
    spec = spec.strip()
    if spec in EMBEDDED:
        return "embedded", spec
    head, colon, rest = spec.partition(":")
    if head in LOCAL:
        if not rest.strip():
            raise ValueError(f"{head} reads a local folder: write {head}:PATH (got {spec!r})")
        return "local", (head, rest)
    if colon and _MODULE.match(head) and rest.isidentifier():
        return "function", (head, rest)
    if _TFDS_NAME.match(spec):
        if data_dir is not None:
            return "tfds", spec
        raise ValueError(f"unknown dataset {spec!r}: the embedded datasets are {list(EMBEDDED)}; a "
                         f"tensorflow-datasets name needs its data directory (--data-dir); other forms: "
                         f"{', '.join(f'{n}:PATH' for n in LOCAL)}, package.module:function")
    raise ValueError(f"data spec {spec!r} is not one of the accepted forms: {FORMS}")


def embedded_tasks(spec: str) -> list | None:
    """The tasks of an embedded dataset's spec (without generating it); None for other forms."""
    return _module(spec).tasks() if spec in EMBEDDED else None


def load_embedded(name: str, split: str, n: int | None = None, *, input_shape: Sequence | None = None,
                  batch_size: int = 32, seed: int = 0, shuffle: bool = True):
    """One split of an embedded dataset at the height and width of ``input_shape``."""
    if name not in EMBEDDED:
        raise ValueError(f"unknown embedded dataset {name!r}; choose one of {list(EMBEDDED)}")
    height, width = _height_width(input_shape) or (DEFAULT_SIDE, DEFAULT_SIDE)
    side = max(height, width, 8)
    ds = _module(name).load(split, n=n, batch_size=batch_size, resolution=side, seed=seed,
                                      shuffle=shuffle)
    return ds if (height, width) == (side, side) else resize_batches(ds, (height, width))


def resize_batches(dataset, size: tuple[int, int]):
    """Batches of ``(inputs, targets)`` at ``size``: float images bilinear, every other tensor
    with spatial axes (per-pixel targets, integer images) nearest; per-image tensors unchanged."""
    import tensorflow as tf

    def one(t, bilinear):
        if t.shape.rank == 3:
            return tf.image.resize(t[..., None], size, "nearest")[..., 0]
        if t.shape.rank != 4:
            return t
        method = "bilinear" if bilinear and t.dtype.is_floating else "nearest"
        return tf.cast(tf.image.resize(t, size, method), t.dtype)

    def resize(x, y, *rest):
        x = tf.nest.map_structure(lambda t: one(t, True) if t.shape.rank == 4 else t, x)
        return (x, tf.nest.map_structure(lambda t: one(t, False), y), *rest)

    return dataset.map(resize, num_parallel_calls=tf.data.AUTOTUNE)


def _check_batch(batch_size: Any) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    return batch_size


def _height_width(input_shape: Sequence | None) -> tuple[int, int] | None:
    """(height, width) of a per-example shape (h, w[, c]); None when unknown."""
    if input_shape is None or len(input_shape) < 2:
        return None
    height, width = input_shape[0], input_shape[1]
    if height is None or width is None:
        return None
    return int(height), int(width)


def _limit(dataset, n: int | None, batch_size: int):
    """At most ``n`` examples per pass of a batched dataset (re-batched to ``batch_size``)."""
    if n is None:
        return dataset
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n_train / n_test must be positive ints, got {n!r}")
    return dataset.unbatch().take(n).batch(batch_size)


# --------------------------------------------------------------------------- embedded


def _module(name: str):
    """The module of an embedded dataset (imported by name: the package imports this module)."""
    return importlib.import_module(f"tfmot_mtl.datasets.{name}")


def _embedded(name, *, input_shape, batch_size, n_train, n_test, seed):
    common = dict(input_shape=input_shape, batch_size=batch_size, seed=seed)
    train = load_embedded(name, "train", n_train, **common)
    test = load_embedded(name, "test", n_test, shuffle=False, **common)
    return train, test, _module(name).tasks()


# --------------------------------------------------------------------------- local folders


def _local(spec, loader, path, *, input_shape, batch_size, n_train, n_test, seed):
    size = _height_width(input_shape)
    reader = {"nyuv2": _nyuv2, "celebamask_hq": _celebamask_hq, "visual_decathlon": _decathlon}[loader]
    try:
        if loader != "visual_decathlon" and not Path(path).expanduser().is_dir():
            raise FileNotFoundError(f"folder {path!r} does not exist")
        train, test, tasks = reader(path, size, batch_size, seed)
    except FileNotFoundError as err:
        raise ValueError(f"{spec}: {err}") from None
    return _limit(train, n_train, batch_size), _limit(test, n_test, batch_size), tasks


def _nyuv2(path, size, batch_size, seed):
    from tfmot_mtl.datasets.nyuv2 import load_nyuv2, nyuv2_tasks

    common = dict(batch_size=batch_size, resolution=size, seed=seed)
    return (load_nyuv2(path, "train", **common), load_nyuv2(path, "val", shuffle=False, **common),
            nyuv2_tasks())


def _celebamask_hq(path, size, batch_size, seed):
    from tfmot_mtl import tasks as T
    from tfmot_mtl.datasets import celebamask_hq as C

    common = dict(batch_size=batch_size, resolution=size or DEFAULT_SIDE, seed=seed)
    names = C.read_attributes(Path(path).expanduser() / C.ATTRIBUTE_FILE)[0]
    segmentation = C.celebamask_hq_tasks()[0]
    return (C.load_celebamask_hq(path, "train", **common), C.load_celebamask_hq(path, "test", shuffle=False, **common),
            [segmentation, T.binary("attributes", len(names), names)])


def _decathlon(path, size, batch_size, seed):
    from tfmot_mtl.datasets import visual_decathlon as V

    root, domain = _decathlon_root(path)
    found = dict(V.visual_decathlon_domains(root))
    if domain is None and len(found) != 1:
        raise FileNotFoundError(f"{root!r} holds the domains {sorted(found)}: name one as "
                                f"visual_decathlon:{root}:DOMAIN")
    domain = domain or next(iter(found))
    if domain not in found:
        raise FileNotFoundError(f"no domain {domain!r} in {root!r}; its domains are {sorted(found)}")
    common = dict(batch_size=batch_size, resolution=size or DEFAULT_SIDE, seed=seed)
    return (V.load_visual_decathlon(root, domain, "train", **common),
            V.load_visual_decathlon(root, domain, "val", shuffle=False, **common),
            V.visual_decathlon_tasks(root, [domain]))


def _decathlon_root(path: str) -> tuple[str, str | None]:
    """(folder, domain or None) of ``PATH`` or ``PATH:DOMAIN``; FileNotFoundError naming the folder."""
    if Path(path).expanduser().is_dir():
        return path, None
    root, colon, domain = path.rpartition(":")
    if colon and domain and Path(root).expanduser().is_dir():
        return root, domain
    raise FileNotFoundError(f"folder {path!r} does not exist")


# --------------------------------------------------------------------------- tensorflow-datasets


def _tfds(name, data_dir, *, input_shape, batch_size, n_train, n_test, seed):
    import tensorflow_datasets as tfds

    import tfmot_mtl.datasets.tfds_builders  # noqa: F401  registers the embedded builders

    try:
        builder = tfds.builder(name, data_dir=os.fspath(data_dir))
    except Exception as err:  # tfds raises its own DatasetNotFoundError / registry errors
        raise ValueError(f"TFDS dataset {name!r} not found: {_first_line(err)}") from None
    keys = builder.info.supervised_keys
    if not (isinstance(keys, tuple) and len(keys) == 2 and isinstance(keys[1], Mapping)):
        raise ValueError(f"TFDS dataset {name!r} does not yield (inputs, {{output: target}}) pairs "
                         f"(its supervised keys are {keys!r}): write a function that maps it and pass "
                         f"--data package.module:function")
    splits = list(builder.info.splits)
    if not splits:
        raise ValueError(f"TFDS dataset {name!r} is not prepared in {os.fspath(data_dir)!r} (nothing is "
                         f"downloaded: run its download_and_prepare with this data_dir first)")
    test_split = next((s for s in ("test", "validation") if s in splits), None)
    if "train" not in splits or test_split is None:
        raise ValueError(f"TFDS dataset {name!r} needs a 'train' and a 'test' (or 'validation') split, "
                         f"it has {splits}")
    try:
        train, test = tfds.load(name, split=["train", test_split], data_dir=os.fspath(data_dir),
                                download=False, as_supervised=True)
    except Exception as err:  # not prepared in data_dir: tfds raises AssertionError / its own errors
        raise ValueError(f"TFDS dataset {name!r} is not prepared in {os.fspath(data_dir)!r}: "
                         f"{_first_line(err)}") from None
    return (_batch(_take(train, n_train).shuffle(1024, seed=seed), batch_size),
            _batch(_take(test, n_test), batch_size), None)


def _take(dataset, n):
    return dataset if n is None else dataset.take(n)


def _batch(dataset, batch_size):
    import tensorflow as tf

    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


# --------------------------------------------------------------------------- package.module:function


def _function(spec, module_name, function_name, *, input_shape, batch_size, n_train, n_test, seed):
    from tfmot_mtl.tasks.files import parse_tasks

    fn = _import(spec, module_name, function_name)
    offered = {"input_shape": tuple(input_shape) if input_shape is not None else None,
               "batch_size": batch_size, "seed": seed}
    try:
        result = fn(**_accepted(fn, offered))
    except Exception as err:
        raise ValueError(f"{spec} raised {type(err).__name__}: {_first_line(err)}") from None
    if not isinstance(result, (tuple, list)) or len(result) not in (2, 3):
        raise ValueError(f"{spec} must return (train, test) or (train, test, tasks), "
                         f"got {type(result).__name__}")
    train = _as_dataset(spec, "train", result[0], batch_size, seed, n_train)
    test = _as_dataset(spec, "test", result[1], batch_size, None, n_test)
    tasks = result[2] if len(result) == 3 else None
    return train, test, (parse_tasks(tasks, source=f"the tasks {spec} returned") if tasks is not None else None)


def _import(spec: str, module_name: str, function_name: str):
    added = os.getcwd() not in sys.path
    if added:
        sys.path.append(os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"{spec}: cannot import module {module_name!r} ({err}); it must be importable "
                         f"from the working directory or the Python path") from None
    finally:
        if added:
            sys.path.remove(os.getcwd())
    fn = getattr(module, function_name, None)
    if not callable(fn):
        raise ValueError(f"{spec}: module {module_name!r} has no function {function_name!r}")
    return fn


def _accepted(fn, offered: Mapping[str, Any]) -> dict[str, Any]:
    """The offered keyword arguments (those not None) that ``fn`` accepts."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return {}
    any_kw = any(p.kind == p.VAR_KEYWORD for p in params.values())
    named = {n for n, p in params.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    return {k: v for k, v in offered.items() if v is not None and (any_kw or k in named)}


def _as_dataset(spec, split, obj, batch_size, seed, n):
    """A returned split as a batched dataset: a tf.data.Dataset as it is, numpy pairs batched."""
    import numpy as np
    import tensorflow as tf

    if isinstance(obj, tf.data.Dataset):
        from tfmot_mtl.tasks.data import as_dataset

        return _limit(as_dataset(obj, batch_size), n, batch_size)
    if isinstance(obj, (tuple, list)) and len(obj) == 2 and isinstance(obj[1], Mapping):
        x, y = obj
        x = {k: np.asarray(v) for k, v in x.items()} if isinstance(x, Mapping) else np.asarray(x)
        y = {k: np.asarray(v) for k, v in y.items()}
        if not y:
            raise ValueError(f"{spec}: its {split} targets are an empty dict")
        if n is not None:
            x = tf.nest.map_structure(lambda a: a[:n], x)
            y = {k: v[:n] for k, v in y.items()}
        ds = tf.data.Dataset.from_tensor_slices((x, y))
        if seed is not None:
            ds = ds.shuffle(len(next(iter(y.values()))), seed=seed, reshuffle_each_iteration=True)
        return _batch(ds, batch_size)
    raise ValueError(f"{spec}: its {split} split must be a tf.data.Dataset or numpy (x, {{output: y}}) "
                     f"arrays, got {type(obj).__name__}")
