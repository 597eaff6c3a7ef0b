"""One frame's measurement, as the lab and the sky stages both run it.

- :func:`fit_frame_spots`: the batched PSF fit of a reduced frame's sources
  (:func:`astrocal.image.centroid.fit_centroids`), with cosmic-ray hits found in the fit's
  residuals masked and the sources refitted (:func:`stamp_cosmic_rays`), and each final
  stamp checked against the frame's DQ map (:func:`stamp_flags`: saturated pixels, too
  little of the PSF's light on valid pixels);
- :func:`frame_meta`, :func:`header_rules`, :func:`dataset_calibration`: a frame's
  exposure metadata and a dataset's background and flat frames read with a campaign's
  header rules (:class:`astrocal.image.headers.HeaderRules`);
- :func:`exposure_stem`: the stem of an exposure's products;
- :func:`internal_error`: the message of a frame whose measurement failed by a bug.

Pixel positions are 0-based (the centre of the first pixel is 0.0, ``x`` along numpy
axis 1); images in ADU per DIT; flags are the bits of :mod:`astrocal.sources`.
"""
from __future__ import annotations

import logging
import math
import os
import traceback
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
import astropy.units as u
from scipy.spatial import cKDTree

from ..sources import FLAG_BAD_FIT, FLAG_LOW_COVERAGE, FLAG_SATURATED
from .centroid import CentroidResult, fit_centroids
from .headers import ExposureMeta, HeaderRules
from .psf import StampPSF
from .reduce import DQ_COSMIC, DQ_SATURATED, Calibration, ReducedFrame, load_calibration

__all__ = [
    "EDGE_MIN_COVERAGE",
    "INTERNAL_ERROR",
    "dataset_calibration",
    "IMAGE_SUFFIXES",
    "exposure_kind",
    "exposure_stem",
    "fit_frame_spots",
    "frame_meta",
    "header_rules",
    "internal_error",
    "stamp_cosmic_rays",
    "stamp_flags",
]

log = logging.getLogger(__name__)


#: start of the message of an exposure whose measurement raised an error that is not bad input
INTERNAL_ERROR = "INTERNAL ERROR"


def internal_error(msg: str, exc: BaseException) -> str:
    """The failure message of an exposure whose measurement raised a bug.

    ``exc`` is not an :class:`~astrocal.errors.AstrocalError` (bad input) but a bug: it is
    logged with its traceback (call this in the ``except`` block), and the command ends
    with status 70 once the other exposures are measured.

    Parameters
    ----------
    msg : str
        What failed (the exposure).
    exc : BaseException
        The exception raised.

    Returns
    -------
    str
        The message, starting with :data:`INTERNAL_ERROR`.
    """
    log.error("%s: internal error (a bug in astrocal):\n%s", msg, traceback.format_exc())
    return f"{INTERNAL_ERROR} (a bug in astrocal; traceback in the log): {msg} ({type(exc).__name__})"



#: the file names of FITS images (after which a ``.gz``/``.fz`` compression suffix may follow)
IMAGE_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fits.fz", ".fz")


def exposure_kind(path: str | os.PathLike) -> str:
    """Whether an exposure's file is an image or a source table.

    Parameters
    ----------
    path : str or os.PathLike
        The exposure's file.

    Returns
    -------
    str
        ``"table"`` for a source table (ECSV, CSV, or FITS with a table but without a
        2-D image), else ``"image"`` (also for a FITS file that cannot be opened: its
        reader reports the problem).
    """
    p = Path(path)
    low = p.name.lower()
    if low.endswith(".ecsv") or low.endswith(".csv"):
        return "table"
    if any(low.endswith(s) for s in IMAGE_SUFFIXES) and p.is_file():
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


def exposure_stem(path: str | os.PathLike) -> str:
    """The stem of an exposure's products (``<stem>.ecsv``, ``<stem>_reduced.fits``).

    Parameters
    ----------
    path : str or os.PathLike
        The exposure's file.

    Returns
    -------
    str
        Its name without its directory and its file suffixes (``.fits``, ``.fit``,
        ``.fts``, ``.ecsv``, ``.csv``, after ``.gz``/``.fz``/``.bz2``).
    """
    name = Path(path).name
    for suf in (".gz", ".fz", ".bz2"):
        if name.lower().endswith(suf):
            name = name[: -len(suf)]
    for suf in (".fits", ".fit", ".fts", ".ecsv", ".csv"):
        if name.lower().endswith(suf):
            return name[: -len(suf)]
    return Path(name).stem



