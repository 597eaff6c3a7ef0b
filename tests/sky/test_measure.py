"""Tests of the sky measure stage (astrocal.sky.measure and its hook in ``astrocal measure``).

The scene is rendered here, offline: a synthetic catalogue of ~70 stars around the
Galactic Center's position (so the field is high in the sky from Armazones at the chosen
time), the stars' TRUE apparent positions for one exposure from
astrocal.sky.astrometry.apparent_positions, a small pose (scale, rotation, translation)
and a quadratic distortion, rendered with the lab's AO-star PSF through the lab's detector
model into a 300 x 300 px METIS IMG_LM frame with a FITS header (time, pointing,
weather). The catalogue given to the stage is the truth plus errors drawn from its stated
covariances. A few catalogue stars in the field are not rendered and a few spurious
sources are added.
"""
from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.time import Time, TimeDelta

from astrocal.atomic import ProductExistsError
from astrocal.campaign import load_campaign
from astrocal.cli import main
from astrocal.sim import detector as D
from astrocal.sources import FLAG_UNIDENTIFIED
from astrocal.stages.measure import measure_campaign
from astrocal.image.psf import AOStarPSF, render_spots
from astrocal.sky.astrometry import EpochGapWarning, apparent_positions
from astrocal.sky.projection import inverse_gnomonic
from astrocal.sky.catalog import catalog_from_arrays
from astrocal.sky.exposure import SkyMeasureError
from astrocal.sky.stars import star_psf
from astrocal.sky.measure import (FLAG_BLEND, FLAGS_REJECT, TABLE_COLUMNS,
                                  measure_sky_exposure, read_sky_table)

SHAPE = (300, 300)
PIX = 5.47
RA0, DEC0 = 266.4168, -29.0078
T_MID = Time("2026-05-01T04:00:00", scale="utc")  # zenith distance ~51 deg from Armazones
DIT, NDIT = 0.5, 4
WEATHER = {"pressure_hpa": 705.0, "temperature_c": 6.0, "relative_humidity": 0.2}
WAVELENGTH = 3.796046  # METIS Lp filter centre (instrument registry)
TRUE_PA, TRUE_PARITY = 35.0, -1
POSE_SCALE, POSE_ROT_DEG, POSE_T = 1.0015, 0.1, (0.15, -0.10)  # arcsec
SKY_E = 3000.0  # thermal sky, electrons per pixel per DIT
N_MISSING, SPURIOUS = 3, ((40.3, 250.6, 4e5), (260.2, 30.7, 3e5))


pytestmark = pytest.mark.usefixtures("offline")  # tests/conftest.py


def _catalog_arrays(rng, n=110, half=1.7, min_sep=0.07):
    """Standard coordinates (arcsec) of n stars in a +-half box, min_sep apart."""
    pts = []
    while len(pts) < n:
        p = rng.uniform(-half, half, 2)
        if all(math.hypot(*(p - q)) > min_sep for q in pts):
            pts.append(p)
    return np.array(pts)


def _catalogs(rng, *, pm=True, epoch=2025.0, n=110, half=1.7, meta=None):
    """(true catalogue, catalogue given to the stage): absolute ICRS, errors 0.3 mas."""
    xy = _catalog_arrays(rng, n, half)
    n = len(xy)
    ra, dec = inverse_gnomonic(np.radians(xy[:, 0] / 3600), np.radians(xy[:, 1] / 3600),
                               np.radians(RA0), np.radians(DEC0))
    ra, dec = np.degrees(ra), np.degrees(dec)
    names = [f"S{k:03d}" for k in range(n)]
    kw = dict(name=names, epoch=epoch, ra_err=np.full(n, 0.3), dec_err=np.full(n, 0.3),
              mags={"Lp": rng.uniform(10, 14, n)}, meta=meta)
    if pm:
        kw.update(pmra=rng.normal(0, 3, n), pmdec=rng.normal(0, 3, n),
                  pmra_err=np.full(n, 0.05), pmdec_err=np.full(n, 0.05))
    truth = catalog_from_arrays(ra=ra, dec=dec, **kw)
    # the catalogue = truth + its stated errors (0.3 mas east / north)
    e = rng.normal(0, 0.3, (n, 2)) / 3.6e6
    given = catalog_from_arrays(ra=ra + e[:, 0] / np.cos(np.radians(dec)), dec=dec + e[:, 1], **kw)
    return truth, given


def true_pixels(fp, shape=SHAPE):
    """Pixel positions of the stars: pose, then the field G^-1 (linear + quadratic)."""
    x = np.column_stack([fp.x, fp.y])
    th = math.radians(POSE_ROT_DEG)
    R = np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
    X = POSE_SCALE * x @ R.T + np.asarray(POSE_T)
    c = np.array([(shape[1] - 1) / 2, (shape[0] - 1) / 2])
    p = c + X * 1e3 / PIX
    q = (p - c) / 150.0
    p = p + 0.8 * np.column_stack([q[:, 0] ** 2 - 0.5, q[:, 0] * q[:, 1]])
    return p


