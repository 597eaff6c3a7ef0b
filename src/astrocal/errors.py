"""The errors astrocal expects: one base class, :class:`AstrocalError`.

An :class:`AstrocalError` is an error of the input or of the environment that astrocal
expects and explains: its message names the file, the key, the column or the row at fault.
The command line prints it as ``astrocal: error: <message>`` and exits with status 1
(as it does for an ``OSError``: a missing file, a permission, a full disk). Any other
exception that reaches the command line is a bug in astrocal: it is printed with its
traceback and the command exits with status 70 (``EX_SOFTWARE``).

Every error class keeps the builtin base it had before the tree existed (``ValueError``
for most, ``KeyError``, ``RuntimeError``, ``OSError``/``FileExistsError`` for a few), so
code that catches the builtin keeps working. A new error class joins the tree here
(``tests/test_errors.py`` checks that every exception class defined in astrocal does).
The tree, by stage (the builtin base in brackets):

* :class:`astrocal.errors.AstrocalError`

  * the campaign, instruments and shared files:
    :class:`astrocal.campaign.CampaignError` [ValueError],
    :class:`astrocal.instruments.InstrumentError` [KeyError] (an unknown instrument,
    filter or readout mode), :class:`astrocal.earth.EarthOrientationError` [ValueError]
    (the IERS and leap-second files), :class:`astrocal.atomic.ProductExistsError`
    [FileExistsError], :class:`astrocal.resultset.IncompleteResultError` [ValueError],
    :class:`astrocal.resultset.ResultLockedError` [RuntimeError],
    :class:`astrocal.resultset.OutsideOutputError` [ValueError]
  * distortion fields and solutions: :class:`astrocal.errors.FieldError` [ValueError] (a
    field, basis, coefficient ordering or detector domain that cannot be built),
    :class:`astrocal.field.inverse.NotOneToOneError` [ValueError] (a field that folds),
    :class:`astrocal.solution.InvalidSolutionError` [ValueError]
  * lab frames (``astrocal measure``): :class:`astrocal.lab.mask.MaskError` [ValueError]
    and its :class:`astrocal.lab.mask.UnknownMaskError` [KeyError],
    :class:`astrocal.image.headers.HeaderError`, :class:`astrocal.image.reduce.ReductionError`,
    :class:`astrocal.lab.identify.IdentificationError`,
    :class:`astrocal.errors.MeasureError` (a frame or table of the measure stage) and its
    :class:`astrocal.sources.SourceTableError` (a source table that breaks the contract of
    :mod:`astrocal.sources`) and :class:`astrocal.sky.exposure.SkyMeasureError` [ValueError]
  * sky fields: :class:`astrocal.sky.sites.SiteError`,
    :class:`astrocal.sky.sites.WeatherError` [ValueError],
    :class:`astrocal.sky.sites.UnknownSiteError` [KeyError],
    :class:`astrocal.sky.match.MatchError`, :class:`astrocal.sky.astrometry.AstrometryError`,
    :class:`astrocal.sky.starlist.StarListError`, :class:`astrocal.sky.catalog.CatalogError`
    [ValueError] and its :class:`astrocal.sky.catalog.CatalogKeyError` [KeyError],
    :class:`astrocal.sky.catalog.CatalogQueryError` [RuntimeError]
  * the fit (``astrocal fit``): :class:`astrocal.model.data.DataError`,
    :class:`astrocal.model.sampling.ChainMismatchError`,
    :class:`astrocal.model.result.ResultFileError`,
    :class:`astrocal.stages.fit.FitOptionError` (options that cannot go together) [ValueError],
    :class:`astrocal.model.chainstore.ChainWriteError` [OSError]
  * the demo (``astrocal demo``): :class:`astrocal.stages.demo.DemoOptionError` (options that cannot go
    together) [ValueError]
  * the LMS geometry: :class:`astrocal.lms.errors.LmsGeometryError` [ValueError] and its
    :class:`astrocal.lms.errors.SliceNumberError`,
    :class:`astrocal.lms.errors.WavelengthRangeError`,
    :class:`astrocal.lms.errors.EchelleSettingError`,
    :class:`astrocal.lms.errors.OffDetectorError`, :class:`astrocal.lms.errors.OffSliceError`,
    :class:`astrocal.lms.errors.InversionError`; the LMS frames' measurement:
    :class:`astrocal.lms.errors.LmsMeasureError` [ValueError] and its
    :class:`astrocal.lms.errors.LmsFrameError`, :class:`astrocal.lms.errors.MissingDetectorError`,
    :class:`astrocal.lms.errors.FrameMismatchError`,
    :class:`astrocal.lms.errors.LineOutsideSettingError`,
    :class:`astrocal.lms.errors.LineNotFoundError`; the LMS fit's input:
    :class:`astrocal.lms.fit_campaign.LmsFitInputError` [ValueError]; the prior of the mask's hole
    errors (the imager's posterior, ``[lms] hole_errors_from``):
    :class:`astrocal.lms.errors.HolePriorError` [ValueError] and its
    :class:`astrocal.lms.errors.HolePriorFileError`, :class:`astrocal.lms.errors.MaskMismatchError`,
    :class:`astrocal.lms.errors.NoSharedHolesError`
  * the simulator (``astrocal simulate``, ``astrocal demo``):
    :class:`astrocal.errors.SimulationOptionError` [ValueError]
  * exchange formats (``astrocal convert``): :class:`astrocal.formats.convert.ConversionError`,
    :class:`astrocal.formats.siaf.SiafFormatError`,
    :class:`astrocal.formats.sip.SipFormatError`,
    :class:`astrocal.formats.astromet.AstroMetFormatError` [ValueError] and its
    :class:`astrocal.formats.astromet.AstroMetFilterError` [KeyError]
  * reports (``astrocal report``): :class:`astrocal.report.requirements.RequirementsError`,
    :class:`astrocal.report.build.ComparisonError` [ValueError]
  * corrections (``astrocal correct``): :class:`astrocal.errors.CorrectionInputError`,
    :class:`astrocal.correct.solutions.SolutionError`,
    :class:`astrocal.correct.starlist.InvalidCovarianceError` [ValueError]

A ``ValueError``, ``KeyError``, ``TypeError`` or ``RuntimeError`` that is not in the tree
is an invariant of astrocal that does not hold (or a use of its Python API that no
command makes): a bug, reported as one.
"""
from __future__ import annotations

