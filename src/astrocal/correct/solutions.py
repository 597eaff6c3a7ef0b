"""Open any solution astrocal writes and evaluate it: measured position -> linear grid.

:func:`open_solution` reads a solution and returns an :class:`Evaluator`, one interface
for every format:

=============  ==================  ===========================================================
source         ``method``          how the linear-grid position ``l`` of a measured ``p``
                                   is obtained
=============  ==================  ===========================================================
AstroMet FITS  ``table-bicubic``   (default) the ``FILTER-<ID>`` table of forward offsets
                                   ``D(l)`` interpolated by a bicubic (not-a-knot) spline;
                                   ``l`` solves ``l + D(l) = p`` (Newton, to < 1e-9 px)
AstroMet FITS  ``table-bilinear``  the same with bilinear interpolation
AstroMet FITS  ``polynom_map``     the ``POLYNOM_MAP`` forward polynomial, solved the same way
AstroMet FITS  ``polynom_map2``    the ``POLYNOM_MAP2`` reverse polynomial:
                                   ``l = p - D2(p)`` (no iteration)
SIP header     ``polynomial``      the exact field of the header (``A_p_q``, ``B_p_q``)
SIAF table     ``polynomial``      the exact field of ``Sci2IdlX``/``Sci2IdlY``
result dir.    ``posterior``       every posterior draw of the field, each with its own linear
                                   grid; ``l`` is their mean
=============  ==================  ===========================================================

:attr:`Evaluation.jac` (``dl/dp``, which carries the input's errors) is exact for
``polynom_map2``, SIP, SIAF and the posterior; for the table methods and ``polynom_map``
it is POLYNOM_MAP2's when the header's ``POLY2ERR`` is below :data:`POLY2_HOLDS` (the
Jacobians then differ by < 1e-6), else the method's own (spline or polynomial
derivatives).

Conventions (see ``docs/conventions.md``): positions are 0-based pixels (centre of the
first pixel = 0.0); the linear grid is ``L(p) = b + M (G(p) - G(b))`` of
:mod:`astrocal.solution`; the offset is *measured minus linear-grid position*, so
``l = p - D2(p)`` and ``p = l + D(l)``.  The *domain* of a solution is its detector,
``-0.5 <= x <= nx - 0.5``, ``-0.5 <= y <= ny - 0.5`` (measured positions).

Uncertainty of the linear-grid position that the solution itself carries (the *map
uncertainty*), as a covariance in pixels**2 at each position:

* AstroMet: the ``RAWX_OFF_ERR``/``RAWY_OFF_ERR`` columns interpolated like the offsets
  (1 sigma per axis; the file states no correlation between axes or positions), for every
  method; none if the file has no error columns;
* SIP header, SIAF table: none (the formats hold no uncertainty);
* result directory: the covariance of the draws.  Each draw ``s`` of the field gives an
  exact polynomial ``L_s`` (its own linear grid, so the draws' common translation,
  rotation and scale, which the linear grid removes by definition, add no spread), whose
  Legendre coefficients ``lambda_s`` are linear in it: ``l_s(p) = B(p) lambda_s``.  The
  covariance between any two positions is ``B(p_i) C B(p_j)^T`` with ``C`` the sample
  covariance of ``lambda``; :meth:`Evaluator.map_factor` returns ``F(p) = B(p) W`` with
  ``C = W W^T`` so that ``cov(l_i, l_j) = F_i F_j^T``, correlations between positions
  included. A fit with a residual field beyond the polynomial (:mod:`astrocal.field.residual`)
  adds ``M_s r_s(p)`` to each draw, linear in the residual's coefficients, which join
  ``lambda``; the unresolved field (:mod:`astrocal.model.draws`) adds its white covariance
  ``v M M^T`` at each position (no correlation between positions).
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field as dc_field
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Callable, Optional

import numpy as np
from numpy.typing import ArrayLike
from scipy.interpolate import NdBSpline, RectBivariateSpline

from ..errors import AstrocalError
from ..field import DistortionField, design_matrix, invert
from ..field.basis import flat_to_square, terms
from ..field.inverse import solve
from ..field.orderings import trim_monomials
from ..formats.astromet import AstroMetFormatError, read_astromet
from ..formats.convert import detect_format, read_solutions
from ..formats.sip import load_header
from ..model.draws import unresolved_variance
from ..pixels import detector_domain, from_fits
from ..products import posterior_solution
from ..products.result_files import load_posterior
from ..resultset import require_complete, require_complete_file

if TYPE_CHECKING:  # types of the hints only (the result files' readers return them)
    from ..model.result import Posterior
    from ..solution import Solution

log = logging.getLogger(__name__)

#: evaluation methods of an AstroMet file; the first is the default
ASTROMET_METHODS = ("table-bicubic", "table-bilinear", "polynom_map", "polynom_map2")
#: every method name :func:`open_solution` accepts
METHODS = ASTROMET_METHODS + ("polynomial", "posterior")
#: Newton iterations stop once every step is below this (pixels); after a step ``d`` the
#: error left is ``q |d|`` with ``q`` the mismatch between the iteration's Jacobian
#: (POLYNOM_MAP2's) and the method's, < 1e-5 where POLYNOM_MAP2 holds the field (POLY2ERR
#: < POLY2_HOLDS): the loose tolerance then leaves < 1e-9 px; otherwise (and for the
#: bilinear table, whose slopes differ by up to ~1e-3) the strict one, which leaves
#: < 1e-9 px for any mismatch up to 1e-2
NEWTON_TOL = 1e-4
NEWTON_TOL_STRICT = 1e-7
NEWTON_MAXITER = 30
#: POLYNOM_MAP2 is taken to hold the field (and its Jacobian used) when POLY2ERR is below
#: this (pixels)
POLY2_HOLDS = 1e-3
#: points per chunk when forming design matrices (bounded memory)
CHUNK = 1 << 16


class SolutionError(AstrocalError, ValueError):
    """A solution cannot be opened or does not hold what was asked (message names the file)."""


@dataclass(frozen=True, eq=False)
class Evaluation:
    """Linear-grid positions of measured positions, with what the uncertainty needs.

    ``lx, ly``: linear-grid positions (0-based pixels); ``jac``: ``dl/dp``, shape (N, 2, 2)
    (rows: lx, ly; columns: x, y); ``map_cov``: covariance of ``(lx, ly)`` from the
    solution's own uncertainty, shape (N, 2, 2) in pixels**2, or ``None`` if the solution
    carries none.
    """

    lx: np.ndarray
    ly: np.ndarray
    jac: np.ndarray
    map_cov: Optional[np.ndarray]


@dataclass(frozen=True, eq=False)
class Evaluator:
    """An opened solution: evaluates the linear grid and its uncertainty anywhere.

    Build it with :func:`open_solution`.  Attributes describe the linear grid (the same
    keywords as an AstroMet ``FILTER-<ID>`` header): ``boresight`` (0-based pixel),
    ``plate_scale`` (arcsec/pixel), ``rotation`` (degrees), ``parity``,
    ``reference_position`` (focal-plane arcsec of the boresight, ``G(b)``).
    """

    source: str
    kind: str
    method: str
    filter: str
    detector_shape: tuple
    boresight: tuple
    plate_scale: float
    rotation: float
    parity: int
    reference_position: tuple
    _evaluate: Callable = dc_field(repr=False)
    _distort: Callable = dc_field(repr=False)
    _factor: Optional[Callable] = dc_field(default=None, repr=False)
    has_uncertainty: bool = False
    meta: dict = dc_field(default_factory=dict)
    white_cov: Optional[np.ndarray] = dc_field(default=None, repr=False)

    # ------------------------------------------------------------------ geometry
    @property
    def domain(self) -> tuple[float, float, float, float]:
        """``(xmin, xmax, ymin, ymax)``: the detector, 0-based pixel edges."""
        return detector_domain(self.detector_shape)

    def in_domain(self, x: ArrayLike, y: ArrayLike, margin: float = 0.0) -> np.ndarray:
        """Where ``(x, y)`` lies inside the domain grown by ``margin`` pixels.

        Parameters
        ----------
        x, y : array_like
            Measured positions (0-based pixels).
        margin : float
            Pixels added around the domain.

        Returns
        -------
        np.ndarray of bool
        """
        xmin, xmax, ymin, ymax = self.domain
        x = np.asarray(x, dtype=float)
        y = np.asarray(y, dtype=float)
        return ((x >= xmin - margin) & (x <= xmax + margin)
                & (y >= ymin - margin) & (y <= ymax + margin))

    @property
    def linear_matrix(self) -> np.ndarray:
        """``M``: focal-plane arcsec -> linear-grid pixels (see :mod:`astrocal.solution`)."""
        th = np.radians(self.rotation)
        rot_minus = np.array([[np.cos(th), np.sin(th)], [-np.sin(th), np.cos(th)]])
        return np.diag([1.0, float(self.parity)]) @ rot_minus / self.plate_scale

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, x: ArrayLike, y: ArrayLike, errors: bool = True) -> Evaluation:
        """The linear grid at measured positions.

        Parameters
        ----------
        x, y : array_like
            Measured positions (0-based pixels; flattened).
        errors : bool
            Compute the map covariance too.

        Returns
        -------
        Evaluation
        """
        x = np.ravel(np.asarray(x, dtype=float))
        y = np.ravel(np.asarray(y, dtype=float))
        if x.shape != y.shape:
            raise ValueError(f"x and y differ in length ({x.size} and {y.size})")
        return self._evaluate(x, y, errors)

    def undistort(self, x: ArrayLike, y: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """Linear-grid positions of measured positions.

        Parameters
        ----------
        x, y : array_like
            Measured positions (0-based pixels).

        Returns
        -------
        lx, ly : np.ndarray
            Linear-grid positions (0-based pixels), of the shape of ``x``.
        """
        shape = np.shape(x)
        ev = self.evaluate(x, y, errors=False)
        return ev.lx.reshape(shape), ev.ly.reshape(shape)

    def distort(self, lx: ArrayLike, ly: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """Measured (detector) positions of linear-grid positions.

        Parameters
        ----------
        lx, ly : array_like
            Linear-grid positions (0-based pixels).

        Returns
        -------
        x, y : np.ndarray
            Detector positions (0-based pixels), of the shape of ``lx``.
        """
        shape = np.shape(lx)
        lx = np.ravel(np.asarray(lx, dtype=float))
        ly = np.ravel(np.asarray(ly, dtype=float))
        x, y = self._distort(lx, ly)
        return x.reshape(shape), y.reshape(shape)

    def map_covariance(self, x: ArrayLike, y: ArrayLike) -> np.ndarray:
        """Covariance of the linear-grid positions from the solution alone.

        Parameters
        ----------
        x, y : array_like
            Measured positions (0-based pixels).

        Returns
        -------
        np.ndarray
            ``(N, 2, 2)`` (pixels**2); zeros if the solution carries no uncertainty.
        """
        ev = self.evaluate(x, y, errors=True)
        if ev.map_cov is None:
            return np.zeros((ev.lx.size, 2, 2))
        return ev.map_cov

    def map_factor(self, x: ArrayLike, y: ArrayLike) -> np.ndarray:
        """The map covariance between positions, as a factor.

        At one position the unresolved field's white covariance (``white_cov``) adds to it
        (:meth:`map_covariance` holds both). Only a posterior (result directory) knows the
        correlations between positions.

        Parameters
        ----------
        x, y : array_like
            Measured positions (0-based pixels).

        Returns
        -------
        np.ndarray
            ``F`` of shape (N, 2, r) with ``cov(l_i, l_j) = F_i @ F_j.T`` (pixels**2) for
            ``i != j``.

        Raises
        ------
        SolutionError
            The solution is not a result directory.
        """
        if self._factor is None:
            raise SolutionError(
                f"{self.source}: a {self.kind} solution states no correlation between "
                "positions; only a result directory (the posterior draws) does")
        x = np.ravel(np.asarray(x, dtype=float))
        y = np.ravel(np.asarray(y, dtype=float))
        return self._factor(x, y)

    def map_covariance_matrix(self, x: ArrayLike, y: ArrayLike) -> np.ndarray:
        """Full covariance of ``(lx_0, ly_0, lx_1, ly_1, ...)`` from the posterior,
        correlations between positions included.

        Parameters
        ----------
        x, y : array_like
            Measured positions (0-based pixels).

        Returns
        -------
        np.ndarray
            ``(2N, 2N)`` (pixels**2).
        """
        f = self.map_factor(x, y)
        flat = f.reshape(-1, f.shape[-1])
        cov = flat @ flat.T
        if self.white_cov is not None:  # the unresolved field: per position, no correlation
            cov += np.kron(np.eye(f.shape[0]), self.white_cov)
        return cov

    def describe(self) -> str:
        """One line for logs and table metadata.

        Returns
        -------
        str
        """
        unc = "with map uncertainty" if self.has_uncertainty else "no map uncertainty"
        return (f"{self.kind} solution {self.source} (filter {self.filter}, method "
                f"{self.method}, {unc})")


# =========================================================================== opening
def open_solution(path: str | os.PathLike, filter_id: str | None = None, method: str | None = None) -> Evaluator:
    """Open a solution for evaluation.

    Parameters
    ----------
    path : path-like
        An AstroMet FITS file, a TAN-SIP header (``.fits`` primary header or text
        ``.hdr``), a SIAF-style table (``.ecsv``) or an ``astrocal fit`` result directory
        (``<fit.output>/<filter>/`` holding ``posterior.h5``, or ``<fit.output>/`` with
        ``--filter``).
    filter_id : str, optional
        Filter to take; needed when the file holds several.
    method : str, optional
        AstroMet only: ``table-bicubic`` (default), ``table-bilinear``, ``polynom_map``
        or ``polynom_map2``.  Other sources have one method each (``polynomial``,
        ``posterior``); asking for another is an error.

    Returns
    -------
    Evaluator

    Raises
    ------
    FileNotFoundError, SolutionError (a ``ValueError``)
        Messages name the file and what is wrong (filter not in the file, unknown method,
        unreadable content).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such solution (file or result directory)")
    if method is not None and method not in METHODS:
        raise SolutionError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
    if path.is_dir():
        return _open_posterior(path, filter_id, method)
    require_complete_file(path)  # a product of an interrupted fit is not a solution
    try:
        fmt = detect_format(path)
    except ValueError as exc:
        raise SolutionError(str(exc)) from None
    if fmt == "astromet":
        return _open_astromet(path, filter_id, method or ASTROMET_METHODS[0])
    if method not in (None, "polynomial"):
        raise SolutionError(f"{path}: a {fmt.upper()} solution is evaluated as its polynomial; "
                            f"method {method!r} applies to AstroMet files only")
    sols = read_solutions(path, fmt)
    sol = _pick(sols, filter_id, path)
    return _from_solution(sol, path, fmt)


