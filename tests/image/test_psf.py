"""Tests of the diffraction / pixel-integrated PSF model (astrocal.image.psf)."""
import time

import numpy as np
import pytest
from scipy import optimize

from astrocal.image import psf as P


@pytest.fixture(scope="module")
def airy():
    """Unobscured, spider-free point-source PSF sampled at points (not pixel-integrated)."""
    return P.diffraction_psf(obscuration_m=0.0, spiders=False, pixel_integrated=False)


@pytest.fixture(scope="module")
def lab_psf():
    """The default lab PSF: ELT pupil with spiders, 25 um pinhole, L band, IMG_LM."""
    return P.diffraction_psf(pinhole_mas=P.pinhole_diameter_mas(25.0, 3.319))


def _fine_grid(psf):
    n = psf.table.shape[0]
    u = (np.arange(n) - (n - 1) / 2) / psf.oversampling
    return np.meshgrid(u, u)


def test_constants_and_pinhole():
    assert P.pinhole_diameter_mas(25.0, 3.319) == pytest.approx(7.532, abs=1e-3)
    import astropy.units as u

    q = P.pinhole_diameter_mas(25 * u.um, 3.319 * u.mm / u.arcsec)
    assert q == pytest.approx(7.532, abs=1e-3)
    lod_mas = 3.8e-6 / P.ELT_OUTER_DIAMETER_M * P.RAD_TO_MAS
    assert lod_mas == pytest.approx(20.02, abs=0.01)


def test_pupil_area():
    pup, dx = P.elt_pupil(256, spiders=False)
    d, o = P.ELT_OUTER_DIAMETER_M, P.ELT_CENTRAL_OBSCURATION_M
    area = pup.sum() * dx**2
    assert area == pytest.approx(np.pi / 4 * (d**2 - o**2), rel=1e-3)
    pup_s, _ = P.elt_pupil(256, spiders=True)
    spider_area = 6 * P.ELT_SPIDER_WIDTH_M * (d - o) / 2
    assert (pup.sum() - pup_s.sum()) * dx**2 == pytest.approx(spider_area, rel=0.03)


def test_airy_normalisation_encircled_energy(airy):
    """Absolute normalisation: encircled energy equals 1 - J0^2 - J1^2 at the dark rings."""
    lod = airy.meta["lambda_over_d_px"]
    xx, yy = _fine_grid(airy)
    r = np.hypot(xx, yy) / lod
    for ring in (1.2197, 2.2331, 3.2383, 5.2428, 8.2466):
        ee = airy.table[r <= ring].sum() / airy.oversampling**2
        assert ee == pytest.approx(P.airy_encircled_energy(ring), abs=2e-4)
    # peak intensity of a unit-flux Airy pattern: (pi / 4) (D / lambda)^2 per px^2
    c = (airy.table.shape[0] - 1) // 2
    assert airy.table[c, c] == pytest.approx(np.pi / 4 / lod**2, rel=1e-3)


def test_airy_fwhm_and_first_dark_ring(airy):
    lod = airy.meta["lambda_over_d_px"]
    assert airy.fwhm() / lod == pytest.approx(1.029, rel=0.01)
    res = optimize.minimize_scalar(lambda r: airy.evaluate(r * lod, 0.0),
                                   bounds=(1.0, 1.45), method="bounded")
    assert res.x == pytest.approx(1.2197, rel=0.005)
    assert airy.evaluate(res.x * lod, 0.0) < 1e-5 * airy.table.max()


def test_obscured_profile_matches_analytic():
    psf = P.diffraction_psf(spiders=False, pixel_integrated=False)
    lod = psf.meta["lambda_over_d_px"]
    eps = P.ELT_CENTRAL_OBSCURATION_M / P.ELT_OUTER_DIAMETER_M
    r = np.linspace(0.0, 4.0, 81)
    for ang in (0.0, 0.7):
        v = psf.evaluate(r * lod * np.cos(ang), r * lod * np.sin(ang))
        assert np.max(np.abs(v / v[0] - P.airy_profile(r, eps))) < 2e-4
    # the ELT PSF (obscured, with spiders) is close to 1.03 lambda/D wide, a bit narrower
    elt = P.diffraction_psf(pixel_integrated=False)
    assert elt.fwhm() / lod == pytest.approx(1.03, rel=0.06)
    assert elt.fwhm() < psf.fwhm() * 1.01 and psf.fwhm() < P.diffraction_psf(
        obscuration_m=0, spiders=False, pixel_integrated=False).fwhm()


