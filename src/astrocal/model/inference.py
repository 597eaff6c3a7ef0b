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
   refined for the rows that can matter
   (:func:`~astrocal.model.selection.refine_residual_rows`); the posterior median degree is
   kept (:func:`~astrocal.model.selection.choose_degree`; or the degree asked for);
4. emcee samples the hyperparameters (walkers evaluated together), writing the chain to
   HDF5 once per block of steps (:mod:`astrocal.model.chainstore`) so a killed run resumes;
5. for every kept hyperparameter sample, the linear parameters are drawn exactly from
   their Gaussian conditional.

Each step has its module: :mod:`astrocal.model.outliers` (1, 2),
:mod:`astrocal.model.laplace` and :mod:`astrocal.model.selection` (3),
:mod:`astrocal.model.sampling` (4), :meth:`astrocal.model.joint.JointModel.sample_linear` (5),
and :mod:`astrocal.model.identifiability` the gauge warnings of the result.
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field as dc_field
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from . import draws
from .data import DataError, Points
from .footprint import convex_footprint, inside_footprint
from .identifiability import inseparable_directions, unconstrained_directions
from .joint import JointModel
from .laplace import laplace_draws, map_hyperparameters, numerical_hessian
from .outliers import find_outliers, preliminary_field
from .priors import Priors
from .sampling import Diagnostics, diagnostics, run_emcee
from .selection import (check_rule, choose_model, degree_probabilities, quick_scan_variants, refine_residual_rows,
                        residual_variants, scan_variants)

if TYPE_CHECKING:
    from ..field import DistortionField
    from ..field.residual import ResidualBasis

log = logging.getLogger(__name__)



class DegreeRangeWarning(UserWarning):
    """With ``degree = "auto"``, the degree chosen is the highest one tried."""


class ConvergenceWarning(UserWarning):
    """The chain is shorter than 50 autocorrelation times, or tau could not be estimated."""


class GaugeWarning(UserWarning):
    """A direction of parameter space is not constrained by the data (only by its prior)."""


#: ``{sampler: (hyperparameter samples, exact linear draws per sample)}`` by default: 4000
#: draws either way. The quick look takes fewer hyperparameter samples (each costs a
#: factorisation of the normal equations, the extra draws of one sample almost nothing): its
#: Laplace approximation is a smooth Gaussian that 250 samples represent as well as the
#: map's 1-sigma needs (docs/model.md, "The quick look")
DRAW_COUNTS = {"emcee": (1000, 4), "laplace": (250, 16)}


