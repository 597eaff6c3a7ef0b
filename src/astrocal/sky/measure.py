"""The sky measure stage: one sky exposure -> a measured, matched sky table.

For every exposure of every ``[[sky]]`` dataset of a campaign (``astrocal measure``
calls :func:`measure_sky_datasets` after the lab datasets):

1. **stars** -- an *image* (FITS with a 2-D image) is reduced with the lab reduction
   (:func:`astrocal.image.reduce.reduce_frame`: the dataset's optional ``background`` and
   ``flat`` frames, bad, saturated and cold pixels, cosmic rays; without a background
   frame the sky level is removed by the detection's smooth background and the fits'
   local backgrounds), the stars are detected (:func:`astrocal.image.detect.detect_spots`,
   matched filter of the diffraction core, side lobes of bright stars rejected) and
   fitted with a PSF (:func:`astrocal.image.centroid.fit_centroids`: model-weighted,
   neighbours' light subtracted in a joint Gauss-Seidel fit, per-star covariance);
   the PSF is ``[measure] psf = "model"``: the AO-corrected star PSF
   :class:`~astrocal.image.psf.AOStarPSF` (the ELT diffraction core at the exposure's
   wavelength, Strehl ``strehl``, a seeing halo), or ``"epsf"``: an effective PSF built
   from the image's own isolated stars (:func:`astrocal.image.epsf.build_epsf`) after a
   first pass with the model. A *star list* (anything else: ECSV, FITS table, text,
   DAOPHOT, IRAF) is read with :func:`astrocal.sky.starlist.read_star_list` and the
   dataset's column choices; rows outside the detector are dropped (counted).
2. **predicted positions** -- the catalogue stars around the pointing are moved to the
   exposure epoch and projected into the instrument frame
   (:func:`astrocal.sky.astrometry.apparent_positions`) with the exposure's metadata,
   taken from the campaign keys first, then the FITS header (:data:`HEADER_KEYS`), then
   stated defaults (logged, and recorded in the table's ``meta["sources"]``).
3. **matching** (:func:`astrocal.sky.match.match_stars`) -- offset unknown up to the
   field size (the reference covers three field widths around the pointing), any
   rotation when the position angle is unknown, both parities when the parity is
   unknown, scale within 5 %. An unknown position angle and parity are then *measured*
   by the match (``meta["sources"]``: ``"match"``) and the positions recomputed with
   them. When a position angle or parity is given and no match is found with it, an
   unconstrained match is tried: if that succeeds the exposure fails with the angle and
   parity the stars do match (the campaign is wrong), otherwise with what was tried.
4. **write** ``<[measure] output>/<exposure stem>.ecsv`` atomically (refused if it exists,
   unless ``overwrite``); images also get ``<stem>_reduced.fits`` (SCI, DQ, BKGVAR).

The measured sky table (one row per detected source / star-list row):

=========== ====== =====================================================================
column      unit   meaning
=========== ====== =====================================================================
``star``           catalogue name of the matched star; ``""`` when unmatched
``x, y``    pix    centre, **0-based** (centre of the first pixel = 0.0; x along numpy axis 1)
``sigma_x`` pix    1-sigma errors of x and y
``sigma_y`` pix
``cov_xy``  pix2   x-y covariance
``flux``           images: total PSF flux (ADU per DIT, flat-fielded); lists: as given
``flags``          bits of :data:`FLAG_NAMES` (0 = good); reject with ``meta["reject_flags"]``
=========== ====== =====================================================================

plus, for images, ``snr``, ``flux_err``, ``background``, ``chi2_ndof``, ``npix``. The
``meta`` holds (plain types) ``kind = "sky"``, ``dataset``, ``exposure``, ``time`` (ISO
UTC, mid-exposure), ``ra_deg``, ``dec_deg``, exactly one of ``position_angle_deg`` /
``rotator_angle_deg``, ``parity``, ``site`` (name), ``site_info`` (its position, typical
weather and their provenance), ``weather`` (``pressure_hpa``,
``temperature_c``, ``relative_humidity``), ``wavelength_um``, ``catalog`` (as written in
the campaign), ``match_quality``, ``unmatched_catalog_stars`` (names predicted on the
detector without a source), and the provenance (``sources``, ``derived``, counts of
stars outside the field, warnings); see ``docs/sky_measure.md``.

Bad input is an error naming the exposure (and the key or file): no match (with what was
tried), a time that does not parse (naming the key), no time or pointing at all, a
catalogue without proper motions across a long epoch gap and no stated dispersion
(refused with the reason; with a dispersion the errors are inflated and a warning
recorded), a zenith distance given in the campaign that disagrees with the time,
pointing and site. Missing weather takes the site's typical values, stated in the log
and the table's meta.
"""
from __future__ import annotations

import functools
import logging
import math
import re
import time as _time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import astropy.units as u
from astropy.io import fits
from astropy.table import Table
from astropy.time import Time, TimeDelta

from .. import __version__
from ..atomic import ProductExistsError, atomic_write_table, check_writable
from ..errors import AstrocalError
from ..resultset import confined
from ..image import centroid as C
from ..errors import MeasureError
from ..image.frame import (dataset_calibration, exposure_stem, fit_frame_spots,
                           frame_meta, internal_error)
from ..image.psf import ELT_OUTER_DIAMETER_M, RAD_TO_MAS, AOStarPSF, diffraction_psf
from ..image.reduce import DQ_SATURATED, detector_params, read_frame, reduce_frame, write_reduced
from ..plain import to_plain
from ..sources import (FLAG_BLEND, FLAG_NAMES, FLAG_UNIDENTIFIED, FLAGS_REJECT_SKY as FLAGS_REJECT,
                       SKY_COLUMNS as TABLE_COLUMNS, read_sky_table)
from .. import earth
from .astrometry import AstrometryError, apparent_positions, parse_time
from .catalog import CatalogError, load_catalog
from .match import MatchError, match_stars
from .sites import Site, Weather, WeatherError, get_site
from .starlist import StarListError, read_star_list

__all__ = [
    "FLAG_BLEND",
    "FLAG_NAMES",
    "FLAGS_REJECT",
    "TABLE_COLUMNS",
    "HEADER_KEYS",
    "DEFAULT_STREHL",
    "SkyMeasureError",
    "ExposureSetup",
    "resolve_exposure",
    "star_psf",
    "is_image",
    "exposure_header",
    "SPACE_BLEND_RADIUS_PX",
    "measure_sky_exposure",
    "measure_sky_datasets",
    "read_sky_table",
]

log = logging.getLogger(__name__)

#: Strehl ratio of the model PSF when the dataset gives none: an assumption (a bright
#: natural guide star with single-conjugate AO in L band), not a METIS figure. It sets
#: the fraction of the flux in the diffraction core; the halo is nearly flat over a
#: fitting stamp and is absorbed by the local background, so positions barely depend
#: on it.
DEFAULT_STREHL = 0.7
#: seeing (arcsec at 0.5 um) of the model PSF's halo
DEFAULT_SEEING_ARCSEC = 0.7
#: a zenith distance given in the campaign must agree with the computed one to this (deg)
ZENITH_TOLERANCE_DEG = 2.0
#: the reference covers the field shifted by up to this many field widths
SEARCH_FIELDS = 1.0
#: search tolerances of the match (px), tried in this order: the smallest that covers the
#: distortion left by a similarity transform gives the most significant match; with a
#: sparse field (~10 stars) against a wide reference a search at 10 px can miss a pose
#: that 5 px finds (tests/sky/test_measure.py), and 20 px serves strongly distorted fields
MATCH_TOLERANCES_PX = (5.0, 10.0, 20.0)
#: largest false-alarm probability of an accepted match, shared among the tolerances tried
MAX_FALSE_ALARM = 1e-4
#: more detections than this: not a star field (or an unreduced frame)
MAX_DETECTIONS = 20000
#: largest number of neighbour pairs handed to the PSF fit's joint deblending (its memory
#: grows by ~30 kB per pair): beyond, the faintest detections are dropped (a warning)
MAX_NEIGHBOUR_PAIRS = 20000
#: fewest isolated stars to build an ePSF from (else the model PSF is kept). Measured on
#: rendered L-band frames (tests/sky/test_measure.py): with 13 stars the ePSF fit did not
#: converge and the positions scattered 1.6 times their errors, with 63 stars 1.2-1.3
#: times, with 100-130 stars 1.0-1.1 times (the model PSF: 1.0)
MIN_EPSF_STARS = 100

#: where an epoch-only exposure without a zenith distance (refraction off) is placed:
#: (zenith distance, parallactic angle) deg, near the zenith (where the parallactic angle
#: is defined); the positions do not depend on it without refraction, the flexure's
#: zenith functions see z = 1 deg
UNKNOWN_HORIZON = (1.0, 0.0)

