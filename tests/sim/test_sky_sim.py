"""Tests of the sky simulator (astrocal.sim.sky_truth, astrocal.sim.sky, ``astrocal simulate sky``).

The geometry is checked against the model equation by independent paths: positions are
recomputed from the written truth files (true catalogue, flexure table, poses) with
astropy/astrocal's astrometry and the field's forward evaluation, never read back from the
simulator's own intermediate arrays. No network: IERS downloads are off and sockets blocked.
"""
import json
import warnings

import numpy as np
import pytest
from astropy.table import Table
from astropy.time import Time
from astropy.utils import iers

from astrocal.atomic import ProductExistsError
from astrocal.campaign import load_campaign
from astrocal.model.flexure import FlexureBasis
from astrocal.sky.astrometry import apparent_positions, propagate
from astrocal.sky.catalog import get_catalog, load_catalog
from astrocal.sim.sky_catalog import TUC47, band_magnitudes, noisy_catalog, synthetic_cluster, true_catalog
from astrocal.sim.sky_files import load_sky_truth
from astrocal.sim.sky_plan import FIELDS, field_center, plan_night
from astrocal.sim.sky_points import observe_sky_points, write_sky_points_campaign
from astrocal.sim.sky_truth import default_sky_field, draw_sky_truth
from astrocal.sources import FLAG_UNIDENTIFIED

ARCSEC_TOL = 1e-9  # arcsec: "exact" (double precision of a few-arcsec quantity)


pytestmark = pytest.mark.usefixtures("offline")  # tests/conftest.py


@pytest.fixture(scope="module")
def gc_points(tmp_path_factory):
    """A 5-exposure point-level Galactic Center campaign (flexure on)."""
    with iers.conf.set_temp("auto_download", False):
        out = tmp_path_factory.mktemp("sky") / "gc"
        camp, truth, tables = write_sky_points_campaign(out, "gc", seed=11, n_exposures=5,
                                                        flexure_sigma_mas=1.0)
    return out, camp, truth, tables


@pytest.fixture(scope="module")
def field():
    return default_sky_field()


