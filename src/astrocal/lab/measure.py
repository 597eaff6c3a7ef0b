"""One lab frame to its identified source table (the lab half of ``astrocal measure``;
the campaign's stage, which runs this for every exposure, is :mod:`astrocal.stages.measure`).

For every exposure of a ``[[lab]]`` dataset:

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

The stage (:mod:`astrocal.stages.measure`) writes a campaign summary (``summary.ecsv``:
one row per exposure, with its status and message) at the end.  A frame that fails
(unreadable, no spots, not identified, ...) is reported with a message naming its file;
the others are still measured; the exit status of ``astrocal measure`` is then 1.
Nothing that exists is overwritten unless ``--overwrite``.

Conventions: positions are 0-based pixels (the centre of the first pixel is 0.0, ``x``
along numpy axis 1); fluxes in ADU per DIT (flat-fielded); ``flags`` are the bits of
:mod:`astrocal.sources` (the source-table contract: columns, flags, validation), which this
module re-exports under their old names.
"""
from __future__ import annotations

import logging
import math

import numpy as np
import astropy.units as u
from astropy.table import Table

from ..errors import MeasureError  # noqa: F401 - re-exported: the error of this stage
# the source-table contract (re-exported here under the names this module always had)
from ..sources import (FLAG_LOW_COVERAGE, FLAG_UNIDENTIFIED, FLAGS_REJECT, LAB_FLAG_NAMES as FLAG_NAMES,  # noqa: F401
                       OPTIONAL_COLUMNS, OUTPUT_COLUMNS, REQUIRED_COLUMNS, SourceTableError,
                       read_source_table, validate_source_table)
from ..image import centroid as C
from ..image.centroid import CentroidResult
from ..image.frame import fit_frame_spots, header_rules  # noqa: F401 - header_rules re-exported
from ..image.detect import detect_spots
from ..image.psf import FILTER_WAVELENGTH_UM, PixelPSF, diffraction_psf, pinhole_diameter_mas
from ..image.reduce import DQ_SATURATED, DetectorParams, ReducedFrame
from ..instruments import get_instrument
from .identify import IdentificationError, identify_spots
from .mask import Mask

__all__ = [
    "FLAG_UNIDENTIFIED",
    "FLAG_LOW_COVERAGE",
    "FLAG_NAMES",
    "FLAGS_REJECT",
    "REQUIRED_COLUMNS",
    "OUTPUT_COLUMNS",
    "MeasureError",
    "SourceTableError",
    "measure_frame",
    "identify_frame_spots",
    "source_table",
    "implausible_noise_warning",
    "header_rules",
    "noise_model_check",
    "model_psf",
    "validate_source_table",
    "read_source_table",
]

log = logging.getLogger(__name__)

_PIX = u.pix


# =========================================================================== utilities


# =========================================================================== PSF
def model_psf(instrument: str | None, filter_name: str, mask: Mask, *, pixel_scale_mas: float | None = None,
              mask_scale: float | None = None) -> PixelPSF:
    """The diffraction PSF of the lab data path for a dataset.

    The wavelength is the filter's centre; the source is a uniform disk of the mask's
    (median) hole diameter at ``mask_scale``.

    Parameters
    ----------
    instrument : str or None
        A registry key (e.g. ``"metis-lm"``) or None (then ``filter_name`` must be one of
        ``L``, ``M``, ``N`` of :data:`~astrocal.image.psf.FILTER_WAVELENGTH_UM`).
    filter_name : str
        The filter (of the instrument, or ``L``, ``M``, ``N``).
    mask : Mask
        The pinhole mask (its median hole diameter; its plate scale by default).
    pixel_scale_mas : float, optional
        Pixel scale (mas/px); default the instrument's.
    mask_scale : float, optional
        Plate scale at the mask (mm/arcsec); default the mask's, else the instrument's.

    Returns
    -------
    PixelPSF
        The PSF, with ``meta['filter']`` and ``meta['hole_diameter_um']``.

    Raises
    ------
    MeasureError
        When the filter's wavelength is unknown.
    """
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


