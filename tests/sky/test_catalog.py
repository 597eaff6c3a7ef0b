"""Tests of the reference catalogues: shipped files, the Catalog type, validation, queries.

No test needs the network: the module blocks sockets, and the astroquery services are
replaced by fakes (monkeypatch) that return small tables.
"""
from __future__ import annotations

import socket
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import astropy.units as u
from astropy.coordinates import SkyCoord
from astropy.table import Table

from astrocal.sky.catalog import (
    Catalog, CatalogError, CatalogQueryError, CatalogWarning, SGR_A_STAR, catalog_from_arrays,
    catalog_path, get_catalog, list_catalogs, load_catalog, parse_epoch,
)
from astrocal.sky.catalog_builders import read_kai_photo_calib
from astrocal.sky.catalog_query import default_cache_dir, query_gaia, query_vizier

PROJECT = Path(__file__).resolve().parents[2]
SHIPPED = {"galactic_center": "galactic_center.ecsv", "gaia_47tuc": "gaia_dr3_47tuc.ecsv"}

# Rows copied from photo_calib.dat of the KAI pipeline (Keck-DataReductionPipelines/KAI,
# BSD-3-Clause, Copyright 2021 J.R. Lu, A. Gautam, T. Do): the header lines that matter and
# four stars, to test the reader without the original file.
KAI_SAMPLE = """\
## Columns: Format of this header is hardcoded for read in by calibrate.py
# 1 -- Star Name
# 2 -- X position (arcsec, increasing to the East)
# 3 -- Y position (arcsec)
# 4 -- X velocity (mas/yr)
# 5 -- Y velocity (mas/yr)
# 6 -- t0 (year)
# 7 -- Variable? flag
# 8 -- K band (Blum et al. 1996) -- 16C,16NW,16NE
# 9 -- K' band estimated from Keck data -- 16C,16NW,16NE
# 10 -- L' band (Wright et al. in prep) -- 16C,16NW,16NE
# 11 -- H band (Blum et al. 1996) -- 16C,16NW,16NE
# 12 -- Ms band (Hornstein et al. in prep) -- 16C,16NW
# 13 -- K band (Rafelski et al. calibrated from Blum et al. 1996) -- 16C,16NE
# 14 -- K' band (Abhimat 20170127) -- S3-22,S1-14
b100       8.583   9.937   0.000   0.000  2005.300   0      10.38   10.38   0.00   0.00   0.00   0.00   0.00
irs7       0.035   5.513  -0.145  -4.237  2009.552   1       0.00    7.40   0.00   0.00   0.00   0.00   0.00
16C        1.051   0.551  -8.990   7.796  2009.529   0       9.83    9.86   8.14  11.99   8.08   9.83   9.82
S17-1     17.932   0.865   0.000   0.000  2008.384   0       0.00   11.50   0.00   0.00   0.00   0.00   0.00
"""


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any attempt to open a connection or resolve a name fails loudly."""
    def blocked(*args, **kwargs):
        raise OSError("network access blocked in tests")

    monkeypatch.setattr(socket.socket, "connect", blocked)
    monkeypatch.setattr(socket, "getaddrinfo", blocked)
    monkeypatch.setattr(socket, "create_connection", blocked)


@pytest.fixture(scope="module")
def gc():
    return get_catalog("galactic_center")


@pytest.fixture(scope="module")
def tuc():
    return get_catalog("gaia_47tuc")


def _ecsv(tmp_path, table, name="cat.ecsv"):
    path = tmp_path / name
    table.write(path, format="ascii.ecsv", overwrite=True)
    return path


def _simple_table(n=3):
    t = Table()
    t["name"] = [f"s{i}" for i in range(n)]
    t["ra"] = np.linspace(10.0, 10.01, n) * u.deg
    t["dec"] = np.full(n, -30.0) * u.deg
    t["epoch"] = np.full(n, 2016.0)
    t["ra_err"] = np.full(n, 0.1) * u.mas
    t["dec_err"] = np.full(n, 0.1) * u.mas
    t["pmra"] = np.ones(n) * u.mas / u.yr
    t["pmdec"] = np.ones(n) * u.mas / u.yr
    t["pmra_err"] = np.full(n, 0.05) * u.mas / u.yr
    t["pmdec_err"] = np.full(n, 0.05) * u.mas / u.yr
    return t


# --------------------------------------------------------------------------- shipped files
def test_shipped_catalogues_listed_and_identical_to_project_copies():
    assert list_catalogs() == sorted(SHIPPED)
    for name, fname in SHIPPED.items():
        pkg = catalog_path(name)
        assert pkg.name == fname and pkg.is_file()
        copy = PROJECT / "catalogs" / fname
        assert copy.is_file(), f"{copy} missing"
        assert copy.read_bytes() == pkg.read_bytes(), f"{copy} differs from the package copy {pkg}"
        assert pkg.stat().st_size < 1_000_000


def test_galactic_center_content(gc):
    assert len(gc) == 107 and gc.kind == "offsets" and gc.name == "galactic_center"
    t = gc.table
    assert t["x_east"].unit == u.arcsec and t["pmra"].unit == u.mas / u.yr and t["epoch"].unit == u.yr
    # facts of the source rows (see KAI_SAMPLE)
    row = t[list(gc.names).index("16C")]
    assert (row["x_east"], row["y_north"], row["pmra"], row["pmdec"], row["epoch"]) == (1.051, 0.551, -8.99, 7.796, 2009.529)
    assert row["mag_Lp_wright"] == 8.14 and row["mag_Ms_hornstein"] == 8.08
    irs7 = t[list(gc.names).index("irs7")]
    assert irs7["variable"] and np.isnan(irs7["mag_K_blum96"]) and irs7["mag_Kp_keck"] == 7.4
    assert sorted(gc.names[~gc.has_pm]) == ["S17-1", "b100"]
    assert np.all(np.isnan(gc.pmra[~gc.has_pm]))
    assert gc.epoch.min() == 2005.3 and gc.epoch.max() < 2012
    assert set(gc.bands) == {"K_blum96", "Kp_keck", "Lp_wright", "H_blum96", "Ms_hornstein", "K_rafelski", "Kp_abhimat"}
    assert np.isfinite(gc.mag("Lp_wright")).sum() == 11
    with pytest.raises(KeyError, match="bands are"):
        gc.mag("V")
    # errors: assumed, and said so
    assert gc.meta["errors"]["status"].startswith("ASSUMED")
    np.testing.assert_array_equal(gc.position_cov()[:, 0, 0], 1.0)
    assert gc.meta["pm_dispersion_mas_yr"] == 4.0
    # provenance and licence
    prov = gc.meta["provenance"]
    assert "KAI" in prov["repository"] and "BSD-3-Clause" in prov["licence"] and len(prov["sha256"]) == 64
    assert "J.R. Lu, A. Gautam, T. Do" in gc.meta["licence_text"]
    assert "NEITHER THE NAME" in gc.meta["licence_text"].upper()


def test_galactic_center_reference_is_sgr_a_star(gc):
    ref = gc.reference
    assert ref == SGR_A_STAR
    # Gordon, de Witt & Jacobs 2023: 17h45m40.034047s -29d00m28.21601s at 2015.0
    c = SkyCoord("17h45m40.034047s", "-29d00m28.21601s")
    assert abs(ref.ra_deg - c.ra.deg) * 3.6e6 < 1e-3 and abs(ref.dec_deg - c.dec.deg) * 3.6e6 < 1e-3
    assert (ref.epoch, ref.pmra, ref.pmdec) == (2015.0, -3.128, -5.584)
    assert "Gordon" in ref.source


def test_offsets_point_east(gc):
    """x increases to the EAST: IRS 16C (x = +1.051", y = +0.551") has a larger RA than Sgr A*."""
    ab = gc.absolute()
    assert ab.kind == "absolute" and len(ab) == 107
    i = list(ab.names).index("16C")
    ra0, dec0 = gc.reference.position_at([gc.epoch[i]])
    dra = (ab.radec()[0][i] - ra0[0]) * 3600 * np.cos(np.radians(dec0[0]))
    ddec = (ab.radec()[1][i] - dec0[0]) * 3600
    assert dra == pytest.approx(1.051, abs=1e-5) and ddec == pytest.approx(0.551, abs=1e-5)
    # absolute proper motions = relative + Sgr A*'s; unmeasured ones stay NaN but move with Sgr A*
    assert ab.pmra[i] == pytest.approx(-8.99 - 3.128)
    assert not ab.has_pm[list(ab.names).index("b100")]
    sc = ab.skycoord()
    j = list(ab.names).index("b100")
    assert sc.pm_ra_cosdec[j].to_value(u.mas / u.yr) == pytest.approx(-3.128)


def test_gaia_47tuc_content(tuc):
    assert tuc.kind == "absolute" and 4000 < len(tuc) < 5000
    np.testing.assert_array_equal(tuc.epoch, 2016.0)
    cut = tuc.meta["cut"]
    assert cut["radius_arcmin"] == 8.0 and cut["rows_kept"] == len(tuc)
    sep = tuc.separation_from((cut["center_ra_deg"], cut["center_dec_deg"]))
    assert sep.max() <= 8.0 * 60 + 1e-6
    assert np.all(tuc.has_pm)
    assert tuc.meta["errors"]["status"].startswith("positions: ESTIMATED")
    np.testing.assert_allclose(tuc.table["ra_err"], np.round(0.8 * tuc.table["pmra_err"], 4), atol=1e-4)
    prov = tuc.meta["provenance"]
    assert prov["commit"] == "4d3c6a1a6467b4e8178eb4d0a81e4035ded2c588" and "CC BY-SA 3.0 IGO" in prov["licence"]
    assert set(tuc.bands) == {"G", "BP", "RP"}
    # median proper motion of the cluster (5.25, -2.53 mas/yr in the literature)
    assert np.median(tuc.pmra) == pytest.approx(5.2, abs=0.2) and np.median(tuc.pmdec) == pytest.approx(-2.5, abs=0.2)
    small = tuc.within((cut["center_ra_deg"], cut["center_dec_deg"]), 2 * u.arcmin)
    assert 0 < len(small) < 300


def test_read_kai_sample(tmp_path):
    src = tmp_path / "photo_calib.dat"
    src.write_text(KAI_SAMPLE)
    cat = read_kai_photo_calib(src)
    assert list(cat.names) == ["b100", "irs7", "16C", "S17-1"]
    assert list(cat.has_pm) == [False, True, True, False]
    assert cat.meta["bands"]["Lp_wright"]["default_calibrators"] == "16C,16NW,16NE"
    assert np.isnan(cat.mag("Lp_wright")[0]) and cat.mag("Lp_wright")[2] == 8.14
    # written and read back unchanged
    path = cat.write(tmp_path / "gc.ecsv")
    back = load_catalog(path)
    assert list(back.names) == list(cat.names) and back.meta["reference"]["name"] == "Sgr A*"
    np.testing.assert_array_equal(back.table["x_east"], cat.table["x_east"])


# --------------------------------------------------------------------------- loading and validation
def test_load_by_name_and_path(tmp_path, gc):
    assert len(load_catalog("galactic_center")) == 107
    assert len(load_catalog("gc")) == 107
    assert len(load_catalog(catalog_path("gaia_47tuc"))) > 4000
    with pytest.raises(CatalogError, match="not found.*galactic_center"):
        load_catalog(tmp_path / "nothere.ecsv")
    with pytest.raises(KeyError, match="shipped catalogues"):
        get_catalog("m31")


@pytest.mark.parametrize("edit, match", [
    (lambda t: setattr(t["pmra"], "unit", None), r"column 'pmra' has no unit"),
    (lambda t: setattr(t["ra"], "unit", u.m), r"column 'ra' has unit m"),
    (lambda t: t.__setitem__("dec", [10.0, -95.0, 0.0] * u.deg), r"column 'dec' outside -90..90.*s1"),
    (lambda t: t.__setitem__("name", ["a", "a", "b"]), r"column 'name' has duplicates \['a'\]"),
    (lambda t: t.__setitem__("ra_err", [0.1, -0.1, 0.1] * u.mas), r"column 'ra_err' has negative errors.*s1"),
    (lambda t: t.__setitem__("ra", [1.0, np.nan, 2.0] * u.deg), r"column 'ra' has non-finite values.*s1"),
    (lambda t: t.__setitem__("epoch", ["J2016.0", "yesterday", "J2016.0"]),
     r"column 'epoch', row 1 \(star 's1'\): cannot parse 'yesterday'"),
    (lambda t: t.__setitem__("epoch", [2016.0, 61529.1, 2016.0]), r"column 'epoch', row 1.*outside 1800..2300"),
    (lambda t: t.remove_column("epoch"), r"no epoch"),
    (lambda t: t.remove_columns(["ra", "dec"]), r"no positions"),
    (lambda t: t.remove_column("pmdec"), r"only one of 'pmra', 'pmdec'"),
])
def test_validation_errors_name_file_and_column(tmp_path, edit, match):
    t = _simple_table()
    edit(t)
    path = _ecsv(tmp_path, t, "bad.ecsv")
    with pytest.raises(CatalogError, match=match) as info:
        load_catalog(path)
    assert str(path) in str(info.value)


def test_offsets_need_a_reference(tmp_path):
    t = Table({"name": ["a"], "x_east": [1.0] * u.arcsec, "y_north": [0.0] * u.arcsec, "epoch": [2010.0],
               "ra_err": [1.0] * u.mas, "dec_err": [1.0] * u.mas})
    with pytest.raises(CatalogError, match="without meta 'reference'"):
        Catalog(t, "off.ecsv")
    t.meta["reference"] = {"name": "X", "ra_deg": 10.0, "dec_deg": 5.0}
    with pytest.raises(CatalogError, match=r"reference' lacks \['epoch'\]"):
        Catalog(t, "off.ecsv")
    t.meta["reference"]["epoch"] = "J2010.0"
    assert Catalog(t, "off.ecsv").reference.epoch == 2010.0
    t["ra"] = [1.0] * u.deg
    with pytest.raises(CatalogError, match="keep one kind"):
        Catalog(t, "off.ecsv")


def test_aliases_meta_epoch_and_warnings():
    # Gaia archive names, an epoch in the metadata, position errors missing
    t = Table({"source_id": [1, 2], "ra": [10.0, 10.1] * u.deg, "dec": [-5.0, -5.1] * u.deg,
               "pmra": [1.0, 2.0] * u.mas / u.yr, "pmdec": [0.0, 1.0] * u.mas / u.yr,
               "pmra_error": [0.1, 0.1] * u.mas / u.yr, "pmdec_error": [0.1, 0.1] * u.mas / u.yr,
               "phot_g_mean_mag": [15.0, 16.0]})
    t.meta["epoch"] = "J2016.0"
    with pytest.warns(CatalogWarning, match="no position-error columns"):
        cat = Catalog(t, "gaia-like")
    assert list(cat.names) == ["1", "2"] and cat.bands == ["G"]
    np.testing.assert_array_equal(cat.epoch, 2016.0)
    np.testing.assert_allclose(cat.pm_cov()[:, 0, 0], 0.01, rtol=1e-12)
    np.testing.assert_array_equal(cat.position_cov(), 0.0)


def test_parse_epoch():
    assert parse_epoch(2016) == 2016.0
    assert parse_epoch("J2000") == 2000.0
    assert parse_epoch("2016.5") == 2016.5
    assert parse_epoch("2000-01-01T12:00:00") == pytest.approx(2000.0, abs=3e-6)  # UTC, J2000.0 is TT
    for bad in ("next year", "61529.1", float("nan"), None, [2016]):
        with pytest.raises(CatalogError):
            parse_epoch(bad, "test")


def test_catalog_from_arrays_and_select(tmp_path):
    cat = catalog_from_arrays(name=["a", "b"], ra=[10.0, 10.001], dec=[-30.0, -30.0], epoch=2020.0,
                              pmra=[1.0, np.nan], pmdec=[1.0, np.nan], ra_err=0.5, dec_err=0.5,
                              pmra_err=0.1, pmdec_err=0.1, mags={"L": [10.0, 11.0]})
    assert list(cat.has_pm) == [True, False] and cat.bands == ["L"]
    sub = cat.select(cat.has_pm)
    assert list(sub.names) == ["a"]
    p = cat.write(tmp_path / "a.ecsv")
    with pytest.raises(FileExistsError):
        cat.write(p)
    assert list(load_catalog(p).names) == ["a", "b"]


# --------------------------------------------------------------------------- queries (no network)
def _fake_gaia_table():
    t = Table()
    t["SOURCE_ID"] = np.array([4689637789368594944, 4689637789368594945], dtype=np.int64)
    t["ra"] = [6.02, 6.03]
    t["dec"] = [-72.08, -72.081]
    t["ra_error"] = [0.02, 0.03]
    t["dec_error"] = [0.02, 0.03]
    t["pmra"] = [5.2, 5.3]
    t["pmdec"] = [-2.5, -2.6]
    t["pmra_error"] = [0.03, 0.04]
    t["pmdec_error"] = [0.03, 0.04]
    t["ref_epoch"] = [2016.0, 2016.0]
    t["phot_g_mean_mag"] = [15.0, 16.0]
    return t


class _FakeGaia:
    def __init__(self, fail=False):
        self.fail = fail
        self.queries = []

    def launch_job_async(self, query, **kwargs):
        self.queries.append(query)
        if self.fail:
            raise ConnectionError("Name or service not known")
        job = types.SimpleNamespace(get_results=_fake_gaia_table)
        return job


def _install_fake_gaia(monkeypatch, fake):
    module = types.ModuleType("astroquery.gaia")
    module.Gaia = fake
    monkeypatch.setitem(sys.modules, "astroquery.gaia", module)


def test_query_gaia_fills_and_uses_the_cache(tmp_path, monkeypatch):
    fake = _FakeGaia()
    _install_fake_gaia(monkeypatch, fake)
    cache = tmp_path / "cache"
    cat = query_gaia((6.0236, -72.0813), 30 * u.arcsec, cache_dir=cache)
    assert len(fake.queries) == 1 and "CIRCLE('ICRS', 6.023600000, -72.081300000, 0.008333333)" in fake.queries[0]
    assert len(cat) == 2 and cat.names[0] == "Gaia DR3 4689637789368594944"
    np.testing.assert_array_equal(cat.epoch, 2016.0)
    files = list(cache.glob("gaia_*.ecsv"))
    assert len(files) == 1
    assert "CONTAINS" in Table.read(files[0]).meta["query"]
    # the same query again: from the cache, even with the service down or offline
    _install_fake_gaia(monkeypatch, _FakeGaia(fail=True))
    again = query_gaia((6.0236, -72.0813), 30 * u.arcsec, cache_dir=cache)
    assert list(again.names) == list(cat.names)
    assert len(query_gaia((6.0236, -72.0813), 30 * u.arcsec, cache_dir=cache, offline=True)) == 2


def test_query_gaia_failure_names_the_cache_option(tmp_path, monkeypatch):
    _install_fake_gaia(monkeypatch, _FakeGaia(fail=True))
    with pytest.raises(CatalogQueryError) as info:
        query_gaia((6.0236, -72.0813), 45 * u.arcsec, cache_dir=tmp_path)
    msg = str(info.value)
    assert "Gaia query" in msg and "failed" in msg and "Name or service not known" in msg
    assert "cache_dir=" in msg and "ASTROCAL_CATALOG_CACHE" in msg and str(tmp_path) in msg
    # offline: no attempt at all
    fake = _FakeGaia()
    _install_fake_gaia(monkeypatch, fake)
    monkeypatch.setenv("ASTROCAL_OFFLINE", "1")
    with pytest.raises(CatalogQueryError, match="offline mode"):
        query_gaia((6.0236, -72.0813), 45 * u.arcsec, cache_dir=tmp_path)
    assert fake.queries == []


def test_query_vizier_with_fake_service(tmp_path, monkeypatch):
    from astroquery.vizier import VizierClass

    calls = []

    def fake_query_region(self, coordinates, radius=None, catalog=None, **kwargs):
        calls.append((catalog, radius))
        t = Table()
        t["ID"] = ["A", "B"]
        t["RAJ2000"] = [266.4168, 266.4170] * u.deg
        t["DEJ2000"] = [-29.0078, -29.0079] * u.deg
        t["pmRA"] = [1.0, 2.0] * u.mas / u.yr
        t["pmDE"] = [0.5, 0.1] * u.mas / u.yr
        t["e_pmRA"] = [0.1, 0.1] * u.mas / u.yr
        t["e_pmDE"] = [0.1, 0.1] * u.mas / u.yr
        t["e_RAJ2000"] = [1.0, 1.0] * u.mas
        t["e_DEJ2000"] = [1.0, 1.0] * u.mas
        t["Kmag"] = [12.0, 13.0]
        return [t]

    monkeypatch.setattr(VizierClass, "query_region", fake_query_region)
    center = (266.4168, -29.0078)
    with pytest.raises(CatalogError, match="no epoch column; give epoch="):
        query_vizier("J/ApJ/000/1/table1", center, 20 * u.arcsec, cache_dir=tmp_path)
    cat = query_vizier("J/ApJ/000/1/table1", center, 20 * u.arcsec, cache_dir=tmp_path, epoch="J2010.0",
                       column_map={"Kmag": "mag_K"})
    assert list(cat.names) == ["A", "B"] and cat.bands == ["K"] and cat.epoch[0] == 2010.0
    assert len(calls) == 1  # the second call came from the cache
    # a failing service with no cached result: error naming the cache option
    def broken(self, *args, **kwargs):
        raise TimeoutError("VizieR did not answer")

    monkeypatch.setattr(VizierClass, "query_region", broken)
    with pytest.raises(CatalogQueryError, match=r"VizieR query .* failed \(TimeoutError.*cache_dir="):
        query_vizier("J/ApJ/000/1/table1", center, 40 * u.arcsec, cache_dir=tmp_path, epoch=2010.0)


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("ASTROCAL_CATALOG_CACHE", raising=False)
    assert default_cache_dir() == PROJECT / "catalogs" / "cache"
    monkeypatch.setenv("ASTROCAL_CATALOG_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path
