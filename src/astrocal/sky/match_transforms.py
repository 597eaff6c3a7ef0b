"""The transforms a star match reports: reference (arcsec) to detector (0-based px).

:func:`astrocal.sky.match.match_stars` fits three: a :class:`SimilarityTransform` (the
pose: offset, scale, rotation, parity), an :class:`AffineTransform` and a
:class:`PolynomialTransform` (which absorbs the distortion over the matched stars).

Conventions
-----------
Reference positions are tangent-plane offsets in arcsec; detector positions are 0-based
pixels (centre of the first pixel = 0.0, ``x`` along numpy axis 1).  ``parity`` is 1
(reference x not flipped) or -1 (flipped: ``P = diag(parity, 1)``); rotations are
counter-clockwise from the (parity-flipped) reference +x axis to the detector +x axis.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from ..field.basis import terms
from ..pointmatch import monomials, rotation_matrix

__all__ = ["AffineTransform", "PolynomialTransform", "SimilarityTransform"]


@dataclass(frozen=True)
class SimilarityTransform:
    """Reference (arcsec) -> detector (0-based px): ``p = offset + scale R(rotation) P ref / nominal``.

    ``P = diag(parity, 1)``; ``nominal`` is the nominal pixel scale in arcsec per pixel;
    ``pixel_scale_mas = nominal_pixel_scale_mas / scale`` is the fitted pixel scale;
    ``rotation_deg`` is counter-clockwise from the (parity-flipped) reference +x axis to
    the detector +x axis; ``offset_px`` is the pixel position of the reference origin.
    """

    offset_px: tuple
    scale: float
    rotation_deg: float
    parity: int
    nominal_pixel_scale_mas: float
    rms_px: float

    @property
    def pixel_scale_mas(self) -> float:
        """The fitted pixel scale (mas/px): ``nominal_pixel_scale_mas / scale``."""
        return self.nominal_pixel_scale_mas / self.scale

    @property
    def matrix_px_per_arcsec(self) -> np.ndarray:
        """The (2, 2) linear part ``scale R(rotation) P / nominal`` (px per arcsec)."""
        P = np.diag([float(self.parity), 1.0])
        return self.scale * rotation_matrix(math.radians(self.rotation_deg)) @ P * (1e3 / self.nominal_pixel_scale_mas)

    def __call__(self, ref_xy_arcsec: ArrayLike) -> np.ndarray:
        """Detector positions (px, shape (N, 2)) of reference positions (arcsec, (N, 2) or (2,))."""
        r = np.atleast_2d(np.asarray(ref_xy_arcsec, float))
        return r @ self.matrix_px_per_arcsec.T + np.asarray(self.offset_px)

    def inverse(self, xy_px: ArrayLike) -> np.ndarray:
        """Detector pixels -> reference arcsec.

        Parameters
        ----------
        xy_px : array_like
            (N, 2) or (2,) detector positions, 0-based px.

        Returns
        -------
        np.ndarray
            (N, 2) reference positions, arcsec.
        """
        p = np.atleast_2d(np.asarray(xy_px, float))
        return np.linalg.solve(self.matrix_px_per_arcsec, (p - np.asarray(self.offset_px)).T).T

    def as_dict(self) -> dict:
        """The transform as plain values.

        Returns
        -------
        dict
            ``offset_px``, ``scale``, ``rotation_deg``, ``parity``, ``pixel_scale_mas``,
            ``nominal_pixel_scale_mas``, ``rms_px``.
        """
        return {"offset_px": [float(v) for v in self.offset_px], "scale": float(self.scale),
                "rotation_deg": float(self.rotation_deg), "parity": int(self.parity),
                "pixel_scale_mas": float(self.pixel_scale_mas),
                "nominal_pixel_scale_mas": float(self.nominal_pixel_scale_mas),
                "rms_px": float(self.rms_px)}


@dataclass(frozen=True)
class AffineTransform:
    """Reference (arcsec) -> detector (0-based px): ``p = offset + matrix @ ref``."""

    matrix_px_per_arcsec: np.ndarray
    offset_px: np.ndarray
    rms_px: float

    def __call__(self, ref_xy_arcsec: ArrayLike) -> np.ndarray:
        """Detector positions (px, shape (N, 2)) of reference positions (arcsec, (N, 2) or (2,))."""
        r = np.atleast_2d(np.asarray(ref_xy_arcsec, float))
        return r @ np.asarray(self.matrix_px_per_arcsec).T + np.asarray(self.offset_px)

    def inverse(self, xy_px: ArrayLike) -> np.ndarray:
        """Detector pixels -> reference arcsec.

        Parameters
        ----------
        xy_px : array_like
            (N, 2) or (2,) detector positions, 0-based px.

        Returns
        -------
        np.ndarray
            (N, 2) reference positions, arcsec.
        """
        p = np.atleast_2d(np.asarray(xy_px, float))
        return np.linalg.solve(np.asarray(self.matrix_px_per_arcsec), (p - np.asarray(self.offset_px)).T).T

    def as_dict(self) -> dict:
        """The transform as plain values.

        Returns
        -------
        dict
            ``matrix_px_per_arcsec`` (nested lists), ``offset_px``, ``rms_px``.
        """
        return {"matrix_px_per_arcsec": np.asarray(self.matrix_px_per_arcsec).tolist(),
                "offset_px": np.asarray(self.offset_px).tolist(), "rms_px": float(self.rms_px)}


@dataclass(frozen=True)
class PolynomialTransform:
    """Reference (arcsec) -> detector (0-based px), a polynomial of total degree ``degree``.

    ``p = sum_k coef[k] U^a_k V^b_k`` with ``U = (parity * x - center[0]) / norm``,
    ``V = (y - center[1]) / norm`` (arcsec), terms ``(a_k, b_k)`` listed by total degree
    then decreasing power of ``U`` (``terms``).  Valid over the matched stars' region only.
    """

    degree: int
    coef: np.ndarray            # (n_terms, 2)
    center_arcsec: tuple
    norm_arcsec: float
    parity: int
    rms_px: float

    @property
    def terms(self) -> list[tuple[int, int]]:
        """The exponents ``(a_k, b_k)`` of the terms, in the order of ``coef``."""
        return terms(self.degree)

    def __call__(self, ref_xy_arcsec: ArrayLike) -> np.ndarray:
        """Detector positions (px, shape (N, 2)) of reference positions (arcsec, (N, 2) or (2,))."""
        r = np.atleast_2d(np.asarray(ref_xy_arcsec, float))
        z = (r * [float(self.parity), 1.0] - np.asarray(self.center_arcsec)) / self.norm_arcsec
        return monomials(z, self.degree) @ np.asarray(self.coef)

    def as_dict(self) -> dict:
        """The transform as plain values.

        Returns
        -------
        dict
            ``degree``, ``coef`` and ``terms`` (nested lists), ``center_arcsec``,
            ``norm_arcsec``, ``parity``, ``rms_px``.
        """
        return {"degree": int(self.degree), "coef": np.asarray(self.coef).tolist(),
                "terms": [list(t) for t in self.terms],
                "center_arcsec": [float(v) for v in self.center_arcsec],
                "norm_arcsec": float(self.norm_arcsec), "parity": int(self.parity),
                "rms_px": float(self.rms_px)}
