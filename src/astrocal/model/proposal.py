"""An adaptive independence proposal for the hyperparameter chain.

The collapsed model leaves emcee a handful to a few tens of hyperparameters whose posterior
is close to a Gaussian in the logit of each one's prior interval (the interval's edges are
where a learnt width shrinks to nothing or a jitter reaches its floor). emcee's
differential-evolution move explores such a posterior with an autocorrelation time of
tens of steps; a Metropolis-Hastings *independence* proposal drawn from a fitted
approximation of the posterior itself (Hastings 1970; Tierney 1994, "Markov chains for
exploring posterior distributions", Ann. Stat. 22, 1701) has an autocorrelation time of a
few steps when the approximation is close, and remains exact when it is not: only the
acceptance falls, and the stopping rule (50 autocorrelation times, 1000 effective samples)
then runs the chain longer.

Vocabulary:

* ``z``: the hyperparameters in the logit of their *padded* prior interval:
  ``u = (phi - a) / (b - a)``, ``z = log(u / (1 - u))`` with ``a = lo - pad (hi - lo)`` and
  ``b = hi + pad (hi - lo)``. The padding keeps a walker on the prior's edge at a finite
  ``z``; a proposal between the prior's edge and the padded one has zero posterior and is
  refused.
* ``y``: each ``z`` through its own sinh-arcsinh map (Jones & Pewsey 2009, "Sinh-arcsinh
  distributions", Biometrika 96, 761), ``y = sinh(d asinh((z - m) / s) - e)``, fitted by
  maximum likelihood so that ``y`` is close to a standard normal along each axis: ``e``
  takes a marginal's skewness and ``d`` its tail weight (a jitter whose posterior runs
  flat down to its floor has a long one-sided tail in ``z``, which a Gaussian in ``z``
  misses: the chain then sticks there and its autocorrelation time doubles). The identity
  map (``m, s, e, d = 0, 1, 0, 1``) is the plain Gaussian-in-``z`` proposal, which the
  Laplace start uses.
* the proposal density in ``y``: a two-component mixture of multivariate Student-t
  distributions (``df`` degrees of freedom) with the fitted mean and the fitted covariance
  scaled by ``core_scale**2`` (weight ``1 - wide_weight``) and ``wide_scale**2``
  (weight ``wide_weight``): heavier tails than the posterior, which an independence
  sampler needs to be uniformly ergodic (a Gaussian copula with fitted marginals, made
  heavy-tailed). Its density in ``phi`` carries the Jacobians ``dy/dz`` and
  ``dz/dphi = 1 / ((b - a) u (1 - u))``.

:class:`astrocal.model.moves.AdaptiveIndependenceMove` is the emcee move (in its own
module, so that this one does not import emcee: the quick look draws from
:func:`laplace_proposal` without a chain): differential evolution until a proposal is set,
then the independence proposal for a fraction ``1 - de_weight`` of the steps.
:func:`fit_proposal` fits one from chain samples (:func:`fit_marginal` for each axis's
map), :func:`laplace_proposal` from a Laplace approximation (MAP and Hessian).
:func:`adaptation_schedule` says when the chain runner (:mod:`astrocal.model.inference`)
refits: at ``ADAPT_STEPS`` and, while the chain accepts too little, at twice the step
before, up to ``ADAPT_MAX``. It reads the stored chain only, so a resumed run rebuilds the
same proposals and continues bit for bit; the steps before the last refit are burn-in.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import optimize, special

#: steps at which the proposal is refitted from the chain; more refits follow (each at
#: twice the step of the one before, up to :data:`ADAPT_MAX`) while the chain's acceptance
#: since the previous refit stays below :data:`MIN_ADAPTED_ACCEPTANCE`
#: (:func:`adaptation_schedule`); the last refit ends adaptation
ADAPT_STEPS = (50, 100)
#: the latest refit
ADAPT_MAX = 800
#: below this acceptance over the steps between two refits (the proposal's own and
#: differential evolution's together) adaptation goes on, up to the refit at
#: :data:`ADAPT_LATE`
MIN_ADAPTED_ACCEPTANCE = 0.3
#: from this refit on the proposal is kept at :data:`LATE_ADAPTED_ACCEPTANCE`; below that at
#: :data:`ADAPT_MAX` it is switched off and the chain goes on with differential evolution alone
ADAPT_LATE = 400
#: the acceptance that keeps the proposal from :data:`ADAPT_LATE` on: an independence
#: proposal accepted this often still mixes several times faster than differential evolution
#: alone in these ~10 dimensions (measured on a ray-trace grid campaign: tau 5 against 40-66
#: steps, ``docs/model.md``, "Inference")
LATE_ADAPTED_ACCEPTANCE = 0.2
#: extra width of the logit interval on each side, as a fraction of the prior interval
PAD = 0.05
#: range of the fitted sinh-arcsinh maps: skewness ``e`` and tail weight ``d`` (``d < 1``:
#: heavier tails than a normal; the upper limit keeps the proposal's tails from falling
#: far below a normal's)
SHASH_SKEW_MAX = 2.0
SHASH_TAIL_RANGE = (0.5, 1.5)
#: ``|z|`` beyond which a draw is put on the padded edge (refused there: zero posterior)
Z_MAX = 60.0


@dataclass(frozen=True)
class IndependenceProposal:
    """A fitted proposal density over the hyperparameters (module docstring).

    ``lo``, ``hi``: the prior interval of each hyperparameter; ``mean`` (ndim,) and
    ``chol`` (ndim, ndim, lower) the fitted location and Cholesky factor of the covariance
    in ``z``; ``df``: Student-t degrees of freedom; ``core_scale``, ``wide_scale``,
    ``wide_weight``: the mixture.
    """

    lo: np.ndarray
    hi: np.ndarray
    mean: np.ndarray
    chol: np.ndarray
    df: float = 10.0
    core_scale: float = 1.0
    wide_scale: float = 3.0
    wide_weight: float = 0.1
    pad: float = PAD
    marginal: np.ndarray = None  # (ndim, 4): m, s, e, d of each sinh-arcsinh map; None: identity

    @property
    def edges(self) -> tuple[np.ndarray, np.ndarray]:
        """``(a, b)``: the padded interval of each hyperparameter."""
        width = self.hi - self.lo
        return self.lo - self.pad * width, self.hi + self.pad * width

    def to_z(self, phi: ArrayLike) -> np.ndarray:
        """``z`` of hyperparameters ``phi``.

        Parameters
        ----------
        phi : array_like
            Hyperparameters (..., ndim).

        Returns
        -------
        numpy.ndarray
            (..., ndim); infinite outside the padded interval.
        """
        a, b = self.edges
        with np.errstate(divide="ignore", invalid="ignore"):
            return special.logit((np.asarray(phi, float) - a) / (b - a))

    def to_phi(self, z: ArrayLike) -> np.ndarray:
        """Hyperparameters of ``z``.

        Parameters
        ----------
        z : array_like
            (..., ndim).

        Returns
        -------
        numpy.ndarray
            (..., ndim).
        """
        a, b = self.edges
        return a + (b - a) * special.expit(z)

    def to_y(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The marginal maps of ``z`` and their Jacobian.

        Parameters
        ----------
        z : numpy.ndarray
            (n, ndim).

        Returns
        -------
        tuple of numpy.ndarray
            ``(y, log |dy/dz|)``: (n, ndim) and (n,), the Jacobian summed over the axes.
        """
        if self.marginal is None:
            return z, np.zeros(z.shape[0])
        m, s, e, d = self.marginal.T
        x = (z - m) / s
        t = d * np.arcsinh(x) - e
        logjac = np.log(d) + _log_cosh(t) - 0.5 * np.log1p(x * x) - np.log(s)
        return np.sinh(t), np.sum(logjac, axis=1)

    def z_of_y(self, y: np.ndarray) -> np.ndarray:
        """The inverse of :meth:`to_y`'s map (``z`` of ``y``), put on +-:data:`Z_MAX`.

        Parameters
        ----------
        y : numpy.ndarray
            (n, ndim).

        Returns
        -------
        numpy.ndarray
            (n, ndim).
        """
        if self.marginal is None:
            return y
        m, s, e, d = self.marginal.T
        with np.errstate(over="ignore"):
            z = m + s * np.sinh((np.arcsinh(y) + e) / d)
        return np.clip(z, -Z_MAX, Z_MAX)

    def sample(self, n: int, random: np.random.RandomState) -> np.ndarray:
        """Draws from the proposal.

        Parameters
        ----------
        n : int
            Draws.
        random : numpy.random.RandomState
            emcee's random state.

        Returns
        -------
        numpy.ndarray
            (n, ndim).
        """
        ndim = self.mean.size
        wide = random.rand(n) < self.wide_weight
        scale = np.where(wide, self.wide_scale, self.core_scale)
        w = random.chisquare(self.df, n) / self.df
        e = random.standard_normal((n, ndim)) @ self.chol.T
        y = self.mean + e * (scale / np.sqrt(w))[:, None]
        return self.to_phi(self.z_of_y(y))

    def log_density(self, phi: np.ndarray) -> np.ndarray:
        """Log proposal density of ``phi`` in ``phi`` (Jacobian included).

        Parameters
        ----------
        phi : numpy.ndarray
            (n, ndim).

        Returns
        -------
        numpy.ndarray
            (n,); ``-inf`` outside the padded interval.
        """
        phi = np.atleast_2d(phi)
        a, b = self.edges
        u = (phi - a) / (b - a)
        inside = np.all((u > 0) & (u < 1), axis=1)
        out = np.full(phi.shape[0], -np.inf)
        if not inside.any():
            return out
        u = u[inside]
        z = special.logit(u)
        y, log_dy = self.to_y(z)
        ndim = self.mean.size
        r = np.linalg.solve(self.chol, (y - self.mean).T).T  # whitened
        m = np.sum(r * r, axis=1)
        logdet = np.sum(np.log(np.diag(self.chol)))
        nu = self.df
        const = (special.gammaln((nu + ndim) / 2) - special.gammaln(nu / 2)
                 - 0.5 * ndim * np.log(nu * np.pi) - logdet)
        comps = []
        for weight, s in ((1 - self.wide_weight, self.core_scale), (self.wide_weight, self.wide_scale)):
            comps.append(np.log(weight) + const - ndim * np.log(s)
                         - 0.5 * (nu + ndim) * np.log1p(m / (nu * s * s)))
        log_z = np.logaddexp(*comps)
        jac = -np.sum(np.log(b - a) + np.log(u) + np.log1p(-u), axis=1)  # log |dz/dphi|
        # a point beyond +-Z_MAX is one the draws never reach (they are put on the edge)
        out[inside] = np.where(np.all(np.abs(z) <= Z_MAX, axis=1), log_z + log_dy + jac, -np.inf)
        return out


