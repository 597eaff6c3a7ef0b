"""The truth of a simulated on-sky campaign: the night plan, poses, flexure, star positions.

No images here: this module holds the *geometry* of a sky campaign with its known truth,
and the point-level observations that the measure stage would produce for perfect
detection and matching (the fast path for tests of the sky part of the joint model).

The chain, for star ``s`` (TRUE catalogue) in exposure ``e`` (see the model equation in
``docs/model.md`` and ``/docs`` of :mod:`astrocal.model.flexure`)::

    x_es      = apparent_positions(true catalogue, time, pointing, PA, site, weather, ...)
    Delta_es  = FlexureBasis.displacement(c, u_es, v_es, z_e, r_e, parity)
    X_es      = x_es + Delta_es + s_e x_es + theta_e R90 x_es + t_e          (arcsec)
    p_es      = G^-1(X_es)                                                  (pixels, 0-based)

``x_es`` (instrument frame) and ``(u_es, v_es)`` (telescope frame) come from
:func:`astrocal.sky.astrometry.apparent_positions` with the true catalogue; ``c`` are the
flexure coefficients (one set per campaign, their zenith dependence is in the basis);
``(s_e, theta_e, t_e)`` the exposure's pose (scale, rotation in radians, translation in
arcsec; ``R90 (x, y) = (-y, x)``): a common frame part (the small rotation and scale between
the sky's instrument frame and the lab mask frame) plus per-exposure pointing, position
angle and plate-scale errors; ``G`` the instrument field (pixels -> focal-plane arcsec).

The catalogue the fit sees (:func:`noisy_catalog`) is the truth plus errors drawn from the
catalogue's stated covariance (positions and proper motions), so that
``x_es(catalogue) = x_es(true) + J_e d_s`` with ``d_s`` the catalogue error (catalogue
minus truth, east/north arcsec at the exposure epoch) and ``J_e`` the
``FocalPlanePositions.jacobian``.

Stars whose proper motion the catalogue does not list (the Galactic Center list has two)
get a TRUE proper motion drawn from the catalogue's stated dispersion
(``meta["pm_dispersion_mas_yr"]``) in :func:`true_catalog`; the catalogue keeps "not
measured", and :func:`~astrocal.sky.astrometry.propagate` inflates their errors by exactly
that dispersion, so the truth is consistent with the stated covariance.

Earth orientation: the simulator never downloads IERS tables (``auto_download`` is off
while it computes); for times beyond astropy's shipped table astropy warns and uses its
predictions, which only rotate the whole field by < 1e-4 rad (absorbed by the poses).

Units: arcsec (focal plane, telescope frame), mas and mas/yr (catalogue errors), degrees
(angles in plans and tables), radians (pose rotation), pixels 0-based.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import warnings
from dataclasses import dataclass, field as dc_field
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.coordinates import TETE, AltAz, SkyCoord, get_sun
from astropy.table import Table
from astropy.time import Time, TimeDelta

from ..errors import SimulationOptionError
from .. import __version__, earth
from ..atomic import atomic_write_table, atomic_write_text, check_writable
from ..field import DistortionField, solve
from ..formats.astromet import write_astromet
from ..formats.siaf import write_siaf
from ..model.flexure import FlexureBasis
from ..plain import to_plain
from ..sources import FLAG_UNIDENTIFIED  # a source that matches no catalogue star
from ..sky.astrometry import FocalPlanePositions, apparent_positions, inverse_gnomonic
from ..sky.catalog import (CLUSTER_47TUC_CENTER, Catalog, CatalogError, catalog_from_arrays,
                           get_catalog, load_catalog)
from ..sky.sites import Weather, get_site
from ..solution import Solution

__all__ = [
    "SIDEREAL_RATE",
    "FIELDS",
    "PlannedExposure",
    "SkyPlan",
    "SkyExposureTruth",
    "SkyTruth",
    "field_center",
    "plan_night",
    "true_catalog",
    "synthetic_cluster",
    "band_magnitudes",
    "noisy_catalog",
    "with_band_magnitudes",
    "catalog_errors",
    "draw_sky_truth",
    "observe_sky_points",
    "write_sky_truth",
    "write_sky_points_campaign",
    "load_sky_truth",
    "default_sky_field",
    "make_true_catalog",
    "focal_plane",
    "star_flux",
    "sky_campaign_toml",
    "truth_paths",
    "restrict_to_detector",
    "TUC47",
    "FLAG_UNIDENTIFIED",
]

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


# =========================================================================== the plan
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

    def astrometry_kwargs(self, site="armazones", parity=1):
        """Keyword arguments of :func:`~astrocal.sky.astrometry.apparent_positions`."""
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
    def names(self):
        return [e.name for e in self.exposures]

    def to_table(self) -> Table:
        """One row per exposure (angles deg, weather in its units); meta holds the rest."""
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
    def from_table(cls, t: Table, source="<table>") -> "SkyPlan":
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


def field_center(target) -> tuple[float, float]:
    """ICRS centre (deg) of a simulated field: ``"gc"`` (Sgr A*, at its 2015.0 position)
    or ``"47tuc"`` (the cluster centre of Harris 1996/2010)."""
    key = target_key(target)
    if key == "gc":
        ref = get_catalog("galactic_center").reference
        return float(ref.ra_deg), float(ref.dec_deg)
    return float(CLUSTER_47TUC_CENTER[0]), float(CLUSTER_47TUC_CENTER[1])


def target_key(target):
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


def plan_night(center, n_exposures=12, *, zenith_range=(5.0, 60.0), night="2027-06-12",
               site="armazones", position_angles=(0.0,), dither_arcsec=0.3,
               wavelength_um=3.796046, weather=None, temperature_drop_c=2.0,
               pressure_rms_hpa=0.5, humidity_range=(0.10, 0.20), rng=None, parity=1,
               prefix="sky", target="") -> SkyPlan:
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


# =========================================================================== catalogues
def true_catalog(catalog, rng, *, pm_dispersion_mas_yr=None) -> Catalog:
    """The TRUE catalogue of a simulation, from a stated one (a Catalog, a file or a name).

    Positions and proper motions are the stated ones, taken as the truth. A star whose
    proper motion is not listed gets a true one drawn from the catalogue's per-axis
    dispersion (``meta["pm_dispersion_mas_yr"]`` or ``pm_dispersion_mas_yr``), its
    ``pmra_err``/``pmdec_err`` set to that dispersion (the uncertainty the catalogue
    effectively states), and the bool column ``pm_listed`` records which proper motions the
    catalogue lists (:func:`noisy_catalog` hides the others again).
    """
    cat = load_catalog(catalog)
    rng = np.random.default_rng(rng)
    t = cat.table.copy()
    t.meta = dict(cat.meta)
    listed = cat.has_pm
    if "pm_listed" in t.colnames:
        listed = listed & np.asarray(t["pm_listed"], bool)
    n_missing = int(np.sum(~listed))
    if n_missing:
        disp = pm_dispersion_mas_yr if pm_dispersion_mas_yr is not None else cat.meta.get("pm_dispersion_mas_yr")
        if disp is None:
            raise CatalogError(f"{cat.source}: {n_missing} star(s) without proper motion and no stated dispersion "
                               "(meta 'pm_dispersion_mas_yr') to draw their true motion from")
        disp = float(disp)
        for col in ("pmra", "pmdec", "pmra_err", "pmdec_err"):
            if col not in t.colnames:
                t[col] = np.full(len(t), np.nan)
                t[col].unit = u.mas / u.yr
        pm = rng.normal(0.0, disp, (n_missing, 2))
        for j, col in enumerate(("pmra", "pmdec")):
            values = np.asarray(t[col], float).copy()
            values[~listed] = pm[:, j]
            t[col] = values
            t[col].unit = u.mas / u.yr
            err = np.asarray(t[f"{col}_err"], float).copy()
            err[~listed] = disp
            t[f"{col}_err"] = err
            t[f"{col}_err"].unit = u.mas / u.yr
        t.meta["pm_dispersion_mas_yr"] = disp
    t["pm_listed"] = listed
    t["pm_listed"].description = ("the catalogue lists this star's proper motion; if False the truth has one "
                                  "drawn from the stated dispersion and the catalogue seen by the fit has NaN")
    t.meta["simulated_truth"] = (f"true catalogue of an astrocal simulation, built from {cat.name}: stated "
                                 f"positions and proper motions taken as the truth; {n_missing} unlisted proper "
                                 "motion(s) drawn from the stated dispersion")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Catalog(t, f"{cat.source} (simulated truth)")


#: facts of 47 Tuc used by :func:`synthetic_cluster` (each with its source)
TUC47 = {
    "center_deg": CLUSTER_47TUC_CENTER,  # Harris (1996; 2010 edition)
    "core_radius_arcsec": 21.6,          # Harris (2010 edition): r_c = 0.36 arcmin
    "concentration": 2.07,               # Harris (2010 edition): c = log10(r_t / r_c)
    "pm_mas_yr": (5.252, -2.551),        # Vasiliev & Baumgardt 2021, MNRAS 505, 5978 (Gaia EDR3)
    "distance_kpc": 4.52,                # Baumgardt & Vasiliev 2021, MNRAS 505, 5957
    "sigma_v_km_s": 12.0,                # central velocity dispersion, ~12 km/s (Baumgardt & Hilker 2018)
}


def synthetic_cluster(rng, *, n_stars=400, radius_arcsec=9.0, center=None, epoch=2006.0,
                      mag_range=(9.0, 19.0), lf_slope=0.3, pos_err_mas=(0.1, 0.3),
                      pm_err_mas_yr=(0.02, 0.06), pm_dispersion_mas_yr=None) -> Catalog:
    """A synthetic dense cluster like the core of 47 Tuc, as an absolute (ra/dec) Catalog.

    ``n_stars`` stars within ``radius_arcsec`` of ``center`` (default the 47 Tuc centre),
    radii from a King (1962) profile (core radius 21.6 arcsec, concentration 2.07: nearly
    flat over a 10-arcsec field), L-band magnitudes ``mag_L`` from a power-law luminosity
    function ``dN/dm ~ 10**(lf_slope m)`` over ``mag_range``, positions at Julian
    ``epoch`` (HST-like), proper motions = the cluster's (Gaia EDR3, Vasiliev & Baumgardt
    2021) + an isotropic internal dispersion (default sigma_v / (4.74 d) = 0.56 mas/yr
    per axis), and HST-like errors: ``pos_err_mas`` and ``pm_err_mas_yr`` from the bright
    to the faint end. The positions and motions ARE the truth (``pm_listed`` all True).
    """
    rng = np.random.default_rng(rng)
    ra0, dec0 = TUC47["center_deg"] if center is None else center
    rc = TUC47["core_radius_arcsec"]
    rt = rc * 10 ** TUC47["concentration"]
    if pm_dispersion_mas_yr is None:
        pm_dispersion_mas_yr = TUC47["sigma_v_km_s"] / (4.74047 * TUC47["distance_kpc"])
    n = int(n_stars)
    # King (1962) surface density, sampled by inverse transform on a fine grid in R
    grid = np.linspace(0.0, float(radius_arcsec), 2001)
    sigma = (1 / np.sqrt(1 + (grid / rc) ** 2) - 1 / np.sqrt(1 + (rt / rc) ** 2)) ** 2
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (sigma[1:] * grid[1:] + sigma[:-1] * grid[:-1]) * np.diff(grid))])
    radius = np.interp(rng.uniform(0, cdf[-1], n), cdf, grid)
    angle = rng.uniform(0, 2 * np.pi, n)
    xe, yn = radius * np.sin(angle), radius * np.cos(angle)
    lon, lat = inverse_gnomonic(np.radians(xe / 3600.0), np.radians(yn / 3600.0), np.radians(ra0), np.radians(dec0))
    lo, hi = mag_range
    # power-law luminosity function: inverse transform of 10**(a m)
    q = rng.uniform(0, 1, n)
    mag = np.log10(10 ** (lf_slope * lo) + q * (10 ** (lf_slope * hi) - 10 ** (lf_slope * lo))) / lf_slope
    frac = (mag - lo) / (hi - lo)
    pos_err = pos_err_mas[0] + (pos_err_mas[1] - pos_err_mas[0]) * frac
    pm_err = pm_err_mas_yr[0] + (pm_err_mas_yr[1] - pm_err_mas_yr[0]) * frac
    pm = np.asarray(TUC47["pm_mas_yr"]) + rng.normal(0.0, pm_dispersion_mas_yr, (n, 2))
    order = np.argsort(mag)
    names = np.array([f"T{k:04d}" for k in range(n)])
    cat = catalog_from_arrays(
        name=names, ra=np.degrees(lon[order]) % 360.0, dec=np.degrees(lat[order]), epoch=float(epoch),
        pmra=pm[order, 0], pmdec=pm[order, 1], ra_err=np.round(pos_err[order], 4),
        dec_err=np.round(pos_err[order], 4), pmra_err=np.round(pm_err[order], 4),
        pmdec_err=np.round(pm_err[order], 4), mags={"L": mag[order]},
        meta={"name": "synthetic 47 Tuc core (astrocal simulation)", "short_name": "synthetic_47tuc",
              "description": (f"{n} synthetic stars within {radius_arcsec:g} arcsec of the 47 Tuc centre: King "
                              f"profile (r_c {rc:g} arcsec, c {TUC47['concentration']}), L-band luminosity function "
                              f"10^({lf_slope} m) over L = {lo:g}..{hi:g}, HST-like errors"),
              "epoch": float(epoch), "pm_dispersion_mas_yr": round(float(pm_dispersion_mas_yr), 4),
              "facts": {"center": "Harris (1996; 2010 edition): 00h24m05.67s -72d04m52.6s (J2000)",
                        "king_profile": "Harris (2010 edition): r_c = 0.36 arcmin, c = 2.07",
                        "proper_motion": "Vasiliev & Baumgardt 2021, MNRAS 505, 5978: (5.252, -2.551) mas/yr",
                        "internal_dispersion": "sigma_v ~ 12 km/s at 4.52 kpc (Baumgardt & Hilker 2018; "
                                               "Baumgardt & Vasiliev 2021): 0.56 mas/yr per axis",
                        "errors": "HST-like: positions 0.1-0.3 mas, proper motions 0.02-0.06 mas/yr per axis"},
              "bands": {"L": "synthetic L-band magnitude"}},
        source="<synthetic 47 Tuc>")
    cat.table["pm_listed"] = np.ones(n, bool)
    return cat


def band_magnitudes(catalog, band="L") -> tuple[np.ndarray, str]:
    """L-band magnitudes of every star of ``catalog`` and how they were obtained.

    ``mag_L`` or ``mag_Lp*`` columns are used as they are; stars without them (most of the
    Galactic Center list) get a K-band magnitude (``mag_Kp*``, then ``mag_K*``, then
    ``mag_H*``) minus the median colour of the stars that have both; stars with no
    magnitude at all get the faintest magnitude + 0.5. Returns ``(mags, note)``.
    """
    cat = load_catalog(catalog)
    cols = cat.table.colnames

    def pick(prefixes):
        out = np.full(len(cat), np.nan)
        used = []
        for prefix in prefixes:
            for col in cols:
                if col.startswith(prefix) and not col.endswith("_err"):
                    v = np.asarray(cat.table[col], float)
                    take = np.isnan(out) & np.isfinite(v)
                    if take.any():
                        out[take] = v[take]
                        used.append(col)
        return out, used

    mags, used = pick([f"mag_{band}_", f"mag_{band}p", f"mag_{band}"] if band else [])
    notes = [f"{', '.join(used)} as given"] if used else []
    for prefixes in (["mag_Kp", "mag_Ks"], ["mag_K"], ["mag_H"]):
        other, oused = pick(prefixes)
        both = np.isfinite(mags) & np.isfinite(other)
        fill = np.isnan(mags) & np.isfinite(other)
        if fill.any() and both.sum() >= 3:
            colour = float(np.median(other[both] - mags[both]))
            mags[fill] = other[fill] - colour
            notes.append(f"{int(fill.sum())} from {'/'.join(oused)} minus the median colour {colour:.2f} "
                         f"({int(both.sum())} stars)")
    missing = np.isnan(mags)
    if missing.all():
        raise CatalogError(f"{cat.source}: no {band}, K or H magnitudes to give the stars a flux")
    if missing.any():
        mags[missing] = np.nanmax(mags) + 0.5
        notes.append(f"{int(missing.sum())} without magnitude: faintest + 0.5")
    return mags, "; ".join(notes)


def noisy_catalog(catalog_true, rng, *, error_scale=1.0) -> Catalog:
    """The catalogue the fit sees: truth + errors drawn from its stated covariance.

    Position errors (``ra_err``, ``dec_err``, ``ra_dec_corr``; east/north, mas) are added in
    the tangent plane at each star (exactly, by inverse gnomonic projection for absolute
    catalogues; to the offsets for offsets catalogues), proper-motion errors likewise
    (``pmra_err``...). Stars whose ``pm_listed`` is False get NaN proper motions and
    errors. ``error_scale`` multiplies the drawn errors (0: the truth itself, except for
    the unlisted proper motions). :func:`catalog_errors` gives the errors per star at any
    epoch (the catalogue keeps no trace of them). The ``pm_listed`` column is dropped.
    """
    cat = load_catalog(catalog_true)
    rng = np.random.default_rng(rng)
    n = len(cat)
    t = cat.table.copy()
    t.meta = dict(cat.meta)
    listed = np.asarray(t["pm_listed"], bool) if "pm_listed" in t.colnames else cat.has_pm
    z = rng.standard_normal((n, 4))
    dpos = np.einsum("nij,nj->ni", _chol(cat.position_cov()), z[:, :2]) * error_scale  # mas
    dpm = np.einsum("nij,nj->ni", _chol(cat.pm_cov()), z[:, 2:]) * error_scale  # mas/yr
    dpm[~listed] = 0.0
    if cat.kind == "offsets":
        for j, col in enumerate(("x_east", "y_north")):
            t[col] = np.asarray(t[col], float) + dpos[:, j] / 1e3
            t[col].unit = u.arcsec
    else:
        ra, dec = inverse_gnomonic(np.radians(dpos[:, 0] / 3.6e6), np.radians(dpos[:, 1] / 3.6e6),
                                   np.radians(np.asarray(t["ra"], float)), np.radians(np.asarray(t["dec"], float)))
        t["ra"] = np.degrees(ra) % 360.0
        t["dec"] = np.degrees(dec)
        t["ra"].unit = t["dec"].unit = u.deg
    if "pmra" in t.colnames:
        for j, col in enumerate(("pmra", "pmdec")):
            v = np.asarray(t[col], float) + dpm[:, j]
            v[~listed] = np.nan
            t[col] = v
            t[col].unit = u.mas / u.yr
            err = np.asarray(t[f"{col}_err"], float).copy() if f"{col}_err" in t.colnames else np.full(n, np.nan)
            err[~listed] = np.nan
            t[f"{col}_err"] = err
            t[f"{col}_err"].unit = u.mas / u.yr
    if "pm_listed" in t.colnames:
        t.remove_column("pm_listed")
    t.meta.pop("simulated_truth", None)
    t.meta["simulated_errors"] = {
        "note": ("catalogue of an astrocal simulation: the true positions and proper motions plus errors drawn "
                 "from the stated covariance (east, north) times error_scale; proper motions the source does "
                 "not list are NaN. The drawn errors are in the simulation's truth, not here"),
        "error_scale": float(error_scale),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Catalog(t, cat.source.replace(" (simulated truth)", "") + " (simulated, with errors)")


def with_band_magnitudes(catalog_seen, catalog_true, band="L") -> Catalog:
    """``catalog_seen`` with a ``mag_<band>`` column: the magnitudes the simulation gives
    the stars (:func:`band_magnitudes` of the true catalogue), so that a measure stage can
    check fluxes against the catalogue (``band = "L"`` in the campaign). Unchanged if the
    column exists."""
    col = f"mag_{band}"
    if col in catalog_seen.table.colnames:
        return catalog_seen
    mags, note = band_magnitudes(catalog_true, band)
    true_names = list(load_catalog(catalog_true).names)
    if list(catalog_seen.names) != true_names:
        index = {n: k for k, n in enumerate(true_names)}
        mags = mags[[index[n] for n in catalog_seen.names]]
    t = catalog_seen.table.copy()
    t.meta = dict(catalog_seen.meta)
    t[col] = mags
    t[col].unit = u.mag
    t[col].description = f"{band}-band magnitude of the simulation's fluxes ({note})"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Catalog(t, catalog_seen.source)


def _chol(cov):
    out = np.zeros_like(cov)
    ok = cov[:, 0, 0] > 0
    out[~ok, 1, 1] = np.sqrt(np.maximum(cov[~ok, 1, 1], 0.0))
    if ok.any():
        c = cov[ok] + np.eye(2) * 1e-300
        out[ok, 0, 0] = np.sqrt(c[:, 0, 0])
        out[ok, 1, 0] = c[:, 1, 0] / out[ok, 0, 0]
        out[ok, 1, 1] = np.sqrt(np.maximum(c[:, 1, 1] - out[ok, 1, 0] ** 2, 0.0))
    return out


def catalog_errors(catalog_true, catalog_seen, epoch) -> Table:
    """Catalogue error ``d_s`` of every star at Julian ``epoch``: seen minus true, in the
    (east, north) axes, arcsec (columns ``star``, ``d_east``, ``d_north``).

    Computed from the two catalogues (propagated to ``epoch`` with the same rules), so that
    ``x(seen) - x(true) = J d`` to first order; stars without a listed proper motion carry
    the part of their true motion that the catalogue misses.
    """
    from ..sky.astrometry import propagate

    true = load_catalog(catalog_true)
    seen = load_catalog(catalog_seen)
    with earth.orientation(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = propagate(true, epoch, missing_pm="ignore")
        b = propagate(seen, epoch, missing_pm="ignore")
    index = {n: k for k, n in enumerate(a.names)}
    k = np.array([index[n] for n in b.names])
    # offsets of the seen star in the tangent plane at the true one
    from ..sky.astrometry import gnomonic

    xi, eta = gnomonic(np.radians(b.ra), np.radians(b.dec), np.radians(a.ra[k]), np.radians(a.dec[k]))
    t = Table()
    t["star"] = b.names
    t["d_east"] = np.degrees(xi) * 3600.0 * u.arcsec
    t["d_north"] = np.degrees(eta) * 3600.0 * u.arcsec
    t["epoch"] = np.full(len(t), float(a.epoch.tt.jyear)) * u.yr
    t.meta = {"note": "catalogue minus truth at the epoch (Julian year), east/north"}
    return t


# =========================================================================== the truth
@dataclass(frozen=True, eq=False)
class SkyExposureTruth:
    """The truth of one sky exposure, for the stars that land on the detector.

    ``apparent``: the true catalogue's :class:`~astrocal.sky.astrometry.FocalPlanePositions`
    (instrument frame ``x, y`` and telescope frame ``u, v``, arcsec), restricted to those
    stars; ``mag``: their L-band magnitudes; ``flexure``: ``Delta`` (N, 2) arcsec;
    ``focal``: ``X`` (N, 2) arcsec; ``pixels``: ``p = G^-1(X)`` (N, 2), 0-based;
    ``scale``, ``rotation`` (rad), ``shift`` (2,) arcsec: the pose ``(s_e, theta_e, t_e)``;
    ``edge_names``: stars on the detector but within the margin of its edge (no
    measurement: the "unmatched catalogue stars" inside the field).
    """

    name: str
    apparent: FocalPlanePositions
    mag: np.ndarray
    flexure: np.ndarray
    focal: np.ndarray
    pixels: np.ndarray
    scale: float
    rotation: float
    shift: np.ndarray
    edge_names: tuple = ()

    @property
    def names(self):
        return self.apparent.names

    def __len__(self):
        return len(self.apparent)


@dataclass(frozen=True, eq=False)
class SkyTruth:
    """Known truth of a simulated sky campaign (arcsec, radians, pixels 0-based).

    ``field``: the instrument field ``G``; ``catalog``: the TRUE catalogue; ``plan``;
    ``flexure`` (basis) and ``flexure_coeffs`` (arcsec, ``flexure.names`` order);
    ``frame_scale``, ``frame_rotation``: the part of every pose common to the campaign;
    ``exposures``: one :class:`SkyExposureTruth` each; ``margin_px``: stars closer than
    this to the detector edge are not measured; ``magnitude_note``: how ``mag`` was made.
    """

    field: DistortionField
    catalog: Catalog
    plan: SkyPlan
    flexure: FlexureBasis
    flexure_coeffs: np.ndarray
    frame_scale: float
    frame_rotation: float
    exposures: tuple
    margin_px: float = 8.0
    magnitude_note: str = ""
    settings: dict = dc_field(default_factory=dict)

    def __len__(self):
        return len(self.exposures)

    @property
    def pose_scale(self):
        return np.array([e.scale for e in self.exposures])

    @property
    def pose_rotation(self):
        return np.array([e.rotation for e in self.exposures])

    @property
    def pose_shift(self):
        return np.array([e.shift for e in self.exposures]).reshape(-1, 2)

    @property
    def star_names(self):
        """Names of the stars seen in at least one exposure (sorted)."""
        return np.unique(np.concatenate([e.names for e in self.exposures] or [np.array([], str)]))


def focal_plane(apparent, flexure, coeffs, scale, rotation, shift):
    """``X = x + Delta + s x + theta R90 x + t`` (arcsec) for one exposure; returns
    ``(X, Delta)``, both (N, 2)."""
    x = apparent.xy
    if len(x) == 0:
        return np.zeros((0, 2)), np.zeros((0, 2))
    delta = flexure.displacement(coeffs, apparent.u, apparent.v, apparent.zenith_distance_deg,
                                 apparent.rotator_angle_deg, apparent.parity)
    r90 = np.column_stack([-x[:, 1], x[:, 0]])
    return x + delta + scale * x + rotation * r90 + np.asarray(shift, float), delta


def _footprint(field, pad_arcsec):
    """Bounding box (arcsec) of the detector's image in the focal plane, padded."""
    xmin, xmax, ymin, ymax = field.domain
    t = np.linspace(0.0, 1.0, 33)
    ex = np.concatenate([xmin + (xmax - xmin) * t, np.full(33, xmax), xmin + (xmax - xmin) * t, np.full(33, xmin)])
    ey = np.concatenate([np.full(33, ymin), ymin + (ymax - ymin) * t, np.full(33, ymax), ymin + (ymax - ymin) * t])
    fu, fv = field(ex, ey)
    return fu.min() - pad_arcsec, fu.max() + pad_arcsec, fv.min() - pad_arcsec, fv.max() + pad_arcsec


