"""Observatories in space (issue #23): the site, the positions, star lists from HST and JWST
and a sky-only campaign whose data are written here (numpy, astropy's table and FITS
writers; ``benchmarks/space_fields.py`` for the dense fields and the HST-like campaign)."""
from __future__ import annotations

import contextlib
import io
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table

from astrocal.cli import main
from astrocal.model.onsky import local_affine_matrices
from astrocal.model.draws import affine_matrices
from astrocal.sky.astrometry import AstrometryError, apparent_positions
from astrocal.sky.projection import inverse_gnomonic
from astrocal.sky.catalog import catalog_from_arrays
from astrocal.sky.match import match_stars
from astrocal.sky.sites import get_site, is_space
from astrocal.sky.starlist import StarListError, read_star_list

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import space_fields  # noqa: E402

pytestmark = pytest.mark.usefixtures("offline")  # tests/conftest.py

RA0, DEC0 = 10.0, -30.0
C_KM_S = 299792.458


def _catalog(n=60, half=60.0, seed=1):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(-half, half, (n, 2))
    ra, dec = inverse_gnomonic(np.radians(xy[:, 0] / 3600), np.radians(xy[:, 1] / 3600), np.radians(RA0),
                               np.radians(DEC0))
    return catalog_from_arrays(ra=np.degrees(ra), dec=np.degrees(dec), name=[f"S{k}" for k in range(n)],
                               epoch=2020.0, ra_err=np.full(n, 0.1), dec_err=np.full(n, 0.1),
                               pmra=np.zeros(n), pmdec=np.zeros(n), pmra_err=np.full(n, 0.01),
                               pmdec_err=np.full(n, 0.01))


def _standard(cat):
    """Standard coordinates (arcsec, east, north) of the catalogue about the pointing (numpy)."""
    ra, dec, ra0, dec0 = np.radians(cat.table["ra"]), np.radians(cat.table["dec"]), np.radians(RA0), np.radians(DEC0)
    cosc = np.sin(dec0) * np.sin(dec) + np.cos(dec0) * np.cos(dec) * np.cos(ra - ra0)
    xi = np.cos(dec) * np.sin(ra - ra0) / cosc
    eta = (np.cos(dec0) * np.sin(dec) - np.sin(dec0) * np.cos(dec) * np.cos(ra - ra0)) / cosc
    return np.degrees(xi) * 3600, np.degrees(eta) * 3600


def _similarity(a, b):
    """(scale, rotation deg, max residual) of the best similarity b = f a (complex, centred)."""
    za, zb = a - a.mean(), b - b.mean()
    f = np.vdot(za, zb) / np.vdot(za, za)
    return abs(f), np.degrees(np.angle(f)), float(np.abs(zb - f * za).max())


def test_space_names_and_site():
    for name, canonical in (("space", "space"), ("None", "space"), ("HST", "hst"), ("Hubble Space Telescope", "hst"),
                            ("JWST", "jwst"), ("Webb", "jwst")):
        site = get_site(name)
        assert site.is_space and site.name == canonical and is_space(name)
        assert site.as_dict()["space"] is True
    assert not get_site("paranal").is_space and not is_space("keck")
    with pytest.raises(KeyError, match="an observatory in space: 'space'"):
        get_site("spaec")


def test_space_positions_agree_with_astropy_without_refraction():
    """With the Earth's velocity (the default), the positions from space are the ground's
    through astropy's AltAz at zero pressure (aberration included) to the diurnal aberration
    (1e-6): the same position angle convention, parity and scale."""
    cat = _catalog()
    t = "2020-10-01T06:00:00"
    for pa, parity in ((0.0, 1), (37.0, -1)):
        g = apparent_positions(cat, time=t, pointing=(RA0, DEC0), wavelength=1.0, position_angle=pa, site="paranal",
                               weather={"pressure_hpa": 0.0, "temperature_c": 0.0, "relative_humidity": 0.0},
                               parity=parity)
        s = apparent_positions(cat, time=t, pointing=(RA0, DEC0), position_angle=pa, site="space", parity=parity)
        scale, rot, resid = _similarity(s.x + 1j * s.y, g.x + 1j * g.y)
        assert abs(scale - 1) < 3e-6 and abs(rot) < 1e-6 and resid < 1e-5
        assert np.isnan(s.zenith_distance_deg) and s.meta["space"] is True
        assert "Earth's barycentric velocity" in s.meta["velocity_aberration"]["source"]


