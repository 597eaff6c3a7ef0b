r"""Errors of the LMS geometry and of the LMS frame measurement (:mod:`astrocal.lms`).

The geometry's errors derive from :class:`LmsGeometryError`, the measurement's
(:mod:`~astrocal.lms.frames`, :mod:`~astrocal.lms.spots`, :mod:`~astrocal.lms.continuum`) from
:class:`LmsMeasureError`, the hole-error prior's (:mod:`~astrocal.lms.hole_prior`: the imager's
posterior of the shared mask's holes) from :class:`HolePriorError`; all are :class:`astrocal.errors.AstrocalError`\ s and
:class:`ValueError`\ s, so callers can catch one class; the subclasses name what was wrong
with the input.
"""
from __future__ import annotations

from ..errors import AstrocalError

__all__ = ["LmsGeometryError", "SliceNumberError", "WavelengthRangeError", "EchelleSettingError",
           "OffDetectorError", "OffSliceError", "InversionError", "LmsMeasureError", "LmsFrameError",
           "MissingDetectorError", "FrameMismatchError", "LineOutsideSettingError", "LineNotFoundError",
           "HolePriorError", "HolePriorFileError", "NoSharedHolesError", "MaskMismatchError"]


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


class LmsMeasureError(AstrocalError, ValueError):
    """Bad input to, or failure of, the measurement of LMS frames."""


class LmsFrameError(LmsMeasureError):
    """An LMS frame that cannot be read: not FITS, wrong shape, a header keyword missing."""


class MissingDetectorError(LmsFrameError):
    """An LMS frame without one of its four image extensions ``DET1.DATA`` .. ``DET4.DATA``."""


class FrameMismatchError(LmsMeasureError):
    """Frames that do not belong together (a background of another setting or shape)."""


class LineOutsideSettingError(LmsMeasureError):
    """A laser line outside the wavelength range of the frame's echelle setting."""


class LineNotFoundError(LmsMeasureError):
    """A laser line whose spots are not where the setting puts them (none or too few found)."""


class HolePriorError(AstrocalError, ValueError):
    """The prior of the mask's hole errors cannot be built (:mod:`astrocal.lms.hole_prior`)."""


class HolePriorFileError(HolePriorError):
    """The imager's fit result named as the hole-error prior is missing, unreadable or holds no
    hole errors (fitted without them)."""


class NoSharedHolesError(HolePriorError):
    """The imager's fit and the LMS data share no mask hole: there is nothing to join."""


class MaskMismatchError(HolePriorError):
    """The imager's fit used another mask than the LMS campaign (another table, or the same hole
    ids at other positions)."""
