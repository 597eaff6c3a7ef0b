"""AstroMet FITS files in the layout of the XMM-Newton OM calibration file (CCF).

Layout (one file, several filters):

- primary HDU: instrument, filter list, date, software, provenance;
- ``FILTER-<ID>`` binary table per filter: the forward offsets sampled on a regular grid
  of linear-grid positions every ``STEP`` pixels, columns ``RAWX``, ``RAWY`` (linear-grid
  position, FITS 1-based pixels), ``RAWX_OFF``, ``RAWY_OFF`` (offset = measured minus
  linear-grid position, pixels) and, when the solution has uncertainties,
  ``RAWX_OFF_ERR``, ``RAWY_OFF_ERR`` (1 sigma, pixels).  Its header holds the linear
  grid (``PLTSCALE`` arcsec/pixel, boresight ``BORESX``/``BORESY`` 1-based, ``LINROT``,
  ``PARITY``, ``FPREFU``/``FPREFV``) and the largest differences between the polynomials
  and the field (``POLYERR``, ``POLY2ERR``);
- ``POLYNOM_MAP``: one row per filter, ``FILTER_ID`` (9A), ``PLTSCALE`` (E),
  ``XPOLYCOEF``, ``YPOLYCOEF`` (36E): the forward offsets as a 7th-order polynomial in
  ``X, Y`` = linear-grid position minus boresight (pixels), AstroMet term order;
- ``POLYNOM_MAP2``: same layout, the reverse offsets as a polynomial of the measured
  position minus boresight: subtract them from a distorted position to obtain the
  linear-grid position.

See :mod:`astrocal.solution` for the definitions of the linear grid and the offsets.
"""
from __future__ import annotations

import datetime as _dt
import logging
import os
from typing import Callable, Sequence
from dataclasses import dataclass, field as dc_field
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

from .. import __version__
from ..atomic import atomic_path
from ..errors import AstrocalError
from ..field import DistortionField, invert
from ..field.basis import evaluate_monomial
from ..field.inverse import dense_grid, output_domain
from ..field.orderings import ASTROMET_DEGREE, from_astromet, to_astromet, trim_monomials
from ..pixels import detector_domain, from_fits, to_fits
from ..solution import Solution

log = logging.getLogger(__name__)

OFFSET_DEFINITION = "offset = measured position - linear-grid position (pixels)"
PIXEL_CONVENTION = "FITS 1-based pixels: centre of the first pixel is 1.0"
REQUIRED_TABLE_COLUMNS = ("RAWX", "RAWY", "RAWX_OFF", "RAWY_OFF")
REQUIRED_POLY_COLUMNS = ("FILTER_ID", "PLTSCALE", "XPOLYCOEF", "YPOLYCOEF")


#: a FILTER-<ID> table may differ from POLYNOM_MAP by up to TABLE_POLY_FACTOR * POLYERR
#: + TABLE_POLY_TOL * (largest offset) before it is called inconsistent (single precision,
#: and the table's grid reaches up to one step beyond the detector where POLYERR is measured)
TABLE_POLY_FACTOR = 10.0
TABLE_POLY_TOL = 1e-3


class AstroMetFormatError(AstrocalError, ValueError):
    """An AstroMet file lacks an extension, a column or a keyword, or holds bad values."""


class AstroMetFilterError(AstroMetFormatError, KeyError):
    """A filter that an AstroMet file does not hold (also a ``KeyError``)."""


# =========================================================================== writing
def _check_filter_id(fid):
    fid = str(fid).strip()
    if not fid or len(fid) > 9 or not fid.replace("_", "").replace("-", "").isalnum():
        raise AstroMetFormatError(
            f"filter id {fid!r} must be 1 to 9 letters, digits, '-' or '_' (FILTER_ID is 9A)"
        )
    return fid


def _grid_positions(n, step):
    """1-based grid positions 1, 1+step, ... up to the first one >= n."""
    k = int(np.ceil((n - 1) / step))
    return 1.0 + step * np.arange(k + 1)


