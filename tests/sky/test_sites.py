"""Tests of the observatory sites (astrocal.sky.sites): the table shipped with astrocal and
its provenance, look-up by name and alias, positions given as numbers, the standard
atmosphere, and what a site changes in the refraction. No network."""
from __future__ import annotations

import fnmatch
import json
import logging
import tomllib
from pathlib import Path

import pytest
import astropy.units as u
from astropy.coordinates import AltAz, EarthLocation, SkyCoord
from astropy.table import Table
from astropy.time import Time

from astrocal.sky.astrometry import apparent_positions
from astrocal.sky.catalog import catalog_from_arrays
from astrocal.sky.sites import (
    HEIGHT_RANGE, SITES, STANDARD_ATMOSPHERE, SiteError, UnknownSiteError, custom_site, get_site,
    load_sites, site_names, standard_pressure_hpa, standard_temperature_c,
)

ROOT = Path(__file__).resolve().parents[2]
TABLE = ROOT / "src" / "astrocal" / "data" / "sites.ecsv"
#: the astropy-data registry the positions are copied from
ASTROPY_DATA = "astropy-data coordinates/sites.json"
ASTROPY_DATA_COMMIT = "0114fac2f3544396b77e3af7a8bdca22ebd07770"


pytestmark = pytest.mark.usefixtures("offline")  # tests/conftest.py


# --------------------------------------------------------------------------- the table
def test_every_site_has_provenance_and_valid_values():
    assert len(SITES) >= 13
    for name, s in SITES.items():
        assert name == s.name == name.lower().strip()
        assert -90 <= s.latitude_deg <= 90 and -180 < s.longitude_deg <= 180
        assert HEIGHT_RANGE[0] <= s.height_m <= HEIGHT_RANGE[1] and s.height_m > 1000  # mountain sites
        assert 500 < s.pressure_hpa < 1013.25 and -20 <= s.temperature_c <= 25
        assert 0 <= s.relative_humidity <= 1
        for what in ("position", "height", "pressure", "temperature", "humidity"):
            text = s.provenance.get(what, "")
            assert len(text) > 20, f"{name}: no provenance for its {what}"
        assert s.provenance["table"] == "astrocal/data/sites.ecsv"
        # positions: the astropy-data registry at a stated commit, or another cited source
        pos = s.provenance["position"]
        assert (ASTROPY_DATA in pos and ASTROPY_DATA_COMMIT in pos) or "http" in pos or "Wikipedia" in pos
        # pressure: the standard atmosphere at the height (as stated), or a cited value
        p = s.provenance["pressure"]
        if p.startswith("ISA"):
            assert STANDARD_ATMOSPHERE in p
            assert s.pressure_hpa == pytest.approx(standard_pressure_hpa(s.height_m), abs=0.05)
        else:
            assert "http" in p or "IRDB" in p or "reference notes" in p
        # temperature, humidity: cited, or labelled as estimates with their reason
        for what in ("temperature", "humidity"):
            text = s.provenance[what]
            assert text.startswith("estimate: ") or "http" in text or "IRDB" in text or "reference notes" in text


def test_the_sites_of_the_issue_are_known_by_name_and_alias():
    expect = {
        "armazones": "armazones", "ELT": "armazones", "Paranal": "paranal", "VLT": "paranal",
        "La Silla": "la silla", "Las Campanas": "las campanas", "Magellan": "las campanas",
        "Mauna Kea": "keck", "keck": "keck", "KECK": "keck", "W. M. Keck Observatory": "keck",
        "w.m. keck observatory": "keck", "Subaru": "subaru", "Gemini North": "gemini north",
        "gemini_north": "gemini north", "IRTF": "irtf", "Mount Graham": "mount graham", "LBT": "mount graham",
        "Cerro Pachon": "cerro pachon", "Cerro Pachón": "cerro pachon", "Gemini South": "cerro pachon",
        "Rubin": "cerro pachon", "SOAR": "cerro pachon", "Roque de los Muchachos": "roque de los muchachos",
        "La Palma": "roque de los muchachos", "GTC": "roque de los muchachos",
        "Calar Alto": "calar alto", "CAHA": "calar alto", "Palomar": "palomar", "Hale Telescope": "palomar",
        "Kitt Peak": "kitt peak", "KPNO": "kitt peak", "Siding Spring": "siding spring", "AAT": "siding spring",
        "Sutherland": "sutherland", "SALT": "sutherland", "SAAO": "sutherland", "  cerro   tololo ": "cerro tololo",
    }
    for given, name in expect.items():
        assert get_site(given) is SITES[name], given
    # every alias of the table finds its site, and no name is claimed twice
    seen = {}
    for name, aliases in site_names().items():
        for text in (name,) + aliases:
            assert get_site(text) is SITES[name]
            assert get_site(text.upper()) is SITES[name]
            key = " ".join(text.lower().replace("_", " ").replace("-", " ").replace(".", " ").split())
            assert seen.setdefault(key, name) == name, f"{text!r} names {seen[key]} and {name}"


