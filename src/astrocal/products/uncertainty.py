"""The solution of a fit: the posterior-mean field with the posterior's 1-sigma.

The 1-sigma of the offsets at a detector position is the posterior spread of the
linear-grid position there, ``M (G(p) - G(b))`` (see :mod:`astrocal.solution`), from the
exact draws of the field (:func:`posterior_solution`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..field import design_matrix
from ..field.basis import terms
from ..model import draws
from ..solution import Solution

if TYPE_CHECKING:
    from ..model.result import Posterior


def posterior_solution(posterior: Posterior, filter_id: str, detector_shape: tuple[int, int] | None = None,
                       meta: dict | None = None, sigma_part: str = "auto") -> Solution:
    """A :class:`~astrocal.solution.Solution` of the posterior-mean field with the
    posterior's uncertainty.

    With a residual field (:mod:`astrocal.field.residual`) the solution's field is the
    posterior-mean polynomial and its ``residual`` the posterior-mean residual. Its
    ``sigma(x, y)`` is the posterior standard deviation of the linear-grid position
    ``M (G(p) + r(p) - G(b))`` (pixels) along x and y: exactly the sample standard deviation
    over the draws (``ddof=1``), computed from their covariance (linear in the
    coefficients), with the unresolved field's mean variance (:mod:`astrocal.model.draws`)
    added in quadrature.

    A fit whose pixel scale is not measured (sky-only: ``fit.json`` ``pixel_scale_mas``
    ``measured`` false) has its scale, rotation and position set by priors: its
    ``sigma`` is then that of the field's non-linear part alone (the degree <= 1 Legendre
    coefficients, the field's affine part, left out: each draw's own affine map taken as
    given), what the data measure; ``solution.meta["sigma_part"]`` says ``"non-linear"``.

    Parameters
    ----------
    posterior : astrocal.model.result.Posterior
        The saved posterior.
    filter_id : str
        The filter.
    detector_shape : (ny, nx), optional
        Detector size; default: from the field's domain.
    meta : dict, optional
        Provenance for the solution's ``meta``.
    sigma_part : {"auto", "full", "non-linear"}, optional
        ``"auto"``: the rule above; ``"full"``: the whole field's spread;
        ``"non-linear"``: the affine part left out.

    Returns
    -------
    astrocal.solution.Solution
        The solution with ``sigma``.

    Raises
    ------
    ValueError
        An unknown ``sigma_part``.
    """
    field = posterior.mean_field()
    residual = posterior.mean_residual()
    sol = Solution(field, filter=filter_id, detector_shape=detector_shape, meta=meta or {}, residual=residual)
    b = sol.boresight
    m = sol.linear_matrix
    nt = posterior.nt
    res = posterior.residual
    # columns of each component's coefficients: its polynomial's, then its residual's
    cu, cv = np.arange(nt), np.arange(nt, 2 * nt)
    if res is not None:
        basis, r0 = res
        cu, cv = np.r_[cu, r0:r0 + basis.size], np.r_[cv, r0 + basis.size:r0 + 2 * basis.size]
    cov = np.atleast_2d(np.cov(posterior.g[:, np.r_[cu, cv]], rowvar=False))  # arcsec**2
    meta = dict(meta or {})
    if sigma_part not in ("auto", "full", "non-linear"):
        raise ValueError(f"sigma_part must be 'auto', 'full' or 'non-linear', got {sigma_part!r}")
    unmeasured = (posterior.info.get("pixel_scale_mas") or {}).get("measured", True) is False
    if sigma_part == "non-linear" or (sigma_part == "auto" and unmeasured):
        affine = np.array([i + j <= 1 for i, j in terms(posterior.degree)])
        drop = np.r_[affine, np.zeros(len(cu) - nt, bool)]
        drop = np.r_[drop, drop]
        cov[drop, :] = 0.0
        cov[:, drop] = 0.0
        meta["sigma_part"] = "non-linear"
    bb = design_matrix([b[0]], [b[1]], posterior.degree, posterior.domain)[0]
    # unresolved field: isotropic variance per component (arcsec**2), through M to pixels
    extra = draws.unresolved_variance(posterior.unresolved) * np.sum(m**2, axis=1)

    def sigma(x, y):
        x = np.ravel(np.asarray(x, float))
        y = np.ravel(np.asarray(y, float))
        out_x = np.empty(x.size)
        out_y = np.empty(x.size)
        for lo in range(0, x.size, 4096):
            xs, ys = x[lo:lo + 4096], y[lo:lo + 4096]
            B = design_matrix(xs, ys, posterior.degree, posterior.domain) - bb  # d(component)/d(its coefficients)
            if res is not None:
                B = np.hstack([B, res[0].design(xs, ys)])
            for row, out in ((0, out_x), (1, out_y)):
                a = np.hstack([m[row, 0] * B, m[row, 1] * B])  # d(linear-grid position)/d(g)
                out[lo:lo + 4096] = np.sqrt(np.maximum(np.sum((a @ cov) * a, axis=1), 0.0) + extra[row])
        return out_x, out_y

    return Solution(field, filter=filter_id, detector_shape=detector_shape, sigma=sigma,
                    meta=meta, boresight=b, plate_scale=sol.plate_scale,
                    rotation=sol.rotation, parity=sol.parity, residual=residual)
