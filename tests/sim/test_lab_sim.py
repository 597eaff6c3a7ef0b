"""Tests of the lab-campaign simulator (astrocal.sim.lab, ``astrocal simulate lab``)."""
import json

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from astrocal.atomic import ProductExistsError
from astrocal.campaign import load_campaign
from astrocal.cli import main
from astrocal.field.synthetic import smooth_field
from astrocal.formats.convert import read_solutions
from astrocal.formats.siaf import write_siaf
from astrocal.image.centroid import NoiseModel, fit_centroids
from astrocal.image.headers import read_exposure_meta
from astrocal.lab.mask import mask_path
from astrocal.sim.lab import lab_psf, simulate_lab
from astrocal.sim.lab_files import campaign_paths, load_lab_truth
from astrocal.sim.lab_settings import LabSimSettings
from astrocal.sim.radiometry import plan_exposure, wcu_radiometry
from astrocal.sim.lab_truth import chopper_series
from astrocal.solution import Solution

SMALL = dict(detector_shape=(1024, 1024), n_exposures=3)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A 3-exposure campaign on a 1024 x 1024 IMG_LM detector, all effects on."""
    out = tmp_path_factory.mktemp("lab") / "campaign"
    return simulate_lab(out, seed=7, **SMALL)


@pytest.fixture(scope="module")
def ideal(tmp_path_factory):
    """The same kind of campaign with bare renders (no noise, no detector effects)."""
    out = tmp_path_factory.mktemp("ideal") / "campaign"
    return simulate_lab(out, LabSimSettings(seed=8, **SMALL).ideal())


# ------------------------------------------------------------------------- the campaign
def test_campaign_loads(small):
    c = load_campaign(small.campaign)
    assert c.instrument.preset == "metis-lm"
    assert c.instrument.detector_shape == (1024, 1024)
    assert c.instrument.pixel_scale_mas == pytest.approx(5.47)
    assert c.instrument.mask_scale_mm_per_arcsec == pytest.approx(3.319)
    (lab,) = c.lab
    assert lab.filter == "Lp"
    assert lab.mask == (small.directory / "mask.ecsv").resolve()
    assert lab.background.name == "background.fits" and lab.flat.name == "flat.fits"
    assert len(lab.exposures) == 3
    commanded = chopper_series(3)
    for k, exp in enumerate(lab.exposures):
        assert exp.file.name == f"grid_{k:02d}.fits"
        assert exp.offset_arcsec == pytest.approx(tuple(commanded[k]))
        assert exp.offset_sigma_mas == 2.0
    assert c.measure.output == small.directory.resolve() / "measured"
    assert c.fit.output == small.directory.resolve() / "out"
    # the mask copy is the shipped table, byte for byte
    assert lab.mask.read_bytes() == mask_path("metis_wcu_fp_mask5").read_bytes()


def test_headers_readable(small):
    commanded = chopper_series(3)
    for k, path in enumerate(small.frames):
        meta = read_exposure_meta(path)
        assert meta.instrument == "metis-lm"
        assert meta.filter == "Lp"
        assert meta.mask == "grid_lm" and meta.mask_name == "metis_wcu_fp_mask5"
        assert meta.chopper_offset.value == pytest.approx(commanded[k])
        assert meta.detector_mode == small.plan.mode
        assert meta.dit.value == pytest.approx(small.plan.dit_s)
        assert meta.ndit == small.plan.ndit
        assert meta.exptime.value == pytest.approx(small.plan.dit_s * small.plan.ndit)
        assert meta.dpr_type == "DISTORTION" and meta.lamp == "bb"
        data = fits.getdata(path)
        assert data.dtype.kind == "f" and data.dtype.itemsize == 4 and data.shape == (1024, 1024)
    dates = [read_exposure_meta(p).date_obs for p in small.frames]
    assert all(b > a for a, b in zip(dates, dates[1:]))
    bg = read_exposure_meta(small.background)
    assert bg.lamp == "off" and bg.dpr_type == "DARK,WCUOFF" and bg.date_obs < dates[0]
    flat = read_exposure_meta(small.flat)
    assert flat.dpr_type == "FLAT,LAMP" and flat.mask == "open"


def test_frames_physics(small):
    """Background level and spots where the truth says, in ADU."""
    det_gain = read_exposure_meta(small.frames[0]).gain_e_per_adu
    frame = fits.getdata(small.frames[0]).astype(float)
    bg = fits.getdata(small.background).astype(float)
    inner = (slice(100, -100), slice(100, -100))
    expected_bg = (small.radiometry.background_e_per_s * small.plan.dit_s) / det_gain
    assert np.median(bg[inner]) == pytest.approx(expected_bg, rel=0.02)
    spots = Table.read(small.truth_files["spots"])
    row = spots[(spots["exposure"] == 0) & spots["sensitive"]][0]
    ix, iy = int(round(row["x"])), int(round(row["y"]))
    net = frame[iy - 12:iy + 13, ix - 12:ix + 13] - bg[iy - 12:iy + 13, ix - 12:ix + 13]
    # a 25x25 box holds ~88 % of the flux (diffraction PSF with spiders, pinhole)
    assert net.sum() == pytest.approx(0.88 * row["flux_adu"], rel=0.1)
    assert np.unravel_index(np.argmax(net), net.shape) in {(12, 12), (11, 12), (13, 12), (12, 11), (12, 13)}
    # reference pixels get no light
    assert np.median(frame[:, :64]) < 0.01 * expected_bg


def test_snr_and_plan(small):
    s = small.summary
    assert s["readout_mode"] == "fast"          # L' thermal background of the warm WCU
    assert 0.04 <= s["dit_s"] < 0.1 and s["ndit"] * s["dit_s"] == pytest.approx(30.0, rel=0.05)
    assert 0 < s["bb_aperture"] < 1
    lo, hi = s["snr_range"]
    assert 2500 < hi < 4500 and lo < hi
    spots = Table.read(small.truth_files["spots"])
    ok = spots["sensitive"] & spots["on_detector"]
    assert np.all(np.isfinite(spots["crb_sigma_x"][ok]))
    assert np.all(spots["crb_sigma_bgsub"][ok] > spots["crb_sigma_x"][ok] * 0.7)
    assert not np.any(spots["saturated"])


# ------------------------------------------------------------------------- the truth
def test_truth_round_trip(small):
    truth = small.truth
    back = load_lab_truth(small.directory)
    for name in ("hole_ids", "hole_xy", "hole_errors", "commanded", "applied", "pose_scale",
                 "pose_rot", "insertion_offset"):
        np.testing.assert_array_equal(getattr(back, name), getattr(truth, name), err_msg=name)
    np.testing.assert_array_equal(back.positions, truth.positions)
    assert back.insertion_rot == truth.insertion_rot
    assert back.chopper_frame == tuple(float(v) for v in truth.chopper_frame)
    assert back.mask_scale == truth.mask_scale and back.offset_sigma == truth.offset_sigma == 2e-3
    np.testing.assert_array_equal(back.field.cx, truth.field.cx)
    np.testing.assert_array_equal(back.field.cy, truth.field.cy)
    # the SIAF and AstroMet truth files hold the same field
    x, y = np.meshgrid(np.linspace(-0.5, 1023.5, 21), np.linspace(-0.5, 1023.5, 21))
    u, v = truth.field(x, y)
    for name in ("distortion_ecsv", "distortion_fits"):
        (sol,) = read_solutions(small.truth_files[name]).values()
        u2, v2 = sol.field(x, y)
        assert np.max(np.hypot(u2 - u, v2 - v)) / 5.47e-3 < 1e-9, name
    # the positions follow the shared truth model: G(p_eh) = f_eh
    for e in range(len(truth.commanded)):
        ok = np.isfinite(truth.positions[e, :, 0])
        f = truth.focal_plane(e)[ok]
        g = np.column_stack(truth.field(truth.positions[e, ok, 0], truth.positions[e, ok, 1]))
        assert np.max(np.abs(g - f)) < 1e-9
    # truth tables: holes (mm, um) and per-exposure poses
    holes = Table.read(small.truth_files["holes"])
    assert set(holes.colnames) >= {"hole_id", "x_mm", "y_mm", "dx_um", "dy_um"}
    rms = np.sqrt(np.mean(np.concatenate([holes["dx_um"], holes["dy_um"]]) ** 2))
    assert 0.3 < rms < 0.7
    exps = Table.read(small.truth_files["exposures"])
    assert list(exps["file"]) == [f"raw/grid_{k:02d}.fits" for k in range(3)]
    d = np.hypot(exps["applied_x_arcsec"] - exps["commanded_x_arcsec"],
                 exps["applied_y_arcsec"] - exps["commanded_y_arcsec"])
    assert np.all(d < 0.05)
    info = json.loads(small.truth_files["truth_json"].read_text())
    assert info["seed"] == 7 and info["settings"]["n_exposures"] == 3
    assert abs(info["insertion_rot_rad"]) < np.radians(2)


def test_noise_free_centroid_matches_truth(ideal):
    psf = lab_psf("metis-lm")
    spots = Table.read(ideal.truth_files["spots"])
    gain = read_exposure_meta(ideal.frames[0]).gain_e_per_adu
    checked = 0
    for k, path in enumerate(ideal.frames):
        img = fits.getdata(path).astype(float)
        sel = (spots["exposure"] == k) & spots["on_detector"]
        x, y = np.asarray(spots["x"][sel]), np.asarray(spots["y"][sel])
        flux = np.asarray(spots["flux_adu"][sel])
        dist = np.hypot(x[:, None] - x[None], y[:, None] - y[None])
        np.fill_diagonal(dist, np.inf)
        r = 30
        for xi, yi in zip(x[dist.min(axis=1) > 120], y[dist.min(axis=1) > 120]):
            ix, iy = int(round(xi)), int(round(yi))
            if min(ix, iy) < r or max(ix, iy) >= 1024 - r:
                continue
            stamp = img[iy - r:iy + r + 1, ix - r:ix + r + 1]
            yy, xx = np.mgrid[iy - r:iy + r + 1, ix - r:ix + r + 1]
            assert (stamp * xx).sum() / stamp.sum() == pytest.approx(xi, abs=0.05)
            assert (stamp * yy).sum() / stamp.sum() == pytest.approx(yi, abs=0.05)
            checked += 1
        # a PSF fit with the same model recovers the truth almost exactly (fine grid too)
        iso = (x > 40) & (x < 984) & (y > 40) & (y < 984)
        res = fit_centroids(img, x[iso] + 0.3, y[iso] - 0.2, psf,
                            noise=NoiseModel(gain=gain * ideal.plan.ndit))
        assert np.median(np.hypot(res.x - x[iso], res.y - y[iso])) < 1e-3
        assert np.median(res.flux / flux[iso]) == pytest.approx(1.0, rel=1e-3)
    assert checked >= 6


# ------------------------------------------------------------------------- reproducibility, overwrite
def test_seed_reproduces_frames(tmp_path):
    kw = dict(detector_shape=(256, 256), n_exposures=2, seed=123)
    a = simulate_lab(tmp_path / "a", **kw)
    b = simulate_lab(tmp_path / "b", threads=1, **kw)   # same files whatever the threads
    c = simulate_lab(tmp_path / "c", **{**kw, "seed": 124})
    for pa, pb, pc in zip(a.frames + (a.background, a.flat), b.frames + (b.background, b.flat),
                          c.frames + (c.background, c.flat)):
        assert pa.read_bytes() == pb.read_bytes()
        assert not np.array_equal(fits.getdata(pa), fits.getdata(pc))
    for name in ("holes", "exposures", "spots"):
        assert a.truth_files[name].read_bytes() == b.truth_files[name].read_bytes()
    assert a.campaign.read_bytes() == b.campaign.read_bytes()


def test_nothing_overwritten(tmp_path, capsys):
    out = tmp_path / "camp"
    args = ["simulate", "lab", "--out", str(out), "--seed", "1", "--exposures", "2",
            "--detector-shape", "256", "256"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "readout 'fast'" in printed and "SNR" in printed
    paths = campaign_paths(out, 2)
    before = {p: p.read_bytes() for p in [paths["campaign"], paths["frames"][0], paths["spots"]]}
    assert main(args[:5] + ["2"] + args[6:]) == 1
    err = capsys.readouterr().err
    assert "file exists" in err and "--overwrite" in err
    assert all(p.read_bytes() == b for p, b in before.items())
    # one existing product blocks the whole run: nothing else is written
    lone = tmp_path / "lone"
    (lone / "truth").mkdir(parents=True)
    (lone / "truth" / "truth.json").write_text("keep")
    with pytest.raises(ProductExistsError):
        simulate_lab(lone, seed=1, n_exposures=1, detector_shape=(256, 256))
    assert (lone / "truth" / "truth.json").read_text() == "keep"
    assert not (lone / "raw").exists() and not (lone / "campaign.toml").exists()
    # --overwrite replaces, with a different seed different frames
    assert main(args[:5] + ["2"] + args[6:] + ["--overwrite"]) == 0
    assert paths["frames"][0].read_bytes() != before[paths["frames"][0]]


# ------------------------------------------------------------------------- bad input
def test_bad_distortion_and_mask_files(tmp_path, capsys):
    base = ["simulate", "lab", "--out", str(tmp_path / "x"), "--detector-shape", "256", "256",
            "--exposures", "1"]
    missing = tmp_path / "nope.fits"
    assert main(base + ["--distortion", str(missing)]) == 1
    assert str(missing) in capsys.readouterr().err
    garbage = tmp_path / "garbage.ecsv"
    garbage.write_text("this is not a table\n")
    assert main(base + ["--distortion", str(garbage)]) == 1
    assert str(garbage) in capsys.readouterr().err
    notfits = tmp_path / "broken.fits"
    notfits.write_bytes(b"SIMPLE  = nonsense")
    assert main(base + ["--distortion", str(notfits)]) == 1
    assert str(notfits) in capsys.readouterr().err
    bad_mask = tmp_path / "mask.ecsv"
    Table({"hole_id": [1, 2], "x_mm": [0.0, 1.0]}).write(bad_mask, format="ascii.ecsv")
    assert main(base + ["--mask", str(bad_mask)]) == 1
    err = capsys.readouterr().err
    assert str(bad_mask) in err and "missing required column" in err
    assert main(base + ["--mask", str(tmp_path / "absent.ecsv")]) == 1
    assert "absent.ecsv" in capsys.readouterr().err
    assert main(base + ["--mask", "no_such_mask"]) == 1
    assert "no_such_mask" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_distortion_file_is_the_truth(tmp_path):
    path = tmp_path / "field.ecsv"
    write_siaf(path, Solution(smooth_field(corner_px=5.0, rng=9, rotation_deg=0.5), filter="Lp"))
    res = simulate_lab(tmp_path / "camp", seed=2, n_exposures=1, distortion_file=str(path))
    (sol,) = read_solutions(path).values()
    x = np.linspace(0, 2047, 30)
    assert np.allclose(res.truth.field(x, x[::-1]), sol.field(x, x[::-1]), atol=1e-12)
    assert res.summary["detector_shape"] == [2048, 2048]
    # full-size smoke run: 48 holes of mask #5 in the IMG_LM field, brightest SNR ~3000
    assert res.summary["spots_per_exposure"] == [48]
    assert 2500 < res.summary["snr_range"][1] < 4500
    frame = fits.getdata(res.frames[0])
    assert frame.shape == (2048, 2048) and np.isfinite(frame).all()
    # a field for another detector size is refused, naming the file
    with pytest.raises(ValueError, match="field.ecsv"):
        simulate_lab(tmp_path / "small", seed=2, n_exposures=1, detector_shape=(512, 512),
                     distortion_file=str(path))


# ------------------------------------------------------------------------- radiometry, plan, N band
def test_exposure_plan():
    lp = wcu_radiometry("metis-lm", "Lp")
    assert 1e5 < lp.background_e_per_s < 1e7        # warm WCU in broad-band L'
    plan = plan_exposure("metis-lm", lp.background_e_per_s)
    assert plan.mode == "fast" and plan.dit_s >= 0.04
    narrow = wcu_radiometry("metis-lm", "PAH_3.3")
    plan = plan_exposure("metis-lm", narrow.background_e_per_s)
    assert plan.mode == "slow" and plan.dit_s >= 1.3     # several-second DITs need a narrow band
    n2 = wcu_radiometry("metis-n", "N2")
    plan = plan_exposure("metis-n", n2.background_e_per_s)
    assert plan.mode == "high_capacity" and plan.dit_s == pytest.approx(0.011) and plan.fill < 0.9
    assert plan_exposure("metis-lm", 1e3, mode="fast", dit_s=2.0, ndit=3).ndit == 3
    # the spots count too: SNR-3000 spots in 30 s push PAH_3.3 back to the fast mode
    assert plan_exposure("metis-lm", narrow.background_e_per_s, 6.5e4).mode == "fast"
    with pytest.raises(ValueError, match="minimum DIT"):
        plan_exposure("metis-lm", 1e3, mode="slow", dit_s=0.1)


def test_slow_mode_campaign(tmp_path):
    res = simulate_lab(tmp_path / "slow", seed=5, n_exposures=1, detector_shape=(256, 256),
                       filter="PAH_3.3", exptime_s=120.0)
    assert res.plan.mode == "slow" and res.plan.dit_s >= 1.3
    meta = read_exposure_meta(res.frames[0])
    assert meta.detector_mode == "slow" and meta.read_noise_e == 15.0 and meta.filter == "PAH_3.3"
    assert load_campaign(res.campaign).lab[0].filter == "PAH_3.3"


def test_metis_n(tmp_path):
    res = simulate_lab(tmp_path / "n", instrument="metis-n", seed=4, n_exposures=1,
                       detector_shape=(768, 768))
    c = load_campaign(res.campaign)
    assert c.instrument.preset == "metis-n" and c.lab[0].filter == "N2"
    meta = read_exposure_meta(res.frames[0])
    assert meta.instrument == "metis-n" and meta.detector_mode == "high_capacity"
    assert res.summary["spots_per_exposure"][0] > 10


def test_settings_validation():
    with pytest.raises(ValueError, match="offset_sigma_mas"):
        LabSimSettings(offset_sigma_mas=0.0)
    with pytest.raises(TypeError, match="switch"):
        LabSimSettings(flat=None)
    s = LabSimSettings(offsets=[[0, 0], [0.5, 0.1]])
    assert s.n_exposures == 2
    assert not any(getattr(s.ideal(), k) for k in ("flat", "photon_noise", "thermal"))