def render_exposure(path, truth, rng, *, pa=TRUE_PA, parity=TRUE_PARITY, header_extra=None,
                    n_missing=N_MISSING, spurious=SPURIOUS, shape=SHAPE, sky_frame=None):
    """Render one exposure of the true catalogue; returns the truth dict."""
    fp = apparent_positions(truth, time=T_MID, pointing=(RA0, DEC0), wavelength=WAVELENGTH,
                            position_angle=pa, weather=WEATHER, parity=parity)
    p = true_pixels(fp, shape)
    inside = (p[:, 0] > 8) & (p[:, 0] < shape[1] - 9) & (p[:, 1] > 8) & (p[:, 1] < shape[0] - 9)
    idx = np.flatnonzero(inside)
    missing = idx[:n_missing]  # in the field, not rendered (too faint, say)
    shown = idx[n_missing:]
    flux = 10 ** rng.uniform(4.3, 5.8, len(fp))
    psf = AOStarPSF.from_seeing(star_psf(WAVELENGTH, PIX).core, 0.7)  # the analytic model
    xs, ys, fs = p[shown, 0], p[shown, 1], flux[shown]
    placed = []
    for (sx, sy, sf) in spurious:  # away from every star (else it is a blend, not spurious)
        for dx, dy in ((0, 0), (20, 0), (0, 20), (-20, 0), (0, -20), (20, 20), (-20, -20), (40, 0)):
            if np.min(np.hypot(p[:, 0] - sx - dx, p[:, 1] - sy - dy)) > 15:
                break
        placed.append((sx + dx, sy + dy))
        xs, ys, fs = np.append(xs, sx + dx), np.append(ys, sy + dy), np.append(fs, sf)
    img = np.full(shape, SKY_E, dtype=np.float64)
    if sky_frame is not None:  # a structured thermal background, also written alone
        img += sky_frame
    render_spots(shape, xs, ys, fs, psf, image=img)
    det = D.DetectorModel.from_instrument("metis-lm", "slow", shape=shape, border_px=(4, 4, 4, 4),
                                          seed=5, cosmic_ray_rate_per_cm2_s=0.0)
    frame = D.simulate_frame(img.astype(np.float32), det, rng, exptime=DIT, ndit=NDIT, flat=False)
    start = T_MID - TimeDelta(DIT * NDIT / 2, format="sec")
    hdr = fits.Header()
    hdr["DATE-OBS"] = start.isot
    hdr["EXPTIME"] = DIT * NDIT
    hdr["DIT"] = DIT
    hdr["NDIT"] = NDIT
    hdr["GAIN"] = det.gain_e_per_adu
    hdr["RDNOISE"] = det.read_noise_e
    hdr["FILTER"] = "Lp"
    hdr["RA"] = RA0
    hdr["DEC"] = DEC0
    hdr["HIERARCH ESO TEL AMBI PRES START"] = WEATHER["pressure_hpa"] - 0.5
    hdr["HIERARCH ESO TEL AMBI PRES END"] = WEATHER["pressure_hpa"] + 0.5
    hdr["HIERARCH ESO TEL AMBI TEMP"] = WEATHER["temperature_c"]
    hdr["HIERARCH ESO TEL AMBI RHUM"] = 100 * WEATHER["relative_humidity"]
    for k, v in (header_extra or {}).items():
        if v is None:
            del hdr[k]
        else:
            hdr[k] = v
    fits.PrimaryHDU(frame, hdr).writeto(path, overwrite=True)
    return {"names": fp.names, "xy": p, "shown": shown, "missing": missing,
            "spurious": np.array(placed).reshape(-1, 2), "fp": fp}


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    d = tmp_path_factory.mktemp("sky")
    rng = np.random.default_rng(11)
    truth, given = _catalogs(rng)
    given.write(d / "catalog.ecsv")
    info = render_exposure(d / "gc_00.fits", truth, rng)
    return d, truth, given, info


def write_campaign(d, exposures, *, sky_extra="", measure="", name="campaign.toml", lab=""):
    lines = ["[instrument]", 'name = "METIS IMG_LM"', f"detector_shape = [{SHAPE[0]}, {SHAPE[1]}]",
             "", lab, "[[sky]]", 'name = "gc"', 'catalog = "catalog.ecsv"', sky_extra, "exposures = ["]
    lines += [f"  {{ {e} }}," for e in exposures]
    lines += ["]", "", "[measure]", 'output = "measured/"', measure, ""]
    path = Path(d) / name
    path.write_text("\n".join(lines))
    return path


def _exposure(campaign_path, k=0, j=0):
    c = load_campaign(campaign_path)
    return c.sky[j].exposures[k], c.sky[j], c.instrument


