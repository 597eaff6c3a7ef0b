"""The fit's first steps: a preliminary field and the gross outliers.

:func:`preliminary_field` fits a first field (hyperparameters at their initial guess, no
hole errors) whose Jacobian pushes the centroid covariances into the focal plane;
:func:`find_outliers` flags gross outliers by an expectation-maximisation of a two-component
mixture (inliers with the model's noise, outliers with a broad ``outlier_px`` Gaussian),
started from an iterative clipping of the residuals (:func:`robust_start`).
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from .joint import JointModel
from .laplace import map_hyperparameters
from .priors import with_residual

if TYPE_CHECKING:
    from ..field import DistortionField
    from .data import Points
    from .inference import FitSettings
    from .linear import Conditional

log = logging.getLogger(__name__)



def residual_chi2(model: JointModel, cond: Conditional, points: Points) -> tuple[np.ndarray, np.ndarray]:
    """Chi-square (2 dof) of every point in ``points`` against the model's posterior mean.

    Parameters
    ----------
    model : JointModel
        The model.
    cond : Conditional
        Its conditional posterior at a ``phi`` (:meth:`JointModel.conditional`).
    points : Points
        Points sharing the model's exposures and sources (e.g. all, flagged ones included).

    Returns
    -------
    tuple of numpy.ndarray
        The chi-square (N,) and the residuals, model minus observation (N, 2) arcsec.
    """
    r = model.residuals(cond.mean, cond.hole_mean, points)
    cov = noise_covariance(model, cond.phi, points)
    return np.einsum("na,nab,nb->n", r, np.linalg.inv(cov), r), r


def robust_start(points: Points, degree: int, settings: FitSettings, max_iter: int = 15, nsigma: float = 10.0,
                 floor_px: float = 0.05) -> np.ndarray:
    """Points to leave out before the mixture EM: iterative clipping of the residuals.

    A least-squares start is dragged by gross outliers (a misidentified spot is a whole
    pitch, hundreds of pixels, away), which then hide among equally bad residuals. So the
    residuals (pixels) are clipped at their median plus ``nsigma`` robust sigmas (MAD),
    never below ``floor_px``, and the fit is repeated on the rest until the set is stable.

    Parameters
    ----------
    points : Points
        The fit's points.
    degree : int
        The field's degree.
    settings : astrocal.model.inference.FitSettings
        The fit's settings (priors, flexure).
    max_iter : int
        Clipping rounds at most.
    nsigma : float
        Robust sigmas above the median that are clipped.
    floor_px : float
        The clipping threshold's floor, pixels.

    Returns
    -------
    numpy.ndarray
        Bool over the points: those to leave out.
    """
    excluded = np.zeros(points.n_points, bool)
    for _ in range(max_iter):
        model = JointModel(points, degree, hole_errors=False, priors=with_residual(settings.priors, False),
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


def find_outliers(points: Points, degree: int, settings: FitSettings,
                  jacobian_field: DistortionField | None) -> tuple[np.ndarray, float, JointModel, np.ndarray]:
    """Flag gross outliers by EM on a mixture of the model's noise and a broad Gaussian.

    Parameters
    ----------
    points : Points
        The fit's points.
    degree : int
        The field's degree.
    settings : astrocal.model.inference.FitSettings
        The fit's settings (``outlier_px``, ``outlier_iterations``, hole errors, priors).
    jacobian_field : DistortionField or None
        The field for the focal-plane covariances (:func:`preliminary_field`).

    Returns
    -------
    tuple
        ``(excluded mask, outlier fraction, model, phi_map)``.
    """
    excluded = robust_start(points, degree, settings)
    frac = float(np.clip(excluded.mean(), 0.01, 0.5))
    s_out = settings.outlier_px * points.pixel_scale
    model = None
    phi = None
    for _ in range(settings.outlier_iterations):
        model = JointModel(points, degree, hole_errors=settings.hole_errors, jacobian_field=jacobian_field,
                         priors=with_residual(settings.priors, False), excluded=excluded, flexure=settings.flexure)
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


def noise_covariance(model: JointModel, phi: ArrayLike, points: Points) -> np.ndarray:
    """Focal-plane noise covariance of ``points`` under ``model`` at ``phi``.

    Parameters
    ----------
    model : JointModel
        The model.
    phi : array_like
        The hyperparameters (ndim,).
    points : Points
        The points (sharing the model's datasets).

    Returns
    -------
    numpy.ndarray
        (N, 2, 2), arcsec**2.
    """
    if model.jacobian_field is not None:
        _, _, jac = model.jacobian_field.jacobian(points.x, points.y)
    else:
        jac = np.broadcast_to(np.eye(2) * points.pixel_scale, (points.n_points, 2, 2))
    jit, kappa, _ = model.noise_scales(np.asarray(phi)[None])
    cov = kappa[0] ** 2 * (jac @ points.cov @ np.swapaxes(jac, 1, 2))
    return cov + np.eye(2) * jit[0, points.dataset][:, None, None] ** 2


def preliminary_field(points: Points, degree: int, settings: FitSettings) -> DistortionField:
    """A first field (hyperparameters at their initial guess, no hole errors).

    Parameters
    ----------
    points : Points
        The fit's points.
    degree : int
        The field's degree.
    settings : astrocal.model.inference.FitSettings
        The fit's settings (priors, flexure).

    Returns
    -------
    DistortionField
        The conditional mean's field.
    """
    model = JointModel(points, degree, hole_errors=False, priors=with_residual(settings.priors, False),
                     flexure=settings.flexure)
    cond = model.conditional(model.initial_guess())
    return model.field_from(cond.mean)
