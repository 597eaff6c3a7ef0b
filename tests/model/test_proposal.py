"""The adaptive independence proposal of the hyperparameter chain (astrocal.model.proposal):
a normalised density that matches its own draws, a chain that samples a known bounded
target exactly (also where the posterior piles up on a bound), and a resume across the
refits that is bit-identical to an uninterrupted run."""
import json
from types import SimpleNamespace

import emcee
import numpy as np
import pytest
from scipy import integrate, special, stats

from astrocal.model.chainstore import BlockBackend
from astrocal.model.inference import FitSettings
from astrocal.model.sampling import _run_blocks, chain_summary, default_moves
from astrocal.model.moves import AdaptiveIndependenceMove
from astrocal.model.proposal import ADAPT_STEPS, fit_proposal, laplace_proposal

LO = np.array([-3.0, 0.0, -1.0])
HI = np.array([3.0, 5.0, 1.0])


def target(x):
    """Independent, so the truth is known: a standard normal; a half-normal piled up on
    the lower bound 0 (scale 0.4); a normal (0.5, 0.3) truncated at 1. -inf outside."""
    x = np.atleast_2d(x)
    inside = np.all((x >= LO) & (x <= HI), axis=1)
    lp = -0.5 * x[:, 0] ** 2 - 0.5 * (x[:, 1] / 0.4) ** 2 - 0.5 * ((x[:, 2] - 0.5) / 0.3) ** 2
    return np.where(inside, lp, -np.inf)


def truth():
    a = stats.truncnorm(-3, 3)
    b = stats.truncnorm(0, 5 / 0.4, scale=0.4)
    c = stats.truncnorm((-1 - 0.5) / 0.3, (1 - 0.5) / 0.3, loc=0.5, scale=0.3)
    return np.array([d.mean() for d in (a, b, c)]), np.array([d.std() for d in (a, b, c)])


def test_density_is_normalised_and_matches_its_draws():
    rng = np.random.default_rng(1)
    lo, hi = LO[:1], HI[:1]
    samples = np.clip(rng.normal(1.0, 0.5, (400, 1)), lo, hi)
    prop = fit_proposal(samples, lo, hi)
    a, b = prop.edges
    total, _ = integrate.quad(lambda t: np.exp(prop.log_density([[t]])[0]), a[0], b[0], limit=200)
    mean, _ = integrate.quad(lambda t: t * np.exp(prop.log_density([[t]])[0]), a[0], b[0], limit=200)
    assert total == pytest.approx(1.0, abs=1e-6)
    draws = prop.sample(200000, np.random.RandomState(2))
    assert np.all((draws > a) & (draws < b))
    assert draws.mean() == pytest.approx(mean, abs=4 * draws.std() / np.sqrt(draws.size))
    assert np.all(prop.log_density(np.array([[a[0] - 1e-3], [b[0] + 1e-3]])) == -np.inf)


def test_fitted_marginal_maps_take_skewed_samples_to_normal_and_stay_normalised():
    """A log-jitter-like posterior (flat in its log down to the floor, then cut by the
    prior; a long one-sided tail in z): the fitted sinh-arcsinh map makes its y nearly
    normal where a plain z is not, and the proposal's density still integrates to one and
    matches its own draws (1-D by quadrature; 2-D through the draws' mean of a bounded
    function)."""
    from astrocal.model.proposal import Z_MAX, fit_marginal

    rng = np.random.default_rng(3)
    lo, hi = np.array([-18.0]), np.array([-2.0])
    # log jitter: the data cut it above about -7; below, it runs flat to the floor
    x = np.concatenate([rng.uniform(-18.0, -8.0, 1500), rng.normal(-7.5, 0.4, 2500)])[:, None]
    plain = fit_proposal(x, lo, hi, marginals=False)
    shaped = fit_proposal(x, lo, hi)
    z = plain.to_z(x)
    y = shaped.to_y(z)[0]
    assert abs(stats.skew(z[:, 0])) > 1.0
    assert abs(stats.skew(y[:, 0])) < 0.5 * abs(stats.skew(z[:, 0]))
    m, sd, e, d = fit_marginal(z[:, 0])
    assert e != 0.0 and sd > 0
    a, b = shaped.edges

    def density_z(t):  # the density in z: in phi times dphi/dz
        u = special.expit(t)
        return np.exp(shaped.log_density(shaped.to_phi(np.array([[t]])))[0]) * (b - a)[0] * u * (1 - u)

    draws = shaped.sample(400000, np.random.RandomState(5))
    assert np.all((draws >= a) & (draws <= b))
    zd = shaped.to_z(draws)[:, 0]  # infinite: put on the padded edge (zero posterior, always refused)
    assert np.mean(~np.isfinite(zd)) < 0.01
    for z0, z1 in ((-Z_MAX, -10), (-10, -3), (-3, 0), (0, 3), (3, 10), (10, Z_MAX)):
        mass, _ = integrate.quad(density_z, z0, z1, limit=400)
        assert mass == pytest.approx(np.mean((zd >= z0) & (zd < z1)), abs=5 * np.sqrt(mass / zd.size) + 1e-5)
    total, _ = integrate.quad(density_z, -Z_MAX, Z_MAX, limit=1000, points=[-5.0, 0.0, 5.0])
    assert total == pytest.approx(np.mean(np.isfinite(zd)), abs=1e-3)
    # 2-D, correlated: E_q[f] from draws equals E_q[f] by importance against a uniform box
    lo2, hi2 = np.array([-18.0, -1.0]), np.array([-2.0, 1.0])
    x2 = np.column_stack([x[:, 0], np.tanh(0.3 * (x[:, 0] + 8) + rng.normal(0, 0.3, x.shape[0]))])
    q2 = fit_proposal(x2, lo2, hi2)
    a2, b2 = q2.edges
    box = rng.uniform(a2, b2, (400000, 2))
    vol = np.prod(b2 - a2)
    dens = np.exp(q2.log_density(box))
    d2 = q2.sample(200000, np.random.RandomState(6))
    inside = np.all(np.isfinite(q2.to_z(d2)), axis=1)
    assert np.mean(dens) * vol == pytest.approx(np.mean(inside), abs=0.02)
    f = lambda p: np.sin(p[:, 0]) * p[:, 1]  # noqa: E731
    assert np.mean(f(d2) * inside) == pytest.approx(np.mean(f(box) * dens) * vol, abs=0.01)


