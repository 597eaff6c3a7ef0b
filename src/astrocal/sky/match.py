"""Match a measured star list to a reference catalogue.

:func:`match_stars` finds which measured star (pixel position on the detector) is which
reference star (tangent-plane position in arcsec), when the pointing offset, the position
angle and the parity of the image are unknown, the pixel scale is known to within a few
per cent, the star list misses stars and contains spurious detections, the field is
crowded (blends) and the optics distort the image by a few pixels.

Conventions
-----------
Star positions are 0-based pixels (centre of the first pixel = 0.0, ``x`` along numpy
axis 1).  Reference positions are tangent-plane offsets in arcsec (``x`` east-ish, ``y``
north-ish; any 2-D point set in arcsec works).  Internally the reference is expressed in
*nominal pixels*, ``c = P ref * 1000 / pixel_scale_mas`` with ``P = diag(parity, 1)``,
and the pose maps it to the detector as ``p = t + s R(theta) c`` (``s`` dimensionless,
1 = the nominal pixel scale; ``theta`` counter-clockwise from the reference +x axis, after
the parity flip, to the detector +x axis; ``t`` the pixel position of the reference
origin).  A sky image displayed with north up and east to the left, with a reference
whose ``x`` grows to the east, has ``parity = -1``.

Algorithm
---------
1. *Rotation and scale by pair voting.*  Pairs of stars closer than a radius chosen so
   that every star of the sparser list has ~8 neighbours (and farther apart than a few
   blend radii) are compared with reference pairs whose length is
   compatible with the scale range.  Each compatible combination votes for the rotation
   (difference of the pair directions) and scale (ratio of lengths) in a 2-D histogram;
   when both fluxes and magnitudes are given a combination votes only if the magnitude
   difference of the two stars agrees with that of the two reference stars (within
   ``mag_tolerance``).  Pairs are taken within a separation range, not as each star's
   nearest neighbours, so that missing and spurious stars only remove or add votes
   instead of changing which pairs are formed.
2. *Translation by cross-correlation.*  For each of the strongest rotation-scale peaks
   every (star, reference star) combination votes for the translation; the strongest
   peaks of the 2-D translation histogram are candidate poses.
3. *Refinement.*  Each candidate pose is refined by alternating one-to-one
   nearest-neighbour assignment and a robust least-squares fit (similarity, affine, then
   a polynomial of degree ``degree`` that absorbs the distortion), with a tolerance
   shrinking from ``2 tolerance_px`` to ``final_nsigma`` times the residual scatter (or,
   if larger, the radius at which chance pairs would stay below ``max_false_pairs``
   for the whole field, capped at ``blend_radius_px``; at least ``min_tolerance_px``).
   Among candidates within the tolerance the assignment prefers the closest and, with
   fluxes and magnitudes, the one with the consistent flux.
4. *Significance.*  The number ``n`` of stars within ``tolerance_px`` of the reference
   positions predicted by the refined similarity transform is compared with the number
   expected by chance for a pose unrelated to the truth (binomial, with the density of
   reference stars predicted in the field), multiplied by the number of independent
   poses the search could have tried (rotation, scale, translation and parity cells of
   the size of the tolerance).  ``-log10`` of this false-alarm probability is the
   ``significance``; the best pose is accepted if the false-alarm probability is below
   ``max_false_alarm`` and at least ``min_matched`` stars match.  If a different pose
   is also significant with at least half as many stars (a repeated pattern, a
   reference listing the field twice), :class:`MatchError` reports the ambiguity.

Brightest-first: when fluxes and magnitudes are both given and the lists are large, the
votes first use only the brightest stars of both lists (at a common surface density, at
most ``n_bright`` stars), then three and nine times as many (:data:`BRIGHT_STEPS`: the
magnitudes may be of different bands, or the two lists of different depths, so that the
brightest of one are not all among the brightest of the other); if that fails the search
is repeated with all stars.  The refinement always uses all stars.  A dense list (10,000
sources against 2,000 catalogue stars) is matched this way in about a second; with
positions only, the same takes a minute or more and can fail (every star has dozens of
chance neighbours).

Blends: reference stars closer to each other than ``blend_radius_px`` are one blended
source to the matcher (predicted at their flux-weighted centre, with their combined
magnitude); a star matched to such a group is reported with the group's brightest member
and flagged as a blend.  A star with another measured star within ``blend_radius_px``
is flagged as a blend too.  Blended pairs are reported but not used in the transform
fits.

Flux-magnitude consistency: with fluxes and magnitudes, the zero point and scatter of
``mag + 2.5 log10(flux)`` are fitted robustly over the matched pairs; the final
assignment prefers, among the candidates within the tolerance, the one with the
consistent flux, and pairs more than ``flux_nsigma`` sigma off are dropped
(``flux_check="reject"``, the default: listed in ``flux_rejected``), flagged
(``"flag"``) or kept without a look (``"off"``).
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import astropy.units as u
from astropy.table import Table
from scipy import ndimage, special, stats
from scipy.sparse.csgraph import connected_components
from scipy.sparse import coo_matrix
from scipy.spatial import cKDTree

from ..errors import AstrocalError
from ..lab.identify import pixel_scale_mas as _pixel_scale_mas

__all__ = [
    "MatchError",
    "MatchResult",
    "SimilarityTransform",
    "AffineTransform",
    "PolynomialTransform",
    "match_stars",
]

log = logging.getLogger(__name__)


#: the brightest-first passes use n_bright times these many stars (then all stars)
BRIGHT_STEPS = (1, 3, 9)


class MatchError(AstrocalError, ValueError):
    """The stars could not be matched to the reference (the message says what was tried)."""


# ============================================================================ transforms
def _rot(theta):
    c, s = math.cos(theta), math.sin(theta)
    return np.array([[c, -s], [s, c]])


def _terms(degree):
    return [(n - j, j) for n in range(degree + 1) for j in range(n + 1)]


def _monomials(z, degree):
    x, y = z[:, 0], z[:, 1]
    return np.column_stack([x ** p * y ** q for p, q in _terms(degree)])


def _n_terms(degree):
    return (degree + 1) * (degree + 2) // 2


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
        return self.nominal_pixel_scale_mas / self.scale

    @property
    def matrix_px_per_arcsec(self) -> np.ndarray:
        P = np.diag([float(self.parity), 1.0])
        return self.scale * _rot(math.radians(self.rotation_deg)) @ P * (1e3 / self.nominal_pixel_scale_mas)

    def __call__(self, ref_xy_arcsec):
        r = np.atleast_2d(np.asarray(ref_xy_arcsec, float))
        return r @ self.matrix_px_per_arcsec.T + np.asarray(self.offset_px)

    def inverse(self, xy_px):
        """Detector pixels -> reference arcsec."""
        p = np.atleast_2d(np.asarray(xy_px, float))
        return np.linalg.solve(self.matrix_px_per_arcsec, (p - np.asarray(self.offset_px)).T).T

    def as_dict(self):
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

    def __call__(self, ref_xy_arcsec):
        r = np.atleast_2d(np.asarray(ref_xy_arcsec, float))
        return r @ np.asarray(self.matrix_px_per_arcsec).T + np.asarray(self.offset_px)

    def inverse(self, xy_px):
        p = np.atleast_2d(np.asarray(xy_px, float))
        return np.linalg.solve(np.asarray(self.matrix_px_per_arcsec), (p - np.asarray(self.offset_px)).T).T

    def as_dict(self):
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
    def terms(self):
        return _terms(self.degree)

    def __call__(self, ref_xy_arcsec):
        r = np.atleast_2d(np.asarray(ref_xy_arcsec, float))
        z = (r * [float(self.parity), 1.0] - np.asarray(self.center_arcsec)) / self.norm_arcsec
        return _monomials(z, self.degree) @ np.asarray(self.coef)

    def as_dict(self):
        return {"degree": int(self.degree), "coef": np.asarray(self.coef).tolist(),
                "terms": [list(t) for t in self.terms],
                "center_arcsec": [float(v) for v in self.center_arcsec],
                "norm_arcsec": float(self.norm_arcsec), "parity": int(self.parity),
                "rms_px": float(self.rms_px)}


# ---------------------------------------------------------------- internal models
@dataclass
class _Model:
    """Nominal px (parity applied) -> detector px, on normalised coords z = (c - c0) / h."""

    kind: str               # "similarity", "affine", "poly"
    coef: np.ndarray        # similarity: (a, b, tx, ty); else (n_terms, 2)
    c0: np.ndarray
    h: float
    degree: int = 1

    def __call__(self, c):
        z = (c - self.c0) / self.h
        if self.kind == "similarity":
            a, b, tx, ty = self.coef
            return np.column_stack([a * z[:, 0] - b * z[:, 1] + tx, b * z[:, 0] + a * z[:, 1] + ty])
        return _monomials(z, self.degree) @ self.coef

    def similarity_params(self):
        """(s, theta, t) with p = t + s R(theta) c (similarity models only)."""
        a, b, tx, ty = self.coef
        s = math.hypot(a, b) / self.h
        th = math.atan2(b, a)
        t = np.array([tx, ty]) - s * _rot(th) @ self.c0
        return s, th, t

    def affine_params(self):
        """(A, t) with p = t + A c (affine models only)."""
        # coef rows: 1, zx, zy
        A = np.array([[self.coef[1, 0], self.coef[2, 0]], [self.coef[1, 1], self.coef[2, 1]]]) / self.h
        t = self.coef[0] - A @ self.c0
        return A, t

    @staticmethod
    def from_pose(s, th, t):
        R = _rot(th)
        return _Model("similarity", np.array([s * R[0, 0], s * R[1, 0], t[0], t[1]]), np.zeros(2), 1.0)


def _fit(kind, c, x, degree=1, c0=None, h=None):
    if c0 is None:
        c0 = c.mean(axis=0)
    if h is None:
        h = max(float(np.max(np.abs(c - c0))), 1.0)
    z = (c - c0) / h
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
        return _Model("similarity", coef, c0, h)
    deg = 1 if kind == "affine" else int(degree)
    coef = np.linalg.lstsq(_monomials(z, deg), x, rcond=None)[0]
    return _Model("affine" if deg == 1 else "poly", coef, c0, h, deg)


def _min_points(kind, degree):
    if kind == "similarity":
        return 3
    if kind == "affine":
        return 5
    return 2 * _n_terms(degree) + 4


def _robust_fit(kind, c, x, use, degree=1, nsig=4.0, floor=0.5, max_iter=12):
    """Least squares with iterative clipping at max(nsig * sigma, floor) (radius, px).

    ``use``: points allowed in the fit (e.g. not blends).  Returns (model, keep, sigma)
    with sigma the robust per-axis scatter of the kept points, or None if too few points.
    """
    keep = use.copy()
    model = None
    sig = np.inf
    for _ in range(max_iter):
        if keep.sum() < _min_points(kind, degree):
            return None
        model = _fit(kind, c[keep], x[keep], degree)
        r = np.hypot(*(model(c) - x).T)
        sig = float(np.median(r[keep]) / 1.1774)    # median radius of a 2-d Gaussian
        new = use & (r <= max(nsig * sig, floor))
        if np.array_equal(new, keep):
            break
        keep = new
    return model, keep, sig


# ============================================================================ inputs
def _column(table, name, what, source):
    if name not in table.colnames:
        raise MatchError(f"{source}: no column '{name}' for the {what} (columns: {', '.join(table.colnames)})")
    col = table[name]
    arr = np.ma.filled(np.ma.asarray(col, dtype=float), np.nan) if hasattr(col, "mask") else None
    if arr is None:
        arr = np.asarray(col, dtype=float)
    return np.asarray(arr, dtype=float), getattr(col, "unit", None)


def _stars_input(stars, x_col, y_col, flux_col, sigma_cols):
    """(xy (N, 2) px, flux (N,) or None, sigma (N,) px or None)."""
    if isinstance(stars, Table):
        x, ux = _column(stars, x_col, "star x position", "star list")
        y, uy = _column(stars, y_col, "star y position", "star list")
        for name, unit in ((x_col, ux), (y_col, uy)):
            if unit is not None and u.Unit(unit) not in (u.pix, u.dimensionless_unscaled):
                raise MatchError(f"star list: column '{name}' has unit '{unit}'; expected pixels")
        flux = None
        fc = flux_col if flux_col is not None else ("flux" if "flux" in stars.colnames else None)
        if fc is not None:
            flux, _ = _column(stars, fc, "star flux", "star list")
        sig = None
        sx_name, sy_name = sigma_cols
        if sx_name in stars.colnames and sy_name in stars.colnames:
            sx, _ = _column(stars, sx_name, "x error", "star list")
            sy, _ = _column(stars, sy_name, "y error", "star list")
            sig = np.sqrt(0.5 * (sx ** 2 + sy ** 2))
        xy = np.column_stack([x, y])
    else:
        if isinstance(stars, u.Quantity):
            stars = stars.to_value(u.pix)
        arr = np.asarray(stars, dtype=float)
        if arr.ndim != 2 or arr.shape[1] < 2:
            raise MatchError(f"stars must be a Table with '{x_col}', '{y_col}' (and optionally "
                             f"'flux', 'sigma_x', 'sigma_y') or an (N, 2) / (N, 3) array of x, y "
                             f"(, flux) in pixels; got shape {arr.shape}")
        xy = arr[:, :2].copy()
        flux = arr[:, 2].copy() if arr.shape[1] > 2 else None
        sig = None
    return xy, flux, sig


def _to_arcsec(values, unit, name):
    if unit is None or u.Unit(unit) == u.dimensionless_unscaled:
        return values
    try:
        return (values * u.Unit(unit)).to_value(u.arcsec)
    except u.UnitConversionError:
        raise MatchError(f"reference: column '{name}' has unit '{unit}'; expected an angle "
                         "(tangent-plane offsets, arcsec)") from None


def _reference_input(reference, x_col, y_col, mag_col):
    """(xy (M, 2) arcsec, mag (M,) or None)."""
    if isinstance(reference, Table):
        x, ux = _column(reference, x_col, "reference x position", "reference")
        y, uy = _column(reference, y_col, "reference y position", "reference")
        x = _to_arcsec(x, ux, x_col)
        y = _to_arcsec(y, uy, y_col)
        mc = mag_col if mag_col is not None else ("mag" if "mag" in reference.colnames else None)
        mag = _column(reference, mc, "reference magnitude", "reference")[0] if mc is not None else None
        return np.column_stack([x, y]), mag
    if isinstance(reference, u.Quantity):
        arr = reference.to_value(u.arcsec)
    else:
        arr = np.asarray(reference, dtype=float)
    if arr.ndim != 2 or arr.shape[1] < 2:
        raise MatchError(f"reference must be a Table with '{x_col}', '{y_col}' (arcsec; optionally "
                         f"a magnitude column) or an (M, 2) / (M, 3) array of x, y (, mag) in "
                         f"arcsec; got shape {arr.shape}")
    return arr[:, :2].astype(float), (arr[:, 2].astype(float) if arr.shape[1] > 2 else None)


def _parse_rotation(rotation, rotation_tolerance):
    """None (any) or (center_rad, half_width_rad)."""
    if rotation is None:
        return None
    if isinstance(rotation, (tuple, list)) and len(rotation) == 2:
        rotation, rotation_tolerance = rotation
    ang = u.Quantity(rotation, u.deg) if isinstance(rotation, u.Quantity) else rotation * u.deg
    tol = (u.Quantity(rotation_tolerance, u.deg) if isinstance(rotation_tolerance, u.Quantity)
           else rotation_tolerance * u.deg)
    tol_rad = float(tol.to_value(u.rad))
    if not (tol_rad > 0):
        raise MatchError(f"rotation_tolerance must be positive, got {rotation_tolerance!r}")
    if tol_rad >= math.pi:
        return None
    return float(ang.to_value(u.rad)), tol_rad


def _parse_parity(parity):
    if parity is None:
        return [1, -1]
    if isinstance(parity, (bool, np.bool_)):
        raise MatchError(f"parity must be None (try both), 1 (not flipped) or -1 (reference x "
                         f"flipped), not a bool ({parity!r})")
    if parity in (1, False, "normal", "+1"):
        return [1]
    if parity in (-1, True, "flipped", "flip", "-1"):
        return [-1]
    raise MatchError(f"parity must be None (try both), 1 (not flipped) or -1 (reference x "
                     f"flipped), got {parity!r}")


def _length_px(value, pix_mas, what):
    """A length in pixels from px (float or pix Quantity) or an angle Quantity."""
    if value is None:
        return None
    if isinstance(value, u.Quantity):
        if value.unit.physical_type == "angle":
            return float(value.to_value(u.mas)) / pix_mas
        try:
            return float(value.to_value(u.pix))
        except u.UnitConversionError:
            raise MatchError(f"{what}: expected pixels or an angle, got {value!r}") from None
    return float(value)


# ============================================================================ blends
def _blend_groups(c, mag, radius):
    """Connected groups of points closer than ``radius``: (labels (M,), n_groups)."""
    m = len(c)
    if m == 0:
        return np.zeros(0, np.int64), 0
    pairs = cKDTree(c).query_pairs(radius, output_type="ndarray")
    if len(pairs) == 0:
        return np.arange(m), m
    g = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(m, m))
    n, labels = connected_components(g, directed=False)
    return labels, n


@dataclass
class _Sources:
    """The reference as the matcher sees it: single stars and blended groups."""

    c: np.ndarray             # (K, 2) nominal px, parity NOT applied
    mag: np.ndarray | None    # (K,) combined magnitude
    rep: np.ndarray           # (K,) reference index reported (brightest member)
    members: list             # K arrays of reference indices
    is_blend: np.ndarray      # (K,) bool
    extent: np.ndarray        # (K,) largest distance of a member from the centre (px), 0 for singles


def _make_sources(c, mag, radius):
    labels, n = _blend_groups(c, mag, radius)
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(n + 1))
    members = [order[bounds[k]:bounds[k + 1]] for k in range(n)]
    cs = np.empty((n, 2))
    ms = None if mag is None else np.empty(n)
    rep = np.empty(n, np.int64)
    blend = np.zeros(n, bool)
    extent = np.zeros(n)
    for k, mem in enumerate(members):
        if len(mem) == 1:
            cs[k] = c[mem[0]]
            rep[k] = mem[0]
            if ms is not None:
                ms[k] = mag[mem[0]]
            continue
        blend[k] = True
        if mag is not None and np.all(np.isfinite(mag[mem])):
            f = 10 ** (-0.4 * (mag[mem] - np.min(mag[mem])))
            cs[k] = (f[:, None] * c[mem]).sum(axis=0) / f.sum()
            ms[k] = np.min(mag[mem]) - 2.5 * math.log10(f.sum())
            rep[k] = mem[int(np.argmin(mag[mem]))]
        else:
            cs[k] = c[mem].mean(axis=0)
            rep[k] = mem[0]
            if ms is not None:
                ms[k] = np.nan
        extent[k] = float(np.max(np.hypot(*(c[mem] - cs[k]).T)))
    return _Sources(cs, ms, rep, members, blend, extent)


# ============================================================================ voting
def _pairs_within(p, rmin, rmax):
    """Unordered pairs (i < j) with rmin <= |p_j - p_i| <= rmax: (i, j, length, angle)."""
    if len(p) < 2:
        z = np.zeros(0)
        return np.zeros(0, np.int64), np.zeros(0, np.int64), z, z
    pr = cKDTree(p).query_pairs(rmax, output_type="ndarray")
    if len(pr) == 0:
        z = np.zeros(0)
        return np.zeros(0, np.int64), np.zeros(0, np.int64), z, z
    d = p[pr[:, 1]] - p[pr[:, 0]]
    L = np.hypot(d[:, 0], d[:, 1])
    ok = L >= rmin
    return pr[ok, 0], pr[ok, 1], L[ok], np.arctan2(d[ok, 1], d[ok, 0])


@dataclass
class _VoteConfig:
    s_lo: float
    s_hi: float
    rot: tuple | None
    dm_tol: float | None
    w_theta: float = math.radians(0.5)
    w_lns: float = 0.005
    max_chunk: int = 2_000_000


def _rotation_peaks(xy, mu, c, mag, rmin, rmax, cfg: _VoteConfig, n_peaks):
    """Candidate (scale, theta, votes, peak_snr) from pair voting, and the number of votes."""
    i, j, L, a = _pairs_within(xy, rmin, rmax)
    k, l, Lc, ac = _pairs_within(c, rmin / cfg.s_hi, rmax / cfg.s_lo)
    if len(L) == 0 or len(Lc) == 0:
        return [], 0
    # reference pairs in both directions
    k, l = np.concatenate([k, l]), np.concatenate([l, k])
    Lc = np.concatenate([Lc, Lc])
    ac = np.concatenate([ac, ac + math.pi])
    use_dm = cfg.dm_tol is not None and mu is not None and mag is not None
    dmu = (mu[j] - mu[i]) if use_dm else None
    dmc = (mag[l] - mag[k]) if use_dm else None
    order = np.argsort(Lc, kind="stable")
    Lc_s = Lc[order]
    lo = np.searchsorted(Lc_s, L / cfg.s_hi, "left")
    hi = np.searchsorted(Lc_s, L / cfg.s_lo, "right")
    cnt = hi - lo
    n_th = int(round(2 * math.pi / cfg.w_theta))
    w_th = 2 * math.pi / n_th
    ln_lo, ln_hi = math.log(cfg.s_lo), math.log(cfg.s_hi)
    n_s = max(int(math.ceil((ln_hi - ln_lo) / cfg.w_lns)), 1)
    w_s = (ln_hi - ln_lo) / n_s
    hist = np.zeros(n_th * n_s, np.float64)
    n_votes = 0
    # process image pairs in chunks bounded by the number of votes they produce
    csum = np.cumsum(cnt)
    start = 0
    while start < len(L):
        base = csum[start - 1] if start > 0 else 0
        stop = int(np.searchsorted(csum, base + cfg.max_chunk, "right"))
        stop = max(stop, start + 1)
        cc = cnt[start:stop]
        tot = int(cc.sum())
        if tot:
            ii = np.repeat(np.arange(start, stop), cc)
            off = np.arange(tot) - np.repeat(np.cumsum(cc) - cc, cc)
            kk = order[np.repeat(lo[start:stop], cc) + off]
            if use_dm:
                with np.errstate(invalid="ignore"):
                    ok = ~(np.abs(dmu[ii] - dmc[kk]) > cfg.dm_tol)
                ii, kk = ii[ok], kk[ok]
            th = (a[ii] - ac[kk]) % (2 * math.pi)
            lns = np.log(L[ii] / Lc[kk])
            if cfg.rot is not None:
                dth = (th - cfg.rot[0] + math.pi) % (2 * math.pi) - math.pi
                ok = np.abs(dth) <= cfg.rot[1]
                th, lns = th[ok], lns[ok]
            it = np.minimum((th / w_th).astype(np.int64), n_th - 1)
            js = np.clip(((lns - ln_lo) / w_s).astype(np.int64), 0, n_s - 1)
            hist += np.bincount(it * n_s + js, minlength=n_th * n_s)
            n_votes += len(th)
        start = stop
    hist = hist.reshape(n_th, n_s)
    sm = ndimage.uniform_filter(hist, size=3, mode=("wrap", "nearest")) * 9.0
    mx = ndimage.maximum_filter(sm, size=5, mode=("wrap", "nearest"))
    pk = np.argwhere((sm == mx) & (sm > 0))
    if len(pk) == 0:
        return [], n_votes
    vals = sm[pk[:, 0], pk[:, 1]]
    bg = float(np.median(sm))
    noise = math.sqrt(max(bg, 1.0))
    out, chosen = [], []
    for o in np.argsort(-vals, kind="stable"):
        if len(out) >= n_peaks:
            break
        it, js = pk[o]
        if any(min(abs(it - ci), n_th - abs(it - ci)) <= 2 and abs(js - cj) <= 2 for ci, cj in chosen):
            continue
        chosen.append((it, js))
        # weighted mean of the 3x3 neighbourhood (angles unwrapped around the peak)
        w, tsum, ssum = 0.0, 0.0, 0.0
        for di in (-1, 0, 1):
            for dj in (-1, 0, 1):
                jj = js + dj
                if not 0 <= jj < n_s:
                    continue
                h = hist[(it + di) % n_th, jj]
                w += h
                tsum += h * (it + di + 0.5) * w_th
                ssum += h * (ln_lo + (jj + 0.5) * w_s)
        if w <= 0:
            continue
        out.append((math.exp(ssum / w), (tsum / w) % (2 * math.pi), float(vals[o]),
                    (float(vals[o]) - bg) / noise))
    return out, n_votes


def _top_peaks(sm, n_peaks, sep=2, n_look=64):
    """Indices (iy, ix) of the highest local maxima of a 2-D array, at least sep+1 bins apart."""
    flat = sm.ravel()
    n_look = min(n_look, flat.size)
    top = np.argpartition(-flat, n_look - 1)[:n_look]
    top = top[np.argsort(-flat[top], kind="stable")]
    out = []
    for o in top:
        if flat[o] <= 0 or len(out) >= n_peaks:
            break
        iy, ix = divmod(int(o), sm.shape[1])
        if any(abs(ix - cx) <= sep and abs(iy - cy) <= sep for cy, cx in out):
            continue
        out.append((iy, ix))
    return out


def _translation_peaks(xy, c, s, th, bin_px, n_peaks, origin, max_offset_px, max_bins=250_000):
    """Candidate translations (tx, ty, votes) for a given scale and rotation.

    Every (star, reference) combination votes for the translation that superposes them;
    votes are counted in bins of ``bin_px`` summed over 2x2 bins, and each peak is
    refined to the median of the votes within its 2x2 window, twice.
    """
    q = s * c @ _rot(th).T
    lo = xy.min(axis=0) - q.max(axis=0)
    hi = xy.max(axis=0) - q.min(axis=0)
    if max_offset_px is not None:
        lo = np.maximum(lo, origin - max_offset_px)
        hi = np.minimum(hi, origin + max_offset_px)
        if np.any(hi < lo):
            return []
    ext = hi - lo
    bin_px = max(bin_px, math.sqrt(float(ext[0] + 1) * float(ext[1] + 1) / max_bins))
    nb = np.floor(ext / bin_px).astype(np.int64) + 2
    hist = np.zeros(int(nb[0] * nb[1]), np.int64)
    step = max(1, 4_000_000 // max(len(q), 1))

    def votes(s0):
        tx = (xy[s0:s0 + step, 0, None] - q[None, :, 0]).ravel()
        ty = (xy[s0:s0 + step, 1, None] - q[None, :, 1]).ravel()
        ok = (tx >= lo[0]) & (tx <= hi[0]) & (ty >= lo[1]) & (ty <= hi[1])
        if max_offset_px is not None:
            ok &= (tx - origin[0]) ** 2 + (ty - origin[1]) ** 2 <= max_offset_px ** 2
        return tx[ok], ty[ok]

    chunks = range(0, len(xy), step)
    keep = len(chunks) == 1
    kept = None
    for s0 in chunks:
        tx, ty = votes(s0)
        if keep:
            kept = (tx, ty)
        ix = ((tx - lo[0]) / bin_px).astype(np.int64)
        iy = ((ty - lo[1]) / bin_px).astype(np.int64)
        hist += np.bincount(iy * nb[0] + ix, minlength=hist.size)
    hist = hist.reshape(nb[1], nb[0])
    sm = hist[:-1, :-1] + hist[1:, :-1] + hist[:-1, 1:] + hist[1:, 1:]
    out = []
    for py, px in _top_peaks(sm, n_peaks, sep=1):
        c0 = lo + (np.array([px, py]) + 1.0) * bin_px            # centre of the 2x2 window
        half = bin_px
        for _ in range(2):
            sx, sy = [], []
            for s0 in chunks:
                tx, ty = kept if keep else votes(s0)
                w = (np.abs(tx - c0[0]) <= half) & (np.abs(ty - c0[1]) <= half)
                sx.append(tx[w])
                sy.append(ty[w])
            sx, sy = np.concatenate(sx), np.concatenate(sy)
            if len(sx) == 0:
                break
            c0 = np.array([np.median(sx), np.median(sy)])
        out.append((float(c0[0]), float(c0[1]), float(sm[py, px])))
    return out


# ============================================================================ assignment
def _assign(pred, tree, tol, cand_ok, k=4, cost_extra=None, extra=None):
    """One-to-one greedy assignment of sources (pred) to stars (tree) within tol.

    ``tol``: scalar or per-star array (px); ``extra``: per-source array added to it (the
    half-size of a blended group).  ``cand_ok``: sources that may be matched.
    ``cost_extra(src, star)``: added to (d / tol)^2 to rank candidate pairs.
    Returns (src, star, d).
    """
    src_all = np.nonzero(cand_ok)[0]
    if len(src_all) == 0 or tree.n == 0:
        e = np.zeros(0, np.int64)
        return e, e, np.zeros(0)
    tol_arr = np.broadcast_to(np.asarray(tol, float), (tree.n,))
    tmax = float(np.max(tol_arr)) + (0.0 if extra is None else float(np.max(extra[src_all], initial=0.0)))
    kk = min(k, tree.n)
    d, j = tree.query(pred[src_all], k=kk, distance_upper_bound=tmax)
    if kk == 1:
        d, j = d[:, None], j[:, None]
    src = np.repeat(src_all, kk)
    d, j = d.ravel(), j.ravel()
    ok = np.isfinite(d)
    src, j, d = src[ok], j[ok], d[ok]
    tt = tol_arr[j] if extra is None else tol_arr[j] + extra[src]
    ok = d <= tt
    src, j, d, tt = src[ok], j[ok], d[ok], tt[ok]
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


# ============================================================================ refinement
@dataclass
class _Solution:
    parity: int
    src: np.ndarray
    star: np.ndarray
    model: _Model
    sim: _Model
    affine: _Model | None
    sigma_px: float
    tol_px: float
    n_sig: int
    n_src_in: int
    log10_fap: float
    log10_tail: float
    expected_chance: float
    start: tuple
    flux_zp: float | None = None
    flux_sigma: float | None = None
    flux_outlier: np.ndarray | None = None
    flux_rejected: tuple | None = None


def _inside(p, box, margin=0.0):
    xmin, xmax, ymin, ymax = box
    return ((p[:, 0] >= xmin - margin) & (p[:, 0] <= xmax + margin)
            & (p[:, 1] >= ymin - margin) & (p[:, 1] <= ymax + margin))


def _significance(n, n_stars, n_src_in, area, r, log10_trials):
    """(log10 false-alarm probability, log10 binomial tail, expected chance matches)."""
    if n_stars <= 0 or n_src_in <= 0:
        return 0.0, 0.0, 0.0
    p = -math.expm1(-n_src_in / area * math.pi * r * r)
    p = min(max(p, 1e-300), 1.0)
    n = min(int(n), int(n_stars))
    if n <= 0:
        tail = 0.0
    else:   # log P(X >= n), X ~ Binomial(n_stars, p), summed in logs (no underflow)
        k = np.arange(n, n_stars + 1)
        tail = float(special.logsumexp(stats.binom.logpmf(k, n_stars, p))) / math.log(10)
    return min(tail + log10_trials, 0.0), tail, n_stars * p


class _Refiner:
    def __init__(self, xy, sig_star, mu, star_crowded, sources, box, cfg):
        self.xy = xy
        self.sig_star = sig_star
        self.mu = mu
        self.tree = cKDTree(xy)
        self.crowded = star_crowded
        self.S = sources
        self.box = box
        self.cfg = cfg
        self.in_box = _inside(xy, box)

    def _chance_radius(self, pred, src, star):
        """Radius (px) within which the stars left unmatched would make, by chance, at most
        ``max_false_pairs`` pairs with the sources left unmatched (expected number)."""
        area = (self.box[1] - self.box[0]) * (self.box[3] - self.box[2])
        in_src = _inside(pred, self.box)
        in_src[src] = False
        in_star = self.in_box.copy()
        in_star[star] = False
        n_src, n_star = max(int(in_src.sum()), 1), max(int(in_star.sum()), 1)
        r = math.sqrt(self.cfg["max_false_pairs"] * area / (math.pi * n_src * n_star))
        # not beyond the blend radius: PSF artefacts (rings, spikes) of a star whose own
        # detection is missing sit about there and are not uniformly distributed
        return min(r, self.cfg["blend_radius_px"])

    def _cand(self, pred, tol):
        return _inside(pred, self.box, 0.5 * tol)

    def refine(self, parity, s, th, t, log10_trials):
        cfg = self.cfg
        c = self.S.c * [float(parity), 1.0]
        xy = self.xy
        use_src = ~self.S.is_blend
        model = _Model.from_pose(s, th, t)
        tol_max = cfg["tolerance_px"]
        tol = 2.0 * tol_max
        floor = cfg["min_tolerance_px"]
        n_sig = None
        stage = [("similarity", tol), ("similarity", None), ("similarity", None),
                 ("affine", None), ("affine", None)]
        sigma = np.inf
        affine = None
        sim = model
        for n_it, (kind, t_fixed) in enumerate(stage):
            if t_fixed is not None:
                tol = t_fixed
            pred = model(c)
            src, star, _ = _assign(pred, self.tree, tol, self._cand(pred, tol))
            if len(src) < cfg["min_matched"]:
                return None
            use = use_src[src] & ~self.crowded[star]
            res = _robust_fit(kind, c[src], xy[star], use, floor=max(floor, 1.0) if kind == "similarity" else floor)
            if res is None:
                if kind == "affine":
                    break
                return None
            model, keep, sigma = res
            if kind == "similarity":
                sim = model
            else:
                affine = model
            if n_it == 2:
                # significance: matches of the refined similarity within tolerance_px
                pred = sim(c)
                cand = self._cand(pred, tol_max)
                src_s, _, _ = _assign(pred, self.tree, tol_max, cand)
                n_sig = len(src_s)
                n_src_in = int(np.count_nonzero(_inside(pred, self.box)))
                area = (self.box[1] - self.box[0]) * (self.box[3] - self.box[2])
                n_stars_in = int(np.count_nonzero(_inside(xy, self.box)))
                lfap, ltail, expct = _significance(n_sig, n_stars_in, n_src_in, area, tol_max,
                                                   log10_trials)
                if lfap > cfg["log10_max_fap"] + cfg["early_exit_margin"]:
                    # hopeless: keep only for the error message
                    return _Solution(parity, src, star, model, sim, None, sigma, tol, n_sig,
                                     n_src_in, lfap, ltail, expct, (s, th, t))
            tol = float(np.clip(cfg["anneal_nsig"] * sigma, max(floor, 2.0), tol_max))
        # polynomial stages (absorb the distortion)
        for _ in range(3):
            pred = model(c)
            src, star, _ = _assign(pred, self.tree, tol, self._cand(pred, tol), extra=self.S.extent)
            use = use_src[src] & ~self.crowded[star]
            deg = cfg["degree"]
            while deg > 1 and use.sum() < _min_points("poly", deg):
                deg -= 1
            kind = "affine" if deg == 1 else "poly"
            res = _robust_fit(kind, c[src], xy[star], use, degree=deg, floor=floor)
            if res is None:
                break
            model, keep, sigma = res
            r_ch = self._chance_radius(model(c), src, star)
            tol = float(np.clip(max(cfg["final_nsigma"] * sigma, r_ch), floor, tol_max))
        # final assignment: per-star tolerance, optional flux preference
        pred = model(c)
        r_ch = self._chance_radius(pred, src, star)
        tol_star = np.clip(np.maximum(cfg["final_nsigma"] * np.maximum(sigma, self.sig_star), r_ch),
                           floor, tol_max)
        cost_extra = None
        zp = fsig = None
        mag = self.S.mag
        if self.mu is not None and mag is not None and cfg["flux_check"] != "off":
            src, star, _ = _assign(pred, self.tree, tol_star, self._cand(pred, float(np.max(tol_star))),
                                   extra=self.S.extent)
            zp, fsig = _flux_zero_point(mag[src], self.mu[star])
            if zp is not None:
                cost_extra = _flux_cost(mag, self.mu, zp, max(fsig, cfg["flux_sigma_floor"]),
                                        cfg["flux_nsigma"])
        src, star, _ = _assign(pred, self.tree, tol_star, self._cand(pred, float(np.max(tol_star))),
                               cost_extra=cost_extra, extra=self.S.extent)
        fl_out = np.zeros(len(src), bool)
        rejected = (np.zeros(0, np.int64), np.zeros(0, np.int64))
        if zp is not None:
            zp, fsig = _flux_zero_point(mag[src], self.mu[star])
            if zp is not None:
                dm = mag[src] - self.mu[star] - zp
                with np.errstate(invalid="ignore"):
                    fl_out = np.abs(dm) > cfg["flux_nsigma"] * max(fsig, cfg["flux_sigma_floor"])
                if cfg["flux_check"] == "reject":
                    rejected = (src[fl_out], star[fl_out])
                    src, star = src[~fl_out], star[~fl_out]
                    fl_out = fl_out[~fl_out]
        if cfg["flux_check"] == "off":
            fl_out[:] = False
        # final fits on the final pairs (not blends, not flux outliers)
        use = use_src[src] & ~self.crowded[star] & ~fl_out
        deg = cfg["degree"]
        while deg > 1 and use.sum() < _min_points("poly", deg):
            deg -= 1
        res = _robust_fit("affine" if deg == 1 else "poly", c[src], xy[star], use, degree=deg,
                          nsig=cfg["final_nsigma"], floor=floor)
        if res is not None:
            model, keep, sigma = res
        r_sim = _robust_fit("similarity", c[src], xy[star], use, nsig=cfg["final_nsigma"], floor=1.0)
        if r_sim is not None:
            sim = r_sim[0]
        r_aff = _robust_fit("affine", c[src], xy[star], use, nsig=cfg["final_nsigma"], floor=1.0)
        affine = r_aff[0] if r_aff is not None else None
        return _Solution(parity, src, star, model, sim, affine, sigma, float(np.median(tol_star)),
                         n_sig, n_src_in, lfap, ltail, expct, (s, th, t), zp, fsig, fl_out, rejected)


def _flux_cost(mag, mu, zp, sigma, nsig):
    """Assignment cost of the flux mismatch: 1 at ``nsig`` sigma (0 without a flux)."""
    def cost(src, star):
        dm = mag[src] - mu[star] - zp
        return np.where(np.isfinite(dm), (dm / (nsig * sigma)) ** 2, 0.0)
    return cost


def _flux_zero_point(mag, mu):
    """Robust (zero point, scatter) of mag - mu over finite values, or (None, None)."""
    dm = mag - mu
    dm = dm[np.isfinite(dm)]
    if len(dm) < 5:
        return None, None
    zp = float(np.median(dm))
    sig = float(1.4826 * np.median(np.abs(dm - zp)))
    return zp, sig


def _near_solution(sol, parity, s, th, t, sources, tol):
    """True if the pose (s, th, t) predicts a refined solution's sources where it puts them."""
    if sol.parity != parity or len(sol.src) == 0:
        return False
    c = sources.c[sol.src] * [float(parity), 1.0]
    p = t + s * c @ _rot(th).T
    return float(np.median(np.hypot(*(sol.sim(c) - p).T))) < 2.0 * tol


