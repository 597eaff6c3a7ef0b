"""Tests of epoch propagation and of the catalogue -> focal-plane chain.

The reference computations are done here independently with astropy (SkyCoord ->
AltAz -> SkyOffsetFrame; the parallactic angle from an AltAz point toward the zenith
transformed back to ICRS). No network: IERS auto-download is off and sockets are blocked;
exposure times lie within the IERS table shipped with astropy.
"""
from __future__ import annotations

import logging
import time as _time
import warnings

import numpy as np
import pytest
import astropy.units as u
from astropy.coordinates import AltAz, SkyCoord
from astropy.time import Time

from astrocal.sky.astrometry import (
    AstrometryError, EpochGapWarning, apparent_positions, apparent_positions_many, parse_time, propagate,
    resolve_weather,
)
from astrocal.sky.projection import gnomonic, inverse_gnomonic
from astrocal.sky.catalog import catalog_from_arrays, get_catalog
from astrocal.sky.sites import SITES, Weather, WeatherError, get_site

ARCSEC = 180 / np.pi * 3600
T_EXP = Time("2026-05-01T04:00:00", scale="utc")  # GC at zenith distance ~51 deg from Armazones
WEATHER = {"pressure_hpa": 712.0, "temperature_c": 8.0, "relative_humidity": 0.15}
L_BAND = 3.8 * u.um


pytestmark = pytest.mark.usefixtures("offline")  # tests/conftest.py


@pytest.fixture(scope="module")
def gc():
    return get_catalog("galactic_center")


def _frame(t, weather=WEATHER, wl=L_BAND, site="armazones"):
    return AltAz(obstime=t, location=get_site(site).location, pressure=weather["pressure_hpa"] * u.hPa,
                 temperature=weather["temperature_c"] * u.deg_C,
                 relative_humidity=weather["relative_humidity"], obswl=wl)


def _direct_astropy(ra, dec, pointing, t, position_angle, parity=1):
    """Instrument-frame positions computed independently with astropy frames."""
    frame = _frame(t)
    stars = SkyCoord(ra * u.deg, dec * u.deg).transform_to(frame)
    centre = pointing.transform_to(frame)
    off = stars.transform_to(centre.skyoffset_frame())
    lon, lat = off.lon.wrap_at(180 * u.deg).rad, off.lat.rad
    uu, vv = np.tan(lon), np.tan(lat) / np.cos(lon)          # gnomonic from the offset frame
    # parallactic angle: a point 0.1" toward the zenith, back to ICRS, PA from the centre
    up = SkyCoord(az=centre.az, alt=centre.alt + 0.1 * u.arcsec, frame=frame).transform_to("icrs")
    back = centre.transform_to("icrs")
    o = up.transform_to(back.skyoffset_frame())
    q = np.degrees(np.arctan2(o.lon.wrap_at(180 * u.deg).rad, o.lat.rad))
    r = np.radians(position_angle - q)
    x = parity * (np.cos(r) * uu + np.sin(r) * vv) * ARCSEC
    y = (-np.sin(r) * uu + np.cos(r) * vv) * ARCSEC
    return x, y, q, 90 - centre.alt.deg


# --------------------------------------------------------------------------- helpers
def test_gnomonic_round_trip():
    rng = np.random.default_rng(1)
    lon0, lat0 = 1.2, -0.5
    xi, eta = rng.uniform(-1e-3, 1e-3, (2, 100))
    lon, lat = inverse_gnomonic(xi, eta, lon0, lat0)
    xi2, eta2 = gnomonic(lon, lat, lon0, lat0)
    np.testing.assert_allclose(xi2, xi, atol=1e-16)
    np.testing.assert_allclose(eta2, eta, atol=1e-16)
    assert np.isnan(gnomonic(lon0 + np.pi, lat0, lon0, lat0)[0])


def test_parse_time():
    assert parse_time("2030-05-04T02:30:00").isot == "2030-05-04T02:30:00.000"
    assert parse_time("J2030.5").jyear == pytest.approx(2030.5)
    assert parse_time(2030.5).jyear == pytest.approx(2030.5)
    for bad in ("tomorrow night", "2030-13-45", 61529.104, None, ""):
        with pytest.raises(AstrometryError, match="time|epoch"):
            parse_time(bad, "exposure time")


