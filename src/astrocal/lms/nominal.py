"""The nominal (optical-design) LMS map with one direction declared the truth.

The optical model's forward matrices (A, B) and inverse matrices (AI, BI) disagree by up to
~1.8 px (see :mod:`astrocal.lms.traces`). :class:`NominalMap` takes one of them as the truth and
computes the other direction by Newton iteration on it, to far below 1e-3 px:

- ``truth="forward"`` (default): (xi, lam) -> (x, y) is the A/B polynomial, exactly as ScopeSim
  evaluates it; (x, y) -> (xi, lam) solves A/B, started from AI/BI.
- ``truth="inverse"``: (x, y) -> (xi, lam) is the AI/BI polynomial (what ScopeSim uses to *render*
  frames); (xi, lam) -> (x, y) solves AI/BI, started from A/B.

Units: xi [arcsec], lam [um], x, y [mm] in the focal plane; ``sli`` file slice index 0..27.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from numpy.typing import ArrayLike

from .errors import InversionError
from .mosaic import load_mosaic
from .traces import (N_SLICES, SLICE_HALF_LENGTH_ARCSEC, EchelleSetting, PolyEvaluation, TraceMatrices,
                     evaluate_forward, evaluate_inverse, trace_matrices)

__all__ = ["TRUTHS", "RANGE_PAD", "NominalMap", "newton_solve"]

TRUTHS = ("forward", "inverse")
RANGE_PAD = 0.02
"""Relative widening of a setting's wavelength range beyond the mosaic edges."""
_TOL_MM = 1e-9                 # 5.6e-8 px
_TOL_XI_LAM = np.array([1e-9, 1e-12])   # arcsec, um (1e-12 um ~ 1e-7 px along the dispersion)


def newton_solve(func: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]], target: np.ndarray,
                 start: np.ndarray, tol: float | ArrayLike, maxiter: int = 40, what: str = "map") -> np.ndarray:
    """Solve ``func(args).value == target`` for N independent 2-vectors by Newton's method.

    Parameters
    ----------
    func : callable
        ``func(args, index) -> (value (M, 2), jacobian (M, 2, 2))`` for the points ``index``.
    target, start : ndarray, shape (N, 2)
        The values sought and the starting arguments.
    tol : float or array of 2
        Convergence: ``|value - target| <= tol`` in both components.
    maxiter : int
        Newton steps at most.
    what : str
        The map's name in the error message.

    Returns
    -------
    ndarray, shape (N, 2)
        The arguments that reach ``target``.

    Raises
    ------
    InversionError
        If some point has not converged after ``maxiter`` steps (or became non-finite).
    """
    args = np.array(start, float, copy=True)
    todo = np.arange(len(args))
    tol = np.broadcast_to(np.asarray(tol, float), (2,))
    for _ in range(maxiter):
        if todo.size == 0:
            return args
        val, jac = func(args[todo], todo)
        res = val - target[todo]
        done = np.all(np.abs(res) <= tol, axis=1)
        todo_next = todo[~done]
        if todo_next.size:
            step = np.linalg.solve(jac[~done], res[~done][..., None])[..., 0]
            args[todo_next] -= step
            bad = ~np.all(np.isfinite(args[todo_next]), axis=1)
            if bad.any():
                break
        todo = todo_next
    if todo.size:
        raise InversionError(f"{what}: Newton iteration did not converge for {todo.size} point(s), "
                             f"first index {int(todo[0])}")
    return args


