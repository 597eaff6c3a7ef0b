"""Correct star lists: undistorted (linear-grid) positions and their uncertainty.

:func:`correct_positions` works on arrays; :func:`correct_star_list` reads a list (any
format :func:`astrocal.sky.starlist.read_star_list` reads, with its column choice), adds
the columns below to the list's own columns and writes the result.  The input file is
never modified.

===================  ======  =================================================================
column               unit    meaning
===================  ======  =================================================================
``x_lin, y_lin``     pix     linear-grid position, in the input's pixel convention (0-based
                             unless the list was read as 1-based: see the ``pixel_convention``
                             metadata)
``sigma_x_lin``      pix     1 sigma of ``x_lin``, ``y_lin``: the input's own errors pushed
``sigma_y_lin``              through the Jacobian of the correction, plus the solution's map
``cov_xy_lin``       pix2    uncertainty at that position; ``cov_xy_lin`` their covariance
``sigma_x_map``      pix     the solution's part alone (0 if it carries no uncertainty)
``sigma_y_map``
``dx_arcsec``        arcsec  ``plate_scale * (lin - reference)`` along the linear grid's axes
``dy_arcsec``                (the reference defaults to the boresight)
``sigma_dx_arcsec``  arcsec  their 1 sigma
``sigma_dy_arcsec``
``domain_flag``              0: inside the solution's domain (the detector); 1: outside it but
                             within the margin (corrected by extrapolation); 2: beyond the
                             margin (not corrected, NaN, unless ``extrapolate``)
``map_factor``       pix     posterior only (ECSV, FITS): shape (2, r), ``F_i``; the map
                             covariance between stars ``i != j`` is ``F_i F_j^T``; at one
                             star the unresolved field's white covariance (metadata
                             ``map_white_cov``, pix**2) adds to ``F_i F_i^T``
===================  ======  =================================================================

The uncertainty of ``(x_lin, y_lin)`` is ``J C_in J^T + C_map`` with ``J = dl/dp`` the
Jacobian of the correction at the star (:attr:`Evaluation.jac`), ``C_in`` the list's position covariance
(``sigma_x``, ``sigma_y`` and, if the list has one, ``cov_xy``) and ``C_map`` the
solution's (see :mod:`astrocal.correct.solutions`).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import astropy.units as u

from .. import __version__
from ..atomic import atomic_path, check_writable
from ..pixels import FITS_ORIGIN
from ..sky.starlist import StarListError, _read_table, read_star_list

log = logging.getLogger(__name__)

#: positions this far (pixels) outside the detector are still corrected (flag 1)
DEFAULT_MARGIN = 2.0
FLAG_INSIDE, FLAG_MARGIN, FLAG_OUTSIDE = 0, 1, 2
NEW_COLUMNS = ("x_lin", "y_lin", "sigma_x_lin", "sigma_y_lin", "cov_xy_lin", "sigma_x_map",
               "sigma_y_map", "dx_arcsec", "dy_arcsec", "sigma_dx_arcsec", "sigma_dy_arcsec",
               "domain_flag", "map_factor")
_COV_NAMES = ("cov_xy", "covxy", "xy_cov")
_OUTPUT_FORMATS = {".ecsv": "ascii.ecsv", ".fits": "fits", ".fit": "fits", ".fts": "fits",
                   ".csv": "ascii.csv", ".txt": "ascii.commented_header",
                   ".dat": "ascii.commented_header"}


@dataclass(frozen=True, eq=False)
class Corrected:
    """Corrected positions (0-based pixels), NaN where not corrected.

    ``cov`` (N, 2, 2): total covariance of ``(lx, ly)`` (pixels**2); ``map_cov``: the
    solution's part; ``flag``: :data:`FLAG_INSIDE`, :data:`FLAG_MARGIN` or
    :data:`FLAG_OUTSIDE` per position; ``factor`` (N, 2, r) or None: the posterior's map
    factor (``cov_map(i, j) = factor[i] @ factor[j].T``).
    """

    lx: np.ndarray
    ly: np.ndarray
    cov: np.ndarray
    map_cov: np.ndarray
    flag: np.ndarray
    factor: Optional[np.ndarray] = None

    @property
    def sigma(self):
        """``(sigma_x, sigma_y)`` in pixels."""
        return np.sqrt(self.cov[:, 0, 0]), np.sqrt(self.cov[:, 1, 1])


def domain_flags(evaluator, x, y, margin=DEFAULT_MARGIN):
    """Per position: 0 inside the solution's domain, 1 within ``margin`` px of it, 2 beyond."""
    flag = np.full(np.shape(x), FLAG_OUTSIDE, dtype=np.int16)
    flag[evaluator.in_domain(x, y, margin)] = FLAG_MARGIN
    flag[evaluator.in_domain(x, y, 0.0)] = FLAG_INSIDE
    return flag