def smooth_sky():
    """A thermal background with a gradient and a broad bump (electrons per DIT): smooth
    on the 64 px scale of the lab reduction's background model."""
    yy, xx = np.mgrid[0:SHAPE[0], 0:SHAPE[1]]
    return 2000.0 * (xx / SHAPE[1]) + 800.0 * np.exp(-((xx - 180.0) ** 2 + (yy - 120.0) ** 2)
                                                     / (2 * 120.0**2))


def with_background(d, truth, rng, name="gc_00.fits"):
    """Render an exposure on smooth_sky() and write that background alone (bg.fits)."""
    sky = smooth_sky()
    info = render_exposure(Path(d) / name, truth, rng, sky_frame=sky)
    det = D.DetectorModel.from_instrument("metis-lm", "slow", shape=SHAPE, border_px=(4, 4, 4, 4),
                                          seed=5, cosmic_ray_rate_per_cm2_s=0.0)
    bg = D.simulate_frame((SKY_E + sky).astype(np.float32), det, rng, exptime=DIT, ndit=NDIT, flat=False)
    hdr = fits.Header({"EXPTIME": DIT * NDIT, "DIT": DIT, "NDIT": NDIT, "GAIN": det.gain_e_per_adu,
                       "RDNOISE": det.read_noise_e})
    fits.PrimaryHDU(bg, hdr).writeto(Path(d) / "bg.fits", overwrite=True)
    return info


def pulls_of(t, info):
    """(measured - true) / sigma of the matched stars, (n, 2)."""
    truth_xy = dict(zip(info["names"], info["xy"]))
    return np.array([((r["x"] - truth_xy[r["star"]][0]) / r["sigma_x"],
                      (r["y"] - truth_xy[r["star"]][1]) / r["sigma_y"])
                     for r in t if r["star"] != ""])


def check_against_truth(t, info, max_pull=5.0):
    """Every rendered star found and named right; positions within the stated errors
    (the rms of the pulls over ~20 stars within a loose band: see test_error_coverage)."""
    star = np.array(t["star"], dtype=str)
    matched = star != ""
    shown = set(info["names"][info["shown"]])
    assert set(star[matched]) == shown  # every rendered star matched, to itself
    pulls = pulls_of(t, info)
    assert np.all(np.abs(pulls) < max_pull), np.abs(pulls).max()
    rms = np.sqrt(np.mean(pulls**2, axis=0))
    assert np.all((rms > 0.5) & (rms < 1.6)), rms
    # spurious sources are unmatched and flagged
    for sx, sy in info["spurious"]:
        d = np.hypot(np.asarray(t["x"]) - sx, np.asarray(t["y"]) - sy)
        k = int(np.argmin(d))
        assert d[k] < 0.5 and t["star"][k] == "" and t["flags"][k] & FLAG_UNIDENTIFIED
    # the catalogue stars in the field without a source are listed
    assert set(info["names"][info["missing"]]) <= set(t.meta["unmatched_catalog_stars"])
    return pulls


# ------------------------------------------------------------------ images
def test_image_stars_recovered_and_matched(scene):
    d, truth, given, info = scene
    camp = write_campaign(d, ['file = "gc_00.fits", position_angle_deg = 35.0, parity = -1'])
    t = measure_sky_exposure(*_exposure(camp))
    assert t.colnames[: len(TABLE_COLUMNS)] == list(TABLE_COLUMNS)
    assert str(t["x"].unit) == "pix" and str(t["cov_xy"].unit) == "pix2"
    pulls = check_against_truth(t, info)
    assert len(pulls) == len(info["shown"]) >= 15
    m = t.meta
    assert m["kind"] == "sky" and m["dataset"] == "gc" and m["exposure"] == "gc_00"
    assert Time(m["time"]).isot == T_MID.isot  # DATE-OBS + EXPTIME/2
    assert (m["ra_deg"], m["dec_deg"]) == (RA0, DEC0)
    assert m["position_angle_deg"] == 35.0 and "rotator_angle_deg" not in m and m["parity"] == -1
    assert m["weather"] == pytest.approx(WEATHER)  # from the ESO TEL AMBI keywords
    assert m["wavelength_um"] == pytest.approx(WAVELENGTH) and m["site"] == "armazones"
    assert m["site_info"]["name"] == "armazones" and m["site_info"]["height_m"] == 3046.0
    assert (m["site_info"]["latitude_deg"], m["site_info"]["longitude_deg"]) == (-24.589, -70.192)
    assert m["site_info"]["typical_weather"]["pressure_hpa"] == 712.0 and "eso.org" in m["site_info"]["provenance"]["height"]
    assert m["catalog"] == "catalog.ecsv"
    assert m["sources"]["time"].startswith("header DATE-OBS") and m["sources"]["position_angle_deg"] == "campaign"
    assert m["match_quality"]["n_matched"] == len(info["shown"]) and m["match_quality"]["rms_px"] < 0.2
    assert m["reject_flags"] == FLAGS_REJECT and m["flag_bits"]["blend"] == FLAG_BLEND
    assert m["derived"]["zenith_distance_deg"] == pytest.approx(info["fp"].zenith_distance_deg, abs=1e-6)
    assert m["n_catalog_outside_field"] > 50
    # the covariances are positive definite
    ok = np.isfinite(t["sigma_x"])
    assert np.all(np.abs(t["cov_xy"][ok]) < t["sigma_x"][ok] * t["sigma_y"][ok])