def _polynomial_error(mono, ref_field, x, y, origin, dtype):
    """Largest |polynomial(x, y) - ref_field(x, y)| with coefficients rounded to ``dtype``."""
    mx = np.asarray(mono[0], dtype=dtype).astype(float)
    my = np.asarray(mono[1], dtype=dtype).astype(float)
    ex = evaluate_monomial(mx, x - origin[0], y - origin[1])
    ey = evaluate_monomial(my, x - origin[0], y - origin[1])
    rx, ry = ref_field(x, y)
    return float(np.max(np.hypot(ex - rx, ey - ry)))


@dataclass
class _FilterProduct:
    filter_id: str
    table_hdu: fits.BinTableHDU
    poly: np.ndarray  # (2, 36)
    poly2: np.ndarray  # (2, 36)
    plate_scale: float


def _filter_product(sol, step, dtype):
    fid = _check_filter_id(sol.filter)
    ny, nx = sol.detector_shape
    b = sol.boresight
    lin = sol.linear_field()
    d2 = sol.reverse_offset_field()
    gx, gy = dense_grid(d2.domain, 129)

    # reverse: exact for degree <= 7; above, the least-squares degree-7 truncation
    d2_7 = d2.with_degree(min(d2.degree, ASTROMET_DEGREE))
    mono2 = d2_7.to_monomials(origin=b)
    poly2 = np.vstack([to_astromet(mono2[0]), to_astromet(mono2[1])])
    err2 = _polynomial_error(mono2, sol.reverse_offsets, gx, gy, b, dtype)  # against the full field

    # forward offsets D(l) = L^-1(l) - l as a degree-7 fit over the linear-grid image of
    # the detector; its error is measured against the exact inverse on a dense grid
    ldom = output_domain(lin)
    # (degree fixed by the layout: its error is measured below and stated in POLYERR)
    fwd = invert(lin, degree=ASTROMET_DEGREE, tol=np.inf).field  # linear grid -> detector
    d_fwd = fwd - DistortionField.identity(ldom, degree=fwd.degree)
    mono = d_fwd.to_monomials(origin=b)
    poly = np.vstack([to_astromet(mono[0]), to_astromet(mono[1])])
    lx, ly = sol.linear_positions(gx, gy)  # exact linear-grid images (full field) of dense detector points
    ex = evaluate_monomial(np.asarray(mono[0], dtype=dtype).astype(float), lx - b[0], ly - b[1])
    ey = evaluate_monomial(np.asarray(mono[1], dtype=dtype).astype(float), lx - b[0], ly - b[1])
    err = float(np.max(np.hypot(lx + ex - gx, ly + ey - gy)))

    # sampled table: exact forward offsets on the regular linear grid
    rx1, ry1 = _grid_positions(nx, step), _grid_positions(ny, step)
    yy, xx = np.meshgrid(from_fits(ry1), from_fits(rx1), indexing="ij")
    ox, oy = sol.forward_offsets(xx.ravel(), yy.ravel())
    fmt = "E" if dtype == np.float32 else "D"
    cols = [
        fits.Column("RAWX", fmt, unit="pixel", array=to_fits(xx.ravel())),
        fits.Column("RAWY", fmt, unit="pixel", array=to_fits(yy.ravel())),
        fits.Column("RAWX_OFF", fmt, unit="pixel", array=ox),
        fits.Column("RAWY_OFF", fmt, unit="pixel", array=oy),
    ]
    if sol.sigma is not None:
        sx, sy = sol.sigma(xx.ravel() + ox, yy.ravel() + oy)
        sx = np.broadcast_to(np.asarray(sx, dtype=float), ox.shape)
        sy = np.broadcast_to(np.asarray(sy, dtype=float), oy.shape)
        cols += [fits.Column("RAWX_OFF_ERR", fmt, unit="pixel", array=sx),
                 fits.Column("RAWY_OFF_ERR", fmt, unit="pixel", array=sy)]
    hdu = fits.BinTableHDU.from_columns(cols, name=f"FILTER-{fid}")
    h = hdu.header
    h["FILTER"] = (fid, "filter identifier")
    h["PLTSCALE"] = (sol.plate_scale, "[arcsec/pixel] linear-grid plate scale")
    h["BORESX"] = (float(to_fits(b[0])), "[pixel] boresight x, FITS 1-based")
    h["BORESY"] = (float(to_fits(b[1])), "[pixel] boresight y, FITS 1-based")
    h["LINROT"] = (sol.rotation, "[deg] detector x axis in focal plane")
    h["PARITY"] = (sol.parity, "-1 if the detector image is flipped")
    u0, v0 = sol.reference_position
    h["FPREFU"] = (u0, "[arcsec] focal-plane u of boresight")
    h["FPREFV"] = (v0, "[arcsec] focal-plane v of boresight")
    h["STEP"] = (int(step), "[pixel] grid step of the table")
    h["DETNAXI1"] = (int(nx), "[pixel] detector size along x")
    h["DETNAXI2"] = (int(ny), "[pixel] detector size along y")
    h["DEGREE"] = (int(sol.field.degree), "total degree of the field")
    h["POLYERR"] = (err, "[pixel] max |POLYNOM_MAP - field|")
    h["POLY2ERR"] = (err2, "[pixel] max |POLYNOM_MAP2 - field|")
    h["HASERR"] = (sol.sigma is not None, "error columns present")
    h["RESIDUAL"] = (sol.residual is not None, "field holds a residual beyond the polynomial")
    h["COMMENT"] = "RAWX, RAWY: linear-grid positions, " + PIXEL_CONVENTION
    h["COMMENT"] = OFFSET_DEFINITION
    h["COMMENT"] = "distorted position = linear-grid position + offset"
    if sol.residual is not None:
        h["COMMENT"] = ("the table samples the full field (polynomial + residual field); the "
                        "polynomials hold the polynomial part, POLYERR/POLY2ERR their difference")
    if sol.field.degree > ASTROMET_DEGREE:
        h["COMMENT"] = (f"field of degree {sol.field.degree} > 7: the table keeps its full "
                        "detail, the polynomials are degree-7 approximations")
    return _FilterProduct(fid, hdu, poly, poly2, sol.plate_scale)


