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
from astropy.table import Table
from numpy.typing import ArrayLike

from .. import __version__
from ..atomic import atomic_path, check_writable
from ..errors import AstrocalError, CorrectionInputError
from ..pixels import FITS_ORIGIN
from ..sky import starlist as sl
from ..sky.starlist import StarListError, guess_format, read_list_table, read_star_list
from .chunks import CHUNKED_FORMATS, DEFAULT_CHUNK_ROWS, ChunkWriter, Schema, SchemaChanged, iter_chunks
from .solutions import Evaluator

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
    def sigma(self) -> tuple[np.ndarray, np.ndarray]:
        """``(sigma_x, sigma_y)`` in pixels."""
        return np.sqrt(self.cov[:, 0, 0]), np.sqrt(self.cov[:, 1, 1])


def domain_flags(evaluator: Evaluator, x: ArrayLike, y: ArrayLike, margin: float = DEFAULT_MARGIN) -> np.ndarray:
    """Per position: 0 inside the solution's domain, 1 within ``margin`` px of it, 2 beyond.

    Parameters
    ----------
    evaluator : Evaluator
        The opened solution.
    x, y : array_like
        Measured positions (0-based pixels).
    margin : float
        Pixels around the domain that are flagged 1.

    Returns
    -------
    np.ndarray of int16
        Of the shape of ``x``.
    """
    flag = np.full(np.shape(x), FLAG_OUTSIDE, dtype=np.int16)
    flag[evaluator.in_domain(x, y, margin)] = FLAG_MARGIN
    flag[evaluator.in_domain(x, y, 0.0)] = FLAG_INSIDE
    return flag


def correct_positions(evaluator: Evaluator, x: ArrayLike, y: ArrayLike, sigma_x: ArrayLike | None = None,
                      sigma_y: ArrayLike | None = None, cov_xy: ArrayLike | None = None,
                      margin: float = DEFAULT_MARGIN, extrapolate: bool = False, factor: bool = False,
                      source: str = "positions", invalid_cov: str = "error",
                      columns: tuple[str, str, str] = ("sigma_x", "sigma_y", "cov_xy")) -> Corrected:
    """Linear-grid positions of measured positions and their uncertainty.

    Parameters
    ----------
    evaluator : Evaluator
        From :func:`astrocal.correct.open_solution`.
    x, y : array
        Measured positions, 0-based detector pixels.
    sigma_x, sigma_y, cov_xy : array or float, optional
        The positions' own errors (pixels, pixels**2); default 0 (not given); a NaN error
        gives a NaN uncertainty.  Each position's covariance
        ``[[sigma_x**2, cov_xy], [cov_xy, sigma_y**2]]`` must be positive semi-definite,
        ``|cov_xy| <= sigma_x sigma_y``: see ``invalid_cov``.
    margin : float
        Positions up to ``margin`` pixels outside the domain are corrected (flag 1);
        beyond it they are flagged 2 and returned as NaN unless ``extrapolate``.
    extrapolate : bool
        Correct the positions beyond the margin too (flag 2).
    factor : bool
        Also return the posterior's map factor (posterior solutions only).
    source : str
        Name used in messages (the file).
    invalid_cov : {'error', 'nan'}
        What to do with positions whose given covariance is not positive semi-definite
        (``|cov_xy| > sigma_x sigma_y``, beyond rounding: a relative 1e-9): ``'error'``
        (default) raises :class:`InvalidCovarianceError` naming the first rows and the
        columns; ``'nan'`` corrects their positions but gives them a NaN uncertainty (and
        logs how many).
    columns : (str, str, str)
        Names of the sigma_x, sigma_y and cov_xy inputs, for messages.

    Returns
    -------
    Corrected
        Linear-grid positions, their covariance (always positive semi-definite, or NaN),
        the map's part, the domain flags (and the map factor with ``factor``).

    Raises
    ------
    ValueError
        If no position lies within the domain plus margin.
    InvalidCovarianceError
        See ``invalid_cov``.
    """
    x = np.ravel(np.asarray(x, dtype=float))
    y = np.ravel(np.asarray(y, dtype=float))
    if margin < 0 or not np.isfinite(margin):
        raise CorrectionInputError(f"the margin must be a finite number of pixels >= 0, got {margin!r}")
    res, nbad = _correct_block(evaluator, x, y, sigma_x, sigma_y, cov_xy, margin, extrapolate,
                               factor, source, invalid_cov, columns)
    _report_block(evaluator, source, x.size, int(np.count_nonzero(res.flag == FLAG_OUTSIDE)),
                  nbad, margin, extrapolate, columns,
                  usable=int(np.count_nonzero(_usable(res.flag, x, y, extrapolate))))
    return res


