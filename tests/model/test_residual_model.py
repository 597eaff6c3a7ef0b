"""The residual field in the collapsed model (Priors.residual = "matern52"): the exact
marginal likelihood against dense algebra, in the model's own coefficients and in the
function-space form (the residual marginalised as a covariance between the points)."""
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from astrocal.field import design_matrix
from astrocal.model.draws import residual_hyperparameters
from astrocal.model.joint import JointModel
from astrocal.model.priors import Priors

sys.path.insert(0, os.path.dirname(__file__))
from test_linear import assert_likelihood_exact, brute_force, small_problem  # noqa: E402

RES = Priors(linear_sigma=2.0, distortion_px=5.0, residual="matern52", residual_basis=4)


@pytest.mark.parametrize("hole_errors", [True, False])
def test_marginal_likelihood_is_exact_with_the_residual(hole_errors):
    pts, field = small_problem(3, n_holes=12, n_exp=4, degree=3, noise_px=0.5)
    model = JointModel(pts, 3, hole_errors=hole_errors, jacobian_field=field, priors=RES)
    assert model.n_res == 2 * 16 and [model.hyper_names[i] for i in model.i_res] == [
        "log_residual_rms", "log_residual_length", "residual_aspect"]
    assert model.param_names[model.res_cols[0]] == "res_u[1,1]"
    assert model.param_names[model.res_cols[-1]] == "res_v[4,4]"
    assert_likelihood_exact(model, brute_force, 11, 3)


def test_function_space_form():
    """Without hole errors: the residual's coefficients integrated out = its covariance
    ``Phi diag(S) Phi^T`` added to each component's noise covariance (a dense Gaussian
    over the points, the polynomial and the poses kept as parameters)."""
    pts, field = small_problem(4, n_holes=12, n_exp=3, degree=2, noise_px=0.5)
    model = JointModel(pts, 2, hole_errors=False, jacobian_field=field, priors=RES)
    rng = np.random.default_rng(4)
    lo, hi = model.bounds()
    for phi in lo + (hi - lo) * rng.uniform(0.2, 0.8, (3, model.ndim)):
        jit, kappa, _ = model.noise_scales(phi[None])
        pt = model.points
        n, nt = pt.n_points, model.nt
        keep = np.setdiff1d(np.arange(model.G), model.res_cols)
        A = np.zeros((2 * n, model.G))
        B = design_matrix(pt.x, pt.y, model.degree, pt.domain)
        A[0::2, :nt], A[1::2, nt:2 * nt] = B, B
        A[0::2, 2 * nt:model.p0], A[1::2, 2 * nt:model.p0] = model.E[:, 0], model.E[:, 1]
        for i in range(n):
            slot = model.pose_slot[pt.exposure[i]]
            if slot >= 0:
                A[2 * i:2 * i + 2, model.p0 + 4 * slot:model.p0 + 4 * slot + 4] = model.Q[i]
        A = A[:, keep]
        cov = np.zeros((2 * n, 2 * n))
        ci = kappa[0] ** 2 * model.U @ (model.lam[:, :, None] * np.swapaxes(model.U, 1, 2))
        for i in range(n):
            cov[2 * i:2 * i + 2, 2 * i:2 * i + 2] = ci[i] + np.eye(2) * jit[0, pt.dataset[i]] ** 2
        _, lx, ly = (v[0] for v in residual_hyperparameters(phi[None], model.hyper_names))  # the hyperparameter is the residual's rms
        kres = model.residual.covariance(pt.x, pt.y, pt.x, pt.y,
                                         np.exp(phi[model.i_res[0]]) / model.residual.rms_per_sigma(lx, ly), lx,
                                         length_y=ly)
        cov[0::2, 0::2] += kres
        cov[1::2, 1::2] += kres
        sd = model.prior_sd(phi)[keep]
        m0 = model.g0[keep]
        # marginal of y = A g + e, g ~ N(m0, diag(sd^2)), e ~ N(0, cov): dense Gaussian
        total = cov + (A * sd**2) @ A.T
        r = model.y.ravel() - A @ m0
        sign, logdet = np.linalg.slogdet(total)
        ll = -0.5 * (2 * n * np.log(2 * np.pi) + logdet + r @ np.linalg.solve(total, r))
        assert model.log_likelihood(phi[None])[0] == pytest.approx(ll, abs=1e-5)