def _same_pose(a: _Solution, b: _Solution, sources, tol):
    """True if b's pose predicts a's matched sources where a puts them (same solution)."""
    if a.parity != b.parity:
        return False
    c = sources.c[a.src] * [float(a.parity), 1.0]
    return float(np.median(np.hypot(*(a.sim(c) - b.sim(c)).T))) < tol


# ============================================================================ result
@dataclass
class MatchResult:
    """The outcome of :func:`match_stars`.

    Indices are rows of the inputs as given (rows with non-finite positions included).
    Pairs, sorted by star row: ``star_index[k]`` is reference entry ``ref_index[k]``;
    ``blend[k]`` flags a blended pair (a reference blend group — ``blend_members[k]``
    lists all its reference entries — or a star with another measured star within the
    blend radius); blended pairs are not used in the transform fits.  ``residual_px`` is
    star minus ``polynomial(reference)``.  ``flux_outlier`` flags pairs whose flux does
    not follow the fitted flux-magnitude relation (``flux_check="flag"``);
    ``flux_rejected`` lists the (star, reference) pairs dropped for it
    (``flux_check="reject"``).  ``star_blend`` (one flag per input star row) marks stars
    with a measured neighbour within the blend radius or matched to a blend.

    Transforms (reference arcsec -> detector px): ``similarity``, ``affine`` and
    ``polynomial`` (degree ``polynomial.degree``, absorbs the distortion over the
    matched stars).

    Quality (``quality`` dict): ``n_matched``, ``n_stars`` (valid positions),
    ``n_reference_in_field`` (reference entries predicted on the detector),
    ``fraction`` (n_matched / min(n_stars, n_reference_in_field)), ``rms_px`` (final
    polynomial fit, non-blended pairs), ``sigma_px`` (robust per-axis scatter),
    ``tolerance_px`` (final matching radius, median over stars), ``significance``
    (-log10 of the false-alarm probability, see the module docstring),
    ``log10_false_alarm``, ``n_significance`` (stars within ``tolerance_px`` of the
    similarity prediction) and ``expected_chance_matches`` (what a random pose would
    give), ``expected_false_pairs`` (pairs expected to be chance coincidences at the
    final tolerance), ``runner_up`` (the best different pose, if any), the search
    statistics and ``seconds``.

    Unmatched: ``unmatched_stars`` (rows of the star list; rows with non-finite positions
    are listed in ``invalid_stars``), ``unmatched_reference`` (reference entries predicted
    on the detector without a star, blend companions excluded), ``reference_outside``
    (predicted off the detector), ``invalid_reference`` (non-finite positions).
    """

    star_index: np.ndarray
    ref_index: np.ndarray
    blend: np.ndarray
    blend_members: list
    residual_px: np.ndarray
    flux_outlier: np.ndarray
    similarity: SimilarityTransform
    affine: AffineTransform | None
    polynomial: PolynomialTransform
    quality: dict
    unmatched_stars: np.ndarray
    unmatched_reference: np.ndarray
    reference_outside: np.ndarray
    invalid_stars: np.ndarray
    invalid_reference: np.ndarray
    star_blend: np.ndarray
    flux_rejected: np.ndarray
    tried: str = ""

    @property
    def n_matched(self) -> int:
        return int(len(self.star_index))

    @property
    def pairs(self) -> np.ndarray:
        """(n, 2) array of (star index, reference index)."""
        return np.column_stack([self.star_index, self.ref_index])

    def predict(self, ref_xy_arcsec, model="polynomial"):
        """Detector position (px) of reference positions (arcsec) with the chosen model."""
        return {"polynomial": self.polynomial, "affine": self.affine,
                "similarity": self.similarity}[model](ref_xy_arcsec)

    def to_table(self) -> Table:
        """The matched pairs as a Table (one row per pair)."""
        t = Table()
        t["star_index"] = self.star_index
        t["ref_index"] = self.ref_index
        t["dx"] = self.residual_px[:, 0] * u.pix
        t["dy"] = self.residual_px[:, 1] * u.pix
        t["blend"] = self.blend
        t["flux_outlier"] = self.flux_outlier
        t["n_blend_members"] = np.array([len(m) for m in self.blend_members], np.int64)
        t.meta["match_quality"] = {k: v for k, v in self.quality.items() if k != "runner_up"}
        t.meta["similarity"] = self.similarity.as_dict()
        return t


