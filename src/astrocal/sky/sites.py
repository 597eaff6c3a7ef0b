"""Observatory sites and the weather used for refraction.

A :class:`Site` holds the geodetic position of a telescope and its *typical* weather
(pressure, temperature, relative humidity), which :mod:`astrocal.sky.astrometry` uses
when an exposure comes without weather (and says so in the log). :func:`get_site` returns
one from

* a name or an alias in the table shipped with astrocal, ``astrocal/data/sites.ecsv``
  (:data:`SITES`; matched case-insensitively, punctuation and accents ignored:
  ``"Keck"``, ``"W. M. Keck Observatory"``, ``"VLT"``, ``"Cerro Pachón"``...). No network:
  astropy's ``EarthLocation.of_site`` downloads its registry for most sites, astrocal
  does not use it;
* a position: a mapping with ``latitude_deg``, ``longitude_deg``, ``height_m`` (and
  optionally ``name``, ``pressure_hpa``, ``temperature_c``, ``relative_humidity``), an
  :class:`~astropy.coordinates.EarthLocation`, or :func:`custom_site`. Its missing
  typical weather is the standard atmosphere's at its height (below);
* a mapping with only ``name`` (a known site) and weather keys: that site with its
  typical weather replaced.

An unknown name is an :class:`UnknownSiteError` (a ``KeyError``) listing the known names,
the closest ones (``difflib``) and how to give a position instead.

Provenance: every site of the table states where each number comes from (columns
``position_source``, ``height_source``, ``pressure_source``, ``temperature_source``,
``humidity_source``; :attr:`Site.provenance`). Positions are copied from the astropy-data
registry ``coordinates/sites.json`` (github.com/astropy/astropy-data, commit
``0114fac2f3544396b77e3af7a8bdca22ebd07770``) unless stated otherwise (Armazones: the
summit, ESO; Mount Graham: the LBT, whose height in that registry is 270 m too low).
Pressures are published site values where one was found (Armazones, Paranal, Roque de
los Muchachos) and otherwise the ISO 2533 / ICAO standard atmosphere at the site's height
(:func:`standard_pressure_hpa`). Temperatures and humidities are published values where
found and otherwise marked ``estimate: <reason>``. A 5 C error in the temperature changes
refraction by about 2 %, the relative humidity by less than 0.1 %: give the measured
weather when known (the campaign's exposure keys or the FITS header).

``armazones`` (the default) keeps its values: latitude -24.589 deg, longitude -70.192 deg
(the summit, 24d35m21s S, 70d11m32s W, Wikipedia "Cerro Armazones"), height 3046 m
(ESO, "Cerro Armazones"), typical weather 712 hPa, 8 C, 15 % relative humidity (the
project's reference notes for the ELT site; the ScopeSim IRDB models it with 755 hPa,
7 C, 10 %).

The latitude and longitude are geodetic (WGS84), the height as its source gives it (above
the geoid or the ellipsoid: astropy takes it as ellipsoidal; the < 60 m difference changes
the pressure by < 1 % and moves nothing measurable here).
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import unicodedata
from dataclasses import dataclass, field
from importlib import resources
from typing import ClassVar, Mapping

import astropy.units as u
import numpy as np
from astropy.coordinates import EarthLocation

from ..errors import AstrocalError

__all__ = ["Site", "SpaceSite", "SPACE_OBSERVATORIES", "is_space", "Weather", "SITES", "get_site", "custom_site", "site_names", "load_sites",
           "standard_pressure_hpa", "standard_temperature_c", "WeatherError", "SiteError",
           "UnknownSiteError", "LATITUDE_RANGE", "LONGITUDE_RANGE", "HEIGHT_RANGE", "STANDARD_ATMOSPHERE"]

#: accepted ranges of a site's position (deg, deg, m)
LATITUDE_RANGE = (-90.0, 90.0)
LONGITUDE_RANGE = (-180.0, 360.0)
HEIGHT_RANGE = (-500.0, 6000.0)

#: the formula of :func:`standard_pressure_hpa`, as recorded in provenance
STANDARD_ATMOSPHERE = ("ISA: p = 1013.25 hPa (1 - 2.25577e-5 h/m)^5.25588 at the site height, the troposphere of "
                       "the ISO 2533:1975 / ICAO Doc 7488 standard atmosphere (barometric formula, T0 = 288.15 K, "
                       "lapse 6.5 K/km)")


class WeatherError(AstrocalError, ValueError):
    """Weather values that cannot be used (negative pressure, humidity outside 0..1...)."""


class SiteError(AstrocalError, ValueError):
    """A site that cannot be used (latitude out of range, missing height...); ``key`` names
    the offending value (``"latitude_deg"``...)."""

    def __init__(self, message, key=None):
        super().__init__(message)
        self.key = key


class UnknownSiteError(AstrocalError, KeyError):
    """A site name that is neither a name nor an alias of the table (a ``KeyError``)."""

    def __str__(self):
        return str(self.args[0]) if self.args else ""


def standard_pressure_hpa(height_m: float) -> float:
    """Pressure of the ISO 2533:1975 / ICAO standard atmosphere at a height.

    ``1013.25 (1 - 2.25577e-5 h)^5.25588`` (troposphere, h < 11 km; sea level 1013.25 hPa
    and 288.15 K, lapse rate 6.5 K/km). Mauna Kea at 4145 m: 604.8 hPa (the observatories
    quote "usually 600-610 millibars").

    Parameters
    ----------
    height_m : float
        Height above sea level (m).

    Returns
    -------
    float
        Pressure (hPa).
    """
    return float(1013.25 * (1.0 - 2.25577e-5 * float(height_m)) ** 5.25588)


def standard_temperature_c(height_m: float) -> float:
    """Temperature of the standard atmosphere at a height: 15 C - 6.5 C/km.

    Parameters
    ----------
    height_m : float
        Height above sea level (m).

    Returns
    -------
    float
        Temperature (C).
    """
    return float(15.0 - 6.5e-3 * float(height_m))


def _weather_problem(pressure_hpa, temperature_c, relative_humidity):
    """(key, message) of the first unusable weather value, or None; the values as floats."""
    values = {}
    for name, value in (("pressure_hpa", pressure_hpa), ("temperature_c", temperature_c),
                        ("relative_humidity", relative_humidity)):
        try:
            value = float(value)
        except (TypeError, ValueError):
            return (name, f"{name} must be a number, got {value!r}"), None
        if value != value:  # NaN
            return (name, f"{name} is NaN"), None
        values[name] = value
    p, t, h = values["pressure_hpa"], values["temperature_c"], values["relative_humidity"]
    if p < 0 or p > 1200:
        return ("pressure_hpa", f"pressure_hpa must be in 0..1200 hPa, got {p}"), values
    if not -90 <= t <= 60:
        return ("temperature_c", f"temperature_c must be in -90..60 C, got {t}"), values
    if not 0 <= h <= 1:
        return ("relative_humidity", f"relative_humidity is a fraction 0..1, got {h}"
                + (" (per cent? divide by 100)" if 1 < h <= 100 else "")), values
    return None, values


@dataclass(frozen=True)
class Weather:
    """Ground weather at the telescope, as astropy's refraction model needs it.

    ``pressure_hpa`` (hPa; 0 switches refraction off), ``temperature_c`` (deg C),
    ``relative_humidity`` (a fraction, 0 to 1 -- not per cent). ``source`` says where the
    values come from (``"given"``, ``"site defaults (armazones)"``, a mix...).
    """

    pressure_hpa: float
    temperature_c: float
    relative_humidity: float
    source: str = "given"

    def __post_init__(self):
        problem, values = _weather_problem(self.pressure_hpa, self.temperature_c, self.relative_humidity)
        if problem is not None:
            raise WeatherError(f"weather: {problem[1]}")
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def as_dict(self) -> dict:
        """Plain values for metadata.

        Returns
        -------
        dict
            ``pressure_hpa``, ``temperature_c``, ``relative_humidity`` and ``source``.
        """
        return {"pressure_hpa": self.pressure_hpa, "temperature_c": self.temperature_c,
                "relative_humidity": self.relative_humidity, "source": self.source}


@dataclass(frozen=True)
class Site:
    """A telescope site: geodetic position and typical weather (see the module notes).

    ``latitude_deg`` in -90..90, ``longitude_deg`` east, given in -180..360 and stored in
    (-180, 180], ``height_m`` in -500..6000; the weather as :class:`Weather`.
    ``provenance``: where each value comes from (``position``, ``height``, ``pressure``,
    ``temperature``, ``humidity``, ``notes``); ``aliases``: other names of a table site.
    A value out of range is a :class:`SiteError` naming it.
    """

    name: str
    latitude_deg: float
    longitude_deg: float
    height_m: float
    pressure_hpa: float
    temperature_c: float
    relative_humidity: float
    provenance: dict = field(default_factory=dict, compare=False)
    aliases: tuple = field(default=(), compare=False)
    #: a ground site (see :class:`SpaceSite`)
    is_space: ClassVar[bool] = False

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.strip():
            raise SiteError(f"site: name must be a non-empty string, got {self.name!r}", "name")
        where = f"site '{self.name}'"
        for key, (lo, hi), unit in (("latitude_deg", LATITUDE_RANGE, "deg"),
                                    ("longitude_deg", LONGITUDE_RANGE, "deg"),
                                    ("height_m", HEIGHT_RANGE, "m")):
            value = getattr(self, key)
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise SiteError(f"{where}: {key} must be a number, got {value!r}", key) from None
            if not math.isfinite(value) or not lo <= value <= hi:
                raise SiteError(f"{where}: {key} must be in {lo:g}..{hi:g} {unit}, got {value:g}", key)
            object.__setattr__(self, key, value)
        if self.longitude_deg > 180.0:
            object.__setattr__(self, "longitude_deg", self.longitude_deg - 360.0)
        problem, values = _weather_problem(self.pressure_hpa, self.temperature_c, self.relative_humidity)
        if problem is not None:
            raise SiteError(f"{where}: typical weather: {problem[1]}", problem[0])
        for key, value in values.items():
            object.__setattr__(self, key, value)
        object.__setattr__(self, "provenance", dict(self.provenance or {}))
        object.__setattr__(self, "aliases", tuple(str(a) for a in (self.aliases or ())))

    @property
    def location(self) -> EarthLocation:
        """The site's geodetic position as an astropy EarthLocation."""
        return EarthLocation.from_geodetic(lon=self.longitude_deg * u.deg, lat=self.latitude_deg * u.deg,
                                           height=self.height_m * u.m)

    def default_weather(self) -> Weather:
        """The site's typical weather.

        Returns
        -------
        Weather
            Its pressure, temperature and humidity (source: the site's defaults).
        """
        return Weather(self.pressure_hpa, self.temperature_c, self.relative_humidity,
                       source=f"site defaults ({self.name})")

    def with_weather(self, pressure_hpa: float | None = None, temperature_c: float | None = None,
                     relative_humidity: float | None = None, *, source: str = "given") -> "Site":
        """This site with the given typical weather values replaced.

        Parameters
        ----------
        pressure_hpa : float, optional
            Pressure (hPa).
        temperature_c : float, optional
            Temperature (C).
        relative_humidity : float, optional
            Relative humidity (fraction, 0-1).
        source : str, optional
            The provenance recorded for the values replaced.

        Returns
        -------
        Site
            The copy (this site when nothing is given).
        """
        changes, prov = {}, dict(self.provenance)
        for key, value, what in (("pressure_hpa", pressure_hpa, "pressure"),
                                 ("temperature_c", temperature_c, "temperature"),
                                 ("relative_humidity", relative_humidity, "humidity")):
            if value is not None:
                changes[key] = value
                prov[what] = source
        return dataclasses.replace(self, provenance=prov, **changes) if changes else self

    def as_dict(self) -> dict:
        """Plain values for metadata.

        Returns
        -------
        dict
            Name, position, typical weather and provenance.
        """
        return {"name": self.name, "latitude_deg": self.latitude_deg, "longitude_deg": self.longitude_deg,
                "height_m": self.height_m,
                "typical_weather": {"pressure_hpa": self.pressure_hpa, "temperature_c": self.temperature_c,
                                    "relative_humidity": self.relative_humidity},
                "provenance": dict(self.provenance)}