#: FITS header keywords read when the campaign does not give a value
HEADER_KEYS = {
    "time": ("DATE-OBS", "MJD-OBS"),  # start of the exposure; + EXPTIME/2 -> mid-exposure
    "exptime": ("EXPTIME",),
    "ra": ("RA", "RA_TARG", "RA_REF"),  # deg (or sexagesimal hours); HST target, JWST reference point
    "dec": ("DEC", "DEC_TARG", "DEC_REF"),  # deg
    "pressure_hpa": ("HIERARCH ESO TEL AMBI PRES START", "HIERARCH ESO TEL AMBI PRES END"),
    "temperature_c": ("HIERARCH ESO TEL AMBI TEMP",),
    "humidity": ("HIERARCH ESO TEL AMBI RHUM",),  # per cent
    "filter": ("FILTER", "HIERARCH ESO DRS FILTER"),
    "parity": ("HIERARCH ASTROCAL PARITY",),  # astrocal's own (astrocal simulate sky)
    # space observatories (HST, JWST)
    "mid_time": ("MJD-AVG", "EXPMID"),  # MJD (UTC) of mid-exposure (JWST)
    "start_end": (("EXPSTART", "EXPEND"),),  # MJD (UTC) of start and end (HST, JWST): their mean
    "position_angle_deg": ("ORIENTAT", "PA_APER"),  # PA of the image +y axis (HST) / the aperture's (JWST)
    "velocity_aberration_scale": ("VAFACTOR", "VA_SCALE"),  # HST, JWST
    "observer_velocity_km_s": (("JWST_DX", "JWST_DY", "JWST_DZ"),),  # barycentric velocity (JWST)
}

#: the blend radius (px) of a star list from space: about the FWHM of a diffraction-limited
#: space imager sampled near Nyquist (WFC3/UVIS 1.8 px in the visible, NIRCam 1.4-2.2 px)
SPACE_BLEND_RADIUS_PX = 2.0

_FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fts.gz", ".fits.fz", ".fz")


class SkyMeasureError(MeasureError):
    """A sky exposure cannot be measured; the message names the exposure (and key/file)."""


# =========================================================================== metadata
@dataclass(frozen=True)
class ExposureSetup:
    """The metadata of one sky exposure, resolved (campaign, then header, then defaults).

    ``time`` mid-exposure (Time); ``ra_deg``, ``dec_deg`` ICRS pointing; at most one of
    ``position_angle_deg`` / ``rotator_angle_deg`` (both None: unknown, measured by the
    match); ``parity`` (+1, -1 or None: measured by the match); ``weather`` complete
    (``pressure_hpa``, ``temperature_c``, ``relative_humidity`` fraction);
    ``wavelength_um``; ``site`` (:class:`~astrocal.sky.sites.Site`); ``zenith_distance_deg``,
    ``parallactic_angle_deg`` given values (or None): checks with a clock time, the
    refraction's geometry without one; ``clock_time``: false when the time is an epoch
    only (a decimal year or a date); ``refraction``: false when switched off (weather
    pressure 0); ``sources``: for every item where it came from; ``notes``: the defaults
    used and the consequences stated (also logged). In space (:attr:`space`): no weather
    (empty), no refraction, the wavelength NaN unless given, and ``aberration`` the
    observatory's velocity or scale factor for
    :func:`~astrocal.sky.astrometry.resolve_aberration` (None: the Earth's velocity).
    """

    time: Time
    ra_deg: float
    dec_deg: float
    position_angle_deg: float | None
    rotator_angle_deg: float | None
    parity: int | None
    weather: dict
    wavelength_um: float
    site: Site
    zenith_distance_deg: float | None = None
    sources: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    clock_time: bool = True
    parallactic_angle_deg: float | None = None
    refraction: bool = True
    aberration: dict | None = None

    @property
    def space(self) -> bool:
        """The observatory is in space (:class:`~astrocal.sky.sites.SpaceSite`)."""
        return bool(getattr(self.site, "is_space", False))

    @property
    def horizon(self):
        """``(zenith distance, parallactic angle)`` (deg) that place the field for
        :func:`~astrocal.sky.astrometry.apparent_positions` when the time is an epoch
        without a clock time (None with a clock time, and in space). Without a zenith distance
        (refraction off) the field is placed near the zenith (:data:`UNKNOWN_HORIZON`)."""
        if self.clock_time or self.space:
            return None
        if self.zenith_distance_deg is None:
            return UNKNOWN_HORIZON
        return (float(self.zenith_distance_deg), float(self.parallactic_angle_deg or 0.0))


def _header_value(header, keys):
    """(key, value) of the first of ``keys`` present in ``header`` (None, None if none)."""
    if header is None:
        return None, None
    for key in keys:
        name = key[9:] if key.startswith("HIERARCH ") else key
        if name in header:
            value = header[name]
            if value is None or (isinstance(value, str) and not value.strip()):
                continue
            return key, value
    return None, None


def _header_time(header, source):
    """Mid-exposure time from the header; (Time, source) or None: ``MJD-AVG`` / ``EXPMID``
    (JWST, MJD of mid-exposure), the mean of ``EXPSTART`` and ``EXPEND`` (HST, JWST: MJD),
    else DATE-OBS (or MJD-OBS) plus EXPTIME/2."""
    key, value = _header_value(header, HEADER_KEYS["mid_time"])
    if key is None:
        pair = [_header_value(header, (k,)) for k in HEADER_KEYS["start_end"][0]]
        if all(k is not None for k, _ in pair):
            key, value = "EXPSTART/EXPEND", [v for _, v in pair]
    if key is not None:
        try:
            mjd = float(np.mean([float(v) for v in np.atleast_1d(value)]))
            return Time(mjd, format="mjd", scale="utc"), f"header {key} (MJD, mid-exposure)"
        except (TypeError, ValueError):
            raise SkyMeasureError(f"{source}: header keyword {key}: not an MJD ({value!r})") from None
    key, value = _header_value(header, HEADER_KEYS["time"])
    if key is None:
        return None
    text = str(value).strip()
    if key == "DATE-OBS" and re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        # the old FITS convention: the date here, the time of day in TIME-OBS (or UT)
        tkey, tod = _header_value(header, ("TIME-OBS", "UT"))
        if tkey is None:
            raise SkyMeasureError(f"{source}: header keyword DATE-OBS = {value!r} has no time of day "
                                  "(and no TIME-OBS or UT keyword); give 'time' in the campaign")
        text, key = f"{text}T{str(tod).strip()}", f"DATE-OBS + {tkey}"
    try:
        if key == "MJD-OBS":
            t = Time(float(value), format="mjd", scale="utc")
        else:
            t = parse_time(text, key)
    except (AstrometryError, ValueError, TypeError):
        raise SkyMeasureError(f"{source}: header keyword {key}: cannot parse {value!r} as a "
                              "time (expected ISO 8601 UTC such as '2026-05-01T04:00:00')") from None
    _, exptime = _header_value(header, HEADER_KEYS["exptime"])
    how = f"header {key}"
    if exptime is not None:
        try:
            half = 0.5 * float(exptime)
        except (TypeError, ValueError):
            raise SkyMeasureError(f"{source}: header keyword EXPTIME: not a number ({exptime!r})") from None
        if half > 0:
            t = t + TimeDelta(half, format="sec")
            how += " + EXPTIME/2 (mid-exposure)"
    return t, how


def _header_angle(header, name, source):
    key, value = _header_value(header, HEADER_KEYS[name])
    if key is None:
        return None, None
    from astropy.coordinates import Angle

    try:
        if isinstance(value, str):
            text = value.strip()
            unit = None if any(c.isalpha() for c in text) else (
                u.hourangle if (name == "ra" and ":" in text) else u.deg)
            deg = float(Angle(text, unit=unit).to_value(u.deg))
        else:
            deg = float(value)
    except (ValueError, TypeError, u.UnitsError):
        raise SkyMeasureError(f"{source}: header keyword {key}: cannot read {value!r} as an "
                              "angle (deg)") from None
    if not np.isfinite(deg) or (name == "dec" and abs(deg) > 90):
        raise SkyMeasureError(f"{source}: header keyword {key}: {value!r} is not a valid {name}")
    return deg % 360.0 if name == "ra" else deg, f"header {key}"


def _filter_wavelength(name, preset):
    """Centre wavelength (um) of a filter of the instrument, or of L/M/N; None if unknown."""
    from ..instruments import get_instrument
    from ..image.psf import FILTER_WAVELENGTH_UM

    if name is None:
        return None
    if preset is not None:
        try:
            return float(get_instrument(preset).filter(str(name)).center_um)
        except KeyError:
            pass
    value = FILTER_WAVELENGTH_UM.get(str(name))
    return None if value is None else float(value)


