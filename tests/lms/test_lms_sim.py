"""`astrocal simulate lms`: frames, truth, switches and errors (astrocal.sim.lms*)."""
import json
import tomllib

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from astrocal.cli import main
from astrocal.lms import LmsGeometry, echelle_setting
from astrocal.lms.mosaic import REFERENCE_BORDERS
from astrocal.lms.traces import SLICE_WIDTH_ARCSEC
from astrocal.sim.lms import LmsSimSettings, simulate_lms
from astrocal.sim.lms_render import render_laser_spots
from astrocal.sim.lms_truth import chopper_offsets, draw_lms_geometry, load_lms_truth

GAIN = 2.0


@pytest.fixture(scope="module")
def qcl_campaign(tmp_path_factory):
    """4.73 um, two offsets (exact: holes at slice centres), QCL lines only, noiseless:
    2 laser + grid + slices + background frames."""
    out = tmp_path_factory.mktemp("lms") / "camp"
    s = LmsSimSettings(seed=5, settings_um=(4.73,), n_offsets=2, qcl_lines_um=(4.70, 4.74), noise=False,
                       offset_errors=False)
    return simulate_lms(out, s)


def test_frames_have_four_chips_with_eso_keywords(qcl_campaign):
    kinds = [fits.getheader(p)["HIERARCH ESO DPR TYPE"] for p in qcl_campaign.frames]
    assert kinds == ["WAVE", "WAVE", "DISTORTION", "RSRF", "WCU_OFF"]
    with fits.open(qcl_campaign.frames[0]) as hdul:
        assert len(hdul) == 5 and hdul[0].data is None
        h0 = hdul[0].header
        assert h0["HIERARCH ESO DET3 DIT"] == 5.0 and h0["HIERARCH ESO DET3 NDIT"] == 1
        assert h0["HIERARCH ESO INS WLEN CEN"] == 4.73 and h0["HIERARCH ESO INS OPTI8 ORDER"] == echelle_setting(4.73).order
        assert h0["HIERARCH ESO SEQ WCU LASER2"] == "ON" and h0["HIERARCH ESO SEQ WCU LASER1"] == "OFF"
        assert h0["HIERARCH ESO INS OPTI20 POSNAME"] == "grid_lm"
        for d in range(1, 5):
            h = hdul[d].header
            assert hdul[d].name == f"DET{d}.DATA" and hdul[d].data.shape == (2048, 2048)
            assert hdul[d].data.dtype.kind == "f" and hdul[d].data.dtype.itemsize == 4 and h["BUNIT"] == "ADU"
            assert h["HIERARCH ESO DET3 CHIP GAIN"] == GAIN and h["HIERARCH ESO DET3 CHIP RON"] == 70.0
            assert h["HIERARCH ESO DET3 CHIP REFPIX"] == " ".join(map(str, REFERENCE_BORDERS[d]))
            b, l, t, r = REFERENCE_BORDERS[d]
            data = hdul[d].data
            assert np.all(data[:b] == 0) and np.all(data[2048 - t:] == 0)          # masked borders
            if l:
                assert np.all(data[:, :l] == 0)
            if r:
                assert np.all(data[:, 2048 - r:] == 0)
            assert data[b:2048 - t, l:2048 - r].min() > 0                           # dark current


def test_campaign_and_truth_are_written(qcl_campaign):
    out = qcl_campaign.directory
    camp = tomllib.loads((out / "campaign.toml").read_text())
    frames = camp["lms"]["frames"]
    assert [f["file"] for f in frames] == [f"raw/{p.name}" for p in qcl_campaign.frames]
    assert all((out / f["file"]).is_file() for f in frames)
    assert frames[0]["kind"] == "laser" and frames[0]["lines_um"] == [4.70, 4.74]
    assert frames[0]["background"] == "raw/lms_background_4p730.fits"
    assert camp["lms"]["settings"][0]["order"] == echelle_setting(4.73).order and (out / camp["lms"]["mask"]).is_file()
    truth = load_lms_truth(out)
    assert np.array_equal(truth.params, qcl_campaign.geometry.params) and np.any(truth.params != 0)
    dev = Table.read(out / "truth" / "deviations.ecsv")
    assert list(dev["name"]) == list(truth.layout.names)
    assert np.all(np.abs(dev["value"]) < 6 * dev["prior_sigma"])
    info = json.loads((out / "truth" / "truth.json").read_text())
    assert info["seed"] == 5 and info["layout"]["settings"][0]["lam_c_um"] == 4.73
    exp = Table.read(out / "truth" / "exposures.ecsv")
    assert list(exp["kind"]) == ["laser", "laser", "grid", "slices", "background"]
    assert np.all(exp["offset_true_a"] == exp["offset_cmd_a"])                       # --no-offset-errors


