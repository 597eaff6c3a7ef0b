"""The prior settings of the joint model and the fixed patterns its priors refer to.

:class:`Priors` holds the prior widths and ranges (units in the names) that
:class:`astrocal.model.joint.JointModel` turns into the global parameters' prior and the
hyperparameters' prior box; the mask's net affine patterns (:func:`mask_affine_patterns`),
the hole errors' gauge patterns (:func:`gauge_patterns`) and the law of the field's prior
widths over the degrees (:func:`width_law`, :func:`fit_width_law`) are the shapes those
priors are stated in.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np


@dataclass(frozen=True)
class Priors:
    """Prior settings of the lab model (units in the names).

    The field's constant and linear coefficients get a broad prior (``linear_sigma``
    arcsec); the non-linear ones ``distortion_px`` pixels times the nominal scale. Pose
    scale and rotation of each exposure relative to the reference exposure have
    zero-mean priors of ``pose_scale_sigma`` (dimensionless) and ``pose_rot_sigma``
    (radians); translations are centred on the commanded offsets with their stated
    accuracy. Hyperparameters: jitter per dataset over ``jitter_mas``; hole-error scale
    over ``hole_error_um``; centroid-error scale ``kappa`` log-normal with width
    ``kappa_log_sigma``. Sky exposures: pose scale and rotation priors
    ``sky_pose_scale_sigma`` and ``sky_pose_rot_sigma`` (each sky exposure has its own
    pointing, position angle and plate scale), translations centred on zero with the
    pointing accuracy; the flexure coefficients' prior width is a hyperparameter over
    ``flexure_sigma_mas``: one for all coefficients (``flexure_scales = "shared"``, the
    default) or one per zenith function (``"per_function"``). Separate widths let the
    posterior move amplitude between nearly collinear functions (1 and cos z over a
    night) and shrink one of them towards zero; the shared width does not.

    The prior width of the field's non-linear coefficients (``field_prior``):
    ``"decay"`` gives the coefficients of total degree ``k >= 2`` the width
    ``sigma_k = sigma_2 r**(k - 2)``, with two hyperparameters: ``sigma_2`` uniform over
    ``field_sigma_px`` pixels times the nominal scale and the ratio ``r`` log-uniform over
    ``field_decay``; ``"curved"`` (the default) gives degree 2 its own width ``sigma_2``
    and lets the log of the ratio between successive degrees from degree 3 on change
    linearly with the degree, ``log sigma_k = log sigma_3 + (k - 3) log r + q (k - 3)(k - 4)
    / 2``: ``sigma_2`` and ``sigma_3`` each over ``field_sigma_px``, ``r`` (from degree 4)
    over ``field_decay``, the curvature ``q`` (from degree 5) uniform over
    ``field_curvature``. The curvature nests the geometric law (``q = 0``) and also follows
    a spectrum that flattens at high degree, such as a power law; the separate ``sigma_2``
    lets a field whose quadratic terms dominate (or are absent) keep a law fitted to the
    degrees above;
    ``"per_degree"`` gives each degree its own width (``degree - 1`` hyperparameters,
    each over ``field_sigma_px``); ``"fixed"`` is the width ``distortion_px`` for every
    coefficient. A fixed broad width charges each added
    coefficient an Occam factor of about ``log(width / posterior sd)`` (~10 nats at
    20 px), more than the small true high-order terms of a smooth field earn, so the
    evidence chooses too low a degree and the map's intervals miss the terms left out; a
    width learnt from the data adapts the charge to the field's own spectrum and shrinks
    the terms the data do not support (measured in ``docs/model.md``).

    The scale hyperparameters (jitter, hole-error scale, flexure and field widths) are
    sampled as natural logs; ``scale_prior`` sets their prior: ``"uniform"`` (the
    default) is uniform in the scale itself over the range (density proportional to the
    scale in its log), the choice recommended for hierarchical scales (Gelman 2006,
    Bayesian Analysis 1, 515): a log-uniform prior puts as much mass on every decade of
    tiny scales as on the plausible ones, so when the data cannot exclude zero the
    posterior piles up against the lower bound, the scale is pulled low and the
    coefficients it governs get intervals that are too narrow. ``"log-uniform"`` is the
    scale-invariant alternative.

    The mask's net scale and shear (``mask_affine_sigma_ppm``): the hole errors' patterns
    that mimic an affine map are not measurable (the field's affine part absorbs them), so
    the hole-error blocks carry none; the translation and rotation of the mask are gauges,
    but its net scale and two shears are real properties of the mask that set the focal
    plane's scale. They are three global parameters (``mask_scale``,
    ``mask_shear_plus``, ``mask_shear_cross``: ``delta_h += s (m_h - m) + p (x, -y)_h + c (y,
    x)_h``, relative, ``m`` the holes' centroid) with a zero-mean prior: ``None`` (the
    default) derives its width from the hole errors' own scale ``sigma_delta`` (a
    hyperparameter) and the mask's size, ``sigma_delta / |P_k|`` with ``|P_k|`` the norm of
    the pattern over the observed holes (what independent hole errors of that scale give a
    least-squares scale and shear); a number is the mask's metrology (1-sigma, ppm, the same
    for the scale and both shears); ``0`` fixes them at the nominal table. Without hole
    errors (``hole_errors=False``) and without metrology they are fixed.

    The residual field beyond the polynomial (``residual``, :mod:`astrocal.field.residual`):
    ``"none"`` (the default), ``"matern52"`` or ``"auto"`` (the fit compares both by their
    evidence, :func:`astrocal.model.selection.choose_model`; a :class:`~astrocal.model.joint.JointModel` itself takes
    ``"none"`` or ``"matern52"``): with the residual, each component of the field gains a
    Matérn-5/2 Gaussian process, orthogonal to the polynomials of the field's degree, in a
    reduced-rank basis of ``residual_basis**2`` functions (boundary factor
    ``residual_boundary``); its amplitude, as the residual's rms over the detector per
    component (hyperparameter ``log_residual_rms``, uniform in the scale over
    ``residual_rms_px`` pixels times the nominal scale; the Matérn amplitude follows from it
    and the length, :meth:`~astrocal.field.residual.ResidualBasis.prior_sd_for_rms`), and correlation
    length are sampled with the others; its coefficients are integrated exactly. The
    correlation length (``log_residual_length``, log-uniform over ``residual_length`` times
    the detector's width) is one per detector axis (``residual_lengths = "per_axis"``, the
    default, an anisotropic Matérn covariance: ``log_residual_length`` is then the lengths'
    geometric mean and ``residual_aspect`` ``a = log(l_x / l_y) / 2``, uniform over
    ``+-log(residual_aspect_max) / 2``, so ``l_x = l exp(a)``, ``l_y = l exp(-a)``) or one for
    both (``"isotropic"``).
    The field's variance beyond the basis's band (the Matérn spectral tail,
    :meth:`JointModel.residual_tail_variance`) adds to every point's white noise. The fit's
    scan refines the basis to each ``(m, boundary)`` of ``residual_refine`` in turn while
    the Laplace evidence rises by more than ``residual_refine_nats``
    (:mod:`astrocal.model.refinement`).
    """

    linear_sigma: float = 1.0e3
    distortion_px: float = 20.0
    offset_frame_sigma: float = 0.05
    pose_scale_sigma: float = 1.0e-3
    pose_rot_sigma: float = 1.0e-3
    jitter_mas: tuple = (1.0e-5, 100.0)
    hole_error_um: tuple = (1.0e-3, 20.0)
    kappa_log_sigma: float = 0.3
    sky_pose_scale_sigma: float = 1.0e-2
    sky_pose_rot_sigma: float = 1.0e-2
    flexure_sigma_mas: tuple = (1.0e-3, 100.0)
    flexure_scales: str = "shared"
    scale_prior: str = "uniform"
    field_prior: str = "curved"
    field_sigma_px: tuple = (1.0e-5, 20.0)
    field_decay: tuple = (0.02, 3.0)
    field_curvature: tuple = (-0.5, 0.5)
    mask_affine_sigma_ppm: object = None
    residual: str = "none"
    residual_basis: int = 8
    residual_boundary: float = 1.5
    residual_rms_px: tuple = (1.0e-4, 1.0)
    residual_length: tuple = (0.03, 2.0)
    residual_lengths: str = "per_axis"
    residual_aspect_max: float = 64.0
    residual_refine: tuple = ((12, 1.2), (16, 1.2))
    residual_refine_nats: float = 3.0


#: names of the mask's net affine parameters (see ``Priors.mask_affine_sigma_ppm``)
MASK_AFFINE_NAMES = ("mask_scale", "mask_shear_plus", "mask_shear_cross")


def mask_affine_patterns(m: np.ndarray) -> np.ndarray:
    """The mask's net scale and shear patterns at nominal positions.

    Parameters
    ----------
    m : numpy.ndarray
        Nominal hole positions (N, 2), arcsec, centred (the holes' centroid removed by the
        caller).

    Returns
    -------
    numpy.ndarray
        (N, 2, 3): per hole and component, the scale, shear + and shear x patterns
        (:data:`MASK_AFFINE_NAMES`).
    """
    out = np.empty(m.shape[:1] + (2, 3))
    out[:, 0, 0], out[:, 1, 0] = m[:, 0], m[:, 1]    # scale
    out[:, 0, 1], out[:, 1, 1] = m[:, 0], -m[:, 1]   # shear +
    out[:, 0, 2], out[:, 1, 2] = m[:, 1], m[:, 0]    # shear x
    return out



def width_law(phi_law: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Log widths ``log sigma_0 + d log r + q d (d - 1) / 2`` at degree offsets ``d``.

    Parameters
    ----------
    phi_law : numpy.ndarray
        The law's hyperparameters ``(log sigma_0[, log r[, q]])`` (K, 1 to 3): rows, absent
        ones zero.
    d : numpy.ndarray
        Degree offsets (columns); ``d < 0`` gives anything (masked by the caller).

    Returns
    -------
    numpy.ndarray
        (K, len(d)).
    """
    m = phi_law.shape[1]
    out = phi_law[:, :1] + 0.0 * d[None, :]
    if m > 1:
        out = out + d[None, :] * phi_law[:, 1:2]
    if m > 2:
        out = out + 0.5 * d * (d - 1) * phi_law[:, 2:3]
    return out


