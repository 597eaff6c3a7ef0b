"""The measure stage: lab frames -> identified source tables (``astrocal measure``).

For every exposure of every ``[[lab]]`` dataset of a campaign:

1. **reduce** the raw frame (:mod:`astrocal.image.reduce`): background frame subtracted
   (scaled to the frame's DIT), flat field, bad pixels, saturated pixels and cosmic rays
   masked; the reduced image is written (``<exposure>_reduced.fits``: SCI, DQ, BKGVAR);
2. **detect** the spots (:mod:`astrocal.image.detect`): matched filter, local maxima, PSF
   side lobes rejected;
3. **centroid** them (:func:`astrocal.image.centroid.fit_centroids`): batched PSF fit with
   the detector noise model (effective gain, read noise, background and flat noise), per
   spot a 2x2 covariance.  PSF: ``[measure] psf = "model"`` — the instrument's
   diffraction PSF at the filter's wavelength convolved with the pinhole — or ``"epsf"``
   — an effective PSF built from the frames of the dataset (:func:`build_epsf`), after a
   first pass with the model;
4. **identify** the spots with the mask holes (:func:`identify_spots`); when the pattern
   alone is ambiguous the commanded chopper offset is used as the expected position of
   the mask origin;
5. **write** an ECSV table ``<exposure>.ecsv`` with the columns ``hole_id, x, y, sigma_x,
   sigma_y, cov_xy, flux, snr, flags`` (and ``flux_err, background, chi2_ndof, npix``),
   with the exposure metadata (file, DATE-OBS, EXPTIME, filter, offset, identification
   quality, noise model, reduction) in its ``meta``.

Headers (raw, background and flat frames alike) are read with the campaign's rules
(:class:`astrocal.image.headers.HeaderRules`: the instrument's keyword map, the generic FITS
set, ``[instrument.header_keywords]`` and the campaign's defaults).  The noise model is
checked on the spots of each frame (:func:`noise_model_check`) and against the scatter of
the positions between the exposures of a dataset (:func:`scatter_check`); an implausible
one is a warning naming the frame and the likely cause.

Exposures that are already source tables (ECSV, or a FITS binary table) are validated
(:func:`validate_source_table`) and passed on to the output directory.

Exposures of ``[[sky]]`` datasets are measured by :mod:`astrocal.sky.measure` (stars
detected and fitted, or read from a star list, then matched to the catalogue; one sky
table per exposure, see ``docs/sky_measure.md``).

A campaign summary (``summary.ecsv``: one row per exposure, with its status and message)
is written at the end.  A frame that fails (unreadable, no spots, not identified, ...) is
reported with a message naming its file; the others are still measured; the exit status
of ``astrocal measure`` is then 1.  Nothing that exists is overwritten unless
``--overwrite``.

Conventions: positions are 0-based pixels (the centre of the first pixel is 0.0, ``x``
along numpy axis 1); fluxes in ADU per DIT (flat-fielded); ``flags`` are the bits of
:mod:`astrocal.sources` (the source-table contract: columns, flags, validation), which this
module re-exports under their old names.
"""
from __future__ import annotations

import logging
import math
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import astropy.units as u
from astropy.io import fits
from astropy.table import Table
from astropy.time import Time

from ..errors import AstrocalError, MeasureError
from .. import __version__
from ..plain import to_plain
from ..atomic import ProductExistsError, atomic_write_table, check_writable
from ..resultset import confined
# the source-table contract (re-exported here under the names this module always had)
from ..sources import (FLAG_LOW_COVERAGE, FLAG_UNIDENTIFIED, FLAGS_REJECT, LAB_FLAG_NAMES as FLAG_NAMES,  # noqa: F401
                       OPTIONAL_COLUMNS, OUTPUT_COLUMNS, REQUIRED_COLUMNS, SourceTableError,
                       read_source_table, validate_source_table)
from ..image import centroid as C
# one frame's measurement, shared with the sky stage
from ..image.frame import (INTERNAL_ERROR, dataset_calibration, exposure_stem, fit_frame_spots, frame_meta,
                           header_rules, internal_error)
from ..image.detect import detect_spots
from .checks import offset_check, same_content, saturation_note
from .identify import IdentificationError, identify_spots
from ..image.psf import render_spots
from ..image.reduce import (DQ_SATURATED, detector_params, read_frame, read_reduced, reduce_frame,
                            write_reduced)

__all__ = [
    "FLAG_UNIDENTIFIED",
    "FLAG_LOW_COVERAGE",
    "FLAG_NAMES",
    "FLAGS_REJECT",
    "REQUIRED_COLUMNS",
    "OUTPUT_COLUMNS",
    "MeasureError",
    "SourceTableError",
    "MeasureReport",
    "measure_campaign",
    "measure_frame",
    "header_rules",
    "noise_model_check",
    "scatter_check",
    "model_psf",
    "validate_source_table",
    "read_source_table",
    "register",
    "run",
]

log = logging.getLogger(__name__)

_PIX = u.pix
_IMAGE_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fits.fz", ".fz")
#: 1-sigma of the prior on the mask origin from the chopper offset (arcsec): the mask
#: insertion offset (~0.3 arcsec) and the distortion; only used to break ties
CENTER_SIGMA_ARCSEC = 0.5


#: statuses of an exposure whose table was written (``saturated``: flagged, see
#: :func:`astrocal.lab.checks.saturation_note`); the other status is ``failed``
MEASURED = ("ok", "saturated")


# =========================================================================== utilities
def _plain(obj):
    """Meta values as plain Python (YAML-safe) objects."""
    return to_plain(obj)


def _exposure_kind(path):
    """"image" or "table" (a source table: ECSV, or FITS without a 2-D image)."""
    p = Path(path)
    low = p.name.lower()
    if low.endswith(".ecsv") or low.endswith(".csv"):
        return "table"
    if any(low.endswith(s) for s in _IMAGE_SUFFIXES) and p.is_file():
        try:
            with fits.open(p, memmap=True) as hdul:
                for h in hdul:
                    if h.is_image and h.header.get("NAXIS", 0) == 2:
                        return "image"
                for h in hdul:
                    if isinstance(h, (fits.BinTableHDU, fits.TableHDU)):
                        return "table"
        except OSError:
            return "image"  # let the reader report the problem
    return "image"


# =========================================================================== PSF
def model_psf(instrument, filter_name, mask, *, pixel_scale_mas=None, mask_scale=None):
    """The diffraction PSF of the lab data path for a dataset.

    ``instrument`` a registry key (e.g. ``"metis-lm"``) or None (then ``filter_name``
    must be one of ``L``, ``M``, ``N`` of :data:`~astrocal.image.psf.FILTER_WAVELENGTH_UM`);
    the wavelength is the filter's centre; the source is a uniform disk of the mask's
    (median) hole diameter at ``mask_scale`` (mm/arcsec).
    """
    from ..instruments import get_instrument
    from ..image.psf import FILTER_WAVELENGTH_UM, diffraction_psf, pinhole_diameter_mas

    wavelength = None
    inst = None
    if instrument is not None:
        inst = get_instrument(instrument)
        try:
            wavelength = inst.filter(filter_name).center_um
        except KeyError:
            wavelength = None
    if wavelength is None:
        wavelength = FILTER_WAVELENGTH_UM.get(str(filter_name))
    if wavelength is None:
        known = sorted(inst.filters) if inst is not None else sorted(FILTER_WAVELENGTH_UM)
        raise MeasureError(f"filter '{filter_name}': unknown wavelength for the PSF model "
                           f"(instrument {instrument!r}; known filters {known})")
    pix = pixel_scale_mas if pixel_scale_mas is not None else inst.pixel_scale_mas
    scale = mask_scale
    if scale is None:
        scale = float(mask.mask_scale.to_value(u.mm / u.arcsec)) if mask.mask_scale is not None \
            else inst.mask_scale_mm_per_arcsec
    d_um = float(np.median(mask.diameter_um))
    psf = diffraction_psf(float(wavelength), float(pix),
                          pinhole_mas=pinhole_diameter_mas(d_um, float(scale)))
    psf.meta["filter"] = str(filter_name)
    psf.meta["hole_diameter_um"] = d_um
    return psf


