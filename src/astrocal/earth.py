"""Earth orientation and leap seconds: astrocal's one policy for every time transform.

Apparent positions need UT1-UTC and the polar motion (from an IERS table) and the leap
seconds (UTC to TAI). Astropy's default downloads a fresh IERS-A table once the bundled one
is more than 30 days old and *fails* when it cannot; a calibration must not depend on the
day it is computed nor on a network connection. So astrocal decides here, once, which
tables are used, and every astrocal function that transforms times or coordinates
(:func:`astrocal.sky.astrometry.apparent_positions`, the sky simulator's night plan...)
runs inside :func:`orientation`, in the library as well as on the command line.

The policy (:func:`configure`; the campaign's ``[earth]`` section sets it for a command):

* **Offline by default.** The Earth-orientation table is the IERS-A table bundled with
  astropy (package ``astropy-iers-data``: ``finals2000A.all``, measured values completed by
  IERS-B, then about a year of predictions), or a local IERS-A (``finals2000A.*``) or
  IERS-B (EOP C04) file (``iers_file``), which observatories keep. Nothing is downloaded,
  and nothing depends on the date of the run: a table is never "too old" here; what its
  age costs is *computed* for each exposure instead (:func:`uncertainty`, and the positions'
  cost in :func:`astrocal.sky.astrometry.apparent_positions`) and stated once per run as an
  :class:`EarthOrientationWarning` with the numbers.
* Beyond the table, astropy holds the last UT1-UTC and uses the 50-year mean pole; the
  stated uncertainty then grows with the distance to the table (see :func:`uncertainty`).
* **Leap seconds**: astropy's bundled ``Leap_Second.dat`` and the system's list, or a local
  file (``leap_second_file``). An expired table is used as it is: exposures after its
  expiry date may lack a leap second announced later (1 s of UT1), and the cost of that is
  stated with the rest; it never fails.
* **Downloads only when allowed** (``allow_download = true``): astropy's own download of the
  current IERS-A table and leap seconds (``astropy.utils.data.download_file`` with its
  cache) once, when the policy is set; if that fails, the bundled tables are used and a
  warning says why.

Provenance (:func:`provenance`): which files, their dates (last measured value, end of the
predictions, leap-second expiry), their SHA-256, the policy; recorded in the measured sky
tables, ``fit.json`` and the products.
"""
from __future__ import annotations

import contextlib
import logging
import os
import threading
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
from astropy.time import Time
from astropy.utils import iers
from astropy.utils.exceptions import AstropyWarning

from .checksum import file_sha256
from .errors import AstrocalError

__all__ = [
    "EarthOrientationError",
    "EarthOrientationWarning",
    "Policy",
    "TableInfo",
    "LeapSecondInfo",
    "EOPUncertainty",
    "configure",
    "reset",
    "policy",
    "table",
    "table_info",
    "leap_second_info",
    "ensure_leap_seconds",
    "leap_seconds_applied",
    "orientation",
    "uncertainty",
    "provenance",
    "state_cost",
    "BULLETIN_A_UT1",
    "BULLETIN_A_POLAR_MOTION",
]

log = logging.getLogger(__name__)

#: IERS Bulletin A, "PREDICTIONS": 1-sigma of UT1-UTC predicted ``D`` days after the last
#: observed value, ``a * D**b`` seconds (``0.00025 D**0.75``)
BULLETIN_A_UT1 = (0.00025, 0.75)
#: the same for each polar-motion component, arcsec (``0.00068 D**0.80``)
BULLETIN_A_POLAR_MOTION = (0.00068, 0.80)
#: UTC is kept within 0.9 s of UT1 by leap seconds: no UT1-UTC error is larger
MAX_UT1_ERROR_S = 0.9
#: 1-sigma used for measured (non-predicted) values without a stated error: 20 us, 0.1 mas
OBSERVED_UT1_ERROR_S = 2e-5
OBSERVED_POLAR_MOTION_ERROR_AS = 1e-4
#: the pole's wander about astropy's mean pole is measured over this many days of the table
POLE_WANDER_DAYS = 3652.5
#: the UT1-UTC drift at the end of the table is measured over this many days
DRIFT_DAYS = 60