def noise_model_check(reduced: ReducedFrame, res: CentroidResult, psf: PixelPSF, min_spots: int = 3) -> dict:
    """How well the noise model describes the spots.

    The residual chi^2 per pixel on the pixels each spot dominates (its model signal
    above 5 x the stamp's median background noise), medians over the good spots.  The
    stamp's other pixels are background and are checked by the frame's pixel-to-pixel
    test (:func:`~astrocal.image.reduce.excess_variance`); a variance that is too large
    *at the spots* (a normalised flat read as counts, a gain too small, frames not in ADU)
    shows only here, as ``core_chi2`` well below 1 (a PSF model that differs from the
    spots raises it above 1).

    Parameters
    ----------
    reduced : ReducedFrame
        The reduced frame (data, variances, DQ, gain).
    res : CentroidResult
        The spots fitted on it.
    psf : PixelPSF
        The PSF they were fitted with.
    min_spots : int
        Fewest usable spots (with at least 4 core pixels) for a ``core_chi2``.

    Returns
    -------
    dict
        ``{"core_chi2", "n_spots", "median_snr"}`` (``core_chi2`` NaN with fewer than
        ``min_spots`` usable spots).
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


def implausible_noise_warning(check: dict, params: DetectorParams, source: str,
                              provenance: dict | None = None) -> str | None:
    """The warning for an implausible noise model.

    Parameters
    ----------
    check : dict
        A :func:`noise_model_check` result.
    params : DetectorParams
        The frame's detector parameters (its gain is named).
    source : str
        The frame's name, for the message.
    provenance : dict, optional
        Where the gain and read noise came from (``{"gain": ...}``).

    Returns
    -------
    str or None
        When ``core_chi2`` is below :data:`CORE_CHI2_LOW`, the warning naming the frame,
        the factor and the likely causes; None otherwise.
    """
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


def identify_frame_spots(res: CentroidResult, mask: Mask, pixel_scale_mas: float, mask_scale: float | None,
                         shape: tuple[int, int], center_guess: tuple[float, float] | None,
                         center_sigma: float | None) -> tuple[np.ndarray, dict]:
    """Identify the fitted spots of one frame with the mask holes.

    The spots with finite positions and no failed fit are identified
    (:func:`~astrocal.lab.identify.identify_spots`) by the pattern alone first, and with
    ``center_guess`` as the expected mask origin when that fails.

    Parameters
    ----------
    res : CentroidResult
        The fitted spots.
    mask : Mask
        The pinhole mask.
    pixel_scale_mas : float
        Nominal pixel scale, mas/px.
    mask_scale : float or None
        Plate scale at the mask (mm/arcsec); None for the mask's.
    shape : tuple of int
        Detector shape ``(ny, nx)``.
    center_guess : tuple of float or None
        Expected pixel position of the mask origin (from the chopper offset).
    center_sigma : float or None
        Its uncertainty, px.

    Returns
    -------
    ids : np.ndarray
        (N,) hole id of each spot (-1: not identified).
    meta : dict
        The identification meta (without ``unmatched_rows``), with ``used_center_guess``
        and, given a guess, ``center_guess_px`` and ``origin_minus_guess_px``.

    Raises
    ------
    IdentificationError
        When the spots cannot be identified (with and without the guess).
    """
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


def source_table(res: CentroidResult, ids: np.ndarray, meta: dict) -> Table:
    """The output table from a CentroidResult and hole ids, identified rows first.

    Parameters
    ----------
    res : CentroidResult
        The fitted spots.
    ids : np.ndarray
        (N,) their hole ids (-1: not identified; flagged ``FLAG_UNIDENTIFIED``).
    meta : dict
        The table's meta.

    Returns
    -------
    Table
        The lab source table (positions in pixels, fluxes in ADU), sorted by hole id then
        by decreasing SNR, unidentified spots last.
    """
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


def measure_frame(reduced: ReducedFrame, psf: PixelPSF, mask: Mask, *, pixel_scale_mas: float,
                  mask_scale: float | None = None, center_guess: tuple[float, float] | None = None,
                  center_sigma: float | None = None, detect_threshold: float = 5.0, source: str = "<frame>",
                  provenance: dict | None = None) -> tuple[Table, CentroidResult]:
    """Detect, centroid and identify the spots of one reduced frame.

    The noise model is checked on the spots (:func:`noise_model_check`); an implausible one
    is a warning (``meta['frame_warnings']``) naming the frame and the likely cause.

    Parameters
    ----------
    reduced : ReducedFrame
        The reduced frame (:class:`~astrocal.image.reduce.ReducedFrame`).
    psf : PixelPSF
        The PSF to fit (and to detect with).
    mask : Mask
        The :class:`~astrocal.lab.mask.Mask`.
    pixel_scale_mas : float
        The nominal pixel scale, mas/px.
    mask_scale : float, optional
        The plate scale at the mask (mm/arcsec); default the mask's.
    center_guess : tuple of float, optional
        The expected pixel position of the mask origin (from the chopper offset), used
        when the pattern alone is ambiguous.
    center_sigma : float, optional
        Its uncertainty, px.
    detect_threshold : float
        Detection threshold, sigma.
    source : str
        The frame's name, for the messages.
    provenance : dict, optional
        Where the frame's gain and read noise came from (named in the warnings).

    Returns
    -------
    table : Table
        The source table (without exposure metadata).
    result : CentroidResult
        The :class:`~astrocal.image.centroid.CentroidResult` in detection order.

    Raises
    ------
    MeasureError
        When there is nothing to measure.
    IdentificationError
        When the spots are not the mask
        (:class:`~astrocal.lab.identify.IdentificationError`).
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
    ids, ident = identify_frame_spots(res, mask, pixel_scale_mas, mask_scale, data.shape, center_guess,
                           center_sigma)
    meta = {"detection": {k: det.meta[k] for k in ("noise", "threshold", "n_maxima", "n_merged",
                                                     "n_sidelobes", "good_fraction")},
            "identification": ident, "psf_stamp_size": int(res.meta["stamp_size"]),
            "spot_noise_check": check, "frame_warnings": warnings}
    return source_table(res, ids, meta), res


# the campaign's measure stage and its command moved (issue 20): astrocal.stages.measure,
# astrocal.cli.measure; their old names here forward, with a DeprecationWarning
from .._moved import moved_module  # noqa: E402

__getattr__ = moved_module(__name__, ("astrocal.stages.measure", "astrocal.cli.measure"))