def resolve_exposure(values, header=None, *, site="armazones", filter=None, preset=None,
                     source="<exposure>") -> ExposureSetup:
    """Resolve a sky exposure's metadata: ``values`` (the campaign's exposure keys, as in
    :attr:`astrocal.campaign.Exposure.extra`) first, then ``header`` (:data:`HEADER_KEYS`),
    then stated defaults (logged): the site's typical weather; the wavelength of the
    dataset's ``filter``, the header's filter or the instrument's (``preset``) default
    filter. Time and pointing have no default: missing, they raise
    :class:`SkyMeasureError` naming the exposure and the keys looked for.
    """
    values = dict(values or {})
    sources, notes = {}, []
    site_obj = get_site(site)

    # ---- time (mid-exposure)
    clock = bool(values.get("clock_time", True))
    if "time" in values:
        try:
            t = parse_time(values["time"], "time")
        except AstrometryError as exc:
            raise SkyMeasureError(f"{source}: campaign key 'time': {exc}") from None
        sources["time"] = "campaign" if clock else "campaign (an epoch without a clock time)"
    else:
        got = _header_time(header, source)
        if got is None:
            raise SkyMeasureError(
                f"{source}: no exposure time: give 'time' (mid-exposure, UTC) in the campaign's "
                f"exposure{'' if header is None else ' or DATE-OBS in the FITS header'}")
        t, sources["time"] = got

    # ---- pointing
    pointing = {}
    for name in ("ra", "dec"):
        if name in values:
            pointing[name] = float(values[name])
            sources[name] = "campaign"
        else:
            deg, how = _header_angle(header, name, source)
            if deg is None:
                raise SkyMeasureError(
                    f"{source}: no pointing {name}: give 'ra' and 'dec' (deg) in the campaign's "
                    f"exposure{'' if header is None else ' or RA/DEC (deg) in the FITS header'}")
            pointing[name] = deg
            sources[name] = how

    # ---- angles and parity (campaign only; else measured by the match)
    space = bool(site_obj.is_space)
    pa = values.get("position_angle_deg")
    rot = values.get("rotator_angle_deg")
    if pa is not None and rot is not None:
        raise SkyMeasureError(f"{source}: give at most one of position_angle_deg and rotator_angle_deg")
    if space and rot is not None:
        raise SkyMeasureError(f"{source}: site {site_obj.name} is in space: no rotator angle (no zenith); give "
                              "position_angle_deg")
    hkey = None
    if space and pa is None and rot is None:
        hkey, hpa = _header_value(header, HEADER_KEYS["position_angle_deg"])
        if hkey is not None:
            try:
                pa = float(hpa)
            except (TypeError, ValueError):
                raise SkyMeasureError(f"{source}: header keyword {hkey}: not an angle ({hpa!r})") from None
    if pa is not None:
        sources["position_angle_deg"] = "campaign" if hkey is None else f"header {hkey}"
    elif rot is not None:
        sources["rotator_angle_deg"] = "campaign"
    else:
        sources["position_angle_deg"] = "match"
        notes.append("no position_angle_deg or rotator_angle_deg: the position angle is measured by "
                     "the match (any rotation searched)")
    parity = values.get("parity")
    pkey = "campaign"
    if parity is None:
        key, parity = _header_value(header, HEADER_KEYS["parity"])
        pkey = f"header {key}"
    if parity is not None:
        try:
            parity = int(parity)
        except (TypeError, ValueError):
            parity = None if pkey == "campaign" else str(parity)
        if parity not in (1, -1):
            raise SkyMeasureError(f"{source}: {pkey}: parity must be +1 or -1, got {parity!r}")
        sources["parity"] = pkey
    else:
        sources["parity"] = "match"
        notes.append("no parity: measured by the match (both parities searched)")

    # ---- weather: campaign, header, site defaults (none in space)
    weather, wsrc = {}, {}
    aberration = None
    if space:
        aberration, sources["velocity_aberration"] = _space_aberration(values, header, source)
        sources["weather"] = "none: an observatory in space"
        sources["refraction"] = "none: an observatory in space"
    for name, target in (() if space else (("pressure_hpa", "pressure_hpa"), ("temperature_c", "temperature_c"),
                                           ("humidity", "relative_humidity"))):
        if name in values:
            weather[target] = float(values[name])
            wsrc[target] = "campaign"
            continue
        keys = HEADER_KEYS[name]
        found = [(k, v) for k in keys for (k2, v) in [_header_value(header, (k,))] if k2 is not None]
        if found:
            try:
                vals = [float(v) for _, v in found]
            except (TypeError, ValueError):
                raise SkyMeasureError(f"{source}: header keyword {found[0][0]}: not a number "
                                      f"({found[0][1]!r})") from None
            value = float(np.mean(vals))
            if name == "humidity":
                value /= 100.0  # ESO TEL AMBI RHUM is in per cent
            weather[target] = value
            wsrc[target] = "header " + " / ".join(k for k, _ in found) + (
                " (mean)" if len(found) > 1 else "") + (" (per cent / 100)" if name == "humidity" else "")
            continue
        weather[target] = float(getattr(site_obj, target))
        wsrc[target] = f"default: typical value of site {site_obj.name}"
    missing = [k for k, v in wsrc.items() if v.startswith("default")]
    if space:
        return _space_setup(values, filter, preset, t, pointing, pa, parity, site_obj, sources, notes, clock,
                            aberration)
    if missing:
        msg = (f"weather {', '.join(missing)} not given (campaign or header): the typical values of "
               f"site {site_obj.name} are used: " + ", ".join(f"{k} = {weather[k]:g}" for k in missing))
        notes.append(msg)
        log.warning("%s: %s", source, msg)
    try:
        Weather(weather["pressure_hpa"], weather["temperature_c"], weather["relative_humidity"])
    except WeatherError as exc:
        raise SkyMeasureError(f"{source}: {exc} (from {wsrc})") from None
    refraction = values.get("refraction", True) is not False and weather["pressure_hpa"] > 0
    if not refraction and values.get("refraction") is False:
        weather["pressure_hpa"] = 0.0
        wsrc["pressure_hpa"] = "campaign: refraction = false"
    sources["weather"] = wsrc
    zd_given, q_given = values.get("zenith_distance_deg"), values.get("parallactic_angle_deg")
    if not clock:
        if refraction and (zd_given is None or q_given is None):
            raise SkyMeasureError(f"{source}: the time is an epoch without a clock time: give "
                                  "zenith_distance_deg and parallactic_angle_deg (refraction is computed "
                                  "at them) or refraction = false")
        sources["horizon"] = ("campaign zenith_distance_deg and parallactic_angle_deg (no clock time)"
                              if zd_given is not None else
                              "unknown (no clock time, refraction off): the field placed near the zenith "
                              f"(UNKNOWN_HORIZON, z = {UNKNOWN_HORIZON[0]:g} deg)")

    # ---- wavelength: campaign, dataset filter, header filter, instrument default filter
    wl = values.get("wavelength_um")
    if wl is not None:
        sources["wavelength_um"] = "campaign"
    elif filter is not None:
        wl = _filter_wavelength(filter, preset)
        if wl is None:
            raise SkyMeasureError(f"{source}: filter '{filter}' of the dataset: unknown wavelength "
                                  f"(instrument {preset!r}); give wavelength_um in the campaign")
        sources["wavelength_um"] = f"centre of the dataset's filter {filter}"
    else:
        key, hfilt = _header_value(header, HEADER_KEYS["filter"])
        wl = _filter_wavelength(hfilt, preset) if key is not None else None
        if wl is not None:
            sources["wavelength_um"] = f"centre of filter {hfilt} (header {key})"
        else:
            from ..instruments import get_instrument

            if preset is None:
                raise SkyMeasureError(f"{source}: no wavelength: give wavelength_um or the dataset's "
                                      "filter in the campaign")
            f0 = get_instrument(preset).filter(None)
            wl = float(f0.center_um)
            msg = (f"no wavelength_um and no filter known: the centre of {preset}'s default filter "
                   f"{f0.name}, {wl:g} um, is used")
            notes.append(msg)
            log.warning("%s: %s", source, msg)
            sources["wavelength_um"] = f"default: {preset} default filter {f0.name}"

    return ExposureSetup(time=t, ra_deg=pointing["ra"], dec_deg=pointing["dec"],
                         position_angle_deg=None if pa is None else float(pa),
                         rotator_angle_deg=None if rot is None else float(rot), parity=parity,
                         weather=weather, wavelength_um=float(wl), site=site_obj,
                         zenith_distance_deg=None if zd_given is None else float(zd_given), sources=sources,
                         notes=notes, clock_time=clock,
                         parallactic_angle_deg=None if q_given is None else float(q_given),
                         refraction=refraction)


def _space_aberration(values, header, source):
    """(aberration, source) of a space exposure: the campaign's ``observer_velocity_km_s`` or
    ``velocity_aberration_scale``, else the header's velocity (JWST_DX/DY/DZ) or scale factor
    (VAFACTOR, VA_SCALE), else None (the Earth's velocity,
    :func:`~astrocal.sky.astrometry.resolve_aberration`)."""
    if values.get("observer_velocity_km_s") is not None:
        return {"velocity_km_s": list(values["observer_velocity_km_s"]), "source": "campaign"}, "campaign"
    if values.get("velocity_aberration_scale") is not None:
        return {"scale": float(values["velocity_aberration_scale"]), "source": "campaign"}, "campaign"
    found = [_header_value(header, (k,)) for k in HEADER_KEYS["observer_velocity_km_s"][0]]
    try:
        if all(k is not None for k, _ in found):
            how = "header " + "/".join(k for k, _ in found)
            return {"velocity_km_s": [float(v) for _, v in found], "source": how}, how
        key, value = _header_value(header, HEADER_KEYS["velocity_aberration_scale"])
        if key is not None:
            return {"scale": float(value), "source": f"header {key}"}, f"header {key}"
    except (TypeError, ValueError):
        raise SkyMeasureError(f"{source}: header velocity aberration keywords are not numbers") from None
    return None, ("default: the Earth's barycentric velocity (the observatory's own velocity about the Earth "
                  "is not included: up to 2.5e-5 in scale in a low orbit)")


