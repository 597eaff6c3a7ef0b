"""The LMS fit (astrocal.lms.fit): exact collapsed evidence, exact draws, recovery against a truth.

The data here are drawn straight from a truth geometry (astrocal.sim.lms_points: no images), or
written by the test itself; the end-to-end run on simulated frames is in test_lms_fit_cli.py."""
import numpy as np
import pytest
from scipy import sparse, stats

from astrocal.lms import DeviationLayout, LmsGeometry, echelle_setting
from astrocal.lms.fit import (CollapsedLms, ExposureTerms, LmsFitSettings, Observations, _residual_spec,
                              _slice_index, fit_lms, linearise)
from astrocal.sim.lms_points import compare_with_truth, simulate_lms_points


@pytest.fixture(scope="module")
def points():
    return simulate_lms_points(seed=11, n_offsets=3, lines_um=(4.70, 4.72, 4.74, 4.76))


@pytest.fixture(scope="module")
def fitted(points):
    return fit_lms(points.data, points.truth.layout, points.terms,
                   LmsFitSettings(steps=300, min_steps=200, walkers=12, n_draws=200, across_px_per_mas=0.05))


def _small_observations(points, n=150, seed=0, layout=None):
    """A few rows of each group (the dense check below is O(n^3))."""
    obs = linearise(LmsGeometry(layout or points.truth.layout), points.data, points.terms)
    rng = np.random.default_rng(seed)
    A, y, ld = {}, {}, {}
    for g in obs.A:
        k = np.sort(rng.choice(len(obs.y[g]), min(n, len(obs.y[g])), replace=False))
        A[g], y[g] = obs.A[g][k], obs.y[g][k]
        ld[g] = 0.0
    return Observations(A, y, ld, obs.rows, obs.n_theta)


def _layout(points, residual_m):
    return DeviationLayout(points.truth.layout.settings, residual_m=residual_m)


@pytest.mark.parametrize("residual_m, ard", [(0, False), (3, False), (3, True)])
def test_collapsed_evidence_equals_the_dense_gaussian_marginal(points, residual_m, ard):
    lay = _layout(points, residual_m)
    obs = _small_observations(points, layout=lay)
    prior = np.concatenate([lay.prior_sigma(), points.terms.prior_sigma(1.0, 0.05)])
    model = CollapsedLms(obs, prior, _slice_index(lay), _residual_spec(lay, ard))
    if ard:     # per axis (col, row): rms [px], length along xi, length along w
        res = [list(np.log([0.02, 0.9, 3.0, 0.01, 2.0, 0.8])), list(np.log([0.004, 4.0, 1.0, 0.03, 0.85, 5.0]))]
    else:
        res = [[np.log(0.02), np.log(1.5)], [np.log(0.005), np.log(3.0)]] if residual_m else [[], []]
    assert model.ndim == 4 + len(res[0])
    phis = np.array([[np.log(0.3)] + res[0] + [0.0, 0.1, -0.2], [np.log(0.05)] + res[1] + [0.5, -0.3, 0.2]])
    got = model.log_posterior(phis)
    A = sparse.vstack([obs.A[g] for g in model.groups]).toarray()
    y = np.concatenate([obs.y[g] for g in model.groups])
    for phi, value in zip(phis, got):
        lam = model.prior_sigma(phi) ** 2
        cols = lay.slice_columns(np.arange(1, 29))[:, :, lay.n_terms:]
        if residual_m and ard:      # each axis its own rms and lengths
            e = np.exp(phi[1:7])
            assert np.allclose(np.sqrt(lam[cols[:, 0]]), lay.residual_prior_sd_ard(*e[:3])[None])
            assert np.allclose(np.sqrt(lam[cols[:, 1]]), lay.residual_prior_sd_ard(*e[3:])[None])
            assert not np.allclose(lam[cols[:, 0]], lam[cols[:, 1]])
        elif residual_m:      # the residual's widths are those of its stated rms and length
            assert np.allclose(np.sqrt(lam[cols]), lay.residual_prior_sd(np.exp(phi[1]), np.exp(phi[2]))[None, None])
        noise = np.concatenate([np.full(len(obs.y[g]), np.exp(2 * s))
                                for g, s in zip(model.groups, phi[-len(model.groups):])])
        cov = (A * lam) @ A.T + np.diag(noise)
        assert value == pytest.approx(stats.multivariate_normal(np.zeros(len(y)), cov).logpdf(y), abs=1e-6)
    bad = phis[:1].copy()
    bad[0, 0] = np.log(50.0)
    assert np.all(np.isinf(model.log_posterior(bad)))   # outside the bounds


