"""A distortion solution: the instrument field plus the conventions that products need.

The instrument field ``G`` maps 0-based detector pixels to undistorted focal-plane
coordinates (arcsec).  Products (AstroMet, SIP, SIAF tables) express it relative to a
*linear grid*: a copy of the focal plane, centred on the boresight pixel ``b`` and scaled
by the plate scale ``s`` (arcsec/pixel), rotated by ``rotation`` so that its axes follow
the detector's::

    L(p) = b + M (G(p) - G(b)),    M = R(-rotation) diag(1, parity) / s

so ``L`` is in pixels.  The *offset* at a detector position is the measured position
minus the linear-grid position (XMM-OM AstroMet sign):

- reverse offsets (AstroMet ``POLYNOM_MAP2``): ``D2(p) = p - L(p)``, a function of the
  distorted (measured) position ``p``; the linear-grid position is ``p - D2(p)``;
- forward offsets (AstroMet ``POLYNOM_MAP`` and the ``FILTER-<ID>`` tables):
  ``D(l) = L^-1(l) - l``, a function of the linear-grid position ``l``; the distorted
  position is ``l + D(l)``.

``D2`` is exactly a polynomial of the field's degree; ``D`` is fitted (see
:func:`astrocal.field.invert`) or, where exact values are needed, solved point by point.

A solution may carry a *residual field* ``r`` beyond the polynomial (a fit with the
residual of :mod:`astrocal.field.residual`): the full field is ``G(p) + r(p)``, the linear
grid keeps the polynomial's reference ``G(b)`` (so ``L(p) = b + M (G(p) + r(p) - G(b))``),
and the offsets, reverse and forward, are those of the full field. The polynomial alone is
:meth:`Solution.linear_field` (``r`` left out; what the polynomial products approximate).
"""
from __future__ import annotations

from dataclasses import dataclass, field as dc_field
from types import SimpleNamespace
from typing import Any, Callable, Optional

import numpy as np
from numpy.typing import ArrayLike

from .errors import AstrocalError
from .field import DistortionField, affine_part
from .field.inverse import solve
from .pixels import detector_shape


class InvalidSolutionError(AstrocalError, ValueError):
    """Values that cannot make a :class:`Solution` (a field that does not map pixels to
    arcsec, a parity other than +1/-1, a plate scale that is not positive): from a solution
    file, the message names the value."""