__all__ = ["AstrocalError", "CorrectionInputError", "FieldError", "MeasureError", "SimulationOptionError"]


class AstrocalError(Exception):
    """An error of the input or the environment that astrocal expects and explains (a
    named file, key, column or row); the command line reports it with status 1."""


class FieldError(AstrocalError, ValueError):
    """A distortion field, basis or coefficient ordering that cannot be built or evaluated
    as asked (an unknown basis, a wrong number of coefficients, a degree out of range...)."""


class MeasureError(AstrocalError, ValueError):
    """A frame or source table of the measure stage (``astrocal measure``: lab frames,
    sky exposures, source tables) cannot be measured or read; the message names the file."""


class SimulationOptionError(AstrocalError, ValueError):
    """An option of the simulator (``astrocal simulate``, ``astrocal demo``; the settings of
    :mod:`astrocal.sim`) or a file given to it (a distortion solution, a mask, a plan or a
    truth file) that cannot be used; the message names the option or the file."""


class CorrectionInputError(AstrocalError, ValueError):
    """An image or star list given to ``astrocal correct`` (:mod:`astrocal.correct`), or
    one of its options, that cannot be used: no 2-D image HDU, a size that is not the
    solution's detector, columns that change down a list, an output that is the input...;
    the message names the file, the HDU, the column or the option."""
