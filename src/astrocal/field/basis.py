"""Polynomial bases of the distortion field: Legendre on normalised coordinates, monomials.

A 2-D polynomial of total degree ``n`` is stored as a square array ``c`` of shape
``(n + 1, n + 1)`` where ``c[i, j]`` multiplies the ``i``-th basis function of ``x`` times
the ``j``-th of ``y``; entries with ``i + j > n`` are zero.  In the Legendre basis the
functions are ``P_i(t) P_j(s)`` with ``t, s`` the coordinates normalised to ``[-1, 1]``
over the domain; in the monomial basis they are ``X**i * Y**j`` with ``X, Y`` the offsets
from a stated origin, in the input unit (pixels for a detector field).

The conversion matrices are computed in exact rational arithmetic and rounded once, so a
conversion adds only the rounding of the final sums.
"""
from __future__ import annotations

from fractions import Fraction
from functools import lru_cache
from math import comb

import numpy as np
from numpy.typing import ArrayLike

from ..errors import FieldError

MAX_DEGREE = 12


def check_degree(degree: int) -> int:
    """Return ``degree`` as an int after checking ``1 <= degree <= MAX_DEGREE``.

    Parameters
    ----------
    degree : int
        A polynomial degree (an integral value; not a bool).

    Returns
    -------
    int
        The degree.

    Raises
    ------
    FieldError
        When it is not an integer in ``[1, MAX_DEGREE]``.
    """
    if isinstance(degree, bool) or int(degree) != degree:
        raise FieldError(f"polynomial degree must be an integer, got {degree!r}")
    degree = int(degree)
    if not 1 <= degree <= MAX_DEGREE:
        raise FieldError(f"polynomial degree must be between 1 and {MAX_DEGREE}, got {degree}")
    return degree


def n_terms(degree: int) -> int:
    """Number of 2-D terms ``x**i y**j`` with ``i + j <= degree``.

    Parameters
    ----------
    degree : int
        Total degree.

    Returns
    -------
    int
        ``(degree + 1) (degree + 2) / 2``.
    """
    return (degree + 1) * (degree + 2) // 2


def terms(degree: int) -> list[tuple[int, int]]:
    """The ``(i, j)`` exponent pairs of a total-degree polynomial, in astrocal's order.

    Parameters
    ----------
    degree : int
        Total degree.

    Returns
    -------
    list of (int, int)
        Ordered by total degree, then by decreasing power of ``x``: ``(0,0), (1,0),
        (0,1), (2,0), (1,1), (0,2), ...``.  This is the order of flat coefficient vectors
        in :class:`~astrocal.field.core.DistortionField` and in the joint model.
    """
    return [(d - j, j) for d in range(degree + 1) for j in range(d + 1)]


def triangle_mask(degree: int) -> np.ndarray:
    """Boolean ``(n+1, n+1)`` mask of the entries with ``i + j <= n``.

    Parameters
    ----------
    degree : int
        Total degree ``n``.

    Returns
    -------
    np.ndarray
        The mask.
    """
    i, j = np.indices((degree + 1, degree + 1))
    return i + j <= degree


def flat_to_square(flat: ArrayLike, degree: int) -> np.ndarray:
    """Flat coefficient vector(s) in :func:`terms` order -> square array(s).

    Parameters
    ----------
    flat : array_like
        Shape ``(..., n_terms)`` (leading dimensions allowed).
    degree : int
        Total degree ``n``.

    Returns
    -------
    np.ndarray
        Shape ``(..., n+1, n+1)``, zero where ``i + j > n``.

    Raises
    ------
    FieldError
        When the last dimension is not ``n_terms(degree)``.
    """
    flat = np.asarray(flat, dtype=float)
    if flat.shape[-1] != n_terms(degree):
        raise FieldError(
            f"a degree-{degree} polynomial has {n_terms(degree)} coefficients, "
            f"got {flat.shape[-1]}"
        )
    out = np.zeros(flat.shape[:-1] + (degree + 1, degree + 1))
    ii, jj = np.array(terms(degree)).T
    out[..., ii, jj] = flat
    return out


def square_to_flat(square: ArrayLike) -> np.ndarray:
    """Square coefficient array(s) -> flat vector(s) in :func:`terms` order.

    Parameters
    ----------
    square : array_like
        Shape ``(..., n+1, n+1)``.

    Returns
    -------
    np.ndarray
        Shape ``(..., n_terms)``.
    """
    square = np.asarray(square, dtype=float)
    degree = square.shape[-1] - 1
    ii, jj = np.array(terms(degree)).T
    return square[..., ii, jj]