# --------------------------------------------------------------------------- propagation
def test_gc_propagation_over_10_years_is_pm_times_t(gc):
    """In the Sgr A* frame, the offsets move by the relative proper motion x time."""
    t1, t2 = 2027.0, 2037.0
    a, b = propagate(gc, t1), propagate(gc, t2)
    has = gc.has_pm
    ref = gc.reference
    worst = 0.0
    for prop, t in ((a, t1), (b, t2)):
        ra0, dec0 = ref.position_at([t])
        xi, eta = gnomonic(np.radians(prop.ra), np.radians(prop.dec), np.radians(ra0[0]), np.radians(dec0[0]))
        dt = t - gc.epoch
        x_exp = np.asarray(gc.table["x_east"]) + np.where(has, gc.pmra, 0) * dt / 1e3
        y_exp = np.asarray(gc.table["y_north"]) + np.where(has, gc.pmdec, 0) * dt / 1e3
        worst = max(worst, np.max(np.hypot(xi * ARCSEC - x_exp, eta * ARCSEC - y_exp)))
    print(f"\nGC offsets after propagation vs offset + pm*dt: max {worst * 1e6:.2e} uas")
    assert worst < 1e-6
    # the 10-year displacement in the Sgr A* frame is the relative proper motion x 10 yr
    ra_a, dec_a = ref.position_at([t1])
    ra_b, dec_b = ref.position_at([t2])
    xa, ya = gnomonic(np.radians(a.ra), np.radians(a.dec), np.radians(ra_a[0]), np.radians(dec_a[0]))
    xb, yb = gnomonic(np.radians(b.ra), np.radians(b.dec), np.radians(ra_b[0]), np.radians(dec_b[0]))
    np.testing.assert_allclose(((xb - xa) * ARCSEC * 1e3)[has], 10 * gc.pmra[has], atol=1e-3)
    np.testing.assert_allclose(((yb - ya) * ARCSEC * 1e3)[has], 10 * gc.pmdec[has], atol=1e-3)
    # Sgr A* itself moved by its own proper motion (6.4 mas/yr)
    moved = SkyCoord(ra_a[0] * u.deg, dec_a[0] * u.deg).separation(SkyCoord(ra_b[0] * u.deg, dec_b[0] * u.deg))
    assert moved.to_value(u.mas) == pytest.approx(10 * np.hypot(ref.pmra, ref.pmdec), rel=1e-6)


def test_absolute_propagation_matches_pm_times_t():
    """Gaia stars (apply_space_motion): 10-year displacement in the tangent plane = pm x 10 yr."""
    tuc = get_catalog("gaia_47tuc")
    sub = tuc.select(slice(0, 500))
    a, b = propagate(sub, 2026.0), propagate(sub, 2036.0)
    xi, eta = gnomonic(np.radians(b.ra), np.radians(b.dec), np.radians(a.ra), np.radians(a.dec))
    diff = np.hypot(xi * ARCSEC * 1e3 - 10 * sub.pmra, eta * ARCSEC * 1e3 - 10 * sub.pmdec)
    print(f"\nGaia 47 Tuc, 10 yr: |displacement - pm*10yr| max {diff.max() * 1e3:.2e} uas")
    assert diff.max() < 1e-3  # mas, i.e. 1 uas
    # at the catalogue epoch nothing moves
    c = propagate(sub, Time(2016.0, format="jyear", scale="tt"))
    np.testing.assert_allclose(c.ra, np.asarray(sub.table["ra"]), rtol=0, atol=1e-12)


def test_errors_grow_as_stated(gc):
    t = 2031.0
    prop = propagate(gc, t)
    dt = t - gc.epoch
    has = gc.has_pm
    expect = 1.0**2 + (dt * 0.1) ** 2  # ASSUMED 1 mas and 0.1 mas/yr per axis
    np.testing.assert_allclose(prop.cov[has, 0, 0], expect[has], rtol=1e-12)
    np.testing.assert_allclose(prop.cov[has, 1, 1], expect[has], rtol=1e-12)
    np.testing.assert_array_equal(prop.cov[:, 0, 1], 0.0)
    # stars without proper motion: inflated by dt x 4 mas/yr (the catalogue's dispersion)
    np.testing.assert_allclose(prop.cov[~has, 0, 0], 1.0 + (dt[~has] * 4.0) ** 2, rtol=1e-12)
    assert list(prop.inflated) == list(~has)
    i = list(gc.names).index("b100")
    assert prop.sigma_mas[i, 0] == pytest.approx(np.hypot(1.0, 25.7 * 4.0), rel=1e-3)