#: observatories in space, ``{name: aliases}`` (:class:`SpaceSite`); the name says which
#: header keywords usually carry what (both are tried for every space exposure)
SPACE_OBSERVATORIES = {
    "space": ("none", "no site", "orbit", "in space", "space telescope", "spacecraft", "satellite"),
    "hst": ("hubble", "hubble space telescope"),
    "jwst": ("webb", "james webb space telescope", "james webb"),
}

#: what a space site means, recorded with it
SPACE_NOTE = ("an observatory in space: no atmosphere (no refraction, no weather), no horizon (no zenith "
              "distance, no rotator angle), no flexure by pointing; the stars' apparent positions are "
              "their astrometric positions at the exposure epoch seen by an observer moving with the "
              "observatory's barycentric velocity (stellar aberration; the velocity aberration scale "
              "factor: HST VAFACTOR, JWST VA_SCALE)")


@dataclass(frozen=True)
class SpaceSite:
    """An observatory in space (``site = "space"``, ``"hst"``, ``"jwst"``, ``"none"``...).

    No position on the Earth and no atmosphere: :func:`astrocal.sky.astrometry.apparent_positions`
    projects the astrometric positions (with the stellar aberration of the observatory's
    velocity) on the plane tangent at the pointing and turns them by the position angle; the
    fit gives its exposures no telescope flexure. ``name`` is the canonical name of
    :data:`SPACE_OBSERVATORIES`.
    """

    name: str = "space"
    aliases: tuple = field(default=(), compare=False)
    is_space: ClassVar[bool] = True

    @property
    def provenance(self) -> dict:
        """What a space site means (``{"notes": SPACE_NOTE}``)."""
        return {"notes": SPACE_NOTE}

    def as_dict(self) -> dict:
        """Plain values for metadata.

        Returns
        -------
        dict
            ``name``, ``space`` (True) and ``note``.
        """
        return {"name": self.name, "space": True, "note": SPACE_NOTE}


