"""Reading a campaign file's values: errors that name the file, the key and the line, and
the readers of one value each (numbers with units, paths, names, angles, weather).

Values with units may be written as numbers in the unit the key names
(``offset_arcsec = [0.35, -0.12]``) or as strings with a unit
(``offset_arcsec = ["350 mas", "-0.12 arcsec"]``), converted with astropy. Every reader
takes the :class:`Context` of the file and the dotted key (``lab[0].exposures[2].file``)
and raises the :class:`~astrocal.campaign.schema.CampaignError` its :meth:`Context.error`
builds.
"""
from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Collection, Sequence

import astropy.units as u
import numpy as np
from astropy.coordinates import Angle

from .schema import CampaignError


class Context:
    """The file being read and its text, to name keys and lines in errors.

    Parameters
    ----------
    path : Path
        The campaign file.
    text : str
        Its text.
    """

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()

    def line_of(self, dotted: str) -> int | None:
        """Best line number for a dotted key like ``lab[0].exposures[2].file``.

        Parameters
        ----------
        dotted : str
            The key, with list indices.

        Returns
        -------
        int or None
            The line (1-based), None where the key is not found.
        """
        parts = [p for p in re.split(r"[.\[\]]", dotted) if p and not p.isdigit()]
        if not parts:
            return None
        last = parts[-1]
        pattern = re.compile(rf"(^|[\s{{,]){re.escape(last)}\s*=")
        section = re.compile(rf"^\s*\[\[?\s*{re.escape(last)}\s*\]\]?")
        # the n-th occurrence for list indices of the first table array
        index = re.search(r"\[(\d+)\]", dotted)
        hits = [i + 1 for i, line in enumerate(self.lines) if pattern.search(line) or section.search(line)]
        if not hits:
            return None
        if index and len(parts) > 1:
            # for ``lab[1].mask``, find the mask key after the 2nd [[lab]] header (and for
            # ``lms.frames[1].file`` after the 2nd [[lms.frames]] header)
            top = dotted.split("[")[0]
            inner = [p for p in re.split(r"[.\[\]]", dotted[len(top):]) if p and not p.isdigit()]
            headers = [i + 1 for i, line in enumerate(self.lines)
                       if re.match(rf"^\s*\[\[\s*{re.escape(top)}\s*\]\]", line)]
            k = int(index.group(1))
            if k < len(headers):
                start = headers[k]
                end = headers[k + 1] if k + 1 < len(headers) else len(self.lines) + 1
                inside = [h for h in hits if start <= h < end]
                if inside and len(inner) > 1:
                    # a key of a table inside the dataset (``sky[0].site.name``): on the line of
                    # ``site = { ... }`` or after a ``[sky.site]`` header, not the dataset's own ``name``
                    parent = re.escape(parts[-2])
                    inline = re.compile(rf"(^|[\s{{,]){parent}\s*=\s*\{{")
                    header = re.compile(rf"^\s*\[\s*{re.escape(top)}\s*\.\s*{parent}\s*\]")
                    preferred = [h for h in inside if inline.search(self.lines[h - 1])]
                    subs = [i + 1 for i in range(start - 1, end - 1) if header.match(self.lines[i])]
                    if not preferred and subs:
                        preferred = [h for h in inside if h > subs[0]]
                    inside = preferred or inside
                if inside:
                    sub = re.findall(r"\[(\d+)\]", dotted)
                    if len(sub) > 1 and len(inside) > int(sub[1]):
                        return inside[int(sub[1])]
                    return inside[0]
                return start
        return hits[0]

    def error(self, key: str, message: str, at: str | None = None) -> CampaignError:
        """A CampaignError naming the file, ``key`` and the line of ``at``.

        Parameters
        ----------
        key : str
            The dotted key named.
        message : str
            What is wrong.
        at : str, optional
            The key whose line is given (default ``key``; a missing key is reported at the line
            of its table).

        Returns
        -------
        CampaignError
            The error, to raise.
        """
        line = self.line_of(at or key)
        where = f"{self.path}" + (f", line {line}" if line else "")
        return CampaignError(f"{where}: key '{key}': {message}")


def check_keys(ctx: Context, table: dict, allowed: Collection[str], prefix: str) -> None:
    """Refuse a key of ``table`` not in ``allowed`` (suggesting the closest allowed keys).

    Parameters
    ----------
    ctx : Context
        The file being read (named in errors).
    table : dict
        A TOML table.
    allowed : collection of str
        Its allowed keys.
    prefix : str
        The table's dotted key with a trailing dot (``"lab[0]."``), for the error.
    """
    for key in table:
        if key not in allowed:
            close = difflib.get_close_matches(key, sorted(allowed), n=2, cutoff=0.6)
            hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
            raise ctx.error(f"{prefix}{key}", f"unknown key{hint}; allowed: {', '.join(sorted(allowed))}")


