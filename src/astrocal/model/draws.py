"""Maps from draws of the global parameters: the field's samples, its 1-sigma and its scale.

``g`` holds draws of the global parameter vector (one per row, arcsec), laid out as the
model's: the ``n_terms(degree)`` Legendre coefficients of the field's u component, then
those of v, then the rest. Positions ``x, y`` are 0-based detector pixels on ``domain``
``(xmin, xmax, ymin, ymax)``. Shared by :class:`astrocal.model.inference.Fit` and the
posterior read back from disk (:class:`astrocal.model.result.Posterior`).

A fit with a residual field (:mod:`astrocal.field.residual`) passes ``residual = (basis,
first column)``: its coefficients are the ``basis.size`` columns of u from that column on,
then those of v; the field's samples and 1-sigma include it. The best affine part and the
pixel scale are the polynomial's alone (the residual is orthogonal to the polynomials).

**The unresolved field.** What neither the polynomial nor the residual basis holds (structure
on scales below the basis's shortest wavelength, a table's interpolation kinks) leaves the
points scattered about the model by more than their centroid errors: the per-dataset jitter
takes it. The data cannot tell such scatter from centroid error, and a field structure is
common to every dataset of the filter, so the smallest jitter over the datasets is what the
field may hold at any one position; with a residual field, its spectral tail beyond the
basis (:meth:`astrocal.field.residual.ResidualBasis.tail_variance`, white noise the model
adds to every point beside the jitter) joins it in quadrature. ``unresolved`` (one sd per
draw, arcsec) is added to the
field's samples as independent Gaussian noise per position and component, and to its 1-sigma
in quadrature (:func:`map_uncertainty`: the exact variance of the mixture). It is spatially
uncorrelated, so it widens the map's intervals but not those of quantities that average over
the field (the pixel scale, the affine part, the coefficients).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from ..field import design_matrix
from ..field.basis import n_terms, terms

if TYPE_CHECKING:
    from ..field.residual import ResidualBasis


#: the seed of the unresolved field's noise in the field's samples (fixed: the same points
#: give the same samples)
UNRESOLVED_SEED = 20261206


def residual_hyperparameters(phi: ArrayLike, hyper_names: Sequence[str]) -> tuple[np.ndarray, ...]:
    """The residual field's rms and correlation length(s) per row of ``phi``.

    The arguments of :meth:`~astrocal.field.residual.ResidualBasis.prior_sd_for_rms` and
    :meth:`~astrocal.field.residual.ResidualBasis.tail_variance_for_rms`.

    Parameters
    ----------
    phi : array_like
        Hyperparameter rows (n, ndim) (or one row), with ``log_residual_rms`` and
        ``log_residual_length`` (and, with one length per axis, ``residual_aspect``).
    hyper_names : sequence of str
        Their names.

    Returns
    -------
    tuple of numpy.ndarray
        ``(rms, length)`` (arcsec, pixels), each (n,); with one length per axis ``(rms, l_x,
        l_y)``, ``l_x = l exp(a)``, ``l_y = l exp(-a)`` from the geometric mean length ``l``
        and the aspect ``a``.
    """
    phi = np.atleast_2d(np.asarray(phi, float))
    names = list(hyper_names)
    rms, length = np.exp(phi[:, names.index("log_residual_rms")]), np.exp(phi[:, names.index("log_residual_length")])
    if "residual_aspect" not in names:
        return rms, length
    a = phi[:, names.index("residual_aspect")]
    return rms, length * np.exp(a), length * np.exp(-a)


def residual_tail_variance(phi: np.ndarray, hyper_names: Sequence[str], basis: ResidualBasis | None) -> np.ndarray:
    """The residual field's spectral tail beyond its basis per row of ``phi``.

    Parameters
    ----------
    phi : numpy.ndarray
        Hyperparameter rows (n, ndim).
    hyper_names : sequence of str
        Their names.
    basis : ResidualBasis or None
        The residual field's basis (:class:`~astrocal.field.residual.ResidualBasis`).

    Returns
    -------
    numpy.ndarray
        (n,), arcsec**2 per component; zeros without a residual field.
    """
    phi = np.atleast_2d(np.asarray(phi, float))
    names = list(hyper_names)
    if basis is None or "log_residual_rms" not in names:
        return np.zeros(phi.shape[0])
    return basis.tail_variance_for_rms(*residual_hyperparameters(phi, names))


def unresolved_sd(phi: np.ndarray, hyper_names: Sequence[str],
                  basis: ResidualBasis | None = None) -> np.ndarray | None:
    """The unresolved field's sd per draw.

    The smallest jitter over the datasets, ``exp(min_d log_jitter[d])`` from each row of
    ``phi``, and, with a residual field's ``basis``, its spectral tail in quadrature
    (:func:`residual_tail_variance`: the white noise the model adds to every dataset's points
    beside their jitter).

    Parameters
    ----------
    phi : numpy.ndarray
        Hyperparameter rows (n, ndim).
    hyper_names : sequence of str
        Their names.
    basis : ResidualBasis, optional
        The residual field's basis.

    Returns
    -------
    numpy.ndarray or None
        (n,), arcsec; None without jitters.
    """
    cols = [k for k, n in enumerate(hyper_names) if str(n).startswith("log_jitter[")]
    if not cols or phi is None or len(phi) == 0:
        return None
    jit2 = np.exp(2.0 * np.min(np.asarray(phi, float)[:, cols], axis=1))
    return np.sqrt(jit2 + residual_tail_variance(phi, hyper_names, basis))


def field_samples(g: np.ndarray, degree: int, domain: Sequence[float], x: ArrayLike, y: ArrayLike,
                  residual: tuple | None = None,
                  unresolved: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Samples of the field at the points.

    The polynomial plus, with ``residual``, the residual field, plus, with ``unresolved``, the
    unresolved field's independent noise.

    Parameters
    ----------
    g : numpy.ndarray
        Draws of the global parameters (n_draws, n_params), arcsec.
    degree : int
        The field's degree.
    domain : sequence of float
        The detector domain ``(xmin, xmax, ymin, ymax)``, pixels.
    x, y : array_like
        Detector pixels (0-based), same shape.
    residual : tuple, optional
        ``(ResidualBasis, first column)`` of the residual field.
    unresolved : numpy.ndarray, optional
        The unresolved field's sd per draw (n_draws,), arcsec (:func:`unresolved_sd`).

    Returns
    -------
    tuple of numpy.ndarray
        ``(u, v)``, each (n_draws, N), arcsec.
    """
    B = design_matrix(x, y, degree, domain)
    nt = n_terms(degree)
    u, v = g[:, :nt] @ B.T, g[:, nt:2 * nt] @ B.T
    if residual is not None:
        basis, r0 = residual
        phi = basis.design(x, y)
        m = basis.size
        u += g[:, r0:r0 + m] @ phi.T
        v += g[:, r0 + m:r0 + 2 * m] @ phi.T
    if unresolved is not None:
        rng = np.random.default_rng(UNRESOLVED_SEED)
        sd = np.asarray(unresolved, float)[:, None]
        u += sd * rng.standard_normal(u.shape)
        v += sd * rng.standard_normal(v.shape)
    return u, v