#: the least fraction of a spot's light in its stamp that must fall on the detector when the
#: stamp is cut by the detector's edge: a truncated spot's position rests on the PSF
#: model's shape, and where that differs from the real PSF the fit slides towards the edge
#: (measured: 3 px at 0.77-0.83 of the light, an obscured-Airy spot fitted with the ELT
#: model, stated sigma 0.004 px; ``benchmarks/foreign_fields.py`` family ``rendered``, seed 106)
EDGE_MIN_COVERAGE = 0.9


def stamp_flags(dq: np.ndarray, psf: StampPSF, x: np.ndarray, y: np.ndarray, size: int,
                min_coverage: float = 0.5,
                edge_min_coverage: float = EDGE_MIN_COVERAGE) -> tuple[np.ndarray, np.ndarray]:
    """Flags from the DQ map on each spot's final stamp.

    FLAG_SATURATED where a saturated pixel lies in it, FLAG_LOW_COVERAGE where less than
    ``min_coverage`` of the PSF's light in the stamp falls on valid pixels (a spot mostly
    in a masked area: its position rests on its wings), or less than
    ``edge_min_coverage`` for a stamp cut by the detector's edge
    (:data:`EDGE_MIN_COVERAGE`).

    Parameters
    ----------
    dq : numpy.ndarray
        The frame's DQ map (0 for valid pixels).
    psf : stamp-protocol PSF
        The PSF model the spots were fitted with.
    x, y : numpy.ndarray
        Fitted positions (px, 0-based; NaN for failed fits).
    size : int
        Stamp side (px).
    min_coverage : float
        Least fraction of the stamp's PSF light on valid pixels.
    edge_min_coverage : float
        The same for a stamp cut by the detector's edge (the larger of the two applies).

    Returns
    -------
    flags : numpy.ndarray of int64
        The flag bits per spot.
    coverage : numpy.ndarray
        The fraction of the stamp's PSF light on valid pixels (NaN for failed fits).
    """
    ny, nx = dq.shape
    h = size // 2
    ok = np.isfinite(x) & np.isfinite(y)
    flags = np.zeros(x.size, np.int64)
    coverage = np.full(x.size, np.nan)
    if not np.any(ok):
        return flags, coverage
    xs, ys = x[ok], y[ok]
    x0 = np.rint(xs).astype(np.int64) - h
    y0 = np.rint(ys).astype(np.int64) - h
    ar = np.arange(size)
    rows = y0[:, None] + ar[None, :]
    cols = x0[:, None] + ar[None, :]
    inside = (((rows >= 0) & (rows < ny))[:, :, None] & ((cols >= 0) & (cols < nx))[:, None, :])
    st = dq[np.clip(rows, 0, ny - 1)[:, :, None], np.clip(cols, 0, nx - 1)[:, None, :]]
    sat = np.any(((st & DQ_SATURATED) != 0) & inside, axis=(1, 2))
    model = psf.stamps(xs, ys, x0, y0, size)
    valid = inside & (st == 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        cov = (model * valid).sum(axis=(1, 2)) / model.sum(axis=(1, 2))
    idx = np.flatnonzero(ok)
    flags[idx[sat]] |= FLAG_SATURATED
    cut = ~np.all(inside, axis=(1, 2))  # the stamp crosses the detector's edge
    flags[idx[~(cov >= np.where(cut, max(min_coverage, edge_min_coverage), min_coverage))]] |= FLAG_LOW_COVERAGE
    coverage[idx] = cov
    return flags, coverage


def stamp_cosmic_rays(reduced: ReducedFrame, res: CentroidResult, psf: StampPSF,
                      nsig: float = 5.0, model_error: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Cosmic-ray hits on the stamps of fitted spots, from the fit's residuals.

    A pixel is a hit when its residual ``r = d - m`` (data minus the fitted spot) is above
    ``nsig`` sigma and the residual's discrete Laplacian ``4 r - (4 neighbours)`` is above
    ``nsig`` times its noise plus ``model_error`` times the model's own Laplacian (an
    allowance for PSF-model errors at the core).  This catches hits on bright cores that
    the frame-level test (which must allow for the sharpest PSF structure anywhere) lets
    pass.  No hit is taken within 2 FWHM of another spot (whose core the model lacks).

    Parameters
    ----------
    reduced : ReducedFrame
        The reduced frame (data, DQ, background variance, gain).
    res : CentroidResult
        The fit of its spots.
    psf : stamp-protocol PSF
        The PSF model of the fit.
    nsig : float
        Threshold (sigma) of the residual and of its Laplacian.
    model_error : float
        Fraction of the model's Laplacian allowed for PSF-model errors.

    Returns
    -------
    iy, ix : numpy.ndarray of int64
        Rows and columns of the hits (unique).
    """
    size = int(res.meta["stamp_size"])
    h = size // 2
    ok = np.isfinite(res.x) & np.isfinite(res.y) & ((res.flags & FLAG_BAD_FIT) == 0)
    if not np.any(ok):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    x, y = res.x[ok], res.y[ok]
    x0 = np.rint(x).astype(np.int64) - h
    y0 = np.rint(y).astype(np.int64) - h
    ny, nx = reduced.data.shape
    ar = np.arange(size)
    rows = y0[:, None] + ar[None, :]
    cols = x0[:, None] + ar[None, :]
    inside = (((rows >= 0) & (rows < ny))[:, :, None] & ((cols >= 0) & (cols < nx))[:, None, :])
    rr = np.clip(rows, 0, ny - 1)[:, :, None]
    cc = np.clip(cols, 0, nx - 1)[:, None, :]
    d = reduced.data[rr, cc].astype(float)
    valid = inside & (reduced.dq[rr, cc] == 0)
    m = res.flux[ok][:, None, None] * psf.stamps(x, y, x0, y0, size) + res.background[ok][:, None, None]
    var = reduced.bkgvar[rr, cc] + np.maximum(m, 0) / reduced.params.gain_eff
    r = np.where(valid, d - m, np.nan)

    def lap(a):
        return (4 * a[:, 1:-1, 1:-1] - a[:, :-2, 1:-1] - a[:, 2:, 1:-1] - a[:, 1:-1, :-2]
                - a[:, 1:-1, 2:])

    sd = np.sqrt(var[:, 1:-1, 1:-1])
    with np.errstate(invalid="ignore"):
        hit = ((r[:, 1:-1, 1:-1] > nsig * sd)
               & (lap(r) > nsig * math.sqrt(20.0) * sd + model_error * np.abs(lap(m))))
    k, j, i = np.nonzero(hit)
    if k.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    iy = y0[k] + j + 1
    ix = x0[k] + i + 1
    # the core of another spot inside the stamp is not in the model: no hit within 2 FWHM
    # of another spot
    if x.size > 1:
        fwhm = psf.fwhm() if hasattr(psf, "fwhm") else 3.0
        dist, near = cKDTree(np.column_stack([x, y])).query(np.column_stack([ix, iy]), k=2)
        other = np.where(near[:, 0] == k, dist[:, 1], dist[:, 0])
        keep = other > 2.0 * fwhm
        iy, ix = iy[keep], ix[keep]
        if iy.size == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
    flat = np.unique(iy * nx + ix)
    return flat // nx, flat % nx


def fit_frame_spots(reduced: ReducedFrame, x: np.ndarray, y: np.ndarray, psf: StampPSF,
                    stamp_size: int | None = None, cosmic_rays: bool = True,
                    max_rounds: int = 2) -> CentroidResult:
    """Fit the spots of a reduced frame.

    Cosmic-ray hits found in the residuals (:func:`stamp_cosmic_rays`) are masked
    (DQ_COSMIC, in ``reduced.dq``, whose ``meta`` counts them) and the spots refitted;
    each final stamp is then checked against the DQ map (:func:`stamp_flags`).

    Parameters
    ----------
    reduced : ReducedFrame
        The reduced frame (its DQ map and meta are updated).
    x, y : numpy.ndarray
        First guesses (px, 0-based).
    psf : stamp-protocol PSF
        The PSF model.
    stamp_size : odd int or None
        Fitting box (px); default ``psf.default_stamp_size()``.
    cosmic_rays : bool
        Look for cosmic-ray hits in the residuals.
    max_rounds : int
        At most this many refits after hits were found.

    Returns
    -------
    CentroidResult
        The final fit, its flags including those of :func:`stamp_flags`; ``meta``:
        ``coverage`` and ``n_cosmic_ray_pixels_on_spots``.
    """
    image = np.asarray(reduced.data, dtype=float)
    noise = reduced.noise_model(dtype=float)
    n_hits = 0
    for _ in range(max_rounds + 1):
        res = fit_centroids(image, x, y, psf, noise=noise, mask=reduced.mask,
                              stamp_size=stamp_size)
        if not cosmic_rays:
            break
        iy, ix = stamp_cosmic_rays(reduced, res, psf)
        if iy.size == 0:
            break
        reduced.dq[iy, ix] |= DQ_COSMIC
        n_hits += iy.size
    size = res.meta["stamp_size"]
    flags, coverage = stamp_flags(reduced.dq, psf, res.x, res.y, size)
    res.flags = res.flags | flags
    res.meta["coverage"] = coverage
    res.meta["n_cosmic_ray_pixels_on_spots"] = n_hits
    if n_hits:
        reduced.meta["n_cosmic_ray_pixels"] = int(reduced.meta.get("n_cosmic_ray_pixels") or 0) + n_hits
        reduced.meta["n_masked_pixels"] = int(np.count_nonzero(reduced.dq))
    return res


def header_rules(rules: HeaderRules | str | None | Any) -> HeaderRules:
    """The header rules a campaign or a caller gives.

    Parameters
    ----------
    rules : HeaderRules or str or None or astrocal.campaign.InstrumentSpec
        Rules (returned as they are), a preset key (str) or None (the generic FITS
        keywords), or a campaign's :class:`~astrocal.campaign.InstrumentSpec` (typed
        ``Any``: the image package does not import the campaign, which imports it).

    Returns
    -------
    HeaderRules
    """
    if isinstance(rules, HeaderRules):
        return rules
    if rules is None or isinstance(rules, str):
        return HeaderRules.for_instrument(rules)
    return HeaderRules.from_campaign(rules)


#: provenance labels that are the header's own values (no note)
_NOTE_ENTRIES = {"gain": ("gain", "e-/ADU"), "read_noise": ("read noise", "e-"),
                 "exptime": ("exposure time", "s")}


def frame_meta(header: fits.Header, path: str | os.PathLike,
               rules: HeaderRules | str | None | Any) -> tuple[ExposureMeta, str | None]:
    """Exposure metadata of a frame's header read with the campaign's header rules.

    Parameters
    ----------
    header : astropy.io.fits.Header
        The frame's header.
    path : str or os.PathLike
        The frame's file (named in errors).
    rules : HeaderRules or str or None or astrocal.campaign.InstrumentSpec
        As :func:`header_rules` takes them: the instrument's keyword map, the generic FITS
        set, the campaign's mapping and defaults.

    Returns
    -------
    meta : ExposureMeta
        The metadata.
    note : str or None
        Names the values (gain, read noise, exposure time) that did not come from the
        header; None if all did.

    Raises
    ------
    HeaderError
        Naming the file and the campaign key that would supply a missing value.
    """
    meta = header_rules(rules).read(header, str(path))
    notes = []
    for entry, (label, unit) in _NOTE_ENTRIES.items():
        where = meta.provenance.get(entry, "")
        if where and not where.startswith("header") and not where.startswith("dit x ndit (header"):
            value = {"gain": meta.gain_e_per_adu, "read_noise": meta.read_noise_e,
                     "exptime": float(meta.exptime.to_value(u.s))}[entry]
            notes.append(f"{label} {value:g} {unit} from {where}")
    return meta, ("not in the header: " + "; ".join(notes)) if notes else None


def dataset_calibration(background: str | os.PathLike | None, flat: str | os.PathLike | None,
                        rules: HeaderRules | str | None | Any,
                        flat_normalised: bool | None = None) -> Calibration:
    """The calibration of a dataset's background and flat frames.

    Their headers are read with the raw frames' rules (:func:`frame_meta`).  Errors name
    the file.

    Parameters
    ----------
    background, flat : str or os.PathLike or None
        The FITS files (either may be None).
    rules : HeaderRules or str or None or astrocal.campaign.InstrumentSpec
        As :func:`header_rules` takes them.
    flat_normalised : bool or None
        True/False as the campaign states, None to detect from the flat's median
        (:func:`~astrocal.image.reduce.load_calibration`).

    Returns
    -------
    Calibration
        :func:`~astrocal.image.reduce.load_calibration` of the frames.
    """
    rules = header_rules(rules)
    return load_calibration(background, flat, instrument=rules.instrument,
                            frame_meta=lambda header, path: frame_meta(header, path, rules)[0],
                            flat_normalised=flat_normalised)
