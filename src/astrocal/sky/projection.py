"""The gnomonic (tangent-plane) projection and its inverse, all angles in radians: the sky
positions of catalogues, simulated fields and apparent places are projected about a
tangent point with these two functions (``astrocal.sky.catalog``, ``astrocal.sky.astrometry``,
the simulators)."""
from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["gnomonic", "inverse_gnomonic"]


def gnomonic(lon: ArrayLike, lat: ArrayLike, lon0: float, lat0: float) -> tuple[np.ndarray, np.ndarray]:
    """Gnomonic (tangent-plane) projection about ``(lon0, lat0)``; all angles in radians.

    Parameters
    ----------
    lon, lat : array_like
        The points (rad).
    lon0, lat0 : float
        The tangent point (rad).

    Returns
    -------
    tuple of numpy.ndarray
        ``(xi, eta)`` in radians: ``xi`` toward increasing longitude, ``eta`` toward
        increasing latitude at the tangent point. Points 90 deg or more from the tangent
        point give NaN.
    """
    lon, lat = np.asarray(lon, float), np.asarray(lat, float)
    dlon = lon - lon0
    sl, cl = np.sin(lat), np.cos(lat)
    s0, c0 = np.sin(lat0), np.cos(lat0)
    cd = np.cos(dlon)
    cosc = s0 * sl + c0 * cl * cd
    with np.errstate(divide="ignore", invalid="ignore"):
        xi = np.where(cosc > 0, cl * np.sin(dlon) / cosc, np.nan)
        eta = np.where(cosc > 0, (c0 * sl - s0 * cl * cd) / cosc, np.nan)
    return xi, eta


def inverse_gnomonic(xi: ArrayLike, eta: ArrayLike, lon0: float, lat0: float) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`gnomonic`.

    Parameters
    ----------
    xi, eta : array_like
        Standard coordinates (rad).
    lon0, lat0 : float
        The tangent point (rad).

    Returns
    -------
    tuple of numpy.ndarray
        ``(lon, lat)`` (rad).
    """
    xi, eta = np.asarray(xi, float), np.asarray(eta, float)
    s0, c0 = np.sin(lat0), np.cos(lat0)
    denom = c0 - eta * s0
    lon = lon0 + np.arctan2(xi, denom)
    lat = np.arctan2(s0 + eta * c0, np.hypot(xi, denom))
    return lon, lat
