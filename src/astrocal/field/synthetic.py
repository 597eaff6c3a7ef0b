"""Synthetic distortion fields with known truth, for simulators and tests.

:func:`smooth_field` builds the kind of field an imager's optics produce: a plate scale
and a small rotation, plus a smooth non-linear part whose displacement reaches a stated
size (a few pixels) at the detector corners, with power decreasing with degree.
"""
from __future__ import annotations

import numpy as np

from .basis import check_degree, terms
from .core import DistortionField
from .maps import nonlinear_part
from ..pixels import detector_domain


def smooth_field(shape: tuple[int, int] = (2048, 2048), pixel_scale_mas: float = 5.47, corner_px: float = 3.0,
                 degree: int = 5, rotation_deg: float = 0.0, rng: np.random.Generator | int | None = None,
                 radial_fraction: float = 0.7, reference: tuple[float, float] = (0.0, 0.0)) -> DistortionField:
    """A smooth instrument field (0-based detector pixels -> focal plane arcsec).

    Parameters
    ----------
    shape : (ny, nx)
        Detector size; the domain is its pixel edges.
    pixel_scale_mas : float
        Plate scale of the linear part, mas per pixel.
    corner_px : float
        Largest displacement of the non-linear part over the detector, in pixels.
    degree : int
        Total degree (>= 2 for a non-linear part).
    rotation_deg : float
        Rotation of the detector x axis in the focal plane, degrees.
    rng : numpy Generator or int, optional
        Random state for the non-radial part; ``None`` gives a fixed default field.
    radial_fraction : float
        Share of the non-linear displacement that is a radial (barrel/pincushion-like)
        term, the rest being random smooth terms with power falling as degree**-2.
    reference : (u, v)
        Focal-plane position (arcsec) of the detector centre.

    Returns
    -------
    DistortionField
        0-based detector pixels -> focal-plane arcsec on the detector's domain, with
        ``meta`` giving its kind, ``corner_px``, ``pixel_scale_mas`` and ``degree``.
    """
    degree = check_degree(degree)
    rng = np.random.default_rng(0 if rng is None else rng)
    domain = detector_domain(shape)
    n = degree
    # non-linear displacement in normalised pixel units, Legendre coefficients on (t, s)
    dx = np.zeros((n + 1, n + 1))
    dy = np.zeros_like(dx)
    for i, j in terms(n):
        if i + j >= 2:
            amp = 1.0 / (i + j) ** 2
            dx[i, j] = rng.normal(0, amp)
            dy[i, j] = rng.normal(0, amp)
    rand = DistortionField(dx, dy, (-1, 1, -1, 1), unit="pixel")
    if n >= 3:
        # radial cubic: (t, s) * (t**2 + s**2), expressed exactly in monomials
        mx = np.zeros((n + 1, n + 1))
        my = np.zeros_like(mx)
        mx[3, 0] = mx[1, 2] = 1.0
        my[0, 3] = my[2, 1] = 1.0
        radial = DistortionField.from_monomials(mx, my, (-1, 1, -1, 1), unit="pixel")
        radial = nonlinear_part(radial)
    else:
        radial = rand * 0.0
    gx, gy = np.meshgrid(np.linspace(-1, 1, 65), np.linspace(-1, 1, 65))

    def peak(f):
        u, v = f(gx, gy)
        return float(np.max(np.hypot(u, v))) or 1.0

    nl = rand * ((1 - radial_fraction) / peak(rand)) + radial * (radial_fraction / peak(radial))
    nl = nl * (corner_px / peak(nl))
    # assemble G = s R [(p - c) + d(p)], in arcsec, on the detector domain
    ny, nx = shape
    hx, hy = 0.5 * (domain[1] - domain[0]), 0.5 * (domain[3] - domain[2])
    px = np.zeros((n + 1, n + 1))
    py = np.zeros_like(px)
    px[1, 0], py[0, 1] = hx, hy  # (p - c) in Legendre terms of the detector domain
    px += nl.cx
    py += nl.cy
    s = pixel_scale_mas / 1000.0
    th = np.radians(rotation_deg)
    cx = s * (np.cos(th) * px - np.sin(th) * py)
    cy = s * (np.sin(th) * px + np.cos(th) * py)
    cx[0, 0] += reference[0]
    cy[0, 0] += reference[1]
    return DistortionField(cx, cy, domain, unit="arcsec", input_unit="pixel",
                           meta={"kind": "synthetic smooth field", "corner_px": corner_px,
                                 "pixel_scale_mas": pixel_scale_mas, "degree": degree})
