"""Dense star fields as a space telescope and Gaia see them, made without astrocal.

:func:`space_field` writes the two lists a user of HST or JWST brings to a match: a
detector star list (thousands of sources, 0-based pixels, instrumental magnitudes in the
imager's band) and a catalogue of the same sky (hundreds to thousands of stars, tangent-
plane offsets in arcsec, magnitudes in *another* band), and the truth: which source is
which catalogue star. Only numpy is used (no astrocal code), so a matcher is tested on data
it did not make.

The sky: stars uniform over a square ``margin`` times the detector's field, magnitudes
``m`` (the imager's band) from an exponential luminosity function ``dN/dm ~ 10**(slope m)``
and a catalogue band ``G = m + colour`` with colours ``N(colour_mean, colour_sd)`` per
star. The catalogue holds the ``n_catalog`` stars brightest in ``G`` over its footprint (the
margin included: a catalogue query is never cut to the detector), with position errors
``catalog_sigma_mas``. The list holds the ``n_sources`` stars brightest in ``m`` that fall
on the detector plus ``spurious`` random detections (cosmic rays, PSF artefacts) with
random magnitudes, each position with Gaussian noise ``noise_px``.

The detector sees a reference offset ``xi, eta`` (arcsec; ``xi`` to the east, ``eta``
north) at the pixel ``p = c + t + (1000 / (pixel_scale_mas * scale)) R(rotation) P (xi,
eta) + d(p)``: ``P = diag(parity, 1)``, ``c`` the detector centre, ``t`` the unknown
offset, ``scale`` the ratio of the true pixel scale to the nominal one (within
``scale_range``), ``rotation`` any angle, and ``d`` a smooth distortion of
``distortion_px`` at the corners (quadratic and cubic terms).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["SpaceField", "space_field"]


@dataclass
class SpaceField:
    """One field: the list, the catalogue and the truth.

    ``xy`` (N, 2) detector pixels (0-based), ``mag`` (N,) the list's magnitudes;
    ``ref`` (M, 2) catalogue offsets in arcsec, ``ref_mag`` (M,) its magnitudes (another
    band); ``truth`` (N,) the catalogue row of each source (-1: not in the catalogue,
    e.g. a spurious detection or a star too faint in G); the pose: ``scale`` (true /
    nominal pixel scale), ``rotation_deg``, ``parity``, ``offset_px``; ``shape`` (ny, nx)
    and ``pixel_scale_mas`` (nominal)."""

    xy: np.ndarray
    mag: np.ndarray
    ref: np.ndarray
    ref_mag: np.ndarray
    truth: np.ndarray
    scale: float
    rotation_deg: float
    parity: int
    offset_px: np.ndarray
    shape: tuple
    pixel_scale_mas: float

    @property
    def true_pixel_scale_mas(self) -> float:
        return self.pixel_scale_mas * self.scale


def _rot(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s], [s, c]])


def space_field(rng, *, n_sources=10000, n_catalog=2000, shape=(4096, 4096), pixel_scale_mas=40.0,
                scale_range=0.05, margin=1.3, slope=0.3, colour_mean=0.6, colour_sd=0.4,
                catalog_sigma_mas=1.0, noise_px=0.03, spurious=0.02, distortion_px=2.0,
                max_offset_fraction=0.25, parity=None, rotation_deg=None, scale=None):
    """A :class:`SpaceField` (see the module notes); every unknown drawn from ``rng``."""
    ny, nx = shape
    fov = np.array([nx, ny], float) * pixel_scale_mas / 1e3  # arcsec
    half = 0.5 * margin * fov
    # enough stars that the detector holds n_sources brighter than the list's limit
    n_true = int(np.ceil(n_sources * margin ** 2 * 1.6)) + 4 * n_catalog
    sky = rng.uniform(-half, half, (n_true, 2))
    u = rng.uniform(0.0, 1.0, n_true)
    m_bright, m_faint = 14.0, 27.0
    k = slope * np.log(10.0)
    m = m_bright + np.log1p(u * np.expm1(k * (m_faint - m_bright))) / k  # exponential LF
    g = m + rng.normal(colour_mean, colour_sd, n_true)
    cat_rows = np.argsort(g, kind="stable")[:n_catalog]
    ref = sky[cat_rows] + rng.normal(0.0, catalog_sigma_mas / 1e3, (n_catalog, 2))
    ref_mag = g[cat_rows]
    in_cat = np.full(n_true, -1)
    in_cat[cat_rows] = np.arange(n_catalog)

    s = float(rng.uniform(1 - scale_range, 1 + scale_range)) if scale is None else float(scale)
    th = float(rng.uniform(0.0, 360.0)) if rotation_deg is None else float(rotation_deg)
    par = int(rng.choice([-1, 1])) if parity is None else int(parity)
    centre = np.array([(nx - 1) / 2.0, (ny - 1) / 2.0])
    t = rng.uniform(-max_offset_fraction, max_offset_fraction, 2) * np.array([nx, ny])
    lin = sky * [par, 1.0] @ _rot(np.radians(th)).T * (1e3 / (pixel_scale_mas * s))
    z = lin / (0.5 * np.array([nx, ny]))  # about -1..1 over the detector
    d = distortion_px / 3.0 * np.column_stack([z[:, 0] ** 2 - 0.5 * z[:, 0] * z[:, 1] + 0.8 * z[:, 1] ** 3,
                                               0.7 * z[:, 1] ** 2 + 0.6 * z[:, 0] * z[:, 1] - 0.5 * z[:, 0] ** 3])
    p = centre + t + lin + d
    on = (p[:, 0] > -0.5) & (p[:, 0] < nx - 0.5) & (p[:, 1] > -0.5) & (p[:, 1] < ny - 0.5)
    rows = np.flatnonzero(on)
    n_real = int(round(n_sources * (1 - spurious)))
    rows = rows[np.argsort(m[rows], kind="stable")[:n_real]]
    xy = p[rows] + rng.normal(0.0, noise_px, (rows.size, 2))
    mag = m[rows] + rng.normal(0.0, 0.02, rows.size)
    truth = in_cat[rows]
    n_fake = n_sources - rows.size
    if n_fake > 0:
        fake = rng.uniform([0, 0], [nx - 1, ny - 1], (n_fake, 2))
        xy = np.vstack([xy, fake])
        mag = np.concatenate([mag, rng.uniform(m[rows].min(), m[rows].max(), n_fake)])
        truth = np.concatenate([truth, np.full(n_fake, -1)])
    order = rng.permutation(len(xy))
    return SpaceField(xy=xy[order], mag=mag[order], ref=ref, ref_mag=ref_mag, truth=truth[order], scale=s,
                      rotation_deg=th, parity=par, offset_px=t, shape=(ny, nx), pixel_scale_mas=pixel_scale_mas)