def _with_warnings_ignored(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def _similarity_fit(x, g):
    """Least-squares (s, theta, t) of g - x = s x + theta R90 x + t; returns params, residual."""
    n = len(x)
    a = np.zeros((2 * n, 4))
    a[0::2, 0], a[1::2, 0] = x[:, 0], x[:, 1]      # s
    a[0::2, 1], a[1::2, 1] = -x[:, 1], x[:, 0]     # theta
    a[0::2, 2] = 1.0                                # t_x
    a[1::2, 3] = 1.0                                # t_y
    b = (g - x).ravel()
    p, *_ = np.linalg.lstsq(a, b, rcond=None)
    return p, (b - a @ p).reshape(n, 2)


# ------------------------------------------------------------------------- plan
def test_plan_covers_zenith_range_at_night():
    for key, spec in FIELDS.items():
        plan = plan_night(field_center(key), 9, zenith_range=spec["zenith_range"], night=spec["night"],
                          rng=1, target=key, position_angles=(0.0, 90.0))
        times = [e.time for e in plan]
        assert times == sorted(times)
        z = np.array([e.zenith_distance_deg for e in plan])
        lo, hi = spec["zenith_range"]
        assert z.max() == pytest.approx(hi) and z.min() <= max(lo, 5.0) + (hi - lo) / 4
        assert all(e.sun_altitude_deg < -12 for e in plan)
        assert [e.position_angle_deg for e in plan[:3]] == [0.0, 90.0, 0.0]
        # the observed (astropy) zenith distance follows the plan (refraction < 0.1 deg here);
        # field stabilised: rotator = PA - parallactic angle
        cat = get_catalog("galactic_center") if key == "gc" else synthetic_cluster(0, n_stars=20)
        for e in plan[::4]:
            fp = _with_warnings_ignored(apparent_positions, cat, **e.astrometry_kwargs())
            assert fp.zenith_distance_deg == pytest.approx(e.zenith_distance_deg, abs=0.1)
            r = (e.position_angle_deg - fp.parallactic_angle_deg + 180) % 360 - 180
            assert fp.rotator_angle_deg == pytest.approx(r, abs=1e-9)
    with pytest.raises(ValueError, match="never reaches zenith distance"):
        plan_night(field_center("47tuc"), 3, zenith_range=(10, 40))
    with pytest.raises(ValueError, match="night must be a date"):
        plan_night(field_center("gc"), 3, night="tomorrow")


# ------------------------------------------------------------------------- catalogues
def test_true_and_noisy_catalogues():
    gc = get_catalog("galactic_center")
    truth = true_catalog(gc, 3)
    missing = ~gc.has_pm
    assert missing.sum() == 2
    assert np.all(truth.has_pm) and not np.any(np.asarray(truth.table["pm_listed"])[missing])
    np.testing.assert_array_equal(truth.table["x_east"], gc.table["x_east"])  # the shipped list is the truth
    np.testing.assert_array_equal(truth.pmra[~missing], gc.pmra[~missing])
    np.testing.assert_array_equal(truth.table["pmra_err"][missing], [4.0, 4.0])
    seen = noisy_catalog(truth, 4)
    assert "pm_listed" not in seen.table.colnames
    assert np.all(np.isnan(seen.pmra[missing])) and np.all(np.isfinite(seen.pmra[~missing]))
    d = (np.asarray(seen.table["x_east"]) - np.asarray(truth.table["x_east"])) * 1e3  # mas
    assert 0.75 < np.std(d) < 1.3  # stated 1 mas per axis
    zero = noisy_catalog(truth, 4, error_scale=0.0)
    np.testing.assert_array_equal(zero.table["x_east"], truth.table["x_east"])


def test_catalogue_errors_follow_stated_covariance():
    """Catalogue minus truth at a 2027 epoch, whitened with the covariance the fit will use
    (propagate of the seen catalogue: position + dt^2 pm errors, inflated for unlisted pm):
    chi2 with 2 degrees of freedom per star."""
    chi2 = []
    for k, cat in enumerate([true_catalog(get_catalog("galactic_center"), 5), synthetic_cluster(6, n_stars=300)]):
        for seed in range(3):
            seen = noisy_catalog(cat, 100 * k + seed)
            a = _with_warnings_ignored(propagate, cat, 2027.5, missing_pm="ignore")
            b = _with_warnings_ignored(propagate, seen, 2027.5)
            d = np.column_stack([(b.ra - a.ra) * np.cos(np.radians(a.dec)), b.dec - a.dec]) * 3.6e6  # mas
            chi2.append(np.einsum("ni,nij,nj->n", d, np.linalg.inv(b.cov), d))
    chi2 = np.concatenate(chi2)
    # mean 2, standard error 2/sqrt(n) ~ 0.05 for ~1200 stars
    assert abs(chi2.mean() - 2.0) < 0.25
    assert abs(np.mean(chi2 < 2 * np.log(1 / (1 - 0.683))) - 0.683) < 0.05  # 68 % coverage


def test_synthetic_cluster_like_47tuc():
    cat = synthetic_cluster(1, n_stars=600, radius_arcsec=9.0)
    assert len(cat) == 600 and cat.kind == "absolute" and np.all(cat.epoch == 2006.0)
    r = cat.separation_from(TUC47["center_deg"])
    assert r.max() <= 9.0 + 1e-6
    # King core of 21.6 arcsec: nearly uniform surface density within 9 arcsec
    inner = np.mean(r < 9.0 / np.sqrt(2))
    assert 0.45 < inner < 0.56
    pm = np.column_stack([cat.pmra, cat.pmdec]) - np.asarray(TUC47["pm_mas_yr"])
    assert 0.50 < np.std(pm) < 0.62
    assert 0.1 <= cat.table["ra_err"].min() and cat.table["ra_err"].max() <= 0.3
    mags, note = band_magnitudes(cat)
    np.testing.assert_array_equal(mags, cat.mag("L"))
    assert np.mean(mags > 16) > 0.5  # a rising luminosity function
    gc_mags, gc_note = band_magnitudes(get_catalog("galactic_center"))
    assert np.all(np.isfinite(gc_mags)) and "Lp_wright" in gc_note and "colour" in gc_note


# ------------------------------------------------------------------------- geometry
def test_model_equation_from_written_files(gc_points):
    """Independent path: from the truth FILES (true catalogue, flexure table, poses) and the
    plan in the campaign, recompute x with apparent_positions, Delta with the flexure basis,
    the pose, and compare with G(p) of the true pixel positions written in stars.ecsv."""
    out, camp, truth, tables = gc_points
    c = load_campaign(camp)
    cat = load_catalog(out / "truth" / "catalog_true.ecsv")
    flex = Table.read(out / "truth" / "flexure.ecsv")
    basis = FlexureBasis(**{k: (tuple(v) if k == "functions" else v) for k, v in flex.meta["basis"].items()})
    assert list(flex["name"]) == basis.names
    coeffs = np.asarray(flex["coeff_arcsec"], float)
    exps = Table.read(out / "truth" / "exposures.ecsv")
    stars = Table.read(out / "truth" / "stars.ecsv")
    field = truth.field
    (sky,) = c.sky
    n_checked = 0
    for k, exp in enumerate(sky.exposures):
        x = exp.extra
        fp = _with_warnings_ignored(
            apparent_positions, cat, time=x["time"], pointing=(x["ra"], x["dec"]), wavelength=x["wavelength_um"],
            position_angle=x["position_angle_deg"], site=sky.site,
            weather={"pressure_hpa": x["pressure_hpa"], "temperature_c": x["temperature_c"],
                     "relative_humidity": x["humidity"]})
        rows = stars[stars["exposure"] == exp.file.stem]
        idx = {n: i for i, n in enumerate(fp.names)}
        sel = np.array([idx[n] for n in rows["star"]])
        xy = fp.xy[sel]
        delta = basis.design(fp.u[sel], fp.v[sel], fp.zenith_distance_deg, fp.rotator_angle_deg, 1) @ coeffs
        s, th = exps["pose_scale"][k], exps["pose_rot_rad"][k]
        t = np.array([exps["pose_shift_x_arcsec"][k], exps["pose_shift_y_arcsec"][k]])
        X = xy + delta + s * xy + th * np.column_stack([-xy[:, 1], xy[:, 0]]) + t
        g = np.column_stack(field(np.asarray(rows["px"]), np.asarray(rows["py"])))
        assert np.max(np.abs(g - X)) < ARCSEC_TOL
        # every catalogue star that lands on the detector (margin 8 px) is there, no other
        gx, gy = field.domain[1] - 8, field.domain[3] - 8
        assert np.all((rows["px"] > 7.5) & (rows["px"] < gx) & (rows["py"] > 7.5) & (rows["py"] < gy))
        n_checked += len(rows)
        # the flexure is there: Delta is not a similarity
        _, res = _similarity_fit(xy, g)
        assert np.sqrt(np.mean(res**2)) > 1e-4
    assert n_checked > 300


def test_flexure_off_is_a_similarity(field):
    """Without flexure, G(p) - x is exactly the pose: recovered by a similarity fit."""
    plan = plan_night(field_center("gc"), 3, rng=2)
    truth = draw_sky_truth(field, true_catalog(get_catalog("gc"), 2), plan, 3, flexure_sigma_mas=0.0)
    for e in truth.exposures:
        g = np.column_stack(field(e.pixels[:, 0], e.pixels[:, 1]))
        p, res = _similarity_fit(e.apparent.xy, g)
        assert np.max(np.abs(res)) < ARCSEC_TOL
        np.testing.assert_allclose(p, [e.scale, e.rotation, *e.shift], rtol=0, atol=1e-12)
        assert abs(e.rotation - truth.frame_rotation) < np.radians(0.1)
    # a given flexure is used as given; the basis can change
    basis = FlexureBasis(degree=3, functions=("1", "tan_z"))
    c = np.zeros(basis.n_params)
    c[basis.names.index("flex[tan_z][u:u3v0]")] = 2e-3
    t2 = draw_sky_truth(field, true_catalog(get_catalog("gc"), 2), plan, 3, flexure=basis, flexure_coeffs=c)
    e = t2.exposures[0]
    z = np.radians(e.apparent.zenith_distance_deg)
    d_tel = np.column_stack([2e-3 * np.tan(z) * (e.apparent.u / 5.0) ** 3, np.zeros(len(e))])
    r = np.radians(e.apparent.rotator_angle_deg)
    m = np.array([[np.cos(r), np.sin(r)], [-np.sin(r), np.cos(r)]])
    np.testing.assert_allclose(e.flexure, d_tel @ m.T, rtol=0, atol=1e-15)
    with pytest.raises(ValueError, match="flexure_coeffs"):
        draw_sky_truth(field, true_catalog(get_catalog("gc"), 2), plan, 3, flexure=basis, flexure_coeffs=[1.0])


def test_catalogue_errors_enter_through_the_jacobian(gc_points):
    """x(seen catalogue) - x(true catalogue) = J d, with d from catalog_errors.ecsv."""
    out, camp, truth, tables = gc_points
    seen = load_catalog(out / "catalog.ecsv")
    errs = Table.read(out / "truth" / "catalog_errors.ecsv")
    for e, pe in zip(truth.exposures[:2], truth.plan):
        fp = _with_warnings_ignored(apparent_positions, seen, **pe.astrometry_kwargs())
        idx = {n: i for i, n in enumerate(fp.names)}
        sel = np.array([idx[n] for n in e.names])
        rows = errs[errs["exposure"] == e.name]
        assert list(rows["star"]) == list(e.names)
        d = np.column_stack([rows["d_east"], rows["d_north"]])
        jd = d @ e.apparent.jacobian.T
        diff = fp.xy[sel] - e.apparent.xy
        assert np.max(np.abs(diff - jd)) < 1e-4 * np.max(np.abs(jd)) + 1e-8
        assert np.max(np.abs(jd)) > 1e-4  # the errors are there (1 mas and more)


def test_zero_catalogue_errors_give_the_true_positions(field):
    plan = plan_night(field_center("47tuc"), 2, zenith_range=FIELDS["47tuc"]["zenith_range"],
                      night=FIELDS["47tuc"]["night"], rng=1)
    cat = synthetic_cluster(2, n_stars=150)
    truth = draw_sky_truth(field, cat, plan, 4)
    seen = noisy_catalog(truth.catalog, 5, error_scale=0.0)
    for e, pe in zip(truth.exposures, plan):
        fp = _with_warnings_ignored(apparent_positions, seen, **pe.astrometry_kwargs())
        idx = {n: i for i, n in enumerate(fp.names)}
        sel = np.array([idx[n] for n in e.names])
        assert np.max(np.abs(fp.xy[sel] - e.apparent.xy)) < ARCSEC_TOL
        np.testing.assert_allclose(fp.cov[sel], e.apparent.cov, rtol=1e-12)
    assert min(len(e) for e in truth.exposures) > 50


# ------------------------------------------------------------------------- measured tables
def test_measured_tables_follow_the_interface(gc_points):
    out, camp, truth, tables = gc_points
    c = load_campaign(camp)
    (sky,) = c.sky
    assert c.instrument.preset == "metis-lm" and sky.catalog == (out / "catalog.ecsv").resolve()
    assert sky.site.name == "armazones" and len(sky.exposures) == 5
    z = []
    for exp, e, pe in zip(sky.exposures, truth.exposures, truth.plan):
        t = Table.read(exp.file)
        assert t.colnames[:8] == ["star", "x", "y", "sigma_x", "sigma_y", "cov_xy", "flux", "flags"]
        assert str(t["x"].unit) == "pix" and str(t["cov_xy"].unit) == "pix2"
        m = t.meta
        assert m["kind"] == "sky" and m["dataset"] == "gc" and m["exposure"] == exp.file.stem == pe.name
        assert m["time"] == exp.extra["time"] == pe.time
        assert m["ra_deg"] == exp.extra["ra"] and m["dec_deg"] == exp.extra["dec"]
        assert m["position_angle_deg"] == exp.extra["position_angle_deg"] and "rotator_angle_deg" not in m
        assert m["parity"] == 1 and m["site"] == "armazones" and m["catalog"] == "catalog.ecsv"
        assert set(m["weather"]) == {"pressure_hpa", "temperature_c", "relative_humidity"}
        assert m["weather"]["relative_humidity"] == exp.extra["humidity"] < 1
        assert m["wavelength_um"] == exp.extra["wavelength_um"] == pytest.approx(3.796046)
        assert isinstance(m["match_quality"], dict) and isinstance(m["unmatched_catalog_stars"], list)
        assert list(t["star"]) == list(e.names) and np.all(t["flags"] == 0)
        # noise: whitened residuals from the true positions
        cov = np.empty((len(t), 2, 2))
        cov[:, 0, 0], cov[:, 1, 1] = np.asarray(t["sigma_x"]) ** 2, np.asarray(t["sigma_y"]) ** 2
        cov[:, 0, 1] = cov[:, 1, 0] = t["cov_xy"]
        r = np.column_stack([t["x"], t["y"]]) - e.pixels
        z.append(np.einsum("ni,nij,nj->n", r, np.linalg.inv(cov), r))
        assert np.all((t["sigma_x"] > 0.008) & (t["sigma_x"] < 0.06))
        # brighter stars are measured better
        assert np.corrcoef(np.log(t["flux"]), np.log(t["sigma_x"]))[0, 1] < -0.5
    z = np.concatenate(z)
    assert abs(z.mean() - 2.0) < 0.3 and len(z) > 300


def test_spurious_sources_are_unidentified(field):
    plan = plan_night(field_center("gc"), 1, rng=2)
    truth = draw_sky_truth(field, true_catalog(get_catalog("gc"), 2), plan, 3)
    (t,) = observe_sky_points(truth, 4, spurious_per_exposure=5)
    bad = t["star"] == ""
    assert bad.sum() == 5 and np.all(t["flags"][bad] == FLAG_UNIDENTIFIED) and np.all(t["flags"][~bad] == 0)
    assert t.meta["match_quality"]["n_unmatched_sources"] == 5


# ------------------------------------------------------------------------- files
def test_truth_round_trip(gc_points):
    out, camp, truth, tables = gc_points
    back = load_sky_truth(out)
    assert len(back) == len(truth)
    np.testing.assert_array_equal(back.field.cx, truth.field.cx)
    np.testing.assert_array_equal(back.flexure_coeffs, truth.flexure_coeffs)
    assert back.flexure == truth.flexure
    assert back.frame_rotation == truth.frame_rotation and back.frame_scale == truth.frame_scale
    for a, b in zip(back.exposures, truth.exposures):
        assert a.name == b.name and a.scale == b.scale and a.rotation == b.rotation
        np.testing.assert_array_equal(a.shift, b.shift)
        np.testing.assert_array_equal(a.pixels, b.pixels)
        np.testing.assert_array_equal(a.focal, b.focal)
        np.testing.assert_array_equal(a.apparent.xy, b.apparent.xy)
        np.testing.assert_array_equal(a.apparent.jacobian, b.apparent.jacobian)
        assert a.apparent.zenith_distance_deg == b.apparent.zenith_distance_deg
        assert a.apparent.rotator_angle_deg == b.apparent.rotator_angle_deg
        assert list(a.names) == list(b.names)
    for pa, pb in zip(back.plan, truth.plan):
        assert pa == pb
    info = json.loads((out / "truth" / "truth.json").read_text())
    assert info["seed"] == 11 and info["target"] == "gc"
    # the SIAF and AstroMet truth files hold the field
    from astrocal.formats.convert import read_solutions

    x, y = np.meshgrid(np.linspace(-0.5, 2047.5, 9), np.linspace(-0.5, 2047.5, 9))
    u, v = truth.field(x, y)
    for name in ("distortion_truth.ecsv", "distortion_truth.fits"):
        (sol,) = read_solutions(out / "truth" / name).values()
        u2, v2 = sol.field(x, y)
        assert np.max(np.hypot(u2 - u, v2 - v)) < 1e-9


def test_points_campaign_nothing_overwritten(tmp_path, field):
    out = tmp_path / "p"
    write_sky_points_campaign(out, "47tuc", seed=1, n_exposures=1, distortion=field)
    before = (out / "campaign.toml").read_bytes()
    with pytest.raises(ProductExistsError):
        write_sky_points_campaign(out, "47tuc", seed=2, n_exposures=1, distortion=field)
    assert (out / "campaign.toml").read_bytes() == before
    # one existing truth file blocks everything
    lone = tmp_path / "lone"
    (lone / "truth").mkdir(parents=True)
    (lone / "truth" / "stars.ecsv").write_text("keep")
    with pytest.raises(ProductExistsError):
        write_sky_points_campaign(lone, "gc", seed=1, n_exposures=1, distortion=field)
    assert not (lone / "campaign.toml").exists() and not (lone / "catalog.ecsv").exists()
    write_sky_points_campaign(out, "47tuc", seed=2, n_exposures=1, distortion=field, overwrite=True)
    assert (out / "campaign.toml").read_bytes() != before


# ------------------------------------------------------------------------- images
from astropy.io import fits  # noqa: E402
from astropy.wcs import WCS  # noqa: E402

from astrocal.cli import main  # noqa: E402
from astrocal.image.centroid import fit_centroids  # noqa: E402
from astrocal.image.psf import diffraction_psf  # noqa: E402
from astrocal.sim.sky import SkySimSettings, render_sky, simulate_sky, sky_psf, sky_radiometry  # noqa: E402

SMALL = dict(detector_shape=(384, 384), n_exposures=2)


@pytest.fixture(scope="module")
def tuc_images(tmp_path_factory):
    """Two 384 x 384 exposures of the 47 Tuc core, all effects on."""
    with iers.conf.set_temp("auto_download", False):
        return simulate_sky(tmp_path_factory.mktemp("skyimg") / "tuc", target="47tuc", seed=7,
                            cluster_stars=1200, **SMALL)


def test_image_campaign_and_headers(tuc_images):
    res = tuc_images
    c = load_campaign(res.campaign)
    assert c.instrument.preset == "metis-lm" and c.instrument.detector_shape == (384, 384)
    (sky,) = c.sky
    assert sky.name == "47tuc" and sky.filter == "Lp" and sky.catalog == res.catalog.resolve()
    assert sky.background == res.background.resolve() and sky.flat == res.flat.resolve() and sky.band == "L"
    assert c.fit.flexure_degree == 2 and tuple(c.fit.flexure_functions) == ("1", "cos_z", "sin_z")
    assert c.measure.output == res.directory.resolve() / "measured"
    assert [e.file for e in sky.exposures] == [p.resolve() for p in res.exposures]
    seen = load_catalog(res.catalog)
    assert len(seen) == 1200 and seen.kind == "absolute" and "pm_listed" not in seen.table.colnames
    np.testing.assert_array_equal(seen.mag("L"), res.truth.catalog.mag("L"))
    for k, (exp, e, pe) in enumerate(zip(sky.exposures, res.truth.exposures, res.truth.plan)):
        h = fits.getheader(exp.file)
        data = fits.getdata(exp.file)
        assert data.shape == (384, 384) and data.dtype.kind == "f" and data.dtype.itemsize == 4
        assert h["RA"] == exp.extra["ra"] == pe.ra_deg and h["DEC"] == exp.extra["dec"]
        assert h["HIERARCH ESO ADA POSANG"] == exp.extra["position_angle_deg"]
        assert h["HIERARCH ASTROCAL MIDTIME"] == exp.extra["time"] == pe.time
        t_start = Time(h["DATE-OBS"], scale="utc")
        assert (Time(pe.time) - t_start).sec == pytest.approx(h["EXPTIME"] / 2, abs=1e-3)
        assert h["HIERARCH ESO TEL AMBI PRES START"] == exp.extra["pressure_hpa"]
        assert h["HIERARCH ESO TEL AMBI TEMP"] == exp.extra["temperature_c"]
        assert h["HIERARCH ESO TEL AMBI RHUM"] == pytest.approx(100 * exp.extra["humidity"])
        assert h["HIERARCH ASTROCAL WAVELEN"] == exp.extra["wavelength_um"]
        assert h["HIERARCH ASTROCAL ZD"] == pytest.approx(e.apparent.zenith_distance_deg)
        assert h["HIERARCH ESO TEL AIRM START"] == pytest.approx(e.apparent.airmass)
        assert h["HIERARCH ASTROCAL ROTANG"] == pytest.approx(e.apparent.rotator_angle_deg)
        assert 0.6 <= h["HIERARCH ASTROCAL SIM STREHL"] <= 0.9
        assert h["FILTER"] == "Lp" and h["HIERARCH ESO INS MODE"] == "IMG_LM"
        # the nominal WCS has the sky's orientation: stars land near their true pixels
        # (within pose, distortion and refraction: tens of pixels, not a mirrored field)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            w = WCS(h)
            px = _with_warnings_ignored(_radec_to_pixels, w, seen, pe.time, e.names)
        assert np.median(np.hypot(*(px - e.pixels).T)) < 30
    rows = Table.read(res.truth_files["stars"])
    assert {"flux_e", "peak_e", "saturated", "sensitive", "crb_sigma_x", "crb_snr"} <= set(rows.colnames)
    ok = rows["sensitive"] & ~rows["saturated"]
    assert np.all(np.isfinite(rows["crb_sigma_x"][ok])) and ok.sum() > 8
    assert np.all(np.isnan(rows["crb_sigma_x"][~rows["sensitive"]]))
    info = json.loads(res.truth_files["truth_json"].read_text())
    assert info["seed"] == 7 and info["exposure_plan"]["mode"] in ("fast", "slow")
    assert info["settings"]["target"] == "47tuc"


def _radec_to_pixels(w, cat, time, names):
    p = propagate(cat, time)
    idx = {n: i for i, n in enumerate(p.names)}
    k = np.array([idx[n] for n in names])
    x, y = w.all_world2pix(p.ra[k], p.dec[k], 0)
    return np.column_stack([x, y])


def test_background_level_and_noise(tuc_images):
    """The background frame's level is the radiometry's thermal background (+ dark)."""
    res = tuc_images
    info = json.loads(res.truth_files["truth_json"].read_text())
    xp = info["exposure_plan"]
    det = info["detector"]
    bg = fits.getdata(res.background)
    left, right, bottom, top = det["border_px"]
    inner = bg[bottom:bg.shape[0] - top, left:bg.shape[1] - right]
    # one background for every exposure (the night's mean temperature) unless background_drift
    levels = {r["background_e_per_s"] for r in info["radiometry"]}
    assert len(levels) == 1
    expect = (info["radiometry"][0]["background_e_per_s"] * xp["dit_s"]) / det["gain_e_per_adu"]
    # the flat field (3 % large scale, 1 % pixel) and the middle exposure's temperature
    assert np.median(inner) == pytest.approx(expect, rel=0.05)
    for k, path in enumerate(res.exposures):
        frame = fits.getdata(path)[bottom:bg.shape[0] - top, left:bg.shape[1] - right]
        assert np.median(frame - inner) == pytest.approx(0.0, abs=0.01 * expect)  # stars are sparse
    rad = sky_radiometry("metis-lm", temperature_c=8.0)
    assert sky_radiometry("metis-lm", temperature_c=6.0).background_e_per_s < 0.93 * rad.background_e_per_s
    assert 0.8e5 < rad.background_e_per_s < 1.6e5  # L' ~ 3.9 mag/arcsec2
    # Vega through the ELT: 1.6e11 e/s at magnitude 0
    assert rad.star_e_per_s(0.0) == pytest.approx(1.59e11, rel=0.02)
    assert rad.star_e_per_s(5.0) == pytest.approx(rad.star_e_per_s(0.0) / 100)


def test_noise_free_centroids_match_truth(tmp_path):
    """Bare renders (no detector, no background): a PSF fit with the exposure's AO PSF
    finds every isolated star at its true pixel position."""
    res = simulate_sky(tmp_path / "ideal", SkySimSettings(target="47tuc", seed=5, n_exposures=1,
                                                          detector_shape=(768, 768), cluster_stars=250).ideal())
    info = json.loads(res.truth_files["truth_json"].read_text())
    core = diffraction_psf(3.796046, 5.47)
    psf = sky_psf(core, info["psf"]["strehl"][0], info["psf"]["seeing_arcsec_effective"][0])
    assert psf.halo_fwhm_px == pytest.approx(info["psf"]["halo_fwhm_px"][0])
    image = fits.getdata(res.exposures[0]).astype(float)
    gain = info["detector"]["gain_e_per_adu"]
    e = res.truth.exposures[0]
    x, y = e.pixels[:, 0], e.pixels[:, 1]
    d = np.hypot(x[:, None] - x[None], y[:, None] - y[None])
    np.fill_diagonal(d, np.inf)
    # isolated: no neighbour within 40 px, none brighter within the halo (a 100x brighter
    # star 60 px away biases a fit with a constant local background by ~0.01 px: physics)
    flux = star_flux_e = np.asarray(Table.read(res.truth_files["stars"])["flux_e"], float)
    brighter = flux[None, :] > flux[:, None]
    iso = ((d.min(axis=1) > 40) & ~np.any(brighter & (d < 150), axis=1)
           & (x > 30) & (x < 737) & (y > 30) & (y < 737))
    assert iso.sum() >= 4
    fit = fit_centroids(image, x[iso] + 0.3, y[iso] - 0.2, psf)
    err = np.hypot(fit.x - x[iso], fit.y - y[iso])
    assert np.max(err) < 2e-3
    np.testing.assert_allclose(fit.flux * gain, star_flux_e[iso], rtol=1e-3)


def test_render_sky_single_stars_are_exact():
    """One star at a time: the rendered AO PSF (core stamps + FFT halo) is the PSF model at
    the star's sub-pixel position, pixel by pixel, and a fit returns it to 1e-6 px."""
    core = diffraction_psf(3.796046, 5.47)
    psf = sky_psf(core, 0.75, 0.8)
    rng = np.random.default_rng(1)
    for x, y in rng.uniform(100, 156, (6, 2)):
        img, kept = render_sky((256, 256), [x], [y], [1e6], psf, pad=37)
        fit = fit_centroids(img, [x + 0.3], [y - 0.2], psf)
        assert np.hypot(fit.x[0] - x, fit.y[0] - y) < 1e-6
        assert 0.95 < kept < 1.0
        # pixel values: the PSF model (core + halo) at the star's offset, near the star
        ix, iy = int(round(x)), int(round(y))
        cut = img[iy - 30:iy + 31, ix - 30:ix + 31]
        gx, gy = np.meshgrid(np.arange(ix - 30, ix + 31) - x, np.arange(iy - 30, iy + 31) - y)
        model = 1e6 * psf.evaluate(gx, gy)
        assert np.max(np.abs(cut - model)) < 1e-4 * model.max()
    # a brighter star's halo displaces a neighbour's centroid (physics, not rendering)
    img, _ = render_sky((256, 256), [120.3, 180.3], [128.6, 128.6], [1e6, 1e8], psf, pad=37)
    fit = fit_centroids(img, [120.5], [128.5], psf)
    assert 1e-3 < abs(fit.x[0] - 120.3) < 0.1


def test_points_only_shares_the_truth(tmp_path, tuc_images):
    """--points-only with the same seed: the same truth, written as measured tables."""
    pts = simulate_sky(tmp_path / "pts", target="47tuc", seed=7, cluster_stars=1200, points_only=True, **SMALL)
    assert pts.flat is None and all(p.suffix == ".ecsv" for p in pts.exposures)
    for a, b in zip(pts.truth.exposures, tuc_images.truth.exposures):
        np.testing.assert_array_equal(a.pixels, b.pixels)
        assert list(a.names) == list(b.names)
    assert (tmp_path / "pts" / "catalog.ecsv").read_bytes() == tuc_images.catalog.read_bytes()
    c = load_campaign(pts.campaign)
    t = Table.read(c.sky[0].exposures[0].file)
    assert t.meta["kind"] == "sky" and list(t["star"]) == list(pts.truth.exposures[0].names)


def test_seed_reproduces_files(tmp_path):
    a = simulate_sky(tmp_path / "a", seed=3, n_exposures=1, detector_shape=(128, 128), threads=1)
    b = simulate_sky(tmp_path / "b", seed=3, n_exposures=1, detector_shape=(128, 128), threads=2)
    for pa, pb in zip(a.exposures + (a.flat, a.background), b.exposures + (b.flat, b.background)):
        assert pa.read_bytes() == pb.read_bytes()
    for name in ("stars", "exposures", "catalog_true", "truth_json"):
        assert a.truth_files[name].read_bytes() == b.truth_files[name].read_bytes(), name
    assert a.catalog.read_bytes() == b.catalog.read_bytes()


def test_distortion_from_a_lab_campaign(tmp_path):
    """The sky campaign can share the instrument field of a lab campaign."""
    from astrocal.sim.lab import simulate_lab

    lab = simulate_lab(tmp_path / "lab", seed=1, n_exposures=1, detector_shape=(256, 256))
    sky = simulate_sky(tmp_path / "sky", seed=2, distortion_file=str(lab.directory), points_only=True,
                       n_exposures=1)
    np.testing.assert_array_equal(sky.truth.field.cx, lab.truth.field.cx)
    assert load_campaign(sky.campaign).instrument.detector_shape == (256, 256)
    siaf = simulate_sky(tmp_path / "sky2", seed=2, distortion_file=str(lab.truth_files["distortion_ecsv"]),
                        points_only=True, n_exposures=1)
    x = np.linspace(-0.5, 255.5, 7)
    np.testing.assert_allclose(np.column_stack(siaf.truth.field(x, x)), np.column_stack(lab.truth.field(x, x)),
                               atol=1e-10)
    with pytest.raises(ValueError, match="domain"):
        simulate_sky(tmp_path / "sky3", seed=2, distortion_file=str(lab.directory), detector_shape=(128, 128),
                     points_only=True, n_exposures=1)


def test_cli_sky(tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["simulate", "sky", "--field", "gc", "--out", str(out), "--seed", "1", "--exposures", "2",
            "--detector-shape", "128", "128", "--threads", "1"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "Galactic Center" in printed and "DIT" in printed and "Strehl" in printed
    before = (out / "campaign.toml").read_bytes()
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "file exists" in err and "--overwrite" in err
    assert (out / "campaign.toml").read_bytes() == before
    assert main(["simulate", "sky", "--out", str(tmp_path / "p"), "--seed", "1", "--exposures", "2",
                 "--points-only", "--field", "47tuc", "--flexure-mas", "0"]) == 0
    info = json.loads((tmp_path / "p" / "truth" / "truth.json").read_text())
    assert info["settings"]["points_only"] and info["settings"]["flexure_sigma_mas"] == 0
    assert np.all(np.asarray(info["flexure"]["coeffs_arcsec"]) == 0)
    assert main(["simulate", "sky", "--out", str(tmp_path / "x"), "--distortion", str(tmp_path / "nope.fits"),
                 "--points-only"]) == 1
    assert "nope.fits" in capsys.readouterr().err


def test_settings_validation():
    with pytest.raises(ValueError, match="unknown sky field"):
        SkySimSettings(target="m31")
    with pytest.raises(ValueError, match="strehl_range"):
        SkySimSettings(strehl_range=(0.5, 1.2))
    with pytest.raises(ValueError, match="METIS IMG_LM only"):
        SkySimSettings(instrument="metis-n")
    with pytest.raises(ValueError, match="flexure"):
        SkySimSettings(flexure_functions=("cos_q",))
    s = SkySimSettings().ideal()
    assert not s.thermal and not s.photon_noise and not s.flat


@pytest.mark.slow
def test_full_size_default_campaign(tmp_path):
    """The default Galactic Center campaign at full size (12 exposures of 2048 x 2048)."""
    res = simulate_sky(tmp_path / "gc", seed=1)
    sm = res.summary
    assert sm["detector_shape"] == [2048, 2048] and len(res.exposures) == 12
    assert min(sm["stars_per_exposure"]) > 60
    assert min(sm["zenith_distance_deg"]) < 10 and max(sm["zenith_distance_deg"]) > 55
    assert 0.6 <= min(sm["strehl"]) and max(sm["strehl"]) <= 0.9
