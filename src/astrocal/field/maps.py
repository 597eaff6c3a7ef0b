"""Maps derived from a distortion field: local scale, rotation, skew, non-linear part.

For a field ``(x, y) -> (u, v)`` with Jacobian ``J = [[du/dx, du/dy], [dv/dx, dv/dy]]``:

- ``scale_x = |J[:, 0]|``, ``scale_y = |J[:, 1]|``: output length per input pixel along
  the detector axes (arcsec/pixel for the instrument's field);
- ``scale = sqrt(|det J|)``: the local (areal) pixel scale;
- ``rotation``: angle of the detector x axis in the output frame, ``atan2(dv/dx, du/dx)``,
  degrees, counter-clockwise from +u;
- ``skew``: departure of the imaged detector axes from perpendicular, degrees (0 for a
  rotation and scale);
- ``parity``: sign of ``det J`` (-1 when the image is flipped).

The best affine approximation in the least-squares sense over the (rectangular) domain is
the field's degree <= 1 Legendre terms, because the basis is orthogonal on the domain; the
non-linear part is what is left.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

if TYPE_CHECKING:
    from .core import DistortionField


@dataclass(frozen=True)
class LocalGeometry:
    """Local geometry of a field at a set of points (arrays of the points' shape)."""

    scale_x: np.ndarray
    scale_y: np.ndarray
    scale: np.ndarray
    rotation: np.ndarray
    skew: np.ndarray
    parity: np.ndarray


def local_geometry(field: DistortionField, x: ArrayLike, y: ArrayLike) -> LocalGeometry:
    """The local geometry of a field at some points.

    Parameters
    ----------
    field : DistortionField
        The field.
    x, y : array_like
        The points, in the field's input units.

    Returns
    -------
    LocalGeometry
        Scales (output units per input unit), rotation and skew (degrees) and parity,
        arrays of the points' shape.
    """
    _, _, jac = field.jacobian(x, y)
    a, b = jac[..., 0, 0], jac[..., 0, 1]
    c, d = jac[..., 1, 0], jac[..., 1, 1]
    det = a * d - b * c
    parity = np.sign(det)
    theta_x = np.arctan2(c, a)
    # angle of the y column measured from +v, with parity folded in so a pure flip has no skew
    theta_y = np.arctan2(-b * parity, d * parity)
    skew = np.degrees((theta_y - theta_x + np.pi) % (2 * np.pi) - np.pi)
    return LocalGeometry(np.hypot(a, c), np.hypot(b, d), np.sqrt(np.abs(det)),
                         np.degrees(theta_x), skew, parity)


def affine_part(field: DistortionField) -> DistortionField:
    """The best affine approximation of ``field`` over its domain (least squares).

    Parameters
    ----------
    field : DistortionField
        The field.

    Returns
    -------
    DistortionField
        Its degree <= 1 Legendre terms.
    """
    return field.with_degree(1)


def nonlinear_part(field: DistortionField) -> DistortionField:
    """``field`` minus its best affine approximation over the domain.

    Parameters
    ----------
    field : DistortionField
        The field.

    Returns
    -------
    DistortionField
        The field without its degree <= 1 Legendre terms.
    """
    drop = np.ones_like(field.cx)
    drop[0, 0] = drop[1, 0] = drop[0, 1] = 0.0
    return field.replace(cx=field.cx * drop, cy=field.cy * drop)


def affine_matrix(field: DistortionField) -> tuple[np.ndarray, np.ndarray]:
    """The affine part as ``(A, b)`` with ``(u, v) = A @ (x, y) + b`` (output units).

    Parameters
    ----------
    field : DistortionField
        The field.

    Returns
    -------
    A : np.ndarray
        (2, 2) matrix, output units per input unit.
    b : np.ndarray
        (2,) the affine part at the input origin, output units.
    """
    aff = affine_part(field)
    b = np.array(aff(0.0, 0.0), dtype=float)
    _, _, jac = aff.jacobian(0.0, 0.0)
    return np.asarray(jac, dtype=float), b


def sampled_grid(field: DistortionField, step: float,
                 what: str = "scale") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sample a derived quantity on a regular grid every ``step`` input units.

    Parameters
    ----------
    field : DistortionField
        The field.
    step : float
        Grid spacing, input units (from the first whole input unit of the domain).
    what : str
        A :class:`LocalGeometry` attribute name, or ``"nonlinear_u"`` /
        ``"nonlinear_v"`` for the non-linear part of the field.

    Returns
    -------
    x, y : np.ndarray
        1-D grid coordinates.
    values : np.ndarray
        Shape ``(len(y), len(x))``.

    Raises
    ------
    ValueError
        For an unknown ``what``.
    """
    xmin, xmax, ymin, ymax = field.domain
    xs = np.arange(np.ceil(xmin), xmax + 1e-9, step)
    ys = np.arange(np.ceil(ymin), ymax + 1e-9, step)
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    if what in ("nonlinear_u", "nonlinear_v"):
        u, v = nonlinear_part(field)(xx, yy)
        return xs, ys, u if what == "nonlinear_u" else v
    geom = local_geometry(field, xx, yy)
    if not hasattr(geom, what):
        raise ValueError(f"unknown map {what!r}")
    return xs, ys, getattr(geom, what)