def test_positions_are_the_registry_values():
    """Spot checks against astropy-data's sites.json (commit 0114fac), longitudes east."""
    for name, (lat, lon_east, height) in {
        "paranal": (-24.62743941, -70.40498688, 2669), "keck": (19.828333333333333, 204.52166666666668, 4160),
        "subaru": (19.825555555555557, 204.5238888888889, 4139),
        "gemini north": (19.823801447222223, -155.4690467527778, 4213),
        "irtf": (19.826218316666665, -155.4719987888889, 4168),
        "cerro pachon": (-30.24074166666667, 289.2633166666667, 2750), "la silla": (-29.256666666666668, 289.27, 2347),
        "las campanas": (-29.003333333333334, 289.29833333333335, 2282),
        "roque de los muchachos": (28.758333333333333, 342.12, 2327), "calar alto": (37.22361111, 357.453889, 2168),
        "palomar": (33.356, 243.137, 1706), "kitt peak": (31.96333333333333, 248.4, 2120),
        "siding spring": (-31.27336111111111, 149.06119444444445, 1149), "sutherland": (-32.375823, 20.810808, 1798),
    }.items():
        s = SITES[name]
        assert s.latitude_deg == pytest.approx(lat, abs=1e-6)
        assert (s.longitude_deg - lon_east) % 360 == pytest.approx(0, abs=1e-6) or \
            (s.longitude_deg - lon_east) % 360 == pytest.approx(360, abs=1e-6)
        assert s.height_m == height
    # Mount Graham: the LBT's published position, not the registry's (270 m too low, 1.6 km east there)
    lbt = SITES["mount graham"]
    assert (lbt.latitude_deg, lbt.longitude_deg, lbt.height_m) == (32.70152, -109.889585, 3170.0)
    assert "not used" in lbt.provenance["position"] and "not used" in lbt.provenance["height"]


def test_armazones_is_unchanged():
    s = get_site()
    assert s is SITES["armazones"] is get_site("elt")
    assert (s.latitude_deg, s.longitude_deg, s.height_m) == (-24.589, -70.192, 3046.0)
    assert (s.pressure_hpa, s.temperature_c, s.relative_humidity) == (712.0, 8.0, 0.15)


