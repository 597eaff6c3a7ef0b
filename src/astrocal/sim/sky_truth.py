"""The truth of a simulated on-sky campaign: poses, flexure, star positions.

No images here: this module holds the *geometry* of a sky campaign with its known truth.
Its neighbours hold the night plan (:mod:`astrocal.sim.sky_plan`), the catalogues
(:mod:`astrocal.sim.sky_catalog`), the point-level observations that the measure stage
would produce for perfect detection and matching (:mod:`astrocal.sim.sky_points`, the fast
path for tests of the sky part of the joint model) and the files
(:mod:`astrocal.sim.sky_files`); the images are :mod:`astrocal.sim.sky`.

The chain, for star ``s`` (TRUE catalogue) in exposure ``e`` (see the model equation in
``docs/model.md`` and ``/docs`` of :mod:`astrocal.model.flexure`)::

    x_es      = apparent_positions(true catalogue, time, pointing, PA, site, weather, ...)
    Delta_es  = FlexureBasis.displacement(c, u_es, v_es, z_e, r_e, parity)
    X_es      = x_es + Delta_es + s_e x_es + theta_e R90 x_es + t_e          (arcsec)
    p_es      = G^-1(X_es)                                                  (pixels, 0-based)

``x_es`` (instrument frame) and ``(u_es, v_es)`` (telescope frame) come from
:func:`astrocal.sky.astrometry.apparent_positions` with the true catalogue; ``c`` are the
flexure coefficients (one set per campaign, their zenith dependence is in the basis);
``(s_e, theta_e, t_e)`` the exposure's pose (scale, rotation in radians, translation in
arcsec; ``R90 (x, y) = (-y, x)``): a common frame part (the small rotation and scale between
the sky's instrument frame and the lab mask frame) plus per-exposure pointing, position
angle and plate-scale errors; ``G`` the instrument field (pixels -> focal-plane arcsec).

The catalogue the fit sees (:func:`~astrocal.sim.sky_catalog.noisy_catalog`) is the truth plus errors drawn from the
catalogue's stated covariance (positions and proper motions), so that
``x_es(catalogue) = x_es(true) + J_e d_s`` with ``d_s`` the catalogue error (catalogue
minus truth, east/north arcsec at the exposure epoch) and ``J_e`` the
``FocalPlanePositions.jacobian``.

Stars whose proper motion the catalogue does not list (the Galactic Center list has two)
get a TRUE proper motion drawn from the catalogue's stated dispersion
(``meta["pm_dispersion_mas_yr"]``) in :func:`~astrocal.sim.sky_catalog.true_catalog`; the catalogue keeps "not
measured", and :func:`~astrocal.sky.astrometry.propagate` inflates their errors by exactly
that dispersion, so the truth is consistent with the stated covariance.

Earth orientation: the simulator never downloads IERS tables (``auto_download`` is off
while it computes); for times beyond astropy's shipped table astropy warns and uses its
predictions, which only rotate the whole field by < 1e-4 rad (absorbed by the poses).

Units: arcsec (focal plane, telescope frame), mas and mas/yr (catalogue errors), degrees
(angles in plans and tables), radians (pose rotation), pixels 0-based.
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field as dc_field
from typing import TYPE_CHECKING

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord
from numpy.typing import ArrayLike

from .. import earth
from .._moved import moved_module
from ..errors import SimulationOptionError
from ..field import DistortionField, solve
from ..model.flexure import FlexureBasis
from ..sky.astrometry import FocalPlanePositions, apparent_positions
from ..sky.catalog import Catalog, load_catalog
from . import sky_catalog
from .field import central_window, instrument_field
from .lab_settings import LabSimSettings

if TYPE_CHECKING:
    from .sky_plan import SkyPlan

__all__ = ["SkyExposureTruth", "SkyTruth", "focal_plane", "draw_sky_truth", "restrict_to_detector",
           "default_sky_field"]


@dataclass(frozen=True, eq=False)
class SkyExposureTruth:
    """The truth of one sky exposure, for the stars that land on the detector.

    ``apparent``: the true catalogue's :class:`~astrocal.sky.astrometry.FocalPlanePositions`
    (instrument frame ``x, y`` and telescope frame ``u, v``, arcsec), restricted to those
    stars; ``mag``: their L-band magnitudes; ``flexure``: ``Delta`` (N, 2) arcsec;
    ``focal``: ``X`` (N, 2) arcsec; ``pixels``: ``p = G^-1(X)`` (N, 2), 0-based;
    ``scale``, ``rotation`` (rad), ``shift`` (2,) arcsec: the pose ``(s_e, theta_e, t_e)``;
    ``edge_names``: stars on the detector but within the margin of its edge (no
    measurement: the "unmatched catalogue stars" inside the field).
    """

    name: str
    apparent: FocalPlanePositions
    mag: np.ndarray
    flexure: np.ndarray
    focal: np.ndarray
    pixels: np.ndarray
    scale: float
    rotation: float
    shift: np.ndarray
    edge_names: tuple = ()

    @property
    def names(self) -> np.ndarray:
        """Names of the stars (those of ``apparent``)."""
        return self.apparent.names

    def __len__(self):
        return len(self.apparent)


@dataclass(frozen=True, eq=False)
class SkyTruth:
    """Known truth of a simulated sky campaign (arcsec, radians, pixels 0-based).

    ``field``: the instrument field ``G``; ``catalog``: the TRUE catalogue; ``plan``;
    ``flexure`` (basis) and ``flexure_coeffs`` (arcsec, ``flexure.names`` order);
    ``frame_scale``, ``frame_rotation``: the part of every pose common to the campaign;
    ``exposures``: one :class:`SkyExposureTruth` each; ``margin_px``: stars closer than
    this to the detector edge are not measured; ``magnitude_note``: how ``mag`` was made.
    """

    field: DistortionField
    catalog: Catalog
    plan: SkyPlan
    flexure: FlexureBasis
    flexure_coeffs: np.ndarray
    frame_scale: float
    frame_rotation: float
    exposures: tuple
    margin_px: float = 8.0
    magnitude_note: str = ""
    settings: dict = dc_field(default_factory=dict)

    def __len__(self):
        return len(self.exposures)

    @property
    def pose_scale(self) -> np.ndarray:
        """Scale change ``s_e`` of every exposure's pose."""
        return np.array([e.scale for e in self.exposures])

    @property
    def pose_rotation(self) -> np.ndarray:
        """Rotation ``theta_e`` of every exposure's pose, radians."""
        return np.array([e.rotation for e in self.exposures])

    @property
    def pose_shift(self) -> np.ndarray:
        """Translation ``t_e`` of every exposure's pose, (E, 2) arcsec."""
        return np.array([e.shift for e in self.exposures]).reshape(-1, 2)

    @property
    def star_names(self) -> np.ndarray:
        """Names of the stars seen in at least one exposure (sorted)."""
        return np.unique(np.concatenate([e.names for e in self.exposures] or [np.array([], str)]))