@dataclass(frozen=True, eq=False)
class Solution:
    """A distortion solution for one filter.

    Attributes
    ----------
    field : DistortionField
        Detector pixels (0-based) -> focal plane (arcsec), the instrument's inverse
        distortion ``G``.
    filter : str
        Filter (or filter element) identifier, e.g. ``"L"``.
    detector_shape : (ny, nx)
        Detector size in pixels.
    boresight : (x, y)
        0-based pixel of the linear grid's origin; default: the domain centre.
    plate_scale : float
        arcsec per pixel of the linear grid; default: the areal scale of the field's
        best affine part.
    rotation : float
        degrees; angle of the detector x axis in the focal plane for the linear grid;
        default: from the best affine part.
    parity : int
        +1, or -1 if the detector is imaged flipped.
    sigma : callable or None
        ``sigma(x, y) -> (sigma_x, sigma_y)``: 1-sigma uncertainty of the offsets (pixels)
        at 0-based detector positions, when the solution has uncertainties.
    residual : callable or None
        ``residual(x, y) -> (ru, rv)``: the field beyond the polynomial ``field`` (arcsec,
        at 0-based detector pixels), or None for a polynomial solution. It must hold no
        affine part (the plate scale, rotation and boresight are the polynomial's).
    meta : dict
        Provenance (software version, campaign hash, input files, fit settings).
    """

    field: DistortionField
    filter: str = "L"
    detector_shape: Optional[tuple] = None
    boresight: Optional[tuple] = None
    plate_scale: Optional[float] = None
    rotation: Optional[float] = None
    parity: Optional[int] = None
    sigma: Optional[Callable] = None
    residual: Optional[Callable] = None
    meta: dict = dc_field(default_factory=dict)

    def __post_init__(self):
        f = self.field
        if f.input_unit != "pixel" or f.unit != "arcsec":
            raise InvalidSolutionError(
                f"a Solution's field maps pixels to arcsec, got {f.input_unit} -> {f.unit}"
            )
        shape = self.detector_shape
        if shape is None:
            shape = detector_shape(f.domain)
        object.__setattr__(self, "detector_shape", tuple(int(v) for v in shape))
        if self.boresight is None:
            object.__setattr__(self, "boresight", f.centre)
        object.__setattr__(self, "boresight", tuple(float(v) for v in self.boresight))
        aff, _ = _affine(f)
        det = np.linalg.det(aff)
        if self.parity is None:
            object.__setattr__(self, "parity", int(np.sign(det)) or 1)
        if self.parity not in (1, -1):
            raise InvalidSolutionError(f"parity must be +1 or -1, got {self.parity!r}")
        if self.plate_scale is None:
            object.__setattr__(self, "plate_scale", float(np.sqrt(abs(det))))
        if not (np.isfinite(self.plate_scale) and self.plate_scale > 0):
            raise InvalidSolutionError(f"plate scale must be positive, got {self.plate_scale!r}")
        if self.rotation is None:
            # rotation of the closest similarity (with the parity flip) to the affine part
            a = aff @ np.diag([1.0, float(self.parity)])
            theta = np.arctan2(a[1, 0] - a[0, 1], a[0, 0] + a[1, 1])
            object.__setattr__(self, "rotation", float(np.degrees(theta)))
        object.__setattr__(self, "plate_scale", float(self.plate_scale))
        object.__setattr__(self, "rotation", float(self.rotation))
        object.__setattr__(self, "meta", dict(self.meta))

    # ------------------------------------------------------------------ linear grid
    @property
    def linear_matrix(self) -> np.ndarray:
        """``M``: focal-plane arcsec (relative to G(b)) -> linear-grid pixels, a (2, 2) array
        ``R(-rotation) diag(1, parity) / plate_scale``."""
        th = np.radians(self.rotation)
        rot_minus = np.array([[np.cos(th), np.sin(th)], [-np.sin(th), np.cos(th)]])
        return np.diag([1.0, float(self.parity)]) @ rot_minus / self.plate_scale

    @property
    def reference_position(self) -> tuple[float, float]:
        """``G(b)``: focal-plane position (arcsec) of the boresight pixel, ``(u, v)``."""
        u, v = self.field(*self.boresight)
        return float(u), float(v)

    def linear_positions(self, x: ArrayLike, y: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """``L(p)``: the linear-grid positions of detector positions, through the full field
        (with the residual when there is one).

        Parameters
        ----------
        x, y : array_like
            0-based detector pixel positions.

        Returns
        -------
        lx, ly : np.ndarray
            0-based linear-grid positions (pixels), of the shape of ``x``.
        """
        lx, ly = self.linear_field()(x, y)
        if self.residual is None:
            return lx, ly
        ru, rv = self.residual(x, y)
        m = self.linear_matrix
        return lx + m[0, 0] * ru + m[0, 1] * rv, ly + m[1, 0] * ru + m[1, 1] * rv

    def linear_field(self) -> DistortionField:
        """The polynomial field ``L``: detector pixel -> linear-grid pixel (0-based), of the
        polynomial part alone (:meth:`linear_positions` adds the residual).

        Returns
        -------
        DistortionField
            ``L`` on the field's domain, pixels -> pixels.
        """
        m = self.linear_matrix
        u0, v0 = self.reference_position
        f = self.field
        cx = m[0, 0] * f.cx + m[0, 1] * f.cy
        cy = m[1, 0] * f.cx + m[1, 1] * f.cy
        cx = cx.copy()
        cy = cy.copy()
        cx[0, 0] += self.boresight[0] - (m[0, 0] * u0 + m[0, 1] * v0)
        cy[0, 0] += self.boresight[1] - (m[1, 0] * u0 + m[1, 1] * v0)
        return DistortionField(cx, cy, f.domain, unit="pixel", input_unit="pixel")

    def reverse_offsets(self, x: ArrayLike, y: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """``D2(p) = p - L(p)`` at detector positions, of the full field.

        Parameters
        ----------
        x, y : array_like
            0-based detector pixel positions.

        Returns
        -------
        dx, dy : np.ndarray
            The reverse offsets (pixels).
        """
        lx, ly = self.linear_positions(x, y)
        return np.asarray(x, dtype=float) - lx, np.asarray(y, dtype=float) - ly

    def reverse_offset_field(self) -> DistortionField:
        """``D2`` of the polynomial part as a field, exact (without the residual field).

        Returns
        -------
        DistortionField
            ``D2 = identity - L``, pixels -> pixels.
        """
        lin = self.linear_field()
        ident = DistortionField.identity(lin.domain, degree=lin.degree)
        return ident - lin

    def forward_offsets(self, lx: ArrayLike, ly: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """``D(l) = L^-1(l) - l`` at linear-grid positions, solved exactly for the full field.

        Parameters
        ----------
        lx, ly : array_like
            0-based linear-grid positions (pixels).

        Returns
        -------
        dx, dy : np.ndarray
            The forward offsets (pixels): the distorted position is ``l + D(l)``.
        """
        lx = np.asarray(lx, dtype=float)
        ly = np.asarray(ly, dtype=float)
        lin = self.linear_field()
        px, py = solve(lin, lx, ly, guess=(lx, ly))
        if self.residual is not None:
            # the full map's values with the polynomial's Jacobian (the residual's own is a
            # small perturbation of it): Newton steps contract by about |dr/dp| each
            m = self.linear_matrix

            def jacobian(x, y):
                u, v, jac = lin.jacobian(x, y)
                ru, rv = self.residual(x, y)
                return u + m[0, 0] * ru + m[0, 1] * rv, v + m[1, 0] * ru + m[1, 1] * rv, jac

            px, py = solve(SimpleNamespace(jacobian=jacobian), lx, ly, guess=(px, py))
        return px - lx, py - ly

    @classmethod
    def from_reverse_offsets(cls, d2: DistortionField, boresight: tuple[float, float], plate_scale: float,
                             rotation: float, parity: int = 1,
                             reference_position: tuple[float, float] = (0.0, 0.0), **kwargs: Any) -> Solution:
        """Rebuild a solution from its reverse-offset field ``D2`` (pixels -> pixels).

        ``G(p) = G(b) + M^-1 (p - D2(p) - b)``: the exact inverse of
        :meth:`reverse_offset_field` given the linear-grid parameters.

        Parameters
        ----------
        d2 : DistortionField
            The reverse offsets ``D2``, 0-based detector pixels -> pixels.
        boresight : (x, y)
            0-based pixel ``b`` of the linear grid's origin.
        plate_scale : float
            Linear-grid plate scale (arcsec/pixel).
        rotation : float
            Angle of the detector x axis in the focal plane (degrees).
        parity : int, optional
            +1, or -1 if the detector is imaged flipped.
        reference_position : (u, v), optional
            ``G(b)``, focal-plane arcsec.
        **kwargs
            Further :class:`Solution` fields (``filter``, ``detector_shape``, ``sigma``,
            ``meta``...).

        Returns
        -------
        Solution
            The solution whose field ``G`` has these reverse offsets.
        """
        th = np.radians(rotation)
        rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
        minv = plate_scale * rot @ np.diag([1.0, float(parity)])
        ident = DistortionField.identity(d2.domain, degree=d2.degree)
        lin = ident - d2  # L(p)
        cx = minv[0, 0] * lin.cx + minv[0, 1] * lin.cy
        cy = minv[1, 0] * lin.cx + minv[1, 1] * lin.cy
        b = np.asarray(boresight, dtype=float)
        shift = np.asarray(reference_position, dtype=float) - minv @ b
        cx = cx.copy()
        cy = cy.copy()
        cx[0, 0] += shift[0]
        cy[0, 0] += shift[1]
        field = DistortionField(cx, cy, d2.domain, unit="arcsec", input_unit="pixel")
        return cls(field, boresight=tuple(b), plate_scale=plate_scale, rotation=rotation,
                   parity=parity, **kwargs)


def _affine(field):
    """(A, b) of the best affine part of ``field``: ``G(p) ~ A p + b``."""
    aff = affine_part(field)
    u0, v0, jac = aff.jacobian(0.0, 0.0)
    return np.asarray(jac, dtype=float), np.array([float(u0), float(v0)])