def test_space_positions_follow_the_definitions_written_here():
    """A scale factor f divides the gnomonic offsets (x = parity(-xi cos PA + eta sin PA),
    y = xi sin PA + eta cos PA); a velocity scales them about the pointing by 1 / f with f =
    (1 + beta.n) / sqrt(1 - beta^2), the JWST pipeline's VA_SCALE formula."""
    cat = _catalog()
    xi, eta = _standard(cat)
    th = np.radians(25.0)
    f = 1.0000213
    s = apparent_positions(cat, time="2020-10-01T06:00:00", pointing=(RA0, DEC0), position_angle=25.0, site="hst",
                           aberration={"scale": f})
    assert np.allclose(s.x, (-xi * np.cos(th) + eta * np.sin(th)) / f, atol=1e-9)
    assert np.allclose(s.y, (xi * np.sin(th) + eta * np.cos(th)) / f, atol=1e-9)
    v = np.array([-21.9, 24.2, 10.5])
    n0 = np.array([np.cos(np.radians(DEC0)) * np.cos(np.radians(RA0)),
                   np.cos(np.radians(DEC0)) * np.sin(np.radians(RA0)), np.sin(np.radians(DEC0))])
    beta = v / C_KM_S
    va = (1 + n0 @ beta) / np.sqrt(1 - beta @ beta)
    sv = apparent_positions(cat, time="2020-10-01T06:00:00", pointing=(RA0, DEC0), position_angle=25.0, site="jwst",
                            aberration={"velocity_km_s": v})
    s1 = apparent_positions(cat, time="2020-10-01T06:00:00", pointing=(RA0, DEC0), position_angle=25.0, site="jwst",
                            aberration={"scale": 1.0})
    scale, rot, resid = _similarity(s1.x + 1j * s1.y, sv.x + 1j * sv.y)
    assert scale == pytest.approx(1 / va, abs=2e-8) and abs(rot) < 1e-6 and resid < 5e-6
    assert sv.meta["velocity_aberration"]["scale"] == pytest.approx(va, abs=1e-12)
    with pytest.raises(AstrometryError, match="no rotator angle"):
        apparent_positions(cat, time="2020-10-01T06:00:00", pointing=(RA0, DEC0), rotator_angle=3.0, site="space")
    with pytest.raises(AstrometryError, match="is 1 within"):
        apparent_positions(cat, time="2020-10-01T06:00:00", pointing=(RA0, DEC0), position_angle=0, site="space",
                           aberration={"scale": 1.2})


# ---------------------------------------------------------------------------- star lists
def test_hst1pass_xym_list_with_names_on_a_comment_line(tmp_path):
    p = tmp_path / "f.xym"
    p.write_text("# x y m xe ye\n101.0 201.5 -12.31 0.010 0.020\n51.25 11.0 -9.50 0.030 0.040\n")
    t = read_star_list(p)
    assert t["x"].tolist() == pytest.approx([100.0, 50.25]) and t["y"].tolist() == pytest.approx([200.5, 10.0])
    assert t.meta["one_based_input"] is True and t["mag"].tolist() == pytest.approx([-12.31, -9.5])
    assert t["sigma_x"].tolist() == pytest.approx([0.01, 0.03]) and t["sigma_y"].tolist() == pytest.approx([0.02, 0.04])
    assert t["flux"][0] > t["flux"][1]  # brighter: smaller magnitude
    q = tmp_path / "g.xym"  # no names: x y m, the third a magnitude
    q.write_text("10 20 -8.0\n30 40 -9.0\n")
    t = read_star_list(q)
    assert t.meta["columns"]["mag"] == "col3" and t["x"][0] == pytest.approx(9.0)
    r = tmp_path / "h.txt"  # the same names in a plain text list: 0-based unless said
    r.write_text("# x y m xe ye\n101.0 201.5 -12.31 0.010 0.020\n")
    t = read_star_list(r)
    assert t["x"][0] == pytest.approx(101.0) and "mag" in t.colnames and "sigma_x" in t.colnames
    with pytest.raises(StarListError, match="give it as mag_col"):
        read_star_list(r, flux_col="m")
    t = read_star_list(r, mag_col="m", one_based=True)
    assert t["x"][0] == pytest.approx(100.0)