_SPACE_INDEX = {_k: _name for _name, _aliases in SPACE_OBSERVATORIES.items()
                for _k in (_name,) + _aliases}


def is_space(site: str | Site | SpaceSite) -> bool:
    """Whether a site is in space.

    Parameters
    ----------
    site : str, Site or SpaceSite
        A name (or alias), or a site.

    Returns
    -------
    bool
        True for an observatory in space (:data:`SPACE_OBSERVATORIES`).
    """
    if isinstance(site, str):
        return _key(site) in _SPACE_INDEX
    return bool(getattr(site, "is_space", False))


def custom_site(latitude_deg: float, longitude_deg: float, height_m: float, *, name: str = "custom",
                pressure_hpa: float | None = None, temperature_c: float | None = None,
                relative_humidity: float | None = None, source: str = "given") -> Site:
    """A site at a given position (geodetic latitude and longitude in deg, height in m).

    Typical weather not given is the standard atmosphere's at the height (stated in the
    provenance): :func:`standard_pressure_hpa`, :func:`standard_temperature_c` and dry air
    (relative humidity 0; humidity changes refraction by < 0.1 %).

    Parameters
    ----------
    latitude_deg, longitude_deg : float
        Geodetic latitude and longitude (deg).
    height_m : float
        Height (m).
    name : str, optional
        The site's name.
    pressure_hpa : float, optional
        Typical pressure (hPa).
    temperature_c : float, optional
        Typical temperature (C).
    relative_humidity : float, optional
        Typical relative humidity (fraction, 0-1).
    source : str, optional
        The provenance of the values given.

    Returns
    -------
    Site
        The site.

    Raises
    ------
    SiteError
        A missing or out-of-range value (naming the key).
    """
    for key, value in (("latitude_deg", latitude_deg), ("longitude_deg", longitude_deg), ("height_m", height_m)):
        if value is None:
            raise SiteError(f"site '{name}': {key} is missing (a position needs latitude_deg, longitude_deg "
                            "and height_m)", key)
    prov = {"position": source, "height": source}
    try:
        h = float(height_m)
    except (TypeError, ValueError):
        raise SiteError(f"site '{name}': height_m must be a number, got {height_m!r}", "height_m") from None
    if not (math.isfinite(h) and HEIGHT_RANGE[0] <= h <= HEIGHT_RANGE[1]):
        raise SiteError(f"site '{name}': height_m must be in {HEIGHT_RANGE[0]:g}..{HEIGHT_RANGE[1]:g} m, "
                        f"got {h:g}", "height_m")
    if pressure_hpa is None:
        pressure_hpa = round(standard_pressure_hpa(h), 1)
        prov["pressure"] = f"default: {STANDARD_ATMOSPHERE}"
    else:
        prov["pressure"] = source
    if temperature_c is None:
        temperature_c = round(standard_temperature_c(h), 1)
        prov["temperature"] = "default: the ISA temperature at the site height, 15 C - 6.5 C/km"
    else:
        prov["temperature"] = source
    if relative_humidity is None:
        relative_humidity = 0.0
        prov["humidity"] = ("default: dry air, as the ISA (relative humidity changes the refraction by "
                            "< 0.1 % at 0.5-10 um)")
    else:
        prov["humidity"] = source
    return Site(name, latitude_deg, longitude_deg, h, pressure_hpa, temperature_c, relative_humidity, prov)


