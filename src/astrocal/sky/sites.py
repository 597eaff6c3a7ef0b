"""Observatory sites and the weather used for refraction.

A :class:`Site` holds the geodetic position of a telescope and its *typical* weather
(pressure, temperature, relative humidity), which :mod:`astrocal.sky.astrometry` uses
when an exposure comes without weather (and says so in the log). :data:`SITES` is the
table of known sites; :func:`get_site` looks one up by name.

Provenance of the numbers (also in each site's ``provenance``):

``armazones`` -- the ELT site, Cerro Armazones (Chile)
    * latitude -24.589 deg, longitude -70.192 deg: the summit, 24d35m21s S, 70d11m32s W
      (Wikipedia "Cerro Armazones"), rounded to 0.001 deg (about 100 m);
    * altitude 3046 m: ESO, "Cerro Armazones"
      (https://www.eso.org/public/teles-instr/elt/cerro-armazones/);
    * typical weather 712 hPa, 8 C, 15 % relative humidity: the project's reference notes
      for the ELT site. For comparison, the ScopeSim instrument database
      (AstarVienna/irdb, ``Armazones/Armazones.yaml``, commit 060ef767, GPL-3.0) models
      Armazones with 755 hPa, 7 C, 10 %, 3060 m. A 43 hPa difference in pressure changes
      refraction (and its differential part) by 6 %: give the measured weather when known.

The latitude and longitude are geodetic (WGS84), the height is above the geoid (astropy
takes it as the ellipsoidal height; the ~40 m difference moves nothing measurable here).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import astropy.units as u
from astropy.coordinates import EarthLocation

__all__ = ["Site", "Weather", "SITES", "get_site", "WeatherError"]


class WeatherError(ValueError):
    """Weather values that cannot be used (negative pressure, humidity outside 0..1...)."""


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
        for name in ("pressure_hpa", "temperature_c", "relative_humidity"):
            value = getattr(self, name)
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise WeatherError(f"weather: {name} must be a number, got {value!r}") from None
            if value != value:  # NaN
                raise WeatherError(f"weather: {name} is NaN")
            object.__setattr__(self, name, value)
        if self.pressure_hpa < 0 or self.pressure_hpa > 1200:
            raise WeatherError(f"weather: pressure_hpa must be in 0..1200 hPa, got {self.pressure_hpa}")
        if not -90 <= self.temperature_c <= 60:
            raise WeatherError(f"weather: temperature_c must be in -90..60 C, got {self.temperature_c}")
        if not 0 <= self.relative_humidity <= 1:
            raise WeatherError(
                f"weather: relative_humidity is a fraction 0..1, got {self.relative_humidity}"
                + (" (per cent? divide by 100)" if 1 < self.relative_humidity <= 100 else "")
            )

    def as_dict(self) -> dict:
        return {"pressure_hpa": self.pressure_hpa, "temperature_c": self.temperature_c,
                "relative_humidity": self.relative_humidity, "source": self.source}


@dataclass(frozen=True)
class Site:
    """A telescope site: geodetic position and typical weather (see the module notes)."""

    name: str
    latitude_deg: float
    longitude_deg: float
    height_m: float
    pressure_hpa: float
    temperature_c: float
    relative_humidity: float
    provenance: dict = field(default_factory=dict, compare=False)

    @property
    def location(self) -> EarthLocation:
        return EarthLocation.from_geodetic(lon=self.longitude_deg * u.deg, lat=self.latitude_deg * u.deg,
                                           height=self.height_m * u.m)

    def default_weather(self) -> Weather:
        return Weather(self.pressure_hpa, self.temperature_c, self.relative_humidity,
                       source=f"site defaults ({self.name})")


#: known sites (lower-case names)
SITES = {
    "armazones": Site(
        name="armazones",
        latitude_deg=-24.589,
        longitude_deg=-70.192,
        height_m=3046.0,
        pressure_hpa=712.0,
        temperature_c=8.0,
        relative_humidity=0.15,
        provenance={
            "position": "24d35m21s S, 70d11m32s W (Cerro Armazones summit, Wikipedia 'Cerro Armazones'), "
                        "rounded to 0.001 deg",
            "height": "3046 m, ESO 'Cerro Armazones' page "
                      "(https://www.eso.org/public/teles-instr/elt/cerro-armazones/)",
            "weather": "typical 712 hPa, 8 C, 15 % RH from the project's reference notes on the ELT site; "
                       "ScopeSim IRDB Armazones/Armazones.yaml (AstarVienna/irdb commit "
                       "060ef76794db0296c0de1dee2b0e9feb1c094458, GPL-3.0) uses 755 hPa, 7 C, 10 % RH, 3060 m",
        },
    ),
}

_ALIASES = {"elt": "armazones", "cerro armazones": "armazones", "armazones": "armazones"}


def get_site(site="armazones") -> Site:
    """Return a :class:`Site` by name (``"armazones"``, alias ``"elt"``) or pass one through.

    An :class:`~astropy.coordinates.EarthLocation` is accepted too; it gets the Armazones
    typical weather as its defaults (stated in its provenance).
    """
    if isinstance(site, Site):
        return site
    if isinstance(site, EarthLocation):
        lon, lat, height = site.to_geodetic()
        ref = SITES["armazones"]
        return Site("custom", float(lat.to_value(u.deg)), float(lon.to_value(u.deg)),
                    float(height.to_value(u.m)), ref.pressure_hpa, ref.temperature_c,
                    ref.relative_humidity,
                    {"weather": "no typical weather known for this location; Armazones values used"})
    if not isinstance(site, str):
        raise KeyError(f"site must be a name, a Site or an EarthLocation, got {site!r}")
    key = _ALIASES.get(site.strip().lower(), site.strip().lower())
    if key not in SITES:
        raise KeyError(f"unknown site {site!r}; known sites: {sorted(SITES)} "
                       "(or pass an astrocal.sky.sites.Site / an EarthLocation)")
    return SITES[key]
