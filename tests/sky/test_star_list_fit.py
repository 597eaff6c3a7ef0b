"""Star lists as sky exposures through ``astrocal measure`` and ``astrocal fit`` (issue #18).

The data are written here: a catalogue of stars around a pointing, their apparent
positions in one exposure (:func:`astrocal.sky.astrometry.apparent_positions`: the
catalogue as the instrument frame sees it), mapped to pixels by a pure scale and rotation
(``TRUE_SCALE_MAS`` per pixel, the detector +y axis turned by ``ROT_DEG`` from the nominal
frame) plus Gaussian noise of ``NOISE_PX``. Three sky datasets of a campaign without any
mask key: a StarFinder-style text list, an ECSV list (both with a clock time) and an ECSV
list known only by its epoch (a decimal year) with the field's zenith distance and
parallactic angle. The sky-only fit must give each dataset's on-sky scale and position
angle within their sigma of the truth, and the instrument's own scale as not measured.
"""
from __future__ import annotations

import json
import logging
import math
import warnings

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.time import Time

from astrocal.campaign import CampaignError, load_campaign
from astrocal.cli import main
from astrocal.sky.astrometry import apparent_positions
from astrocal.sky.projection import inverse_gnomonic
from astrocal.sky.catalog import catalog_from_arrays
from astrocal.sky.measure import measure_sky_exposure

RA0, DEC0 = 266.4168, -29.0078
TIME = "2026-05-01T04:00:00"  # zenith distance ~51 deg from Armazones
SHAPE = (400, 400)
NOMINAL_MAS = 10.1  # the campaign's pixel_scale_mas: a prior, 1.2 % off
TRUE_SCALE_MAS = 10.224
PA_NOMINAL, ROT_DEG = 20.0, 0.3  # the detector +y axis at PA 20 - 0.3 deg
NOISE_PX = 0.02
WEATHER = {"pressure_hpa": 705.0, "temperature_c": 6.0, "relative_humidity": 0.2}
WAVELENGTH = 2.2
KEYS = (f'ra = {RA0}, dec = {DEC0}, position_angle_deg = {PA_NOMINAL}, parity = 1, pressure_hpa = 705, '
        f'temperature_c = 6, humidity = 0.2, wavelength_um = {WAVELENGTH}')


pytestmark = pytest.mark.usefixtures("offline")  # tests/conftest.py


def _catalog(rng, n=45, half=2.6, min_sep=0.12):
    pts = []
    while len(pts) < n:
        p = rng.uniform(-half, half, 2)
        if all(math.hypot(*(p - q)) > min_sep for q in pts):
            pts.append(p)
    xy = np.array(pts)
    ra, dec = inverse_gnomonic(np.radians(xy[:, 0] / 3600), np.radians(xy[:, 1] / 3600),
                               np.radians(RA0), np.radians(DEC0))
    return catalog_from_arrays(ra=np.degrees(ra), dec=np.degrees(dec), name=[f"S{k:02d}" for k in range(n)],
                               epoch=2026.0, ra_err=np.full(n, 0.3), dec_err=np.full(n, 0.3),
                               pmra=rng.normal(0, 3, n), pmdec=rng.normal(0, 3, n),
                               pmra_err=np.full(n, 0.02), pmdec_err=np.full(n, 0.02))


def _pixels(fp, rng):
    """Pure scale and rotation of the instrument-frame positions, plus noise (0-based px)."""
    a = math.radians(ROT_DEG)
    r = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    c = np.array([(SHAPE[1] - 1) / 2, (SHAPE[0] - 1) / 2])
    p = c + np.column_stack([fp.x, fp.y]) @ r.T * 1e3 / TRUE_SCALE_MAS
    p = p + rng.normal(0, NOISE_PX, p.shape)
    on = (p[:, 0] > 2) & (p[:, 0] < SHAPE[1] - 3) & (p[:, 1] > 2) & (p[:, 1] < SHAPE[0] - 3)
    return p[on]


