"""The values of a ``[[sky]]`` dataset that describe the observation: its site (a name of
astrocal's site table, or a position, resolved to an :class:`astrocal.sky.sites.Site`) and
each exposure's time, pointing, angles and weather.

``[[sky]]`` exposures are validated here (the time parses, the angles and the weather are in
range, at most one of ``position_angle_deg`` / ``rotator_angle_deg``; an epoch without a
clock time has ``zenith_distance_deg`` and ``parallactic_angle_deg`` or
``refraction = false``); their values are kept, converted to plain numbers in the units of
the key names, in :attr:`astrocal.campaign.schema.Exposure.extra` (``time`` as an ISO UTC
string, ``clock_time`` false for an epoch: a decimal year, ``"J1995.439"`` or a date).
"""
from __future__ import annotations

import re
from typing import Any

import astropy.units as u
import numpy as np

from ..sky.astrometry import ABERRATION_SCALE_RANGE, MAX_OBSERVER_SPEED_KM_S, AstrometryError, parse_time
from ..sky.sites import (HEIGHT_RANGE, LATITUDE_RANGE, LONGITUDE_RANGE, Site, SiteError, custom_site,
                         get_site, is_space)
from .keys import GROUND_ONLY_KEYS, SITE_KEYS, SPACE_ONLY_KEYS
from .values import Context, angle, check_keys, humidity, quantity, string, temperature

#: a ``time`` that is a date without a time of day, or an epoch (decimal year, "J1995.439")
DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
EPOCH_TEXT = re.compile(r"^[JB]?\d{4}(\.\d*)?$")