@pytest.mark.parametrize("residual_m, ard", [(0, False), (3, False), (3, True)])
def test_exact_draws_have_the_conditional_mean_and_covariance(points, residual_m, ard):
    lay = _layout(points, residual_m)
    obs = _small_observations(points, n=300, layout=lay)
    prior = np.concatenate([lay.prior_sigma(), points.terms.prior_sigma(1.0, 0.05)])
    model = CollapsedLms(obs, prior, _slice_index(lay), _residual_spec(lay, ard))
    phi = model.initial_guess()
    M, b = model.precision(phi)
    cov = np.linalg.inv(M)
    d = model.draw(phi[None], np.random.default_rng(1), per_phi=4000)
    k = lay.blocks["settings"]                      # well-measured and prior-dominated columns alike
    for j in list(range(k.start, k.stop)) + [lay.slice_columns([3])[0, 1, 0], lay.slice_columns([3])[0, 1, -1],
                                             obs.n_theta - 1]:
        assert d[:, j].mean() == pytest.approx(np.linalg.solve(M, b)[j], abs=4 * np.sqrt(cov[j, j] / 4000))
        assert d[:, j].std() == pytest.approx(np.sqrt(cov[j, j]), rel=0.06)


def test_geometry_recovered_where_the_lasers_fall(points, fitted):
    r = compare_with_truth(fitted, points.truth, n_per_slice=40, seed=3)
    lit = np.isin(r["slice"], np.unique(points.data["spots"]["slice"]))
    z = r["err"] / r["sd"]
    assert np.sqrt(np.mean(r["err"][lit, 1] ** 2)) < 0.01          # rows: traces + edges + spots
    assert np.sqrt(np.mean(r["err"][lit, 0] ** 2)) < 0.1           # cols: per-exposure chopper terms
    assert np.sqrt(np.mean(z[lit] ** 2)) < 2.0 and np.sqrt(np.mean(z[~lit] ** 2)) < 2.0
    assert r["coverage95"].min() > 0.8
    tau = np.exp(fitted.phi_samples[:, 0])
    assert 0.15 < np.median(tau) < 0.5                              # the truth was drawn with tau = 0.3
    for g, res in fitted.residuals().items():
        assert 0.7 < np.sqrt(np.mean(res**2)) < 1.3, g


def test_chopper_errors_along_the_slice_are_recovered(points, fitted):
    dxi = fitted.theta_samples[:, fitted.layout.n_params + np.array(points.terms.dxi)]
    z = (dxi.mean(axis=0) - points.dxi_mas) / dxi.std(axis=0, ddof=1)
    assert np.all(np.abs(z) < 4) and np.all(dxi.std(axis=0) < 0.5)   # prior 1 mas, measured to < 0.5 mas


def test_pixel_geometry_inverts_the_fitted_forward_with_its_sigma(points, fitted):
    g = fitted.geometry()
    s, xi, lam = np.array([6, 14, 22, 3]), np.array([0.0, 0.1, -0.2, 0.3]), np.array([4.70, 4.72, 4.74, 4.75])
    p = g.forward(s, xi, lam, 0)
    pg = fitted.pixel_geometry(p.det, p.col, p.row, 0)
    assert np.array_equal(pg["slice"], s)
    assert np.allclose(pg["xi"], xi, atol=1e-7) and np.allclose(pg["lam"], lam, atol=1e-9)
    # sigma of xi at a pixel = sd of the draws' xi there (by Newton per draw, independently; every
    # third draw, spread over the chain: the first 60 come from its first third, correlated)
    k = 1
    draws = [LmsGeometry(fitted.layout, q, fitted.truth).inverse(p.det[k], p.col[k], p.row[k], 0, slice_number=s[k])
             for q in fitted.param_samples[::3]]
    assert pg["sigma_xi"][k] == pytest.approx(np.std([d.xi[0] for d in draws], ddof=1), rel=0.35)
    assert pg["sigma_lam"][k] == pytest.approx(np.std([d.lam[0] for d in draws], ddof=1), rel=0.35)
    maps, cols, rows = fitted.detector_maps(0, 1, step=256)
    assert maps["xi"].shape == (8, 8) and np.all(np.isin(maps["slice"], np.arange(0, 29)))
    assert np.nanmax(maps["sigma_lam"]) < 1e-4                       # um: < ~0.02 nm


