"""Pose models, robust fits and one-to-one assignment of points to references.

The kit shared by pinhole identification (:func:`astrocal.lab.identify.identify_spots`:
detected spots to mask holes) and star matching (:func:`astrocal.sky.match.match_stars`:
measured stars to reference stars).  Both look for the *pose* that maps reference points
(mask holes, reference stars; in nominal pixels) onto detected points (0-based detector
pixels), and refine it by alternating an assignment of points to references with a fit.

Conventions
-----------
All positions are 2-D, in pixels: the reference points ``c`` in *nominal pixels* (the
reference's own unit divided by the nominal pixel scale, any mirror or parity flip
already applied), the detected points in 0-based detector pixels (centre of the first
pixel = 0.0, ``x`` along numpy axis 1).  A :class:`PoseModel` works on normalised
coordinates ``z = (c - center) / scale``:

- ``"similarity"``: ``p = (a zx - b zy + tx, b zx + a zy + ty)``, coefficients
  ``(a, b, tx, ty)``;
- ``"affine"`` (degree 1) and ``"poly"`` (degree > 1): ``p = sum_k coef[k] zx^i_k zy^j_k``
  with the terms of :func:`astrocal.field.basis.terms` (by total degree, then decreasing power of
  ``zx``) and ``coef`` of shape ``(n_terms, 2)``.

Rotations are counter-clockwise from the reference +x axis to the detector +x axis.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np
import astropy.units as u

from .field.basis import n_terms, terms

if TYPE_CHECKING:
    from scipy.spatial import cKDTree

__all__ = [
    "PoseModel",
    "assign",
    "fit_clipped",
    "fit_dropping_worst",
    "fit_pose",
    "inside",
    "min_points",
    "monomials",
    "pixel_scale_mas",
    "robust_sigma",
    "rotation_matrix",
]

#: the median radius of an isotropic 2-d Gaussian in units of its per-axis sigma
MEDIAN_RADIUS_PER_SIGMA = 1.1774


def pixel_scale_mas(pixel_scale: float | u.Quantity) -> float:
    """Pixel scale as a plain float in mas per pixel.

    Parameters
    ----------
    pixel_scale : float or Quantity
        A Quantity in angle/pixel (``5.47 * u.mas / u.pix``), an angle (taken per
        pixel) or a plain float (mas).

    Returns
    -------
    float
        The pixel scale, mas/px.

    Raises
    ------
    ValueError
        When it is not an angle (per pixel), or not finite and positive.
    """
    if isinstance(pixel_scale, u.Quantity):
        q = pixel_scale
        if q.unit.physical_type != "angle":
            try:
                q = (q * u.pix).to(u.mas)
            except u.UnitConversionError as exc:
                raise ValueError(f"pixel_scale: expected mas/pix or an angle, got {pixel_scale!r}") from exc
        value = float(q.to_value(u.mas))
    else:
        value = float(pixel_scale)
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"pixel_scale must be positive, got {pixel_scale!r}")
    return value


def rotation_matrix(theta: float) -> np.ndarray:
    """The 2x2 counter-clockwise rotation matrix.

    Parameters
    ----------
    theta : float
        Rotation angle (rad), counter-clockwise.

    Returns
    -------
    np.ndarray
        ``[[cos, -sin], [sin, cos]]``, shape (2, 2).
    """
    c, s = math.cos(theta), math.sin(theta)
    return np.array([[c, -s], [s, c]])


def monomials(z: np.ndarray, degree: int) -> np.ndarray:
    """The design matrix of a 2-D polynomial.

    Parameters
    ----------
    z : np.ndarray
        (N, 2) positions (normalised coordinates).
    degree : int
        Total degree.

    Returns
    -------
    np.ndarray
        (N, n_terms) values of the monomials of :func:`astrocal.field.basis.terms` at ``z``.
    """
    x, y = z[:, 0], z[:, 1]
    return np.column_stack([x ** p * y ** q for p, q in terms(degree)])


@dataclass
class PoseModel:
    """A map from reference points (nominal px) to the detector (px).

    Evaluated on normalised coordinates ``z = (c - center) / scale`` (see the module
    docstring for the forms of the three kinds).
    """

    kind: str                # "similarity", "affine" or "poly"
    coef: np.ndarray         # similarity: (a, b, tx, ty); else (n_terms, 2)
    center: np.ndarray       # (2,) normalisation centre, nominal px
    scale: float = 1.0       # normalisation length, nominal px
    degree: int = 1

    def __call__(self, c: np.ndarray) -> np.ndarray:
        """The detector positions of reference points.

        Parameters
        ----------
        c : np.ndarray
            (N, 2) reference points, nominal px.

        Returns
        -------
        np.ndarray
            (N, 2) detector positions, px.
        """
        z = (c - self.center) / self.scale
        if self.kind == "similarity":
            a, b, tx, ty = self.coef
            return np.column_stack([a * z[:, 0] - b * z[:, 1] + tx, b * z[:, 0] + a * z[:, 1] + ty])
        return monomials(z, self.degree) @ self.coef

    def similarity_params(self) -> tuple[float, float, np.ndarray]:
        """The pose of a similarity model in reference coordinates.

        Returns
        -------
        s : float
            Scale (dimensionless, detector px per nominal px).
        theta : float
            Rotation (rad, counter-clockwise).
        t : np.ndarray
            (2,) detector position (px) of the reference origin: ``p = t + s R(theta) c``.
        """
        a, b, tx, ty = self.coef
        s = math.hypot(a, b) / self.scale
        th = math.atan2(b, a)
        t = np.array([tx, ty]) - s * rotation_matrix(th) @ self.center
        return s, th, t

    def affine_params(self) -> tuple[np.ndarray, np.ndarray]:
        """The linear map of an affine model in reference coordinates.

        Returns
        -------
        A : np.ndarray
            (2, 2) matrix, detector px per nominal px.
        t : np.ndarray
            (2,) detector position (px) of the reference origin: ``p = t + A c``.
        """
        # coef rows: 1, zx, zy
        A = np.array([[self.coef[1, 0], self.coef[2, 0]], [self.coef[1, 1], self.coef[2, 1]]]) / self.scale
        t = self.coef[0] - A @ self.center
        return A, t

    @staticmethod
    def from_pose(s: float, theta: float, t: np.ndarray) -> PoseModel:
        """The similarity model ``p = t + s R(theta) c``.

        Parameters
        ----------
        s : float
            Scale (dimensionless).
        theta : float
            Rotation (rad, counter-clockwise).
        t : np.ndarray
            (2,) detector position (px) of the reference origin.

        Returns
        -------
        PoseModel
            A similarity model centred on the origin with unit normalisation.
        """
        R = rotation_matrix(theta)
        return PoseModel("similarity", np.array([s * R[0, 0], s * R[1, 0], t[0], t[1]]), np.zeros(2), 1.0)


def fit_pose(kind: str, c: np.ndarray, x: np.ndarray, degree: int = 1,
             center: np.ndarray | None = None, scale: float | None = None) -> PoseModel:
    """Least-squares fit of a pose model to reference points and their detections.

    Parameters
    ----------
    kind : str
        ``"similarity"``, ``"affine"`` or ``"poly"`` (``"poly"`` of degree 1 is affine).
    c : np.ndarray
        (N, 2) reference points, nominal px.
    x : np.ndarray
        (N, 2) detected positions, px.
    degree : int
        Total degree of a ``"poly"`` model.
    center : np.ndarray, optional
        Normalisation centre (nominal px); default the mean of ``c``.
    scale : float, optional
        Normalisation length (nominal px); default the largest ``abs(c - center)``
        coordinate, at least 1.

    Returns
    -------
    PoseModel
        The fitted model (kind ``"affine"`` when a polynomial of degree 1 is asked).
    """
    if center is None:
        center = c.mean(axis=0)
    if scale is None:
        scale = max(float(np.max(np.abs(c - center))), 1.0)
    z = (c - center) / scale
    if kind == "similarity":
        n = len(z)
        G = np.zeros((2 * n, 4))
        G[0::2, 0] = z[:, 0]
        G[0::2, 1] = -z[:, 1]
        G[0::2, 2] = 1
        G[1::2, 0] = z[:, 1]
        G[1::2, 1] = z[:, 0]
        G[1::2, 3] = 1
        coef = np.linalg.lstsq(G, x.reshape(-1), rcond=None)[0]
        return PoseModel("similarity", coef, center, scale)
    deg = 1 if kind == "affine" else int(degree)
    coef = np.linalg.lstsq(monomials(z, deg), x, rcond=None)[0]
    return PoseModel("affine" if deg == 1 else "poly", coef, center, scale, deg)


def robust_sigma(r: np.ndarray) -> float:
    """Robust per-axis scatter from residual radii: their median over 1.1774.

    Parameters
    ----------
    r : np.ndarray
        Residual radii (px) of a 2-d isotropic Gaussian.

    Returns
    -------
    float
        Per-axis sigma (px).
    """
    return float(np.median(r) / MEDIAN_RADIUS_PER_SIGMA)


def fit_dropping_worst(kind: str, c: np.ndarray, x: np.ndarray, degree: int = 1,
                       center: np.ndarray | None = None, scale: float | None = None,
                       floor: float = 0.3, nsig: float = 5.0) -> tuple[PoseModel, np.ndarray]:
    """Least squares that drops the worst point while it is an outlier.

    One point at a time (a gross outlier pulls a fit with few points so much that
    clipping all points above a threshold at once can keep it), while its residual
    radius exceeds ``max(nsig * sigma, floor)`` (``sigma`` from :func:`robust_sigma` of
    the kept points), down to half the points (at least 3).

    Parameters
    ----------
    kind, degree, center, scale :
        The model, as for :func:`fit_pose`.
    c : np.ndarray
        (N, 2) reference points, nominal px.
    x : np.ndarray
        (N, 2) detected positions, px.
    floor : float
        Residual radius (px) below which no point is dropped.
    nsig : float
        Clipping threshold in units of the robust sigma.

    Returns
    -------
    model : PoseModel
        The fit to the kept points.
    keep : np.ndarray
        (N,) bool, the points kept.
    """
    keep = np.ones(len(c), bool)
    min_keep = max(3, (len(c) + 1) // 2)
    while True:
        model = fit_pose(kind, c[keep], x[keep], degree, center, scale)
        r = np.hypot(*(model(c) - x).T)
        sig = np.median(r[keep]) / MEDIAN_RADIUS_PER_SIGMA
        worst = int(np.argmax(np.where(keep, r, -np.inf)))
        if r[worst] <= max(nsig * sig, floor) or keep.sum() <= min_keep:
            return model, keep
        keep[worst] = False


def min_points(kind: str, degree: int) -> int:
    """The fewest points :func:`fit_clipped` fits a model to.

    Parameters
    ----------
    kind : str
        ``"similarity"``, ``"affine"`` or ``"poly"``.
    degree : int
        Total degree of a ``"poly"`` model.

    Returns
    -------
    int
        3 for a similarity, 5 for an affine map, ``2 n_terms + 4`` for a polynomial.
    """
    if kind == "similarity":
        return 3
    if kind == "affine":
        return 5
    return 2 * n_terms(degree) + 4


def fit_clipped(kind: str, c: np.ndarray, x: np.ndarray, use: np.ndarray, degree: int = 1,
                nsig: float = 4.0, floor: float = 0.5,
                max_iter: int = 12) -> tuple[PoseModel, np.ndarray, float] | None:
    """Least squares with iterative clipping at ``max(nsig * sigma, floor)`` (radius, px).

    Each iteration fits the kept points (normalised on their mean and extent, see
    :func:`fit_pose`) and keeps the allowed points within the clipping radius, until
    the kept set does not change (at most ``max_iter`` fits).

    Parameters
    ----------
    kind, degree :
        The model, as for :func:`fit_pose`.
    c : np.ndarray
        (N, 2) reference points, nominal px.
    x : np.ndarray
        (N, 2) detected positions, px.
    use : np.ndarray
        (N,) bool, points allowed in the fit (e.g. not blends).
    nsig : float
        Clipping threshold in units of the robust sigma.
    floor : float
        Smallest clipping radius (px).
    max_iter : int
        Largest number of fits.

    Returns
    -------
    tuple of (PoseModel, np.ndarray, float) or None
        ``(model, keep, sigma)`` with ``sigma`` the robust per-axis scatter (px) of the
        kept points; None if fewer than :func:`min_points` points are kept.
    """
    keep = use.copy()
    model = None
    sig = np.inf
    for _ in range(max_iter):
        if keep.sum() < min_points(kind, degree):
            return None
        model = fit_pose(kind, c[keep], x[keep], degree)
        r = np.hypot(*(model(c) - x).T)
        sig = robust_sigma(r[keep])
        new = use & (r <= max(nsig * sig, floor))
        if np.array_equal(new, keep):
            break
        keep = new
    return model, keep, sig


def inside(p: np.ndarray, box: tuple[float, float, float, float],
           margin: float | np.ndarray = 0.0) -> np.ndarray:
    """Which points lie inside a box grown by a margin.

    Parameters
    ----------
    p : np.ndarray
        (N, 2) positions, px.
    box : tuple of float
        ``(xmin, xmax, ymin, ymax)``, px.
    margin : float or np.ndarray
        Distance (px; scalar or one per point) by which the box is grown on every side
        (a negative margin shrinks it).

    Returns
    -------
    np.ndarray
        (N,) bool.
    """
    xmin, xmax, ymin, ymax = box
    return ((p[:, 0] >= xmin - margin) & (p[:, 0] <= xmax + margin)
            & (p[:, 1] >= ymin - margin) & (p[:, 1] <= ymax + margin))


def assign(pred: np.ndarray, tree: cKDTree, tol: float | np.ndarray, *, tol_per: str = "target",
           candidates: np.ndarray | None = None, extra: np.ndarray | None = None,
           rank: str = "relative", cost_extra: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
           k: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-to-one greedy assignment of predicted reference positions to detected points.

    Each reference (``pred``) is paired with one of its ``k`` nearest detected points
    within the tolerance; candidate pairs are taken in increasing order of their cost,
    each reference and each detected point at most once.

    Parameters
    ----------
    pred : np.ndarray
        (M, 2) predicted positions of the references, px.
    tree : scipy.spatial.cKDTree
        The detected points, px.
    tol : float or np.ndarray
        Matching radius (px): a scalar, or one per detected point (``tol_per="target"``)
        or per reference (``tol_per="pred"``; a negative value excludes the reference).
    tol_per : str
        ``"target"`` or ``"pred"``: what an array ``tol`` is indexed by.
    candidates : np.ndarray, optional
        (M,) bool, the references that may be matched (default all).
    extra : np.ndarray, optional
        (M,) radius (px) added to the tolerance of each reference (e.g. the half-size
        of a blended group).
    rank : str
        Cost of a pair: ``"distance"`` (its separation) or ``"relative"`` (its separation
        over its tolerance, squared, plus ``cost_extra``).
    cost_extra : callable, optional
        ``cost_extra(ref, point)`` (index arrays) added to the ``"relative"`` cost.
    k : int
        Number of nearest detected points considered per reference.

    Returns
    -------
    ref : np.ndarray
        Indices (int64) of the matched references, in the order they were paired.
    point : np.ndarray
        Indices (int64) of their detected points.
    d : np.ndarray
        Their separations, px.
    """
    src_all = np.arange(len(pred)) if candidates is None else np.nonzero(candidates)[0]
    if len(src_all) == 0 or tree.n == 0:
        e = np.zeros(0, np.int64)
        return e, e, np.zeros(0)
    tol_arr = np.broadcast_to(np.asarray(tol, float), (tree.n if tol_per == "target" else len(pred),))
    tmax = float(np.max(tol_arr)) + (0.0 if extra is None else float(np.max(extra[src_all], initial=0.0)))
    kk = min(k, tree.n)
    d, j = tree.query(pred[src_all], k=kk, distance_upper_bound=tmax)
    if kk == 1:
        d, j = d[:, None], j[:, None]
    src = np.repeat(src_all, kk)
    d, j = d.ravel(), j.ravel()
    ok = np.isfinite(d)
    src, j, d = src[ok], j[ok], d[ok]
    tt = tol_arr[j] if tol_per == "target" else tol_arr[src]
    if extra is not None:
        tt = tt + extra[src]
    ok = d <= tt
    src, j, d, tt = src[ok], j[ok], d[ok], tt[ok]
    if rank == "distance":
        cost = d
    else:
        cost = (d / tt) ** 2
        if cost_extra is not None and len(src):
            cost = cost + cost_extra(src, j)
    order = np.argsort(cost, kind="stable")
    used_s = np.zeros(len(pred), bool)
    used_x = np.zeros(tree.n, bool)
    ms, mx, md = [], [], []
    for a, b, dd in zip(src[order].tolist(), j[order].tolist(), d[order].tolist()):
        if not used_s[a] and not used_x[b]:
            used_s[a] = used_x[b] = True
            ms.append(a)
            mx.append(b)
            md.append(dd)
    return np.array(ms, np.int64), np.array(mx, np.int64), np.array(md)