def test_table_is_package_data():
    """A non-editable install ships the table: pyproject's package-data covers it."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = data["tool"]["setuptools"]["package-data"]["astrocal"]
    assert any(fnmatch.fnmatch("data/sites.ecsv", p) for p in patterns)
    assert TABLE.is_file() and load_sites(TABLE).keys() == SITES.keys()


def test_table_errors(tmp_path):
    t = Table.read(TABLE, format="ascii.ecsv")
    bad = t.copy()
    bad["humidity_source"][3] = ""
    bad.write(tmp_path / "a.ecsv", format="ascii.ecsv")
    with pytest.raises(ValueError, match=r"site 'las campanas' has no humidity_source"):
        load_sites(tmp_path / "a.ecsv")
    bad = t.copy()
    bad["latitude_deg"][0] = 95.0
    bad.write(tmp_path / "b.ecsv", format="ascii.ecsv")
    with pytest.raises(ValueError, match=r"site 'armazones': latitude_deg must be in -90..90 deg, got 95"):
        load_sites(tmp_path / "b.ecsv")
    bad = t.copy()
    bad.remove_column("notes")
    bad.write(tmp_path / "c.ecsv", format="ascii.ecsv")
    with pytest.raises(ValueError, match="without column"):
        load_sites(tmp_path / "c.ecsv")


# --------------------------------------------------------------------------- look-up errors
def test_unknown_site_lists_the_names_and_suggests():
    with pytest.raises(UnknownSiteError) as info:
        get_site("mauna kee")
    text = str(info.value)
    assert isinstance(info.value, KeyError)
    assert text.startswith("unknown site 'mauna kee' (did you mean 'mauna kea' (keck)?); known sites: armazones, "
                           "calar alto, cerro pachon")
    assert "'vlt'" in text and "site_names()" in text and text.endswith("latitude_deg, longitude_deg, height_m")
    with pytest.raises(KeyError, match=r"unknown site 'mars'; known sites"):
        get_site("mars")
    with pytest.raises(TypeError, match="site must be a name"):
        get_site(42)


# --------------------------------------------------------------------------- given positions
def test_standard_atmosphere():
    # the ICAO standard atmosphere's table (geopotential heights): 1013.25, 898.7, 795.0, 701.1, 616.4, 540.2 hPa
    for h, p in ((0, 1013.25), (1000, 898.7), (2000, 795.0), (3000, 701.1), (4000, 616.4), (5000, 540.2)):
        assert standard_pressure_hpa(h) == pytest.approx(p, abs=0.15)
    assert standard_pressure_hpa(4145) == pytest.approx(604.8, abs=0.1)
    assert standard_temperature_c(4145) == pytest.approx(-11.9, abs=0.05)


def test_custom_site_from_numbers_mapping_and_earthlocation():
    s = get_site({"latitude_deg": 19.8, "longitude_deg": 204.5, "height_m": 4145, "name": "mk"})
    assert (s.name, s.latitude_deg, s.longitude_deg, s.height_m) == ("mk", 19.8, -155.5, 4145.0)
    assert s.pressure_hpa == pytest.approx(604.8) and s.temperature_c == pytest.approx(-11.9)
    assert s.relative_humidity == 0.0
    assert s.provenance["position"] == "given" and s.provenance["pressure"].startswith("default: ISA")
    assert s.location.height.to_value(u.m) == pytest.approx(4145.0)
    w = get_site({"latitude_deg": 19.8, "longitude_deg": -155.5, "height_m": 4145, "pressure_hpa": 615.0,
                  "temperature_c": 1.0, "relative_humidity": 0.2})
    assert (w.name, w.pressure_hpa, w.temperature_c, w.relative_humidity) == ("custom", 615.0, 1.0, 0.2)
    assert w.default_weather().source == "site defaults (custom)"
    e = get_site(EarthLocation.from_geodetic(lon=-155.5 * u.deg, lat=19.8 * u.deg, height=4145 * u.m))
    assert e.latitude_deg == pytest.approx(19.8) and e.longitude_deg == pytest.approx(-155.5)
    assert e.provenance["position"] == "an EarthLocation" and e.pressure_hpa == pytest.approx(604.8)
    # a known site with its typical weather replaced
    k = get_site({"name": "Keck", "pressure_hpa": 615.0})
    assert k.name == "keck" and k.pressure_hpa == 615.0 and k.provenance["pressure"] == "given"
    assert k.temperature_c == SITES["keck"].temperature_c and SITES["keck"].pressure_hpa != 615.0
    assert get_site(s) is s and s.as_dict()["typical_weather"]["pressure_hpa"] == pytest.approx(604.8)


@pytest.mark.parametrize("mapping, key, message", [
    ({"latitude_deg": 95.0, "longitude_deg": 0.0, "height_m": 100.0}, "latitude_deg", r"-90..90 deg, got 95"),
    ({"latitude_deg": 10.0, "longitude_deg": -190.0, "height_m": 100.0}, "longitude_deg", r"-180..360 deg"),
    ({"latitude_deg": 10.0, "longitude_deg": 361.0, "height_m": 100.0}, "longitude_deg", r"-180..360 deg"),
    ({"latitude_deg": 10.0, "longitude_deg": 0.0, "height_m": 7000.0}, "height_m", r"-500..6000 m, got 7000"),
    ({"latitude_deg": 10.0, "longitude_deg": 0.0}, "height_m", r"height_m is missing"),
    ({"latitude_deg": "north", "longitude_deg": 0.0, "height_m": 1.0}, "latitude_deg", r"must be a number"),
    ({"latitude_deg": 10.0, "longitude_deg": 0.0, "height_m": 1.0, "pressure_hpa": -3}, "pressure_hpa",
     r"pressure_hpa must be in 0..1200"),
    ({"latitude_deg": 10.0, "longitude_deg": 0.0, "height_m": 1.0, "relative_humidity": 15}, "relative_humidity",
     r"per cent"),
    ({"lat": 10.0}, "lat", r"unknown key 'lat'"),
    ({"pressure_hpa": 600.0}, "latitude_deg", r"give a known site's name or a position"),
])
def test_bad_positions_name_the_key(mapping, key, message):
    with pytest.raises(SiteError, match=message) as info:
        get_site(mapping)
    assert info.value.key == key


# --------------------------------------------------------------------------- refraction
def _refraction(site, t, z_deg=45.0, wl=3.8 * u.um):
    """Total refraction (arcsec) at the zenith distance z_deg in the site's typical weather, and
    the compression (mas) of a 10" vertical baseline, through apparent_positions."""
    w = site.default_weather()
    frame = AltAz(obstime=t, location=site.location, pressure=w.pressure_hpa * u.hPa,
                  temperature=w.temperature_c * u.deg_C, relative_humidity=w.relative_humidity, obswl=wl)
    d = 5.0 / 3600
    obs = SkyCoord(az=[150.0] * 3 * u.deg, alt=[90 - z_deg, 90 - z_deg - d, 90 - z_deg + d] * u.deg, frame=frame)
    icrs = obs.transform_to("icrs")
    cat = catalog_from_arrays(name=["c", "low", "high"], ra=icrs.ra.deg, dec=icrs.dec.deg, epoch=t.tt.jyear,
                              ra_err=0.0, dec_err=0.0)
    kw = dict(time=t, pointing=icrs[0], wavelength=wl, site=site, weather=None, rotator_angle=0.0)
    on = apparent_positions(cat, **kw)
    off = apparent_positions(cat, refraction=False, **kw)
    assert on.site is site and on.weather.pressure_hpa == site.pressure_hpa
    total = (off.zenith_distance_deg - on.zenith_distance_deg) * 3600
    dv = ((on.v[2] - on.v[1]) - (off.v[2] - off.v[1])) * 1e3
    return total, dv