def _pick(solutions, filter_id, path):
    if filter_id is None:
        if len(solutions) != 1:
            raise SolutionError(f"{path}: holds filters {', '.join(solutions)}; choose one "
                                "with --filter")
        return next(iter(solutions.values()))
    if filter_id not in solutions:
        # a single-filter SIP/SIAF solution may not carry its filter name: accept it only
        # if the file states none
        if len(solutions) == 1 and next(iter(solutions)) in ("", "NONE"):
            return next(iter(solutions.values()))
        raise SolutionError(f"{path}: filter {filter_id!r} not in the file; it holds "
                            f"{', '.join(solutions)}")
    return solutions[filter_id]


def _identity_minus(jac_d):
    """``I - jac_d`` for a stack of 2x2 matrices (computed in place: ``jac_d`` is consumed)."""
    out = np.negative(jac_d, out=jac_d)
    out[:, 0, 0] += 1.0
    out[:, 1, 1] += 1.0
    return out


def _effective_degree(field):
    """The field at the highest total degree that has a non-zero coefficient (a SIAF table
    pads the forward terms to the reverse's degree)."""
    nonzero = [i + j for i, j in terms(field.degree) if field.cx[i, j] or field.cy[i, j]]
    return field.with_degree(max([1] + nonzero))


def _from_solution(sol, path, kind):
    """Evaluator of an exact polynomial solution (SIP header, SIAF table)."""
    lin = _effective_degree(sol.linear_field())

    def evaluate(x, y, errors):
        lx, ly, jac = lin.jacobian(x, y)
        return Evaluation(lx, ly, jac.reshape(-1, 2, 2), None)

    distort = _distort_by_newton(lin)
    return Evaluator(str(path), kind, "polynomial", sol.filter, sol.detector_shape,
                     sol.boresight, sol.plate_scale, sol.rotation, sol.parity,
                     sol.reference_position, evaluate, distort,
                     meta={"crval": _crval(path) if kind == "sip" else None})


