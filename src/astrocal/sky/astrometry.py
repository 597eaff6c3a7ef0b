"""From a reference catalogue to positions in the instrument's focal plane.

Two steps, both computed with astropy (no hand-written astrometry or refraction formula):

1. :func:`propagate` -- epoch propagation. Each star's ICRS position at its own epoch is
   moved to the exposure epoch with ``SkyCoord.apply_space_motion`` (rigorous space
   motion, ERFA ``pmsafe``; parallax and radial velocity are not used: perspective
   acceleration is far below a microarcsecond per year for the targets here). Offset
   catalogues follow their own model: the reference moves with ``apply_space_motion``
   and the stars move linearly, ``offset + pm * dt``, in its tangent plane. The
   position covariance grows as ``C(t) = C_pos + dt**2 C_pm``. Stars **without proper
   motion** are kept in place and their covariance is **inflated** by
   ``(dt * sigma_pm)**2`` per axis, with ``sigma_pm`` the catalogue's stated per-axis
   dispersion of proper motions (``meta["pm_dispersion_mas_yr"]``, 4.0 mas/yr for the
   Galactic Center list) or the ``pm_dispersion`` argument, and an
   :class:`EpochGapWarning` when the gap exceeds ``warn_gap_years`` (1 yr). Without a
   dispersion the propagation is **refused** (:class:`AstrometryError` with the reason),
   as it is with ``missing_pm="refuse"``; ``missing_pm="ignore"`` keeps such stars without
   inflation (still with a warning).

2. :func:`apparent_positions` -- the stars as the instrument sees them in one exposure:
   ICRS at the exposure epoch -> observed (refracted) azimuth/altitude with astropy's
   :class:`~astropy.coordinates.AltAz` frame (site, time, pressure, temperature,
   relative humidity, wavelength ``obswl``; aberration, precession-nutation, polar motion
   and ERFA's refraction model included) -> gnomonic projection on the plane tangent at
   the *refracted* field centre -> rotation into the instrument frame.

Frames and signs (details and a figure in ``docs/sky_astrometry.md``):

* standard coordinates ``(xi, eta)``: tangent plane of the ICRS sphere, ``xi`` to the EAST,
  ``eta`` to the north (catalogue errors and proper motions use these axes);
* telescope frame ``(u, v)`` (arcsec): tangent plane at the refracted field centre of the
  horizontal sphere, ``v`` toward the zenith, ``u`` toward increasing azimuth;
* parallactic angle ``q``: position angle (from ICRS north through east, at the field
  centre) of the direction toward the zenith;
* position angle ``theta``: position angle (from ICRS north through east) of the
  instrument's +y axis; rotator angle ``r = theta - q``: the angle of the instrument +y axis
  from the direction of the zenith. Give one of ``position_angle`` / ``rotator_angle``;
* instrument frame ``(x, y)`` (arcsec)::

      x = parity * ( u cos r + v sin r)
      y =          -u sin r + v cos r

  With ``parity = +1`` the frame has the orientation of a standard sky image: at
  ``theta = 0`` +y points north and +x WEST (east to the left). ``parity = -1`` mirrors x.

Returned covariances are catalogue + epoch-grown errors mapped with the exact local
Jacobian of the whole chain (ICRS standard coordinates -> instrument frame, measured by
finite differences at the field centre), in arcsec**2.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import astropy.units as u
from astropy.coordinates import TETE, AltAz, EarthLocation, SkyCoord, get_body_barycentric_posvel
from astropy.table import Table
from astropy.time import Time, TimeDelta
from numpy.typing import ArrayLike

from astrocal import earth
from astrocal.sky.catalog import Catalog, CatalogError, as_center, load_catalog, parse_epoch
from astrocal.sky.projection import gnomonic, inverse_gnomonic
from astrocal.sky.sites import Site, Weather, WeatherError, get_site

from ..errors import AstrocalError

__all__ = [
    "AstrometryError",
    "EpochGapWarning",
    "CatalogAtEpoch",
    "FocalPlanePositions",
    "propagate",
    "apparent_positions",
    "apparent_positions_many",
    "parse_time",
    "orientation_cost",
    "horizon_site",
    "resolve_weather",
    "resolve_aberration",
    "space_geometry",
    "SPEED_OF_LIGHT_KM_S",
]

log = logging.getLogger(__name__)

MAS_PER_RAD = 180.0 / np.pi * 3600e3
ARCSEC_PER_RAD = 180.0 / np.pi * 3600.0

#: step (radians) of the finite differences giving the local Jacobian at the field centre
JACOBIAN_STEP_RAD = 1.0 / ARCSEC_PER_RAD

#: epoch gaps shorter than this (yr, ~9 h) need no proper motion (stars without one are
#: neither inflated nor refused)
GAP_TOLERANCE_YEARS = 1e-3

#: zenith distance (deg) beyond which ERFA's A tan z + B tan^3 z refraction loses accuracy
REFRACTION_WARN_ZD_DEG = 75.0


class AstrometryError(AstrocalError, ValueError):
    """The positions cannot be computed as asked (bad time, field below the horizon...)."""


class EpochGapWarning(UserWarning):
    """Stars without proper motion were propagated over a long epoch gap (errors inflated)."""


# --------------------------------------------------------------------------- helpers
def parse_time(value: Any, what: str = "time") -> Time:
    """An astropy Time from a Time, datetime, ISO/FITS string, ``"J2030.5"`` or a decimal year.

    Bare numbers are Julian years (1800..2300). Leap seconds follow astrocal's policy
    (:mod:`astrocal.earth`); a UTC date after the leap-second table's expiry is accepted
    (its cost is stated with the positions').

    Parameters
    ----------
    value : Time, datetime.datetime, str or float
        The time (strings and datetimes in UTC, ``"J..."`` epochs in TT).
    what : str, optional
        Names the value in errors.

    Returns
    -------
    astropy.time.Time
        One time.

    Raises
    ------
    AstrometryError
        Anything else (including MJDs as bare numbers -- pass ``Time(x, format="mjd")``),
        or an array of times.
    """
    with earth.leap_seconds_applied():
        return _parse_time(value, what)


def _parse_time(value, what):
    if isinstance(value, Time):
        if value.ndim != 0:
            raise AstrometryError(f"{what}: one time expected, got an array of shape {value.shape}")
        return value
    import datetime as _dt

    if isinstance(value, _dt.datetime):
        return Time(value, scale="utc")
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        try:
            return Time(parse_epoch(float(value), what), format="jyear", scale="tt")
        except CatalogError as exc:
            raise AstrometryError(str(exc)) from None
    if isinstance(value, str):
        text = value.strip()
        try:
            if text[:1] in ("J", "B") and text[1:].replace(".", "", 1).isdigit():
                return Time(text, scale="tt")
            return Time(text, scale="utc")
        except Exception:  # noqa: BLE001
            raise AstrometryError(
                f"{what}: cannot parse {value!r} as a time (expected ISO such as '2030-05-04T02:30:00', "
                "a FITS DATE-OBS, 'J2030.5' or an astropy Time)") from None
    raise AstrometryError(f"{what}: cannot parse {value!r} ({type(value).__name__}) as a time")


def resolve_weather(weather: Weather | Mapping | None, site: Site, *, refraction: bool = True) -> Weather:
    """The weather to use: given values, completed with the site's typical ones (logged).

    Missing values come from the site's defaults and a WARNING in the log says which.

    Parameters
    ----------
    weather : Weather, mapping or None
        A :class:`~astrocal.sky.sites.Weather`, a mapping with any of ``pressure_hpa``,
        ``temperature_c``, ``relative_humidity`` (fraction 0..1), or None.
    site : Site
        Its typical weather completes the values.
    refraction : bool, optional
        False returns zero pressure (astropy then applies no refraction).

    Returns
    -------
    Weather
        The complete weather, its source stated.

    Raises
    ------
    WeatherError
        An unknown key or an unusable value.
    """
    if isinstance(weather, Weather):
        w = weather
    else:
        given = {} if weather is None else dict(weather)
        unknown = set(given) - {"pressure_hpa", "temperature_c", "relative_humidity"}
        if unknown:
            raise WeatherError(f"weather: unknown keys {sorted(unknown)}; use pressure_hpa, temperature_c, "
                               "relative_humidity (fraction 0..1)")
        given = {k: v for k, v in given.items() if v is not None}
        defaults = site.default_weather()
        missing = [k for k in ("pressure_hpa", "temperature_c", "relative_humidity") if k not in given]
        values = {k: given.get(k, getattr(defaults, k)) for k in ("pressure_hpa", "temperature_c", "relative_humidity")}
        if missing:
            source = "site defaults" if len(missing) == 3 else "given + site defaults for " + ", ".join(missing)
            log.warning("weather: %s missing; using the %s site defaults %s (pressure %.1f hPa, temperature "
                        "%.1f C, relative humidity %.2f)", ", ".join(missing), site.name,
                        {k: values[k] for k in missing}, values["pressure_hpa"], values["temperature_c"],
                        values["relative_humidity"])
        else:
            source = "given"
        w = Weather(source=f"{source} ({site.name})" if missing else source, **values)
    if not refraction:
        return Weather(0.0, w.temperature_c, w.relative_humidity, source=w.source + "; refraction off")
    return w


def _wavelength_um(wavelength) -> float:
    if wavelength is None:
        raise AstrometryError("wavelength is required (refraction depends on it): give e.g. 3.8 * u.um or 3.8 (um)")
    if isinstance(wavelength, u.Quantity):
        try:
            value = float(wavelength.to_value(u.um, equivalencies=u.spectral()))
        except u.UnitConversionError:
            raise AstrometryError(f"wavelength {wavelength} is not a length") from None
    else:
        try:
            value = float(wavelength)
        except (TypeError, ValueError):
            raise AstrometryError(f"wavelength must be a number (um) or a Quantity, got {wavelength!r}") from None
    if not np.isfinite(value) or value <= 0:
        raise AstrometryError(f"wavelength must be positive, got {wavelength!r}")
    return value


def _angle_deg(value, what) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, u.Quantity):
        try:
            value = value.to_value(u.deg)
        except u.UnitConversionError:
            raise AstrometryError(f"{what}: {value} is not an angle") from None
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise AstrometryError(f"{what} must be an angle (deg or Quantity), got {value!r}") from None
    if not np.isfinite(out):
        raise AstrometryError(f"{what} is not finite: {value!r}")
    return out


def _wrap180(deg: float) -> float:
    return float((deg + 180.0) % 360.0 - 180.0)


# --------------------------------------------------------------------------- propagation
@dataclass(frozen=True, eq=False)
class CatalogAtEpoch:
    """A catalogue moved to one epoch.

    Arrays of length N: ``names``, ``ra``, ``dec`` (deg, ICRS at ``epoch``), ``cov``
    (N, 2, 2) position covariance in mas**2 on (east, north) axes, ``dt`` (yr, exposure
    epoch minus the star's epoch), ``has_pm`` and ``inflated`` (errors inflated because the
    star has no proper motion).
    """

    names: np.ndarray
    ra: np.ndarray
    dec: np.ndarray
    cov: np.ndarray
    dt: np.ndarray
    has_pm: np.ndarray
    inflated: np.ndarray
    epoch: Time
    catalog_name: str = ""
    meta: dict = field(default_factory=dict)

    def __len__(self):
        return len(self.names)

    @property
    def coord(self) -> SkyCoord:
        """The stars as ICRS SkyCoord at :attr:`epoch` (no proper motion)."""
        return SkyCoord(ra=self.ra * u.deg, dec=self.dec * u.deg, frame="icrs")

    @property
    def sigma_mas(self) -> np.ndarray:
        """(N, 2) 1-sigma errors (east, north) in mas."""
        return np.sqrt(np.stack([self.cov[:, 0, 0], self.cov[:, 1, 1]], axis=1))


def propagate(catalog: Catalog | str | os.PathLike, epoch: Any, *, missing_pm: str = "inflate",
              pm_dispersion: Optional[float] = None, warn_gap_years: float = 1.0) -> CatalogAtEpoch:
    """Move every star to ``epoch`` and grow its position errors (see the module notes).

    Parameters
    ----------
    catalog : Catalog, str or os.PathLike
        A :class:`~astrocal.sky.catalog.Catalog` (or anything
        :func:`~astrocal.sky.catalog.load_catalog` accepts).
    epoch : Time, str or float
        Time, ISO string, ``"J2030.5"`` or a decimal year (:func:`parse_time`).
    missing_pm : {"inflate", "refuse", "ignore"}, optional
        What to do with stars without proper motion.
    pm_dispersion : float, optional
        Per-axis proper-motion dispersion (mas/yr); overrides the catalogue's
        ``pm_dispersion_mas_yr``.
    warn_gap_years : float, optional
        An :class:`EpochGapWarning` for stars without proper motion moved by more than
        this (yr).

    Returns
    -------
    CatalogAtEpoch
        The stars at ``epoch`` with their grown covariances.

    Raises
    ------
    AstrometryError
        A bad ``missing_pm``, an unparseable epoch, or stars without proper motion
        refused.
    """
    with earth.orientation():
        return _propagate(catalog, epoch, missing_pm, pm_dispersion, warn_gap_years)


def _propagate(catalog, epoch, missing_pm, pm_dispersion, warn_gap_years):
    if missing_pm not in ("inflate", "refuse", "ignore"):
        raise AstrometryError(f"missing_pm must be 'inflate', 'refuse' or 'ignore', got {missing_pm!r}")
    cat = load_catalog(catalog)
    t = parse_time(epoch, "epoch")
    t_jyr = float(t.tt.jyear)
    star_epoch = cat.epoch
    dt = t_jyr - star_epoch
    has_pm = cat.has_pm
    names = cat.names

    if cat.kind == "offsets":
        # the catalogue's own model: linear motion in the tangent plane of the reference,
        # which itself moves with its proper motion (apply_space_motion)
        ref = cat.reference
        ra_r, dec_r = ref.position_at([t_jyr])
        tab = cat.table
        x = np.asarray(tab["x_east"], float) + np.where(has_pm, cat.pmra, 0.0) * dt / 1e3
        y = np.asarray(tab["y_north"], float) + np.where(has_pm, cat.pmdec, 0.0) * dt / 1e3
        lon, lat = inverse_gnomonic(np.radians(x / 3600.0), np.radians(y / 3600.0),
                                    np.radians(ra_r[0]), np.radians(dec_r[0]))
        ra, dec = np.degrees(lon) % 360.0, np.degrees(lat)
    else:
        coord = cat.skycoord()
        if np.all(dt == 0):
            ra, dec = coord.ra.to_value(u.deg), coord.dec.to_value(u.deg)
        else:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*distance overridden.*")
                moved = coord.apply_space_motion(new_obstime=Time(np.full(len(cat), t_jyr), format="jyear",
                                                                  scale="tt"))
            ra, dec = moved.ra.to_value(u.deg), moved.dec.to_value(u.deg)

    cov = cat.position_cov() + (dt**2)[:, None, None] * cat.pm_cov()
    inflated = np.zeros(len(cat), bool)
    no_pm = ~has_pm & (np.abs(dt) > GAP_TOLERANCE_YEARS)
    meta = {"missing_pm": missing_pm}
    if no_pm.any():
        gap = np.abs(dt[no_pm])
        who = ", ".join(f"{n} ({g:.1f} yr)" for n, g in list(zip(names[no_pm], gap))[:8])
        more = "" if no_pm.sum() <= 8 else f" and {int(no_pm.sum()) - 8} more"
        if missing_pm == "refuse":
            raise AstrometryError(
                f"{cat.source}: {int(no_pm.sum())} star(s) without proper motion would be moved over an epoch "
                f"gap (up to {gap.max():.1f} yr): {who}{more}. Their positions at {t_jyr:.3f} are unknown; "
                "use missing_pm='inflate' with a proper-motion dispersion, or drop them")
        if missing_pm == "inflate":
            sigma = pm_dispersion if pm_dispersion is not None else cat.meta.get("pm_dispersion_mas_yr")
            if sigma is None:
                raise AstrometryError(
                    f"{cat.source}: {int(no_pm.sum())} star(s) without proper motion and an epoch gap of up to "
                    f"{gap.max():.1f} yr ({who}{more}): refused, because the catalogue states no proper-motion "
                    "dispersion (meta 'pm_dispersion_mas_yr') to inflate their errors with. Pass "
                    "pm_dispersion=<mas/yr per axis>, or missing_pm='ignore' to keep them as fixed")
            sigma = float(sigma)
            if not np.isfinite(sigma) or sigma < 0:
                raise AstrometryError(f"pm_dispersion must be a non-negative number (mas/yr), got {sigma!r}")
            grow = (dt[no_pm] * sigma) ** 2
            cov[no_pm, 0, 0] += grow
            cov[no_pm, 1, 1] += grow
            inflated[no_pm] = True
            meta["pm_dispersion_mas_yr"] = sigma
            if gap.max() > warn_gap_years:
                warnings.warn(
                    f"{cat.name}: {int(no_pm.sum())} star(s) without proper motion across an epoch gap of up to "
                    f"{gap.max():.1f} yr ({who}{more}): {_kept_where(cat)}, errors inflated by dt x {sigma:g} mas/yr "
                    f"(up to {gap.max() * sigma:.1f} mas per axis)", EpochGapWarning, stacklevel=3)
        else:  # ignore
            if gap.max() > warn_gap_years:
                warnings.warn(
                    f"{cat.name}: {int(no_pm.sum())} star(s) without proper motion kept FIXED over up to "
                    f"{gap.max():.1f} yr ({who}{more}) with no error inflation (missing_pm='ignore')",
                    EpochGapWarning, stacklevel=3)
    return CatalogAtEpoch(names=names, ra=ra, dec=dec, cov=cov, dt=dt, has_pm=has_pm, inflated=inflated,
                          epoch=t, catalog_name=cat.name, meta=meta)


def _kept_where(cat) -> str:
    """Where a star without proper motion stays, in the words of ``cat``'s kind: an
    absolute (ra/dec) catalogue's star at its catalogue position, an offsets catalogue's
    at its offset from the reference, which moves with its own proper motion."""
    if cat.kind == "offsets":
        ref = cat.reference
        name = f" {ref.name}" if ref is not None and ref.name else ""
        return f"kept at their offsets from the reference{name}, which moves with its own proper motion"
    return "kept at their catalogue positions (not moved)"


# --------------------------------------------------------------------------- projection
@dataclass(frozen=True, eq=False)
class FocalPlanePositions:
    """Stars of one exposure in the instrument frame (see the module notes for the axes).

    Per star (length N): ``names``, ``x``, ``y`` (arcsec, instrument frame), ``cov``
    (N, 2, 2) arcsec**2, ``u``, ``v`` (arcsec, telescope frame), ``dt`` (epoch gap, yr),
    ``has_pm``, ``inflated``.
    Per exposure: ``zenith_distance_deg`` (observed, i.e. refracted, at the field centre),
    ``parallactic_angle_deg`` (q), ``rotator_angle_deg`` (r), ``position_angle_deg``
    (theta), ``altitude_deg``, ``azimuth_deg`` (observed, field centre), ``time``,
    ``wavelength_um``, ``weather``, ``site``, ``parity``, ``jacobian`` (2x2, d(x, y) /
    d(xi, eta) at the centre, dimensionless), ``pointing`` (ICRS).
    """

    names: np.ndarray
    x: np.ndarray
    y: np.ndarray
    cov: np.ndarray
    u: np.ndarray
    v: np.ndarray
    dt: np.ndarray
    has_pm: np.ndarray
    inflated: np.ndarray
    zenith_distance_deg: float
    parallactic_angle_deg: float
    rotator_angle_deg: float
    position_angle_deg: float
    altitude_deg: float
    azimuth_deg: float
    time: Time
    wavelength_um: float
    weather: Weather
    site: Site
    parity: int
    jacobian: np.ndarray
    pointing: SkyCoord
    meta: dict = field(default_factory=dict)

    def __len__(self):
        return len(self.names)

    @property
    def xy(self) -> np.ndarray:
        """(N, 2) instrument-frame positions (arcsec)."""
        return np.column_stack([self.x, self.y])

    def inside(self, half_width: float, half_height: float | None = None, margin: float = 0.0) -> np.ndarray:
        """Boolean mask of the stars within a rectangle centred on the pointing.

        Parameters
        ----------
        half_width : float
            Half width along the instrument x axis (arcsec).
        half_height : float, optional
            Half height along y (arcsec; default ``half_width``).
        margin : float, optional
            Enlarges both (arcsec).

        Returns
        -------
        numpy.ndarray
            True for the stars inside.
        """
        hw = float(half_width) + margin
        hh = (float(half_width) if half_height is None else float(half_height)) + margin
        return (np.abs(self.x) <= hw) & (np.abs(self.y) <= hh)

    def select(self, index: ArrayLike) -> "FocalPlanePositions":
        """The same exposure with only some stars.

        Parameters
        ----------
        index : array_like
            Boolean mask or integer indices.

        Returns
        -------
        FocalPlanePositions
            The per-star arrays selected, the per-exposure values kept.
        """
        per_star = ("names", "x", "y", "cov", "u", "v", "dt", "has_pm", "inflated")
        return dataclasses.replace(self, **{k: getattr(self, k)[index] for k in per_star})

    @property
    def airmass(self) -> float:
        """sec z of the observed zenith distance (plane-parallel)."""
        return float(1.0 / np.cos(np.radians(self.zenith_distance_deg)))

    def to_table(self) -> Table:
        """The positions as a table.

        Returns
        -------
        astropy.table.Table
            ``name``, ``x``, ``y``, ``sigma_x``, ``sigma_y`` (arcsec), ``cov_xy``
            (arcsec2), ``u``, ``v`` (arcsec), ``dt`` (yr), ``has_pm``, ``inflated``; the
            per-exposure values in its meta.
        """
        t = Table()
        t["name"] = self.names
        t["x"] = self.x * u.arcsec
        t["y"] = self.y * u.arcsec
        t["sigma_x"] = np.sqrt(self.cov[:, 0, 0]) * u.arcsec
        t["sigma_y"] = np.sqrt(self.cov[:, 1, 1]) * u.arcsec
        t["cov_xy"] = self.cov[:, 0, 1] * u.arcsec**2
        t["u"] = self.u * u.arcsec
        t["v"] = self.v * u.arcsec
        t["dt"] = self.dt * u.yr
        t["has_pm"] = self.has_pm
        t["inflated"] = self.inflated
        t.meta = {"time": self.time.utc.isot, "zenith_distance_deg": self.zenith_distance_deg,
                  "parallactic_angle_deg": self.parallactic_angle_deg,
                  "rotator_angle_deg": self.rotator_angle_deg, "position_angle_deg": self.position_angle_deg,
                  "altitude_deg": self.altitude_deg, "azimuth_deg": self.azimuth_deg,
                  "wavelength_um": self.wavelength_um, "weather": self.weather.as_dict(), "site": self.site.name,
                  "parity": self.parity, "pointing_ra_deg": float(self.pointing.ra.deg),
                  "pointing_dec_deg": float(self.pointing.dec.deg), **self.meta}
        return t


def _at_epoch(catalog, t, missing_pm, pm_dispersion) -> CatalogAtEpoch:
    """The catalogue at the exposure's time ``t``: propagated, or checked to be there already."""
    if isinstance(catalog, CatalogAtEpoch):
        if abs(float(catalog.epoch.tt.jyear) - float(t.tt.jyear)) > 1.0 / 365.25:
            raise AstrometryError(f"the propagated catalogue is at {catalog.epoch.tt.jyear:.4f}, the exposure "
                                  f"at {t.tt.jyear:.4f}: propagate it to the exposure time")
        return catalog
    return propagate(catalog, t, missing_pm=missing_pm, pm_dispersion=pm_dispersion)


def _instrument_matrix(r_deg: float, parity: int) -> np.ndarray:
    r = np.radians(r_deg)
    c, s = np.cos(r), np.sin(r)
    return np.array([[parity * c, parity * s], [-s, c]])


def apparent_positions(catalog: Catalog | CatalogAtEpoch | str | os.PathLike, *, time: Any, pointing: Any,
                       wavelength: u.Quantity | float | None = None, position_angle: u.Quantity | float | None = None,
                       rotator_angle: u.Quantity | float | None = None, site: Any = "armazones",
                       weather: Weather | Mapping | None = None, refraction: bool = True, parity: int = 1,
                       missing_pm: str = "inflate", pm_dispersion: Optional[float] = None,
                       horizon: tuple[float, float] | None = None,
                       aberration: Mapping | float | None = None) -> FocalPlanePositions:
    """Positions of the catalogue stars in the instrument frame for one exposure.

    An observatory in space (``site`` a :class:`~astrocal.sky.sites.SpaceSite`: ``"space"``,
    ``"hst"``, ``"jwst"``...) has no atmosphere and no horizon: see :func:`space_geometry`
    (``weather``, ``refraction`` and ``horizon`` are not used, ``rotator_angle`` is refused,
    ``wavelength`` is optional); ``aberration`` gives the observatory's velocity
    (:func:`resolve_aberration`).

    ``catalog``: Catalog (propagated here to ``time``) or a :class:`CatalogAtEpoch` already
    at that epoch. ``time``: mid-exposure time (Time, ISO string...). ``pointing``: ICRS
    field centre (SkyCoord, ``(ra_deg, dec_deg)`` or ``"hh:mm:ss -dd:mm:ss"``).
    ``wavelength``: effective wavelength (Quantity, or a number in um). Exactly one of
    ``position_angle`` (deg, PA of the instrument +y axis from ICRS north through east) and
    ``rotator_angle`` (deg, angle of +y from the zenith direction, ``theta - q``).
    ``site``: name or :class:`~astrocal.sky.sites.Site`; ``weather``: see
    :func:`resolve_weather` (missing values -> site defaults, logged). ``parity``: +1 (sky
    orientation, +x west at PA 0) or -1 (mirrored).

    ``horizon``: ``(zenith_distance_deg, parallactic_angle_deg)`` of the field centre, for an
    exposure known only by its epoch (a date or a decimal year, no clock time): the
    observer is then placed so that the field centre lies at that zenith distance and
    parallactic angle at ``time`` (:func:`horizon_site`), and the refraction, its
    differential part across the field and the rotator angle follow from them as they would
    from the site and clock time; the site keeps only its height and typical weather. Stated
    in ``meta["horizon"]``.

    Earth orientation and leap seconds follow astrocal's policy (:mod:`astrocal.earth`:
    offline, any date). What the table's uncertainty at ``time`` costs
    (:func:`orientation_cost`) is in ``meta["earth_orientation"]``, and stated once per run
    as an :class:`~astrocal.earth.EarthOrientationWarning` when the table gives
    predictions or nothing at that time.

    Parameters
    ----------
    catalog : Catalog, CatalogAtEpoch, str or os.PathLike
        The catalogue (propagated to ``time``) or one already at that epoch.
    time : Time, str or float
        Mid-exposure time (:func:`parse_time`).
    pointing : SkyCoord, (ra_deg, dec_deg) or str
        ICRS field centre.
    wavelength : Quantity or float, optional
        Effective wavelength (um); required on the ground.
    position_angle, rotator_angle : Quantity or float, optional
        Exactly one (deg).
    site : str, Site, SpaceSite, mapping or EarthLocation, optional
        The observatory (:func:`~astrocal.sky.sites.get_site`).
    weather : Weather or mapping, optional
        :func:`resolve_weather`.
    refraction : bool, optional
        False: no refraction (zero pressure).
    parity : {1, -1}, optional
        Orientation of the instrument frame.
    missing_pm : {"inflate", "refuse", "ignore"}, optional
        Stars without proper motion (:func:`propagate`).
    pm_dispersion : float, optional
        Per-axis proper-motion dispersion (mas/yr) (:func:`propagate`).
    horizon : tuple of float, optional
        ``(zenith_distance_deg, parallactic_angle_deg)`` of an exposure without a clock time.
    aberration : mapping or float, optional
        Of an observatory in space (:func:`resolve_aberration`).

    Returns
    -------
    FocalPlanePositions
        The stars in the instrument frame (arcsec) and the exposure's geometry.

    Raises
    ------
    AstrometryError
        Bad or missing input (naming it).
    WeatherError
        Unusable weather.
    """
    if parity not in (1, -1):
        raise AstrometryError(f"parity must be +1 or -1, got {parity!r}")
    t = parse_time(time, "exposure time")
    site = get_site(site)
    if site.is_space:
        return _space_positions(catalog, t, pointing, site, position_angle, rotator_angle, parity, wavelength,
                                aberration, missing_pm, pm_dispersion)
    if aberration is not None:
        raise AstrometryError(f"aberration is for an observatory in space; at the ground site {site.name} the "
                              "Earth's motion is part of the apparent positions (astropy AltAz)")
    w = resolve_weather(weather, site, refraction=refraction)
    wl = _wavelength_um(wavelength)
    theta = _angle_deg(position_angle, "position_angle")
    rot = _angle_deg(rotator_angle, "rotator_angle")
    if (theta is None) == (rot is None):
        raise AstrometryError("give exactly one of position_angle (PA of the instrument +y axis, from north "
                              "through east) and rotator_angle (angle of +y from the zenith direction)")
    try:
        c0 = as_center(pointing)
    except CatalogError as exc:
        raise AstrometryError(str(exc).replace("centre", "pointing")) from None

    with earth.orientation():
        stars = _at_epoch(catalog, t, missing_pm, pm_dispersion)
        horizon_meta = None
        if horizon is not None:
            z_h, q_h = (_angle_deg(v, name) for v, name in zip(horizon, ("zenith distance", "parallactic angle")))
            site = horizon_site(site, c0, t, z_h, q_h, w, wl)
            horizon_meta = {"zenith_distance_deg": z_h, "parallactic_angle_deg": q_h,
                            "note": "no clock time: the observer is placed so that the field centre lies at "
                                    "the given zenith distance and parallactic angle"}
        geo = _project(stars.ra, stars.dec, c0, t, site.location, w, wl, theta, rot, parity)
        n = len(stars)
        if not geo.alt0 > 0:
            raise AstrometryError(f"the field centre {c0.to_string('hmsdms')} is below the horizon at "
                                  f"{t.utc.isot} from {site.name} (altitude {np.degrees(geo.alt0):.2f} deg)")
        zd = 90.0 - np.degrees(geo.alt0)
        if zd > REFRACTION_WARN_ZD_DEG:
            warnings.warn(f"field centre at zenith distance {zd:.1f} deg: the refraction model (ERFA, A tan z + "
                          "B tan^3 z) is not accurate beyond ~75 deg", UserWarning, stacklevel=2)
        if not np.all(np.isfinite(geo.u[:n])):
            bad = stars.names[~np.isfinite(geo.u[:n])]
            raise AstrometryError(f"stars {bad[:10].tolist()} are 90 deg or more from the field centre: "
                                  "select the stars around the field first (Catalog.within)")
        radius = float(np.max(np.hypot(geo.u, geo.v))) if n else 0.0
        cost = orientation_cost(t, c0, site, w, wl, position_angle=theta, rotator_angle=rot, parity=parity,
                                field_radius_arcsec=radius)
    earth.state_cost(cost)

    cov = np.einsum("ij,njk,lk->nil", geo.jacobian, stars.cov, geo.jacobian) * 1e-6  # mas**2 -> arcsec**2
    return FocalPlanePositions(
        names=stars.names, x=geo.x, y=geo.y, cov=cov, u=geo.u, v=geo.v, dt=stars.dt, has_pm=stars.has_pm,
        inflated=stars.inflated, zenith_distance_deg=float(zd), parallactic_angle_deg=geo.q,
        rotator_angle_deg=geo.rot, position_angle_deg=_wrap180(geo.theta), altitude_deg=float(np.degrees(geo.alt0)),
        azimuth_deg=float(np.degrees(geo.az0) % 360.0), time=t, wavelength_um=wl, weather=w, site=site,
        parity=parity, jacobian=geo.jacobian, pointing=c0,
        meta={"catalog": stars.catalog_name, "refraction": "astropy AltAz (ERFA refco/atioq)" if
              w.pressure_hpa > 0 else "off (pressure 0)", **stars.meta, "earth_orientation": cost,
              **({"horizon": horizon_meta} if horizon_meta else {})},
    )


#: the observer of :func:`horizon_site` places the field centre within this of the
#: zenith distance and parallactic angle asked for (deg)
HORIZON_TOLERANCE_DEG = 1e-5
#: smallest zenith distance :func:`horizon_site` places a field at (deg): at the zenith
#: itself the parallactic angle is undefined
HORIZON_MIN_ZD_DEG = 0.1


def horizon_site(site: Any, pointing: Any, time: Any, zenith_distance_deg: float, parallactic_angle_deg: float,
                 weather: Weather, wavelength_um: float) -> Site:
    """A :class:`~astrocal.sky.sites.Site` from which the field centre ``pointing`` is seen at
    ``time`` at the given (observed, refracted) zenith distance and parallactic angle (deg).

    For an exposure known by its epoch only: refraction needs the field's zenith distance
    and the direction of the zenith on the sky (the parallactic angle), not the clock time.
    The latitude and the hour angle follow from the apparent declination ``dec`` (astropy's
    ``TETE`` at ``time``) by the spherical triangle pole-zenith-star (``sin lat = sin dec
    cos z + cos dec sin z cos q``), the longitude from the hour angle and the Greenwich
    apparent sidereal time; two or three corrections make the positions computed with
    astropy's ``AltAz`` (aberration, refraction) land within :data:`HORIZON_TOLERANCE_DEG`
    (the parallactic angle's error times sin z). A zenith distance below
    :data:`HORIZON_MIN_ZD_DEG` is placed there.
    The site keeps its height and typical weather. Annual aberration and precession are
    those of ``time``; the diurnal aberration's differential part over a field is below a
    microarcsecond, so the hour of the day does not matter.

    Parameters
    ----------
    site : str or Site
        The site whose height and typical weather are kept.
    pointing : SkyCoord, (ra_deg, dec_deg) or str
        ICRS field centre.
    time : Time, str or float
        The exposure's time (:func:`parse_time`).
    zenith_distance_deg, parallactic_angle_deg : float
        Where the field centre is to be seen (deg; observed, refracted).
    weather : Weather
        For the refraction.
    wavelength_um : float
        For the refraction (um).

    Returns
    -------
    Site
        The site placed there (named so).

    Raises
    ------
    AstrometryError
        The field below the horizon, or the placement does not converge.
    """

    site = get_site(site)
    z_want = max(float(zenith_distance_deg), HORIZON_MIN_ZD_DEG)
    q_want = float(parallactic_angle_deg)
    if not z_want < 90.0:
        raise AstrometryError(f"zenith distance {zenith_distance_deg} deg: the field must be above the horizon")
    c0 = as_center(pointing)
    t = parse_time(time, "exposure time")
    app = c0.transform_to(TETE(obstime=t))
    dec, ra = float(app.dec.rad), float(app.ra.rad)
    gast = float(t.sidereal_time("apparent", "greenwich").rad)
    z_aim, q_aim = z_want, q_want
    for _ in range(8):
        z, q = np.radians(z_aim), np.radians(q_aim)
        slat = np.sin(dec) * np.cos(z) + np.cos(dec) * np.sin(z) * np.cos(q)
        lat = float(np.arcsin(np.clip(slat, -1.0, 1.0)))
        ha = float(np.arctan2(np.sin(z) * np.sin(q) * np.cos(dec),
                              np.cos(z) - np.sin(lat) * np.sin(dec)))
        lon = (ra + ha - gast + np.pi) % (2 * np.pi) - np.pi
        out = dataclasses.replace(site, name=f"{site.name} (placed by zenith distance and parallactic angle)",
                                  latitude_deg=float(np.degrees(lat)), longitude_deg=float(np.degrees(lon)))
        geo = _project([c0.ra.deg], [c0.dec.deg], c0, t, out.location, weather, wavelength_um, 0.0, None, 1)
        dz = z_want - (90.0 - float(np.degrees(geo.alt0)))
        dq = _wrap180(q_want - geo.q)
        # the parallactic angle matters in proportion to sin z (refraction's direction)
        if abs(dz) < HORIZON_TOLERANCE_DEG and abs(dq) * np.sin(np.radians(z_want)) < HORIZON_TOLERANCE_DEG:
            break
        z_aim, q_aim = z_aim + dz, q_aim + dq
    else:
        raise AstrometryError(f"cannot place the field at zenith distance {z_want:g} deg and parallactic angle "
                              f"{q_want:g} deg (left {dz:.2g}, {dq:.2g} deg)")
    return out


@dataclass(frozen=True)
class _Geometry:
    """One exposure's geometry (see :func:`_project`): per point ``x``, ``y`` (instrument
    frame, arcsec) and ``u``, ``v`` (telescope frame, arcsec); the refracted field centre
    ``az0``, ``alt0`` (rad); the angles ``q``, ``rot``, ``theta`` (deg); ``jacobian`` the
    2x2 d(x, y)/d(xi, eta) at the centre."""

    x: np.ndarray
    y: np.ndarray
    u: np.ndarray
    v: np.ndarray
    az0: float
    alt0: float
    q: float
    rot: float
    theta: float
    jacobian: np.ndarray


def _project(ra_deg, dec_deg, c0, t, location, w, wl, theta, rot, parity) -> _Geometry:
    """ICRS positions (deg, at the exposure epoch) -> observed (refracted) alt/az with astropy
    -> gnomonic about the refracted centre -> instrument frame (see the module notes).
    Exactly one of ``theta`` (position angle) and ``rot`` (rotator angle) is not None."""
    # points: N stars, the field centre, and 4 points for the Jacobian at the centre
    ra_deg, dec_deg = np.atleast_1d(np.asarray(ra_deg, float)), np.atleast_1d(np.asarray(dec_deg, float))
    n = ra_deg.size
    ra0, dec0 = np.radians(c0.ra.deg), np.radians(c0.dec.deg)
    h = JACOBIAN_STEP_RAD
    jl, jb = inverse_gnomonic(np.array([h, -h, 0, 0]), np.array([0, 0, h, -h]), ra0, dec0)
    ra_all = np.concatenate([ra_deg, [c0.ra.deg], np.degrees(jl)])
    dec_all = np.concatenate([dec_deg, [c0.dec.deg], np.degrees(jb)])
    frame = AltAz(obstime=t, location=location, pressure=w.pressure_hpa * u.hPa,
                  temperature=w.temperature_c * u.deg_C, relative_humidity=w.relative_humidity,
                  obswl=wl * u.um)
    observed = SkyCoord(ra=ra_all * u.deg, dec=dec_all * u.deg, frame="icrs").transform_to(frame)
    az = observed.az.rad
    alt = observed.alt.rad
    az0, alt0 = az[n], alt[n]
    uu, vv = gnomonic(az, alt, az0, alt0)
    # Jacobian d(u, v)/d(xi, eta) at the centre (central differences, exact to O(h^2))
    J_uv = np.column_stack([[(uu[n + 1] - uu[n + 2]) / (2 * h), (vv[n + 1] - vv[n + 2]) / (2 * h)],
                            [(uu[n + 3] - uu[n + 4]) / (2 * h), (vv[n + 3] - vv[n + 4]) / (2 * h)]])
    # ICRS direction mapped onto the vertical: J d = (0, +)
    d = np.array([J_uv[0, 1], -J_uv[0, 0]])
    if (J_uv @ d)[1] < 0:
        d = -d
    q = float(np.degrees(np.arctan2(d[0], d[1])))
    if theta is None:
        theta = _wrap180(rot + q)
    rot = _wrap180(theta - q)
    M = _instrument_matrix(rot, parity)
    u_as = uu[:n] * ARCSEC_PER_RAD
    v_as = vv[:n] * ARCSEC_PER_RAD
    x = M[0, 0] * u_as + M[0, 1] * v_as
    y = M[1, 0] * u_as + M[1, 1] * v_as
    return _Geometry(x=x, y=y, u=u_as, v=v_as, az0=float(az0), alt0=float(alt0), q=q, rot=rot,
                     theta=float(theta), jacobian=M @ J_uv)


#: points on the rim of the field used by :func:`orientation_cost`
COST_RIM_POINTS = 8
#: smallest field radius (arcsec) the cost is computed for
COST_MIN_RADIUS_ARCSEC = 1.0


def orientation_cost(time: Any, pointing: SkyCoord, site: Site, weather: Weather, wavelength_um: float, *,
                     position_angle: float | None = None, rotator_angle: float | None = None,
                     parity: int = 1, field_radius_arcsec: float = 10.0) -> dict:
    """What the Earth-orientation table's uncertainty at ``time`` costs one exposure, in mas.

    The 1-sigma of UT1-UTC and of the polar motion (:func:`astrocal.earth.uncertainty`) are
    pushed through the whole chain of :func:`apparent_positions` (same site, weather,
    wavelength, angle and parity): UT1-UTC as a shift of the time (the Earth's rotation
    angle; precession and aberration move by far less in a second), each polar-motion
    component as a shift of the site's latitude and longitude (the local vertical moves
    with the pole). For the field centre and ``COST_RIM_POINTS`` points on a circle of
    ``field_radius_arcsec`` around it, the result is, each term's effect added in quadrature:

    * ``centre_mas``: the shift of the field centre's apparent (refracted) position, which
      each exposure's pointing absorbs;
    * ``differential_mas``: the largest change of a rim point's instrument-frame position
      relative to the centre (differential refraction and, with a rotator angle, the field's
      rotation), which no pose absorbs.

    When the time lies after the leap-second table's expiry, ``leap_second`` gives the same
    two numbers for 1 s of UT1 (a leap second announced later); ``terms`` gives them for
    each of the three terms (``ut1``, ``polar_motion_lat``, ``polar_motion_lon``). Also in
    the dictionary:
    ``time`` (ISO UTC), ``status``, ``lead_days``, ``sigma_ut1_s``, ``sigma_pm_mas``,
    ``field_radius_arcsec``, ``stale`` (the table gives no measured value at ``time``, or
    it lies after the leap-second expiry), and ``table`` (the file's name).

    Parameters
    ----------
    time : Time, str or float
        The exposure's time (:func:`parse_time`).
    pointing : SkyCoord
        ICRS field centre.
    site : Site
        The observatory.
    weather : Weather
        For the refraction.
    wavelength_um : float
        For the refraction (um).
    position_angle, rotator_angle : float, optional
        One of them (deg).
    parity : {1, -1}, optional
        Orientation of the instrument frame.
    field_radius_arcsec : float, optional
        Radius of the rim points (arcsec; at least :data:`COST_MIN_RADIUS_ARCSEC`).

    Returns
    -------
    dict
        The costs (mas) and the table's status, as above.
    """
    t = parse_time(time, "exposure time")
    with earth.orientation():
        eop = earth.uncertainty(t)
        radius = max(float(field_radius_arcsec), COST_MIN_RADIUS_ARCSEC)
        ang = np.linspace(0.0, 2 * np.pi, COST_RIM_POINTS, endpoint=False)
        c0 = pointing
        ra, dec = inverse_gnomonic(np.radians(radius / 3600.0) * np.sin(ang),
                                   np.radians(radius / 3600.0) * np.cos(ang), np.radians(c0.ra.deg),
                                   np.radians(c0.dec.deg))
        ra, dec = np.degrees(ra), np.degrees(dec)
        geo = site.location.to_geodetic()
        lon, lat, height = float(geo.lon.deg), float(geo.lat.deg), geo.height

        def run(dt_s=0.0, dlat_as=0.0, dlon_as=0.0):
            loc = site.location if not (dlat_as or dlon_as) else EarthLocation.from_geodetic(
                lon=(lon + dlon_as / 3600.0) * u.deg, lat=(lat + dlat_as / 3600.0) * u.deg, height=height)
            tt = t if not dt_s else t + TimeDelta(dt_s, format="sec")
            return _project(ra, dec, c0, tt, loc, weather, wavelength_um, position_angle, rotator_angle, parity)

        nominal = run()

        def effect(g):
            dalt = g.alt0 - nominal.alt0
            daz = ((g.az0 - nominal.az0 + np.pi) % (2 * np.pi) - np.pi) * np.cos(nominal.alt0)
            centre = float(np.hypot(dalt, daz)) * MAS_PER_RAD
            diff = float(np.max(np.hypot(g.x - nominal.x, g.y - nominal.y))) * 1e3
            return centre, diff

        s_pm = eop.sigma_pm_arcsec
        parts = {"ut1": effect(run(dt_s=eop.sigma_ut1_s)), "polar_motion_lat": effect(run(dlat_as=s_pm)),
                 "polar_motion_lon": effect(run(dlon_as=s_pm / max(np.cos(np.radians(lat)), 1e-6)))}
        centre = float(np.sqrt(sum(p[0] ** 2 for p in parts.values())))
        diff = float(np.sqrt(sum(p[1] ** 2 for p in parts.values())))
        leap = None
        if eop.after_leap_second_expiry:
            lc, ld = effect(run(dt_s=1.0))
            leap = {"expires": earth.leap_second_info().expires, "centre_mas": lc, "differential_mas": ld}
        iso = t.utc.isot
    return {"time": iso, "status": eop.status, "lead_days": float(eop.lead_days),
            "sigma_ut1_s": float(eop.sigma_ut1_s), "sigma_pm_mas": float(eop.sigma_pm_arcsec * 1e3),
            "centre_mas": centre, "differential_mas": diff, "field_radius_arcsec": radius,
            "leap_second": leap, "stale": bool(eop.stale), "table": Path(earth.table_info().path).name,
            "terms": {k: {"centre_mas": c, "differential_mas": d} for k, (c, d) in parts.items()}}


def apparent_positions_many(catalog: Catalog | CatalogAtEpoch | str | os.PathLike, exposures: Sequence[Mapping],
                            **common: Any) -> list[FocalPlanePositions]:
    """:func:`apparent_positions` for several exposures; the catalogue is loaded once.

    Parameters
    ----------
    catalog : Catalog, CatalogAtEpoch, str or os.PathLike
        The catalogue.
    exposures : sequence of mapping
        One mapping of keyword arguments per exposure (``time``, ``pointing``,
        ``position_angle`` or ``rotator_angle``, ``weather``...).
    **common
        The keyword arguments shared by all (``wavelength``, ``site``...).

    Returns
    -------
    list of FocalPlanePositions
        One per exposure.

    Raises
    ------
    AstrometryError, WeatherError
        Naming the exposure (its index).
    """
    cat = catalog if isinstance(catalog, CatalogAtEpoch) else load_catalog(catalog)
    out = []
    for k, exp in enumerate(exposures):
        try:
            out.append(apparent_positions(cat, **{**common, **dict(exp)}))
        except (AstrometryError, WeatherError) as exc:
            raise type(exc)(f"exposure {k}: {exc}") from None
    return out


# --------------------------------------------------------------------------- space
#: speed of light (km/s), astropy's
SPEED_OF_LIGHT_KM_S = float(__import__("astropy.constants", fromlist=["c"]).c.to_value(u.km / u.s))

#: a velocity aberration scale factor outside 1 +- this is refused (the Earth's orbital speed
#: gives 1e-4; anything beyond 1e-3 is not an aberration factor)
ABERRATION_SCALE_RANGE = 1e-3

#: an observatory's barycentric speed beyond this (km/s) is refused
MAX_OBSERVER_SPEED_KM_S = 100.0


def resolve_aberration(aberration: Mapping | float | None, time: Time, pointing: Any = None) -> dict:
    """The stellar aberration of an observatory in space, as a plain dict.

    ``aberration``:

    * a mapping or number from the exposure: ``{"velocity_km_s": (vx, vy, vz)}`` the
      observatory's barycentric velocity (km/s, ICRS axes: x to the equinox, z to the
      pole), or ``{"scale": f}`` (a bare number is a scale) the velocity aberration scale
      factor as the HST (``VAFACTOR``) and JWST (``VA_SCALE``) pipelines define it:
      the sky scale of a pixel is the nominal one times ``f``, so separations on the
      detector are the catalogue's divided by ``f`` (``f = (1 + beta.n) / sqrt(1 -
      beta^2)`` for the velocity ``beta c`` and the direction ``n``);
    * None: the Earth's barycentric velocity at ``time`` (astropy's built-in ephemeris),
      with the note that the observatory's own velocity about the Earth is left out
      (a low orbit's 7.6 km/s: up to 2.5e-5 in scale; at L2 about 1 km/s).

    Parameters
    ----------
    aberration : mapping, float or None
        As above.
    time : astropy.time.Time
        The exposure's time (for the Earth's velocity).
    pointing : SkyCoord, (ra_deg, dec_deg) or str, optional
        With a velocity: the scale at this field centre is given as well.

    Returns
    -------
    dict
        ``{"velocity_km_s": [3 floats] or None, "scale": f or None, "source": text}``.

    Raises
    ------
    AstrometryError
        A bad mapping, velocity or scale.
    """

    source = "given"
    if isinstance(aberration, Mapping):
        unknown = set(aberration) - {"velocity_km_s", "scale", "source"}
        if unknown or ("velocity_km_s" in aberration) == ("scale" in aberration):
            raise AstrometryError(f"aberration: give one of velocity_km_s (barycentric, km/s) and scale (the "
                                  f"velocity aberration scale factor), got {dict(aberration)!r}")
        source = str(aberration.get("source", source))
        velocity, scale = aberration.get("velocity_km_s"), aberration.get("scale")
    elif aberration is None:
        with earth.orientation():
            _, vel = get_body_barycentric_posvel("earth", time)
        velocity = vel.xyz.to_value(u.km / u.s)
        scale = None
        source = ("default: the Earth's barycentric velocity (astropy's built-in ephemeris); the observatory's "
                  "own velocity about the Earth is not included (a low orbit's 7.6 km/s is up to 2.5e-5 in scale, "
                  "L2 about 1 km/s): give the header's VAFACTOR / VA_SCALE or the velocity")
    else:
        velocity, scale = None, aberration
    if velocity is not None:
        v = np.asarray(velocity, float).reshape(-1)
        if v.shape != (3,) or not np.all(np.isfinite(v)):
            raise AstrometryError(f"aberration: velocity_km_s must be three finite numbers (km/s), got {velocity!r}")
        if np.linalg.norm(v) > MAX_OBSERVER_SPEED_KM_S:
            raise AstrometryError(f"aberration: an observatory's barycentric speed of {np.linalg.norm(v):.1f} km/s "
                                  f"(more than {MAX_OBSERVER_SPEED_KM_S:g}): not km/s?")
        out = {"velocity_km_s": [float(c) for c in v], "scale": None, "source": source}
        if pointing is not None:
            c0 = as_center(pointing)
            n0 = c0.cartesian.xyz.value
            beta = v / SPEED_OF_LIGHT_KM_S
            out["scale"] = float((1.0 + n0 @ beta) / np.sqrt(1.0 - beta @ beta))
        return out
    try:
        f = float(scale)
    except (TypeError, ValueError):
        raise AstrometryError(f"aberration: the scale factor must be a number, got {scale!r}") from None
    if not (np.isfinite(f) and abs(f - 1.0) <= ABERRATION_SCALE_RANGE):
        raise AstrometryError(f"aberration: a velocity aberration scale factor is 1 within {ABERRATION_SCALE_RANGE:g} "
                              f"(HST VAFACTOR, JWST VA_SCALE), got {scale!r}")
    return {"velocity_km_s": None, "scale": f, "source": source}


def _aberrate(n, beta):
    """Unit vectors ``n`` (..., 3) seen by an observer moving with ``beta = v / c`` (3,):
    ``n' = (n / gamma + beta (1 + gamma (n.beta) / (1 + gamma))) / (1 + n.beta)``
    (special relativity; the directions crowd toward the apex)."""
    b2 = float(beta @ beta)
    if b2 == 0.0:
        return n
    gamma = 1.0 / np.sqrt(1.0 - b2)
    nb = n @ beta
    out = (n / gamma + beta * (1.0 + gamma * nb / (1.0 + gamma))[..., None]) / (1.0 + nb)[..., None]
    return out / np.linalg.norm(out, axis=-1, keepdims=True)


def space_geometry(ra_deg: ArrayLike, dec_deg: ArrayLike, pointing: Any, position_angle: float, parity: int,
                   aberration: Mapping) -> _Geometry:
    """Instrument-frame positions seen from space (see :func:`apparent_positions`).

    ICRS positions at the exposure epoch (deg) -> the directions seen by the moving
    observatory (``aberration`` from :func:`resolve_aberration`: with a velocity, every
    star and the pointing are aberrated exactly; with a scale factor ``f`` only, the
    tangent-plane offsets are divided by ``f``, its first-order effect) -> gnomonic
    projection about the (aberrated) pointing, standard coordinates ``(xi, eta)`` (east,
    north) -> instrument frame at position angle ``theta`` of +y::

        x = parity (-xi cos theta + eta sin theta),   y = xi sin theta + eta cos theta

    (the ground formula with the zenith direction replaced by north: the "telescope frame"
    ``(u, v) = (-xi, eta)`` points west and north, the rotator angle is ``theta``). Returns
    a :class:`_Geometry` whose horizon angles are NaN and whose Jacobian is d(x, y)/d(xi,
    eta) of the catalogue's standard coordinates at the pointing (central differences).

    Parameters
    ----------
    ra_deg, dec_deg : array_like
        ICRS positions at the exposure epoch (deg).
    pointing : SkyCoord, (ra_deg, dec_deg) or str
        ICRS field centre.
    position_angle : float
        Position angle of the instrument +y axis (deg).
    parity : {1, -1}
        Orientation of the instrument frame.
    aberration : mapping
        From :func:`resolve_aberration`.

    Returns
    -------
    _Geometry
        Instrument-frame (x, y) and telescope-frame (u, v) positions (arcsec), the angles
        and the Jacobian.
    """
    ra_deg, dec_deg = np.atleast_1d(np.asarray(ra_deg, float)), np.atleast_1d(np.asarray(dec_deg, float))
    n = ra_deg.size
    c0 = as_center(pointing)
    ra0, dec0 = np.radians(c0.ra.deg), np.radians(c0.dec.deg)
    h = JACOBIAN_STEP_RAD
    jl, jb = inverse_gnomonic(np.array([h, -h, 0, 0]), np.array([0, 0, h, -h]), ra0, dec0)
    lon = np.concatenate([np.radians(ra_deg), [ra0], jl])
    lat = np.concatenate([np.radians(dec_deg), [dec0], jb])
    velocity = aberration.get("velocity_km_s")
    if velocity is not None:
        vec = np.column_stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)])
        vec = _aberrate(vec, np.asarray(velocity, float) / SPEED_OF_LIGHT_KM_S)
        lon, lat = np.arctan2(vec[:, 1], vec[:, 0]), np.arcsin(np.clip(vec[:, 2], -1.0, 1.0))
        xi, eta = gnomonic(lon, lat, lon[n], lat[n])
    else:
        xi, eta = gnomonic(lon, lat, ra0, dec0)
        xi, eta = xi / aberration["scale"], eta / aberration["scale"]
    uu, vv = -xi, eta  # west, north

    def jacobian():
        return np.column_stack([[(uu[n + 1] - uu[n + 2]) / (2 * h), (vv[n + 1] - vv[n + 2]) / (2 * h)],
                                [(uu[n + 3] - uu[n + 4]) / (2 * h), (vv[n + 3] - vv[n + 4]) / (2 * h)]])

    # the position angle counts from the catalogue's north (as on the ground): the aberration
    # turns the local meridian by up to ~1e-4 rad, which is taken out here
    w = jacobian()[:, 1]
    phi = np.arctan2(w[0], w[1])
    uu, vv = uu * np.cos(phi) - vv * np.sin(phi), uu * np.sin(phi) + vv * np.cos(phi)
    J_uv = jacobian()
    theta = float(position_angle)
    M = _instrument_matrix(theta, parity)
    u_as, v_as = uu[:n] * ARCSEC_PER_RAD, vv[:n] * ARCSEC_PER_RAD
    return _Geometry(x=M[0, 0] * u_as + M[0, 1] * v_as, y=M[1, 0] * u_as + M[1, 1] * v_as, u=u_as, v=v_as,
                     az0=float("nan"), alt0=float("nan"), q=float("nan"), rot=float("nan"), theta=theta,
                     jacobian=M @ J_uv)