def sky_exposure_values(ctx: Context, item: dict, key: str, space: bool = False) -> dict:
    """Validate and convert the values of one ``[[sky]]`` exposure.

    Parameters
    ----------
    ctx : Context
        The file being read (named in errors).
    item : dict
        The exposure's table.
    key : str
        Its dotted key (``"sky[0].exposures[2]"``), for errors.
    space : bool
        The dataset's site is in space (no atmosphere, no horizon; its velocity aberration
        keys).

    Returns
    -------
    dict
        The exposure's values as plain numbers in the units of the key names (see
        :attr:`astrocal.campaign.schema.Exposure.extra`): ``time`` an ISO UTC string,
        ``clock_time`` False for an epoch.
    """
    for name in (GROUND_ONLY_KEYS if space else SPACE_ONLY_KEYS):
        if name in item:
            why = ("the dataset's site is in space: no atmosphere (refraction, weather) and no horizon "
                   "(zenith distance, parallactic and rotator angle); give position_angle_deg" if space else
                   "for an observatory in space only (site = \"space\", \"hst\", \"jwst\"); at a ground site "
                   "the Earth's motion is part of the apparent positions")
            raise ctx.error(f"{key}.{name}", why)

    out = {}
    if "time" in item:
        value = item["time"]
        clock = True
        try:
            if isinstance(value, bool):
                raise AstrometryError("a boolean is not a time")
            if hasattr(value, "isoformat") and not hasattr(value, "hour"):  # a TOML date
                value, clock = value.isoformat(), False
            if isinstance(value, (int, float)):  # a decimal (Julian) year: an epoch
                clock = False
            elif isinstance(value, str) and (DATE_ONLY.match(value.strip()) or EPOCH_TEXT.match(value.strip())):
                clock = False
                if EPOCH_TEXT.match(value.strip()) and value.strip()[0] not in "JB":
                    value = float(value)
            t = parse_time(value, "time")
        except (AstrometryError, ValueError) as exc:
            raise ctx.error(f"{key}.time", f"cannot parse {value!r} as a time: {exc}") from None
        out["time"] = t.utc.isot
        if not clock:
            out["clock_time"] = False
    for name, hours, lo, hi in (("ra", True, 0.0, 360.0), ("dec", False, -90.0, 90.0)):
        if name in item:
            v = angle(ctx, item[name], f"{key}.{name}", hours=hours)
            if not (lo <= v < hi if name == "ra" else lo <= v <= hi):
                raise ctx.error(f"{key}.{name}", f"must be in {lo:g}..{hi:g} deg, got {v:g}")
            out[name] = v
    if ("ra" in out) != ("dec" in out):
        missing = "dec" if "ra" in out else "ra"
        raise ctx.error(f"{key}.{missing}", "the pointing needs both ra and dec")
    angles = [k for k in ("position_angle_deg", "rotator_angle_deg") if k in item]
    if len(angles) > 1:
        raise ctx.error(f"{key}.rotator_angle_deg", "give at most one of position_angle_deg and "
                                                   "rotator_angle_deg (the other follows from the "
                                                   "time, pointing and site)")
    for name in angles:
        out[name] = quantity(ctx, item[name], u.deg, f"{key}.{name}")
    if "parity" in item:
        p = item["parity"]
        if isinstance(p, bool) or p not in (1, -1):
            raise ctx.error(f"{key}.parity", f"must be +1 or -1, got {p!r}")
        out["parity"] = int(p)
    if "zenith_distance_deg" in item:
        z = quantity(ctx, item["zenith_distance_deg"], u.deg, f"{key}.zenith_distance_deg")
        if not 0.0 <= z < 90.0:
            raise ctx.error(f"{key}.zenith_distance_deg", f"must be in 0..90 deg, got {z:g}")
        out["zenith_distance_deg"] = z
    if "parallactic_angle_deg" in item:
        if "zenith_distance_deg" not in item:
            raise ctx.error(f"{key}.parallactic_angle_deg", "a parallactic angle needs the zenith distance "
                                                            "(zenith_distance_deg) too")
        out["parallactic_angle_deg"] = quantity(ctx, item["parallactic_angle_deg"], u.deg,
                                                 f"{key}.parallactic_angle_deg")
    if "refraction" in item:
        if not isinstance(item["refraction"], bool):
            raise ctx.error(f"{key}.refraction", f"expected true or false, got {item['refraction']!r}")
        out["refraction"] = item["refraction"]
    if "pressure_hpa" in item:
        pr = quantity(ctx, item["pressure_hpa"], u.hPa, f"{key}.pressure_hpa")
        if not 0.0 <= pr <= 1200.0:
            raise ctx.error(f"{key}.pressure_hpa", f"must be in 0..1200 hPa, got {pr:g}")
        out["pressure_hpa"] = pr
    if "temperature_c" in item:
        out["temperature_c"] = temperature(ctx, item["temperature_c"], f"{key}.temperature_c")
    if "humidity" in item:
        out["humidity"] = humidity(ctx, item["humidity"], f"{key}.humidity")
    if "wavelength_um" in item:
        wl = quantity(ctx, item["wavelength_um"], u.um, f"{key}.wavelength_um")
        if not wl > 0:
            raise ctx.error(f"{key}.wavelength_um", f"must be positive, got {wl:g}")
        out["wavelength_um"] = wl
    if out.get("refraction") is False and out.get("pressure_hpa", 0.0) > 0:
        raise ctx.error(f"{key}.refraction", f"refraction = false contradicts pressure_hpa = "
                                             f"{out['pressure_hpa']:g} (refraction off is pressure 0)")
    if "velocity_aberration_scale" in item:
        f = quantity(ctx, item["velocity_aberration_scale"], u.dimensionless_unscaled,
                      f"{key}.velocity_aberration_scale")
        if not abs(f - 1.0) <= ABERRATION_SCALE_RANGE:
            raise ctx.error(f"{key}.velocity_aberration_scale", f"a velocity aberration scale factor (HST "
                            f"VAFACTOR, JWST VA_SCALE) is 1 within {ABERRATION_SCALE_RANGE:g}, got {f!r}")
        out["velocity_aberration_scale"] = f
    if "observer_velocity_km_s" in item:
        v = item["observer_velocity_km_s"]
        if not isinstance(v, list) or len(v) != 3:
            raise ctx.error(f"{key}.observer_velocity_km_s", f"expected [vx, vy, vz] (barycentric, ICRS axes, "
                                                              f"km/s), got {v!r}")
        vel = [quantity(ctx, c, u.km / u.s, f"{key}.observer_velocity_km_s") for c in v]
        if float(np.linalg.norm(vel)) > MAX_OBSERVER_SPEED_KM_S:
            raise ctx.error(f"{key}.observer_velocity_km_s", f"a barycentric speed of {np.linalg.norm(vel):.1f} "
                                                              f"km/s (more than {MAX_OBSERVER_SPEED_KM_S:g}): not km/s?")
        if "velocity_aberration_scale" in out:
            raise ctx.error(f"{key}.observer_velocity_km_s", "give one of observer_velocity_km_s and "
                                                              "velocity_aberration_scale")
        out["observer_velocity_km_s"] = vel
    if space:
        return out
    if out.get("clock_time") is False:
        off = out.get("refraction") is False or out.get("pressure_hpa") == 0.0
        if not off and not ("zenith_distance_deg" in out and "parallactic_angle_deg" in out):
            raise ctx.error(f"{key}.time", "an epoch without a clock time: refraction needs the field's "
                                           "zenith_distance_deg and parallactic_angle_deg (give both), or "
                                           "switch it off with refraction = false (its differential part "
                                           "across the field is then not corrected)")
    return out