def draw_counts(settings: FitSettings) -> tuple[int, int]:
    """The hyperparameter samples and the exact draws per sample a fit keeps.

    Parameters
    ----------
    settings : FitSettings
        ``n_draws`` and ``draws_per_phi``; where None, :data:`DRAW_COUNTS` of ``sampler``.

    Returns
    -------
    tuple of int
        ``(n_draws, draws_per_phi)``.
    """
    n, per = DRAW_COUNTS.get(settings.sampler, DRAW_COUNTS["emcee"])
    return (int(settings.n_draws) if settings.n_draws is not None else n,
            int(settings.draws_per_phi) if settings.draws_per_phi is not None else per)


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
    #: hyperparameter samples kept (thinned evenly from the chain, or drawn from the quick
    #: look's Laplace approximation); None: :data:`DRAW_COUNTS` of the sampler
    n_draws: int | None = None
    #: exact draws of the linear parameters for each kept sample; None: :data:`DRAW_COUNTS`
    draws_per_phi: int | None = None
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
    def hole_ids(self) -> np.ndarray:
        """Ids of the holes in ``hole_samples`` (in its order)."""
        m = self.model
        return np.asarray(m.points.hole_ids)[m.block_sources[m.hole_blocks]]

    @property
    def star_names(self) -> np.ndarray:
        """Names of the stars in ``star_samples`` (in its order)."""
        m = self.model
        return np.asarray(m.points.hole_ids)[m.block_sources[m.star_blocks]]

    @property
    def hyper_names(self) -> list[str]:
        """The hyperparameters' names (the columns of ``phi_samples``)."""
        return self.model.hyper_names

    @property
    def param_names(self) -> list[str]:
        """The global parameters' names (the columns of ``g_samples``)."""
        return self.model.param_names

    @property
    def residual(self) -> tuple[ResidualBasis, int] | None:
        """``(ResidualBasis, first column)`` of the residual field, or None without one."""
        m = self.model
        return (m.residual, int(m.res_cols[0])) if getattr(m, "n_res", 0) else None

    @property
    def unresolved(self) -> np.ndarray | float:
        """The unresolved field's sd per draw (arcsec; :func:`astrocal.model.draws.unresolved_sd`)."""
        res = self.residual
        return draws.unresolved_sd(self.phi_samples, self.hyper_names, res[0] if res else None)

    def field_samples(self, x: ArrayLike, y: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """Samples of the field at the points.

        The polynomial, the residual field when the fit has one, and the unresolved field
        (:mod:`astrocal.model.draws`).

        Parameters
        ----------
        x, y : array_like
            Detector pixels (0-based), same shape.

        Returns
        -------
        tuple of numpy.ndarray
            ``(u, v)``, each (n_samples, N), arcsec.
        """
        return draws.field_samples(self.g_samples, self.degree, self.points.domain, x, y, self.residual,
                                   self.unresolved)

    def mean_field(self) -> DistortionField:
        """The posterior-mean field (arcsec).

        Returns
        -------
        DistortionField
            The field of the mean of ``g_samples``.
        """
        return self.model.field_from(self.g_samples.mean(axis=0))

    def map_uncertainty(self, x: ArrayLike, y: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """1-sigma of the field at the points.

        Parameters
        ----------
        x, y : array_like
            Detector pixels (0-based), same shape.

        Returns
        -------
        tuple of numpy.ndarray
            ``(sigma_u, sigma_v)``, arcsec.
        """
        return draws.map_uncertainty(self.g_samples, self.degree, self.points.domain, x, y, self.residual,
                                     self.unresolved)

    def pixel_scale_samples(self) -> np.ndarray:
        """Samples of the areal pixel scale of the field's best affine part.

        Returns
        -------
        numpy.ndarray
            One per draw, arcsec/px.
        """
        return draws.pixel_scale_samples(self.g_samples, self.degree, self.points.domain)

    @property
    def footprint(self) -> np.ndarray:
        """Vertices (K, 2), pixels, of the convex hull of the points used (outliers left
        out): where the map is measured rather than extrapolated
        (:mod:`astrocal.model.footprint`)."""
        used = ~np.asarray(self.outliers, bool)
        return convex_footprint(self.points.x[used], self.points.y[used])

    def inside_footprint(self, x: ArrayLike, y: ArrayLike) -> np.ndarray:
        """Where pixels are inside the :attr:`footprint`.

        Parameters
        ----------
        x, y : array_like
            Detector pixels (0-based), same shape.

        Returns
        -------
        numpy.ndarray
            Bool, shape of ``x``.
        """
        return inside_footprint(self.footprint, x, y)



def draw_linear(model: JointModel, phi_samples: np.ndarray, rng: np.random.Generator, batch: int = 32,
                per_phi: int = 1) -> tuple[np.ndarray, np.ndarray | None]:
    """Exact draws of the linear parameters, ``per_phi`` for every hyperparameter sample
    (consecutive in the output).

    Parameters
    ----------
    model : JointModel
        The model.
    phi_samples : numpy.ndarray
        Hyperparameter samples (n, ndim).
    rng : numpy.random.Generator
        The random numbers.
    batch : int
        Samples per call of :meth:`JointModel.sample_linear`.
    per_phi : int
        Draws per sample.

    Returns
    -------
    tuple
        ``g`` (n * per_phi, G) and the source blocks' errors (n * per_phi, H, 2), arcsec, or
        None without blocks.
    """
    gs, ds = [], []
    for k in range(0, len(phi_samples), batch):
        g, d = model.sample_linear(phi_samples[k:k + batch], rng, per_phi=per_phi)
        gs.append(g)
        if d is not None:
            ds.append(d)
    return np.concatenate(gs), (np.concatenate(ds) if ds else None)



def fit_joint(points: Points, settings: FitSettings | None = None) -> Fit:
    """Fit the joint model to identified points (the steps of the module notes).

    Linear algebra runs single-threaded (the batched small products gain nothing from
    threaded BLAS and suffer from it on a shared machine); parallelism comes from
    evaluating the walkers together.

    Parameters
    ----------
    points : Points
        Lab points, sky points or both (:func:`astrocal.model.data.join_points`).
    settings : FitSettings, optional
        Default: ``FitSettings()``.

    Returns
    -------
    Fit
        The posterior.

    Raises
    ------
    DataError
        No degree could be fitted.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        return _fit_joint(points, settings or FitSettings())



def _fit_joint(points, settings):
    rng = np.random.default_rng(settings.seed)
    check_rule(settings.degree_choice)
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
    variants = residual_variants(settings.priors)
    evidence = []
    fitted = {}
    rows = {}  # (degree, residual) -> its row's position in the evidence table
    scan = quick_scan_variants if settings.sampler == "laplace" else scan_variants
    scans = scan(points, settings, jac_field, excluded, degrees, variants)
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
    refine_residual_rows(points, settings, jac_field, excluded, evidence, fitted, rows)
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
    n_draws, per_phi = draw_counts(settings)
    if settings.sampler == "laplace":
        hess = -numerical_hessian(model.log_posterior, phi_map, *model.bounds())
        phi_samples = laplace_draws(model, phi_map, hess, n_draws, rng)
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
        take = min(n_draws, flat.shape[0])
        idx = np.linspace(0, flat.shape[0] - 1, take).astype(int)
        phi_samples = flat[idx]
    g, d = draw_linear(model, phi_samples, rng, per_phi=per_phi)
    phi_samples = np.repeat(phi_samples, per_phi, axis=0)  # one row per draw
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
# sky data) and the names that moved to the modules of the fit's steps: kept for one
# release, with a DeprecationWarning
from .._moved import moved_module, renamed  # noqa: E402

_renamed_names = renamed(__name__, {"LabFit": "Fit", "fit_lab": "fit_joint"})
_moved_names = moved_module(__name__, ("astrocal.model.laplace", "astrocal.model.outliers",
                                       "astrocal.model.identifiability", "astrocal.model.sampling",
                                       "astrocal.model.selection"))


def __getattr__(name):
    if name in _renamed_names.renamed:
        return _renamed_names(name)
    return _moved_names(name)
