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
    phi[:, 0] = -30.0  # no jitter: no unresolved field (tested with residual_posterior)
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


# ---------------------------------------------------------------- a fit with a residual field
def residual_posterior(n=300, seed=3, amp_px=0.03, jitter_px=0.004):
    """The synthetic posterior plus a Matérn residual field beyond the polynomial (6 x 6
    eigenfunctions per component, coefficients drawn so that the mean residual is ~amp_px)
    and a jitter per draw (the unresolved field)."""
    from astrocal.field.residual import ResidualBasis

    post = synthetic_posterior(n=n, seed=seed)
    basis = ResidualBasis(DOMAIN, post.degree, m=6)
    rng = np.random.default_rng(seed + 1)
    w = rng.normal(0, 1, 2 * basis.size)
    scale = amp_px * 5.47e-3 / np.std(basis.design(np.linspace(0, 2047, 400), np.linspace(2047, 0, 400))
                                      @ w[:basis.size])
    wd = (w * scale)[None] + rng.normal(0, 2e-5, (n, 2 * basis.size))
    g = np.hstack([post.g, wd])
    names = post.param_names + [f"res_u[{k}]" for k in range(basis.size)] + [f"res_v[{k}]" for k in range(basis.size)]
    phi = np.column_stack([np.log(jitter_px * 5.47e-3 * np.exp(rng.normal(0, 0.1, n))), rng.normal(size=n)])
    spec = {"kind": "matern52", "m": basis.m, "boundary": basis.boundary, "degree": basis.degree,
            "first_column": post.g.shape[1], "n_functions": basis.size}
    return Posterior(post.degree, DOMAIN, g, phi, None, names, post.hyper_names, [], post.info, spec), basis


def test_products_carry_the_residual_field(tmp_path):
    """With a residual field: the AstroMet table samples polynomial + residual (exactly, at
    its nodes), with the full posterior sigma; its polynomials state their difference; the
    FITS WCS look-up file read by astropy.wcs reproduces the full field within 1e-3 px both
    ways; the METIS map is the full field's local scale."""
    from astropy.wcs import WCS

    from astrocal.model import draws

    post, basis = residual_posterior()
    res = residuals()
    paths = write_fit_products(post, tmp_path, "Lp", instrument="METIS IMG_LM", residuals=res)
    assert set(paths) == {"astromet", "sip", "wcs_lookup", "distortion_table", "distortion_map"}
    sol = posterior_solution(post, "Lp")
    mean = post.g.mean(axis=0)
    r0 = post.residual_spec["first_column"]

    def full(x, y):  # the posterior-mean full field, independently
        x, y = np.ravel(x), np.ravel(y)
        f = _field_of(mean, post.degree)
        u, v = f(x, y)
        phi = basis.design(x, y)
        return u + phi @ mean[r0:r0 + basis.size], v + phi @ mean[r0 + basis.size:]

    # AstroMet: distorted = linear + offset, through the full field
    am = read_astromet(paths["astromet"])["Lp"]
    t = am.table
    assert am.header["RESIDUAL"] is True
    lx, ly = np.asarray(t["RAWX"], float) - 1, np.asarray(t["RAWY"], float) - 1
    px, py = lx + np.asarray(t["RAWX_OFF"], float), ly + np.asarray(t["RAWY_OFF"], float)
    u, v = full(px, py)
    m, b = sol.linear_matrix, sol.boresight
    u0, v0 = _field_of(mean, post.degree)(*b)
    gx = b[0] + m[0, 0] * (u - u0) + m[0, 1] * (v - v0)
    gy = b[1] + m[1, 0] * (u - u0) + m[1, 1] * (v - v0)
    assert np.max(np.hypot(gx - lx, gy - ly)) < 1e-6
    # the polynomial alone would be off by the residual's size; POLYERR says so
    poly_only = np.asarray(sol.linear_field()(px, py))
    miss = np.max(np.hypot(poly_only[0] - lx, poly_only[1] - ly))
    assert miss > 0.02
    assert am.header["POLY2ERR"] >= 0.5 * miss
    # its sigma: the draws' spread of the full linear-grid position, plus the unresolved field
    k = np.linspace(0, len(t) - 1, 25).astype(int)
    uu, vv = draws.field_samples(post.g, post.degree, DOMAIN, px[k], py[k], post.residual)
    ub, vb = draws.field_samples(post.g[:, :2 * post.nt], post.degree, DOMAIN, [b[0]], [b[1]])
    lxs = m[0, 0] * (uu - ub) + m[0, 1] * (vv - vb)
    extra = np.mean(post.unresolved**2) * np.sum(m[0] ** 2)
    assert np.allclose(np.asarray(t["RAWX_OFF_ERR"], float)[k], np.sqrt(lxs.var(0, ddof=1) + extra), rtol=1e-4)
    assert post.unresolved is not None and extra > 0
    # FITS WCS with look-up tables: astropy reproduces the full field both ways
    with fits.open(paths["wcs_lookup"]) as f:
        assert f[0].header["CPDIS1"] == "Lookup"
        w = WCS(f[0].header, f)
        rng = np.random.default_rng(5)
        x, y = rng.uniform(-0.5, 2047.5, 5000), rng.uniform(-0.5, 2047.5, 5000)
        world = w.all_pix2world(np.column_stack([x, y]), 0)
        # the expected world position: the full field through the header's plain TAN
        plain = f[0].header.copy()
        for key in list(plain):
            if key.split("_")[0] in ("A", "B", "AP", "BP") or key.startswith(("CPDIS", "DP", "CPERR")):
                del plain[key]
        plain["CTYPE1"], plain["CTYPE2"] = "RA---TAN", "DEC--TAN"
        u, v = full(x, y)
        us, vs = sol.reference_position
        cd = np.array([[plain["CD1_1"], plain["CD1_2"]], [plain["CD2_1"], plain["CD2_2"]]])
        q = np.linalg.solve(cd, (np.column_stack([u - us, v - vs]) / 3600.0).T).T + [plain["CRPIX1"] - 1,
                                                                                         plain["CRPIX2"] - 1]
        expected = WCS(plain).wcs_pix2world(q, 0)
        off = np.hypot((world[:, 0] - expected[:, 0]) * np.cos(np.radians(expected[:, 1])),
                       world[:, 1] - expected[:, 1]) * 3600.0 / sol.plate_scale
        assert off.max() < 1e-3
        back = w.all_world2pix(expected, 0, tolerance=1e-7, maxiter=50)
        assert np.max(np.hypot(back[:, 0] - x, back[:, 1] - y)) < 1e-3
        # without the tables the header misses by the residual's size
        sip = WCS(load_header(paths["sip"])).all_pix2world(np.column_stack([x, y]), 0)
        assert np.max(np.hypot((sip[:, 0] - expected[:, 0]) * np.cos(np.radians(expected[:, 1])),
                               sip[:, 1] - expected[:, 1])) * 3600.0 / sol.plate_scale > 0.02
    # METIS map: the full field's local pixel scale (finite differences of the full field)
    with fits.open(paths["distortion_map"]) as f:
        img = f[0].data
        assert fits.getheader(paths["distortion_table"], 1)["RESIDUAL"] is True
    for x, y in ((100, 200), (1500, 1800), (1023, 40)):
        h = 0.5
        ux1, vx1 = full([x + h], [y])
        ux0, vx0 = full([x - h], [y])
        uy1, vy1 = full([x], [y + h])
        uy0, vy0 = full([x], [y - h])
        det = ((ux1 - ux0) * (vy1 - vy0) - (uy1 - uy0) * (vx1 - vx0))[0] / (2 * h) ** 2
        assert img[y, x] == pytest.approx(np.sqrt(abs(det)) * 1e3, rel=2e-6)