def _pixel_scale(field):
    _, _, jac = field.jacobian(*field.centre)
    return float(np.sqrt(abs(np.linalg.det(jac))))


def draw_sky_truth(field, catalog_true, plan, rng, *, flexure=None, flexure_sigma_mas=0.5,
                   flexure_coeffs=None, pointing_sigma_arcsec=0.1, rotation_sigma_deg=0.01,
                   scale_sigma=5e-5, frame_rotation_deg=0.05, frame_scale=3e-4, margin_px=8.0,
                   magnitudes=None) -> SkyTruth:
    """Draw the truth of a sky campaign and the true pixel position of every visible star.

    ``field``: the instrument field ``G`` (0-based pixels -> focal-plane arcsec; its domain
    is the detector); ``catalog_true``: the TRUE catalogue (:func:`true_catalog`);
    ``plan``: a :class:`SkyPlan`. Drawn, in this order from ``rng``: the common frame
    rotation and scale (rms ``frame_rotation_deg``, ``frame_scale``), the flexure
    coefficients (each ``N(0, flexure_sigma_mas)``, arcsec at the basis radius; or the
    given ``flexure_coeffs``; basis ``flexure``, default :class:`FlexureBasis()`), then per
    exposure the pointing error (rms ``pointing_sigma_arcsec`` per axis), the PA error
    (``rotation_sigma_deg``) and the plate-scale change (``scale_sigma``). Stars whose
    true pixel position is outside the detector are dropped; those within ``margin_px`` of
    its edge are listed in ``edge_names``. A negative ``margin_px`` keeps the stars up to
    that many pixels OUTSIDE the detector (their light reaches it: used to render images;
    :func:`restrict_to_detector` then gives the truth with the usual margin, the same draws). ``magnitudes``: per catalogue star (default
    :func:`band_magnitudes`).
    """
    rng = np.random.default_rng(rng)
    flexure = FlexureBasis() if flexure is None else flexure
    cat = load_catalog(catalog_true)
    if magnitudes is None:
        mags_all, note = band_magnitudes(cat)
    else:
        mags_all, note = np.asarray(magnitudes, float), "given"
        if mags_all.shape != (len(cat),):
            raise SimulationOptionError(f"magnitudes: expected {len(cat)} values, got shape {mags_all.shape}")
    f_rot = math.radians(rng.normal(0.0, frame_rotation_deg))
    f_scale = float(rng.normal(0.0, frame_scale))
    if flexure_coeffs is None:
        coeffs = rng.normal(0.0, flexure_sigma_mas / 1e3, flexure.n_params)
    else:
        coeffs = np.asarray(flexure_coeffs, float)
        if coeffs.shape != (flexure.n_params,):
            raise SimulationOptionError(f"flexure_coeffs: expected {flexure.n_params} values ({flexure.names[0]}, ...), "
                             f"got shape {coeffs.shape}")
    n_e = len(plan)
    shifts = rng.normal(0.0, pointing_sigma_arcsec, (n_e, 2))
    rots = f_rot + np.radians(rng.normal(0.0, rotation_sigma_deg, n_e))
    scales = f_scale + rng.normal(0.0, scale_sigma, n_e)

    box = _footprint(field, 0.0)
    half = 0.5 * max(box[1] - box[0], box[3] - box[2])
    dither = max((float(SkyCoord(e.ra_deg * u.deg, e.dec_deg * u.deg).separation(
        SkyCoord(plan.center_ra_deg * u.deg, plan.center_dec_deg * u.deg)).arcsec) for e in plan), default=0.0)
    near = cat.separation_from((plan.center_ra_deg, plan.center_dec_deg)) <= (
        half * math.sqrt(2) + dither + 5 * pointing_sigma_arcsec + 2.0)
    if not near.any():
        raise SimulationOptionError(f"{cat.source}: no catalogue star near the field centre "
                         f"({plan.center_ra_deg:.6f}, {plan.center_dec_deg:.6f}) deg")
    sub = cat.select(near)
    mags_sub = mags_all[near]
    pad = (20 + max(0.0, -float(margin_px))) * _pixel_scale(field)
    fbox = _footprint(field, pad)
    xmin, xmax, ymin, ymax = field.domain
    exposures = []
    with earth.orientation():
        for k, exp in enumerate(plan):
            fp = apparent_positions(sub, **exp.astrometry_kwargs(plan.site, plan.parity), missing_pm="ignore")
            X, delta = focal_plane(fp, flexure, coeffs, scales[k], rots[k], shifts[k])
            cand = (X[:, 0] > fbox[0]) & (X[:, 0] < fbox[1]) & (X[:, 1] > fbox[2]) & (X[:, 1] < fbox[3])
            px = np.full(len(X), np.nan)
            py = np.full(len(X), np.nan)
            if cand.any():
                px[cand], py[cand] = solve(field, X[cand, 0], X[cand, 1], on_failure="nan")
            with np.errstate(invalid="ignore"):
                on = (px >= xmin) & (px <= xmax) & (py >= ymin) & (py <= ymax)
                keep = ((px > xmin + margin_px) & (px < xmax - margin_px)
                        & (py > ymin + margin_px) & (py < ymax - margin_px))
            edge = tuple(str(v) for v in fp.names[on & ~keep])
            exposures.append(SkyExposureTruth(
                name=exp.name, apparent=fp.select(keep), mag=mags_sub[keep], flexure=delta[keep],
                focal=X[keep], pixels=np.column_stack([px[keep], py[keep]]), scale=float(scales[k]),
                rotation=float(rots[k]), shift=shifts[k].copy(), edge_names=edge))
    settings = {"flexure_sigma_mas": flexure_sigma_mas, "pointing_sigma_arcsec": pointing_sigma_arcsec,
                "rotation_sigma_deg": rotation_sigma_deg, "scale_sigma": scale_sigma,
                "frame_rotation_deg": frame_rotation_deg, "frame_scale": frame_scale,
                "flexure_coeffs_given": flexure_coeffs is not None}
    return SkyTruth(field=field, catalog=cat, plan=plan, flexure=flexure, flexure_coeffs=coeffs,
                    frame_scale=f_scale, frame_rotation=f_rot, exposures=tuple(exposures),
                    margin_px=float(margin_px), magnitude_note=note, settings=settings)


