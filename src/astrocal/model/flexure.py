"""The telescope's flexure field: a small distortion fixed in the telescope frame.

On sky, the telescope adds a distortion that changes with pointing. It is modelled as a
vector polynomial field ``D`` in the telescope frame ``(u, v)`` (arcsec; ``v`` toward the
zenith, ``u`` toward increasing azimuth, see :mod:`astrocal.sky.astrometry`), whose
coefficients are linear in a few functions ``f_k`` of the zenith distance ``z``:

    D(u, v; z) = sum_k f_k(z) sum_j t_kj b_j(u / R, v / R)

with ``R`` the normalisation radius (arcsec) and ``b_j`` the vector terms below. The
instrument sees it rotated by the rotator angle ``r`` (angle of the instrument +y axis
from the zenith direction) with the frame's ``parity``:

    Delta(x, y) = M(r) D(u, v),   M(r) = [[parity cos r, parity sin r], [-sin r, cos r]]

the same matrix that takes ``(u, v)`` to the instrument frame ``(x, y)``. A star observed
in a sky exposure then lands at

    G(p) = x + Delta + (pose of the exposure) + (catalogue error),

so ``t_kj`` (arcsec: the displacement at the normalised radius) enter linearly.

Vector terms ``b_j`` of a field of total degree ``d`` (default 2): the two linear terms
that are *not* a similarity -- ``anamorphism = (u, -v)`` and ``shear = (v, u)`` -- and, for
every monomial ``u^i v^j`` with ``2 <= i + j <= d``, one term along ``u`` and one along
``v``. The constant and the similarity part of degree 1 (translation, scale, rotation) are
left out: each sky exposure has its own pointing, scale and rotation, which absorb them
exactly.

Functions of the zenith distance (names used in the campaign file and the results):
``"1"`` (constant), ``"cos_z"``, ``"sin_z"``, ``"tan_z"``, ``"sec_z"``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

#: functions of the zenith distance (radians) that the flexure coefficients are linear in
ZENITH_FUNCTIONS = {
    "1": lambda z: np.ones_like(z),
    "cos_z": np.cos,
    "sin_z": np.sin,
    "tan_z": np.tan,
    "sec_z": lambda z: 1.0 / np.cos(z),
}

DEFAULT_FUNCTIONS = ("1", "cos_z", "sin_z")


def _monomials(degree):
    return [(i, n - i) for n in range(2, degree + 1) for i in range(n, -1, -1)]


@dataclass(frozen=True)
class FlexureBasis:
    """The flexure field's linear parameterisation.

    ``degree``: total degree of the field in the telescope frame (1..5, default 2);
    ``functions``: names from :data:`ZENITH_FUNCTIONS`; ``radius_arcsec``: normalisation
    radius of ``(u, v)`` (about half the field of view).
    """

    degree: int = 2
    functions: tuple = DEFAULT_FUNCTIONS
    radius_arcsec: float = 5.0

    def __post_init__(self):
        if not (isinstance(self.degree, (int, np.integer)) and 1 <= self.degree <= 5):
            raise ValueError(f"flexure degree must be an integer 1..5, got {self.degree!r}")
        unknown = [f for f in self.functions if f not in ZENITH_FUNCTIONS]
        if unknown or not self.functions:
            raise ValueError(f"unknown flexure function(s) {unknown or list(self.functions)}; "
                             f"choose from {sorted(ZENITH_FUNCTIONS)}")
        if len(set(self.functions)) != len(self.functions):
            raise ValueError(f"flexure functions repeat: {list(self.functions)}")
        if not self.radius_arcsec > 0:
            raise ValueError(f"flexure radius_arcsec must be positive, got {self.radius_arcsec}")

    # ------------------------------------------------------------------ terms
    @property
    def field_terms(self) -> list[str]:
        """Names of the vector terms ``b_j`` of one function (length ``n_field``)."""
        names = ["anamorphism", "shear"]
        for i, j in _monomials(self.degree):
            names += [f"u:u{i}v{j}", f"v:u{i}v{j}"]
        return names

    @property
    def n_field(self) -> int:
        """The number of vector terms of one zenith function."""
        return len(self.field_terms)

    @property
    def n_params(self) -> int:
        """The number of flexure coefficients (vector terms times zenith functions)."""
        return self.n_field * len(self.functions)

    @property
    def names(self) -> list[str]:
        """Parameter names ``flex[<function>][<term>]``, function-major."""
        return [f"flex[{f}][{t}]" for f in self.functions for t in self.field_terms]

    def function_of_param(self) -> np.ndarray:
        """Index of the zenith function of each parameter.

        Returns
        -------
        numpy.ndarray
            (n_params,), int.
        """
        return np.repeat(np.arange(len(self.functions)), self.n_field)

    # ------------------------------------------------------------------ evaluation
    def telescope_terms(self, u: ArrayLike, v: ArrayLike) -> np.ndarray:
        """The vector terms at telescope-frame positions.

        Parameters
        ----------
        u, v : array_like
            Telescope-frame positions (N,), arcsec.

        Returns
        -------
        numpy.ndarray
            (N, 2, n_field), arcsec per arcsec.
        """
        a = np.asarray(u, float) / self.radius_arcsec
        b = np.asarray(v, float) / self.radius_arcsec
        out = np.zeros(a.shape + (2, self.n_field))
        out[..., 0, 0], out[..., 1, 0] = a, -b  # anamorphism
        out[..., 0, 1], out[..., 1, 1] = b, a  # shear
        k = 2
        for i, j in _monomials(self.degree):
            m = a**i * b**j
            out[..., 0, k] = m
            out[..., 1, k + 1] = m
            k += 2
        return out

    def zenith_factors(self, zenith_deg: ArrayLike) -> np.ndarray:
        """``f_k(z)`` for zenith distances.

        Parameters
        ----------
        zenith_deg : array_like
            Zenith distances, degrees.

        Returns
        -------
        numpy.ndarray
            (..., n_functions).
        """
        z = np.radians(np.asarray(zenith_deg, float))
        return np.stack([ZENITH_FUNCTIONS[f](z) for f in self.functions], -1)

    def design(self, u: ArrayLike, v: ArrayLike, zenith_deg: ArrayLike, rotator_deg: ArrayLike,
               parity: int | ArrayLike = 1) -> np.ndarray:
        """Instrument-frame displacement per unit coefficient.

        Parameters
        ----------
        u, v : array_like
            Telescope-frame positions (N,), arcsec.
        zenith_deg, rotator_deg : array_like
            Zenith distance and rotator angle per point (N,) or scalars, degrees.
        parity : int or array_like
            The frame's parity per point (N,) or a scalar (+1 or -1).

        Returns
        -------
        numpy.ndarray
            (N, 2, n_params), arcsec per arcsec of coefficient.
        """
        u = np.asarray(u, float)
        tt = self.telescope_terms(u, v)  # (N, 2, nf)
        r = np.radians(np.broadcast_to(np.asarray(rotator_deg, float), u.shape))
        p = np.broadcast_to(np.asarray(parity, float), u.shape)
        c, s = np.cos(r), np.sin(r)
        inst = np.empty_like(tt)
        inst[:, 0] = p[:, None] * (c[:, None] * tt[:, 0] + s[:, None] * tt[:, 1])
        inst[:, 1] = -s[:, None] * tt[:, 0] + c[:, None] * tt[:, 1]
        f = self.zenith_factors(np.broadcast_to(np.asarray(zenith_deg, float), u.shape))  # (N, nfun)
        return (inst[..., None, :] * f[:, None, :, None]).reshape(u.shape + (2, self.n_params))

    def displacement(self, coeffs: ArrayLike, u: ArrayLike, v: ArrayLike, zenith_deg: ArrayLike,
                     rotator_deg: ArrayLike, parity: int | ArrayLike = 1) -> np.ndarray:
        """Instrument-frame displacement for coefficients.

        Parameters
        ----------
        coeffs : array_like
            The flexure coefficients (n_params,), arcsec.
        u, v : array_like
            Telescope-frame positions (N,), arcsec.
        zenith_deg, rotator_deg : array_like
            Zenith distance and rotator angle per point (N,) or scalars, degrees.
        parity : int or array_like
            The frame's parity per point (N,) or a scalar (+1 or -1).

        Returns
        -------
        numpy.ndarray
            (N, 2), arcsec.
        """
        coeffs = np.asarray(coeffs, float)
        if coeffs.shape != (self.n_params,):
            raise ValueError(f"expected {self.n_params} flexure coefficients ({', '.join(self.names[:3])}, ...), "
                             f"got shape {coeffs.shape}")
        return self.design(u, v, zenith_deg, rotator_deg, parity) @ coeffs

    def as_dict(self) -> dict:
        """The basis as plain types (for ``fit.json``).

        Returns
        -------
        dict
            ``degree``, ``functions`` and ``radius_arcsec``.
        """
        return {"degree": int(self.degree), "functions": list(self.functions),
                "radius_arcsec": float(self.radius_arcsec)}