def require(ctx: Context, table: dict, key: str, prefix: str) -> Any:
    """The value of a required key.

    Parameters
    ----------
    ctx : Context
        The file being read (named in errors).
    table : dict
        A TOML table.
    key : str
        The key.
    prefix : str
        The table's dotted key with a trailing dot, for the error.

    Returns
    -------
    object
        The value as read from the TOML.
    """
    if key not in table:
        raise ctx.error(f"{prefix}{key}", "missing required key")
    return table[key]


def quantity(ctx: Context, value: Any, unit: u.UnitBase, key: str) -> float:
    """A number in ``unit``, from a number or a string with a unit (converted with astropy).

    Parameters
    ----------
    ctx : Context
        The file being read (named in errors).
    value : object
        A number (in ``unit``) or a string with a unit (``"350 mas"``).
    unit : astropy.units.UnitBase
        The unit the key names.
    key : str
        The dotted key, for errors.

    Returns
    -------
    float
        The finite value in ``unit``.
    """
    if isinstance(value, bool):
        raise ctx.error(key, f"expected a number in {unit}, got {value!r}")
    if isinstance(value, (int, float)):
        out = float(value)
    elif isinstance(value, str):
        try:
            q = u.Quantity(value)
        except (TypeError, ValueError):
            raise ctx.error(key, f"cannot read {value!r} as a quantity in {unit}") from None
        try:
            out = float(q.to_value(unit))
        except u.UnitConversionError:
            raise ctx.error(key, f"wrong unit: {value!r} cannot be converted to {unit}") from None
    else:
        raise ctx.error(key, f"expected a number in {unit} (or a string with a unit), got {value!r}")
    if not np.isfinite(out):  # TOML has nan and inf; no key of a campaign takes them
        raise ctx.error(key, f"expected a finite number in {unit}, got {value!r}")
    return out


def pair(ctx: Context, value: Any, unit: u.UnitBase, key: str) -> tuple[float, float]:
    """A pair ``[x, y]`` of numbers in ``unit`` (each read by :func:`quantity`).

    Parameters
    ----------
    ctx : Context
        The file being read (named in errors).
    value : object
        The TOML value.
    unit : astropy.units.UnitBase
        The unit the key names.
    key : str
        The dotted key, for errors.

    Returns
    -------
    tuple of float
        ``(x, y)`` in ``unit``.
    """
    if not isinstance(value, list) or len(value) != 2:
        raise ctx.error(key, f"expected a pair [x, y] in {unit}, got {value!r}")
    return tuple(quantity(ctx, v, unit, f"{key}") for v in value)


def existing(ctx: Context, base: Path, value: Any, key: str, kind: str = "file") -> Path:
    """An existing path, absolute or relative to ``base``.

    Parameters
    ----------
    ctx : Context
        The file being read (named in errors).
    base : Path
        The campaign file's directory.
    value : object
        The path as written.
    key : str
        The dotted key, for errors.
    kind : str
        What the path names, for the error (``"file"``).

    Returns
    -------
    Path
        The resolved path.
    """
    if not isinstance(value, str) or not value:
        raise ctx.error(key, f"expected a path string, got {value!r}")
    path = (base / value).resolve() if not Path(value).is_absolute() else Path(value)
    if not path.exists():
        raise ctx.error(key, f"{kind} not found: {path}")
    return path


def string(ctx: Context, value: Any, key: str) -> str:
    """A string value.

    Parameters
    ----------
    ctx : Context
        The file being read (named in errors).
    value : object
        The TOML value.
    key : str
        The dotted key, for errors.

    Returns
    -------
    str
    """
    if not isinstance(value, str):
        raise ctx.error(key, f"expected a string, got {value!r}")
    return value


#: names that become a file or directory name (dataset names, filters): no path separator,
#: no leading dot (so neither ".." nor a hidden file)
PATH_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


def path_name(ctx: Context, value: Any, key: str) -> str:
    """A string that becomes a path component of the outputs (a dataset's name, a filter).

    Refused unless it is a plain name (:data:`PATH_NAME`, 1-64 characters), so that nothing
    is written outside the output directory.

    Parameters
    ----------
    ctx : Context
        The file being read (named in errors).
    value : object
        The TOML value.
    key : str
        The dotted key, for errors.

    Returns
    -------
    str
    """
    value = string(ctx, value, key)
    if not PATH_NAME.match(value) or len(value) > 64:
        raise ctx.error(key, f"{value!r} names files and directories of the results: use 1-64 letters, "
                             "digits, '.', '_', '+' or '-', starting with a letter or digit (no '/', no '..')")
    return value


