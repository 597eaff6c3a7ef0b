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
* the proposal density in ``z``: a two-component mixture of multivariate Student-t
  distributions (``df`` degrees of freedom) with the fitted mean and the fitted covariance
  scaled by ``core_scale**2`` (weight ``1 - wide_weight``) and ``wide_scale**2``
  (weight ``wide_weight``): heavier tails than the posterior, which an independence
  sampler needs to be uniformly ergodic. Its density in ``phi`` carries the Jacobian
  ``dz/dphi = 1 / ((b - a) u (1 - u))``.

:class:`astrocal.model.moves.AdaptiveIndependenceMove` is the emcee move (in its own
module, so that this one does not import emcee: the quick look draws from
:func:`laplace_proposal` without a chain): differential evolution until a proposal is set,
then the independence proposal for a fraction ``1 - de_weight`` of the steps. :func:`fit_proposal` fits one from chain samples or from a Laplace approximation
(MAP and Hessian). The chain runner (:mod:`astrocal.model.inference`) refits at fixed
steps (``ADAPT_STEPS``) from the stored chain only, so a resumed run rebuilds the same
proposals and continues bit for bit; the steps before the last refit are burn-in.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special

#: steps at which the proposal is refitted from the chain (the last one ends adaptation)
ADAPT_STEPS = (50, 100)
#: extra width of the logit interval on each side, as a fraction of the prior interval
PAD = 0.05


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

    @property
    def edges(self):
        """``(a, b)``: the padded interval of each hyperparameter."""
        width = self.hi - self.lo
        return self.lo - self.pad * width, self.hi + self.pad * width

    def to_z(self, phi):
        """``z`` of hyperparameters ``phi`` (..., ndim); infinite outside the padded interval."""
        a, b = self.edges
        with np.errstate(divide="ignore", invalid="ignore"):
            return special.logit((np.asarray(phi, float) - a) / (b - a))

    def to_phi(self, z):
        """Hyperparameters of ``z`` (..., ndim)."""
        a, b = self.edges
        return a + (b - a) * special.expit(z)

    def sample(self, n, random):
        """``n`` draws (n, ndim) with ``random`` (a numpy ``RandomState``: emcee's)."""
        ndim = self.mean.size
        wide = random.rand(n) < self.wide_weight
        scale = np.where(wide, self.wide_scale, self.core_scale)
        w = random.chisquare(self.df, n) / self.df
        e = random.standard_normal((n, ndim)) @ self.chol.T
        z = self.mean + e * (scale / np.sqrt(w))[:, None]
        return self.to_phi(z)

    def log_density(self, phi):
        """Log proposal density of ``phi`` (n, ndim) in ``phi`` (Jacobian included);
        ``-inf`` outside the padded interval."""
        phi = np.atleast_2d(phi)
        a, b = self.edges
        u = (phi - a) / (b - a)
        inside = np.all((u > 0) & (u < 1), axis=1)
        out = np.full(phi.shape[0], -np.inf)
        if not inside.any():
            return out
        u = u[inside]
        z = special.logit(u)
        ndim = self.mean.size
        r = np.linalg.solve(self.chol, (z - self.mean).T).T  # whitened
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
        out[inside] = log_z + jac
        return out


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


def fit_proposal(samples, lo, hi):
    """Fit a proposal to hyperparameter samples (n, ndim) inside ``[lo, hi]``: the mean
    and covariance of their ``z`` (each direction's variance floored at 1e-6)."""
    lo = np.asarray(lo, float)
    hi = np.asarray(hi, float)
    probe = IndependenceProposal(lo, hi, np.zeros(lo.size), np.eye(lo.size))
    z = probe.to_z(np.clip(samples, lo, hi))
    z = z[np.all(np.isfinite(z), axis=1)]
    if z.shape[0] < 2 * lo.size + 2:
        raise ValueError(f"{z.shape[0]} finite samples cannot fit a proposal in {lo.size} dimensions")
    cov = np.cov(z, rowvar=False) + 1e-6 * np.eye(lo.size)
    return IndependenceProposal(lo, hi, z.mean(axis=0), _chol_or_diag(cov))


def laplace_proposal(phi_map, hessian, lo, hi):
    """A proposal from a Laplace approximation: mean ``phi_map`` and covariance the inverse
    of ``hessian`` (of ``-log p`` in ``phi``), both carried into ``z`` by the transform's
    Jacobian; None when the Hessian is not positive definite."""
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