def test_the_package_keeps_the_public_names_of_the_former_module():
    # astrocal.products was one module; its public names (and the result files' readers and
    # writer) stay importable from the package, the same objects as in the modules holding them
    import importlib

    import astrocal.products as products

    former = ("DPR", "RECIPE", "eso", "metis_band", "posterior_solution", "local_scale_grid",
              "local_scale_samples", "distortion_coefficients", "provenance_cards", "qc_from_residuals",
              "write_metis_products", "earth_orientation_keys", "write_fit_products")
    for name in former + ("save_fit", "load_posterior", "load_chain", "load_residuals", "summary_table"):
        assert name in products.__all__, name
        obj = getattr(products, name)
        home = getattr(obj, "__module__", None)
        if home is not None and home != "builtins":
            assert home.startswith("astrocal.products.") and getattr(importlib.import_module(home), name) is obj


@pytest.mark.parametrize("with_residual", [False, True])
def test_local_scale_grid_in_row_chunks_is_exact(with_residual):
    """The local-scale map is computed a few rows at a time, in place: every pixel must be
    the areal scale of the field's (and the residual field's) Jacobian at that pixel,
    whatever the chunking, including a last chunk shorter than the others."""
    from astrocal.field.residual import ResidualBasis
    from astrocal.products import local_scale_grid

    field = smooth_field(degree=5, corner_px=3.0, rng=8)
    xs, ys = np.arange(0.0, 2048.0, 7.0), np.arange(0.0, 2048.0, 5.0)  # 293 x 410: 410 = 3 x 128 + 26
    residual = None
    if with_residual:
        basis = ResidualBasis(field.domain, degree=3, m=6)
        rng = np.random.default_rng(9)
        wu, wv = rng.normal(0, 2e-5, basis.size), rng.normal(0, 2e-5, basis.size)
        residual = (basis, wu, wv)
    grid = local_scale_grid(field, xs, ys, residual=residual, rows=128)
    assert grid.shape == (ys.size, xs.size) and grid.dtype == np.float64
    one = local_scale_grid(field, xs, ys, residual=residual, rows=ys.size)
    assert np.allclose(grid, one, rtol=1e-13, atol=0)
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    _, _, jac = field.jacobian(xx.ravel(), yy.ravel())
    if with_residual:
        dx, dy = basis.design_derivatives(xx.ravel(), yy.ravel())
        # the basis's functions are the raw ones minus their polynomial part, which
        # local_scale_grid moves into the field: the same sum
        jac = jac.copy()
        jac[:, 0, 0] += dx @ wu
        jac[:, 0, 1] += dy @ wu
        jac[:, 1, 0] += dx @ wv
        jac[:, 1, 1] += dy @ wv
    det = jac[:, 0, 0] * jac[:, 1, 1] - jac[:, 0, 1] * jac[:, 1, 0]
    expect = np.sqrt(np.abs(det)).reshape(yy.shape)
    assert np.allclose(grid, expect, rtol=1e-9, atol=0)
    f32 = local_scale_grid(field, xs, ys, residual=residual, factor=1e3, dtype=np.float32, rows=100)
    assert f32.dtype == np.float32
    assert np.array_equal(f32, (one * 1e3).astype(np.float32))
