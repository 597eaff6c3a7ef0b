"""The night plan of a simulated on-sky campaign: the fields, their centres and the
exposures of one night through a range of zenith distances.

A plan is what the observer commands and records (time, pointing, position angle,
weather, wavelength per exposure); the truth drawn for it is in
:mod:`astrocal.sim.sky_truth`.

Units: degrees (angles), hPa, Celsius, relative humidity as a fraction, um.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import astropy.units as u
import numpy as np
from astropy.coordinates import TETE, AltAz, SkyCoord, get_sun
from astropy.table import Table
from astropy.time import Time, TimeDelta
from numpy.typing import ArrayLike

from .. import earth
from ..errors import SimulationOptionError
from ..sky.projection import inverse_gnomonic
from ..sky.catalog import CLUSTER_47TUC_CENTER, get_catalog
from ..sky.sites import Weather, get_site

__all__ = ["SIDEREAL_RATE", "FIELDS", "PlannedExposure", "SkyPlan", "field_center", "target_key", "plan_night"]

log = logging.getLogger(__name__)

#: sidereal days per solar day (hour angle advances this much faster than UTC)
SIDEREAL_RATE = 1.00273790935


#: the simulated sky fields: default night (local evening date), planned zenith range
#: (deg) and the catalogue that is the truth
FIELDS = {
    "gc": {"name": "Galactic Center", "catalog": "galactic_center", "night": "2027-06-12",
           "zenith_range": (5.0, 60.0)},
    "47tuc": {"name": "47 Tuc (NGC 104)", "catalog": "synthetic 47 Tuc cluster", "night": "2027-09-30",
              "zenith_range": (48.0, 58.0)},
}


@dataclass(frozen=True)
class PlannedExposure:
    """One planned sky exposure (what the observer commands and records).

    ``time``: mid-exposure, ISO UTC; ``ra_deg``, ``dec_deg``: commanded pointing (ICRS);
    ``position_angle_deg``: PA of the instrument +y axis from north through east (METIS is
    field-stabilised: the PA is fixed, the rotator follows the parallactic angle);
    ``weather``: ``pressure_hpa``, ``temperature_c``, ``relative_humidity`` (fraction);
    ``wavelength_um``: effective wavelength; ``hour_angle_deg``, ``zenith_distance_deg``:
    planned, geometric (unrefracted) values at the field centre; ``sun_altitude_deg``.
    """

    name: str
    time: str
    ra_deg: float
    dec_deg: float
    position_angle_deg: float
    weather: dict
    wavelength_um: float
    hour_angle_deg: float = float("nan")
    zenith_distance_deg: float = float("nan")
    sun_altitude_deg: float = float("nan")

    def astrometry_kwargs(self, site: str = "armazones", parity: int = 1) -> dict:
        """Keyword arguments of :func:`~astrocal.sky.astrometry.apparent_positions`.

        Parameters
        ----------
        site : str
            The site's name.
        parity : int
            +1 (sky orientation) or -1.

        Returns
        -------
        dict
            ``time``, ``pointing``, ``wavelength``, ``position_angle``, ``site``,
            ``weather``, ``parity``.
        """
        return {"time": self.time, "pointing": (self.ra_deg, self.dec_deg),
                "wavelength": self.wavelength_um, "position_angle": self.position_angle_deg,
                "site": site, "weather": dict(self.weather), "parity": parity}


@dataclass(frozen=True)
class SkyPlan:
    """The exposures of one sky campaign (one night, one field) and their common settings.

    ``center_ra_deg``, ``center_dec_deg``: the field centre (ICRS) the pointings dither
    around; ``site``: site name; ``parity``: +1 (sky orientation, +x west at PA 0) or -1.
    """

    exposures: tuple
    center_ra_deg: float
    center_dec_deg: float
    site: str = "armazones"
    parity: int = 1
    target: str = ""

    def __len__(self):
        return len(self.exposures)

    def __iter__(self):
        return iter(self.exposures)

    def __getitem__(self, k):
        return self.exposures[k]

    @property
    def names(self) -> list[str]:
        """The exposures' names."""
        return [e.name for e in self.exposures]

    def to_table(self) -> Table:
        """The plan as a table.

        Returns
        -------
        astropy.table.Table
            One row per exposure (angles deg, weather in its units); meta holds the rest.
        """
        t = Table()
        t["exposure"] = self.names
        t["time"] = [e.time for e in self.exposures]
        for key in ("ra_deg", "dec_deg", "position_angle_deg", "wavelength_um", "hour_angle_deg",
                    "zenith_distance_deg", "sun_altitude_deg"):
            t[key] = np.array([getattr(e, key) for e in self.exposures], float)
        for key in ("pressure_hpa", "temperature_c", "relative_humidity"):
            t[key] = np.array([e.weather[key] for e in self.exposures], float)
        t["hour_angle_deg"].description = "planned hour angle of the field centre (geometric)"
        t["zenith_distance_deg"].description = "planned zenith distance of the field centre (geometric)"
        t.meta = {"center_ra_deg": self.center_ra_deg, "center_dec_deg": self.center_dec_deg,
                  "site": self.site, "parity": self.parity, "target": self.target}
        return t

    @classmethod
    def from_table(cls, t: Table, source: str = "<table>") -> SkyPlan:
        """The plan of a table written by :meth:`to_table`.

        Parameters
        ----------
        t : astropy.table.Table
            The table.
        source : str
            Its name in errors.

        Returns
        -------
        SkyPlan
            The plan.

        Raises
        ------
        SimulationOptionError
            If a column or meta key is missing (naming it and the source).
        """
        need = ["exposure", "time", "ra_deg", "dec_deg", "position_angle_deg", "wavelength_um",
                "pressure_hpa", "temperature_c", "relative_humidity"]
        missing = [c for c in need if c not in t.colnames]
        if missing:
            raise SimulationOptionError(f"{source}: plan table lacks columns {missing}")
        for key in ("center_ra_deg", "center_dec_deg"):
            if key not in t.meta:
                raise SimulationOptionError(f"{source}: plan table lacks meta key {key!r}")
        exps = []
        for row in t:
            opt = {k: float(row[k]) for k in ("hour_angle_deg", "zenith_distance_deg", "sun_altitude_deg")
                   if k in t.colnames}
            exps.append(PlannedExposure(
                name=str(row["exposure"]), time=str(row["time"]), ra_deg=float(row["ra_deg"]),
                dec_deg=float(row["dec_deg"]), position_angle_deg=float(row["position_angle_deg"]),
                weather={k: float(row[k]) for k in ("pressure_hpa", "temperature_c", "relative_humidity")},
                wavelength_um=float(row["wavelength_um"]), **opt))
        return cls(tuple(exps), float(t.meta["center_ra_deg"]), float(t.meta["center_dec_deg"]),
                   str(t.meta.get("site", "armazones")), int(t.meta.get("parity", 1)),
                   str(t.meta.get("target", "")))