def _space_setup(values, filter, preset, t, pointing, pa, parity, site, sources, notes, clock, aberration):
    """The :class:`ExposureSetup` of an exposure from space: no weather, no refraction, the
    wavelength only when given (it enters nothing)."""
    wl = values.get("wavelength_um")
    if wl is not None:
        sources["wavelength_um"] = "campaign"
    else:
        wl = _filter_wavelength(filter, preset) if filter is not None else None
        sources["wavelength_um"] = ("not needed (no atmosphere)" if wl is None
                                    else f"centre of the dataset's filter {filter}")
    if not clock:
        sources["horizon"] = "none: an observatory in space"
    if aberration is None:
        notes.append("no velocity aberration given (campaign velocity_aberration_scale or observer_velocity_km_s, "
                     "header VAFACTOR / VA_SCALE / JWST_DX..): the Earth's barycentric velocity is used; the "
                     "observatory's own velocity about the Earth is left out (up to 2.5e-5 in scale)")
    return ExposureSetup(time=t, ra_deg=pointing["ra"], dec_deg=pointing["dec"],
                         position_angle_deg=None if pa is None else float(pa), rotator_angle_deg=None,
                         parity=parity, weather={}, wavelength_um=float("nan") if wl is None else float(wl),
                         site=site, sources=sources, notes=notes, clock_time=clock, refraction=False,
                         aberration=aberration)


# =========================================================================== PSF
@functools.lru_cache(maxsize=8)
def _core(wavelength_um, pixel_scale_mas):
    return diffraction_psf(wavelength_um, pixel_scale_mas)


def star_psf(wavelength_um, pixel_scale_mas, strehl=DEFAULT_STREHL,
             seeing_arcsec=DEFAULT_SEEING_ARCSEC) -> AOStarPSF:
    """The model PSF of an AO-corrected star: :class:`~astrocal.image.psf.AOStarPSF`, the ELT
    diffraction core (point source, pixel-integrated, cached per wavelength and scale)
    with Strehl ``strehl`` and a Moffat halo of the seeing (arcsec at 0.5 um, scaled by
    lambda^-1/5).

    The halo is evaluated analytically (not tabulated): a table of the core's extent
    (+-37 px) would cut the broad halo (FWHM ~85 px in L band) with a step that the
    joint fit subtracts inside the stamps of neighbours (measured on a simulated Galactic
    Center frame: pulls of 2.0 instead of 1.2).
    """
    core = _core(round(float(wavelength_um), 6), round(float(pixel_scale_mas), 6))
    return AOStarPSF.from_seeing(core, float(strehl), seeing_arcsec=seeing_arcsec)


def _fwhm_px(wavelength_um, pixel_scale_mas):
    """1.03 lambda/D of the ELT in pixels (the blend radius of star lists)."""
    return 1.03 * wavelength_um * 1e-6 / ELT_OUTER_DIAMETER_M * RAD_TO_MAS / pixel_scale_mas


# =========================================================================== stars
def exposure_header(path, source="<exposure>") -> fits.Header:
    """The headers of a FITS file as one: the primary header's cards, then those of the
    extensions that the primary lacks (HST and JWST keep the time and pointing in the
    primary, VAFACTOR / VA_SCALE and the WCS in the science extension). The ``header`` of a
    star list's exposure: the image it was measured on."""
    try:
        with fits.open(path) as hdul:
            merged = hdul[0].header.copy()
            for hdu in hdul[1:]:
                for card in hdu.header.cards:
                    if card.keyword and card.keyword not in merged and card.keyword not in ("COMMENT", "HISTORY"):
                        merged.append(card)
    except (OSError, ValueError) as exc:
        raise SkyMeasureError(f"{source}: header file {path}: cannot read as FITS ({exc})") from None
    return merged


def is_image(path) -> bool:
    """True if ``path`` is a FITS file with a 2-D image (else it is read as a star list)."""
    p = Path(path)
    if not any(p.name.lower().endswith(s) for s in _FITS_SUFFIXES):
        return False
    try:
        with fits.open(p, memmap=True) as hdul:
            return any(h.is_image and h.header.get("NAXIS", 0) == 2 for h in hdul)
    except OSError:
        return True  # the image reader reports the problem


def _image_stars(path, setup, *, pixel_scale_mas, preset, strehl, calibration, psf_mode,
                 detect_threshold, source, rules=None):
    """Reduce, detect and fit the stars of an image; returns (CentroidResult, reduced,
    header, meta, psf)."""
    raw, header = read_frame(path, "sky exposure")
    em, note = frame_meta(header, path, rules if rules is not None else preset)  # header rules
    warns = [note] if note else []
    params = detector_params(em, preset, source=str(path))
    given = strehl is not None
    strehl = DEFAULT_STREHL if strehl is None else float(strehl)
    psf = star_psf(setup.wavelength_um, pixel_scale_mas, strehl)
    reduced = reduce_frame(raw, calibration, params, psf=psf.core, source=str(path))
    del raw
    det_mask = (reduced.dq & ~np.uint8(DQ_SATURATED)) != 0
    from ..image.detect import detect_spots

    # the smooth background is always removed before detecting (also after a background
    # frame): the seeing halos of bright stars are broad pedestals on which every noise
    # bump would be a maximum above the threshold (measured: 4822 detections instead of
    # 161 on a simulated Galactic Center frame with ~50 stars)
    det = detect_spots(reduced.data, psf.core, mask=det_mask, variance=reduced.total_variance(),
                       threshold=detect_threshold, subtract_background=True,
                       saturated=(reduced.dq & DQ_SATURATED) != 0)
    if len(det) > MAX_DETECTIONS:
        raise SkyMeasureError(f"{source}: {len(det)} sources above {detect_threshold:g} sigma: not a "
                              "star field, or the background is not removed")
    if len(det) < 3:
        raise SkyMeasureError(f"{source}: {len(det)} source(s) above {detect_threshold:g} sigma "
                              f"(filtered noise {det.meta['noise']:.3g} ADU): no star field to match")
    det = _limit_neighbour_pairs(det, psf, warns, source)
    res = fit_frame_spots(reduced, np.asarray(det["x"], float), np.asarray(det["y"], float), psf)
    psf_meta = {"kind": "ao_star_model", "strehl": float(strehl),
                "strehl_source": "dataset" if given else "default (assumed)",
                "halo_fwhm_px": float(psf.halo_fwhm_px), "wavelength_um": setup.wavelength_um,
                "fwhm_px": float(psf.fwhm()), "stamp_size": int(res.meta["stamp_size"])}
    used = psf
    if psf_mode == "epsf":
        res, used, psf_meta = _epsf_refit(reduced, res, psf, psf_meta, warns)
    meta = {"detection": {**{k: det.meta[k] for k in ("noise", "threshold", "n_maxima", "n_merged",
                                                        "n_sidelobes", "good_fraction")},
                          "n_detected": len(det), "n_dropped_crowding": det.meta.get("n_dropped_crowding", 0),
                          "smooth_background_subtracted": True},
            "psf": psf_meta, "detector": params.to_dict(),
            "reduction": {k: v for k, v in reduced.meta.items() if k != "detector"},
            "noise_model": {"gain_eff_e_per_adu": params.gain_eff,
                            "extra_variance": "BKGVAR extension of the reduced image"},
            "frame_warnings": warns}
    return res, reduced, header, meta, used


def _limit_neighbour_pairs(det, psf, warns, source):
    """The brightest detections whose neighbour pairs (sources within the PSF model's reach
    of each other, which the fit's joint deblending handles pair by pair, ~30 kB each) stay
    below MAX_NEIGHBOUR_PAIRS; the fainter ones are dropped with a warning."""
    from scipy.spatial import cKDTree

    size = int(psf.default_stamp_size())
    reach = float(psf.half_width) + size // 2 + 1.0  # as in fit_centroids
    xy = np.column_stack([np.asarray(det["x"], float), np.asarray(det["y"], float)])

    def n_pairs(n):
        return len(cKDTree(xy[:n]).query_pairs(reach, p=np.inf, output_type="ndarray")) if n > 1 else 0

    if n_pairs(len(xy)) <= MAX_NEIGHBOUR_PAIRS:
        return det
    lo, hi = 2, len(xy)  # detections are brightest first: the largest prefix that fits
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if n_pairs(mid) <= MAX_NEIGHBOUR_PAIRS else (lo, mid)
    msg = (f"{len(xy)} detections are too crowded for the joint fit ({n_pairs(len(xy))} neighbour pairs "
           f"within {reach:.0f} px, limit {MAX_NEIGHBOUR_PAIRS}): the {lo} brightest are fitted, "
           f"{len(xy) - lo} fainter ones dropped")
    warns.append(msg)
    log.warning("%s: %s", source, msg)
    out = det[:lo]
    out.meta["n_dropped_crowding"] = len(xy) - lo
    return out