# ============================================================================ main
def _footprint_area(p):
    """Area of the bounding box of points (px^2), at least 1."""
    if len(p) < 2:
        return 1.0
    ext = p.max(axis=0) - p.min(axis=0)
    return float(max(ext[0], 1.0) * max(ext[1], 1.0))


def match_stars(stars, reference, *, pixel_scale_mas, scale_tolerance=0.05,
                rotation=None, rotation_tolerance=5 * u.deg, parity=None,
                max_offset=None, expected_origin_px=None, detector_shape=None,
                tolerance_px=10.0, min_tolerance_px=0.5, final_nsigma=5.0, degree=3,
                blend_radius_px=4.0, mag_tolerance=1.5, flux_check="reject", flux_nsigma=5.0,
                min_matched=6, max_false_alarm=1e-4, max_false_pairs=0.001, n_bright=80, max_refine=8,
                x_col="x", y_col="y", flux_col=None, sigma_cols=("sigma_x", "sigma_y"),
                ref_x_col="x", ref_y_col="y", ref_mag_col=None) -> MatchResult:
    """Match measured stars to reference stars.

    Parameters
    ----------
    stars : Table or array
        Measured stars: a Table with ``x_col``, ``y_col`` (0-based pixels), optionally a
        flux (``flux_col``, default ``'flux'`` if present) and position errors
        (``sigma_cols``, px), e.g. from :func:`astrocal.sky.starlist.read_star_list`;
        or an (N, 2) / (N, 3) array of x, y (, flux).  Rows with non-finite positions
        are ignored (listed in ``invalid_stars``).
    reference : Table or array
        Reference stars: tangent-plane positions in arcsec (``ref_x_col``,
        ``ref_y_col``; angle units are converted), optionally magnitudes
        (``ref_mag_col``, default ``'mag'`` if present); or an (M, 2) / (M, 3) array of
        x, y (, mag) in arcsec.
    pixel_scale_mas : float or Quantity
        Nominal pixel scale (mas/px); the true one may differ by ``scale_tolerance``.
    scale_tolerance : float
        Largest relative deviation of the scale from nominal (default 0.05).
    rotation : None, angle, or (angle, tolerance)
        ``None``: the position angle is unknown (any rotation is searched).  Otherwise
        the expected rotation (Quantity or degrees; see the module docstring) searched
        within ``rotation_tolerance``.
    parity : None, 1 or -1
        ``None`` tries both; ``-1`` flips the reference x axis (a north-up east-left
        image with an east-growing reference x), ``1`` does not.
    max_offset : None, px or angle Quantity
        ``None``: any translation for which the reference overlaps the field (the
        offset may be as large as the field).  Otherwise the largest distance between
        the reference origin's pixel position and ``expected_origin_px`` (default the
        detector centre).
    detector_shape : (ny, nx), optional
        Detector size (default: the bounding box of the stars).
    tolerance_px : float
        Largest distance (px) between a star and its predicted reference position: must
        exceed the distortion not captured by a similarity transform plus the pose
        error (default 10).  Also the radius of the significance test.
    min_tolerance_px, final_nsigma :
        The final matching radius is ``final_nsigma`` times the residual scatter of the
        polynomial fit (or the star's own error if larger), within
        [``min_tolerance_px``, ``tolerance_px``].
    degree : int
        Degree of the polynomial refinement (lowered when few stars match).
    blend_radius_px : float
        Reference stars closer than this (px, nominal scale) are one blended source;
        measured stars closer than this are flagged as blends.  About the PSF FWHM
        (METIS IMG_LM in L: 3.7 px).
    mag_tolerance : float or None
        Pair votes require ``abs(magnitude difference of the star pair - that of the
        reference pair) <= mag_tolerance`` (when fluxes and magnitudes are given); None
        disables.
    flux_check : "reject", "flag" or "off"
        Pairs whose ``mag + 2.5 log10(flux)`` is more than ``flux_nsigma`` robust sigma
        (at least 0.2 mag) off the median over the pairs are dropped (``"reject"``,
        default; listed in ``flux_rejected``), flagged (``"flag"``: ``flux_outlier``,
        left out of the fits) or not looked at (``"off"``).  Saturated or variable
        stars and strongly coloured sources (a K-band reference for an L-band image) are
        the usual reasons besides wrong pairs.
    min_matched, max_false_alarm :
        Acceptance: at least ``min_matched`` pairs and a false-alarm probability (with
        the look-elsewhere factor, see the module docstring) below ``max_false_alarm``
        (default 1e-4; wrong references measured at >= 10^1.8 in simulations).
    max_false_pairs : float
        The final matching radius may grow beyond ``final_nsigma`` sigma (when the fit
        leaves systematic residuals, e.g. few stars for the polynomial) up to the radius
        where the unmatched stars would make this many chance pairs with the unmatched
        reference stars (expected number, whole field), and never beyond
        ``blend_radius_px``.
    n_bright : int
        Brightest-first voting uses at most this many of the brightest stars (0
        disables the brightest-first pass).
    max_refine : int
        Largest number of candidate poses refined per voting pass.
    x_col, y_col, flux_col, sigma_cols, ref_x_col, ref_y_col, ref_mag_col :
        Column names in the star and reference Tables.

    Returns
    -------
    MatchResult

    Raises
    ------
    MatchError
        Bad input, or no acceptable match (the message lists what was tried), or two
        different poses both significant (ambiguous).
    """
    t_start = time.perf_counter()
    pix_mas = _pixel_scale_mas(pixel_scale_mas)
    if not 0 < scale_tolerance < 0.5:
        raise MatchError(f"scale_tolerance must be in (0, 0.5), got {scale_tolerance!r}")
    if flux_check not in ("flag", "reject", "off"):
        raise MatchError(f"flux_check must be 'flag', 'reject' or 'off', got {flux_check!r}")
    xy_all, flux_all, sig_all = _stars_input(stars, x_col, y_col, flux_col, sigma_cols)
    ref_all, mag_all = _reference_input(reference, ref_x_col, ref_y_col, ref_mag_col)
    rot = _parse_rotation(rotation, rotation_tolerance)
    parities = _parse_parity(parity)
    tol_px = float(tolerance_px)
    if not tol_px > 0:
        raise MatchError(f"tolerance_px must be positive, got {tolerance_px!r}")

    ok_star = np.all(np.isfinite(xy_all), axis=1)
    ok_ref = np.all(np.isfinite(ref_all), axis=1)
    star_rows = np.nonzero(ok_star)[0]
    ref_rows = np.nonzero(ok_ref)[0]
    xy = xy_all[ok_star]
    ref = ref_all[ok_ref]
    n_stars, n_ref = len(xy), len(ref)

    with np.errstate(divide="ignore", invalid="ignore"):
        mu = None if flux_all is None else np.where(flux_all[ok_star] > 0,
                                                    -2.5 * np.log10(flux_all[ok_star]), np.nan)
    mag = None if mag_all is None else mag_all[ok_ref].astype(float)
    if mu is not None and not np.any(np.isfinite(mu)):
        mu = None
    if mag is not None and not np.any(np.isfinite(mag)):
        mag = None
    sig_star = np.zeros(n_stars) if sig_all is None else np.nan_to_num(sig_all[ok_star], nan=0.0)

    if detector_shape is None:
        if n_stars == 0:
            raise MatchError("no star with a finite position and no detector_shape given")
        box = (float(xy[:, 0].min()) - 0.5, float(xy[:, 0].max()) + 0.5,
               float(xy[:, 1].min()) - 0.5, float(xy[:, 1].max()) + 0.5)
    else:
        ny, nx = (int(v) for v in detector_shape)
        box = (-0.5, nx - 0.5, -0.5, ny - 0.5)
    area = (box[1] - box[0]) * (box[3] - box[2])
    width, height = box[1] - box[0], box[3] - box[2]
    origin = (np.array([(box[0] + box[1]) / 2, (box[2] + box[3]) / 2]) if expected_origin_px is None
              else np.asarray(expected_origin_px, float).reshape(2))
    max_off_px = _length_px(max_offset, pix_mas, "max_offset")

    s_lo, s_hi = 1.0 - scale_tolerance, 1.0 + scale_tolerance
    rot_txt = ("any rotation" if rot is None else
               f"rotation {math.degrees(rot[0]):g} +- {math.degrees(rot[1]):g} deg")
    par_txt = "both parities" if len(parities) == 2 else f"parity {parities[0]:+d}"
    off_txt = ("any offset" if max_off_px is None else
               f"offset of the reference origin within {max_off_px:.0f} px of pixel "
               f"({origin[0]:.0f}, {origin[1]:.0f})")
    base_tried = (f"{n_stars} stars{' with fluxes' if mu is not None else ''} against {n_ref} "
                  f"reference stars{' with magnitudes' if mag is not None else ''}; nominal pixel scale "
                  f"{pix_mas:g} mas/px, scale within +-{scale_tolerance:.0%}, {rot_txt}, {par_txt}, "
                  f"{off_txt}, tolerance {tol_px:g} px")
    if n_stars < 3 or n_ref < 3:
        raise MatchError(f"too few positions to match: {base_tried}; need at least 3 of each")

    # reference in nominal pixels (parity not applied), blend groups
    c_ref = ref * (1e3 / pix_mas)
    sources = _make_sources(c_ref, mag, float(blend_radius_px))
    # crowded stars: another measured star within the blend radius
    crowded = np.zeros(n_stars, bool)
    cp = cKDTree(xy).query_pairs(float(blend_radius_px), output_type="ndarray")
    if len(cp):
        crowded[cp.ravel()] = True

    cfg = dict(tolerance_px=tol_px, min_tolerance_px=float(min_tolerance_px), final_nsigma=float(final_nsigma),
               degree=int(degree), anneal_nsig=6.0, min_matched=int(min_matched),
               log10_max_fap=math.log10(max_false_alarm), early_exit_margin=3.0,
               flux_check=flux_check, flux_nsigma=float(flux_nsigma), flux_sigma_floor=0.2,
               max_false_pairs=float(max_false_pairs), blend_radius_px=float(blend_radius_px))
    refiner = _Refiner(xy, sig_star, mu, crowded, sources, box, cfg)

    # trials factor: independent poses at the resolution of the tolerance
    R = 0.5 * math.hypot(width, height)
    d_ang = tol_px / R
    n_rot_cells = (2 * math.pi if rot is None else 2 * rot[1]) / d_ang
    n_scale_cells = max(1.0, 2 * scale_tolerance * R / tol_px)
    if max_off_px is not None:
        a_trans = math.pi * max_off_px ** 2
    else:
        ce = sources.c.max(axis=0) - sources.c.min(axis=0)
        a_trans = (width + ce.max() * s_hi) * (height + ce.max() * s_hi)
    n_trans_cells = max(1.0, a_trans / (math.pi * tol_px ** 2))
    log10_trials = math.log10(max(n_rot_cells, 1.0) * n_scale_cells * n_trans_cells * len(parities))

    # voting passes: brightest first (when fluxes and magnitudes are given), then all
    passes = []
    src_c = sources.c
    src_mag = sources.mag
    a_cat = _footprint_area(src_c)
    rho_cat = len(src_c) / a_cat
    if n_bright and mu is not None and src_mag is not None:
        # the brightest stars of both lists at a common surface density: that of the
        # sparser list, at most n_bright stars in the field (the reference a bit deeper,
        # for stars missing from the list and colour differences)
        # then three and nine times as many (the brightest of two bands, or of a list and a
        # catalogue of different depths, overlap the more the deeper one goes), before all
        rank_x = np.argsort(np.where(np.isfinite(mu), mu, np.inf), kind="stable")
        rank_c = np.argsort(np.where(np.isfinite(src_mag), src_mag, np.inf), kind="stable")
        for grow in BRIGHT_STEPS:
            n_x = int(min(n_stars, grow * n_bright, max(math.ceil(grow * rho_cat * area), 10)))
            n_c = int(min(len(src_c), max(n_x, math.ceil(1.3 * n_x / area * a_cat))))
            if not (n_x < 0.67 * n_stars or n_c < 0.67 * len(src_c)):
                break
            passes.append((f"brightest{'' if grow == 1 else f' x{grow}'}", rank_x[:n_x], rank_c[:n_c]))
    passes.append(("all", np.arange(n_stars), np.arange(len(src_c))))

    vcfg = _VoteConfig(s_lo, s_hi, rot, None if mag_tolerance is None else float(mag_tolerance))
    solutions: list[_Solution] = []
    pass_log = []
    n_refined = 0
    accepted = None
    for name, ix, ic in passes:
        xs = xy[ix]
        cs = src_c[ic]
        mus = None if mu is None else mu[ix]
        mags = None if src_mag is None else src_mag[ic]
        # separation range: ~8 neighbours per star at the density of the sparser list
        rho = min(len(xs) / area, len(cs) / a_cat)
        rmax = math.sqrt(8.0 / (math.pi * max(rho, 1e-12)))
        rmax = min(rmax, 0.5 * min(width, height))
        rmin = max(3.0 * float(blend_radius_px), 2.0 * tol_px / 5.0, 5.0)
        n_votes = 0
        cands = []
        for par in parities:
            cpar = cs * [float(par), 1.0]
            rpeaks, nv = _rotation_peaks(xs, mus, cpar, mags, rmin, rmax, vcfg, n_peaks=4)
            n_votes += nv
            for (sc, th, _, _) in rpeaks:
                tpeaks = _translation_peaks(xs, cpar, sc, th, bin_px=max(3.0 * tol_px, 12.0), n_peaks=3,
                                            origin=origin, max_offset_px=max_off_px)
                cands.extend((tv, par, sc, th, np.array([tx, ty])) for (tx, ty, tv) in tpeaks)
        # refine the candidates with the most translation votes first
        cands.sort(key=lambda cd: -cd[0])
        n_cand = len(cands)
        pass_solutions = []
        for tv, par, sc, th, tt in cands[:max_refine]:
            if any(_near_solution(sol, par, sc, th, tt, sources, tol_px) for sol in pass_solutions):
                continue
            sol = refiner.refine(par, sc, th, tt, log10_trials)
            n_refined += 1
            if sol is not None:
                pass_solutions.append(sol)
        pass_log.append(f"{name} ({len(ix)} stars, {len(ic)} reference sources): {n_votes} pair votes, "
                        f"{n_cand} candidate poses, {min(n_cand, max_refine)} refined")
        solutions.extend(pass_solutions)
        good = [s_ for s_ in pass_solutions if s_.log10_fap <= cfg["log10_max_fap"]
                and len(s_.src) >= min_matched and _pose_ok(s_, s_lo, s_hi, rot, max_off_px, origin)]
        if good:
            accepted = good
            break

    tried = f"{base_tried}; passes: " + "; ".join(pass_log)
    if accepted is None:
        best = max(solutions, key=lambda s_: (-s_.log10_fap, s_.n_sig), default=None)
        if best is None:
            msg = f"no candidate pose kept at least min_matched={min_matched} stars"
        else:
            sc_, th_, _ = best.sim.similarity_params()
            msg = (f"the best pose (parity {best.parity:+d}, scale {sc_:.4f}, rotation "
                   f"{math.degrees(th_) % 360:.2f} deg) matches {best.n_sig} stars within {tol_px:g} px "
                   f"where {best.expected_chance:.1f} are expected by chance; false-alarm probability "
                   f"10^{best.log10_fap:.1f} (need < {max_false_alarm:g}, and >= {min_matched} pairs)")
        raise MatchError(f"no match between the stars and the reference: {msg}; tried {tried}. "
                         "Check that the reference covers the field, its units (arcsec) and "
                         "the nominal pixel scale, the parity, and tolerance_px against the "
                         "size of the distortion")
    accepted.sort(key=lambda s_: (s_.log10_fap, -len(s_.src)))
    best = accepted[0]
    runner = None
    for other in sorted(solutions, key=lambda s_: s_.log10_fap):
        if other is best or _same_pose(best, other, sources, tol_px):
            continue
        runner = other
        break
    if (runner is not None and runner.log10_fap <= cfg["log10_max_fap"]
            and runner.n_sig >= 0.5 * best.n_sig):
        s1, t1, o1 = best.sim.similarity_params()
        s2, t2, o2 = runner.sim.similarity_params()
        raise MatchError(
            f"ambiguous match: two different poses are both significant: parity {best.parity:+d}, "
            f"rotation {math.degrees(t1) % 360:.2f} deg, reference origin at pixel ({o1[0]:.1f}, "
            f"{o1[1]:.1f}) with {best.n_sig} stars, and parity {runner.parity:+d}, rotation "
            f"{math.degrees(t2) % 360:.2f} deg, origin ({o2[0]:.1f}, {o2[1]:.1f}) with "
            f"{runner.n_sig} stars; constrain rotation, parity or max_offset; tried {tried}")
    return _result(best, runner, sources, xy, star_rows, ref_rows, ok_star, ok_ref, ref, pix_mas,
                   crowded, box, tried, n_refined, log10_trials, t_start, mu, n_stars)


