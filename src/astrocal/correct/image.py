"""Resample images onto the undistorted linear grid, conserving flux.

Output grid: the linear grid itself; output pixel ``(i, j)`` (0-based row, column) is the
linear-grid position ``(j - pad, i - pad)``; by default (``pad = 0``) the output has the
detector's shape.  Values are fluxes per pixel (counts): an output pixel receives the flux
of the part of the detector it covers, so totals are conserved.  Two resamplers:

``interp`` (default)
    ``reproject.reproject_interp`` with bicubic (cubic B-spline) interpolation: the input
    is interpolated at the detector position ``p = L^-1(l)`` of each output pixel centre
    (:meth:`~astrocal.correct.solutions.Evaluator.distort`; the evaluator is wrapped as an
    APE-14 WCS of the detector whose world coordinates are the linear grid's), then
    multiplied by the area of the output pixel in detector pixels, ``|det dp/dl|``, which
    makes the interpolation flux-conserving.  For images sampled at or above Nyquist
    (METIS at L, M, N), star positions and fluxes are kept to ~1e-6 px and ~1e-6.
    Input pixels that are not finite are filled (astropy's ``interpolate_replace_nans``)
    for the interpolation, and output pixels that depend on them by more than
    :data:`BAD_INFLUENCE` are NaN.  ``COVERAGE`` is 1 where the output pixel's centre falls
    on the detector, else 0 (and the pixel NaN).
``drizzle``
    STScI's ``drizzle`` with the ``square`` kernel and ``pixfrac = 1`` (Fruchter & Hook
    2002): each detector pixel, mapped by the solution (its centre's linear-grid position
    is drizzle's ``pixmap``), shares its flux among the output pixels it overlaps, by exact
    area.  drizzle returns the overlap-weighted mean of the input values; each input pixel
    is first divided by its mapped area ``|det dl/dp|`` so that the output conserves flux
    exactly.  For undersampled images; the area weighting aliases a well-sampled star's
    position by a few 1e-3 px (3e-3 px for a 1 % scale change between the grids).  ``COVERAGE`` is
    the covered fraction of each output pixel; input pixels that are not finite have no
    weight.

The output's WCS has the correction folded in: a plain ``TAN`` projection (no SIP) whose
``CD`` matrix is the linear grid's, ``M^-1`` (plate scale, rotation, parity) in degrees per
pixel, with ``CRPIX`` at the boresight (FITS 1-based, plus ``pad``).  As in astrocal's SIP
headers (:mod:`astrocal.formats.sip`), the intermediate world coordinates are the
focal-plane coordinates relative to the boresight's, so this WCS gives every output pixel
the world position the solution's TAN-SIP header gives the detector pixel it came from.
``CRVAL`` is ``crval`` if given, else the SIP header's when the solution is one, else 0, 0.
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS
from astropy.wcs.wcsapi import BaseLowLevelWCS, HighLevelWCSWrapper
from numpy.typing import ArrayLike
from scipy.interpolate import RectBivariateSpline

from .. import __version__
from ..atomic import atomic_path, check_writable
from ..errors import CorrectionInputError
from ..pixels import to_fits
from .solutions import Evaluator

log = logging.getLogger(__name__)

DEG = 3600.0  # arcsec per degree
#: rows of the input mapped per chunk (bounded memory)
ROWS_PER_CHUNK = 256
RESAMPLERS = ("interp", "drizzle")
#: ``interp``: output pixels whose value depends on bad input pixels by more than this
#: fraction (the interpolated bad-pixel mask) are NaN
BAD_INFLUENCE = 0.05
#: ``interp``: step (output pixels) of the grid on which the pixel-area factor is computed
#: exactly before its bicubic interpolation (the factor is smooth: error < 1e-8)
AREA_STEP = 8
RESAMPLING = {"interp": "reproject_interp bicubic x pixel area",
              "drizzle": "drizzle square pixfrac=1"}
_FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fts.gz")
_STRUCTURAL = re.compile(r"^(SIMPLE|BITPIX|NAXIS\d*|EXTEND|XTENSION|PCOUNT|GCOUNT|BSCALE|BZERO|"
                         r"BLANK|CHECKSUM|DATASUM|EXTNAME|EXTVER|EXTLEVEL|INHERIT)$")
_WCS = re.compile(r"^(WCSAXES|WCSNAME|CTYPE\d|CRPIX\d|CRVAL\d|CDELT\d|CUNIT\d|CROTA\d|CRDER\d|"
                  r"CSYER\d|CNAME\d|CD\d_\d|PC\d_\d|PV\d_\d+|PS\d_\d+|LONPOLE|LATPOLE|RADESYS|"
                  r"RADECSYS|EQUINOX|MJDREF|A_ORDER|B_ORDER|AP_ORDER|BP_ORDER|A_DMAX|B_DMAX|"
                  r"A_\d+_\d+|B_\d+_\d+|AP_\d+_\d+|BP_\d+_\d+|SIPRTERR|IMAGEW|IMAGEH|CPDIS\d|"
                  r"CPERR\d|DP\d|DQ\d|D2IM\w*|NPOL\w*|FPREFU|FPREFV|PLTSCALE|LINROT|PARITY|"
                  r"BORESX|BORESY)[A-Z]?$")


def is_fits_image(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a FITS file with a 2-D image HDU and no table HDU.

    Parameters
    ----------
    path : str or os.PathLike
        A file.

    Returns
    -------
    bool
    """
    low = str(path).lower()
    if not low.endswith(_FITS_SUFFIXES):
        return False
    try:
        with fits.open(path) as hdul:
            tables = any(isinstance(h, (fits.BinTableHDU, fits.TableHDU)) for h in hdul)
            images = any(_is_2d_image(h) for h in hdul)
    except OSError:
        return False
    return images and not tables