def test_handmade_spots_of_a_shifted_instrument_are_fitted():
    """Data written by the test: spots of the optical model shifted by 0.4 px in col and -0.3 px
    in row on every chip (a setting shift); the fit finds the shift."""
    layout = DeviationLayout((echelle_setting(4.73),))
    geo = LmsGeometry(layout)
    from astropy.table import Table
    s = np.repeat(np.arange(3, 27, 2), 6)
    xi = np.tile([-0.3, -0.15, 0.0, 0.1, 0.2, 0.3], 12)
    lam = np.tile([4.705, 4.715, 4.725, 4.74, 4.75, 4.755], 12)
    p = geo.forward(s, xi, lam, 0, on_gap="mask")
    ok = p.det > 0
    rng = np.random.default_rng(4)
    n = int(ok.sum())
    t = Table({"hole": np.arange(n), "slice": s[ok], "line_um": lam[ok], "xi_arcsec": xi[ok], "det": p.det[ok],
               "col": p.col[ok] + 0.4 + rng.normal(0, 0.01, n), "row": p.row[ok] - 0.3 + rng.normal(0, 0.01, n),
               "cov": np.tile(np.eye(2) * 1e-4, (n, 1, 1)), "flags": np.zeros(n, int), "setting": np.zeros(n, int),
               "exposure": np.zeros(n, int)})
    terms = ExposureTerms.build([("hand", "laser")])
    fit = fit_lms({"spots": t}, layout, terms, LmsFitSettings(steps=200, min_steps=100, walkers=10, n_draws=100,
                                                              offset_sigma_mas=0.01))
    ps, _ = fit.position_samples([14], [0.0], [4.72], 0)
    truth = geo.forward([14], [0.0], [4.72], 0)
    assert ps.mean(axis=0)[0, 0] - truth.col[0] == pytest.approx(0.4, abs=0.03)
    assert ps.mean(axis=0)[0, 1] - truth.row[0] == pytest.approx(-0.3, abs=0.03)


def test_residual_brings_the_intervals_back_on_a_non_polynomial_instrument():
    """An as-built instrument with a smooth per-slice wave no polynomial holds (SliceWaves, not a
    draw from the fit's prior): the polynomial-only fit misses it in row by many sigma; with the
    per-slice residual (sampled rms and lengths, ARD) the truth is inside the intervals at close to their
    rate on this campaign and the error shrinks (over 12 campaigns the row coverage is still
    below its rate: benchmarks/results/lms_coverage_v3.txt)."""
    from astrocal.lms import SliceWaves
    from astrocal.sim.lms_truth import QCL_LINES_UM, draw_lms_geometry

    truth = draw_lms_geometry((4.73,), np.random.default_rng(21))
    truth = LmsGeometry(truth.layout, truth.params, truth.truth, SliceWaves.draw(np.random.default_rng(121), 0.05))
    c = simulate_lms_points((4.73,), seed=21, truth=truth, n_offsets=6, max_across_slices=6, grid_all_offsets=True,
                            lines_um=QCL_LINES_UM)
    out = {}
    for m in (0, 6):
        lay = DeviationLayout(truth.layout.settings, residual_m=m)
        fit = fit_lms(c.data, lay, c.terms, LmsFitSettings(steps=300, min_steps=200, walkers=14, n_draws=200, seed=3))
        out[m] = (fit, compare_with_truth(fit, truth, n_per_slice=30, seed=4))
    poly, res = out[0][1], out[6][1]
    z_poly = np.sqrt(np.mean((poly["err"][:, 1] / poly["sd"][:, 1]) ** 2))
    z_res = np.sqrt(np.mean((res["err"][:, 1] / res["sd"][:, 1]) ** 2))
    assert z_poly > 3 and poly["coverage95"][1] < 0.6                 # the polynomial alone is overconfident
    assert z_res < 1.5 and res["coverage95"][1] > 0.88 and res["coverage68"][1] > 0.5    # one campaign: correlated
    assert res["coverage95"][0] > 0.88
    lit = np.isin(res["slice"], np.unique(c.data["spots"]["slice"]))      # same points in both comparisons
    assert np.sqrt(np.mean(res["err"][lit, 1] ** 2)) < 0.6 * np.sqrt(np.mean(poly["err"][lit, 1] ** 2))
    fit = out[6][0]
    assert fit.hyper_names[1:7] == tuple(f"log_residual_{a}_{h}" for a in ("col", "row")
                                         for h in ("rms_px", "length_xi", "length_w"))    # ARD, the default
    med = dict(zip(fit.hyper_names, np.exp(np.median(fit.phi_samples, axis=0))))
    for a in ("col", "row"):
        assert 0.005 < med[f"log_residual_{a}_rms_px"] < 0.1          # the waves' rms over a slice ~0.03 px
    # the row wave runs along the slice only, the col wave along the dispersion only
    assert med["log_residual_row_length_xi"] < med["log_residual_row_length_w"]
    assert med["log_residual_col_length_w"] < med["log_residual_col_length_xi"]