def test_missing_proper_motion_policies(gc):
    with pytest.warns(EpochGapWarning, match=r"2 star\(s\) without proper motion.*b100.*errors inflated"):
        propagate(gc, 2030.0)
    with pytest.raises(AstrometryError, match=r"b100 \(24.7 yr\).*positions at 2030.000 are unknown"):
        propagate(gc, 2030.0, missing_pm="refuse")
    with pytest.warns(EpochGapWarning, match="kept FIXED"):
        p = propagate(gc, 2030.0, missing_pm="ignore")
    assert not p.inflated.any()
    with pytest.warns(EpochGapWarning):
        p = propagate(gc, 2030.0, pm_dispersion=10.0)
    i = list(gc.names).index("S17-1")
    assert p.sigma_mas[i, 0] == pytest.approx(np.hypot(1.0, (2030.0 - 2008.384) * 10.0))
    # a catalogue without any proper motion and without a stated dispersion: refused, with the reason
    cat = catalog_from_arrays(name=["a", "b"], ra=[10.0, 10.001], dec=[-30.0, -30.0], epoch=2006.0,
                              ra_err=1.0, dec_err=1.0)
    with pytest.raises(AstrometryError, match=r"no proper-motion dispersion.*pm_dispersion="):
        propagate(cat, 2030.0)
    # a short gap (hours) needs no proper motion
    propagate(cat, Time("2006-01-01T03:00:00", scale="tt"))
    with pytest.raises(AstrometryError, match="missing_pm"):
        propagate(gc, 2030.0, missing_pm="guess")


def test_missing_proper_motion_warning_names_the_catalogue_kind(gc):
    """The warning says where a star without proper motion stays in the catalogue's own
    kind: an absolute (Gaia-like ra/dec) catalogue's at its catalogue position, with no word
    of offsets; an offsets catalogue's (the GC list) at its offset from the named reference."""
    gaia = catalog_from_arrays(name=["a", "b", "c"], ra=[10.0, 10.001, 10.002], dec=[-30.0, -30.0, -30.001],
                               epoch=2016.0, pmra=[1.0, np.nan, np.nan], pmdec=[-2.0, np.nan, np.nan],
                               ra_err=0.3, dec_err=0.3, pmra_err=0.05, pmdec_err=0.05,
                               meta={"pm_dispersion_mas_yr": 4.0})
    with pytest.warns(EpochGapWarning) as rec:
        propagate(gaia, 2019.5)
    text = " ".join(str(w.message) for w in rec)
    assert "2 star(s) without proper motion across an epoch gap of up to 3.5 yr" in text
    assert "kept at their catalogue positions" in text and "errors inflated by dt x 4 mas/yr" in text
    assert "offset" not in text and "reference" not in text
    with pytest.warns(EpochGapWarning) as rec:
        propagate(gc, 2030.0)
    text = " ".join(str(w.message) for w in rec)
    assert f"kept at their offsets from the reference {gc.reference.name}, which moves with its own proper " \
           "motion" in text
    assert "catalogue positions" not in text


