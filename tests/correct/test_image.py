"""Resampling images onto the linear grid: flux, positions, WCS, bad input."""
import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from scipy.special import erf

from astrocal.cli import main
from astrocal.correct import correct_image, open_solution, resample
from astrocal.correct.image import area_factor

SIGMA_PSF = 1.4  # pixels


def star_image(shape, positions, flux=1000.0, background=0.0, evaluator=None):
    """Gaussian stars integrated exactly over the pixels (0-based centres).

    With ``evaluator``, also return each star's flux-weighted mean linear-grid position
    ``sum_i L(p_i) F_i / sum_i F_i`` over its pixels: where the resampled star's first
    moment must be (it differs from ``L(star)`` by the distortion's curvature times the
    PSF's variance)."""
    ny, nx = shape
    img = np.full(shape, float(background))
    s = np.sqrt(2.0) * SIGMA_PSF
    moments = []
    for x0, y0 in positions:
        x1, x2 = int(max(x0 - 10, 0)), int(min(x0 + 11, nx))
        y1, y2 = int(max(y0 - 10, 0)), int(min(y0 + 11, ny))
        gx = np.arange(x1, x2)
        gy = np.arange(y1, y2)
        px = 0.5 * (erf((gx + 0.5 - x0) / s) - erf((gx - 0.5 - x0) / s))
        py = 0.5 * (erf((gy + 0.5 - y0) / s) - erf((gy - 0.5 - y0) / s))
        stamp = flux * np.outer(py, px)
        img[y1:y2, x1:x2] += stamp
        if evaluator is not None:
            yy, xx = np.meshgrid(gy, gx, indexing="ij")
            lx, ly = evaluator.undistort(xx.astype(float), yy.astype(float))
            moments.append(((lx * stamp).sum() / stamp.sum(), (ly * stamp).sum() / stamp.sum()))
    return (img, np.array(moments)) if evaluator is not None else img


def centroids(img, guesses, half=8):
    """First moments in boxes around the guesses: (x, y, flux) per star."""
    out = []
    for gx, gy in guesses:
        i, j = int(round(gy)), int(round(gx))
        cut = img[i - half:i + half + 1, j - half:j + half + 1].astype(float)
        yy, xx = np.mgrid[i - half:i + half + 1, j - half:j + half + 1]
        f = cut.sum()
        out.append(((cut * xx).sum() / f, (cut * yy).sum() / f, f))
    return np.array(out)


def grid_stars(n, step, lo):
    g = lo + step * np.arange(n)
    xx, yy = np.meshgrid(g, g)
    rng = np.random.default_rng(3)
    return np.column_stack([xx.ravel(), yy.ravel()]) + rng.uniform(-0.5, 0.5, (xx.size, 2))


@pytest.mark.parametrize("which,resampler,pos_tol,flux_tol", [
    ("sip", "interp", 1e-4, 1e-4), ("astromet", "interp", 1e-4, 1e-4),
    ("sip", "drizzle", 0.02, 1e-4), ("astromet", "drizzle", 0.02, 1e-4)])
def test_flux_and_positions_are_kept(small_files, which, resampler, pos_tol, flux_tol):
    """Stars drawn at the distorted positions of a linear-grid pattern come out where the
    solution maps their light, with their flux (a distortion of 4 px at the corners of a
    256-px detector: pixel areas vary by 10 %).  Interpolation keeps a Nyquist-sampled
    star's moments to 1e-4 px; drizzle's area weighting aliases them (~3e-3 px per 1 % of
    scale change) but keeps flux exactly."""
    ev = open_solution(small_files[which], filter_id="L")
    true_lin = grid_stars(6, 40.0, 28.0)
    px, py = ev.distort(true_lin[:, 0], true_lin[:, 1])
    img, moments = star_image((256, 256), np.column_stack([px, py]), evaluator=ev)
    out, cover = resample(img, ev, resampler=resampler)
    c = centroids(out, true_lin)
    assert np.hypot(c[:, 0] - moments[:, 0], c[:, 1] - moments[:, 1]).max() < pos_tol
    # the moments differ from the stars' linear-grid positions by the curvature of this
    # strong distortion times the PSF's variance: ~1e-3 px
    assert np.hypot(moments[:, 0] - true_lin[:, 0], moments[:, 1] - true_lin[:, 1]).max() < 3e-3
    assert np.allclose(c[:, 2], 1000.0, rtol=flux_tol)
    assert np.all(cover[20:-20, 20:-20] == pytest.approx(1.0, abs=1e-4))
    if resampler == "drizzle":  # every input pixel lands on the output: nothing is lost
        assert np.nansum(out) == pytest.approx(img.sum(), rel=1e-5)


