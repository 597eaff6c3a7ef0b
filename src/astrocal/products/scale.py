"""The areal local pixel scale ``sqrt(|det J|)`` of a field on a pixel grid, and its
posterior draws at points (the METIS distortion map and its error, the report's maps)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from ..field import design_matrix
from ..field.basis import flat_to_square, legendre_1d

if TYPE_CHECKING:
    from ..field import DistortionField
    from ..field.residual import ResidualBasis
    from ..model.result import Posterior


def _jacobian_grid(field, xs, ys):
    """``(du/dx, du/dy, dv/dx, dv/dy)`` of the polynomial ``field`` on the grid ``xs`` x
    ``ys``, each ``(len(ys), len(xs))``. The Legendre basis is separable, so the Jacobian
    on a grid is four small matrix products (exact)."""
    t, _ = field.normalise(np.asarray(xs, float), np.zeros(len(xs)))
    _, s = field.normalise(np.zeros(len(ys)), np.asarray(ys, float))
    n = field.degree
    xmin, xmax, ymin, ymax = field.domain
    hx, hy = 0.5 * (xmax - xmin), 0.5 * (ymax - ymin)
    px, dpx = legendre_1d(t, n, derivative=True)
    py, dpy = legendre_1d(s, n, derivative=True)
    # u[y, x] = sum_ij c[i, j] P_j(s_y) P_i(t_x)
    return (py.T @ field.cx.T @ dpx / hx, dpy.T @ field.cx.T @ px / hy,
            py.T @ field.cy.T @ dpx / hx, dpy.T @ field.cy.T @ px / hy)


def local_scale_grid(field: DistortionField, xs: ArrayLike, ys: ArrayLike,
                     residual: tuple[ResidualBasis, np.ndarray, np.ndarray] | None = None,
                     factor: float = 1.0, dtype: DTypeLike = np.float64, rows: int = 128) -> np.ndarray:
    """Areal local pixel scale ``sqrt(|det J|)`` of ``field`` on the grid ``xs`` x ``ys``.

    Exact: the same values as :func:`astrocal.field.local_geometry` point by point. The
    grid is computed ``rows`` rows at a time, in place (a whole detector's Jacobian would
    be four arrays of its size, and their page faults cost more than the arithmetic).

    Parameters
    ----------
    field : astrocal.field.DistortionField
        The polynomial field.
    xs, ys : array_like
        1-D 0-based pixel coordinates of the grid's columns and rows.
    residual : (ResidualBasis, wu, wv), optional
        A residual field's basis and its coefficients (u, v), added to the field (its raw
        eigenfunctions separable on the grid, its polynomial part subtracted from the
        field's coefficients).
    factor : float, optional
        Multiplies the scale (e.g. 1e3 for mas per pixel from an arcsec field).
    dtype : numpy dtype, optional
        Of the returned array (each row chunk is computed in float64 and then cast).
    rows : int, optional
        Grid rows per chunk.

    Returns
    -------
    np.ndarray
        ``(len(ys), len(xs))``, in the field's output unit per pixel (arcsec/pixel for an
        instrument field) times ``factor``.
    """
    xs = np.asarray(xs, float)
    ys = np.asarray(ys, float)
    poly = field
    if residual is not None:
        basis, wu, wv = residual
        poly = _minus_residual_polynomial(field, basis, wu, wv)
    out = np.empty((ys.size, xs.size), dtype=dtype)
    for lo in range(0, ys.size, rows):
        yc = ys[lo:lo + rows]
        a, b, c, d = _jacobian_grid(poly, xs, yc)
        if residual is not None:
            _, rux, ruy = basis.raw_grid(wu, xs, yc)
            _, rvx, rvy = basis.raw_grid(wv, xs, yc)
            a += rux
            b += ruy
            c += rvx
            d += rvy
        a *= d
        b *= c
        a -= b
        np.abs(a, out=a)
        np.sqrt(a, out=a)
        if factor != 1.0:
            a *= factor
        out[lo:lo + rows] = a
    return out


def _minus_residual_polynomial(field, basis, wu, wv):
    """``field`` minus the polynomial part of the residual ``(wu, wv)`` on ``basis``
    (:meth:`ResidualBasis.polynomial_part`), stored at the higher of the two degrees."""
    degree = max(field.degree, basis.degree)
    f = field.with_degree(degree)
    pu = np.zeros((degree + 1, degree + 1))
    pv = np.zeros_like(pu)
    k = basis.degree + 1
    pu[:k, :k] = flat_to_square(basis.polynomial_part(wu), basis.degree)
    pv[:k, :k] = flat_to_square(basis.polynomial_part(wv), basis.degree)
    return f.replace(cx=f.cx - pu, cy=f.cy - pv)


def local_scale_samples(posterior: Posterior, x: ArrayLike, y: ArrayLike, max_draws: int = 1000,
                        chunk: int = 256) -> np.ndarray:
    """Posterior draws of the areal local pixel scale at points, of the polynomial plus the
    residual field when the fit has one.

    Parameters
    ----------
    posterior : astrocal.model.result.Posterior
        The saved posterior.
    x, y : array_like
        0-based detector pixel positions (flattened).
    max_draws : int, optional
        At most this many draws, thinned evenly.
    chunk : int, optional
        Points evaluated at a time (bounds the memory).

    Returns
    -------
    np.ndarray
        ``(n_draws, N)``: the local pixel scale ``sqrt(|det J|)`` (arcsec/pixel).
    """
    x = np.ravel(np.asarray(x, float))
    y = np.ravel(np.asarray(y, float))
    g = posterior.g
    if len(g) > max_draws:
        g = g[np.linspace(0, len(g) - 1, max_draws).astype(int)]
    nt = posterior.nt
    gu, gv = g[:, :nt], g[:, nt:2 * nt]
    res = posterior.residual
    out = np.empty((len(g), x.size))
    for lo in range(0, x.size, chunk):
        xs, ys = x[lo:lo + chunk], y[lo:lo + chunk]
        _, bx, by = design_matrix(xs, ys, posterior.degree, posterior.domain, derivatives=True)
        a, b = gu @ bx.T, gu @ by.T
        c, d = gv @ bx.T, gv @ by.T
        if res is not None:
            basis, r0 = res
            m = basis.size
            px, py = basis.design_derivatives(xs, ys)
            ru, rv = g[:, r0:r0 + m], g[:, r0 + m:r0 + 2 * m]
            a, b, c, d = a + ru @ px.T, b + ru @ py.T, c + rv @ px.T, d + rv @ py.T
        out[:, lo:lo + chunk] = np.sqrt(np.abs(a * d - b * c))
    return out
