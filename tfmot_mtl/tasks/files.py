"""Task specs from a JSON file (the CLI's ``--tasks FILE.json``) or from plain Python data.

Two layouts are accepted, each entry being a :meth:`Task.get_config` dict
(``name`` may be left out in the mapping form, where the key names the output)::

    [{"name": "seg", "kind": "segmentation", "output_channels": 13},
     {"name": "cls", "kind": "classification", "output_channels": 5}]

    {"seg": {"kind": "segmentation", "output_channels": 13},
     "cls": {"kind": "classification", "output_channels": 5}}
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

from tfmot_mtl.tasks.specs import KINDS, Task

EXAMPLE = '[{"name": "seg", "kind": "segmentation", "output_channels": 13}]'
_FIELDS = ("name", "kind", "output_channels", "class_names", "ignore_index", "metrics", "loss")


def load_tasks(path: str | os.PathLike) -> list[Task]:
    """The tasks listed in a JSON file (see the module docstring for the layout).

    Raises:
        ValueError: the file is missing, is not JSON, or an entry is not a valid Task config;
            the message names the file and the entry.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ValueError(f"task file {str(path)!r} does not exist; expected a JSON list of task "
                         f"configs such as {EXAMPLE}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"task file {str(path)!r} is not valid JSON ({err})") from None
    return parse_tasks(data, source=f"task file {str(path)!r}")


def parse_tasks(data: Any, source: str = "tasks") -> list[Task]:
    """Tasks from a list of Task configs / Task objects or an ``{output name: config}`` mapping.

    ``source`` names where ``data`` came from in error messages.
    """
    if isinstance(data, Mapping):
        entries = [(f"entry {key!r}", _named(key, cfg, source)) for key, cfg in data.items()]
    elif isinstance(data, (list, tuple)):
        entries = [(f"entry {i}", cfg) for i, cfg in enumerate(data)]
    else:
        raise ValueError(f"{source} must hold a list of task configs or an {{output name: config}} "
                         f"object, got {type(data).__name__}; e.g. {EXAMPLE}")
    if not entries:
        raise ValueError(f"{source} lists no tasks; e.g. {EXAMPLE}")
    tasks = [_task(label, cfg, source) for label, cfg in entries]
    names = [t.name for t in tasks]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"{source} names the tasks {duplicates} more than once")
    return tasks


def _named(key: Any, config: Any, source: str) -> Any:
    if isinstance(config, Task):
        return config
    if not isinstance(config, Mapping):
        return config
    name = config.get("name", key)
    if name != key:
        raise ValueError(f"{source}, entry {key!r}: its name {name!r} differs from its key")
    return {**config, "name": key}


def _task(label: str, config: Any, source: str) -> Task:
    """One entry as a Task, or a ValueError naming the source and the entry."""
    if isinstance(config, Task):
        return config
    where = f"{source}, {label}"
    if not isinstance(config, Mapping):
        raise ValueError(f"{where}: expected an object like {EXAMPLE[1:-1]}, got {config!r}")
    unknown = sorted(set(config) - set(_FIELDS))
    if unknown:
        raise ValueError(f"{where}: unknown fields {unknown}; a task has {list(_FIELDS)}")
    fixed = {"depth": 1, "normals": 3}.get(config.get("kind"))
    if fixed is not None:
        config = {"output_channels": fixed, **config}
    missing = [f for f in ("name", "kind", "output_channels") if f not in config]
    if missing:
        raise ValueError(f"{where}: missing {missing} (kind one of {list(KINDS)})")
    try:
        return Task.from_config(config)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: {err}") from None