# --------------------------------------------------------------------------- the table
#: the table shipped with astrocal
SITE_TABLE = ("data", "sites.ecsv")
_COLUMNS = ("name", "aliases", "latitude_deg", "longitude_deg", "height_m", "pressure_hpa", "temperature_c",
            "relative_humidity", "position_source", "height_source", "pressure_source", "temperature_source",
            "humidity_source", "notes")
_PROVENANCE = (("position", "position_source"), ("height", "height_source"), ("pressure", "pressure_source"),
               ("temperature", "temperature_source"), ("humidity", "humidity_source"))


def _key(text) -> str:
    """The form names are matched in: lower case, accents and punctuation dropped."""
    text = unicodedata.normalize("NFKD", str(text))
    text = "".join(c for c in text if not unicodedata.combining(c))
    return " ".join(re.findall(r"[a-z0-9+]+", text.lower()))


def load_sites(path: str | os.PathLike | None = None) -> dict:
    """The sites of an ECSV table; every row must state the source of each value.

    Parameters
    ----------
    path : str or os.PathLike, optional
        The table (default: the one shipped, ``astrocal/data/sites.ecsv``).

    Returns
    -------
    dict
        ``{name: Site}``.

    Raises
    ------
    SiteError
        A missing column or a bad row (naming the table).
    """
    from astropy.table import Table

    if path is None:
        with resources.as_file(resources.files("astrocal").joinpath(*SITE_TABLE)) as p:
            table = Table.read(p, format="ascii.ecsv")
        label = "astrocal/" + "/".join(SITE_TABLE)
    else:
        table = Table.read(path, format="ascii.ecsv")
        label = str(path)
    missing = [c for c in _COLUMNS if c not in table.colnames]
    if missing:
        raise SiteError(f"{label}: site table without column(s) {', '.join(missing)}")
    def text(row, column):  # an empty string is read back masked
        value = row[column]
        return "" if np.ma.is_masked(value) else str(value).strip()

    sites = {}
    for row in table:
        name = text(row, "name")
        prov = {}
        for what, column in _PROVENANCE:
            prov[what] = text(row, column)
            if not prov[what]:
                raise SiteError(f"{label}: site '{name}' has no {column}")
        if text(row, "notes"):
            prov["notes"] = text(row, "notes")
        prov["table"] = label
        aliases = tuple(a.strip() for a in text(row, "aliases").split(";") if a.strip())
        if name in sites:
            raise SiteError(f"{label}: site '{name}' appears twice")
        try:
            sites[name] = Site(name, row["latitude_deg"], row["longitude_deg"], row["height_m"],
                               row["pressure_hpa"], row["temperature_c"], row["relative_humidity"],
                               prov, aliases)
        except SiteError as exc:
            raise SiteError(f"{label}: {exc}") from None
    return sites