def _log_cosh(t):
    """``log cosh t`` without overflow."""
    a = np.abs(t)
    return a + np.log1p(np.exp(-2 * a)) - np.log(2.0)


def fit_marginal(z: np.ndarray) -> tuple[float, float, float, float]:
    """The sinh-arcsinh map that takes samples ``z`` closest to a standard normal.

    Maximum likelihood, Nelder-Mead from the median and the scaled MAD; ``e`` within
    +-:data:`SHASH_SKEW_MAX`, ``d`` within :data:`SHASH_TAIL_RANGE`.

    Parameters
    ----------
    z : numpy.ndarray
        Samples (n,).

    Returns
    -------
    tuple of float
        ``(m, s, e, d)``; a plain location and scale (``e = 0``, ``d = 1``) when the fit
        fails or the samples hardly spread.
    """
    z = np.asarray(z, float)
    m0 = float(np.median(z))
    s0 = float(1.4826 * np.median(np.abs(z - m0)))
    plain = (float(z.mean()), max(float(z.std()), 1e-3), 0.0, 1.0)
    if not np.isfinite(s0) or s0 < 1e-6:
        return plain
    lo_d, hi_d = np.log(SHASH_TAIL_RANGE[0]), np.log(SHASH_TAIL_RANGE[1])

    def unpack(p):
        return p[0], np.exp(p[1]), SHASH_SKEW_MAX * np.tanh(p[2] / SHASH_SKEW_MAX), \
            np.exp(lo_d + (hi_d - lo_d) * special.expit(p[3]))

    def nll(p):
        m, s, e, d = unpack(p)
        x = (z - m) / s
        t = d * np.arcsinh(x) - e
        y = np.sinh(t)
        logjac = np.log(d) + _log_cosh(t) - 0.5 * np.log1p(x * x) - np.log(s)
        value = -np.sum(-0.5 * y * y + logjac)
        return value if np.isfinite(value) else 1e300

    start = np.array([m0, np.log(s0), 0.0, special.logit((0.0 - lo_d) / (hi_d - lo_d))])
    with np.errstate(all="ignore"):
        res = optimize.minimize(nll, start, method="Nelder-Mead",
                                options={"maxiter": 2000, "xatol": 1e-4, "fatol": 1e-6})
    par = np.array(unpack(res.x), float)
    if not np.all(np.isfinite(par)) or not res.fun < nll(start) + 1e-9:
        return plain
    return tuple(par)


