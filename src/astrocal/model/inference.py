"""Inference for the lab model: preliminary fit, outliers, degree by evidence, emcee, exact draws.

The steps of :func:`fit_joint`:

1. a preliminary fit (hyperparameters at their initial guess) gives the field whose
   Jacobian pushes centroid covariances into the focal plane;
2. gross outliers are found by an expectation-maximisation of a two-component mixture
   (inliers with the model's noise, outliers with a broad ``outlier_px`` Gaussian); points
   whose outlier probability exceeds 1/2 are flagged and left out, with the rest refitted
   until the flagged set is stable;
3. for every degree in the range, the hyperparameters' maximum a posteriori (each search
   started from, and scaled by the curvature of, the degree below's) and a Laplace
   approximation over them give the evidence ``p(y | n)``; the residual field's basis is
   refined for the rows that can matter (:func:`_refine_residual_rows`); the posterior
   median degree is kept (:func:`choose_degree`; or the degree asked for);
4. emcee samples the hyperparameters (walkers evaluated together), writing the chain to
   HDF5 once per block of steps (:mod:`astrocal.model.chainstore`) so a killed run resumes;
5. for every kept hyperparameter sample, the linear parameters are drawn exactly from
   their Gaussian conditional.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from dataclasses import dataclass, field as dc_field
from pathlib import Path

import numpy as np
from scipy import optimize

from ..errors import AstrocalError
from . import draws
from .data import DataError, Points
from .footprint import convex_footprint, inside_footprint
from .joint import JointModel
from .priors import Priors
from .proposal import (MIN_ADAPTED_ACCEPTANCE, acceptance, adaptation_end, adaptation_schedule, fit_proposal,
                       laplace_proposal)
from .refinement import baseline_evidence, fit_variant

# emcee (which imports scipy.stats: about a second) and the chain's HDF5 backend are
# imported where the chain is run, so the quick look (no chain) does not pay for them

log = logging.getLogger(__name__)


class DegreeRangeWarning(UserWarning):
    """With ``degree = "auto"``, the degree chosen is the highest one tried."""


class ConvergenceWarning(UserWarning):
    """The chain is shorter than 50 autocorrelation times, or tau could not be estimated."""


class GaugeWarning(UserWarning):
    """A direction of parameter space is not constrained by the data (only by its prior)."""


@dataclass
class FitSettings:
    """Settings of :func:`fit_joint` (see the campaign's ``[fit]`` table)."""

    degree: object = "auto"
    degree_range: tuple = (3, 8)
    degree_choice: str = "median"  # of the posterior over degrees, or "best" (see choose_degree)
    hole_errors: bool = True
    walkers: int = 24
    steps: int = 15000  # the most; the chain stops earlier once converged
    min_steps: int = 300
    target_neff: int = 1000  # effective samples of every hyperparameter to stop at
    check_every: int = 100
    burn: object = "auto"  # int or "auto" (5 tau, at least 10 % of the steps)
    n_draws: int = 1000  # hyperparameter samples kept (thinned evenly from the chain)
    draws_per_phi: int = 4  # exact draws of the linear parameters for each kept sample
    seed: int = 1
    outlier_px: float = 10.0
    outlier_iterations: int = 10
    priors: Priors = dc_field(default_factory=Priors)
    progress: object = "auto"  # True, False or "auto" (a terminal)
    backend_path: object = None  # HDF5 file of the chain
    resume: bool = False
    #: what the chain depends on beyond the data's shape (campaign hash, seed, model
    #: settings; plain JSON values), stored with the chain and compared on resume
    chain_record: dict = None
    flexure: object = None  # FlexureBasis of sky exposures (None: the model's default)
    #: worker processes that share the walkers of each emcee step and the evidence scan's
    #: variants, or "auto" (:func:`pool_size`: a pool only for large fits); the result is the
    #: same either way
    processes: object = 1
    #: "emcee" (the reference) or "laplace": the quick look, hyperparameters drawn from the
    #: Laplace approximation at their MAP (:func:`laplace_draws`) instead of sampled
    sampler: str = "emcee"


@dataclass
class Diagnostics:
    """Convergence of the emcee chain of the hyperparameters (:func:`diagnostics`).

    ``tau``: integrated autocorrelation time per hyperparameter (steps); ``acceptance``:
    mean acceptance fraction; ``n_steps``, ``n_burn``: steps run and discarded as burn-in;
    ``n_effective``: effective samples per hyperparameter after burn-in (all walkers);
    ``converged``: the chain is at least 50 ``tau`` long; ``warnings``: the
    ``ConvergenceWarning`` messages.
    """

    tau: np.ndarray
    acceptance: float
    n_steps: int
    n_burn: int
    n_effective: np.ndarray
    converged: bool
    warnings: list


@dataclass
class Fit:
    """Result of :func:`fit_joint`.

    ``phi_chain`` (steps, walkers, ndim) and ``phi_samples`` (one row per draw, ndim) are the
    hyperparameter chain and the thinned posterior draws; ``g_samples`` (kept, G) and
    ``hole_samples`` (kept, H, 2) the exact draws of the linear parameters, one per kept
    hyperparameter sample (arcsec, gauge-fixed; ``star_samples`` (kept, S, 2) the stars'
    catalogue errors, true minus catalogue, standard coordinates, arcsec);
    ``inseparable`` the combinations the data do not separate
    (:func:`inseparable_directions`, at the MAP); ``model`` the :class:`JointModel` at the
    chosen degree; ``outliers`` a boolean mask over ``points`` (flagged, left out).
    """

    model: JointModel
    points: Points
    degree: int
    evidence: list
    phi_map: np.ndarray
    phi_chain: np.ndarray
    phi_samples: np.ndarray
    g_samples: np.ndarray
    hole_samples: object
    outliers: np.ndarray
    outlier_fraction: float
    diagnostics: Diagnostics
    unconstrained: list
    settings: FitSettings
    star_samples: object = None
    inseparable: list = dc_field(default_factory=list)

    @property
    def hole_ids(self):
        """Ids of the holes in ``hole_samples`` (in its order)."""
        m = self.model
        return np.asarray(m.points.hole_ids)[m.block_sources[m.hole_blocks]]

    @property
    def star_names(self):
        """Names of the stars in ``star_samples`` (in its order)."""
        m = self.model
        return np.asarray(m.points.hole_ids)[m.block_sources[m.star_blocks]]

    @property
    def hyper_names(self):
        return self.model.hyper_names

    @property
    def param_names(self):
        return self.model.param_names

    @property
    def residual(self):
        """``(ResidualBasis, first column)`` of the residual field, or None without one."""
        m = self.model
        return (m.residual, int(m.res_cols[0])) if getattr(m, "n_res", 0) else None

    @property
    def unresolved(self):
        """The unresolved field's sd per draw (arcsec; :func:`astrocal.model.draws.unresolved_sd`)."""
        res = self.residual
        return draws.unresolved_sd(self.phi_samples, self.hyper_names, res[0] if res else None)

    def field_samples(self, x, y):
        """Samples of the field at the points: ``(u, v)`` each of shape (n_samples, N), arcsec
        (the polynomial, the residual field when the fit has one, and the unresolved field,
        :mod:`astrocal.model.draws`)."""
        return draws.field_samples(self.g_samples, self.degree, self.points.domain, x, y, self.residual,
                                   self.unresolved)

    def mean_field(self):
        """The posterior-mean field (arcsec)."""
        return self.model.field_from(self.g_samples.mean(axis=0))

    def map_uncertainty(self, x, y):
        """1-sigma of the field at the points, ``(sigma_u, sigma_v)`` arcsec."""
        return draws.map_uncertainty(self.g_samples, self.degree, self.points.domain, x, y, self.residual,
                                     self.unresolved)

    def pixel_scale_samples(self):
        """Samples of the areal pixel scale of the field's best affine part (arcsec/px)."""
        return draws.pixel_scale_samples(self.g_samples, self.degree, self.points.domain)

    @property
    def footprint(self):
        """Vertices (K, 2), pixels, of the convex hull of the points used (outliers left
        out): where the map is measured rather than extrapolated
        (:mod:`astrocal.model.footprint`)."""
        used = ~np.asarray(self.outliers, bool)
        return convex_footprint(self.points.x[used], self.points.y[used])

    def inside_footprint(self, x, y):
        """True where pixel ``(x, y)`` is inside the :attr:`footprint`; shape of ``x``."""
        return inside_footprint(self.footprint, x, y)


# --------------------------------------------------------------------------- helpers
def map_hyperparameters(model, phi0, scale=None):
    """Maximum a posteriori of the hyperparameters (bounded quasi-Newton from phi0).

    ``scale`` (ndim,), optional: the expected curvature's square root per hyperparameter
    (e.g. ``sqrt(diag(H))`` of a neighbouring model's Hessian of ``-log p``); the search
    runs in ``phi * scale``, where a unit step is about one posterior sd (the quasi-Newton
    method's first step and its line searches are then of the right size). The optimum is
    the same; only the path to it differs."""
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


def curvature_scale(model, known):
    """``scale`` for :func:`map_hyperparameters` from ``known`` (``{hyperparameter name: sqrt of the
    curvature}``, e.g. of the degree below); 1 where it names none or the value is not a
    positive number."""
    out = np.ones(model.ndim)
    for k, name in enumerate(model.hyper_names):
        v = (known or {}).get(name)
        if v is not None and np.isfinite(v) and v > 0:
            out[k] = v
    return out


def sqrt_curvature(names, hess):
    """``{name: sqrt(H_ii)}`` of a Hessian of ``-log p`` (positive diagonal entries only)."""
    d = np.diag(np.asarray(hess, float))
    return {n: float(np.sqrt(v)) for n, v in zip(names, d) if np.isfinite(v) and v > 0}


def _hessian(f, x, lo, hi, step=1e-3):
    """Numerical Hessian of ``f`` (vectorised over rows) at ``x`` by central differences.

    Second order in ``step`` (h) with ``n**2 + n + 1`` evaluations (one batched call) for
    ``n`` dimensions away from the bounds, about half the ``2 n (n + 1) + 1`` of the
    four-point formula for every pair: the diagonal from ``f(x +- 2h e_i)`` (the
    four-point formula's own diagonal, ``4 h**2 H_ii``), each mixed term from
    ``f(x + h (e_i + e_j)) + f(x - h (e_i + e_j)) - 2 f(x) = h**2 (H_ii + 2 H_ij + H_jj) +
    O(h**4)``. A hyperparameter within h of its bound ``lo``, ``hi`` (points beyond are
    clipped onto it, so its entries are one-sided values rather than curvatures) gets its
    mixed terms from the four-point formula ``f(x +- h e_i +- h e_j)``, as before.
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


def laplace_evidence(model, phi_map, logpost_map):
    """``log p(y | n)`` by a Laplace approximation over the hyperparameters.

    The linear parameters are integrated exactly by the model; only the handful of
    hyperparameters are approximated. Where the curvature is not negative definite (a
    hyperparameter at its bound), the prior range of that direction is used instead.
    """
    lo, hi = model.bounds()
    h = -_hessian(model.log_posterior, phi_map, lo, hi)
    w, v = np.linalg.eigh(h)
    # each eigen-direction contributes sqrt(2 pi / w), capped by the prior box's extent
    # along it (the normalised prior density times that length is the integral over a
    # direction the data leave flat)
    extent = np.abs(v).T @ (hi - lo)
    widths = np.where(w > 0, np.sqrt(2 * np.pi / np.maximum(w, 1e-300)), extent)
    widths = np.minimum(widths, extent)
    return float(logpost_map + np.sum(np.log(widths))), h


def residual_chi2(model, cond, points):
    """Chi-square (2 dof) of every point in ``points`` against the model's posterior mean."""
    r = model.residuals(cond.mean, cond.hole_mean, points)
    cov = noise_covariance(model, cond.phi, points)
    return np.einsum("na,nab,nb->n", r, np.linalg.inv(cov), r), r


def robust_start(points, degree, settings, max_iter=15, nsigma=10.0, floor_px=0.05):
    """Points to leave out before the mixture EM: iterative clipping of the residuals.

    A least-squares start is dragged by gross outliers (a misidentified spot is a whole
    pitch, hundreds of pixels, away), which then hide among equally bad residuals. So the
    residuals (pixels) are clipped at their median plus ``nsigma`` robust sigmas (MAD),
    never below ``floor_px``, and the fit is repeated on the rest until the set is stable.
    """
    excluded = np.zeros(points.n_points, bool)
    for _ in range(max_iter):
        model = JointModel(points, degree, hole_errors=False, priors=_with_residual(settings.priors, False),
                         excluded=excluded, flexure=settings.flexure)
        cond = model.conditional(model.initial_guess())
        _, r = residual_chi2(model, cond, points)
        rn = np.hypot(r[:, 0], r[:, 1]) / points.pixel_scale
        good = rn[~excluded]
        med = np.median(good)
        mad = 1.4826 * np.median(np.abs(good - med))
        new = rn > max(med + nsigma * mad, floor_px)
        if np.array_equal(new, excluded):
            break
        if new.mean() > 0.5:
            log.warning("robust start: more than half of the points look like outliers; "
                        "the data may not fit the model at this degree")
            break
        excluded = new
    return excluded


def find_outliers(points, degree, settings, jacobian_field):
    """Flag gross outliers by EM on a mixture of the model's noise and a broad Gaussian.

    Returns ``(excluded mask, outlier fraction, model, phi_map)``.
    """
    excluded = robust_start(points, degree, settings)
    frac = float(np.clip(excluded.mean(), 0.01, 0.5))
    s_out = settings.outlier_px * points.pixel_scale
    model = None
    phi = None
    for _ in range(settings.outlier_iterations):
        model = JointModel(points, degree, hole_errors=settings.hole_errors, jacobian_field=jacobian_field,
                         priors=_with_residual(settings.priors, False), excluded=excluded, flexure=settings.flexure)
        phi, _ = map_hyperparameters(model, model.initial_guess() if phi is None else phi)
        cond = model.conditional(phi)
        chi2, r = residual_chi2(model, cond, points)
        # densities of the 2-D residual under each component (common factors cancel)
        log_in = -0.5 * chi2 - 0.5 * np.linalg.slogdet(noise_covariance(model, cond.phi, points))[1]
        log_out = -0.5 * np.sum(r**2, axis=1) / s_out**2 - 2 * np.log(s_out)
        a = np.log(frac) + log_out
        b = np.log1p(-frac) + log_in
        gamma = 1.0 / (1.0 + np.exp(np.clip(b - a, -700, 700)))
        frac = float(np.clip(gamma.mean(), 1e-4, 0.5))
        new = gamma > 0.5
        if np.array_equal(new, excluded):
            break
        excluded = new
    return excluded, frac, model, phi


def noise_covariance(model, phi, points):
    """Focal-plane noise covariance (N, 2, 2) of ``points`` under ``model`` at ``phi``."""
    if model.jacobian_field is not None:
        _, _, jac = model.jacobian_field.jacobian(points.x, points.y)
    else:
        jac = np.broadcast_to(np.eye(2) * points.pixel_scale, (points.n_points, 2, 2))
    jit, kappa, _ = model.noise_scales(np.asarray(phi)[None])
    cov = kappa[0] ** 2 * (jac @ points.cov @ np.swapaxes(jac, 1, 2))
    return cov + np.eye(2) * jit[0, points.dataset][:, None, None] ** 2


def preliminary_field(points, degree, settings):
    """A first field (hyperparameters at their initial guess, no hole errors)."""
    model = JointModel(points, degree, hole_errors=False, priors=_with_residual(settings.priors, False),
                     flexure=settings.flexure)
    cond = model.conditional(model.initial_guess())
    return model.field_from(cond.mean)


def draw_linear(model, phi_samples, rng, batch=32, per_phi=1):
    """Exact draws of the linear parameters, ``per_phi`` for every hyperparameter sample
    (consecutive in the output)."""
    gs, ds = [], []
    for k in range(0, len(phi_samples), batch):
        g, d = model.sample_linear(phi_samples[k:k + batch], rng, per_phi=per_phi)
        gs.append(g)
        if d is not None:
            ds.append(d)
    return np.concatenate(gs), (np.concatenate(ds) if ds else None)


#: draws used by :func:`unconstrained_directions` (an evenly spaced subset of more)
UNCONSTRAINED_MAX_DRAWS = 5000


def unconstrained_directions(model, g_samples, threshold=0.5, hole_samples=None, phi_samples=None):
    """Names of the directions the data leave unconstrained: global parameters whose
    posterior width is more than ``threshold`` of the prior width, whitened combinations
    of them, and the hole errors when their posterior is as wide as their prior (the data
    do not separate them from the distortion)."""
    if len(g_samples) > UNCONSTRAINED_MAX_DRAWS:  # evenly spaced subset: the test needs widths only
        keep = np.linspace(0, len(g_samples) - 1, UNCONSTRAINED_MAX_DRAWS).astype(int)
        g_samples = g_samples[keep]
        hole_samples = None if hole_samples is None else hole_samples[keep]
        phi_samples = None if phi_samples is None else phi_samples[keep]
    phi_mid = None if phi_samples is None else np.median(phi_samples, axis=0)
    prior_sd = model.prior_sd(phi_mid if phi_mid is not None else model.initial_guess(), broad_field=True)
    # parameters that no point depends on (e.g. the chopper frame without lab offsets)
    # are not reported: nothing is claimed about them
    used = np.ones(model.G, bool)
    used[2 * model.nt:model.p0] = np.any(model.E != 0, axis=(0, 1))
    # the mask's net scale and shears are known from their prior alone, by design (the
    # field's affine part absorbs them): stated, not reported
    used[model.mask_cols] = False
    used[model.res_cols] = False  # a Gaussian process: away from the data its prior, by design
    pn = [model.param_names[k] for k in np.flatnonzero(used)]
    g_samples = g_samples[:, used]
    prior_sd = prior_sd[used]
    post = g_samples.std(axis=0, ddof=1)
    ratio = post / prior_sd
    names = [pn[k] for k in np.flatnonzero(ratio > threshold)]
    # also whitened eigen-directions (combinations of parameters)
    cov = np.cov(g_samples.T) / np.outer(prior_sd, prior_sd)
    w, v = np.linalg.eigh(cov)
    for k in np.flatnonzero(np.sqrt(np.maximum(w, 0)) > threshold):
        top = np.argsort(-np.abs(v[:, k]))[:3]
        combo = " + ".join(f"{v[i, k]:+.2f}*{pn[i]}" for i in top)
        if not any(pn[i] in names for i in top[:1]):
            names.append(f"combination {combo}")
    if hole_samples is not None and phi_samples is not None and model.i_hole is not None:
        # holes seen in one exposure only are never separable from the distortion (their
        # posterior is their prior by construction); the question is about the others
        hole_src = model.block_sources[model.hole_blocks]
        seen = np.bincount(model.points.hole, minlength=model.points.n_holes)[hole_src]
        multi = seen >= 2
        hole_sd = np.exp(np.median(phi_samples[:, model.i_hole]))
        if multi.any():
            ratio = np.median(hole_samples[:, multi].std(axis=0, ddof=1)) / hole_sd
            if ratio > threshold:
                names.append(f"hole_errors (posterior width {ratio:.2f} of the prior's: the data do "
                             "not separate the holes' errors from the distortion)")
        else:
            names.append("hole_errors (no hole is seen in two exposures)")
    return names


def weak_parameters(model):
    """Global parameters whose prior is a regulariser rather than a measurement: the field's
    coefficients, the flexure coefficients and the sky exposures' poses (the telescope's
    pointing, position angle and scale are not known to the accuracy that matters)."""
    weak = np.zeros(model.G, bool)
    weak[:2 * model.nt] = True
    weak[model.flex_cols] = True
    pts = model.points
    for e in range(pts.n_exposures):
        slot = model.pose_slot[e]
        if slot >= 0 and pts.exposure_kind[e] == 1:
            weak[model.p0 + 4 * slot:model.p0 + 4 * slot + 4] = True
    return weak


def inseparable_directions(model, phi, threshold=0.5, tol=1e-10):
    """Combinations of parameters that the data (and the measured priors: commanded offsets,
    catalogue errors, hole errors) do not separate, named by their largest members.

    The precision of the global parameters with the regularising priors
    (:func:`weak_parameters`) left out is whitened by those priors' widths; a direction
    whose whitened information is below ``1 / threshold**2 - 1`` would have a posterior
    wider than ``threshold`` of its prior (only the prior tells it). Returns a list of
    ``(description, members)``: flexure terms that mimic the instrument field (a sky-only
    fit), field terms that mimic the sky poses, and so on. A direction is "no information"
    when its Jacobi-scaled information is below ``tol`` (rounding level: the scaled matrix
    has a unit diagonal); a small but real information (e.g. a common shift of every sky
    exposure, told by the catalogue's errors only, ~1e-7 of what one exposure's stars
    give) is compared with its prior like any other.
    """
    phi = np.atleast_2d(np.asarray(phi, float))[:1]
    weak = weak_parameters(model)
    sys = model.system(phi, weak=weak)
    S = sys["S"][0]
    sd = model.prior_sd(phi, broad_field=True)
    idx = np.flatnonzero(weak)
    rest = np.flatnonzero(~weak)
    # information on the weak block after marginalising the others (their priors kept)
    Sww = S[np.ix_(idx, idx)]
    if rest.size:
        Swr = S[np.ix_(idx, rest)]
        Srr = S[np.ix_(rest, rest)]
        Sww = Sww - Swr @ np.linalg.solve(Srr, Swr.T)
    # Jacobi scaling keeps the eigen-decomposition well conditioned whatever the units
    dj = np.sqrt(np.maximum(np.diag(Sww), 1e-300))
    C = Sww / np.outer(dj, dj)
    w, v = np.linalg.eigh(0.5 * (C + C.T))
    limit = 1.0 / threshold**2 - 1.0
    out = []
    for k in range(w.size):
        # the combination theta = t x: the data give t a precision w[k], the priors
        # sum (x / sd)**2; only the prior tells t when the data's share is small
        x = v[:, k] / dj
        prior_prec = float(np.sum((x / sd[idx]) ** 2))
        null = w[k] < tol
        if not (null or w[k] < limit * prior_prec):
            continue
        why = "no information" if null else f"data information {w[k] / prior_prec:.2g} of its prior's"
        combo, members = _describe_direction(v[:, k], [model.param_names[i] for i in idx])
        out.append((f"{combo} ({why})", members))
    return out


def _describe_direction(vec, names, floor=0.1):
    """A readable name for a direction: per kind of parameter (field, flexure, each pose
    component) its largest members; a pose component shared by many exposures is summed
    up as one term."""
    vec = np.asarray(vec) / np.max(np.abs(vec))
    groups = {}
    for i, n in enumerate(names):
        kind = n.split("[", 1)[0]
        kind = "field" if kind in ("cu", "cv") else kind
        groups.setdefault(kind, []).append(i)
    parts, members = [], []
    for kind, ids in groups.items():
        ids = [i for i in ids if abs(vec[i]) >= floor]
        if not ids:
            continue
        ids.sort(key=lambda i: -abs(vec[i]))
        if kind.startswith("pose_") and len(ids) > 3:
            parts.append(f"{kind}[{len(ids)} exposures, mean {np.mean(vec[ids]):+.2f}]")
            members += [names[i] for i in ids]
            continue
        for i in ids[:3]:
            parts.append(f"{vec[i]:+.2f}*{names[i]}")
            members.append(names[i])
    return " + ".join(parts), members


def _progress(setting):
    if setting == "auto":
        return sys.stderr.isatty()
    return bool(setting)


_WORKER_MODEL = None


def _init_worker(model):
    global _WORKER_MODEL
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")
    _WORKER_MODEL = model


def _worker_log_posterior(phi):
    return _WORKER_MODEL.log_posterior(phi)


#: ``processes = "auto"``: walkers are split over a pool only for fits of at least this many
#: points (a dense mask: each walker's likelihood costs milliseconds); below it one process
#: is as fast, and tests and small fits start no pool
AUTO_POOL_POINTS = 4000
#: ``processes = "auto"``: at most this many worker processes
AUTO_POOL_MAX = 4


def pool_size(processes, n_points):
    """The worker processes of a fit of ``n_points`` points for the setting ``processes``
    (an integer, or ``"auto"``: the CPUs this process may use, at most
    :data:`AUTO_POOL_MAX`, when ``n_points >= AUTO_POOL_POINTS``, else 1).

    The chain does not depend on it: each walker's log-posterior is computed alone, so a
    split batch gives the same numbers bit for bit (``tests/model/test_fit.py``)."""
    if processes == "auto":
        if n_points < AUTO_POOL_POINTS:
            return 1
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover - not on Linux
            cores = os.cpu_count() or 1
        return max(1, min(cores, AUTO_POOL_MAX))
    return max(int(processes), 1)


class PooledPosterior:
    """``log_posterior`` of a batch of walkers split over a process pool.

    emcee evaluates the walkers of a step together (``vectorize=True``); this splits the
    batch into one chunk per process. The model is sent to each worker once.
    """

    def __init__(self, model, processes):
        import multiprocessing as mp

        self.processes = int(processes)
        ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
        self.pool = ctx.Pool(self.processes, initializer=_init_worker, initargs=(model,))

    def __call__(self, phi):
        chunks = np.array_split(np.atleast_2d(phi), self.processes)
        chunks = [c for c in chunks if len(c)]
        return np.concatenate(self.pool.map(_worker_log_posterior, chunks))

    def close(self):
        self.pool.close()
        self.pool.join()


def default_moves():
    """The emcee moves of the hyperparameter chain: ``[(move, weight), ...]``.

    One :class:`~astrocal.model.moves.AdaptiveIndependenceMove`: differential evolution
    until its proposal is set (from the Laplace approximation at the start, refitted from
    the chain at the steps of :func:`~astrocal.model.proposal.adaptation_schedule`), then mostly independence
    proposals. No DESnookerMove: emcee 3.1.6's does not leave the target invariant (sds a
    few per cent too small; fixed upstream in dfm/emcee#531)."""
    from .moves import AdaptiveIndependenceMove

    return [(AdaptiveIndependenceMove(), 1.0)]


def run_emcee(model, phi_map, settings, hessian=None):
    """Sample the hyperparameters with emcee; returns (chain, sampler)."""
    import emcee

    from .chainstore import BlockBackend, stored_iteration
    from .moves import AdaptiveIndependenceMove

    lo, hi = model.bounds()
    rng = np.random.default_rng(settings.seed)
    ndim = model.ndim
    nwalkers = max(int(settings.walkers), 2 * ndim + 2)
    scale = np.full(ndim, 1e-2)
    if hessian is not None:
        try:
            cov = np.linalg.inv(hessian)
            scale = np.sqrt(np.clip(np.diag(cov), 1e-8, 1.0))
        except np.linalg.LinAlgError:
            pass
    p0 = phi_map + scale * rng.standard_normal((nwalkers, ndim))
    p0 = np.clip(p0, lo + 1e-9, hi - 1e-9)
    start = laplace_proposal(phi_map, hessian, lo, hi) if hessian is not None else None
    backend = None
    if settings.backend_path is not None:
        path = Path(settings.backend_path)
        names = json.dumps(list(model.hyper_names))
        if settings.resume and path.exists() and stored_iteration(path) > 0:
            backend = BlockBackend.load(path)
            if backend.shape != (nwalkers, ndim):
                raise ChainMismatchError(f"{path}: the chain to resume has walkers/dimensions "
                                 f"{backend.shape}, this fit needs {(nwalkers, ndim)}")
            stored = backend.attrs.get("hyper_names")
            if stored != names:
                raise ChainMismatchError(f"{path}: the chain to resume has the hyperparameters "
                                 f"{stored or '(not recorded)'}, this fit {names}")
            _check_chain_record(path, backend.attrs.get("chain_record"), settings.chain_record)
        else:
            attrs = {"hyper_names": names}
            if settings.chain_record is not None:
                attrs["chain_record"] = json.dumps(settings.chain_record, sort_keys=True)
            backend = BlockBackend(path, attrs=attrs)
            backend.reset(nwalkers, ndim)
            backend.write()  # the empty chain with what it was started with
    moves = default_moves()
    points = getattr(model, "points", None)  # the LMS model has none: one process unless told
    n_pool = pool_size(settings.processes, points.n_points if points is not None else 0)
    pooled = PooledPosterior(model, n_pool) if n_pool > 1 else None
    if pooled is not None:
        log.info("emcee's walkers split over %d processes", n_pool)
    sampler = emcee.EnsembleSampler(nwalkers, ndim, pooled or model.log_posterior, vectorize=True,
                                    backend=backend, moves=moves)
    try:
        move = next((m for m, _ in moves if isinstance(m, AdaptiveIndependenceMove)), None)
        return _run_blocks(sampler, backend, p0, settings, move, (lo, hi), start)
    finally:
        if pooled is not None:
            pooled.close()


class ChainMismatchError(AstrocalError, ValueError):
    """The chain to resume was started with another campaign, seed or model settings."""


def _check_chain_record(path, stored, record):
    """Refuse to resume the chain in ``path`` when what it was started with (``stored``,
    the JSON text of its ``chain_record`` attr, or None) differs from this fit's
    ``record``, naming every difference."""
    if record is None:
        return
    if stored is None:
        raise ChainMismatchError(f"{path}: the chain records nothing of the campaign and settings it was "
                                 "started with (an older astrocal wrote it); it cannot be resumed safely: "
                                 "start again with --overwrite")
    stored = json.loads(stored)
    record = json.loads(json.dumps(record, sort_keys=True))
    changed = [f"{k}: {stored.get(k)!r} -> {record.get(k)!r}" for k in sorted(set(stored) | set(record))
               if stored.get(k) != record.get(k)]
    if changed:
        raise ChainMismatchError(f"{path}: the chain was started with other inputs than this fit's; not "
                                 f"resumed ({'; '.join(changed)}); restore them, or start again with --overwrite")




def _adapt(move, chain, step, bounds, start):
    """Set ``move``'s proposal for the chain from ``step`` on: the Laplace one (``start``)
    before the first refit, then one fitted to the second half of the steps since the
    previous refit (all walkers) at each refit of :func:`~astrocal.model.proposal.adaptation_schedule`;
    at the last refit, none (differential evolution alone) when the acceptance since the
    refit before is still below :data:`~astrocal.model.proposal.MIN_ADAPTED_ACCEPTANCE`.
    It depends on the stored chain only, so a resumed chain gets the same proposal."""
    past = None if chain is None else chain[:step]
    refits, ended, keep = adaptation_schedule(past)
    fits = [s for s in refits if s <= step]
    if not fits:
        move.proposal = start
        return
    s = fits[-1]
    prev = ([0] + [t for t in refits if t < s])[-1]
    window = chain[(prev + s) // 2:s]
    try:
        move.proposal = fit_proposal(window.reshape(-1, chain.shape[2]), *bounds)
    except ValueError:  # too few distinct samples: keep the one in use
        log.debug("proposal not refitted at step %d", s)
    accepted = acceptance(chain, prev, s)
    if ended and not keep:
        move.proposal = None
        log.info("independence proposal off from step %d: acceptance %.2f over steps %d-%d is below "
                 "%.2f; differential evolution alone", s, accepted, prev, s, MIN_ADAPTED_ACCEPTANCE)
    elif not ended:
        log.info("independence proposal refitted at step %d (acceptance %.2f over steps %d-%d); adapting "
                 "until step %d", s, accepted, prev, s, refits[-1])


def _run_blocks(sampler, backend, p0, settings, move=None, bounds=None, start=None):
    import emcee

    done = backend.iteration if backend is not None else 0
    if done > 0:
        state = backend.get_last_sample()
        log.info("resuming the chain at step %d", done)
    else:
        state = emcee.State(p0, random_state=np.random.RandomState(settings.seed).get_state())
    if move is not None:
        _adapt(move, sampler.get_chain() if done else None, done, bounds, start)
    # run in blocks, stopping once the chain after adaptation is >= 50 tau long and every
    # hyperparameter has target_neff effective samples after burn-in (a deterministic
    # rule, so a resumed run stops where an uninterrupted one would)
    every = int(settings.check_every)
    bar = None
    if _progress(settings.progress):
        from tqdm import tqdm

        bar = tqdm(total=int(settings.steps), initial=done, desc="emcee", unit="step")
    while done < settings.steps:
        if done >= settings.min_steps and _converged(sampler.get_chain(), settings):
            break
        refits, planned = [], []
        if move is not None:
            planned, _, _ = adaptation_schedule(sampler.get_chain() if done else None)
            refits = [s for s in planned if s > done]
        stop = min(done - done % every + every, int(settings.steps), *refits)
        n = stop - done
        state = sampler.run_mcmc(state, n, skip_initial_state_check=True)
        done += n
        if move is not None and done in planned:
            _adapt(move, sampler.get_chain(), done, bounds, start)
        if backend is not None:
            backend.write()  # once per block: a kill or a failed write loses one block at most
        if bar is not None:
            bar.update(n)
    if bar is not None:
        bar.close()
    return sampler.get_chain(), sampler


def chain_summary(chain, burn="auto"):
    """``(tau, burn, n_effective, converged)`` of a chain (steps, walkers, ndim).

    The steps before the end of adaptation (the last refit,
    :func:`~astrocal.model.proposal.adaptation_end`, when the chain is at least twice that
    long) are burn-in; ``tau`` (steps, per hyperparameter) is
    estimated on the chain after them; ``burn`` ``"auto"`` adds 5 ``tau`` (at least a tenth
    and at most half of the steps after adaptation), an int fixes it; ``converged``: the
    chain after adaptation is at least 50 ``tau`` long.
    """
    import emcee

    steps, nwalkers, ndim = chain.shape
    end = adaptation_end(chain)
    adapted = end if steps >= 2 * end else 0
    after = chain[adapted:]
    quiet = logging.getLogger("emcee.autocorr")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # a short chain is expected here: that is what we test
    try:
        tau = emcee.autocorr.integrated_time(after, quiet=True)
    except Exception:  # pragma: no cover - emcee raises several types
        tau = np.full(ndim, np.nan)
    finally:
        quiet.setLevel(level)
    length = steps - adapted
    tau_max = float(np.nanmax(tau)) if np.isfinite(tau).any() else float(length)
    if burn == "auto":
        burn = adapted + int(min(max(5 * tau_max, 0.1 * length), length // 2))
    else:
        burn = int(burn)
    kept = steps - burn
    n_eff = kept * nwalkers / np.where(np.isfinite(tau), tau, max(kept, 1))
    converged = bool(np.all(np.isfinite(tau)) and length >= 50 * tau_max)
    return tau, burn, n_eff, converged


def _converged(chain, settings):
    if chain.shape[0] < 2 * adaptation_end(chain):  # not before twice the adaptation's length
        return False
    tau, _, n_eff, converged = chain_summary(chain, settings.burn)
    return converged and bool(np.all(n_eff >= settings.target_neff))


def diagnostics(chain, sampler, settings):
    """Autocorrelation times, burn-in, effective samples and warnings of a chain.

    ``chain`` has shape (steps, walkers, ndim); ``sampler`` the emcee sampler (for its
    acceptance fractions); ``settings.burn`` is ``"auto"`` or a number of steps
    (:func:`chain_summary`). Returns a :class:`Diagnostics`.
    """
    steps = chain.shape[0]
    notes = []
    tau, burn, n_eff, converged = chain_summary(chain, settings.burn)
    tau_max = float(np.nanmax(tau)) if np.isfinite(tau).any() else float(steps)
    if not np.all(np.isfinite(tau)):
        notes.append("autocorrelation time not estimated")
    if not converged:
        notes.append(f"ConvergenceWarning: chain of {steps} steps is shorter than 50 "
                     f"autocorrelation times (max tau {tau_max:.1f}) after adaptation; run more steps")
    acc = float(np.mean(sampler.acceptance_fraction))
    if not 0.15 <= acc <= 0.95:
        notes.append(f"ConvergenceWarning: mean acceptance fraction {acc:.2f} is unusual")
    return Diagnostics(tau, acc, steps, burn, n_eff, converged, notes)


def degree_probabilities(evidence):
    """Posterior probability of each degree of the evidence table (rows with ``degree`` and
    ``log_evidence``), equal prior odds over the degrees tried; written into every row as
    ``probability`` (NaN for a degree without a finite evidence) and returned."""
    logz = np.array([e["log_evidence"] for e in evidence], float)
    ok = np.isfinite(logz)
    prob = np.full(logz.size, np.nan)
    if ok.any():
        w = np.exp(logz[ok] - logz[ok].max())
        prob[ok] = w / w.sum()
    for e, p in zip(evidence, prob):
        e["probability"] = float(p)
    return prob


def choose_model(evidence, rule="median"):
    """``(degree, residual)`` to fit from an evidence table whose rows may also differ by
    ``residual`` (polynomial alone, or with the residual field: ``Priors.residual =
    "auto"``). Every row gets its ``probability`` (equal prior odds over the rows). The
    degree is chosen by ``rule`` from the probabilities summed over the variants of each
    degree (:func:`choose_degree`'s rules); the variant is the more probable one at that
    degree (``"best"``: the single most probable row)."""
    _check_rule(rule)
    prob = degree_probabilities(evidence)
    ok = np.isfinite(prob)
    if not ok.any():
        raise DataError("no degree has a finite evidence")
    deg = np.array([e["degree"] for e in evidence])
    res = np.array([bool(e.get("residual", False)) for e in evidence])
    if rule == "best":
        k = np.flatnonzero(ok)[np.argmax(prob[ok])]
        return int(deg[k]), bool(res[k])
    degrees = np.unique(deg[ok])
    per_degree = np.array([prob[ok & (deg == d)].sum() for d in degrees])
    d = int(degrees[np.searchsorted(np.cumsum(per_degree), 0.5 - 1e-12)])
    rows = np.flatnonzero(ok & (deg == d))
    return d, bool(res[rows[np.argmax(prob[rows])]])


def choose_degree(evidence, rule="median"):
    """The degree to fit from the evidence table (rows with ``degree``, ``log_evidence``).

    Adds every row's ``probability`` (:func:`degree_probabilities`). ``rule``: ``"median"``
    (the default) is the posterior median degree, the smallest whose cumulative probability
    reaches 1/2; ``"best"`` the largest evidence. With the learnt field widths a degree
    nests every lower one (widths that shrink to zero), so a degree above the field's costs
    little but one below leaves terms out of the map's intervals; the evidence of the
    degrees above a field's true one is nearly flat (each adds a little Occam cost), and
    when its true high-order terms are small against the noise the largest single evidence
    is often a degree too low while the degrees above it together hold more probability.
    The median follows that mass (``docs/model.md``, "Inference"). The degree of
    :func:`choose_model` (one row per degree: its degree alone).
    """
    return choose_model(evidence, rule)[0]


def _scan_variant(points, settings, jac_field, excluded, degrees, residual):
    """The scan's models of one residual variant, degree after degree: ``[(VariantFit, None)
    or (None, note)]``. Each MAP search starts from the degree below's MAP, in the scale of
    its curvature; the residual's basis is refined later, once every row is known
    (:func:`_refine_residual_rows`). A variant's models depend on nothing of the other's."""
    priors = _with_residual(settings.priors, residual)
    out, start, curvature = [], None, None
    for n in degrees:
        try:
            vf = fit_variant(points, n, priors, settings, jac_field, excluded, start=start,
                             curvature=curvature, refine=False)
        except ValueError as exc:
            out.append((None, str(exc)))
            continue
        start, curvature = dict(zip(vf.hyper_names, vf.phi)), vf.curvature
        out.append((vf, None))
    return out


def _scan_variant_worker(args):
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        return _scan_variant(*args)


def _scan_variants(points, settings, jac_field, excluded, degrees, variants):
    """``{residual: _scan_variant(...)}`` for every variant: one after the other, or each in
    its own process when the fit splits its work (:func:`pool_size` of ``settings.processes``
    above one and more than one variant). The models are the same either way, bit for bit."""
    args = [(points, settings, jac_field, excluded, degrees, res) for res in variants]
    n_pool = min(pool_size(settings.processes, points.n_points), len(variants))
    if n_pool <= 1:
        return {res: _scan_variant(*a) for res, a in zip(variants, args)}
    import multiprocessing as mp

    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
    log.info("the evidence scan's %d variants in %d processes", len(variants), n_pool)
    with ctx.Pool(n_pool) as pool:
        return dict(zip(variants, pool.map(_scan_variant_worker, args)))


def _residual_variants(priors):
    """The residual-field variants a fit compares (``Priors.residual``): ``[False]``
    (polynomial alone), ``[True]`` (with the residual field) or both (``"auto"``)."""
    mode = priors.residual
    if mode not in ("none", "matern52", "auto"):
        raise ValueError(f"Priors.residual must be 'none', 'matern52' or 'auto', got {mode!r}")
    return {"none": [False], "matern52": [True], "auto": [False, True]}[mode]


def _with_residual(priors, residual):
    """``priors`` for one variant: the residual field on (Matérn-5/2) or off."""
    from dataclasses import replace

    return replace(priors, residual="matern52" if residual else "none")


def laplace_draws(model, phi_map, hessian, n, rng):
    """``n`` hyperparameter draws (n, ndim) from the Laplace approximation at ``phi_map``
    (``hessian`` of ``-log p``): a Gaussian in the logit of each hyperparameter's padded
    prior interval (:func:`astrocal.model.proposal.laplace_proposal`), so every draw lies
    inside the prior; the quick look's stand-in for the emcee chain. A Hessian that is not
    positive definite is regularised by its eigenvalues' magnitudes."""
    lo, hi = model.bounds()
    prop = laplace_proposal(phi_map, hessian, lo, hi)
    if prop is None:
        w, v = np.linalg.eigh(0.5 * (hessian + hessian.T))
        w = np.maximum(np.abs(w), 1e-12 * max(np.abs(w).max(), 1e-300))
        prop = laplace_proposal(phi_map, (v * w) @ v.T, lo, hi)
    z = prop.mean + rng.standard_normal((int(n), model.ndim)) @ prop.chol.T
    return np.clip(prop.to_phi(z), lo, hi)


def _check_rule(rule):
    if rule not in ("median", "best"):
        raise ValueError(f"FitSettings.degree_choice must be 'median' or 'best', got {rule!r}")


def fit_joint(points, settings=None):
    """Fit the lab model to identified points; returns a :class:`Fit`.

    Linear algebra runs single-threaded (the batched small products gain nothing from
    threaded BLAS and suffer from it on a shared machine); parallelism comes from
    evaluating the walkers together.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        return _fit_joint(points, settings or FitSettings())


#: the scan refines the residual basis of a row (:func:`~astrocal.model.refinement.refine_variant`)
#: unless its evidence is more than this many nats, plus the largest rise any refinement
#: gave so far, below the best row's (probability below e**-10 of the best's either way)
REFINE_MARGIN_NATS = 10.0


def _refine_residual_rows(points, settings, jac_field, excluded, evidence, fitted, rows):
    """Refine the residual basis of the scan's rows with the residual (``fitted``: their
    :class:`~astrocal.model.refinement.VariantFit` by ``(degree, residual)``, ``rows``: their
    positions in ``evidence``), the most probable first, in place. A row whose evidence
    is more than :data:`REFINE_MARGIN_NATS` plus the largest rise any refinement gave below
    the best row's is left at its first basis: to matter, its refinement would have to
    raise it by more than the margin beyond any rise seen (on the benchmarks' campaigns the
    degree and variant chosen are those of the scan that refined every row); its row says
    so (``residual_refinement``)."""
    from .refinement import refine_variant

    keys = sorted((k for k in fitted if k[1]), key=lambda k: -np.nan_to_num(evidence[rows[k]]["log_evidence"], nan=-np.inf))
    gain = 0.0
    for key in keys:
        row = evidence[rows[key]]
        base = float(row["log_evidence"])
        best = max(float(e["log_evidence"]) for e in evidence if np.isfinite(e["log_evidence"]))
        if base + gain + REFINE_MARGIN_NATS < best:
            row["residual_refinement"] = (f"not tried: {best - base:.1f} nats below the best model, more than "
                                          f"{REFINE_MARGIN_NATS:g} + {gain:.1f} (the largest rise a refinement gave)")
            continue
        vf = refine_variant(fitted[key], points, key[0], settings, jac_field, excluded,
                            baseline_evidence(evidence, key[0]))
        gain = max(gain, float(vf.row["log_evidence"]) - base)
        fitted[key] = vf
        row.update(vf.row)


def _fit_joint(points, settings):
    rng = np.random.default_rng(settings.seed)
    _check_rule(settings.degree_choice)
    if settings.degree == "auto":
        degrees = list(range(settings.degree_range[0], settings.degree_range[1] + 1))
    else:
        degrees = [int(settings.degree)]
    middle = degrees[len(degrees) // 2]
    jac_field = preliminary_field(points, middle, settings)
    excluded, frac, _, _ = find_outliers(points, middle, settings, jac_field)
    if excluded.any():
        log.info("flagged %d of %d points as outliers (mixture fraction %.3f)",
                 int(excluded.sum()), points.n_points, frac)
    variants = _residual_variants(settings.priors)
    evidence = []
    fitted = {}
    rows = {}  # (degree, residual) -> its row's position in the evidence table
    scans = _scan_variants(points, settings, jac_field, excluded, degrees, variants)
    for k, n in enumerate(degrees):
        for res in variants:
            row = {"degree": n, "residual": res} if len(variants) > 1 or res else {"degree": n}
            vf, note = scans[res][k]
            if vf is None:
                evidence.append({**row, "log_evidence": np.nan, "note": note})
                continue
            rows[(n, res)] = len(evidence)
            evidence.append({**row, **vf.row})
            fitted[(n, res)] = vf
    _refine_residual_rows(points, settings, jac_field, excluded, evidence, fitted, rows)
    # kept: the MAP, the Hessian, the field for the final Jacobian and the priors with the
    # basis kept (not the model, whose components are large)
    fitted = {k: (vf.phi, vf.hess, vf.jac_field, vf.priors) for k, vf in fitted.items()}
    if not fitted:
        raise DataError("no degree could be fitted: " + "; ".join(e.get("note", "") for e in evidence))
    if settings.degree == "auto" or len(variants) > 1:
        # a degree asked for has one degree in the table: the rule then picks its variant
        degree, residual = choose_model(evidence, settings.degree_choice)
    else:
        degree, residual = degrees[0], variants[0]
        degree_probabilities(evidence)
    if settings.degree == "auto":
        if len(degrees) > 1 and degree == max(degrees):
            note = (f"DegreeRangeWarning: degree {degree} is the highest of degree_range "
                    f"{list(settings.degree_range)}: the field may need a higher degree, or hold structure no "
                    "polynomial of this degree represents (the map's 1-sigma does not cover it); widen "
                    "[fit] degree_range")
            log.warning("%s", note)
            warnings.warn(note, DegreeRangeWarning, stacklevel=2)
    phi_map, hess, jac_field, priors = fitted[(degree, residual)]
    del fitted
    # the model again with the final Jacobian (from the chosen degree's fit)
    model = JointModel(points, degree, hole_errors=settings.hole_errors, jacobian_field=jac_field,
                     priors=priors, excluded=excluded, flexure=settings.flexure)
    phi_map, lp = map_hyperparameters(model, phi_map)
    if settings.sampler == "laplace":
        hess = -_hessian(model.log_posterior, phi_map, *model.bounds())
        phi_samples = laplace_draws(model, phi_map, hess, settings.n_draws, rng)
        chain = phi_samples[:, None, :]
        diag = Diagnostics(np.full(model.ndim, np.nan), float("nan"), 0, 0,
                           np.full(model.ndim, float(len(phi_samples))), None,
                           ["quick look: hyperparameters from the Laplace approximation at their MAP, "
                            "not sampled by emcee"])
    else:
        chain, sampler = run_emcee(model, phi_map, settings, hess)
        diag = diagnostics(chain, sampler, settings)
        for note in diag.warnings:
            log.warning("%s", note)
            warnings.warn(note.removeprefix("ConvergenceWarning: "), ConvergenceWarning, stacklevel=2)
        flat = chain[diag.n_burn:].reshape(-1, model.ndim)
        take = min(settings.n_draws, flat.shape[0])
        idx = np.linspace(0, flat.shape[0] - 1, take).astype(int)
        phi_samples = flat[idx]
    g, d = draw_linear(model, phi_samples, rng, per_phi=settings.draws_per_phi)
    phi_samples = np.repeat(phi_samples, settings.draws_per_phi, axis=0)  # one row per draw
    holes = stars = None
    if d is not None:
        holes = d[:, model.hole_blocks] if model.i_hole is not None else None
        stars = d[:, model.star_blocks] if model.star_blocks.size else None
    loose = unconstrained_directions(model, g, hole_samples=holes, phi_samples=phi_samples)
    for name in loose:
        log.warning("GaugeWarning: %s is not constrained by the data (posterior width "
                    "> 1/2 of the prior's); it is not a measurement", name)
    inseparable = [desc for desc, _ in inseparable_directions(model, phi_map)]
    for desc in inseparable:
        log.warning("GaugeWarning: the data do not separate %s; only the priors tell these "
                    "terms apart", desc)
    return Fit(model=model, points=points, degree=degree, evidence=evidence, phi_map=phi_map,
                  phi_chain=chain, phi_samples=phi_samples, g_samples=g, hole_samples=holes,
                  outliers=excluded, outlier_fraction=frac, diagnostics=diag,
                  unconstrained=loose, settings=settings, star_samples=stars, inseparable=inseparable)


# the names this module's model classes and functions had before issue 20 (they also hold
# sky data): kept for one release, with a DeprecationWarning
from .._moved import renamed  # noqa: E402

__getattr__ = renamed(__name__, {'LabFit': 'Fit', 'fit_lab': 'fit_joint'})