# =========================================================================== one frame
#: the noise model is implausible when, on the pixels the spots dominate, the residuals'
#: variance is less than this fraction of the stated one (the sigmas are then > 2.2 x too large)
CORE_CHI2_LOW = 0.2
#: ... or when the stated sigmas exceed the scatter of the spots' positions between
#: exposures (an affine transformation removed) by more than this factor
SCATTER_RATIO_HIGH = 2.0


def noise_model_check(reduced, res, psf, min_spots=3):
    """How well the noise model describes the spots: the residual chi^2 per pixel on the
    pixels each spot dominates (its model signal above 5 x the stamp's median background
    noise), medians over the good spots.

    The stamp's other pixels are background and are checked by the frame's pixel-to-pixel
    test (:func:`~astrocal.image.reduce.excess_variance`); a variance that is too large
    *at the spots* (a normalised flat read as counts, a gain too small, frames not in ADU)
    shows only here, as ``core_chi2`` well below 1 (a PSF model that differs from the
    spots raises it above 1).  Returns ``{"core_chi2", "n_spots", "median_snr"}``
    (``core_chi2`` NaN with fewer than ``min_spots`` usable spots).
    """
    size = int(res.meta["stamp_size"])
    h = size // 2
    ok = (np.isfinite(res.x) & np.isfinite(res.y) & np.isfinite(res.flux) & (res.flux > 0)
          & ((res.flags & (C.FLAGS_SEVERE | C.FLAG_SATURATED | C.FLAG_EDGE)) == 0))
    out = {"core_chi2": float("nan"), "n_spots": int(ok.sum()),
           "median_snr": float(np.median(res.snr[ok])) if ok.any() else float("nan")}
    if ok.sum() < min_spots:
        return out
    x, y = res.x[ok], res.y[ok]
    x0 = np.rint(x).astype(np.int64) - h
    y0 = np.rint(y).astype(np.int64) - h
    ny, nx = reduced.data.shape
    ar = np.arange(size)
    rr = np.clip(y0[:, None] + ar[None, :], 0, ny - 1)[:, :, None]
    cc = np.clip(x0[:, None] + ar[None, :], 0, nx - 1)[:, None, :]
    src = res.flux[ok][:, None, None] * psf.stamps(x, y, x0, y0, size)
    m = src + res.background[ok][:, None, None]
    bkgvar = reduced.bkgvar[rr, cc].astype(float)
    var = bkgvar + np.maximum(m, 0) / reduced.params.gain_eff
    floor = np.sqrt(np.median(bkgvar.reshape(len(x), -1), axis=1))[:, None, None]
    core = (src > 5.0 * floor) & (reduced.dq[rr, cc] == 0) & (var > 0)
    chi = np.where(core, (reduced.data[rr, cc] - m) ** 2 / np.where(var > 0, var, 1.0), 0.0)
    n = core.sum(axis=(1, 2))
    use = n >= 4
    if use.sum() < min_spots:
        return out
    out["core_chi2"] = float(np.median(chi.sum(axis=(1, 2))[use] / n[use]))
    out["n_spots"] = int(use.sum())
    return out


def implausible_noise_warning(check, params, source, provenance=None):
    """The warning for a :func:`noise_model_check` whose ``core_chi2`` is below
    :data:`CORE_CHI2_LOW` (None otherwise): names the frame, the factor and the likely
    causes."""
    c = check.get("core_chi2", float("nan"))
    if not (np.isfinite(c) and c < CORE_CHI2_LOW):
        return None
    gain_src = (provenance or {}).get("gain", "")
    return (f"{source}: implausible noise model: on the spots' pixels the residuals' variance "
            f"is {c:.2g} x the stated one ({check['n_spots']} spots, median SNR "
            f"{check['median_snr']:.3g}): the stated sigmas are ~{1 / math.sqrt(c):.1f} x too "
            f"large. Likely cause: a normalised flat read as counts (set the dataset's "
            f"flat_normalised = true), a wrong gain ({params.gain:g} e-/ADU"
            f"{', ' + gain_src if gain_src else ''}; [instrument] gain_e_per_adu or "
            "[instrument.header_keywords] gain) or frames not in ADU")


def _identify(res, mask, pixel_scale_mas, mask_scale, shape, center_guess, center_sigma):
    """hole ids (N,) and the identification meta; raises IdentificationError."""
    usable = np.isfinite(res.x) & np.isfinite(res.y) & ((res.flags & C.FLAG_BAD_FIT) == 0)
    spots = Table({"x": res.x[usable], "y": res.y[usable], "flux": res.flux[usable]})
    kwargs = dict(detector_shape=shape)
    scale = None if mask_scale is None else mask_scale * u.mm / u.arcsec
    used_guess = False
    try:
        idt = identify_spots(spots, mask, pixel_scale_mas, scale, **kwargs)
    except IdentificationError as first:
        if center_guess is None:
            raise
        try:
            idt = identify_spots(spots, mask, pixel_scale_mas, scale, center_guess=center_guess,
                                 center_sigma=center_sigma, **kwargs)
            used_guess = True
        except IdentificationError as second:
            if str(second) == str(first):
                raise IdentificationError(f"{first} (the same with the chopper offset as the "
                                          "expected mask origin)") from None
            raise IdentificationError(f"{first} (with the chopper offset as the expected mask "
                                      f"origin: {second})") from None
    ids = np.full(len(res), -1, np.int64)
    ids[np.flatnonzero(usable)] = np.asarray(idt["hole_id"], np.int64)
    meta = dict(idt.meta["identification"])
    meta.pop("unmatched_rows", None)
    meta["used_center_guess"] = used_guess
    if center_guess is not None:
        meta["center_guess_px"] = [float(center_guess[0]), float(center_guess[1])]
        off = meta.get("similarity", {}).get("offset_px")
        if off is not None:
            meta["origin_minus_guess_px"] = [float(off[0] - center_guess[0]),
                                             float(off[1] - center_guess[1])]
    return ids, meta


def _source_table(res, ids, meta):
    """The output table from a CentroidResult and hole ids, identified rows first."""
    flags = np.asarray(res.flags, np.int64) | np.where(ids < 0, FLAG_UNIDENTIFIED, 0)
    t = Table(meta=meta)
    t["hole_id"] = ids
    t["x"] = res.x * _PIX
    t["y"] = res.y * _PIX
    t["sigma_x"] = res.sigma_x * _PIX
    t["sigma_y"] = res.sigma_y * _PIX
    t["cov_xy"] = res.cov_xy * _PIX**2
    t["flux"] = res.flux * u.adu
    t["snr"] = res.snr
    t["flags"] = flags
    t["flux_err"] = res.flux_err * u.adu
    t["background"] = res.background * u.adu
    t["chi2_ndof"] = res.chi2_ndof
    t["npix"] = np.asarray(res.npix, np.int64)
    cov = res.meta.get("coverage")
    t["coverage"] = np.full(len(res), np.nan) if cov is None else cov
    t["x_guess"] = res.x_guess * _PIX
    t["y_guess"] = res.y_guess * _PIX
    t["hole_id"].description = "mask hole (-1: not identified)"
    t["x"].description = "spot centre, 0-based pixels (centre of the first pixel = 0.0)"
    t["y"].description = "spot centre, 0-based pixels"
    t["cov_xy"].description = "x-y covariance of the position"
    t["flux"].description = "total PSF flux (flat-fielded ADU per DIT)"
    t["snr"].description = "flux / flux_err"
    t["flags"].description = "bit mask, see meta flag_bits; reject spots with meta reject_flags"
    t["coverage"].description = "fraction of the PSF light in the stamp on valid pixels"
    key = np.where(ids >= 0, ids, np.iinfo(np.int64).max)
    snr = np.where(np.isfinite(res.snr), res.snr, -np.inf)
    order = np.lexsort((-snr, key))
    return t[order]


