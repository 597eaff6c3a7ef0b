"""Plain Python values for metadata and JSON: the one converter every product uses."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import astropy.units as u
import numpy as np
from astropy.time import Time


def to_plain(obj: Any, nan_as_none: bool = False) -> Any:
    """``obj`` with numpy scalars/arrays, paths, quantities and times made plain Python.

    Containers are converted recursively; anything unknown becomes its ``str``.

    Parameters
    ----------
    obj : object
        The value: dicts (keys become ``str``), lists and tuples (become lists), numpy
        arrays and scalars, paths, quantities (their values), times (ISO strings), None,
        strings, or anything else (its ``str``).
    nan_as_none : bool
        Turn non-finite floats into ``None`` (strict JSON has no NaN).

    Returns
    -------
    object
        Plain Python: dict, list, bool, int, float, str or None.
    """
    if isinstance(obj, dict):
        return {str(k): to_plain(v, nan_as_none) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v, nan_as_none) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_plain(obj.tolist(), nan_as_none)
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return None if nan_as_none and not np.isfinite(v) else v
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, u.Quantity):
        return to_plain(obj.value if obj.isscalar else obj.value.tolist(), nan_as_none)
    if isinstance(obj, Time):
        return obj.isot
    if obj is None or isinstance(obj, str):
        return obj
    return str(obj)
