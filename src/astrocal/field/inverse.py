"""The reverse of a distortion field, and the check that a field can be reversed.

:func:`invert` fits a reverse :class:`~astrocal.field.core.DistortionField` from the
field's output plane back to its input plane (for the instrument: focal plane in arcsec
to detector pixels) and measures how well ``reverse(forward(p))`` returns to ``p`` on a
dense grid of the whole domain.  :func:`solve` inverts points exactly (Newton iteration)
where a product needs the true preimage rather than a polynomial approximation.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from ..errors import AstrocalError, FieldError
from .core import DistortionField
from .maps import affine_part

log = logging.getLogger(__name__)


class NotOneToOneError(AstrocalError, ValueError):
    """The field folds over (is not one-to-one) somewhere on its domain."""


@dataclass(frozen=True)
class Inverse:
    """A fitted reverse field and its measured accuracy.

    ``max_roundtrip_error`` and ``rms_roundtrip_error`` are ``|reverse(forward(p)) - p|``
    over a dense grid of ``grid_shape`` points covering the forward field's domain
    (edges included), in the forward field's input unit (pixels for a detector field).
    """

    field: DistortionField
    max_roundtrip_error: float
    rms_roundtrip_error: float
    grid_shape: tuple
    tolerance: float

    @property
    def meets_tolerance(self) -> bool:
        """True when the largest round-trip error is within the tolerance."""
        return self.max_roundtrip_error <= self.tolerance


def dense_grid(domain: tuple[float, float, float, float], n: int = 257) -> tuple[np.ndarray, np.ndarray]:
    """An ``n x n`` grid of points spanning ``domain`` edge to edge.

    Parameters
    ----------
    domain : tuple of float
        ``(xmin, xmax, ymin, ymax)``.
    n : int
        Points per axis.

    Returns
    -------
    x, y : np.ndarray
        The flattened coordinates (``n * n`` each).
    """
    xmin, xmax, ymin, ymax = domain
    yy, xx = np.meshgrid(np.linspace(ymin, ymax, n), np.linspace(xmin, xmax, n), indexing="ij")
    return xx.ravel(), yy.ravel()


def boundary(domain: tuple[float, float, float, float], n_per_side: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Closed polygon along the domain boundary, counter-clockwise.

    Parameters
    ----------
    domain : tuple of float
        ``(xmin, xmax, ymin, ymax)``.
    n_per_side : int
        Vertices per side.

    Returns
    -------
    x, y : np.ndarray
        The ``4 * n_per_side`` vertices, from ``(xmin, ymin)`` (not repeated at the end).
    """
    xmin, xmax, ymin, ymax = domain
    s = np.linspace(0.0, 1.0, n_per_side, endpoint=False)
    x = np.concatenate([xmin + s * (xmax - xmin), np.full_like(s, xmax), xmax - s * (xmax - xmin), np.full_like(s, xmin)])
    y = np.concatenate([np.full_like(s, ymin), ymin + s * (ymax - ymin), np.full_like(s, ymax), ymax - s * (ymax - ymin)])
    return x, y


def _segments_cross(x, y):
    """True if any two non-adjacent edges of the closed polygon (x, y) intersect.

    Two edges can cross only where their bounding boxes overlap: the pairs are found by a
    sweep over the edges sorted by their smallest x (each edge against those that start
    before it ends), those whose y ranges do not meet are dropped, and the orientation
    test runs on the rest (for a domain boundary's image, a few per cent of all pairs)."""
    x0, y0 = x, y
    x1, y1 = np.roll(x, -1), np.roll(y, -1)
    n = x.size
    lo_x, hi_x = np.minimum(x0, x1), np.maximum(x0, x1)
    lo_y, hi_y = np.minimum(y0, y1), np.maximum(y0, y1)
    order = np.argsort(lo_x, kind="stable")
    end = np.searchsorted(lo_x[order], hi_x[order], side="right")  # sorted edges starting before each ends
    counts = np.maximum(end - np.arange(n) - 1, 0)
    a = np.repeat(np.arange(n), counts)
    b = a + 1 + np.arange(a.size) - np.repeat(np.cumsum(counts) - counts, counts)
    i, j = order[a], order[b]
    meet = (lo_y[i] <= hi_y[j]) & (lo_y[j] <= hi_y[i])
    i, j = np.minimum(i[meet], j[meet]), np.maximum(i[meet], j[meet])
    keep = (j - i >= 2) & ~((i == 0) & (j == n - 1))  # adjacent edges share a vertex
    i, j = i[keep], j[keep]

    def orient(ax, ay, bx, by, cx, cy):
        return np.sign((bx - ax) * (cy - ay) - (by - ay) * (cx - ax))

    d1 = orient(x0[i], y0[i], x1[i], y1[i], x0[j], y0[j])
    d2 = orient(x0[i], y0[i], x1[i], y1[i], x1[j], y1[j])
    d3 = orient(x0[j], y0[j], x1[j], y1[j], x0[i], y0[i])
    d4 = orient(x0[j], y0[j], x1[j], y1[j], x1[i], y1[i])
    return bool(np.any((d1 * d2 < 0) & (d3 * d4 < 0)))