def correct_positions(evaluator, x, y, sigma_x=None, sigma_y=None, cov_xy=None,
                      margin=DEFAULT_MARGIN, extrapolate=False, factor=False, source="positions"):
    """Linear-grid positions of measured positions and their uncertainty.

    Parameters
    ----------
    evaluator : Evaluator
        From :func:`astrocal.correct.open_solution`.
    x, y : array
        Measured positions, 0-based detector pixels.
    sigma_x, sigma_y, cov_xy : array or float, optional
        The positions' own errors (pixels, pixels**2); default 0 (not given); a NaN error
        gives a NaN uncertainty.
    margin : float
        Positions up to ``margin`` pixels outside the domain are corrected (flag 1);
        beyond it they are flagged 2 and returned as NaN unless ``extrapolate``.
    factor : bool
        Also return the posterior's map factor (posterior solutions only).
    source : str
        Name used in messages (the file).

    Returns
    -------
    Corrected
        Linear-grid positions, their covariance, the map's part, the domain flags (and the
        map factor with ``factor``).

    Raises
    ------
    ValueError
        If no position lies within the domain plus margin.
    """
    x = np.ravel(np.asarray(x, dtype=float))
    y = np.ravel(np.asarray(y, dtype=float))
    n = x.size
    if margin < 0 or not np.isfinite(margin):
        raise ValueError(f"the margin must be a finite number of pixels >= 0, got {margin!r}")
    flag = domain_flags(evaluator, x, y, margin)
    use = np.ones(n, bool) if extrapolate else flag < FLAG_OUTSIDE
    use &= np.isfinite(x) & np.isfinite(y)
    nout = int(np.count_nonzero(flag == FLAG_OUTSIDE))
    xmin, xmax, ymin, ymax = evaluator.domain
    if n and not use.any():
        raise ValueError(
            f"{source}: none of the {n} positions lies within the domain of the solution "
            f"{evaluator.source} ({xmin} <= x <= {xmax}, {ymin} <= y <= {ymax}, 0-based "
            f"pixels) plus the margin of {margin:g} px (wrong solution, pixel convention or "
            "columns?)")
    if nout:
        log.warning("%s: %d of %d positions lie more than %g px outside the domain of %s "
                    "(flag 2): %s", source, nout, n, margin, evaluator.source,
                    "extrapolated as asked" if extrapolate else "not corrected (NaN)")
    idx = np.flatnonzero(use)
    every = idx.size == n
    ev = evaluator.evaluate(x if every else x[idx], y if every else y[idx], errors=True)
    # input covariance pushed through J = dl/dp: J C J^T, written out for 2 x 2
    sxx, syy, sxy = (_input_term(v, n, idx, every, square) for v, square in
                     ((sigma_x, True), (sigma_y, True), (cov_xy, False)))
    j = ev.jac
    a, b, c, d = j[:, 0, 0], j[:, 0, 1], j[:, 1, 0], j[:, 1, 1]
    total = np.empty((idx.size, 2, 2))
    total[:, 0, 0] = a * a * sxx + 2 * a * b * sxy + b * b * syy
    total[:, 1, 1] = c * c * sxx + 2 * c * d * sxy + d * d * syy
    total[:, 0, 1] = a * c * sxx + (a * d + b * c) * sxy + b * d * syy
    total[:, 1, 0] = total[:, 0, 1]
    mc = ev.map_cov if ev.map_cov is not None else np.zeros_like(total)
    total += mc
    fac = evaluator.map_factor(x[idx], y[idx]) if factor else None
    if every:
        return Corrected(ev.lx, ev.ly, total, mc, flag, fac)
    lx = np.full(n, np.nan)
    ly = np.full(n, np.nan)
    cov = np.full((n, 2, 2), np.nan)
    map_cov = np.full((n, 2, 2), np.nan)
    lx[idx], ly[idx] = ev.lx, ev.ly
    cov[idx] = total
    map_cov[idx] = mc
    if fac is not None:
        full = np.full((n,) + fac.shape[1:], np.nan)
        full[idx] = fac
        fac = full
    return Corrected(lx, ly, cov, map_cov, flag, fac)