def _distort_by_newton(lin):
    """``distort`` for a polynomial linear-grid field ``lin`` (detector -> linear grid):
    Newton iteration (exact) from a fitted reverse field, fitted at the first call."""
    reverse = []

    def distort(lx, ly):
        if not reverse:
            reverse.append(invert(lin, tol=1e-4).field)
        gx, gy = reverse[0](lx, ly)
        return solve(lin, lx, ly, guess=(gx, gy), tol=1e-10, on_failure="nan")

    return distort


def _crval(path):
    """CRVAL1, CRVAL2 of a SIP header (degrees), or None."""
    h = load_header(path)
    if "CRVAL1" in h and "CRVAL2" in h:
        return (float(h["CRVAL1"]), float(h["CRVAL2"]))
    return None


# --------------------------------------------------------------------------- AstroMet
def _regular_grid(table, path, ext):
    """Unique sorted RAWX, RAWY (1-based) and the columns as (ny, nx) arrays."""
    rx = np.asarray(table["RAWX"], dtype=float)
    ry = np.asarray(table["RAWY"], dtype=float)
    xs, ys = np.unique(rx), np.unique(ry)
    if xs.size * ys.size != len(table) or xs.size < 4 or ys.size < 4:
        raise SolutionError(f"{path}: extension {ext} is not a complete regular grid of RAWX, "
                            f"RAWY ({len(table)} rows, {xs.size} x and {ys.size} y values; at "
                            "least 4 x 4 needed)")
    order = np.lexsort((rx, ry))
    ix = np.searchsorted(xs, rx[order])
    iy = np.searchsorted(ys, ry[order])
    expect_ix = np.tile(np.arange(xs.size), ys.size)
    expect_iy = np.repeat(np.arange(ys.size), xs.size)
    if not (np.array_equal(ix, expect_ix) and np.array_equal(iy, expect_iy)):
        raise SolutionError(f"{path}: extension {ext} repeats RAWX, RAWY pairs: not a regular grid")

    def grid(name):
        values = np.asarray(table[name], dtype=float)[order].reshape(ys.size, xs.size)
        if not np.isfinite(values).all():
            raise SolutionError(f"{path}: extension {ext} column {name} holds NaN")
        return values

    return xs, ys, grid