def read_site(ctx: Context, value: Any, key: str) -> Site:
    """A ``[[sky]]`` dataset's ``site``.

    A name or alias of astrocal's site table, or a table with ``latitude_deg``,
    ``longitude_deg``, ``height_m`` (optional ``name`` and typical weather
    ``pressure_hpa``, ``temperature_c``, ``humidity``), or a table with a known ``name``
    and weather keys only (that site's typical weather replaced).

    Parameters
    ----------
    ctx : Context
        The file being read (named in errors).
    value : object
        The TOML value.
    key : str
        The dotted key (``"sky[0].site"``), for errors.

    Returns
    -------
    astrocal.sky.sites.Site
        The site (a :class:`~astrocal.sky.sites.SpaceSite` for an observatory in space).
    """
    if isinstance(value, str):
        try:
            return get_site(value)
        except KeyError as exc:
            raise ctx.error(key, str(exc)) from None
    if isinstance(value, dict) and is_space(str(value.get("name", ""))):
        raise ctx.error(key, f"{value['name']!r} is an observatory in space: it has no position and no weather; "
                             f"write site = \"{value['name']}\"")
    if not isinstance(value, dict):
        raise ctx.error(key, f"expected a site name (e.g. \"armazones\", \"keck\") or a table "
                             f"{{ latitude_deg = ..., longitude_deg = ..., height_m = ... }}, got {value!r}")
    check_keys(ctx, value, SITE_KEYS, f"{key}.")
    name = string(ctx, value["name"], f"{key}.name").strip() if "name" in value else None
    if name == "":
        raise ctx.error(f"{key}.name", "must not be empty")
    weather = {}
    if "pressure_hpa" in value:
        weather["pressure_hpa"] = quantity(ctx, value["pressure_hpa"], u.hPa, f"{key}.pressure_hpa")
    if "temperature_c" in value:
        weather["temperature_c"] = temperature(ctx, value["temperature_c"], f"{key}.temperature_c")
    if "humidity" in value:
        weather["relative_humidity"] = humidity(ctx, value["humidity"], f"{key}.humidity")
    try:
        if not any(k in value for k in ("latitude_deg", "longitude_deg", "height_m")):
            if name is None:
                raise ctx.error(f"{key}.latitude_deg", "missing: a site table gives a position (latitude_deg, "
                                                       "longitude_deg, height_m) or the name of a known site",
                                at=key)
            try:
                site = get_site(name)
            except KeyError as exc:
                raise ctx.error(f"{key}.name", str(exc)) from None
            return site.with_weather(**weather, source=f"campaign {ctx.path.name}")
        for k in ("latitude_deg", "longitude_deg", "height_m"):
            if k not in value:
                raise ctx.error(f"{key}.{k}", "missing: a site's position needs latitude_deg, longitude_deg "
                                              "and height_m", at=key)
        lat = angle(ctx, value["latitude_deg"], f"{key}.latitude_deg")
        lon = angle(ctx, value["longitude_deg"], f"{key}.longitude_deg")
        height = quantity(ctx, value["height_m"], u.m, f"{key}.height_m")
        for k, v, (lo, hi), unit in (("latitude_deg", lat, LATITUDE_RANGE, "deg"),
                                     ("longitude_deg", lon, LONGITUDE_RANGE, "deg (east)"),
                                     ("height_m", height, HEIGHT_RANGE, "m")):
            if not lo <= v <= hi:
                raise ctx.error(f"{key}.{k}", f"must be in {lo:g}..{hi:g} {unit}, got {v:g}")
        return custom_site(lat, lon, height, name=name or "custom", source=f"campaign {ctx.path.name}",
                           **weather)
    except SiteError as exc:
        field_key = {"relative_humidity": "humidity"}.get(exc.key, exc.key or "name")
        raise ctx.error(f"{key}.{field_key}", str(exc)) from None

