"""Products of a fit: METIS distortion table and map, provenance, overwrite refusal.

A synthetic posterior (draws scattered around a known field) stands in for a fit, so every
value in the products can be recomputed independently from the draws it came from.
"""
import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from astrocal import __version__
from astrocal.atomic import ProductExistsError
from astrocal.field import DistortionField, local_geometry
from astrocal.field.basis import flat_to_square, square_to_flat
from astrocal.field.synthetic import smooth_field
from astrocal.formats.astromet import read_astromet
from astrocal.formats.sip import load_header
from astrocal.model.result import Posterior
from astrocal.products import (
    distortion_coefficients, metis_band, posterior_solution, write_fit_products,
    write_metis_products,
)

DOMAIN = (-0.5, 2047.5, -0.5, 2047.5)
HASH = "0123456789abcdef" * 4


def synthetic_posterior(n=200, degree=4, seed=0, sd_arcsec=2e-4, inputs=("c.toml", "t0.ecsv")):
    rng = np.random.default_rng(seed)
    field = smooth_field(degree=degree, corner_px=2.5, rotation_deg=0.3, rng=seed)
    flat = np.concatenate([square_to_flat(field.cx), square_to_flat(field.cy)])
    nt = flat.size // 2
    extra = np.array([1e-4, -2e-4, 0.01, -0.02])  # a pose: scale, rotation, tx, ty
    g = np.concatenate([flat, extra]) + rng.normal(size=(n, flat.size + 4)) * np.concatenate(
        [np.full(2 * nt, sd_arcsec), [1e-5, 1e-5, 1e-3, 1e-3]])
    from astrocal.field.basis import terms

    names = ([f"cu[{i},{j}]" for i, j in terms(degree)] + [f"cv[{i},{j}]" for i, j in terms(degree)]
             + ["pose_scale[e1]", "pose_rot[e1]", "pose_tx[e1]", "pose_ty[e1]"])
    phi = rng.normal(size=(n, 2))
    info = {"inputs": list(inputs), "campaign_sha256": HASH, "astrocal_version": __version__}
    return Posterior(degree, DOMAIN, g, phi, None, names, ["log_jitter[lab]", "log_kappa"], [], info)


def residuals(n=300, seed=1, outliers=7):
    rng = np.random.default_rng(seed)
    t = Table()
    t["dataset"] = ["lab"] * n
    t["kind"] = ["lab"] * n
    t["dx_px"] = rng.normal(0, 0.02, n)
    t["dy_px"] = rng.normal(0, 0.03, n)
    out = np.zeros(n, bool)
    out[rng.choice(n, outliers, replace=False)] = True
    t["dx_px"][out] += 5.0  # outliers must not enter the QC rms
    t["dx_mas"] = t["dx_px"] * 5.47
    t["dy_mas"] = t["dy_px"] * 5.47
    t["outlier"] = out
    return t


def _field_of(g, degree):
    nt = (degree + 1) * (degree + 2) // 2
    return DistortionField(flat_to_square(g[:nt], degree), flat_to_square(g[nt:2 * nt], degree), DOMAIN,
                           unit="arcsec", input_unit="pixel")


@pytest.fixture(scope="module")
def metis_lm(tmp_path_factory):
    out = tmp_path_factory.mktemp("metis")
    post = synthetic_posterior()
    res = residuals()
    paths = write_metis_products(post, out, "Lp", "LM", res, campaign_sha256=HASH,
                                 inputs=["c.toml", "t0.ecsv"])
    return post, res, paths


def test_distortion_table_keywords_and_qc(metis_lm):
    post, res, paths = metis_lm
    assert paths["distortion_table"].name == "LM_DISTORTION_TABLE_Lp.fits"
    h = fits.getheader(paths["distortion_table"], 0)
    assert h["HIERARCH ESO PRO CATG"] == "LM_DISTORTION_TABLE"
    assert h["HIERARCH ESO DRS FILTER"] == "Lp"
    assert (h["HIERARCH ESO DPR CATG"], h["HIERARCH ESO DPR TECH"], h["HIERARCH ESO DPR TYPE"]) == (
        "CALIB", "IMAGE,LM", "DISTORTION")
    # QC recomputed here: rms length of the 2-D pixel residuals of the points used
    used = ~np.asarray(res["outlier"])
    rms = np.sqrt(np.mean(np.asarray(res["dx_px"])[used] ** 2 + np.asarray(res["dy_px"])[used] ** 2))
    assert h["HIERARCH ESO QC LM DISTORT RMS"] == pytest.approx(round(rms, 3), abs=1e-12)
    assert 0.02 < h["HIERARCH ESO QC LM DISTORT RMS"] < 0.05  # the outliers (5 px) are left out
    assert h["HIERARCH ESO QC LM DISTORT NSOURCE"] == used.sum() == 293
    assert isinstance(h["HIERARCH ESO QC LM DISTORT NSOURCE"], int)
    # provenance
    assert h["CREATOR"] == f"astrocal {__version__}"
    assert h["CAMPHASH"] == HASH
    assert [h[f"INPUT{k}"] for k in range(1, h["NINPUTS"] + 1)] == ["c.toml", "t0.ecsv"]