def _epsf_refit(reduced, res, model, model_meta, warns):
    """ePSF from the image's isolated clean stars, all stars refitted with it; the model
    PSF is kept (with a warning) when there are fewer than MIN_EPSF_STARS such stars or
    the build does not converge. Returns (result, psf, psf meta)."""
    from ..image.epsf import build_epsf

    iso = ((res.flags & (FLAGS_REJECT | C.FLAG_EDGE | C.FLAG_MASKED | C.FLAG_CROWDED)) == 0
           & np.isfinite(res.x) & (res.snr > 20))
    n_iso = int(iso.sum())
    if n_iso < MIN_EPSF_STARS:
        warns.append(f"ePSF not built: {n_iso} isolated clean stars (need {MIN_EPSF_STARS}); "
                     "the model PSF is used")
        return res, model, model_meta
    fit = build_epsf(reduced.data, (res.x[iso], res.y[iso]),
                     noise=reduced.noise_model(dtype=np.float32), masks=reduced.mask)
    if not fit.converged:
        warns.append(f"ePSF from {n_iso} stars did not converge in {fit.n_iter} iterations; the "
                     "model PSF is used")
        return res, model, model_meta
    epsf = fit.psf
    x0 = np.where(np.isfinite(res.x), res.x, res.x_guess)
    y0 = np.where(np.isfinite(res.y), res.y, res.y_guess)
    new = fit_frame_spots(reduced, x0, y0, epsf, stamp_size=epsf.meta.get("stamp_size"))
    new.x_guess, new.y_guess = res.x_guess, res.y_guess
    meta = {"kind": "epsf", "n_stars": n_iso, "model_first_pass": model_meta,
            **{k: v for k, v in epsf.meta.items() if k != "kind"}, "build_history": fit.history}
    return new, epsf, meta


def _list_stars(path, dataset, shape, source):
    """Read a star list with the dataset's column choices; drop rows off the detector."""
    try:
        t = read_star_list(path, x_col=dataset.x_col, y_col=dataset.y_col, flux_col=dataset.flux_col,
                           mag_col=getattr(dataset, "mag_col", None), sigma_x_col=dataset.sigma_x_col,
                           sigma_y_col=dataset.sigma_y_col, one_based=dataset.one_based)
    except StarListError as exc:
        raise SkyMeasureError(f"{source}: {exc}") from None
    ny, nx = shape
    x = np.asarray(t["x"], float)
    y = np.asarray(t["y"], float)
    inside = (x >= -0.5) & (x <= nx - 0.5) & (y >= -0.5) & (y <= ny - 0.5)
    n_out = int(np.count_nonzero(~inside))
    if n_out:
        rows = np.flatnonzero(~inside)
        log.warning("%s: %d star(s) of the list lie outside the %d x %d px detector and are dropped "
                    "(rows %s)", source, n_out, nx, ny, rows[:10].tolist())
    meta = dict(t.meta)
    t = t[inside]
    t.meta = meta
    if len(t) < 3:
        raise SkyMeasureError(f"{source}: {len(t)} star(s) of the list on the {nx} x {ny} px detector "
                              f"({n_out} outside): nothing to match")
    return t, n_out, np.flatnonzero(~inside)


# =========================================================================== prediction
def _predict(catalog, setup, *, position_angle, rotator_angle, parity, search_radius_arcsec,
             source):
    """apparent_positions of the catalogue stars near the pointing; (fp, warnings)."""
    center = (setup.ra_deg, setup.dec_deg)
    try:
        near = catalog.within(center, search_radius_arcsec)
    except CatalogError:
        raise SkyMeasureError(
            f"{source}: the catalogue {catalog.source} has no star within {search_radius_arcsec:.1f} "
            f"arcsec of the pointing (ra {setup.ra_deg:.6f}, dec {setup.dec_deg:.6f} deg): wrong "
            "pointing or catalogue?") from None
    caught = []
    try:
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            fp = apparent_positions(near, time=setup.time, pointing=center,
                                    wavelength=setup.wavelength_um, position_angle=position_angle,
                                    rotator_angle=rotator_angle, site=setup.site,
                                    weather=setup.weather, parity=parity, horizon=setup.horizon,
                                    aberration=setup.aberration)
        for w in rec:  # epoch gaps (EpochGapWarning), refraction near the horizon...
            if issubclass(w.category, UserWarning):
                caught.append(str(w.message))
                log.warning("%s: %s", source, w.message)
    except (AstrometryError, WeatherError, CatalogError) as exc:
        raise SkyMeasureError(f"{source}: catalogue {catalog.source}: {exc}") from None
    return fp, caught


# =========================================================================== matching
def _rank_band(catalog, names, band):
    """The catalogue magnitudes that rank the stars ``names`` by brightness for the match:
    ``(band, magnitudes, same_band)``. The dataset's ``band`` (the list's own band: also the
    flux checks), else the catalogue's band with the most magnitudes among these stars (any
    band ranks the brightest stars of a field; the flux checks are then off), else
    ``(None, None, False)``."""
    if band is not None:
        return band, catalog.mag(band)[_name_index(catalog.names, names)], True
    best, count = None, 0
    rows = _name_index(catalog.names, names)
    for b in catalog.bands:
        n = int(np.count_nonzero(np.isfinite(catalog.mag(b)[rows])))
        if n > count:
            best, count = b, n
    if best is None or count < 3:
        return None, None, False
    return best, catalog.mag(best)[rows], False


def _match(stars, fp, *, box_arcsec, setup, pixel_scale_mas, shape, blend_radius_px, mags, source,
           same_band=True, rank_band=None):
    """match_stars of the measured stars to the predicted positions (see the module notes);
    returns (MatchResult, reference rows used (into fp)). ``mags``: the catalogue magnitudes
    (per row of ``fp``) of ``rank_band``; ``same_band``: they are of the list's band (pair
    votes and flux checks use the magnitude differences), else they only rank the stars by
    brightness (brightest first)."""
    hw, hh = box_arcsec
    ref_rows = np.flatnonzero(fp.inside(hw, hh))
    if ref_rows.size < 3:
        raise SkyMeasureError(f"{source}: only {ref_rows.size} catalogue star(s) predicted within "
                              f"+-{hw:.1f} x +-{hh:.1f} arcsec of the pointing: nothing to match")
    ref = Table({"x": fp.x[ref_rows] * u.arcsec, "y": fp.y[ref_rows] * u.arcsec})
    if mags is not None:
        ref["mag"] = mags[ref_rows]
    common = dict(pixel_scale_mas=pixel_scale_mas, scale_tolerance=0.05, detector_shape=shape,
                  blend_radius_px=blend_radius_px, max_offset=None,
                  ref_mag_col="mag" if mags is not None else None,
                  flux_col="flux" if (mags is not None and "flux" in stars.colnames) else None)
    if mags is not None and not same_band:  # another band: brightness ranks only
        common.update(mag_tolerance=None, flux_check="off")
    if mags is None and "flux" in stars.colnames:
        stars = stars.copy(copy_data=False)
        stars.remove_column("flux")  # no magnitudes: match on positions only
    angle_known = setup.position_angle_deg is not None or setup.rotator_angle_deg is not None
    parity_known = setup.parity is not None
    constrained = dict(rotation=0.0 if angle_known else None, rotation_tolerance=5 * u.deg,
                       parity=1 if parity_known else None)
    what = (f"pointing ra {setup.ra_deg:.6f}, dec {setup.dec_deg:.6f} deg, time {setup.time.utc.isot}, "
            f"{ref_rows.size} catalogue stars within +-{hw:.1f} x +-{hh:.1f} arcsec of it")

    def ladder(**kw):
        """match_stars at each search tolerance of MATCH_TOLERANCES_PX, the false-alarm
        limit shared among them; the first accepted match, or MatchError with them all."""
        failures = []
        for tol in MATCH_TOLERANCES_PX:
            try:
                res = match_stars(stars, ref, **common, **kw, tolerance_px=tol,
                                  max_false_alarm=MAX_FALSE_ALARM / len(MATCH_TOLERANCES_PX))
                res.quality["search_tolerance_px"] = float(tol)
                return res
            except MatchError as exc:
                failures.append(f"[search tolerance {tol:g} px] {exc}")
        raise MatchError(" ".join(failures))

    def advice():
        """What to try, when the two lists could not be ranked by brightness."""
        n_list, n_cat = len(stars), int(np.count_nonzero(fp.inside(*_field_half(shape, pixel_scale_mas))))
        if mags is not None and "flux" in stars.colnames:
            return ""
        ratio = max(n_list, 1) / max(n_cat, 1)
        side = ("the star list has no fluxes or magnitudes (name them: flux_col, mag_col)" if "flux" not in
                stars.colnames else "the catalogue has no magnitudes in any band (columns mag_<band>)")
        dense = (f" The lists differ in depth: {n_list} sources against about {n_cat} catalogue stars on the "
                 "detector." if ratio > 3 or ratio < 1 / 3 else "")
        return (f" The match used positions only: {side}.{dense} With brightness on both sides (any bands) the "
                "brightest stars of each are matched first; else cut the deeper list to the other's depth.")

    try:
        return ladder(**constrained), ref_rows
    except MatchError as first:
        if not (angle_known or parity_known):
            raise SkyMeasureError(f"{source}: no match to the catalogue ({what}): {first}{advice()}") from None
        try:
            free = ladder(rotation=None, parity=None)
        except MatchError as second:
            raise SkyMeasureError(
                f"{source}: no match to the catalogue ({what}); with the campaign's "
                f"{'angle' if angle_known else ''}{' and ' if angle_known and parity_known else ''}"
                f"{'parity' if parity_known else ''}: {first}; with any rotation and both parities: "
                f"{second}{advice()}") from None
        sim = free.similarity
        p_match = (setup.parity or 1) * sim.parity
        turn = -p_match * sim.rotation_deg  # instrument frame of the stars minus the campaign's
        if setup.position_angle_deg is not None:
            found = f"position_angle_deg = {_wrap180(setup.position_angle_deg + turn):.2f}"
        elif setup.rotator_angle_deg is not None:
            found = f"rotator_angle_deg = {_wrap180(setup.rotator_angle_deg + turn):.2f}"
        else:
            found = ""
        campaign = ", ".join(
            ([f"position_angle_deg = {setup.position_angle_deg:g}"] if setup.position_angle_deg is not None
             else [f"rotator_angle_deg = {setup.rotator_angle_deg:g}"] if angle_known else [])
            + ([f"parity = {setup.parity:+d}"] if parity_known else []))
        raise SkyMeasureError(
            f"{source}: the stars match the catalogue only with a different orientation: parity "
            f"{p_match:+d}{', ' + found if found else ''} (the instrument frame turned by "
            f"{_wrap180(turn):.2f} deg from the campaign's {campaign}); {free.n_matched} stars "
            f"matched. Check position_angle_deg / rotator_angle_deg and parity ({what})") from None