@pytest.mark.parametrize("resampler", ["interp", "drizzle"])
def test_surface_brightness_scales_with_pixel_area(small_files, resampler):
    """A uniform image (1 count per detector pixel) becomes 1 / (mapped pixel area): flux is
    conserved pixel by pixel, not surface brightness."""
    ev = open_solution(small_files["sip"])
    out, cover = resample(np.ones((256, 256)), ev, pad=4, resampler=resampler)
    ly, lx = np.mgrid[0:264, 0:264] - 4.0
    px, py = ev.distort(lx, ly)
    jac = ev.evaluate(px, py).jac
    area = np.abs(np.linalg.det(jac)).reshape(lx.shape)
    inner = cover > 0.999
    assert inner.sum() > 50000 and area.max() / area.min() > 1.05
    # drizzle: its own mapped quadrilaterals' areas differ from the Jacobian's by ~2e-5
    # under this strong distortion
    assert np.allclose((out * area)[inner], 1.0, atol=1e-5 if resampler == "interp" else 1e-4)
    # outside the detector's footprint: NaN, no coverage
    assert np.isnan(out[cover == 0]).all() and (cover == 0).any()


def test_bad_pixels_get_no_weight(small_files):
    ev = open_solution(small_files["sip"])
    img = np.full((256, 256), 50.0)
    img[100, 120] = np.nan
    img[30:33, 40] = np.inf
    lx, ly = (int(round(float(v))) for v in ev.undistort(120.0, 100.0))
    out, cover = resample(img, ev, resampler="drizzle")
    assert np.isfinite(out[cover > 0]).all()
    assert cover[ly, lx] < 0.9
    out, cover = resample(img, ev)  # interp: NaN near the bad pixels, untouched elsewhere
    near = np.isnan(out) & (cover > 0)
    assert near[ly, lx] and 2 <= near.sum() <= 80
    assert np.isfinite(out[150:, 150:]).all()
    ok = (cover > 0) & ~near
    assert np.all(np.abs(out[ok] - 50.0) < 0.1 * 50.0)


def test_wcs_has_the_correction_folded_in(small_files, tmp_path):
    """The output's plain TAN WCS gives each output pixel the sky position that the
    solution's TAN-SIP header gives the detector pixel it came from."""
    src = tmp_path / "raw.fits"
    hdr = fits.Header({"OBJECT": "GC", "EXPTIME": 12.5, "CTYPE1": "RA---TAN-SIP",
                       "CTYPE2": "DEC--TAN-SIP", "CRPIX1": 3.0, "A_ORDER": 2, "A_0_2": 1e-5})
    fits.PrimaryHDU(np.ones((256, 256), np.float32), header=hdr).writeto(src)
    out = tmp_path / "lin.fits"
    ev = open_solution(small_files["sip"])
    correct_image(src, ev, out, pad=3)
    with fits.open(out) as hdul:
        h = hdul[0].header
        assert hdul["COVERAGE"].data.shape == hdul[0].data.shape == (262, 262)
    assert h["CTYPE1"] == "RA---TAN" and "A_ORDER" not in h and "A_0_2" not in h
    assert h["OBJECT"] == "GC" and h["EXPTIME"] == 12.5 and h["CORRPAD"] == 3
    assert (h["CRVAL1"], h["CRVAL2"]) == (266.41, -29.0)  # the SIP header's
    assert "input WCS keywords removed" in str(h["HISTORY"])
    sip = WCS(fits.Header.fromtextfile(str(small_files["sip"])))
    rng = np.random.default_rng(8)
    p = rng.uniform(0, 255, (500, 2))
    ra0, dec0 = sip.all_pix2world(p[:, 0] + 1, p[:, 1] + 1, 1)  # FITS 1-based
    lx, ly = ev.undistort(p[:, 0], p[:, 1])
    ra1, dec1 = WCS(h).all_pix2world(lx + 1 + 3, ly + 1 + 3, 1)
    sep = np.hypot((ra1 - ra0) * np.cos(np.radians(dec0)), dec1 - dec0) * 3600.0
    assert sep.max() / ev.plate_scale < 1e-6  # pixels


