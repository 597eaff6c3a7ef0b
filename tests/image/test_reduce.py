"""Tests of astrocal.image.reduce: calibration, reduction, variance, cosmic rays, products."""
import math

import numpy as np
import pytest
from astropy.io import fits

from astrocal.atomic import ProductExistsError
from astrocal.sim import detector as D
from astrocal.image.headers import make_raw_header, read_exposure_meta
from astrocal.image.psf import diffraction_psf, pinhole_diameter_mas, render_spots
from astrocal.image.reduce import (DQ_COSMIC, DQ_DEAD, DQ_HOT, DQ_NONFINITE, DQ_SATURATED,
                                 DetectorParams, ReductionError, block_level, detect_cosmic_rays,
                                 detector_params, load_calibration, psf_sharpness, read_frame,
                                 read_reduced, reduce_frame, write_reduced)

SHAPE = (256, 256)
DIT, NDIT = 10.0, 3


@pytest.fixture(scope="module")
def psf_l():
    return diffraction_psf(3.796, 5.47, pinhole_mas=pinhole_diameter_mas(25.0, 3.319))


@pytest.fixture(scope="module")
def det():
    # slow mode, long DIT: hot pixels (10-1000 e/s) stand out of the background frame
    return D.DetectorModel.from_instrument("metis-lm", "slow", shape=SHAPE, border_px=(4, 4, 4, 4),
                                           seed=5, hot_fraction=2e-3, dead_fraction=2e-3)


def params(det, dit=DIT, ndit=NDIT):
    return DetectorParams(gain=det.gain_e_per_adu, read_noise=det.read_noise_e, dit=dit, ndit=ndit,
                          saturation_adu=det.full_well_e / det.gain_e_per_adu * 0.999)


def calibration(det, rng, thermal_e=200.0, dit=DIT):
    bg = D.background_frame(np.float32(thermal_e), det, rng, exptime=dit, ndit=NDIT,
                            cosmic_rays=False)
    flat = D.flat_frame(det, rng, level_e=3e4, exptime=1.0, ndit=NDIT, cosmic_rays=False)
    p = params(det, dit)
    return load_calibration(bg, flat, background_params=p, flat_params=params(det, 1.0)), bg, flat


def test_block_level_follows_a_smooth_background():
    yy, xx = np.indices((300, 260))
    smooth = (100 + 0.05 * xx + 0.03 * yy).astype(np.float32)
    img = smooth + np.random.default_rng(0).normal(0, 1, smooth.shape).astype(np.float32)
    bad = np.zeros(img.shape, bool)
    bad[100:140, 50:90] = True
    img[bad] = 1e6  # masked pixels do not count
    lev = block_level(img, bad, block=32)
    assert lev.dtype == np.float32 and lev.shape == img.shape
    assert np.max(np.abs(lev - smooth)[20:-20, 20:-20]) < 1.0


def test_calibration_finds_dead_and_hot_pixels(det):
    cal, bg, flat = calibration(det, np.random.default_rng(1))
    truth = D.bad_pixel_maps(det)
    dead = (cal.dq & DQ_DEAD) != 0
    hot = (cal.dq & DQ_HOT) != 0
    border = np.ones(SHAPE, bool)
    border[4:-4, 4:-4] = False
    assert np.all(dead[truth.dead]) and np.all(dead[border])
    # hot pixels brighter than 10 sigma of the background frame are all found
    sigma_e = math.sqrt((200.0 + 0.5) * NDIT + NDIT * det.read_noise_e**2) / NDIT
    strong = truth.hot & (truth.hot_dark_e_per_s * DIT > 10 * sigma_e) & ~border
    assert strong.sum() > 20 and np.all(hot[strong])
    # almost no good pixel is flagged
    false = (cal.dq != 0) & ~truth.mask & ~border
    assert false.sum() <= 3
    assert abs(np.median(cal.flat[cal.dq == 0]) - 1) < 1e-3
    assert cal.flat.dtype == np.float32 and cal.background.dtype == np.float32


