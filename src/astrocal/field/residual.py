"""A smooth residual field beyond the polynomial: a reduced-rank Gaussian process.

Real distortion fields hold structure that no polynomial of modest degree represents
(optical-design residuals, manufacturing). astrocal models the instrument field as

    G(p) = polynomial of total degree n (Legendre, :mod:`astrocal.field.basis`) + r(p),

with each component of ``r`` an independent zero-mean Gaussian process of Matérn-5/2
covariance

    k(d) = sigma**2 (1 + sqrt(5) d / l + 5 d**2 / (3 l**2)) exp(-sqrt(5) d / l),

``d`` the distance between two detector pixels, ``sigma`` the amplitude (arcsec, the same
unit as the field) and ``l`` the correlation length (pixels), both hyperparameters.

**Representation** (Solin & Särkkä 2020, Statistics and Computing 30, 419; Riutort-Mayol et
al. 2023, Statistics and Computing 33, 17): on the box ``[-L_x, L_x] x [-L_y, L_y]`` around
the detector (``L`` = the boundary factor ``c`` times the half-size), the Laplacian's
Dirichlet eigenfunctions

    phi_jk(x, y) = sin(pi j (x' + L_x) / (2 L_x)) sin(pi k (y' + L_y) / (2 L_y)) / sqrt(L_x L_y),
    j, k = 1..m,

(``x', y'`` in pixels from the detector centre) give ``k(p, q) ~ sum S(omega_jk) phi_jk(p)
phi_jk(q)``, with ``S`` the covariance's spectral density in 2-D,

    S(omega) = sigma**2 10 pi 5**(5/2) l**-5 (5 / l**2 + omega**2)**(-7/2),

and ``omega_jk**2 = (pi j / 2 L_x)**2 + (pi k / 2 L_y)**2``. So ``r = Phi w`` with
independent coefficients ``w_jk ~ N(0, S(omega_jk))``: a fixed design and a diagonal prior
whose widths are functions of the two hyperparameters, which the collapsed model
integrates exactly like the polynomial's coefficients. The approximation is accurate for
correlation lengths down to about ``3.42 c h / m`` (``h`` the half-size; the
Riutort-Mayol et al. rule for Matérn-5/2), :attr:`ResidualBasis.min_length`.

**Beyond the polynomial, not beside it**: each basis function has its projection on the
polynomials of total degree ``<= n`` over the detector removed (the Legendre coefficients
of the L2 projection, by Gauss-Legendre quadrature; exact to rounding). So the residual
holds only what the degree-``n`` polynomial cannot: it never absorbs the field's affine
part (the gauges, the poses, the pixel scale) nor any polynomial term, and the polynomial
stays the best degree-``n`` approximation of the whole field. The prior is that of the
Matérn field's part orthogonal to those polynomials.

**The spectral tail** (:meth:`ResidualBasis.tail_variance`): the basis holds the frequencies
up to about ``Omega_x = pi (m + 1/2) / (2 L_x)`` (and ``Omega_y``); the Matérn field's
variance beyond them, ``sigma**2 (1 + R**2 l**2 / 5)**(-5/2)`` with ``R`` the radius of the
disc of the same area as the resolved quarter-rectangle, ``R**2 = 4 Omega_x Omega_y / pi``
(the closed form of ``int_{|omega| > R} S d^2omega / (2 pi)**2``), is structure on scales
the basis cannot represent. The model takes it as white per position (``tail``): it adds to
the points' noise and to the map's 1-sigma (:mod:`astrocal.model.draws`). It vanishes for
lengths well above :attr:`ResidualBasis.min_length` and grows as the length approaches the
basis's resolution.
"""
from __future__ import annotations

from dataclasses import dataclass, field as dc_field
from math import gamma, pi

import numpy as np
from numpy.typing import ArrayLike

from ..errors import FieldError
from .basis import legendre_1d, terms
from .core import as_domain, centre_halfwidth, design_matrix

__all__ = ["ResidualBasis", "matern52", "matern52_spectral_density", "RULE_FACTOR"]

#: Riutort-Mayol et al. (2023), Matérn-5/2: m >= 3.42 c / (l / h) basis functions per
#: dimension represent correlation lengths down to l
RULE_FACTOR = 3.42
#: Gauss-Legendre nodes per dimension of the projections on the polynomials
QUADRATURE_NODES = 256