def _isolated_main_spots(spots):
    main = spots[spots["main"] & (spots["det"] > 0)]
    keep = []
    for r in main:
        same = spots[(spots["file"] == r["file"]) & (spots["det"] == r["det"])]
        dist = np.hypot(same["col"] - r["col"], same["row"] - r["row"])
        dist = dist[np.isfinite(dist) & (dist > 0)]
        lo, hi = 40, 2048 - 40
        clear_of_ends = abs(r["xi_arcsec"]) < 0.4485 - 0.1                          # PSF not cut by a slice end
        if (dist.size == 0 or dist.min() > 18) and lo < r["col"] < hi and lo < r["row"] < hi and clear_of_ends:
            keep.append(r)
    return keep


def test_spots_land_where_the_truth_geometry_puts_them(qcl_campaign):
    spots = Table.read(qcl_campaign.truth_files["spots"])
    truth = load_lms_truth(qcl_campaign.directory)
    spots_ok = _isolated_main_spots(spots)
    assert len(spots_ok) >= 10
    worst = 0.0
    for r in spots_ok:
        fw = truth.forward(r["slice"], r["xi_arcsec"], r["lam_um"], 0)
        assert fw.det[0] == r["det"]
        data = fits.getdata(qcl_campaign.directory / r["file"], f"DET{r['det']}.DATA").astype(float)
        c0, r0 = int(round(fw.col[0])), int(round(fw.row[0]))
        win = data[r0 - 9:r0 + 10, c0 - 7:c0 + 8]
        ring = np.concatenate([data[r0 - 9:r0 + 10, c0 - 12:c0 - 9].ravel(), data[r0 - 9:r0 + 10, c0 + 10:c0 + 13].ravel()])
        win = win - np.median(ring)                                                  # dark level
        rr, cc = np.mgrid[r0 - 9:r0 + 10, c0 - 7:c0 + 8]
        col, row = (win * cc).sum() / win.sum(), (win * rr).sum() / win.sum()
        worst = max(worst, abs(col - fw.col[0]), abs(row - fw.row[0]))
    assert worst < 0.05, worst


def test_spot_is_a_short_segment_cut_by_the_slice():
    geo = draw_lms_geometry([4.73], deviations=False)
    img = np.zeros((4, 2048, 2048))
    tr = render_laser_spots(img, geo, 0, np.array([22]), np.array([0.01035]), np.array([0.0]), np.array([4.72]),
                            np.array([1e5]))
    main = tr["main"]
    assert tr["slice"].tolist() == [21, 22, 23] and main.tolist() == [False, True, False]
    assert 0.45 < tr["flux"][main][0] / 1e5 < 0.75 and 0.05 < tr["flux"][~main][0] / 1e5 < 0.25
    d, c, r = int(tr["det"][main][0]), tr["col"][main][0], tr["row"][main][0]
    fw = geo.forward(22, 0.01035, 4.72, 0)
    assert abs(c - fw.col[0]) < 2e-3 and abs(r - fw.row[0]) < 2e-3
    stamp = img[d - 1, int(r) - 12:int(r) + 13, int(c) - 12:int(c) + 13]
    prof_col, prof_row = stamp.sum(axis=0), stamp.sum(axis=1)
    width = lambda p: np.sqrt(np.sum(p * (np.arange(p.size) - np.average(np.arange(p.size), weights=p)) ** 2) / p.sum())  # noqa: E731
    assert width(prof_col) < 1.2 < width(prof_row)                                   # cut across, Airy along
    # the neighbouring slice's image is shifted along the dispersion by about a slice width's worth
    nb = ~main & (tr["slice"] == 23)
    dcol = tr["col"][nb][0] - geo.forward(23, 0.01035, 4.72, 0).col[0]
    assert -2.0 < dcol < -0.2


