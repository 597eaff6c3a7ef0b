"""The likelihood from the weights' fixed components (astrocal.model.expansion) against the
direct per-point evaluation and the dense brute force."""
import os
import pickle
import sys

import numpy as np
import pytest

from astrocal.model import expansion
from astrocal.model.expansion import build_expansion, chebyshev_basis, interpolation_nodes
from astrocal.model.joint import JointModel
from astrocal.model.priors import Priors

sys.path.insert(0, os.path.dirname(__file__))
from test_joint_linear import FLEX, joint_problem  # noqa: E402
from test_linear import brute_force, small_problem  # noqa: E402


def test_chebyshev_basis_reproduces_polynomials_and_is_exact_at_the_nodes():
    rng = np.random.default_rng(0)
    u = np.r_[rng.uniform(-3.0, 2.0, 50), -3.0, 2.0]
    nodes, basis = chebyshev_basis(u, -3.0, 2.0, 9)
    assert nodes.min() == pytest.approx(-3.0) and nodes.max() == pytest.approx(2.0)
    poly = np.polynomial.Polynomial(rng.normal(size=9))  # degree 8 < 9 nodes: exact
    np.testing.assert_allclose(basis @ poly(nodes), poly(u), rtol=1e-10, atol=1e-10)
    _, at_nodes = chebyshev_basis(nodes, -3.0, 2.0, 9)
    np.testing.assert_array_equal(at_nodes, np.eye(9))
    np.testing.assert_allclose(basis.sum(axis=1), 1.0)


@pytest.mark.parametrize("ratio", [9.0, 36.0, 1e4])
def test_interpolated_weights_meet_the_tolerance_off_the_checked_grid(ratio):
    rng = np.random.default_rng(1)
    lam = 1e-10 * np.exp(rng.uniform(0.0, np.log(ratio), 3000))
    nodes, basis, err = interpolation_nodes(lam, tol=1e-11)
    assert err <= 1e-11
    # fresh values of t (not the grid used to choose the nodes), from 0 to far beyond lam
    t = np.r_[0.0, 1e-10 * np.exp(rng.uniform(-40.0, 40.0, 300))]
    lam_k = np.exp(nodes)
    approx = (np.sqrt(lam_k)[None] / (lam_k[None] + t[:, None])) @ basis.T / np.sqrt(lam)[None]
    exact = 1.0 / (lam[None] + t[:, None])
    assert np.max(np.abs(approx / exact - 1.0)) < 1.1e-11
    # more spread needs more nodes
    assert nodes.size >= {9.0: 8, 36.0: 12, 1e4: 20}[ratio]


def test_the_bound_holds_for_rows_between_the_sampled_values():
    # most rows at the two ends of the range, a few in between: the check on the data's
    # own (sorted, subsampled) values alone would miss the error peaks between nodes
    rng = np.random.default_rng(5)
    lo, hi = np.log(1e-9), np.log(1e-9 * 579.3)
    u = np.r_[np.full(30000, lo), np.full(30000, hi), rng.uniform(lo, hi, 600)]
    nodes, basis, err = interpolation_nodes(np.exp(u))
    t = np.r_[0.0, np.exp(np.linspace(lo - 30, hi + 30, 3001))]
    lam_k, lam = np.exp(nodes), np.exp(u[-600:])
    approx = (np.sqrt(lam_k)[None] / (lam_k[None] + t[:, None])) @ basis[-600:].T / np.sqrt(lam)[None]
    assert np.max(np.abs(approx * (lam[None] + t[:, None]) - 1.0)) < 1.1e-11


def test_equal_variances_need_one_node_and_too_few_nodes_give_none():
    nodes, basis, err = interpolation_nodes(np.full(10, 2e-9))
    assert nodes.size == 1 and err == 0.0 and np.all(basis == 1.0)
    assert interpolation_nodes(np.geomspace(1e-10, 1e-6, 100), max_nodes=6) is None


def realistic_problem(seed, n_exp=6):
    """Small centroid noise spread over a factor ~30 in variance (as the simulator's)."""
    pts, field = small_problem(seed, n_exp=n_exp, degree=3, noise_px=0.01)
    rng = np.random.default_rng(seed)
    s = rng.uniform(0.4, 2.2, pts.n_points)
    pts.cov[:] = pts.cov * (s**2)[:, None, None]
    return pts, field