def test_jwst_source_catalogue_and_photutils_tables_read_as_they_are(tmp_path):
    from astropy.coordinates import SkyCoord
    import astropy.units as u

    n = 4
    cat = Table({"label": np.arange(1, n + 1), "xcentroid": np.array([10.5, 20.0, 30.0, 40.0]) * u.pix,
                 "ycentroid": np.array([5.0, 6.0, 7.0, 8.0]) * u.pix,
                 "sky_centroid": SkyCoord(np.full(n, 80.4) * u.deg, np.full(n, -69.5) * u.deg),
                 "aper_total_flux": np.array([1.0, 2.0, 3.0, 4.0]) * u.Jy,
                 "aper_total_flux_err": np.full(n, 0.1) * u.Jy,
                 "aper_total_vegamag": np.array([20.0, 19.2, 18.8, 18.5])})
    cat.write(tmp_path / "jw_cat.ecsv")
    t = read_star_list(tmp_path / "jw_cat.ecsv")
    assert t["x"].tolist() == pytest.approx([10.5, 20.0, 30.0, 40.0]) and t.meta["one_based_input"] is False
    assert t.meta["columns"]["flux"] == "aper_total_flux" and t.meta["columns"]["mag"] == "aper_total_vegamag"
    assert t["id"].tolist() == [1, 2, 3, 4]
    psf = Table({"id": [1, 2], "x_fit": [3.0, 4.0], "y_fit": [5.0, 6.0], "flux_fit": [10.0, 20.0],
                 "x_err": [0.01, 0.02], "y_err": [0.03, 0.04], "flux_err": [1.0, 1.0]})
    psf.write(tmp_path / "psf.ecsv")
    t = read_star_list(tmp_path / "psf.ecsv")
    assert t.meta["columns"]["sigma_x"] == "x_err" and t["sigma_y"].tolist() == pytest.approx([0.03, 0.04])


# ---------------------------------------------------------------------------- matching
@pytest.mark.parametrize("n_sources,n_catalog", [(3000, 600), (600, 3000)])
def test_dense_lists_match_by_brightness_ranks_in_another_band(n_sources, n_catalog):
    """Thousands of sources against hundreds of catalogue stars (and the reverse), magnitudes
    of another band, any rotation, both parities, scale within 5 %: all catalogue stars on
    the list matched, none wrongly."""
    f = space_fields.space_field(np.random.default_rng(7), n_sources=n_sources, n_catalog=n_catalog,
                                 shape=(2048, 2048))
    stars = Table({"x": f.xy[:, 0], "y": f.xy[:, 1], "flux": 10 ** (-0.4 * (f.mag - 25))})
    ref = Table({"x": f.ref[:, 0], "y": f.ref[:, 1], "mag": f.ref_mag})
    r = match_stars(stars, ref, pixel_scale_mas=f.pixel_scale_mas, detector_shape=f.shape, ref_mag_col="mag",
                    mag_tolerance=None, flux_check="off")
    right = np.array([f.truth[s] in set(m.tolist()) for s, m in zip(r.star_index, r.blend_members)])
    n_true = int(np.count_nonzero(f.truth >= 0))
    assert right.all() and np.count_nonzero(right) >= 0.98 * n_true
    assert r.similarity.pixel_scale_mas == pytest.approx(f.true_pixel_scale_mas, rel=2e-3)


# ---------------------------------------------------------------------------- on-sky scale
def test_local_affine_part_is_where_the_stars_are():
    """A field with a cubic term: its affine part over the whole detector differs from the
    one over a corner, which the least squares over the corner's pixels give exactly."""
    from astrocal.field import design_matrix
    from astrocal.field.basis import n_terms, terms

    deg, dom = 3, (-0.5, 999.5, -0.5, 999.5)
    nt = n_terms(deg)
    g = np.zeros((2, 2 * nt))
    t = terms(deg)
    g[:, t.index((1, 0))] = 20.0
    g[:, nt + t.index((0, 1))] = 20.0
    g[:, t.index((3, 0))] = 0.5  # a cubic along x: the slope changes across the detector
    rng = np.random.default_rng(3)
    x, y = rng.uniform(0, 300, 400), rng.uniform(0, 300, 400)  # a corner
    local = local_affine_matrices(g, deg, dom, x, y)
    u = g[0, :nt] @ design_matrix(x, y, deg, dom).T
    d = np.column_stack([np.ones_like(x), x, y])
    slope = np.linalg.lstsq(d, u, rcond=None)[0][1]
    assert local[0, 0, 0] == pytest.approx(slope, rel=1e-10)
    assert abs(affine_matrices(g, deg, dom)[0, 0, 0] - slope) > 1e-3 * slope


