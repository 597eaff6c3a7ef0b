"""Tests of astrocal.image.detect: matched-filter detection of pinhole spots."""
import numpy as np
import pytest
from scipy import ndimage

from astrocal.image.detect import detect_spots, filtered_psf, gaussian_smooth
from astrocal.image.psf import diffraction_psf, pinhole_diameter_mas, render_spots

SHAPE = (256, 256)
SIGMA = 4.0  # noise per pixel


@pytest.fixture(scope="module")
def psf():
    return diffraction_psf(3.796, 5.47, pinhole_mas=pinhole_diameter_mas(25.0, 3.319))


def grid(n=5, pitch=30.0, origin=(68.3, 71.6)):
    k = np.arange(n)
    x, y = np.meshgrid(origin[0] + pitch * k, origin[1] + pitch * k)
    return x.ravel(), y.ravel()


def frame(psf, x, y, flux, seed=0, sky=0.0):
    img = render_spots(SHAPE, x, y, flux, psf) + sky
    img += np.random.default_rng(seed).normal(0, SIGMA, SHAPE)
    return img.astype(np.float32)


def test_gaussian_smooth_equals_ndimage():
    a = np.random.default_rng(0).normal(size=(120, 97)).astype(np.float32)
    ref = ndimage.gaussian_filter(a, 1.7, mode="constant", truncate=3.0)
    out = gaussian_smooth(a, 1.7)
    assert out.dtype == np.float32 and np.allclose(out, ref, atol=1e-5)


def test_finds_every_spot_and_no_side_lobes(psf):
    """Spots from SNR ~10 to ~3000 (rings and spider spikes of the bright ones 20-100
    sigma above the noise) are all found, with nothing else."""
    x, y = grid()
    flux = np.exp(np.random.default_rng(1).uniform(np.log(800), np.log(2e6), x.size))
    flux[:3] = [2e6, 2e6, 2e6]
    img = frame(psf, x, y, flux)
    t = detect_spots(img, psf, variance=np.full(SHAPE, SIGMA**2, np.float32),
                     subtract_background=False)
    assert t.meta["n_sidelobes"] > 10  # there were side lobes to reject
    assert len(t) == x.size
    d = np.hypot(t["x"][:, None] - x[None, :], t["y"][:, None] - y[None, :])
    assert np.all(d.min(axis=1) < 0.5)
    assert np.all(np.diff(t["peak"]) <= 0)  # brightest first


def test_without_side_lobe_test_the_rings_are_detected(psf):
    x, y = grid(n=1, origin=(128.2, 127.7))
    img = frame(psf, x, y, [3e6])
    t = detect_spots(img, psf, sidelobes=None, variance=np.full(SHAPE, SIGMA**2, np.float32),
                     subtract_background=False)
    assert len(t) > 5
    t = detect_spots(img, psf, variance=np.full(SHAPE, SIGMA**2, np.float32),
                     subtract_background=False)
    assert len(t) == 1


def test_masked_pixels_neither_make_nor_hide_spots(psf):
    x, y = grid(n=3)
    img = frame(psf, x, y, np.full(x.size, 2e4), sky=100.0)
    mask = np.zeros(SHAPE, bool)
    rng = np.random.default_rng(2)
    iy, ix = rng.integers(0, 256, (2, 300))
    img[iy, ix] = 1e6  # hot pixels / cosmic rays, masked
    mask[iy, ix] = True
    cy, cx = int(round(y[4])), int(round(x[4]))
    mask[cy, cx] = True  # the core pixel of one spot
    img[cy, cx] = 0.0
    mask[:, :6] = True  # a masked border
    img[:, :6] = np.nan
    t = detect_spots(img, psf, mask=mask)  # background (100) subtracted here
    assert len(t) == x.size
    d = np.hypot(t["x"][:, None] - x[None, :], t["y"][:, None] - y[None, :])
    assert np.all(d.min(axis=1) < 0.6)


def test_robust_noise_without_variance(psf):
    x, y = grid(n=2)
    img = frame(psf, x, y, np.full(x.size, 1e4))
    t = detect_spots(img, psf)
    expected = SIGMA * (np.exp(-0.5 * (np.arange(-5, 6) / (psf.fwhm() / 2.3548)) ** 2) ** 2).sum() \
        / np.exp(-0.5 * (np.arange(-5, 6) / (psf.fwhm() / 2.3548)) ** 2).sum() ** 2
    assert t.meta["noise"] == pytest.approx(expected, rel=0.1)
    assert len(t) == x.size


def test_empty_and_blank_frames(psf):
    t = detect_spots(np.full(SHAPE, np.nan, np.float32), psf)
    assert len(t) == 0 and t.meta["good_fraction"] == 0
    noise = np.random.default_rng(3).normal(0, SIGMA, SHAPE).astype(np.float32)
    t = detect_spots(noise, psf, variance=np.full(SHAPE, SIGMA**2, np.float32))
    assert len(t) <= 1 and np.isfinite(t.meta["noise"])
    with pytest.raises(ValueError, match="2-D"):
        detect_spots(np.zeros(5), psf)


def test_filtered_psf_is_cached_and_peaks_at_one(psf):
    a, os_ = filtered_psf(psf, 1.5)
    b, _ = filtered_psf(psf, 1.5)
    assert a is b and a.max() == pytest.approx(1.0) and os_ == psf.oversampling
