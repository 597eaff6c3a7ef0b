"""The source-table contract: what the measure stage writes and the fit stage reads.

A *source table* holds one exposure's measured positions: one row per spot (a pinhole's
image, a lab table) or per star (a sky table), in 0-based pixels (the centre of the first
pixel is 0.0, ``x`` along numpy axis 1), with a 2x2 covariance and a ``flags`` bitmask.
Every flag bit, the columns of both kinds of table, and their reading and validation are
defined here once; the stages that write tables (:mod:`astrocal.lab.measure`,
:mod:`astrocal.sky.measure`, the simulators) and the one that reads them
(:mod:`astrocal.model.data`, through ``astrocal fit``) take them from this module.

Flag bits
---------
========  =================  ==========================================================
bit       name               meaning
========  =================  ==========================================================
1         ``saturated``      a stamp pixel reached the saturation level (such pixels are
                             left out of the fit)
2         ``masked_pixels``  some stamp pixels were masked (NaN/inf, bad-pixel mask)
4         ``not_converged``  the centroid fit did not converge
8         ``near_edge``      the stamp crosses the image edge
16        ``diverged``       the fitted position moved too far from its first guess
32        ``bad_fit``        no usable fit: position and errors are NaN
64        ``crowded``        another spot's core light reaches the stamp
128       ``unidentified``   matched to no mask hole (lab: ``hole_id`` = -1) or no
                             catalogue star (sky: ``star`` = "")
256       ``low_coverage``   too little of the PSF's light falls on valid pixels
512       ``blend``          (sky) the position mixes two catalogue stars
========  =================  ==========================================================

:data:`FLAGS_REJECT` are the bits of positions the fit leaves out by default (lab
tables; every table written by astrocal states its own in ``meta["reject_flags"]``);
sky tables also reject :data:`FLAG_BLEND` (:data:`FLAGS_REJECT_SKY`).

Columns
-------
Lab tables: :data:`REQUIRED_COLUMNS` ``hole_id, x, y, sigma_x, sigma_y`` and
:data:`OPTIONAL_COLUMNS` ``cov_xy`` (px^2), ``flux``, ``snr``, ``flags`` with the value a
user's table that lacks them gets (:func:`validate_source_table`). Sky tables:
:data:`SKY_COLUMNS` ``star, x, y, sigma_x, sigma_y, cov_xy, flux, flags`` and
``meta["kind"] = "sky"`` (:func:`read_sky_table`). :data:`MEASURED_COLUMNS` are the
columns by which a file is recognised as a measured table of either kind.

The LMS spot tables (:mod:`astrocal.lms.spots`) are a table of their own, with their
own flags (``SPOT_FLAGS``): they never enter the imager's fit.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import astropy.units as u
from astropy.table import Table

from .errors import MeasureError

__all__ = [
    "FLAG_SATURATED",
    "FLAG_MASKED",
    "FLAG_NOT_CONVERGED",
    "FLAG_EDGE",
    "FLAG_DIVERGED",
    "FLAG_BAD_FIT",
    "FLAG_CROWDED",
    "FLAG_UNIDENTIFIED",
    "FLAG_LOW_COVERAGE",
    "FLAG_BLEND",
    "CENTROID_FLAG_NAMES",
    "LAB_FLAG_NAMES",
    "FLAG_NAMES",
    "FLAGS_SEVERE",
    "FLAGS_REJECT",
    "FLAGS_REJECT_SKY",
    "decode_flags",
    "REQUIRED_COLUMNS",
    "OPTIONAL_COLUMNS",
    "OUTPUT_COLUMNS",
    "SKY_COLUMNS",
    "MEASURED_COLUMNS",
    "SourceTableError",
    "validate_source_table",
    "read_source_table",
    "read_sky_table",
]

# --------------------------------------------------------------------------- flag bits
#: a stamp pixel reached the saturation level (such pixels are excluded from the fit)
FLAG_SATURATED = 1
#: some stamp pixels were masked (NaN/inf in the image or variance, or bad-pixel mask)
FLAG_MASKED = 2
#: the centroid fit did not converge within its iterations
FLAG_NOT_CONVERGED = 4
#: the stamp crosses the image edge (pixels outside are excluded)
FLAG_EDGE = 8
#: the fitted position moved more than the allowed shift from the first guess
FLAG_DIVERGED = 16
#: no usable fit: too few valid pixels, singular Fisher matrix or non-positive flux;
#: position and errors are NaN
FLAG_BAD_FIT = 32
#: another spot lies within half a stamp plus 2 FWHM: its core light reaches the stamp
#: (subtracted when the centroid fit deblends, :func:`astrocal.image.centroid.fit_centroids`)
FLAG_CROWDED = 64
#: the spot was not identified with a mask hole (``hole_id`` = -1), or the star matches
#: no catalogue star (``star`` = "")
FLAG_UNIDENTIFIED = 128
#: less than half of the PSF's light in the fitting stamp falls on valid pixels, or less
#: than :data:`astrocal.image.frame.EDGE_MIN_COVERAGE` of it when the stamp is cut by the
#: detector's edge (the spot lies mostly in a masked area): position unreliable
FLAG_LOW_COVERAGE = 256
#: (sky tables) the source is matched to a blend of catalogue stars, or another measured
#: source lies within the blend radius (about the PSF FWHM): its position mixes two stars
FLAG_BLEND = 512

#: the names of the bits a centroid fit sets (:func:`astrocal.image.centroid.fit_centroids`)
CENTROID_FLAG_NAMES = {
    FLAG_SATURATED: "saturated",
    FLAG_MASKED: "masked_pixels",
    FLAG_NOT_CONVERGED: "not_converged",
    FLAG_EDGE: "near_edge",
    FLAG_DIVERGED: "diverged",
    FLAG_BAD_FIT: "bad_fit",
    FLAG_CROWDED: "crowded",
}
#: the names of the bits of a lab source table (``meta["flag_bits"]`` of each)
LAB_FLAG_NAMES = {**CENTROID_FLAG_NAMES, FLAG_UNIDENTIFIED: "unidentified", FLAG_LOW_COVERAGE: "low_coverage"}
#: the name of every flag bit (those of a sky table, ``meta["flag_bits"]`` of each)
FLAG_NAMES = {**LAB_FLAG_NAMES, FLAG_BLEND: "blend"}
#: flags of a centroid fit that make a position unusable
FLAGS_SEVERE = FLAG_NOT_CONVERGED | FLAG_DIVERGED | FLAG_BAD_FIT
#: flags of positions the fit leaves out by default (lab tables)
FLAGS_REJECT = FLAGS_SEVERE | FLAG_SATURATED | FLAG_UNIDENTIFIED | FLAG_LOW_COVERAGE
#: flags of sky sources the fit leaves out (``meta["reject_flags"]`` of every sky table)
FLAGS_REJECT_SKY = FLAGS_REJECT | FLAG_BLEND


def decode_flags(flag: int) -> list[str]:
    """Names of the bits set in one flag value, lowest bit first.

    Parameters
    ----------
    flag : int
        A ``flags`` value of a source table.

    Returns
    -------
    list of str
        The names (:data:`FLAG_NAMES`) of its bits that are set.
    """
    return [name for bit, name in FLAG_NAMES.items() if int(flag) & bit]


# --------------------------------------------------------------------------- columns
#: columns a lab source table must have
REQUIRED_COLUMNS = ("hole_id", "x", "y", "sigma_x", "sigma_y")
#: optional columns of a lab source table and the value they take when a user's table
#: lacks them
OPTIONAL_COLUMNS = {"cov_xy": 0.0, "flux": np.nan, "snr": np.nan, "flags": 0}
#: the columns of every lab source table the measure stage writes, in this order
OUTPUT_COLUMNS = REQUIRED_COLUMNS + tuple(OPTIONAL_COLUMNS)
#: the columns every sky table has, in this order
SKY_COLUMNS = ("star", "x", "y", "sigma_x", "sigma_y", "cov_xy", "flux", "flags")
#: the columns that make an ECSV file a measured source table, per kind (a sky table
#: also has ``meta["kind"] = "sky"``)
MEASURED_COLUMNS = {"lab": REQUIRED_COLUMNS, "sky": ("star", "x", "y", "sigma_x", "sigma_y")}

_PIX = u.pix


class SourceTableError(MeasureError):
    """A source table is invalid (the message names the file and the column)."""


def _column_unit_ok(col, allowed):
    unit = getattr(col, "unit", None)
    if unit is None:
        return True
    try:
        return any(u.Unit(unit) == a for a in allowed)
    except ValueError:
        return False


def validate_source_table(table: Table, source: str = "<table>", mask: Any = None) -> Table:
    """Check a measured lab source table and return it in the standard layout.

    Parameters
    ----------
    table : astropy.table.Table
        Required columns: ``hole_id`` (integer, -1 for unidentified), ``x``, ``y``
        (0-based pixels), ``sigma_x``, ``sigma_y`` (pixels, > 0); optional ``cov_xy``
        (px^2; default 0), ``flux``, ``snr`` (default NaN) and ``flags`` (default 0).
        Units, if given, must be pixels (``pix``; ``pix2`` for ``cov_xy``).
    source : str
        What to call the table in messages (its file).
    mask : astrocal.lab.mask.Mask, optional
        When given, every hole id must be a hole of this mask (typed ``Any``: the
        source-table contract does not import the lab package, which imports it).

    Returns
    -------
    astropy.table.Table
        The columns of :data:`OUTPUT_COLUMNS` (with units) and any further columns;
        ``meta["filled_columns"]`` lists the optional columns that were filled in.

    Raises
    ------
    SourceTableError
        Naming ``source`` and the column: a column missing, not numeric or in another
        unit; rows with ``hole_id >= 0`` without finite positions and errors or a
        positive-definite covariance; duplicate or unknown hole ids; negative flags.
    """
    t = table
    cols = list(t.colnames)
    missing = [c for c in REQUIRED_COLUMNS if c not in cols]
    if missing:
        raise SourceTableError(
            f"{source}: missing column '{missing[0]}' (a source table needs "
            f"{', '.join(REQUIRED_COLUMNS)}; optional {', '.join(OPTIONAL_COLUMNS)}; found "
            f"{', '.join(cols) or 'no columns'})")
    n = len(t)

    def values(name, kind=float):
        col = t[name]
        if getattr(col, "mask", None) is not None and np.any(col.mask):
            rows = np.nonzero(np.asarray(col.mask))[0][:10].tolist()
            raise SourceTableError(f"{source}: column '{name}' has missing values in rows {rows}")
        try:
            arr = np.asarray(col, dtype=float)
        except (TypeError, ValueError):
            raise SourceTableError(f"{source}: column '{name}' is not numeric "
                                   f"(dtype {col.dtype})") from None
        if col.dtype.kind not in "iufb":
            raise SourceTableError(f"{source}: column '{name}' is not numeric (dtype {col.dtype})")
        return arr

    for name in ("x", "y", "sigma_x", "sigma_y"):
        if not _column_unit_ok(t[name], (_PIX, u.dimensionless_unscaled)):
            raise SourceTableError(f"{source}: column '{name}' has unit '{t[name].unit}'; "
                                   "expected pixels (0-based detector positions)")
    if "cov_xy" in cols and not _column_unit_ok(t["cov_xy"], (_PIX**2, u.dimensionless_unscaled)):
        raise SourceTableError(f"{source}: column 'cov_xy' has unit '{t['cov_xy'].unit}'; "
                               "expected pix2")
    hid_raw = values("hole_id")
    if t["hole_id"].dtype.kind not in "iu" and not np.all(hid_raw == np.round(hid_raw)):
        raise SourceTableError(f"{source}: column 'hole_id' must hold integers")
    hid = hid_raw.astype(np.int64)
    if np.any(hid < -1):
        rows = np.nonzero(hid < -1)[0][:10].tolist()
        raise SourceTableError(f"{source}: column 'hole_id' has values < -1 in rows {rows} "
                               "(-1 marks an unidentified spot)")
    ident = hid >= 0
    uniq, counts = np.unique(hid[ident], return_counts=True)
    if np.any(counts > 1):
        raise SourceTableError(f"{source}: column 'hole_id': duplicate hole ids "
                               f"{uniq[counts > 1][:10].tolist()}")
    if mask is not None:
        unknown = np.setdiff1d(uniq, mask.hole_id)
        if unknown.size:
            raise SourceTableError(f"{source}: column 'hole_id': ids {unknown[:10].tolist()} are not "
                                   f"holes of mask '{mask.name}' ({mask.source})")
    x, y = values("x"), values("y")
    sx, sy = values("sigma_x"), values("sigma_y")
    cxy = values("cov_xy") if "cov_xy" in cols else np.zeros(n)
    for name, arr in (("x", x), ("y", y)):
        bad = ident & ~np.isfinite(arr)
        if np.any(bad):
            raise SourceTableError(f"{source}: column '{name}' is not finite in rows "
                                   f"{np.nonzero(bad)[0][:10].tolist()} (identified spots)")
    for name, arr in (("sigma_x", sx), ("sigma_y", sy)):
        bad = ident & ~(np.isfinite(arr) & (arr > 0))
        if np.any(bad):
            raise SourceTableError(f"{source}: column '{name}' must be finite and > 0; rows "
                                   f"{np.nonzero(bad)[0][:10].tolist()}")
    with np.errstate(invalid="ignore"):
        bad = ident & ~(np.isfinite(cxy) & (cxy * cxy < sx * sx * sy * sy))
    if np.any(bad):
        raise SourceTableError(f"{source}: column 'cov_xy' makes the covariance not positive "
                               f"definite (|cov_xy| >= sigma_x sigma_y) in rows "
                               f"{np.nonzero(bad)[0][:10].tolist()}")
    flags = np.zeros(n, np.int64)
    if "flags" in cols:
        fl = values("flags")
        if np.any(fl < 0) or not np.all(fl == np.round(fl)):
            raise SourceTableError(f"{source}: column 'flags' must hold non-negative integers")
        flags = fl.astype(np.int64)
    out = Table(meta=dict(t.meta))
    out["hole_id"] = hid
    out["x"] = x * _PIX
    out["y"] = y * _PIX
    out["sigma_x"] = sx * _PIX
    out["sigma_y"] = sy * _PIX
    out["cov_xy"] = cxy * _PIX**2
    out["flux"] = values("flux") if "flux" in cols else np.full(n, np.nan)
    out["snr"] = values("snr") if "snr" in cols else np.full(n, np.nan)
    out["flags"] = flags
    for name in cols:  # any further columns are carried along
        if name not in out.colnames:
            out[name] = t[name]
    filled = [c for c in OPTIONAL_COLUMNS if c not in cols]
    if filled:
        out.meta["filled_columns"] = filled
    return out


def read_source_table(path: str | os.PathLike, mask: Any = None) -> Table:
    """Read and validate a lab source table (ECSV, CSV, or the first table of a FITS file).

    Parameters
    ----------
    path : str or os.PathLike
        The table's file (``.ecsv``, ``.csv``, else any format astropy recognises).
    mask : astrocal.lab.mask.Mask, optional
        When given, every hole id must be a hole of this mask (typed ``Any``: the
        source-table contract does not import the lab package, which imports it).

    Returns
    -------
    astropy.table.Table
        :func:`validate_source_table` of its content.

    Raises
    ------
    FileNotFoundError
        If the file is missing.
    SourceTableError
        Naming the file, if it cannot be read as a table or is not a valid source table.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"source table not found: {path}")
    try:
        if path.name.lower().endswith(".ecsv"):
            t = Table.read(path, format="ascii.ecsv")
        elif path.name.lower().endswith(".csv"):
            t = Table.read(path, format="ascii.csv")
        else:
            t = Table.read(path)
    except Exception as exc:  # astropy raises many kinds for malformed files
        raise SourceTableError(f"{path}: cannot read as a table: {exc}") from exc
    return validate_source_table(t, str(path), mask)


