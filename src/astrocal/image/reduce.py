"""Reduction of raw lab frames: background, flat field, bad pixels, cosmic rays.

A raw frame ``R`` (ADU, the average of NDIT DITs, the ESO convention) becomes

    S = (R - k B) / F            k = DIT(frame) / DIT(background)

with ``B`` the campaign's background frame (black-body shutter closed: thermal background
plus dark current, at the same readout), ``k`` its scaling to the frame's DIT (both are
averages of DITs, so the level scales with the DIT, not with DIT x NDIT; a bias is not
modelled) and ``F`` the flat normalised to median 1.  Each piece is optional.  The flat is
either in counts (a lamp frame, median >= 50 ADU; its own noise enters ``relvar(F)``) or
already normalised (a relative gain map, median ~1; its noise unknown, not modelled):
stated by the campaign (``flat_normalised``) or detected (:func:`flat_normalisation`).

Every reduced frame carries a data-quality map (bits ``DQ_*``) and the variance of its
noise *without the Poisson noise of the sources* (``bkgvar``, ADU^2), which the PSF fit
adds from its model (:class:`astrocal.image.centroid.NoiseModel`, model-based weights):

    bkgvar = [ RON_f^2 / g_f^2 + k B / g_f  +  k^2 (B / g_B + RON_B^2 / g_B^2) ] / F^2
             + S_+^2 * relvar(F)

with ``g = gain x NDIT`` and ``RON = read noise x sqrt(NDIT)`` the effective gain and read
noise of an average of NDIT DITs (frame ``f`` and background ``B``): the read noise and
the Poisson noise of the background subtracted from the frame, the noise of the background
frame itself (it is subtracted pixel by pixel, so its noise stays), and the noise of the
flat (relative variance ``relvar(F)``) multiplying the signal.  The source Poisson term
``S / g_f`` is the fitter's (it divides the model by the effective gain of the frame, i.e.
it neglects the flat's ~1-3 % change of the gain per pixel).

Bad pixels (:func:`load_calibration`, once per dataset):

* ``DQ_DEAD``: flat response below ``dead_below`` (0.5) or above ``hot_above`` (1.5) times
  the median, or a background pixel far (``nsig``) below its expectation while the
  background is well above its noise (a pixel that collects no thermal light);
* ``DQ_HOT``: background pixel more than ``nsig`` (6) sigma above its expectation (the
  smooth background level times the flat);
* ``DQ_NONFINITE``: NaN/inf in the frame, the background or the flat.

Per frame (:func:`reduce_frame`):

* ``DQ_SATURATED``: raw pixels at the saturation level (full well / gain, from the header
  and the readout mode; without a full well, a plateau of pixels at the frame's maximum,
  :func:`plateau_level`);
* ``DQ_COSMIC``: cosmic-ray hits (:func:`detect_cosmic_rays`): a pixel is a hit when its
  discrete Laplacian ``L = 4 c - (sum of the 4 neighbours)`` is significant *and* sharper
  than anything the diffraction-limited PSF can make: ``L - R c`` above ``nsig`` sigma,
  where ``R`` is the largest ratio ``L / c`` of the pixel-integrated PSF model over all
  sub-pixel phases (1.5 in L band with IMG_LM, 0.6 in N band with IMG_N) times a margin
  of 1.2.  Hits are replaced by the median of their clean 5 x 5 neighbourhood and the test
  repeated (up to 3 times) to catch the neighbours of multi-pixel tracks, as L.A.Cosmic
  (van Dokkum 2001) does.  Spots are well sampled (FWHM 3.7 px in L), a cosmic ray lands
  on one or two pixels: the test separates them even on the core of a spot.

Without a background and a flat frame, pixels far below the frame's own local level are
``DQ_DEAD`` (the reference-pixel border, dead pixels).  Pixels with any DQ bit are
excluded from the centroid fits.

Noise check (:func:`excess_variance`): the pixel-to-pixel scatter of the reduced frame is
compared with ``bkgvar``; an excess above 20 % in variance (an uncorrected flat-field
pattern, a wrong gain or read noise in the header) is added to ``bkgvar`` before the
cosmic-ray test and the fits.  Without a flat, the relative pixel-to-pixel gain scatter
estimated from the background frame's excess scatter takes the place of ``relvar(F)``.

Arrays are float32; the full-frame temporaries are float32 as well.

Products (:func:`write_reduced`): a FITS file with the raw header and provenance in the
primary HDU, and extensions ``SCI`` (float32, ADU per DIT), ``DQ`` (uint8) and ``BKGVAR``
(float32, ADU^2).  :func:`read_reduced` reads it back.
"""
from __future__ import annotations

import logging
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from astropy.io import fits
from numpy.typing import ArrayLike, DTypeLike

from .. import __version__
from ..atomic import atomic_path
from ..errors import AstrocalError
from ..instruments import Instrument, get_instrument
from .centroid import NoiseModel
from .headers import ExposureMeta, HeaderError, read_exposure_meta
from .psf import StampPSF

__all__ = [
    "DQ_DEAD",
    "DQ_HOT",
    "DQ_NONFINITE",
    "DQ_COSMIC",
    "DQ_SATURATED",
    "DQ_NAMES",
    "ReductionError",
    "DetectorParams",
    "Calibration",
    "ReducedFrame",
    "detector_params",
    "read_frame",
    "load_calibration",
    "flat_normalisation",
    "reduce_frame",
    "detect_cosmic_rays",
    "psf_sharpness",
    "excess_variance",
    "block_level",
    "write_reduced",
    "read_reduced",
]

log = logging.getLogger(__name__)

#: dead (low or abnormal flat response, no thermal signal in the background frame)
DQ_DEAD = 1
#: hot (background/dark far above its expectation)
DQ_HOT = 2
#: NaN or inf in the frame, the background or the flat
DQ_NONFINITE = 4
#: cosmic-ray hit
DQ_COSMIC = 8
#: at the saturation level in the raw frame
DQ_SATURATED = 16

DQ_NAMES = {DQ_DEAD: "dead", DQ_HOT: "hot", DQ_NONFINITE: "nonfinite", DQ_COSMIC: "cosmic_ray",
            DQ_SATURATED: "saturated"}


class ReductionError(AstrocalError, ValueError):
    """A frame or calibration cannot be reduced (the message names the file)."""