def test_refraction_at_mauna_kea_differs_from_armazones_as_expected(caplog):
    t = Time("2026-05-01T04:00:00", scale="utc")
    arm = get_site("armazones")
    mk = get_site({"name": "mauna kea (given)", "latitude_deg": 19.8, "longitude_deg": -155.5, "height_m": 4145})
    keck = get_site("keck")
    with caplog.at_level(logging.WARNING, logger="astrocal.sky.astrometry"):
        r_arm, dv_arm = _refraction(arm, t)
        r_mk, dv_mk = _refraction(mk, t)
        r_keck, dv_keck = _refraction(keck, t)
    assert "using the keck site defaults" in caplog.text  # no weather given: the site's, said in the log
    # the standard atmosphere at 4145 m: 604.8 hPa (Mauna Kea: "usually 600-610 millibars")
    assert 600 <= mk.pressure_hpa <= 610 and 600 <= keck.pressure_hpa <= 610
    # refraction scales as the air density, P / T, at the same zenith distance and wavelength
    density = lambda s: s.pressure_hpa / (s.temperature_c + 273.15)
    print(f"\nrefraction at z = 45 deg, 3.8 um: armazones {r_arm:.3f}\" ({dv_arm:+.3f} mas over 10\"), "
          f"keck {r_keck:.3f}\" ({dv_keck:+.3f} mas), given Mauna Kea position {r_mk:.3f}\" ({dv_mk:+.3f} mas)")
    for r, dv, s in ((r_mk, dv_mk, mk), (r_keck, dv_keck, keck)):
        assert r / r_arm == pytest.approx(density(s) / density(arm), rel=0.005)
        assert dv / dv_arm == pytest.approx(density(s) / density(arm), rel=0.01)
    # less air above Mauna Kea: 13 % less refraction than at Armazones with Keck's typical weather
    # (604 hPa, 0 C), 8 % less with the standard atmosphere's (605 hPa, -11.9 C: colder, denser air)
    assert 0.85 < r_keck / r_arm < 0.90 and 0.89 < r_mk / r_arm < 0.94