def restrict_to_detector(truth, margin_px=8.0) -> SkyTruth:
    """The same truth with only the stars more than ``margin_px`` inside the detector
    (``edge_names``: those on the detector but closer to its edge)."""
    xmin, xmax, ymin, ymax = truth.field.domain
    out = []
    for e in truth.exposures:
        px, py = e.pixels[:, 0], e.pixels[:, 1]
        on = (px >= xmin) & (px <= xmax) & (py >= ymin) & (py <= ymax)
        keep = (px > xmin + margin_px) & (px < xmax - margin_px) & (py > ymin + margin_px) & (py < ymax - margin_px)
        edge = tuple(str(v) for v in e.names[on & ~keep])
        out.append(dataclasses.replace(e, apparent=e.apparent.select(keep), mag=e.mag[keep], flexure=e.flexure[keep],
                                       focal=e.focal[keep], pixels=e.pixels[keep], edge_names=edge))
    return dataclasses.replace(truth, exposures=tuple(out), margin_px=float(margin_px))


# =========================================================================== observations
def star_flux(mag, zero_point_mag=20.0):
    """Relative flux ``10**(-0.4 (mag - zero_point_mag))`` (arbitrary units: 1 at the
    zero point) used in the point-level tables."""
    return 10.0 ** (-0.4 * (np.asarray(mag, float) - zero_point_mag))