def _input_term(value, n, idx, every, square):
    """An input error term at the used positions: sigma**2 (``square``) or a covariance;
    0 where not given at all (an unknown, NaN, error makes the total NaN)."""
    if value is None:
        return 0.0
    v = np.broadcast_to(np.asarray(value, dtype=float), (n,))
    if not every:
        v = v[idx]
    return v * v if square else v


def _output_format(path):
    suffix = Path(path).suffix.lower()
    if suffix not in _OUTPUT_FORMATS:
        raise ValueError(f"{path}: cannot tell the star-list format from the name; use one of "
                         f"{', '.join(_OUTPUT_FORMATS)}")
    return _OUTPUT_FORMATS[suffix]


def _same_file(a, b):
    a, b = Path(a), Path(b)
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def _raw_cov(raw, cov_col, path):
    if cov_col is not None:
        names = {n.lower(): n for n in raw.colnames}
        key = raw.colnames[int(cov_col)] if str(cov_col).isdigit() else names.get(str(cov_col).lower())
        if key is None:
            raise StarListError(f"{path}: no column '{cov_col}' for the x-y covariance (columns: "
                                f"{', '.join(raw.colnames)})")
        return np.asarray(raw[key], dtype=float), key
    for name in raw.colnames:
        if name.lower() in _COV_NAMES:
            return np.asarray(raw[name], dtype=float), name
    return None, None


