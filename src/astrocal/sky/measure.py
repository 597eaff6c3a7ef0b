"""The sky measure stage: one sky exposure -> a measured, matched sky table.

For every exposure of every ``[[sky]]`` dataset of a campaign (``astrocal measure``
calls :func:`measure_sky_datasets` after the lab datasets):

1. **stars** -- an *image* (FITS with a 2-D image) is reduced with the lab reduction
   (:func:`astrocal.image.reduce.reduce_frame`: the dataset's optional ``background`` and
   ``flat`` frames, bad, saturated and cold pixels, cosmic rays; without a background
   frame the sky level is removed by the detection's smooth background and the fits'
   local backgrounds), the stars are detected (:func:`astrocal.image.detect.detect_spots`,
   matched filter of the diffraction core, side lobes of bright stars rejected) and
   fitted with a PSF (:func:`astrocal.image.centroid.fit_centroids`: model-weighted,
   neighbours' light subtracted in a joint Gauss-Seidel fit, per-star covariance);
   the PSF is ``[measure] psf = "model"``: the AO-corrected star PSF
   :class:`~astrocal.image.psf.AOStarPSF` (the ELT diffraction core at the exposure's
   wavelength, Strehl ``strehl``, a seeing halo), or ``"epsf"``: an effective PSF built
   from the image's own isolated stars (:func:`astrocal.image.epsf.build_epsf`) after a
   first pass with the model. A *star list* (anything else: ECSV, FITS table, text,
   DAOPHOT, IRAF) is read with :func:`astrocal.sky.starlist.read_star_list` and the
   dataset's column choices; rows outside the detector are dropped (counted).
2. **predicted positions** -- the catalogue stars around the pointing are moved to the
   exposure epoch and projected into the instrument frame
   (:func:`astrocal.sky.astrometry.apparent_positions`) with the exposure's metadata,
   taken from the campaign keys first, then the FITS header (:data:`HEADER_KEYS`), then
   stated defaults (logged, and recorded in the table's ``meta["sources"]``).
3. **matching** (:func:`astrocal.sky.match.match_stars`) -- offset unknown up to the
   field size (the reference covers three field widths around the pointing), any
   rotation when the position angle is unknown, both parities when the parity is
   unknown, scale within 5 %. An unknown position angle and parity are then *measured*
   by the match (``meta["sources"]``: ``"match"``) and the positions recomputed with
   them. When a position angle or parity is given and no match is found with it, an
   unconstrained match is tried: if that succeeds the exposure fails with the angle and
   parity the stars do match (the campaign is wrong), otherwise with what was tried.
4. **write** ``<[measure] output>/<exposure stem>.ecsv`` atomically (refused if it exists,
   unless ``overwrite``); images also get ``<stem>_reduced.fits`` (SCI, DQ, BKGVAR).

The measured sky table (one row per detected source / star-list row):

=========== ====== =====================================================================
column      unit   meaning
=========== ====== =====================================================================
``star``           catalogue name of the matched star; ``""`` when unmatched
``x, y``    pix    centre, **0-based** (centre of the first pixel = 0.0; x along numpy axis 1)
``sigma_x`` pix    1-sigma errors of x and y
``sigma_y`` pix
``cov_xy``  pix2   x-y covariance
``flux``           images: total PSF flux (ADU per DIT, flat-fielded); lists: as given
``flags``          bits of :data:`FLAG_NAMES` (0 = good); reject with ``meta["reject_flags"]``
=========== ====== =====================================================================

plus, for images, ``snr``, ``flux_err``, ``background``, ``chi2_ndof``, ``npix``. The
``meta`` holds (plain types) ``kind = "sky"``, ``dataset``, ``exposure``, ``time`` (ISO
UTC, mid-exposure), ``ra_deg``, ``dec_deg``, exactly one of ``position_angle_deg`` /
``rotator_angle_deg``, ``parity``, ``site`` (name), ``site_info`` (its position, typical
weather and their provenance), ``weather`` (``pressure_hpa``,
``temperature_c``, ``relative_humidity``), ``wavelength_um``, ``catalog`` (as written in
the campaign), ``match_quality``, ``unmatched_catalog_stars`` (names predicted on the
detector without a source), and the provenance (``sources``, ``derived``, counts of
stars outside the field, warnings); see ``docs/sky_measure.md``.

Bad input is an error naming the exposure (and the key or file): no match (with what was
tried), a time that does not parse (naming the key), no time or pointing at all, a
catalogue without proper motions across a long epoch gap and no stated dispersion
(refused with the reason; with a dispersion the errors are inflated and a warning
recorded), a zenith distance given in the campaign that disagrees with the time,
pointing and site. Missing weather takes the site's typical values, stated in the log
and the table's meta.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import multiprocessing as mp
import time as _time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import astropy.units as u
from astropy.table import Table
from astropy.time import Time

from .. import __version__
from .. import earth
from .._moved import moved_module
from ..atomic import ProductExistsError, atomic_write_table, check_writable
from ..errors import AstrocalError, MeasureError
from ..image import centroid as C
from ..image.frame import dataset_calibration, exposure_stem, internal_error
from ..image.reduce import read_frame, write_reduced
from ..plain import to_plain
from ..resultset import confined
from ..sources import (FLAG_BLEND, FLAG_NAMES, FLAG_UNIDENTIFIED, FLAGS_REJECT_SKY as FLAGS_REJECT,
                       SKY_COLUMNS as TABLE_COLUMNS, read_sky_table)
from .catalog import Catalog, CatalogError, load_catalog
from .exposure import SkyMeasureError, exposure_header, is_image, resolve_exposure
from .exposure_match import match_exposure, predict_positions, rank_band, refraction_statement, wrap180
from .stars import DEFAULT_STREHL, SPACE_BLEND_RADIUS_PX, fwhm_px, image_stars, list_stars

if TYPE_CHECKING:
    from .exposure import ExposureSetup

__all__ = [
    "FLAG_BLEND",
    "FLAG_NAMES",
    "FLAGS_REJECT",
    "TABLE_COLUMNS",
    "ZENITH_TOLERANCE_DEG",
    "SEARCH_FIELDS",
    "measure_sky_exposure",
    "measure_sky_datasets",
    "read_sky_table",
]

log = logging.getLogger(__name__)

#: names that moved to the modules of the steps (issue 20): the old path warns
_MOVED_TO = {
    "astrocal.sky.exposure": ("HEADER_KEYS", "UNKNOWN_HORIZON", "ExposureSetup"),
    "astrocal.sky.stars": ("DEFAULT_SEEING_ARCSEC", "MAX_DETECTIONS", "MAX_NEIGHBOUR_PAIRS", "MIN_EPSF_STARS",
                           "star_psf"),
    "astrocal.sky.exposure_match": ("MATCH_TOLERANCES_PX", "MAX_FALSE_ALARM"),
}
_forward = {name: moved_module(__name__, target) for target, names in _MOVED_TO.items() for name in names}


def __getattr__(name: str) -> Any:
    """Names that moved to :mod:`astrocal.sky.exposure`, :mod:`astrocal.sky.stars` and
    :mod:`astrocal.sky.exposure_match` (one release, with a DeprecationWarning)."""
    if name in _forward:
        return _forward[name](name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: a zenith distance given in the campaign must agree with the computed one to this (deg)
ZENITH_TOLERANCE_DEG = 2.0
#: the reference covers the field shifted by up to this many field widths
SEARCH_FIELDS = 1.0


# =========================================================================== one exposure
def _setup_from(setup, **changes):
    return dataclasses.replace(setup, **changes)


@dataclass
class _Stars:
    """The stars of one exposure (step 1 of :func:`measure_sky_exposure`): per-source
    arrays (px), the image columns (``extra``), and what the table and meta need."""

    n: int
    x: np.ndarray
    y: np.ndarray
    sx: np.ndarray
    sy: np.ndarray
    cxy: np.ndarray
    flux: np.ndarray
    flags: np.ndarray
    usable: np.ndarray
    blend_r: float
    extra: dict
    flux_unit: Any
    sigma_source: str | None
    meta: dict
    shape: tuple
    n_out_det: int = 0
    reduced: Any = None
    header: Any = None


@dataclass
class _Matched:
    """The predicted positions and the match (steps 2 and 3 of :func:`measure_sky_exposure`)."""

    fp: Any
    mres: Any
    ref_rows: np.ndarray
    names: np.ndarray
    final: ExposureSetup
    p0: int
    pa0: float | None
    half: tuple


def measure_sky_exposure(exposure: Any, dataset: Any, instrument: Any, *, psf: str = "model",
                         catalog: Catalog | None = None, calibration: Any = None,
                         reduced_path: str | Path | None = None, overwrite: bool = False, stem: str | None = None,
                         provenance: dict | None = None, detect_threshold: float = 5.0) -> Table:
    """Measure one sky exposure and return its sky table (see the module notes).

    The exposure's metadata are resolved
    (:func:`~astrocal.sky.exposure.resolve_exposure`), then:

    1. the stars (:func:`~astrocal.sky.stars.image_stars` or
       :func:`~astrocal.sky.stars.list_stars`);
    2. the predicted positions (:func:`~astrocal.sky.exposure_match.predict_positions`);
    3. the match (:func:`~astrocal.sky.exposure_match.match_exposure`), the positions
       recomputed with an angle and parity measured by it;

    then the table and its meta are made and the reduced image is written (the table is
    written by :func:`measure_sky_datasets`).

    Parameters
    ----------
    exposure : astrocal.campaign.Exposure
        ``file`` an image or a star list, ``extra`` the campaign's keys.
    dataset : astrocal.campaign.SkyDataset
        The exposure's dataset.
    instrument : astrocal.campaign.InstrumentSpec
        The campaign's instrument (nominal pixel scale, detector shape, preset).
    psf : {"model", "epsf"}, optional
        The PSF of the fits.
    catalog : Catalog, optional
        The loaded :class:`~astrocal.sky.catalog.Catalog` (default: ``dataset.catalog``).
    calibration : astrocal.image.reduce.Calibration, optional
        Background and flat frames for the images.
    reduced_path : str or os.PathLike, optional
        Where to write the reduced image (None: not written).
    overwrite : bool, optional
        Replace an existing reduced image.
    stem : str, optional
        The exposure's name (default the file stem).
    provenance : dict, optional
        Extra meta (campaign, ...).
    detect_threshold : float, optional
        Detection threshold (sigma).

    Returns
    -------
    astropy.table.Table
        The sky table (columns and meta in the module notes).

    Raises
    ------
    SkyMeasureError
        Bad input, naming the exposure.
    astrocal.atomic.ProductExistsError
        The reduced image exists and ``overwrite`` is false.
    """
    t0 = _time.perf_counter()
    path = Path(exposure.file)
    stem = stem or exposure_stem(path)
    source = f"{path} (sky exposure '{stem}' of dataset '{dataset.name}')"
    if psf not in ("model", "epsf"):
        raise ValueError(f"psf must be 'model' or 'epsf', got {psf!r}")
    if not path.is_file():
        raise SkyMeasureError(f"{source}: file not found")
    pix = float(instrument.pixel_scale_mas)
    image = is_image(path)
    setup, catalog = _exposure_setup(exposure, dataset, instrument, path, image, catalog, source)
    warns = list(setup.notes)
    if image and dataset.strehl is None:
        log.info("%s: no strehl for dataset '%s': the model PSF assumes %g", source, dataset.name,
                 DEFAULT_STREHL)
    stars = _exposure_stars(path, image, dataset, instrument, setup, pix, calibration, psf, detect_threshold,
                            source, warns)
    m = _match_exposure(catalog, setup, stars, dataset, pix, source, warns)
    t, q, sigma_source = _sky_table(stars, m, source, warns)
    t.meta = to_plain(_sky_meta(exposure, dataset, catalog, setup, stars, m, q, sigma_source, path, stem,
                                image, pix, source, warns, provenance, t0))
    if image and reduced_path is not None:
        prov = {"DATASET": (dataset.name, "sky dataset")}
        if provenance and provenance.get("campaign"):
            prov["CAMPAIGN"] = (Path(provenance["campaign"]).name, "campaign file")
        write_reduced(reduced_path, stars.reduced, stars.header, overwrite=overwrite, provenance=prov)
    return t


def _exposure_setup(exposure, dataset, instrument, path, image, catalog, source):
    """The exposure's metadata and the loaded catalogue of :func:`measure_sky_exposure`:
    ``(ExposureSetup, Catalog)``; an image from space, an unreadable catalogue or a band
    it lacks are refused."""
    header = None
    if image:
        _, header = read_frame(path, "sky exposure")
    elif exposure.extra.get("header"):
        header = exposure_header(exposure.extra["header"], source)
    setup = resolve_exposure(exposure.extra, header, site=dataset.site, filter=dataset.filter,
                             preset=instrument.preset, source=source)
    if image and setup.space:
        raise SkyMeasureError(
            f"{source}: an image from an observatory in space (site '{setup.site.name}') is not measured: "
            "astrocal's star model is the ELT's AO PSF at a ground-based wavelength, not a space telescope's "
            "PSF. Measure the stars with that mission's tools (hst1pass, the JWST pipeline's source "
            "catalogue, photutils) and give the star list as the exposure's file, with "
            f'header = "{path.name}" for the time, pointing, position angle and velocity aberration')
    if catalog is None:
        try:
            catalog = load_catalog(dataset.catalog)
        except CatalogError as exc:
            raise SkyMeasureError(f"{source}: {exc}") from None
    if dataset.band is not None and dataset.band not in catalog.bands:
        raise SkyMeasureError(f"{source}: band '{dataset.band}' of the dataset is not in the catalogue "
                              f"{catalog.source} (bands: {', '.join(catalog.bands) or 'none'})")
    return setup, catalog


def _exposure_stars(path, image, dataset, instrument, setup, pix, calibration, psf, detect_threshold, source,
                    warns):
    """Step 1 of :func:`measure_sky_exposure`: the stars of the image or the star list."""
    if image:
        res, reduced, header, img_meta, used_psf = image_stars(
            path, setup, pixel_scale_mas=pix, preset=instrument.preset, rules=instrument, strehl=dataset.strehl,
            calibration=calibration, psf_mode=psf, detect_threshold=detect_threshold, source=source)
        shape = reduced.data.shape
        if tuple(instrument.detector_shape) != tuple(shape):
            # the fit would place the positions on the campaign's detector: refused, not warned
            raise MeasureError(f"{path}: image shape {tuple(shape)} (ny, nx) differs from the campaign's "
                               f"detector_shape {tuple(instrument.detector_shape)}; set [instrument] "
                               "detector_shape to the frames' size")
        warns += img_meta.pop("frame_warnings")
        x, y = np.asarray(res.x, float), np.asarray(res.y, float)
        flags = np.asarray(res.flags, np.int64).copy()
        return _Stars(
            n=len(res), x=x, y=y, sx=np.asarray(res.sigma_x, float), sy=np.asarray(res.sigma_y, float),
            cxy=np.asarray(res.cov_xy, float), flux=np.asarray(res.flux, float), flags=flags,
            usable=np.isfinite(x) & np.isfinite(y) & ((flags & C.FLAGS_SEVERE) == 0),
            blend_r=float(used_psf.fwhm()) if hasattr(used_psf, "fwhm") else fwhm_px(setup.wavelength_um, pix),
            extra={"snr": np.asarray(res.snr, float), "flux_err": np.asarray(res.flux_err, float) * u.adu,
                   "background": np.asarray(res.background, float) * u.adu,
                   "chi2_ndof": np.asarray(res.chi2_ndof, float), "npix": np.asarray(res.npix, np.int64)},
            flux_unit=u.adu, sigma_source="PSF fit (inverse Fisher matrix, detector noise model)",
            meta=img_meta, shape=shape, reduced=reduced, header=header)
    shape = tuple(int(v) for v in instrument.detector_shape)
    stars, n_out_det, _ = list_stars(path, dataset, shape, source)
    n = len(stars)
    x, y = np.asarray(stars["x"], float), np.asarray(stars["y"], float)
    has_sig = "sigma_x" in stars.colnames
    return _Stars(
        n=n, x=x, y=y, sx=np.asarray(stars["sigma_x"], float) if has_sig else np.full(n, np.nan),
        sy=np.asarray(stars["sigma_y"], float) if has_sig else np.full(n, np.nan), cxy=np.zeros(n),
        flux=np.asarray(stars["flux"], float) if "flux" in stars.colnames else np.full(n, np.nan),
        flags=np.zeros(n, np.int64), usable=np.isfinite(x) & np.isfinite(y),
        blend_r=SPACE_BLEND_RADIUS_PX if setup.space else fwhm_px(setup.wavelength_um, pix),
        extra={}, flux_unit=None, sigma_source="the star list" if has_sig else None,
        meta={"star_list": {k: stars.meta.get(k) for k in ("source", "format", "one_based_input", "columns",
                                                           "note")}},
        shape=shape, n_out_det=n_out_det)


def _match_exposure(catalog, setup, stars, dataset, pix, source, warns):
    """Steps 2 and 3 of :func:`measure_sky_exposure`: the predicted positions (checked against a
    given zenith distance and parallactic angle), the match, and the positions recomputed with
    an angle and parity measured by it."""
    ny, nx = stars.shape
    hw, hh = nx * pix / 2e3, ny * pix / 2e3
    box = ((1 + 2 * SEARCH_FIELDS) * hw, (1 + 2 * SEARCH_FIELDS) * hh)
    radius = math.hypot(*box) + 1.0
    p0 = setup.parity or 1
    pa0 = setup.position_angle_deg
    if pa0 is None and setup.rotator_angle_deg is None:
        pa0 = 0.0
    fp, epoch_warns = predict_positions(catalog, setup, position_angle=pa0, rotator_angle=setup.rotator_angle_deg,
                                        parity=p0, search_radius_arcsec=radius, source=source)
    warns += epoch_warns
    if setup.zenith_distance_deg is not None and abs(setup.zenith_distance_deg - fp.zenith_distance_deg) \
            > ZENITH_TOLERANCE_DEG:
        raise SkyMeasureError(
            f"{source}: campaign key 'zenith_distance_deg' = {setup.zenith_distance_deg:g} but the time "
            f"{setup.time.utc.isot} UTC ({setup.sources['time']}), the pointing and site {setup.site.name} "
            f"give {fp.zenith_distance_deg:.2f} deg: check the time (UTC, mid-exposure) and the pointing")
    if setup.clock_time and setup.parallactic_angle_deg is not None and \
            abs(wrap180(setup.parallactic_angle_deg - fp.parallactic_angle_deg)) > ZENITH_TOLERANCE_DEG:
        raise SkyMeasureError(
            f"{source}: campaign key 'parallactic_angle_deg' = {setup.parallactic_angle_deg:g} but the time "
            f"{setup.time.utc.isot} UTC, the pointing and site {setup.site} give "
            f"{fp.parallactic_angle_deg:.2f} deg: check the time (UTC, mid-exposure) and the pointing")
    band, mags, same_band = rank_band(catalog, fp.names, dataset.band)
    usable = stars.usable
    mstars = Table({"x": stars.x[usable], "y": stars.y[usable]})
    if np.any(np.isfinite(stars.sx[usable])):
        mstars["sigma_x"] = np.nan_to_num(stars.sx[usable], nan=0.0)
        mstars["sigma_y"] = np.nan_to_num(stars.sy[usable], nan=0.0)
    if np.any(np.isfinite(stars.flux[usable]) & (stars.flux[usable] > 0)):
        mstars["flux"] = stars.flux[usable]
    mres, ref_rows = match_exposure(mstars, fp, box_arcsec=box, setup=setup, pixel_scale_mas=pix,
                                    shape=stars.shape, blend_radius_px=stars.blend_r, mags=mags, source=source,
                                    same_band=same_band, rank_band=band)
    mres.quality["rank_band"] = band
    mres.quality["flux_checks"] = bool(mags is not None and same_band)

    # ---- angle and parity measured by the match: recompute the positions with them
    sim = mres.similarity
    final = setup
    if setup.parity is None:
        final = _setup_from(final, parity=int(p0 * sim.parity))
    if setup.position_angle_deg is None and setup.rotator_angle_deg is None:
        final = _setup_from(final, position_angle_deg=wrap180(pa0 - final.parity * sim.rotation_deg))
    names = fp.names[ref_rows]  # the reference stars given to the match
    if final is not setup:
        fp, _ = predict_positions(catalog, final, position_angle=final.position_angle_deg,
                                  rotator_angle=final.rotator_angle_deg, parity=final.parity,
                                  search_radius_arcsec=radius, source=source)
    return _Matched(fp=fp, mres=mres, ref_rows=ref_rows, names=names, final=final, p0=p0, pa0=pa0,
                    half=(hw, hh))


def _sky_table(stars, m, source, warns):
    """The sky table of :func:`measure_sky_exposure` (without meta): ``(table, match quality,
    errors source)``; stars without position errors get the match residuals' scatter."""
    n, mres, usable = stars.n, m.mres, stars.usable
    x, y, sx, sy, flux = stars.x, stars.y, stars.sx, stars.sy, stars.flux
    flags = stars.flags
    sigma_source = stars.sigma_source
    rows = np.flatnonzero(usable)
    star = np.full(n, "", dtype=object)
    star[rows[mres.star_index]] = m.names[mres.ref_index]
    matched = np.zeros(n, bool)
    matched[rows[mres.star_index]] = True
    flags[~matched] |= FLAG_UNIDENTIFIED
    flags[rows[mres.star_index[mres.blend]]] |= FLAG_BLEND
    q = dict(mres.quality)
    if sigma_source is None or not np.all(np.isfinite(sx[matched]) & (sx[matched] > 0)):
        # the list gives no (or incomplete) errors: the robust scatter of the match residuals
        s = float(q["sigma_px"])
        fill = ~(np.isfinite(sx) & (sx > 0) & np.isfinite(sy) & (sy > 0))
        sx = np.where(fill, s, sx)
        sy = np.where(fill, s, sy)
        msg = (f"{int(fill.sum())} star(s) without position errors: the robust per-axis scatter of the "
               f"match residuals ({s:.3g} px; it includes the catalogue errors and the distortion left "
               "by the match's polynomial, so it overestimates the centroid errors) is used")
        warns.append(msg)
        log.warning("%s: %s", source, msg)
        sigma_source = ("the star list; " if sigma_source else "") + "match residual scatter where missing"
    order = np.lexsort((-np.where(np.isfinite(flux), flux, -np.inf), ~matched))
    t = Table()
    t["star"] = np.array([str(s) for s in star], dtype=str)
    t["x"] = x * u.pix
    t["y"] = y * u.pix
    t["sigma_x"] = sx * u.pix
    t["sigma_y"] = sy * u.pix
    t["cov_xy"] = stars.cxy * u.pix**2
    t["flux"] = flux if stars.flux_unit is None else flux * stars.flux_unit
    t["flags"] = flags
    for k, v in stars.extra.items():
        t[k] = v
    t["star"].description = "catalogue name of the matched star ('' when unmatched)"
    t["x"].description = "centre, 0-based pixels (centre of the first pixel = 0.0; x along numpy axis 1)"
    t["y"].description = "centre, 0-based pixels"
    t["cov_xy"].description = "x-y covariance of the position"
    t["flags"].description = "bit mask, see meta flag_bits; reject sources with meta reject_flags"
    return t[order], q, sigma_source