def test_switches_noise_and_deviations(tmp_path):
    base = LmsSimSettings(seed=2, settings_um=(3.40,), n_offsets=1, continuum=False, deviations=False)
    quiet = simulate_lms(tmp_path / "quiet", base.replace(noise=False))
    noisy = simulate_lms(tmp_path / "noisy", base)
    assert [p.name for p in quiet.frames] == ["lms_laser_3p400_00.fits", "lms_background_3p400.fits"]
    bq = fits.getdata(quiet.frames[1], "DET2.DATA")[100:1900, 100:1900].astype(float)
    bn = fits.getdata(noisy.frames[1], "DET2.DATA")[100:1900, 100:1900].astype(float)
    assert np.abs(np.diff(bq, axis=1)).max() < 2.0                                   # smooth: no noise
    assert np.min(bq) == pytest.approx(0.1 * 5 / GAIN, abs=1e-6)                     # dark between slices
    assert 30 < np.std(bn - bq) < 40 and abs(np.mean(bn - bq)) < 0.5                 # 70 e read noise / gain 2
    assert np.all(quiet.geometry.params == 0)                                        # --no-deviations
    spots = Table.read(quiet.truth_files["spots"])
    nominal = LmsGeometry(quiet.geometry.layout)
    m = spots[spots["main"] & (spots["det_model"] > 0)]
    fw = nominal.forward(m["slice"], m["xi_arcsec"], m["lam_um"], 0)
    assert np.allclose(fw.col, m["col_model"], atol=1e-9) and np.allclose(fw.row, m["row_model"], atol=1e-9)
    assert set(spots["lam_um"]) == {3.39}                                            # only 3.39 um in 3.40
    assert fits.getheader(quiet.frames[0])["HIERARCH ESO SEQ WCU LASER1"] == "ON"
    exp = Table.read(noisy.truth_files["exposures"])
    laser = exp[exp["kind"] == "laser"]
    err = np.hypot(laser["offset_true_a"] - laser["offset_cmd_a"], laser["offset_true_b"] - laser["offset_cmd_b"])
    assert np.all(err > 0) and np.all(err < 0.006)                                   # 1 mas rms offsets


def test_laser_switches_and_nothing_to_do(tmp_path):
    s = LmsSimSettings(seed=1, settings_um=(4.73,), n_offsets=1, qcl=False, continuum=False, background=False)
    with pytest.raises(ValueError, match="nothing to simulate"):
        simulate_lms(tmp_path / "none", s)
    assert not (tmp_path / "none").exists()


def test_chopper_offsets_move_across_by_whole_slices():
    off = chopper_offsets(7)
    assert np.all(off[0] == 0) and len(np.unique(off[:, 1])) == 7
    assert np.allclose(off[:, 1] / SLICE_WIDTH_ARCSEC, np.round(off[:, 1] / SLICE_WIDTH_ARCSEC))
    assert np.all(np.abs(off[:, 0]) <= 0.08)
    with pytest.raises(ValueError, match="at least one"):
        chopper_offsets(0)


def test_same_seed_same_truth():
    a = draw_lms_geometry([3.4, 4.73], np.random.default_rng(9))
    b = draw_lms_geometry([3.4, 4.73], np.random.default_rng(9))
    assert np.array_equal(a.params, b.params)
    sig = a.layout.prior_sigma()
    assert abs(np.std(a.params / sig) - 1) < 0.15


