"""The hyperparameters' maximum a posteriori and the Laplace approximation about it.

:func:`map_hyperparameters` finds the MAP of ``phi`` (a bounded quasi-Newton search, scaled
by the expected curvature); :func:`numerical_hessian` is the curvature there by central
differences; :func:`laplace_evidence` integrates the hyperparameters by a Laplace
approximation (the linear parameters are integrated exactly by the model), the evidence
``p(y | n)`` of the degree scan; :func:`laplace_draws` samples that approximation (the quick
look's stand-in for the emcee chain).
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike
from scipy import optimize

from .proposal import laplace_proposal

if TYPE_CHECKING:
    from .joint import JointModel

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- helpers
def map_hyperparameters(model: JointModel, phi0: ArrayLike,
                        scale: ArrayLike | None = None) -> tuple[np.ndarray, float]:
    """Maximum a posteriori of the hyperparameters (bounded quasi-Newton from ``phi0``).

    The optimum does not depend on ``scale``; only the path to it does. A scaled search that
    stops with more than :data:`MAP_RESTART_NATS` left to gain (estimated from its gradient)
    is started again in the plain coordinates.

    Parameters
    ----------
    model : JointModel
        The model (or any with ``ndim``, ``hyper_names``, ``bounds()`` and a vectorised
        ``log_posterior``, such as the LMS model).
    phi0 : array_like
        Where the search starts (ndim,).
    scale : array_like, optional
        The expected curvature's square root per hyperparameter (ndim,) (e.g.
        ``sqrt(diag(H))`` of a neighbouring model's Hessian of ``-log p``); the search runs in
        ``phi * scale``, where a unit step is about one posterior sd (the quasi-Newton
        method's first step and its line searches are then of the right size).

    Returns
    -------
    tuple
        The MAP (ndim,) and the log posterior there.
    """
    lo, hi = model.bounds()
    x0 = np.clip(phi0, lo + 1e-9, hi - 1e-9)
    s = np.ones_like(x0) if scale is None else np.asarray(scale, float)

    eps = 1e-6

    def nlp_and_grad(y):
        # the value and a forward-difference gradient in one batched call (the model
        # evaluates rows of phi together, so ndim + 1 rows cost little more than one);
        # a step that would leave the box is taken backwards
        x = y / s
        step = np.where(x + eps <= hi, eps, -eps)
        v = model.log_posterior(np.vstack([x, x + np.diag(step)]))
        if not np.isfinite(v[0]):
            return 1e300, np.zeros_like(x)
        grad = np.where(np.isfinite(v[1:]), (v[1:] - v[0]) / step, 0.0)
        return -v[0], -grad / s

    best = optimize.minimize(nlp_and_grad, x0 * s, jac=True, method="L-BFGS-B", bounds=list(zip(lo * s, hi * s)))
    if scale is not None:
        # L-BFGS-B stops when a step gains (relatively) nothing, which a failed first line
        # search can cause far from the optimum; in the scaled coordinates half the squared
        # projected gradient estimates what is left to gain: more than MAP_RESTART_NATS,
        # and the search starts again from there in the plain coordinates
        g = np.asarray(best.jac, float)
        y = np.asarray(best.x, float)
        g = np.where(((y <= lo * s) & (g > 0)) | ((y >= hi * s) & (g < 0)), 0.0, g)
        left = 0.5 * float(g @ g)
        if left > MAP_RESTART_NATS:
            log.debug("MAP search stopped %.3g nats short (estimated); restarted unscaled", left)
            again = map_hyperparameters(model, np.clip(y / s, lo, hi))
            return again if again[1] >= -best.fun else (np.clip(y / s, lo, hi), -best.fun)
    return np.clip(best.x / s, lo, hi), -best.fun


#: a scaled MAP search (:func:`map_hyperparameters`) that stops with more than this left to gain
#: (estimated from its gradient) is started again in the plain coordinates
MAP_RESTART_NATS = 0.5


def curvature_scale(model: JointModel, known: dict | None) -> np.ndarray:
    """``scale`` for :func:`map_hyperparameters` from known curvatures.

    Parameters
    ----------
    model : JointModel
        The model (or any with ``ndim``, ``hyper_names``, ``bounds()`` and a vectorised
        ``log_posterior``, such as the LMS model).
    known : dict or None
        ``{hyperparameter name: sqrt of the curvature}``, e.g. of the degree below.

    Returns
    -------
    numpy.ndarray
        (ndim,): 1 where ``known`` names none or the value is not a positive number.
    """
    out = np.ones(model.ndim)
    for k, name in enumerate(model.hyper_names):
        v = (known or {}).get(name)
        if v is not None and np.isfinite(v) and v > 0:
            out[k] = v
    return out


def sqrt_curvature(names: Sequence[str], hess: ArrayLike) -> dict[str, float]:
    """``{name: sqrt(H_ii)}`` of a Hessian of ``-log p`` (positive diagonal entries only).

    Parameters
    ----------
    names : sequence of str
        The hyperparameters' names.
    hess : array_like
        The Hessian of ``-log p`` (ndim, ndim).

    Returns
    -------
    dict
        Name to the square root of its positive diagonal entry.
    """
    d = np.diag(np.asarray(hess, float))
    return {n: float(np.sqrt(v)) for n, v in zip(names, d) if np.isfinite(v) and v > 0}


def numerical_hessian(f: Callable[[np.ndarray], np.ndarray], x: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                      step: float = 1e-3) -> np.ndarray:
    """Numerical Hessian of ``f`` (vectorised over rows) at ``x`` by central differences.

    Second order in ``step`` (h) with ``n**2 + n + 1`` evaluations (one batched call) for
    ``n`` dimensions away from the bounds, about half the ``2 n (n + 1) + 1`` of the
    four-point formula for every pair: the diagonal from ``f(x +- 2h e_i)`` (the
    four-point formula's own diagonal, ``4 h**2 H_ii``), each mixed term from
    ``f(x + h (e_i + e_j)) + f(x - h (e_i + e_j)) - 2 f(x) = h**2 (H_ii + 2 H_ij + H_jj) +
    O(h**4)``. A hyperparameter within h of its bound ``lo``, ``hi`` (points beyond are
    clipped onto it, so its entries are one-sided values rather than curvatures) gets its
    mixed terms from the four-point formula ``f(x +- h e_i +- h e_j)``, as before.

    Parameters
    ----------
    f : callable
        Function of rows ``(m, n)`` returning ``(m,)``.
    x : numpy.ndarray
        Where (n,).
    lo, hi : numpy.ndarray
        The bounds (n,); points beyond are clipped onto them.
    step : float
        The step h.

    Returns
    -------
    numpy.ndarray
        The Hessian (n, n).
    """
    n = x.size
    eye = np.eye(n) * step
    iu, ju = np.triu_indices(n, 1)
    pair = eye[iu] + eye[ju]
    edge = (x + step > hi) | (x - step < lo)
    four = edge[iu] | edge[ju]  # pairs that take the four-point formula
    cross = eye[iu[four]] - eye[ju[four]]
    pts = np.vstack([x[None], x + 2 * eye, x - 2 * eye, x + pair, x - pair, x + cross, x - cross])
    vals = f(np.clip(pts, lo, hi))
    m = iu.size
    f0, fp, fm = vals[0], vals[1:n + 1], vals[n + 1:2 * n + 1]
    pp, mm = vals[2 * n + 1:2 * n + 1 + m], vals[2 * n + 1 + m:2 * n + 1 + 2 * m]
    pm, mp = vals[2 * n + 1 + 2 * m:2 * n + 1 + 2 * m + four.sum()], vals[2 * n + 1 + 2 * m + four.sum():]
    d = (fp - 2 * f0 + fm) / 4  # h**2 H_ii
    off = (pp + mm - 2 * f0 - d[iu] - d[ju]) / (2 * step**2)
    off[four] = (pp[four] - pm - mp + mm[four]) / (4 * step**2)
    h = np.empty((n, n))
    h[np.diag_indices(n)] = d / step**2
    h[iu, ju] = h[ju, iu] = off
    return h


def laplace_evidence(model: JointModel, phi_map: np.ndarray, logpost_map: float) -> tuple[float, np.ndarray]:
    """``log p(y | n)`` by a Laplace approximation over the hyperparameters.

    The linear parameters are integrated exactly by the model; only the handful of
    hyperparameters are approximated. Where the curvature is not negative definite (a
    hyperparameter at its bound), the prior range of that direction is used instead.

    Parameters
    ----------
    model : JointModel
        The model (or any with ``ndim``, ``hyper_names``, ``bounds()`` and a vectorised
        ``log_posterior``, such as the LMS model).
    phi_map : numpy.ndarray
        The hyperparameters' MAP (ndim,).
    logpost_map : float
        The log posterior there.

    Returns
    -------
    tuple
        The log evidence and the Hessian of ``-log p`` at the MAP (ndim, ndim).
    """
    lo, hi = model.bounds()
    h = -numerical_hessian(model.log_posterior, phi_map, lo, hi)
    w, v = np.linalg.eigh(h)
    # each eigen-direction contributes sqrt(2 pi / w), capped by the prior box's extent
    # along it (the normalised prior density times that length is the integral over a
    # direction the data leave flat)
    extent = np.abs(v).T @ (hi - lo)
    widths = np.where(w > 0, np.sqrt(2 * np.pi / np.maximum(w, 1e-300)), extent)
    widths = np.minimum(widths, extent)
    return float(logpost_map + np.sum(np.log(widths))), h



def laplace_draws(model: JointModel, phi_map: np.ndarray, hessian: np.ndarray, n: int,
                  rng: np.random.Generator) -> np.ndarray:
    """Hyperparameter draws from the Laplace approximation at ``phi_map``.

    A Gaussian in the logit of each hyperparameter's padded prior interval
    (:func:`astrocal.model.proposal.laplace_proposal`), so every draw lies inside the prior;
    the quick look's stand-in for the emcee chain. A Hessian that is not positive definite is
    regularised by its eigenvalues' magnitudes.

    Parameters
    ----------
    model : JointModel
        The model (or any with ``ndim``, ``hyper_names``, ``bounds()`` and a vectorised
        ``log_posterior``, such as the LMS model).
    phi_map : numpy.ndarray
        The MAP (ndim,).
    hessian : numpy.ndarray
        The Hessian of ``-log p`` there (ndim, ndim).
    n : int
        Draws.
    rng : numpy.random.Generator
        The random numbers.

    Returns
    -------
    numpy.ndarray
        (n, ndim).
    """
    lo, hi = model.bounds()
    prop = laplace_proposal(phi_map, hessian, lo, hi)
    if prop is None:
        w, v = np.linalg.eigh(0.5 * (hessian + hessian.T))
        w = np.maximum(np.abs(w), 1e-12 * max(np.abs(w).max(), 1e-300))
        prop = laplace_proposal(phi_map, (v * w) @ v.T, lo, hi)
    z = prop.mean + rng.standard_normal((int(n), model.ndim)) @ prop.chol.T
    return np.clip(prop.to_phi(z), lo, hi)
