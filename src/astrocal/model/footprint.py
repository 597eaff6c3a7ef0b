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
from scipy.spatial import ConvexHull, QhullError


def convex_footprint(x, y):
    """Vertices (K, 2) of the convex hull of the points ``x, y`` (0-based detector pixels),
    counter-clockwise; non-finite positions are left out. Raises ``ValueError`` for fewer
    than 3 positions or positions on one line (no two-dimensional footprint)."""
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


def inside_footprint(vertices, x, y, tol_px=1e-6):
    """True where ``(x, y)`` (pixels) lies inside the footprint with counter-clockwise
    ``vertices`` (:func:`convex_footprint`) or within ``tol_px`` pixels beyond one of its
    edges; shape of ``x``."""
    v = _vertices(vertices)
    e = np.roll(v, -1, axis=0) - v  # edges, counter-clockwise: inside is on their left
    length = np.hypot(e[:, 0], e[:, 1])
    qx = np.ravel(np.asarray(x, float))[:, None] - v[None, :, 0]
    qy = np.ravel(np.asarray(y, float))[:, None] - v[None, :, 1]
    left = (e[None, :, 0] * qy - e[None, :, 1] * qx) / length  # signed distance, pixels
    return np.all(left >= -tol_px, axis=1).reshape(np.shape(x))


def footprint_area(vertices):
    """Area (pixels**2) of the footprint with counter-clockwise ``vertices`` (shoelace)."""
    v = _vertices(vertices)
    x, y = v[:, 0], v[:, 1]
    return float(0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def footprint_summary(vertices, detector_shape):
    """Plain summary for ``fit.json``: the vertices (pixels) and the fraction of the
    detector ``(ny, nx)`` (its area over the pixel edges, ``nx * ny``) inside the
    footprint."""
    ny, nx = detector_shape
    return {"vertices_px": np.asarray(vertices, float).tolist(),
            "detector_fraction": min(footprint_area(vertices) / float(nx * ny), 1.0),
            "definition": "convex hull of the measured positions used by the fit (0-based "
                          "detector pixels); beyond it the map is extrapolated"}


__all__ = ["convex_footprint", "footprint_area", "footprint_summary", "inside_footprint"]