# =========================================================================== detector
@dataclass(frozen=True)
class DetectorParams:
    """Readout of one frame: what the noise model and the saturation test need.

    ``gain`` e-/ADU and ``read_noise`` e- per DIT; the frame is the *average* of ``ndit``
    DITs of ``dit`` seconds; ``saturation_adu`` the raw level (ADU) at which a pixel is
    saturated (None: not tested).
    """

    gain: float
    read_noise: float
    dit: float
    ndit: int = 1
    saturation_adu: float | None = None

    @property
    def gain_eff(self) -> float:
        """e- per ADU of the averaged frame summed over the DITs: ``gain * ndit``."""
        return self.gain * self.ndit

    @property
    def read_noise_eff(self) -> float:
        """Read noise of the sum of the DITs, e-: ``read_noise * sqrt(ndit)``."""
        return self.read_noise * math.sqrt(self.ndit)

    @property
    def read_var_adu(self) -> float:
        """Read-noise variance of the averaged frame, ADU^2."""
        return (self.read_noise_eff / self.gain_eff) ** 2

    def to_dict(self) -> dict:
        """Plain description (for products' metadata).

        Returns
        -------
        dict
            ``gain_e_per_adu``, ``read_noise_e``, ``dit_s``, ``ndit``, ``saturation_adu``.
        """
        return dict(gain_e_per_adu=self.gain, read_noise_e=self.read_noise, dit_s=self.dit,
                    ndit=self.ndit, saturation_adu=self.saturation_adu)


def detector_params(meta: ExposureMeta, instrument: str | Instrument | None = None,
                    source: str = "<frame>") -> DetectorParams:
    """The readout of a frame from its exposure metadata.

    Gain and read noise come from the header (``DET CHIP GAIN``/``RON``) or else from the
    readout mode of the instrument (the header's ``DET MODE`` or the default mode); the
    full well from the instrument's mode.  Saturation = full well / gain (no bias).

    Parameters
    ----------
    meta : ExposureMeta
        The frame's metadata; its ``instrument`` takes precedence.
    instrument : str or Instrument or None
        Registry key or instrument, when ``meta`` names none.
    source : str
        The frame's name in messages.

    Returns
    -------
    DetectorParams
    """
    inst = None
    key = getattr(meta, "instrument", None) or instrument
    if key is not None:
        try:
            inst = get_instrument(key) if isinstance(key, str) else key
        except (KeyError, ValueError):
            inst = None
    mode = None
    if inst is not None:
        try:
            mode = inst.detector.mode(meta.detector_mode)
        except KeyError:
            mode = inst.detector.mode(None)
    gain = meta.gain_e_per_adu if meta.gain_e_per_adu is not None else (
        mode.gain_e_per_adu if mode is not None else None)
    ron = meta.read_noise_e if meta.read_noise_e is not None else (
        mode.read_noise_e if mode is not None else None)
    if gain is None or not gain > 0:
        raise ReductionError(f"{source}: no detector gain (header keyword DET CHIP GAIN or a "
                             "known instrument and readout mode)")
    if ron is None or ron < 0:
        raise ReductionError(f"{source}: no read noise (header keyword DET CHIP RON or a known "
                             "instrument and readout mode)")
    dit = float(meta.dit.to_value("s"))
    sat = None
    if mode is not None and mode.full_well_e:
        level = mode.full_well_e / gain
        sigma = ron / gain / math.sqrt(max(int(meta.ndit), 1))
        sat = level * (1.0 - 1e-3) - 5.0 * sigma
    return DetectorParams(gain=float(gain), read_noise=float(ron), dit=dit, ndit=int(meta.ndit),
                          saturation_adu=sat)