def acceptance(chain: np.ndarray, start: int, stop: int) -> float:
    """The chain's acceptance from ``start`` to ``stop``, from the stored chain alone.

    Parameters
    ----------
    chain : numpy.ndarray
        (steps, walkers, ndim).
    start, stop : int
        Steps.

    Returns
    -------
    float
        The fraction of walker steps that moved.
    """
    if stop - start < 2:
        return 0.0
    return float(np.mean(np.any(chain[start + 1:stop] != chain[start:stop - 1], axis=2)))


def adaptation_schedule(chain: np.ndarray | None) -> tuple[list[int], bool, bool]:
    """The refit steps of a chain's adaptation.

    The refits are at :data:`ADAPT_STEPS`, then doubling while the acceptance since the
    previous refit is below :data:`MIN_ADAPTED_ACCEPTANCE` (from :data:`ADAPT_LATE` on,
    :data:`LATE_ADAPTED_ACCEPTANCE`), up to :data:`ADAPT_MAX`. Decided from the stored chain
    only, so a resumed chain follows the same schedule.

    Parameters
    ----------
    chain : numpy.ndarray or None
        (steps, walkers, ndim); None: no steps yet.

    Returns
    -------
    tuple
        ``(refits, ended, keep)``: the refit steps so far and the next one, whether the chain
        has reached the end of adaptation (its last refit) and whether the proposal is kept
        from there (acceptance high enough at the last refit).
    """
    steps = 0 if chain is None else chain.shape[0]
    refits = list(ADAPT_STEPS)
    while refits[-1] <= steps:
        floor = LATE_ADAPTED_ACCEPTANCE if refits[-1] > ADAPT_LATE else MIN_ADAPTED_ACCEPTANCE
        good = acceptance(chain, refits[-2], refits[-1]) >= floor
        if good or refits[-1] >= ADAPT_MAX:
            return refits, True, good
        refits.append(min(2 * refits[-1], ADAPT_MAX))
    return refits, False, True