def _wrap180(deg):
    return float((deg + 180.0) % 360.0 - 180.0)


def _field_half(shape, pixel_scale_mas):
    """Half the detector's width and height on the sky (arcsec, nominal scale)."""
    ny, nx = shape
    return nx * pixel_scale_mas / 2e3, ny * pixel_scale_mas / 2e3


def _refraction_statement(catalog, setup, fp, half_box, source):
    """What the positions of an exposure do about refraction (``meta["refraction"]``).

    Corrected: how (the clock time and site, or the given zenith distance and parallactic
    angle). Switched off (pressure 0): the differential refraction across the field is not
    corrected; with a known zenith distance (the clock time's, or a given one) its size is
    estimated for the catalogue stars on the detector (``half_box``: half width and height,
    arcsec) with the site's typical weather (the given temperature and humidity): the
    largest displacement relative to the field centre's (``uncorrected_differential_mas``)
    and what is left of it after the best similarity transform, which the exposure's free
    scale and rotation absorb (``uncorrected_beyond_similarity_mas``). Logged as a warning.
    """
    if setup.space:
        return {"corrected": None, "space": True, "how": "no atmosphere: an observatory in space"}
    if setup.refraction:
        how = ("astropy AltAz at the exposure's time, site and weather" if setup.clock_time else
               f"astropy AltAz with the field centre at the given zenith distance "
               f"{setup.zenith_distance_deg:g} deg and parallactic angle {setup.parallactic_angle_deg:g} deg "
               "(no clock time)")
        return {"corrected": True, "how": how}
    known = setup.clock_time or setup.zenith_distance_deg is not None
    out = {"corrected": False, "zenith_distance_deg": fp.zenith_distance_deg if known else None,
           "uncorrected_differential_mas": None, "uncorrected_beyond_similarity_mas": None}
    size = "its size is unknown (no zenith distance)"
    if known:
        weather = dict(setup.weather, pressure_hpa=float(get_site(setup.site).pressure_hpa))
        inside = fp.inside(*half_box)
        if np.count_nonzero(inside) >= 3:
            kw = dict(time=fp.time, pointing=(setup.ra_deg, setup.dec_deg), wavelength=setup.wavelength_um,
                      position_angle=fp.position_angle_deg, site=setup.site, parity=fp.parity,
                      horizon=setup.horizon)
            near = catalog.select(np.isin(catalog.names, fp.names[inside]))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                on = apparent_positions(near, weather=weather, **kw)
                off = apparent_positions(near, weather=dict(weather, pressure_hpa=0.0), **kw)
            d = (on.x - off.x) + 1j * (on.y - off.y)
            z0 = off.x + 1j * off.y
            d = d - d.mean()
            rel = z0 - z0.mean()
            fit = np.vdot(rel, d) / np.vdot(rel, rel)  # the best similarity (scale and rotation)
            out["uncorrected_differential_mas"] = float(np.max(np.abs(d)) * 1e3)
            out["uncorrected_beyond_similarity_mas"] = float(np.max(np.abs(d - fit * rel)) * 1e3)
            out["estimate_pressure_hpa"] = weather["pressure_hpa"]
            size = (f"at zenith distance {fp.zenith_distance_deg:.2f} deg it reaches "
                    f"{out['uncorrected_differential_mas']:.3g} mas over the field relative to its centre, "
                    f"{out['uncorrected_beyond_similarity_mas']:.3g} mas beyond what the exposure's free scale "
                    "and rotation absorb (site's typical pressure)")
    out["note"] = f"refraction off: differential refraction across the field is not corrected; {size}"
    log.warning("%s: %s", source, out["note"])
    return out


# =========================================================================== one exposure
def _setup_from(setup, **changes):
    import dataclasses

    return dataclasses.replace(setup, **changes)