def check_one_to_one(field: DistortionField, n: int = 257) -> int:
    """Raise :class:`NotOneToOneError` unless ``field`` is one-to-one on its domain.

    Two checks: the Jacobian determinant keeps one sign, bounded away from zero, on an
    ``n x n`` grid (the field is a local diffeomorphism everywhere), and the image of the
    domain boundary does not cross itself (so no two regions map onto each other).

    Parameters
    ----------
    field : DistortionField
        The field.
    n : int
        Points per axis of the grid of the Jacobian check.

    Returns
    -------
    int
        The sign of the determinant (the parity: +1 or -1).

    Raises
    ------
    NotOneToOneError
        When either check fails.
    """
    x, y = dense_grid(field.domain, n)
    _, _, jac = field.jacobian(x, y)
    det = jac[:, 0, 0] * jac[:, 1, 1] - jac[:, 0, 1] * jac[:, 1, 0]
    typical = np.median(np.abs(det))
    if not np.isfinite(typical) or typical == 0.0:
        raise NotOneToOneError("the field's Jacobian determinant is zero: it is not one-to-one")
    bad = (np.sign(det) != np.sign(np.median(det))) | (np.abs(det) < 1e-8 * typical)
    if np.any(bad):
        k = np.flatnonzero(bad)[0]
        raise NotOneToOneError(
            f"the field is not one-to-one on its domain {field.domain}: the Jacobian "
            f"determinant changes sign or vanishes (first at x={x[k]:.2f}, y={y[k]:.2f}); "
            "it cannot be reversed"
        )
    bx, by = boundary(field.domain)
    bu, bv = field(bx, by)
    if _segments_cross(bu, bv):
        raise NotOneToOneError(
            f"the field is not one-to-one on its domain {field.domain}: the image of the "
            "domain boundary crosses itself; it cannot be reversed"
        )
    return int(np.sign(np.median(det)))


def output_domain(field: DistortionField, pad: float = 1e-9) -> tuple[float, float, float, float]:
    """Bounding box of the field's image of its domain.

    Parameters
    ----------
    field : DistortionField
        The field.
    pad : float
        Relative margin added on each side.

    Returns
    -------
    tuple of float
        ``(umin, umax, vmin, vmax)``, output units.
    """
    bx, by = boundary(field.domain, 512)
    gx, gy = dense_grid(field.domain, 65)
    u, v = field(np.concatenate([bx, gx]), np.concatenate([by, gy]))
    du = (u.max() - u.min()) * pad
    dv = (v.max() - v.min()) * pad
    return (u.min() - du, u.max() + du, v.min() - dv, v.max() + dv)