def one_of(ctx: Context, value: Any, key: str, allowed: Sequence) -> Any:
    """A value that must be one of ``allowed``.

    Parameters
    ----------
    ctx : Context
        The file being read (named in errors).
    value : object
        The TOML value.
    key : str
        The dotted key, for errors.
    allowed : sequence
        The allowed values.

    Returns
    -------
    object
        ``value``.
    """
    if value not in allowed:
        raise ctx.error(key, f"must be one of {', '.join(repr(v) for v in allowed)}, got {value!r}")
    return value


def integer(ctx: Context, value: Any, key: str, minimum: int | None = None) -> int:
    """An integer (not a boolean), at least ``minimum``.

    Parameters
    ----------
    ctx : Context
        The file being read (named in errors).
    value : object
        The TOML value.
    key : str
        The dotted key, for errors.
    minimum : int, optional
        The smallest value allowed.

    Returns
    -------
    int
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise ctx.error(key, f"expected an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ctx.error(key, f"must be >= {minimum}, got {value}")
    return value



def column_choice(ctx: Context, table: dict, key: str, prefix: str) -> str | int | None:
    """A star-list column: a name (str) or a 0-based index (int >= 0).

    Parameters
    ----------
    ctx : Context
        The file being read (named in errors).
    table : dict
        The ``[[sky]]`` table.
    key : str
        The key (``"x_col"``...).
    prefix : str
        The table's dotted key with a trailing dot, for errors.

    Returns
    -------
    str, int or None
        The name or index; None if absent.
    """
    if key not in table:
        return None
    value = table[key]
    if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
        raise ctx.error(f"{prefix}{key}", f"expected a column name or a 0-based column index, "
                                          f"got {value!r}")
    if isinstance(value, int) and value < 0:
        raise ctx.error(f"{prefix}{key}", f"a column index is 0-based and >= 0, got {value}")
    return value


def angle(ctx: Context, value: Any, key: str, *, hours: bool = False) -> float:
    """An angle in degrees from a number (deg) or a string.

    Strings such as ``"266.4 deg"``, ``"17h45m40s"``, ``"-29:00:28"`` (colons are hours for
    ``hours=True``, degrees otherwise) are read with :class:`astropy.coordinates.Angle`.

    Parameters
    ----------
    ctx : Context
        The file being read (named in errors).
    value : object
        The TOML value.
    key : str
        The dotted key, for errors.
    hours : bool
        Read a unitless sexagesimal string as hours (right ascension).

    Returns
    -------
    float
        The angle [deg].
    """
    if isinstance(value, bool):
        raise ctx.error(key, f"expected an angle, got {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            unit = None
            if not any(c.isalpha() for c in text):
                unit = u.hourangle if hours else u.deg
            return float(Angle(text, unit=unit).to_value(u.deg))
        except (ValueError, u.UnitsError, TypeError):
            raise ctx.error(key, f"cannot read {value!r} as an angle (a number in deg, or e.g. "
                                 "'17h45m40.04s', '-29d00m28.2s', '266.4 deg')") from None
    raise ctx.error(key, f"expected an angle (deg or a string), got {value!r}")



def temperature(ctx: Context, value: Any, key: str) -> float:
    """A temperature from a number (deg C) or a string with a unit (``"281 K"``).

    Parameters
    ----------
    ctx : Context
        The file being read (named in errors).
    value : object
        The TOML value.
    key : str
        The dotted key, for errors.

    Returns
    -------
    float
        The temperature [deg C], in -90..60.
    """
    if isinstance(value, str):
        try:
            tc = float(u.Quantity(value).to_value(u.deg_C, equivalencies=u.temperature()))
        except (TypeError, ValueError, u.UnitsError):
            raise ctx.error(key, f"cannot read {value!r} as a temperature (a number in deg C, or e.g. "
                                 "'281 K')") from None
    else:
        tc = quantity(ctx, value, u.deg_C, key)
    if not -90.0 <= tc <= 60.0:
        raise ctx.error(key, f"must be in -90..60 C, got {tc:g}")
    return tc


def humidity(ctx: Context, value: Any, key: str) -> float:
    """A relative humidity as a fraction 0..1 (a number, or a string such as ``"15 %"``).

    Parameters
    ----------
    ctx : Context
        The file being read (named in errors).
    value : object
        The TOML value.
    key : str
        The dotted key, for errors.

    Returns
    -------
    float
        The relative humidity, 0..1.
    """
    h = quantity(ctx, value, u.dimensionless_unscaled, key)
    if not 0.0 <= h <= 1.0:
        hint = " (per cent? write e.g. \"15 %\" or 0.15)" if 1.0 < h <= 100.0 else ""
        raise ctx.error(key, f"relative humidity is a fraction 0..1, got {h:g}{hint}")
    return h