class InvalidCovarianceError(AstrocalError, ValueError):
    """Input position covariances that are not positive semi-definite (the message names
    the source, the columns and the first rows)."""


#: relative rounding allowed in ``|cov_xy| <= sigma_x sigma_y`` (such values are clipped)
COV_RTOL = 1e-9
INVALID_COV = ("error", "nan")


def check_input_cov(sigma_x: ArrayLike | None, sigma_y: ArrayLike | None, cov_xy: ArrayLike | None, source: str,
                    columns: tuple[str, str, str], row0: int = 0,
                    invalid_cov: str = "error") -> tuple[np.ndarray | None, np.ndarray | None]:
    """Rows whose covariance ``[[sx**2, c], [c, sy**2]]`` is not positive semi-definite.

    Parameters
    ----------
    sigma_x, sigma_y, cov_xy : array_like or None
        The positions' errors (pixels, pixels**2).
    source : str
        The list, named in the error.
    columns : (str, str, str)
        The names of the sigma_x, sigma_y and cov_xy columns, named in the error.
    row0 : int
        The first row's index (0-based data rows), for the error.
    invalid_cov : {'error', 'nan'}
        With ``'error'``, raise :class:`InvalidCovarianceError` naming ``source``, the
        ``columns`` and the first rows.

    Returns
    -------
    bad : np.ndarray of bool or None
        Those rows (None without ``cov_xy`` or a sigma).
    cov_xy : np.ndarray or None
        ``cov_xy`` clipped to ``+-sigma_x sigma_y`` (rounding only).
    """
    if invalid_cov not in INVALID_COV:
        raise ValueError(f"invalid_cov must be one of {', '.join(INVALID_COV)}, got {invalid_cov!r}")
    if cov_xy is None or sigma_x is None or sigma_y is None:
        return None, cov_xy
    sx, sy, c = np.broadcast_arrays(np.asarray(sigma_x, float), np.asarray(sigma_y, float),
                                    np.asarray(cov_xy, float))
    bound = np.abs(sx * sy)
    with np.errstate(invalid="ignore"):
        bad = np.abs(c) > bound * (1.0 + COV_RTOL)
    if bad.any() and invalid_cov == "error":
        rows = (np.flatnonzero(bad)[:5] + row0).tolist()
        k = int(bad.sum())
        raise InvalidCovarianceError(
            f"{source}: {k} row(s) of data rows {row0} to {row0 + bad.size - 1} have a position "
            f"covariance that is not positive semi-definite (|{columns[2]}| > {columns[0]} * {columns[1]}), e.g. rows {rows} "
            "(0-based data rows); check the columns (is it a correlation coefficient rather than "
            "a covariance in pixels**2? are the sigmas 1-sigma?), or correct them with a NaN "
            "uncertainty (invalid_cov='nan', --invalid-cov nan)")
    return bad, np.clip(c, -bound, bound)


def _usable(flag, x, y, extrapolate):
    use = np.ones(flag.shape, bool) if extrapolate else flag < FLAG_OUTSIDE
    return use & np.isfinite(x) & np.isfinite(y)


def _report_block(evaluator, source, n, nout, nbad, margin, extrapolate, columns,
                  usable):
    """The checks and warnings of a whole list (its blocks' totals)."""
    xmin, xmax, ymin, ymax = evaluator.domain
    if n and not usable:
        raise CorrectionInputError(
            f"{source}: none of the {n} positions lies within the domain of the solution "
            f"{evaluator.source} ({xmin} <= x <= {xmax}, {ymin} <= y <= {ymax}, 0-based "
            f"pixels) plus the margin of {margin:g} px (wrong solution, pixel convention or "
            "columns?)")
    if nout:
        log.warning("%s: %d of %d positions lie more than %g px outside the domain of %s "
                    "(flag 2): %s", source, nout, n, margin, evaluator.source,
                    "extrapolated as asked" if extrapolate else "not corrected (NaN)")
    if nbad:
        log.warning("%s: %d of %d positions have a covariance (%s, %s, %s) that is not positive "
                    "semi-definite: corrected with a NaN uncertainty, as asked", source, nbad, n,
                    *columns)