def _poly_hdu(name, products, which, fmt):
    ids = np.array([p.filter_id for p in products])
    coeff = np.array([getattr(p, which) for p in products])  # (nfilt, 2, 36)
    cols = [
        fits.Column("FILTER_ID", "9A", array=ids),
        fits.Column("PLTSCALE", fmt, unit="arcsec/pixel", array=[p.plate_scale for p in products]),
        fits.Column("XPOLYCOEF", f"36{fmt}", array=coeff[:, 0, :]),
        fits.Column("YPOLYCOEF", f"36{fmt}", array=coeff[:, 1, :]),
    ]
    hdu = fits.BinTableHDU.from_columns(cols, name=name)
    h = hdu.header
    h["POLYDEG"] = (ASTROMET_DEGREE, "polynomial order")
    h["ORDERDEF"] = "k: p=0..7 (power of X) outer, q=0..7-p (power of Y) inner"
    if which == "poly":
        h["COMMENT"] = ("forward: X, Y = linear-grid position - boresight (pixels); "
                        "distorted = linear + offset")
    else:
        h["COMMENT"] = ("reverse: X, Y = measured position - boresight (pixels); "
                        "linear = measured - offset")
    h["COMMENT"] = OFFSET_DEFINITION
    h["COMMENT"] = "boresight per filter: BORESX/BORESY in FILTER-<ID> headers (1-based)"
    return hdu