def test_pixel_integration_equals_enclosed_energy(lab_psf):
    """Sum of the pixel-integrated PSF over a stamp = integral of the optical PSF over
    the stamp's square, for any sub-pixel position."""
    optical = P.diffraction_psf(pinhole_mas=lab_psf.meta["pinhole_mas"], pixel_integrated=False)
    xx, yy = _fine_grid(optical)
    os_ = optical.oversampling
    for half in (3, 10, 25):
        # Simpson's rule over the square |x|, |y| <= half + 0.5 (edges fall on nodes)
        lim = half + 0.5
        k = np.rint((xx[0] + lim) * os_).astype(int)  # node index from the left edge
        inside = (xx[0] >= -lim - 1e-9) & (xx[0] <= lim + 1e-9)
        w1 = np.where(inside, np.where(k % 2 == 1, 4.0, 2.0), 0.0) / 3.0
        w1[np.isclose(np.abs(xx[0]), lim)] = 1.0 / 3.0
        enclosed = (w1[None, :] * w1[:, None] * optical.table).sum() / os_**2
        for dx, dy in ((0.0, 0.0), (0.37, -0.21)):
            s = lab_psf.fraction_in_stamp(2 * half + 1, dx, dy)
            if dx == 0.0:
                assert s == pytest.approx(enclosed, abs=2e-5)
            else:  # shifted source: compare to the shifted square
                sq = optical.evaluate(xx + dx, yy + dy)
                ref = (w1[None, :] * w1[:, None] * sq).sum() / os_**2
                assert s == pytest.approx(ref, abs=1e-4)
    # total of the pixel-integrated table = total of the optical table (both = fraction
    # of the flux inside the table), and most of the flux is inside
    assert lab_psf.table_sum == pytest.approx(optical.table_sum, abs=2e-3)
    assert 0.93 < lab_psf.table_sum < 0.97


def test_pixel_integrated_sum_independent_of_phase(lab_psf):
    fr = [lab_psf.fraction_in_stamp(61, dx, dy) for dx, dy in
          ((0, 0), (0.5, 0), (0.25, 0.4), (-0.45, 0.1))]
    assert np.ptp(fr) < 3e-4


def test_table_interpolation_matches_direct_evaluation(lab_psf):
    pin = lab_psf.meta["pinhole_mas"]
    xs = np.arange(-7, 8) + 0.3712
    ys = np.arange(-7, 8) - 0.2281
    ref = P.diffraction_psf_direct(xs, ys, pinhole_mas=pin)
    # source at (-0.3712, 0.2281): pixel (i - 7) sits at offset xs[i]
    v, d_dx, d_dy = lab_psf.stamps(np.array([-0.3712]), np.array([0.2281]),
                                   np.array([-7]), np.array([-7]), 15, derivatives=True)
    assert np.max(np.abs(v[0] - ref)) < 1e-5 * ref.max()
    e = 1e-4
    num_dx = (P.diffraction_psf_direct(xs - e, ys, pinhole_mas=pin)
              - P.diffraction_psf_direct(xs + e, ys, pinhole_mas=pin)) / (2 * e)
    num_dy = (P.diffraction_psf_direct(xs, ys - e, pinhole_mas=pin)
              - P.diffraction_psf_direct(xs, ys + e, pinhole_mas=pin)) / (2 * e)
    assert np.max(np.abs(d_dx[0] - num_dx)) < 1e-4 * np.abs(num_dx).max()
    assert np.max(np.abs(d_dy[0] - num_dy)) < 1e-4 * np.abs(num_dy).max()
    # evaluate() agrees with stamps()
    xx, yy = np.meshgrid(xs, ys)
    assert np.allclose(lab_psf.evaluate(xx, yy), v[0], atol=1e-12)


