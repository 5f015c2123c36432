"""Values made JSON-able: numpy scalars and arrays to Python numbers and lists, tuples and sets to lists."""
from __future__ import annotations

from typing import Any

import numpy as np


def jsonable(obj: Any) -> Any:
    """``obj`` with numpy scalars / arrays turned into Python numbers / lists, tuples and sets into
    lists and dict keys into strings, recursively (for ``json.dumps``)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    return obj