def observe_sky_points(truth, rng, *, sigma_px=(0.01, 0.05), dataset="sky", catalog="catalog.ecsv",
                       spurious_per_exposure=0, zero_point_mag=20.0) -> list:
    """The measured sky tables of a truth, for perfect detection and matching.

    One astropy Table per exposure in the layout of the sky data interface (columns
    ``star``, ``x``, ``y`` (pix, 0-based), ``sigma_x``, ``sigma_y`` (pix), ``cov_xy``
    (pix2), ``flux``, ``flags``; meta ``kind``, ``dataset``, ``exposure``, ``time``,
    ``ra_deg``, ``dec_deg``, ``position_angle_deg``, ``parity``, ``site``, ``weather``,
    ``wavelength_um``, ``catalog``, ``match_quality``, ``unmatched_catalog_stars``).

    Each star's centroid sigma scales as ``flux**-0.5`` from ``sigma_px[0]`` for the
    brightest star of the campaign, capped at ``sigma_px[1]``, slightly anisotropic and
    correlated; the measured position is drawn from that covariance. ``flux`` is
    :func:`star_flux` of the star's magnitude. ``spurious_per_exposure`` unmatched
    sources (``star = ""``, flag 128) are added at random places.
    """
    rng = np.random.default_rng(rng)
    lo, hi = (float(v) for v in sigma_px)
    if not 0 < lo <= hi:
        raise SimulationOptionError(f"sigma_px must be (low, high) with 0 < low <= high, got {sigma_px}")
    all_mags = np.concatenate([e.mag for e in truth.exposures] or [np.zeros(0)])
    bright = float(np.nanmin(all_mags)) if all_mags.size and np.isfinite(all_mags).any() else 0.0
    xmin, xmax, ymin, ymax = truth.field.domain
    m = truth.margin_px
    tables = []
    for exp, pe in zip(truth.exposures, truth.plan):
        n = len(exp)
        mag = exp.mag
        s = np.where(np.isfinite(mag), lo * 10 ** (0.2 * (mag - bright)), hi)
        s = np.clip(s, lo, hi)
        sx = s * rng.uniform(0.85, 1.15, n)
        sy = s * rng.uniform(0.85, 1.15, n)
        rho = rng.uniform(-0.3, 0.3, n)
        cov = np.empty((n, 2, 2))
        cov[:, 0, 0], cov[:, 1, 1] = sx**2, sy**2
        cov[:, 0, 1] = cov[:, 1, 0] = rho * sx * sy
        noise = np.einsum("nab,nb->na", np.linalg.cholesky(cov), rng.standard_normal((n, 2))) if n else np.zeros((0, 2))
        meas = exp.pixels + noise
        flux = star_flux(mag, zero_point_mag)
        names = [str(v) for v in exp.names]
        k = int(spurious_per_exposure)
        if k:
            meas = np.vstack([meas, np.column_stack([rng.uniform(xmin + m, xmax - m, k),
                                                     rng.uniform(ymin + m, ymax - m, k)])])
            sx = np.concatenate([sx, np.full(k, hi)])
            sy = np.concatenate([sy, np.full(k, hi)])
            rho = np.concatenate([rho, np.zeros(k)])
            flux = np.concatenate([flux, star_flux(np.full(k, np.nanmax(all_mags) if all_mags.size else 20.0),
                                                   zero_point_mag)])
            names += [""] * k
        t = Table()
        t["star"] = np.array(names, dtype=str) if names else np.zeros(0, dtype="U1")
        t["x"] = meas[:, 0] * u.pix
        t["y"] = meas[:, 1] * u.pix
        t["sigma_x"] = sx * u.pix
        t["sigma_y"] = sy * u.pix
        t["cov_xy"] = rho * sx * sy * u.pix**2
        t["flux"] = flux
        t["flags"] = np.where(np.array(names, dtype=str) == "", FLAG_UNIDENTIFIED, 0).astype(int) if names \
            else np.zeros(0, int)
        t.meta = {
            "kind": "sky", "dataset": dataset, "exposure": pe.name, "time": pe.time,
            "ra_deg": pe.ra_deg, "dec_deg": pe.dec_deg, "position_angle_deg": pe.position_angle_deg,
            "parity": int(truth.plan.parity), "site": truth.plan.site, "weather": dict(pe.weather),
            "wavelength_um": pe.wavelength_um, "catalog": str(catalog),
            "match_quality": {"method": "simulated (perfect detection and identification)",
                              "n_matched": n, "n_unmatched_sources": k},
            "unmatched_catalog_stars": list(exp.edge_names),
            "pixel_convention": "x, y: 0-based pixel positions (centre of the first pixel = 0.0)",
        }
        tables.append(t)
    return tables


