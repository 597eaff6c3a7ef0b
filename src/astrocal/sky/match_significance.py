"""How significant a star match is: chance matches and the look-elsewhere factor.

The number ``n`` of stars within the tolerance of the reference positions predicted by a
pose is compared with the number expected by chance for a pose unrelated to the truth
(binomial, with the density of reference sources predicted in the field), multiplied by
the number of independent poses the search could have tried (rotation, scale,
translation and parity cells of the size of the tolerance): :func:`log10_trials`.
``-log10`` of this false-alarm probability is the match's ``significance``
(:func:`astrocal.sky.match.match_stars`).
"""
from __future__ import annotations

import math

import numpy as np
from scipy import special, stats

__all__ = ["log10_trials", "significance"]


def significance(n: int, n_stars: int, n_src_in: int, area: float, r: float,
                 log10_trials: float) -> tuple[float, float, float]:
    """The false-alarm probability of ``n`` matches within radius ``r``.

    Parameters
    ----------
    n : int
        Stars matched within ``r`` of their predicted reference position.
    n_stars : int
        Stars on the detector.
    n_src_in : int
        Reference sources predicted on the detector.
    area : float
        Detector area, px^2.
    r : float
        Matching radius, px.
    log10_trials : float
        log10 of the number of independent poses searched (:func:`log10_trials`).

    Returns
    -------
    log10_fap : float
        log10 of the false-alarm probability (the binomial tail times the trials, at
        most 0).
    log10_tail : float
        log10 of ``P(X >= n)``, ``X ~ Binomial(n_stars, p)`` with ``p`` the chance that a
        star has a reference source within ``r``.
    expected : float
        The number of chance matches expected, ``n_stars p``.
    """
    if n_stars <= 0 or n_src_in <= 0:
        return 0.0, 0.0, 0.0
    p = -math.expm1(-n_src_in / area * math.pi * r * r)
    p = min(max(p, 1e-300), 1.0)
    n = min(int(n), int(n_stars))
    if n <= 0:
        tail = 0.0
    else:   # log P(X >= n), X ~ Binomial(n_stars, p), summed in logs (no underflow)
        k = np.arange(n, n_stars + 1)
        tail = float(special.logsumexp(stats.binom.logpmf(k, n_stars, p))) / math.log(10)
    return min(tail + log10_trials, 0.0), tail, n_stars * p


def log10_trials(width: float, height: float, tol_px: float, rotation: tuple[float, float] | None,
                 scale_tolerance: float, max_offset_px: float | None, c_ref: np.ndarray,
                 n_parities: int) -> float:
    """log10 of the number of independent poses a search tries, at the tolerance's resolution.

    Parameters
    ----------
    width, height : float
        Detector size, px.
    tol_px : float
        Matching tolerance, px: the size of a translation cell, and over the detector's
        half-diagonal that of a rotation cell.
    rotation : tuple of float or None
        ``(centre, half width)`` (rad) of the rotations searched; None: any rotation.
    scale_tolerance : float
        Relative half width of the scales searched.
    max_offset_px : float or None
        Largest offset (px) of the reference origin from its expected position; None:
        any offset for which the reference overlaps the field.
    c_ref : np.ndarray
        (K, 2) reference sources, nominal px (for the translations of an unbounded
        offset).
    n_parities : int
        Parities searched (1 or 2).

    Returns
    -------
    float
        log10 of (rotation cells x scale cells x translation cells x parities).
    """
    s_hi = 1.0 + scale_tolerance
    R = 0.5 * math.hypot(width, height)
    d_ang = tol_px / R
    n_rot_cells = (2 * math.pi if rotation is None else 2 * rotation[1]) / d_ang
    n_scale_cells = max(1.0, 2 * scale_tolerance * R / tol_px)
    if max_offset_px is not None:
        a_trans = math.pi * max_offset_px ** 2
    else:
        ce = c_ref.max(axis=0) - c_ref.min(axis=0)
        a_trans = (width + ce.max() * s_hi) * (height + ce.max() * s_hi)
    n_trans_cells = max(1.0, a_trans / (math.pi * tol_px ** 2))
    return math.log10(max(n_rot_cells, 1.0) * n_scale_cells * n_trans_cells * n_parities)
