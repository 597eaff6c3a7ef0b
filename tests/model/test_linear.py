"""The collapsed linear model against brute force on small problems."""
import numpy as np
import pytest

from astrocal.field import design_matrix
from astrocal.field.synthetic import smooth_field
from astrocal.model.data import DataError, Points
from astrocal.model.joint import JointModel
from astrocal.model.priors import Priors, gauge_patterns

# a modest prior on the linear terms keeps the dense brute force well conditioned
PRIORS = Priors(linear_sigma=2.0, distortion_px=5.0)


def small_problem(seed=0, n_holes=12, n_exp=3, degree=2, hole_errors=True, noise_px=0.02, hole_xy=None):
    """A small lab problem; ``hole_xy`` (arcsec) replaces the default jittered grid of holes."""
    rng = np.random.default_rng(seed)
    shape = (256, 256)
    field = smooth_field(shape=shape, pixel_scale_mas=5.47, corner_px=1.0, degree=max(degree, 2), rng=seed)
    # holes on a jittered grid inside the field, a few dithered exposures
    g = np.linspace(-0.45, 0.45, 4) * 256 * 0.00547
    hx, hy = np.meshgrid(g, g[:3])
    jittered = np.column_stack([hx.ravel(), hy.ravel()])[:n_holes] + rng.normal(0, 0.01, (n_holes, 2))
    if hole_xy is None:
        hole_xy = jittered
    n_holes = len(hole_xy)
    offsets = np.vstack([[0, 0], rng.normal(0, 0.05, (n_exp - 1, 2))])
    from astrocal.field.inverse import solve

    xs, ys, es, hs = [], [], [], []
    for e in range(n_exp):
        f = hole_xy + offsets[e]
        x, y = solve(field, f[:, 0], f[:, 1])
        xs.append(x + 128 * 0)
        ys.append(y)
        es.append(np.full(n_holes, e))
        hs.append(np.arange(n_holes))
    x, y = np.concatenate(xs), np.concatenate(ys)
    n = x.size
    cov = np.zeros((n, 2, 2))
    s = noise_px * rng.uniform(0.5, 1.5, n)
    cov[:, 0, 0] = s**2 * rng.uniform(0.8, 1.2, n)
    cov[:, 1, 1] = s**2 * rng.uniform(0.8, 1.2, n)
    cov[:, 0, 1] = cov[:, 1, 0] = 0.2 * s**2
    x = x + rng.normal(0, noise_px, n)
    y = y + rng.normal(0, noise_px, n)
    pts = Points(x, y, cov, np.concatenate(es), np.concatenate(hs), offsets,
                    np.full(n_exp, 0.002), np.zeros(n_exp, int), np.arange(n_holes) + 100,
                    hole_xy, field.domain, 0.00547, 3.319)
    return pts, field