def read_sky_table(path: str | os.PathLike) -> Table:
    """Read a measured sky table (ECSV) back, with ``star`` as plain strings.

    astropy's ECSV reader turns empty strings into *masked* entries whose data is ``"0"``;
    here unmatched rows get their ``""`` back.

    Parameters
    ----------
    path : str or os.PathLike
        The sky table's ECSV file.

    Returns
    -------
    astropy.table.Table
        The table, its ``star`` column as plain strings (``""`` for unmatched rows).

    Raises
    ------
    FileNotFoundError
        If the file is missing.
    SourceTableError
        Naming the file and the column, if the table is not a sky table
        (:data:`SKY_COLUMNS`, ``meta["kind"] = "sky"``).
    """
    path = Path(path)
    try:
        t = Table.read(path, format="ascii.ecsv")
    except FileNotFoundError:
        raise
    except Exception as exc:  # noqa: BLE001 - astropy raises many kinds for malformed files
        raise SourceTableError(f"{path}: cannot read as an ECSV table: {exc}") from None
    missing = [c for c in SKY_COLUMNS if c not in t.colnames]
    if missing:
        raise SourceTableError(f"{path}: not a sky table: missing column(s) {', '.join(missing)} "
                               f"(a sky table has {', '.join(SKY_COLUMNS)})")
    if t.meta.get("kind") != "sky":
        raise SourceTableError(f"{path}: not a sky table: meta 'kind' is {t.meta.get('kind')!r}, not 'sky'")
    col = t["star"]
    values = col.filled("") if hasattr(col, "filled") and getattr(col, "mask", None) is not None else col
    t["star"] = np.array([str(v) for v in np.asarray(values)], dtype=str)
    return t
