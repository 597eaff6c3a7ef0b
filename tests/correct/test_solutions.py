"""Opening solutions in every format and evaluating them against the exact field."""
import numpy as np
import pytest
from astropy.io import fits

from astrocal.correct import ASTROMET_METHODS, SolutionError, open_solution
from astrocal.correct.solutions import linear_grid_draws
from astrocal.field import DistortionField
from astrocal.field.basis import flat_to_square
from astrocal.field.synthetic import smooth_field
from astrocal.formats.astromet import write_astromet
from astrocal.products.result_files import load_posterior
from astrocal.products import posterior_solution
from astrocal.solution import Solution


def points(n, shape, margin=2.0, seed=0):
    rng = np.random.default_rng(seed)
    ny, nx = shape
    return (rng.uniform(-0.5 - margin, nx - 0.5 + margin, n),
            rng.uniform(-0.5 - margin, ny - 0.5 + margin, n))


@pytest.mark.parametrize("method", ASTROMET_METHODS)
def test_astromet_methods_match_the_exact_field(metis_files, method):
    sol = metis_files["solution"]
    x, y = points(20000, sol.detector_shape)
    lx0, ly0 = sol.linear_field()(x, y)
    ev = open_solution(metis_files["astromet"], method=method)
    assert (ev.kind, ev.method, ev.filter) == ("astromet", method, "L")
    lx, ly = ev.undistort(x, y)
    err = np.hypot(lx - lx0, ly - ly0)
    # bicubic and POLYNOM_MAP2 (exact at degree 5): float32 storage (~1e-6 px); POLYNOM_MAP:
    # a degree-7 fit of the inverse, as far off as its header says (POLYERR); bilinear on a
    # 25-px grid of a 3-px field: its own interpolation error, far below the 0.005 px bar
    bound = {"table-bicubic": 2e-5, "polynom_map2": 2e-5, "table-bilinear": 4e-3,
             "polynom_map": 1e-5 + fits.getheader(metis_files["astromet"], "FILTER-L")["POLYERR"]}
    assert err.max() < bound[method]
    # distort is the inverse of undistort (for the table and POLYNOM_MAP, distort is
    # l + D(l) itself: this checks that the Newton iteration has converged)
    px, py = ev.distort(lx, ly)
    assert np.hypot(px - x, py - y).max() < 1e-8
    # the linear grid's parameters are the solution's
    assert ev.boresight == pytest.approx(sol.boresight)
    assert ev.plate_scale == pytest.approx(sol.plate_scale, rel=1e-12)
    assert ev.rotation == pytest.approx(sol.rotation, abs=1e-10)


def test_table_and_polynomials_agree_to_0005_px(fit_result, metis_files):
    """Issue #7 bar: table interpolation and polynomial agree to better than 0.005 px where
    both hold the solution (a fit product and a METIS-like degree-5 field)."""
    for path in (fit_result.astromet, metis_files["astromet"]):
        x, y = points(50000, (2048, 2048), seed=1)
        table = open_solution(path).undistort(x, y)
        for method in ("polynom_map", "polynom_map2"):
            poly = open_solution(path, method=method).undistort(x, y)
            assert np.hypot(table[0] - poly[0], table[1] - poly[1]).max() < 0.005


def test_table_keeps_a_field_the_polynomials_cannot_hold(tmp_path):
    """Degree 9 > 7: the table still follows the field; the polynomials are off by about
    what the header states (POLYERR, POLY2ERR)."""
    sol = Solution(smooth_field(degree=9, corner_px=4.0, rng=5), filter="M")
    path = write_astromet(tmp_path / "deg9.fits", sol, precision="double")
    x, y = points(20000, sol.detector_shape, margin=0.0)
    lx0, ly0 = sol.linear_field()(x, y)
    table = open_solution(path).undistort(x, y)
    assert np.hypot(table[0] - lx0, table[1] - ly0).max() < 0.005
    hdr = fits.getheader(path, "FILTER-M")
    poly2 = open_solution(path, method="polynom_map2").undistort(x, y)
    err2 = np.hypot(poly2[0] - lx0, poly2[1] - ly0).max()
    assert 0.005 < err2 <= 1.01 * hdr["POLY2ERR"]
    # the Jacobian that carries the input errors is the table's own here (POLYNOM_MAP2's
    # would be off by ~2e-3)
    _, _, jac0 = sol.linear_field().jacobian(x[:500], y[:500])
    ev = open_solution(path)
    jac = ev.evaluate(x[:500], y[:500]).jac
    assert np.abs(jac - jac0).max() < 1e-5
    # no error columns: no map uncertainty
    assert not ev.has_uncertainty and ev.evaluate(x[:5], y[:5]).map_cov is None
    assert np.all(ev.map_covariance(x[:5], y[:5]) == 0)