@pytest.fixture(scope="module")
def star_lists(tmp_path_factory):
    """The campaign directory: catalogue, the three lists and the truth's geometry."""
    d = tmp_path_factory.mktemp("star_lists")
    rng = np.random.default_rng(18)
    cat = _catalog(rng)
    cat.write(d / "catalog.ecsv")
    fp = apparent_positions(cat, time=TIME, pointing=(RA0, DEC0), wavelength=WAVELENGTH,
                            position_angle=PA_NOMINAL, weather=WEATHER, parity=1)
    p = _pixels(fp, rng)  # StarFinder style: x y flux sigma_x sigma_y, no header, 0-based
    flux = rng.uniform(1e4, 1e5, len(p))
    (d / "sf.txt").write_text("".join("%.4f %.4f %.1f %.3f %.3f\n" % (x, y, f, NOISE_PX, NOISE_PX)
                                      for (x, y), f in zip(p, flux)))
    p = _pixels(fp, rng)
    Table({"x": p[:, 0], "y": p[:, 1], "flux": rng.uniform(1e4, 1e5, len(p)),
           "sigma_x": np.full(len(p), NOISE_PX), "sigma_y": np.full(len(p), NOISE_PX)}).write(d / "ec.ecsv")
    p = _pixels(fp, rng)  # the same night, known by its epoch only
    Table({"x": p[:, 0], "y": p[:, 1], "sigma_x": np.full(len(p), NOISE_PX),
           "sigma_y": np.full(len(p), NOISE_PX)}).write(d / "epoch.ecsv")
    epoch = float(Time(TIME).tt.jyear)
    return d, {"epoch": epoch, "zd": fp.zenith_distance_deg, "q": fp.parallactic_angle_deg}


def _write_campaign(d, truth, extra_fit=""):
    text = f"""
[instrument]
name = "TestCam"
detector_shape = [{SHAPE[0]}, {SHAPE[1]}]
pixel_scale_mas = {NOMINAL_MAS}

[[sky]]
name = "sf"
catalog = "catalog.ecsv"
x_col = 0
y_col = 1
flux_col = 2
sigma_x_col = 3
sigma_y_col = 4
exposures = [ {{ file = "sf.txt", time = "{TIME}", {KEYS} }} ]

[[sky]]
name = "ec"
catalog = "catalog.ecsv"
exposures = [ {{ file = "ec.ecsv", time = "{TIME}", {KEYS} }} ]

[[sky]]
name = "ep"
catalog = "catalog.ecsv"
exposures = [ {{ file = "epoch.ecsv", time = {truth['epoch']:.6f}, zenith_distance_deg = {truth['zd']:.4f}, parallactic_angle_deg = {truth['q']:.4f}, {KEYS} }} ]

[measure]
output = "measured/"

[fit]
output = "out/"
degree = 2
walkers = 8
steps = 300
seed = 3
residual = "none"
{extra_fit}
"""
    path = d / "campaign.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def fitted(star_lists):
    d, truth = star_lists
    path = _write_campaign(d, truth)
    assert main(["-q", "measure", str(path)]) == 0
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["-q", "fit", str(path)]) == 0
    return d, truth, d / "out" / "sky", buf.getvalue()


def test_sky_only_campaign_needs_no_mask_keys(star_lists):
    d, truth = star_lists
    camp = load_campaign(_write_campaign(d, truth))
    assert camp.instrument.mask_scale_mm_per_arcsec is None and not camp.lab
    assert [s.name for s in camp.sky] == ["sf", "ec", "ep"]
    ep = camp.sky[2].exposures[0].extra
    assert ep["clock_time"] is False and ep["parallactic_angle_deg"] == pytest.approx(truth["q"], abs=1e-4)
    assert "clock_time" not in camp.sky[0].exposures[0].extra  # a clock time


