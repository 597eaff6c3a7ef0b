"""Tests of the batched PSF-fitting centroider and the Cramér-Rao bound."""
import numpy as np
import pytest
from scipy import special

from astrocal.image import centroid as C
from astrocal.image import psf as P

READ_NOISE = 10.0  # e-
SKY = 200.0  # e-/px present in the image


@pytest.fixture(scope="module")
def lab_psf():
    return P.diffraction_psf(pinhole_mas=P.pinhole_diameter_mas(25.0, 3.319))


def simulate(psf, flux, n, rng, *, bg=SKY, noise=C.NoiseModel(read_noise=READ_NOISE),
             spacing=72, guess_sigma=0.3, gain=1.0):
    """Isolated spots on a grid with random sub-pixel phases; returns image (ADU),
    true and guessed positions.  Spots are ``spacing`` px apart: a spot's light (rendered
    out to the PSF table's 37 px) does not reach another's fitting stamp (+-7 px)."""
    ncol = int(np.ceil(np.sqrt(n)))
    g = np.arange(n)
    xt = 40 + (g % ncol) * spacing + rng.uniform(-0.5, 0.5, n)
    yt = 40 + (g // ncol) * spacing + rng.uniform(-0.5, 0.5, n)
    shape = (int(yt.max()) + 40, int(xt.max()) + 40)
    electrons = P.render_spots(shape, xt, yt, flux, psf) + bg
    img = rng.poisson(electrons).astype(float) + rng.normal(0.0, noise.read_noise, shape)
    img /= gain
    xg = xt + rng.normal(0, guess_sigma, n)
    yg = yt + rng.normal(0, guess_sigma, n)
    return img, xt, yt, xg, yg


def accuracy(psf, snr, n, rng, stamp_size=None):
    noise = C.NoiseModel(read_noise=READ_NOISE)
    s = stamp_size or psf.default_stamp_size()
    flux = C.flux_for_snr(psf, snr, SKY, noise=noise, stamp_size=s)
    img, xt, yt, xg, yg = simulate(psf, flux, n, rng, noise=noise)
    res = C.fit_centroids(img, xg, yg, psf, noise=noise, stamp_size=s)
    assert np.all(res.flags == 0), np.unique(res.flags)
    crb = C.cramer_rao_bound(psf, xt, yt, flux, SKY, noise=noise, stamp_size=s)
    err = np.concatenate([res.x - xt, res.y - yt])
    sig = np.concatenate([res.sigma_x, res.sigma_y])
    crb_rms = np.sqrt(np.mean(np.concatenate([crb[:, 0, 0], crb[:, 1, 1]])))
    return dict(crb_ratio=np.sqrt(np.mean(err**2)) / crb_rms,
                sigma_ratio=np.std(err / sig),
                mean_err=np.mean(err) / crb_rms,
                snr=np.median(res.snr), chi2=np.median(res.chi2_ndof),
                flux_pull=np.mean((res.flux - flux) / res.flux_err))


def check(stats, snr):
    assert stats["crb_ratio"] <= 1.10, stats
    assert abs(stats["sigma_ratio"] - 1) <= 0.15, stats
    assert abs(stats["mean_err"]) < 0.2, stats
    assert stats["snr"] == pytest.approx(snr, rel=0.1)
    assert stats["chi2"] == pytest.approx(1.0, abs=0.05)
    assert abs(stats["flux_pull"]) < 0.25, stats


@pytest.mark.parametrize("snr", [30, 300, 3000])
def test_accuracy_at_cramer_rao_bound(lab_psf, snr):
    """rms error <= 1.10 x CRB and sigma calibrated within 15 % (300 spots per SNR)."""
    check(accuracy(lab_psf, snr, 300, np.random.default_rng(snr)), snr)


@pytest.mark.slow
@pytest.mark.parametrize("snr", [30, 60, 100, 300, 1000, 3000])
def test_accuracy_at_cramer_rao_bound_slow(lab_psf, snr):
    check(accuracy(lab_psf, snr, 1000, np.random.default_rng(1000 + snr)), snr)


def test_crb_matches_independent_gaussian_fisher():
    """Poisson-only Fisher information of a pixel-integrated Gaussian, computed here from
    error functions, equals cramer_rao_bound's (known background, source centred)."""
    fwhm, flux, size = 4.0, 1e5, 21
    psf = P.gaussian_psf(fwhm, oversampling=8, half_width=20)
    s = fwhm / (2 * np.sqrt(2 * np.log(2)))
    i = np.arange(size) - size // 2
    s2 = np.sqrt(2) * s
    a = 0.5 * (special.erf((i + 0.5) / s2) - special.erf((i - 0.5) / s2))
    da = (np.exp(-((i - 0.5) ** 2) / (2 * s * s)) - np.exp(-((i + 0.5) ** 2) / (2 * s * s))) / (
        np.sqrt(2 * np.pi) * s)
    # m = F a_i(x) a_j(y): I_xx = F sum_i a_i'^2 / a_i * sum_j a_j ; x, y, F decouple
    i_xx = flux * np.sum(da**2 / a) * np.sum(a)
    i_ff = np.sum(a) ** 2 / flux
    cov = C.cramer_rao_bound(psf, 0.0, 0.0, flux, 0.0, stamp_size=size, fit_background=False)
    assert np.sqrt(cov[0, 0]) == pytest.approx(1 / np.sqrt(i_xx), rel=1e-4)
    assert np.sqrt(cov[1, 1]) == pytest.approx(1 / np.sqrt(i_xx), rel=1e-4)
    assert np.sqrt(cov[2, 2]) == pytest.approx(1 / np.sqrt(i_ff), rel=1e-4)
    # and it is close to the textbook sqrt((sigma^2 + 1/12) / F)
    assert np.sqrt(cov[0, 0]) == pytest.approx(np.sqrt((s * s + 1 / 12) / flux), rel=0.02)


def test_crb_scaling(lab_psf):
    noise = C.NoiseModel(read_noise=READ_NOISE)
    c1 = C.cramer_rao_bound(lab_psf, 0.2, 0.1, 1e6, 0.0, noise=C.NoiseModel())
    c2 = C.cramer_rao_bound(lab_psf, 0.2, 0.1, 4e6, 0.0, noise=C.NoiseModel())
    # photon-limited: sigma ~ 1/sqrt(F)
    assert np.sqrt(c1[0, 0] / c2[0, 0]) == pytest.approx(2.0, rel=0.01)
    # background-limited: sigma ~ 1/F
    c3 = C.cramer_rao_bound(lab_psf, 0.2, 0.1, 1e3, 1e6, noise=noise)
    c4 = C.cramer_rao_bound(lab_psf, 0.2, 0.1, 2e3, 1e6, noise=noise)
    assert np.sqrt(c3[0, 0] / c4[0, 0]) == pytest.approx(2.0, rel=0.01)
    # vectorised form
    cv = C.cramer_rao_bound(lab_psf, [0.2, 0.2], [0.1, 0.1], [1e6, 4e6], 0.0, noise=C.NoiseModel())
    assert cv.shape == (2, 4, 4) and np.allclose(cv[0], c1) and np.allclose(cv[1], c2)
    assert C.flux_for_snr(lab_psf, 100, SKY, noise=noise) > 0


def test_noiseless_fit_is_exact(lab_psf):
    rng = np.random.default_rng(5)
    n = 40
    g = np.arange(n)
    xt = 30 + (g % 8) * 40 + rng.uniform(-0.5, 0.5, n)
    yt = 30 + (g // 8) * 40 + rng.uniform(-0.5, 0.5, n)
    img = P.render_spots((260, 360), xt, yt, 5e4, lab_psf) + 120.0
    res = C.fit_centroids(img, xt + rng.normal(0, 0.4, n), yt + rng.normal(0, 0.4, n), lab_psf,
                          noise=C.NoiseModel(read_noise=5.0))
    assert np.max(np.abs(res.x - xt)) < 1e-5
    assert np.max(np.abs(res.y - yt)) < 1e-5
    assert np.allclose(res.flux, 5e4, rtol=1e-5)
    assert np.allclose(res.background, 120.0, atol=1e-3)
    assert np.all(res.chi2_ndof < 1e-6)


def test_far_guesses_recentered(lab_psf):
    """First guesses 1-1.5 px off: the stamps are re-cut and the fit is unbiased."""
    rng = np.random.default_rng(11)
    noise = C.NoiseModel(read_noise=READ_NOISE)
    img, xt, yt, _, _ = simulate(lab_psf, 2e5, 100, rng, noise=noise)
    ang = rng.uniform(0, 2 * np.pi, 100)
    off = rng.uniform(1.0, 1.5, 100)
    res = C.fit_centroids(img, xt + off * np.cos(ang), yt + off * np.sin(ang), lab_psf, noise=noise)
    assert np.all(res.good())
    assert np.all(np.hypot(res.x - xt, res.y - yt) < 5 * np.hypot(res.sigma_x, res.sigma_y))
    assert np.std((res.x - xt) / res.sigma_x) < 1.3


def test_gain_and_fixed_background(lab_psf):
    """Image in ADU with gain 2.5 e-/ADU: errors stay calibrated; a fixed, known
    background gives smaller errors and unbiased positions."""
    rng = np.random.default_rng(21)
    gain = 2.5
    noise = C.NoiseModel(gain=gain, read_noise=READ_NOISE)
    img, xt, yt, xg, yg = simulate(lab_psf, 5e4, 300, rng, noise=noise, gain=gain)
    res = C.fit_centroids(img, xg, yg, lab_psf, noise=noise)
    pull = np.concatenate([(res.x - xt) / res.sigma_x, (res.y - yt) / res.sigma_y])
    assert abs(np.std(pull) - 1) < 0.15
    assert np.mean(res.flux) * gain == pytest.approx(5e4, rel=0.02)
    assert np.mean(res.background) * gain == pytest.approx(SKY, rel=0.01)
    fixed = C.fit_centroids(img, xg, yg, lab_psf, noise=noise, background=SKY / gain)
    # the flux is strongly correlated with the background, the position hardly
    assert np.all(fixed.flux_err < 0.95 * res.flux_err)
    assert np.all(fixed.sigma_x < 1.01 * res.sigma_x)
    pull = np.concatenate([(fixed.x - xt) / fixed.sigma_x, (fixed.y - yt) / fixed.sigma_y])
    assert abs(np.std(pull) - 1) < 0.15 and abs(np.mean(pull)) < 0.2
    assert np.all(fixed.background == SKY / gain)


def test_subtracted_background_noise_model(lab_psf):
    """Sky subtracted before fitting: its noise is declared with NoiseModel.sky."""
    rng = np.random.default_rng(31)
    noise = C.NoiseModel(read_noise=READ_NOISE, sky=SKY)
    img, xt, yt, xg, yg = simulate(lab_psf, 3e4, 300, rng)
    res = C.fit_centroids(img - SKY, xg, yg, lab_psf, noise=noise)
    pull = np.concatenate([(res.x - xt) / res.sigma_x, (res.y - yt) / res.sigma_y])
    assert abs(np.std(pull) - 1) < 0.15
    assert np.median(res.chi2_ndof) == pytest.approx(1.0, abs=0.05)
    assert abs(np.mean(res.background)) < 1.0
    # the same noise given as a variance map (ADU^2); NaN in the map masks a pixel
    vmap = np.full(img.shape, READ_NOISE**2 + SKY)
    vmap[np.rint(yt[0]).astype(int), np.rint(xt[0]).astype(int)] = np.nan
    res_map = C.fit_centroids(img - SKY, xg, yg, lab_psf,
                              noise=C.NoiseModel(extra_variance=vmap))
    assert np.allclose(res_map.x[1:], res.x[1:], atol=1e-3 * res.sigma_x[1:])
    assert np.allclose(res_map.sigma_y[1:], res.sigma_y[1:], rtol=1e-6)
    assert res_map.flags[0] & C.FLAG_MASKED and res_map.npix[0] == res.npix[0] - 1
    assert abs(res_map.x[0] - xt[0]) < 5 * res_map.sigma_x[0]


def test_masked_and_bad_pixels(lab_psf):
    rng = np.random.default_rng(41)
    noise = C.NoiseModel(read_noise=READ_NOISE)
    img, xt, yt, xg, yg = simulate(lab_psf, 1e5, 50, rng, noise=noise)
    ref = C.fit_centroids(img, xg, yg, lab_psf, noise=noise)
    # corrupt one bright pixel next to the peak of every spot, mask it via a bad-pixel
    # mask for half the spots and via NaN for the other half
    bad = img.copy()
    mask = np.zeros(img.shape, bool)
    cols = np.rint(xt).astype(int) + 1
    rows = np.rint(yt).astype(int)
    bad[rows, cols] = 1e7
    mask[rows[:25], cols[:25]] = True
    bad[rows[25:], cols[25:]] = np.nan
    res = C.fit_centroids(bad, xg, yg, lab_psf, noise=noise, mask=mask)
    assert np.all(res.flags & C.FLAG_MASKED)
    assert np.all(res.good())
    assert np.all(res.npix == ref.npix - 1)
    # losing one pixel costs a little precision, never accuracy
    assert np.all(res.sigma_x >= ref.sigma_x * 0.999)
    pull = np.concatenate([(res.x - xt) / res.sigma_x, (res.y - yt) / res.sigma_y])
    assert np.max(np.abs(pull)) < 5
    # without the mask, the 1e7 pixels ruin the fits (so the mask did the work)
    unmasked = C.fit_centroids(np.where(np.isnan(bad), 1e7, bad), xg, yg, lab_psf, noise=noise)
    assert np.median(np.abs(unmasked.x - xt) / ref.sigma_x) > 10


def test_flags(lab_psf):
    rng = np.random.default_rng(51)
    noise = C.NoiseModel(read_noise=READ_NOISE)
    img, xt, yt, xg, yg = simulate(lab_psf, 1e6, 9, rng, noise=noise)
    sat_level = 0.5 * img.max()
    # a fainter spot 2.3 px from the left edge
    P.render_spots(None, [2.3], [yt[3]], [2e5], lab_psf, image=img)
    xs = np.concatenate([xg, [2.1, np.nan, xg[0] + 3.0, 1000.0]])
    ys = np.concatenate([yg, [yt[3] + 0.2, 50.0, yg[0], 1000.0]])
    res = C.fit_centroids(img, xs, ys, lab_psf, noise=noise, saturation=sat_level)
    assert len(res) == 13
    # saturated spots are flagged and fitted without their saturated pixels
    assert np.all(res.flags[:9] & C.FLAG_SATURATED)
    assert np.all(res.npix[:9] < 15 * 15)
    # near the edge, fitted on the pixels inside the image
    assert res.flags[9] & C.FLAG_EDGE and not res.flags[9] & C.FLAG_SATURATED
    assert res.x[9] == pytest.approx(2.3, abs=0.05) and res.flux[9] == pytest.approx(2e5, rel=0.05)
    # NaN guess: no fit
    assert res.flags[10] & C.FLAG_BAD_FIT and np.isnan(res.x[10])
    # two guesses within one stamp: crowded
    assert res.flags[0] & C.FLAG_CROWDED and res.flags[11] & C.FLAG_CROWDED
    assert not res.flags[1] & C.FLAG_CROWDED
    # entirely outside the image: no pixel -> bad fit
    assert res.flags[12] & C.FLAG_BAD_FIT and res.flags[12] & C.FLAG_EDGE
    assert C.decode_flags(C.FLAG_EDGE | C.FLAG_CROWDED) == ["near_edge", "crowded"]
    t = res.to_table()
    for col in ("x", "y", "sigma_x", "sigma_y", "cov_xy", "flux", "flux_err", "background",
                "snr", "chi2_ndof", "flags"):
        assert col in t.colnames
    assert len(t) == 13 and str(t["x"].unit) == "pix"
    assert res.cov.shape == (13, 2, 2)


def test_saturated_pixels_excluded_keep_accuracy(lab_psf):
    rng = np.random.default_rng(61)
    noise = C.NoiseModel(read_noise=READ_NOISE)
    img, xt, yt, xg, yg = simulate(lab_psf, 2e5, 200, rng, noise=noise)
    sat = np.percentile(img, 99.99)
    clipped = np.minimum(img, sat)
    res = C.fit_centroids(clipped, xg, yg, lab_psf, noise=noise, saturation=sat)
    hit = (res.flags & C.FLAG_SATURATED) > 0
    assert 10 < hit.sum() < 200
    pull = np.concatenate([(res.x - xt) / res.sigma_x, (res.y - yt) / res.sigma_y])
    assert abs(np.std(pull) - 1) < 0.2


def test_ao_psf_fit(lab_psf):
    """Any object with the stamp protocol can be fitted: an AO star PSF."""
    core = P.diffraction_psf()
    ao = P.AOStarPSF.from_seeing(core, strehl=0.7)
    rng = np.random.default_rng(71)
    noise = C.NoiseModel(read_noise=READ_NOISE)
    img, xt, yt, xg, yg = simulate(ao, 1e5, 200, rng, noise=noise)
    res = C.fit_centroids(img, xg, yg, ao, noise=noise)
    crb = C.cramer_rao_bound(ao, xt, yt, 1e5, SKY, noise=noise)
    err = np.concatenate([res.x - xt, res.y - yt])
    assert np.sqrt(np.mean(err**2)) / np.sqrt(np.mean(crb[:, 0, 0])) < 1.15


@pytest.mark.parametrize("band", ["L", "N"])
def test_deblending_fine_grid(band):
    """The METIS fine grid (0.1656 arcsec pitch: 30.3 px in L, 24.4 px in N): neighbours
    bias each other's fits unless their light is subtracted (deblend)."""
    lam, pix = {"L": (3.8, 5.47), "N": (11.3, 6.79)}[band]
    psf = P.diffraction_psf(lam, pix, pinhole_mas=7.53)
    pitch = 165.6 / pix
    g = np.arange(25)
    xt = 200 + (g % 5) * pitch + 0.13
    yt = 200 + (g // 5) * pitch - 0.21
    img = P.render_spots((600, 600), xt, yt, 1e6, psf) + 100.0
    noise = C.NoiseModel(read_noise=READ_NOISE)
    raw = C.fit_centroids(img, xt + 0.3, yt - 0.2, psf, noise=noise, deblend=0)
    res = C.fit_centroids(img, xt + 0.3, yt - 0.2, psf, noise=noise, deblend=6)
    bias_raw = np.max(np.hypot(raw.x - xt, raw.y - yt))
    bias = np.max(np.hypot(res.x - xt, res.y - yt))
    assert bias_raw > 0.5 * np.median(raw.sigma_x)  # significant without deblending
    assert bias < 1e-5
    assert res.meta["deblend_rounds"] >= 1
    # crowding flag: in N band the neighbours' cores reach the 35-px stamps
    assert np.all(res.flags & C.FLAG_CROWDED) == (band == "N")
    assert np.all(res.good())
