"""The one place where pixel conventions are converted.

Inside astrocal, pixel positions are 0-based: the centre of the first pixel is 0.0 and
the detector of ``nx`` columns covers ``-0.5 <= x <= nx - 0.5``.  FITS (and the products
that follow it: AstroMet tables, WCS headers) use 1-based positions, where the centre of
the first pixel is 1.0.
"""
from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from .errors import FieldError

#: offset added to a 0-based position to obtain the FITS 1-based position
FITS_ORIGIN = 1.0


def to_fits(pos: ArrayLike) -> np.ndarray:
    """0-based pixel position(s) -> FITS 1-based position(s).

    Parameters
    ----------
    pos : array_like
        0-based pixel position(s).

    Returns
    -------
    numpy.ndarray
        The FITS 1-based position(s) (float).
    """
    return np.asarray(pos, dtype=float) + FITS_ORIGIN


def from_fits(pos: ArrayLike) -> np.ndarray:
    """FITS 1-based pixel position(s) -> 0-based position(s).

    Parameters
    ----------
    pos : array_like
        FITS 1-based pixel position(s).

    Returns
    -------
    numpy.ndarray
        The 0-based position(s) (float).
    """
    return np.asarray(pos, dtype=float) - FITS_ORIGIN


def detector_domain(shape: tuple[int, int]) -> tuple[float, float, float, float]:
    """Domain ``(xmin, xmax, ymin, ymax)`` (0-based pixels) covered by a detector.

    The domain runs over the pixel edges, from -0.5 to n - 0.5 on each axis, so that
    every pixel centre lies inside it.

    Parameters
    ----------
    shape : tuple of int
        ``(ny, nx)`` as numpy gives it.

    Returns
    -------
    tuple of float
        ``(xmin, xmax, ymin, ymax)``.

    Raises
    ------
    FieldError
        If a dimension is not positive.
    """
    ny, nx = (int(s) for s in shape)
    if nx <= 0 or ny <= 0:
        raise FieldError(f"detector shape must be positive, got {shape!r}")
    return (-0.5, nx - 0.5, -0.5, ny - 0.5)


def detector_shape(domain: tuple[float, float, float, float]) -> tuple[int, int]:
    """``(ny, nx)`` of the detector whose domain is given.

    Parameters
    ----------
    domain : tuple of float
        ``(xmin, xmax, ymin, ymax)`` (pixel edges, as :func:`detector_domain` gives it).

    Returns
    -------
    tuple of int
        ``(ny, nx)``.
    """
    xmin, xmax, ymin, ymax = domain
    return int(round(ymax - ymin)), int(round(xmax - xmin))