def adaptation_end(chain: np.ndarray | None) -> int:
    """The step at which adaptation ends for ``chain``.

    Parameters
    ----------
    chain : numpy.ndarray or None
        (steps, walkers, ndim); None: no steps yet.

    Returns
    -------
    int
        Its last refit if reached, else the next refit (a lower bound).
    """
    return adaptation_schedule(chain)[0][-1]


def _chol_or_diag(cov):
    """Cholesky factor of ``cov``, regularised until it exists."""
    cov = 0.5 * (cov + cov.T)
    ridge = 1e-10 * max(float(np.max(np.diag(cov))), 1e-12)
    for _ in range(12):
        try:
            return np.linalg.cholesky(cov + ridge * np.eye(cov.shape[0]))
        except np.linalg.LinAlgError:
            ridge *= 10
    return np.diag(np.sqrt(np.maximum(np.diag(cov), 1e-8)))


def fit_proposal(samples: np.ndarray, lo: np.ndarray, hi: np.ndarray, marginals: bool = True) -> IndependenceProposal:
    """Fit a proposal to hyperparameter samples inside ``[lo, hi]``.

    Each ``z``'s sinh-arcsinh map (:func:`fit_marginal`), then the mean and covariance of
    the samples' ``y`` (each direction's variance floored at 1e-6).

    Parameters
    ----------
    samples : numpy.ndarray
        (n, ndim).
    lo, hi : numpy.ndarray
        The prior bounds (ndim,).
    marginals : bool
        False: no marginal maps.

    Returns
    -------
    IndependenceProposal
        The proposal.

    Raises
    ------
    ValueError
        Too few finite samples for the dimensions.
    """
    lo = np.asarray(lo, float)
    hi = np.asarray(hi, float)
    probe = IndependenceProposal(lo, hi, np.zeros(lo.size), np.eye(lo.size))
    z = probe.to_z(np.clip(samples, lo, hi))
    z = z[np.all(np.isfinite(z), axis=1)]
    if z.shape[0] < 2 * lo.size + 2:
        raise ValueError(f"{z.shape[0]} finite samples cannot fit a proposal in {lo.size} dimensions")
    marginal = None
    if marginals:
        marginal = np.array([fit_marginal(z[:, k]) for k in range(lo.size)], float)
    probe = IndependenceProposal(lo, hi, np.zeros(lo.size), np.eye(lo.size), marginal=marginal)
    y = probe.to_y(z)[0]
    cov = np.cov(y, rowvar=False) + 1e-6 * np.eye(lo.size)
    return IndependenceProposal(lo, hi, y.mean(axis=0), _chol_or_diag(cov), marginal=marginal)