def near_mode(model, seed, K=6):
    rng = np.random.default_rng(seed)
    lo, hi = model.bounds()
    phi = np.clip(model.initial_guess() + 0.3 * rng.standard_normal((K, model.ndim)), lo, hi)
    return phi


@pytest.mark.parametrize("hole_errors", [True, False])
def test_fast_and_direct_likelihoods_agree_on_lab_data(hole_errors):
    pts, field = realistic_problem(3)
    model = JointModel(pts, 3, hole_errors=hole_errors, jacobian_field=field)
    ex = model.expansion()
    assert ex is not None and ex.error < 1e-11 and ex.J < pts.n_points
    phi = near_mode(model, 4)
    fast, direct = model.log_likelihood(phi), model.log_likelihood(phi, direct=True)
    assert np.all(np.isfinite(fast))
    np.testing.assert_allclose(fast, direct, rtol=1e-11, atol=1e-7)
    # a batch equals its rows one by one
    np.testing.assert_allclose([model.log_likelihood(p)[0] for p in phi], fast, rtol=1e-13, atol=1e-8)


@pytest.mark.parametrize("lab", [True, False])
def test_fast_and_direct_likelihoods_agree_on_sky_data(lab):
    pts, field, _ = joint_problem(0, lab=lab, noise_px=0.02)
    pts.cov[:] = pts.cov * np.random.default_rng(2).uniform(0.3, 3.0, pts.n_points)[:, None, None]
    model = JointModel(pts, 2, hole_errors=True, jacobian_field=field, flexure=FLEX)
    ex = model.expansion()
    assert ex is not None and len(ex.slices) == pts.n_datasets == (2 if lab else 1)
    phi = near_mode(model, 5)
    # sky only, every pose is free within its prior: the system is ill-conditioned and
    # the direct path and the dense brute force differ from each other by ~3e-7 as well
    np.testing.assert_allclose(model.log_likelihood(phi), model.log_likelihood(phi, direct=True),
                               rtol=1e-11, atol=1e-7 if lab else 2e-6)


def test_fast_likelihood_matches_the_dense_brute_force():
    pts, field = small_problem(4, noise_px=0.5)
    model = JointModel(pts, 2, jacobian_field=field, priors=Priors(linear_sigma=2.0, distortion_px=5.0))
    assert model.expansion() is not None
    for phi in near_mode(model, 6, K=3):
        assert model.log_likelihood(phi)[0] == pytest.approx(brute_force(model, phi)[0], abs=1e-6)


def test_the_direct_path_serves_when_the_components_do_not_pay(monkeypatch):
    pts, field = realistic_problem(7)
    model = JointModel(pts, 3, jacobian_field=field)
    assert build_expansion(model, limit_bytes=1.0) is None
    monkeypatch.setattr(expansion, "LIMIT_BYTES", 1.0)
    fresh = JointModel(pts, 3, jacobian_field=field)
    phi = near_mode(fresh, 8, K=3)
    assert fresh.expansion() is None
    np.testing.assert_allclose(fresh.log_likelihood(phi), model.log_likelihood(phi), rtol=1e-11, atol=1e-7)


def test_a_pickled_model_forms_its_components_again():
    pts, field = realistic_problem(9)
    model = JointModel(pts, 3, jacobian_field=field)
    phi = near_mode(model, 10, K=2)
    before = model.log_likelihood(phi)
    assert "_expansion" in model.__dict__
    copy = pickle.loads(pickle.dumps(model))
    assert "_expansion" not in copy.__dict__
    np.testing.assert_array_equal(copy.log_likelihood(phi), before)


def test_a_failing_row_gives_minus_infinity_only_for_itself(monkeypatch):
    pts, field = realistic_problem(11)
    model = JointModel(pts, 3, jacobian_field=field)
    phi = near_mode(model, 12, K=3)
    good = model.log_likelihood(phi)
    real = expansion.log_likelihood

    def fails_on_second_row(m, ex, p):
        if np.any(np.all(p == phi[1], axis=1)):
            raise np.linalg.LinAlgError("not positive definite")
        return real(m, ex, p)

    monkeypatch.setattr(expansion, "log_likelihood", fails_on_second_row)
    out = model.log_likelihood(phi)
    assert out[1] == -np.inf
    np.testing.assert_allclose(out[[0, 2]], good[[0, 2]], rtol=1e-13)