@pytest.mark.slow
def test_cli_image_with_a_fit_product(fit_result, tmp_path, capsys):
    """A full 2048 x 2048 frame corrected with the fit's AstroMet file: stars land on the
    linear grid of the same file's table (slow: a full frame, ~5 s)."""
    ev = open_solution(fit_result.astromet)
    true_lin = grid_stars(5, 480.0, 60.0)
    px, py = ev.distort(true_lin[:, 0], true_lin[:, 1])
    src = tmp_path / "frame.fits"
    img, moments = star_image((2048, 2048), np.column_stack([px, py]), background=5.0,
                              evaluator=ev)
    fits.PrimaryHDU(img.astype(np.float32)).writeto(src)
    before = src.read_bytes()
    out = tmp_path / "frame_lin.fits"
    assert main(["correct", str(src), "--solution", str(fit_result.astromet), "--out",
                 str(out)]) == 0
    assert "image resampled onto the linear grid" in capsys.readouterr().out
    assert src.read_bytes() == before
    data = fits.getdata(out)
    c = centroids(data - 5.0 * area_factor(ev, data.shape), true_lin)  # flux of the background
    assert np.hypot(c[:, 0] - moments[:, 0], c[:, 1] - moments[:, 1]).max() < 2e-3
    # METIS-like distortion: the PSF's moments are the stars' linear-grid positions
    assert np.hypot(moments[:, 0] - true_lin[:, 0], moments[:, 1] - true_lin[:, 1]).max() < 1e-4
    h = fits.getheader(out)
    assert h["CORRMETH"] == "table-bicubic" and h["CORRFILT"] == "Lp"
    assert h["PLTSCALE"] == pytest.approx(ev.plate_scale)


def test_image_bad_input(small_files, tmp_path, capsys):
    sip = str(small_files["sip"])
    wrong = tmp_path / "wrong.fits"
    fits.PrimaryHDU(np.zeros((200, 256), np.float32)).writeto(wrong)
    assert main(["correct", str(wrong), "--solution", sip, "--out", str(tmp_path / "o.fits")]) == 1
    err = capsys.readouterr().err
    assert "wrong.fits: image HDU 0 (PRIMARY) is 256 x 200 pixels" in err
    assert "solution's detector is 256 x 256" in err
    cube = tmp_path / "cube.fits"
    fits.PrimaryHDU(np.zeros((3, 256, 256), np.float32)).writeto(cube)
    assert main(["correct", str(cube), "--solution", sip, "--out", str(tmp_path / "o.fits"),
                 "--input-type", "image"]) == 1
    assert "cube.fits: no 2-D image HDU" in capsys.readouterr().err
    good = tmp_path / "good.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.ones((256, 256)), name="SCI")]).writeto(good)
    before = good.read_bytes()
    assert main(["correct", str(good), "--solution", sip, "--out", str(good)]) == 1
    assert "is the input image; the input is never modified in place" in capsys.readouterr().err
    assert main(["correct", str(good), "--solution", sip, "--out", str(tmp_path / "o.fits"),
                 "--hdu", "DQ"]) == 1
    assert "good.fits: no HDU 'DQ'" in capsys.readouterr().err
    assert main(["correct", str(good), "--solution", sip, "--out", str(tmp_path / "o.fits"),
                 "--hdu", "SCI"]) == 0
    assert main(["correct", str(good), "--solution", sip, "--out", str(tmp_path / "o.fits")]) == 1
    assert "file exists; not overwritten" in capsys.readouterr().err
    assert main(["correct", str(good), "--solution", sip, "--out", str(tmp_path / "o.png")]) == 1
    assert "written as FITS" in capsys.readouterr().err
    assert good.read_bytes() == before