# =========================================================================== files
def _exposures_table(truth) -> Table:
    t = truth.plan.to_table()
    for key in ("zenith_distance_deg", "hour_angle_deg"):
        t.rename_column(key, f"planned_{key}")
    e = truth.exposures
    t["zenith_distance_deg"] = [x.apparent.zenith_distance_deg for x in e]
    t["parallactic_angle_deg"] = [x.apparent.parallactic_angle_deg for x in e]
    t["rotator_angle_deg"] = [x.apparent.rotator_angle_deg for x in e]
    t["altitude_deg"] = [x.apparent.altitude_deg for x in e]
    t["azimuth_deg"] = [x.apparent.azimuth_deg for x in e]
    t["airmass"] = [x.apparent.airmass for x in e]
    for i in range(2):
        for j in range(2):
            t[f"jacobian_{i}{j}"] = [float(x.apparent.jacobian[i, j]) for x in e]
    t["pose_scale"] = truth.pose_scale
    t["pose_rot_rad"] = truth.pose_rotation
    t["pose_shift_x_arcsec"] = truth.pose_shift[:, 0]
    t["pose_shift_y_arcsec"] = truth.pose_shift[:, 1]
    t["n_stars"] = [len(x) for x in e]
    t["edge_stars"] = [",".join(x.edge_names) for x in e]
    t.meta["description"] = ("truth per sky exposure: plan (commanded pointing, PA, weather), the observed "
                             "geometry of the field centre (apparent_positions), jacobian_ij = d(x,y)_i / "
                             "d(xi,eta)_j, and the pose (s_e, theta_e [rad], t_e [arcsec])")
    t.meta["model"] = "X = x + Delta + s x + theta R90 x + t; p = G^-1(X); R90 (x, y) = (-y, x)"
    return t