@pytest.mark.parametrize("ard", [False, True])
def test_a_fit_with_the_residual_is_saved_and_read_back(points, tmp_path, ard):
    import json

    from astrocal.lms.fit_campaign import load_lms_fit, save_lms_fit

    lay = _layout(points, 2)
    fit = fit_lms(points.data, lay, points.terms, LmsFitSettings(steps=100, min_steps=100, walkers=14, n_draws=50,
                                                                 residual_ard=ard))
    save_lms_fit(fit, tmp_path)
    info = json.loads((tmp_path / "lms_fit.json").read_text())
    assert info["layout"]["residual_m"] == 2 and info["residual_ard"] is ard
    if ard:
        names = {f"log_residual_{a}_{h}" for a in ("col", "row") for h in ("rms_px", "length_xi", "length_w")}
        assert names <= set(info["hyperparameters"]) and "log_residual_length" not in info["hyperparameters"]
        assert info["hyper_prior"]["residual_row_length_xi"] == "log-uniform"
        assert fit.hyper_names[1:7] == tuple(sorted(names, key=fit.hyper_names.index))
        for n in names:         # the recorded MAP is the fit's, within the bounds
            assert info["hyperparameters"][n]["map"] == pytest.approx(np.exp(fit.phi_map[fit.hyper_names.index(n)]))
    else:
        assert info["hyper_prior"]["residual_length"] == "log-uniform"
        assert {"log_residual_rms_px", "log_residual_length"} <= set(info["hyperparameters"])
    back = load_lms_fit(tmp_path)
    assert back.settings.residual_ard is ard
    # three offsets reach 9 of the 28 slices: the fit says what that leaves to the priors, and keeps it
    assert fit.coverage_notes and "have no laser spot" in fit.coverage_notes[0]
    assert back.coverage_notes == fit.coverage_notes and back.coverage == fit.coverage
    assert info["coverage"][0]["exposures_per_slice"] == fit.coverage[0]["exposures_per_slice"]
    assert back.layout.residual_m == 2 and back.layout.names == lay.names
    assert np.array_equal(back.theta_samples, fit.theta_samples) and back.hyper_names == fit.hyper_names
    s, xi, lam = [5, 20], [0.1, -0.2], [4.71, 4.75]
    a, _ = fit.position_samples(s, xi, lam, 0)
    b, _ = back.position_samples(s, xi, lam, 0)
    assert np.allclose(a, b, atol=1e-9)


class _NoisyQuadratic:
    """A log posterior like the LMS's: a Gaussian of known maximum plus tens of thousands of nats
    of constant, evaluated with a few 1e-6 nats of round-off (as the collapsed evidence is)."""

    def __init__(self):
        self.mean = np.array([-1.2, -3.4, 1.5, 0.3])
        self.sd = np.array([0.04, 0.08, 0.3, 0.01])
        self.calls = 0

    def bounds(self):
        return np.full(4, -7.0), np.full(4, 2.5)

    def log_posterior(self, phi):
        phi = np.atleast_2d(phi)
        self.calls += len(phi)
        noise = 4e-6 * np.sin(1e7 * phi.sum(axis=1) + 3.0 * phi[:, 0])
        return 45000.0 - 0.5 * np.sum(((phi - self.mean) / self.sd) ** 2, axis=1) + noise