def _table_spline(xs, ys, planes, k):
    """Vector-valued tensor spline of degree ``k`` through ``planes`` (each (ny, nx)) on
    the 0-based grid; evaluated at points ``(y, x)``; extrapolates with its end pieces."""
    coeffs = []
    knots = None
    for plane in planes:
        rbs = RectBivariateSpline(ys, xs, plane, kx=k, ky=k, s=0)
        ty, tx, c = rbs.tck
        coeffs.append(c.reshape(len(ty) - k - 1, len(tx) - k - 1))
        knots = (ty, tx)
    return NdBSpline(knots, np.stack(coeffs, axis=-1), k, extrapolate=True)


def _open_astromet(path, filter_id, method):
    if method not in ASTROMET_METHODS:
        raise SolutionError(f"{path}: method {method!r} does not apply to an AstroMet file; "
                            f"use one of {', '.join(ASTROMET_METHODS)}")
    try:
        am = read_astromet(path)
    except AstroMetFormatError as exc:
        raise SolutionError(str(exc)) from None
    if filter_id is None:
        if len(am.filters) != 1:
            raise SolutionError(f"{path}: holds filters {', '.join(am.filters)}; choose one "
                                "with --filter")
        flt = next(iter(am.filters.values()))
    else:
        if filter_id not in am.filters:
            raise SolutionError(f"{path}: filter {filter_id!r} not in the file; it holds "
                                f"{', '.join(am.filters)}")
        flt = am.filters[filter_id]
    ext = f"FILTER-{flt.filter_id}"
    b = flt.boresight
    domain = detector_domain(flt.detector_shape)
    # the polynomials as fields of (position - boresight)
    mx2, my2 = trim_monomials(*flt.reverse_monomials())
    d2 = DistortionField.from_monomials(mx2, my2, domain, origin=b, unit="pixel",
                                        input_unit="pixel")
    mx1, my1 = trim_monomials(*flt.forward_monomials())
    d1 = DistortionField.from_monomials(mx1, my1, domain, origin=b, unit="pixel",
                                        input_unit="pixel")
    xs, ys, grid = _regular_grid(flt.table, path, ext)
    xs0, ys0 = from_fits(xs), from_fits(ys)
    has_err = flt.has_errors
    planes = [grid("RAWX_OFF"), grid("RAWY_OFF")]
    if has_err:
        errs = [grid("RAWX_OFF_ERR"), grid("RAWY_OFF_ERR")]
        if any(np.any(e < 0) for e in errs):
            raise SolutionError(f"{path}: extension {ext} has negative RAWX_OFF_ERR/RAWY_OFF_ERR")
        planes += errs
    kspline = 1 if method == "table-bilinear" else 3
    spline = _table_spline(xs0, ys0, planes, kspline)
    err_spline = spline if has_err else None

    if method.startswith("table"):
        def forward(lx, ly, errors):
            out = spline(np.column_stack([ly, lx]))
            return out[:, 0], out[:, 1], (out[:, 2:4] if errors and has_err else None)
    elif method == "polynom_map":
        def forward(lx, ly, errors):  # the errors are interpolated once, at the solution
            fx, fy = d1(lx, ly)
            return fx, fy, None
    else:
        forward = None

    poly2err = flt.header.get("POLY2ERR")
    # the Newton iterations use POLYNOM_MAP2's Jacobian; it is also the returned dl/dp when
    # the polynomial holds the field (then the two differ by < 1e-6), else the method's own
    own_jacobian = forward is not None and not (poly2err is not None and poly2err < POLY2_HOLDS)
    # a bilinear interpolant's slopes differ from the polynomial's by ~1e-3: strict tolerance
    tol = NEWTON_TOL_STRICT if own_jacobian or method == "table-bilinear" else NEWTON_TOL

    def evaluate(x, y, errors):
        ox, oy, jd = d2.jacobian(x, y)
        jac = _identity_minus(np.ascontiguousarray(jd.reshape(-1, 2, 2)))  # dl/dp, POLYNOM_MAP2
        lx, ly = x - ox, y - oy
        if forward is None:  # polynom_map2: exact, no iteration
            err = _errors_at(err_spline, lx, ly) if errors and has_err else None
        else:
            lx, ly, err = _newton_forward(forward, x, y, lx, ly, jac, errors, path, tol)
            if err is None and errors and has_err:
                err = _errors_at(err_spline, lx, ly)
            if own_jacobian:
                jac = _reverse_jacobian(method, spline, d1, lx, ly)
        cov = None
        if err is not None:
            s = np.clip(err, 0.0, None)
            cov = np.zeros((x.size, 2, 2))
            cov[:, 0, 0] = s[:, 0] ** 2
            cov[:, 1, 1] = s[:, 1] ** 2
        return Evaluation(lx, ly, jac, cov)

    if forward is not None:
        def distort(lx, ly):
            fx, fy, _ = forward(lx, ly, False)
            return lx + fx, ly + fy
    else:
        distort = _distort_by_newton(DistortionField.identity(domain, degree=d2.degree) - d2)

    meta = {"POLYERR": flt.header.get("POLYERR"), "POLY2ERR": flt.header.get("POLY2ERR"),
            "STEP": flt.header.get("STEP"), "table_extent_0based": [float(xs0[0]), float(xs0[-1]),
                                                                     float(ys0[0]), float(ys0[-1])]}
    return Evaluator(str(path), "astromet", method, flt.filter_id, flt.detector_shape, b,
                     flt.plate_scale, flt.rotation, flt.parity, flt.reference_position,
                     evaluate, distort, None, has_err, meta)