def _correct_block(evaluator, x, y, sigma_x, sigma_y, cov_xy, margin, extrapolate, factor,
                   source, invalid_cov, columns, row0=0):
    """:func:`correct_positions` without the whole-list checks; returns the result and the
    number of positions with an invalid input covariance."""
    n = x.size
    if cov_xy is not None and sigma_x is not None and sigma_y is not None:
        sigma_x, sigma_y, cov_xy = (np.broadcast_to(np.asarray(v, dtype=float), (n,))
                                    for v in (sigma_x, sigma_y, cov_xy))
    bad_cov, cov_xy = check_input_cov(sigma_x, sigma_y, cov_xy, source, columns, row0, invalid_cov)
    flag = domain_flags(evaluator, x, y, margin)
    use = _usable(flag, x, y, extrapolate)
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
    mc = ev.map_cov if ev.map_cov is not None else np.zeros_like(total)
    total[:, 0, 0] += mc[:, 0, 0]
    total[:, 1, 1] += mc[:, 1, 1]
    total[:, 0, 1] += mc[:, 0, 1]
    # J C J^T + C_map is positive semi-definite; keep it so through rounding
    # (shrunk by a few ulp so that cov_xy**2 <= var_x var_y holds in floating point too)
    lim = np.sqrt(np.clip(total[:, 0, 0], 0, None) * np.clip(total[:, 1, 1], 0, None))
    lim *= 1.0 - 4.0 * np.finfo(float).eps
    total[:, 0, 1] = np.clip(total[:, 0, 1], -lim, lim)
    total[:, 1, 0] = total[:, 0, 1]
    nbad = 0
    if bad_cov is not None and bad_cov.any():
        nbad = int(bad_cov.sum())
        total[bad_cov[idx]] = np.nan
    fac = evaluator.map_factor(x[idx], y[idx]) if factor else None
    if every:
        return Corrected(ev.lx, ev.ly, total, mc, flag, fac), nbad
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
    return Corrected(lx, ly, cov, map_cov, flag, fac), nbad


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
        raise CorrectionInputError(f"{path}: cannot tell the star-list format from the name; use one of "
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


def _check_out(path, out, overwrite):
    """The output's astropy format; refuses the input itself and an existing output."""
    if _same_file(path, out):
        raise CorrectionInputError(f"{out}: is the input star list; the input is never modified in "
                         "place: choose another output name")
    fmt = _output_format(out)
    check_writable(out, overwrite)
    return fmt


def _frame(evaluator, plate_scale, reference, one_based):
    """Pixel shift of the list's convention, plate scale and 0-based reference pixel."""
    shift = FITS_ORIGIN if one_based else 0.0
    scale = float(evaluator.plate_scale if plate_scale is None else plate_scale)
    if not (np.isfinite(scale) and scale > 0):
        raise CorrectionInputError(f"plate scale must be a positive number of arcsec/pixel, got {plate_scale!r}")
    if reference is None:
        ref = np.asarray(evaluator.boresight, dtype=float)
    else:
        ref = np.asarray(reference, dtype=float) - shift
        if ref.shape != (2,) or not np.isfinite(ref).all():
            raise CorrectionInputError(f"the reference must be two finite pixel coordinates, got {reference!r}")
    return shift, scale, ref


def _check_clash(colnames, path):
    clash = [c for c in NEW_COLUMNS if c in colnames]
    if clash:
        raise StarListError(f"{path}: already has column(s) {', '.join(clash)} (corrected "
                            "before?); start from the uncorrected list or rename them")


def _add_columns(t, res, shift, scale, ref):
    """Add the corrected columns of ``res`` to the input table ``t`` (in place)."""
    sig_x, sig_y = res.sigma
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
    if res.factor is not None:
        t["map_factor"] = res.factor * u.pix
        t["map_factor"].description = ("posterior map factor F_i (2, r): cov(lin_i, lin_j) "
                                        "= F_i F_j^T (+ map_white_cov if i = j)")
    return t


def _meta(evaluator, shift, scale, ref, margin, extrapolate, input_columns, cov_name, has_errors,
          n_outside, invalid_cov, n_invalid_cov, factor_rank):
    conv = "1-based (FITS)" if shift else "0-based"
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
        "input_columns": {k: v for k, v in input_columns.items() if v is not None},
        "input_cov_xy_column": cov_name,
        "input_has_errors": has_errors,
        "solution_has_uncertainty": bool(evaluator.has_uncertainty),
        "offset_definition": "offset = measured position - linear-grid position (pixels)",
        "n_outside_margin": int(n_outside),
        "invalid_input_cov": invalid_cov,
        "n_invalid_input_cov": int(n_invalid_cov),
        "creator": f"astrocal {__version__}",
    }
    if factor_rank is not None:
        meta["map_factor_rank"] = int(factor_rank)
        white = getattr(evaluator, "white_cov", None)
        meta["map_white_cov"] = (np.zeros((2, 2)) if white is None else np.asarray(white, float)).tolist()
    return meta


