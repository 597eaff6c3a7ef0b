"""The data footprint: where on the detector the fitted map is measured, not extrapolated.

The footprint is the convex hull of the measured positions a fit used (outliers left out),
in 0-based detector pixels. Inside it the map interpolates between the holes (or stars);
beyond it, for example at the detector's edges past the mask's outermost holes, the map
is a polynomial extrapolation whose uncertainty rests on the learnt widths of the field's
highest degrees. There the credible intervals are less well calibrated (measured in
``docs/model.md``, "Inference": the map of degree-7 fields beyond the footprint), so a
result records its footprint (``fit.json``) and the report states the map's accuracy
inside it as well as over the whole detector.
"""
from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy.spatial import ConvexHull, QhullError


def convex_footprint(x: ArrayLike, y: ArrayLike) -> np.ndarray:
    """The convex hull of the points used: where the map is measured.

    Parameters
    ----------
    x, y : array_like
        Positions, 0-based detector pixels; non-finite ones are left out.

    Returns
    -------
    numpy.ndarray
        Vertices (K, 2), pixels, counter-clockwise.

    Raises
    ------
    ValueError
        Fewer than 3 positions, or positions on one line (no two-dimensional footprint).
    """
    p = np.column_stack([np.ravel(x), np.ravel(y)]).astype(float)
    p = p[np.all(np.isfinite(p), axis=1)]
    if len(p) < 3:
        raise ValueError(f"a footprint needs at least 3 finite positions, got {len(p)}")
    try:
        hull = ConvexHull(p)
    except QhullError as exc:
        raise ValueError("the positions lie on one line: they have no two-dimensional "
                         "footprint") from exc
    return p[hull.vertices]


def _vertices(vertices):
    v = np.asarray(vertices, float)
    if v.ndim != 2 or v.shape[1] != 2 or len(v) < 3:
        raise ValueError(f"footprint vertices must be (K >= 3, 2) pixels, got shape {v.shape}")
    return v


def inside_footprint(vertices: ArrayLike, x: ArrayLike, y: ArrayLike, tol_px: float = 1e-6) -> np.ndarray:
    """Where positions lie inside a footprint.

    Parameters
    ----------
    vertices : array_like
        The footprint's vertices (K, 2), pixels, counter-clockwise (:func:`convex_footprint`).
    x, y : array_like
        Positions, pixels.
    tol_px : float
        Positions within this many pixels beyond an edge count as inside.

    Returns
    -------
    numpy.ndarray
        Bool, shape of ``x``.
    """
    v = _vertices(vertices)
    e = np.roll(v, -1, axis=0) - v  # edges, counter-clockwise: inside is on their left
    length = np.hypot(e[:, 0], e[:, 1])
    qx = np.ravel(np.asarray(x, float))[:, None] - v[None, :, 0]
    qy = np.ravel(np.asarray(y, float))[:, None] - v[None, :, 1]
    left = (e[None, :, 0] * qy - e[None, :, 1] * qx) / length  # signed distance, pixels
    return np.all(left >= -tol_px, axis=1).reshape(np.shape(x))


def footprint_area(vertices: ArrayLike) -> float:
    """Area of a footprint (shoelace formula).

    Parameters
    ----------
    vertices : array_like
        The footprint's vertices (K, 2), pixels, counter-clockwise.

    Returns
    -------
    float
        Area, pixels**2.
    """
    v = _vertices(vertices)
    x, y = v[:, 0], v[:, 1]
    return float(0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def footprint_summary(vertices: ArrayLike, detector_shape: tuple[int, int]) -> dict:
    """Plain summary of a footprint for ``fit.json``.

    Parameters
    ----------
    vertices : array_like
        The footprint's vertices (K, 2), pixels, counter-clockwise.
    detector_shape : tuple of int
        ``(ny, nx)`` of the detector.

    Returns
    -------
    dict
        The vertices (pixels) and the fraction of the detector (its area over the pixel edges,
        ``nx * ny``) inside the footprint.
    """
    ny, nx = detector_shape
    return {"vertices_px": np.asarray(vertices, float).tolist(),
            "detector_fraction": min(footprint_area(vertices) / float(nx * ny), 1.0),
            "definition": "convex hull of the measured positions used by the fit (0-based "
                          "detector pixels); beyond it the map is extrapolated"}


__all__ = ["convex_footprint", "footprint_area", "footprint_summary", "inside_footprint"]