def brute_force(model, phi, gauges=None):
    """Dense Gaussian marginal likelihood and posterior of the same model. ``gauges``
    (2H, k): the hole-error patterns held at zero (default: the six affine patterns,
    :func:`gauge_patterns`)."""
    pts = model.points
    nt, G, H = model.nt, model.G, model.H
    n = pts.n_points
    jit, kappa, hsig = model.noise_scales(np.atleast_2d(phi))
    B = design_matrix(pts.x, pts.y, model.degree, pts.domain)
    nd = G + (2 * H if model.hole_errors else 0)
    A = np.zeros((2 * n, nd))
    A[0::2, :nt] = B
    A[1::2, nt:2 * nt] = B
    A[0::2, 2 * nt:model.p0] = model.E[:, 0, :]
    A[1::2, 2 * nt:model.p0] = model.E[:, 1, :]
    for i in range(n):
        slot = model.pose_slot[pts.exposure[i]]
        if slot >= 0:
            s = model.p0 + 4 * slot
            A[2 * i:2 * i + 2, s:s + 4] = model.Q[i]
        if model.hole_errors:
            h = pts.hole[i]
            A[2 * i, G + 2 * h] = -1.0
            A[2 * i + 1, G + 2 * h + 1] = -1.0
    y = model.y.ravel()
    cov = np.zeros((2 * n, 2 * n))
    ci = kappa[0] ** 2 * model.U @ (model.lam[:, :, None] * np.swapaxes(model.U, 1, 2))
    for i in range(n):
        cov[2 * i:2 * i + 2, 2 * i:2 * i + 2] = ci[i] + np.eye(2) * jit[0, pts.dataset[i]] ** 2
    # the gauge-fixed hole errors as delta = Vperp beta, beta ~ N(0, sigma^2 I): an
    # independent parametrisation of the constrained prior (the model conditions instead)
    if model.hole_errors:
        v = gauge_patterns(pts.hole_xy) if gauges is None else gauges
        q, _ = np.linalg.qr(np.hstack([v, np.eye(2 * H)]))
        vperp = q[:, v.shape[1]:]
        A = np.hstack([A[:, :G], A[:, G:] @ vperp])
        prior_sd = np.concatenate([model.prior_sd(phi), np.full(vperp.shape[1], hsig[0])])
    else:
        prior_sd = model.prior_sd(phi)
    prior_mean = np.concatenate([model.g0, np.zeros(A.shape[1] - G)])
    # information form: P = A^T C^-1 A + L^-1, h = A^T C^-1 y + L^-1 m0
    cinv = np.linalg.inv(cov)
    lam_inv = np.diag(1.0 / prior_sd**2)
    P = A.T @ cinv @ A + lam_inv
    h = A.T @ cinv @ y + lam_inv @ prior_mean
    post_cov = np.linalg.inv(P)
    post_mean = post_cov @ h
    ll = -0.5 * (2 * n * np.log(2 * np.pi) + np.linalg.slogdet(cov)[1] + 2 * np.sum(np.log(prior_sd))
                 + np.linalg.slogdet(P)[1] + y @ cinv @ y + prior_mean @ lam_inv @ prior_mean
                 - h @ post_mean)
    if model.hole_errors:
        # back to delta: mean and covariance of the hole errors
        t = np.zeros((G + 2 * H, A.shape[1]))
        t[:G, :G] = np.eye(G)
        t[G:, G:] = vperp
        post_mean = t @ post_mean
        post_cov = t @ post_cov @ t.T
    return ll, post_mean, post_cov


def assert_likelihood_exact(model, brute, seed, n_phi):
    """The batched likelihood at ``n_phi`` random hyperparameter vectors inside the bounds
    equals the dense ``brute(model, phi)`` one by one. The sums involve terms of order 1e9
    (y^T C^-1 y), so agreement is to ~1e-6 absolute."""
    rng = np.random.default_rng(seed)
    lo, hi = model.bounds()
    phis = lo + (hi - lo) * rng.uniform(0.2, 0.8, (n_phi, model.ndim))
    batch = model.log_likelihood(phis)
    for k, phi in enumerate(phis):
        ll, _, _ = brute(model, phi)
        assert batch[k] == pytest.approx(ll, abs=1e-5)


@pytest.mark.parametrize("hole_errors", [True, False])
@pytest.mark.parametrize("seed", [0, 1])
def test_marginal_likelihood_is_exact(hole_errors, seed):
    # large noise keeps the dense brute force's sums of order 1e6, so rounding stays small
    pts, field = small_problem(seed, noise_px=0.5)
    model = JointModel(pts, 2, hole_errors=hole_errors, jacobian_field=field, priors=PRIORS)
    assert_likelihood_exact(model, brute_force, seed, 4)


@pytest.mark.parametrize("field_prior,degree", [("fixed", 3), ("decay", 3), ("per_degree", 3),
                                                ("curved", 5)])
def test_marginal_likelihood_is_exact_for_each_field_prior(field_prior, degree):
    # degree 3: two non-linear degrees, so the decay law and the per-degree widths differ;
    # degree 5: the first with every hyperparameter of the curved law
    pts, field = small_problem(5, n_holes=12, n_exp=4, degree=degree, noise_px=0.5)
    priors = Priors(linear_sigma=2.0, distortion_px=5.0, field_prior=field_prior)
    model = JointModel(pts, degree, hole_errors=True, jacobian_field=field, priors=priors)
    n_field = {"fixed": 0, "decay": 2, "per_degree": 2, "curved": 4}[field_prior]
    assert model.i_field.size == n_field
    assert_likelihood_exact(model, brute_force, 7, 3)