def test_map_search_reaches_the_maximum_despite_round_off():
    """The LMS evidence is ~4.5e4 nats with ~4e-6 of round-off: forward differences of 1e-8 (scipy's
    default, the search before 2026-12-07) gave gradients off by hundreds and stopped 100+ nats short
    on simulated campaigns; the central differences of MAP_STEP find the maximum."""
    from astrocal.lms.fit import map_hyperparameters

    model = _NoisyQuadratic()
    phi, lp = map_hyperparameters(model, np.zeros(4))
    assert np.all(np.abs(phi - model.mean) < 0.05 * model.sd)
    assert lp == pytest.approx(45000.0, abs=0.01)


@pytest.mark.parametrize("residual_m", [0, 3])
def test_sampled_across_scale_is_the_fixed_prior_at_that_scale(points, residual_m):
    """With ``across`` the laser exposures' along-dispersion shifts have the prior sd
    exp(log_across_px_per_mas) * sigma_mas: at any value the evidence, the prior widths and the
    conditional posterior are those of the fixed-prior model built with that value."""
    lay = _layout(points, residual_m)
    obs = _small_observations(points, layout=lay)
    dcol = lay.n_params + np.array([i for i in points.terms.dcol if i >= 0])
    prior = np.concatenate([lay.prior_sigma(), points.terms.prior_sigma(1.5, 0.05)])
    spec = _residual_spec(lay, True)
    sampled = CollapsedLms(obs, prior, _slice_index(lay), spec, (dcol, 1.5, 0.05))
    k = 1 + (6 if residual_m else 0)
    assert sampled.hyper_names[k] == "log_across_px_per_mas" and sampled.ndim == k + 4
    assert sampled.initial_guess()[k] == pytest.approx(np.log(0.05))
    res = list(np.log([0.02, 0.9, 3.0, 0.01, 2.0, 0.8])) if residual_m else []
    for a in (0.02, 0.05, 0.12):
        fixed = CollapsedLms(obs, np.concatenate([lay.prior_sigma(), points.terms.prior_sigma(1.5, a)]),
                             _slice_index(lay), spec)
        phi_f = np.array([np.log(0.3)] + res + [0.0, 0.1, -0.2])
        phi_s = np.insert(phi_f, k, np.log(a))
        assert sampled.log_posterior(phi_s)[0] == pytest.approx(fixed.log_posterior(phi_f)[0], abs=1e-6)
        assert np.allclose(sampled.prior_sigma(phi_s), fixed.prior_sigma(phi_f))
        assert np.allclose(sampled.prior_sigma(phi_s)[dcol], 1.5 * a)
        assert np.allclose(sampled.conditional_mean(phi_s), fixed.conditional_mean(phi_f))
    d = sampled.draw(np.insert(phi_f, k, np.log(0.12))[None], np.random.default_rng(2), per_phi=3000)
    M, _ = sampled.precision(np.insert(phi_f, k, np.log(0.12)))
    j = dcol[0]
    assert d[:, j].std() == pytest.approx(np.sqrt(np.linalg.inv(M)[j, j]), rel=0.06)
    out = np.insert(phi_f, k, np.log(0.5))                   # beyond ACROSS_BOUNDS_PX_PER_MAS
    assert np.isinf(sampled.log_posterior(out)[0])


def _dense_terms(model, phi):
    """``b^T M^-1 b`` and ``log det M`` the straightforward way: the whole precision ``M`` (T x T)
    and its Cholesky factor (what :class:`CollapsedLms` gets by eliminating the slice blocks)."""
    M, b = model.precision(phi)
    L = np.linalg.cholesky(M)
    z = np.linalg.solve(L, b)
    return z @ z, 2 * np.sum(np.log(np.diag(L)))