@pytest.mark.parametrize("kind", ["sip", "sip_fits", "siaf"])
def test_polynomial_formats_are_exact(small_files, kind):
    sol = small_files["solution"]
    ev = open_solution(small_files[kind])
    assert ev.method == "polynomial" and not ev.has_uncertainty
    x, y = points(5000, sol.detector_shape)
    lx0, ly0 = sol.linear_field()(x, y)
    lx, ly = ev.undistort(x, y)
    assert np.hypot(lx - lx0, ly - ly0).max() < 1e-8
    assert np.all(ev.map_covariance(x[:10], y[:10]) == 0)
    px, py = ev.distort(lx, ly)
    assert np.hypot(px - x, py - y).max() < 1e-8
    # the Jacobian is dl/dp
    ev1 = ev.evaluate(x[:50], y[:50])
    h = 1e-4
    lxh, lyh = ev.undistort(x[:50] + h, y[:50])
    assert np.allclose((lxh - ev1.lx) / h, ev1.jac[:, 0, 0], atol=1e-6)
    assert np.allclose((lyh - ev1.ly) / h, ev1.jac[:, 1, 0], atol=1e-6)


def test_astromet_errors_are_the_solutions_sigma(metis_files):
    """RAWX_OFF_ERR is the solution's sigma at the distorted position; interpolated at the
    linear-grid position it returns that sigma anywhere."""
    sol = metis_files["solution"]
    x, y = points(2000, sol.detector_shape, margin=0.0, seed=3)
    ev = open_solution(metis_files["astromet"])
    cov = ev.map_covariance(x, y)
    sx, sy = sol.sigma(x, y)
    assert np.allclose(np.sqrt(cov[:, 0, 0]), sx, rtol=2e-3)
    assert np.allclose(np.sqrt(cov[:, 1, 1]), sy, rtol=2e-3)
    assert np.all(cov[:, 0, 1] == 0)
    with pytest.raises(SolutionError, match="no correlation between positions"):
        ev.map_factor(x, y)


def test_posterior_draws_have_their_own_linear_grid(fit_result):
    post = load_posterior(fit_result.result)
    sol = posterior_solution(post, "Lp", detector_shape=(2048, 2048))
    lam = linear_grid_draws(post, sol)
    nt = post.nt
    x, y = points(200, (2048, 2048), seed=4)
    for s in (0, 17, len(post.g) - 1):
        g = post.g[s]
        field = DistortionField(flat_to_square(g[:nt], post.degree),
                                flat_to_square(g[nt:2 * nt], post.degree), post.domain)
        ls = Solution(field, detector_shape=(2048, 2048), boresight=sol.boresight,
                      parity=sol.parity).linear_field()
        lx, ly = ls(x, y)
        mine = DistortionField(flat_to_square(lam[s, :nt], post.degree),
                               flat_to_square(lam[s, nt:], post.degree), post.domain,
                               unit="pixel")
        mx, my = mine(x, y)
        assert np.hypot(mx - lx, my - ly).max() < 1e-9


