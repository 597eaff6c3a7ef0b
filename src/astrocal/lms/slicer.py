"""The image slicer: field positions <-> (slice number, xi), and the orientation of a field
(e.g. the WCU mask) relative to the slicer.

Slicer frame (ScopeSim's "Aperture List"): ``xi`` along the slices, ``eta`` across them, both
[arcsec] on the sky. Slice number k = 1..28 covers ``eta`` in [(k - 15) w, (k - 14) w) with
``w = 0.0207"`` and ``|xi| <= 0.4485"``; slice k is the file's slice index k - 1 (slice 1 at the
most negative focal-plane y).

No source gives the orientation of the WCU mask (or the sky) relative to the slicer. astrocal's
default, :data:`DEFAULT_ORIENTATION`, is ScopeSim's: mask x = xi, mask y = eta, no rotation, no
offset. :class:`FieldOrientation` makes it configurable:
``(xi, eta) = R(angle) F (a, b) + offset``, where ``F`` negates b when ``flip`` is true and
``R(angle)`` rotates counter-clockwise.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from .errors import SliceNumberError
from .traces import N_SLICES, SLICE_HALF_LENGTH_ARCSEC, SLICE_WIDTH_ARCSEC

__all__ = ["FieldOrientation", "DEFAULT_ORIENTATION", "slice_eta_range", "field_to_slice",
           "slice_to_field", "check_slice_numbers"]


def check_slice_numbers(slice_number: ArrayLike) -> np.ndarray:
    """Validate public slice numbers (integers 1..28).

    Parameters
    ----------
    slice_number : array_like
        Slice numbers (integers, or floats with integral values).

    Returns
    -------
    ndarray of int
        The slice numbers.

    Raises
    ------
    SliceNumberError
    """
    s = np.asarray(slice_number)
    if s.dtype.kind == "f" and np.all(np.isfinite(s)) and np.all(s == np.round(s)):
        s = s.astype(int)
    if s.dtype.kind not in "iu":
        raise SliceNumberError(f"slice numbers must be integers 1..{N_SLICES}, got dtype {s.dtype}")
    bad = (s < 1) | (s > N_SLICES)
    if np.any(bad):
        raise SliceNumberError(f"slice numbers must be 1..{N_SLICES}, got {np.unique(s[bad])[:5].tolist()}")
    return s.astype(int)


def slice_eta_range(slice_number: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """(eta_low, eta_high) [arcsec] of slice numbers 1..28.

    Parameters
    ----------
    slice_number : array_like of int
        Slice numbers 1..28.

    Returns
    -------
    eta_low, eta_high : ndarray
        The slices' edges across the slicer field [arcsec].
    """
    k = check_slice_numbers(slice_number)
    low = (k - 15) * SLICE_WIDTH_ARCSEC
    return low, low + SLICE_WIDTH_ARCSEC


@dataclass(frozen=True)
class FieldOrientation:
    """Orientation of a field frame (a, b) [arcsec] relative to the slicer frame (xi, eta).

    Attributes
    ----------
    angle_deg : float
        Counter-clockwise rotation from field to slicer frame [deg].
    flip : bool
        Negate b before rotating (a mirror image).
    offset_arcsec : tuple of float
        Slicer-frame (xi, eta) of the field origin [arcsec].
    """

    angle_deg: float = 0.0
    flip: bool = False
    offset_arcsec: tuple[float, float] = (0.0, 0.0)

    def to_slicer(self, a: ArrayLike, b: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """Field (a, b) -> slicer (xi, eta) [arcsec].

        Parameters
        ----------
        a, b : array_like
            Field-frame position [arcsec].

        Returns
        -------
        xi, eta : ndarray
            Slicer-frame position [arcsec].
        """
        a, b = np.asarray(a, float), np.asarray(b, float)
        b = -b if self.flip else b
        c, s = np.cos(np.radians(self.angle_deg)), np.sin(np.radians(self.angle_deg))
        return c * a - s * b + self.offset_arcsec[0], s * a + c * b + self.offset_arcsec[1]

    def to_field(self, xi: ArrayLike, eta: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """Slicer (xi, eta) -> field (a, b) [arcsec].

        Parameters
        ----------
        xi, eta : array_like
            Slicer-frame position [arcsec].

        Returns
        -------
        a, b : ndarray
            Field-frame position [arcsec].
        """
        xi = np.asarray(xi, float) - self.offset_arcsec[0]
        eta = np.asarray(eta, float) - self.offset_arcsec[1]
        c, s = np.cos(np.radians(self.angle_deg)), np.sin(np.radians(self.angle_deg))
        a, b = c * xi + s * eta, -s * xi + c * eta
        return a, (-b if self.flip else b)


DEFAULT_ORIENTATION = FieldOrientation()
"""ScopeSim's orientation: mask x = xi, mask y = eta."""


def field_to_slice(a: ArrayLike, b: ArrayLike, orientation: FieldOrientation = DEFAULT_ORIENTATION
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Field positions -> (slice number, xi [arcsec], eta offset from the slice centre [arcsec]).

    Parameters
    ----------
    a, b : array_like
        Field-frame position [arcsec].
    orientation : FieldOrientation
        The field frame's orientation in the slicer frame.

    Returns
    -------
    slice_number, xi, eta_offset : ndarray
        Slice number 0 where the point is outside the slicer's field (``|xi| > 0.4485"`` or eta
        outside the 28 slices); its xi and offset are still returned.
    """
    xi, eta = orientation.to_slicer(a, b)
    k = np.floor(eta / SLICE_WIDTH_ARCSEC).astype(int) + 15
    inside = (k >= 1) & (k <= N_SLICES) & (np.abs(xi) <= SLICE_HALF_LENGTH_ARCSEC)
    centre = (k - 14.5) * SLICE_WIDTH_ARCSEC
    return np.where(inside, k, 0), xi, eta - centre


def slice_to_field(slice_number: ArrayLike, xi: ArrayLike, eta_offset: ArrayLike = 0.0,
                   orientation: FieldOrientation = DEFAULT_ORIENTATION) -> tuple[np.ndarray, np.ndarray]:
    """(slice number, xi, eta offset from the slice centre) -> field (a, b) [arcsec].

    Parameters
    ----------
    slice_number : array_like of int
        Slice numbers 1..28.
    xi, eta_offset : array_like
        Position along the slice and offset across it from its centre [arcsec].
    orientation : FieldOrientation
        The field frame's orientation in the slicer frame.

    Returns
    -------
    a, b : ndarray
        Field-frame position [arcsec].
    """
    k = check_slice_numbers(slice_number)
    eta = (k - 14.5) * SLICE_WIDTH_ARCSEC + np.asarray(eta_offset, float)
    return orientation.to_field(xi, eta)