def test_field_widths_follow_the_hyperparameters():
    pts, field = small_problem(5, n_holes=12, n_exp=4, degree=3, noise_px=0.5)
    m = JointModel(pts, 3, jacobian_field=field, priors=Priors(field_prior="per_degree"))
    assert [m.hyper_names[i] for i in m.i_field] == ["log_field_sigma[2]", "log_field_sigma[3]"]
    phi = m.initial_guess()
    phi[m.i_field] = np.log([1e-3, 1e-4])
    sd = m.prior_sd(phi)
    deg = m.field_col_degree
    assert np.allclose(sd[m.field_cols], np.where(deg == 2, 1e-3, 1e-4))
    # the broad yardstick for "measured or not" is the fixed width
    assert np.allclose(m.prior_sd(phi, broad_field=True)[m.field_cols], 20.0 * pts.pixel_scale)
    d = JointModel(pts, 3, jacobian_field=field, priors=Priors(field_prior="decay"))
    assert [d.hyper_names[i] for i in d.i_field] == ["log_field_sigma", "log_field_decay"]
    phi = d.initial_guess()
    phi[d.i_field] = [np.log(2e-3), np.log(0.5)]
    assert np.allclose(d.prior_sd(phi)[d.field_cols], 2e-3 * 0.5 ** (d.field_col_degree - 2))
    # the decay ratio is not a scale: no uniform-in-scale Jacobian on it
    assert d.i_field[1] not in d.i_scale and d.i_field[0] in d.i_scale
    with pytest.raises(ValueError, match="field_prior"):
        JointModel(pts, 3, priors=Priors(field_prior="wide"))


def test_curved_field_widths_nest_the_geometric_law():
    pts, field = small_problem(6, n_holes=12, n_exp=4, degree=5, noise_px=0.5)
    names = ["log_field_sigma[2]", "log_field_sigma[3]", "log_field_decay", "field_curvature"]
    # degree 2 its own width; the law from degree 3 gains its ratio at 4, its curvature at 5
    for n in (2, 3, 4, 5, 6):
        m = JointModel(pts, n, jacobian_field=field, priors=Priors(field_prior="curved"))
        assert [m.hyper_names[i] for i in m.i_field] == names[:n - 1]
    assert m.i_field[2] not in m.i_scale and m.i_field[3] not in m.i_scale  # not scales
    assert m.i_field[0] in m.i_scale and m.i_field[1] in m.i_scale
    lo, hi = m.bounds()
    assert (lo[m.i_field[3]], hi[m.i_field[3]]) == (-0.5, 0.5)
    assert lo[m.i_field[0]] == lo[m.i_field[1]] and hi[m.i_field[0]] == hi[m.i_field[1]]
    phi = m.initial_guess()
    k = m.field_col_degree
    phi[m.i_field] = [np.log(5e-3), np.log(2e-3), np.log(0.5), 0.0]
    assert np.allclose(m.prior_sd(phi)[m.field_cols], np.where(k == 2, 5e-3, 2e-3 * 0.5 ** (k - 3)))
    phi[m.i_field[3]] = 0.3  # the ratio between successive degrees grows by e^0.3 per degree
    sd = m.prior_sd(phi)[m.field_cols]
    d = k - 3
    assert np.allclose(sd, np.where(k == 2, 5e-3, 2e-3 * 0.5**d * np.exp(0.15 * d * (d - 1))))
    ratio = [sd[k == j][0] / sd[k == j - 1][0] for j in range(4, 7)]
    assert np.allclose(np.diff(np.log(ratio)), 0.3)


def test_field_width_guess_inverts_the_law():
    # the starting widths: the law fitted to the rms per degree of a broad fit
    from astrocal.model.priors import fit_width_law as _law_guess, width_law as _law

    truth = np.array([[np.log(2e-3), np.log(0.4), 0.2]])
    for m in (1, 2, 3):
        d = np.arange(m + 2)
        log_rms = _law(truth[:, :m], d)[0]
        assert np.allclose(_law_guess(log_rms, m), truth[0, :m])
    # fewer degrees than hyperparameters: a ratio of 1/2, no curvature
    assert np.allclose(_law_guess(np.log([3e-3]), 3), [np.log(3e-3), np.log(0.5), 0.0])
    # on a model: sigma_2 is the rms of the degree-2 coefficients of the broad fit, and the
    # law through degrees 3..5 is the fit to their rms
    pts, field = small_problem(6, n_holes=12, n_exp=4, degree=5, noise_px=0.05)
    m = JointModel(pts, 5, jacobian_field=field, priors=Priors(field_prior="curved"))
    lo, hi = m.bounds()
    phi = np.clip(m.initial_guess(), lo + 1e-6, hi - 1e-6)
    guess = m._field_width_guess(phi)
    broad = phi.copy()
    broad[m.i_field] = [np.log(20.0 * pts.pixel_scale)] * 2 + [0.0, 0.0]
    c = m.conditional(broad).mean[m.field_cols]
    k = m.field_col_degree
    log_rms = np.log([np.sqrt(np.mean(c[k == j] ** 2)) for j in (2, 3, 4, 5)])
    assert np.all(np.isfinite(guess)) and guess.size == 4
    assert guess[0] == pytest.approx(log_rms[0], abs=1e-6)
    assert np.allclose(guess[1:], _law_guess(log_rms[1:], 3), atol=1e-6)


