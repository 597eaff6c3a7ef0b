"""The adaptive independence proposal of the hyperparameter chain (astrocal.model.proposal):
a normalised density that matches its own draws, a chain that samples a known bounded
target exactly (also where the posterior piles up on a bound), and a resume across the
refits that is bit-identical to an uninterrupted run."""
import json

import emcee
import numpy as np
import pytest
from scipy import integrate, stats

from astrocal.model.chainstore import BlockBackend
from astrocal.model.inference import FitSettings, _run_blocks, chain_summary, default_moves
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


def test_a_proposal_that_is_refused_too_often_is_switched_off():
    """At the end of adaptation, an acceptance below MIN_ADAPTED_ACCEPTANCE over the steps
    since the previous refit leaves differential evolution alone; above it, the proposal stays."""
    from astrocal.model.inference import MIN_ADAPTED_ACCEPTANCE, _adapt

    rng = np.random.default_rng(2)
    s0, s1 = ADAPT_STEPS[-2], ADAPT_STEPS[-1]
    for rate, kept in ((MIN_ADAPTED_ACCEPTANCE - 0.1, False), (MIN_ADAPTED_ACCEPTANCE + 0.1, True)):
        chain = np.empty((s1, 16, 3))
        chain[0] = rng.uniform(LO, HI, (16, 3)) * 0.5
        for t in range(1, s1):  # each walker moves with probability ``rate``
            move_now = rng.random(16) < rate
            chain[t] = np.where(move_now[:, None], np.clip(chain[t - 1] + 0.1 * rng.standard_normal((16, 3)), LO, HI),
                                chain[t - 1])
        move = AdaptiveIndependenceMove()
        _adapt(move, chain, s1, (LO, HI), None)
        assert (move.proposal is not None) is kept, rate