def measure_frame(reduced, psf, mask, *, pixel_scale_mas, mask_scale=None, center_guess=None,
                  center_sigma=None, detect_threshold=5.0, source="<frame>", provenance=None):
    """Detect, centroid and identify the spots of one reduced frame.

    ``reduced`` a :class:`~astrocal.image.reduce.ReducedFrame`; ``psf`` the PSF to fit (and
    to detect with); ``mask`` the :class:`~astrocal.lab.mask.Mask`; ``pixel_scale_mas``
    the nominal pixel scale; ``mask_scale`` the plate scale at the mask (mm/arcsec,
    default the mask's); ``center_guess`` the expected pixel position of the mask origin
    (from the chopper offset), used when the pattern alone is ambiguous; ``provenance``
    where the frame's gain and read noise came from (named in the warnings).

    The noise model is checked on the spots (:func:`noise_model_check`); an implausible one
    is a warning (``meta['frame_warnings']``) naming the frame and the likely cause.

    Returns ``(table, result)``: the source table (without exposure metadata) and the
    :class:`~astrocal.image.centroid.CentroidResult` in detection order.  Raises
    :class:`MeasureError` when there is nothing to measure and
    :class:`~astrocal.lab.identify.IdentificationError` when the spots are not the mask.
    """
    data = reduced.data
    good = float(np.count_nonzero(~reduced.mask)) / max(data.size, 1)
    if good == 0.0:
        raise MeasureError(f"{source}: no valid pixel (the frame is all NaN/inf or masked)")
    warnings = []
    check = reduced.meta.get("noise_check") or {}
    if check.get("added_variance_adu2"):
        warnings.append(f"pixel-to-pixel noise {check['measured_over_model']:.2f} x the noise "
                        f"model's variance: {check['added_variance_adu2']:.3g} ADU^2 added to the "
                        "variance (no flat field? wrong gain or read noise in the header?)")
    subtracted = reduced.meta.get("background_scale") is not None
    # saturated pixels keep their (clipped, high) values for the detection: a saturated
    # core then gives one maximum near its centre instead of a ring of maxima around it
    det_mask = (reduced.dq & ~np.uint8(DQ_SATURATED)) != 0
    det = detect_spots(data, psf, mask=det_mask, variance=reduced.total_variance(),
                       threshold=detect_threshold, subtract_background=not subtracted,
                       saturated=(reduced.dq & DQ_SATURATED) != 0)
    limit = max(20 * len(mask), 2000)
    if len(det) > limit:
        raise MeasureError(
            f"{source}: {len(det)} spot candidates above {detect_threshold:g} sigma (more than "
            f"{limit} for a mask of {len(mask)} holes): not a pinhole frame, or the background "
            "or bad pixels are not removed (background and flat frames in the campaign?)")
    if len(det) < 3:
        raise MeasureError(
            f"{source}: no mask in the frame? {len(det)} spot(s) above {detect_threshold:g} sigma "
            f"({100 * good:.0f}% of the pixels valid, filtered noise {det.meta['noise']:.3g} ADU)")
    res = fit_frame_spots(reduced, np.asarray(det["x"], float), np.asarray(det["y"], float), psf)
    check = noise_model_check(reduced, res, psf)
    note = implausible_noise_warning(check, reduced.params, source, provenance)
    if note:
        log.warning("%s", note)
        warnings.append(note)
    ids, ident = _identify(res, mask, pixel_scale_mas, mask_scale, data.shape, center_guess,
                           center_sigma)
    meta = {"detection": {k: det.meta[k] for k in ("noise", "threshold", "n_maxima", "n_merged",
                                                     "n_sidelobes", "good_fraction")},
            "identification": ident, "psf_stamp_size": int(res.meta["stamp_size"]),
            "spot_noise_check": check, "frame_warnings": warnings}
    return _source_table(res, ids, meta), res


# =========================================================================== campaign plumbing
@dataclass
class _Job:
    """One exposure to measure (a plain, picklable record)."""

    dataset: str
    index: int
    file: Path
    kind: str
    stem: str
    table_path: Path
    reduced_path: Path | None
    offset_arcsec: tuple | None
    offset_sigma_mas: float | None
    overwrite: bool
    psf_mode: str
    campaign: str
    campaign_sha256: str
    missing: bool = False


@dataclass
class _Context:
    """What every exposure of a dataset needs (built once, shipped to the workers)."""

    name: str
    mask: object = None
    mask_path: str | None = None
    filter: str | None = None
    preset: str | None = None
    pixel_scale_mas: float | None = None
    mask_scale: float | None = None
    detector_shape: tuple | None = None
    psf: object = None
    calibration: object = None
    error: str | None = None
    rules: object = None  # HeaderRules of the campaign's instrument


_CONTEXTS: dict = {}


def _init_worker(contexts):
    global _CONTEXTS
    _CONTEXTS = contexts


def _center_guess(shape, offset_arcsec, pixel_scale_mas):
    if offset_arcsec is None:
        return None, None
    ny, nx = shape
    ox, oy = (float(v) for v in offset_arcsec)
    guess = ((nx - 1) / 2.0 + ox * 1e3 / pixel_scale_mas, (ny - 1) / 2.0 + oy * 1e3 / pixel_scale_mas)
    return guess, CENTER_SIGMA_ARCSEC * 1e3 / pixel_scale_mas