class EarthOrientationError(AstrocalError, ValueError):
    """A local IERS or leap-second file that is missing or cannot be read (names the file
    and the setting)."""


class EarthOrientationWarning(UserWarning):
    """What a stale Earth-orientation or leap-second table costs in accuracy, stated once per
    run; a download that was allowed but failed."""


@dataclass(frozen=True)
class Policy:
    """Which tables astrocal uses (see the module notes). Paths are absolute or relative to
    the working directory; ``key`` names the setting in error messages."""

    iers_file: Optional[str] = None
    leap_second_file: Optional[str] = None
    allow_download: bool = False
    key: str = "earth"


@dataclass(frozen=True)
class TableInfo:
    """Where the Earth-orientation table comes from, and what it covers (MJD, UTC).

    ``last_observed_mjd``: the last day with measured (not predicted) values;
    ``end_mjd``: the table's last day (predictions included).
    """

    path: str
    kind: str
    source: str
    sha256: str
    first_mjd: float
    last_observed_mjd: float
    end_mjd: float

    def as_dict(self) -> dict:
        """The fields as plain data.

        Returns
        -------
        dict
            The fields, with ``last_observed`` and ``end`` (ISO dates) added.
        """
        d = asdict(self)
        d["last_observed"] = _iso_date(self.last_observed_mjd)
        d["end"] = _iso_date(self.end_mjd)
        return d


@dataclass(frozen=True)
class LeapSecondInfo:
    """The leap-second table in use: file, source, expiry (ISO date, UTC) and the last leap
    second it holds."""

    path: str
    source: str
    expires: str
    expires_mjd: float
    last_leap_second: str

    def as_dict(self) -> dict:
        """The fields as plain data.

        Returns
        -------
        dict
            The fields.
        """
        return asdict(self)


@dataclass(frozen=True)
class EOPUncertainty:
    """1-sigma of the Earth-orientation values astropy uses at one time.

    ``status``: ``"observed"`` (measured values), ``"predicted"`` (the table's predictions),
    ``"beyond the table"`` / ``"before the table"``; ``lead_days``: days after the last
    measured value (0 when observed); ``sigma_ut1_s`` (s) and ``sigma_pm_arcsec`` (per
    component, arcsec); ``after_leap_second_expiry``: the time lies after the leap-second
    table's expiry (a later leap second, 1 s of UT1, may be missing).
    """

    mjd: float
    status: str
    lead_days: float
    sigma_ut1_s: float
    sigma_pm_arcsec: float
    after_leap_second_expiry: bool

    @property
    def stale(self) -> bool:
        """Not measured values, or after the leap-second table's expiry."""
        return self.status != "observed" or self.after_leap_second_expiry


class _State:
    def __init__(self):
        self.lock = threading.RLock()
        self.policy = Policy()
        self.table = None
        self.info: Optional[TableInfo] = None
        self.leap: Optional[LeapSecondInfo] = None
        self.download_note: Optional[str] = None
        self.stated = None  # (centre mas, differential mas) last stated in this process
        self.derived = None  # drift and pole wander of the table in use


_STATE = _State()


# =========================================================================== configuration
def configure(iers_file: str | os.PathLike | None = None, leap_second_file: str | os.PathLike | None = None,
              allow_download: bool = False, *, key: str = "earth") -> Policy:
    """Set the process's Earth-orientation policy and load its tables now.

    A bad file leaves the old policy in effect.

    Parameters
    ----------
    iers_file : str or os.PathLike, optional
        A local IERS-A (``finals2000A.all``/``.daily``/``.data``) or IERS-B (EOP C04) file
        (None: the bundled table).
    leap_second_file : str or os.PathLike, optional
        A local IERS ``Leap_Second.dat`` or IETF ``leap-seconds.list``.
    allow_download : bool, optional
        Let astropy download the current tables once (the bundled ones are used if that
        fails, with an :class:`EarthOrientationWarning`).
    key : str, optional
        Names the settings in errors (``"<key>.iers_file"``).

    Returns
    -------
    Policy
        The policy now in effect.

    Raises
    ------
    EarthOrientationError
        A file does not exist or is not such a table (naming the file and the key).
    """
    pol = Policy(iers_file=None if iers_file is None else str(iers_file),
                 leap_second_file=None if leap_second_file is None else str(leap_second_file),
                 allow_download=bool(allow_download), key=str(key))
    table_, info, note = _load_table(pol)   # before anything changes: a bad file leaves the old policy
    leap_table = _read_leap_file(pol) if pol.leap_second_file else None
    with _STATE.lock:
        _STATE.policy = pol
        _STATE.table, _STATE.info, _STATE.download_note = table_, info, note
        _STATE.derived = None
        _STATE.leap = None
        _STATE.stated = None
        _install_leap_seconds(pol, leap_table)
    if note:
        warnings.warn(note, EarthOrientationWarning, stacklevel=2)
    return pol


