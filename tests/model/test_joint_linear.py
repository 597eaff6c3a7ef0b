"""The collapsed joint model (lab + sky: star blocks, flexure, sky poses) against brute force."""
import os
import sys

import numpy as np
import pytest

from astrocal.field import design_matrix
from astrocal.field.inverse import solve
from astrocal.model.data import Points, join_points
from astrocal.model.flexure import FlexureBasis
from astrocal.model.identifiability import inseparable_directions
from astrocal.model.joint import JointModel
from astrocal.model.priors import Priors

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_linear import assert_likelihood_exact, small_problem  # noqa: E402

PRIORS = Priors(linear_sigma=2.0, distortion_px=5.0, sky_pose_scale_sigma=1e-2, sky_pose_rot_sigma=1e-2)
FLEX = FlexureBasis(degree=2, functions=("1", "cos_z"), radius_arcsec=0.7)


def rot(deg):
    r = np.radians(deg)
    return np.array([[np.cos(r), -np.sin(r)], [np.sin(r), np.cos(r)]])


def sky_part(field, seed=0, n_stars=14, zeniths=(15.0, 40.0, 60.0), rotators=(10.0, 75.0, 140.0),
             noise_px=0.02, flex=None, cat_mas=0.3):
    """Sky points of a few exposures of ``n_stars`` stars, observed through ``field``."""
    rng = np.random.default_rng(100 + seed)
    xy = rng.uniform(-0.6, 0.6, (n_stars, 2))
    cat_cov = np.zeros((n_stars, 2, 2))
    s = cat_mas * 1e-3 * rng.uniform(0.5, 1.5, n_stars)
    cat_cov[:, 0, 0], cat_cov[:, 1, 1] = s**2, (0.8 * s) ** 2
    cat_cov[:, 0, 1] = cat_cov[:, 1, 0] = 0.3 * s * 0.8 * s
    d_true = np.array([rng.multivariate_normal([0, 0], c) for c in cat_cov])
    coeffs = None
    if flex is not None:
        coeffs = rng.normal(0, 2e-3, flex.n_params)
    xs, ys, es, ss, refs, uvs, jacs = [], [], [], [], [], [], []
    for e, (z, r) in enumerate(zip(zeniths, rotators)):
        # instrument frame = M(r) (u, v) with parity +1; J: standard coords -> instrument
        M = np.array([[np.cos(np.radians(r)), np.sin(np.radians(r))],
                      [-np.sin(np.radians(r)), np.cos(np.radians(r))]])
        J = rot(3.0 * e) @ np.diag([-1.0, 1.0])  # a mirrored, slightly rotated sky
        uv = xy @ M  # (u, v) with M (u, v) = (x, y): rows x = M uv -> uv = M^T x
        true = xy + d_true @ J.T
        if flex is not None:
            true = true + flex.displacement(coeffs, uv[:, 0], uv[:, 1], z, r, 1)
        pose = np.array([1e-3 * rng.normal(), 1e-3 * rng.normal(), *rng.normal(0, 0.01, 2)])
        # the pose acts on the nominal positions (the model's linearisation: its action on
        # the few-mas flexure and catalogue errors is below a microarcsecond)
        f = true + pose[0] * xy + pose[1] * np.column_stack([-xy[:, 1], xy[:, 0]]) + pose[2:]
        px, py = solve(field, f[:, 0], f[:, 1])
        xs.append(px + rng.normal(0, noise_px, n_stars))
        ys.append(py + rng.normal(0, noise_px, n_stars))
        es.append(np.full(n_stars, e))
        ss.append(np.arange(n_stars))
        refs.append(xy)
        uvs.append(uv)
        jacs.append(np.broadcast_to(J, (n_stars, 2, 2)))
    n = n_stars * len(zeniths)
    cov = np.zeros((n, 2, 2))
    cov[:, 0, 0] = cov[:, 1, 1] = noise_px**2
    ne = len(zeniths)
    return Points(
        np.concatenate(xs), np.concatenate(ys), cov, np.concatenate(es), np.concatenate(ss),
        np.zeros((ne, 2)), np.full(ne, 0.05), np.zeros(ne, int),
        np.array([f"S{k}" for k in range(n_stars)], dtype=object), np.zeros((n_stars, 2)),
        field.domain, 0.00547, np.nan, ("sky",), tuple(f"sky{k}" for k in range(ne)),
        ref_xy=np.concatenate(refs), uv=np.concatenate(uvs), source_jacobian=np.concatenate(jacs),
        source_kind=np.ones(n_stars, int), source_cov=cat_cov, exposure_kind=np.ones(ne, int),
        exposure_zenith_deg=np.array(zeniths, float), exposure_rotator_deg=np.array(rotators, float),
        exposure_parity=np.ones(ne), dataset_kinds=("sky",)), coeffs