def _space_positions(catalog, t, pointing, site, position_angle, rotator_angle, parity, wavelength, aberration,
                     missing_pm, pm_dispersion) -> FocalPlanePositions:
    """:func:`apparent_positions` for an observatory in space (:func:`space_geometry`)."""
    if rotator_angle is not None:
        raise AstrometryError(f"site {site.name} is in space: there is no zenith, so no rotator angle; give the "
                              "position_angle (PA of the instrument +y axis, from north through east)")
    theta = _angle_deg(position_angle, "position_angle")
    if theta is None:
        raise AstrometryError("give the position_angle (PA of the instrument +y axis, from north through east)")
    unknown = wavelength is None or (isinstance(wavelength, (float, np.floating)) and np.isnan(wavelength))
    wl = float("nan") if unknown else _wavelength_um(wavelength)  # not used: no refraction
    try:
        c0 = as_center(pointing)
    except CatalogError as exc:
        raise AstrometryError(str(exc).replace("centre", "pointing")) from None
    stars = _at_epoch(catalog, t, missing_pm, pm_dispersion)
    ab = resolve_aberration(aberration, t, c0)
    geo = space_geometry(stars.ra, stars.dec, c0, theta, parity, ab)
    n = len(stars)
    if not np.all(np.isfinite(geo.u[:n])):
        bad = stars.names[~np.isfinite(geo.u[:n])]
        raise AstrometryError(f"stars {bad[:10].tolist()} are 90 deg or more from the field centre: "
                              "select the stars around the field first (Catalog.within)")
    cov = np.einsum("ij,njk,lk->nil", geo.jacobian, stars.cov, geo.jacobian) * 1e-6  # mas**2 -> arcsec**2
    nan = float("nan")
    cost = {"time": t.utc.isot, "centre_mas": 0.0, "differential_mas": 0.0, "stale": False,
            "note": "an observatory in space: the Earth's orientation does not enter its positions"}
    return FocalPlanePositions(
        names=stars.names, x=geo.x, y=geo.y, cov=cov, u=geo.u, v=geo.v, dt=stars.dt, has_pm=stars.has_pm,
        inflated=stars.inflated, zenith_distance_deg=nan, parallactic_angle_deg=nan, rotator_angle_deg=nan,
        position_angle_deg=_wrap180(theta), altitude_deg=nan, azimuth_deg=nan, time=t, wavelength_um=wl,
        weather=Weather(0.0, 0.0, 0.0, source="none: an observatory in space"), site=site, parity=parity,
        jacobian=geo.jacobian, pointing=c0,
        meta={"catalog": stars.catalog_name, "refraction": "none (an observatory in space)", **stars.meta,
              "velocity_aberration": ab, "earth_orientation": cost, "space": True},
    )
