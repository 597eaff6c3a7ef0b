"""astrocal's Earth-orientation and leap-second policy (astrocal.earth) and what a table's
age costs the apparent positions (astrocal.sky.astrometry.orientation_cost).

The costs are checked against physics computed independently of the chain: the Earth's
rotation rate for UT1-UTC, spherical trigonometry for the parallactic angle. Local IERS
and leap-second files are real files: slices of the ones astropy ships, and copies with a
changed expiry date. No network: sockets are refused and every attempt is recorded.
"""
from __future__ import annotations

import socket
import warnings
from pathlib import Path

import numpy as np
import pytest
import astropy.units as u
from astropy.coordinates import SkyCoord
from astropy.time import Time
from astropy.utils import iers

from astrocal import earth
from astrocal.campaign import CampaignError, load_campaign
from astrocal.sky.astrometry import apparent_positions, orientation_cost
from astrocal.sky.catalog import get_catalog
from astrocal.sky.sites import get_site

GC = (266.41681, -29.00784)
L_BAND = 3.8 * u.um
WEATHER = {"pressure_hpa": 712.0, "temperature_c": 8.0, "relative_humidity": 0.15}
#: Earth's rotation angle per second of UT1, arcsec (2 pi x 1.00273781191135448 / 86400 s)
ROTATION_ARCSEC_PER_S = 360 * 3600 * 1.00273781191135448 / 86400.0


@pytest.fixture(autouse=True)
def offline_and_restored(monkeypatch):
    """Sockets refused (attempts recorded in ``calls``); the default policy restored after."""
    calls = []

    def refused(*args, **kwargs):
        calls.append(args[:2])
        raise OSError("network disabled in tests")

    monkeypatch.setattr(socket.socket, "connect", refused)
    monkeypatch.setattr(socket, "getaddrinfo", refused)
    monkeypatch.setattr(socket, "create_connection", refused)
    yield calls
    earth.reset()


def _date_mjd(text):
    return float(Time(text, scale="utc").mjd)


def _finals_slice(path, first_date):
    """The bundled finals2000A.all from ``first_date`` on (as IERS publishes
    ``finals2000A.data``, which starts in 1992), predictions included."""
    mjd_first = int(_date_mjd(first_date))
    lines = [line for line in Path(iers.IERS_A_FILE).read_text().splitlines(keepends=True)
             if line[7:15].strip() and float(line[7:15]) >= mjd_first]
    path.write_text("".join(lines))
    return path


# =========================================================================== the policy
def test_default_policy_uses_the_bundled_tables(offline_and_restored):
    pol = earth.policy()
    assert pol.iers_file is None and pol.leap_second_file is None and not pol.allow_download
    prov = earth.provenance()
    assert prov["iers_table"]["source"].startswith("bundled with")
    assert Path(prov["iers_table"]["path"]).name == "finals2000A.all"
    assert len(prov["iers_table"]["sha256"]) == 64
    info = earth.table_info()
    assert info.first_mjd < info.last_observed_mjd < info.end_mjd  # measured values, then predictions
    assert prov["leap_seconds"]["expires"] == earth.leap_second_info().expires
    assert offline_and_restored == []


def test_positions_at_any_epoch_without_network(offline_and_restored):
    """Inside the measured values, in the predictions, years beyond the table and before it:
    positions come out, no exception, no download attempt."""
    info = earth.table_info()
    gc = get_catalog("galactic_center")
    epochs = {"observed": info.last_observed_mjd - 400, "predicted": info.last_observed_mjd + 100,
              "beyond the table": info.end_mjd + 3 * 365.25}
    warnings.filterwarnings("ignore", message=".*dubious year.*")
    for status, mjd in epochs.items():
        t = Time(np.floor(mjd) + 0.2, format="mjd", scale="utc")  # ~04:48 UTC: the GC is up in June
        # take the date whose 04:48 UTC has the GC high: shift to the same day of year as June 12
        day = Time(f"{t.datetime.year}-06-12T04:00:00", scale="utc")
        if status == "predicted" and not (info.last_observed_mjd < day.mjd <= info.end_mjd):
            day = Time(f"{t.datetime.year + 1}-06-12T04:00:00", scale="utc")
        if status == "observed" and day.mjd > info.last_observed_mjd:
            day = Time(f"{t.datetime.year - 1}-06-12T04:00:00", scale="utc")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fp = apparent_positions(gc, time=day, pointing=GC, wavelength=L_BAND, position_angle=0.0,
                                    weather=WEATHER)
        cost = fp.meta["earth_orientation"]
        assert cost["status"] == status, (day.isot, cost)
        assert np.all(np.isfinite(fp.x)) and np.all(np.isfinite(fp.y))
    assert offline_and_restored == []