def _stars_table(truth, extra_columns=None) -> Table:
    rows = []
    extra_columns = extra_columns or {}
    for k, e in enumerate(truth.exposures):
        a = e.apparent
        n = len(e)
        rows.append({
            "exposure": np.full(n, e.name), "star": np.asarray(a.names, str),
            "x_arcsec": a.x, "y_arcsec": a.y, "u_arcsec": a.u, "v_arcsec": a.v,
            "cov_xx": a.cov[:, 0, 0], "cov_yy": a.cov[:, 1, 1], "cov_xy": a.cov[:, 0, 1],
            "dt_yr": a.dt, "has_pm": a.has_pm, "inflated": a.inflated,
            "flex_x_arcsec": e.flexure[:, 0], "flex_y_arcsec": e.flexure[:, 1],
            "focal_x_arcsec": e.focal[:, 0], "focal_y_arcsec": e.focal[:, 1],
            "px": e.pixels[:, 0], "py": e.pixels[:, 1], "mag": e.mag,
            **{name: np.asarray(values[k]) for name, values in extra_columns.items()}})
    t = Table()
    for key in rows[0] if rows else []:
        t[key] = np.concatenate([r[key] for r in rows])
    t.meta = {"description": "truth per sky exposure and star on the detector",
              "columns": ("x, y: true apparent position, instrument frame; u, v: telescope frame (arcsec); "
                          "cov_*: the true catalogue's stated covariance mapped to the instrument frame (arcsec2); "
                          "flex: Delta; focal: X; px, py: true pixel position (0-based); mag: L-band magnitude"),
              "pixel_convention": "px, py: 0-based pixel positions (centre of the first pixel = 0.0)"}
    return t


def _flexure_table(truth) -> Table:
    b = truth.flexure
    t = Table()
    t["name"] = b.names
    t["function"] = [b.functions[i] for i in b.function_of_param()]
    t["term"] = [term for _ in b.functions for term in b.field_terms]
    t["coeff_arcsec"] = truth.flexure_coeffs * u.arcsec
    t.meta = {"basis": b.as_dict(), "description": "true flexure coefficients (astrocal.model.flexure.FlexureBasis)"}
    return t


def truth_paths(out):
    """The truth files of a simulated sky campaign in ``out``: ``{name: path}`` under
    ``out/truth/``."""
    d = Path(out) / "truth"
    return {"distortion_ecsv": d / "distortion_truth.ecsv", "distortion_fits": d / "distortion_truth.fits",
            "catalog_true": d / "catalog_true.ecsv", "catalog_errors": d / "catalog_errors.ecsv",
            "exposures": d / "exposures.ecsv", "stars": d / "stars.ecsv", "flexure": d / "flexure.ecsv",
            "truth_json": d / "truth.json"}


def write_sky_truth(out, truth, *, catalog_seen=None, extra=None, instrument="METIS IMG_LM", filter_id="Lp",
                    star_columns=None, star_columns_note="", overwrite=False) -> dict:
    """Write the truth of a sky campaign into ``out/truth/``; returns the paths.

    ``distortion_truth.ecsv`` (SIAF) and ``distortion_truth.fits`` (AstroMet, double): the
    field ``G``; ``catalog_true.ecsv``: the true catalogue; ``catalog_errors.ecsv``: per
    star and exposure, the catalogue error ``d`` (seen minus true, east/north arcsec) when
    ``catalog_seen`` is given; ``exposures.ecsv``: plan, observed geometry and pose;
    ``stars.ecsv``: per exposure and star, ``x``, ``u``, ``Delta``, ``X``, ``p``;
    ``flexure.ecsv``: basis and coefficients; ``truth.json``: everything else (exact field
    coefficients, frame pose, settings, ``extra``). ``star_columns``: more columns of
    ``stars.ecsv``, name -> one array per exposure (described by ``star_columns_note``).
    """
    paths = truth_paths(out)
    for key, p in paths.items():
        if key != "catalog_errors" or catalog_seen is not None:
            check_writable(p, overwrite)
    paths["truth_json"].parent.mkdir(parents=True, exist_ok=True)
    field = truth.field
    meta = {"creator": f"astrocal {__version__}", "simulated": "sky campaign truth field"}
    sol = Solution(field, filter=filter_id, meta=meta)
    write_siaf(paths["distortion_ecsv"], sol, overwrite=overwrite)
    write_astromet(paths["distortion_fits"], sol, instrument=instrument, overwrite=overwrite, provenance=meta,
                   precision="double")
    truth.catalog.write(paths["catalog_true"], overwrite=overwrite)
    if catalog_seen is not None:
        rows = []
        for e, pe in zip(truth.exposures, truth.plan):
            d = catalog_errors(truth.catalog, catalog_seen, pe.time)
            index = {n: k for k, n in enumerate(d["star"])}
            k = np.array([index[str(n)] for n in e.names], int)
            sub = d[k] if len(k) else d[:0]
            sub.add_column(np.full(len(sub), e.name), name="exposure", index=0)
            rows.append(sub)
        from astropy.table import vstack

        errs = vstack(rows) if rows else Table()
        errs.meta = {"description": "catalogue error d = catalogue seen by the fit minus truth, at each exposure's "
                                    "epoch, (east, north) arcsec: x(seen) - x(true) = J d to first order"}
        atomic_write_table(errs, paths["catalog_errors"], overwrite=overwrite)
    else:
        paths.pop("catalog_errors")
    atomic_write_table(_exposures_table(truth), paths["exposures"], overwrite=overwrite)
    stars = _stars_table(truth, star_columns)
    if star_columns_note:
        stars.meta["columns"] += "; " + star_columns_note
    atomic_write_table(stars, paths["stars"], overwrite=overwrite)
    atomic_write_table(_flexure_table(truth), paths["flexure"], overwrite=overwrite)
    info = {
        "creator": f"astrocal {__version__}",
        "model": ("G(p) = x + Delta(u, v; z, r) + s x + theta R90 x + t - J d (catalogue error d); "
                  "the truth: X = x(true) + Delta + s x + theta R90 x + t, p = G^-1(X)"),
        "field": {"cx": field.cx.tolist(), "cy": field.cy.tolist(), "domain": [float(v) for v in field.domain],
                  "unit": field.unit, "input_unit": field.input_unit},
        "flexure": {**truth.flexure.as_dict(), "names": truth.flexure.names,
                    "coeffs_arcsec": truth.flexure_coeffs.tolist()},
        "frame": {"scale": truth.frame_scale, "rotation_rad": truth.frame_rotation,
                  "note": "the part of every exposure's pose common to the campaign"},
        "plan": {"center_ra_deg": truth.plan.center_ra_deg, "center_dec_deg": truth.plan.center_dec_deg,
                 "site": truth.plan.site, "parity": truth.plan.parity, "target": truth.plan.target},
        "margin_px": truth.margin_px,
        "earth_orientation": {**earth.provenance(),
                              "note": "the truth's apparent positions were computed with these tables; a fit "
                                      "with the same tables sees no Earth-orientation error"},
        "magnitudes": truth.magnitude_note,
        "settings": truth.settings,
        "files": {k: p.name for k, p in paths.items()},
        **(extra or {}),
    }
    atomic_write_text(paths["truth_json"], json.dumps(to_plain(info, nan_as_none=True), indent=1) + "\n",
                      overwrite=overwrite)
    return paths


