"""The stars of one sky exposure: measured on an image, or read from a star list.

An image is reduced (:func:`astrocal.image.reduce.reduce_frame`), its stars detected
(:func:`astrocal.image.detect.detect_spots`) and fitted with the AO-corrected star PSF
(:func:`star_psf`) or an effective PSF built from the image's isolated stars
(:func:`image_stars`); a star list is read with the dataset's column choices
(:func:`list_stars`). The sky measure stage (:mod:`astrocal.sky.measure`) matches them to
the catalogue.
"""
from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from astropy.io import fits
from astropy.table import Table
from scipy.spatial import cKDTree

from ..image import centroid as C
from ..image.detect import detect_spots
from ..image.epsf import build_epsf
from ..image.frame import fit_frame_spots, frame_meta
from ..image.psf import ELT_OUTER_DIAMETER_M, RAD_TO_MAS, AOStarPSF, diffraction_psf
from ..image.reduce import DQ_SATURATED, detector_params, read_frame, reduce_frame
from ..sources import FLAGS_REJECT_SKY as FLAGS_REJECT
from .exposure import ExposureSetup, SkyMeasureError
from .starlist import StarListError, read_star_list

if TYPE_CHECKING:
    from ..image.reduce import Calibration, ReducedFrame

__all__ = ["DEFAULT_STREHL", "DEFAULT_SEEING_ARCSEC", "MAX_DETECTIONS", "MAX_NEIGHBOUR_PAIRS", "MIN_EPSF_STARS",
           "SPACE_BLEND_RADIUS_PX", "star_psf", "fwhm_px", "image_stars", "list_stars"]

log = logging.getLogger(__name__)

#: Strehl ratio of the model PSF when the dataset gives none: an assumption (a bright
#: natural guide star with single-conjugate AO in L band), not a METIS figure. It sets
#: the fraction of the flux in the diffraction core; the halo is nearly flat over a
#: fitting stamp and is absorbed by the local background, so positions barely depend
#: on it.
DEFAULT_STREHL = 0.7
#: seeing (arcsec at 0.5 um) of the model PSF's halo
DEFAULT_SEEING_ARCSEC = 0.7
#: more detections than this: not a star field (or an unreduced frame)
MAX_DETECTIONS = 20000
#: largest number of neighbour pairs handed to the PSF fit's joint deblending (its memory
#: grows by ~30 kB per pair): beyond, the faintest detections are dropped (a warning)
MAX_NEIGHBOUR_PAIRS = 20000
#: fewest isolated stars to build an ePSF from (else the model PSF is kept). Measured on
#: rendered L-band frames (tests/sky/test_measure.py): with 13 stars the ePSF fit did not
#: converge and the positions scattered 1.6 times their errors, with 63 stars 1.2-1.3
#: times, with 100-130 stars 1.0-1.1 times (the model PSF: 1.0)
MIN_EPSF_STARS = 100
#: the blend radius (px) of a star list from space: about the FWHM of a diffraction-limited
#: space imager sampled near Nyquist (WFC3/UVIS 1.8 px in the visible, NIRCam 1.4-2.2 px)
SPACE_BLEND_RADIUS_PX = 2.0


@functools.lru_cache(maxsize=8)
def _core(wavelength_um, pixel_scale_mas):
    return diffraction_psf(wavelength_um, pixel_scale_mas)