def _exposure_meta(job, ctx, em, params, reduced, warnings):
    offset = job.offset_arcsec
    offset_src = "campaign"
    if offset is None and getattr(em, "chopper_offset", None) is not None:
        offset = tuple(float(v) for v in em.chopper_offset.to_value(u.arcsec))
        offset_src = "header"
    meta = {
        "file": str(job.file),
        "exposure": job.stem,
        "dataset": job.dataset,
        "DATE-OBS": em.date_obs.isot if getattr(em, "date_obs", None) is not None else None,
        "MJD-OBS": float(em.date_obs.mjd) if getattr(em, "date_obs", None) is not None else None,
        "EXPTIME": float(em.exptime.to_value(u.s)),
        "DIT": float(em.dit.to_value(u.s)),
        "NDIT": int(em.ndit),
        "filter": ctx.filter,
        "filter_header": getattr(em, "filter", None),
        "instrument": getattr(em, "instrument", None) or ctx.preset,
        "mask": ctx.mask.name,
        "mask_file": ctx.mask_path,
        "mask_header": getattr(em, "mask_name", None) or getattr(em, "mask", None),
        "offset_arcsec": None if offset is None else [float(offset[0]), float(offset[1])],
        "offset_source": offset_src if offset is not None else None,
        "offset_sigma_mas": job.offset_sigma_mas,
        "chopper_offset_header_arcsec": (None if getattr(em, "chopper_offset", None) is None
                                         else [float(v) for v in em.chopper_offset.to_value(u.arcsec)]),
        "pixel_convention": "0-based: the centre of the first pixel is (0.0, 0.0); x along numpy "
                            "axis 1 (FITS x - 1)",
        "pixel_scale_mas": ctx.pixel_scale_mas,
        "mask_scale_mm_per_arcsec": ctx.mask_scale,
        "flag_bits": {name: bit for bit, name in FLAG_NAMES.items()},
        "reject_flags": FLAGS_REJECT,
        "noise_model": {"gain_eff_e_per_adu": params.gain_eff, "read_noise_eff_e": params.read_noise_eff,
                        "extra_variance": "BKGVAR extension of the reduced image",
                        "frame": "average of NDIT DITs"},
        "reduction": {k: v for k, v in reduced.meta.items() if k != "detector"},
        "detector": params.to_dict(),
        "header_values": dict(getattr(em, "provenance", None) or {}),
        "reduced_image": None if job.reduced_path is None else str(job.reduced_path),
        "psf": {"mode": job.psf_mode, **{k: v for k, v in ctx.psf.meta.items()}},
        "campaign": job.campaign,
        "campaign_sha256": job.campaign_sha256,
        "creator": f"astrocal {__version__} measure",
        "created": Time.now().isot,
        "warnings": warnings,
    }
    return meta


def _check_products(job):
    if job.overwrite:
        return
    for p in (job.table_path, job.reduced_path):
        if p is not None:
            check_writable(p, False)


def _result(job, status, message="", **kw):
    out = dict(dataset=job.dataset, index=job.index, exposure=job.stem, file=str(job.file),
               kind=job.kind, status=status, message=message, n_detected=0, n_identified=0,
               n_good=0, median_snr=np.nan, median_sigma_px=np.nan, ident_rms_px=np.nan,
               table=None, reduced=None, seconds=np.nan, pending=None, flags=[])
    out.update(kw)
    return out


def _counts(table):
    ident = np.asarray(table["hole_id"]) >= 0
    flags = np.asarray(table["flags"], np.int64)
    good = ident & ((flags & FLAGS_REJECT) == 0)
    sig = np.hypot(np.asarray(table["sigma_x"], float), np.asarray(table["sigma_y"], float)) / math.sqrt(2)
    snr = np.asarray(table["snr"], float)
    return dict(n_detected=len(table), n_identified=int(ident.sum()), n_good=int(good.sum()),
                median_snr=float(np.median(snr[good])) if good.any() else np.nan,
                median_sigma_px=float(np.median(sig[good])) if good.any() else np.nan)


def _measure_image(job, ctx):
    raw, header = read_frame(job.file, "exposure")
    em, note = frame_meta(header, job.file, ctx.rules if ctx.rules is not None else ctx.preset)
    warnings = [note] if note else []
    params = detector_params(em, ctx.preset, source=str(job.file))
    if ctx.detector_shape is not None and tuple(ctx.detector_shape) != raw.shape:
        # the fit would place the positions on the campaign's detector: refused, not warned
        raise MeasureError(f"{job.file}: frame shape {raw.shape} (ny, nx) differs from the campaign's "
                           f"detector_shape {tuple(ctx.detector_shape)}; set [instrument] detector_shape "
                           "to the frames' size")
    filt_h = getattr(em, "filter", None)
    if filt_h is not None and ctx.filter is not None and str(filt_h) != str(ctx.filter):
        warnings.append(f"header filter '{filt_h}' differs from the campaign's '{ctx.filter}'")
    mask_h = getattr(em, "mask_name", None)
    if mask_h and mask_h not in (ctx.mask.short_name, ctx.mask.name):
        warnings.append(f"header mask '{mask_h}' differs from the campaign's mask "
                        f"'{ctx.mask.short_name}'")
    reduced = reduce_frame(raw, ctx.calibration, params, psf=ctx.psf, source=str(job.file))
    del raw
    provenance = {"CAMPAIGN": (Path(job.campaign).name, "campaign file"),
                  "CAMPSHA": (job.campaign_sha256[:16], "sha256 of the campaign (first 16)"),
                  "DATASET": (job.dataset, "lab dataset")}
    offset = job.offset_arcsec
    if offset is None and getattr(em, "chopper_offset", None) is not None:
        offset = tuple(em.chopper_offset.to_value(u.arcsec))
    guess, gsig = _center_guess(reduced.data.shape, offset, ctx.pixel_scale_mas)
    try:
        table, res = measure_frame(reduced, ctx.psf, ctx.mask, pixel_scale_mas=ctx.pixel_scale_mas,
                                   mask_scale=ctx.mask_scale, center_guess=guess,
                                   center_sigma=gsig, source=str(job.file),
                                   provenance=getattr(em, "provenance", None))
    except Exception as failure:
        try:  # the reduced image is written also when the frame fails (to look at)
            write_reduced(job.reduced_path, reduced, header, overwrite=job.overwrite,
                          provenance=provenance)
        except Exception as exc:  # noqa: BLE001 - the measurement's error is the one to report
            log.debug("%s: reduced image not written: %s", job.file, exc)
        n_sat = int(reduced.meta.get("n_saturated_pixels") or 0)
        if n_sat:  # the likely cause of a failure: said with it
            level = reduced.meta.get("saturation_level_adu")
            raise MeasureError(
                f"{failure}; the frame is saturated: {n_sat} pixels ({100 * n_sat / reduced.data.size:.2g}% "
                f"of the frame) at or above the saturation level {level:.6g} ADU "
                f"({reduced.meta.get('saturation_source')}); shorten the DIT or dim the source") from failure
        raise
    # written after the fit: its DQ has the cosmic rays found in the fit residuals too
    write_reduced(job.reduced_path, reduced, header, overwrite=job.overwrite, provenance=provenance)
    warnings += table.meta.pop("frame_warnings", [])
    meta = _exposure_meta(job, ctx, em, params, reduced, warnings)
    meta.update(table.meta)
    table.meta = _plain(meta)
    missing = _missing_on_valid_pixels(table.meta["identification"], ctx, reduced.dq)
    table.meta["identification"]["missing_on_valid_pixels"] = missing
    if missing:
        warnings.append(f"{len(missing)} hole(s) predicted on valid pixels without a spot: "
                        f"ids {missing[:20]}")
        table.meta["warnings"] = warnings
    return table, warnings


def _missing_on_valid_pixels(ident, ctx, dq):
    """Hole ids predicted in the field without a spot whose predicted position (the
    identification's affine pose) is on a valid pixel (not in the reference-pixel border
    or another masked area, where no spot is expected)."""
    ids = ident.get("missing_hole_ids") or []
    aff = ident.get("affine")
    if not ids or not aff:
        return list(ids)
    sel = np.isin(ctx.mask.hole_id, ids)
    xy = ctx.mask.xy_arcsec(ctx.mask_scale)[sel]
    p = np.asarray(aff["offset_px"]) + xy @ np.asarray(aff["matrix_px_per_arcsec"]).T
    ny, nx = dq.shape
    ix = np.rint(p[:, 0]).astype(np.int64)
    iy = np.rint(p[:, 1]).astype(np.int64)
    inside = (ix >= 0) & (ix < nx) & (iy >= 0) & (iy < ny)
    ok = np.zeros(len(p), bool)
    ok[inside] = dq[iy[inside], ix[inside]] == 0
    return [int(h) for h in ctx.mask.hole_id[sel][ok]]


