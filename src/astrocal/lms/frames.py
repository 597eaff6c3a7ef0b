"""Reading and reducing raw LMS frames (four image extensions ``DET1.DATA`` .. ``DET4.DATA``).

An LMS raw frame (as written by the instrument and by ``astrocal simulate lms``) is a FITS file
with a primary header (``ESO DPR TYPE``, ``ESO INS WLEN CEN``, ``ESO INS OPTI8 ORDER``,
``ESO DET3 DIT/NDIT``, ``ESO SEQ CHOPNOD OFFSCHOP X/Y`` ...) and four 2048 x 2048 image
extensions in ADU, the average of NDIT DITs, each with ``ESO DET3 CHIP GAIN`` [e/ADU],
``ESO DET3 CHIP RON`` [e], ``ESO DET3 CHIP FULLWELL`` [e] and ``ESO DET3 CHIP REFPIX`` (the
unilluminated border: bottom, left, top, right in px).

* :func:`read_lms_frame` reads one into an :class:`LmsFrame` (array axis 0 = detector 1..4,
  axis 1 = row, axis 2 = col, 0-based pixel centres);
* :func:`reduce_lms_frame` subtracts a background frame (same setting: thermal emission + dark)
  and gives the signal in electrons per DIT with its per-pixel variance and a mask of usable
  pixels (:class:`ReducedLmsFrame`).

Noise model per pixel (electrons): ``var = (max(S, 0) + RON^2) / NDIT`` of each frame, where
``S`` is the frame's own signal; a subtracted background adds its variance.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits

from .errors import FrameMismatchError, LmsFrameError, MissingDetectorError
from .mosaic import REFERENCE_BORDERS

__all__ = ["N_DETECTORS", "CHIP_SHAPE", "FRAME_KINDS", "LmsFrame", "ReducedLmsFrame", "read_lms_frame",
           "reduce_lms_frame"]

N_DETECTORS = 4
CHIP_SHAPE = (2048, 2048)
FRAME_KINDS = {"WAVE": "laser", "DISTORTION": "grid", "RSRF": "slices", "WCU_OFF": "background"}
"""``ESO DPR TYPE`` of the LMS calibration frames -> astrocal's frame kind."""
_SATURATION_FRACTION = 0.98      # of the full well: pixels at or above are flagged saturated


def _key(header, name, source, default=None, required=True):
    k = f"HIERARCH ESO {name}"
    if k in header:
        return header[k]
    if name in header:
        return header[name]
    if required and default is None:
        raise LmsFrameError(f"{source}: header keyword 'ESO {name}' missing")
    return default


@dataclass(frozen=True, eq=False)
class LmsFrame:
    """One raw LMS frame.

    Attributes
    ----------
    path : str
        Where it was read from.
    header : astropy.io.fits.Header
        The primary header.
    data : ndarray, float32, shape (4, 2048, 2048)
        ADU per DIT (the average of NDIT DITs); axis 0 = detector 1..4, axis 1 = row, axis 2 = col.
    gain_e_per_adu, read_noise_e, full_well_e : ndarray, shape (4,)
        Per detector, from the ``ESO DET3 CHIP`` keywords.
    borders : ndarray of int, shape (4, 4)
        Unilluminated border per detector (bottom, left, top, right) [px].
    dit_s : float
    ndit : int
    kind : str
        ``laser``, ``grid``, ``slices``, ``background`` (from ``ESO DPR TYPE``), or the raw type.
    lam_c_um : float
        Central wavelength of the echelle setting [um] (``ESO INS WLEN CEN``).
    order : int or None
        Echelle order (``ESO INS OPTI8 ORDER``) if given.
    offset_arcsec : ndarray (2,) or None
        Commanded chopper offset (``ESO SEQ CHOPNOD OFFSCHOP X/Y``) [arcsec], field frame.
    """

    path: str
    header: fits.Header
    data: np.ndarray
    gain_e_per_adu: np.ndarray
    read_noise_e: np.ndarray
    full_well_e: np.ndarray
    borders: np.ndarray
    dit_s: float
    ndit: int
    kind: str
    lam_c_um: float
    order: int | None
    offset_arcsec: np.ndarray | None

    def illuminated(self) -> np.ndarray:
        """The illuminated pixels of the four detectors.

        Returns
        -------
        ndarray (4, 2048, 2048) of bool
            True inside the reference-pixel borders.
        """
        out = np.zeros(self.data.shape, bool)
        ny, nx = self.data.shape[1:]
        for i, (b, l, t, r) in enumerate(self.borders):
            out[i, b:ny - t, l:nx - r] = True
        return out