def field_center(target: str) -> tuple[float, float]:
    """ICRS centre of a simulated field.

    Parameters
    ----------
    target : str
        ``"gc"`` (Sgr A*, at its 2015.0 position) or ``"47tuc"`` (the cluster centre of
        Harris 1996/2010), or another name :func:`target_key` knows.

    Returns
    -------
    tuple of float
        ``(ra, dec)``, degrees.
    """
    key = target_key(target)
    if key == "gc":
        ref = get_catalog("galactic_center").reference
        return float(ref.ra_deg), float(ref.dec_deg)
    return float(CLUSTER_47TUC_CENTER[0]), float(CLUSTER_47TUC_CENTER[1])


def target_key(target: str) -> str:
    """The key in :data:`FIELDS` of a field's name.

    Parameters
    ----------
    target : str
        ``"gc"``, ``"47tuc"`` or another name of them (``"Galactic Center"``, ``"Sgr A"``,
        ``"NGC 104"``, ``"tuc47"``; case, spaces and underscores ignored).

    Returns
    -------
    str
        ``"gc"`` or ``"47tuc"``.

    Raises
    ------
    SimulationOptionError
        For an unknown field.
    """
    key = str(target).strip().lower().replace(" ", "").replace("_", "")
    key = {"galacticcenter": "gc", "galacticcentre": "gc", "sgra": "gc", "ngc104": "47tuc",
           "tuc47": "47tuc"}.get(key, key)
    if key not in FIELDS:
        raise SimulationOptionError(f"unknown sky field {target!r}; choose from {sorted(FIELDS)}")
    return key


def _hour_angle_for_zenith(z_deg, lat_deg, dec_deg):
    """Hour angle (deg, >= 0) at which a star of declination ``dec`` reaches zenith distance
    ``z`` (clipped to the transit / lower culmination when out of reach)."""
    phi, dec, z = np.radians(lat_deg), np.radians(dec_deg), np.radians(z_deg)
    c = (np.cos(z) - np.sin(phi) * np.sin(dec)) / (np.cos(phi) * np.cos(dec))
    return np.degrees(np.arccos(np.clip(c, -1.0, 1.0)))