def test_laplace_proposal_refuses_an_indefinite_hessian():
    assert laplace_proposal(np.zeros(2), np.array([[1.0, 0], [0, -1.0]]), LO[:2], HI[:2]) is None
    prop = laplace_proposal(np.array([0.5, 1.0]), np.diag([4.0, 1e-6]), LO[:2], HI[:2])
    # a flat direction is capped at the prior interval's extent in z
    width = prop.to_z(HI[:2]) - prop.to_z(LO[:2])
    assert np.sqrt(np.diag(prop.chol @ prop.chol.T))[1] <= width[1] + 1e-9


def settings(steps, **kw):
    return FitSettings(steps=steps, min_steps=steps, check_every=100, seed=5, progress=False, **kw)


def sample(steps, backend=None, p0=None):
    moves = default_moves()
    move = moves[0][0]
    assert isinstance(move, AdaptiveIndependenceMove)
    sampler = emcee.EnsembleSampler(16, 3, target, vectorize=True, moves=moves, backend=backend)
    if p0 is None and (backend is None or backend.iteration == 0):
        p0 = np.clip(np.random.default_rng(4).normal(0.1, 0.05, (16, 3)), LO + 1e-6, HI - 1e-6)
    start = laplace_proposal(np.array([0.0, 0.1, 0.5]), np.diag([1.0, 6.0, 11.0]), LO, HI)
    return _run_blocks(sampler, backend, p0, settings(steps), move, (LO, HI), start)


def test_chain_samples_a_bounded_target_exactly():
    chain, sampler = sample(3000)
    tau, burn, n_eff, converged = chain_summary(chain)
    assert burn >= ADAPT_STEPS[-1] and converged
    assert np.max(tau) < 10  # differential evolution alone: about 15-30 here
    flat = chain[burn:].reshape(-1, 3)
    mean, sd = truth()
    se = sd * np.sqrt(np.max(tau) / flat.shape[0])
    assert np.all(np.abs(flat.mean(axis=0) - mean) < 5 * se), (flat.mean(axis=0), mean, se)
    assert np.allclose(flat.std(axis=0), sd, rtol=0.05), (flat.std(axis=0), sd)


@pytest.mark.parametrize("killed_at", [ADAPT_STEPS[0], ADAPT_STEPS[-1], 200])
def test_resume_across_the_refits_is_bit_identical(tmp_path, killed_at):
    attrs = {"hyper_names": json.dumps(["a", "b", "c"])}

    def fresh(path):
        backend = BlockBackend(path, attrs=attrs)
        backend.reset(16, 3)
        backend.write()
        return backend

    whole, _ = sample(300, fresh(tmp_path / "whole.h5"))
    sample(killed_at, fresh(tmp_path / "part.h5"))
    backend = BlockBackend.load(tmp_path / "part.h5")
    assert backend.iteration == killed_at
    resumed, _ = sample(300, backend)
    assert np.array_equal(resumed, whole)


def _chain_moving_at(rate, steps, seed=2):
    """A chain (steps, 16, 3) whose walkers each move with probability ``rate`` per step."""
    rng = np.random.default_rng(seed)
    chain = np.empty((steps, 16, 3))
    chain[0] = rng.uniform(LO, HI, (16, 3)) * 0.5
    for t in range(1, steps):
        move_now = rng.random(16) < rate
        chain[t] = np.where(move_now[:, None], np.clip(chain[t - 1] + 0.1 * rng.standard_normal((16, 3)), LO, HI),
                            chain[t - 1])
    return chain