def read_lms_frame(path: str | os.PathLike, gain_e_per_adu: float | None = None,
                   read_noise_e: float | None = None) -> LmsFrame:
    """Read a raw LMS frame.

    Parameters
    ----------
    path : str or os.PathLike
        The FITS file (``DET1.DATA`` .. ``DET4.DATA`` image extensions).
    gain_e_per_adu, read_noise_e : float, optional
        Gain [e/ADU] and read noise [e] used for chips whose header lacks
        ``ESO DET3 CHIP GAIN`` / ``RON`` (e.g. the campaign's ``[lms]`` values); without them such
        a header is an error.

    Returns
    -------
    LmsFrame
        The frame's four detectors and its header values.

    Raises
    ------
    MissingDetectorError
        One of ``DET1.DATA`` .. ``DET4.DATA`` is absent (or has no data).
    LmsFrameError
        Not a readable FITS file, an image that is not 2048 x 2048, a required keyword missing
        (``ESO INS WLEN CEN``, ``ESO DET3 NDIT``).
    """
    path = Path(path)
    src = str(path)
    try:
        hdul = fits.open(path, memmap=False)
    except (OSError, ValueError) as exc:
        raise LmsFrameError(f"{src}: cannot read as FITS: {exc}") from exc
    with hdul:
        h0 = hdul[0].header.copy()
        names = {h.name.upper(): h for h in hdul[1:]}
        missing = [d for d in range(1, N_DETECTORS + 1)
                   if f"DET{d}.DATA" not in names or names[f"DET{d}.DATA"].data is None]
        if missing:
            raise MissingDetectorError(
                f"{src}: image extension(s) {', '.join(f'DET{d}.DATA' for d in missing)} missing "
                f"(an LMS frame has DET1.DATA .. DET4.DATA; found {sorted(names) or 'none'})")
        data = np.empty((N_DETECTORS,) + CHIP_SHAPE, np.float32)
        gain, ron, well = (np.empty(N_DETECTORS) for _ in range(3))
        borders = np.zeros((N_DETECTORS, 4), int)
        for d in range(1, N_DETECTORS + 1):
            hdu = names[f"DET{d}.DATA"]
            if hdu.data.shape != CHIP_SHAPE:
                raise LmsFrameError(f"{src}: DET{d}.DATA has shape {hdu.data.shape}, expected {CHIP_SHAPE}")
            data[d - 1] = hdu.data
            h = hdu.header
            gain[d - 1] = float(_key(h, "DET3 CHIP GAIN", f"{src}[DET{d}.DATA]", gain_e_per_adu))
            ron[d - 1] = float(_key(h, "DET3 CHIP RON", f"{src}[DET{d}.DATA]", read_noise_e))
            well[d - 1] = float(_key(h, "DET3 CHIP FULLWELL", f"{src}[DET{d}.DATA]", np.inf, required=False))
            ref = _key(h, "DET3 CHIP REFPIX", f"{src}[DET{d}.DATA]", required=False)
            borders[d - 1] = [int(v) for v in str(ref).split()] if ref else REFERENCE_BORDERS[d]
    if not np.all(gain > 0) or not np.all(ron >= 0):
        raise LmsFrameError(f"{src}: gain must be > 0 and read noise >= 0, got {gain.tolist()}, {ron.tolist()}")
    dpr = str(_key(h0, "DPR TYPE", src, "", required=False)).strip()
    off = None
    if "HIERARCH ESO SEQ CHOPNOD OFFSCHOP X" in h0:
        off = np.array([float(_key(h0, "SEQ CHOPNOD OFFSCHOP X", src)), float(_key(h0, "SEQ CHOPNOD OFFSCHOP Y", src))])
    order = _key(h0, "INS OPTI8 ORDER", src, required=False)
    return LmsFrame(path=src, header=h0, data=data, gain_e_per_adu=gain, read_noise_e=ron, full_well_e=well,
                    borders=borders, dit_s=float(_key(h0, "DET3 DIT", src, 0.0, required=False)),
                    ndit=int(_key(h0, "DET3 NDIT", src)), kind=FRAME_KINDS.get(dpr, dpr.lower()),
                    lam_c_um=float(_key(h0, "INS WLEN CEN", src)), order=None if order is None else int(order),
                    offset_arcsec=off)


