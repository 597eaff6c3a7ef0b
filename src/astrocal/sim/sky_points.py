"""The point-level observation of a simulated sky campaign: the measured tables of perfect
detection and matching, and a whole point-level campaign written from them (the fast path
for tests of the sky part of the joint model).

Units: pixels 0-based, relative fluxes (1 at the zero point).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import astropy.units as u
import numpy as np
from numpy.typing import ArrayLike
from astropy.table import Table

from .. import __version__
from ..atomic import atomic_write_table, atomic_write_text, check_writable
from ..errors import SimulationOptionError
from ..field import DistortionField
from ..instruments import get_instrument
from ..model.flexure import FlexureBasis
from ..sky.catalog import Catalog
from ..sources import FLAG_UNIDENTIFIED  # a source that matches no catalogue star
from .lab_truth import draw_centroid_errors
from .sky_catalog import make_true_catalog, noisy_catalog, with_band_magnitudes
from .sky_files import sky_campaign_toml, truth_paths, write_sky_truth
from .sky_plan import FIELDS, field_center, plan_night, target_key
from .sky_truth import SkyTruth, default_sky_field, draw_sky_truth

__all__ = ["star_flux", "observe_sky_points", "write_sky_points_campaign"]


def star_flux(mag: ArrayLike, zero_point_mag: float = 20.0) -> np.ndarray:
    """Relative flux ``10**(-0.4 (mag - zero_point_mag))`` used in the point-level tables.

    Parameters
    ----------
    mag : array_like
        Magnitudes.
    zero_point_mag : float
        The magnitude of flux 1.

    Returns
    -------
    numpy.ndarray
        The fluxes (arbitrary units: 1 at the zero point).
    """
    return 10.0 ** (-0.4 * (np.asarray(mag, float) - zero_point_mag))


def observe_sky_points(truth: SkyTruth, rng: np.random.Generator | int | None, *,
                       sigma_px: tuple[float, float] = (0.01, 0.05), dataset: str = "sky",
                       catalog: str = "catalog.ecsv", spurious_per_exposure: int = 0,
                       zero_point_mag: float = 20.0) -> list[Table]:
    """The measured sky tables of a truth, for perfect detection and matching.

    One astropy Table per exposure in the layout of the sky data interface (columns
    ``star``, ``x``, ``y`` (pix, 0-based), ``sigma_x``, ``sigma_y`` (pix), ``cov_xy``
    (pix2), ``flux``, ``flags``; meta ``kind``, ``dataset``, ``exposure``, ``time``,
    ``ra_deg``, ``dec_deg``, ``position_angle_deg``, ``parity``, ``site``, ``weather``,
    ``wavelength_um``, ``catalog``, ``match_quality``, ``unmatched_catalog_stars``).

    Each star's centroid sigma scales as ``flux**-0.5`` from ``sigma_px[0]`` for the
    brightest star of the campaign, capped at ``sigma_px[1]``, slightly anisotropic and
    correlated; the measured position is drawn from that covariance. ``flux`` is
    :func:`star_flux` of the star's magnitude. ``spurious_per_exposure`` unmatched
    sources (``star = ""``, flag 128) are added at random places.

    Parameters
    ----------
    truth : SkyTruth
        The truth (:func:`~astrocal.sim.sky_truth.draw_sky_truth`).
    rng : numpy.random.Generator, int or None
        The random stream (or its seed).
    sigma_px : tuple of float
        Centroid sigma of the brightest star and the cap, pixels.
    dataset : str
        The tables' ``dataset``.
    catalog : str
        The tables' ``catalog`` (path relative to the campaign).
    spurious_per_exposure : int
        Unmatched sources added per exposure.
    zero_point_mag : float
        Magnitude of flux 1 (:func:`star_flux`).

    Returns
    -------
    list of astropy.table.Table
        One table per exposure, in the plan's order.
    """
    rng = np.random.default_rng(rng)
    lo, hi = (float(v) for v in sigma_px)
    if not 0 < lo <= hi:
        raise SimulationOptionError(f"sigma_px must be (low, high) with 0 < low <= high, got {sigma_px}")
    all_mags = np.concatenate([e.mag for e in truth.exposures] or [np.zeros(0)])
    bright = float(np.nanmin(all_mags)) if all_mags.size and np.isfinite(all_mags).any() else 0.0
    xmin, xmax, ymin, ymax = truth.field.domain
    m = truth.margin_px
    tables = []
    for exp, pe in zip(truth.exposures, truth.plan):
        n = len(exp)
        mag = exp.mag
        s = np.where(np.isfinite(mag), lo * 10 ** (0.2 * (mag - bright)), hi)
        s = np.clip(s, lo, hi)
        sx, sy, rho, _, noise = draw_centroid_errors(s, rng)
        meas = exp.pixels + noise
        flux = star_flux(mag, zero_point_mag)
        names = [str(v) for v in exp.names]
        k = int(spurious_per_exposure)
        if k:
            meas = np.vstack([meas, np.column_stack([rng.uniform(xmin + m, xmax - m, k),
                                                     rng.uniform(ymin + m, ymax - m, k)])])
            sx = np.concatenate([sx, np.full(k, hi)])
            sy = np.concatenate([sy, np.full(k, hi)])
            rho = np.concatenate([rho, np.zeros(k)])
            flux = np.concatenate([flux, star_flux(np.full(k, np.nanmax(all_mags) if all_mags.size else 20.0),
                                                   zero_point_mag)])
            names += [""] * k
        t = Table()
        t["star"] = np.array(names, dtype=str) if names else np.zeros(0, dtype="U1")
        t["x"] = meas[:, 0] * u.pix
        t["y"] = meas[:, 1] * u.pix
        t["sigma_x"] = sx * u.pix
        t["sigma_y"] = sy * u.pix
        t["cov_xy"] = rho * sx * sy * u.pix**2
        t["flux"] = flux
        t["flags"] = np.where(np.array(names, dtype=str) == "", FLAG_UNIDENTIFIED, 0).astype(int) if names \
            else np.zeros(0, int)
        t.meta = {
            "kind": "sky", "dataset": dataset, "exposure": pe.name, "time": pe.time,
            "ra_deg": pe.ra_deg, "dec_deg": pe.dec_deg, "position_angle_deg": pe.position_angle_deg,
            "parity": int(truth.plan.parity), "site": truth.plan.site, "weather": dict(pe.weather),
            "wavelength_um": pe.wavelength_um, "catalog": str(catalog),
            "match_quality": {"method": "simulated (perfect detection and identification)",
                              "n_matched": n, "n_unmatched_sources": k},
            "unmatched_catalog_stars": list(exp.edge_names),
            "pixel_convention": "x, y: 0-based pixel positions (centre of the first pixel = 0.0)",
        }
        tables.append(t)
    return tables



def write_sky_points_campaign(out: str | os.PathLike, target: str = "gc", *, seed: int = 0,
                              instrument: str = "metis-lm", distortion: DistortionField | None = None,
                              detector_shape: tuple[int, int] | None = None, n_exposures: int = 12,
                              zenith_range: tuple[float, float] | None = None, night: str | None = None,
                              position_angles: Sequence[float] = (0.0,), dither_arcsec: float = 0.3,
                              flexure: FlexureBasis | None = None, flexure_sigma_mas: float = 0.5,
                              pointing_sigma_arcsec: float = 0.1, rotation_sigma_deg: float = 0.01,
                              scale_sigma: float = 5e-5, frame_rotation_deg: float = 0.05, frame_scale: float = 3e-4,
                              catalog_error_scale: float = 1.0, sigma_px: tuple[float, float] = (0.01, 0.05),
                              spurious_per_exposure: int = 0, fit_degree: int | str = "auto",
                              catalog_true: Catalog | None = None,
                              overwrite: bool = False) -> tuple[Path, SkyTruth, list[Table]]:
    """Write a point-level sky campaign (measured tables, no images) into ``out``.

    ``out/campaign.toml`` (``[instrument]`` preset, one ``[[sky]]`` dataset whose exposures
    are the tables, with time, pointing, PA, weather and wavelength per exposure, ``[fit]``),
    ``out/catalog.ecsv`` (the catalogue the fit sees: :func:`~astrocal.sim.sky_catalog.noisy_catalog`),
    ``out/tables/<exposure>.ecsv`` (:func:`observe_sky_points`) and the truth in
    ``out/truth/`` (:func:`~astrocal.sim.sky_files.write_sky_truth`). ``target``: ``"gc"`` or ``"47tuc"``;
    ``distortion``: a DistortionField (default :func:`~astrocal.sim.sky_truth.default_sky_field`); the other
    arguments as :func:`~astrocal.sim.sky_plan.plan_night`, :func:`~astrocal.sim.sky_truth.draw_sky_truth` and
    :func:`observe_sky_points`.

    Parameters
    ----------
    out : str or os.PathLike
        Output directory.
    target : str
        ``"gc"`` or ``"47tuc"``.
    seed : int
        Random seed (catalogue, plan, truth, catalogue errors, observation: one stream each;
        the fit's seed is ``seed + 1``).
    instrument : str
        Instrument preset.
    distortion : DistortionField, optional
        The instrument field (default :func:`~astrocal.sim.sky_truth.default_sky_field`).
    detector_shape : tuple of int, optional
        The central window of the default field, ``(ny, nx)``.
    n_exposures, zenith_range, night, position_angles, dither_arcsec
        The plan (:func:`~astrocal.sim.sky_plan.plan_night`; defaults of the target in
        :data:`~astrocal.sim.sky_plan.FIELDS`).
    flexure, flexure_sigma_mas, pointing_sigma_arcsec, rotation_sigma_deg, scale_sigma
        The truth (:func:`~astrocal.sim.sky_truth.draw_sky_truth`).
    frame_rotation_deg, frame_scale
        The truth's common frame (:func:`~astrocal.sim.sky_truth.draw_sky_truth`).
    catalog_error_scale : float
        Scale of the catalogue errors (:func:`~astrocal.sim.sky_catalog.noisy_catalog`).
    sigma_px, spurious_per_exposure
        The observation (:func:`observe_sky_points`).
    fit_degree : int or "auto"
        The ``[fit]`` degree.
    catalog_true : Catalog, optional
        The true catalogue (default :func:`~astrocal.sim.sky_catalog.make_true_catalog`).
    overwrite : bool
        Replace existing files.

    Returns
    -------
    path : pathlib.Path
        The campaign file.
    truth : SkyTruth
        The truth.
    tables : list of astropy.table.Table
        The measured tables.
    """
    out = Path(out)
    key = target_key(target)
    spec = FIELDS[key]
    inst = get_instrument(instrument)
    field = distortion if distortion is not None else default_sky_field(instrument, detector_shape)
    shape = (int(round(field.domain[3] + 0.5)), int(round(field.domain[1] + 0.5)))
    ss = np.random.SeedSequence(int(seed))
    s_cat, s_plan, s_truth, s_noise, s_obs = (np.random.default_rng(s) for s in ss.spawn(5))
    plan = plan_night(field_center(key), n_exposures, zenith_range=zenith_range or spec["zenith_range"],
                      night=night or spec["night"], position_angles=position_angles, dither_arcsec=dither_arcsec,
                      wavelength_um=inst.filter().center_um, rng=s_plan, prefix=key, target=key)
    names = [f"tables/{e.name}.ecsv" for e in plan]
    paths = [out / "campaign.toml", out / "catalog.ecsv"] + [out / n for n in names]
    for p in paths + list(truth_paths(out).values()):
        check_writable(p, overwrite)
    cat_true = catalog_true if catalog_true is not None else make_true_catalog(key, s_cat)
    truth = draw_sky_truth(field, cat_true, plan, s_truth, flexure=flexure, flexure_sigma_mas=flexure_sigma_mas,
                           pointing_sigma_arcsec=pointing_sigma_arcsec, rotation_sigma_deg=rotation_sigma_deg,
                           scale_sigma=scale_sigma, frame_rotation_deg=frame_rotation_deg, frame_scale=frame_scale)
    seen = with_band_magnitudes(noisy_catalog(truth.catalog, s_noise, error_scale=catalog_error_scale), truth.catalog)
    tables = observe_sky_points(truth, s_obs, sigma_px=sigma_px, dataset=key, catalog="catalog.ecsv",
                                spurious_per_exposure=spurious_per_exposure)
    out.mkdir(parents=True, exist_ok=True)
    seen.write(out / "catalog.ecsv", overwrite=overwrite)
    for t, n in zip(tables, names):
        atomic_write_table(t, out / n, overwrite=overwrite)
    write_sky_truth(out, truth, catalog_seen=seen, instrument=inst.name, filter_id=inst.default_filter,
                    overwrite=overwrite,
                    extra={"seed": int(seed), "target": key, "kind": "point-level sky campaign",
                           "observation": {"sigma_px": list(sigma_px), "spurious_per_exposure": spurious_per_exposure,
                                           "catalog_error_scale": catalog_error_scale}})
    toml = sky_campaign_toml(inst, shape, plan, names, "catalog.ecsv", dataset=key, band="L",
                             flexure=truth.flexure,
                             filter_name=inst.default_filter, fit_degree=fit_degree, seed=int(seed) + 1,
                             comment=f"point-level sky campaign ({spec['name']}) written by astrocal "
                                     f"{__version__}, seed {seed}; truth in truth/")
    atomic_write_text(out / "campaign.toml", toml, overwrite=overwrite)
    return out / "campaign.toml", truth, tables