def joint_problem(seed=0, lab=True, **kw):
    pts, field = small_problem(seed, noise_px=kw.pop("lab_noise_px", 0.02))
    sky, coeffs = sky_part(field, seed, flex=FLEX, **kw)
    return (join_points(pts, sky) if lab else sky), field, coeffs


def brute_force(model, phi):
    """Dense Gaussian marginal likelihood and posterior (globals, then source blocks)."""
    pts = model.points
    nt, G, H = model.nt, model.G, model.H
    n = pts.n_points
    jit, kappa, hsig = model.noise_scales(np.atleast_2d(phi))
    B = design_matrix(pts.x, pts.y, model.degree, pts.domain)
    A = np.zeros((2 * n, G + 2 * H))
    A[0::2, :nt] = B
    A[1::2, nt:2 * nt] = B
    A[0::2, 2 * nt:model.p0] = model.E[:, 0, :]
    A[1::2, 2 * nt:model.p0] = model.E[:, 1, :]
    for i in range(n):
        slot = model.pose_slot[pts.exposure[i]]
        if slot >= 0:
            s = model.p0 + 4 * slot
            A[2 * i:2 * i + 2, s:s + 4] = model.Q[i]
        b = model.source_block[pts.hole[i]]
        if b >= 0:
            A[2 * i:2 * i + 2, G + 2 * b:G + 2 * b + 2] = model.Lp[i]
    y = model.y.ravel()
    cov = np.zeros((2 * n, 2 * n))
    ci = kappa[0] ** 2 * model.U @ (model.lam[:, :, None] * np.swapaxes(model.U, 1, 2))
    for i in range(n):
        cov[2 * i:2 * i + 2, 2 * i:2 * i + 2] = ci[i] + np.eye(2) * jit[0, pts.dataset[i]] ** 2
    # prior covariance of (g, blocks); hole errors in the gauge-free subspace
    sd = model.prior_sd(phi)
    prior_cov = np.zeros((G + 2 * H, G + 2 * H))
    prior_cov[:G, :G] = np.diag(sd**2)
    for b in range(H):
        sl = slice(G + 2 * b, G + 2 * b + 2)
        if model.block_kind[b] == 1:
            prior_cov[sl, sl] = pts.source_cov[model.block_sources[b]]
        else:
            prior_cov[sl, sl] = np.eye(2) * hsig[0] ** 2
    T = np.eye(G + 2 * H)
    if model.V is not None:
        v = model.V.reshape(2 * H, 6)
        hole_rows = np.zeros(2 * H, bool)
        hole_rows[np.ravel([[2 * b, 2 * b + 1] for b in model.hole_blocks])] = True
        vh = v[hole_rows]
        q, _ = np.linalg.qr(np.hstack([vh, np.eye(vh.shape[0])]))
        vperp = q[:, 6:]
        # parameters: g, beta (hole errors = vperp beta), star errors
        cols = [np.eye(G + 2 * H)[:, :G]]
        emb = np.zeros((G + 2 * H, vperp.shape[1]))
        emb[G + np.flatnonzero(hole_rows)] = vperp
        cols.append(emb)
        star_idx = G + np.flatnonzero(~hole_rows)
        cols.append(np.eye(G + 2 * H)[:, star_idx])
        T = np.hstack(cols)
        pc = np.zeros((T.shape[1], T.shape[1]))
        pc[:G, :G] = prior_cov[:G, :G]
        k = G + vperp.shape[1]
        pc[G:k, G:k] = np.eye(vperp.shape[1]) * hsig[0] ** 2
        pc[k:, k:] = prior_cov[np.ix_(star_idx, star_idx)]
        prior_cov = pc
    A = A @ T
    # whitened on both sides (data by C^-1/2, parameters by the prior's Cholesky factor), so
    # the dense algebra stays well conditioned: the stars' priors are tight, the field's broad
    lp = np.linalg.cholesky(prior_cov)
    lc = np.linalg.cholesky(cov)
    Aw = np.linalg.solve(lc, A @ lp)
    yw = np.linalg.solve(lc, y)
    P = Aw.T @ Aw + np.eye(Aw.shape[1])
    h = Aw.T @ yw
    zmean = np.linalg.solve(P, h)
    post_mean = lp @ zmean
    post_cov = lp @ np.linalg.inv(P) @ lp.T
    ll = -0.5 * (2 * n * np.log(2 * np.pi) + 2 * np.sum(np.log(np.diag(lc))) + np.linalg.slogdet(P)[1]
                 + yw @ yw - h @ zmean)
    return ll, T @ post_mean, T @ post_cov @ T.T