def test_space_campaign_truth(tmp_path):
    """The benchmark's truth (``space_fields.write_space_campaign``, ``truth_over``): without
    distortion the affine map over any of the catalogue stars is the campaign's own, so its
    conformal angle is ORIENTAT and its scale the true pixel scale times VAFACTOR (catalogue
    mas per pixel); with distortion it depends on the stars it is taken over (so the
    benchmark takes it over the stars the fit used). The campaign asks for astrocal's
    default chain unless walkers/steps are given."""
    c = space_fields.CAMPAIGN
    truth = space_fields.write_space_campaign(tmp_path / "a", np.random.default_rng(3), distortion_px=0.0)
    assert truth["position_angle_deg"] == pytest.approx(c["position_angle"], abs=1e-9)
    assert truth["on_sky_mas"] == pytest.approx(c["true_mas"] * c["vafactor"], rel=1e-9)
    # over any subset of the stars the same, without distortion
    names = sorted(truth["stars"])[::3]
    sub = space_fields.truth_over(truth, names + ["not a star"])
    assert sub["n_stars"] == len(names) and sub["position_angle_deg"] == pytest.approx(c["position_angle"], abs=1e-9)
    text = (tmp_path / "a" / "campaign.toml").read_text()
    assert "walkers" not in text and "steps" not in text
    # with distortion: the angle moves off ORIENTAT, and depends on the stars it is taken over
    t = space_fields.write_space_campaign(tmp_path / "c", np.random.default_rng(3), distortion_px=3.0)
    assert space_fields.truth_over(t, list(t["stars"]))["position_angle_deg"] == pytest.approx(
        t["position_angle_deg"], abs=1e-12)
    assert abs(t["position_angle_deg"] - c["position_angle"]) > 1e-4
    half = space_fields.truth_over(t, [n for n, v in t["stars"].items() if v[0] < 1024])
    assert abs(half["position_angle_deg"] - t["position_angle_deg"]) > 1e-4
    space_fields.write_space_campaign(tmp_path / "b", np.random.default_rng(3), walkers=8, steps=400)
    text = (tmp_path / "b" / "campaign.toml").read_text()
    assert "walkers = 8\n" in text and "steps = 400\n" in text


@pytest.fixture(scope="module")
def hst_campaign(tmp_path_factory):
    d = tmp_path_factory.mktemp("hst")
    truth = space_fields.write_space_campaign(d, np.random.default_rng(11), n_sky=2000, n_catalog=150,
                                              n_list=800, steps=400, walkers=8)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["-q", "measure", str(d / "campaign.toml")]) == 0
        assert main(["-q", "fit", str(d / "campaign.toml")]) == 0
    return d, truth, buf.getvalue()