def _index(sites) -> dict:
    """``{matching form: (site name, the name or alias as written)}``; a form naming two
    sites is an error."""
    index = {}
    for name, site in sites.items():
        for text in (name,) + site.aliases:
            key = _key(text)
            if key in index and index[key][0] != name:
                raise SiteError(f"site name {text!r} is both '{index[key][0]}' and '{name}'")
            index.setdefault(key, (name, text))
    return index


#: known sites (lower-case names) from ``astrocal/data/sites.ecsv``
SITES = load_sites()
_INDEX = _index(SITES)


def site_names() -> dict:
    """The known sites and their aliases.

    Returns
    -------
    dict
        ``{name: aliases}``, sorted by name.
    """
    return {name: SITES[name].aliases for name in sorted(SITES)}


def _unknown(site) -> UnknownSiteError:
    close = difflib.get_close_matches(_key(site), list(_INDEX), n=6, cutoff=0.6)
    hint, said, named = "", [], set()
    for key in close:  # the closest name of each site, at most three sites
        name, text = _INDEX[key]
        if name not in named and len(named) < 3:
            named.add(name)
            said.append(f"'{text}'" + ("" if text == name else f" ({name})"))
    if said:
        hint = f" (did you mean {', '.join(said)}?)"
    return UnknownSiteError(
        f"unknown site {site!r}{hint}; known sites: {', '.join(sorted(SITES))} (and aliases such as "
        "'keck', 'subaru', 'vlt', 'lbt', 'gtc', 'salt'; astrocal.sky.sites.site_names() lists them); "
        "an observatory in space: 'space' (also 'hst', 'jwst', 'none'); "
        "or give the position: latitude_deg, longitude_deg, height_m")


