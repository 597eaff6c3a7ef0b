"""The metadata of one sky exposure: time, pointing, orientation, weather and wavelength.

:func:`resolve_exposure` takes each item from the campaign's exposure keys first, then
the FITS header (:data:`HEADER_KEYS`; :func:`exposure_header` merges a file's headers),
then stated defaults (logged, and recorded in :attr:`ExposureSetup.sources` and
:attr:`ExposureSetup.notes`); time and pointing have no default. The sky measure stage
(:mod:`astrocal.sky.measure`) calls it for every exposure; :func:`is_image` tells an
image from a star list.
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import astropy.units as u
from astropy.coordinates import Angle
from astropy.io import fits
from astropy.time import Time, TimeDelta

from ..errors import MeasureError
from ..image.psf import FILTER_WAVELENGTH_UM
from ..instruments import get_instrument
from .astrometry import AstrometryError, parse_time
from .sites import Site, Weather, WeatherError, get_site

__all__ = ["SkyMeasureError", "HEADER_KEYS", "UNKNOWN_HORIZON", "ExposureSetup", "resolve_exposure",
           "exposure_header", "is_image"]

log = logging.getLogger(__name__)

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

_FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fts.gz", ".fits.fz", ".fz")


class SkyMeasureError(MeasureError):
    """A sky exposure cannot be measured; the message names the exposure (and key/file)."""


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
    def horizon(self) -> tuple[float, float] | None:
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


def _filter_wavelength(name: str | None, preset: str | None) -> float | None:
    """Centre wavelength (um) of a filter of the instrument, or of L/M/N; None if unknown."""
    if name is None:
        return None
    if preset is not None:
        try:
            return float(get_instrument(preset).filter(str(name)).center_um)
        except KeyError:
            pass
    value = FILTER_WAVELENGTH_UM.get(str(name))
    return None if value is None else float(value)


def resolve_exposure(values: Mapping[str, Any] | None, header: fits.Header | None = None, *,
                     site: str | Site = "armazones", filter: str | None = None, preset: str | None = None,
                     source: str = "<exposure>") -> ExposureSetup:
    """Resolve a sky exposure's metadata.

    Each item comes from ``values`` (the campaign's exposure keys, as in
    :attr:`astrocal.campaign.Exposure.extra`) first, then ``header``
    (:data:`HEADER_KEYS`), then stated defaults (logged): the site's typical weather; the
    wavelength of the dataset's ``filter``, the header's filter or the instrument's
    (``preset``) default filter. The steps:

    1. the time (mid-exposure; no default);
    2. the pointing (ICRS ``ra``, ``dec``; no default);
    3. the position or rotator angle and the parity (campaign only, from space also the
       header's position angle; else measured by the match);
    4. the weather (none in space: then the velocity aberration instead, and the
       wavelength only when given), the refraction switch and the horizon of an epoch
       without a clock time;
    5. the wavelength.

    Parameters
    ----------
    values : mapping or None
        The campaign's keys of the exposure (``time``, ``ra``, ``dec``,
        ``position_angle_deg``, ``pressure_hpa``, ...).
    header : astropy.io.fits.Header, optional
        The exposure's FITS header (None: the campaign's keys only).
    site : str or Site, optional
        The observatory (:func:`~astrocal.sky.sites.get_site`).
    filter : str, optional
        The dataset's filter.
    preset : str, optional
        The instrument preset (its filters and default filter).
    source : str, optional
        Names the exposure in messages.

    Returns
    -------
    ExposureSetup
        The resolved metadata, with where every item came from.

    Raises
    ------
    SkyMeasureError
        Time or pointing missing (naming the exposure and the keys looked for), or a
        value that does not parse.
    """
    values = dict(values or {})
    sources, notes = {}, []
    site_obj = get_site(site)
    t, clock = _resolve_time(values, header, source, sources)
    pointing = _resolve_pointing(values, header, source, sources)
    pa, rot, parity = _resolve_orientation(values, header, site_obj, source, sources, notes)
    if site_obj.is_space:
        aberration, sources["velocity_aberration"] = _space_aberration(values, header, source)
        sources["weather"] = "none: an observatory in space"
        sources["refraction"] = "none: an observatory in space"
        return _space_setup(values, filter, preset, t, pointing, pa, parity, site_obj, sources, notes, clock,
                            aberration)
    weather, refraction = _resolve_weather(values, header, site_obj, clock, source, sources, notes)
    wl = _resolve_wavelength(values, header, filter, preset, source, sources, notes)
    zd_given, q_given = values.get("zenith_distance_deg"), values.get("parallactic_angle_deg")
    return ExposureSetup(time=t, ra_deg=pointing["ra"], dec_deg=pointing["dec"],
                         position_angle_deg=None if pa is None else float(pa),
                         rotator_angle_deg=None if rot is None else float(rot), parity=parity,
                         weather=weather, wavelength_um=float(wl), site=site_obj,
                         zenith_distance_deg=None if zd_given is None else float(zd_given), sources=sources,
                         notes=notes, clock_time=clock,
                         parallactic_angle_deg=None if q_given is None else float(q_given),
                         refraction=refraction)


def _resolve_time(values, header, source, sources):
    """Step 1 of :func:`resolve_exposure`: (mid-exposure Time, clock time known)."""
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
    return t, clock


def _resolve_pointing(values, header, source, sources):
    """Step 2 of :func:`resolve_exposure`: ``{"ra": deg, "dec": deg}``."""
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
    return pointing


def _resolve_orientation(values, header, site_obj, source, sources, notes):
    """Step 3 of :func:`resolve_exposure`: (position angle, rotator angle, parity), each
    None when unknown (measured by the match)."""
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
    return pa, rot, parity


def _resolve_weather(values, header, site_obj, clock, source, sources, notes):
    """Step 4 of :func:`resolve_exposure` on the ground: (weather, refraction on); the
    horizon's source of an epoch without a clock time."""
    weather, wsrc = {}, {}
    for name, target in (("pressure_hpa", "pressure_hpa"), ("temperature_c", "temperature_c"),
                         ("humidity", "relative_humidity")):
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
    return weather, refraction