def laplace_proposal(phi_map: np.ndarray, hessian: np.ndarray, lo: np.ndarray,
                     hi: np.ndarray) -> IndependenceProposal | None:
    """A proposal from a Laplace approximation.

    Mean ``phi_map`` and covariance the inverse of ``hessian`` (of ``-log p`` in ``phi``),
    both carried into ``z`` by the transform's Jacobian.

    Parameters
    ----------
    phi_map : numpy.ndarray
        The MAP (ndim,).
    hessian : numpy.ndarray
        The Hessian of ``-log p`` there (ndim, ndim).
    lo, hi : numpy.ndarray
        The prior bounds (ndim,).

    Returns
    -------
    IndependenceProposal or None
        None when the Hessian is not positive definite.
    """
    lo = np.asarray(lo, float)
    hi = np.asarray(hi, float)
    probe = IndependenceProposal(lo, hi, np.zeros(lo.size), np.eye(lo.size))
    try:
        cov_phi = np.linalg.inv(hessian)
        np.linalg.cholesky(0.5 * (cov_phi + cov_phi.T))
    except np.linalg.LinAlgError:
        return None
    a, b = probe.edges
    u = (np.clip(phi_map, lo, hi) - a) / (b - a)
    dz = 1.0 / ((b - a) * u * (1 - u))
    cov = cov_phi * np.outer(dz, dz)
    # a direction the data leave flat may reach past the whole interval: cap at the prior
    cap = np.diag(probe.to_z(hi) - probe.to_z(lo)) ** 2
    sd = np.sqrt(np.diag(cov))
    shrink = np.minimum(1.0, np.sqrt(np.diag(cap)) / np.maximum(sd, 1e-300))
    cov = cov * np.outer(shrink, shrink)
    return IndependenceProposal(lo, hi, probe.to_z(np.clip(phi_map, lo, hi)), _chol_or_diag(cov))