@pytest.mark.parametrize("lab", [True, False])
@pytest.mark.parametrize("hole_errors", [True, False])
def test_joint_marginal_likelihood_is_exact(lab, hole_errors):
    pts, field, _ = joint_problem(0, lab=lab, noise_px=0.3, lab_noise_px=0.3)
    model = JointModel(pts, 2, hole_errors=hole_errors, jacobian_field=field, priors=PRIORS, flexure=FLEX)
    assert model.has_sky and model.n_flex == FLEX.n_params
    assert (model.reference is None) == (not lab)
    assert_likelihood_exact(model, brute_force, 1, 3)


@pytest.mark.parametrize("hole_errors", [True, False])
def test_joint_conditional_is_exact(hole_errors):
    pts, field, _ = joint_problem(2)
    model = JointModel(pts, 2, hole_errors=hole_errors, jacobian_field=field, priors=PRIORS, flexure=FLEX)
    phi = model.initial_guess()
    cond = model.conditional(phi)
    _, mean, cov = brute_force(model, phi)
    G = model.G
    sd = np.sqrt(np.diag(cov[:G, :G]))
    assert np.max(np.abs(cond.mean - mean[:G]) / sd) < 1e-6
    assert np.allclose(np.sqrt(np.diag(cond.cov)), sd, rtol=1e-6)
    bsd = np.sqrt(np.diag(cov[G:, G:])).reshape(-1, 2)
    assert np.max(np.abs(cond.hole_mean - mean[G:].reshape(-1, 2)) / bsd) < 1e-6
    # exact draws: moments of the globals and of the star blocks
    rng = np.random.default_rng(3)
    g, d = model.sample_linear(np.repeat(phi[None], 40, axis=0), rng, per_phi=100)
    assert np.all(np.abs(g.std(0) / sd - 1) < 0.08)
    assert np.max(np.abs(g.mean(0) - mean[:G]) / (sd / np.sqrt(4000))) < 4.5
    stars = model.star_blocks
    dsd = bsd[stars]
    assert np.all(np.abs(d[:, stars].std(0) / dsd - 1) < 0.08)
    c2 = cond.sample(rng, 2000)[1]
    assert np.all(np.abs(c2[:, stars].std(0) / dsd - 1) < 0.1)


def test_residuals_vanish_at_the_truth_without_noise():
    """The observation equation of sky points: the model reproduces noiseless data."""
    pts, field = small_problem(0, noise_px=1e-9)
    sky, coeffs = sky_part(field, 0, flex=FLEX, noise_px=1e-9, cat_mas=1e-6)
    joint = join_points(pts, sky)
    model = JointModel(joint, 2, hole_errors=False, jacobian_field=field, priors=PRIORS, flexure=FLEX)
    phi = model.initial_guess()
    phi[: joint.n_datasets] = np.log(1e-9)
    cond = model.conditional(phi)
    r = model.residuals(cond.mean, cond.hole_mean, model.points)
    assert np.max(np.abs(r)) < 1e-8  # arcsec
    got = cond.mean[model.flex_cols]
    assert np.max(np.abs(got - coeffs)) < 1e-7