def correct_star_list(path: str | os.PathLike, evaluator: Evaluator, out: str | os.PathLike | None = None, *,
                      x_col: str | int | None = None, y_col: str | int | None = None,
                      sigma_x_col: str | int | None = None, sigma_y_col: str | int | None = None,
                      cov_xy_col: str | int | None = None, one_based: bool | None = None, format: str | None = None,
                      margin: float = DEFAULT_MARGIN, extrapolate: bool = False, plate_scale: float | None = None,
                      reference: tuple[float, float] | None = None, overwrite: bool = False,
                      invalid_cov: str = "error") -> Table:
    """Correct the positions of a star list; write it to ``out`` (if given) and return it.

    The whole list is held in memory; :func:`correct_star_list_file` writes the same file
    from a list of any length in bounded memory.

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
    margin, extrapolate, invalid_cov :
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
    fmt_out = _check_out(path, out, overwrite) if out is not None else None
    stars = read_star_list(path, x_col=x_col, y_col=y_col, sigma_x_col=sigma_x_col,
                           sigma_y_col=sigma_y_col, one_based=one_based, format=format)
    raw = read_list_table(path, stars.meta["format"])
    if len(raw) != len(stars):
        raise StarListError(f"{path}: read {len(stars)} stars but the table has {len(raw)} rows")
    _check_clash(raw.colnames, path)
    x = np.asarray(stars["x"], dtype=float)
    y = np.asarray(stars["y"], dtype=float)
    sx = np.asarray(stars["sigma_x"], dtype=float) if "sigma_x" in stars.colnames else None
    sy = np.asarray(stars["sigma_y"], dtype=float) if "sigma_y" in stars.colnames else None
    cxy, cov_name = _raw_cov(raw, cov_xy_col, path) if sx is not None else (None, None)
    if sx is None:
        log.warning("%s: the list gives no position errors; the stated uncertainty is the "
                    "solution's only", path)
    cols = stars.meta["columns"]
    res = correct_positions(evaluator, x, y, sx, sy, cxy, margin=margin,
                            extrapolate=extrapolate, factor=evaluator.kind == "posterior",
                            source=str(path), invalid_cov=invalid_cov,
                            columns=(cols.get("sigma_x"), cols.get("sigma_y"), cov_name))
    shift, scale, ref = _frame(evaluator, plate_scale, reference, stars.meta["one_based_input"])
    t = _add_columns(raw.copy(copy_data=True), res, shift, scale, ref)
    nbad = int(np.count_nonzero(np.isnan(res.cov[:, 0, 0]) & np.isfinite(res.lx))) \
        if invalid_cov == "nan" and cxy is not None else 0
    t.meta["astrocal_correct"] = _meta(
        evaluator, shift, scale, ref, margin, extrapolate, cols, cov_name, sx is not None,
        np.count_nonzero(res.flag == FLAG_OUTSIDE), invalid_cov, nbad,
        None if res.factor is None else res.factor.shape[-1])
    if out is not None:
        _write(t, out, fmt_out, overwrite)
        log.info("%s -> %s: %d stars corrected with %s", path, out, int(np.isfinite(res.lx).sum()),
                 evaluator.describe())
    return t


# ------------------------------------------------------------------ lists of any length
def _resolve_columns(t0, path, x_col, y_col, sigma_x_col, sigma_y_col, one_based, text_like=False):
    """Columns of the first block of a list (ECSV, CSV, FITS, plain text), chosen as
    :func:`astrocal.sky.starlist.read_star_list` chooses them (a plain text list without a
    names line: x, y and flux are its first three columns unless named)."""
    flux_col = None
    if text_like:
        x_col, y_col, flux_col = sl.positional_columns(t0.colnames, x_col, y_col)
    xn = sl._find(t0, x_col, sl._X_NAMES, "star x position", path, "x_col")
    yn = sl._find(t0, y_col, sl._Y_NAMES, "star y position", path, "y_col")
    fn = sl._find(t0, flux_col, sl._FLUX_NAMES, "flux", path, False)
    fen = sl._find(t0, None, sl._FLUX_ERR_NAMES, "flux error", path, False) if fn else None
    mn = sl._find(t0, None, sl._MAG_NAMES, "magnitude", path, False)
    men = sl._find(t0, None, sl._MERR_NAMES, "magnitude error", path, False) if mn else None
    sxn = sl._find(t0, sigma_x_col, sl._SX_NAMES, "x error", path, False)
    syn = sl._find(t0, sigma_y_col, sl._SY_NAMES, "y error", path, False)
    if (sxn is None) != (syn is None):
        raise StarListError(f"{path}: position errors need both an x and a y column (found only "
                            f"'{sxn or syn}')")
    if len({xn, yn}) < 2:
        raise StarListError(f"{path}: x and y are the same column '{xn}'")
    for name in (xn, yn, sxn, syn):
        if name is not None and not sl._pixel_unit(getattr(t0[name], "unit", None)):
            raise StarListError(f"{path}: column '{name}' has unit '{t0[name].unit}'; expected pixels")
    columns = {"x": xn, "y": yn}
    if fn is not None:
        columns["flux"] = fn
        if fen is not None:
            columns["flux_err"] = fen
    elif mn is not None:
        columns["flux"] = f"10**(-0.4 ({mn} - {sl.DAOPHOT_ZERO_POINT:g}))"
        if men is not None:
            columns["flux_err"] = f"from {men}"
    else:
        columns["flux"] = None
    if mn is not None:
        columns["mag"] = mn
    if sxn is not None:
        columns["sigma_x"], columns["sigma_y"] = sxn, syn
    if one_based is None:
        one_based = xn.lower() in sl._ONE_BASED_X
    return columns, bool(one_based)


def _block_positions(t, columns, one_based, path, row0):
    """x, y (0-based) and sigma_x, sigma_y (or None) of a block, checked as
    :func:`astrocal.sky.starlist.read_star_list` checks them (rows counted from ``row0``)."""
    xn, yn = columns["x"], columns["y"]
    x, _ = sl._values(t, xn, "star x position", path)
    y, _ = sl._values(t, yn, "star y position", path)
    bad = ~(np.isfinite(x) & np.isfinite(y))
    if np.any(bad):
        rows = (np.nonzero(bad)[0][:10] + row0).tolist()
        raise StarListError(f"{path}: columns '{xn}', '{yn}': missing or non-finite positions in "
                            f"rows {rows} (0-based data rows)")
    if one_based:
        x, y = x - FITS_ORIGIN, y - FITS_ORIGIN
    sig = []
    for name in ("sigma_x", "sigma_y"):
        col = columns.get(name)
        if col is None:
            return x, y, None, None
        v, _ = sl._values(t, col, name, path)
        if np.any(v[np.isfinite(v)] < 0):
            rows = (np.nonzero(np.isfinite(v) & (v < 0))[0][:10] + row0).tolist()
            raise StarListError(f"{path}: column '{col}' ({name}) is negative in rows {rows}")
        sig.append(v)
    return x, y, sig[0], sig[1]


def correct_star_list_file(path: str | os.PathLike, evaluator: Evaluator, out: str | os.PathLike, *,
                           x_col: str | int | None = None, y_col: str | int | None = None,
                           sigma_x_col: str | int | None = None, sigma_y_col: str | int | None = None,
                           cov_xy_col: str | int | None = None, one_based: bool | None = None,
                           format: str | None = None, margin: float = DEFAULT_MARGIN, extrapolate: bool = False,
                           plate_scale: float | None = None, reference: tuple[float, float] | None = None,
                           overwrite: bool = False, invalid_cov: str = "error",
                           chunk_rows: int | None = None) -> dict:
    """Correct a star list of any length into ``out``, in blocks of rows (bounded memory).

    ECSV, CSV and FITS lists are read and written ``chunk_rows`` rows at a time
    (:mod:`astrocal.correct.chunks`): memory stays bounded whatever the length, time is
    linear in it, and the output is byte for byte the file :func:`correct_star_list`
    writes.  Other formats (plain text, DAOPHOT, IRAF) are read whole.

    Parameters
    ----------
    path, evaluator, out, x_col, y_col, sigma_x_col, sigma_y_col, cov_xy_col, one_based, \
