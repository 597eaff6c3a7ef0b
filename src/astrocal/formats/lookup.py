"""FITS WCS distortion look-up tables (the distortion-paper ``CPDIS``/``DP`` convention).

What a polynomial cannot hold (astrocal's residual field beyond the polynomial,
:mod:`astrocal.field.residual`) is carried in a FITS WCS as *prior distortion* look-up
tables, the convention HST's NPOL files use and that ``astropy.wcs`` (its
:class:`~astropy.wcs.DistortionLookupTable`) and drizzlepac read:

* the primary header holds, per image axis ``j``, ``CPDISj = 'Lookup'`` and the
  record-valued keywords ``DPj.EXTVER`` (the extension holding its table), ``DPj.NAXES =
  2``, ``DPj.AXIS.1 = 1``, ``DPj.AXIS.2 = 2``, and ``CPERRj`` (the largest interpolation
  error, pixels, measured here);
* each table is an image extension ``WCSDVARR`` (``EXTVER`` 1 and 2) of corrections in
  pixels at nodes every ``step`` detector pixels, with ``CRPIXk = 1``, ``CRVALk = 1`` (the
  FITS 1-based detector pixel of the first node) and ``CDELTk = step``.

``astropy.wcs`` adds the bilinear interpolation of the tables to the pixel coordinates
before the SIP polynomial and the linear transformation: ``U' = U + A(U) + Delta(p)`` with
``U = p - CRPIX`` (:mod:`astrocal.formats.sip`). So a field ``G = polynomial + r``
(arcsec) has ``Delta(p) = CD^-1 r(p) / 3600`` pixels (``CD`` in degrees per pixel), the SIP
part holding the polynomial exactly.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from astropy.io import fits

from ..atomic import atomic_path
from ..pixels import to_fits

__all__ = ["table_nodes", "lookup_tables", "add_lookup_tables", "interpolation_error", "write_wcs_lookup"]

#: detector pixels between table nodes, by default
DEFAULT_STEP = 16


def table_nodes(n: int, step: int) -> np.ndarray:
    """0-based detector positions of the nodes along an axis of ``n`` pixels.

    Parameters
    ----------
    n : int
        Pixels along the axis.
    step : int
        Detector pixels between nodes.

    Returns
    -------
    numpy.ndarray
        The nodes: every ``step`` pixels from 0, one node at or beyond the last pixel.
    """
    k = int(np.ceil((n - 1) / step)) + 1
    return np.arange(k, dtype=float) * step


def lookup_tables(correction: Callable, detector_shape: tuple[int, int],
                  step: int = DEFAULT_STEP) -> tuple[np.ndarray, np.ndarray]:
    """The two look-up tables of a correction at the nodes.

    Parameters
    ----------
    correction : callable
        ``correction(x, y) -> (dx, dy)``: pixels, at 0-based detector pixels.
    detector_shape : tuple of int
        ``(ny, nx)``.
    step : int
        Detector pixels between nodes.

    Returns
    -------
    t1, t2 : numpy.ndarray
        Each ``(ny_nodes, nx_nodes)`` (FITS order: rows along y), pixels.
    """
    ny, nx = detector_shape
    xs, ys = table_nodes(nx, step), table_nodes(ny, step)
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    dx, dy = correction(xx.ravel(), yy.ravel())
    return np.asarray(dx, float).reshape(xx.shape), np.asarray(dy, float).reshape(xx.shape)


def interpolation_error(correction: Callable, tables: Sequence[np.ndarray], step: int,
                        detector_shape: tuple[int, int], n: int = 257) -> tuple[float, ...]:
    """Largest ``|bilinear interpolation of the tables - correction|`` per axis.

    Measured on an ``n x n`` grid over the detector (nodes and midpoints between them
    included).

    Parameters
    ----------
    correction : callable
        ``correction(x, y) -> (dx, dy)``: pixels, at 0-based detector pixels.
    tables : sequence of numpy.ndarray
        The tables of :func:`lookup_tables`.
    step : int
        Detector pixels between nodes.
    detector_shape : tuple of int
        ``(ny, nx)``.
    n : int
        Grid points per axis.

    Returns
    -------
    tuple of float
        The largest error per axis, pixels.
    """
    ny, nx = detector_shape
    x = np.linspace(0, nx - 1, n)
    y = np.linspace(0, ny - 1, n)
    yy, xx = np.meshgrid(y, x, indexing="ij")
    exact = correction(xx.ravel(), yy.ravel())
    out = []
    for t, e in zip(tables, exact):
        fx, fy = xx.ravel() / step, yy.ravel() / step
        i0 = np.minimum(np.floor(fx).astype(int), t.shape[1] - 2)
        j0 = np.minimum(np.floor(fy).astype(int), t.shape[0] - 2)
        ax, ay = fx - i0, fy - j0
        interp = ((1 - ax) * (1 - ay) * t[j0, i0] + ax * (1 - ay) * t[j0, i0 + 1]
                  + (1 - ax) * ay * t[j0 + 1, i0] + ax * ay * t[j0 + 1, i0 + 1])
        out.append(float(np.max(np.abs(interp - np.asarray(e, float)))))
    return tuple(out)


def add_lookup_tables(header: fits.Header, tables: Sequence[np.ndarray], step: int,
                      errors: Sequence[float | None] = (None, None)) -> list[fits.ImageHDU]:
    """Add the ``CPDIS``/``DP``/``CPERR`` keywords to ``header`` (in place).

    Parameters
    ----------
    header : astropy.io.fits.Header
        The primary header, completed in place.
    tables : sequence of numpy.ndarray
        The two tables (pixels).
    step : int
        Detector pixels between nodes.
    errors : sequence of float or None
        The tables' largest interpolation errors (pixels) for ``CPERR1``/``CPERR2``; None:
        no keyword.

    Returns
    -------
    list of astropy.io.fits.ImageHDU
        The two ``WCSDVARR`` image extensions of ``tables`` (float32, as astropy reads them).
    """
    hdus = []
    for axis, (table, err) in enumerate(zip(tables, errors), start=1):
        header[f"CPDIS{axis}"] = ("Lookup", "prior distortion: a look-up table")
        header[f"DP{axis}.EXTVER"] = float(axis)
        header[f"DP{axis}.NAXES"] = 2.0
        header[f"DP{axis}.AXIS.1"] = 1.0
        header[f"DP{axis}.AXIS.2"] = 2.0
        if err is not None:
            header[f"CPERR{axis}"] = (float(err), "[pixel] max interpolation error of the table")
        ext = fits.ImageHDU(np.asarray(table, np.float32), name="WCSDVARR", ver=axis)
        eh = ext.header
        for k in (1, 2):
            eh[f"CRPIX{k}"] = (1.0, "table pixel of the first node")
            eh[f"CRVAL{k}"] = (float(to_fits(0.0)), "its detector pixel, FITS 1-based")
            eh[f"CDELT{k}"] = (float(step), "[pixel] detector pixels between nodes")
        eh["BUNIT"] = ("pixel", "correction added to the pixel coordinate")
        eh["COMMENT"] = f"correction to image axis {axis}, added before SIP (distortion paper, CPDIS)"
        hdus.append(ext)
    return hdus


def write_wcs_lookup(path: str | os.PathLike, header: fits.Header, residual_arcsec: Callable,
                     detector_shape: tuple[int, int], step: int = DEFAULT_STEP, overwrite: bool = False,
                     jacobian: Callable | None = None) -> tuple[Path, tuple[float, ...]]:
    """Write a TAN-SIP header completed by look-up tables of the residual field.

    A FITS file whose primary header is the TAN-SIP ``header`` with the look-up keywords,
    and the two ``WCSDVARR`` extensions. The tables hold ``Delta(p) = J(p)^-1 r(p)`` with
    ``J`` the Jacobian (arcsec per pixel) of the polynomial that the SIP header holds, so
    that the SIP polynomial evaluated at ``p + Delta`` gives the polynomial plus ``r`` to
    first order in ``r``; without ``jacobian``, the constant ``CD`` matrix (exact for a
    header without SIP terms).

    Parameters
    ----------
    path : str or os.PathLike
        The FITS file, written atomically.
    header : astropy.io.fits.Header
        The TAN-SIP header (:func:`astrocal.formats.sip.sip_header`); copied.
    residual_arcsec : callable
        ``residual_arcsec(x, y) -> (ru, rv)``: the residual field, arcsec, at 0-based
        detector pixels.
    detector_shape : tuple of int
        ``(ny, nx)``.
    step : int
        Detector pixels between nodes.
    overwrite : bool
        Replace an existing file.
    jacobian : callable, optional
        ``jacobian(x, y) -> (u, v, J)`` (a :class:`~astrocal.field.DistortionField`'s
        ``jacobian``) of the polynomial.

    Returns
    -------
    path : pathlib.Path
        The path written.
    errors : tuple of float
        The tables' largest interpolation errors (pixels), also in ``CPERR1``/``CPERR2``.
    """
    h = header.copy()
    cd = np.array([[h["CD1_1"], h["CD1_2"]], [h["CD2_1"], h["CD2_2"]]], float) * 3600.0  # arcsec per pixel
    cdinv = np.linalg.inv(cd)

    def correction(x, y):
        ru, rv = residual_arcsec(x, y)
        ru, rv = np.ravel(np.asarray(ru, float)), np.ravel(np.asarray(rv, float))
        if jacobian is None:
            return cdinv[0, 0] * ru + cdinv[0, 1] * rv, cdinv[1, 0] * ru + cdinv[1, 1] * rv
        _, _, jac = jacobian(np.ravel(x), np.ravel(y))
        delta = np.linalg.solve(np.asarray(jac, float).reshape(-1, 2, 2), np.stack([ru, rv], axis=-1)[..., None])
        return delta[:, 0, 0], delta[:, 1, 0]

    tables = lookup_tables(correction, detector_shape, step)
    errors = interpolation_error(correction, tables, step, detector_shape)
    exts = add_lookup_tables(h, tables, step, errors)
    h["COMMENT"] = ("look-up tables (CPDIS, WCSDVARR extensions): the field beyond the SIP polynomial, "
                    "pixels, bilinear between nodes")
    path = Path(path)
    with atomic_path(path, overwrite) as tmp:
        fits.HDUList([fits.PrimaryHDU(header=h), *exts]).writeto(tmp)
    return path, errors