def test_a_hole_without_points_keeps_its_prior_in_both_paths():
    pts, field = realistic_problem(13)
    excluded = pts.hole == pts.hole[0]  # every point of one hole flagged
    model = JointModel(pts, 3, jacobian_field=field, excluded=excluded)
    assert model.H == pts.n_holes and model.hole_of_segment.size == model.H - 1
    assert model.expansion() is not None
    phi = near_mode(model, 14, K=3)
    np.testing.assert_allclose(model.log_likelihood(phi), model.log_likelihood(phi, direct=True),
                               rtol=1e-11, atol=1e-7)


def test_a_block_that_is_not_positive_definite_raises_instead_of_returning_nan():
    pts, field = realistic_problem(15)
    model = JointModel(pts, 3, jacobian_field=field)
    ex = model.expansion()
    phi = near_mode(model, 16, K=2)
    model.block_prior_precision[0] = -1e12 * np.eye(2)
    with pytest.raises(np.linalg.LinAlgError):
        expansion.log_likelihood(model, ex, phi)
    assert np.all(model.log_likelihood(phi) == -np.inf)


@pytest.mark.parametrize("lab", [True, False])
def test_the_conditional_system_agrees_with_the_direct_one(lab):
    # the exact draws and the conditional posterior come from the same components
    pts, field, _ = joint_problem(3, lab=lab, noise_px=0.02)
    pts.cov[:] = pts.cov * np.random.default_rng(4).uniform(0.3, 3.0, pts.n_points)[:, None, None]
    model = JointModel(pts, 2, hole_errors=True, jacobian_field=field, flexure=FLEX)
    assert model.expansion() is not None
    phi = near_mode(model, 17, K=3)
    weak = np.zeros(model.G, bool)
    weak[model.p0:model.p0 + 4] = True
    for w in (None, weak):
        fast, direct = model.system(phi, weak=w), model.system(phi, weak=w, direct=True)
        for key in ("S", "r", "Pgd", "Dinv", "Y", "hd", "Dinv_hd"):
            scale = np.max(np.abs(direct[key]))
            np.testing.assert_allclose(fast[key], direct[key], rtol=0, atol=1e-9 * scale, err_msg=key)


def residual_problem(seed):
    """A realistic problem with hole errors and the residual field (6 x 6 basis)."""
    pts, field = realistic_problem(seed)
    pri = Priors(residual="matern52", residual_basis=6)
    return pts, field, pri


def test_blocks_formed_per_call_agree_with_the_kept_components(monkeypatch):
    # beyond the memory limit the blocks' cross terms are formed chunk by chunk in each
    # call instead of falling back to the (far slower) direct path: same sums
    pts, field, pri = residual_problem(21)
    model = JointModel(pts, 3, jacobian_field=field, priors=pri)
    kept = model.expansion()
    assert kept is not None and not kept.streamed and kept.Pgd is not None
    n, H, Ga, J = pts.n_points, model.H, kept.Ga, kept.J
    fixed = 8.0 * J * (Ga * (Ga + expansion.BAND) / 2 + 4 * H + 2 * n) + 16.0 * n
    monkeypatch.setattr(expansion, "CHUNK_BYTES", 8.0 * 2 * Ga * max(J, 12) * 7.5)  # 7 blocks a chunk
    streamed = build_expansion(model, limit_bytes=fixed + 1.0)
    assert streamed is not None and streamed.streamed and streamed.Pgd is None
    assert streamed.chunk == 7 and H % 7 != 0  # several chunks, the last one partial
    np.testing.assert_array_equal(streamed.D, kept.D)
    phi = near_mode(model, 22, K=4)
    a = expansion.log_likelihood(model, kept, phi)
    b = expansion.log_likelihood(model, streamed, phi)
    np.testing.assert_allclose(b, a, rtol=1e-13)
    np.testing.assert_allclose(a, model.log_likelihood(phi, direct=True), rtol=1e-11)
    sa, sb = expansion.system(model, kept, phi[:2]), expansion.system(model, streamed, phi[:2])
    for key in ("S", "r", "Pgd", "Dinv", "Y", "hd", "Dinv_hd"):
        np.testing.assert_allclose(sb[key], sa[key], rtol=1e-12, atol=1e-12 * np.max(np.abs(sa[key])), err_msg=key)
    # chunks of 3 blocks, formed 6 blocks at a time
    K, G, R = phi.shape[0], model.G, 2 * model.M
    monkeypatch.setattr(expansion, "CHUNK_BYTES", 8.0 * 2 * Ga * max(J, 12) * 3.5)
    monkeypatch.setattr(expansion, "STREAM_BYTES", 8.0 * (R * (G + 1 + 2 * K) + 4 * K * Ga) * 6.5)
    streamed = build_expansion(model, limit_bytes=fixed + 1.0)
    jit, kappa, _ = model.noise_scales(phi)
    c = expansion._coefficients(streamed, jit, kappa)
    spans = [(h0, h1) for h0, h1, _ in expansion._weighted_cross(model, streamed, c)]
    assert streamed.chunk == 3 and spans == [(h, min(H, h + 3)) for h in range(0, H, 3)] and H > 6
    np.testing.assert_allclose(expansion.log_likelihood(model, streamed, phi), a, rtol=1e-13)