def test_distortion_table_values_come_from_the_posterior(metis_lm):
    post, _, paths = metis_lm
    with fits.open(paths["distortion_table"]) as hdul:
        t = hdul["TABLE"].data
        th = hdul["TABLE"].header
    sol = posterior_solution(post, "Lp")
    b = sol.boresight
    assert (th["BORESX"], th["BORESY"]) == (b[0] + 1, b[1] + 1)  # FITS 1-based
    assert th["PLTSCALE"] == pytest.approx(sol.plate_scale, rel=1e-12)
    # the field's monomials, draw by draw, independently of the batched conversion
    per_draw = []
    m = sol.linear_matrix
    for g in post.g:
        f = _field_of(g, post.degree)
        mu, mv = f.to_monomials(origin=b)
        dx = -(m[0, 0] * mu + m[0, 1] * mv)
        dy = -(m[1, 0] * mu + m[1, 1] * mv)
        dx[0, 0] = dy[0, 0] = 0.0
        dx[1, 0] += 1.0
        dy[0, 1] += 1.0
        per_draw.append([square_to_flat(a) for a in (mu, mv, dx, dy)])
    per_draw = np.array(per_draw)  # (n, 4, nt)
    for k, name in enumerate(("U", "V", "DX", "DY")):
        scale = np.abs(per_draw[:, k]).max(axis=0) + 1e-300
        assert np.all(np.abs(t[name] - per_draw[:, k].mean(axis=0)) <= 1e-9 * scale), name
        assert np.allclose(t[f"{name}_ERR"], per_draw[:, k].std(axis=0, ddof=1), rtol=1e-6, atol=1e-18), name
    # the DX/DY polynomial is the reverse offset of the posterior-mean solution
    rng = np.random.default_rng(3)
    x, y = rng.uniform(0, 2047, 50), rng.uniform(0, 2047, 50)
    X, Y = x - b[0], y - b[1]
    px = sum(c * X**i * Y**j for c, i, j in zip(t["DX"], t["XPOW"], t["YPOW"]))
    py = sum(c * X**i * Y**j for c, i, j in zip(t["DY"], t["XPOW"], t["YPOW"]))
    ex, ey = sol.reverse_offsets(x, y)
    assert np.abs(px - ex).max() < 1e-8 and np.abs(py - ey).max() < 1e-8
    # and the spread is the posterior's, not zero: a broader posterior gives larger errors
    wide = distortion_coefficients(synthetic_posterior(sd_arcsec=4e-4), sol)
    assert np.median(wide["dx_err"][1:] / t["DX_ERR"][1:]) == pytest.approx(2.0, rel=0.1)


def test_distortion_map_is_the_local_pixel_scale(metis_lm):
    post, _, paths = metis_lm
    with fits.open(paths["distortion_map"]) as hdul:
        h = hdul[0].header
        img = hdul[0].data
        err = hdul["SCALE_ERR"].data
        eh = hdul["SCALE_ERR"].header
    assert h["HIERARCH ESO PRO CATG"] == "LM_DISTORTION_MAP"
    assert h["HIERARCH ESO DRS FILTER"] == "Lp"
    assert h["BUNIT"] == "mas/pixel"
    assert img.shape == (2048, 2048)
    field = post.mean_field()
    rng = np.random.default_rng(4)
    i, j = rng.integers(0, 2048, 40), rng.integers(0, 2048, 40)
    expect = local_geometry(field, i.astype(float), j.astype(float)).scale * 1e3  # pixel (x=i, y=j)
    assert np.allclose(img[j, i], expect, rtol=2e-7)
    # the error extension: its linear WCS maps to detector pixels; values are the draws' sd
    k, ell = 5, 3
    xk = eh["CRVAL1"] + (k + 1 - eh["CRPIX1"]) * eh["CDELT1"] - 1  # 0-based detector x
    yl = eh["CRVAL2"] + (ell + 1 - eh["CRPIX2"]) * eh["CDELT2"] - 1
    assert (xk, yl) == (5 * 64, 3 * 64)
    draws = [local_geometry(_field_of(g, post.degree), xk, yl).scale for g in post.g]
    assert err[ell, k] == pytest.approx(np.std(draws, ddof=1) * 1e3, rel=1e-5)
    assert err.shape == (33, 33)  # every 64 px plus the last pixel