def _reverse_jacobian(method, spline, d1, lx, ly):
    """``dl/dp = (I + dD/dl)^-1`` from the forward offsets' own derivatives at ``l``."""
    if method == "polynom_map":
        _, _, jf = d1.jacobian(lx, ly)
        jf = jf.reshape(-1, 2, 2)
        a, b, c, d = jf[:, 0, 0], jf[:, 0, 1], jf[:, 1, 0], jf[:, 1, 1]
    else:  # the spline is evaluated at (y, x): nu=(0, 1) is d/dx, nu=(1, 0) is d/dy
        pts = np.column_stack([ly, lx])
        ddx = spline(pts, nu=(0, 1))
        ddy = spline(pts, nu=(1, 0))
        a, b, c, d = ddx[:, 0], ddy[:, 0], ddx[:, 1], ddy[:, 1]
    a, d = a + 1.0, d + 1.0
    det = a * d - b * c
    jac = np.empty((lx.size, 2, 2))
    jac[:, 0, 0], jac[:, 0, 1] = d / det, -b / det
    jac[:, 1, 0], jac[:, 1, 1] = -c / det, a / det
    return jac


def _errors_at(spline, lx, ly):
    return spline(np.column_stack([ly, lx]))[:, 2:4]


def _newton_forward(forward, x, y, lx, ly, jac, errors, path, tol):
    """Solve ``l + D(l) = p`` for ``l`` from the start ``(lx, ly)``.

    ``jac`` (the reverse polynomial's ``dl/dp``) approximates ``(I + dD/dl)^-1``; the
    iteration ``l <- l - jac (l + D(l) - p)`` then converges at a rate equal to the
    difference between the two (< 1e-5 for a field of degree <= 7), so one evaluation of
    ``D`` usually suffices; it stops when every step is below ``tol``.
    """
    err = None  # allocated at the first evaluation that returns errors
    active = None  # None: every point (no indexing on the first pass)
    for _ in range(NEWTON_MAXITER):
        sel = slice(None) if active is None else active
        fx, fy, e = forward(lx[sel], ly[sel], errors)
        rx = lx[sel] + fx - x[sel]
        ry = ly[sel] + fy - y[sel]
        j = jac[sel]
        dx = j[:, 0, 0] * rx + j[:, 0, 1] * ry
        dy = j[:, 1, 0] * rx + j[:, 1, 1] * ry
        lx[sel] -= dx
        ly[sel] -= dy
        if e is not None:
            if err is None:
                err = np.empty((x.size, 2))
            err[sel] = e
        moving = ~(np.hypot(dx, dy) <= tol)  # NaN steps stay active and fail below
        active = np.flatnonzero(moving) if active is None else active[moving]
        if active.size == 0:
            break
    if active.size:
        lx[active] = np.nan
        ly[active] = np.nan
        log.warning("%s: the table's offsets could not be inverted at %d position(s) (no "
                    "convergence); returned as NaN", path, active.size)
    return lx, ly, err