def reset() -> Policy:
    """Back to the default policy (bundled tables, no download).

    Returns
    -------
    Policy
        The default policy, now in effect.
    """
    return configure()


def policy() -> Policy:
    """The policy in effect.

    Returns
    -------
    Policy
        The process's Earth-orientation policy.
    """
    return _STATE.policy


def table() -> iers.IERS:
    """The Earth-orientation table in use, loaded on first use.

    Returns
    -------
    astropy.utils.iers.IERS
        The astropy IERS table (IERS-A or IERS-B).
    """
    with _STATE.lock:
        if _STATE.table is None:
            _STATE.table, _STATE.info, _STATE.download_note = _load_table(_STATE.policy)
            if _STATE.download_note:
                warnings.warn(_STATE.download_note, EarthOrientationWarning, stacklevel=2)
        return _STATE.table


def table_info() -> TableInfo:
    """What the table in use is.

    Returns
    -------
    TableInfo
        Its file, source, checksum and coverage.
    """
    table()
    return _STATE.info


def leap_second_info() -> LeapSecondInfo:
    """What the leap-second table in use is.

    Returns
    -------
    LeapSecondInfo
        Its file, source, expiry and last leap second.
    """
    ensure_leap_seconds()
    return _STATE.leap


def _key(pol, name):
    return f"{pol.key}.{name}" if pol.key else name


def _iso_date(mjd) -> str:
    """The calendar date of an MJD (no time scale involved, so no leap seconds needed)."""
    import datetime as _dt

    return (_dt.date(1858, 11, 17) + _dt.timedelta(days=int(np.floor(float(mjd))))).isoformat()


@contextlib.contextmanager
def leap_seconds_applied() -> Iterator[None]:
    """Run the block with the policy's leap seconds.

    ERFA's "dubious year" (a UTC date after the leap-second table's expiry) is not an
    error there: its cost is stated with the positions' (:func:`state_cost`).

    Yields
    ------
    None
        Inside the block.
    """
    ensure_leap_seconds()
    with _dubious_year_ignored():
        yield


@contextlib.contextmanager
def _dubious_year_ignored():
    import erfa

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*dubious year.*", category=erfa.ErfaWarning)
        yield


def _bundled_version() -> str:
    try:
        import astropy_iers_data

        return f"astropy-iers-data {astropy_iers_data.__version__}"
    except Exception:  # noqa: BLE001 - an older astropy carries the file itself
        import astropy

        return f"astropy {astropy.__version__}"


def _local_file(path, pol, name):
    """``(Path, the setting's name)`` of a policy's local file; it must exist and be a file."""
    p = Path(path)
    key = _key(pol, name)
    if not p.exists():
        raise EarthOrientationError(f"{p}: no such file ({key})")
    if not p.is_file():
        raise EarthOrientationError(f"{p}: not a file ({key})")
    return p, key