def test_stamps_outside_table_are_zero(lab_psf):
    h = int(lab_psf.half_width) + 5
    v = lab_psf.stamps(np.array([0.3]), np.array([0.2]), np.array([-h]), np.array([-h]),
                       2 * h + 1)[0]
    assert np.all(v[:, :4] == 0.0) and np.all(v[:4, :] == 0.0)
    assert v.sum() == pytest.approx(lab_psf.table_sum, abs=2e-3)


def test_render_moves_centroid_by_shift(lab_psf):
    """Rendering at sub-pixel shifts moves the (first-moment) centroid by the shift."""
    shape = (81, 81)
    yy, xx = np.indices(shape)

    def centroid(img):
        return (img * xx).sum() / img.sum(), (img * yy).sum() / img.sum()

    ref = centroid(P.render_spots(shape, [40.0], [40.0], [1.0], lab_psf, radius=30))
    assert ref[0] == pytest.approx(40.0, abs=1e-9) and ref[1] == pytest.approx(40.0, abs=1e-9)
    for dx, dy in ((0.25, 0.0), (0.5, -0.3), (-0.13, 0.41), (0.77, 1.6)):
        img = P.render_spots(shape, [40.0 + dx], [40.0 + dy], [1.0], lab_psf, radius=30)
        cx, cy = centroid(img)
        # the moments of a stamp truncated on the pixel grid are biased by the light
        # beyond the window (here < 3 %) - a bound far below the shifts themselves
        assert cx - 40.0 == pytest.approx(dx, abs=0.03 * abs(dx) + 1e-3)
        assert cy - 40.0 == pytest.approx(dy, abs=0.03 * abs(dy) + 1e-3)


def test_render_flux_and_edges(lab_psf):
    img = P.render_spots((100, 120), [50.3, 2.0], [40.7, 50.0], [1000.0, 500.0], lab_psf,
                         radius=20)
    assert img.shape == (100, 120)
    frac = lab_psf.fraction_in_stamp(41, 0.3, -0.3)
    assert img[:, 30:].sum() == pytest.approx(1000 * frac, rel=1e-9)
    # the second spot is cut by the left edge: exactly the part of its stamp inside lands
    wide = P.render_spots((100, 160), [42.0], [50.0], [500.0], lab_psf, radius=20)
    assert np.allclose(img[:, :30], wide[:, 40:70], rtol=0, atol=1e-9)
    assert 0.5 * 500 < img[:, :30].sum() < 0.9 * 500


def test_render_full_frame(lab_psf):
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 2048, 100)
    y = rng.uniform(0, 2048, 100)
    P.render_spots((64, 64), x[:2] % 60, y[:2] % 60, 1.0, lab_psf)  # warm-up
    t = time.perf_counter()
    img = P.render_spots((2048, 2048), x, y, 1e4, lab_psf)
    dt = time.perf_counter() - t
    print(f"rendering 100 spots on 2048x2048 took {dt:.2f} s")  # reported, not asserted
    assert img.sum() > 0.9 * 1e6


def test_gaussian_psf():
    g = P.gaussian_psf(3.0, oversampling=8, half_width=12)
    assert g.table_sum == pytest.approx(1.0, abs=1e-6)
    # pixel integration broadens the FWHM: sigma^2 -> sigma^2 + 1/12
    s2 = (3.0 / 2.3548) ** 2 + 1 / 12
    assert g.fwhm() == pytest.approx(2.3548 * np.sqrt(s2), rel=0.01)