# --------------------------------------------------------------------------- posterior
def _find_result_dir(path, filter_id):
    if (path / "posterior.h5").exists():
        name = path.name
        if filter_id is not None and filter_id != name:
            raise SolutionError(f"{path}: this result directory is filter {name!r}, not "
                                f"{filter_id!r}")
        return path, name
    subs = sorted(p.name for p in path.iterdir() if (p / "posterior.h5").exists())
    if not subs:
        raise SolutionError(f"{path}: a directory but no astrocal fit result (no posterior.h5 "
                            "in it or in a filter sub-directory)")
    if filter_id is None:
        if len(subs) != 1:
            raise SolutionError(f"{path}: holds results for filters {', '.join(subs)}; choose "
                                "one with --filter")
        filter_id = subs[0]
    if filter_id not in subs:
        raise SolutionError(f"{path}: filter {filter_id!r} not in the result; it holds "
                            f"{', '.join(subs)}")
    return path / filter_id, filter_id


def linear_grid_draws(posterior: Posterior, solution: Solution) -> np.ndarray:
    """Legendre coefficients of each draw's linear-grid field ``L_s``.

    Draw ``s`` has field ``G_s`` and its own linear grid ``M_s`` (closest rotation and
    scale to its affine part, parity and boresight of ``solution``):
    ``L_s(p) = b + M_s (G_s(p) - G_s(b))``, a polynomial of the field's degree whose
    coefficients are returned in :func:`astrocal.field.terms` order, x then y. With a
    residual field ``r_s`` (:mod:`astrocal.field.residual`) ``L_s`` gains ``M_s r_s(p)``,
    whose coefficients on the residual's basis follow, x then y.

    Parameters
    ----------
    posterior : astrocal.model.result.Posterior
        The posterior's draws.
    solution : astrocal.solution.Solution
        Its posterior-mean solution (parity, boresight).

    Returns
    -------
    np.ndarray
        Shape (S, 2 nt), or (S, 2 nt + 2 m) with a residual field of m functions per
        component.
    """
    nt = posterior.nt
    gu = posterior.g[:, :nt]
    gv = posterior.g[:, nt:2 * nt]
    xmin, xmax, ymin, ymax = posterior.domain
    hx, hy = 0.5 * (xmax - xmin), 0.5 * (ymax - ymin)
    # affine part of each draw: degree-1 Legendre terms (1, 0) and (0, 1)
    a = np.empty((len(gu), 2, 2))
    a[:, 0, 0], a[:, 0, 1] = gu[:, 1] / hx, gu[:, 2] / hy
    a[:, 1, 0], a[:, 1, 1] = gv[:, 1] / hx, gv[:, 2] / hy
    par = np.diag([1.0, float(solution.parity)])
    ap = a @ par
    theta = np.arctan2(ap[:, 1, 0] - ap[:, 0, 1], ap[:, 0, 0] + ap[:, 1, 1])
    scale = np.sqrt(np.abs(np.linalg.det(a)))
    c, s = np.cos(theta), np.sin(theta)
    rot_minus = np.stack([np.stack([c, s], -1), np.stack([-s, c], -1)], -2)
    m = par @ rot_minus / scale[:, None, None]
    b = np.asarray(solution.boresight, dtype=float)
    bb = design_matrix([b[0]], [b[1]], posterior.degree, posterior.domain)[0]
    gb = np.column_stack([gu @ bb, gv @ bb])
    lu = m[:, 0, 0, None] * gu + m[:, 0, 1, None] * gv
    lv = m[:, 1, 0, None] * gu + m[:, 1, 1, None] * gv
    shift = b[None, :] - np.einsum("sij,sj->si", m, gb)
    lu[:, 0] += shift[:, 0]
    lv[:, 0] += shift[:, 1]
    if posterior.residual is None:
        return np.hstack([lu, lv])
    basis, r0 = posterior.residual
    ru, rv = posterior.g[:, r0:r0 + basis.size], posterior.g[:, r0 + basis.size:r0 + 2 * basis.size]
    return np.hstack([lu, lv, m[:, 0, 0, None] * ru + m[:, 0, 1, None] * rv,
                      m[:, 1, 0, None] * ru + m[:, 1, 1, None] * rv])