def test_n_band_products(tmp_path):
    paths = write_metis_products(synthetic_posterior(n=50), tmp_path, "N2", "N", residuals())
    assert paths["distortion_table"].name == "N_DISTORTION_TABLE_N2.fits"
    h = fits.getheader(paths["distortion_table"], 0)
    assert h["HIERARCH ESO PRO CATG"] == "N_DISTORTION_TABLE"
    assert h["HIERARCH ESO DPR TECH"] == "IMAGE,N"
    assert "HIERARCH ESO QC N DISTORT RMS" in h and "HIERARCH ESO QC N DISTORT NSOURCE" in h
    assert "HIERARCH ESO QC LM DISTORT RMS" not in h
    assert fits.getheader(paths["distortion_map"], 0)["HIERARCH ESO PRO CATG"] == "N_DISTORTION_MAP"
    with pytest.raises(ValueError, match="band"):
        write_metis_products(synthetic_posterior(n=50), tmp_path, "Q", "Q", residuals())


def test_metis_band():
    assert metis_band("METIS IMG_LM") == "LM"
    assert metis_band("metis-n") == "N"
    assert metis_band("METIS LMS") is None
    assert metis_band("some other imager") is None
    assert metis_band("") is None


def test_fit_products_state_provenance_and_are_not_overwritten(tmp_path):
    post = synthetic_posterior(n=100)
    res = residuals()
    paths = write_fit_products(post, tmp_path, "Lp", instrument="METIS IMG_LM", campaign_sha256=HASH,
                               inputs=["extra.toml"], residuals=res)
    assert set(paths) == {"astromet", "sip", "distortion_table", "distortion_map"}
    inputs = ["extra.toml", "c.toml", "t0.ecsv"]  # given, then the ones the fit recorded
    am = read_astromet(paths["astromet"])
    history = "".join(str(v) for v in am.header["HISTORY"])  # long cards wrap
    assert am.header["CREATOR"] == f"astrocal {__version__}"
    assert HASH in history and all(p in history for p in inputs)
    assert "RAWX_OFF_ERR" in am["Lp"].table.colnames
    sip = load_header(paths["sip"])
    history = "".join(str(v) for v in sip["HISTORY"])
    assert sip["CREATOR"] == f"astrocal {__version__}"
    assert HASH in history and all(p in history for p in inputs)
    for key in ("distortion_table", "distortion_map"):
        h = fits.getheader(paths[key], 0)
        assert h["CAMPHASH"] == HASH
        assert [h[f"INPUT{k}"] for k in range(1, h["NINPUTS"] + 1)] == inputs
    before = {k: p.read_bytes() for k, p in paths.items()}
    with pytest.raises(ProductExistsError, match="not overwritten"):
        write_fit_products(post, tmp_path, "Lp", instrument="METIS IMG_LM", residuals=res)
    assert {k: p.read_bytes() for k, p in paths.items()} == before
    write_fit_products(post, tmp_path, "Lp", instrument="METIS IMG_LM", residuals=res, overwrite=True)


def test_no_metis_products_for_other_instruments(tmp_path):
    paths = write_fit_products(synthetic_posterior(n=50), tmp_path, "K", instrument="Some imager")
    assert set(paths) == {"astromet", "sip"}
    assert not list(tmp_path.glob("*DISTORTION*"))


def test_missing_residuals_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="residuals.ecsv"):
        write_fit_products(synthetic_posterior(n=50), tmp_path, "Lp", instrument="METIS IMG_LM")


def test_posterior_sigma_is_the_spread_of_the_draws():
    post = synthetic_posterior(n=300)
    sol = posterior_solution(post, "Lp")
    x = np.array([0.0, 500.0, 1023.5, 2047.0])
    y = np.array([2047.0, 10.0, 1023.5, 0.0])
    sx, sy = sol.sigma(x, y)
    m, b = sol.linear_matrix, sol.boresight
    lx, ly = [], []
    for g in post.g:
        f = _field_of(g, post.degree)
        u, v = f(x, y)
        u0, v0 = f(*b)
        lx.append(m[0, 0] * (u - u0) + m[0, 1] * (v - v0))
        ly.append(m[1, 0] * (u - u0) + m[1, 1] * (v - v0))
    assert np.allclose(sx, np.std(lx, axis=0, ddof=1), rtol=1e-9)
    assert np.allclose(sy, np.std(ly, axis=0, ddof=1), rtol=1e-9)
    assert sx[2] < 1e-9 and sy[2] < 1e-9  # at the boresight the offset is 0 by definition
