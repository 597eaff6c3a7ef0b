"""The data footprint: where on the detector the fitted map is measured, not extrapolated.

The footprint is the convex hull of the measured positions a fit used (outliers left out),
in 0-based detector pixels. Inside it the map interpolates between the holes (or stars);
beyond it, for example at the detector's edges beyond the mask's outermost holes, the map
is a polynomial extrapolation whose uncertainty rests on the prior widths of the field's
highest degrees. There the credible intervals are less well calibrated (measured in
``docs/model.md``, "Inference": the map of degree-7 fields beyond the footprint), so a
result records its footprint (``fit.json``) and the report states the map's accuracy
inside it as well as over the whole detector.
"""
from __future__ import annotations

import numpy as np
from scipy.spatial import ConvexHull, Delaunay, QhullError


def convex_footprint(x, y):
    """Vertices (K, 2) of the convex hull of the points ``x, y`` (0-based detector pixels),
    counter-clockwise. Raises ``ValueError`` for fewer than 3 points or points on one line
    (no two-dimensional footprint)."""
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


def inside_footprint(vertices, x, y, tol=1e-9):
    """True where ``(x, y)`` (pixels) lies inside or on the footprint with ``vertices``
    (:func:`convex_footprint`); shape of ``x``."""
    v = np.asarray(vertices, float)
    q = np.column_stack([np.ravel(x), np.ravel(y)]).astype(float)
    inside = Delaunay(v).find_simplex(q, tol=tol) >= 0
    return inside.reshape(np.shape(x))


def footprint_area(vertices):
    """Area (pixels**2) of the footprint with ``vertices``."""
    return float(ConvexHull(np.asarray(vertices, float)).volume)  # a 2-D hull's volume is its area


def footprint_summary(vertices, detector_shape):
    """Plain summary for ``fit.json``: the vertices (pixels) and the fraction of the
    detector ``(ny, nx)`` inside the footprint."""
    ny, nx = detector_shape
    return {"vertices_px": np.asarray(vertices, float).tolist(),
            "detector_fraction": footprint_area(vertices) / float(nx * ny),
            "definition": "convex hull of the measured positions used by the fit (0-based "
                          "detector pixels); beyond it the map is extrapolated"}


__all__ = ["convex_footprint", "footprint_area", "footprint_summary", "inside_footprint"]
