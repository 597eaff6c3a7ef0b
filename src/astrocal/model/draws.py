"""Maps from draws of the global parameters: the field's samples, its 1-sigma and its scale.

``g`` holds draws of the global parameter vector (one per row, arcsec), laid out as the
model's: the ``n_terms(degree)`` Legendre coefficients of the field's u component, then
those of v, then the rest. Positions ``x, y`` are 0-based detector pixels on ``domain``
``(xmin, xmax, ymin, ymax)``. Shared by :class:`astrocal.model.inference.LabFit` and the
posterior read back from disk (:class:`astrocal.model.result.Posterior`).

A fit with a residual field (:mod:`astrocal.field.residual`) passes ``residual = (basis,
first column)``: its coefficients are the ``basis.size`` columns of u from that column on,
then those of v; the field's samples and 1-sigma include it. The best affine part and the
pixel scale are the polynomial's alone (the residual is orthogonal to the polynomials).
"""
from __future__ import annotations

import numpy as np

from ..field import design_matrix
from ..field.basis import n_terms, terms


def field_samples(g, degree, domain, x, y, residual=None):
    """Samples of the field at the points: ``(u, v)`` each of shape (n_draws, N), arcsec
    (the polynomial plus, with ``residual``, the residual field)."""
    B = design_matrix(x, y, degree, domain)
    nt = n_terms(degree)
    u, v = g[:, :nt] @ B.T, g[:, nt:2 * nt] @ B.T
    if residual is not None:
        basis, r0 = residual
        phi = basis.design(x, y)
        m = basis.size
        u += g[:, r0:r0 + m] @ phi.T
        v += g[:, r0 + m:r0 + 2 * m] @ phi.T
    return u, v


def map_uncertainty(g, degree, domain, x, y, residual=None):
    """1-sigma (sample sd, ``ddof=1``) of the field at the points, ``(sigma_u, sigma_v)``
    arcsec, in the shape of ``x``."""
    u, v = field_samples(g, degree, domain, np.ravel(x), np.ravel(y), residual)
    shape = np.shape(x)
    return u.std(axis=0, ddof=1).reshape(shape), v.std(axis=0, ddof=1).reshape(shape)


def affine_matrices(g, degree, domain):
    """The 2x2 matrix of each draw's best affine part (its degree-1 Legendre terms) in
    arcsec per pixel: (n_draws, 2, 2), rows u and v, columns x and y."""
    nt = n_terms(degree)
    t = terms(degree)
    i10, i01 = t.index((1, 0)), t.index((0, 1))
    xmin, xmax, ymin, ymax = domain
    hx, hy = 0.5 * (xmax - xmin), 0.5 * (ymax - ymin)
    a = np.empty((len(g), 2, 2))
    a[:, 0, 0], a[:, 0, 1] = g[:, i10] / hx, g[:, i01] / hy
    a[:, 1, 0], a[:, 1, 1] = g[:, nt + i10] / hx, g[:, nt + i01] / hy
    return a


def pixel_scale_samples(g, degree, domain):
    """Samples of the areal pixel scale of the field's best affine part (arcsec/px):
    ``sqrt(|det A|)`` of :func:`affine_matrices`."""
    return np.sqrt(np.abs(np.linalg.det(affine_matrices(g, degree, domain))))