def _distort_full(distort_poly, evaluate):
    """``distort`` for a linear-grid map with a residual field: Newton iteration (exact) with
    the full map's Jacobian, from the polynomial's exact inverse (the residual is a small
    perturbation of it); points that do not converge are NaN, as for a polynomial."""
    def jacobian(x, y):
        ev = evaluate(x, y, False)
        return ev.lx, ev.ly, ev.jac

    full = SimpleNamespace(jacobian=jacobian)

    def distort(lx, ly):
        return solve(full, lx, ly, guess=distort_poly(lx, ly), tol=1e-10, on_failure="nan")

    return distort


def _open_posterior(path, filter_id, method):
    if method not in (None, "posterior"):
        raise SolutionError(f"{path}: a result directory is evaluated from its posterior draws; "
                            f"method {method!r} applies to AstroMet files only")
    rdir, name = _find_result_dir(path, filter_id)
    require_complete(rdir)
    post = load_posterior(rdir)
    if len(post.g) < 3:
        raise SolutionError(f"{rdir}: the posterior holds {len(post.g)} draws; too few for an "
                            "uncertainty")
    sol = posterior_solution(post, name, detector_shape=post.detector_shape)
    lam = linear_grid_draws(post, sol)
    nt = post.nt
    deg = post.degree
    res = post.residual
    mres = res[0].size if res is not None else 0
    mean = lam.mean(axis=0)
    lin = DistortionField(flat_to_square(mean[:nt], deg), flat_to_square(mean[nt:2 * nt], deg),
                          post.domain, unit="pixel", input_unit="pixel")
    rmx, rmy = mean[2 * nt:2 * nt + mres], mean[2 * nt + mres:]
    cov = np.cov(lam, rowvar=False)
    w, v = np.linalg.eigh(cov)
    keep = w > max(w.max(), 0.0) * 1e-12
    factor = v[:, keep] * np.sqrt(w[keep])  # (2 nt [+ 2 m], r): cov = factor @ factor.T
    fx = np.vstack([factor[:nt], factor[2 * nt:2 * nt + mres]])
    fy = np.vstack([factor[nt:2 * nt], factor[2 * nt + mres:]])
    # the unresolved field (white, per position): its covariance in linear-grid pixels
    m = sol.linear_matrix
    white = unresolved_variance(post.unresolved) * (m @ m.T)

    def basis_at(x, y):
        b = design_matrix(x, y, deg, post.domain)
        return b if res is None else np.hstack([b, res[0].design(x, y)])

    def map_factor(x, y):
        out = np.empty((x.size, 2, factor.shape[1]))
        for lo in range(0, x.size, CHUNK):
            hi = min(lo + CHUNK, x.size)
            basis = basis_at(x[lo:hi], y[lo:hi])
            out[lo:hi, 0] = basis @ fx
            out[lo:hi, 1] = basis @ fy
        return out

    def evaluate(x, y, errors):
        lx, ly, jac = lin.jacobian(x, y)
        jac = np.array(jac, float).reshape(-1, 2, 2)
        if res is not None:
            phi = res[0].design(x, y)
            dpx, dpy = res[0].design_derivatives(x, y)
            lx, ly = lx + phi @ rmx, ly + phi @ rmy
            jac[:, 0, 0] += dpx @ rmx
            jac[:, 0, 1] += dpy @ rmx
            jac[:, 1, 0] += dpx @ rmy
            jac[:, 1, 1] += dpy @ rmy
        covs = None
        if errors:
            covs = np.empty((x.size, 2, 2))
            for lo in range(0, x.size, CHUNK):
                hi = min(lo + CHUNK, x.size)
                basis = basis_at(x[lo:hi], y[lo:hi])
                ax, ay = basis @ fx, basis @ fy  # the factor's rows for x and y
                covs[lo:hi, 0, 0] = np.einsum("ij,ij->i", ax, ax)
                covs[lo:hi, 1, 1] = np.einsum("ij,ij->i", ay, ay)
                covs[lo:hi, 0, 1] = covs[lo:hi, 1, 0] = np.einsum("ij,ij->i", ax, ay)
            covs += white
        return Evaluation(lx, ly, jac, covs)

    distort = _distort_by_newton(lin)
    if res is not None:
        distort = _distort_full(distort, evaluate)
    info = post.info or {}
    meta = {"n_draws": int(len(post.g)), "degree": int(deg), "rank": int(keep.sum()),
            "residual_field": bool(res is not None),
            "unresolved_px": float(np.sqrt(unresolved_variance(post.unresolved))) / sol.plate_scale,
            "campaign_sha256": info.get("campaign_sha256", ""),
            "fit_json": json.dumps({"degree": info.get("degree"),
                                    "converged": (info.get("diagnostics") or {}).get("converged")})}
    return Evaluator(str(rdir), "posterior", "posterior", name, post.detector_shape, sol.boresight,
                     sol.plate_scale, sol.rotation, sol.parity, sol.reference_position,
                     evaluate, distort, map_factor, True, meta, white)


__all__ = ["ASTROMET_METHODS", "METHODS", "Evaluation", "Evaluator", "SolutionError",
           "linear_grid_draws", "open_solution"]