@pytest.mark.parametrize("hole_errors", [True, False])
def test_conditional_posterior_is_exact(hole_errors):
    pts, field = small_problem(3)
    model = JointModel(pts, 2, hole_errors=hole_errors, jacobian_field=field, priors=PRIORS)
    phi = model.initial_guess()
    cond = model.conditional(phi)
    _, mean, cov = brute_force(model, phi)
    G = model.G
    sd = np.sqrt(np.diag(cov[:G, :G]))
    assert np.allclose(cond.mean, mean[:G], atol=1e-6 * sd.max(), rtol=0) or \
        np.max(np.abs(cond.mean - mean[:G]) / sd) < 1e-6
    assert np.allclose(np.sqrt(np.diag(cond.cov)), sd, rtol=1e-6)
    if hole_errors:
        hole_sd = np.sqrt(np.diag(cov[G:, G:])).reshape(-1, 2)
        assert np.max(np.abs(cond.hole_mean - mean[G:].reshape(-1, 2)) / hole_sd) < 1e-6


def test_exact_draws_have_the_conditional_moments():
    pts, field = small_problem(4)
    model = JointModel(pts, 2, hole_errors=True, jacobian_field=field, priors=PRIORS)
    phi = model.initial_guess()
    _, mean, cov = brute_force(model, phi)
    rng = np.random.default_rng(0)
    g, d = model.sample_linear(np.repeat(phi[None], 4000, axis=0), rng)
    G = model.G
    z = (g.mean(0) - mean[:G]) / np.sqrt(np.diag(cov[:G, :G]) / 4000)
    assert np.max(np.abs(z)) < 4.5
    ratio = g.std(0) / np.sqrt(np.diag(cov[:G, :G]))
    assert np.all(np.abs(ratio - 1) < 0.08)
    hsd = np.sqrt(np.diag(cov[G:, G:]))
    assert np.all(np.abs(d.reshape(4000, -1).std(0) / hsd - 1) < 0.08)
    # the gauge: drawn hole errors carry no affine pattern
    v = gauge_patterns(model.points.hole_xy)
    assert np.max(np.abs(d.reshape(4000, -1) @ v)) < 1e-12