def _is_2d_image(h):
    return (isinstance(h, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU))
            and h.header.get("NAXIS", 0) == 2)


def read_image(path: str | os.PathLike, hdu: int | str | None = None) -> tuple[np.ndarray, fits.Header, str]:
    """A 2-D image HDU of a FITS file.

    Parameters
    ----------
    path : str or os.PathLike
        The file (only read).
    hdu : int or str, optional
        The HDU's index or name (default: the first 2-D image HDU).

    Returns
    -------
    data : np.ndarray
        A float64 copy of the image.
    header : astropy.io.fits.Header
        A copy of its header.
    label : str
        The HDU, for messages.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such image")
    try:
        hdul = fits.open(path, mode="readonly", memmap=False)
    except OSError as exc:
        raise CorrectionInputError(f"{path}: not a readable FITS file ({exc})") from None
    with hdul:
        if hdu is None:
            chosen = next((k for k, h in enumerate(hdul) if _is_2d_image(h)), None)
            if chosen is None:
                dims = ", ".join(f"{k}: NAXIS={h.header.get('NAXIS', 0)}" for k, h in enumerate(hdul))
                raise CorrectionInputError(f"{path}: no 2-D image HDU ({dims}); astrocal correct resamples "
                                 "2-D images (a table is read as a star list)")
        else:
            key = int(hdu) if str(hdu).lstrip("-").isdigit() else str(hdu)
            try:
                hdul[key]
            except (KeyError, IndexError):
                raise CorrectionInputError(f"{path}: no HDU {hdu!r} (HDUs: "
                                 f"{', '.join(h.name or str(k) for k, h in enumerate(hdul))})") from None
            chosen = key
        h = hdul[chosen]
        if not _is_2d_image(h):
            raise CorrectionInputError(f"{path}: HDU {chosen!r} is not a 2-D image (NAXIS="
                             f"{h.header.get('NAXIS', 0)})")
        data = np.array(h.data, dtype=float)
        header = h.header.copy()
        return data, header, f"{chosen}" if isinstance(chosen, str) else f"{chosen} ({h.name})"


def pixel_map(evaluator: Evaluator, shape: tuple[int, int], pad: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """drizzle's ``pixmap`` and each detector pixel's mapped area.

    Parameters
    ----------
    evaluator : Evaluator
        The opened solution.
    shape : tuple of int
        ``(ny, nx)`` of the detector image.
    pad : int
        Output pixels added on every side.

    Returns
    -------
    pixmap : np.ndarray
        ``(ny, nx, 2)``: the output-grid position of every detector pixel centre.
    area : np.ndarray
        ``(ny, nx)``: each pixel's mapped area in output pixels, ``|det dl/dp|``.
    """
    ny, nx = shape
    pixmap = np.empty((ny, nx, 2))
    area = np.empty((ny, nx))
    xs = np.arange(nx, dtype=float)
    for r0 in range(0, ny, ROWS_PER_CHUNK):
        r1 = min(r0 + ROWS_PER_CHUNK, ny)
        yy, xx = np.meshgrid(np.arange(r0, r1, dtype=float), xs, indexing="ij")
        ev = evaluator.evaluate(xx.ravel(), yy.ravel(), errors=False)
        pixmap[r0:r1, :, 0] = (ev.lx + pad).reshape(r1 - r0, nx)
        pixmap[r0:r1, :, 1] = (ev.ly + pad).reshape(r1 - r0, nx)
        j = ev.jac
        area[r0:r1] = np.abs(j[:, 0, 0] * j[:, 1, 1] - j[:, 0, 1] * j[:, 1, 0]).reshape(r1 - r0, nx)
    return pixmap, area


def resample(data: ArrayLike, evaluator: Evaluator, pad: int = 0,
             resampler: str = "interp") -> tuple[np.ndarray, np.ndarray]:
    """Resample a detector image onto the linear grid, conserving flux.

    Parameters
    ----------
    data : 2-D array
        The image, shape = the solution's detector (``evaluator.detector_shape``); values
        are fluxes per pixel (counts or any unit proportional to them).
    evaluator : Evaluator
        The opened solution.
    pad : int
        Output pixels added on every side (the corrected image's corners can move out
        by the distortion there).
    resampler : {"interp", "drizzle"}
        See the module docstring.

    Returns
    -------
    image : numpy.ndarray (float32)
        The resampled image, of the output shape (NaN where no input falls).
    coverage : numpy.ndarray (float)
        The covered fraction of each output pixel.
    """
    data = np.asarray(data, dtype=float)
    if data.shape != tuple(evaluator.detector_shape):
        raise ValueError(f"image of {data.shape[1]} x {data.shape[0]} pixels does not match the "
                         f"solution's detector ({evaluator.detector_shape[1]} x "
                         f"{evaluator.detector_shape[0]}, {evaluator.source})")
    pad = int(pad)
    if pad < 0:
        raise CorrectionInputError(f"pad must be a number of pixels >= 0, got {pad}")
    if resampler == "interp":
        return _resample_interp(data, evaluator, pad)
    if resampler == "drizzle":
        return _resample_drizzle(data, evaluator, pad)
    raise ValueError(f"unknown resampler {resampler!r}; known: {', '.join(RESAMPLERS)}")


def _resample_drizzle(data, evaluator, pad):
    from drizzle.resample import Drizzle

    pixmap, area = pixel_map(evaluator, data.shape, pad)
    good = np.isfinite(data) & np.isfinite(pixmap).all(axis=2)
    scaled = np.where(good, data / area, 0.0).astype(np.float32)
    pixmap[~good] = 0.0  # drizzle refuses NaN in the pixmap; these pixels have no weight
    shape_out = (data.shape[0] + 2 * pad, data.shape[1] + 2 * pad)
    driz = Drizzle(kernel="square", fillval=None, out_shape=shape_out, disable_ctx=True)
    driz.add_image(scaled, exptime=1.0, pixmap=pixmap, weight_map=good.astype(np.float32),
                   pixfrac=1.0, in_units="cps")
    # drizzle's weight sums the fractions of input pixels falling in each output pixel:
    # divided by the output pixel's area in input pixels, it is the covered fraction
    coverage = driz.out_wht / area_factor(evaluator, shape_out, pad)
    return driz.out_img, np.clip(coverage, 0.0, 1.0)


class _DetectorWCS(BaseLowLevelWCS):
    """APE-14 WCS of the detector whose world coordinates are the linear grid's pixels
    (0-based): pixel -> world is the evaluator's ``undistort``, world -> pixel ``distort``.
    The world axes' metadata are those of the output grid's linear WCS, so that reproject
    matches the two."""

    def __init__(self, evaluator, grid_wcs):
        self._ev = evaluator
        self._grid = grid_wcs

    pixel_n_dim = 2
    world_n_dim = 2

    @property
    def world_axis_physical_types(self):
        return self._grid.world_axis_physical_types

    @property
    def world_axis_units(self):
        return self._grid.world_axis_units

    @property
    def world_axis_object_components(self):
        return self._grid.world_axis_object_components

    @property
    def world_axis_object_classes(self):
        return self._grid.world_axis_object_classes

    @property
    def array_shape(self):
        return tuple(self._ev.detector_shape)

    def pixel_to_world_values(self, x, y):
        return self._ev.undistort(x, y)

    def world_to_pixel_values(self, lx, ly):
        return self._ev.distort(lx, ly)


def _grid_wcs(pad):
    """Linear WCS of the output grid: world = linear-grid position (0-based pixels)."""
    w = WCS(naxis=2)
    w.wcs.crpix = [1.0, 1.0]
    w.wcs.crval = [-float(pad), -float(pad)]
    w.wcs.cdelt = [1.0, 1.0]
    return w


def area_factor(evaluator: Evaluator, shape_out: tuple[int, int], pad: int = 0) -> np.ndarray:
    """``|det dp/dl|``: area of each output pixel in detector pixels.

    Computed exactly every :data:`AREA_STEP` output pixels (and at the last row/column),
    then interpolated by a bicubic spline on the output grid (the factor is a smooth
    function: interpolation error below 1e-8).

    Parameters
    ----------
    evaluator : Evaluator
        The opened solution.
    shape_out : tuple of int
        ``(ny, nx)`` of the output.
    pad : int
        Output pixels added on every side.

    Returns
    -------
    np.ndarray
        ``(ny, nx)`` of the output.
    """
    ny, nx = shape_out
    gx = np.unique(np.r_[np.arange(0, nx, AREA_STEP), nx - 1]).astype(float)
    gy = np.unique(np.r_[np.arange(0, ny, AREA_STEP), ny - 1]).astype(float)
    yy, xx = np.meshgrid(gy - pad, gx - pad, indexing="ij")
    px, py = evaluator.distort(xx.ravel(), yy.ravel())
    jac = evaluator.evaluate(px, py, errors=False).jac
    inv_area = np.abs(jac[:, 0, 0] * jac[:, 1, 1] - jac[:, 0, 1] * jac[:, 1, 0])
    k = min(3, gx.size - 1, gy.size - 1)
    spline = RectBivariateSpline(gy, gx, (1.0 / inv_area).reshape(yy.shape), kx=k, ky=k, s=0)
    return spline(np.arange(ny, dtype=float), np.arange(nx, dtype=float))


def _resample_interp(data, evaluator, pad):
    from astropy.convolution import Gaussian2DKernel, interpolate_replace_nans
    from reproject import reproject_interp

    bad = ~np.isfinite(data)
    filled = data
    if bad.any():
        filled = interpolate_replace_nans(np.where(bad, np.nan, data), Gaussian2DKernel(2.0))
        filled = np.where(np.isfinite(filled), filled, np.nanmedian(data[~bad]) if (~bad).any() else 0.0)
    shape_out = (data.shape[0] + 2 * pad, data.shape[1] + 2 * pad)
    grid = _grid_wcs(pad)
    det = HighLevelWCSWrapper(_DetectorWCS(evaluator, grid.low_level_wcs))
    # with bad pixels, their mask is interpolated along (one transformation for both)
    stack = np.stack([filled, bad.astype(float)]) if bad.any() else filled[None]
    out = reproject_interp((stack, det), grid, shape_out=stack.shape[:1] + shape_out,
                           order="bicubic", roundtrip_coords=False, return_footprint=False)
    image = out[0] * area_factor(evaluator, shape_out, pad)
    coverage = np.isfinite(image).astype(float)
    if bad.any():
        image[np.abs(out[1]) > BAD_INFLUENCE] = np.nan
    return image.astype(np.float32), coverage


def linear_grid_header(evaluator: Evaluator, pad: int = 0,
                       crval: tuple[float, float] | None = None) -> fits.Header:
    """WCS keywords of the linear grid (TAN, no SIP: the correction is folded in).

    Parameters
    ----------
    evaluator : Evaluator
        The opened solution.
    pad : int
        Output pixels added on every side.
    crval : tuple of float, optional
        World position of the boresight (deg; default: the solution's CRVAL, else 0 0).

    Returns
    -------
    astropy.io.fits.Header
    """
    if crval is None:
        crval = evaluator.meta.get("crval") or (0.0, 0.0)
    minv = np.linalg.inv(evaluator.linear_matrix) / DEG  # deg per linear-grid pixel
    b = evaluator.boresight
    h = fits.Header()
    h["WCSAXES"] = 2
    h["CTYPE1"] = "RA---TAN"
    h["CTYPE2"] = "DEC--TAN"
    h["CUNIT1"] = "deg"
    h["CUNIT2"] = "deg"
    h["CRPIX1"] = (float(to_fits(b[0])) + pad, "boresight x, FITS 1-based")
    h["CRPIX2"] = (float(to_fits(b[1])) + pad, "boresight y, FITS 1-based")
    h["CRVAL1"] = float(crval[0])
    h["CRVAL2"] = float(crval[1])
    for i in range(2):
        for j in range(2):
            h[f"CD{i + 1}_{j + 1}"] = float(minv[i, j])
    h["PLTSCALE"] = (evaluator.plate_scale, "[arcsec/pixel] linear-grid plate scale")
    h["LINROT"] = (evaluator.rotation, "[deg] detector x axis in focal plane")
    h["PARITY"] = (evaluator.parity, "-1 if the detector image is flipped")
    u0, v0 = evaluator.reference_position
    h["FPREFU"] = (u0, "[arcsec] focal-plane u of CRPIX")
    h["FPREFV"] = (v0, "[arcsec] focal-plane v of CRPIX")
    h["COMMENT"] = "pixels = linear grid of the distortion solution (distortion removed)"
    h["COMMENT"] = "intermediate world coordinates = focal plane relative to CRPIX, deg"
    return h


def _copy_cards(src, dst):
    dropped = []
    for card in src.cards:
        key = card.keyword
        if not key or _STRUCTURAL.match(key):
            continue
        if _WCS.match(key):
            dropped.append(key)
            continue
        if key in ("HISTORY", "COMMENT"):
            if key == "HISTORY":
                dst.add_history(str(card.value))
            else:
                dst.add_comment(str(card.value))
            continue
        if key in dst:
            continue
        dst.append((key, card.value, card.comment))
    return dropped


def correct_image(path: str | os.PathLike, evaluator: Evaluator, out: str | os.PathLike, *,
                  hdu: int | str | None = None, pad: int = 0, crval: tuple[float, float] | None = None,
                  resampler: str = "interp", overwrite: bool = False) -> Path:
    """Resample the image in ``path`` onto the linear grid and write ``out`` (FITS).

    ``out`` holds the resampled image in its primary HDU (the input header's cards other
    than structure and WCS, then the linear grid's WCS and the provenance) and the
    ``COVERAGE`` extension.  Refused if ``out`` exists (unless ``overwrite``) or is the
    input.

    Parameters
    ----------
    path : str or os.PathLike
        The detector image (FITS).
    evaluator : Evaluator
        The opened solution.
    out : str or os.PathLike
        The corrected image (``.fits``).
    hdu : int or str, optional
        The image HDU (default: the first 2-D image).
    pad : int
        Output pixels added on every side.
    crval : tuple of float, optional
        World position of the boresight (deg).
    resampler : {"interp", "drizzle"}
        See the module docstring.
    overwrite : bool
        Replace ``out``.

    Returns
    -------
    Path
        The path written.
    """
    path = Path(path)
    out = Path(out)
    if out.exists() and path.exists() and out.resolve() == path.resolve():
        raise CorrectionInputError(f"{out}: is the input image; the input is never modified in place: "
                         "choose another output name")
    if not str(out).lower().endswith(_FITS_SUFFIXES):
        raise CorrectionInputError(f"{out}: the corrected image is written as FITS; name it .fits")
    check_writable(out, overwrite)
    data, header, label = read_image(path, hdu)
    if data.shape != tuple(evaluator.detector_shape):
        ny, nx = evaluator.detector_shape
        raise CorrectionInputError(f"{path}: image HDU {label} is {data.shape[1]} x {data.shape[0]} pixels "
                         f"(NAXIS1 x NAXIS2) but the solution's detector is {nx} x {ny} "
                         f"({evaluator.source}); give the full detector frame")
    image, coverage = resample(data, evaluator, pad, resampler)
    hdr = fits.Header()
    dropped = _copy_cards(header, hdr)
    hdr.update(linear_grid_header(evaluator, pad, crval))
    hdr["CORRSOL"] = Path(evaluator.source).name[-60:]  # the full path is in HISTORY
    hdr["CORRKIND"] = (evaluator.kind, "solution kind")
    hdr["CORRMETH"] = (evaluator.method, "evaluation method")
    hdr["CORRFILT"] = (evaluator.filter, "filter of the solution")
    hdr["CORRPAD"] = (int(pad), "[pixel] output pixels added on each side")
    hdr["CORRRSMP"] = RESAMPLING[resampler]
    hdr["CREATOR"] = (f"astrocal {__version__}", "software")
    hdr["PIXCONV"] = "FITS 1-based pixels: centre of the first pixel is 1.0"
    hdr.add_history(f"astrocal correct: resampled from {path.name} HDU {label} onto the linear "
                    f"grid of {evaluator.source}")
    if dropped:
        hdr.add_history("input WCS keywords removed (they described the distorted pixels): "
                        + " ".join(sorted(set(dropped)))[:200])
    primary = fits.PrimaryHDU(data=image.astype(np.float32), header=hdr)
    cov = fits.ImageHDU(data=coverage.astype(np.float32), name="COVERAGE")
    cov.header["COMMENT"] = "fraction of each output pixel covered by valid input pixels"
    cov.header["CORRRSMP"] = RESAMPLING[resampler]
    with atomic_path(out, overwrite) as tmp:
        fits.HDUList([primary, cov]).writeto(tmp)
    log.info("%s -> %s: resampled %d x %d pixels with %s", path, out, data.shape[1],
             data.shape[0], evaluator.describe())
    return out


__all__ = ["RESAMPLERS", "area_factor", "correct_image", "is_fits_image", "linear_grid_header",
           "pixel_map", "read_image", "resample"]