def _sky_meta(exposure, dataset, catalog, setup, stars, m, q, sigma_source, path, stem, image, pix, source,
              warns, provenance, t0):
    """The meta of the sky table of :func:`measure_sky_exposure` (see the module notes);
    the refraction statement and the summary are logged."""
    fp, mres, final, ref_rows = m.fp, m.mres, m.final, m.ref_rows
    n = stars.n
    ny, nx = stars.shape
    refraction = refraction_statement(catalog, final, fp, m.half, source)
    if refraction["corrected"] is False:
        warns.append(refraction["note"])
    unmatched_ref = [str(v) for v in m.names[mres.unmatched_reference]]
    n_outside = int(len(catalog) - len(ref_rows) + len(mres.reference_outside))
    log.info("%s: %d sources, %d matched to catalogue stars (rms %.3g px); %d catalogue stars in the "
             "field without a source; %d catalogue stars outside the field", source, n, mres.n_matched,
             q["rms_px"], len(unmatched_ref), n_outside)
    q.pop("seconds", None)
    angle_key = "rotator_angle_deg" if final.rotator_angle_deg is not None else "position_angle_deg"
    angle_val = final.rotator_angle_deg if angle_key == "rotator_angle_deg" else final.position_angle_deg
    derived = {"zenith_distance_deg": fp.zenith_distance_deg, "parallactic_angle_deg": fp.parallactic_angle_deg,
               "altitude_deg": fp.altitude_deg, "azimuth_deg": fp.azimuth_deg, "airmass": fp.airmass}
    if angle_key == "rotator_angle_deg":
        derived["position_angle_deg"] = fp.position_angle_deg
    else:
        derived["rotator_angle_deg"] = fp.rotator_angle_deg
    if setup.zenith_distance_deg is not None:
        derived["zenith_distance_deg_given"] = setup.zenith_distance_deg
    given = dict(exposure.extra)
    return {
        "kind": "sky",
        "dataset": dataset.name,
        "exposure": stem,
        "file": str(path),
        "input": "image" if image else "star list",
        "time": fp.time.utc.isot,
        "clock_time": bool(final.clock_time),
        "horizon": (None if final.horizon is None else
                    {"zenith_distance_deg": final.horizon[0], "parallactic_angle_deg": final.horizon[1],
                     "given": final.zenith_distance_deg is not None}),
        "refraction": refraction,
        "ra_deg": final.ra_deg,
        "dec_deg": final.dec_deg,
        angle_key: angle_val,
        "parity": int(final.parity),
        "site": final.site.name,
        "site_info": final.site.as_dict(),
        "weather": {k: float(final.weather[k]) for k in ("pressure_hpa", "temperature_c", "relative_humidity")
                    if k in final.weather},
        "space": final.space,
        "velocity_aberration": fp.meta.get("velocity_aberration"),
        "wavelength_um": final.wavelength_um,
        "catalog": dataset.catalog_given if dataset.catalog_given is not None else str(dataset.catalog),
        "catalog_path": str(dataset.catalog),
        "catalog_name": catalog.name,
        "match_quality": q,
        "unmatched_catalog_stars": unmatched_ref,
        "sources": final.sources,
        "campaign_values": given,
        "derived": derived,
        "earth_orientation": {**earth.provenance(), "exposure": fp.meta.get("earth_orientation")},
        "match_similarity": mres.similarity.as_dict(),
        "match_reference_frame": {
            ("rotator_angle_deg" if setup.rotator_angle_deg is not None else "position_angle_deg"):
                setup.rotator_angle_deg if setup.rotator_angle_deg is not None else m.pa0,
            "parity": m.p0,
            "note": "match_similarity maps the catalogue's instrument-frame positions computed with "
                    "this angle and parity (arcsec) to the detector (px)"},
        "n_sources": int(n),
        "n_matched": int(mres.n_matched),
        "n_catalog_search_region": int(len(ref_rows)),
        "n_catalog_outside_field": n_outside,
        "n_sources_outside_detector": int(stars.n_out_det),
        "n_catalog_inflated_errors": int(np.count_nonzero(fp.inflated)),
        "epoch_gap_years_max": float(np.max(np.abs(fp.dt))) if len(fp) else 0.0,
        "band": dataset.band,
        "errors_source": sigma_source,
        "detector_shape": [int(ny), int(nx)],
        "pixel_scale_mas": pix,
        "pixel_convention": "0-based: the centre of the first pixel is (0.0, 0.0); x along numpy axis 1 "
                            "(FITS x - 1)",
        "flag_bits": {name: bit for bit, name in FLAG_NAMES.items()},
        "reject_flags": FLAGS_REJECT,
        **stars.meta,
        "warnings": warns,
        "creator": f"astrocal {__version__} measure (sky)",
        "created": Time.now().isot,
        "seconds": _time.perf_counter() - t0,
        **(provenance or {}),
    }