def test_reduction_removes_background_and_flat_and_variance_is_honest(det):
    """Pure-background frames reduce to zero mean with the predicted variance."""
    rng = np.random.default_rng(2)
    cal, bg, flat = calibration(det, rng, thermal_e=2000.0)
    raws = [D.simulate_frame(np.float32(2000.0), det, rng, exptime=DIT, ndit=NDIT, cosmic_rays=False)
            for _ in range(4)]
    reds = [reduce_frame(r, cal, params(det), cosmic_rays=False) for r in raws]
    good = reds[0].dq == 0
    var_pred = reds[0].bkgvar[good]
    # one frame: zero mean, pixel-to-pixel variance = BKGVAR (frame + background frame)
    one = reds[0].data[good]
    assert abs(one.mean()) < 0.02 * math.sqrt(var_pred.mean())
    assert 0.95 < np.var(one) / var_pred.mean() < 1.05
    # between frames the background frame's noise is common: the scatter of a pixel over
    # frames is the frame's share, half of BKGVAR here (same exposure as the background)
    stack = np.stack([r.data for r in reds])[:, good]
    ratio = np.var(stack, axis=0, ddof=1).mean() / var_pred.mean()
    assert 0.45 < ratio < 0.55, ratio


def test_background_scaled_by_dit(det):
    rng = np.random.default_rng(3)
    bg = D.background_frame(np.float32(2000.0), det, rng, exptime=2 * DIT, ndit=NDIT, cosmic_rays=False)
    cal = load_calibration(bg, None, background_params=params(det, 2 * DIT))
    raw = D.simulate_frame(np.float32(1000.0), det, rng, exptime=DIT, ndit=NDIT, cosmic_rays=False)
    red = reduce_frame(raw, cal, params(det), cosmic_rays=False)
    assert red.meta["background_scale"] == pytest.approx(0.5)
    good = red.dq == 0
    # the flat-field pattern remains (no flat given) but the level is removed
    assert abs(np.median(red.data[good])) < 2.0


def test_saturated_and_nonfinite_pixels_are_masked(det, psf_l):
    rng = np.random.default_rng(4)
    cal, bg, flat = calibration(det, rng)
    img = np.full(SHAPE, 200.0)
    render_spots(SHAPE, [128.3], [100.6], [5e6], psf_l, image=img)
    raw = D.simulate_frame(img.astype(np.float32), det, rng, exptime=DIT, ndit=NDIT, cosmic_rays=False)
    raw[10, 20] = np.nan
    red = reduce_frame(raw, cal, params(det))
    sat = (red.dq & DQ_SATURATED) != 0
    assert sat[100, 128] and 3 <= sat.sum() < 100
    assert red.dq[10, 20] & DQ_NONFINITE and np.isfinite(red.data).all()
    # the saturated core is not taken for cosmic rays
    assert not np.any((red.dq & DQ_COSMIC)[95:106, 123:134] & ~sat[95:106, 123:134])


def test_psf_sharpness():
    lm = diffraction_psf(3.796, 5.47, pinhole_mas=7.53)
    n = diffraction_psf(11.3, 6.79, pinhole_mas=7.53)
    assert 1.2 < psf_sharpness(lm) < 2.0
    assert 0.3 < psf_sharpness(n) < psf_sharpness(lm)
    assert psf_sharpness(lm) == psf_sharpness(lm)  # cached