def legendre_1d(t: ArrayLike, degree: int, derivative: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Legendre polynomials ``P_0..P_degree`` at ``t``.

    Bonnet's recurrence, computed in place; stable on ``[-1, 1]`` and a little beyond.

    Parameters
    ----------
    t : array_like
        Normalised coordinates.
    degree : int
        Highest degree.
    derivative : bool
        Also return the derivatives ``dP_k/dt``.

    Returns
    -------
    np.ndarray or tuple of np.ndarray
        ``P`` of shape ``(degree+1,) + t.shape``; with ``derivative=True`` the pair
        ``(P, dP/dt)``.
    """
    t = np.asarray(t, dtype=float)
    p = np.empty((degree + 1,) + t.shape)
    p[0] = 1.0
    if degree >= 1:
        p[1] = t
    tmp = np.empty(t.shape)
    for k in range(1, degree):
        # P_{k+1} = ((2k+1) t P_k - k P_{k-1}) / (k+1)
        np.multiply(t, p[k], out=p[k + 1])
        p[k + 1] *= (2 * k + 1) / (k + 1)
        np.multiply(p[k - 1], k / (k + 1), out=tmp)
        p[k + 1] -= tmp
    if not derivative:
        return p
    dp = np.empty_like(p)
    dp[0] = 0.0
    if degree >= 1:
        dp[1] = 1.0
    for k in range(1, degree):
        np.multiply(p[k], 2 * k + 1, out=dp[k + 1])
        dp[k + 1] += dp[k - 1]
    return p, dp


def legendre_derivative(c: ArrayLike, axis: int) -> np.ndarray:
    """Legendre coefficients of the derivative of a 2-D series along ``axis`` (0: t, 1: s).

    Parameters
    ----------
    c : array_like
        Square coefficient array, ``c[i, j]`` multiplies ``P_i(t) P_j(s)``.
    axis : int
        0 for ``d/dt``, 1 for ``d/ds``.

    Returns
    -------
    np.ndarray
        The same square shape (the highest row or column becomes zero).
    """
    c = np.asarray(c, dtype=float)
    d = np.polynomial.legendre.legder(c, axis=axis)
    pad = [(0, 0), (0, 0)]
    pad[axis] = (0, 1)
    return np.pad(d, pad)


@lru_cache(maxsize=None)
def _legendre_to_power_exact(degree):
    """Exact ``A`` with ``P_i(t) = sum_a A[a, i] t**a`` (Fractions)."""
    rows = [[Fraction(1)] + [Fraction(0)] * degree]  # P_0
    if degree >= 1:
        rows.append([Fraction(0), Fraction(1)] + [Fraction(0)] * (degree - 1))
    for k in range(1, degree):
        pk, pkm1 = rows[k], rows[k - 1]
        new = [Fraction(0)] * (degree + 1)
        for a in range(degree + 1):
            term = -k * pkm1[a]
            if a >= 1:
                term += (2 * k + 1) * pk[a - 1]
            new[a] = term / (k + 1)
        rows.append(new)
    # rows[i][a] is the coefficient of t**a in P_i
    return tuple(tuple(rows[i][a] for i in range(degree + 1)) for a in range(degree + 1))


@lru_cache(maxsize=None)
def _power_to_legendre_exact(degree):
    """Exact inverse of :func:`_legendre_to_power_exact` (upper-triangular solve)."""
    a = [list(r) for r in _legendre_to_power_exact(degree)]
    n = degree + 1
    inv = [[Fraction(0)] * n for _ in range(n)]
    # A is upper triangular (P_i has degree i): solve A X = I column by column
    for col in range(n):
        for row in range(n - 1, -1, -1):
            s = Fraction(1 if row == col else 0)
            for k in range(row + 1, n):
                s -= a[row][k] * inv[k][col]
            inv[row][col] = s / a[row][row]
    return tuple(tuple(r) for r in inv)


def legendre_to_power_matrix(degree: int) -> np.ndarray:
    """``A`` (float) with ``P_i(t) = sum_a A[a, i] t**a``.

    Parameters
    ----------
    degree : int
        Highest degree.

    Returns
    -------
    np.ndarray
        ``(degree+1, degree+1)``, from the exact rational matrix rounded once.
    """
    return np.array(_legendre_to_power_exact(degree), dtype=float)


def legendre_to_power(c: ArrayLike) -> np.ndarray:
    """2-D Legendre coefficients -> power-series coefficients in the same variables.

    The conversion matrix is exact (the power coefficients of ``P_i`` are dyadic
    rationals, exactly representable up to :data:`MAX_DEGREE`), so only the products'
    sums are rounded.

    Parameters
    ----------
    c : array_like
        Square coefficient array, ``c[i, j]`` multiplies ``P_i(t) P_j(s)``.

    Returns
    -------
    np.ndarray
        ``a[p, q]`` multiplies ``t**p s**q``.
    """
    c = np.asarray(c, dtype=float)
    a = legendre_to_power_matrix(c.shape[-1] - 1)
    return a @ c @ a.T


def power_derivative(a: ArrayLike, axis: int) -> np.ndarray:
    """Power-series coefficients of the derivative of a 2-D series along ``axis``.

    Exact (integer factors) up to one rounding per coefficient.

    Parameters
    ----------
    a : array_like
        Square power-series coefficients, ``a[p, q]`` multiplies ``t**p s**q``.
    axis : int
        0 for ``d/dt``, 1 for ``d/ds``.

    Returns
    -------
    np.ndarray
        The same square shape (the highest row or column becomes zero).
    """
    a = np.asarray(a, dtype=float)
    k = np.arange(1, a.shape[axis])
    out = np.zeros_like(a)
    if axis == 0:
        out[:-1] = a[1:] * k[:, None]
    else:
        out[:, :-1] = a[:, 1:] * k[None, :]
    return out


def power_to_legendre_matrix(degree: int) -> np.ndarray:
    """``B = A**-1``: ``t**a = sum_i B[i, a] P_i(t)``.

    Parameters
    ----------
    degree : int
        Highest degree.

    Returns
    -------
    np.ndarray
        ``(degree+1, degree+1)``, from the exact rational inverse rounded once.
    """
    return np.array(_power_to_legendre_exact(degree), dtype=float)


def shift_scale_matrix(degree: int, scale: float, shift: float) -> np.ndarray:
    """Matrix ``S`` re-expressing a power series in ``t`` as one in ``X``, ``t = X/scale + shift``.

    Parameters
    ----------
    degree : int
        Highest degree.
    scale, shift : float
        The change of variable.

    Returns
    -------
    np.ndarray
        ``S`` with ``t**a = sum_k S[k, a] X**k``, ``S[k, a] = C(a, k) shift**(a-k) / scale**k``.
    """
    s = np.zeros((degree + 1, degree + 1))
    for a in range(degree + 1):
        for k in range(a + 1):
            s[k, a] = comb(a, k) * shift ** (a - k) / scale**k
    return s


def legendre_to_monomial(c: ArrayLike, center: tuple[float, float], halfwidth: tuple[float, float],
                         origin: tuple[float, float]) -> np.ndarray:
    """Legendre coefficients on normalised coordinates -> monomials in offsets from ``origin``.

    Parameters
    ----------
    c : (n+1, n+1) array
        ``c[i, j]`` multiplies ``P_i(t) P_j(s)``, ``t = (x - center[0]) / halfwidth[0]``,
        ``s = (y - center[1]) / halfwidth[1]``.
    center, halfwidth, origin : pairs of floats, in the input unit (e.g. pixels).

    Returns
    -------
    m : (n+1, n+1) array, ``m[p, q]`` multiplies ``(x - origin[0])**p (y - origin[1])**q``.
    """
    c = np.asarray(c, dtype=float)
    n = c.shape[-1] - 1
    a = legendre_to_power_matrix(n)
    sx = shift_scale_matrix(n, halfwidth[0], (origin[0] - center[0]) / halfwidth[0])
    sy = shift_scale_matrix(n, halfwidth[1], (origin[1] - center[1]) / halfwidth[1])
    return (sx @ a) @ c @ (sy @ a).T


def monomial_to_legendre(m: ArrayLike, center: tuple[float, float], halfwidth: tuple[float, float],
                         origin: tuple[float, float]) -> np.ndarray:
    """Inverse of :func:`legendre_to_monomial`.

    Parameters
    ----------
    m : array_like
        ``m[p, q]`` multiplies ``(x - origin[0])**p (y - origin[1])**q``.
    center, halfwidth, origin : pairs of floats
        In the input unit (e.g. pixels), as for :func:`legendre_to_monomial`.

    Returns
    -------
    np.ndarray
        ``c[i, j]`` multiplies ``P_i(t) P_j(s)``.
    """
    m = np.asarray(m, dtype=float)
    n = m.shape[-1] - 1
    b = power_to_legendre_matrix(n)
    # X = x - origin = t * halfwidth - (origin - center): a power series in X is one in t
    tx = shift_scale_matrix(n, 1.0 / halfwidth[0], -(origin[0] - center[0]))
    ty = shift_scale_matrix(n, 1.0 / halfwidth[1], -(origin[1] - center[1]))
    return (b @ tx) @ m @ (b @ ty).T


def evaluate_monomial(m: ArrayLike, x: ArrayLike, y: ArrayLike) -> np.ndarray:
    """Evaluate ``sum m[p, q] x**p y**q`` by nested Horner schemes (vectorised).

    Parameters
    ----------
    m : array_like
        Square monomial array.
    x, y : array_like
        The points (broadcast together).

    Returns
    -------
    np.ndarray
        The values, of the broadcast shape.
    """
    m = np.asarray(m, dtype=float)
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    n = m.shape[0] - 1
    result = np.zeros(np.broadcast(x, y).shape)
    for p in range(n, -1, -1):
        inner = np.zeros_like(result)
        for q in range(n - p, -1, -1):
            inner = inner * y + m[p, q]
        result = result * x + inner
    return result