def star_psf(wavelength_um: float, pixel_scale_mas: float, strehl: float = DEFAULT_STREHL,
             seeing_arcsec: float = DEFAULT_SEEING_ARCSEC) -> AOStarPSF:
    """The model PSF of an AO-corrected star.

    :class:`~astrocal.image.psf.AOStarPSF`: the ELT diffraction core (point source,
    pixel-integrated, cached per wavelength and scale) with Strehl ``strehl`` and a Moffat
    halo of the seeing (arcsec at 0.5 um, scaled by lambda^-1/5).

    The halo is evaluated analytically (not tabulated): a table of the core's extent
    (+-37 px) would cut the broad halo (FWHM ~85 px in L band) with a step that the
    joint fit subtracts inside the stamps of neighbours (measured on a simulated Galactic
    Center frame: pulls of 2.0 instead of 1.2).

    Parameters
    ----------
    wavelength_um : float
        Wavelength (um).
    pixel_scale_mas : float
        Pixel scale (mas per pixel).
    strehl : float, optional
        Strehl ratio: the fraction of the flux in the diffraction core.
    seeing_arcsec : float, optional
        Seeing FWHM (arcsec at 0.5 um) of the halo.

    Returns
    -------
    AOStarPSF
        The PSF model.
    """
    core = _core(round(float(wavelength_um), 6), round(float(pixel_scale_mas), 6))
    return AOStarPSF.from_seeing(core, float(strehl), seeing_arcsec=seeing_arcsec)


def fwhm_px(wavelength_um: float, pixel_scale_mas: float) -> float:
    """1.03 lambda/D of the ELT in pixels (the blend radius of star lists).

    Parameters
    ----------
    wavelength_um : float
        Wavelength (um).
    pixel_scale_mas : float
        Pixel scale (mas per pixel).

    Returns
    -------
    float
        The FWHM of the diffraction core (px).
    """
    return 1.03 * wavelength_um * 1e-6 / ELT_OUTER_DIAMETER_M * RAD_TO_MAS / pixel_scale_mas




def image_stars(path: str | Path, setup: ExposureSetup, *, pixel_scale_mas: float, preset: str | None,
                strehl: float | None, calibration: Calibration | None, psf_mode: str, detect_threshold: float,
                source: str, rules: Any = None) -> tuple[C.CentroidResult, ReducedFrame, fits.Header, dict, Any]:
    """Reduce an image, detect its stars and fit them with a PSF.

    The smooth background is removed before detecting; more than
    :data:`MAX_DETECTIONS` sources or fewer than 3 are refused; the crowded faint ones
    beyond :data:`MAX_NEIGHBOUR_PAIRS` neighbour pairs are dropped (a warning). With
    ``psf_mode="epsf"`` the stars are refitted with an effective PSF built from the
    image's isolated clean stars (at least :data:`MIN_EPSF_STARS`, else the model PSF is
    kept with a warning).

    Parameters
    ----------
    path : str or os.PathLike
        The image (FITS).
    setup : ExposureSetup
        The exposure's metadata (its wavelength sets the PSF).
    pixel_scale_mas : float
        Nominal pixel scale (mas per pixel).
    preset : str or None
        The instrument preset (detector parameters, header rules).
    strehl : float or None
        The dataset's Strehl ratio (None: :data:`DEFAULT_STREHL`, recorded as assumed).
    calibration : Calibration or None
        Background and flat frames of the dataset.
    psf_mode : str
        ``"model"`` or ``"epsf"``.
    detect_threshold : float
        Detection threshold (sigma of the filtered noise).
    source : str
        Names the exposure in messages.
    rules : optional
        Header rules (the campaign's instrument), default those of ``preset``.

    Returns
    -------
    tuple
        ``(CentroidResult, ReducedFrame, header, meta, psf)``: the fitted stars, the
        reduced image, its header, the detection, PSF, detector, reduction and noise
        model meta (and ``frame_warnings``), and the PSF used.

    Raises
    ------
    SkyMeasureError
        Too many or too few detections.
    """
    raw, header = read_frame(path, "sky exposure")
    em, note = frame_meta(header, path, rules if rules is not None else preset)  # header rules
    warns = [note] if note else []
    params = detector_params(em, preset, source=str(path))
    given = strehl is not None
    strehl = DEFAULT_STREHL if strehl is None else float(strehl)
    psf = star_psf(setup.wavelength_um, pixel_scale_mas, strehl)
    reduced = reduce_frame(raw, calibration, params, psf=psf.core, source=str(path))
    del raw
    det_mask = (reduced.dq & ~np.uint8(DQ_SATURATED)) != 0
    # the smooth background is always removed before detecting (also after a background
    # frame): the seeing halos of bright stars are broad pedestals on which every noise
    # bump would be a maximum above the threshold (measured: 4822 detections instead of
    # 161 on a simulated Galactic Center frame with ~50 stars)
    det = detect_spots(reduced.data, psf.core, mask=det_mask, variance=reduced.total_variance(),
                       threshold=detect_threshold, subtract_background=True,
                       saturated=(reduced.dq & DQ_SATURATED) != 0)
    if len(det) > MAX_DETECTIONS:
        raise SkyMeasureError(f"{source}: {len(det)} sources above {detect_threshold:g} sigma: not a "
                              "star field, or the background is not removed")
    if len(det) < 3:
        raise SkyMeasureError(f"{source}: {len(det)} source(s) above {detect_threshold:g} sigma "
                              f"(filtered noise {det.meta['noise']:.3g} ADU): no star field to match")
    det = _limit_neighbour_pairs(det, psf, warns, source)
    res = fit_frame_spots(reduced, np.asarray(det["x"], float), np.asarray(det["y"], float), psf)
    psf_meta = {"kind": "ao_star_model", "strehl": float(strehl),
                "strehl_source": "dataset" if given else "default (assumed)",
                "halo_fwhm_px": float(psf.halo_fwhm_px), "wavelength_um": setup.wavelength_um,
                "fwhm_px": float(psf.fwhm()), "stamp_size": int(res.meta["stamp_size"])}
    used = psf
    if psf_mode == "epsf":
        res, used, psf_meta = _epsf_refit(reduced, res, psf, psf_meta, warns)
    meta = {"detection": {**{k: det.meta[k] for k in ("noise", "threshold", "n_maxima", "n_merged",
                                                        "n_sidelobes", "good_fraction")},
                          "n_detected": len(det), "n_dropped_crowding": det.meta.get("n_dropped_crowding", 0),
                          "smooth_background_subtracted": True},
            "psf": psf_meta, "detector": params.to_dict(),
            "reduction": {k: v for k, v in reduced.meta.items() if k != "detector"},
            "noise_model": {"gain_eff_e_per_adu": params.gain_eff,
                            "extra_variance": "BKGVAR extension of the reduced image"},
            "frame_warnings": warns}
    return res, reduced, header, meta, used