def read_frame(path: str | os.PathLike, what: str = "frame") -> tuple[np.ndarray, fits.Header]:
    """The 2-D image (native float32) and header of a FITS file.

    The image is the primary HDU's, or that of the first image extension (``SCI`` if
    present).

    Parameters
    ----------
    path : str or os.PathLike
        The FITS file.
    what : str
        What the file is, in messages (``"frame"``, ``"background"``, ``"flat"``).

    Returns
    -------
    data : numpy.ndarray
        The image (float32, native byte order, a copy).
    header : astropy.io.fits.Header
        The primary header, with the image extension's keywords it lacks.

    Raises
    ------
    FileNotFoundError
        If the file is missing.
    ReductionError
        Naming the file, if it holds no 2-D image, is truncated or cannot be read.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        with fits.open(path, memmap=False) as hdul:
            hdu = None
            if "SCI" in hdul:
                hdu = hdul["SCI"]
            else:
                for h in hdul:  # from the header: a truncated file's data cannot be read
                    if h.is_image and h.header.get("NAXIS", 0) == 2:
                        hdu = h
                        break
            if hdu is None:
                raise ReductionError(f"{path}: no 2-D image in the file ({what})")
            _check_complete(path, hdul, hdu, what)
            try:
                raw = hdu.data
            except (ValueError, EOFError, OSError) as exc:  # e.g. "cannot reshape array of size ..."
                raise ReductionError(f"{path}: the image data cannot be read ({what}): {exc}; "
                                     "a truncated or damaged file?") from exc
            if raw is None or raw.ndim != 2:
                raise ReductionError(f"{path}: no 2-D image in the file ({what})")
            data = np.asarray(raw, dtype=np.float32)  # native byte order, a copy
            header = hdul[0].header.copy()
            if hdu is not hdul[0]:
                header.update({k: v for k, v in hdu.header.items()
                               if k not in header and k not in ("XTENSION", "PCOUNT", "GCOUNT",
                                                                "EXTNAME", "NAXIS", "NAXIS1",
                                                                "NAXIS2", "BITPIX")})
    except OSError as exc:
        raise ReductionError(f"{path}: cannot read as FITS ({what}): {exc}") from exc
    return data, header


def _check_complete(path, hdul, hdu, what):
    """Refuse a FITS file that ends before the image data its header announces (a copy or
    transfer cut short), naming the file and the expected and actual sizes in bytes.
    Compressed files (gzip, tile compression) are checked when their data are read."""
    if hdu.header.get("NAXIS", 0) != 2 or isinstance(hdu, fits.CompImageHDU):
        return
    info = hdul.fileinfo(hdul.index(hdu))
    fileobj = info.get("file") if info else None
    if fileobj is None or getattr(fileobj, "compression", None):
        return
    nbytes = abs(int(hdu.header["BITPIX"])) // 8 * int(hdu.header["NAXIS1"]) * int(hdu.header["NAXIS2"])
    need = int(info["datLoc"]) + nbytes
    actual = Path(path).stat().st_size
    if actual < need:
        raise ReductionError(
            f"{path}: truncated FITS file ({what}): {actual} bytes, but its header announces a "
            f"{hdu.header['NAXIS2']} x {hdu.header['NAXIS1']} image (BITPIX {hdu.header['BITPIX']}) "
            f"ending at byte {need} ({need - actual} bytes missing); copy the file again")


# =========================================================================== helpers
def block_level(image: np.ndarray, bad: np.ndarray | None = None, block: int = 64,
                step: int = 4) -> np.ndarray:
    """Smooth level of an image: block medians, bilinearly interpolated.

    Blocks without any good pixel take the value of the nearest block with some.

    Parameters
    ----------
    image : numpy.ndarray
        2-D image.
    bad : numpy.ndarray of bool or None
        Pixels left out.
    block : int
        Block side (px).
    step : int
        Each block is sampled every ``step`` px.

    Returns
    -------
    numpy.ndarray
        The level (float32, same shape).
    """
    ny, nx = image.shape
    by, bx = -(-ny // block), -(-nx // block)
    work = np.full((by * block, bx * block), np.nan, dtype=np.float32)
    work[:ny, :nx] = image
    if bad is not None:
        work[:ny, :nx][bad] = np.nan
    sub = work[step // 2::step, step // 2::step]
    k = block // step
    sub = sub.reshape(by, k, bx, k).transpose(0, 2, 1, 3).reshape(by * bx, k * k)
    # median of the finite values of each block: sort (NaN last) and pick the middle
    sub = np.sort(sub, axis=1)
    n = np.count_nonzero(np.isfinite(sub), axis=1)
    rows = np.arange(sub.shape[0])
    lo = sub[rows, np.maximum((n - 1) // 2, 0)]
    hi = sub[rows, np.maximum(n // 2, 0)]
    med = np.where(n > 0, 0.5 * (lo + hi), np.nan).reshape(by, bx)
    empty = ~np.isfinite(med)
    if empty.all():
        med = np.zeros_like(med)
    elif empty.any():
        # blocks without a good pixel (e.g. the reference-pixel border) take the value of
        # the nearest block that has some
        from scipy import ndimage

        idx = ndimage.distance_transform_edt(empty, return_distances=False, return_indices=True)
        med = med[tuple(idx)]
    med = med.astype(np.float32)
    # bilinear interpolation between block centres, as a product of two small
    # interpolation matrices (ny, by) @ (by, bx) @ (bx, nx)
    return (_interp_matrix(ny, block, by) @ med @ _interp_matrix(nx, block, bx).T).astype(
        np.float32, copy=False)


def _interp_matrix(n, block, nb):
    """(n, nb) linear-interpolation weights from block centres to pixel centres."""
    c = (np.arange(n, dtype=np.float64) + 0.5) / block - 0.5
    c = np.clip(c, 0, nb - 1)
    i0 = np.minimum(np.floor(c).astype(int), max(nb - 2, 0))
    t = c - i0
    m = np.zeros((n, nb), dtype=np.float32)
    rows = np.arange(n)
    m[rows, i0] += (1 - t).astype(np.float32)
    m[rows, np.minimum(i0 + 1, nb - 1)] += t.astype(np.float32)
    return m


def _robust_sigma(values):
    v = values[np.isfinite(values)]
    if v.size == 0:
        return float("nan")
    med = np.median(v)
    return float(1.4826 * np.median(np.abs(v - med)))


# =========================================================================== calibration
@dataclass(eq=False)
class Calibration:
    """Background, flat and bad pixels of one dataset (see the module docstring).

    ``background`` (ADU, per DIT of ``background_params.dit``) and ``flat`` (normalised
    to median 1, bad pixels set to 1) are float32 maps or None; ``flat_relvar`` the
    relative variance of the flat (or None); ``dq`` the static data-quality map (uint8).
    ``shape`` is the detector shape; ``meta`` the provenance (files, thresholds, counts).
    """

    shape: tuple
    dq: np.ndarray
    background: np.ndarray | None = None
    background_params: DetectorParams | None = None
    flat: np.ndarray | None = None
    flat_relvar: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    @property
    def n_bad(self) -> int:
        """Number of pixels with a bit in the static DQ map."""
        return int(np.count_nonzero(self.dq))


#: a flat whose median (of its illuminated pixels) lies in this range is a relative gain
#: map normalised to ~1; one whose median is at least FLAT_COUNTS_MIN_ADU is in counts
FLAT_NORMALISED_RANGE = (0.1, 10.0)
#: the least median (ADU) of a flat in counts (a lamp flat: hundreds to tens of thousands)
FLAT_COUNTS_MIN_ADU = 50.0


def flat_normalisation(median: float, source: str = "<flat>") -> bool:
    """Whether a flat of this median (illuminated pixels) is normalised.

    Parameters
    ----------
    median : float
        The flat's median over its illuminated pixels.
    source : str
        The flat's file, in messages.

    Returns
    -------
    bool
        True for a median in :data:`FLAT_NORMALISED_RANGE` (a relative gain map, median
        ~0.5-2), False for one of at least :data:`FLAT_COUNTS_MIN_ADU` (counts: a lamp flat
        has hundreds to tens of thousands of ADU).

    Raises
    ------
    ReductionError
        In between (the flat is ambiguous), naming the file and the campaign key that
        states it (``flat_normalised``).
    """
    lo, hi = FLAT_NORMALISED_RANGE
    if lo <= median <= hi:
        return True
    if median >= FLAT_COUNTS_MIN_ADU:
        return False
    raise ReductionError(
        f"{source}: flat median {median:.4g}: neither a normalised flat (median {lo:g}-{hi:g}) "
        f"nor one in counts (median >= {FLAT_COUNTS_MIN_ADU:g} ADU); state it with the "
        "dataset's flat_normalised = true or false")


def load_calibration(background: str | os.PathLike | ArrayLike | None = None,
                     flat: str | os.PathLike | ArrayLike | None = None, *,
                     shape: tuple[int, int] | None = None,
                     instrument: str | Instrument | None = None,
                     background_params: DetectorParams | None = None,
                     flat_params: DetectorParams | None = None, nsig: float = 6.0,
                     dead_below: float = 0.5, hot_above: float = 1.5, block: int = 64,
                     frame_meta: Callable[[fits.Header, Any], ExposureMeta] | None = None,
                     flat_normalised: bool | None = None) -> Calibration:
    """Build the :class:`Calibration` of a dataset from its background and flat frames.

    The flat is divided by its median either way; only a flat in counts has a noise that
    is known (its Poisson and read noise, ``flat_relvar``, from its header's readout), and
    only its header is read.  A normalised flat's own noise is unknown and not modelled
    (``meta['flat_noise']``).

    Parameters
    ----------
    background, flat : str or os.PathLike or array_like or None
        FITS paths (their headers give the readout, see :func:`detector_params`) or arrays
        (then ``background_params`` / ``flat_params`` give it); either may be None.
    shape : tuple of int or None
        The detector shape; needed when both frames are None.
    instrument : str or Instrument or None
        Registry key: supplies readout defaults missing from the headers.
    background_params, flat_params : DetectorParams or None
        The readout of a frame given as an array.
    nsig : float
        Threshold (sigma) of the background's hot and cold pixels.
    dead_below, hot_above : float
        Flat pixels below / above these fractions of its median are dead.
    block : int
        Block size (px) of the background's smooth level.
    frame_meta : callable or None
        ``frame_meta(header, path)`` reads a frame's exposure metadata from its header
        (default: the METIS/ESO keywords, :func:`astrocal.image.headers.read_exposure_meta`;
        the measure stage passes its rule for raw frames,
        :class:`~astrocal.image.headers.HeaderRules`).
    flat_normalised : bool or None
        Whether the flat is a relative gain map normalised to ~1 (True) or a frame in
        counts (False); None: detected from its median (:func:`flat_normalisation`).

    Returns
    -------
    Calibration
        ``meta``: the files, thresholds and counts of bad pixels.

    Raises
    ------
    ReductionError
        Naming the file: frames of different shapes or not 2-D, a flat without a positive
        pixel, a background whose readout is unknown, an unreadable header.
    """
    meta = {"background": None, "flat": None, "nsig": nsig, "dead_below": dead_below,
            "hot_above": hot_above}

    def readout(src, header, what):
        return _frame_readout(src, header, what, frame_meta, instrument)

    bg, bg_header = _read_calibration_frame(background, "background", meta)
    bgp = background_params
    if bg is not None and bgp is None and bg_header is not None:
        bgp = readout(background, bg_header, "background")
    fl, fl_header = _read_calibration_frame(flat, "flat", meta)
    shapes = {a.shape for a in (bg, fl) if a is not None}
    if len(shapes) > 1:
        raise ReductionError(f"background {meta['background']} and flat {meta['flat']} differ in "
                             f"shape: {sorted(shapes)}")
    if shapes:
        shape = shapes.pop()
    if shape is None:
        raise ValueError("load_calibration: give a background, a flat or the shape")
    shape = tuple(int(v) for v in shape)
    if shape and len(shape) != 2:
        raise ReductionError(f"calibration frames must be 2-D, got shape {shape}")
    dq = np.zeros(shape, dtype=np.uint8)

    flat_n = relvar = None
    if fl is not None:
        flat_n, relvar = _calibrate_flat(
            fl, dq, meta, dead_below=dead_below, hot_above=hot_above,
            flat_normalised=flat_normalised,
            flat_readout=lambda: (flat_params if flat_params is not None or fl_header is None
                                  else readout(flat, fl_header, "flat")))
    if bg is not None:
        bg, relvar = _calibrate_background(bg, bgp, flat_n, relvar, dq, meta, nsig=nsig,
                                           block=block)
    meta["n_bad"] = int(np.count_nonzero(dq))
    meta["bad_fraction"] = meta["n_bad"] / float(dq.size) if dq.size else 0.0
    return Calibration(shape=shape, dq=dq, background=bg, background_params=bgp, flat=flat_n,
                       flat_relvar=relvar, meta=meta)


def _read_calibration_frame(src, what, meta):
    """A calibration frame's data (float32) and header (None for an array or None);
    records its origin in ``meta[what]``."""
    if src is None:
        return None, None
    if isinstance(src, (str, Path)):
        data, header = read_frame(src, what)
        meta[what] = str(Path(src))
        return data, header
    meta[what] = "<array>"
    return np.asarray(src, dtype=np.float32), None


def _frame_readout(src, header, what, frame_meta, instrument):
    """The :class:`DetectorParams` of a calibration frame from its header: through
    ``frame_meta(header, path)`` if given, else the METIS/ESO keywords."""
    if frame_meta is not None:
        return detector_params(frame_meta(header, src), instrument, source=str(src))
    try:
        em = read_exposure_meta(header)
    except HeaderError as exc:
        raise ReductionError(f"{src}: {what} header: {str(exc).replace('<header>', str(src))}") from None
    return detector_params(em, instrument, source=str(src))


def _calibrate_flat(fl, dq, meta, *, dead_below, hot_above, flat_normalised, flat_readout):
    """The flat divided by its median and its relative variance (None when its noise is
    unknown); marks its non-finite and dead pixels in ``dq`` and records in ``meta``.
    ``flat_readout()`` gives the flat's readout (called only for a flat in counts)."""
    relvar = None
    bad = ~np.isfinite(fl)
    dq[bad] |= DQ_NONFINITE
    sample = fl[::3, ::3]
    sample = sample[np.isfinite(sample) & (sample > 0)]
    if sample.size == 0:
        raise ReductionError(f"{meta['flat']}: the flat has no positive pixel")
    # median of the illuminated pixels (the reference-pixel border and dead pixels,
    # near zero, left out)
    norm = float(np.median(sample))
    norm = float(np.median(sample[sample > dead_below * norm]))
    if flat_normalised is None:
        normalised = flat_normalisation(norm, meta["flat"])
        meta["flat_normalisation"] = f"detected from its median {norm:.4g}"
    else:
        normalised = bool(flat_normalised)
        meta["flat_normalisation"] = f"stated (flat_normalised = {str(normalised).lower()}); median {norm:.4g}"
    meta["flat_normalised"] = normalised
    flp = None
    if not normalised:
        # a flat in counts: its own Poisson and read noise are known from its readout
        flp = flat_readout()
    flat_n = fl / np.float32(norm)
    dead = ~(flat_n >= dead_below) & ~bad
    weird = (flat_n > hot_above) & ~bad
    dq[dead | weird] |= DQ_DEAD
    if flp is not None:
        # variance of the raw flat (ADU^2) relative to its square
        with np.errstate(divide="ignore", invalid="ignore"):
            relvar = ((np.maximum(fl, 0) / np.float32(flp.gain_eff)
                       + np.float32(flp.read_var_adu)) / (fl * fl)).astype(np.float32)
        meta["flat_noise"] = "Poisson and read noise of the flat in counts (its header's readout)"
    else:
        meta["flat_noise"] = ("unknown (a normalised flat: a relative gain map), not modelled"
                              if normalised else "unknown (no readout given), not modelled")
    flat_n[dq != 0] = 1.0
    if relvar is not None:
        relvar[dq != 0] = 0.0
    meta["flat_median_adu" if not normalised else "flat_median"] = norm
    meta["n_dead_flat"] = int(np.count_nonzero(dead | weird))
    return flat_n, relvar


def _calibrate_background(bg, bgp, flat_n, relvar, dq, meta, *, nsig, block):
    """The background frame with its non-finite pixels set to 0, and the flat's relative
    variance (from the background's excess scatter when there is no flat); marks its
    non-finite, hot and cold pixels in ``dq`` and records in ``meta``."""
    if bgp is None:
        raise ReductionError(f"{meta['background']}: readout of the background frame unknown "
                             "(give background_params)")
    bad = ~np.isfinite(bg)
    dq[bad] |= DQ_NONFINITE
    ratio = bg if flat_n is None else bg / flat_n
    level = block_level(ratio, bad | (dq != 0), block=block)
    expect = level if flat_n is None else level * flat_n
    var = np.maximum(expect, 0) / np.float32(bgp.gain_eff) + np.float32(bgp.read_var_adu)
    resid = bg - expect
    # scatter the noise model lacks (without a flat: the flat's pixel-to-pixel
    # pattern in the thermal background) widens the thresholds
    sample = resid[::3, ::3][(dq[::3, ::3] == 0) & np.isfinite(resid[::3, ::3])]
    if sample.size > 100:
        mad = float(np.median(np.abs(sample - np.median(sample))))
        extra = (1.4826 * mad) ** 2 - float(np.median(var[::3, ::3]))
        if extra > 0.2 * float(np.median(var[::3, ::3])):
            var = var + np.float32(extra)
            meta["background_excess_variance_adu2"] = extra
            level_med = float(np.median(expect[::3, ::3][dq[::3, ::3] == 0]))
            if flat_n is None and level_med > 0:
                # no flat: the excess is the pixel-to-pixel gain pattern in the thermal
                # background; the same relative scatter multiplies the spots
                relvar = np.float32(extra / level_med**2)
                meta["flat_relvar_from_background"] = float(relvar)
    sig = np.sqrt(var)
    del var
    hot = (resid > nsig * sig) & ~bad
    cold = (resid < -nsig * sig) & (expect > nsig * sig) & ~bad
    dq[hot] |= DQ_HOT
    dq[cold] |= DQ_DEAD
    meta["n_hot_background"] = int(np.count_nonzero(hot))
    meta["n_dead_background"] = int(np.count_nonzero(cold))
    meta["background_median_adu"] = float(np.median(level))
    meta["background_dit_s"] = bgp.dit
    bg = np.where(bad, np.float32(0), bg).astype(np.float32, copy=False)
    return bg, relvar


# =========================================================================== cosmic rays
def _sharpness(psf):
    size = 2 * int(min(psf.half_width - 2, 20)) + 1
    h = size // 2
    rng = np.random.default_rng(0)
    ph = np.concatenate([np.array([[0.0, 0.0], [0.5, 0.5], [0.5, 0.0], [0.0, 0.5]]),
                         rng.uniform(-0.5, 0.5, (28, 2))])
    x, y = ph[:, 0], ph[:, 1]
    st = psf.stamps(x, y, np.full(len(x), -h), np.full(len(x), -h), size)
    c = st[:, 1:-1, 1:-1]
    lap = 4 * c - st[:, :-2, 1:-1] - st[:, 2:, 1:-1] - st[:, 1:-1, :-2] - st[:, 1:-1, 2:]
    peak = st.max(axis=(1, 2))[:, None, None]
    ok = c > 1e-4 * peak
    return float(np.max(lap[ok] / c[ok]))


def psf_sharpness(psf: StampPSF) -> float:
    """The sharpness of a pixel-integrated PSF, as the cosmic-ray test takes it.

    The largest ratio ``L / c`` of the discrete Laplacian ``L = 4 c - sum(neighbours)`` to
    the pixel value ``c``, over sub-pixel phases and over the pixels holding more than
    1e-4 of the peak (cached on the PSF object).  A cosmic ray (one pixel) has ratio 4;
    the L-band pinhole PSF of IMG_LM 1.5, N band 0.6.

    Parameters
    ----------
    psf : stamp-protocol PSF
        The PSF model.

    Returns
    -------
    float
        The ratio.
    """
    cache = getattr(psf, "__dict__", None)
    if cache is None:
        return _sharpness(psf)
    if "_astrocal_sharpness" not in cache:
        cache["_astrocal_sharpness"] = _sharpness(psf)
    return cache["_astrocal_sharpness"]


def _laplacian(w):
    """4 c - (sum of 4 neighbours) on the interior (float32, shape (ny-2, nx-2))."""
    c = w[1:-1, 1:-1]
    out = c * np.float32(4.0)
    out -= w[:-2, 1:-1]
    out -= w[2:, 1:-1]
    out -= w[1:-1, :-2]
    out -= w[1:-1, 2:]
    return out


def _neighbourhood_median(w, flagged, iy, ix, radius=2):
    """Median of the (2r+1)^2 neighbourhood of pixels (iy, ix) without NaN/flagged ones."""
    ny, nx = w.shape
    off = np.arange(-radius, radius + 1)
    yy = iy[:, None, None] + off[None, :, None]
    xx = ix[:, None, None] + off[None, None, :]
    inside = (yy >= 0) & (yy < ny) & (xx >= 0) & (xx < nx)
    yy = np.clip(yy, 0, ny - 1)
    xx = np.clip(xx, 0, nx - 1)
    vals = w[yy, xx].astype(np.float64)
    vals[~inside | flagged[yy, xx]] = np.nan
    vals = vals.reshape(len(iy), -1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(vals, axis=1)


def detect_cosmic_rays(image: ArrayLike, variance: ArrayLike, bad: np.ndarray | None = None, *,
                       sharpness: float = 2.0, margin: float = 1.2, nsig: float = 5.0,
                       max_iter: int = 3) -> np.ndarray:
    """Cosmic-ray hits in a (background-subtracted) image.

    A pixel is a hit when both

        L > nsig * sqrt(20 V)             (significant), and
        L - R c > nsig * sqrt(((4 - R)^2 + 4) V)   (sharper than any PSF),

    with ``L = 4 c - (4 neighbours)``, ``V`` its variance and ``R = sharpness * margin``.
    Hits are replaced by the median of their clean 5 x 5 neighbourhood and the test is
    repeated (``max_iter`` times at most) so that the other pixels of a track are found.

    Parameters
    ----------
    image : array_like
        2-D image (ADU).
    variance : array_like
        The total variance of each pixel (ADU^2, sources included).
    bad : numpy.ndarray of bool or None
        Pixels ignored (neither tested nor used as neighbours).
    sharpness : float
        The PSF's largest Laplacian ratio (:func:`psf_sharpness`).
    margin : float
        Factor on ``sharpness`` (the product is capped at 3.5).
    nsig : float
        Threshold (sigma).
    max_iter : int
        Most rounds of the test.

    Returns
    -------
    numpy.ndarray of bool
        The hits (shape of ``image``; the border pixels are never hits).
    """
    img = np.asarray(image, dtype=np.float32)
    ny, nx = img.shape
    hits = np.zeros((ny, nx), bool)
    if ny < 3 or nx < 3:
        return hits
    r = min(float(sharpness) * float(margin), 3.5)
    w = img.copy()
    if bad is not None:
        w[bad] = np.nan
    var = np.asarray(variance, dtype=np.float32)[1:-1, 1:-1]
    sd = np.sqrt(np.maximum(var, 0))
    k1 = np.float32(nsig * math.sqrt(20.0))
    k2 = np.float32(nsig * math.sqrt((4.0 - r) ** 2 + 4.0))
    thr1 = sd * k1
    thr2 = sd * k2
    del sd
    for it in range(int(max_iter)):
        lap = _laplacian(w)
        with np.errstate(invalid="ignore"):
            new = lap > thr1
            lap -= np.float32(r) * w[1:-1, 1:-1]
            new &= lap > thr2
        del lap
        new &= ~hits[1:-1, 1:-1]
        iy, ix = np.nonzero(new)
        if iy.size == 0:
            break
        iy += 1
        ix += 1
        hits[iy, ix] = True
        w[iy, ix] = _neighbourhood_median(w, hits, iy, ix)
    return hits


def _cold_pixels(data, bad, params, nsig=10.0, block=64):
    """Pixels of a raw (not background-subtracted) frame far below the local level: less
    than half of it and ``nsig`` sigma below.  The level is the largest of the block
    medians around (so that a dark border of reference pixels is found whole)."""
    from scipy import ndimage

    ny, nx = data.shape
    lev = block_level(data, bad, block=block)
    by, bx = -(-ny // block), -(-nx // block)
    coarse = lev[np.minimum(np.arange(by) * block + block // 2, ny - 1)][
        :, np.minimum(np.arange(bx) * block + block // 2, nx - 1)]
    top = ndimage.maximum_filter(coarse, size=3, mode="nearest")
    level = np.repeat(np.repeat(top, block, axis=0), block, axis=1)[:ny, :nx]
    sigma = np.sqrt(np.maximum(level, 0) / np.float32(params.gain_eff) + np.float32(params.read_var_adu))
    return (data < 0.5 * level) & (data < level - nsig * sigma) & ~bad


# =========================================================================== frames
@dataclass(eq=False)
class ReducedFrame:
    """A reduced frame: ``data`` (float32 ADU per DIT), ``dq`` (uint8 bits ``DQ_*``),
    ``bkgvar`` (float32 ADU^2: variance without the sources' Poisson noise), the
    :class:`DetectorParams` of the frame and ``meta`` (provenance and counts)."""

    data: np.ndarray
    dq: np.ndarray
    bkgvar: np.ndarray
    params: DetectorParams
    meta: dict = field(default_factory=dict)

    @property
    def mask(self) -> np.ndarray:
        """True for pixels excluded from fits (any DQ bit)."""
        return self.dq != 0

    @property
    def gain_eff(self) -> float:
        """The frame's effective gain (e-/ADU, :attr:`DetectorParams.gain_eff`)."""
        return self.params.gain_eff

    def noise_model(self, dtype: DTypeLike = float) -> NoiseModel:
        """The noise model for the PSF fit.

        Parameters
        ----------
        dtype : data-type
            The type of the extra-variance map.

        Returns
        -------
        NoiseModel
            Effective gain and the ``bkgvar`` map as extra variance (the read noise and
            background are in it).
        """
        return NoiseModel(gain=self.params.gain_eff, read_noise=0.0,
                          extra_variance=np.asarray(self.bkgvar, dtype=dtype))

    def total_variance(self) -> np.ndarray:
        """The variance of each pixel with the sources, for detection tests.

        Returns
        -------
        numpy.ndarray
            ``bkgvar`` plus the data's own Poisson term (float32, ADU^2).
        """
        return self.bkgvar + np.maximum(self.data, 0) / np.float32(self.params.gain_eff)


#: pixels within the read noise of a frame's maximum that make a plateau (clipping)
PLATEAU_MIN_PIXELS = 5


def plateau_level(data: np.ndarray, params: DetectorParams, nsig: float = 5.0,
                  min_pixels: int = PLATEAU_MIN_PIXELS) -> float | None:
    """The saturation level (ADU) of a raw frame clipped at an unknown level, or None.

    A frame clipped by the detector or its converter has patches of adjacent pixels at its
    maximum (within ``nsig`` x the read noise of the average of NDIT DITs, at most 1e-4 of
    the value: a tolerance that a wrong noise model cannot widen); an unclipped frame's
    maximum is one spot's peak, with its neighbours well below.

    Parameters
    ----------
    data : numpy.ndarray
        The raw frame (ADU).
    params : DetectorParams
        Its readout (the read noise).
    nsig : float
        Tolerance in units of the read noise.
    min_pixels : int
        Least number of pixels at the maximum that touch another.

    Returns
    -------
    float or None
        The maximum minus that tolerance when at least ``min_pixels`` such pixels touch
        another (a 4-neighbour), else None.
    """
    finite = np.isfinite(data)
    if not finite.any():
        return None
    top = float(data[finite].max())
    if not top > 0:
        return None
    tol = min(nsig * math.sqrt(params.read_var_adu), 1e-4 * abs(top))
    with np.errstate(invalid="ignore"):
        at = finite & (data >= top - tol)
    if np.count_nonzero(at) < min_pixels:
        return None
    touch = np.zeros_like(at)
    touch[1:, :] |= at[:-1, :]
    touch[:-1, :] |= at[1:, :]
    touch[:, 1:] |= at[:, :-1]
    touch[:, :-1] |= at[:, 1:]
    if np.count_nonzero(at & touch) < min_pixels:
        return None
    return top - tol


def reduce_frame(raw: ArrayLike, calibration: Calibration | None, params: DetectorParams, *,
                 psf: StampPSF | None = None, cosmic_rays: bool = True, cr_nsig: float = 5.0,
                 excess_limit: float = 1.2, source: str = "<frame>") -> ReducedFrame:
    """Reduce one raw frame (see the module docstring).

    Parameters
    ----------
    raw : array_like
        The frame (ADU, average of NDIT DITs).
    calibration : Calibration or None
        The dataset's calibration (None: no background, flat or static bad pixels).
    params : DetectorParams
        The frame's readout.
    psf : stamp-protocol PSF or None
        The PSF model whose sharpness sets the cosmic-ray test (None: ratio 2).
    cosmic_rays : bool
        Look for cosmic-ray hits.
    cr_nsig : float
        Threshold (sigma) of the cosmic-ray test.
    excess_limit : float
        If the frame's pixel-to-pixel variance exceeds the noise model by more than this
        factor (:func:`excess_variance`), the excess is added to ``bkgvar``
        (``meta['noise_check']``).
    source : str
        The frame's name in messages.

    Returns
    -------
    ReducedFrame

    Raises
    ------
    ReductionError
        Naming the frame, if it is not 2-D or its shape differs from the calibration's.
    """
    raw = np.asarray(raw)
    if raw.ndim != 2:
        raise ReductionError(f"{source}: frame is not 2-D (shape {raw.shape})")
    cal = calibration
    if cal is not None and tuple(cal.shape) != raw.shape:
        raise ReductionError(f"{source}: frame shape {raw.shape} differs from the calibration's "
                             f"{tuple(cal.shape)} (background {cal.meta.get('background')}, flat "
                             f"{cal.meta.get('flat')})")
    data = np.array(raw, dtype=np.float32)  # a copy: reduced in place
    dq = np.zeros(raw.shape, np.uint8) if cal is None else cal.dq.copy()
    nonfinite = ~np.isfinite(data)
    dq[nonfinite] |= DQ_NONFINITE
    n_sat, sat_level, sat_source = _mark_saturated(data, dq, params)
    data[nonfinite] = 0.0
    del nonfinite
    bkgvar = np.full(raw.shape, np.float32(params.read_var_adu), dtype=np.float32)
    scale = _apply_calibration(data, bkgvar, cal, params)
    n_cold = 0
    if cal is None or (cal.background is None and cal.flat is None):
        # no calibration frame to find dead pixels (and the reference-pixel border) with:
        # pixels far below the local level of the frame itself are dead
        cold = _cold_pixels(data, dq != 0, params)
        n_cold = int(np.count_nonzero(cold))
        dq[cold] |= DQ_DEAD
        del cold
    bad_static = dq != 0
    # noise the model lacks (no flat: its pixel-to-pixel pattern; a wrong gain or read
    # noise in the header) is measured on the frame and added, before any test uses it
    frame0 = ReducedFrame(data=data, dq=dq, bkgvar=bkgvar, params=params)
    ratio, excess = excess_variance(frame0)
    added = 0.0
    if excess > 0 and ratio > excess_limit:
        bkgvar += np.float32(excess)
        added = excess
    del frame0
    n_cr = 0
    sharp = None
    if cosmic_rays:
        sharp = psf_sharpness(psf) if psf is not None else 2.0
        n_cr = _mark_cosmic_rays(data, dq, bkgvar, bad_static, params,
                                 background_subtracted=scale is not None, sharpness=sharp,
                                 nsig=cr_nsig)
    meta = {
        "source": str(source),
        "background_scale": scale,
        "n_saturated_pixels": n_sat,
        "saturation_level_adu": None if sat_level is None else float(sat_level),
        "saturation_source": sat_source,
        "n_dead_in_frame": n_cold,
        "noise_check": {"measured_over_model": ratio, "added_variance_adu2": added},
        "n_cosmic_ray_pixels": n_cr,
        "n_masked_pixels": int(np.count_nonzero(dq)),
        "psf_sharpness": sharp,
        "cr_nsig": cr_nsig if cosmic_rays else None,
        "detector": params.to_dict(),
    }
    if cal is not None:
        meta["background"] = cal.meta.get("background")
        meta["flat"] = cal.meta.get("flat")
    return ReducedFrame(data=data, dq=dq, bkgvar=bkgvar, params=params, meta=meta)



def _mark_saturated(data, dq, params):
    """Mark the saturated pixels of a raw frame in ``dq``: at the readout mode's full well,
    or (none known) at a plateau at the frame's maximum (:func:`plateau_level`).  Returns
    ``(count, level or None, where the level came from or None)``."""
    n_sat = 0
    sat_level, sat_source = params.saturation_adu, "the readout mode's full well"
    if sat_level is None:  # no full well known: a clipped frame shows a plateau at its maximum
        sat_level = plateau_level(data, params)
        sat_source = "a plateau at the frame's maximum" if sat_level is not None else None
    if sat_level is not None:
        with np.errstate(invalid="ignore"):
            sat = data >= np.float32(sat_level)
        n_sat = int(np.count_nonzero(sat))
        dq[sat] |= DQ_SATURATED
    return n_sat, sat_level, sat_source


def _apply_calibration(data, bkgvar, cal, params):
    """Subtract the scaled background and divide by the flat, in place, adding their noise
    to ``bkgvar`` (see the module docstring).  Returns the background's scale (the DIT
    ratio), None without a background."""
    scale = None
    if cal is not None and cal.background is not None:
        bp = cal.background_params
        scale = params.dit / bp.dit if bp.dit > 0 else 1.0
        if abs(scale - 1.0) < 1e-12:
            data -= cal.background
        else:
            data -= np.float32(scale) * cal.background
        pos = np.maximum(cal.background, 0)
        # Poisson of the background in the frame + noise of the background frame
        bkgvar += pos * np.float32(scale / params.gain_eff + scale**2 / bp.gain_eff)
        bkgvar += np.float32(scale**2 * bp.read_var_adu)
        del pos
    if cal is not None and cal.flat is not None:
        data /= cal.flat
        bkgvar /= cal.flat * cal.flat
    if cal is not None and cal.flat_relvar is not None:
        # the flat's noise (or, without a flat, the uncorrected pixel-to-pixel gain
        # pattern) times the signal
        pos = np.maximum(data, 0)
        pos *= pos
        pos *= cal.flat_relvar
        bkgvar += pos
    return scale


def _mark_cosmic_rays(data, dq, bkgvar, bad_static, params, *, background_subtracted,
                      sharpness, nsig):
    """Mark the cosmic-ray hits of a reduced frame in ``dq`` (:func:`detect_cosmic_rays`
    on the signal above the background, with the total variance); returns their count."""
    total = bkgvar + np.maximum(data, 0) / np.float32(params.gain_eff)
    # the sharpness test compares with the signal above the background
    test = data if background_subtracted else data - block_level(data, bad_static)
    hits = detect_cosmic_rays(test, total, bad_static, sharpness=sharpness, nsig=nsig)
    del test
    del total
    dq[hits] |= DQ_COSMIC
    return int(np.count_nonzero(hits))

def excess_variance(frame: ReducedFrame, step: int = 3) -> tuple[float, float]:
    """Compare the pixel-to-pixel scatter of a reduced frame with its noise model.

    The scatter is measured robustly on differences of horizontally adjacent good pixels
    (``var = (1.4826 MAD)^2 / 2``: smooth structure and the few spot pixels do not count);
    the model is the median of :meth:`ReducedFrame.total_variance`.  An excess means
    noise the model lacks: e.g. the fixed pattern of an uncorrected flat field (no flat
    frame) or a wrong gain or read noise in the header.

    Parameters
    ----------
    frame : ReducedFrame
        The reduced frame.
    step : int
        Every ``step``-th row is used.

    Returns
    -------
    ratio : float
        Measured / model variance (NaN with fewer than 100 pixel pairs or no model).
    excess : float
        The excess (ADU^2, >= 0).
    """
    d = frame.data[::step]
    ok = (frame.dq[::step] == 0)
    pair = ok[:, 1:] & ok[:, :-1]
    diff = (d[:, 1:] - d[:, :-1])[pair]
    if diff.size < 100:
        return float("nan"), 0.0
    mad = float(np.median(np.abs(diff - np.median(diff))))
    measured = (1.4826 * mad) ** 2 / 2.0
    tv = frame.total_variance()[::step][:, :-1][pair]
    model = float(np.median(tv))
    if not model > 0:
        return float("nan"), 0.0
    return measured / model, max(measured - model, 0.0)


# =========================================================================== products
_SKIP_CARDS = {"SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "EXTEND", "BZERO", "BSCALE",
               "BUNIT", "CHECKSUM", "DATASUM"}


def write_reduced(path: str | os.PathLike, frame: ReducedFrame, header: fits.Header | None = None,
                  *, overwrite: bool = False, provenance: dict | None = None) -> Path:
    """Write a :class:`ReducedFrame` as a FITS product.

    Primary HDU: the raw ``header`` (if given) and provenance keywords (``ASTROCAL``
    version, ``RAWFILE``, ``BKGFILE``, ``FLATFILE``, ``BKGSCALE``, noise parameters,
    counts).  Extensions ``SCI``, ``DQ``, ``BKGVAR``.

    Parameters
    ----------
    path : str or os.PathLike
        The product's file (written atomically).
    frame : ReducedFrame
        The reduced frame.
    header : astropy.io.fits.Header or None
        The raw frame's header (its cards but the structural ones are copied).
    overwrite : bool
        Replace an existing file (else it is never overwritten).
    provenance : dict or None
        More keywords, ``{KEY: value or (value, comment)}``.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    prim = fits.PrimaryHDU()
    if header is not None:
        for card in header.cards:
            if card.keyword in _SKIP_CARDS or not card.keyword:
                continue
            try:
                prim.header.append(card.copy() if hasattr(card, "copy") else card)
            except (ValueError, KeyError):
                continue
    h = prim.header
    m = frame.meta
    p = frame.params

    def put(key, value, comment):
        if value is None:
            return
        h[key] = (value, comment)

    put("ASTROCAL", __version__, "astrocal version that reduced the frame")
    put("PROCTYPE", "reduced", "astrocal measure: reduced lab frame")
    put("RAWFILE", Path(m["source"]).name if m.get("source") else None, "raw frame")
    put("BKGFILE", Path(m["background"]).name if m.get("background") else None, "background frame")
    put("FLATFILE", Path(m["flat"]).name if m.get("flat") else None, "flat frame")
    put("BKGSCALE", m.get("background_scale"), "background scale (DIT ratio)")
    put("GAINEFF", float(p.gain_eff), "[e/ADU] gain x NDIT (frame = mean of NDIT)")
    put("RONEFF", float(p.read_noise_eff), "[e] read noise x sqrt(NDIT)")
    put("SATLEVEL", p.saturation_adu, "[ADU] saturation level in the raw frame")
    put("NCOSMIC", m.get("n_cosmic_ray_pixels"), "cosmic-ray pixels masked")
    put("NSATUR", m.get("n_saturated_pixels"), "saturated pixels masked")
    put("NMASKED", m.get("n_masked_pixels"), "pixels with a DQ bit")
    for key, value in (provenance or {}).items():
        if isinstance(value, tuple):
            put(key, value[0], value[1])
        else:
            put(key, value, "")
    for key in ("source", "background", "flat"):
        if m.get(key):
            h.add_history(f"{key}: {m[key]}")
    sci = fits.ImageHDU(np.asarray(frame.data, dtype=np.float32), name="SCI")
    sci.header["BUNIT"] = ("ADU", "per DIT (mean of NDIT DITs)")
    sci.header["COMMENT"] = "(raw - background * BKGSCALE) / normalised flat"
    dq = fits.ImageHDU(np.asarray(frame.dq, dtype=np.uint8), name="DQ")
    for bit, name in DQ_NAMES.items():
        dq.header[f"DQBIT{int(math.log2(bit))}"] = (name, f"bit value {bit}")
    var = fits.ImageHDU(np.asarray(frame.bkgvar, dtype=np.float32), name="BKGVAR")
    var.header["BUNIT"] = ("ADU2", "variance without the sources' Poisson noise")
    with atomic_path(path, overwrite) as tmp:
        fits.HDUList([prim, sci, dq, var]).writeto(tmp)
    return Path(path)


def read_reduced(path: str | os.PathLike) -> tuple[ReducedFrame, fits.Header]:
    """Read a product of :func:`write_reduced` back.

    Parameters
    ----------
    path : str or os.PathLike
        The product's file.

    Returns
    -------
    frame : ReducedFrame
        Its readout from ``GAINEFF``, ``RONEFF``, ``SATLEVEL`` (``dit`` NaN, ``ndit`` 1).
    header : astropy.io.fits.Header
        Its primary header.

    Raises
    ------
    ReductionError
        If an extension (``SCI``, ``DQ``, ``BKGVAR``) is missing.
    """
    path = Path(path)
    with fits.open(path, memmap=False) as hdul:
        for name in ("SCI", "DQ", "BKGVAR"):
            if name not in hdul:
                raise ReductionError(f"{path}: not a reduced frame (no {name} extension)")
        h = hdul[0].header.copy()
        data = np.asarray(hdul["SCI"].data, dtype=np.float32)
        dq = np.asarray(hdul["DQ"].data, dtype=np.uint8)
        var = np.asarray(hdul["BKGVAR"].data, dtype=np.float32)
    gain_eff = float(h.get("GAINEFF", 1.0))
    ron_eff = float(h.get("RONEFF", 0.0))
    params = DetectorParams(gain=gain_eff, read_noise=ron_eff, dit=float("nan"), ndit=1,
                            saturation_adu=h.get("SATLEVEL"))
    meta = {"source": str(path), "background_scale": h.get("BKGSCALE"),
            "n_cosmic_ray_pixels": h.get("NCOSMIC"), "n_saturated_pixels": h.get("NSATUR"),
            "n_masked_pixels": h.get("NMASKED")}
    return ReducedFrame(data=data, dq=dq, bkgvar=var, params=params, meta=meta), h