def test_cosmic_rays_found_without_false_hits_on_bright_spots(psf_l):
    """The frame-level test finds hits off the spots and on faint ones, and never takes
    the core of a bright spot (SNR up to ~1500) for a hit.  (Hits on bright cores are
    found from the fit residuals: test_measure.)"""
    rng = np.random.default_rng(5)
    shape = (200, 200)
    sky = 500.0
    xs = rng.uniform(20, 180, 30)
    ys = rng.uniform(20, 180, 30)
    flux = np.exp(rng.uniform(np.log(1e3), np.log(3e6), 30))
    model = render_spots(shape, xs, ys, flux, psf_l) + sky
    img = rng.poisson(model).astype(np.float32) - np.float32(sky)
    var = model.astype(np.float32)
    sharp = psf_sharpness(psf_l)
    assert detect_cosmic_rays(img, var, sharpness=sharp).sum() <= 1
    # hits of 30 sigma of the local noise where the spot light is below 5 sigma
    hy = rng.integers(5, 195, 40)
    hx = rng.integers(5, 195, 40)
    faint = (model[hy, hx] - sky) < 5 * np.sqrt(model[hy, hx])
    hy, hx = hy[faint], hx[faint]
    amp = 30 * np.sqrt(var[hy, hx])
    hit = img.copy()
    hit[hy, hx] += amp
    var_hit = var.copy()
    var_hit[hy, hx] += amp  # the variance of the data includes the hit's counts
    found = detect_cosmic_rays(hit, var_hit, sharpness=sharp)
    assert len(hy) > 20 and np.all(found[hy, hx])
    assert found.sum() - len(np.unique(hy * 200 + hx)) <= 2
    # two-pixel track: both pixels
    trk = img.copy()
    trk[100, 100] += 20 * np.sqrt(var[100, 100])
    trk[100, 101] += 10 * np.sqrt(var[100, 101])
    if (model[100, 100:102] - sky < 5 * np.sqrt(model[100, 100:102])).all():
        f2 = detect_cosmic_rays(trk, var, sharpness=sharp)
        assert f2[100, 100] and f2[100, 101]


def test_reduced_product_round_trip(tmp_path, det):
    rng = np.random.default_rng(6)
    cal, bg, flat = calibration(det, rng)
    raw = D.simulate_frame(np.float32(200.0), det, rng, exptime=DIT, ndit=NDIT, cosmic_rays=False)
    hdr = make_raw_header("metis-lm", date_obs="2025-01-01T00:00:00", dit=DIT, ndit=NDIT,
                          filter_name="Lp", detector_mode="slow")
    fits.PrimaryHDU(raw, hdr).writeto(tmp_path / "raw.fits")
    data, header = read_frame(tmp_path / "raw.fits")
    assert data.dtype == np.float32 and data.dtype.byteorder in "=<|"
    p = detector_params(read_exposure_meta(header), "metis-lm")
    assert p.gain == 2.5 and p.ndit == NDIT and p.saturation_adu < 1e5 / 2.5
    red = reduce_frame(data, cal, p, source=str(tmp_path / "raw.fits"))
    path = write_reduced(tmp_path / "red.fits", red, header, provenance={"DATASET": ("grid", "x")})
    back, h = read_reduced(path)
    assert np.array_equal(back.data, red.data) and np.array_equal(back.dq, red.dq)
    assert np.array_equal(back.bkgvar, red.bkgvar)
    assert h["RAWFILE"] == "raw.fits" and h["DATASET"] == "grid" and h["DATE-OBS"]
    assert back.params.gain_eff == pytest.approx(2.5 * NDIT)
    with pytest.raises(ProductExistsError):
        write_reduced(path, red, header)
    write_reduced(path, red, header, overwrite=True)


def test_shape_mismatch_is_an_error(det):
    rng = np.random.default_rng(7)
    cal, _, _ = calibration(det, rng)
    with pytest.raises(ReductionError, match="frame.fits: frame shape"):
        reduce_frame(np.zeros((100, 100), np.float32), cal, params(det), source="frame.fits")
    with pytest.raises(ReductionError, match="no 2-D image"):
        import tempfile
        from pathlib import Path

        with tempfile.TemporaryDirectory() as d:
            fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(
                [fits.Column("a", "E", array=np.zeros(3))])]).writeto(Path(d) / "t.fits")
            read_frame(Path(d) / "t.fits")