def _limit_neighbour_pairs(det, psf, warns, source):
    """The brightest detections whose neighbour pairs (sources within the PSF model's reach
    of each other, which the fit's joint deblending handles pair by pair, ~30 kB each) stay
    below MAX_NEIGHBOUR_PAIRS; the fainter ones are dropped with a warning."""
    size = int(psf.default_stamp_size())
    reach = float(psf.half_width) + size // 2 + 1.0  # as in fit_centroids
    xy = np.column_stack([np.asarray(det["x"], float), np.asarray(det["y"], float)])

    def n_pairs(n):
        return len(cKDTree(xy[:n]).query_pairs(reach, p=np.inf, output_type="ndarray")) if n > 1 else 0

    if n_pairs(len(xy)) <= MAX_NEIGHBOUR_PAIRS:
        return det
    lo, hi = 2, len(xy)  # detections are brightest first: the largest prefix that fits
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if n_pairs(mid) <= MAX_NEIGHBOUR_PAIRS else (lo, mid)
    msg = (f"{len(xy)} detections are too crowded for the joint fit ({n_pairs(len(xy))} neighbour pairs "
           f"within {reach:.0f} px, limit {MAX_NEIGHBOUR_PAIRS}): the {lo} brightest are fitted, "
           f"{len(xy) - lo} fainter ones dropped")
    warns.append(msg)
    log.warning("%s: %s", source, msg)
    out = det[:lo]
    out.meta["n_dropped_crowding"] = len(xy) - lo
    return out