def test_residual_widths_follow_the_hyperparameters():
    pts, field = small_problem(5, n_holes=12, n_exp=4, degree=3, noise_px=0.5)
    m = JointModel(pts, 3, jacobian_field=field, priors=RES)
    phi = m.initial_guess()
    phi[m.i_res] = [np.log(2e-4), np.log(300.0), 0.0]
    sd = m.prior_sd(phi)[m.res_cols]
    expect = m.residual.prior_sd(2e-4 / m.residual.rms_per_sigma(300.0), 300.0)
    assert np.allclose(sd, np.r_[expect, expect])  # equal lengths: the isotropic prior
    # the hyperparameter is the residual's rms over the detector: the prior field's mean
    # square over a dense grid (its own covariance's diagonal) is rms**2
    g = np.linspace(m.points.domain[0], m.points.domain[1], 121)[1:-1:2]
    xx, yy = np.meshgrid(g, g)
    var = m.residual.covariance(xx.ravel(), yy.ravel(), xx.ravel(), yy.ravel(),
                                2e-4 / m.residual.rms_per_sigma(300.0), 300.0).diagonal()
    assert np.sqrt(var.mean()) == pytest.approx(2e-4, rel=0.02)
    assert m.i_res[0] in m.i_scale and not set(m.i_res[1:]) & set(m.i_scale)  # the length log-uniform, the aspect uniform
    with pytest.raises(ValueError, match="Priors.residual"):
        JointModel(pts, 3, priors=Priors(residual="spline"))
    with pytest.raises(ValueError, match="Priors.residual_lengths"):
        JointModel(pts, 3, priors=Priors(residual="matern52", residual_lengths="diagonal"))


def test_residual_lengths_per_axis():
    """One correlation length per detector axis (the default, ``residual_lengths =
    "per_axis"``; sampled as the geometric mean length and the aspect ``a = log(l_x / l_y) /
    2``, ``+-log(residual_aspect_max) / 2``): a long x length and a short y length give the
    functions that vary along y (high ``omega_y``) the larger prior widths, and the other way
    round; the rms over the detector is the hyperparameter's whatever the lengths;
    ``"isotropic"`` keeps one length (the earlier model)."""
    pts, field = small_problem(5, n_holes=12, n_exp=4, degree=3, noise_px=0.5)
    m = JointModel(pts, 3, jacobian_field=field, priors=RES)
    assert [m.hyper_names[i] for i in m.i_res] == ["log_residual_rms", "log_residual_length", "residual_aspect"]
    lo, hi = m.bounds()
    assert lo[m.i_res[2]] == pytest.approx(-np.log(64.0) / 2) and hi[m.i_res[2]] == pytest.approx(np.log(64.0) / 2)
    phi = m.initial_guess()
    wx, wy = m.residual.axis_frequencies()
    k = m.residual.m
    along_x, along_y = (k - 1) * k, k - 1  # (j, k) = (m, 1) and (1, m): j along x slowest
    assert wx[along_x] > wy[along_x] and wy[along_y] > wx[along_y]
    for lx, ly, wide in ((1500.0, 200.0, along_y), (200.0, 1500.0, along_x)):
        phi[m.i_res] = [np.log(2e-4), np.log(np.sqrt(lx * ly)), 0.5 * np.log(lx / ly)]
        sd = m.residual_sigma(phi)[0, :m.residual.size]
        narrow = along_x if wide == along_y else along_y
        assert sd[wide] > 10 * sd[narrow]
        assert np.sqrt(sd**2 @ m.residual.mean_squares()) == pytest.approx(2e-4, rel=1e-10)
        assert m.residual_tail_variance(phi)[0] == pytest.approx(
            m.residual.tail_variance(2e-4 / m.residual.rms_per_sigma(lx, ly), np.sqrt(lx * ly)), rel=1e-10)
    iso = JointModel(pts, 3, jacobian_field=field, priors=Priors(**{**RES.__dict__, "residual_lengths": "isotropic"}))
    assert [iso.hyper_names[i] for i in iso.i_res] == ["log_residual_rms", "log_residual_length"]
    assert iso.ndim == m.ndim - 1


def _ripple(x, y, amp_px, length_px, seed):
    """A smooth random displacement field (pixels): 60 random Fourier features, rms about
    ``amp_px`` per component, correlation length about ``length_px``. Not in the model's
    family (no polynomial, no Matérn basis)."""
    rng = np.random.default_rng(seed)
    k = rng.normal(0, 1 / length_px, (60, 2))
    ph = rng.uniform(0, 2 * np.pi, 60)
    a = rng.normal(0, 1, (2, 60)) * np.sqrt(2 / 60)
    arg = np.outer(np.ravel(x), k[:, 0]) + np.outer(np.ravel(y), k[:, 1]) + ph
    return amp_px * (np.cos(arg) @ a[0]), amp_px * (np.cos(arg) @ a[1])