# =========================================================================== campaign
def _result(dataset, index, stem, file, kind, status, message="", **kw):
    out = dict(dataset=dataset, index=index, exposure=stem, file=str(file), kind=kind, status=status,
               message=message, n_detected=0, n_identified=0, n_good=0, median_snr=np.nan,
               median_sigma_px=np.nan, ident_rms_px=np.nan, table=None, reduced=None,
               seconds=np.nan, pending=None)
    out.update(kw)
    return out


def _counts(t):
    matched = np.array([s != "" for s in t["star"]], bool)
    flags = np.asarray(t["flags"], np.int64)
    good = matched & ((flags & FLAGS_REJECT) == 0)
    sig = np.hypot(np.asarray(t["sigma_x"], float), np.asarray(t["sigma_y"], float)) / math.sqrt(2)
    snr = np.asarray(t["snr"], float) if "snr" in t.colnames else np.full(len(t), np.nan)
    return dict(n_detected=len(t), n_identified=int(matched.sum()), n_good=int(good.sum()),
                median_snr=float(np.median(snr[good])) if good.any() else np.nan,
                median_sigma_px=float(np.median(sig[good])) if good.any() else np.nan,
                ident_rms_px=float(t.meta["match_quality"]["rms_px"]))


def _measure_job(job):
    """Measure one sky exposure of :func:`measure_sky_datasets`; returns its result row."""
    k, e, ds, inst, mode, catalog, cal, error, stem, output, overwrite, prov = job
    t0 = _time.perf_counter()
    image = is_image(e.file)
    kind = "sky_image" if image else "sky_list"
    table_path = output / f"{stem}.ecsv"
    reduced_path = output / f"{stem}_reduced.fits" if image else None
    for path in (table_path, reduced_path):  # under the output directory (names are checked at load too)
        if path is not None:
            confined(path, output)
    try:
        if error is not None:
            raise SkyMeasureError(error)
        if not overwrite:
            for p in (table_path, reduced_path):
                if p is not None:
                    check_writable(p, False)
        t = measure_sky_exposure(e, ds, inst, psf=mode, catalog=catalog, calibration=cal,
                                 reduced_path=reduced_path, overwrite=overwrite, stem=stem,
                                 provenance=prov)
        atomic_write_table(t, table_path, overwrite=overwrite, format="ascii.ecsv")
        msg = "; ".join(t.meta.get("warnings") or [])
        return _result(ds.name, k, stem, e.file, kind, "ok", msg, table=str(table_path),
                       reduced=None if reduced_path is None else str(reduced_path),
                       seconds=_time.perf_counter() - t0, **_counts(t))
    except Exception as exc:  # noqa: BLE001 - every failure becomes a per-exposure report
        msg = str(exc) or type(exc).__name__
        if str(e.file) not in msg and Path(e.file).name not in msg:
            msg = f"{e.file}: {msg}"
        if not isinstance(exc, (AstrocalError, OSError)):  # not bad input: a bug, said as one
            msg = internal_error(msg, exc)
        else:
            log.error("%s", msg)
        if overwrite and not isinstance(exc, ProductExistsError):
            for p in (table_path, reduced_path):  # stale products of an earlier run
                if p is not None and p.exists():
                    log.info("removing stale %s", p)
                    p.unlink()
        return _result(ds.name, k, stem, e.file, kind, "failed", msg, seconds=_time.perf_counter() - t0)