def matern52(d: ArrayLike, sigma: float, length: float) -> np.ndarray:
    """The Matérn-5/2 covariance at distances ``d`` (same unit as ``length``).

    Parameters
    ----------
    d : array_like
        Distances.
    sigma : float
        Amplitude (standard deviation), field units.
    length : float
        Correlation length.

    Returns
    -------
    np.ndarray
        ``sigma**2 (1 + a + a**2 / 3) exp(-a)``, ``a = sqrt(5) d / length``.
    """
    a = np.sqrt(5.0) * np.asarray(d, float) / length
    return sigma**2 * (1.0 + a + a**2 / 3.0) * np.exp(-a)


def matern52_spectral_density(omega: ArrayLike, sigma: ArrayLike, length: ArrayLike) -> np.ndarray:
    """Spectral density of the 2-D Matérn-5/2 covariance at angular frequency ``omega``.

    Normalised so that ``int S d^2omega / (2 pi)^2 = sigma**2``:
    ``S = sigma**2 4 pi nu (2 nu)**nu / l**(2 nu) (2 nu / l**2 + omega**2)**-(nu + 1)``
    with ``nu = 5/2``.

    Parameters
    ----------
    omega : array_like
        Angular frequencies, radians per unit of ``length``.
    sigma : array_like
        Amplitude(s), field units (broadcast against ``omega``).
    length : array_like
        Correlation length(s) (broadcast against ``omega``).

    Returns
    -------
    np.ndarray
        The density, of the broadcast shape.
    """
    nu = 2.5
    const = 4.0 * pi * gamma(nu + 1.0) / gamma(nu) * (2.0 * nu) ** nu
    length = np.asarray(length, float)
    return (np.asarray(sigma, float) ** 2 * const / length ** (2 * nu)
            * (2.0 * nu / length**2 + np.asarray(omega, float) ** 2) ** (-(nu + 1.0)))


