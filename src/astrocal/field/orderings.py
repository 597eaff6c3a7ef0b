"""Orderings of monomial coefficients used by other software.

Every function here converts between astrocal's square monomial array ``m`` (``m[p, q]``
multiplies ``X**p * Y**q``, with ``X, Y`` offsets from the ordering's reference point) and
the flat lists or keyword names that a format uses.  The reference point itself and the
units belong to the format (see :mod:`astrocal.formats`); only the order lives here.

Orderings
---------
``astromet``
    XMM-Newton OM AstroMet ``POLYNOM_MAP`` (CAL_omDistortion, CALHB eq. 29): the outer
    loop runs over the power of X from 0 to n, the inner over the power of Y from 0 to
    n minus that, so for n = 7 terms 0..7 are Y**0..Y**7 and term 35 is X**7 (36 terms).
``sip``
    FITS SIP keywords ``A_p_q`` (``B_p_q``, ``AP_p_q``, ``BP_p_q``): the coefficient of
    ``u**p v**q``; by default only the non-linear terms ``2 <= p + q <= order``.
``siaf``
    JWST SIAF ``Sci2IdlX``..., index ``k = i (i + 1) / 2 + j`` for ``x**(i-j) y**j``.
``idctab``
    HST IDCTAB columns ``CX{i}{j}`` / ``CY{i}{j}``: the coefficient of ``x**j y**(i-j)``.
"""
from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np
from numpy.typing import ArrayLike

from ..errors import FieldError
from .basis import MAX_DEGREE

ORDERINGS = ("astromet", "sip", "siaf", "idctab")

ASTROMET_DEGREE = 7
ASTROMET_NTERMS = 36


def check_ordering(name: str) -> str:
    """Return the canonical name of an ordering or raise naming the known ones.

    Parameters
    ----------
    name : str
        An ordering name (case and surrounding blanks ignored).

    Returns
    -------
    str
        One of :data:`ORDERINGS`.

    Raises
    ------
    FieldError
        For an unknown ordering.
    """
    key = str(name).strip().lower()
    if key not in ORDERINGS:
        raise FieldError(f"unknown coefficient ordering {name!r}; known: {', '.join(ORDERINGS)}")
    return key


def _square(m):
    m = np.asarray(m, dtype=float)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise FieldError(f"monomial coefficients must be a square (n+1, n+1) array, got {m.shape}")
    return m


def _degree_from_count(count, name):
    """Degree n with (n+1)(n+2)/2 == count, or a clear error."""
    for n in range(0, MAX_DEGREE + 1):
        if (n + 1) * (n + 2) // 2 == count:
            return n
    raise FieldError(
        f"{name}: {count} coefficients is not the length of a complete 2-D polynomial "
        "(1, 3, 6, 10, 15, 21, 28, 36, ... terms)"
    )


def _check_finite(values, name):
    if not np.all(np.isfinite(values)):
        raise FieldError(f"{name}: coefficients contain NaN or infinite values")


def _check_no_higher_terms(m, degree, name):
    n = m.shape[0] - 1
    p, q = np.indices(m.shape)
    if np.any(m[(p + q > degree)]):
        raise FieldError(
            f"{name}: the polynomial has non-zero terms above degree {degree} "
            f"(it is of degree {n}); it cannot be written in this ordering"
        )