def plan_night(center: tuple[float, float] | SkyCoord, n_exposures: int = 12, *,
               zenith_range: tuple[float, float] = (5.0, 60.0), night: str = "2027-06-12",
               site: str = "armazones", position_angles: ArrayLike = (0.0,), dither_arcsec: float = 0.3,
               wavelength_um: float = 3.796046, weather: Mapping | None = None, temperature_drop_c: float = 2.0,
               pressure_rms_hpa: float = 0.5, humidity_range: tuple[float, float] = (0.10, 0.20),
               rng: np.random.Generator | int | None = None, parity: int = 1, prefix: str = "sky",
               target: str = "") -> SkyPlan:
    """A night of exposures of one field from ``site``, through a range of zenith distances.

    The field centre ``center`` (``(ra_deg, dec_deg)`` or a SkyCoord) transits near the
    local midnight after the evening of ``night`` (a date, ``YYYY-MM-DD``); the exposures
    are spread in time from the rising field at ``zenith_range[1]`` through the transit
    (as close to ``zenith_range[0]`` as the declination allows) to the setting field at
    ``zenith_range[1]``, equally spaced in zenith distance (geometric, planned values).
    METIS is field-stabilised: each exposure has a fixed position angle (cycling through
    ``position_angles``, deg), so the rotator angle follows the parallactic angle.

    Pointings dither around the centre by up to ``dither_arcsec`` (the first one is the
    centre). Weather: ``weather`` (mapping, default the site's typical values) at the
    start, the temperature falling by ``temperature_drop_c`` over the night, the pressure
    wandering by ``pressure_rms_hpa`` and the relative humidity (a fraction) uniform in
    ``humidity_range``. ``rng`` draws the dithers and weather (seeded Generator or int).

    Parameters
    ----------
    center : tuple of float or astropy.coordinates.SkyCoord
        The field centre, ``(ra_deg, dec_deg)`` ICRS.
    n_exposures : int
        Exposures.
    zenith_range : tuple of float
        Smallest and largest planned zenith distance, degrees.
    night : str
        The evening's date, ``YYYY-MM-DD``.
    site : str
        The site (:func:`astrocal.sky.sites.get_site`).
    position_angles : array_like
        Position angles cycled through, degrees.
    dither_arcsec : float
        Largest dither, arcsec.
    wavelength_um : float
        Effective wavelength, um.
    weather : mapping, optional
        ``pressure_hpa``, ``temperature_c``, ``relative_humidity`` at the start.
    temperature_drop_c : float
        Temperature drop over the night, C.
    pressure_rms_hpa : float
        Rms of the pressure's wander, hPa.
    humidity_range : tuple of float
        Range of the relative humidity (fractions).
    rng : numpy.random.Generator, int or None
        The random stream of the dithers and the weather.
    parity : int
        +1 (sky orientation, +x west at PA 0) or -1.
    prefix : str
        Exposure names are ``<prefix>_NN``.
    target : str
        The plan's target key.

    Returns
    -------
    SkyPlan
        The plan.

    Raises
    ------
    SimulationOptionError
        For an invalid option, or a field that never reaches the zenith range.
    """
    if int(n_exposures) < 1:
        raise SimulationOptionError(f"a sky campaign needs at least one exposure, got {n_exposures}")
    n = int(n_exposures)
    zmin, zmax = (float(v) for v in zenith_range)
    if not 0.0 <= zmin <= zmax < 85.0:
        raise SimulationOptionError(f"zenith_range must satisfy 0 <= min <= max < 85 deg, got {zenith_range}")
    if parity not in (1, -1):
        raise SimulationOptionError(f"parity must be +1 or -1, got {parity!r}")
    pas = [float(p) for p in np.atleast_1d(position_angles)]
    if not pas:
        raise SimulationOptionError("position_angles is empty")
    rng = np.random.default_rng(rng)
    site_obj = get_site(site)
    c0 = SkyCoord(*center, unit="deg") if not isinstance(center, SkyCoord) else center.icrs
    ra0, dec0 = float(c0.ra.deg), float(c0.dec.deg)
    lat = site_obj.latitude_deg
    try:
        evening = Time(f"{night}T12:00:00", scale="utc")
    except ValueError:
        raise SimulationOptionError(f"night must be a date YYYY-MM-DD, got {night!r}") from None
    # local midnight after that evening, then the transit of the field closest to it; hour
    # angles and zenith distances with the field's coordinates of date (precession matters:
    # 0.15 deg in declination for 47 Tuc between J2000 and 2027)
    midnight = evening + TimeDelta((12.0 - site_obj.longitude_deg / 15.0) * 3600.0, format="sec")
    with earth.orientation():
        lst = midnight.sidereal_time("apparent", longitude=site_obj.longitude_deg * u.deg).deg
        c_date = c0.transform_to(TETE(obstime=midnight))  # true equator and equinox of date
    ra_date, dec_date = float(c_date.ra.deg), float(c_date.dec.deg)
    z_transit = abs(lat - dec_date)
    if zmax < z_transit:
        raise SimulationOptionError(f"the field (dec {dec0:.2f} deg) never reaches zenith distance {zmax:g} deg from "
                         f"{site_obj.name}: it transits at {z_transit:.1f} deg")
    if zmin < z_transit:
        log.info("sky plan: the field transits at zenith distance %.1f deg (> %.1f asked)", z_transit, zmin)
    # the hour angle of the exposures: s in [-1, 1] -> zenith distance zmin + |s| (zmax - zmin)
    s = np.linspace(-1.0, 1.0, n) if n > 1 else np.zeros(1)
    z_target = np.maximum(zmin + np.abs(s) * (zmax - zmin), z_transit)
    ha = np.sign(s) * _hour_angle_for_zenith(z_target, lat, dec_date)
    phi, dec_r = np.radians(lat), np.radians(dec_date)
    z_target = np.degrees(np.arccos(np.clip(np.sin(phi) * np.sin(dec_r)
                                            + np.cos(phi) * np.cos(dec_r) * np.cos(np.radians(ha)), -1, 1)))
    dha = ((lst - ra_date + 180.0) % 360.0) - 180.0  # hour angle of the field at midnight, deg
    transit = midnight - TimeDelta(dha / 15.0 / SIDEREAL_RATE * 3600.0, format="sec")
    times = transit + TimeDelta(ha / 15.0 / SIDEREAL_RATE * 3600.0, format="sec")
    # dithers (east, north) arcsec: first at the centre
    r = dither_arcsec * np.sqrt(rng.uniform(0, 1, n))
    a = rng.uniform(0, 2 * np.pi, n)
    de, dn = r * np.sin(a), r * np.cos(a)
    de[0] = dn[0] = 0.0
    lon, latp = inverse_gnomonic(np.radians(de / 3600.0), np.radians(dn / 3600.0), np.radians(ra0),
                                 np.radians(dec0))
    # weather
    base = site_obj.default_weather()
    w0 = {"pressure_hpa": base.pressure_hpa, "temperature_c": base.temperature_c,
          "relative_humidity": base.relative_humidity, **dict(weather or {})}
    Weather(**w0)  # validates
    frac = (times.jd - times.jd.min()) / max(float(np.ptp(times.jd)), 1e-12)
    pressure = w0["pressure_hpa"] + pressure_rms_hpa * np.cumsum(rng.normal(0, 1, n)) / np.sqrt(n)
    temperature = w0["temperature_c"] - temperature_drop_c * frac
    humidity = rng.uniform(*humidity_range, n)
    with earth.orientation():
        sun = get_sun(times).transform_to(AltAz(obstime=times, location=site_obj.location))
    sun_alt = sun.alt.deg
    if np.any(sun_alt > -12.0):
        log.warning("sky plan: %d exposure(s) with the Sun above -12 deg (night %s): choose another night",
                    int(np.sum(sun_alt > -12.0)), night)
    exps = []
    for k in range(n):
        exps.append(PlannedExposure(
            name=f"{prefix}_{k:02d}", time=times[k].utc.isot, ra_deg=float(np.degrees(lon[k]) % 360.0),
            dec_deg=float(np.degrees(latp[k])), position_angle_deg=pas[k % len(pas)],
            weather={"pressure_hpa": round(float(pressure[k]), 2),
                     "temperature_c": round(float(temperature[k]), 2),
                     "relative_humidity": round(float(humidity[k]), 3)},
            wavelength_um=float(wavelength_um), hour_angle_deg=float(ha[k]),
            zenith_distance_deg=float(z_target[k]), sun_altitude_deg=float(sun_alt[k])))
    return SkyPlan(tuple(exps), ra0, dec0, site_obj.name, int(parity), str(target))