@dataclass(frozen=True)
class NominalMap:
    """The optical model at one echelle setting, with one direction as the truth.

    Parameters
    ----------
    setting : EchelleSetting
    truth : {"forward", "inverse"}
        Which polynomial set is exact (see the module docstring).
    """

    setting: EchelleSetting
    truth: str = "forward"

    def __post_init__(self):
        if self.truth not in TRUTHS:
            raise ValueError(f"truth must be one of {TRUTHS}, got {self.truth!r}")

    @property
    def matrices(self) -> TraceMatrices:
        """The setting's polynomial matrices (:func:`~astrocal.lms.traces.trace_matrices`)."""
        return trace_matrices(self.setting)

    def forward(self, sli: ArrayLike, xi: ArrayLike, lam: ArrayLike) -> PolyEvaluation:
        """(sli, xi, lam) -> focal-plane (x, y) [mm], with d/d(xi, lam) and d/d(echelle angle).

        Parameters
        ----------
        sli : array_like of int
            Slice file indices 0..27.
        xi, lam : array_like
            Position along the slice [arcsec] and wavelength [um]; broadcast to one 1-D length.

        Returns
        -------
        PolyEvaluation
            ``value`` (N, 2) the focal-plane (x, y) [mm], ``jacobian`` (N, 2, 2) d(x, y)/d(xi, lam),
            ``dtheta`` (N, 2) d(x, y)/d(echelle angle).
        """
        poly = evaluate_forward(self.matrices, sli, xi, lam)
        if self.truth == "forward":
            return poly
        sli = np.broadcast_to(np.asarray(sli), (poly.value.shape[0],))
        target = np.stack([np.broadcast_to(np.ravel(xi), (len(sli),)),
                           np.broadcast_to(np.ravel(lam), (len(sli),))], axis=1).astype(float)

        def func(xy, idx):
            g = evaluate_inverse(self.matrices, sli[idx], xy[:, 0], xy[:, 1])
            return g.value, g.jacobian

        xy = newton_solve(func, target, poly.value, _TOL_XI_LAM, what="forward map (inverse truth)")
        g = evaluate_inverse(self.matrices, sli, xy[:, 0], xy[:, 1])
        jac = np.linalg.inv(g.jacobian)
        return PolyEvaluation(xy, jac, -np.einsum("nij,nj->ni", jac, g.dtheta))

    def inverse(self, sli: ArrayLike, x: ArrayLike, y: ArrayLike) -> np.ndarray:
        """Focal-plane (x, y) [mm] of slice ``sli`` -> (xi [arcsec], lam [um]).

        Parameters
        ----------
        sli : array_like of int
            Slice file indices 0..27.
        x, y : array_like
            Focal-plane position [mm]; broadcast to one 1-D length.

        Returns
        -------
        ndarray (N, 2)
            (xi [arcsec], lam [um]).
        """
        poly = evaluate_inverse(self.matrices, sli, x, y)
        if self.truth == "inverse":
            return poly.value
        sli = np.broadcast_to(np.asarray(sli), (poly.value.shape[0],))
        target = np.stack([np.broadcast_to(np.ravel(x), (len(sli),)),
                           np.broadcast_to(np.ravel(y), (len(sli),))], axis=1).astype(float)

        def func(xl, idx):
            f = evaluate_forward(self.matrices, sli[idx], xl[:, 0], xl[:, 1])
            return f.value, f.jacobian

        return newton_solve(func, target, poly.value, _TOL_MM, what="inverse map (forward truth)")

    def lam_at_x(self, sli: ArrayLike, xi: ArrayLike, x_mm: ArrayLike, lam_start: ArrayLike) -> np.ndarray:
        """Wavelength [um] at which slice ``sli`` at ``xi`` reaches focal-plane ``x_mm`` (1-D Newton).

        Parameters
        ----------
        sli : array_like of int
            Slice file indices 0..27.
        xi : array_like
            Position along the slice [arcsec].
        x_mm : array_like
            Focal-plane x [mm].
        lam_start : array_like
            Starting wavelengths [um].

        Returns
        -------
        ndarray
            Wavelengths [um] (1-D, the broadcast length).
        """
        sli, xi, x_mm, lam = (np.ravel(a) for a in np.broadcast_arrays(sli, xi, x_mm, np.asarray(lam_start, float)))
        lam = lam.astype(float).copy()
        for _ in range(40):
            f = self.forward(sli, xi, lam)
            res = f.value[:, 0] - x_mm
            if np.all(np.abs(res) <= _TOL_MM):
                return lam
            lam = lam - res / f.jacobian[:, 0, 1]
        raise InversionError("wavelength at the mosaic edge: Newton iteration did not converge")

    @cached_property
    def wavelength_range(self) -> tuple[float, float]:
        """The setting's wavelength range [um]: the lowest and highest wavelength that any slice
        (at xi = 0 and at its ends) puts on the mosaic's outer x edges (-37.979 and +37.979 mm),
        widened by :data:`RANGE_PAD` of the width on each side (~40 px) so that every wavelength
        an as-built instrument can put on the mosaic is inside."""
        edge = load_mosaic().x_edge_mm
        sli = np.repeat(np.arange(N_SLICES), 3)
        xi = np.tile([-SLICE_HALF_LENGTH_ARCSEC, 0.0, SLICE_HALF_LENGTH_ARCSEC], N_SLICES)
        lam_c = self.setting.lam_c_um
        lo = self.lam_at_x(sli, xi, -edge, lam_c)
        hi = self.lam_at_x(sli, xi, +edge, lam_c)
        lo, hi = float(lo.min()), float(hi.max())
        pad = RANGE_PAD * (hi - lo)
        return lo - pad, hi + pad

    @cached_property
    def centre_lines(self) -> tuple[np.ndarray, np.ndarray]:
        """Every slice's centre line (xi = 0) on a 257-point wavelength grid spanning the setting's
        range plus 5 % on each side: (x, y) [mm], each of shape (28, 257), x increasing."""
        lo, hi = self.wavelength_range
        pad = 0.05 * (hi - lo)
        lam = np.linspace(lo - pad, hi + pad, 257)
        sli = np.repeat(np.arange(N_SLICES), lam.size)
        f = self.forward(sli, 0.0, np.tile(lam, N_SLICES)).value
        return f[:, 0].reshape(N_SLICES, -1), f[:, 1].reshape(N_SLICES, -1)