def test_ao_star_psf():
    core = P.diffraction_psf()
    ao = P.AOStarPSF.from_seeing(core, strehl=0.6, seeing_arcsec=0.7)
    assert ao.halo_fwhm_px == pytest.approx(700 * (3.8 / 0.5) ** -0.2 / 5.47, rel=1e-6)
    # peak ratio to the perfect PSF ~ Strehl
    assert ao.evaluate(0.0, 0.0) / core.evaluate(0.0, 0.0) == pytest.approx(0.6, abs=0.01)
    # halo normalisation: a Moffat's enclosed fraction 1 - (1 + r^2/a^2)^(1-beta) within a
    # circle; check the square stamp sum lies between the inscribed and circumscribed
    a = P.moffat_fwhm_to_alpha(ao.halo_fwhm_px, ao.beta)
    h = 150
    v = ao.stamps(np.array([0.0]), np.array([0.0]), np.array([-h]), np.array([-h]),
                  2 * h + 1)[0]
    halo_sum = (v.sum() - 0.6 * core.fraction_in_stamp(2 * h + 1)) / 0.4

    def enc(r):
        return 1 - (1 + r**2 / a**2) ** (1 - ao.beta)

    assert enc(h + 0.5) < halo_sum < enc(np.sqrt(2) * (h + 0.5))
    # derivatives are consistent with finite differences
    x = np.array([0.31])
    y = np.array([-0.17])
    x0 = np.array([-7])
    _, d_dx, d_dy = ao.stamps(x, y, x0, x0, 15, derivatives=True)
    e = 1e-5
    num = (ao.stamps(x + e, y, x0, x0, 15) - ao.stamps(x - e, y, x0, x0, 15)) / (2 * e)
    assert np.max(np.abs(num - d_dx)) < 1e-4 * np.abs(d_dx).max()
    num = (ao.stamps(x, y + e, x0, x0, 15) - ao.stamps(x, y - e, x0, x0, 15)) / (2 * e)
    assert np.max(np.abs(num - d_dy)) < 1e-4 * np.abs(d_dy).max()


def test_n_band_psf():
    psf = P.diffraction_psf(P.FILTER_WAVELENGTH_UM["N"], P.PIXEL_SCALE_MAS["IMG_N"],
                            pinhole_mas=7.53, oversampling=4)
    lod = psf.meta["lambda_over_d_px"]
    assert lod == pytest.approx(11.3e-6 / 39.146 * P.RAD_TO_MAS / 6.79, rel=1e-9)
    assert 0.9 * lod < psf.fwhm() < 1.2 * lod
    assert psf.default_stamp_size() % 2 == 1 and psf.default_stamp_size() >= 3 * lod


def test_bad_tables_rejected():
    with pytest.raises(ValueError):
        P.PixelPSF(np.ones((4, 4)), 2)
    with pytest.raises(ValueError):
        P.PixelPSF(np.full((5, 5), np.nan), 2)


def test_photutils_image_psf_of_the_table_is_the_same_psf(lab_psf):
    """The table convention the centroid benchmark relies on (its photutils peer fits an
    ``ImagePSF`` of ``PixelPSF.table``): photutils' own interpolation of the table, placed
    at a source position, gives the same pixel values as ``PixelPSF.stamps``.  Both are the
    cubic interpolating spline of the table (they differ only in their boundary
    conditions, whose influence has died out far inside the table): equal to rounding,
    whereas moving the source by 0.01 px changes the values by ~4e-3 of the peak."""
    from photutils.psf import ImagePSF

    rng = np.random.default_rng(12)
    image_psf = ImagePSF(lab_psf.table, oversampling=lab_psf.oversampling)
    peak = lab_psf.table.max()
    yy, xx = np.mgrid[14:29, 13:28]
    for x, y in rng.uniform(20.0, 21.0, (5, 2)):
        ours = lab_psf.stamps(np.array([x]), np.array([y]), np.array([13]), np.array([14]), 15)[0]
        theirs = image_psf.evaluate(xx, yy, 1.0, x, y)
        assert np.abs(theirs - ours).max() <= 1e-12 * peak
        assert np.abs(image_psf.evaluate(xx, yy, 1.0, x + 0.01, y) - ours).max() > 1e-3 * peak
