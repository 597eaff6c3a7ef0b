"""Campaign files: the TOML a user runs (instrument, datasets, fit settings).

A campaign names the instrument, one or more lab datasets (pinhole-mask exposures), zero
or more sky datasets and the fit settings. Paths are relative to the campaign file. The
file is validated on load (:func:`load_campaign`): an unknown key, a missing file, a wrong
unit, a value of the wrong type or a dataset with no exposures is a :class:`CampaignError`
that names the file, the key and the line.

Values with units may be written as numbers in the unit the key names
(``offset_arcsec = [0.35, -0.12]``) or as strings with a unit
(``offset_arcsec = ["350 mas", "-0.12 arcsec"]``), converted with astropy.

A ``[[sky]]`` dataset's ``site`` (a name of astrocal's site table, or a position) is
resolved here to an :class:`astrocal.sky.sites.Site`, which the measure stage and the fit
use and record. ``[[sky]]`` exposures are validated here too (the time parses, the angles and the weather
are in range, at most one of ``position_angle_deg`` / ``rotator_angle_deg``; an epoch
without a clock time has ``zenith_distance_deg`` and ``parallactic_angle_deg`` or
``refraction = false``); their values are kept, converted to plain numbers in the units of
the key names, in :attr:`Exposure.extra` (``time`` as an ISO UTC string, ``clock_time``
false for an epoch: a decimal year, ``"J1995.439"`` or a date). ``[fit]`` holds the flexure model
of the sky data (``flexure_degree``, ``flexure_functions``, ``flexure_radius_arcsec``).

The schema is documented in ``docs/campaign.md`` (every section and key, with an example
per job and the errors; a test loads its examples) and ``docs/sky_measure.md``.

The package's modules, by what they hold: :mod:`~astrocal.campaign.schema` (the loaded
campaign's dataclasses and :class:`CampaignError`), :mod:`~astrocal.campaign.keys` (the keys
each table may hold), :mod:`~astrocal.campaign.values` (reading one value, errors naming the
line), :mod:`~astrocal.campaign.instrument` (``[instrument]`` and its presets),
:mod:`~astrocal.campaign.datasets` (``[[lab]]``, ``[[sky]]`` and their exposures),
:mod:`~astrocal.campaign.sky_exposure` (a sky dataset's site and its exposures' time,
pointing and weather), :mod:`~astrocal.campaign.settings` (``[measure]``, ``[fit]``,
``[earth]``), :mod:`~astrocal.campaign.lms` (``[lms]``) and
:mod:`~astrocal.campaign.load` (:func:`load_campaign`). The names below are the package's
API; import them from ``astrocal.campaign``.
"""
from __future__ import annotations

from .instrument import LMS_INSTRUMENT
from .keys import (DEGREE_CHOICES, EARTH_KEYS, FIELD_PRIORS, FIT_KEYS, GROUND_ONLY_KEYS, INSTRUMENT_KEYS,
                   LAB_EXPOSURE_KEYS, LAB_KEYS, LMS_FRAME_KEYS, LMS_KEYS, LMS_ORIENTATION_KEYS,
                   LMS_SETTING_KEYS, MEASURE_KEYS, RESIDUAL_CHOICES, SITE_KEYS, SKY_EXPOSURE_KEYS,
                   SKY_EXPOSURE_REFUSED, SKY_KEYS, SPACE_ONLY_KEYS, TOP_KEYS)
from .load import load_campaign
from .schema import (LMS_FRAME_KINDS, Campaign, CampaignError, EarthSettings, Exposure, FitSettings,
                     InstrumentSpec, LabDataset, LmsDataset, LmsFrameSpec, MeasureSettings, SkyDataset)
from .sky_exposure import DATE_ONLY, EPOCH_TEXT
from .values import PATH_NAME

# the error's public home (as numpy's ``set_module``): tracebacks, the error tree of
# astrocal.errors and the API reference name astrocal.campaign.CampaignError
CampaignError.__module__ = __name__

__all__ = [
    "Campaign", "CampaignError", "DATE_ONLY", "DEGREE_CHOICES", "EARTH_KEYS", "EPOCH_TEXT", "EarthSettings",
    "Exposure", "FIELD_PRIORS", "FIT_KEYS", "FitSettings", "GROUND_ONLY_KEYS", "INSTRUMENT_KEYS",
    "InstrumentSpec", "LAB_EXPOSURE_KEYS", "LAB_KEYS", "LMS_FRAME_KEYS", "LMS_FRAME_KINDS", "LMS_INSTRUMENT",
    "LMS_KEYS", "LMS_ORIENTATION_KEYS", "LMS_SETTING_KEYS", "LabDataset", "LmsDataset", "LmsFrameSpec",
    "MEASURE_KEYS", "MeasureSettings", "PATH_NAME", "RESIDUAL_CHOICES", "SITE_KEYS", "SKY_EXPOSURE_KEYS",
    "SKY_EXPOSURE_REFUSED", "SKY_KEYS", "SPACE_ONLY_KEYS", "SkyDataset", "TOP_KEYS", "load_campaign",
]