def test_unknown_angle_and_parity_are_measured(scene):
    d, truth, given, info = scene
    t = measure_sky_exposure(*_exposure(write_campaign(d, ['file = "gc_00.fits"'])))
    check_against_truth(t, info)
    m = t.meta
    assert m["parity"] == TRUE_PARITY and m["sources"]["parity"] == "match"
    # the pose's 0.1 deg rotation is part of what the match measures
    assert m["position_angle_deg"] == pytest.approx(TRUE_PA + POSE_ROT_DEG, abs=0.03)
    assert m["sources"]["position_angle_deg"] == "match"
    # a rotator angle instead of a position angle
    rot = round(float(info["fp"].rotator_angle_deg), 3)
    t = measure_sky_exposure(*_exposure(write_campaign(
        d, [f'file = "gc_00.fits", rotator_angle_deg = {rot}, parity = -1'], name="rot.toml")))
    assert t.meta["rotator_angle_deg"] == rot and "position_angle_deg" not in t.meta
    assert t.meta["derived"]["position_angle_deg"] == pytest.approx(TRUE_PA, abs=1e-3)
    assert t.meta["n_matched"] == len(info["shown"])


@pytest.mark.parametrize("keys, message", [
    ("position_angle_deg = 125.0, parity = -1", r"only with a different orientation: parity -1, "
                                                r"position_angle_deg = 35\.\d\d \(the instrument "
                                                r"frame turned by -89\.\d\d deg"),
    ("position_angle_deg = 35.0, parity = 1", r"only with a different orientation: parity -1"),
])
def test_wrong_angle_or_parity_is_an_error(scene, keys, message):
    d, truth, given, info = scene
    camp = write_campaign(d, [f'file = "gc_00.fits", {keys}'], name="wrong.toml")
    with pytest.raises(SkyMeasureError, match=message) as exc:
        measure_sky_exposure(*_exposure(camp))
    assert "gc_00" in str(exc.value) and "Check position_angle_deg" in str(exc.value)


def test_inconsistent_zenith_distance_is_an_error(scene):
    d, truth, given, info = scene
    camp = write_campaign(d, ['file = "gc_00.fits", zenith_distance_deg = 20.0'], name="zd.toml")
    with pytest.raises(SkyMeasureError, match=r"gc_00.*'zenith_distance_deg' = 20 but the time "
                                              r"2026-05-01T04:00:00.000 UTC .* give 51.\d\d deg"):
        measure_sky_exposure(*_exposure(camp))


def test_no_match_names_the_exposure_and_what_was_tried(scene):
    d, truth, given, info = scene
    other_truth, other = _catalogs(np.random.default_rng(99))  # another field, same place
    other.write(d / "other.ecsv", overwrite=True)
    camp = write_campaign(d, ['file = "gc_00.fits"'], name="other.toml")
    camp.write_text(camp.read_text().replace('catalog = "catalog.ecsv"', 'catalog = "other.ecsv"'))
    with pytest.raises(SkyMeasureError) as exc:
        measure_sky_exposure(*_exposure(camp))
    msg = str(exc.value)
    assert "gc_00.fits (sky exposure 'gc_00' of dataset 'gc')" in msg and "no match" in msg
    assert "tried" in msg and "any rotation, both parities" in msg and "scale within +-5%" in msg


def test_unparseable_header_time_names_the_key_and_file(scene, tmp_path):
    d, truth, given, info = scene
    with fits.open(d / "gc_00.fits") as h:
        h[0].header["DATE-OBS"] = "the night before"
        h.writeto(tmp_path / "bad_time.fits")
    given.write(tmp_path / "catalog.ecsv")
    camp = write_campaign(tmp_path, ['file = "bad_time.fits"'])
    with pytest.raises(SkyMeasureError, match=r"bad_time.fits .*header keyword DATE-OBS: cannot parse "
                                              r"'the night before'"):
        measure_sky_exposure(*_exposure(camp))


def test_epsf_needs_many_stars(scene):
    d, truth, given, info = scene
    camp = write_campaign(d, ['file = "gc_00.fits", position_angle_deg = 35.0, parity = -1'])
    t = measure_sky_exposure(*_exposure(camp), psf="epsf")
    # ~20 stars are too few for an ePSF: the model PSF is kept, and the table says so
    assert t.meta["psf"]["kind"] == "ao_star_model"
    assert any("ePSF not built" in w for w in t.meta["warnings"])
    check_against_truth(t, info)