def correct_star_list(path, evaluator, out=None, *, x_col=None, y_col=None, sigma_x_col=None,
                      sigma_y_col=None, cov_xy_col=None, one_based=None, format=None,
                      margin=DEFAULT_MARGIN, extrapolate=False, plate_scale=None,
                      reference=None, overwrite=False):
    """Correct the positions of a star list; write it to ``out`` (if given) and return it.

    Parameters
    ----------
    path : path-like
        The star list (ECSV, FITS table, CSV, plain text, DAOPHOT II, IRAF DAOPHOT).
    evaluator : Evaluator
        The opened solution.
    out : path-like, optional
        Output list; format from the name (``.ecsv``, ``.fits``, ``.csv``, ``.txt``).
        Refused if it exists (unless ``overwrite``) or if it is the input.
    x_col, y_col, sigma_x_col, sigma_y_col, one_based, format :
        As :func:`astrocal.sky.starlist.read_star_list` (names or 0-based indices).
    cov_xy_col : str or int, optional
        Column of the x-y position covariance (pixels**2); default: a column named
        ``cov_xy`` if there is one, else none.
    margin, extrapolate :
        See :func:`correct_positions`.
    plate_scale : float, optional
        arcsec per linear-grid pixel for the arcsec offsets; default the solution's.
    reference : (x, y), optional
        Linear-grid position the arcsec offsets are measured from, in the list's pixel
        convention; default the boresight.

    Returns
    -------
    astropy.table.Table
        A copy of the input table with the columns of this module's docstring added.
    """
    path = Path(path)
    if out is not None:
        if _same_file(path, out):
            raise ValueError(f"{out}: is the input star list; the input is never modified in "
                             "place: choose another output name")
        fmt_out = _output_format(out)
        check_writable(out, overwrite)
    stars = read_star_list(path, x_col=x_col, y_col=y_col, sigma_x_col=sigma_x_col,
                           sigma_y_col=sigma_y_col, one_based=one_based, format=format)
    raw = _read_table(path, stars.meta["format"])
    if len(raw) != len(stars):
        raise StarListError(f"{path}: read {len(stars)} stars but the table has {len(raw)} rows")
    clash = [c for c in NEW_COLUMNS if c in raw.colnames]
    if clash:
        raise StarListError(f"{path}: already has column(s) {', '.join(clash)} (corrected "
                            "before?); start from the uncorrected list or rename them")
    x = np.asarray(stars["x"], dtype=float)
    y = np.asarray(stars["y"], dtype=float)
    sx = np.asarray(stars["sigma_x"], dtype=float) if "sigma_x" in stars.colnames else None
    sy = np.asarray(stars["sigma_y"], dtype=float) if "sigma_y" in stars.colnames else None
    cxy, cov_name = _raw_cov(raw, cov_xy_col, path) if sx is not None else (None, None)
    if sx is None:
        log.warning("%s: the list gives no position errors; the stated uncertainty is the "
                    "solution's only", path)
    want_factor = evaluator.kind == "posterior"
    res = correct_positions(evaluator, x, y, sx, sy, cxy, margin=margin,
                            extrapolate=extrapolate, factor=want_factor, source=str(path))
    shift = FITS_ORIGIN if stars.meta["one_based_input"] else 0.0
    scale = float(evaluator.plate_scale if plate_scale is None else plate_scale)
    if not (np.isfinite(scale) and scale > 0):
        raise ValueError(f"plate scale must be a positive number of arcsec/pixel, got {plate_scale!r}")
    if reference is None:
        ref = np.asarray(evaluator.boresight, dtype=float)
    else:
        ref = np.asarray(reference, dtype=float) - shift
        if ref.shape != (2,) or not np.isfinite(ref).all():
            raise ValueError(f"the reference must be two finite pixel coordinates, got {reference!r}")
    sig_x, sig_y = res.sigma
    t = raw.copy(copy_data=True)
    conv = "1-based (FITS)" if shift else "0-based"
    t["x_lin"] = (res.lx + shift) * u.pix
    t["y_lin"] = (res.ly + shift) * u.pix
    t["x_lin"].description = f"linear-grid x, {conv} pixels"
    t["y_lin"].description = f"linear-grid y, {conv} pixels"
    t["sigma_x_lin"] = sig_x * u.pix
    t["sigma_y_lin"] = sig_y * u.pix
    t["cov_xy_lin"] = res.cov[:, 0, 1] * u.pix ** 2
    t["sigma_x_lin"].description = "1 sigma of x_lin: input errors (through the Jacobian) + map"
    t["sigma_y_lin"].description = "1 sigma of y_lin: input errors (through the Jacobian) + map"
    t["sigma_x_map"] = np.sqrt(res.map_cov[:, 0, 0]) * u.pix
    t["sigma_y_map"] = np.sqrt(res.map_cov[:, 1, 1]) * u.pix
    t["sigma_x_map"].description = "the solution's own 1 sigma at the position"
    t["dx_arcsec"] = scale * (res.lx - ref[0]) * u.arcsec
    t["dy_arcsec"] = scale * (res.ly - ref[1]) * u.arcsec
    t["dx_arcsec"].description = "plate_scale * (x_lin - reference x), along the linear grid's x"
    t["sigma_dx_arcsec"] = scale * sig_x * u.arcsec
    t["sigma_dy_arcsec"] = scale * sig_y * u.arcsec
    t["domain_flag"] = res.flag
    t["domain_flag"].description = ("0 inside the solution's domain, 1 within the margin "
                                    "(extrapolated), 2 beyond it")
    meta = {
        "solution": evaluator.source,
        "solution_kind": evaluator.kind,
        "method": evaluator.method,
        "filter": evaluator.filter,
        "plate_scale_arcsec_per_pixel": scale,
        "reference_pixel": [float(ref[0] + shift), float(ref[1] + shift)],
        "boresight_pixel": [float(evaluator.boresight[0] + shift),
                            float(evaluator.boresight[1] + shift)],
        "linear_grid_rotation_deg": evaluator.rotation,
        "parity": evaluator.parity,
        "margin_pixel": float(margin),
        "extrapolate": bool(extrapolate),
        "pixel_convention": conv,
        "input_columns": {k: v for k, v in stars.meta["columns"].items() if v is not None},
        "input_cov_xy_column": cov_name,
        "input_has_errors": sx is not None,
        "solution_has_uncertainty": bool(evaluator.has_uncertainty),
        "offset_definition": "offset = measured position - linear-grid position (pixels)",
        "n_outside_margin": int(np.count_nonzero(res.flag == FLAG_OUTSIDE)),
        "creator": f"astrocal {__version__}",
    }
    if res.factor is not None:
        t["map_factor"] = res.factor * u.pix
        t["map_factor"].description = ("posterior map factor F_i (2, r): cov(lin_i, lin_j) "
                                        "= F_i F_j^T (+ map_white_cov if i = j)")
        meta["map_factor_rank"] = int(res.factor.shape[-1])
        white = getattr(evaluator, "white_cov", None)
        meta["map_white_cov"] = (np.zeros((2, 2)) if white is None else np.asarray(white, float)).tolist()
    t.meta["astrocal_correct"] = meta
    if out is not None:
        _write(t, out, fmt_out, overwrite)
        log.info("%s -> %s: %d stars corrected with %s", path, out, int(np.isfinite(res.lx).sum()),
                 evaluator.describe())
    return t