def load_sky_truth(directory) -> SkyTruth:
    """Rebuild the :class:`SkyTruth` of a simulated sky campaign from its truth files.

    ``directory``: the campaign directory or its ``truth/`` folder. Nothing is recomputed:
    positions, poses and the observed geometry are read back as written.
    """
    d = Path(directory)
    tdir = d if (d / "truth.json").exists() else d / "truth"
    paths = truth_paths(tdir.parent)
    for key in ("truth_json", "catalog_true", "exposures", "stars", "flexure"):
        if not paths[key].is_file():
            raise FileNotFoundError(f"truth file not found: {paths[key]}")
    try:
        info = json.loads(paths["truth_json"].read_text())
    except json.JSONDecodeError as exc:
        raise SimulationOptionError(f"{paths['truth_json']}: not valid JSON ({exc})") from None
    for key in ("field", "flexure", "frame", "plan"):
        if key not in info:
            raise SimulationOptionError(f"{paths['truth_json']}: key {key!r} missing")
    f = info["field"]
    field = DistortionField(np.array(f["cx"]), np.array(f["cy"]), tuple(f["domain"]), unit=f.get("unit", "arcsec"),
                            input_unit=f.get("input_unit", "pixel"))
    fl = info["flexure"]
    basis = FlexureBasis(int(fl["degree"]), tuple(fl["functions"]), float(fl["radius_arcsec"]))
    coeffs = np.asarray(fl["coeffs_arcsec"], float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cat = load_catalog(paths["catalog_true"])
    exps = Table.read(paths["exposures"], format="ascii.ecsv")
    stars = Table.read(paths["stars"], format="ascii.ecsv")
    p = info["plan"]
    plan_t = exps.copy()
    for key in ("zenith_distance_deg", "hour_angle_deg"):
        plan_t.remove_column(key) if key in plan_t.colnames and f"planned_{key}" in plan_t.colnames else None
        if f"planned_{key}" in plan_t.colnames:
            plan_t.rename_column(f"planned_{key}", key)
    plan_t.meta.update(p)
    plan = SkyPlan.from_table(plan_t, str(paths["exposures"]))
    site = get_site(plan.site)
    out = []
    s_exp = np.asarray(stars["exposure"]).astype(str) if len(stars) else np.zeros(0, str)
    for row, pe in zip(exps, plan):
        sel = s_exp == pe.name
        s = stars[sel]
        col = lambda name: np.asarray(s[name], float) if len(s) else np.zeros(0)  # noqa: E731
        cov = np.zeros((len(s), 2, 2))
        cov[:, 0, 0], cov[:, 1, 1] = col("cov_xx"), col("cov_yy")
        cov[:, 0, 1] = cov[:, 1, 0] = col("cov_xy")
        w = pe.weather
        fp = FocalPlanePositions(
            names=np.asarray(s["star"]).astype(str) if len(s) else np.zeros(0, str), x=col("x_arcsec"),
            y=col("y_arcsec"), cov=cov, u=col("u_arcsec"), v=col("v_arcsec"), dt=col("dt_yr"),
            has_pm=np.asarray(s["has_pm"], bool) if len(s) else np.zeros(0, bool),
            inflated=np.asarray(s["inflated"], bool) if len(s) else np.zeros(0, bool),
            zenith_distance_deg=float(row["zenith_distance_deg"]),
            parallactic_angle_deg=float(row["parallactic_angle_deg"]),
            rotator_angle_deg=float(row["rotator_angle_deg"]), position_angle_deg=float(pe.position_angle_deg),
            altitude_deg=float(row["altitude_deg"]), azimuth_deg=float(row["azimuth_deg"]),
            time=Time(pe.time, scale="utc"), wavelength_um=pe.wavelength_um,
            weather=Weather(w["pressure_hpa"], w["temperature_c"], w["relative_humidity"]), site=site,
            parity=plan.parity,
            jacobian=np.array([[row["jacobian_00"], row["jacobian_01"]], [row["jacobian_10"], row["jacobian_11"]]],
                              float),
            pointing=SkyCoord(pe.ra_deg * u.deg, pe.dec_deg * u.deg), meta={"loaded_from": str(paths["stars"])})
        edge = tuple(v for v in str(row["edge_stars"]).split(",") if v) if "edge_stars" in exps.colnames else ()
        out.append(SkyExposureTruth(
            name=pe.name, apparent=fp, mag=col("mag"),
            flexure=np.column_stack([col("flex_x_arcsec"), col("flex_y_arcsec")]),
            focal=np.column_stack([col("focal_x_arcsec"), col("focal_y_arcsec")]),
            pixels=np.column_stack([col("px"), col("py")]), scale=float(row["pose_scale"]),
            rotation=float(row["pose_rot_rad"]),
            shift=np.array([row["pose_shift_x_arcsec"], row["pose_shift_y_arcsec"]], float), edge_names=edge))
    return SkyTruth(field=field, catalog=cat, plan=plan, flexure=basis, flexure_coeffs=coeffs,
                    frame_scale=float(info["frame"]["scale"]), frame_rotation=float(info["frame"]["rotation_rad"]),
                    exposures=tuple(out), margin_px=float(info.get("margin_px", 8.0)),
                    magnitude_note=str(info.get("magnitudes", "")), settings=dict(info.get("settings", {})))


def _toml_str(s):
    return json.dumps(str(s))


def sky_campaign_toml(inst, shape, plan, files, catalog_rel, *, dataset="sky", filter_name="Lp", comment="",
                      fit_degree="auto", seed=None, measure=False, background=None, flat=None, band=None,
                      flexure=None) -> str:
    """The text of a campaign file with one ``[[sky]]`` dataset (``files``: exposure paths
    relative to the campaign, one per planned exposure; ``background``, ``flat``: frames,
    relative paths; ``band``: the catalogue magnitude column for flux checks; ``flexure``:
    the FlexureBasis written as the ``[fit]`` flexure keys)."""
    lines = [f"# {comment}" if comment else "# sky campaign written by astrocal", "",
             "[instrument]", f"name = {_toml_str(inst.name)}", f"preset = {_toml_str(inst.key)}",
             f"detector_shape = [{int(shape[0])}, {int(shape[1])}]", f"pixel_scale_mas = {inst.pixel_scale_mas!r}",
             "", "[[sky]]", f"name = {_toml_str(dataset)}", f"catalog = {_toml_str(catalog_rel)}",
             f"site = {_toml_str(plan.site)}", f"filter = {_toml_str(filter_name)}"]
    for key, value in (("background", background), ("flat", flat), ("band", band)):
        if value is not None:
            lines.append(f"{key} = {_toml_str(value)}")
    lines += ["# per exposure: mid-exposure time (UTC), commanded pointing (deg), position angle of +y (deg,",
              "# north through east), ground weather (pressure hPa, temperature C, relative humidity as a",
              "# FRACTION 0..1) and effective wavelength (um)",
              "exposures = ["]
    for path, e in zip(files, plan):
        w = e.weather
        lines.append(f"  {{ file = {_toml_str(path)}, time = {_toml_str(e.time)}, ra = {e.ra_deg!r}, "
                     f"dec = {e.dec_deg!r}, position_angle_deg = {e.position_angle_deg!r}, "
                     f"pressure_hpa = {float(w['pressure_hpa'])!r}, temperature_c = {float(w['temperature_c'])!r}, "
                     f"humidity = {float(w['relative_humidity'])!r}, wavelength_um = {e.wavelength_um!r} }},")
    lines += ["]", ""]
    if measure:
        lines += ["[measure]", 'output = "measured/"', ""]
    deg = '"auto"' if fit_degree == "auto" else str(int(fit_degree))
    lines += ["[fit]", f"degree = {deg}", 'output = "out/"']
    if flexure is not None:
        lines += [f"flexure_degree = {int(flexure.degree)}",
                  "flexure_functions = [" + ", ".join(_toml_str(f) for f in flexure.functions) + "]",
                  f"flexure_radius_arcsec = {float(flexure.radius_arcsec)!r}"]
    if seed is not None:
        lines.append(f"seed = {int(seed)}")
    lines.append("")
    return "\n".join(lines)


def default_sky_field(instrument="metis-lm", detector_shape=None):
    """The instrument field a sky simulation uses by default: the lab simulator's default
    field (:func:`astrocal.sim.field.instrument_field`, fixed), cropped to the central
    ``detector_shape`` window when smaller than the detector."""
    from .field import instrument_field
    from .lab import LabSimSettings, central_window

    d = LabSimSettings()
    inst, field = instrument_field(instrument, d.distortion_degree, d.distortion_corner_px,
                                   d.distortion_rotation_deg, d.distortion_seed)
    if detector_shape is not None and tuple(detector_shape) != tuple(inst.detector_shape):
        field = central_window(field, inst.detector_shape, tuple(int(v) for v in detector_shape))
    return field


def make_true_catalog(target, rng, **cluster):
    """The true catalogue of a target field: ``"gc"`` (the shipped Galactic Center list,
    unlisted proper motions drawn, see :func:`true_catalog`) or ``"47tuc"``
    (:func:`synthetic_cluster` with ``cluster`` keyword arguments)."""
    key = target_key(target)
    if key == "gc":
        return true_catalog(get_catalog("galactic_center"), rng)
    return synthetic_cluster(rng, **cluster)


def write_sky_points_campaign(out, target="gc", *, seed=0, instrument="metis-lm", distortion=None,
                              detector_shape=None, n_exposures=12, zenith_range=None, night=None,
                              position_angles=(0.0,), dither_arcsec=0.3, flexure=None, flexure_sigma_mas=0.5,
                              pointing_sigma_arcsec=0.1, rotation_sigma_deg=0.01, scale_sigma=5e-5,
                              frame_rotation_deg=0.05, frame_scale=3e-4, catalog_error_scale=1.0,
                              sigma_px=(0.01, 0.05), spurious_per_exposure=0, fit_degree="auto",
                              catalog_true=None, overwrite=False):
    """Write a point-level sky campaign (measured tables, no images) into ``out``.

    ``out/campaign.toml`` (``[instrument]`` preset, one ``[[sky]]`` dataset whose exposures
    are the tables, with time, pointing, PA, weather and wavelength per exposure, ``[fit]``),
    ``out/catalog.ecsv`` (the catalogue the fit sees: :func:`noisy_catalog`),
    ``out/tables/<exposure>.ecsv`` (:func:`observe_sky_points`) and the truth in
    ``out/truth/`` (:func:`write_sky_truth`). ``target``: ``"gc"`` or ``"47tuc"``;
    ``distortion``: a DistortionField (default :func:`default_sky_field`); the other
    arguments as :func:`plan_night`, :func:`draw_sky_truth` and :func:`observe_sky_points`.
    Returns ``(campaign path, SkyTruth, tables)``.
    """
    from ..instruments import get_instrument

    out = Path(out)
    key = target_key(target)
    spec = FIELDS[key]
    inst = get_instrument(instrument)
    field = distortion if distortion is not None else default_sky_field(instrument, detector_shape)
    shape = (int(round(field.domain[3] + 0.5)), int(round(field.domain[1] + 0.5)))
    ss = np.random.SeedSequence(int(seed))
    s_cat, s_plan, s_truth, s_noise, s_obs = (np.random.default_rng(s) for s in ss.spawn(5))
    plan = plan_night(field_center(key), n_exposures, zenith_range=zenith_range or spec["zenith_range"],
                      night=night or spec["night"], position_angles=position_angles, dither_arcsec=dither_arcsec,
                      wavelength_um=inst.filter().center_um, rng=s_plan, prefix=key, target=key)
    names = [f"tables/{e.name}.ecsv" for e in plan]
    paths = [out / "campaign.toml", out / "catalog.ecsv"] + [out / n for n in names]
    for p in paths + list(truth_paths(out).values()):
        check_writable(p, overwrite)
    cat_true = catalog_true if catalog_true is not None else make_true_catalog(key, s_cat)
    truth = draw_sky_truth(field, cat_true, plan, s_truth, flexure=flexure, flexure_sigma_mas=flexure_sigma_mas,
                           pointing_sigma_arcsec=pointing_sigma_arcsec, rotation_sigma_deg=rotation_sigma_deg,
                           scale_sigma=scale_sigma, frame_rotation_deg=frame_rotation_deg, frame_scale=frame_scale)
    seen = with_band_magnitudes(noisy_catalog(truth.catalog, s_noise, error_scale=catalog_error_scale), truth.catalog)
    tables = observe_sky_points(truth, s_obs, sigma_px=sigma_px, dataset=key, catalog="catalog.ecsv",
                                spurious_per_exposure=spurious_per_exposure)
    out.mkdir(parents=True, exist_ok=True)
    seen.write(out / "catalog.ecsv", overwrite=overwrite)
    for t, n in zip(tables, names):
        atomic_write_table(t, out / n, overwrite=overwrite)
    write_sky_truth(out, truth, catalog_seen=seen, instrument=inst.name, filter_id=inst.default_filter,
                    overwrite=overwrite,
                    extra={"seed": int(seed), "target": key, "kind": "point-level sky campaign",
                           "observation": {"sigma_px": list(sigma_px), "spurious_per_exposure": spurious_per_exposure,
                                           "catalog_error_scale": catalog_error_scale}})
    toml = sky_campaign_toml(inst, shape, plan, names, "catalog.ecsv", dataset=key, band="L",
                             flexure=truth.flexure,
                             filter_name=inst.default_filter, fit_degree=fit_degree, seed=int(seed) + 1,
                             comment=f"point-level sky campaign ({spec['name']}) written by astrocal "
                                     f"{__version__}, seed {seed}; truth in truth/")
    atomic_write_text(out / "campaign.toml", toml, overwrite=overwrite)
    return out / "campaign.toml", truth, tables
