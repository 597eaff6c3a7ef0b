"""How well a lab campaign's mask offsets tell the field apart from the mask's hole errors.

A hole seen in exposures ``j`` (mask offsets ``o_j``, detector pixels) samples the field
at ``p + o_j``. Its own position error is one unknown per hole, so of any field structure
the data see only how it *differs* between the hole's exposures: for a plane wave
``exp(i k . p)`` of period ``P = 2 pi / abs(k)`` the fraction of its power left in those
differences is::

    s(k) = 1 - |mean_j exp(i k . o_j)|**2

the **separable fraction** (1: the offsets tell that structure from the holes; 0: it looks
exactly like a pattern of hole errors). Structure whose period is long against the offsets'
spread (``s`` small) is told from the hole errors only through its smoothness and the
priors: for a polynomial field that is safe (the polynomial's gradients are large across
the offsets), but small structure on those scales (a ripple of a few hundredths of a pixel
with a period of a few offset spans) is shared between the residual field and the hole
errors *by the prior alone*, so the map's 1-sigma there is only as good as the residual
field's stationary Matérn prior is for it. :func:`dither_separation` returns ``s``
averaged over the directions of ``k`` and over the holes (each weighted by its points),
for a ladder of periods, and the period above which it falls below one half
(``half_period_px``): astrocal writes it to ``fit.json`` (``dither_separation``) and the
report states it. Wider or more varied offsets move that period up.

This is a property of the offsets alone (not of the data's noise): the same number for any
field. Offsets in arcsec are turned into detector pixels with the nominal pixel scale; the
detector's rotation does not matter (directions are averaged) and the distortion's scale
changes are negligible here.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .data import Points

__all__ = ["dither_separation", "PERIODS_PX", "SEPARABLE_HALF"]

#: periods (detector pixels) at which the separable fraction is evaluated
PERIODS_PX = (64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096, 8192)
#: the separable fraction that defines ``half_period_px``
SEPARABLE_HALF = 0.5
#: directions of the wave vector averaged over (0 ... pi; the fraction is even in k)
N_DIRECTIONS = 90


def dither_separation(points: Points, periods_px: Sequence[float] = PERIODS_PX,
                      n_directions: int = N_DIRECTIONS) -> dict | None:
    """The separable fraction of field structure against the mask's hole errors, per period.

    Parameters
    ----------
    points : astrocal.model.data.Points
        The fit's points; only lab holes (``source_kind == 0``) seen in at least two
        exposures count (stars have catalogue positions, not free errors).
    periods_px : sequence of float
        Periods (detector pixels) of the plane waves.
    n_directions : int
        Directions of the wave vector averaged over.

    Returns
    -------
    dict or None
        ``periods_px``, ``separable_fraction`` (direction- and hole-averaged ``s``, see the
        module notes), ``separable_min`` (the worst direction's), ``half_period_px`` (the
        period, interpolated in ``log P``, above which the fraction is below
        :data:`SEPARABLE_HALF`; None when it is above it at every period listed),
        ``offset_span_px`` (the rms distance of the offsets from their mean) and
        ``n_holes``. None when no hole is seen twice (nothing to separate).
    """
    kinds = np.asarray(getattr(points, "source_kind", np.zeros(points.n_holes, int)))
    lab = kinds[points.hole] == 0
    if not lab.any():
        return None
    # the exposures each lab hole is seen in (once per exposure)
    pairs = np.unique(np.c_[points.hole[lab], points.exposure[lab]], axis=0)
    hole, exposure = pairs[:, 0], pairs[:, 1]
    counts = np.bincount(hole, minlength=points.n_holes)
    keep = counts[hole] >= 2
    if not keep.any():
        return None
    hole, exposure = hole[keep], exposure[keep]
    holes, hole_index = np.unique(hole, return_inverse=True)
    n_seen = np.bincount(hole_index).astype(float)
    offsets_px = np.asarray(points.offsets, float) / float(points.pixel_scale)  # (E, 2)
    o = offsets_px[exposure]  # (M, 2): one row per (hole, exposure)
    periods = np.asarray(periods_px, float)
    theta = np.arange(n_directions) * np.pi / n_directions
    k = (2 * np.pi / periods)[:, None, None] * np.stack([np.cos(theta), np.sin(theta)], -1)[None]  # (P, D, 2)
    phase = np.exp(1j * np.einsum("pdc,mc->pdm", k, o))  # (P, D, M)
    mean = np.zeros(phase.shape[:2] + (len(holes),), complex)
    np.add.at(np.moveaxis(mean, -1, 0), hole_index, np.moveaxis(phase, -1, 0))
    mean /= n_seen
    s = 1.0 - np.abs(mean) ** 2  # (P, D, H)
    w = n_seen / n_seen.sum()
    frac = np.einsum("pdh,h->p", s, w) / n_directions
    worst = np.min(np.einsum("pdh,h->pd", s, w), axis=1)
    span = float(np.sqrt(np.mean(np.sum((o - o.mean(0)) ** 2, axis=1))))
    return {"periods_px": periods.tolist(), "separable_fraction": frac.tolist(),
            "separable_min": worst.tolist(), "half_period_px": _half_period(periods, frac),
            "offset_span_px": span, "n_holes": int(len(holes))}


def _half_period(periods, frac):
    """The first period (ascending) from which on the fraction stays below one half,
    interpolated linearly in ``log P``; None if it never falls below."""
    below = frac < SEPARABLE_HALF
    if not below[-1]:
        return None
    first = len(below) - int(np.argmin(below[::-1])) if not below.all() else 0
    if first == 0:
        return float(periods[0])
    p0, p1, f0, f1 = np.log(periods[first - 1]), np.log(periods[first]), frac[first - 1], frac[first]
    t = (f0 - SEPARABLE_HALF) / (f0 - f1)
    return float(np.exp(p0 + t * (p1 - p0)))