def test_bad_input():
    pts, field = small_problem(5)
    with pytest.raises(DataError, match="cannot constrain a degree-9 field"):
        JointModel(pts, 9)
    bad = pts.cov.copy()
    bad[3, 0, 0] = 0.0
    with pytest.raises(DataError, match="zero, negative or NaN uncertainties"):
        Points(pts.x, pts.y, bad, pts.exposure, pts.hole, pts.offsets, pts.offset_sigma,
                  pts.exposure_dataset, pts.hole_ids, pts.hole_xy, pts.domain, 0.00547, 3.319)
    x = pts.x.copy()
    x[0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        Points(x, pts.y, pts.cov, pts.exposure, pts.hole, pts.offsets, pts.offset_sigma,
                  pts.exposure_dataset, pts.hole_ids, pts.hole_xy, pts.domain, 0.00547, 3.319)
    # an exposure whose points are all gone
    keep = pts.exposure != 2
    with pytest.raises(DataError, match="exp2 have no identified points"):
        JointModel(pts.subset(keep), 2)


def test_reject_flags_match_the_measure_stage():
    from astrocal.lab.measure import FLAGS_REJECT
    from astrocal.model.data import DEFAULT_REJECT_FLAGS

    assert DEFAULT_REJECT_FLAGS == FLAGS_REJECT


def test_several_draws_per_phi_have_the_conditional_moments():
    pts, field = small_problem(6)
    model = JointModel(pts, 2, hole_errors=True, jacobian_field=field, priors=PRIORS)
    phi = model.initial_guess()
    _, mean, cov = brute_force(model, phi)
    rng = np.random.default_rng(1)
    g, d = model.sample_linear(np.repeat(phi[None], 40, axis=0), rng, per_phi=100)
    assert g.shape == (4000, model.G) and d.shape == (4000, model.H, 2)
    G = model.G
    ratio = g.std(0) / np.sqrt(np.diag(cov[:G, :G]))
    assert np.all(np.abs(ratio - 1) < 0.08)
    z = (g.mean(0) - mean[:G]) / np.sqrt(np.diag(cov[:G, :G]) / 4000)
    assert np.max(np.abs(z)) < 4.5
    v = gauge_patterns(model.points.hole_xy)
    assert np.max(np.abs(d.reshape(4000, -1) @ v)) < 1e-12


def test_a_failing_row_does_not_reject_the_batch(monkeypatch):
    """A row whose Cholesky fails gets -inf; the other rows of the batch keep their value."""
    pts, field = small_problem(3)
    model = JointModel(pts, 2, jacobian_field=field, priors=PRIORS)
    phi = np.vstack([model.initial_guess()] * 3)
    phi[1, 0] += 0.5
    good = model.log_likelihood(phi)
    real = np.linalg.cholesky

    def cholesky(a):
        if a.ndim == 3 and a.shape[0] > 1:
            raise np.linalg.LinAlgError("one row is not positive definite")
        if np.isclose(a[0, 0, 0], bad):
            raise np.linalg.LinAlgError("not positive definite")
        return real(a)

    from astrocal.model import expansion

    real_potrf = expansion.dpotrf

    def dpotrf(a, **kw):  # the components' path factors walker by walker
        if np.isclose(a[0, 0], bad):
            return a, 1
        return real_potrf(a, **kw)

    bad = model.system(phi[1:2])["S"][0, 0, 0]
    monkeypatch.setattr(np.linalg, "cholesky", cholesky)
    monkeypatch.setattr(expansion, "dpotrf", dpotrf)
    got = model.log_likelihood(phi)
    assert np.isneginf(got[1]) and got[0] == pytest.approx(good[0]) and got[2] == pytest.approx(good[2])


@pytest.mark.parametrize("field_prior,scale_prior", [("curved", "uniform"), ("per_degree", "uniform"),
                                                     ("decay", "log-uniform")])
def test_hyperparameter_prior_is_normalised(field_prior, scale_prior):
    # evidences of degrees with different hyperparameter sets compare only if every factor
    # of the prior integrates to one over its bounds: the prior is a product, so
    # prod_i (integral along axis i through phi0) / p(phi0)**(d - 1) = prod_i integral_i
    pts, field = small_problem(6, n_holes=12, n_exp=4, degree=5, noise_px=0.5)
    m = JointModel(pts, 5, jacobian_field=field, priors=Priors(field_prior=field_prior, scale_prior=scale_prior))
    lo, hi = m.bounds()
    phi0 = 0.5 * (lo + hi)
    lp0 = m.log_prior(phi0)[0]
    total = 0.0
    for i in range(m.ndim):
        x = np.linspace(lo[i], hi[i], 40001)
        rows = np.repeat(phi0[None], x.size, axis=0)
        rows[:, i] = x
        total += np.log(np.trapezoid(np.exp(m.log_prior(rows) - lp0), x)) + lp0
    total -= (m.ndim - 1) * lp0
    assert total == pytest.approx(0.0, abs=1e-4)  # kappa's normal is cut at 5 sigma


def test_likelihood_is_exact_at_tiny_learnt_field_widths():
    # a walker may give the top degrees widths of 1e-13 arcsec: the likelihood is computed
    # about a reference solution, whose field terms with learnt widths must then sit at the
    # prior mean (a prior mean of -g_ref at such a width put ~1e20 terms into the sums)
    pts, field = small_problem(6, n_holes=12, n_exp=4, degree=5, noise_px=0.5)
    m = JointModel(pts, 6, jacobian_field=field, priors=Priors(linear_sigma=2.0, field_prior="curved"))
    lo, hi = m.bounds()
    phi = m.initial_guess()
    phi[m.i_field] = lo[m.i_field]  # sigma_2 = sigma_3 = 1e-5 px, r = 0.02, q = -0.5
    assert m.field_sigma(phi).min() < 1e-12
    ll, _, _ = brute_force(m, phi)
    assert m.log_likelihood(phi)[0] == pytest.approx(ll, rel=1e-10, abs=1e-5)
    assert m.log_likelihood(phi, direct=True)[0] == pytest.approx(ll, rel=1e-10, abs=1e-5)