@pytest.mark.slow
def test_epsf_mode(tmp_path):
    """A 700 x 700 px frame with ~200 stars: the ePSF is built from ~130 isolated ones."""
    rng = np.random.default_rng(12)
    shape = (700, 700)
    truth, given = _catalogs(rng, n=420, half=2.6)
    given.write(tmp_path / "catalog.ecsv")
    info = render_exposure(tmp_path / "gc_00.fits", truth, rng, shape=shape)
    camp = write_campaign(tmp_path, ['file = "gc_00.fits", position_angle_deg = 35.0, parity = -1'])
    camp.write_text(camp.read_text().replace(f"detector_shape = [{SHAPE[0]}, {SHAPE[1]}]",
                                             "detector_shape = [700, 700]"))
    t = measure_sky_exposure(*_exposure(camp), psf="epsf")
    assert t.meta["psf"]["kind"] == "epsf" and t.meta["psf"]["n_stars"] >= 100
    pulls = check_against_truth(t, info, max_pull=5.0)
    assert np.all(np.sqrt(np.mean(pulls**2, axis=0)) < 1.25)


# ------------------------------------------------------------------ star lists
LIST_KEYS = 'time = "2026-05-01T04:00:00", ra = 266.4168, dec = "-29d00m28.08s"'


def star_list_rows(info, rng, sigma=0.01):
    """(x, y, flux, sigma) rows of the rendered stars, positions with noise ``sigma``."""
    xy = info["xy"][info["shown"]] + rng.normal(0, sigma, (len(info["shown"]), 2))
    flux = 10 ** rng.uniform(4, 6, len(xy))
    return xy, flux


def test_star_list_input(scene, tmp_path, caplog):
    d, truth, given, info = scene
    rng = np.random.default_rng(3)
    given.write(tmp_path / "catalog.ecsv")
    xy, flux = star_list_rows(info, rng)
    rows = [(x, y, f, 0.01, 0.01) for (x, y), f in zip(xy, flux)]
    rows += [(-20.0, 100.0, 1e5, 0.01, 0.01), (150.0, 400.0, 1e5, 0.01, 0.01)]  # off the detector
    rows += [(xy[0, 0] + 2.0, xy[0, 1], 3e4, 0.01, 0.01)]  # a spurious neighbour: a blend
    # StarFinder-like text list without a header: x y f sigma_x sigma_y, 0-based
    (tmp_path / "gc_list.txt").write_text("".join("%.4f %.4f %.1f %.3f %.3f\n" % r for r in rows))
    camp = write_campaign(tmp_path, [f'file = "gc_list.txt", {LIST_KEYS}'],
                          sky_extra="x_col = 0\ny_col = 1\nflux_col = 2\nsigma_x_col = 3\nsigma_y_col = 4")
    with caplog.at_level(logging.WARNING, logger="astrocal.sky.measure"):
        t = measure_sky_exposure(*_exposure(camp))
    m = t.meta
    assert m["input"] == "star list" and m["n_sources_outside_detector"] == 2 and len(t) == len(rows) - 2
    assert "2 star(s) of the list lie outside" in caplog.text
    star = np.array(t["star"], dtype=str)
    truth_xy = dict(zip(info["names"], info["xy"]))
    assert set(star[star != ""]) == set(info["names"][info["shown"]])
    for row in t[star != ""]:  # every star named right, at its position
        assert math.hypot(row["x"] - truth_xy[row["star"]][0], row["y"] - truth_xy[row["star"]][1]) < 0.1
    # the blended pair: the real star matched and flagged, its neighbour unmatched
    k = int(np.argmin(np.hypot(t["x"] - xy[0, 0], t["y"] - xy[0, 1])))
    j = int(np.argmin(np.hypot(t["x"] - xy[0, 0] - 2.0, t["y"] - xy[0, 1])))
    assert t["star"][k] == info["names"][info["shown"][0]] and t["flags"][k] & FLAG_BLEND
    assert t["star"][j] == "" and t["flags"][j] & FLAG_UNIDENTIFIED
    assert np.all(t["sigma_x"] == 0.01) and m["errors_source"] == "the star list"
    # the campaign's values, and the stated defaults where nothing was given
    assert m["dec_deg"] == pytest.approx(DEC0, abs=1e-9) and m["sources"]["time"] == "campaign"
    assert m["weather"] == {"pressure_hpa": 712.0, "temperature_c": 8.0, "relative_humidity": 0.15}
    assert all(v.startswith("default: typical value of site armazones")
               for v in m["sources"]["weather"].values())
    assert "weather pressure_hpa, temperature_c, relative_humidity not given" in caplog.text
    assert m["wavelength_um"] == pytest.approx(WAVELENGTH)  # metis-lm's default filter Lp
    assert m["sources"]["wavelength_um"].startswith("default")
    assert m["position_angle_deg"] == pytest.approx(TRUE_PA + POSE_ROT_DEG, abs=0.05)
    assert m["parity"] == TRUE_PARITY