def invert(field: DistortionField, degree: int | None = None, tol: float = 1e-4, max_degree: int = 12,
           fit_points: int = 101, check_points: int = 257, strict: bool = False) -> Inverse:
    """Fit the reverse field of ``field`` and measure its round-trip accuracy.

    Parameters
    ----------
    field : DistortionField
        The forward field; it must be one-to-one on its domain.
    degree : int or None
        Degree of the reverse field.  ``None`` tries degrees from the forward degree
        up to ``max_degree`` and keeps the first whose round trip meets ``tol``
        (or the best one found).
    tol : float
        Wanted maximum round-trip error, in the forward field's input unit.
    fit_points, check_points : int
        Points per axis of the fitting grid and of the (denser, different) check grid.
    max_degree : int
        Highest degree tried when ``degree`` is None.
    strict : bool
        Raise :class:`~astrocal.errors.FieldError` (a ``ValueError``) if no degree meets
        ``tol``; otherwise log a warning.

    Returns
    -------
    Inverse
        The reverse field (the first meeting ``tol``, or the best) and its round-trip
        errors.

    Raises
    ------
    NotOneToOneError
        When the field is not one-to-one on its domain.
    """
    check_one_to_one(field)
    udom = output_domain(field)
    fx, fy = dense_grid(field.domain, fit_points)
    fu, fv = field(fx, fy)
    cx, cy = dense_grid(field.domain, check_points)
    cu, cv = field(cx, cy)
    degrees = [int(degree)] if degree is not None else list(range(field.degree, max_degree + 1))
    best = None
    for d in degrees:
        rev = DistortionField.fit(fu, fv, fx, fy, d, udom, unit=field.input_unit,
                                  input_unit=field.unit,
                                  meta={"reverse_of_degree": field.degree})
        rx, ry = rev(cu, cv)
        err = np.hypot(rx - cx, ry - cy)
        result = Inverse(rev, float(err.max()), float(np.sqrt(np.mean(err**2))),
                         (check_points, check_points), float(tol))
        if best is None or result.max_roundtrip_error < best.max_roundtrip_error:
            best = result
        if result.meets_tolerance:
            break
    log.debug("reverse field of degree %d: max round-trip error %.3g %s",
              best.field.degree, best.max_roundtrip_error, field.input_unit)
    if not best.meets_tolerance:
        message = (f"no reverse field up to degree {degrees[-1]} reaches the round-trip "
                   f"tolerance {tol:g} {field.input_unit}; best {best.max_roundtrip_error:.3g} "
                   f"at degree {best.field.degree}")
        if strict:
            raise FieldError(message)
        log.warning("%s", message)
    return best


def solve(field: DistortionField, u: ArrayLike, v: ArrayLike, guess: tuple[ArrayLike, ArrayLike] | None = None,
          tol: float = 1e-12, maxiter: int = 50, on_failure: str = "raise") -> tuple[np.ndarray, np.ndarray]:
    """Exact preimages ``(x, y)`` with ``field(x, y) = (u, v)``, by Newton iteration.

    Converges to ``tol`` (input unit) for a one-to-one field.

    Parameters
    ----------
    field : DistortionField
        The field.
    u, v : array_like
        Output positions (broadcast together).
    guess : tuple of array_like, optional
        An ``(x, y)`` start (e.g. from a reverse field); by default the affine part of
        the field is inverted.
    tol : float
        Step size (input unit) below which a point has converged.
    maxiter : int
        Largest number of Newton steps.
    on_failure : str
        ``"raise"`` or ``"nan"``: what to do with points that do not converge (typically
        far outside the domain, where the polynomial is not invertible).

    Returns
    -------
    x, y : np.ndarray
        The preimages, of the broadcast shape of ``u`` and ``v`` (NaN where they did not
        converge, with ``on_failure="nan"``).

    Raises
    ------
    FieldError
        (a ``ValueError``) naming the number of points that did not converge.
    """
    u, v = np.broadcast_arrays(np.asarray(u, dtype=float), np.asarray(v, dtype=float))
    shape = u.shape
    u, v = u.ravel(), v.ravel()
    if guess is None:
        aff = affine_part(field)
        xc, yc = field.centre
        u0, v0, jac = aff.jacobian(xc, yc)
        inv = np.linalg.inv(jac)
        du, dv = u - u0, v - v0
        x = xc + inv[0, 0] * du + inv[0, 1] * dv
        y = yc + inv[1, 0] * du + inv[1, 1] * dv
    else:
        x = np.broadcast_to(np.asarray(guess[0], dtype=float), shape).ravel().copy()
        y = np.broadcast_to(np.asarray(guess[1], dtype=float), shape).ravel().copy()
    active = np.ones(x.shape, bool)
    for _ in range(maxiter):
        idx = np.flatnonzero(active)
        fu, fv, jac = field.jacobian(x[idx], y[idx])
        ru, rv = u[idx] - fu, v[idx] - fv
        det = jac[..., 0, 0] * jac[..., 1, 1] - jac[..., 0, 1] * jac[..., 1, 0]
        dx = (jac[..., 1, 1] * ru - jac[..., 0, 1] * rv) / det
        dy = (-jac[..., 1, 0] * ru + jac[..., 0, 0] * rv) / det
        x[idx] += dx
        y[idx] += dy
        active[idx[np.hypot(dx, dy) <= tol]] = False
        if not active.any():
            break
    if active.any():
        if on_failure == "nan":
            x[active] = np.nan
            y[active] = np.nan
        else:
            raise FieldError(f"Newton inversion did not converge for {int(active.sum())} point(s)")
    return x.reshape(shape), y.reshape(shape)