def test_orientation_leaves_astropy_settings_as_they_were():
    before = (iers.conf.auto_download, iers.conf.auto_max_age, iers.conf.iers_degraded_accuracy,
              iers.earth_orientation_table.get())
    with earth.orientation() as table:
        assert iers.earth_orientation_table.get() is table
        assert iers.conf.auto_download is False and iers.conf.auto_max_age is None
    after = (iers.conf.auto_download, iers.conf.auto_max_age, iers.conf.iers_degraded_accuracy,
             iers.earth_orientation_table.get())
    assert after == before


def test_results_do_not_depend_on_the_clock():
    """The same exposure computed today and with the wall clock eight years ahead: identical."""
    time_machine = pytest.importorskip("time_machine")
    gc = get_catalog("galactic_center")
    kw = dict(time="2027-06-13T03:00:00", pointing=GC, wavelength=L_BAND, position_angle=30.0, weather=WEATHER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        today = apparent_positions(gc, **kw)
        with time_machine.travel("2035-01-01T00:00:00+00:00", tick=False):
            assert Time.now().jyear > 2034.9
            later = apparent_positions(gc, **kw)
    assert np.array_equal(today.x, later.x) and np.array_equal(today.y, later.y)
    assert today.meta["earth_orientation"] == later.meta["earth_orientation"]


# =========================================================================== uncertainty
def test_uncertainty_follows_the_table_and_grows_beyond_it():
    info = earth.table_info()
    obs = earth.uncertainty(Time(info.last_observed_mjd - 30, format="mjd", scale="utc"))
    pred = [earth.uncertainty(Time(info.last_observed_mjd + d, format="mjd", scale="utc")) for d in (30, 200)]
    beyond = [earth.uncertainty(Time(info.end_mjd + d, format="mjd", scale="utc")) for d in (30, 1000, 3000)]
    assert obs.status == "observed" and obs.lead_days == 0 and obs.sigma_ut1_s < 1e-4
    assert [p.status for p in pred] == ["predicted"] * 2
    assert [b.status for b in beyond] == ["beyond the table"] * 3
    s = [obs.sigma_ut1_s] + [p.sigma_ut1_s for p in pred] + [b.sigma_ut1_s for b in beyond]
    assert np.all(np.diff(s) > 0), s
    assert beyond[-1].sigma_ut1_s <= earth.MAX_UT1_ERROR_S
    assert earth.uncertainty("2200-01-01").sigma_ut1_s == earth.MAX_UT1_ERROR_S
    # the table's own prediction errors follow IERS Bulletin A's law (independent numbers)
    for p in pred:
        law = earth.BULLETIN_A_UT1[0] * p.lead_days ** earth.BULLETIN_A_UT1[1]
        assert 0.5 < p.sigma_ut1_s / law < 2.0
        law_pm = earth.BULLETIN_A_POLAR_MOTION[0] * p.lead_days ** earth.BULLETIN_A_POLAR_MOTION[1]
        assert 0.3 < p.sigma_pm_arcsec / law_pm < 3.0
    # beyond the table astropy takes the mean pole: the pole wanders by ~0.1-0.3 arcsec about it
    assert 0.05 < beyond[0].sigma_pm_arcsec < 0.4
    # after the leap-second table's expiry, it says so
    expiry = earth.leap_second_info().expires_mjd
    assert earth.uncertainty(Time(expiry + 10, format="mjd", scale="utc")).after_leap_second_expiry
    assert not earth.uncertainty(Time(expiry - 10, format="mjd", scale="utc")).after_leap_second_expiry


def _cost(time, **angle):
    site = get_site("armazones")
    from astrocal.sky.astrometry import resolve_weather

    w = resolve_weather(WEATHER, site)
    return orientation_cost(time, SkyCoord(*GC, unit="deg"), site, w, 3.8, field_radius_arcsec=10.0, **angle)


def test_ut1_cost_is_the_earth_rotation():
    """The UT1 term moves the field centre by the rotation angle x cos(dec)."""
    info = earth.table_info()
    t = Time(np.floor(info.last_observed_mjd) + 200, format="mjd", scale="utc")
    t = Time(f"{t.datetime.year}-06-12T04:00:00", scale="utc") if t.datetime.month < 6 else \
        Time(f"{t.datetime.year + 1}-06-12T04:00:00", scale="utc")
    cost = _cost(t, position_angle=0.0)
    expected = ROTATION_ARCSEC_PER_S * cost["sigma_ut1_s"] * np.cos(np.radians(GC[1])) * 1e3
    assert cost["terms"]["ut1"]["centre_mas"] == pytest.approx(expected, rel=0.01)
    # a polar-motion term moves the local vertical by sigma_pm: the centre by at most that
    for k in ("polar_motion_lat", "polar_motion_lon"):
        assert 0 < cost["terms"][k]["centre_mas"] <= cost["sigma_pm_mas"] * 1.01
    total = np.sqrt(sum(v["centre_mas"] ** 2 for v in cost["terms"].values()))
    assert cost["centre_mas"] == pytest.approx(total)


def test_rotator_cost_is_the_parallactic_angle_change():
    """With a rotator angle (the instrument tied to the vertical), a UT1 error turns the
    field by the change of the parallactic angle: the rim moves by r x dq. With a position
    angle (field-stabilised) that rotation cancels and only refraction is left."""
    t = Time("2027-06-13T02:00:00", scale="utc")
    site = get_site("armazones")
    cost = _cost(t, rotator_angle=0.0)
    s = cost["sigma_ut1_s"]
    with earth.orientation():
        lst = t.sidereal_time("apparent", longitude=site.longitude_deg * u.deg).rad
    ra, dec, phi = np.radians(GC[0]), np.radians(GC[1]), np.radians(site.latitude_deg)

    def q(h):
        return np.arctan2(np.sin(h), np.tan(phi) * np.cos(dec) - np.sin(dec) * np.cos(h))

    h = lst - ra
    dq = q(h + np.radians(ROTATION_ARCSEC_PER_S * s / 3600.0)) - q(h)
    expected = 10.0 * abs(dq) * 1e3  # r = 10 arcsec, mas
    assert cost["terms"]["ut1"]["differential_mas"] == pytest.approx(expected, rel=0.05)
    stabilised = _cost(t, position_angle=0.0)
    assert stabilised["terms"]["ut1"]["differential_mas"] < 0.01 * expected


# =========================================================================== the warning
def test_the_cost_is_stated_once_per_run():
    earth.reset()
    t = Time(earth.table_info().last_observed_mjd + 200, format="mjd", scale="utc")
    cost = {"stale": True, "status": "predicted", "time": t.isot, "lead_days": 200.0, "sigma_ut1_s": 0.015,
            "sigma_pm_mas": 15.0, "centre_mas": 200.0, "differential_mas": 1e-5, "field_radius_arcsec": 9.0,
            "leap_second": None}
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        assert earth.state_cost(cost)
        assert not earth.state_cost(cost)                      # once
        assert not earth.state_cost(dict(cost, centre_mas=350.0))
        assert earth.state_cost(dict(cost, centre_mas=900.0))  # much larger: said again
        assert not earth.state_cost(dict(cost, stale=False, centre_mas=1e4))
    said = [str(w.message) for w in rec if issubclass(w.category, earth.EarthOrientationWarning)]
    assert len(said) == 2
    assert "200 mas on the apparent position" in said[0] and "negligible for differential astrometry" in said[0]
    assert "finals2000A.all" in said[0] and "predictions 200 days" in said[0]


# =========================================================================== local files
def test_local_iers_a_file(tmp_path):
    path = _finals_slice(tmp_path / "finals2000A.data", "1992-01-01")
    earth.configure(iers_file=path)
    info = earth.table_info()
    assert info.kind.startswith("IERS-A") and info.source == "local file (earth.iers_file)"
    assert info.first_mjd == _date_mjd("1992-01-01") and Path(info.path) == path.resolve()
    assert earth.uncertainty("2021-06-01").status == "observed"
    early = earth.uncertainty("1990-06-01")
    assert early.status == "before the table" and early.lead_days > 500
    # inside its range, it gives the positions the bundled table gives (both hold the same
    # measured values, up to the IERS-B revision: well below a milliarcsecond)
    gc = get_catalog("galactic_center")
    kw = dict(time="2021-06-12T04:00:00", pointing=GC, wavelength=L_BAND, position_angle=0.0, weather=WEATHER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        local = apparent_positions(gc, **kw)
        earth.reset()
        bundled = apparent_positions(gc, **kw)
    assert np.max(np.hypot(local.x - bundled.x, local.y - bundled.y)) < 1e-6  # arcsec
    assert abs(local.azimuth_deg - bundled.azimuth_deg) * 3600e3 * np.cos(np.radians(local.altitude_deg)) < 2.0


def test_local_iers_b_file(tmp_path):
    src = Path(iers.IERS_B_FILE).read_text().splitlines(keepends=True)
    keep = [line for line in src if not line[:4].strip().isdigit() or int(line[:4]) <= 2020]
    path = tmp_path / "eopc04.txt"
    path.write_text("".join(keep))
    earth.configure(iers_file=path)
    info = earth.table_info()
    assert info.kind.startswith("IERS-B") and info.last_observed_mjd == info.end_mjd
    assert info.end_mjd == _date_mjd("2020-12-31")
    assert earth.uncertainty("2020-06-01").status == "observed"
    assert earth.uncertainty("2022-06-01").status == "beyond the table"


@pytest.mark.parametrize("what", ["missing", "directory", "not a table"])
def test_bad_iers_file_names_the_file_and_the_key(tmp_path, what):
    before = earth.policy()
    path = tmp_path / "finals.txt"
    if what == "directory":
        path.mkdir()
    elif what == "not a table":
        path.write_text("observatory notes\nUT1 is fine\n")
    with pytest.raises(earth.EarthOrientationError) as info:
        earth.configure(iers_file=path, key="campaign.toml: earth")
    message = str(info.value)
    assert str(path) in message and "campaign.toml: earth.iers_file" in message
    assert {"missing": "no such file", "directory": "not a file", "not a table": "not an IERS table"}[what] in message
    assert earth.policy() == before  # a refused file changes nothing


def test_bad_leap_second_file_names_the_file_and_the_key(tmp_path):
    path = tmp_path / "leap.dat"
    path.write_text("no leap seconds here\n")
    with pytest.raises(earth.EarthOrientationError, match=r"leap\.dat: not a leap-second table \(earth\.leap_second_file"):
        earth.configure(leap_second_file=path)
    with pytest.raises(earth.EarthOrientationError, match=r"nope\.dat: no such file \(earth\.leap_second_file\)"):
        earth.configure(leap_second_file=tmp_path / "nope.dat")


def _leap_file(path, expires):
    """The bundled Leap_Second.dat with another expiry date (``'28 December 2031'``)."""
    import re

    text = Path(iers.IERS_LEAP_SECOND_FILE).read_text()
    text, n = re.subn(r"File expires on\s+\d+\s+\w+\s+\d+", f"File expires on {expires}", text)
    assert n == 1
    path.write_text(text)
    return path


def test_local_leap_second_files_newer_and_expired(tmp_path):
    newer = _leap_file(tmp_path / "Leap_Second_newer.dat", "28 December 2031")
    earth.configure(leap_second_file=newer)
    info = earth.leap_second_info()
    assert info.expires == "2031-12-28" and info.source == "local file (earth.leap_second_file)"
    assert not earth.uncertainty("2030-06-01").after_leap_second_expiry
    # an expired table is used as it is: the cost of a missing leap second is stated, no failure
    old = _leap_file(tmp_path / "Leap_Second_old.dat", "28 June 2020")
    earth.configure(leap_second_file=old)
    assert earth.leap_second_info().expires == "2020-06-28"
    assert Time("2027-06-13T00:00:00", scale="utc").tai.iso.endswith("00:00:37.000")
    cost = _cost(Time("2021-06-13T04:00:00", scale="utc"), position_angle=0.0)
    assert cost["leap_second"]["expires"] == "2020-06-28"
    assert cost["leap_second"]["centre_mas"] == pytest.approx(ROTATION_ARCSEC_PER_S * np.cos(np.radians(GC[1]))
                                                              * 1e3, rel=0.01)
    earth.reset()
    assert earth.leap_second_info().expires == Time(
        iers.LeapSeconds.from_iers_leap_seconds(iers.IERS_LEAP_SECOND_FILE).expires).strftime("%Y-%m-%d")


def test_downloads_allowed_but_offline_fall_back_with_a_warning(offline_and_restored):
    with pytest.warns(earth.EarthOrientationWarning, match="could not be downloaded"):
        earth.configure(allow_download=True)
    assert earth.table_info().source.startswith("bundled with")
    assert offline_and_restored, "the download was allowed, so it was tried"
    # and positions still come out
    gc = get_catalog("galactic_center")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fp = apparent_positions(gc, time="2027-06-13T03:00:00", pointing=GC, wavelength=L_BAND,
                                position_angle=0.0, weather=WEATHER)
    assert len(fp) > 50


def test_campaign_earth_section(tmp_path):
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "gc_00.ecsv").touch()
    (tmp_path / "catalog.ecsv").touch()
    _finals_slice(tmp_path / "finals2000A.all", "2000-01-01")
    _leap_file(tmp_path / "Leap_Second.dat", "28 December 2031")
    text = """
[instrument]
name = "METIS IMG_LM"

[[sky]]
catalog = "catalog.ecsv"
filter = "Lp"
exposures = [ { file = "raw/gc_00.ecsv" } ]

[earth]
iers_file = "finals2000A.all"
leap_second_file = "Leap_Second.dat"
"""
    (tmp_path / "campaign.toml").write_text(text)
    c = load_campaign(tmp_path / "campaign.toml")
    assert c.earth.iers_file == (tmp_path / "finals2000A.all").resolve() and not c.earth.allow_download
    c.earth.apply(c.path)
    assert earth.table_info().first_mjd == _date_mjd("2000-01-01")
    assert earth.leap_second_info().expires == "2031-12-28"
    # no [earth]: the policy in effect is kept
    (tmp_path / "plain.toml").write_text(text.split("[earth]")[0])
    load_campaign(tmp_path / "plain.toml").earth.apply()
    assert earth.table_info().first_mjd == _date_mjd("2000-01-01")
    # a file that is not an IERS table: the error names it, the campaign and the key
    (tmp_path / "notes.txt").write_text("hello\n")
    (tmp_path / "bad.toml").write_text(text.replace('"finals2000A.all"', '"notes.txt"'))
    bad = load_campaign(tmp_path / "bad.toml")
    with pytest.raises(earth.EarthOrientationError) as info:
        bad.earth.apply(bad.path)
    assert "notes.txt: not an IERS table" in str(info.value) and "bad.toml: earth.iers_file" in str(info.value)
    (tmp_path / "worse.toml").write_text(text.replace("leap_second_file", "allow_download = 1\n#"))
    with pytest.raises(CampaignError, match=r"key 'earth.allow_download': expected true or false"):
        load_campaign(tmp_path / "worse.toml")