def _measure_job(job):
    """Measure (or validate) one exposure; never raises: failures are reported."""
    t0 = time.perf_counter()
    ctx = _CONTEXTS.get(job.dataset)
    try:
        if job.missing:
            raise FileNotFoundError(f"exposure file not found: {job.file}")
        if ctx is None or ctx.error:
            raise MeasureError(ctx.error if ctx is not None else f"dataset {job.dataset} not set up")
        _check_products(job)
        if job.kind == "table":
            table = read_source_table(job.file, ctx.mask)
            meta = dict(table.meta)
            meta.update({"file": str(job.file), "exposure": job.stem, "dataset": job.dataset,
                         "source": "source table given in the campaign (validated, passed on)",
                         "offset_arcsec": None if job.offset_arcsec is None else list(job.offset_arcsec),
                         "offset_sigma_mas": job.offset_sigma_mas, "mask": ctx.mask.name,
                         "filter": ctx.filter, "campaign": job.campaign,
                         "campaign_sha256": job.campaign_sha256,
                         "flag_bits": {name: bit for bit, name in FLAG_NAMES.items()},
                         "creator": f"astrocal {__version__} measure"})
            table.meta = _plain(meta)
            same = job.table_path.resolve() == Path(job.file).resolve()
            if not same:
                atomic_write_table(table, job.table_path, overwrite=job.overwrite, format="ascii.ecsv")
            return _result(job, "ok", "source table validated" + (" (in place)" if same else ""),
                           table=str(job.table_path), seconds=time.perf_counter() - t0, **_counts(table))
        table, warnings = _measure_image(job, ctx)
        counts = _counts(table)
        ident = table.meta["identification"]
        saturated, note = saturation_note(table, table.meta.get("reduction") or {})
        if note:
            (log.warning if saturated else log.info)("%s: %s", job.file, note)
            warnings = [note] + list(warnings)
            table.meta["saturation"] = note
        out = _result(job, "saturated" if saturated else "ok", "; ".join(warnings),
                      reduced=str(job.reduced_path), ident_rms_px=float(ident.get("rms_px", np.nan)),
                      flags=["saturated"] if saturated else [], **counts)
        if job.psf_mode == "epsf":
            out["pending"] = table  # written after the ePSF pass
        else:
            atomic_write_table(table, job.table_path, overwrite=job.overwrite, format="ascii.ecsv")
            out["table"] = str(job.table_path)
        out["seconds"] = time.perf_counter() - t0
        return out
    except Exception as exc:  # noqa: BLE001 - every failure becomes a per-frame report
        msg = str(exc) if str(exc) else type(exc).__name__
        if str(job.file) not in msg and Path(job.file).name not in msg:
            msg = f"{job.file}: {msg}"
        if not isinstance(exc, (AstrocalError, OSError)):  # not bad input: a bug, said as one
            msg = internal_error(msg, exc)
        reduced = str(job.reduced_path) if job.reduced_path is not None and not isinstance(
            exc, ProductExistsError) and job.reduced_path.exists() else None
        return _result(job, "failed", msg, reduced=reduced, seconds=time.perf_counter() - t0)


# =========================================================================== ePSF pass
def _wings(shape, table, psf, size):
    """Light of every spot outside its own fitting stamp (the model PSF, first-pass fluxes
    and positions): the ePSF covers only the stamp, so neighbours' far wings on a spot's
    stamp are removed with the model before the ePSF is built and fitted."""
    x = np.asarray(table["x"], float)
    y = np.asarray(table["y"], float)
    f = np.asarray(table["flux"], float)
    ok = np.isfinite(x) & np.isfinite(y) & np.isfinite(f) & (f > 0)
    out = np.zeros(shape, dtype=np.float64)
    if not np.any(ok):
        return out.astype(np.float32)
    x, y, f = x[ok], y[ok], f[ok]
    render_spots(shape, x, y, f, psf, image=out)
    h = size // 2
    ny, nx = shape
    ar = np.arange(size)
    rows = np.clip(np.rint(y).astype(np.int64)[:, None] - h + ar[None, :], 0, ny - 1)
    cols = np.clip(np.rint(x).astype(np.int64)[:, None] - h + ar[None, :], 0, nx - 1)
    own = psf.stamps(x, y, cols[:, 0], rows[:, 0], size) * f[:, None, None]
    inside = ((np.rint(y).astype(np.int64)[:, None] - h + ar[None, :] == rows)[:, :, None]
              & (np.rint(x).astype(np.int64)[:, None] - h + ar[None, :] == cols)[:, None, :])
    np.subtract.at(out, (np.broadcast_to(rows[:, :, None], own.shape)[inside],
                         np.broadcast_to(cols[:, None, :], own.shape)[inside]), own[inside])
    return out.astype(np.float32)


def _epsf_pass(results, ctx, jobs_by_key):
    """Build the ePSF of a dataset from its measured frames and refit every spot."""
    from ..image.epsf import build_epsf

    ok = [r for r in results if r["status"] in MEASURED and r.get("pending") is not None]
    if not ok:
        return
    frames, positions, noises, masks, tables = [], [], [], [], []
    for r in ok:
        red, _ = read_reduced(r["reduced"])
        t = r["pending"]
        flags = np.asarray(t["flags"], np.int64)
        use = (flags & (FLAGS_REJECT | C.FLAG_EDGE | C.FLAG_MASKED)) == 0
        red.data -= _wings(red.data.shape, t, ctx.psf, t.meta["psf_stamp_size"])
        frames.append(red)
        positions.append((np.asarray(t["x"], float)[use], np.asarray(t["y"], float)[use]))
        noises.append(red.noise_model(dtype=np.float32))
        masks.append(red.mask)
        tables.append(t)
    n_use = sum(len(p[0]) for p in positions)
    try:
        if n_use < 10:
            raise MeasureError(f"only {n_use} clean identified spots to build the ePSF from")
        fit = build_epsf([f.data for f in frames], positions, noise=noises, masks=masks)
    except Exception as exc:  # noqa: BLE001
        for r in ok:
            job = jobs_by_key[(r["dataset"], r["index"])]
            r.update(status="failed", pending=None,
                     message=f"{job.file}: ePSF of dataset '{ctx.name}' failed: {exc}")
        return
    epsf = fit.psf
    for r, red, t in zip(ok, frames, tables):
        job = jobs_by_key[(r["dataset"], r["index"])]
        try:
            res = fit_frame_spots(red, np.asarray(t["x_guess"], float), np.asarray(t["y_guess"], float), epsf,
                       stamp_size=epsf.meta.get("stamp_size"))
            ids = np.asarray(t["hole_id"], np.int64)
            # keep the identification of the first pass; spots the ePSF fit lost stay listed
            new = _source_table(res, ids, dict(t.meta))
            new.meta["psf"] = _plain({"kind": "epsf", **epsf.meta, "model_first_pass": t.meta["psf"],
                                      "neighbour_wings": "light of the other spots outside their "
                                      "stamps subtracted with the model PSF (first-pass fits)",
                                      "build_history": fit.history})
            atomic_write_table(new, job.table_path, overwrite=job.overwrite, format="ascii.ecsv")
            r.update(table=str(job.table_path), pending=None, **_counts(new))
        except Exception as exc:  # noqa: BLE001
            r.update(status="failed", pending=None, message=f"{job.file}: ePSF refit failed: {exc}")