_MAPPING_KEYS = ("name", "latitude_deg", "longitude_deg", "height_m", "pressure_hpa", "temperature_c",
                 "relative_humidity")


def _from_mapping(mapping) -> Site:
    for key in mapping:
        if key not in _MAPPING_KEYS:
            raise SiteError(f"site: unknown key {key!r}; allowed: {', '.join(_MAPPING_KEYS)}", key)
    weather = {k: mapping.get(k) for k in ("pressure_hpa", "temperature_c", "relative_humidity")}
    position = [k for k in ("latitude_deg", "longitude_deg", "height_m") if k in mapping]
    if not position:
        if "name" not in mapping:
            raise SiteError("site: give a known site's name or a position (latitude_deg, longitude_deg, "
                            "height_m)", "latitude_deg")
        return get_site(mapping["name"]).with_weather(**weather)
    return custom_site(mapping.get("latitude_deg"), mapping.get("longitude_deg"), mapping.get("height_m"),
                       name=mapping.get("name", "custom"), **weather)


def get_site(site: str | Mapping | EarthLocation | Site | SpaceSite = "armazones") -> Site | SpaceSite:
    """A :class:`Site`: by name or alias (``"armazones"``, ``"elt"``, ``"Keck"``, ``"VLT"``...),
    or a :class:`SpaceSite` for an observatory in space (``"space"``, ``"hst"``, ``"jwst"``,
    ``"none"``: :data:`SPACE_OBSERVATORIES`);
    from a mapping (``latitude_deg``, ``longitude_deg``, ``height_m``, optional ``name``
    and weather; or a known ``name`` with weather), an
    :class:`~astropy.coordinates.EarthLocation` (standard-atmosphere weather), or passed
    through.

    Parameters
    ----------
    site : str, mapping, EarthLocation, Site or SpaceSite, optional
        The site.

    Returns
    -------
    Site or SpaceSite
        The site.

    Raises
    ------
    UnknownSiteError
        An unknown name (a ``KeyError``; the message suggests close names).
    SiteError
        A bad position or mapping key.
    TypeError
        Anything else.
    """
    if isinstance(site, (Site, SpaceSite)):
        return site
    if isinstance(site, EarthLocation):
        lon, lat, height = site.to_geodetic()
        return custom_site(float(lat.to_value(u.deg)), float(lon.to_value(u.deg)), float(height.to_value(u.m)),
                           source="an EarthLocation")
    if isinstance(site, Mapping):
        return _from_mapping(site)
    if not isinstance(site, str):
        raise TypeError(f"site must be a name, a mapping, a Site or an EarthLocation, got {site!r}")
    space = _SPACE_INDEX.get(_key(site))
    if space is not None:
        return SpaceSite(space, SPACE_OBSERVATORIES[space])
    found = _INDEX.get(_key(site))
    if found is None:
        raise _unknown(site)
    return SITES[found[0]]
