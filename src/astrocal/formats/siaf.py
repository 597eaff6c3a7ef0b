"""SIAF-style coefficient tables (ECSV), in the layout of JWST's pysiaf distortion files.

One row per term, ``siaf_index`` = ``"{i}{j}"`` for the term ``x**(i-j) y**j`` (row
``k = i(i+1)/2 + j``), columns ``exponent_x``, ``exponent_y``, ``Sci2IdlX``,
``Sci2IdlY`` (pixel offsets from the reference pixel -> ideal coordinates, arcsec) and
``Idl2SciX``, ``Idl2SciY`` (the reverse, fitted).  The reference pixel ``XSciRef``,
``YSciRef`` (FITS 1-based, as in SIAF), the detector size, the degrees, the reverse's
measured round-trip error and the focal-plane position of the reference pixel are in the
table's metadata.  astrocal's ideal frame is its focal-plane frame relative to the
reference pixel's position (no V2/V3 rotation).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
from astropy.table import Table

from .. import __version__
from ..atomic import atomic_write_table
from ..errors import AstrocalError
from ..field import DistortionField, invert
from ..field.orderings import from_siaf, siaf_terms, to_siaf
from ..pixels import detector_domain, from_fits, to_fits
from ..solution import Solution

COLUMNS = ("siaf_index", "exponent_x", "exponent_y", "Sci2IdlX", "Sci2IdlY", "Idl2SciX", "Idl2SciY")


class SiafFormatError(AstrocalError, ValueError):
    """A SIAF-style table lacks a column or a metadata key, or holds bad values."""


def siaf_table(solution: Solution, tol: float = 1e-4) -> Table:
    """An astropy Table of the solution's forward and reverse coefficients.

    Parameters
    ----------
    solution : Solution
        The distortion solution (field in 0-based pixels -> focal-plane arcsec).
    tol : float
        Wanted maximum round-trip error of the fitted reverse (``Idl2Sci``), pixels.

    Returns
    -------
    astropy.table.Table
        One row per term (see the module's docstring), the reference pixel (FITS 1-based),
        detector size, degrees and the reverse's round-trip error in its metadata.
    """
    f = solution.field
    b = solution.boresight
    mx, my = f.to_monomials(origin=b)
    u0, v0 = solution.reference_position
    mx[0, 0] -= u0
    my[0, 0] -= v0
    rel = DistortionField.from_monomials(mx, my, f.domain, origin=b)  # G - G(b)
    inv = invert(rel, tol=tol)
    rev = inv.field  # ideal arcsec -> detector pixel (0-based)
    rx, ry = rev.to_monomials(origin=(0.0, 0.0))
    rx[0, 0] -= b[0]
    ry[0, 0] -= b[1]
    degree = max(f.degree, rev.degree)
    pad = lambda m: np.pad(m, (0, degree + 1 - m.shape[0]))  # noqa: E731
    terms = siaf_terms(degree)
    table = Table()
    table["siaf_index"] = [f"{p + q}{q}" for p, q in terms]
    table["exponent_x"] = [p for p, _ in terms]
    table["exponent_y"] = [q for _, q in terms]
    table["Sci2IdlX"] = to_siaf(pad(mx))
    table["Sci2IdlY"] = to_siaf(pad(my))
    table["Idl2SciX"] = to_siaf(pad(rx))
    table["Idl2SciY"] = to_siaf(pad(ry))
    ny, nx = solution.detector_shape
    table.meta.update({
        "format": "astrocal SIAF-style distortion coefficients",
        "convention": ("Sci2Idl: (x - XSciRef, y - YSciRef) [pixel, FITS 1-based reference] -> "
                       "ideal (arcsec, relative to the reference pixel); term k = i(i+1)/2 + j "
                       "is x**(i-j) y**j; Idl2Sci: the reverse"),
        "XSciRef": float(to_fits(b[0])),
        "YSciRef": float(to_fits(b[1])),
        "XDetSize": int(nx),
        "YDetSize": int(ny),
        "Sci2IdlDeg": int(f.degree),
        "Idl2SciDeg": int(rev.degree),
        "Idl2SciRoundTripError_pixel": float(inv.max_roundtrip_error),
        "filter": solution.filter,
        "plate_scale_arcsec_per_pixel": solution.plate_scale,
        "reference_position_arcsec": [u0, v0],
        "creator": f"astrocal {__version__}",
        "provenance": dict(solution.meta),
    })
    return table


def write_siaf(path: str | os.PathLike, solution: Solution, tol: float = 1e-4, overwrite: bool = False,
               history: Sequence[str] = ()) -> Path:
    """Write the SIAF-style ECSV table of ``solution`` atomically.

    Parameters
    ----------
    path : str or os.PathLike
        The ECSV file.
    solution : Solution
        The distortion solution.
    tol : float
        Wanted maximum round-trip error of the reverse, pixels (:func:`siaf_table`).
    overwrite : bool
        Replace an existing file.
    history : sequence of str
        Lines kept in the metadata key ``history`` (a conversion's provenance and what it
        did not carry).

    Returns
    -------
    pathlib.Path
        The path written.
    """
    table = siaf_table(solution, tol)
    if history:
        table.meta["history"] = [str(line) for line in history]
    return atomic_write_table(table, path, overwrite=overwrite, format="ascii.ecsv")


def read_siaf(path_or_table: str | os.PathLike | Table, source: str | None = None) -> Solution:
    """Rebuild a :class:`Solution` from a SIAF-style table (path or Table).

    Only ``Sci2IdlX``/``Sci2IdlY`` define the field; ``Idl2Sci`` is informative.

    Parameters
    ----------
    path_or_table : str, os.PathLike or astropy.table.Table
        The ECSV file or the table itself.
    source : str, optional
        The name errors give a table (default ``"table"``; a path names itself).

    Returns
    -------
    Solution
        The solution (0-based pixels).

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    SiafFormatError
        Naming the source and the missing or bad column or metadata key.
    """
    if isinstance(path_or_table, Table):
        table, source = path_or_table, source or "table"
    else:
        source = str(path_or_table)
        if not Path(source).exists():
            raise FileNotFoundError(f"{source}: no such SIAF table")
        try:
            table = Table.read(source, format="ascii.ecsv")
        except Exception as exc:  # astropy raises several types for unreadable ECSV
            raise SiafFormatError(f"{source}: not a readable ECSV table ({exc})") from None
    for col in ("exponent_x", "exponent_y", "Sci2IdlX", "Sci2IdlY"):
        if col not in table.colnames:
            raise SiafFormatError(f"{source}: missing column {col}")
    for key in ("XSciRef", "YSciRef", "XDetSize", "YDetSize"):
        if key not in table.meta:
            raise SiafFormatError(f"{source}: missing metadata key {key}")
    degree = int(max(np.max(table["exponent_x"] + table["exponent_y"]), 1))
    mx = np.zeros((degree + 1, degree + 1))
    my = np.zeros_like(mx)
    seen = set()
    for p, q, cx, cy in zip(table["exponent_x"], table["exponent_y"], table["Sci2IdlX"], table["Sci2IdlY"]):
        if (p, q) in seen:
            raise SiafFormatError(f"{source}: term x**{p} y**{q} appears twice")
        seen.add((p, q))
        mx[p, q], my[p, q] = cx, cy
    if not (np.isfinite(mx).all() and np.isfinite(my).all()):
        raise SiafFormatError(f"{source}: Sci2IdlX/Sci2IdlY contain NaN")
    if "siaf_index" in table.colnames:
        for idx, p, q in zip(table["siaf_index"], table["exponent_x"], table["exponent_y"]):
            if str(idx).strip() != f"{p + q}{q}":
                raise SiafFormatError(f"{source}: siaf_index {idx} does not match exponents "
                                      f"x**{p} y**{q} (expected {p + q}{q})")
    u0, v0 = table.meta.get("reference_position_arcsec", [0.0, 0.0])
    mx[0, 0] += u0
    my[0, 0] += v0
    try:
        ref = (float(from_fits(table.meta["XSciRef"])), float(from_fits(table.meta["YSciRef"])))
        shape = (int(table.meta["YDetSize"]), int(table.meta["XDetSize"]))
    except (TypeError, ValueError):
        values = {k: table.meta[k] for k in ("XSciRef", "YSciRef", "XDetSize", "YDetSize")}
        raise SiafFormatError(f"{source}: metadata XSciRef, YSciRef must be numbers and XDetSize, "
                              f"YDetSize integers, got {values}") from None
    kwargs = {}
    try:
        field = DistortionField.from_monomials(mx, my, detector_domain(shape), origin=ref)
        if "plate_scale_arcsec_per_pixel" in table.meta:
            kwargs["plate_scale"] = float(table.meta["plate_scale_arcsec_per_pixel"])
        return Solution(field, filter=str(table.meta.get("filter", "NONE")), detector_shape=shape,
                        boresight=ref, meta={"source": source}, **kwargs)
    except (AstrocalError, TypeError, ValueError) as exc:
        raise SiafFormatError(f"{source}: {exc}") from None


__all__ = ["COLUMNS", "SiafFormatError", "read_siaf", "siaf_table", "write_siaf", "from_siaf"]
