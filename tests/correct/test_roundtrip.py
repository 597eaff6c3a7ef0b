"""Issue #7 round-trip bar: correcting simulated measured positions with the products of a
fit returns the truth's linear-grid positions within the stated uncertainty."""
import numpy as np
import pytest
from astropy.table import Table

from astrocal.cli import main
from astrocal.correct import correct_positions, open_solution

from .conftest import whitened_rms

PRODUCTS = [("astromet", "table-bicubic"), ("astromet", "polynom_map"),
            ("astromet", "polynom_map2"), ("result", None)]


def _open(fit_result, which, method):
    path = fit_result.astromet if which == "astromet" else fit_result.result
    return open_solution(path, method=method)


@pytest.mark.parametrize("which,method", PRODUCTS)
def test_round_trip_within_the_stated_uncertainty(fit_result, which, method):
    """20 000 positions over the detector, centroid errors 0.003-0.02 px: the normalised
    residual rms is between 0.8 and 1.25."""
    lt, pt, pm, s = fit_result.measured(20000, seed=11)
    ev = _open(fit_result, which, method)
    c = correct_positions(ev, pm[:, 0], pm[:, 1], s[:, 0], s[:, 1])
    assert np.all(c.flag == 0)
    rms = whitened_rms(np.column_stack([c.lx, c.ly]) - lt, c.cov)
    assert 0.8 <= rms <= 1.25, rms


@pytest.mark.parametrize("which,method", [PRODUCTS[0], PRODUCTS[3]])
def test_map_uncertainty_is_needed_and_honest(fit_result, which, method):
    """With small centroid errors the map's uncertainty dominates: leaving it out inflates
    the normalised residuals far beyond the bar, keeping it brings them near 1.  (The map
    errors of one fit are one correlated draw over the detector, so this single-fit check is
    looser than the bar; the slow test below averages many fits.)"""
    lt, pt, pm, s = fit_result.measured(20000, seed=12, sigma=(0.0005, 0.002))
    ev = _open(fit_result, which, method)
    c = correct_positions(ev, pm[:, 0], pm[:, 1], s[:, 0], s[:, 1])
    r = np.column_stack([c.lx, c.ly]) - lt
    assert 0.6 <= whitened_rms(r, c.cov) <= 1.5
    assert whitened_rms(r, c.cov - c.map_cov) > 2.0


def test_sip_header_gives_the_same_positions(fit_result):
    """The fit's TAN-SIP header holds the same (posterior-mean) field as its AstroMet file,
    without uncertainty."""
    lt, pt, pm, s = fit_result.measured(5000, seed=13)
    sip = open_solution(fit_result.sip)
    assert not sip.has_uncertainty
    a = sip.undistort(pm[:, 0], pm[:, 1])
    b = open_solution(fit_result.astromet, method="polynom_map2").undistort(pm[:, 0], pm[:, 1])
    assert np.hypot(a[0] - b[0], a[1] - b[1]).max() < 1e-4


def test_cli_round_trip_on_a_star_list(fit_result, tmp_path, capsys):
    lt, pt, pm, s = fit_result.measured(3000, seed=14)
    t = Table({"id": np.arange(len(pm)), "x": pm[:, 0], "y": pm[:, 1], "sigma_x": s[:, 0],
               "sigma_y": s[:, 1], "mag": np.full(len(pm), 12.0)})
    t.write(tmp_path / "stars.ecsv")
    before = (tmp_path / "stars.ecsv").read_bytes()
    out = tmp_path / "stars_lin.ecsv"
    assert main(["correct", str(tmp_path / "stars.ecsv"), "--solution", str(fit_result.astromet),
                 "--out", str(out)]) == 0
    assert "3000 stars: 3000 inside the domain" in capsys.readouterr().out
    assert (tmp_path / "stars.ecsv").read_bytes() == before
    res = Table.read(out)
    assert res.colnames[:6] == t.colnames  # the list's own columns come first, unchanged
    cov = np.empty((len(res), 2, 2))
    cov[:, 0, 0] = res["sigma_x_lin"] ** 2
    cov[:, 1, 1] = res["sigma_y_lin"] ** 2
    cov[:, 0, 1] = cov[:, 1, 0] = res["cov_xy_lin"]
    r = np.column_stack([res["x_lin"], res["y_lin"]]) - lt
    assert 0.8 <= whitened_rms(r, cov) <= 1.25
    meta = res.meta["astrocal_correct"]
    assert meta["method"] == "table-bicubic" and meta["filter"] == "Lp"
    assert meta["pixel_convention"] == "0-based"


@pytest.mark.slow
def test_map_coverage_over_many_fits(tmp_path):
    """Over 8 simulated campaigns, the truth's linear grid is within the posterior's stated
    uncertainty: the mean of chi2 / rank of the map residual (full covariance between
    positions, from the draws) is between 0.8 and 1.25, and so is the mean whitened rms of
    the round trip with the AstroMet product."""
    from astrocal.correct.solutions import linear_grid_draws
    from astrocal.field import design_matrix
    from astrocal.products.result_files import load_posterior
    from astrocal.products import posterior_solution
    from astrocal.sim.points_campaign import write_points_campaign

    from .conftest import FitResult

    ratios, rms = [], []
    for seed in range(20, 28):
        out = tmp_path / f"c{seed}"
        path, truth, _ = write_points_campaign(out, seed=seed, degree=3, fit_degree=3)
        assert main(["-q", "fit", str(path), "--steps", "600", "--walkers", "12"]) == 0
        fr = FitResult(out, truth)
        post = load_posterior(fr.result)
        lam = linear_grid_draws(post, posterior_solution(post, "Lp", detector_shape=(2048, 2048)))
        nt = post.nt
        g = np.linspace(0.0, 2047.0, 21)
        xx, yy = (a.ravel() for a in np.meshgrid(g, g))
        basis = design_matrix(xx, yy, post.degree, post.domain)
        # the truth's linear grid in the same basis (it is a polynomial of the same degree)
        tx, ty = fr.true_linear(xx, yy)
        true = np.concatenate([np.linalg.lstsq(basis, tx, rcond=None)[0],
                               np.linalg.lstsq(basis, ty, rcond=None)[0]])
        w, v = np.linalg.eigh(np.cov(lam, rowvar=False))
        keep = w > w.max() * 1e-12
        d = v[:, keep].T @ (lam.mean(0) - true)
        ratios.append(np.sum(d ** 2 / w[keep]) / keep.sum())
        lt, pt, pm, s = fr.measured(20000, seed=seed)
        c = correct_positions(open_solution(fr.astromet), pm[:, 0], pm[:, 1], s[:, 0], s[:, 1])
        rms.append(whitened_rms(np.column_stack([c.lx, c.ly]) - lt, c.cov))
        assert nt  # degree-3 field
    assert 0.8 <= np.mean(ratios) <= 1.25, ratios
    assert 0.8 <= np.mean(rms) <= 1.25, rms