def test_the_likelihood_with_the_residual_field_matches_the_direct_path():
    # the walkers' batch through the components (lower triangles, in-place Cholesky,
    # chunked symmetric updates) against the per-point evaluation, residual field on
    pts, field, pri = residual_problem(23)
    for hole_errors in (True, False):
        model = JointModel(pts, 4, hole_errors=hole_errors, jacobian_field=field, priors=pri)
        assert model.expansion() is not None
        phi = near_mode(model, 24, K=5)
        fast = model.log_likelihood(phi)
        np.testing.assert_allclose(fast, model.log_likelihood(phi, direct=True), rtol=1e-11)
        np.testing.assert_allclose([model.log_likelihood(p)[0] for p in phi], fast, rtol=1e-13)
        if not hole_errors:  # the conditional's global block, from the lower triangle, is symmetric
            s = model.system(phi[:2])["S"]
            np.testing.assert_array_equal(s, np.swapaxes(s, 1, 2))


def test_rows_with_the_same_noise_share_their_elimination_and_equal_their_own_evaluation(monkeypatch):
    """A finite-difference batch (steps in the prior widths keep the noise scales): the rows
    with the same noise share the weights, the blocks' elimination and the global block's
    data part, formed once each; every row's value is its own evaluation's (to rounding)."""
    pts, field, pri = residual_problem(31)
    model = JointModel(pts, 4, hole_errors=True, jacobian_field=field, priors=pri)
    names = list(model.hyper_names)
    x = near_mode(model, 32, K=1)[0]
    # the polynomial's widths and their decay: prior only (the jitter, kappa, the hole errors'
    # sd and the residual's hyperparameters, through its spectral tail, set the noise)
    prior_only = [i for i, n in enumerate(names) if n.startswith(("log_field_", "field_"))]
    assert len(prior_only) == 3
    steps = np.vstack([x] + [x + 1e-3 * np.eye(x.size)[i] for i in range(x.size)])
    updates = []
    real = expansion._update_blocks
    monkeypatch.setattr(expansion, "_update_blocks", 
                        lambda m, ex, c, *a: updates.append(c.shape[0]) or real(m, ex, c, *a))
    batch = model.log_likelihood(steps)
    # the base row and the rows stepped in a prior width: one elimination for all of them
    assert updates == [steps.shape[0] - len(prior_only)]
    # the same values as each row on its own, and as the batch with nothing shared
    one_by_one = np.array([model.log_likelihood(p)[0] for p in steps])
    np.testing.assert_allclose(batch, one_by_one, rtol=1e-13)
    monkeypatch.setattr(expansion, "_distinct_rows", lambda a: (np.arange(a.shape[0]),) * 2)
    unshared = model.log_likelihood(steps)
    assert updates[-1] == steps.shape[0]
    np.testing.assert_allclose(batch, unshared, rtol=1e-13)
    assert np.all(np.diff(batch[[0] + [1 + i for i in prior_only]]) != 0)  # the widths did change the value