def test_star_list_without_errors(scene, tmp_path):
    d, truth, given, info = scene
    rng = np.random.default_rng(4)
    given.write(tmp_path / "catalog.ecsv")
    xy, flux = star_list_rows(info, rng, sigma=0.02)
    Table({"xcentroid": xy[:, 0], "ycentroid": xy[:, 1], "flux": flux}).write(tmp_path / "gc_list.ecsv")
    camp = write_campaign(tmp_path, [f'file = "gc_list.ecsv", {LIST_KEYS}, position_angle_deg = 35.0, '
                                     'parity = -1, pressure_hpa = 705, temperature_c = "279.15 K", '
                                     'humidity = "20 %"'])
    t = measure_sky_exposure(*_exposure(camp))
    assert t.meta["weather"] == pytest.approx(WEATHER)
    assert t.meta["n_matched"] == len(xy)
    # errors from the scatter of the match residuals, and said so
    s = t.meta["match_quality"]["sigma_px"]
    assert 0.005 < s < 0.1 and np.allclose(t["sigma_x"], s)
    assert "match residual" in t.meta["errors_source"]
    assert any("without position errors" in w for w in t.meta["warnings"])


def test_star_list_without_time_is_an_error(scene, tmp_path):
    d, truth, given, info = scene
    given.write(tmp_path / "catalog.ecsv")
    xy, flux = star_list_rows(info, np.random.default_rng(5))
    Table({"x": xy[:, 0], "y": xy[:, 1]}).write(tmp_path / "gc_list.ecsv")
    camp = write_campaign(tmp_path, ['file = "gc_list.ecsv", ra = 266.4168, dec = -29.0078'])
    with pytest.raises(SkyMeasureError, match=r"gc_list.ecsv \(sky exposure 'gc_list' of dataset 'gc'\): "
                                              r"no exposure time: give 'time'"):
        measure_sky_exposure(*_exposure(camp))


# ------------------------------------------------------------------ epoch gap
def _list_of_fixed_stars(tmp_path, meta):
    """A star list of a catalogue without proper motions at epoch 2015 (the stars do not
    move: truth = catalogue); the catalogue written with ``meta``."""
    rng = np.random.default_rng(8)
    truth, given = _catalogs(rng, pm=False, epoch=2015.0, meta=meta)
    given.write(tmp_path / "catalog.ecsv")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EpochGapWarning)  # fixed stars: the truth here
        fp = apparent_positions(truth, time=T_MID, pointing=(RA0, DEC0), wavelength=WAVELENGTH,
                                position_angle=TRUE_PA, weather=WEATHER, parity=TRUE_PARITY,
                                missing_pm="ignore")
    p = true_pixels(fp)
    ok = (p[:, 0] > 0) & (p[:, 0] < SHAPE[1] - 1) & (p[:, 1] > 0) & (p[:, 1] < SHAPE[0] - 1)
    Table({"x": p[ok, 0], "y": p[ok, 1]}).write(tmp_path / "gc_list.ecsv")
    return write_campaign(tmp_path, [f'file = "gc_list.ecsv", {LIST_KEYS}, position_angle_deg = 35.0, '
                                     'parity = -1'])


def test_epoch_gap_without_proper_motions_is_refused(tmp_path):
    camp = _list_of_fixed_stars(tmp_path, meta=None)
    with pytest.raises(SkyMeasureError, match=r"gc_list.*star\(s\) without proper motion and an epoch "
                                              r"gap of up to 11.\d yr .* refused, because the catalogue "
                                              r"states no proper-motion dispersion"):
        measure_sky_exposure(*_exposure(camp))


def test_epoch_gap_with_a_dispersion_inflates_and_warns(tmp_path):
    camp = _list_of_fixed_stars(tmp_path, meta={"pm_dispersion_mas_yr": 2.0})
    t = measure_sky_exposure(*_exposure(camp))
    m = t.meta
    assert m["n_catalog_inflated_errors"] > 20 and m["epoch_gap_years_max"] == pytest.approx(11.3, abs=0.1)
    assert any("without proper motion" in w and "errors inflated" in w for w in m["warnings"])
    assert m["n_matched"] > 15


# ------------------------------------------------------------------ the campaign stage
@pytest.fixture
def lab_and_sky(scene, tmp_path):
    """A campaign with a lab dataset (a source table), a sky image with a background frame
    and a sky star list; the lab table is named like the sky image."""
    from astrocal.lab.mask import get_mask

    d, truth, given, info = scene
    rng = np.random.default_rng(21)
    given.write(tmp_path / "catalog.ecsv")
    mask = get_mask("metis_wcu_fp_mask5")
    mask.write(tmp_path / "mask.ecsv")
    (tmp_path / "lab").mkdir()
    Table({"hole_id": mask.hole_id[:6], "x": np.arange(6) * 30.0 + 20, "y": np.full(6, 50.0),
           "sigma_x": np.full(6, 0.01), "sigma_y": np.full(6, 0.01)}).write(tmp_path / "lab" / "gc_00.ecsv")
    img_info = with_background(tmp_path, truth, rng)  # an image on a thermal background, and bg.fits
    xy, flux = star_list_rows(info, rng)
    Table({"x": xy[:, 0], "y": xy[:, 1], "flux": flux}).write(tmp_path / "gc_list.ecsv")
    Table({"x": xy[:, 0], "y": xy[:, 1]}).write(tmp_path / "no_time.ecsv")
    lab = "\n".join(['[[lab]]', 'name = "grid"', 'mask = "mask.ecsv"', 'filter = "Lp"',
                     'exposures = [ { file = "lab/gc_00.ecsv", offset_arcsec = [0.0, 0.0] } ]', ""])
    camp = write_campaign(tmp_path, ['file = "gc_00.fits", position_angle_deg = 35.0, parity = -1',
                                     f'file = "gc_list.ecsv", {LIST_KEYS}',
                                     'file = "no_time.ecsv", ra = 266.4168, dec = -29.0078'],
                          sky_extra='background = "bg.fits"\nstrehl = 0.7', lab=lab)
    return tmp_path, camp, img_info