# --------------------------------------------------------------------------- projection
@pytest.mark.parametrize("parity", [1, -1])
@pytest.mark.parametrize("position_angle", [0.0, 37.5, -120.0])
def test_projection_agrees_with_direct_astropy(gc, parity, position_angle):
    pointing = SkyCoord(gc.reference.ra_deg * u.deg + 2 * u.arcsec, gc.reference.dec_deg * u.deg - 3 * u.arcsec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EpochGapWarning)
        fp = apparent_positions(gc, time=T_EXP, pointing=pointing, wavelength=L_BAND, weather=WEATHER,
                                position_angle=position_angle, parity=parity)
        prop = propagate(gc, T_EXP)
    x, y, q, zd = _direct_astropy(prop.ra, prop.dec, pointing, T_EXP, position_angle, parity)
    diff_uas = np.hypot(fp.x - x, fp.y - y) * 1e6
    print(f"\nPA {position_angle:+.1f} parity {parity:+d}: {len(fp)} GC stars up to "
          f"{np.hypot(fp.x, fp.y).max():.1f}\" from the centre, z = {fp.zenith_distance_deg:.2f} deg: "
          f"max |ours - astropy| = {diff_uas.max():.2e} uas")
    assert diff_uas.max() < 1.0
    assert fp.parallactic_angle_deg == pytest.approx(q, abs=1e-7)
    assert fp.zenith_distance_deg == pytest.approx(zd, abs=1e-9)
    assert fp.rotator_angle_deg == pytest.approx((position_angle - q + 180) % 360 - 180, abs=1e-7)
    # the same exposure given by its rotator angle
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EpochGapWarning)
        fp2 = apparent_positions(gc, time=T_EXP, pointing=pointing, wavelength=L_BAND, weather=WEATHER,
                                 rotator_angle=fp.rotator_angle_deg, parity=parity)
    assert np.max(np.hypot(fp2.x - fp.x, fp2.y - fp.y)) < 1e-9
    assert fp2.position_angle_deg == pytest.approx(fp.position_angle_deg, abs=1e-9)


def test_projection_of_47tuc_field_agrees_with_direct_astropy():
    tuc = get_catalog("gaia_47tuc")
    c = tuc.meta["cut"]
    pointing = SkyCoord(c["center_ra_deg"] * u.deg, c["center_dec_deg"] * u.deg)
    field = tuc.within(pointing, 2 * u.arcmin)
    t = Time("2026-09-15T04:00:00")
    fp = apparent_positions(field, time=t, pointing=pointing, wavelength=2.2 * u.um, weather=WEATHER,
                            position_angle=10.0)
    prop = propagate(field, t)
    frame = _frame(t, wl=2.2 * u.um)
    stars = SkyCoord(prop.ra * u.deg, prop.dec * u.deg).transform_to(frame)
    centre = pointing.transform_to(frame)
    off = stars.transform_to(centre.skyoffset_frame())
    lon, lat = off.lon.wrap_at(180 * u.deg).rad, off.lat.rad
    uu, vv = np.tan(lon) * ARCSEC, np.tan(lat) / np.cos(lon) * ARCSEC
    diff = np.hypot(fp.u - uu, fp.v - vv) * 1e6
    print(f"\n47 Tuc: {len(fp)} stars within 2', z = {fp.zenith_distance_deg:.1f} deg: max |(u,v) - astropy| "
          f"= {diff.max():.2e} uas")
    assert diff.max() < 1.0


def test_axis_conventions(gc):
    """Parity +1 at PA 0: +y north, +x WEST; PA 90: +y east, +x north; parity -1 mirrors x."""
    c0 = SkyCoord(266.4168 * u.deg, -29.0078 * u.deg)
    # stars 1" east and 1" north of the centre, at the exposure epoch, no refraction
    lon, lat = inverse_gnomonic(np.radians([1 / 3600, 0]), np.radians([0, 1 / 3600]), np.radians(c0.ra.deg),
                                np.radians(c0.dec.deg))
    cat = catalog_from_arrays(name=["east", "north"], ra=np.degrees(lon), dec=np.degrees(lat),
                              epoch=T_EXP.tt.jyear, ra_err=[2.0, 2.0], dec_err=[1.0, 1.0])

    def xy(pa, parity=1):
        fp = apparent_positions(cat, time=T_EXP, pointing=c0, wavelength=L_BAND, weather=WEATHER,
                                refraction=False, position_angle=pa, parity=parity)
        return fp

    fp = xy(0.0)
    np.testing.assert_allclose(fp.xy, [[-1, 0], [0, 1]], atol=2e-3)  # aberration: ~1e-4 scale
    # covariance follows the axes: sigma_east = 2 mas along x, sigma_north = 1 mas along y
    np.testing.assert_allclose(np.sqrt(fp.cov[0].diagonal()) * 1e3, [2.0, 1.0], rtol=1e-3)
    fp = xy(90.0)
    np.testing.assert_allclose(fp.xy, [[0, 1], [1, 0]], atol=2e-3)
    np.testing.assert_allclose(np.sqrt(fp.cov[0].diagonal()) * 1e3, [1.0, 2.0], rtol=1e-3)
    fp = xy(0.0, parity=-1)
    np.testing.assert_allclose(fp.xy, [[1, 0], [0, 1]], atol=2e-3)
    # stars outside a field are found by position, and dropped explicitly
    assert list(fp.inside(0.5)) == [False, False] and list(fp.inside(0.5, 1.5)) == [False, True]
    assert list(fp.select(fp.inside(1.5)).names) == ["east", "north"]
    # telescope frame: v toward the zenith; the rotator angle is PA - q
    assert fp.rotator_angle_deg == pytest.approx(((0.0 - fp.parallactic_angle_deg) + 180) % 360 - 180)