def _epsf_refit(reduced, res, model, model_meta, warns):
    """ePSF from the image's isolated clean stars, all stars refitted with it; the model
    PSF is kept (with a warning) when there are fewer than MIN_EPSF_STARS such stars or
    the build does not converge. Returns (result, psf, psf meta)."""
    iso = ((res.flags & (FLAGS_REJECT | C.FLAG_EDGE | C.FLAG_MASKED | C.FLAG_CROWDED)) == 0
           & np.isfinite(res.x) & (res.snr > 20))
    n_iso = int(iso.sum())
    if n_iso < MIN_EPSF_STARS:
        warns.append(f"ePSF not built: {n_iso} isolated clean stars (need {MIN_EPSF_STARS}); "
                     "the model PSF is used")
        return res, model, model_meta
    fit = build_epsf(reduced.data, (res.x[iso], res.y[iso]),
                     noise=reduced.noise_model(dtype=np.float32), masks=reduced.mask)
    if not fit.converged:
        warns.append(f"ePSF from {n_iso} stars did not converge in {fit.n_iter} iterations; the "
                     "model PSF is used")
        return res, model, model_meta
    epsf = fit.psf
    x0 = np.where(np.isfinite(res.x), res.x, res.x_guess)
    y0 = np.where(np.isfinite(res.y), res.y, res.y_guess)
    new = fit_frame_spots(reduced, x0, y0, epsf, stamp_size=epsf.meta.get("stamp_size"))
    new.x_guess, new.y_guess = res.x_guess, res.y_guess
    meta = {"kind": "epsf", "n_stars": n_iso, "model_first_pass": model_meta,
            **{k: v for k, v in epsf.meta.items() if k != "kind"}, "build_history": fit.history}
    return new, epsf, meta


def list_stars(path: str | Path, dataset: Any, shape: tuple[int, int],
               source: str) -> tuple[Table, int, np.ndarray]:
    """Read a star list with the dataset's column choices; drop rows off the detector.

    Parameters
    ----------
    path : str or os.PathLike
        The star list (:func:`~astrocal.sky.starlist.read_star_list`).
    dataset : astrocal.campaign.SkyDataset
        Its column choices (``x_col``, ``y_col``, ``flux_col``, ``mag_col``,
        ``sigma_x_col``, ``sigma_y_col``, ``one_based``).
    shape : tuple of int
        Detector shape ``(ny, nx)``; rows outside ``-0.5 .. n - 0.5`` are dropped (logged).
    source : str
        Names the exposure in messages.

    Returns
    -------
    tuple
        ``(table, n_outside, rows_outside)``: the stars on the detector (0-based ``x``,
        ``y``), how many were dropped and their row indices.

    Raises
    ------
    SkyMeasureError
        The list cannot be read, or fewer than 3 stars lie on the detector.
    """
    try:
        t = read_star_list(path, x_col=dataset.x_col, y_col=dataset.y_col, flux_col=dataset.flux_col,
                           mag_col=getattr(dataset, "mag_col", None), sigma_x_col=dataset.sigma_x_col,
                           sigma_y_col=dataset.sigma_y_col, one_based=dataset.one_based)
    except StarListError as exc:
        raise SkyMeasureError(f"{source}: {exc}") from None
    ny, nx = shape
    x = np.asarray(t["x"], float)
    y = np.asarray(t["y"], float)
    inside = (x >= -0.5) & (x <= nx - 0.5) & (y >= -0.5) & (y <= ny - 0.5)
    n_out = int(np.count_nonzero(~inside))
    if n_out:
        rows = np.flatnonzero(~inside)
        log.warning("%s: %d star(s) of the list lie outside the %d x %d px detector and are dropped "
                    "(rows %s)", source, n_out, nx, ny, rows[:10].tolist())
    meta = dict(t.meta)
    t = t[inside]
    t.meta = meta
    if len(t) < 3:
        raise SkyMeasureError(f"{source}: {len(t)} star(s) of the list on the {nx} x {ny} px detector "
                              f"({n_out} outside): nothing to match")
    return t, n_out, np.flatnonzero(~inside)