def test_a_field_beyond_the_polynomial_is_found_and_covered(tmp_path, caplog):
    """A degree-4 field plus a mid-frequency ripple (0.03 px, ~300 px): with the residual
    field on "auto" the evidence takes it, the map is closer to the truth than the
    polynomial alone and its 1-sigma covers the truth; the result round-trips through
    save_fit/load_posterior with the residual in its samples; the products carry it."""
    import json
    import logging
    import warnings

    benchmarks = os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks")
    sys.path.insert(0, os.path.abspath(benchmarks))
    from bench_model_coverage import campaign_params, detector_grid, make_campaign

    from astrocal.model.inference import FitSettings, fit_joint
    from astrocal.products.result_files import load_posterior, save_fit
    from astrocal.products import write_fit_products
    from astrocal.sim.lab_truth import gauge_truth

    caplog.set_level(logging.ERROR, logger="astrocal")  # quiet; restored after the test
    p = campaign_params(3, degree=4)
    p["n_exposures"] = 5
    truth, pts, _ = make_campaign(**p)
    dx, dy = _ripple(pts.x, pts.y, 0.03, 300.0, 8)
    pts.x[:] -= dx  # G_true = G_poly + ripple x scale: the measured pixel moves by -ripple
    pts.y[:] -= dy
    gt = gauge_truth(truth, pts.hole_ids)
    x, y = detector_grid(9)
    rx, ry = _ripple(x, y, 0.03, 300.0, 8)
    ut, vt = gt.field(x, y)
    ut, vt = ut + rx * pts.pixel_scale, vt + ry * pts.pixel_scale
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for mode in ("none", "auto"):
            fit = fit_joint(pts, FitSettings(degree="auto", degree_range=(3, 5), seed=4, steps=600, walkers=16,
                                           progress=False, priors=Priors(residual=mode)))
            u, v = fit.field_samples(x, y)
            inside = fit.inside_footprint(x, y)
            err = np.hypot(u.mean(0) - ut, v.mean(0) - vt)[inside] / pts.pixel_scale
            z = np.concatenate([(u.mean(0) - ut) / u.std(0, ddof=1), (v.mean(0) - vt) / v.std(0, ddof=1)])
            out[mode] = (fit, np.sqrt(np.mean(err**2)), np.sqrt(np.mean(z[np.tile(inside, 2)] ** 2)))
    fit, err, zrms = out["auto"]
    assert fit.residual is not None
    assert {e.get("residual") for e in fit.evidence} == {False, True}
    assert err < 0.8 * out["none"][1]
    assert zrms < 1.5 and zrms < out["none"][2]
    # saved and read back: the residual is part of the posterior's field
    save_fit(fit, tmp_path)
    post = load_posterior(tmp_path)
    u, v = post.field_samples(x, y)
    assert np.allclose(u, fit.field_samples(x, y)[0])
    info = json.loads((tmp_path / "fit.json").read_text())
    spec = info["residual_field"]
    assert spec["kind"] == "matern52" and spec["n_functions"] == spec["m"] ** 2 == fit.residual[0].size
    # the products carry it (tests/test_products.py checks their values)
    paths = write_fit_products(post, tmp_path, "Lp")
    assert "wcs_lookup" in paths
    from astrocal.resultset import write_manifest  # the set is complete (as astrocal fit ends)

    write_manifest(tmp_path, ["posterior.h5", "fit.json", "summary.ecsv", "residuals.ecsv",
                              *(Path(p).name for p in paths.values())])
    # astrocal correct: the full field, its inverse, and the draws' spread with the residual
    from astrocal.correct.solutions import open_solution
    from astrocal.products import posterior_solution

    ev = open_solution(tmp_path)
    sol = posterior_solution(post, "Lp")
    xs, ys = np.random.default_rng(2).uniform(0, 2047, (2, 200))
    lx, ly = ev.undistort(xs, ys)
    ex, ey = sol.linear_positions(xs, ys)
    assert np.max(np.hypot(lx - ex, ly - ey)) < 2e-3  # the draws' own linear grids: a tiny spread
    px, py = ev.distort(lx, ly)
    assert np.max(np.hypot(px - xs, py - ys)) < 1e-8
    poly = sol.linear_field()(xs, ys)
    assert np.max(np.hypot(lx - poly[0], ly - poly[1])) > 0.01  # the residual is in it
    sx, sy = sol.sigma(xs, ys)
    cov = ev.map_covariance(xs, ys)
    # the same spread up to the draws' own linear grids (correct removes each draw's scale and rotation)
    assert np.allclose(np.sqrt(cov[:, 0, 0]), sx, rtol=0.25)