# =========================================================================== scatter check
def scatter_check(tables, min_common=10):
    """Stated sigmas against the scatter of the spots' positions between exposures.

    ``tables``: ``{exposure name: source table}`` of one dataset.  Each exposure's good
    identified spots are compared with those of the first exposure (the reference): an
    affine transformation (the offset of the mask, a rotation, the local change of scale)
    is fitted to the common holes and ``chi2 = sum r^2 / (sigma_ref^2 + sigma^2)`` over x and
    y of the residuals with ``2 n - 6`` degrees of freedom.  Distortion differences
    between the exposures only add scatter, so a ``stated_over_scatter = 1 / sqrt(chi2 /
    dof)`` well above 1 means sigmas that are too large (a wrong noise model).

    Returns ``{exposure: {"n_common", "stated_over_scatter"}}`` for the exposures
    compared (none with fewer than two tables or ``min_common`` common holes).
    """
    def good(t):
        hid = np.asarray(t["hole_id"], np.int64)
        ok = (hid >= 0) & ((np.asarray(t["flags"], np.int64) & FLAGS_REJECT) == 0)
        return {int(h): (float(x), float(y), float(sx), float(sy)) for h, x, y, sx, sy in zip(
            hid[ok], np.asarray(t["x"], float)[ok], np.asarray(t["y"], float)[ok],
            np.asarray(t["sigma_x"], float)[ok], np.asarray(t["sigma_y"], float)[ok])}

    names = list(tables)
    out = {}
    if len(names) < 2:
        return out
    ref = good(tables[names[0]])
    for name in names[1:]:
        cur = good(tables[name])
        common = sorted(set(ref) & set(cur))
        if len(common) < min_common:
            continue
        a = np.array([ref[h] for h in common])
        b = np.array([cur[h] for h in common])
        design = np.column_stack([np.ones(len(common)), a[:, 0], a[:, 1]])
        resid = []
        for k in (0, 1):  # x and y of this exposure as affine functions of the reference's
            coef, *_ = np.linalg.lstsq(design, b[:, k], rcond=None)
            resid.append((b[:, k] - design @ coef) / np.hypot(a[:, 2 + k], b[:, 2 + k]))
        chi2 = float(np.sum(np.square(resid)))
        dof = 2 * len(common) - 6
        out[name] = {"reference": names[0], "n_common": len(common),
                     "stated_over_scatter": float(1.0 / math.sqrt(chi2 / dof)) if chi2 > 0 else float("inf")}
    return out


def _scatter_warnings(results, campaign):
    """Run :func:`scatter_check` per lab dataset on the measured tables; a warning is
    appended to the message of each exposure whose sigmas exceed the scatter by more than
    :data:`SCATTER_RATIO_HIGH`.  Returns ``{dataset: scatter_check result}``."""
    report = {}
    for ds in campaign.lab:
        tables = {}
        for r in results:
            if r["dataset"] != ds.name or r["status"] not in MEASURED or r["kind"] != "image":
                continue
            t = r.get("pending")
            if t is None and r.get("table"):
                t = Table.read(r["table"], format="ascii.ecsv")
            if t is not None:
                tables[r["exposure"]] = t
        check = scatter_check(tables)
        if not check:
            continue
        report[ds.name] = check
        for r in results:
            c = check.get(r["exposure"]) if r["dataset"] == ds.name else None
            if c is None or not c["stated_over_scatter"] > SCATTER_RATIO_HIGH:
                continue
            note = (f"{r['file']}: implausible noise model: the stated sigmas are "
                    f"{c['stated_over_scatter']:.3g} x the scatter of the {c['n_common']} spots' "
                    f"positions against exposure {c['reference']} (an affine transformation "
                    "removed). Likely cause: a normalised flat read as counts (the dataset's "
                    "flat_normalised), a wrong gain or read noise, or frames not in ADU")
            log.warning("%s", note)
            r["message"] = f"{r['message']}; {note}" if r["message"] else note
    return report


# =========================================================================== campaign checks
def _refuse_same_content(campaign):
    """The same frame under two names (equal SHA-256) would enter the fit twice as if
    independent: refused before anything is written, naming both exposures."""
    from ..campaign import CampaignError

    where = {}
    for kind, datasets in (("lab", campaign.lab), ("sky", campaign.sky)):
        for i, ds in enumerate(datasets):
            for k, e in enumerate(ds.exposures):
                where.setdefault(Path(e.file), f"{kind}[{i}].exposures[{k}] (dataset '{ds.name}')")
    pairs = same_content(list(where))
    if pairs:
        a, b, digest = pairs[0]
        raise CampaignError(f"{campaign.path}: {where[b]} {b} has the same content as {where[a]} {a} "
                            f"(SHA-256 {digest[:16]}...): the same frame under two names; list it once")


def _offset_warnings(results, jobs, campaign):
    """Run :func:`astrocal.lab.checks.offset_check` per lab dataset; an exposure whose
    measured shift disagrees with its commanded offset gets the flag ``offsets`` and a
    warning naming both exposures and both shifts.  Returns ``{dataset: check}``."""
    report = {}
    by_key = {(j.dataset, j.index): j for j in jobs}
    for ds in campaign.lab:
        tables, offs, sigmas, rows = {}, {}, {}, {}
        for r in results:
            if r["dataset"] != ds.name or r["status"] not in MEASURED:
                continue
            t = r.get("pending")
            if t is None and r.get("table"):
                t = Table.read(r["table"], format="ascii.ecsv")
            job = by_key.get((r["dataset"], r["index"]))
            if t is None or job is None:
                continue
            off = job.offset_arcsec if job.offset_arcsec is not None else t.meta.get("offset_arcsec")
            tables[r["exposure"]], rows[r["exposure"]] = t, r
            offs[r["exposure"]] = None if off is None else tuple(float(v) for v in off)
            sigmas[r["exposure"]] = job.offset_sigma_mas
        check = offset_check(tables, offs, sigmas, campaign.instrument.pixel_scale_mas)
        if not check:
            continue
        report[ds.name] = check
        for name, c in check.items():
            if not c["mismatch"]:
                continue
            r = rows[name]
            note = (f"commanded offset disagrees with the measured shift: {name} moved by "
                    f"({c['measured_px'][0]:.2f}, {c['measured_px'][1]:.2f}) px relative to "
                    f"{c['reference']} ({c['n_common']} common holes), the commanded offsets "
                    f"{offs[name]} and {offs[c['reference']]} arcsec give ({c['commanded_px'][0]:.2f}, "
                    f"{c['commanded_px'][1]:.2f}) px: {c['difference_px']:.2f} px apart (tolerance "
                    f"{c['tolerance_px']:.2f} px); are the offset_arcsec of dataset '{ds.name}' right?")
            log.warning("%s: %s", r["file"], note)
            r["message"] = f"{r['message']}; {note}" if r["message"] else note
            r["flags"] = list(r.get("flags") or []) + ["offsets"]
    return report


# =========================================================================== campaign
@dataclass
class MeasureReport:
    """What :func:`measure_campaign` did: ``summary`` (Table, one row per exposure),
    ``results`` (dicts), ``output`` directory, ``summary_path``, ``n_failed``, ``seconds``."""

    summary: Table
    results: list
    output: Path
    summary_path: Path | None
    n_failed: int
    seconds: float
    errors: list = field(default_factory=list)
    n_flagged: int = 0

    @property
    def ok(self):
        return self.n_failed == 0 and not self.errors

    @property
    def n_saturated(self):
        """Exposures measured but flagged ``saturated`` (status)."""
        return sum(r["status"] == "saturated" for r in self.results)