def trim_monomials(mx: ArrayLike, my: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Drop the highest total degrees whose coefficients are all exactly zero.

    A degree-5 solution written in a fixed 36-term (degree 7) layout comes back as degree 5.

    Parameters
    ----------
    mx, my : array_like
        Square monomial arrays of the two output coordinates.

    Returns
    -------
    mx, my : np.ndarray
        The arrays cut to the highest degree with a non-zero term in either (at least 1).
    """
    mx = _square(mx)
    my = _square(my)
    p, q = np.indices(mx.shape)
    nonzero = (mx != 0) | (my != 0)
    degree = int(max((p + q)[nonzero].max(), 1)) if nonzero.any() else 1
    return mx[: degree + 1, : degree + 1].copy(), my[: degree + 1, : degree + 1].copy()


# --------------------------------------------------------------------------- astromet
def astromet_terms(degree: int = ASTROMET_DEGREE) -> list[tuple[int, int]]:
    """``(p, q)`` exponent pairs of X and Y in AstroMet order.

    Parameters
    ----------
    degree : int
        Total degree.

    Returns
    -------
    list of (int, int)
        The power of X in the outer loop, of Y in the inner.
    """
    return [(p, q) for p in range(degree + 1) for q in range(degree + 1 - p)]


def to_astromet(m: ArrayLike) -> np.ndarray:
    """Square monomial array (degree <= 7) -> the 36 AstroMet coefficients.

    Parameters
    ----------
    m : array_like
        Square monomial array, ``m[p, q]`` multiplies ``X**p * Y**q``.

    Returns
    -------
    np.ndarray
        The 36 coefficients in AstroMet order.

    Raises
    ------
    FieldError
        For non-finite values or non-zero terms above degree 7.
    """
    m = _square(m)
    _check_finite(m, "astromet")
    _check_no_higher_terms(m, ASTROMET_DEGREE, "POLYNOM_MAP (astromet ordering, degree <= 7)")
    full = np.zeros((ASTROMET_DEGREE + 1, ASTROMET_DEGREE + 1))
    k = min(m.shape[0], ASTROMET_DEGREE + 1)
    full[:k, :k] = m[:k, :k]
    return np.array([full[p, q] for p, q in astromet_terms()])


def from_astromet(coeffs: ArrayLike) -> np.ndarray:
    """36 AstroMet coefficients -> square monomial array of degree 7.

    Parameters
    ----------
    coeffs : array_like
        The 36 coefficients.

    Returns
    -------
    np.ndarray
        (8, 8) monomial array.

    Raises
    ------
    FieldError
        For a wrong count or non-finite values.
    """
    coeffs = np.asarray(coeffs, dtype=float).ravel()
    if coeffs.size != ASTROMET_NTERMS:
        raise FieldError(f"astromet ordering needs exactly {ASTROMET_NTERMS} coefficients, got {coeffs.size}")
    _check_finite(coeffs, "astromet")
    m = np.zeros((ASTROMET_DEGREE + 1, ASTROMET_DEGREE + 1))
    for c, (p, q) in zip(coeffs, astromet_terms()):
        m[p, q] = c
    return m


# --------------------------------------------------------------------------- siaf
def siaf_terms(degree: int) -> list[tuple[int, int]]:
    """``(p, q)`` exponent pairs in SIAF order: index ``k = i(i+1)/2 + j`` is ``x**(i-j) y**j``.

    Parameters
    ----------
    degree : int
        Total degree.

    Returns
    -------
    list of (int, int)
        The exponents of x and y.
    """
    return [(i - j, j) for i in range(degree + 1) for j in range(i + 1)]


def to_siaf(m: ArrayLike) -> np.ndarray:
    """Square monomial array -> flat SIAF coefficient vector.

    Parameters
    ----------
    m : array_like
        Square monomial array, ``m[p, q]`` multiplies ``X**p * Y**q``.

    Returns
    -------
    np.ndarray
        The coefficients in SIAF order.
    """
    m = _square(m)
    _check_finite(m, "siaf")
    return np.array([m[p, q] for p, q in siaf_terms(m.shape[0] - 1)])


def from_siaf(coeffs: ArrayLike) -> np.ndarray:
    """Flat SIAF coefficient vector -> square monomial array.

    Parameters
    ----------
    coeffs : array_like
        The coefficients (the length of a complete polynomial).

    Returns
    -------
    np.ndarray
        Square monomial array.

    Raises
    ------
    FieldError
        For a count that is not that of a complete polynomial, or non-finite values.
    """
    coeffs = np.asarray(coeffs, dtype=float).ravel()
    degree = _degree_from_count(coeffs.size, "siaf")
    _check_finite(coeffs, "siaf")
    m = np.zeros((degree + 1, degree + 1))
    for c, (p, q) in zip(coeffs, siaf_terms(degree)):
        m[p, q] = c
    return m


# --------------------------------------------------------------------------- idctab
def to_idctab(m: ArrayLike, prefix: str = "CX", constant: bool = False) -> dict[str, float]:
    """Square monomial array -> ``{"CX{i}{j}": value}`` (term ``x**j y**(i-j)``).

    Parameters
    ----------
    m : array_like
        Square monomial array, ``m[p, q]`` multiplies ``X**p * Y**q``.
    prefix : str
        ``"CX"`` or ``"CY"``.
    constant : bool
        ``False`` (the usual IDCTAB layout) requires the constant term to be zero and
        omits ``CX00``.

    Returns
    -------
    dict
        ``{column name: value}``.

    Raises
    ------
    FieldError
        For a degree above :data:`IDCTAB_MAX_DEGREE`, a non-zero constant term that the
        layout cannot hold, or non-finite values.
    """
    m = _square(m)
    _check_finite(m, "idctab")
    n = m.shape[0] - 1
    if n > IDCTAB_MAX_DEGREE:
        raise FieldError(f"idctab: column names CX{{i}}{{j}} have one digit per index, so degree "
                         f"{n} > {IDCTAB_MAX_DEGREE} cannot be written")
    if not constant and m[0, 0] != 0.0:
        raise FieldError(f"idctab: {prefix}00 is not part of this table layout but the constant term is {m[0, 0]!r}")
    out = {}
    for i in range(0 if constant else 1, n + 1):
        for j in range(i + 1):
            out[f"{prefix}{i}{j}"] = float(m[j, i - j])
    return out


_IDC_KEY = re.compile(r"^(C[XY])(\d)(\d)$")
_IDC_LONG = re.compile(r"^(C[XY])\d{3,}$")
IDCTAB_MAX_DEGREE = 9


def from_idctab(coeffs: Mapping[str, float], prefix: str = "CX", degree: int | None = None) -> np.ndarray:
    """``{"CX{i}{j}": value}`` (any subset; other prefixes ignored) -> square monomial array.

    Parameters
    ----------
    coeffs : Mapping
        ``{column name: value}``.
    prefix : str
        ``"CX"`` or ``"CY"``.
    degree : int, optional
        Degree of the array (default the highest ``i`` found).

    Returns
    -------
    np.ndarray
        Square monomial array.

    Raises
    ------
    FieldError
        For ambiguous or impossible column names, no coefficient of ``prefix``, a term
        above ``degree`` or non-finite values.
    """
    terms = {}
    for key, value in coeffs.items():
        if _IDC_LONG.match(str(key).upper()):
            raise FieldError(f"idctab: column {key} is ambiguous (CX{{i}}{{j}} names have one digit "
                             f"per index, degree <= {IDCTAB_MAX_DEGREE})")
        match = _IDC_KEY.match(str(key).upper())
        if not match or match.group(1) != prefix:
            continue
        i, j = int(match.group(2)), int(match.group(3))
        if j > i:
            raise FieldError(f"idctab: column {key} has j > i, which no term x**j y**(i-j) allows")
        terms[(i, j)] = float(value)
    if not terms:
        raise FieldError(f"idctab: no {prefix}ij coefficients found")
    n = max(i for i, _ in terms) if degree is None else int(degree)
    m = np.zeros((n + 1, n + 1))
    for (i, j), value in terms.items():
        if i > n:
            raise FieldError(f"idctab: {prefix}{i}{j} is above the requested degree {n}")
        m[j, i - j] = value
    _check_finite(m, "idctab")
    return m


# --------------------------------------------------------------------------- sip
_SIP_KEY = re.compile(r"^(A|B|AP|BP)_(\d+)_(\d+)$")


def to_sip(m: ArrayLike, prefix: str = "A", min_order: int = 2) -> dict[str, float]:
    """Square monomial array -> ``{"A_p_q": value}`` for ``min_order <= p + q <= order``.

    Parameters
    ----------
    m : array_like
        Square monomial array, ``m[p, q]`` multiplies ``X**p * Y**q``.
    prefix : str
        ``"A"``, ``"B"``, ``"AP"`` or ``"BP"``.
    min_order : int
        The lowest total degree written.

    Returns
    -------
    dict
        ``{keyword: value}``.

    Raises
    ------
    FieldError
        If a term below ``min_order`` is non-zero (SIP keeps those in CRPIX/CD), or for
        non-finite values.
    """
    m = _square(m)
    _check_finite(m, "sip")
    n = m.shape[0] - 1
    out = {}
    for p in range(n + 1):
        for q in range(n + 1 - p):
            if p + q < min_order:
                if m[p, q] != 0.0:
                    raise FieldError(
                        f"sip: term {prefix}_{p}_{q} is below order {min_order} but non-zero; "
                        "fold it into CRPIX/CD first"
                    )
                continue
            out[f"{prefix}_{p}_{q}"] = float(m[p, q])
    return out


def from_sip(coeffs: Mapping[str, float], prefix: str = "A", order: int | None = None) -> np.ndarray:
    """``{"A_p_q": value}`` (other prefixes ignored) -> square monomial array of ``order``.

    Parameters
    ----------
    coeffs : Mapping
        ``{keyword: value}``.
    prefix : str
        ``"A"``, ``"B"``, ``"AP"`` or ``"BP"``.
    order : int, optional
        The SIP order (default the highest total degree found).

    Returns
    -------
    np.ndarray
        Square monomial array.

    Raises
    ------
    FieldError
        For a term above ``order`` or non-finite values.
    """
    found = {}
    for key, value in coeffs.items():
        match = _SIP_KEY.match(str(key).upper())
        if match and match.group(1) == prefix:
            found[(int(match.group(2)), int(match.group(3)))] = float(value)
    n = max((p + q for p, q in found), default=0) if order is None else int(order)
    m = np.zeros((n + 1, n + 1))
    for (p, q), value in found.items():
        if p + q > n:
            raise FieldError(f"sip: {prefix}_{p}_{q} exceeds {prefix}_ORDER = {n}")
        m[p, q] = value
    _check_finite(m, "sip")
    return m


def pack(m: ArrayLike, ordering: str, **kwargs: object) -> np.ndarray | dict[str, float]:
    """Dispatch to ``to_<ordering>``.

    Parameters
    ----------
    m : array_like
        Square monomial array, ``m[p, q]`` multiplies ``X**p * Y**q``.
    ordering : str
        One of :data:`ORDERINGS`.
    **kwargs
        Passed to the ordering's function.

    Returns
    -------
    np.ndarray or dict
        The coefficients in that ordering.
    """
    return {"astromet": to_astromet, "sip": to_sip, "siaf": to_siaf,
            "idctab": to_idctab}[check_ordering(ordering)](m, **kwargs)


def unpack(coeffs: ArrayLike | Mapping[str, float], ordering: str, **kwargs: object) -> np.ndarray:
    """Dispatch to ``from_<ordering>``.

    Parameters
    ----------
    coeffs : array_like or Mapping
        The coefficients in that ordering.
    ordering : str
        One of :data:`ORDERINGS`.
    **kwargs
        Passed to the ordering's function.

    Returns
    -------
    np.ndarray
        Square monomial array.
    """
    return {"astromet": from_astromet, "sip": from_sip, "siaf": from_siaf,
            "idctab": from_idctab}[check_ordering(ordering)](coeffs, **kwargs)