def _pose_ok(sol, s_lo, s_hi, rot, max_off_px, origin):
    s, th, t = sol.sim.similarity_params()
    if not (s_lo - 0.01 <= s <= s_hi + 0.01):
        return False
    if rot is not None:
        d = (th - rot[0] + math.pi) % (2 * math.pi) - math.pi
        if abs(d) > rot[1] + math.radians(0.5):
            return False
    if max_off_px is not None and math.hypot(*(t - origin)) > max_off_px * 1.05 + 5:
        return False
    return True


def _result(best, runner, sources, xy, star_rows, ref_rows, ok_star, ok_ref, ref, pix_mas,
            crowded, box, tried, n_refined, log10_trials, t_start, mu, n_stars):
    par = best.parity
    k = 1e3 / pix_mas
    c = sources.c * [float(par), 1.0]
    src, star = best.src, best.star
    pred = best.model(c[src])
    resid = xy[star] - pred
    blend = sources.is_blend[src] | crowded[star]
    fit_ok = ~blend & ~best.flux_outlier
    rms = float(np.sqrt(np.mean(np.sum(resid[fit_ok] ** 2, axis=1)))) if fit_ok.any() else float("nan")
    # public transforms (reference arcsec)
    s, th, t = best.sim.similarity_params()
    cs = c[src][fit_ok] if fit_ok.sum() >= 3 else c[src]
    xs = xy[star][fit_ok] if fit_ok.sum() >= 3 else xy[star]
    rms_sim = float(np.sqrt(np.mean(np.sum((best.sim(cs) - xs) ** 2, axis=1))))
    similarity = SimilarityTransform((float(t[0]), float(t[1])), float(s), math.degrees(th) % 360.0,
                                     int(par), pix_mas, rms_sim)
    affine = None
    if best.affine is not None:
        A, ta = best.affine.affine_params()
        rms_aff = float(np.sqrt(np.mean(np.sum((best.affine(cs) - xs) ** 2, axis=1))))
        affine = AffineTransform(A @ np.diag([float(par), 1.0]) * k, ta, rms_aff)
    m = best.model
    if m.kind == "similarity":
        a, b, tx, ty = m.coef
        coef = np.array([[tx, ty], [a, b], [-b, a]])
        degree = 1
    else:
        coef = np.asarray(m.coef)
        degree = m.degree
    polynomial = PolynomialTransform(degree, coef, tuple(float(v) / k for v in m.c0), m.h / k, int(par), rms)

    # reference in / out of the field (affine prediction; polynomial near the field)
    pred_all = (best.affine or best.sim)(c)
    inside = _inside(pred_all, box)
    matched_src = np.zeros(len(c), bool)
    matched_src[src] = True
    unmatched_ref = np.sort(np.concatenate([sources.members[q] for q in np.nonzero(inside & ~matched_src)[0]]
                                           or [np.zeros(0, np.int64)]))
    outside_ref = np.sort(np.concatenate([sources.members[q] for q in np.nonzero(~inside)[0]]
                                         or [np.zeros(0, np.int64)]))
    n_src_in = int(inside.sum())
    n_ref_in = int(sum(len(sources.members[q]) for q in np.nonzero(inside)[0]))
    matched_star = np.zeros(len(xy), bool)
    matched_star[star] = True
    area = (box[1] - box[0]) * (box[3] - box[2])
    n_unm_src = int(np.count_nonzero(inside & ~matched_src))
    n_unm_star = int(np.count_nonzero(~matched_star & _inside(xy, box)))
    r_f = best.tol_px
    expected_false = n_unm_star * (-math.expm1(-n_unm_src / area * math.pi * r_f * r_f))
    runner_info = None
    if runner is not None:
        s2, t2, o2 = runner.sim.similarity_params()
        runner_info = {"parity": int(runner.parity), "scale": float(s2),
                       "rotation_deg": math.degrees(t2) % 360.0, "offset_px": [float(o2[0]), float(o2[1])],
                       "n_significance": int(runner.n_sig), "log10_false_alarm": float(runner.log10_fap)}
    quality = {
        "n_matched": int(len(src)),
        "n_blends": int(blend.sum()),
        "n_stars": int(n_stars),
        "n_reference": int(len(ref)),
        "n_reference_in_field": n_ref_in,
        "fraction": float(len(src) / max(1, min(n_stars, n_src_in))),
        "rms_px": rms,
        "sigma_px": float(best.sigma_px),
        "tolerance_px": float(r_f),
        "significance": float(-best.log10_fap),
        "log10_false_alarm": float(best.log10_fap),
        "log10_chance_tail": float(best.log10_tail),
        "log10_trials": float(log10_trials),
        "n_significance": int(best.n_sig),
        "expected_chance_matches": float(best.expected_chance),
        "expected_false_pairs": float(expected_false),
        "n_flux_outliers": int(np.count_nonzero(best.flux_outlier)),
        "flux_zero_point": None if best.flux_zp is None else float(best.flux_zp),
        "flux_scatter_mag": None if best.flux_sigma is None else float(best.flux_sigma),
        "polynomial_degree": int(degree),
        "n_poses_refined": int(n_refined),
        "runner_up": runner_info,
        "seconds": time.perf_counter() - t_start,
    }
    order = np.argsort(star)
    return MatchResult(
        star_index=star_rows[star][order],
        ref_index=ref_rows[sources.rep[src]][order],
        blend=blend[order],
        blend_members=[ref_rows[sources.members[q]] for q in src[order]],
        residual_px=resid[order],
        flux_outlier=best.flux_outlier[order],
        similarity=similarity,
        affine=affine,
        polynomial=polynomial,
        quality=quality,
        unmatched_stars=np.sort(star_rows[~matched_star]),
        unmatched_reference=ref_rows[unmatched_ref],
        reference_outside=ref_rows[outside_ref],
        invalid_stars=np.nonzero(~ok_star)[0],
        invalid_reference=np.nonzero(~ok_ref)[0],
        star_blend=_full(crowded, ok_star, star, blend),
        flux_rejected=np.column_stack([star_rows[best.flux_rejected[1]],
                                       ref_rows[sources.rep[best.flux_rejected[0]]]]).astype(np.int64),
        tried=tried,
    )


def _full(crowded, ok_star, star, blend):
    out = np.zeros(len(ok_star), bool)
    rows = np.nonzero(ok_star)[0]
    out[rows[crowded]] = True
    out[rows[star[blend]]] = True
    return out