def write_astromet(path: str | os.PathLike, solutions: Solution | Sequence[Solution], instrument: str = "",
                   step: int = 25, overwrite: bool = False, provenance: dict | None = None,
                   precision: str = "single", cards: Sequence[tuple] = (), history: Sequence[str] = ()) -> Path:
    """Write one or more :class:`~astrocal.solution.Solution` to an AstroMet FITS file.

    Parameters
    ----------
    path : path-like
        Destination; refused if it exists unless ``overwrite``.  Written atomically.
    solutions : Solution or sequence of Solution
        One per filter (distinct ``filter`` ids of at most 9 characters).
    instrument : str
        ``INSTRUME`` keyword.
    step : int
        Grid step (pixels) of the sampled ``FILTER-<ID>`` tables (the CCF uses 25).
    overwrite : bool
        Replace an existing file.
    provenance : dict, optional
        Keyword/value pairs written to the primary header (strings are shortened to fit)
        and as HISTORY: software version, campaign hash, input files, fit settings.
    precision : "single" or "double"
        ``"single"`` writes E/36E columns as the CCF does; ``"double"`` writes D/36D.
    cards : sequence of (keyword, value, comment)
        Extra primary-header cards as they are (a fit's quality flags).
    history : sequence of str
        Primary-header HISTORY lines (a conversion's provenance and what it did not carry).

    Returns
    -------
    pathlib.Path
        The path written.
    """
    if isinstance(solutions, Solution):
        solutions = [solutions]
    solutions = list(solutions)
    if not solutions:
        raise ValueError("write_astromet needs at least one solution")
    if int(step) < 1:
        raise AstroMetFormatError(f"grid step must be a positive number of pixels, got {step!r}")
    if precision not in ("single", "double"):
        raise ValueError(f"precision must be 'single' or 'double', got {precision!r}")
    dtype = np.float32 if precision == "single" else np.float64
    fmt = "E" if precision == "single" else "D"
    ids = [_check_filter_id(s.filter) for s in solutions]
    if len(set(ids)) != len(ids):
        raise AstroMetFormatError(f"filter ids must be distinct, got {ids}")
    products = [_filter_product(s, int(step), dtype) for s in solutions]

    primary = fits.PrimaryHDU()
    h = primary.header
    h["TELESCOP"] = ("", "telescope")
    h["INSTRUME"] = (str(instrument), "instrument")
    h["CCFTYPE"] = ("ASTROMET", "calibration file type (XMM-OM CCF layout)")
    h["NFILTERS"] = (len(products), "number of FILTER-<ID> extensions")
    h["FILTERS"] = (",".join(ids), "filter ids, comma separated")
    h["DATE"] = (_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"), "UTC creation date")
    h["CREATOR"] = (f"astrocal {__version__}", "software")
    h["PIXCONV"] = PIXEL_CONVENTION
    h["OFFSDEF"] = OFFSET_DEFINITION
    for key, value in (provenance or {}).items():
        _put_provenance(h, key, value)
    for key, value, comment in cards or ():
        h[key] = (value, comment)
    for line in history or ():
        h.add_history(str(line))
    hdus = [primary] + [p.table_hdu for p in products]
    hdus.append(_poly_hdu("POLYNOM_MAP", products, "poly", fmt))
    hdus.append(_poly_hdu("POLYNOM_MAP2", products, "poly2", fmt))
    with atomic_path(path, overwrite) as tmp:
        fits.HDUList(hdus).writeto(tmp)
    return Path(path)


def _put_provenance(header, key, value):
    text = value if isinstance(value, (bool, int, float)) else str(value)
    header.add_history(f"{key} = {text}")
    card_key = key.upper() if len(key) <= 8 and key.isalnum() else f"HIERARCH ASTROCAL {key.upper()}"
    if isinstance(text, str) and len(text) > 40:
        text = text[:37] + "..."
    header[card_key] = text


# =========================================================================== reading
@dataclass
class AstroMetFilter:
    """One filter of an AstroMet file, as read.

    ``table`` is the ``FILTER-<ID>`` table (positions 1-based as in the file);
    ``poly`` / ``poly2`` are ``(2, 36)`` arrays of the forward / reverse coefficients;
    ``boresight`` is 0-based.
    """

    filter_id: str
    table: Table
    poly: np.ndarray
    poly2: np.ndarray
    plate_scale: float
    boresight: tuple
    rotation: float
    parity: int
    reference_position: tuple
    detector_shape: tuple
    header: fits.Header = dc_field(repr=False)
    source: str = ""

    @property
    def has_errors(self) -> bool:
        """The table has the error columns RAWX_OFF_ERR and RAWY_OFF_ERR."""
        return "RAWX_OFF_ERR" in self.table.colnames and "RAWY_OFF_ERR" in self.table.colnames

    def table_grid(self) -> tuple[np.ndarray, np.ndarray, dict]:
        """The ``FILTER-<ID>`` table checked and as planes on its grid.

        Returns
        -------
        xs, ys : numpy.ndarray
            The sorted 1-based RAWX, RAWY values of the grid.
        planes : dict
            Column name -> (ny, nx) array.

        Raises
        ------
        AstroMetFormatError
            Naming the extension and the column when the table is not a complete regular
            grid (missing or repeated RAWX, RAWY pairs, fewer than 4 x 4 points, a wrong
            number of rows), holds NaN, has negative errors, or disagrees with POLYNOM_MAP
            far beyond the header's POLYERR (:data:`TABLE_POLY_TOL`): a corrupted or
            inconsistent table.
        """
        ext = f"FILTER-{self.filter_id}"
        where = f"{self.source}: extension {ext}"
        t = self.table
        rx = np.asarray(t["RAWX"], dtype=float)
        ry = np.asarray(t["RAWY"], dtype=float)
        for name, v in (("RAWX", rx), ("RAWY", ry)):
            if not np.isfinite(v).all():
                raise AstroMetFormatError(f"{where} column {name} holds NaN or infinite values")
        xs, ys = np.unique(rx), np.unique(ry)
        if xs.size * ys.size != len(t) or xs.size < 4 or ys.size < 4:
            raise AstroMetFormatError(
                f"{where} is not a complete regular grid of RAWX, RAWY ({len(t)} rows, {xs.size} "
                f"x and {ys.size} y values; at least 4 x 4 needed)")
        order = np.lexsort((rx, ry))
        ix = np.searchsorted(xs, rx[order])
        iy = np.searchsorted(ys, ry[order])
        if not (np.array_equal(ix, np.tile(np.arange(xs.size), ys.size))
                and np.array_equal(iy, np.repeat(np.arange(ys.size), xs.size))):
            raise AstroMetFormatError(f"{where} repeats RAWX, RAWY pairs: not a regular grid")
        planes = {}
        names = [n for n in ("RAWX_OFF", "RAWY_OFF", "RAWX_OFF_ERR", "RAWY_OFF_ERR")
                 if n in t.colnames]
        for name in names:
            col = np.asarray(t[name], dtype=float)
            if col.ndim != 1:
                raise AstroMetFormatError(f"{where} column {name} has shape {col.shape[1:]} per "
                                          "row; one value per row expected")
            if not np.isfinite(col).all():
                bad = int(np.count_nonzero(~np.isfinite(col)))
                raise AstroMetFormatError(f"{where} column {name} holds {bad} NaN or infinite "
                                          "value(s)")
            if name.endswith("_ERR") and np.any(col < 0):
                raise AstroMetFormatError(f"{where} column {name} holds negative errors")
            planes[name] = col[order].reshape(ys.size, xs.size)
        # the table against POLYNOM_MAP: the header's POLYERR bounds their difference
        yy, xx = np.meshgrid(ys, xs, indexing="ij")
        b = self.boresight
        mx, my = self.forward_monomials()
        dx = xx - (b[0] + 1.0)
        dy = yy - (b[1] + 1.0)
        px = evaluate_monomial(mx, dx, dy)
        py = evaluate_monomial(my, dx, dy)
        diff = np.hypot(px - planes["RAWX_OFF"], py - planes["RAWY_OFF"])
        polyerr = float(self.header.get("POLYERR", 0.0) or 0.0)
        scale = max(1.0, float(np.max(np.abs(planes["RAWX_OFF"]))),
                    float(np.max(np.abs(planes["RAWY_OFF"]))))
        limit = TABLE_POLY_FACTOR * polyerr + TABLE_POLY_TOL * scale
        worst = float(diff.max())
        if worst > limit:
            k = int(np.argmax(diff))
            raise AstroMetFormatError(
                f"{where} columns RAWX_OFF, RAWY_OFF disagree with POLYNOM_MAP by up to "
                f"{worst:.4g} px (at RAWX = {xx.flat[k]:g}, RAWY = {yy.flat[k]:g}), far beyond "
                f"POLYERR = {polyerr:.3g} px: the table or the polynomials are corrupted")
        return xs, ys, planes

    def sigma_function(self) -> Callable | None:
        """The position errors of the table as a function of measured position.

        From the RAWX_OFF_ERR/RAWY_OFF_ERR columns (tabulated at linear-grid positions,
        interpolated by a bicubic spline at ``l = p - POLYNOM_MAP2(p)``).

        Returns
        -------
        callable or None
            ``sigma(x, y) -> (sigma_x, sigma_y)`` at measured positions (0-based pixels);
            None without error columns.
        """
        if not self.has_errors:
            return None
        from scipy.interpolate import RectBivariateSpline

        xs, ys, planes = self.table_grid()
        xs0, ys0 = from_fits(xs), from_fits(ys)
        splines = [RectBivariateSpline(ys0, xs0, planes[n], kx=3, ky=3, s=0)
                   for n in ("RAWX_OFF_ERR", "RAWY_OFF_ERR")]
        mx2, my2 = self.reverse_monomials()
        b = self.boresight

        def sigma(x, y):
            x = np.asarray(x, dtype=float)
            y = np.asarray(y, dtype=float)
            lx = x - evaluate_monomial(mx2, x - b[0], y - b[1])
            ly = y - evaluate_monomial(my2, x - b[0], y - b[1])
            out = [np.clip(s.ev(ly.ravel(), lx.ravel()), 0.0, None).reshape(np.shape(lx))
                   for s in splines]
            return out[0], out[1]

        return sigma

    def reverse_monomials(self) -> tuple[np.ndarray, np.ndarray]:
        """POLYNOM_MAP2 as square monomial arrays in (measured - boresight).

        Returns
        -------
        mx, my : numpy.ndarray
            The x and y monomial coefficient arrays.
        """
        return from_astromet(self.poly2[0]), from_astromet(self.poly2[1])

    def forward_monomials(self) -> tuple[np.ndarray, np.ndarray]:
        """POLYNOM_MAP as square monomial arrays in (linear-grid - boresight).

        Returns
        -------
        mx, my : numpy.ndarray
            The x and y monomial coefficient arrays.
        """
        return from_astromet(self.poly[0]), from_astromet(self.poly[1])

    def solution(self, with_errors: bool = True) -> Solution:
        """The :class:`Solution` rebuilt from POLYNOM_MAP2.

        Exact to the stored precision for fields of degree <= 7; otherwise within
        ``POLY2ERR`` pixels.

        Parameters
        ----------
        with_errors : bool
            Give the solution the table's errors as its ``sigma`` (see :meth:`sigma_function`).

        Returns
        -------
        Solution
            The filter's solution.
        """
        domain = detector_domain(self.detector_shape)
        sigma = self.sigma_function() if with_errors else None
        mx, my = trim_monomials(*self.reverse_monomials())
        d2 = DistortionField.from_monomials(mx, my, domain, origin=self.boresight,
                                            unit="pixel", input_unit="pixel")
        meta = {"source": self.source, "POLY2ERR": self.header.get("POLY2ERR")}
        return Solution.from_reverse_offsets(
            d2, self.boresight, self.plate_scale, self.rotation, self.parity,
            reference_position=self.reference_position, filter=self.filter_id,
            detector_shape=self.detector_shape, meta=meta, sigma=sigma)


@dataclass
class AstroMetFile:
    """An AstroMet file: its primary header and its filters by id."""

    header: fits.Header
    filters: dict
    path: str = ""

    def __getitem__(self, filter_id):
        try:
            return self.filters[filter_id]
        except KeyError:
            raise AstroMetFilterError(
                f"{self.path}: filter {filter_id!r} not in the file; it holds "
                f"{', '.join(self.filters)}"
            ) from None


def _column(table_hdu, name, path):
    names = [c.name.upper() for c in table_hdu.columns]
    if name not in names:
        raise AstroMetFormatError(
            f"{path}: extension {table_hdu.name} has no column {name} (columns: {', '.join(names)})"
        )
    return np.asarray(table_hdu.data[name])


def _keyword(header, key, ext, path, cast=float):
    if key not in header:
        raise AstroMetFormatError(f"{path}: extension {ext} lacks keyword {key}")
    try:
        return cast(header[key])
    except (TypeError, ValueError):
        raise AstroMetFormatError(f"{path}: extension {ext} keyword {key} = {header[key]!r} is not valid") from None


def read_astromet(path: str | os.PathLike) -> AstroMetFile:
    """Read an AstroMet FITS file written by astrocal (or following the same layout).

    Parameters
    ----------
    path : str or os.PathLike
        The AstroMet FITS file.

    Returns
    -------
    AstroMetFile
        Its primary header and its filters by id.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    AstroMetFormatError
        Naming the file and the missing extension, column or keyword.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such AstroMet file")
    try:
        hdul = fits.open(path, memmap=False)
    except OSError as exc:
        raise AstroMetFormatError(f"{path}: not a readable FITS file ({exc})") from None
    with hdul:
        names = [h.name.upper() for h in hdul]
        for ext in ("POLYNOM_MAP", "POLYNOM_MAP2"):
            if ext not in names:
                raise AstroMetFormatError(f"{path}: missing extension {ext}")
        pm, pm2 = hdul["POLYNOM_MAP"], hdul["POLYNOM_MAP2"]
        for ext in (pm, pm2):
            for col in REQUIRED_POLY_COLUMNS:
                _column(ext, col, path)
        ids = [str(v).strip() for v in pm.data["FILTER_ID"]]
        ids2 = [str(v).strip() for v in pm2.data["FILTER_ID"]]
        if ids != ids2:
            raise AstroMetFormatError(f"{path}: POLYNOM_MAP filters {ids} differ from POLYNOM_MAP2 filters {ids2}")
        filters = {}
        for row, fid in enumerate(ids):
            ext = f"FILTER-{fid}"
            if ext.upper() not in names:
                raise AstroMetFormatError(f"{path}: missing extension {ext} (filter {fid} of POLYNOM_MAP)")
            th = hdul[ext]
            for col in REQUIRED_TABLE_COLUMNS:
                _column(th, col, path)
            poly = np.vstack([pm.data["XPOLYCOEF"][row], pm.data["YPOLYCOEF"][row]]).astype(float)
            poly2 = np.vstack([pm2.data["XPOLYCOEF"][row], pm2.data["YPOLYCOEF"][row]]).astype(float)
            for arr, name in ((poly, "POLYNOM_MAP"), (poly2, "POLYNOM_MAP2")):
                if arr.shape != (2, 36):
                    raise AstroMetFormatError(f"{path}: {name} coefficients of {fid} are not 36 terms")
                if not np.isfinite(arr).all():
                    raise AstroMetFormatError(f"{path}: {name} coefficients of {fid} contain NaN")
            hdr = th.header
            filters[fid] = AstroMetFilter(
                filter_id=fid,
                table=Table(th.data),
                poly=poly,
                poly2=poly2,
                # the header keeps the plate scale in double precision; the column in E
                plate_scale=float(hdr.get("PLTSCALE", pm.data["PLTSCALE"][row])),
                boresight=(float(from_fits(_keyword(hdr, "BORESX", ext, path))),
                           float(from_fits(_keyword(hdr, "BORESY", ext, path)))),
                rotation=_keyword(hdr, "LINROT", ext, path) if "LINROT" in hdr else 0.0,
                parity=int(hdr.get("PARITY", 1)),
                reference_position=(float(hdr.get("FPREFU", 0.0)), float(hdr.get("FPREFV", 0.0))),
                detector_shape=(_keyword(hdr, "DETNAXI2", ext, path, int),
                                _keyword(hdr, "DETNAXI1", ext, path, int)),
                header=hdr.copy(),
                source=str(path),
            )
        return AstroMetFile(hdul[0].header.copy(), filters, str(path))