@dataclass(frozen=True, eq=False)
class ReducedLmsFrame:
    """A background-subtracted LMS frame in electrons per DIT.

    Attributes
    ----------
    frame : LmsFrame
        The raw frame (its ``data`` still in ADU).
    data : ndarray, float32, shape (4, 2048, 2048)
        Signal [e per DIT] minus the background frame (if one was given).
    variance : ndarray, float32, shape (4, 2048, 2048)
        Its variance [e^2].
    valid : ndarray of bool, shape (4, 2048, 2048)
        Illuminated (inside the reference-pixel borders), finite and not saturated.
    saturated : ndarray of bool, shape (4, 2048, 2048)
        At or above 98 % of the full well in the raw frame.
    background : str or None
        Path of the subtracted background frame.
    """

    frame: LmsFrame
    data: np.ndarray
    variance: np.ndarray
    valid: np.ndarray
    saturated: np.ndarray
    background: str | None

    @property
    def lam_c_um(self) -> float:
        """Central wavelength of the frame's echelle setting [um]."""
        return self.frame.lam_c_um

    @property
    def path(self) -> str:
        """The raw frame's file."""
        return self.frame.path


def _electrons(frame: LmsFrame):
    g = frame.gain_e_per_adu.astype(np.float32)[:, None, None]
    e = frame.data * g
    var = (np.maximum(e, 0) + (frame.read_noise_e.astype(np.float32)[:, None, None]) ** 2) / np.float32(frame.ndit)
    return e, var


def reduce_lms_frame(frame: LmsFrame | str | os.PathLike,
                     background: LmsFrame | str | os.PathLike | None = None) -> ReducedLmsFrame:
    """Background-subtract a raw LMS frame and attach its noise.

    Parameters
    ----------
    frame : LmsFrame or path
        The frame to reduce.
    background : LmsFrame or path, optional
        A background frame (lasers off, black body shuttered) of the same echelle setting and DIT:
        subtracted pixel by pixel (thermal emission and dark). Without one, the signal keeps them.

    Returns
    -------
    ReducedLmsFrame

    Raises
    ------
    FrameMismatchError
        The background is of another setting (``ESO INS WLEN CEN``) or DIT.
    MissingDetectorError, LmsFrameError
        From :func:`read_lms_frame`.
    """
    if not isinstance(frame, LmsFrame):
        frame = read_lms_frame(frame)
    data, var = _electrons(frame)
    sat = frame.data * frame.gain_e_per_adu[:, None, None].astype(np.float32) >= \
        (_SATURATION_FRACTION * frame.full_well_e)[:, None, None].astype(np.float32)
    bg_path = None
    if background is not None:
        if not isinstance(background, LmsFrame):
            background = read_lms_frame(background)
        if not np.isclose(background.lam_c_um, frame.lam_c_um, atol=1e-6):
            raise FrameMismatchError(f"{background.path}: background of setting {background.lam_c_um} um "
                                     f"for a frame of setting {frame.lam_c_um} um ({frame.path})")
        if background.dit_s and frame.dit_s and not np.isclose(background.dit_s, frame.dit_s):
            raise FrameMismatchError(f"{background.path}: background DIT {background.dit_s} s differs from "
                                     f"the frame's {frame.dit_s} s ({frame.path})")
        b, bvar = _electrons(background)
        data -= b
        var += bvar
        bg_path = background.path
    valid = frame.illuminated() & np.isfinite(data) & ~sat
    data[~valid] = 0.0
    var[~valid] = np.inf
    return ReducedLmsFrame(frame, data, var, valid, sat, bg_path)