def test_fit_reads_the_measured_tables_of_the_lists(fitted):
    d, _, out, _ = fitted
    info = json.loads((out / "fit.json").read_text())
    inputs = [str(p) for p in info["inputs"]]
    # the fit read the measure stage's tables, not the raw ECSV lists
    assert str(d / "measured" / "ec.ecsv") in inputs and str(d / "ec.ecsv") not in inputs
    assert str(d / "measured" / "epoch.ecsv") in inputs
    ep = Table.read(d / "measured" / "epoch.ecsv")
    assert ep.meta["clock_time"] is False and ep.meta["refraction"]["corrected"] is True
    assert ep.meta["horizon"]["zenith_distance_deg"] == pytest.approx(49.0, abs=5)
    assert "given zenith distance" in ep.meta["refraction"]["how"]


def test_on_sky_scale_and_angle_within_sigma_of_the_truth(fitted):
    d, _, out, stdout = fitted
    info = json.loads((out / "fit.json").read_text())
    ps = info["pixel_scale_mas"]
    assert ps["measured"] is False and ps["mean"] is None and ps["sd"] is None and "not measured" in ps["reason"]
    sky = info["on_sky"]
    assert sky["instrument_pixel_scale"]["measured"] is False
    by = {r["name"]: r for r in sky["datasets"]}
    assert set(by) == {"sf", "ec", "ep"}
    for name, r in by.items():
        sc, pa = r["pixel_scale_mas"], r["position_angle_deg"]
        print(f"{name}: scale {sc['mean']:.5f} +/- {sc['sd']:.5f} mas/px (truth {TRUE_SCALE_MAS}), "
              f"PA {pa['mean']:.4f} +/- {pa['sd']:.4f} deg (truth {PA_NOMINAL - ROT_DEG})")
        assert 0 < sc["sd"] < 2e-3 * TRUE_SCALE_MAS
        assert abs(sc["mean"] - TRUE_SCALE_MAS) < 4 * sc["sd"]
        assert 0 < pa["sd"] < 0.05 and abs(pa["mean"] - (PA_NOMINAL - ROT_DEG)) < 4 * pa["sd"]
        assert r["exposures"][0]["nominal_position_angle_deg"] == pytest.approx(PA_NOMINAL)
        assert "sky_over_lab" not in r
    # the instrument scale (the prior, ~1 % off) is far from what the sky measures
    prior = info["pixel_scale_mas"]["prior_mean"]
    assert abs(prior - TRUE_SCALE_MAS) > 10 * by["ec"]["pixel_scale_mas"]["sd"]
    summary = Table.read(out / "summary.ecsv")
    names = list(summary["name"])
    assert "pixel_scale_mas" not in names and "sky_pixel_scale_mas[ec]" in names
    row = summary[names.index("sky_pixel_scale_mas[ec]")]
    assert row["mean"] == pytest.approx(by["ec"]["pixel_scale_mas"]["mean"], rel=1e-9)
    # the terminal: not measured, and each dataset's on-sky scale
    assert "instrument pixel scale not measured" in stdout and "map 1-sigma in mas not measured" in stdout
    assert "mas/px, map 1-sigma rms" not in stdout
    for name in ("sf", "ec", "ep"):
        assert f"sky {name}: on-sky pixel scale {by[name]['pixel_scale_mas']['mean']:.5f}" in stdout


def test_products_and_report_carry_the_on_sky_scale(fitted):
    _, _, out, _ = fitted
    info = json.loads((out / "fit.json").read_text())
    by = {r["name"]: r for r in info["on_sky"]["datasets"]}
    for product in ("astromet_sky.fits", "wcs_sip_sky.hdr"):
        h = (fits.getheader(out / product) if product.endswith(".fits")
             else fits.Header.fromtextfile(out / product))
        assert h["HIERARCH ASTROCAL SCALE MEASURED"] is False
        for k in (1, 2, 3):
            name = h[f"HIERARCH ASTROCAL SKY{k} NAME"]
            assert h[f"HIERARCH ASTROCAL SKY{k} SCALE"] == pytest.approx(by[name]["pixel_scale_mas"]["mean"])
            assert h[f"HIERARCH ASTROCAL SKY{k} PA"] == pytest.approx(by[name]["position_angle_deg"]["mean"])
    from astrocal.report.build import build_report, load_result
    from astrocal.report.html import _on_sky

    rep = build_report(load_result(out))
    assert rep["pixel_scale"]["measured"] is False and rep["on_sky"] == info["on_sky"]
    html = _on_sky(rep["on_sky"])
    assert 'id="on-sky"' in html and f"{by['sf']['pixel_scale_mas']['mean']:.5f}" in html