format, margin, extrapolate, plate_scale, reference, overwrite, invalid_cov :
        As :func:`correct_star_list` (``out`` is required).
    chunk_rows : int, optional
        Rows per block; default :data:`astrocal.correct.chunks.DEFAULT_CHUNK_ROWS`, fewer
        for a posterior solution (whose map factor adds ``2 r`` values per row).

    Returns
    -------
    dict
        ``n`` rows, ``n_inside``, ``n_margin``, ``n_outside`` (domain flags 0, 1, 2),
        ``n_corrected`` (finite ``x_lin``), ``chunks`` (blocks read, all passes).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"star list not found: {path}")
    fmt = guess_format(path) if format is None else str(format).lower()
    if fmt not in CHUNKED_FORMATS:
        t = correct_star_list(path, evaluator, out, x_col=x_col, y_col=y_col,
                              sigma_x_col=sigma_x_col, sigma_y_col=sigma_y_col,
                              cov_xy_col=cov_xy_col, one_based=one_based, format=fmt,
                              margin=margin, extrapolate=extrapolate, plate_scale=plate_scale,
                              reference=reference, overwrite=overwrite, invalid_cov=invalid_cov)
        flags = np.asarray(t["domain_flag"])
        return {"n": len(t), "n_inside": int((flags == FLAG_INSIDE).sum()),
                "n_margin": int((flags == FLAG_MARGIN).sum()),
                "n_outside": int((flags == FLAG_OUTSIDE).sum()),
                "n_corrected": int(np.isfinite(np.asarray(t["x_lin"], float)).sum()), "chunks": 1}
    fmt_out = _check_out(path, out, overwrite)
    want_factor = evaluator.kind == "posterior"
    if chunk_rows is None:
        chunk_rows = DEFAULT_CHUNK_ROWS
        if want_factor:  # ~ 2e7 values of the map factor per block
            rank = evaluator.map_factor([evaluator.boresight[0]], [evaluator.boresight[1]]).shape[-1]
            chunk_rows = max(1000, min(chunk_rows, int(1e7 // (2 * rank + 1))))
    chunk_rows = int(chunk_rows)
    if chunk_rows < 1:
        raise CorrectionInputError(f"chunk_rows must be >= 1, got {chunk_rows}")
    if fmt_out != "fits" and want_factor and fmt_out != "ascii.ecsv":
        log.warning("%s: a %s file cannot hold the posterior's map factor column; write .ecsv "
                    "or .fits to keep the correlations between stars", out, fmt_out)

    schema = Schema()
    nchunks = 0
    done = False
    for _attempt in range(2):
        writer = ChunkWriter(out, fmt_out, overwrite)
        tot = dict(n=0, n_inside=0, n_margin=0, n_outside=0, n_corrected=0, nbad=0, usable=0)
        state = {}
        try:
            for row0, raw in iter_chunks(path, fmt, chunk_rows):
                nchunks += 1
                widened = schema.widen(raw, str(path), row0)
                if widened is not schema:
                    if row0 > 0:
                        raise SchemaChanged(widened)
                    schema = widened
                schema.conform(raw)
                if not state:
                    _check_clash(raw.colnames, path)
                    columns, one_b = _resolve_columns(raw, path, x_col, y_col, sigma_x_col,
                                                      sigma_y_col, one_based, text_like=fmt == "text")
                    state.update(columns=columns, one_based=one_b,
                                 frame=_frame(evaluator, plate_scale, reference, one_b))
                    if "sigma_x" not in columns:
                        log.warning("%s: the list gives no position errors; the stated "
                                    "uncertainty is the solution's only", path)
                columns = state["columns"]
                if row0 == 0 and len(raw) == 0:
                    raise StarListError(f"{path}: the star list has no rows")
                if len(raw) == 0:
                    continue
                x, y, sx, sy = _block_positions(raw, columns, state["one_based"], path, row0)
                cxy, cov_name = _raw_cov(raw, cov_xy_col, path) if sx is not None else (None, None)
                state["cov_name"] = cov_name
                res, nbad = _correct_block(
                    evaluator, x, y, sx, sy, cxy, margin, extrapolate, want_factor, str(path),
                    invalid_cov, (columns.get("sigma_x"), columns.get("sigma_y"), cov_name), row0)
                shift, scale, ref = state["frame"]
                t = _add_columns(raw, res, shift, scale, ref)
                if "map_factor" in t.colnames and fmt_out not in ("fits", "ascii.ecsv"):
                    t.remove_column("map_factor")
                state["rank"] = None if res.factor is None else res.factor.shape[-1]
                writer.write(t)
                flag = res.flag
                tot["n"] += len(t)
                tot["n_inside"] += int(np.count_nonzero(flag == FLAG_INSIDE))
                tot["n_margin"] += int(np.count_nonzero(flag == FLAG_MARGIN))
                tot["n_outside"] += int(np.count_nonzero(flag == FLAG_OUTSIDE))
                tot["n_corrected"] += int(np.count_nonzero(np.isfinite(res.lx)))
                tot["usable"] += int(np.count_nonzero(_usable(flag, x, y, extrapolate)))
                tot["nbad"] += nbad
            _report_block(evaluator, str(path), tot["n"], tot["n_outside"], tot["nbad"], margin,
                          extrapolate, (columns.get("sigma_x"), columns.get("sigma_y"),
                                        state.get("cov_name")), tot["usable"])
            shift, scale, ref = state["frame"]
            meta = _meta(evaluator, shift, scale, ref, margin, extrapolate, columns,
                         state.get("cov_name"), "sigma_x" in columns, tot["n_outside"],
                         invalid_cov, tot["nbad"], state.get("rank"))
            writer.close(_output_meta(writer.template_meta(), meta, fmt_out))
        except SchemaChanged as exc:
            writer.abort()
            log.info("%s: column types change down the file; reading it again with %s",
                     path, ", ".join(f"{k}: {v[0]}" for k, v in exc.schema.columns.items()))
            schema = exc.schema
            for row0, raw in iter_chunks(path, fmt, chunk_rows):  # the final schema, once
                nchunks += 1
                schema = schema.widen(raw, str(path), row0)
            continue
        except BaseException:
            writer.abort()
            raise
        done = True
        break
    if not done:
        raise CorrectionInputError(f"{path}: column types kept changing between two readings; nothing "
                           f"written to {out}")
    log.info("%s -> %s: %d stars corrected with %s (%d blocks of <= %d rows)", path, out,
             tot["n_corrected"], evaluator.describe(), nchunks, chunk_rows)
    return {k: tot[k] for k in ("n", "n_inside", "n_margin", "n_outside", "n_corrected")} | \
        {"chunks": nchunks}


def _output_meta(raw_meta, meta, fmt):
    """The output's metadata as :func:`_write` makes it: the input's, with the correction's
    under ``astrocal_correct`` (ECSV), as keywords and HISTORY (FITS) or comments."""
    if fmt == "ascii.ecsv":
        out = dict(raw_meta)
        out["astrocal_correct"] = meta
        return out
    if fmt == "fits":
        return _fits_meta(raw_meta, meta)
    return {"comments": [f"astrocal correct: {k} = {v}" for k, v in meta.items()]}


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
           "InvalidCovarianceError", "check_input_cov", "correct_positions",
           "correct_star_list", "correct_star_list_file", "domain_flags"]