def test_adaptation_goes_on_while_the_acceptance_is_low():
    """Refits at 50 and 100; while the acceptance since the previous refit is below
    MIN_ADAPTED_ACCEPTANCE (from ADAPT_LATE on LATE_ADAPTED_ACCEPTANCE), more at twice the
    step, up to ADAPT_MAX; the end of adaptation is the last refit."""
    from astrocal.model.proposal import (ADAPT_LATE, ADAPT_MAX, LATE_ADAPTED_ACCEPTANCE, MIN_ADAPTED_ACCEPTANCE,
                                         adaptation_end, adaptation_schedule)

    ladder = [50, 100, 200, ADAPT_LATE, ADAPT_MAX]
    assert ADAPT_MAX == 2 * ADAPT_LATE and LATE_ADAPTED_ACCEPTANCE < MIN_ADAPTED_ACCEPTANCE
    assert adaptation_schedule(None) == ([50, 100], False, True)
    good = _chain_moving_at(MIN_ADAPTED_ACCEPTANCE + 0.15, 300)
    assert adaptation_schedule(good[:99]) == ([50, 100], False, True)
    assert adaptation_schedule(good) == ([50, 100], True, True)
    assert adaptation_end(good) == 100
    poor = _chain_moving_at(LATE_ADAPTED_ACCEPTANCE - 0.1, ADAPT_MAX + 10)
    assert adaptation_schedule(poor[:150]) == ([50, 100, 200], False, True)
    assert adaptation_schedule(poor[:ADAPT_LATE + 10]) == (ladder, False, True)
    assert adaptation_schedule(poor) == (ladder, True, False)
    # poor until 100, good from there: adaptation ends at 200 with the proposal kept;
    # poor until 200, good from there: it ends at ADAPT_LATE, kept
    for cut, end in ((100, 200), (200, ADAPT_LATE)):
        later = _chain_moving_at(MIN_ADAPTED_ACCEPTANCE + 0.15, ADAPT_MAX + 10 - cut, seed=3)
        mixed = np.concatenate([poor[:cut], later - later[0] + poor[cut - 1]])
        assert adaptation_schedule(mixed) == (ladder[:ladder.index(end) + 1], True, True)
        assert adaptation_end(mixed) == end
    # between the two floors until ADAPT_LATE (it was switched off there before), then the
    # same: kept at ADAPT_MAX
    middle = _chain_moving_at(0.5 * (LATE_ADAPTED_ACCEPTANCE + MIN_ADAPTED_ACCEPTANCE), ADAPT_MAX + 10, seed=4)
    assert adaptation_schedule(middle[:ADAPT_LATE + 10]) == (ladder, False, True)
    assert adaptation_schedule(middle) == (ladder, True, True)


def test_a_proposal_that_is_refused_too_often_is_switched_off():
    """At the last refit (ADAPT_MAX) an acceptance still below LATE_ADAPTED_ACCEPTANCE leaves
    differential evolution alone; before it, the proposal is refitted and kept; a good
    acceptance at step 100 ends adaptation there with the proposal on."""
    from astrocal.model.sampling import _adapt
    from astrocal.model.proposal import ADAPT_LATE, ADAPT_MAX, LATE_ADAPTED_ACCEPTANCE, MIN_ADAPTED_ACCEPTANCE

    poor = _chain_moving_at(LATE_ADAPTED_ACCEPTANCE - 0.1, ADAPT_MAX)
    for step, kept in ((100, True), (200, True), (ADAPT_LATE, True), (ADAPT_MAX, False)):
        move = AdaptiveIndependenceMove()
        _adapt(move, poor, step, (LO, HI), None)
        assert (move.proposal is not None) is kept, step
    good = _chain_moving_at(MIN_ADAPTED_ACCEPTANCE + 0.1, 100)
    move = AdaptiveIndependenceMove()
    _adapt(move, good, 100, (LO, HI), None)
    assert move.proposal is not None


def test_a_draw_on_the_proposals_edge_is_refused_without_a_nan():
    """A proposal draw beyond |z| = Z_MAX lands on the padded edge, where the proposal's and
    the posterior's densities are both zero: the move's factor is -inf, so emcee's ratio
    is -inf (refused), never -inf + inf = NaN (refused too, but with a RuntimeWarning in the
    user's terminal)."""
    rng = np.random.default_rng(3)
    prop = fit_proposal(rng.normal(0.0, 0.3, (400, 3)) * [1, 1, 0.5] + [0, 1, 0], LO, HI)
    edge = np.array([prop.edges[0], prop.edges[1], 0.5 * (prop.edges[0] + prop.edges[1])])
    move = AdaptiveIndependenceMove()
    # the proposal, drawing the edges themselves and then a point inside
    move.proposal = SimpleNamespace(sample=lambda n, random: edge[:n], log_density=prop.log_density)
    coords = np.array([[0.0, 1.0, 0.0]] * 3)
    _, factors = move._propose_independent(coords, np.random.RandomState(0))
    assert factors[0] == -np.inf and factors[1] == -np.inf and np.isfinite(factors[2])
    with np.errstate(all="raise"):
        lnpdiff = target(edge) - target(coords) + factors
    assert np.all(lnpdiff[:2] == -np.inf)