@pytest.mark.parametrize("argv, text", [
    (["--settings", "6.0"], "--settings"),
    (["--dit", "0.5"], "--dit"),
    (["--offsets", "0"], "--offsets"),
    (["--max-along", "nan"], "--max-along"),
    (["--efficiency", "2"], "--efficiency"),
    (["--hole-error-um", "-0.5"], "--hole-error-um"),
    (["--hole-errors-from", "absent.ecsv", "--settings", "4.73", "--offsets", "1"], "absent.ecsv"),
])
def test_bad_options_are_named(tmp_path, capsys, argv, text):
    rc = main(["simulate", "lms", "--out", str(tmp_path / "x")] + argv)
    assert rc != 0
    assert text in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_slice_waves_a_non_polynomial_as_built_term(tmp_path):
    """--slice-waves: the as-built instrument gains a per-slice wave no polynomial holds; the
    parameters of the seed are unchanged, the truth files carry it, and the frames show it."""
    from astrocal.lms import SliceWaves

    plain = draw_lms_geometry([4.73], np.random.default_rng(3))
    wavy = draw_lms_geometry([4.73], np.random.default_rng(3), waves_px=0.4)
    assert np.array_equal(plain.params, wavy.params) and isinstance(wavy.waves, SliceWaves)
    lo, hi = wavy.wavelength_range(0)
    s, xi, lam = np.array([3, 10, 17, 25]), np.array([-0.3, 0.0, 0.2, 0.35]), np.array([4.70, 4.72, 4.74, 4.70])
    a, b = plain.forward(s, xi, lam, 0), wavy.forward(s, xi, lam, 0)
    w = (2 * lam - (lo + hi)) / (hi - lo)
    wv = wavy.waves
    expect_c = 0.4 * np.array(wv.a)[s] * np.sin(1.5 * np.pi * w + np.array(wv.phase)[s])
    expect_r = 0.4 * np.array(wv.b)[s] * np.sin(5.0 * xi / 0.4485)
    assert np.allclose(b.col - a.col, expect_c, atol=1e-12) and np.allclose(b.row - a.row, expect_r, atol=1e-12)
    back = wavy.inverse(b.det, b.col, b.row, 0)                   # the inverse includes it
    assert np.allclose(back.xi, xi, atol=1e-8) and np.allclose(back.lam, lam, atol=1e-10)
    # frames: spots land where the wavy truth puts them
    res = simulate_lms(tmp_path / "camp", LmsSimSettings(seed=5, settings_um=(4.73,), n_offsets=1,
                                                         qcl_lines_um=(4.70, 4.74), noise=False, offset_errors=False,
                                                         slice_waves_px=0.4, continuum=False, background=False))
    truth = load_lms_truth(res.directory)
    assert truth.waves == res.geometry.waves and truth.waves is not None
    info = json.loads((res.directory / "truth" / "truth.json").read_text())
    assert info["slice_waves"]["amp_px"] == 0.4
    spots = _isolated_main_spots(Table.read(res.truth_files["spots"]))
    assert len(spots) >= 5
    flat = truth.with_params(truth.params)
    nowave = LmsGeometry(truth.layout, truth.params, truth.truth)
    moved = []
    for r in spots:
        fw = flat.forward(r["slice"], r["xi_arcsec"], r["lam_um"], 0)
        nw = nowave.forward(r["slice"], r["xi_arcsec"], r["lam_um"], 0)
        data = fits.getdata(res.directory / r["file"], f"DET{r['det']}.DATA").astype(float)
        c0, r0 = int(round(fw.col[0])), int(round(fw.row[0]))
        win = data[r0 - 9:r0 + 10, c0 - 7:c0 + 8]
        ring = np.concatenate([data[r0 - 9:r0 + 10, c0 - 12:c0 - 9].ravel(), data[r0 - 9:r0 + 10, c0 + 10:c0 + 13].ravel()])
        win = win - np.median(ring)
        rr, cc = np.mgrid[r0 - 9:r0 + 10, c0 - 7:c0 + 8]
        col, row = (win * cc).sum() / win.sum(), (win * rr).sum() / win.sum()
        assert abs(col - fw.col[0]) < 0.05 and abs(row - fw.row[0]) < 0.05
        moved.append(np.hypot(fw.col[0] - nw.col[0], fw.row[0] - nw.row[0]))
    assert max(moved) > 0.2                                       # the waves moved them
    with pytest.raises(ValueError, match="slice_waves_px"):
        LmsSimSettings(slice_waves_px=-1.0)
    rc = main(["simulate", "lms", "--out", str(tmp_path / "x"), "--slice-waves", "nan"])
    assert rc != 0
