"""The monomial coefficients of a fit's distortion about the boresight, with their
posterior means and standard deviations (the METIS distortion table)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..field.basis import flat_to_square, legendre_to_monomial, square_to_flat, terms

if TYPE_CHECKING:
    from ..model.result import Posterior
    from ..solution import Solution


def distortion_coefficients(posterior: Posterior, solution: Solution) -> dict[str, np.ndarray]:
    """Monomial coefficients of the distortion with their posterior means and sd.

    Parameters
    ----------
    posterior : astrocal.model.result.Posterior
        The saved posterior (its draws of the polynomial's Legendre coefficients).
    solution : astrocal.solution.Solution
        The solution whose linear grid (boresight, plate scale, rotation and parity) the
        offsets are relative to, held fixed for every draw.

    Returns
    -------
    dict of str to np.ndarray
        Arrays in :func:`astrocal.field.basis.terms` order: ``i``, ``j`` (powers of
        ``X = x - x_b`` and ``Y = y - y_b``, pixels, ``b`` the boresight), ``dx``, ``dy``
        (+ ``_err``): the reverse offsets ``D2(p) = p - L(p)`` (pixels; subtract them from a
        measured position to get its linear-grid position) relative to the linear grid of
        ``solution``, and ``u``, ``v`` (+ ``_err``): the field ``G`` itself (focal-plane
        arcsec). Means are of the draws, ``_err`` their standard deviations (``ddof=1``).
    """
    degree = posterior.degree
    nt = posterior.nt
    xmin, xmax, ymin, ymax = posterior.domain
    centre = (0.5 * (xmin + xmax), 0.5 * (ymin + ymax))
    half = (0.5 * (xmax - xmin), 0.5 * (ymax - ymin))
    b = solution.boresight
    mu = legendre_to_monomial(flat_to_square(posterior.g[:, :nt], degree), centre, half, b)
    mv = legendre_to_monomial(flat_to_square(posterior.g[:, nt:2 * nt], degree), centre, half, b)
    mu, mv = square_to_flat(mu), square_to_flat(mv)  # (n, nt) in terms() order
    m = solution.linear_matrix
    dx = -(m[0, 0] * mu + m[0, 1] * mv)
    dy = -(m[1, 0] * mu + m[1, 1] * mv)
    ij = terms(degree)
    k10, k01 = ij.index((1, 0)), ij.index((0, 1))
    dx[:, 0] = dy[:, 0] = 0.0  # D2(b) = 0 by construction of the linear grid
    dx[:, k10] += 1.0
    dy[:, k01] += 1.0
    out = {"i": np.array([i for i, _ in ij]), "j": np.array([j for _, j in ij])}
    for name, values in (("dx", dx), ("dy", dy), ("u", mu), ("v", mv)):
        out[name] = values.mean(axis=0)
        out[f"{name}_err"] = values.std(axis=0, ddof=1)
    return out