def test_posterior_covariance_is_the_draws_covariance(fit_result):
    """Per-position covariance and the correlations between positions are those of the
    draws' linear-grid positions."""
    ev = open_solution(fit_result.result)
    assert ev.kind == "posterior" and ev.has_uncertainty
    post = load_posterior(fit_result.result)
    sol = posterior_solution(post, "Lp", detector_shape=(2048, 2048))
    lam = linear_grid_draws(post, sol)
    nt = post.nt
    x = np.array([10.0, 1000.0, 2040.0, 300.0])
    y = np.array([20.0, 1100.0, 5.0, 1900.0])
    from astrocal.field import design_matrix

    basis = design_matrix(x, y, post.degree, post.domain)
    draws = np.stack([lam[:, :nt] @ basis.T, lam[:, nt:] @ basis.T], axis=-1)  # (S, N, 2)
    direct = np.cov(draws.reshape(len(lam), -1), rowvar=False)
    corr = direct[0, 2] / np.sqrt(direct[0, 0] * direct[2, 2])  # of the fitted map alone
    # plus the unresolved field (the smallest jitter): white, per position, through M
    m = sol.linear_matrix
    jitter = np.exp(post.phi[:, [k for k, n in enumerate(post.hyper_names) if n.startswith("log_jitter[")]].min(1))
    direct += np.kron(np.eye(x.size), np.mean(jitter**2) * (m @ m.T))
    full = ev.map_covariance_matrix(x, y)
    assert np.allclose(full, direct, rtol=1e-8, atol=1e-14)
    per = ev.map_covariance(x, y)
    for k in range(4):
        assert np.allclose(per[k], full[2 * k:2 * k + 2, 2 * k:2 * k + 2], rtol=1e-8, atol=1e-14)
    # the positions are the draws' mean
    lx, ly = ev.undistort(x, y)
    assert np.allclose(lx, draws[..., 0].mean(0), atol=1e-9)
    assert np.allclose(ly, draws[..., 1].mean(0), atol=1e-9)
    # different positions are correlated (one fitted map), and the matrix says so
    assert abs(corr) > 0.05
    assert full[0, 2] == pytest.approx(direct[0, 2], rel=1e-8)


def test_result_directory_and_filters(fit_result, small_files, tmp_path):
    ev = open_solution(fit_result.root, filter_id="Lp")
    assert ev.source == str(fit_result.result) and ev.filter == "Lp"
    assert open_solution(fit_result.root).filter == "Lp"  # the only filter
    with pytest.raises(SolutionError, match="filter 'N2' not in the result; it holds Lp"):
        open_solution(fit_result.root, filter_id="N2")
    with pytest.raises(SolutionError, match="no astrocal fit result"):
        open_solution(tmp_path)
    with pytest.raises(SolutionError, match="holds filters L, M; choose one with --filter"):
        open_solution(small_files["astromet"])
    with pytest.raises(SolutionError, match=r"astromet.fits: filter 'K' not in the file; it holds L, M"):
        open_solution(small_files["astromet"], filter_id="K")
    assert open_solution(small_files["astromet"], filter_id="M").filter == "M"
    with pytest.raises(SolutionError, match="applies to AstroMet files only"):
        open_solution(small_files["sip"], method="polynom_map2")
    with pytest.raises(SolutionError, match="applies to AstroMet files only"):
        open_solution(fit_result.result, method="table-bicubic")
    with pytest.raises(SolutionError, match="unknown method 'spline'"):
        open_solution(small_files["astromet"], method="spline")
    with pytest.raises(FileNotFoundError, match="no such solution"):
        open_solution(tmp_path / "nothing.fits")
    bad = tmp_path / "image.fits"
    fits.PrimaryHDU(np.zeros((4, 4))).writeto(bad)
    with pytest.raises(SolutionError, match="neither an AstroMet file"):
        open_solution(bad)


def test_incomplete_astromet_table_is_refused(small_files, tmp_path):
    with fits.open(small_files["astromet"]) as hdul:
        hdul["FILTER-L"].data = hdul["FILTER-L"].data[:-3]
        hdul.writeto(tmp_path / "cut.fits")
    with pytest.raises(SolutionError, match="FILTER-L is not a complete regular grid"):
        open_solution(tmp_path / "cut.fits", filter_id="L")