def focal_plane(apparent: FocalPlanePositions, flexure: FlexureBasis, coeffs: ArrayLike, scale: float,
                rotation: float, shift: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """``X = x + Delta + s x + theta R90 x + t`` (arcsec) for one exposure.

    Parameters
    ----------
    apparent : FocalPlanePositions
        The stars' apparent positions ``x`` (instrument frame) and ``u, v`` (telescope
        frame), arcsec.
    flexure : FlexureBasis
        The flexure basis.
    coeffs : array_like
        Its coefficients, arcsec.
    scale : float
        The pose's scale change ``s``.
    rotation : float
        The pose's rotation ``theta``, radians.
    shift : array_like
        The pose's translation ``t`` (2,), arcsec.

    Returns
    -------
    X : numpy.ndarray
        (N, 2) focal-plane positions, arcsec.
    Delta : numpy.ndarray
        (N, 2) flexure displacements, arcsec.
    """
    x = apparent.xy
    if len(x) == 0:
        return np.zeros((0, 2)), np.zeros((0, 2))
    delta = flexure.displacement(coeffs, apparent.u, apparent.v, apparent.zenith_distance_deg,
                                 apparent.rotator_angle_deg, apparent.parity)
    r90 = np.column_stack([-x[:, 1], x[:, 0]])
    return x + delta + scale * x + rotation * r90 + np.asarray(shift, float), delta


def _footprint(field, pad_arcsec):
    """Bounding box (arcsec) of the detector's image in the focal plane, padded."""
    xmin, xmax, ymin, ymax = field.domain
    t = np.linspace(0.0, 1.0, 33)
    ex = np.concatenate([xmin + (xmax - xmin) * t, np.full(33, xmax), xmin + (xmax - xmin) * t, np.full(33, xmin)])
    ey = np.concatenate([np.full(33, ymin), ymin + (ymax - ymin) * t, np.full(33, ymax), ymin + (ymax - ymin) * t])
    fu, fv = field(ex, ey)
    return fu.min() - pad_arcsec, fu.max() + pad_arcsec, fv.min() - pad_arcsec, fv.max() + pad_arcsec


def _pixel_scale(field):
    _, _, jac = field.jacobian(*field.centre)
    return float(np.sqrt(abs(np.linalg.det(jac))))


def draw_sky_truth(field: DistortionField, catalog_true: Catalog | str | os.PathLike, plan: SkyPlan,
                   rng: np.random.Generator | int | None, *, flexure: FlexureBasis | None = None,
                   flexure_sigma_mas: float = 0.5, flexure_coeffs: ArrayLike | None = None,
                   pointing_sigma_arcsec: float = 0.1, rotation_sigma_deg: float = 0.01, scale_sigma: float = 5e-5,
                   frame_rotation_deg: float = 0.05, frame_scale: float = 3e-4, margin_px: float = 8.0,
                   magnitudes: ArrayLike | None = None) -> SkyTruth:
    """Draw the truth of a sky campaign and the true pixel position of every visible star.

    ``field``: the instrument field ``G`` (0-based pixels -> focal-plane arcsec; its domain
    is the detector); ``catalog_true``: the TRUE catalogue (:func:`~astrocal.sim.sky_catalog.true_catalog`);
    ``plan``: a :class:`~astrocal.sim.sky_plan.SkyPlan`. Drawn, in this order from ``rng``: the common frame
    rotation and scale (rms ``frame_rotation_deg``, ``frame_scale``), the flexure
    coefficients (each ``N(0, flexure_sigma_mas)``, arcsec at the basis radius; or the
    given ``flexure_coeffs``; basis ``flexure``, default :class:`FlexureBasis()`), then per
    exposure the pointing error (rms ``pointing_sigma_arcsec`` per axis), the PA error
    (``rotation_sigma_deg``) and the plate-scale change (``scale_sigma``). Stars whose
    true pixel position is outside the detector are dropped; those within ``margin_px`` of
    its edge are listed in ``edge_names``. A negative ``margin_px`` keeps the stars up to
    that many pixels OUTSIDE the detector (their light reaches it: used to render images;
    :func:`restrict_to_detector` then gives the truth with the usual margin, the same draws).

    Parameters
    ----------
    field : DistortionField
        The instrument field ``G`` (0-based pixels -> focal-plane arcsec; its domain is the
        detector).
    catalog_true : Catalog, str or os.PathLike
        The TRUE catalogue (:func:`~astrocal.sim.sky_catalog.true_catalog`), or a file or
        name of one.
    plan : SkyPlan
        The exposures.
    rng : numpy.random.Generator, int or None
        The random stream (or its seed).
    flexure : FlexureBasis, optional
        The flexure basis (default ``FlexureBasis()``).
    flexure_sigma_mas : float
        Rms of the drawn flexure coefficients, mas at the basis radius.
    flexure_coeffs : array_like, optional
        The flexure coefficients (arcsec, ``flexure.names`` order) instead of drawn ones.
    pointing_sigma_arcsec, rotation_sigma_deg, scale_sigma : float
        Rms of the per-exposure pointing error (per axis), PA error and plate-scale change.
    frame_rotation_deg, frame_scale : float
        Rms of the common frame rotation and scale.
    margin_px : float
        Stars within this of the detector edge are not measured (negative: kept up to that
        far outside).
    magnitudes : array_like, optional
        Magnitude per catalogue star (default :func:`~astrocal.sim.sky_catalog.band_magnitudes`).

    Returns
    -------
    SkyTruth
        The truth.

    Raises
    ------
    SimulationOptionError
        If ``magnitudes`` or ``flexure_coeffs`` have the wrong length, or no catalogue star is
        near the field centre.
    """
    rng = np.random.default_rng(rng)
    flexure = FlexureBasis() if flexure is None else flexure
    cat = load_catalog(catalog_true)
    if magnitudes is None:
        mags_all, note = sky_catalog.band_magnitudes(cat)
    else:
        mags_all, note = np.asarray(magnitudes, float), "given"
        if mags_all.shape != (len(cat),):
            raise SimulationOptionError(f"magnitudes: expected {len(cat)} values, got shape {mags_all.shape}")
    f_rot = math.radians(rng.normal(0.0, frame_rotation_deg))
    f_scale = float(rng.normal(0.0, frame_scale))
    if flexure_coeffs is None:
        coeffs = rng.normal(0.0, flexure_sigma_mas / 1e3, flexure.n_params)
    else:
        coeffs = np.asarray(flexure_coeffs, float)
        if coeffs.shape != (flexure.n_params,):
            raise SimulationOptionError(f"flexure_coeffs: expected {flexure.n_params} values ({flexure.names[0]}, ...), "
                             f"got shape {coeffs.shape}")
    n_e = len(plan)
    shifts = rng.normal(0.0, pointing_sigma_arcsec, (n_e, 2))
    rots = f_rot + np.radians(rng.normal(0.0, rotation_sigma_deg, n_e))
    scales = f_scale + rng.normal(0.0, scale_sigma, n_e)

    box = _footprint(field, 0.0)
    half = 0.5 * max(box[1] - box[0], box[3] - box[2])
    dither = max((float(SkyCoord(e.ra_deg * u.deg, e.dec_deg * u.deg).separation(
        SkyCoord(plan.center_ra_deg * u.deg, plan.center_dec_deg * u.deg)).arcsec) for e in plan), default=0.0)
    near = cat.separation_from((plan.center_ra_deg, plan.center_dec_deg)) <= (
        half * math.sqrt(2) + dither + 5 * pointing_sigma_arcsec + 2.0)
    if not near.any():
        raise SimulationOptionError(f"{cat.source}: no catalogue star near the field centre "
                         f"({plan.center_ra_deg:.6f}, {plan.center_dec_deg:.6f}) deg")
    sub = cat.select(near)
    mags_sub = mags_all[near]
    pad = (20 + max(0.0, -float(margin_px))) * _pixel_scale(field)
    fbox = _footprint(field, pad)
    xmin, xmax, ymin, ymax = field.domain
    exposures = []
    with earth.orientation():
        for k, exp in enumerate(plan):
            fp = apparent_positions(sub, **exp.astrometry_kwargs(plan.site, plan.parity), missing_pm="ignore")
            X, delta = focal_plane(fp, flexure, coeffs, scales[k], rots[k], shifts[k])
            cand = (X[:, 0] > fbox[0]) & (X[:, 0] < fbox[1]) & (X[:, 1] > fbox[2]) & (X[:, 1] < fbox[3])
            px = np.full(len(X), np.nan)
            py = np.full(len(X), np.nan)
            if cand.any():
                px[cand], py[cand] = solve(field, X[cand, 0], X[cand, 1], on_failure="nan")
            with np.errstate(invalid="ignore"):
                on = (px >= xmin) & (px <= xmax) & (py >= ymin) & (py <= ymax)
                keep = ((px > xmin + margin_px) & (px < xmax - margin_px)
                        & (py > ymin + margin_px) & (py < ymax - margin_px))
            edge = tuple(str(v) for v in fp.names[on & ~keep])
            exposures.append(SkyExposureTruth(
                name=exp.name, apparent=fp.select(keep), mag=mags_sub[keep], flexure=delta[keep],
                focal=X[keep], pixels=np.column_stack([px[keep], py[keep]]), scale=float(scales[k]),
                rotation=float(rots[k]), shift=shifts[k].copy(), edge_names=edge))
    settings = {"flexure_sigma_mas": flexure_sigma_mas, "pointing_sigma_arcsec": pointing_sigma_arcsec,
                "rotation_sigma_deg": rotation_sigma_deg, "scale_sigma": scale_sigma,
                "frame_rotation_deg": frame_rotation_deg, "frame_scale": frame_scale,
                "flexure_coeffs_given": flexure_coeffs is not None}
    return SkyTruth(field=field, catalog=cat, plan=plan, flexure=flexure, flexure_coeffs=coeffs,
                    frame_scale=f_scale, frame_rotation=f_rot, exposures=tuple(exposures),
                    margin_px=float(margin_px), magnitude_note=note, settings=settings)


def restrict_to_detector(truth: SkyTruth, margin_px: float = 8.0) -> SkyTruth:
    """The same truth with only the stars more than ``margin_px`` inside the detector.

    Parameters
    ----------
    truth : SkyTruth
        A truth (drawn with a smaller or negative margin).
    margin_px : float
        The margin, pixels.

    Returns
    -------
    SkyTruth
        The restricted truth (``edge_names``: the stars on the detector but closer to its
        edge).
    """
    xmin, xmax, ymin, ymax = truth.field.domain
    out = []
    for e in truth.exposures:
        px, py = e.pixels[:, 0], e.pixels[:, 1]
        on = (px >= xmin) & (px <= xmax) & (py >= ymin) & (py <= ymax)
        keep = (px > xmin + margin_px) & (px < xmax - margin_px) & (py > ymin + margin_px) & (py < ymax - margin_px)
        edge = tuple(str(v) for v in e.names[on & ~keep])
        out.append(dataclasses.replace(e, apparent=e.apparent.select(keep), mag=e.mag[keep], flexure=e.flexure[keep],
                                       focal=e.focal[keep], pixels=e.pixels[keep], edge_names=edge))
    return dataclasses.replace(truth, exposures=tuple(out), margin_px=float(margin_px))


def default_sky_field(instrument: str = "metis-lm",
                      detector_shape: tuple[int, int] | None = None) -> DistortionField:
    """The instrument field a sky simulation uses by default.

    The lab simulator's default field (:func:`astrocal.sim.field.instrument_field`, fixed),
    cropped to the central ``detector_shape`` window when smaller than the detector.

    Parameters
    ----------
    instrument : str
        Instrument preset.
    detector_shape : tuple of int, optional
        ``(ny, nx)`` of the window (default: the whole detector).

    Returns
    -------
    DistortionField
        The field (0-based pixels -> focal-plane arcsec).
    """
    d = LabSimSettings()
    inst, field = instrument_field(instrument, d.distortion_degree, d.distortion_corner_px,
                                   d.distortion_rotation_deg, d.distortion_seed)
    if detector_shape is not None and tuple(detector_shape) != tuple(inst.detector_shape):
        field = central_window(field, inst.detector_shape, tuple(int(v) for v in detector_shape))
    return field


#: the names that moved to the modules of the night plan, the catalogues, the observation
#: and the files (issue 20) keep working from here for one release, with a DeprecationWarning
__getattr__ = moved_module(__name__, ["astrocal.sim.sky_plan", "astrocal.sim.sky_catalog",
                                      "astrocal.sim.sky_files", "astrocal.sources", "astrocal.sim.sky_points"])