# --------------------------------------------------------------------------- docs
def test_docs_list_every_site():
    """docs/sky_astrometry.md's table of sites says what the shipped table holds."""
    import re

    page = (ROOT / "docs" / "sky_astrometry.md").read_text().replace("\u2212", "-")
    for name, s in SITES.items():
        rows = [line for line in page.splitlines() if line.startswith(f"| `{name}`")]
        assert len(rows) == 1, f"docs/sky_astrometry.md does not list the site {name!r}"
        lat, lon, height = map(float, re.search(r"\| (-?[\d.]+), (-?[\d.]+), (\d+) \|", rows[0]).groups())
        assert (lat, lon, height) == (pytest.approx(s.latitude_deg, abs=6e-5), pytest.approx(s.longitude_deg, abs=6e-5),
                                      s.height_m), name
        p, t, h = re.search(r"\| ([\d.]+) hPa[^|]*?, (-?[\d.]+) °C[^|]*?, ([\d.]+)", rows[0]).groups()
        assert (float(p), float(t), float(h)) == (s.pressure_hpa, s.temperature_c, s.relative_humidity), name
        assert ("*" in rows[0].split("|")[4]) == ("estimate" in s.provenance["temperature"]
                                                   + s.provenance["humidity"]), name


def test_measure_keeps_a_given_site():
    """The measure stage's exposure setup carries the site object (a given position survives)
    and takes its typical weather when none is given."""
    from astrocal.sky.exposure import resolve_exposure

    mk = custom_site(19.8, -155.5, 4145.0, name="mk", temperature_c=0.0)
    s = resolve_exposure({"time": "2026-05-01T04:00:00", "ra": 10.0, "dec": 20.0, "wavelength_um": 3.8},
                         site=mk, source="x")
    assert s.site is mk
    assert s.weather == {"pressure_hpa": pytest.approx(604.8), "temperature_c": 0.0, "relative_humidity": 0.0}
    assert s.sources["weather"]["pressure_hpa"] == "default: typical value of site mk"
    assert json.dumps(s.site.as_dict())  # plain values for the table's meta


def test_a_given_site_reaches_the_fit(tmp_path):
    """A point-level sky campaign whose site is given as numbers (Armazones' position and
    weather, so the simulated tables still fit): the fit uses it and fit.json records it."""
    from astrocal.cli import main
    from astrocal.sim.sky_points import write_sky_points_campaign

    path, _, _ = write_sky_points_campaign(tmp_path, "gc", seed=3, n_exposures=3, fit_degree=3)
    text = path.read_text()
    assert 'site = "armazones"' in text
    path.write_text(text.replace('site = "armazones"', 'site = { name = "elt-given", latitude_deg = -24.589, '
                                                       'longitude_deg = -70.192, height_m = 3046, '
                                                       'pressure_hpa = 712, temperature_c = 8, humidity = 0.15 }'))
    assert main(["-q", "fit", str(path), "--steps", "60", "--walkers", "8"]) == 0
    info = json.loads((tmp_path / "out" / "Lp" / "fit.json").read_text())
    (sky,) = [d for d in info["datasets"] if d["kind"] == "sky"]
    site = sky["site"]
    assert site["name"] == "elt-given" and site["height_m"] == 3046.0
    assert (site["latitude_deg"], site["longitude_deg"]) == (-24.589, -70.192)
    assert site["typical_weather"] == {"pressure_hpa": 712.0, "temperature_c": 8.0, "relative_humidity": 0.15}
    assert site["provenance"]["position"] == "campaign campaign.toml"