def test_sky_only_reports_what_it_cannot_separate_and_joint_does_not():
    # a cubic flexure field holds a rotation-invariant (radial) part, which no derotator
    # angle separates from the instrument's own cubic terms; the field's constant, scale and
    # rotation trade with the sky poses
    flex3 = FlexureBasis(degree=3, functions=("1",), radius_arcsec=0.7)
    pts, field = small_problem(4)
    sky = sky_part(field, 4, flex=flex3, n_stars=30, zeniths=(15.0, 35.0, 50.0, 65.0),
                   rotators=(10.0, 60.0, 120.0, 170.0))[0]
    m_sky = JointModel(sky, 3, hole_errors=False, jacobian_field=field, priors=PRIORS, flexure=flex3)
    found = inseparable_directions(m_sky, m_sky.initial_guess())
    null = {name for d, names in found if "no information" in d for name in names}
    assert any(name.startswith("pose_tx") for name in null)
    assert any(name.startswith("pose_ty") for name in null)
    # the field's scale and rotation trade with the sky poses' up to the distortion itself
    # (the poses scale the star positions, the field the pixel coordinates): reported with
    # their small share of information (~0.004 of the prior's)
    weak = [(d, names) for d, names in found if "no information" not in d]
    loose = {name for _, names in weak for name in names}
    assert any(name.startswith("pose_scale") for name in loose)
    assert any(name.startswith("pose_rot") for name in loose)
    # the spin-0 cubic flexure terms (radial |z|^2 z and curl |z|^2 iz) mimic the field's
    # cubic terms up to the distortion itself: reported with their small share of information
    flex_dirs = [names for d, names in weak if any(n.startswith("flex[") for n in names)]
    assert len(flex_dirs) == 2
    for names in flex_dirs:
        assert any(n.startswith("flex[1]") for n in names)
        assert any(n.startswith("cu[") or n.startswith("cv[") for n in names)
    m_joint = JointModel(join_points(pts, sky), 3, hole_errors=True, jacobian_field=field, priors=PRIORS,
                       flexure=flex3)
    found = inseparable_directions(m_joint, m_joint.initial_guess())
    assert not [desc for desc, _ in found if "no information" in desc]


def test_flexure_basis_rotates_with_the_rotator():
    b = FlexureBasis(degree=2, functions=("1",), radius_arcsec=1.0)
    c = np.zeros(b.n_params)
    c[b.field_terms.index("u:u2v0")] = 1.0  # D = (u**2, 0) in the telescope frame
    u, v = np.array([0.5]), np.array([0.2])
    for r in (0.0, 30.0, 90.0):
        got = b.displacement(c, u, v, 20.0, r, 1)[0]
        rr = np.radians(r)
        want = np.array([np.cos(rr) * 0.25, -np.sin(rr) * 0.25])
        assert np.allclose(got, want)
    # parity mirrors x
    assert np.allclose(b.displacement(c, u, v, 20.0, 0.0, -1)[0], [-0.25, 0.0])
    # zenith functions scale the terms
    b2 = FlexureBasis(degree=2, functions=("sin_z",), radius_arcsec=1.0)
    assert np.allclose(b2.displacement(c, u, v, 30.0, 0.0, 1)[0], [0.125, 0.0])
    with pytest.raises(ValueError, match="unknown flexure function"):
        FlexureBasis(functions=("cos_2z",))
    with pytest.raises(ValueError, match="degree"):
        FlexureBasis(degree=0)


def test_pooled_posterior_matches_the_serial_one():
    from astrocal.model.sampling import PooledPosterior

    pts, field, _ = joint_problem(5)
    model = JointModel(pts, 2, hole_errors=True, jacobian_field=field, priors=PRIORS, flexure=FLEX)
    lo, hi = model.bounds()
    phis = lo + (hi - lo) * np.random.default_rng(0).uniform(0.2, 0.8, (7, model.ndim))
    pooled = PooledPosterior(model, 2)
    try:
        got = pooled(phis)
    finally:
        pooled.close()
    assert np.allclose(got, model.log_posterior(phis), rtol=1e-12, atol=1e-9)