def measure_sky_exposure(exposure, dataset, instrument, *, psf="model", catalog=None,
                         calibration=None, reduced_path=None, overwrite=False, stem=None,
                         provenance=None, detect_threshold=5.0):
    """Measure one sky exposure and return its sky table (see the module notes).

    ``exposure`` an :class:`astrocal.campaign.Exposure` (``file`` an image or a star list,
    ``extra`` the campaign's keys); ``dataset`` its :class:`astrocal.campaign.SkyDataset`;
    ``instrument`` the campaign's :class:`astrocal.campaign.InstrumentSpec` (nominal pixel
    scale, detector shape, preset); ``psf`` ``"model"`` or ``"epsf"``; ``catalog`` the
    loaded :class:`~astrocal.sky.catalog.Catalog` (default: ``dataset.catalog``);
    ``calibration`` a :class:`~astrocal.image.reduce.Calibration` for the images;
    ``reduced_path`` where to write the reduced image (None: not written); ``stem`` the
    exposure's name (default the file stem); ``provenance`` extra meta (campaign, ...).

    Raises :class:`SkyMeasureError` (or :class:`~astrocal.atomic.ProductExistsError` for the
    reduced image) naming the exposure.
    """
    t0 = _time.perf_counter()
    path = Path(exposure.file)
    stem = stem or exposure_stem(path)
    source = f"{path} (sky exposure '{stem}' of dataset '{dataset.name}')"
    if psf not in ("model", "epsf"):
        raise ValueError(f"psf must be 'model' or 'epsf', got {psf!r}")
    if not path.is_file():
        raise SkyMeasureError(f"{source}: file not found")
    pix = float(instrument.pixel_scale_mas)
    image = is_image(path)
    header = None
    if image:
        _, header = read_frame(path, "sky exposure")
    elif exposure.extra.get("header"):
        header = exposure_header(exposure.extra["header"], source)
    setup = resolve_exposure(exposure.extra, header, site=dataset.site, filter=dataset.filter,
                             preset=instrument.preset, source=source)
    if image and setup.space:
        raise SkyMeasureError(
            f"{source}: an image from an observatory in space (site '{setup.site.name}') is not measured: "
            "astrocal's star model is the ELT's AO PSF at a ground-based wavelength, not a space telescope's "
            "PSF. Measure the stars with that mission's tools (hst1pass, the JWST pipeline's source "
            "catalogue, photutils) and give the star list as the exposure's file, with "
            f'header = "{path.name}" for the time, pointing, position angle and velocity aberration')
    if catalog is None:
        try:
            catalog = load_catalog(dataset.catalog)
        except CatalogError as exc:
            raise SkyMeasureError(f"{source}: {exc}") from None
    if dataset.band is not None and dataset.band not in catalog.bands:
        raise SkyMeasureError(f"{source}: band '{dataset.band}' of the dataset is not in the catalogue "
                              f"{catalog.source} (bands: {', '.join(catalog.bands) or 'none'})")
    warns = list(setup.notes)
    if image and dataset.strehl is None:
        log.info("%s: no strehl for dataset '%s': the model PSF assumes %g", source, dataset.name,
                 DEFAULT_STREHL)

    # ---- stars
    extra = {}
    n_out_det = 0
    if image:
        res, reduced, header, img_meta, used_psf = _image_stars(
            path, setup, pixel_scale_mas=pix, preset=instrument.preset, rules=instrument, strehl=dataset.strehl,
            calibration=calibration, psf_mode=psf, detect_threshold=detect_threshold, source=source)
        shape = reduced.data.shape
        if tuple(instrument.detector_shape) != tuple(shape):
            # the fit would place the positions on the campaign's detector: refused, not warned
            raise MeasureError(f"{path}: image shape {tuple(shape)} (ny, nx) differs from the campaign's "
                               f"detector_shape {tuple(instrument.detector_shape)}; set [instrument] "
                               "detector_shape to the frames' size")
        warns += img_meta.pop("frame_warnings")
        n = len(res)
        x, y = np.asarray(res.x, float), np.asarray(res.y, float)
        sx, sy, cxy = np.asarray(res.sigma_x, float), np.asarray(res.sigma_y, float), np.asarray(res.cov_xy, float)
        flux = np.asarray(res.flux, float)
        flags = np.asarray(res.flags, np.int64).copy()
        usable = np.isfinite(x) & np.isfinite(y) & ((flags & C.FLAGS_SEVERE) == 0)
        blend_r = float(used_psf.fwhm()) if hasattr(used_psf, "fwhm") else _fwhm_px(setup.wavelength_um, pix)
        extra = {"snr": np.asarray(res.snr, float), "flux_err": np.asarray(res.flux_err, float) * u.adu,
                 "background": np.asarray(res.background, float) * u.adu,
                 "chi2_ndof": np.asarray(res.chi2_ndof, float), "npix": np.asarray(res.npix, np.int64)}
        flux_unit = u.adu
        sigma_source = "PSF fit (inverse Fisher matrix, detector noise model)"
    else:
        shape = tuple(int(v) for v in instrument.detector_shape)
        stars, n_out_det, _ = _list_stars(path, dataset, shape, source)
        n = len(stars)
        x, y = np.asarray(stars["x"], float), np.asarray(stars["y"], float)
        has_sig = "sigma_x" in stars.colnames
        sx = np.asarray(stars["sigma_x"], float) if has_sig else np.full(n, np.nan)
        sy = np.asarray(stars["sigma_y"], float) if has_sig else np.full(n, np.nan)
        cxy = np.zeros(n)
        flux = np.asarray(stars["flux"], float) if "flux" in stars.colnames else np.full(n, np.nan)
        flags = np.zeros(n, np.int64)
        usable = np.isfinite(x) & np.isfinite(y)
        blend_r = SPACE_BLEND_RADIUS_PX if setup.space else _fwhm_px(setup.wavelength_um, pix)
        flux_unit = None
        sigma_source = "the star list" if has_sig else None
        img_meta = {"star_list": {k: stars.meta.get(k) for k in ("source", "format", "one_based_input",
                                                                 "columns", "note")}}
    ny, nx = shape

    # ---- predicted positions and the match
    hw, hh = nx * pix / 2e3, ny * pix / 2e3
    box = ((1 + 2 * SEARCH_FIELDS) * hw, (1 + 2 * SEARCH_FIELDS) * hh)
    radius = math.hypot(*box) + 1.0
    p0 = setup.parity or 1
    pa0 = setup.position_angle_deg
    if pa0 is None and setup.rotator_angle_deg is None:
        pa0 = 0.0
    fp, epoch_warns = _predict(catalog, setup, position_angle=pa0, rotator_angle=setup.rotator_angle_deg,
                               parity=p0, search_radius_arcsec=radius, source=source)
    warns += epoch_warns
    if setup.zenith_distance_deg is not None and abs(setup.zenith_distance_deg - fp.zenith_distance_deg) \
            > ZENITH_TOLERANCE_DEG:
        raise SkyMeasureError(
            f"{source}: campaign key 'zenith_distance_deg' = {setup.zenith_distance_deg:g} but the time "
            f"{setup.time.utc.isot} UTC ({setup.sources['time']}), the pointing and site {setup.site.name} "
            f"give {fp.zenith_distance_deg:.2f} deg: check the time (UTC, mid-exposure) and the pointing")
    if setup.clock_time and setup.parallactic_angle_deg is not None and \
            abs(_wrap180(setup.parallactic_angle_deg - fp.parallactic_angle_deg)) > ZENITH_TOLERANCE_DEG:
        raise SkyMeasureError(
            f"{source}: campaign key 'parallactic_angle_deg' = {setup.parallactic_angle_deg:g} but the time "
            f"{setup.time.utc.isot} UTC, the pointing and site {setup.site} give "
            f"{fp.parallactic_angle_deg:.2f} deg: check the time (UTC, mid-exposure) and the pointing")
    rank_band, mags, same_band = _rank_band(catalog, fp.names, dataset.band)
    mstars = Table({"x": x[usable], "y": y[usable]})
    if np.any(np.isfinite(sx[usable])):
        mstars["sigma_x"] = np.nan_to_num(sx[usable], nan=0.0)
        mstars["sigma_y"] = np.nan_to_num(sy[usable], nan=0.0)
    if np.any(np.isfinite(flux[usable]) & (flux[usable] > 0)):
        mstars["flux"] = flux[usable]
    mres, ref_rows = _match(mstars, fp, box_arcsec=box, setup=setup, pixel_scale_mas=pix, shape=shape,
                            blend_radius_px=blend_r, mags=mags, source=source, same_band=same_band,
                            rank_band=rank_band)
    mres.quality["rank_band"] = rank_band
    mres.quality["flux_checks"] = bool(mags is not None and same_band)

    # ---- angle and parity measured by the match: recompute the positions with them
    sim = mres.similarity
    final = setup
    if setup.parity is None:
        final = _setup_from(final, parity=int(p0 * sim.parity))
    if setup.position_angle_deg is None and setup.rotator_angle_deg is None:
        final = _setup_from(final, position_angle_deg=_wrap180(pa0 - final.parity * sim.rotation_deg))
    names = fp.names[ref_rows]  # the reference stars given to the match
    if final is not setup:
        fp, _ = _predict(catalog, final, position_angle=final.position_angle_deg,
                         rotator_angle=final.rotator_angle_deg, parity=final.parity,
                         search_radius_arcsec=radius, source=source)

    # ---- the table
    rows = np.flatnonzero(usable)
    star = np.full(n, "", dtype=object)
    star[rows[mres.star_index]] = names[mres.ref_index]
    matched = np.zeros(n, bool)
    matched[rows[mres.star_index]] = True
    flags[~matched] |= FLAG_UNIDENTIFIED
    flags[rows[mres.star_index[mres.blend]]] |= FLAG_BLEND
    q = dict(mres.quality)
    if sigma_source is None or not np.all(np.isfinite(sx[matched]) & (sx[matched] > 0)):
        # the list gives no (or incomplete) errors: the robust scatter of the match residuals
        s = float(q["sigma_px"])
        fill = ~(np.isfinite(sx) & (sx > 0) & np.isfinite(sy) & (sy > 0))
        sx = np.where(fill, s, sx)
        sy = np.where(fill, s, sy)
        msg = (f"{int(fill.sum())} star(s) without position errors: the robust per-axis scatter of the "
               f"match residuals ({s:.3g} px; it includes the catalogue errors and the distortion left "
               "by the match's polynomial, so it overestimates the centroid errors) is used")
        warns.append(msg)
        log.warning("%s: %s", source, msg)
        sigma_source = ("the star list; " if sigma_source else "") + "match residual scatter where missing"
    order = np.lexsort((-np.where(np.isfinite(flux), flux, -np.inf), ~matched))
    t = Table()
    t["star"] = np.array([str(s) for s in star], dtype=str)
    t["x"] = x * u.pix
    t["y"] = y * u.pix
    t["sigma_x"] = sx * u.pix
    t["sigma_y"] = sy * u.pix
    t["cov_xy"] = cxy * u.pix**2
    t["flux"] = flux if flux_unit is None else flux * flux_unit
    t["flags"] = flags
    for k, v in extra.items():
        t[k] = v
    t["star"].description = "catalogue name of the matched star ('' when unmatched)"
    t["x"].description = "centre, 0-based pixels (centre of the first pixel = 0.0; x along numpy axis 1)"
    t["y"].description = "centre, 0-based pixels"
    t["cov_xy"].description = "x-y covariance of the position"
    t["flags"].description = "bit mask, see meta flag_bits; reject sources with meta reject_flags"
    t = t[order]

    refraction = _refraction_statement(catalog, final, fp, (hw, hh), source)
    if refraction["corrected"] is False:
        warns.append(refraction["note"])
    unmatched_ref = [str(v) for v in names[mres.unmatched_reference]]
    n_outside = int(len(catalog) - len(ref_rows) + len(mres.reference_outside))
    log.info("%s: %d sources, %d matched to catalogue stars (rms %.3g px); %d catalogue stars in the "
             "field without a source; %d catalogue stars outside the field", source, n, mres.n_matched,
             q["rms_px"], len(unmatched_ref), n_outside)
    q.pop("seconds", None)
    angle_key = "rotator_angle_deg" if final.rotator_angle_deg is not None else "position_angle_deg"
    angle_val = final.rotator_angle_deg if angle_key == "rotator_angle_deg" else final.position_angle_deg
    derived = {"zenith_distance_deg": fp.zenith_distance_deg, "parallactic_angle_deg": fp.parallactic_angle_deg,
               "altitude_deg": fp.altitude_deg, "azimuth_deg": fp.azimuth_deg, "airmass": fp.airmass}
    if angle_key == "rotator_angle_deg":
        derived["position_angle_deg"] = fp.position_angle_deg
    else:
        derived["rotator_angle_deg"] = fp.rotator_angle_deg
    if setup.zenith_distance_deg is not None:
        derived["zenith_distance_deg_given"] = setup.zenith_distance_deg
    given = dict(exposure.extra)
    meta = {
        "kind": "sky",
        "dataset": dataset.name,
        "exposure": stem,
        "file": str(path),
        "input": "image" if image else "star list",
        "time": fp.time.utc.isot,
        "clock_time": bool(final.clock_time),
        "horizon": (None if final.horizon is None else
                    {"zenith_distance_deg": final.horizon[0], "parallactic_angle_deg": final.horizon[1],
                     "given": final.zenith_distance_deg is not None}),
        "refraction": refraction,
        "ra_deg": final.ra_deg,
        "dec_deg": final.dec_deg,
        angle_key: angle_val,
        "parity": int(final.parity),
        "site": final.site.name,
        "site_info": final.site.as_dict(),
        "weather": {k: float(final.weather[k]) for k in ("pressure_hpa", "temperature_c", "relative_humidity")
                    if k in final.weather},
        "space": final.space,
        "velocity_aberration": fp.meta.get("velocity_aberration"),
        "wavelength_um": final.wavelength_um,
        "catalog": dataset.catalog_given if dataset.catalog_given is not None else str(dataset.catalog),
        "catalog_path": str(dataset.catalog),
        "catalog_name": catalog.name,
        "match_quality": q,
        "unmatched_catalog_stars": unmatched_ref,
        "sources": final.sources,
        "campaign_values": given,
        "derived": derived,
        "earth_orientation": {**earth.provenance(), "exposure": fp.meta.get("earth_orientation")},
        "match_similarity": sim.as_dict(),
        "match_reference_frame": {
            ("rotator_angle_deg" if setup.rotator_angle_deg is not None else "position_angle_deg"):
                setup.rotator_angle_deg if setup.rotator_angle_deg is not None else pa0,
            "parity": p0,
            "note": "match_similarity maps the catalogue's instrument-frame positions computed with "
                    "this angle and parity (arcsec) to the detector (px)"},
        "n_sources": int(n),
        "n_matched": int(mres.n_matched),
        "n_catalog_search_region": int(len(ref_rows)),
        "n_catalog_outside_field": n_outside,
        "n_sources_outside_detector": int(n_out_det),
        "n_catalog_inflated_errors": int(np.count_nonzero(fp.inflated)),
        "epoch_gap_years_max": float(np.max(np.abs(fp.dt))) if len(fp) else 0.0,
        "band": dataset.band,
        "errors_source": sigma_source,
        "detector_shape": [int(ny), int(nx)],
        "pixel_scale_mas": pix,
        "pixel_convention": "0-based: the centre of the first pixel is (0.0, 0.0); x along numpy axis 1 "
                            "(FITS x - 1)",
        "flag_bits": {name: bit for bit, name in FLAG_NAMES.items()},
        "reject_flags": FLAGS_REJECT,
        **img_meta,
        "warnings": warns,
        "creator": f"astrocal {__version__} measure (sky)",
        "created": Time.now().isot,
        "seconds": _time.perf_counter() - t0,
        **(provenance or {}),
    }
    t.meta = to_plain(meta)
    if image and reduced_path is not None:
        prov = {"DATASET": (dataset.name, "sky dataset")}
        if provenance and provenance.get("campaign"):
            prov["CAMPAIGN"] = (Path(provenance["campaign"]).name, "campaign file")
        write_reduced(reduced_path, reduced, header, overwrite=overwrite, provenance=prov)
    return t