def _resolve_wavelength(values, header, filter, preset, source, sources, notes):
    """Step 5 of :func:`resolve_exposure` on the ground: the wavelength (um) from the
    campaign, the dataset's filter, the header's filter or the instrument's default filter."""
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
    return wl


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


def exposure_header(path: str | os.PathLike, source: str = "<exposure>") -> fits.Header:
    """The headers of a FITS file as one.

    The primary header's cards, then those of the extensions that the primary lacks (HST
    and JWST keep the time and pointing in the primary, VAFACTOR / VA_SCALE and the WCS in
    the science extension). The ``header`` of a star list's exposure: the image it was
    measured on.

    Parameters
    ----------
    path : str or os.PathLike
        The FITS file.
    source : str, optional
        Names the exposure in messages.

    Returns
    -------
    astropy.io.fits.Header
        The merged header (no COMMENT or HISTORY cards of the extensions).

    Raises
    ------
    SkyMeasureError
        The file cannot be read as FITS.
    """
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


def is_image(path: str | os.PathLike) -> bool:
    """Whether an exposure's file is an image (else it is read as a star list).

    Parameters
    ----------
    path : str or os.PathLike
        The exposure's file.

    Returns
    -------
    bool
        True if ``path`` is a FITS file (by its suffix) with a 2-D image, or a FITS file
        that cannot be opened (the image reader then reports the problem).
    """
    p = Path(path)
    if not any(p.name.lower().endswith(s) for s in _FITS_SUFFIXES):
        return False
    try:
        with fits.open(p, memmap=True) as hdul:
            return any(h.is_image and h.header.get("NAXIS", 0) == 2 for h in hdul)
    except OSError:
        return True  # the image reader reports the problem
