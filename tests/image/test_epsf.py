"""Tests of the effective-PSF builder: the fitter does not know the true PSF."""
import numpy as np
import pytest

from astrocal.image import centroid as C
from astrocal.image import epsf as E
from astrocal.image import psf as P

READ_NOISE = 10.0
SKY = 200.0


@pytest.fixture(scope="module")
def true_psf():
    """The PSF of the simulated frames: ELT pupil, spiders, pinhole (unknown to the fit)."""
    return P.diffraction_psf(pinhole_mas=P.pinhole_diameter_mas(25.0, 3.319))


def frames(psf, flux, n_frames, rng, n_per_frame=100, spacing=90):
    noise = C.NoiseModel(read_noise=READ_NOISE)
    images, truths, guesses = [], [], []
    for _ in range(n_frames):
        g = np.arange(n_per_frame)
        ncol = int(np.ceil(np.sqrt(n_per_frame)))
        xt = 60 + (g % ncol) * spacing + rng.uniform(-0.5, 0.5, n_per_frame)
        yt = 60 + (g // ncol) * spacing + rng.uniform(-0.5, 0.5, n_per_frame)
        shape = (int(yt.max()) + 60, int(xt.max()) + 60)
        e = P.render_spots(shape, xt, yt, flux, psf) + SKY
        images.append(rng.poisson(e).astype(float) + rng.normal(0, READ_NOISE, shape))
        truths.append((xt, yt))
        guesses.append((xt + rng.normal(0, 0.3, n_per_frame), yt + rng.normal(0, 0.3, n_per_frame)))
    return images, truths, guesses, noise


def run(true_psf, snr, n_frames, seed):
    rng = np.random.default_rng(seed)
    noise = C.NoiseModel(read_noise=READ_NOISE)
    flux = C.flux_for_snr(true_psf, snr, SKY, noise=noise)
    images, truths, guesses, noise = frames(true_psf, flux, n_frames, rng)
    fit = E.build_epsf(images, guesses, noise=noise)
    size = fit.psf.meta["stamp_size"]
    err = np.concatenate([np.concatenate([r.x - t[0], r.y - t[1]])
                          for r, t in zip(fit.results, truths)])
    sig = np.concatenate([np.concatenate([r.sigma_x, r.sigma_y]) for r in fit.results])
    crb = np.concatenate([C.cramer_rao_bound(true_psf, t[0], t[1], flux, SKY, noise=noise,
                                             stamp_size=size) for t in truths])
    crb_rms = np.sqrt(np.mean(np.concatenate([crb[:, 0, 0], crb[:, 1, 1]])))
    return fit, dict(crb_ratio=np.sqrt(np.mean(err**2)) / crb_rms,
                     mean_err=np.mean(err) / crb_rms,
                     mean_x=np.mean(err[: err.size // 2]), sigma_ratio=np.std(err / sig))


def test_epsf_reaches_crb_at_high_snr(true_psf):
    fit, s = run(true_psf, 1000, 3, seed=1)
    assert s["crb_ratio"] < 1.2, s
    assert abs(s["mean_err"]) < 0.25, s  # unbiased: mean error << sigma
    assert abs(s["sigma_ratio"] - 1) < 0.2, s
    assert fit.converged and fit.n_iter <= 6
    assert all(np.all(r.good()) for r in fit.results)
    # the ePSF looks like the true PSF (both normalised over the stamp)
    h = fit.psf.meta["stamp_size"] // 2
    args = (np.array([0.0]), np.array([0.0]), np.array([-h]), np.array([-h]), 2 * h + 1)
    v_true = true_psf.stamps(*args)[0]
    v_epsf = fit.psf.stamps(*args)[0]
    diff = v_epsf / v_epsf.sum() - v_true / v_true.sum()
    assert np.abs(diff).max() < 0.03 * (v_true / v_true.sum()).max()
    assert fit.psf.table_sum == pytest.approx(1.0, abs=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("snr", [100, 3000])
def test_epsf_accuracy_over_snr(true_psf, snr):
    _, s = run(true_psf, snr, 3, seed=snr)
    assert s["crb_ratio"] < 1.2, s
    assert abs(s["mean_err"]) < 0.25, s
    assert abs(s["sigma_ratio"] - 1) < 0.2, s


def test_single_frame_and_gaussian_start_fails_without_iteration(true_psf):
    """The Gaussian starting model alone is clearly worse: the iteration is needed and
    the test above can fail."""
    rng = np.random.default_rng(2)
    noise = C.NoiseModel(read_noise=READ_NOISE)
    flux = C.flux_for_snr(true_psf, 1000, SKY, noise=noise)
    images, truths, guesses, noise = frames(true_psf, flux, 1, rng)
    fwhm = E.estimate_fwhm(images[0], *guesses[0])
    assert fwhm == pytest.approx(true_psf.fwhm(), rel=0.2)
    gauss = P.gaussian_psf(fwhm, oversampling=4, half_width=10)
    r0 = C.fit_centroids(images[0], *guesses[0], gauss, noise=noise)
    fit = E.build_epsf(images, guesses, noise=noise)
    r1 = fit.results[0]
    xt, yt = truths[0]
    e0 = np.sqrt(np.mean((r0.x - xt) ** 2 + (r0.y - yt) ** 2))
    e1 = np.sqrt(np.mean((r1.x - xt) ** 2 + (r1.y - yt) ** 2))
    assert np.median(r0.chi2_ndof) > 3 * np.median(r1.chi2_ndof)
    assert e1 < e0
    crb = C.cramer_rao_bound(true_psf, xt, yt, flux, SKY, noise=noise)
    assert e1 / np.sqrt(np.mean(crb[:, 0, 0] + crb[:, 1, 1])) < 1.3


def test_symmetric_center_and_shift(true_psf):
    shifted = true_psf.shifted(0.137, -0.052)
    sx, sy = E.symmetric_center(shifted)
    assert sx == pytest.approx(-0.137, abs=1e-4)
    assert sy == pytest.approx(0.052, abs=1e-4)
    back = shifted.shifted(sx, sy)
    c = (true_psf.table.shape[0] - 1) // 2
    core = slice(c - 24, c + 25)
    assert np.allclose(back.table[core, core], true_psf.table[core, core],
                       atol=1e-4 * true_psf.table.max())


def test_annulus_background():
    rng = np.random.default_rng(3)
    img = rng.normal(100.0, 1.0, (200, 200))
    img[95:106, 95:106] += 1e4  # a bright source inside the inner radius
    b = E.annulus_background(img, [100.0, 3.0], [100.0, 100.0], 8, 12)
    assert b[0] == pytest.approx(100.0, abs=0.2)
    assert b[1] == pytest.approx(100.0, abs=0.3)  # partly outside the image


@pytest.mark.slow
def test_photutils_builder_wrapper_runs(true_psf):
    """photutils' EPSFBuilder, wrapped for comparison (slow: ~20 s)."""
    rng = np.random.default_rng(4)
    noise = C.NoiseModel(read_noise=READ_NOISE)
    flux = C.flux_for_snr(true_psf, 1000, SKY, noise=noise)
    images, truths, guesses, noise = frames(true_psf, flux, 2, rng)
    psf = E.build_epsf_photutils(images, guesses, background=SKY)
    assert psf.table.shape[0] % 2 == 1
    res = C.fit_centroids(images[0], *guesses[0], psf, noise=noise)
    err = np.hypot(res.x - truths[0][0], res.y - truths[0][1])
    assert np.all(np.isfinite(err)) and np.sqrt(np.mean(err**2)) < 0.1