@dataclass(frozen=True)
class ResidualBasis:
    """The residual field's basis over a detector ``domain`` (0-based pixel edges
    ``(xmin, xmax, ymin, ymax)``), orthogonal to the polynomials of total degree
    ``degree``; ``m`` eigenfunctions per dimension (``m * m`` in all), boundary factor
    ``boundary`` (the box extends ``boundary`` times the half-size around the centre)."""

    domain: tuple
    degree: int
    m: int = 8
    boundary: float = 1.5
    _projection: np.ndarray = dc_field(default=None, repr=False, compare=False)
    _mean_squares: np.ndarray = dc_field(default=None, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "domain", tuple(float(v) for v in as_domain(self.domain)))
        if int(self.m) < 1:
            raise FieldError(f"the residual basis needs m >= 1 functions per dimension, got {self.m}")
        if not float(self.boundary) > 1.0:
            raise FieldError(f"the boundary factor must be > 1, got {self.boundary}")
        object.__setattr__(self, "m", int(self.m))
        object.__setattr__(self, "_projection", self._polynomial_projection())

    # ------------------------------------------------------------------ geometry
    @property
    def size(self) -> int:
        """Number of basis functions (per component of the field)."""
        return self.m * self.m

    @property
    def half_size(self) -> tuple[float, float]:
        """Half-sizes ``(hx, hy)`` of the detector, pixels."""
        return centre_halfwidth(self.domain)[2:]

    @property
    def box(self) -> tuple[float, float]:
        """Half-sizes ``(L_x, L_y)`` of the box of the eigenfunctions, pixels."""
        hx, hy = self.half_size
        return self.boundary * hx, self.boundary * hy

    @property
    def min_length(self) -> float:
        """Shortest correlation length (pixels) the basis represents well."""
        return RULE_FACTOR * self.boundary * max(self.half_size) / self.m

    def frequencies(self) -> np.ndarray:
        """Angular frequencies ``omega_jk`` of the basis functions.

        Returns
        -------
        np.ndarray
            Radians per pixel, shape ``(m * m,)``, in the order of :meth:`design` (``j``
            along x slowest).
        """
        lx, ly = self.box
        j = np.arange(1, self.m + 1)
        wx, wy = np.pi * j / (2 * lx), np.pi * j / (2 * ly)
        return np.sqrt(wx[:, None] ** 2 + wy[None, :] ** 2).ravel()

    def _sines(self, x, y, derivative=False):
        xc, yc, _, _ = centre_halfwidth(self.domain)
        lx, ly = self.box
        j = np.arange(1, self.m + 1)
        ax = np.pi * np.outer(np.ravel(x) - xc + lx, j) / (2 * lx)
        ay = np.pi * np.outer(np.ravel(y) - yc + ly, j) / (2 * ly)
        sx, sy = np.sin(ax) / np.sqrt(lx), np.sin(ay) / np.sqrt(ly)
        if not derivative:
            return sx, sy
        dsx = np.cos(ax) * (np.pi * j / (2 * lx)) / np.sqrt(lx)
        dsy = np.cos(ay) * (np.pi * j / (2 * ly)) / np.sqrt(ly)
        return sx, sy, dsx, dsy

    def raw_design(self, x: ArrayLike, y: ArrayLike) -> np.ndarray:
        """The eigenfunctions at the points, before the polynomials are projected out.

        Parameters
        ----------
        x, y : array_like
            Points, 0-based pixels (flattened).

        Returns
        -------
        np.ndarray
            ``(N, m * m)``.
        """
        sx, sy = self._sines(x, y)
        return (sx[:, :, None] * sy[:, None, :]).reshape(sx.shape[0], -1)

    def _polynomial_projection(self):
        """Legendre coefficients (n_terms, m * m) of each eigenfunction's L2 projection on
        the polynomials of total degree ``<= degree`` over the detector."""
        xc, yc, hx, hy = centre_halfwidth(self.domain)
        t, wt = np.polynomial.legendre.leggauss(QUADRATURE_NODES)
        sx, sy = self._sines(xc + hx * t, yc + hy * t)  # (Q, m) each
        px = legendre_1d(t, self.degree)  # (n + 1, Q)
        norms = 2.0 / (2 * np.arange(self.degree + 1) + 1)  # int P_i^2 dt over [-1, 1]
        ax = (px * wt) @ sx / norms[:, None]  # (n + 1, m): 1-D projections
        ay = (px * wt) @ sy / norms[:, None]
        ii, jj = np.array(terms(self.degree)).T
        return (ax[ii][:, :, None] * ay[jj][:, None, :]).reshape(len(ii), -1)

    def design(self, x: ArrayLike, y: ArrayLike) -> np.ndarray:
        """The basis functions at the points, with the polynomials of degree ``<= degree``
        projected out.

        Parameters
        ----------
        x, y : array_like
            Points, 0-based pixels (flattened).

        Returns
        -------
        np.ndarray
            ``(N, m * m)``.
        """
        return self.raw_design(x, y) - design_matrix(x, y, self.degree, self.domain) @ self._projection

    def design_derivatives(self, x: ArrayLike, y: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """Derivatives of :meth:`design` with respect to ``x`` and ``y`` (per pixel).

        Parameters
        ----------
        x, y : array_like
            Points, 0-based pixels (flattened).

        Returns
        -------
        tuple of np.ndarray
            ``(dPhi/dx, dPhi/dy)``, each ``(N, m * m)``.
        """
        sx, sy, dsx, dsy = self._sines(x, y, derivative=True)
        n = sx.shape[0]
        ddx = (dsx[:, :, None] * sy[:, None, :]).reshape(n, -1)
        ddy = (sx[:, :, None] * dsy[:, None, :]).reshape(n, -1)
        _, bx, by = design_matrix(x, y, self.degree, self.domain, derivatives=True)
        return ddx - bx @ self._projection, ddy - by @ self._projection

    def polynomial_part(self, w: ArrayLike) -> np.ndarray:
        """The polynomial that :meth:`design` removes from the raw eigenfunctions:
        ``design(x, y) @ w = raw_design(x, y) @ w - polynomial(x, y)``.

        Parameters
        ----------
        w : array_like
            Coefficients of the eigenfunctions (``m * m``).

        Returns
        -------
        np.ndarray
            Legendre coefficients (``terms(degree)`` order, length ``n_terms``).
        """
        return self._projection @ np.asarray(w, float)

    def raw_grid(self, w: ArrayLike, xs: ArrayLike,
                 ys: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The raw eigenfunctions with coefficients ``w`` on a grid, and their derivatives.

        Separable, so a whole detector costs two small products.

        Parameters
        ----------
        w : array_like
            Coefficients (``m * m``).
        xs, ys : array_like
            1-D grid coordinates, 0-based pixels.

        Returns
        -------
        tuple of np.ndarray
            ``(r, dr/dx, dr/dy)``, each ``(len(ys), len(xs))``.
        """
        sx, _, dsx, _ = self._sines(xs, np.zeros(1), derivative=True)
        _, sy, _, dsy = self._sines(np.zeros(1), ys, derivative=True)
        wm = np.asarray(w, float).reshape(self.m, self.m)  # [j (x), k (y)]
        return sy @ wm.T @ sx.T, sy @ wm.T @ dsx.T, dsy @ wm.T @ sx.T

    # ------------------------------------------------------------------ prior
    def axis_frequencies(self) -> tuple[np.ndarray, np.ndarray]:
        """Angular frequencies of the basis functions along x and y.

        Returns
        -------
        tuple of np.ndarray
            ``(omega_x, omega_y)``, radians per pixel, each ``(m * m,)`` in the order of
            :meth:`design` (``j`` along x slowest); ``hypot`` of the two is :meth:`frequencies`.
        """
        lx, ly = self.box
        j = np.arange(1, self.m + 1)
        return np.repeat(np.pi * j / (2 * lx), self.m), np.tile(np.pi * j / (2 * ly), self.m)

    def prior_sd(self, sigma: ArrayLike, length: ArrayLike, length_y: ArrayLike | None = None) -> np.ndarray:
        """Prior standard deviations of the coefficients: ``sqrt(S(omega_jk))``.

        With ``length_y`` the covariance is anisotropic (one length per detector axis,
        "automatic relevance determination"): ``k(p, q) = k_1(|((p - q)_x / l_x, (p - q)_y /
        l_y)|)`` with ``k_1`` the unit-length Matérn-5/2, whose spectral density is
        ``l_x l_y S_1(hypot(l_x omega_x, l_y omega_y))``; ``length_y = length`` gives the
        isotropic density.

        Parameters
        ----------
        sigma : array_like
            Matérn amplitude(s), field units.
        length : array_like
            Correlation length(s), pixels (along x when ``length_y`` is given).
        length_y : array_like, optional
            Correlation length(s) along y, pixels; None: isotropic.

        Returns
        -------
        np.ndarray
            ``(m * m,)`` for scalars; arrays of ``sigma`` and ``length`` (K,) give
            ``(K, m * m)``.
        """
        sigma = np.asarray(sigma, float)
        length = np.asarray(length, float)
        if length_y is None:
            w = self.frequencies()
            s = matern52_spectral_density(w[None, :], sigma.reshape(-1, 1), length.reshape(-1, 1))
            scalar = sigma.ndim == 0 and length.ndim == 0
        else:
            length_y = np.asarray(length_y, float)
            wx, wy = self.axis_frequencies()
            lx, ly = length.reshape(-1, 1), length_y.reshape(-1, 1)
            s = lx * ly * matern52_spectral_density(np.hypot(lx * wx[None, :], ly * wy[None, :]),
                                                    sigma.reshape(-1, 1), 1.0)
            scalar = sigma.ndim == 0 and length.ndim == 0 and length_y.ndim == 0
        s = np.sqrt(s)
        return s[0] if scalar else s

    def band_radius(self) -> float:
        """The radius of the disc of the same area as the quarter-rectangle of frequencies
        the basis resolves.

        Returns
        -------
        float
            ``R`` (radians per pixel), ``R**2 = 4 Omega_x Omega_y / pi`` with
            ``Omega = pi (m + 1/2) / (2 L)`` (half a frequency step beyond the highest).
        """
        lx, ly = self.box
        ox, oy = np.pi * (self.m + 0.5) / (2 * lx), np.pi * (self.m + 0.5) / (2 * ly)
        return float(np.sqrt(4.0 * ox * oy / np.pi))

    def tail_variance(self, sigma: ArrayLike, length: ArrayLike, length_y: ArrayLike | None = None) -> np.ndarray:
        """The Matérn field's variance at frequencies beyond the basis's band.

        ``sigma**2 (1 + R**2 l**2 / 5)**(-5/2)`` (:meth:`band_radius`; exact for the disc of
        radius ``R``). With one length per axis, ``l**2`` becomes ``l_x l_y``: in the scaled
        frequencies ``(l_x omega_x, l_y omega_y)`` the density is the unit-length isotropic
        one and the resolved rectangle's area is ``l_x l_y`` times larger.

        Parameters
        ----------
        sigma : array_like
            Matérn amplitude(s), field units.
        length : array_like
            Correlation length(s), pixels (along x when ``length_y`` is given).
        length_y : array_like, optional
            Correlation length(s) along y, pixels; None: isotropic.

        Returns
        -------
        np.ndarray
            Variance per component (field units squared), of the broadcast shape.
        """
        length = np.asarray(length, float)
        l2 = length**2 if length_y is None else length * np.asarray(length_y, float)
        return np.asarray(sigma, float) ** 2 * (1.0 + self.band_radius() ** 2 * l2 / 5.0) ** (-2.5)

    def tail_variance_for_rms(self, rms: ArrayLike, length: ArrayLike,
                              length_y: ArrayLike | None = None) -> np.ndarray:
        """:meth:`tail_variance` for the resolved residual's rms over the detector ``rms``
        (the model's amplitude hyperparameter, :meth:`prior_sd_for_rms`) instead of the
        Matérn amplitude.

        Parameters
        ----------
        rms : array_like
            The residual's rms over the detector, field units.
        length : array_like
            Correlation length(s), pixels (along x when ``length_y`` is given).
        length_y : array_like, optional
            Correlation length(s) along y, pixels; None: isotropic.

        Returns
        -------
        np.ndarray
            Variance per component, field units squared.
        """
        return self.tail_variance(np.asarray(rms, float) / self.rms_per_sigma(length, length_y), length, length_y)

    def mean_squares(self) -> np.ndarray:
        """Mean over the detector of each projected basis function's square.

        By Gauss-Legendre quadrature (64 nodes per dimension: the functions hold at most
        ``m`` half-waves over the box); computed once.

        Returns
        -------
        np.ndarray
            ``(m * m,)``, per pixel**2 of the box normalisation.
        """
        if self._mean_squares is None:
            xc, yc, hx, hy = centre_halfwidth(self.domain)
            t, wt = np.polynomial.legendre.leggauss(64)
            xx, yy = np.meshgrid(xc + hx * t, yc + hy * t, indexing="ij")
            w = np.outer(wt, wt).ravel() / 4.0  # the mean over [-1, 1]^2
            object.__setattr__(self, "_mean_squares", w @ self.design(xx.ravel(), yy.ravel()) ** 2)
        return self._mean_squares

    def rms_per_sigma(self, length: ArrayLike, length_y: ArrayLike | None = None) -> np.ndarray | float:
        """The residual field's rms over the detector (per component) for a unit amplitude.

        ``sqrt(sum_k S_k q_k)`` with ``q_k`` :meth:`mean_squares`. The polynomial
        projection removes the long wavelengths, so at long lengths most of ``sigma`` is
        not in the residual.

        Parameters
        ----------
        length : array_like
            Correlation length(s), pixels (along x when ``length_y`` is given).
        length_y : array_like, optional
            Correlation length(s) along y, pixels; None: isotropic.

        Returns
        -------
        np.ndarray or float
            One value per length (a scalar for scalar lengths).
        """
        length = np.asarray(length, float)
        if length_y is None:
            s = matern52_spectral_density(self.frequencies()[None, :], 1.0, length.reshape(-1, 1))
            scalar = length.ndim == 0
        else:
            length_y = np.asarray(length_y, float)
            s = np.atleast_2d(self.prior_sd(1.0, length.reshape(-1), length_y.reshape(-1))) ** 2
            scalar = length.ndim == 0 and length_y.ndim == 0
        out = np.sqrt(s @ self.mean_squares())
        return out[0] if scalar else out

    def prior_sd_for_rms(self, rms: ArrayLike, length: ArrayLike, length_y: ArrayLike | None = None) -> np.ndarray:
        """:meth:`prior_sd` for the residual field's rms over the detector ``rms`` instead
        of the Matérn amplitude: ``sigma = rms / rms_per_sigma(length[, length_y])``.

        Parameters
        ----------
        rms : array_like
            The residual's rms over the detector, field units.
        length : array_like
            Correlation length(s), pixels (along x when ``length_y`` is given).
        length_y : array_like, optional
            Correlation length(s) along y, pixels; None: isotropic.

        Returns
        -------
        np.ndarray
            As :meth:`prior_sd`.
        """
        return self.prior_sd(np.asarray(rms, float) / self.rms_per_sigma(length, length_y), length, length_y)

    def covariance(self, x1: ArrayLike, y1: ArrayLike, x2: ArrayLike, y2: ArrayLike, sigma: float,
                   length: float, project: bool = True, length_y: float | None = None) -> np.ndarray:
        """The prior covariance of the residual between two sets of points (one component):
        ``Phi1 diag(S) Phi2^T``.

        Parameters
        ----------
        x1, y1, x2, y2 : array_like
            The two sets of points, 0-based pixels.
        sigma : float
            Matérn amplitude, field units.
        length : float
            Correlation length, pixels.
        project : bool
            ``False``: without the polynomial projection (the approximation of the plain
            Matérn covariance).
        length_y : float, optional
            Correlation length along y, pixels (``length`` then the one along x); None:
            isotropic.

        Returns
        -------
        np.ndarray
            ``(N1, N2)``, field units squared.
        """
        f = self.design if project else self.raw_design
        s2 = self.prior_sd(sigma, length, length_y) ** 2
        return (f(x1, y1) * s2) @ f(x2, y2).T