def test_measure_campaign_measures_lab_and_sky(lab_and_sky, capsys):
    d, camp, info = lab_and_sky
    assert main(["measure", str(camp)]) == 1  # one sky exposure fails: exit status 1
    out = capsys.readouterr().out
    assert "FAILED" in out and "no_time.ecsv" in out and "no exposure time" in out
    s = Table.read(d / "measured" / "summary.ecsv")
    assert list(s["kind"]) == ["table", "sky_image", "sky_list", "sky_list"]
    assert list(s["status"]) == ["ok", "ok", "ok", "failed"]
    # the sky image's stem is taken by the lab table: written as <dataset>_<stem>
    assert list(s["exposure"]) == ["gc_00", "gc_gc_00", "gc_list", "no_time"]
    assert s["n_identified"][1] == len(info["shown"]) and s["n_identified"][2] > 15
    t = read_sky_table(d / "measured" / "gc_gc_00.ecsv")
    check_against_truth(t, info)
    # astropy reads "" back as masked "0": read_sky_table restores the unmatched rows' ""
    assert "0" in np.asarray(Table.read(d / "measured" / "gc_gc_00.ecsv")["star"])
    assert t.meta["reduction"]["background"].endswith("bg.fits")
    assert t.meta["psf"]["strehl_source"] == "dataset"
    assert t.meta["campaign"] == str(camp) and len(t.meta["campaign_sha256"]) == 64
    assert (d / "measured" / "gc_gc_00_reduced.fits").exists()
    assert Table.read(d / "measured" / "gc_00.ecsv").meta["dataset"] == "grid"  # the lab table
    # nothing is overwritten unless asked
    with pytest.raises(ProductExistsError):
        measure_campaign(camp)
    (d / "measured" / "summary.ecsv").unlink()
    report = measure_campaign(camp)
    msgs = dict(zip(report.summary["exposure"], report.summary["message"]))
    assert "file exists; not overwritten" in msgs["gc_gc_00"]
    report = measure_campaign(camp, overwrite=True)
    assert list(report.summary["status"]) == ["ok", "ok", "ok", "failed"]


@pytest.mark.slow
@pytest.mark.parametrize("background", [False, True])
def test_error_coverage(tmp_path, background):
    """Over 8 rendered frames (~150 stars) the stated position errors are honest: the rms
    of (measured - true) / sigma is 1 within 15 % per axis."""
    pulls = []
    for seed in range(8):
        rng = np.random.default_rng(300 + seed)
        truth, given = _catalogs(rng)
        given.write(tmp_path / "catalog.ecsv", overwrite=True)
        if background:
            info = with_background(tmp_path, truth, rng)
            extra = 'background = "bg.fits"'
        else:
            info = render_exposure(tmp_path / "gc_00.fits", truth, rng)
            extra = ""
        camp = write_campaign(tmp_path, ['file = "gc_00.fits", position_angle_deg = 35.0, parity = -1'],
                              sky_extra=extra)
        report = measure_campaign(camp, overwrite=True)
        assert report.ok, list(report.summary["message"])
        t = read_sky_table(tmp_path / "measured" / "gc_00.ecsv")
        if background:
            assert t.meta["reduction"]["background"].endswith("bg.fits")
        pulls.append(pulls_of(t, info))
    pulls = np.concatenate(pulls)
    assert len(pulls) > 120
    rms = np.sqrt(np.mean(pulls**2, axis=0))
    assert np.all((rms > 0.85) & (rms < 1.15)), rms