def measure_sky_datasets(campaign: Any, *, output: str | Path | None = None, overwrite: bool = False,
                         psf: str | None = None, used_stems: Any = (), processes: int = 1) -> list[dict]:
    """Measure every exposure of the campaign's ``[[sky]]`` datasets.

    Each exposure's table is written to ``<output>/<stem>.ecsv`` (and an image's reduced
    frame to ``<output>/<stem>_reduced.fits``). Never raises for one exposure: a failure
    becomes that exposure's result (its stale products of an earlier run removed when
    ``overwrite``).

    Parameters
    ----------
    campaign : astrocal.campaign.Campaign
        The loaded campaign.
    output : str or os.PathLike, optional
        The directory (default ``[measure] output``).
    overwrite : bool, optional
        Replace existing products.
    psf : str, optional
        Overrides ``[measure] psf``.
    used_stems : iterable of str, optional
        Product names already taken (the lab exposures'): a sky exposure whose file stem
        is taken is written as ``<dataset>_<stem>``.
    processes : int, optional
        Exposures measured in parallel worker processes.

    Returns
    -------
    list of dict
        One result dict per exposure (status ``ok`` / ``failed``, message naming the
        file), in the layout of the lab measure stage's summary rows.
    """
    output = Path(output if output is not None else campaign.measure.output)
    mode = psf or campaign.measure.psf
    inst = campaign.instrument
    taken = set(used_stems)
    jobs = []
    prov = {"campaign": str(campaign.path), "campaign_sha256": campaign.sha256}
    for ds in campaign.sky:
        catalog = cal = None
        error = None
        try:
            catalog = load_catalog(ds.catalog)
        except CatalogError as exc:
            error = f"dataset '{ds.name}': {exc}"
        if error is None and (ds.background is not None or ds.flat is not None):
            try:
                # METIS or generic (EXPTIME, DIT, NDIT, GAIN) keywords, as the raw frames'
                cal = dataset_calibration(ds.background, ds.flat, inst)
            except Exception as exc:  # noqa: BLE001 - the dataset fails, the others go on
                error = f"dataset '{ds.name}': calibration frames: {exc}"
        for k, e in enumerate(ds.exposures):
            stem = exposure_stem(e.file)
            if stem in taken:
                stem = f"{ds.name}_{stem}"
            base, m = stem, 1
            while stem in taken:
                m += 1
                stem = f"{base}_{m}"
            taken.add(stem)
            jobs.append((k, e, ds, inst, mode, catalog, cal, error, stem, output, overwrite, prov))
    if int(processes) > 1 and len(jobs) > 1:
        ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
        with ProcessPoolExecutor(min(int(processes), len(jobs)), mp_context=ctx) as pool:
            results = list(pool.map(_measure_job, jobs))
    else:
        results = [_measure_job(job) for job in jobs]
    return results
