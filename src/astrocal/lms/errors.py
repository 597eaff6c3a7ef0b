"""Errors of the LMS geometry (:mod:`astrocal.lms`).

All derive from :class:`LmsGeometryError` (an :class:`astrocal.errors.AstrocalError` and a
:class:`ValueError`), so callers can catch one class; the subclasses name what was wrong with
the input.
"""
from __future__ import annotations

from ..errors import AstrocalError

__all__ = ["LmsGeometryError", "SliceNumberError", "WavelengthRangeError", "EchelleSettingError",
           "OffDetectorError", "OffSliceError", "InversionError"]


class LmsGeometryError(AstrocalError, ValueError):
    """Bad input to, or failure of, the LMS geometry model."""


class SliceNumberError(LmsGeometryError):
    """A slice number outside 1..28 (or not an integer)."""


class WavelengthRangeError(LmsGeometryError):
    """A wavelength outside the range an echelle setting puts on the detector mosaic."""


class EchelleSettingError(LmsGeometryError):
    """A central wavelength no echelle order reaches, or a setting the model does not hold."""


class OffDetectorError(LmsGeometryError):
    """A point that falls on no detector (in a gap between chips or off the mosaic)."""


class OffSliceError(LmsGeometryError):
    """A detector position that lies on no slice image (between slices or beyond a slice end)."""


class InversionError(LmsGeometryError):
    """The iterative inverse of a polynomial map did not converge to its tolerance."""