def _write(t, out, fmt, overwrite):
    if fmt == "ascii.ecsv":
        with atomic_path(out, overwrite) as tmp:
            t.write(tmp, format=fmt)
        return
    t = t.copy(copy_data=False)
    if "map_factor" in t.colnames and fmt != "fits":
        log.warning("%s: a %s file cannot hold the posterior's map factor column; write .ecsv "
                    "or .fits to keep the correlations between stars", out, fmt)
        t.remove_column("map_factor")
    meta = t.meta.pop("astrocal_correct")
    if fmt == "fits":
        t.meta = _fits_meta(t.meta, meta)
    else:
        t.meta = {"comments": [f"astrocal correct: {k} = {v}" for k, v in meta.items()]}
    with atomic_path(out, overwrite) as tmp:
        t.write(tmp, format=fmt)


def _fits_meta(raw_meta, meta):
    """Header-safe metadata: short scalar keywords, the rest as HISTORY."""
    out = {}
    history = []
    for key, value in raw_meta.items():
        if key.upper() in ("HISTORY", "COMMENT"):
            history += [str(v) for v in (value if isinstance(value, list) else [value])]
        elif (len(key) <= 8 and key.replace("_", "").replace("-", "").isalnum()
                and isinstance(value, (str, int, float, bool)) and len(str(value)) <= 60):
            out[key.upper()] = value
        else:
            history.append(f"{key} = {value}"[:70])
    out["CORRSOL"] = Path(str(meta["solution"])).name[-60:]  # the full path is in HISTORY
    out["CORRKIND"] = meta["solution_kind"]
    out["CORRMETH"] = meta["method"]
    out["CORRFILT"] = meta["filter"]
    out["PLTSCALE"] = meta["plate_scale_arcsec_per_pixel"]
    out["REFX"], out["REFY"] = meta["reference_pixel"]
    out["BORESX"], out["BORESY"] = meta["boresight_pixel"]
    out["LINROT"] = meta["linear_grid_rotation_deg"]
    out["PARITY"] = meta["parity"]
    out["MARGIN"] = meta["margin_pixel"]
    out["PIXCONV"] = meta["pixel_convention"]
    out["CREATOR"] = meta["creator"]
    history += [f"astrocal correct: {k} = {v}"[:70] for k, v in meta.items()]
    out["HISTORY"] = history
    return out


__all__ = ["DEFAULT_MARGIN", "FLAG_INSIDE", "FLAG_MARGIN", "FLAG_OUTSIDE", "Corrected",
           "correct_positions", "correct_star_list", "domain_flags"]