def test_the_spectral_tail_is_white_noise_beside_the_jitter():
    """With the residual field, each point's white noise is its dataset's jitter and the
    residual's spectral tail in quadrature; the map's unresolved field holds the tail too."""
    from astrocal.model import draws

    pts, field = small_problem(6, n_holes=12, n_exp=4, degree=3, noise_px=0.5)
    m = JointModel(pts, 3, jacobian_field=field, priors=RES)
    plain = JointModel(pts, 3, jacobian_field=field, priors=Priors(linear_sigma=2.0, distortion_px=5.0))
    phi = np.repeat(m.initial_guess()[None], 3, axis=0)
    phi[:, m.i_res[0]] = np.log(3e-3)
    lx, ly = np.array([5.0, 40.0, 400.0]), np.array([10.0, 30.0, 300.0])  # pixels; the detector is 256 px wide
    phi[:, m.i_res[1]] = np.log(np.sqrt(lx * ly))
    phi[:, m.i_res[2]] = 0.5 * np.log(lx / ly)
    tail = m.residual_tail_variance(phi)
    assert tail[0] > tail[1] > tail[2] >= 0 and tail[0] > 1e-6
    assert np.allclose(tail, m.residual.tail_variance_for_rms(3e-3, lx, ly))
    jit, _, _ = m.noise_scales(phi)
    own = np.exp(phi[:, 0])
    assert np.allclose(jit[:, 0] ** 2, own**2 + tail)
    assert np.allclose(plain.noise_scales(phi[:, :plain.ndim])[0][:, 0], own)
    sd = draws.unresolved_sd(phi, m.hyper_names, m.residual)
    assert np.allclose(sd**2, own**2 + tail)
    assert np.allclose(draws.unresolved_sd(phi, m.hyper_names), own)  # without the basis: the jitter


def test_the_basis_is_refined_while_the_evidence_rises():
    """fit_variant tries the refinements of Priors.residual_refine and keeps one only when
    its evidence exceeds the kept one's by more than residual_refine_nats; the polynomial
    alone is fitted once."""
    from astrocal.model.inference import FitSettings
    from astrocal.model.refinement import fit_variant

    pts, field = small_problem(7, n_holes=12, n_exp=4, degree=3, noise_px=0.5)
    settings = FitSettings(degree=3, progress=False)
    excluded = np.zeros(pts.n_points, bool)
    pr = Priors(linear_sigma=2.0, distortion_px=5.0, residual="matern52", residual_basis=3,
                residual_refine=((4, 1.2), (5, 1.2)), residual_refine_nats=-1e9)
    vf = fit_variant(pts, 3, pr, settings, field, excluded)  # any rise is enough: the whole ladder
    assert [r[:2] for r in vf.row["residual_refinements"]] == [[3, 1.5], [4, 1.2], [5, 1.2]]
    assert vf.priors.residual_basis == 5 and vf.row["residual_basis"] == 5
    assert vf.row["log_evidence"] == vf.row["residual_refinements"][-1][2]
    strict = fit_variant(pts, 3, pr.__class__(**{**pr.__dict__, "residual_refine_nats": 1e9}),
                         settings, field, excluded)  # no rise is enough: the first refinement stops it
    assert [r[:2] for r in strict.row["residual_refinements"]] == [[3, 1.5], [4, 1.2]]
    assert strict.priors.residual_basis == 3 and strict.row["residual_boundary"] == 1.5
    assert strict.row["log_evidence"] == strict.row["residual_refinements"][0][2]
    poly = fit_variant(pts, 3, Priors(linear_sigma=2.0, distortion_px=5.0), settings, field, excluded)
    assert "residual_refinements" not in poly.row and np.isfinite(poly.row["log_evidence"])
    # where the residual does not beat the polynomial alone, no refinement is tried
    from astrocal.model.refinement import baseline_evidence

    table = [{"degree": 3, "residual": False, **poly.row}]
    assert baseline_evidence(table, 3) == poly.row["log_evidence"] and baseline_evidence(table, 4) is None
    zero = pr.__class__(**{**pr.__dict__, "residual_refine_nats": 0.0})
    gated = fit_variant(pts, 3, zero, settings, field, excluded, baseline=vf.row["residual_refinements"][0][2] + 10)
    assert [r[:2] for r in gated.row["residual_refinements"]] == [[3, 1.5]] and gated.priors.residual_basis == 3
    assert "not tried" in gated.row["residual_refinement"] and "residual_refine_nats" in gated.row["residual_refinement"]
    assert "residual_refinement" not in vf.row