# ------------------------------------------------------------------ metadata resolution
def test_resolve_exposure_from_header_and_defaults(caplog):
    from astrocal.sky.exposure import resolve_exposure

    h = fits.Header({"DATE-OBS": "2026-05-01", "TIME-OBS": "03:59:55", "EXPTIME": 10.0,
                     "RA": "17:45:40.03", "DEC": "-29:00:28.08", "FILTER": "Mp"})
    h["HIERARCH ESO TEL AMBI RHUM"] = 25.0
    with caplog.at_level(logging.WARNING, logger="astrocal.sky.measure"):
        s = resolve_exposure({"pressure_hpa": 700.0}, h, preset="metis-lm", source="x.fits")
    assert s.time.isot == "2026-05-01T04:00:00.000"  # DATE-OBS + TIME-OBS + EXPTIME/2
    assert s.sources["time"] == "header DATE-OBS + TIME-OBS + EXPTIME/2 (mid-exposure)"
    assert s.ra_deg == pytest.approx(266.4167917) and s.dec_deg == pytest.approx(-29.0078)
    assert s.weather == {"pressure_hpa": 700.0, "temperature_c": 8.0, "relative_humidity": 0.25}
    assert s.sources["weather"]["temperature_c"].startswith("default")
    assert "weather temperature_c not given" in caplog.text
    assert s.wavelength_um == pytest.approx(4.775038)  # the Mp filter of METIS IMG_LM
    assert s.position_angle_deg is None and s.parity is None and s.sources["parity"] == "match"
    h["HIERARCH ASTROCAL PARITY"] = -1  # astrocal's own keyword (astrocal simulate sky)
    s = resolve_exposure({}, h, preset="metis-lm", source="x.fits")
    assert s.parity == -1 and s.sources["parity"] == "header HIERARCH ASTROCAL PARITY"
    assert resolve_exposure({"parity": 1}, h, preset="metis-lm", source="x.fits").parity == 1
    with pytest.raises(SkyMeasureError, match=r"x.fits: header keyword DATE-OBS = '2026-05-01' has no "
                                              r"time of day"):
        resolve_exposure({}, fits.Header({"DATE-OBS": "2026-05-01", "RA": 1.0, "DEC": 2.0}),
                         source="x.fits")
    with pytest.raises(SkyMeasureError, match=r"x.fits: no pointing ra: give 'ra' and 'dec'"):
        resolve_exposure({}, fits.Header({"MJD-OBS": 61161.0}), source="x.fits")
    with pytest.raises(SkyMeasureError, match=r"x.fits: header keyword DEC: cannot read 'south'"):
        resolve_exposure({}, fits.Header({"MJD-OBS": 61161.0, "RA": 10.0, "DEC": "south"}),
                         source="x.fits")


# ------------------------------------------------------------------ bright stars, crowding
def test_a_bright_star_halo_gives_no_false_detections(tmp_path):
    """A star ~300 times brighter than the others, its seeing halo rendered out to 140 px:
    the halo is a pedestal that the detection removes (with a background frame too)."""
    rng = np.random.default_rng(17)
    truth, given = _catalogs(rng)
    given.write(tmp_path / "catalog.ecsv")
    info = with_background(tmp_path, truth, rng)
    k = int(info["shown"][len(info["shown"]) // 2])
    bright = AOStarPSF.from_seeing(star_psf(WAVELENGTH, PIX).core, 0.7)
    extra = render_spots(SHAPE, info["xy"][k, 0], info["xy"][k, 1], 3e7, bright, radius=140)
    det = D.DetectorModel.from_instrument("metis-lm", "slow", shape=SHAPE)
    with fits.open(tmp_path / "gc_00.fits", mode="update") as h:  # ADU, average of NDIT
        h[0].data = h[0].data + (extra / det.gain_e_per_adu).astype(np.float32)
    camp = write_campaign(tmp_path, ['file = "gc_00.fits", position_angle_deg = 35.0, parity = -1'],
                          sky_extra='background = "bg.fits"')
    report = measure_campaign(camp)
    assert report.ok, list(report.summary["message"])
    t = read_sky_table(tmp_path / "measured" / "gc_00.ecsv")
    n_matched = int(np.sum(np.asarray(t["star"]) != ""))
    assert n_matched == len(info["shown"])
    # without removing the halo pedestal the detections are so many that no match is found;
    # with it: the spurious sources and ~10 side lobes of the bright star beyond the PSF
    # model's table (17-48 px from it), unmatched and flagged
    assert len(t) - n_matched < 20, len(t)


def test_crowded_detections_are_limited(monkeypatch, caplog):
    import astrocal.sky.stars as M

    rng = np.random.default_rng(2)
    det = Table({"x": rng.uniform(0, 200, 400), "y": rng.uniform(0, 200, 400)})
    psf = star_psf(WAVELENGTH, PIX)
    monkeypatch.setattr(M, "MAX_NEIGHBOUR_PAIRS", 5000)
    warns = []
    with caplog.at_level(logging.WARNING, logger="astrocal.sky.measure"):
        out = M._limit_neighbour_pairs(det, psf, warns, "x.fits")
    assert 2 < len(out) < 400 and np.all(out["x"] == det["x"][: len(out)])  # the brightest first
    assert out.meta["n_dropped_crowding"] == 400 - len(out)
    assert "too crowded for the joint fit" in warns[0] and "too crowded" in caplog.text
    assert M._limit_neighbour_pairs(det[:20], psf, [], "x.fits") is not None