def test_epoch_without_clock_time_needs_zenith_distance_or_refraction_off(star_lists, tmp_path):
    d, truth = star_lists
    text = _write_campaign(d, truth).read_text()
    bad = text.replace(f"zenith_distance_deg = {truth['zd']:.4f}, ", "").replace(
        f"parallactic_angle_deg = {truth['q']:.4f}, ", "")
    path = d / "bad.toml"
    path.write_text(bad)
    with pytest.raises(CampaignError, match=r"sky\[2\]\.exposures\[0\]\.time.*zenith_distance_deg and "
                                            r"parallactic_angle_deg.*refraction = false"):
        load_campaign(path)
    path.write_text(text.replace("parity = 1, pressure_hpa = 705", "parity = 1, refraction = true, "
                                                                  "pressure_hpa = 705").replace(
        f"zenith_distance_deg = {truth['zd']:.4f},", "").replace(
        f"parallactic_angle_deg = {truth['q']:.4f}, ", ""))
    with pytest.raises(CampaignError, match="an epoch without a clock time"):
        load_campaign(path)


def test_refraction_off_is_stated_with_its_size(star_lists, caplog):
    """Refraction switched off on an epoch-only list: the positions are unrefracted, and the
    table and the log say that differential refraction is not corrected and how large it is
    at the given zenith distance (about 1 mas over a 4 arcsec field at z ~ 51 deg, L band)."""
    d, truth = star_lists
    text = _write_campaign(d, truth).read_text().replace(
        "parity = 1, pressure_hpa = 705,", "parity = 1, refraction = false,")
    path = d / "off.toml"
    path.write_text(text)
    camp = load_campaign(path)
    ds = camp.sky[2]
    with caplog.at_level(logging.WARNING, logger="astrocal.sky"):
        t = measure_sky_exposure(ds.exposures[0], ds, camp.instrument)
    r = t.meta["refraction"]
    assert r["corrected"] is False and t.meta["weather"]["pressure_hpa"] == 0.0
    assert r["zenith_distance_deg"] == pytest.approx(truth["zd"], abs=1e-3)
    assert 0.3 < r["uncorrected_differential_mas"] < 3.0
    assert 0 < r["uncorrected_beyond_similarity_mas"] < r["uncorrected_differential_mas"]
    assert "differential refraction across the field is not corrected" in caplog.text
    assert any("not corrected" in w for w in t.meta["warnings"])
    # without a zenith distance: placed at the zenith, the size unknown, said so
    path.write_text(text.replace(f"zenith_distance_deg = {truth['zd']:.4f}, ", "").replace(
        f"parallactic_angle_deg = {truth['q']:.4f}, ", ""))
    camp = load_campaign(path)
    t = measure_sky_exposure(camp.sky[2].exposures[0], camp.sky[2], camp.instrument)
    assert t.meta["refraction"]["uncorrected_differential_mas"] is None
    assert "size is unknown" in t.meta["refraction"]["note"] and t.meta["horizon"]["given"] is False