def test_differential_refraction_L_band_45deg():
    """Compression of a 10" field at z = 45 deg, L band (3.8 um), Armazones typical weather."""
    t = T_EXP
    frame = _frame(t)
    d = 5.0 / 3600
    az0, alt0 = 150.0, 45.0
    # the centre and four stars 5" away along the vertical and the horizontal, placed in the observed frame
    obs = SkyCoord(az=[az0, az0, az0, az0 - d / np.cos(np.radians(alt0)), az0 + d / np.cos(np.radians(alt0))] * u.deg,
                   alt=[alt0, alt0 - d, alt0 + d, alt0, alt0] * u.deg, frame=frame)
    icrs = obs.transform_to("icrs")
    cat = catalog_from_arrays(name=["c", "low", "high", "left", "right"], ra=icrs.ra.deg, dec=icrs.dec.deg,
                              epoch=t.tt.jyear, ra_err=0.0, dec_err=0.0)
    kw = dict(time=t, pointing=icrs[0], wavelength=L_BAND, weather=WEATHER, rotator_angle=0.0)
    on = apparent_positions(cat, **kw)
    off = apparent_positions(cat, refraction=False, **kw)
    assert on.zenith_distance_deg == pytest.approx(45.0, abs=1e-6)
    dv = ((on.v[2] - on.v[1]) - (off.v[2] - off.v[1])) * 1e3  # mas
    du = ((on.u[4] - on.u[3]) - (off.u[4] - off.u[3])) * 1e3
    # classic estimate: R = (n-1) tan z, n - 1 = 77.6e-6 (1 + 7.52e-3 / lambda^2) P / T (P in hPa, T in K);
    # vertical scale 1 - (n-1) sec^2 z, horizontal scale 1 - (n-1)
    z = np.radians(on.zenith_distance_deg)
    n1 = 77.6e-6 * (1 + 7.52e-3 / 3.8**2) * WEATHER["pressure_hpa"] / (WEATHER["temperature_c"] + 273.15)
    sep_v, sep_u = off.v[2] - off.v[1], off.u[4] - off.u[3]
    classic_v = -n1 / np.cos(z) ** 2 * sep_v * 1e3
    classic_u = -n1 * sep_u * 1e3
    total = (off.zenith_distance_deg - on.zenith_distance_deg) * 3600
    print(f"\nrefraction at z = 45 deg, L band, {WEATHER}: total {total:.2f}\" "
          f"(classic (n-1) tan z = {n1 * ARCSEC:.2f}\")")
    print(f"differential over 10\": vertical {dv:+.3f} mas (classic {classic_v:+.3f}), horizontal {du:+.3f} mas "
          f"(classic {classic_u:+.3f}), anisotropic part {dv - du:+.3f} mas")
    assert -5.0 < dv < -3.0 and dv == pytest.approx(classic_v, rel=0.03)
    assert du == pytest.approx(classic_u, rel=0.03)
    assert total == pytest.approx(n1 * ARCSEC, rel=0.03)
    # shorter wavelengths refract more
    k = apparent_positions(cat, **{**kw, "wavelength": 2.2 * u.um})
    assert (k.v[2] - k.v[1]) < (on.v[2] - on.v[1])


# --------------------------------------------------------------------------- bad input
def test_missing_weather_uses_site_defaults_and_logs(caplog, gc):
    site = get_site()
    with caplog.at_level(logging.WARNING, logger="astrocal.sky.astrometry"):
        w = resolve_weather(None, site)
    assert (w.pressure_hpa, w.temperature_c, w.relative_humidity) == (712.0, 8.0, 0.15)
    assert "site defaults" in w.source
    assert "missing" in caplog.text and "712.0 hPa" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="astrocal.sky.astrometry"):
        w = resolve_weather({"pressure_hpa": 700.0}, site)
    assert w.pressure_hpa == 700.0 and w.temperature_c == 8.0 and "temperature_c" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="astrocal.sky.astrometry"):
        w = resolve_weather(WEATHER, site)
    assert caplog.text == "" and w.source == "given"
    with pytest.raises(WeatherError, match="fraction 0..1.*per cent"):
        resolve_weather({"relative_humidity": 15.0}, site)
    with pytest.raises(WeatherError, match="unknown keys"):
        resolve_weather({"humidity": 0.1}, site)
    assert resolve_weather(WEATHER, site, refraction=False).pressure_hpa == 0.0