def _name_index(names, wanted):
    """Indices into ``names`` of the strings ``wanted`` (all present)."""
    where = {str(n): k for k, n in enumerate(names)}
    return np.array([where[str(w)] for w in wanted], dtype=np.int64)


# =========================================================================== campaign
def _result(dataset, index, stem, file, kind, status, message="", **kw):
    out = dict(dataset=dataset, index=index, exposure=stem, file=str(file), kind=kind, status=status,
               message=message, n_detected=0, n_identified=0, n_good=0, median_snr=np.nan,
               median_sigma_px=np.nan, ident_rms_px=np.nan, table=None, reduced=None,
               seconds=np.nan, pending=None)
    out.update(kw)
    return out


def _counts(t):
    matched = np.array([s != "" for s in t["star"]], bool)
    flags = np.asarray(t["flags"], np.int64)
    good = matched & ((flags & FLAGS_REJECT) == 0)
    sig = np.hypot(np.asarray(t["sigma_x"], float), np.asarray(t["sigma_y"], float)) / math.sqrt(2)
    snr = np.asarray(t["snr"], float) if "snr" in t.colnames else np.full(len(t), np.nan)
    return dict(n_detected=len(t), n_identified=int(matched.sum()), n_good=int(good.sum()),
                median_snr=float(np.median(snr[good])) if good.any() else np.nan,
                median_sigma_px=float(np.median(sig[good])) if good.any() else np.nan,
                ident_rms_px=float(t.meta["match_quality"]["rms_px"]))


def _measure_job(job):
    """Measure one sky exposure of :func:`measure_sky_datasets`; returns its result row."""
    k, e, ds, inst, mode, catalog, cal, error, stem, output, overwrite, prov = job
    t0 = _time.perf_counter()
    image = is_image(e.file)
    kind = "sky_image" if image else "sky_list"
    table_path = output / f"{stem}.ecsv"
    reduced_path = output / f"{stem}_reduced.fits" if image else None
    for path in (table_path, reduced_path):  # under the output directory (names are checked at load too)
        if path is not None:
            confined(path, output)
    try:
        if error is not None:
            raise SkyMeasureError(error)
        if not overwrite:
            for p in (table_path, reduced_path):
                if p is not None:
                    check_writable(p, False)
        t = measure_sky_exposure(e, ds, inst, psf=mode, catalog=catalog, calibration=cal,
                                 reduced_path=reduced_path, overwrite=overwrite, stem=stem,
                                 provenance=prov)
        atomic_write_table(t, table_path, overwrite=overwrite, format="ascii.ecsv")
        msg = "; ".join(t.meta.get("warnings") or [])
        return _result(ds.name, k, stem, e.file, kind, "ok", msg, table=str(table_path),
                       reduced=None if reduced_path is None else str(reduced_path),
                       seconds=_time.perf_counter() - t0, **_counts(t))
    except Exception as exc:  # noqa: BLE001 - every failure becomes a per-exposure report
        msg = str(exc) or type(exc).__name__
        if str(e.file) not in msg and Path(e.file).name not in msg:
            msg = f"{e.file}: {msg}"
        if not isinstance(exc, (AstrocalError, OSError)):  # not bad input: a bug, said as one
            msg = internal_error(msg, exc)
        else:
            log.error("%s", msg)
        if overwrite and not isinstance(exc, ProductExistsError):
            for p in (table_path, reduced_path):  # stale products of an earlier run
                if p is not None and p.exists():
                    log.info("removing stale %s", p)
                    p.unlink()
        return _result(ds.name, k, stem, e.file, kind, "failed", msg, seconds=_time.perf_counter() - t0)


def measure_sky_datasets(campaign, *, output=None, overwrite=False, psf=None, used_stems=(), processes=1):
    """Measure every exposure of the campaign's ``[[sky]]`` datasets.

    ``campaign`` a loaded :class:`astrocal.campaign.Campaign`; ``output`` the directory
    (default ``[measure] output``); ``psf`` overrides ``[measure] psf``; ``used_stems``
    product names already taken (the lab exposures'): a sky exposure whose file stem is
    taken is written as ``<dataset>_<stem>``. ``processes``: exposures measured in
    parallel worker processes. Never raises for one exposure: returns one
    result dict per exposure (status ``ok`` / ``failed``, message naming the file), in
    the layout of the lab measure stage's summary rows.
    """
    output = Path(output if output is not None else campaign.measure.output)
    mode = psf or campaign.measure.psf
    inst = campaign.instrument
    taken = set(used_stems)
    jobs = []
    prov = {"campaign": str(campaign.path), "campaign_sha256": campaign.sha256}
    for ds in campaign.sky:
        catalog = cal = None
        error = None
        try:
            catalog = load_catalog(ds.catalog)
        except CatalogError as exc:
            error = f"dataset '{ds.name}': {exc}"
        if error is None and (ds.background is not None or ds.flat is not None):
            try:
                # METIS or generic (EXPTIME, DIT, NDIT, GAIN) keywords, as the raw frames'
                cal = dataset_calibration(ds.background, ds.flat, inst)
            except Exception as exc:  # noqa: BLE001 - the dataset fails, the others go on
                error = f"dataset '{ds.name}': calibration frames: {exc}"
        for k, e in enumerate(ds.exposures):
            stem = exposure_stem(e.file)
            if stem in taken:
                stem = f"{ds.name}_{stem}"
            base, m = stem, 1
            while stem in taken:
                m += 1
                stem = f"{base}_{m}"
            taken.add(stem)
            jobs.append((k, e, ds, inst, mode, catalog, cal, error, stem, output, overwrite, prov))
    if int(processes) > 1 and len(jobs) > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
        with ProcessPoolExecutor(min(int(processes), len(jobs)), mp_context=ctx) as pool:
            results = list(pool.map(_measure_job, jobs))
    else:
        results = [_measure_job(job) for job in jobs]
    return results