def unresolved_variance(unresolved: np.ndarray | None) -> float:
    """The unresolved field's variance averaged over the draws.

    Parameters
    ----------
    unresolved : numpy.ndarray, optional
        The unresolved field's sd per draw (n_draws,), arcsec (:func:`unresolved_sd`).

    Returns
    -------
    float
        arcsec**2 (0 without).
    """
    return 0.0 if unresolved is None else float(np.mean(np.asarray(unresolved, float) ** 2))


def map_uncertainty(g: np.ndarray, degree: int, domain: Sequence[float], x: ArrayLike, y: ArrayLike,
                    residual: tuple | None = None,
                    unresolved: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """1-sigma of the field at the points.

    The sample sd (``ddof=1``) of the modelled field's draws and, with ``unresolved``, its
    mean variance in quadrature.

    Parameters
    ----------
    g : numpy.ndarray
        Draws of the global parameters (n_draws, n_params), arcsec.
    degree : int
        The field's degree.
    domain : sequence of float
        The detector domain ``(xmin, xmax, ymin, ymax)``, pixels.
    x, y : array_like
        Detector pixels (0-based), same shape.
    residual : tuple, optional
        ``(ResidualBasis, first column)`` of the residual field.
    unresolved : numpy.ndarray, optional
        The unresolved field's sd per draw (n_draws,), arcsec (:func:`unresolved_sd`).

    Returns
    -------
    tuple of numpy.ndarray
        ``(sigma_u, sigma_v)``, arcsec, in the shape of ``x``.
    """
    u, v = field_samples(g, degree, domain, np.ravel(x), np.ravel(y), residual)
    shape = np.shape(x)
    extra = unresolved_variance(unresolved)
    return (np.sqrt(u.var(axis=0, ddof=1) + extra).reshape(shape),
            np.sqrt(v.var(axis=0, ddof=1) + extra).reshape(shape))


def affine_matrices(g: np.ndarray, degree: int, domain: Sequence[float]) -> np.ndarray:
    """The 2x2 matrix of each draw's best affine part (its degree-1 Legendre terms).

    Parameters
    ----------
    g : numpy.ndarray
        Draws of the global parameters (n_draws, n_params), arcsec.
    degree : int
        The field's degree.
    domain : sequence of float
        The detector domain ``(xmin, xmax, ymin, ymax)``, pixels.

    Returns
    -------
    numpy.ndarray
        (n_draws, 2, 2) arcsec per pixel, rows u and v, columns x and y.
    """
    nt = n_terms(degree)
    t = terms(degree)
    i10, i01 = t.index((1, 0)), t.index((0, 1))
    xmin, xmax, ymin, ymax = domain
    hx, hy = 0.5 * (xmax - xmin), 0.5 * (ymax - ymin)
    a = np.empty((len(g), 2, 2))
    a[:, 0, 0], a[:, 0, 1] = g[:, i10] / hx, g[:, i01] / hy
    a[:, 1, 0], a[:, 1, 1] = g[:, nt + i10] / hx, g[:, nt + i01] / hy
    return a


def pixel_scale_samples(g: np.ndarray, degree: int, domain: Sequence[float]) -> np.ndarray:
    """Samples of the areal pixel scale of the field's best affine part: ``sqrt(|det A|)`` of
    :func:`affine_matrices`.

    Parameters
    ----------
    g : numpy.ndarray
        Draws of the global parameters (n_draws, n_params), arcsec.
    degree : int
        The field's degree.
    domain : sequence of float
        The detector domain ``(xmin, xmax, ymin, ymax)``, pixels.

    Returns
    -------
    numpy.ndarray
        (n_draws,), arcsec/px.
    """
    return np.sqrt(np.abs(np.linalg.det(affine_matrices(g, degree, domain))))