@pytest.mark.slow
def test_hst_star_list_campaign_measures_the_on_sky_scale(hst_campaign):
    """An hst1pass list of a WFC3-like chip with its flt header against a Gaia-like table
    (a third without proper motions): the header gives the time, ORIENTAT and VAFACTOR,
    the match ranks by Gaia G, the fit has no flexure, and the on-sky scale (catalogue mas
    per pixel over the stars) lies within 4 sd of the truth; the residuals are reported
    against the catalogue as well."""
    d, truth, stdout = hst_campaign
    t = Table.read(d / "measured" / "list.ecsv")
    src = t.meta["sources"]
    assert "DATE-OBS + TIME-OBS + EXPTIME/2" in src["time"] and src["position_angle_deg"] == "header ORIENTAT"
    assert t.meta["velocity_aberration"]["source"] == "header VAFACTOR" and t.meta["space"] is True
    assert t.meta["match_quality"]["rank_band"] == "G" and t.meta["weather"] == {}
    assert t.meta["refraction"]["space"] is True
    info = json.loads((d / "out" / "sky" / "fit.json").read_text())
    summary = Table.read(d / "out" / "sky" / "summary.ecsv")
    assert not any(str(n).startswith("flex[") or "flex_sigma" in str(n) for n in summary["name"])
    sc = info["on_sky"]["datasets"][0]["pixel_scale_mas"]
    assert abs(sc["mean"] - truth["on_sky_mas"]) < 4 * sc["sd"] and sc["sd"] < 2e-5 * truth["on_sky_mas"] * 100
    res = info["sky_residuals"][0]
    assert res["against_catalog_mas"][0] >= res["after_star_errors_mas"][0] > 0
    assert "against the catalogue" in stdout
    r = Table.read(d / "out" / "sky" / "residuals.ecsv")
    assert np.all(np.isfinite(r["dx_cat_mas"]))


@pytest.mark.slow
def test_a_failed_match_says_what_to_try(tmp_path):
    """A list that does not match, without magnitudes in the catalogue: the message says the
    match used positions only and what would give it brightness ranks."""
    from astrocal.campaign import Exposure, InstrumentSpec, SkyDataset
    from astrocal.sky.exposure import SkyMeasureError
    from astrocal.sky.measure import measure_sky_exposure

    cat = _catalog(n=40)
    cat.write(tmp_path / "cat.ecsv")
    rng = np.random.default_rng(2)
    Table({"x": rng.uniform(0, 999, 300), "y": rng.uniform(0, 999, 300)}).write(tmp_path / "l.ecsv")
    ds = SkyDataset("s", tmp_path / "cat.ecsv", (), site=get_site("space"))
    inst = InstrumentSpec("cam", (1000, 1000), 40.0, None)
    exp = Exposure(tmp_path / "l.ecsv", extra={"time": "2020-10-01T06:00:00", "ra": RA0, "dec": DEC0})
    with pytest.raises(SkyMeasureError, match="The match used positions only: the star list has no fluxes or "
                                              "magnitudes .*brightest stars of each are matched first"):
        measure_sky_exposure(exp, ds, inst)


def test_an_image_from_space_is_refused_with_what_to_do(tmp_path):
    """An HST-like image (a FITS image with ORIENTAT and VAFACTOR, written here) at a space
    site: the star model is the ELT's AO PSF at a ground wavelength, so the image is not
    measured; the error names the file and says to bring a star list with the image as its
    header (before: an internal error, a PSF table of NaN for want of a wavelength)."""
    from astropy.io import fits

    from astrocal.campaign import Exposure, InstrumentSpec, SkyDataset
    from astrocal.sky.exposure import SkyMeasureError
    from astrocal.sky.measure import measure_sky_exposure

    cat = _catalog(n=40)
    cat.write(tmp_path / "cat.ecsv")
    rng = np.random.default_rng(3)
    img = rng.normal(20.0, 3.0, (200, 200)).astype(np.float32)
    yy, xx = np.mgrid[0:200, 0:200]
    for x0, y0 in rng.uniform(20, 180, (15, 2)):
        img += 500.0 * np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * 0.76 ** 2))
    h0 = fits.Header({"DATE-OBS": "2020-10-01", "TIME-OBS": "06:00:00", "EXPTIME": 100.0, "RA_TARG": RA0,
                      "DEC_TARG": DEC0})
    h1 = fits.Header({"ORIENTAT": 30.0, "VAFACTOR": 1.00002})
    fits.HDUList([fits.PrimaryHDU(header=h0), fits.ImageHDU(img, header=h1, name="SCI")]).writeto(
        tmp_path / "ib_flt.fits")
    ds = SkyDataset("s", tmp_path / "cat.ecsv", (), site=get_site("hst"))
    inst = InstrumentSpec("cam", (200, 200), 40.0, None)
    with pytest.raises(SkyMeasureError, match=r"ib_flt.fits .*an image from an observatory in space \(site 'hst'\) "
                                              r"is not measured.*give the star list as the exposure's file, with "
                                              r'header = "ib_flt.fits"'):
        measure_sky_exposure(Exposure(tmp_path / "ib_flt.fits", extra={}), ds, inst)