def fit_width_law(log_rms: np.ndarray, m: int) -> np.ndarray:
    """The ``m`` hyperparameters of :func:`width_law` fitted to ``log_rms`` at ``d = 0, 1, ...``.

    Least squares over as many as the degrees allow; the rest a ratio of 1/2 and no
    curvature.

    Parameters
    ----------
    log_rms : numpy.ndarray
        Log of the rms per degree, from ``d = 0``.
    m : int
        Hyperparameters of the law (1 to 3).

    Returns
    -------
    numpy.ndarray
        (m,).

    Raises
    ------
    ValueError
        ``m`` > 0 and no degree to fit.
    """
    d = np.arange(log_rms.size)
    k = min(m, log_rms.size)
    if m and not k:
        raise ValueError("no degree to fit the width law to")
    out = np.r_[np.zeros(k), [np.log(0.5), 0.0][k - 1:m - 1]] if k else np.zeros(0)
    if k == 3:
        c2, c1, c0 = np.polyfit(d, log_rms, 2)
        out[:3] = c0, c1 + c2, 2 * c2
    elif k == 2:
        b, a = np.polyfit(d, log_rms, 1)
        out[:2] = a, b
    elif k == 1:
        out[0] = log_rms.mean()
    return out


def gauge_patterns(hole_xy: np.ndarray) -> np.ndarray:
    """Orthonormal basis of hole-error patterns that mimic an affine map.

    Parameters
    ----------
    hole_xy : numpy.ndarray
        The holes' nominal positions (H, 2), arcsec.

    Returns
    -------
    numpy.ndarray
        (2H, 6): columns spanning ``delta_h = a + A m_h`` (translation and the 2x2 linear
        map), laid out as the flattened ``(H, 2)`` hole-error array.
    """
    h = len(hole_xy)
    mx, my = hole_xy[:, 0], hole_xy[:, 1]
    cols = []
    for comp in range(2):
        for f in (np.ones(h), mx, my):
            v = np.zeros((h, 2))
            v[:, comp] = f
            cols.append(v.ravel())
    q, _ = np.linalg.qr(np.array(cols).T)
    return q


def with_residual(priors: Priors, residual: bool) -> Priors:
    """``priors`` for one variant: the residual field on (Matérn-5/2) or off.

    Parameters
    ----------
    priors : Priors
        The fit's priors.
    residual : bool
        With the residual field.

    Returns
    -------
    Priors
        A copy with ``residual`` ``"matern52"`` or ``"none"``.
    """
    return replace(priors, residual="matern52" if residual else "none")