def test_bad_exposure_input(gc):
    c0 = SkyCoord(gc.reference.ra_deg * u.deg, gc.reference.dec_deg * u.deg)
    kw = dict(pointing=c0, wavelength=L_BAND, weather=WEATHER, position_angle=0.0, missing_pm="ignore")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EpochGapWarning)
        with pytest.raises(AstrometryError, match="exposure time: cannot parse 'last night'"):
            apparent_positions(gc, time="last night", **kw)
        with pytest.raises(AstrometryError, match="below the horizon"):
            apparent_positions(gc, time="2026-05-01T18:00:00", **kw)
        with pytest.raises(AstrometryError, match="exactly one of position_angle"):
            apparent_positions(gc, time=T_EXP, **{**kw, "rotator_angle": 10.0})
        with pytest.raises(AstrometryError, match="wavelength is required"):
            apparent_positions(gc, time=T_EXP, **{**kw, "wavelength": None})
        with pytest.raises(AstrometryError, match="parity"):
            apparent_positions(gc, time=T_EXP, parity=0, **kw)
        with pytest.raises(KeyError, match="unknown site .*did you mean .mauna kea. \\(keck\\)"):
            apparent_positions(gc, time=T_EXP, site="mauna kee", **kw)
        prop = propagate(gc, 2020.0, missing_pm="ignore")
        with pytest.raises(AstrometryError, match="propagate it to the exposure time"):
            apparent_positions(prop, time=T_EXP, **kw)


def test_sites_table():
    s = SITES["armazones"]
    assert (s.latitude_deg, s.longitude_deg, s.height_m) == (-24.589, -70.192, 3046.0)
    assert (s.pressure_hpa, s.temperature_c, s.relative_humidity) == (712.0, 8.0, 0.15)
    assert get_site("ELT") is s and "eso.org" in s.provenance["height"]
    loc = s.location
    assert loc.lat.deg == pytest.approx(-24.589) and loc.height.to_value(u.m) == pytest.approx(3046.0)
    with pytest.raises(WeatherError, match="pressure"):
        Weather(-1.0, 8.0, 0.1)


def test_many_exposures_vectorised_speed():
    """2000 stars x 12 exposures over a night: plain loop over exposures, vectorised over stars."""
    rng = np.random.default_rng(3)
    n = 2000
    ra = 266.4168 + rng.uniform(-5, 5, n) / 3600 / np.cos(np.radians(29.0))
    dec = -29.0078 + rng.uniform(-5, 5, n) / 3600
    cat = catalog_from_arrays(ra=ra, dec=dec, epoch=2020.0, pmra=rng.normal(0, 4, n), pmdec=rng.normal(0, 4, n),
                              ra_err=0.5, dec_err=0.5, pmra_err=0.05, pmdec_err=0.05)
    times = Time("2026-05-01T04:00:00") + np.linspace(0, 4, 12) * u.hour
    exposures = [{"time": t, "rotator_angle": 0.0} for t in times]  # pupil tracking
    start = _time.perf_counter()
    out = apparent_positions_many(cat, exposures, pointing=(266.4168, -29.0078), wavelength=L_BAND,
                                  weather=WEATHER)
    elapsed = _time.perf_counter() - start
    zd = [fp.zenith_distance_deg for fp in out]
    pa = [fp.position_angle_deg for fp in out]
    print(f"\n{n} stars x {len(out)} exposures: {elapsed:.2f} s; z {min(zd):.1f}..{max(zd):.1f} deg, "
          f"PA {min(pa):.1f}..{max(pa):.1f} deg")
    assert len(out) == 12 and all(fp.cov.shape == (n, 2, 2) for fp in out)
    assert elapsed < 20
    assert isinstance(out[0].to_table()["x"].unit, u.UnitBase)