def _load_campaign_tolerant(path):
    """Load a campaign; exposures whose file is missing do not stop the others.

    Returns ``(campaign, missing)``: the campaign without those exposures and a list of
    (dataset name, exposure index, path, {"offset_arcsec": ...}).  Every other problem
    raises :class:`CampaignError`.
    """
    import dataclasses

    from ..campaign import load_campaign

    camp = load_campaign(path, missing_exposures="keep")
    missing, labs = [], []
    for ds in camp.lab:
        kept = []
        for k, e in enumerate(ds.exposures):
            if Path(e.file).exists():
                kept.append(e)
            else:
                off = list(e.offset_arcsec) if e.offset_arcsec is not None else None
                missing.append((ds.name, k, Path(e.file), {"offset_arcsec": off}))
        if kept:
            labs.append(dataclasses.replace(ds, exposures=tuple(kept)))
        else:
            log.error("%s: dataset '%s' has no exposure file that exists", camp.path, ds.name)
    return dataclasses.replace(camp, lab=tuple(labs)), missing


def _product_paths(jobs_spec, output):
    """Product stems: the exposure's name, prefixed by the dataset if names collide."""
    stems = [exposure_stem(f) for _, _, f in jobs_spec]
    dup = {s for s in stems if stems.count(s) > 1}
    out = []
    seen = set()
    for (ds, k, f), s in zip(jobs_spec, stems):
        stem = f"{ds}_{s}" if s in dup else s
        base, n = stem, 1
        while stem in seen:
            n += 1
            stem = f"{base}_{n}"
        seen.add(stem)
        out.append(stem)
    return out


def measure_campaign(campaign, *, overwrite=False, processes=1, psf=None):
    """Measure every lab and sky exposure of a campaign; returns a :class:`MeasureReport`.

    ``[[sky]]`` datasets are measured after the lab ones by
    :func:`astrocal.sky.measure.measure_sky_datasets` (one sky table per exposure; rows of
    kind ``sky_image`` / ``sky_list`` in the summary, ``n_identified`` = stars matched).

    ``campaign`` a path or a loaded :class:`~astrocal.campaign.Campaign`; ``overwrite``
    replaces existing products; ``processes`` measures frames in parallel; ``psf``
    ("model" or "epsf") overrides the campaign's ``[measure] psf``.

    Campaign-level problems (invalid file, misspelt key) raise
    :class:`~astrocal.campaign.CampaignError`; an existing summary without ``overwrite``
    raises :class:`~astrocal.atomic.ProductExistsError`.  Problems of one frame or one
    dataset are reported in the summary (status ``failed``) and the others are measured.
    """
    from ..campaign import Campaign
    from .mask import load_mask

    t0 = time.perf_counter()
    missing = []
    if not isinstance(campaign, Campaign):
        campaign, missing = _load_campaign_tolerant(campaign)
    if campaign.sky:
        campaign.earth.apply(campaign.path)  # the campaign's Earth-orientation tables (astrocal.earth)
    processes = int(processes)
    if processes < 1:
        raise MeasureError(f"processes must be >= 1, got {processes}")
    mode = psf or campaign.measure.psf
    if mode not in ("model", "epsf"):
        raise ValueError(f"psf must be 'model' or 'epsf', got {mode!r}")
    _refuse_same_content(campaign)
    output = Path(campaign.measure.output)
    summary_path = output / "summary.ecsv"
    check_writable(summary_path, overwrite)
    output.mkdir(parents=True, exist_ok=True)
    inst = campaign.instrument
    rules = header_rules(inst)  # the keyword map and defaults of raw, background and flat frames

    # ---- jobs
    spec = []  # (dataset, index, file, Exposure or None, offset of a missing one)
    for ds in campaign.lab:
        for k, e in enumerate(ds.exposures):
            spec.append((ds.name, k, e.file, e, None))
    for name, k, p, item in missing:
        off = item.get("offset_arcsec") if isinstance(item, dict) else None
        ok_off = isinstance(off, list) and len(off) == 2 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in off)
        spec.append((name, 1000 + k, p, None, tuple(float(v) for v in off) if ok_off else None))
    stems = _product_paths([(a, b, c) for a, b, c, _, _ in spec], output)
    jobs = []
    for (name, k, f, e, off), stem in zip(spec, stems):
        if e is None:  # named in the campaign, file missing
            jobs.append(_Job(name, k, Path(f), "image", stem, output / f"{stem}.ecsv", None, off,
                             None, overwrite, mode, str(campaign.path), campaign.sha256,
                             missing=True))
            continue
        kind = _exposure_kind(f)
        jobs.append(_Job(name, k, Path(f), kind, stem, output / f"{stem}.ecsv",
                         output / f"{stem}_reduced.fits" if kind == "image" else None,
                         e.offset_arcsec, e.offset_sigma_mas, overwrite, mode,
                         str(campaign.path), campaign.sha256))
    for job in jobs:  # every product path under the output directory (names are checked at load too)
        for path in (job.table_path, job.reduced_path):
            if path is not None:
                confined(path, output)

    # ---- per-dataset context (mask, PSF, calibration), built once; the PSF table is
    # computed in a thread while the calibration frames are read (both release the GIL)
    from concurrent.futures import ThreadPoolExecutor

    contexts = {}
    with ThreadPoolExecutor(max_workers=1) as threads:
        for ds in campaign.lab:
            ctx = _Context(name=ds.name, filter=ds.filter, preset=inst.preset, rules=rules,
                           pixel_scale_mas=inst.pixel_scale_mas,
                           mask_scale=inst.mask_scale_mm_per_arcsec,
                           detector_shape=tuple(inst.detector_shape), mask_path=str(ds.mask))
            contexts[ds.name] = ctx
            try:
                ctx.mask = load_mask(ds.mask)
                needs_images = any(j.dataset == ds.name and j.kind == "image" and not j.missing
                                   for j in jobs)
                if needs_images:
                    future = threads.submit(model_psf, inst.preset, ds.filter, ctx.mask,
                                            pixel_scale_mas=inst.pixel_scale_mas,
                                            mask_scale=inst.mask_scale_mm_per_arcsec)
                    try:
                        if ds.background is not None or ds.flat is not None:
                            ctx.calibration = dataset_calibration(
                                ds.background, ds.flat, rules, getattr(ds, "flat_normalised", None))
                    finally:
                        ctx.psf = future.result()
            except Exception as exc:  # noqa: BLE001 - the dataset fails, others go on
                ctx.error = f"dataset '{ds.name}' ({campaign.path}): {exc}"
                log.error("%s", ctx.error)
    for name, _, _, _ in missing:
        contexts.setdefault(name, _Context(name=name, error=f"dataset '{name}' has no usable exposure"))

    # ---- run
    todo = list(jobs)
    if processes > 1 and len(todo) > 1:
        import multiprocessing as mp

        mpctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
        with ProcessPoolExecutor(max_workers=min(processes, len(todo)), mp_context=mpctx,
                                 initializer=_init_worker, initargs=(contexts,)) as pool:
            results = list(pool.map(_measure_job, todo))
    else:
        _init_worker(contexts)
        results = [_measure_job(j) for j in todo]

    if mode == "epsf":
        by_key = {(j.dataset, j.index): j for j in jobs}
        for ds in campaign.lab:
            _epsf_pass([r for r in results if r["dataset"] == ds.name], contexts[ds.name], by_key)

    # stated sigmas against the scatter of the positions between the exposures of a dataset
    scatter = _scatter_warnings(results, campaign)
    # commanded offsets against the measured shifts of the holes
    offsets = _offset_warnings(results, jobs, campaign)

    # stale products of frames that failed now are removed when overwriting
    if overwrite:
        for r, j in zip(results, jobs):
            if r["status"] == "failed" and j.table_path.exists() and j.kind == "image":
                log.info("removing stale %s", j.table_path)
                j.table_path.unlink()

    for r in results:
        if r["status"] == "failed":
            log.error("%s", r["message"])
        else:
            log.info("%s: %d spots, %d identified, %d good; median SNR %.0f, median sigma %.2g px%s",
                     Path(r["file"]).name, r["n_detected"], r["n_identified"], r["n_good"],
                     r["median_snr"], r["median_sigma_px"],
                     f" ({r['message']})" if r["message"] else "")

    # ---- [[sky]] datasets: stars measured and matched to the catalogue (astrocal.sky.measure)
    if campaign.sky:
        from ..sky.measure import measure_sky_datasets

        results += measure_sky_datasets(campaign, output=output, overwrite=overwrite, psf=mode,
                                        used_stems=stems, processes=processes)

    # ---- [lms]: laser spots, pinhole traces and slice edges per frame (astrocal.lms.measure)
    if campaign.lms is not None:
        from ..lms.measure import measure_lms

        results += measure_lms(campaign, output, overwrite=overwrite,
                               used_stems=stems + [r["exposure"] for r in results])

    summary = _summary_table(results, jobs, campaign, mode, output, time.perf_counter() - t0,
                             processes)
    summary.meta["scatter_check"] = _plain(scatter)
    summary.meta["offset_check"] = _plain(offsets)
    atomic_write_table(summary, summary_path, overwrite=overwrite, format="ascii.ecsv")
    n_failed = sum(r["status"] == "failed" for r in results)
    n_flagged = sum(bool(r.get("flags")) for r in results)
    return MeasureReport(summary=summary, results=results, output=output,
                         summary_path=summary_path, n_failed=n_failed,
                         seconds=time.perf_counter() - t0, n_flagged=n_flagged)