def _read_iers_file(path, pol):
    """An IERS table from a local file: IERS-A (finals2000A) first, then IERS-B (EOP C04)."""
    p, key = _local_file(path, pol, "iers_file")
    reasons = []
    for cls, kind in ((iers.IERS_A, "IERS-A (finals2000A)"), (iers.IERS_B, "IERS-B (EOP C04)")):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                t = cls.read(str(p))
            mjd = np.asarray(t["MJD"].to_value("d"), float)
            if len(t) < 2 or not np.all(np.isfinite(mjd)) or np.any(np.diff(mjd) <= 0):
                raise ValueError("no increasing MJD column")
            ut1 = np.asarray(t["UT1_UTC"].to_value("s"), float)
            if not np.any(np.isfinite(ut1)):
                raise ValueError("no UT1-UTC values")
            return t, kind
        except Exception as exc:  # noqa: BLE001 - astropy's readers raise many kinds
            reasons.append(f"as {kind}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    raise EarthOrientationError(f"{p}: not an IERS table ({key}); tried " + "; ".join(reasons))


def _coverage(t):
    mjd = np.asarray(t["MJD"].to_value("d"), float)
    if "UT1Flag" in t.colnames:
        flags = np.asarray(t["UT1Flag"]).astype(str)
        observed = mjd[flags != "P"]
        last_obs = float(observed.max()) if observed.size else float(mjd[0])
    else:
        last_obs = float(mjd[-1])
    return float(mjd[0]), last_obs, float(mjd[-1])


def _load_table(pol):
    """``(table, TableInfo, note)`` for a policy; ``note`` says why a download failed."""
    note = None
    if pol.iers_file:
        t, kind = _read_iers_file(pol.iers_file, pol)
        path, source = str(Path(pol.iers_file).resolve()), f"local file ({_key(pol, 'iers_file')})"
    else:
        t = None
        if pol.allow_download:
            t, path, note = _download_iers_a()
            source = f"downloaded from {iers.conf.iers_auto_url} (downloads allowed)"
            kind = "IERS-A (finals2000A)"
        if t is None:
            path = str(iers.IERS_A_FILE)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                t = iers.IERS_Auto.read(path)  # IERS-A with the bundled IERS-B values substituted
            source = f"bundled with {_bundled_version()}"
            kind = "IERS-A (finals2000A) with IERS-B"
    first, last_obs, end = _coverage(t)
    info = TableInfo(path=path, kind=kind, source=source, sha256=file_sha256(path), first_mjd=first,
                     last_observed_mjd=last_obs, end_mjd=end)
    log.debug("Earth orientation: %s, %s, measured to %s, predictions to %s", path, source,
              _iso_date(last_obs), _iso_date(end))
    return t, info, note


def _download_iers_a():
    """Astropy's download of the current IERS-A table: ``(table or None, path, note)``."""
    from astropy.utils.data import download_file

    urls = (iers.conf.iers_auto_url, iers.conf.iers_auto_url_mirror)
    try:
        path = download_file(urls[0], sources=urls, cache="update", timeout=iers.conf.remote_timeout)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t = iers.IERS_Auto.read(path)
        return t, str(path), None
    except Exception as exc:  # noqa: BLE001 - offline, DNS, HTTP, a malformed page...
        return None, "", (f"Earth orientation: downloads are allowed but the IERS-A table could not be "
                          f"downloaded from {urls[0]} ({type(exc).__name__}: {exc}); using the bundled "
                          f"table of {_bundled_version()} instead")


# =========================================================================== leap seconds
def _read_leap_file(pol):
    p, key = _local_file(pol.leap_second_file, pol, "leap_second_file")
    try:
        t = iers.LeapSeconds.open(str(p))
        if len(t) < 1:
            raise ValueError("no leap seconds")
        return t
    except Exception as exc:  # noqa: BLE001
        raise EarthOrientationError(f"{p}: not a leap-second table ({key}; expected an IERS Leap_Second.dat "
                                    f"or an IETF leap-seconds.list: {type(exc).__name__}: {exc})") from None


def _install_leap_seconds(pol, user_table=None):
    """Let astropy initialise its leap seconds under the policy (no download unless allowed,
    no expiry check against the clock), then add the user's file."""
    import erfa

    with iers.conf.set_temp("auto_download", bool(pol.allow_download)), \
            iers.conf.set_temp("auto_max_age", 30.0 if pol.allow_download else None), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # the first UTC conversion of the process runs astropy's leap-second update once,
        # here under this policy (never afterwards under astropy's download default)
        Time(51544.0, format="mjd", scale="utc").tai  # noqa: B018
        erfa.leap_seconds.set()  # ERFA's built-in table, completed by the policy's file alone
        if user_table is not None:
            erfa.leap_seconds.update(user_table)
            path, source = str(Path(pol.leap_second_file).resolve()), f"local file ({_key(pol, 'leap_second_file')})"
        else:
            files = [iers.IERS_LEAP_SECOND_FILE, iers.conf.system_leap_second_file]
            if pol.allow_download:
                files += [iers.conf.iers_leap_second_auto_url, iers.conf.ietf_leap_second_auto_url]
            chosen = iers.LeapSeconds.auto_open(files)
            erfa.leap_seconds.update(chosen)
            path = str(chosen.meta.get("data_url", iers.IERS_LEAP_SECOND_FILE))
            if "://" in path:
                source = "downloaded or cached by astropy (downloads allowed)"
            elif Path(path).resolve() == Path(iers.IERS_LEAP_SECOND_FILE).resolve():
                source = f"bundled with {_bundled_version()}"
            else:
                source = "system file (astropy.utils.iers.conf.system_leap_second_file)"
    expires = Time(erfa.leap_seconds.expires, scale="tai")
    last = erfa.leap_seconds.get()[-1]
    _STATE.leap = LeapSecondInfo(
        path=path, source=source, expires=expires.strftime("%Y-%m-%d"), expires_mjd=float(expires.mjd),
        last_leap_second=f"{int(last['year']):04d}-{int(last['month']):02d}-01 (TAI-UTC {float(last['tai_utc']):g} s)")


def ensure_leap_seconds() -> None:
    """Install the policy's leap seconds once per process (cheap after the first call).

    Called before any UTC conversion of astrocal, so that astropy's own once-per-process
    leap-second update never runs under its download default.
    """
    if _STATE.leap is not None:
        return
    with _STATE.lock:
        if _STATE.leap is None:
            pol = _STATE.policy
            _install_leap_seconds(pol, _read_leap_file(pol) if pol.leap_second_file else None)


# =========================================================================== applying it
@contextlib.contextmanager
def orientation() -> Iterator[iers.IERS]:
    """Run the block under astrocal's policy.

    The policy's IERS table for every Earth-orientation value, no download, no failure or
    astropy warning for times the table does not cover (their cost is computed and
    stated instead), ERFA's "dubious year" (a date after the leap-second table's expiry)
    likewise. Re-entrant.

    Yields
    ------
    astropy.utils.iers.IERS
        The table in use.
    """
    tab = table()
    with leap_seconds_applied(), iers.conf.set_temp("auto_download", False), \
            iers.conf.set_temp("auto_max_age", None), iers.conf.set_temp("iers_degraded_accuracy", "ignore"), \
            iers.earth_orientation_table.set(tab), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Tried to get polar motions for times", category=AstropyWarning)
        warnings.filterwarnings("ignore", message=r".*Assuming UT1-UTC=0.*", category=AstropyWarning)
        yield tab


# =========================================================================== uncertainty
def _derived():
    """UT1-UTC drift at the end of the table (s/day), the rms of the pole about astropy's
    mean pole over the last decade (arcsec), and the errors stated on the last row."""
    with _STATE.lock:
        if _STATE.derived is not None and _STATE.derived[0] is _STATE.table:
            return _STATE.derived[1]
        t = table()
        mjd = np.asarray(t["MJD"].to_value("d"), float)
        ut1 = np.asarray(t["UT1_UTC"].to_value("s"), float)
        k = max(len(t) - 1 - DRIFT_DAYS, 0)
        d = ut1[-1] - ut1[k]
        steps = np.diff(ut1[k:])
        d -= np.round(steps).sum()  # leap seconds inside the window
        drift = abs(d / max(mjd[-1] - mjd[k], 1.0))
        pmx = np.asarray(t["PM_x"].to_value("arcsec"), float)
        pmy = np.asarray(t["PM_y"].to_value("arcsec"), float)
        sel = (mjd >= _STATE.info.last_observed_mjd - POLE_WANDER_DAYS) & (mjd <= _STATE.info.last_observed_mjd)
        sel &= np.isfinite(pmx) & np.isfinite(pmy)
        try:  # astropy's mean pole, used for times outside the table
            from astropy.coordinates.builtin_frames.utils import _DEFAULT_PM

            x0, y0 = (float(v.to_value("arcsec")) for v in _DEFAULT_PM)
        except Exception:  # noqa: BLE001 - a private name: fall back on the table's own mean
            x0, y0 = float(np.mean(pmx[sel])), float(np.mean(pmy[sel]))
        wander = float(max(np.sqrt(np.mean((pmx[sel] - x0) ** 2)), np.sqrt(np.mean((pmy[sel] - y0) ** 2))))
        errs = {}
        for name, col, unit in (("ut1", "e_UT1_UTC_A", "s"), ("pmx", "e_PM_x_A", "arcsec"),
                                ("pmy", "e_PM_y_A", "arcsec")):
            errs[name] = (np.asarray(t[col].to_value(unit), float) if col in t.colnames else None)
        out = {"drift_s_per_day": float(drift), "pole_wander_arcsec": wander, "mjd": mjd, "errors": errs}
        _STATE.derived = (_STATE.table, out)
        return out


def _bulletin_a(coeffs, days):
    a, b = coeffs
    return a * max(float(days), 0.0) ** b


def uncertainty(time: Time | Any) -> EOPUncertainty:
    """1-sigma of UT1-UTC and of the polar motion that the table in use gives at ``time``.

    * measured values: the table's stated errors (IERS-A ``e_*`` columns; 20 us and 0.1 mas
      when a table states none);
    * the table's predictions: the errors it states for them (IERS-A), else IERS Bulletin
      A's law for a prediction ``D`` days ahead (:data:`BULLETIN_A_UT1`,
      :data:`BULLETIN_A_POLAR_MOTION`);
    * beyond the table, astropy holds the last UT1-UTC and takes the 50-year mean pole: the
      UT1-UTC error is Bulletin A's law (at least the last stated error) combined with the
      drift the held value misses (the table's last 60 days' rate times the days beyond),
      capped at 0.9 s (leap seconds keep UTC that close to UT1); the polar-motion error is
      the pole's rms about that mean over the table's last decade. Before the table, the
      same with the distance to its first day.

    Parameters
    ----------
    time : astropy.time.Time or anything Time accepts
        The time (UTC when not a Time).

    Returns
    -------
    EOPUncertainty
        The status and the 1-sigma errors (s, arcsec).
    """
    with leap_seconds_applied():
        t = time if isinstance(time, Time) else Time(time, scale="utc")
        mjd = float(t.utc.mjd)
    info = table_info()
    der = _derived()
    leap = _STATE.leap
    after_leap = bool(leap is not None and mjd > leap.expires_mjd)
    errs, grid = der["errors"], der["mjd"]

    def stated(name):
        """The table's stated error at ``mjd`` (its last stated one beyond it), or NaN."""
        col = errs.get(name)
        if col is None:
            return np.nan
        ok = np.isfinite(col)
        if not np.any(ok):
            return np.nan
        return float(np.interp(mjd, grid[ok], col[ok], left=np.nan, right=col[ok][-1]))

    if info.first_mjd <= mjd <= info.last_observed_mjd:
        s_ut1, s_pm = stated("ut1"), max(stated("pmx"), stated("pmy"))
        s_ut1 = s_ut1 if np.isfinite(s_ut1) else OBSERVED_UT1_ERROR_S
        s_pm = s_pm if np.isfinite(s_pm) else OBSERVED_POLAR_MOTION_ERROR_AS
        return EOPUncertainty(mjd, "observed", 0.0, s_ut1, s_pm, after_leap)
    if info.last_observed_mjd < mjd <= info.end_mjd:
        lead = mjd - info.last_observed_mjd
        s_ut1, s_pm = stated("ut1"), max(stated("pmx"), stated("pmy"))
        if not np.isfinite(s_ut1):
            s_ut1 = _bulletin_a(BULLETIN_A_UT1, lead)
        if not np.isfinite(s_pm):
            s_pm = _bulletin_a(BULLETIN_A_POLAR_MOTION, lead)
        return EOPUncertainty(mjd, "predicted", lead, s_ut1, s_pm, after_leap)
    if mjd > info.end_mjd:
        lead, beyond, status = mjd - info.last_observed_mjd, mjd - info.end_mjd, "beyond the table"
    else:
        lead, beyond, status = info.first_mjd - mjd, info.first_mjd - mjd, "before the table"
    last = stated("ut1") if status == "beyond the table" else np.nan
    base = max(_bulletin_a(BULLETIN_A_UT1, lead), last if np.isfinite(last) else 0.0)
    s_ut1 = min(float(np.hypot(base, der["drift_s_per_day"] * beyond)), MAX_UT1_ERROR_S)
    return EOPUncertainty(mjd, status, lead, s_ut1, der["pole_wander_arcsec"], after_leap)


# =========================================================================== provenance, warning
def provenance() -> dict:
    """The policy and the tables in use, as plain data.

    Returns
    -------
    dict
        ``iers_table``, ``leap_seconds`` and ``policy`` (for ``fit.json`` and table metadata).
    """
    info, leap, pol = table_info(), leap_second_info(), policy()
    return {"iers_table": info.as_dict(), "leap_seconds": leap.as_dict(),
            "policy": {"iers_file": pol.iers_file, "leap_second_file": pol.leap_second_file,
                       "allow_download": pol.allow_download}}


def _describe_table():
    info = table_info()
    return (f"{Path(info.path).name} ({info.source}; measured to {_iso_date(info.last_observed_mjd)}, "
            f"predictions to {_iso_date(info.end_mjd)})")


def state_cost(cost: dict, *, stacklevel: int = 3) -> bool:
    """Warn (:class:`EarthOrientationWarning`) with what the table's age costs for one exposure.

    Once per run: the first stale exposure of the process says it, and a later one only
    when its cost is more than twice the one stated.

    Parameters
    ----------
    cost : dict
        The dictionary of :func:`astrocal.sky.astrometry.orientation_cost`.
    stacklevel : int, optional
        Of the warning.

    Returns
    -------
    bool
        Whether it warned.
    """
    if not cost or not cost.get("stale"):
        return False
    centre, diff = float(cost["centre_mas"]), float(cost["differential_mas"])
    with _STATE.lock:
        said = _STATE.stated
        if said is not None and centre <= 2 * said[0] and diff <= 2 * said[1]:
            return False
        _STATE.stated = (max(centre, said[0] if said else 0.0), max(diff, said[1] if said else 0.0))
    warnings.warn(cost_message(cost), EarthOrientationWarning, stacklevel=stacklevel)
    return True


def cost_message(cost: dict) -> str:
    """The sentence that states an exposure's Earth-orientation cost (see :func:`state_cost`).

    Parameters
    ----------
    cost : dict
        The dictionary of :func:`astrocal.sky.astrometry.orientation_cost`.

    Returns
    -------
    str
        The message.
    """
    status = cost["status"]
    when = cost["time"][:10]
    if status == "observed":
        what = "measured values"
    elif status == "predicted":
        what = f"predictions {cost['lead_days']:.0f} days beyond the last measured value"
    else:
        what = f"no values ({status}, {cost['lead_days']:.0f} days from the last measured value)"
    text = (f"Earth orientation for exposures of {when}: the table {_describe_table()} gives {what}: "
            f"UT1-UTC 1-sigma {cost['sigma_ut1_s'] * 1e3:.3g} ms, polar motion {cost['sigma_pm_mas']:.3g} mas. "
            f"Cost: {cost['centre_mas']:.3g} mas on the apparent position of the field centre (absorbed by "
            f"each exposure's pointing), {cost['differential_mas']:.3g} mas differential over the "
            f"{cost['field_radius_arcsec']:.3g}-arcsec field (refraction and field rotation)")
    if cost["differential_mas"] < 0.01:
        text += ": negligible for differential astrometry"
    leap = cost.get("leap_second")
    if leap:
        text += (f". The exposures lie after the leap-second table's expiry ({leap['expires']}): a leap "
                 f"second announced later would add up to {leap['centre_mas']:.3g} mas at the centre and "
                 f"{leap['differential_mas']:.3g} mas differential")
    text += (". Give a current IERS file ([earth] iers_file, leap_second_file) or allow downloads "
             "([earth] allow_download = true) to remove it; the cost is recorded with the results.")
    return text