@pytest.mark.parametrize("clock", ["2026-05-01T04:00:00", "2026-05-01T08:30:00"])
def test_horizon_reproduces_the_clock_time_refraction(clock):
    """Positions from the epoch and the field's zenith distance and parallactic angle agree
    with those from the clock time and site to a few microarcseconds relative to the field
    centre, where switching refraction off moves them by about a milliarcsecond."""
    cat = _catalog(np.random.default_rng(5), n=30)
    kw = dict(pointing=(RA0, DEC0), wavelength=WAVELENGTH, position_angle=PA_NOMINAL, weather=WEATHER)
    fp = apparent_positions(cat, time=clock, **kw)
    h = (fp.zenith_distance_deg, fp.parallactic_angle_deg)
    epoch = float(Time(clock[:10]).tt.jyear)
    on = apparent_positions(cat, time=epoch, horizon=h, **kw)
    off = apparent_positions(cat, time=epoch, horizon=h, refraction=False, **kw)

    def spread(a):  # largest difference relative to the mean (the centre's shift drops out)
        d = (a.x - fp.x) + 1j * (a.y - fp.y)
        return float(np.max(np.abs(d - d.mean())) * 1e3)

    assert on.zenith_distance_deg == pytest.approx(h[0], abs=1e-4)
    assert on.parallactic_angle_deg == pytest.approx(h[1], abs=1e-3)
    assert on.rotator_angle_deg == pytest.approx(fp.rotator_angle_deg, abs=1e-3)
    assert spread(on) < 0.02 and spread(off) > 0.3
    assert on.meta["horizon"]["zenith_distance_deg"] == h[0]


def test_a_keck_star_list_at_mauna_kea(tmp_path):
    """Another imager at another site, end to end: a StarFinder list written here from the
    catalogue's apparent positions at Mauna Kea (the site table's "keck": its position and
    typical weather, which the campaign does not give) through measure and fit; the on-sky
    scale and position angle come back within their sigma, and fit.json records the site."""
    from astrocal.sky.sites import get_site

    keck = get_site("keck")
    time = "2026-05-01T14:00:00"  # the Galactic Center near transit at Mauna Kea
    rng = np.random.default_rng(23)
    cat = _catalog(rng)
    cat.write(tmp_path / "catalog.ecsv")
    fp = apparent_positions(cat, site=keck, time=time, pointing=(RA0, DEC0), wavelength=WAVELENGTH,
                            position_angle=PA_NOMINAL, parity=1)
    assert 40 < fp.zenith_distance_deg < 60
    p = _pixels(fp, rng)
    (tmp_path / "n2.txt").write_text("".join("%.4f %.4f %.1f %.3f %.3f\n" % (x, y, 1e4, NOISE_PX, NOISE_PX)
                                             for x, y in p))
    (tmp_path / "campaign.toml").write_text(f"""
[instrument]
name = "Keck NIRC2 narrow"
detector_shape = [{SHAPE[0]}, {SHAPE[1]}]
pixel_scale_mas = {NOMINAL_MAS}

[[sky]]
name = "n2"
catalog = "catalog.ecsv"
site = "Keck"
x_col = 0
y_col = 1
flux_col = 2
sigma_x_col = 3
sigma_y_col = 4
exposures = [ {{ file = "n2.txt", time = "{time}", ra = {RA0}, dec = {DEC0}, position_angle_deg = {PA_NOMINAL}, parity = 1, wavelength_um = {WAVELENGTH} }} ]

[measure]
output = "measured/"

[fit]
output = "out/"
degree = 2
walkers = 8
steps = 300
seed = 3
residual = "none"
""")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["-q", "measure", str(tmp_path / "campaign.toml")]) == 0
        assert main(["-q", "fit", str(tmp_path / "campaign.toml")]) == 0
    info = json.loads((tmp_path / "out" / "sky" / "fit.json").read_text())
    ds = info["on_sky"]["datasets"][0]
    sc, pa = ds["pixel_scale_mas"], ds["position_angle_deg"]
    assert abs(sc["mean"] - TRUE_SCALE_MAS) < 4 * sc["sd"] and sc["sd"] < 2e-3 * TRUE_SCALE_MAS
    assert abs(pa["mean"] - (PA_NOMINAL - ROT_DEG)) < 4 * pa["sd"]
    site = next(d["site"] for d in info["datasets"] if d["name"] == "n2")
    assert site["name"] == "keck" and site["height_m"] > 4000