def _summary_table(results, jobs, campaign, mode, output, seconds, processes):
    def rel(p):
        if p is None:
            return ""
        try:
            return Path(p).resolve().relative_to(output.resolve()).as_posix()
        except ValueError:
            return str(p)

    t = Table()
    t["dataset"] = [r["dataset"] for r in results]
    t["exposure"] = [r["exposure"] for r in results]
    t["file"] = [r["file"] for r in results]
    t["kind"] = [r["kind"] for r in results]
    t["status"] = [r["status"] for r in results]
    t["n_detected"] = np.array([r["n_detected"] for r in results], np.int64)
    t["n_identified"] = np.array([r["n_identified"] for r in results], np.int64)
    t["n_good"] = np.array([r["n_good"] for r in results], np.int64)
    t["median_snr"] = np.array([r["median_snr"] for r in results], float)
    t["median_sigma_px"] = np.array([r["median_sigma_px"] for r in results], float)
    t["ident_rms_px"] = np.array([r["ident_rms_px"] for r in results], float)
    offs = [j.offset_arcsec for j in jobs] + [None] * (len(results) - len(jobs))  # sky rows last
    t["offset_x_arcsec"] = np.array([np.nan if o is None else o[0] for o in offs], float)
    t["offset_y_arcsec"] = np.array([np.nan if o is None else o[1] for o in offs], float)
    t["table"] = [rel(r["table"]) for r in results]
    t["reduced"] = [rel(r["reduced"]) for r in results]
    t["seconds"] = np.array([r["seconds"] for r in results], float)
    t["flags"] = [",".join(r.get("flags") or []) for r in results]
    t["message"] = [r["message"] or "" for r in results]
    t.meta = _plain({
        "description": "astrocal measure: one row per exposure (status ok/saturated/failed, flags "
                       "of the checks: saturated, offsets; message)",
        "campaign": str(campaign.path),
        "campaign_sha256": campaign.sha256,
        "psf": mode,
        "n_exposures": len(results),
        "n_failed": int(sum(r["status"] == "failed" for r in results)),
        "processes": processes,
        "seconds": seconds,
        "creator": f"astrocal {__version__} measure",
        "created": Time.now().isot,
        "good_definition": "no flag of reject_flags (identified, converged, not saturated, "
                           "enough valid pixels)",
        "reject_flags": FLAGS_REJECT,
    })
    return t


# =========================================================================== CLI
def register(subparsers):
    p = subparsers.add_parser(
        "measure",
        help="reduce lab frames and measure the identified pinhole positions (and the "
        "matched stars of sky exposures)",
        description="For every exposure of the campaign's [[lab]] datasets: subtract the "
        "background, flat-field, mask bad pixels, saturated pixels and cosmic rays (the "
        "reduced image is written), detect the spots, fit them with the PSF (the "
        "instrument's diffraction model or an ePSF built from the frames, [measure] psf) and "
        "the detector noise model, identify them with the mask holes, and write one ECSV "
        "source table per exposure and summary.ecsv into [measure] output. Exposures that "
        "are source tables are validated and passed on. For the [[sky]] datasets: the stars of "
        "each image are detected and fitted with an AO-star PSF (or read from a star list), "
        "matched to the catalogue's apparent positions for the exposure (time, pointing, "
        "weather from the campaign, else the FITS header, else the site's defaults) and written "
        "as one sky table per exposure. For an [lms] data set: every LMS frame is background-"
        "subtracted and its laser spots (with their covariance), pinhole traces or slice edges "
        "measured into one table per frame (docs/lms.md). The exit status is 1 if a frame failed (the others are "
        "measured and written).",
    )
    p.add_argument("campaign", help="campaign file (TOML)")
    p.add_argument("--overwrite", action="store_true", help="replace existing products")
    p.add_argument("--processes", type=int, default=1, metavar="N",
                   help="measure N frames in parallel (default 1)")
    p.set_defaults(func=run)


def run(args):
    report = measure_campaign(args.campaign, overwrite=args.overwrite, processes=args.processes)
    n = len(report.results)
    for r in report.results:
        if r["status"] == "failed":
            print(f"FAILED {r['message']}")
        elif r["status"] == "saturated":
            print(f"SATURATED {r['exposure']}: {r['n_good']} good of {r['n_identified']} identified "
                  f"spots [{r['message']}]")
        elif str(r["kind"]).startswith("lms_"):
            what = {"lms_laser": "laser spots found", "lms_grid": "trace points found",
                    "lms_slices": "edge points found"}.get(r["kind"])
            print(f"ok     {r['exposure']}: " + (f"{r['n_identified']}/{r['n_detected']} {what}, {r['n_good']} "
                                                 f"good, median sigma {r['median_sigma_px']:.2g} px"
                                                 if what else r["message"]))
        else:
            extra = f"  [{r['message']}]" if r["message"] else ""
            print(f"ok     {r['exposure']}: {r['n_identified']}/{r['n_detected']} spots identified, "
                  f"{r['n_good']} good, median SNR {r['median_snr']:.0f}, median sigma "
                  f"{r['median_sigma_px']:.2g} px{extra}")
    print(f"{n - report.n_failed}/{n} exposures measured in {report.seconds:.1f} s; wrote "
          f"{report.summary_path}")
    flagged = [f"{r['exposure']} ({', '.join(r['flags'])})" for r in report.results if r.get("flags")]
    if flagged:
        print(f"flagged (see the summary's flags and message): {'; '.join(flagged)}")
    from ..cli import EXIT_BUG

    bugs = [r["exposure"] for r in report.results if str(r.get("message", "")).startswith(INTERNAL_ERROR)]
    if bugs:
        print(f"astrocal: internal error while measuring {', '.join(bugs)} -- a bug in astrocal; please "
              "report it with the traceback(s) above", file=sys.stderr)
        return EXIT_BUG
    return 1 if report.n_failed or report.n_saturated else 0
