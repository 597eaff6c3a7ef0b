"""The METIS LM integral-field spectrograph (LMS) geometry.

The map from (slice 1..28, xi along the slice [arcsec], lam [um]) at an echelle setting to
(detector 1..4, col, row) and back, built on the optical model's trace polynomials
(:mod:`~astrocal.lms.traces`, one direction declared the truth in :mod:`~astrocal.lms.nominal`),
the detector mosaic (:mod:`~astrocal.lms.mosaic`), the slicer and field orientation
(:mod:`~astrocal.lms.slicer`) and the as-built deviations that calibration measures, linear in
explicit parameters (:mod:`~astrocal.lms.deviations`), assembled in
:class:`~astrocal.lms.geometry.LmsGeometry`. See ``docs/lms.md``.
"""
from .deviations import DeviationLayout, Hyperparameters, SliceWaves
from .errors import (EchelleSettingError, InversionError, LmsGeometryError, OffDetectorError, OffSliceError,
                     SliceNumberError, WavelengthRangeError)
from .geometry import DetectorPoints, LmsGeometry, SlicePoints
from .mosaic import load_mosaic
from .nominal import NominalMap
from .slicer import DEFAULT_ORIENTATION, FieldOrientation, field_to_slice, slice_to_field
from .traces import EchelleSetting, echelle_setting

__all__ = ["DeviationLayout", "Hyperparameters", "SliceWaves", "EchelleSettingError", "InversionError", "LmsGeometryError",
           "OffDetectorError", "OffSliceError", "SliceNumberError", "WavelengthRangeError", "DetectorPoints",
           "LmsGeometry", "SlicePoints", "load_mosaic", "NominalMap", "DEFAULT_ORIENTATION", "FieldOrientation",
           "field_to_slice", "slice_to_field", "EchelleSetting", "echelle_setting"]