@pytest.mark.parametrize("residual_m, ard", [(0, False), (3, True)])
def test_block_elimination_equals_the_dense_precision(points, residual_m, ard):
    """The fast path (each slice's solve over the few shared columns its data involve, the
    Schur complement summed per group of slices) against the whole precision matrix, on every
    row of the campaign, with the sampled across scale: ``b^T M^-1 b`` and ``log det M`` to
    1e-10 relative; the log posterior, their difference with ``chi2``, to 1e-14 of ``chi2``
    (the round-off of that difference, ~3e-5 nats on a 32-offset campaign, whatever the method)."""
    lay = _layout(points, residual_m)
    obs = linearise(LmsGeometry(lay), points.data, points.terms)
    prior = np.concatenate([lay.prior_sigma(), points.terms.prior_sigma(1.0, 0.05)])
    dcol = np.array([lay.n_params + i for i in points.terms.dcol if i >= 0])
    model = CollapsedLms(obs, prior, _slice_index(lay), _residual_spec(lay, ard), (dcol, 1.0, 0.05))
    assert model.blocks.coupling.columns.shape[1] < len(model.global_index)   # a slice sees a part of them
    lo, hi = model.bounds()
    phis = np.clip(model.initial_guess() + 0.3 * np.random.default_rng(2).standard_normal((5, model.ndim)), lo, hi)
    terms = model.evidence_terms(phis)
    got = model.log_posterior(phis)
    for k, phi in enumerate(phis):
        quad, logdet = _dense_terms(model, phi)
        assert terms["quad"][k] == pytest.approx(quad, rel=1e-10, abs=0)
        assert terms["logdet_precision"][k] == pytest.approx(logdet, rel=1e-10, abs=0)
        dense = -0.5 * (terms["chi2"][k] - quad + terms["logdet_noise"][k] + terms["logdet_prior"][k] + logdet
                        + model.n.sum() * np.log(2 * np.pi))
        assert got[k] == pytest.approx(dense, rel=0, abs=1e-14 * terms["chi2"][k])


def test_cholesky_solve_factors_and_solves_in_place():
    from astrocal.lms.elimination import cholesky_solve

    rng = np.random.default_rng(0)
    a = rng.standard_normal((3, 2, 6, 8))
    B = a @ np.swapaxes(a, -1, -2)
    L = np.linalg.cholesky(B)
    R = rng.standard_normal((3, 2, 6, 4))
    want = np.linalg.solve(L, R)
    out = cholesky_solve(B, R)
    assert out is R and np.allclose(R, want, rtol=1e-12, atol=1e-12)
    assert np.allclose(np.tril(B), L, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="C-contiguous"):
        cholesky_solve(B, np.asfortranarray(R))
    B[1, 0, 2, 2] = -1.0                                   # not positive definite
    with pytest.raises(np.linalg.LinAlgError, match="not positive definite"):
        cholesky_solve(B, R)


@pytest.mark.parametrize("truth_px_per_mas, seed", [(0.02, 30), (0.07, 31)])
def test_the_sampled_across_scale_is_learnt_from_the_laser_exposures(truth_px_per_mas, seed):
    """A fit of a 32 x 8-offset campaign learns how far a laser spot moves along the dispersion
    per mas of chopper error across the slice: started at 0.05 px/mas, its posterior (in log)
    holds the simulator's value within 2.58 sd (99 %), its central 95 % spans a factor < 2.5
    (the prior's, 20) and its median is nearer the truth than the start. (Seeds 30-39 at
    0.02, 0.035 and 0.07 px/mas: |z| at most 2.0, in the 95 % interval 28 of 30 times.)"""
    from astrocal.lms.fit import ACROSS_BOUNDS_PX_PER_MAS

    c = simulate_lms_points((4.73,), seed=seed, n_offsets=32, max_across_slices=8, across_px_per_mas=truth_px_per_mas,
                            lines_um=(4.70, 4.72, 4.74, 4.76))
    fit = fit_lms(c.data, c.truth.layout, c.terms,
                  LmsFitSettings(steps=300, min_steps=200, walkers=12, n_draws=200, across_px_per_mas=0.05))
    la = fit.phi_samples[:, list(fit.hyper_names).index("log_across_px_per_mas")]
    assert abs(np.log(truth_px_per_mas) - la.mean()) < 2.58 * la.std()
    lo, hi = np.exp(np.quantile(la, [0.025, 0.975]))
    assert hi / lo < 2.5 and ACROSS_BOUNDS_PX_PER_MAS[1] / ACROSS_BOUNDS_PX_PER_MAS[0] == pytest.approx(20.0)
    assert abs(la.mean() - np.log(truth_px_per_mas)) < abs(np.log(0.05 / truth_px_per_mas))  # nearer than the start
