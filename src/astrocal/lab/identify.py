"""Identify detected spots with the holes of a pinhole mask.

Given a list of detected spots (pixel positions, possibly with spurious detections such
as hot pixels and cosmic rays) and a mask table, :func:`identify_spots` finds the pose
of the mask on the detector and assigns every spot its ``hole_id`` (``-1`` when it is
not a mask hole).

Conventions
-----------
Pixel positions are 0-based, the centre of the first pixel is (0.0, 0.0), ``x`` runs
along numpy axis 1 and ``y`` along axis 0.  Mask coordinates (mm) are converted to
arcsec with the plate scale at the mask (mm/arcsec) and to *nominal pixels* with the
nominal pixel scale (mas/px).  The pose maps mask coordinates to the detector as
``p = t + s R(theta) M u`` with ``u`` in nominal pixels, ``M = diag(-1, 1)`` if the
image is mirrored and the identity otherwise, ``s`` a dimensionless scale (1 = the
nominal pixel scale), ``theta`` counter-clockwise from mask +x to detector +x, and
``t`` the pixel position of the mask origin.

Algorithm
---------
1. *Pair voting.*  Short pairs of spots (each spot with its nearest neighbours) are
   compared with short pairs of holes.  Every spot pair whose length ratio and
   direction are compatible with a hole pair (scale within ``scale_tolerance`` of
   nominal, rotation within ``max_rotation``) votes for the similarity transform that
   maps one onto the other.  Votes are accumulated over the translation ``t`` in a
   histogram with bins of a quarter of the smallest hole spacing, smoothed over 3x3
   bins; the strongest local maxima are the candidate poses.
2. *Refinement.*  Each candidate is refined by alternating nearest-neighbour
   assignment (one-to-one, tolerance a fraction of each hole's distance to its nearest
   neighbour; holes predicted off the detector are not candidates) and a least-squares
   fit that drops gross outliers one at a time and grows from a similarity through an
   affine map to a polynomial of degree ``fit_degree`` (which absorbs the distortion),
   and finally with a tight tolerance.
3. *Scoring and uniqueness.*  Each refined pose scores
   ``n_matched - 0.5 n_missing - 5 n_marker (- 0.5 chi2_prior)``: ``n_missing``
   counts holes predicted inside the detector without a spot (they may be vignetted,
   hence the half weight), ``n_marker`` is 1 when a spot sits at the predicted position
   of the mask's orientation marker (the missing hole of the fine 5x5 grid: a spot
   there is strong evidence against the pose, since a spurious detection landing on
   that exact spot is very unlikely), and the optional prior compares the mask origin
   with ``center_guess``.  A pose shifted by one pitch of a regular sub-grid loses the
   holes on one side and puts a spot on the marker, so it scores clearly lower.  The
   coarse grid alone is symmetric: if the fine grid (and with it the marker) is
   outside the field, two poses one coarse pitch apart can score alike; then the
   commanded chopper offset, passed as ``center_guess``/``center_sigma``, breaks the
   tie, and without it :class:`IdentificationError` reports the ambiguity.

Acceptance requires the refined scale and rotation to stay within the bounds, at least
``min_matched`` holes, a fraction ``min_fraction`` of the holes predicted inside the
detector and ``min_spot_fraction`` of the spots, a final rms below ``max_rms`` pixels,
and no spot on the orientation marker;
otherwise :class:`IdentificationError` says what was tried (e.g. a wrong mask table or
a wrong pixel scale).

The pose models, least-squares fits and one-to-one assignment are those of star matching
(:mod:`astrocal.pointmatch`), here with mask positions normalised about the mask origin
and fits that drop the worst point one at a time.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import astropy.units as u
from astropy.table import Table
from numpy.typing import ArrayLike
from scipy import ndimage
from scipy.spatial import cKDTree

from ..errors import AstrocalError
from ..field.basis import n_terms
from ..pointmatch import (PoseModel, assign, fit_dropping_worst, fit_pose, inside, pixel_scale_mas, robust_sigma,
                          rotation_matrix)
from .mask import Mask, as_mm_per_arcsec

__all__ = ["IdentificationError", "identify_spots", "pixel_scale_mas"]


class IdentificationError(AstrocalError, ValueError):
    """The spots could not be identified with the mask holes (message says what was tried)."""


# ---------------------------------------------------------------------------------
# the pose kit (astrocal.pointmatch) with identification's conventions: mask positions
# in nominal pixels normalised by ``norm`` about the mask origin (a similarity is not
# normalised); robust fits drop the worst point one at a time
# ---------------------------------------------------------------------------------
_ORIGIN = np.zeros(2)


def _fit(kind, uv, xy, degree=1, norm=1.0):
    return fit_pose(kind, uv, xy, degree, _ORIGIN, 1.0 if kind == "similarity" else norm)


def _robust_fit(kind, uv, xy, degree=1, norm=1.0, floor=0.3, nsig=5.0):
    """:func:`~astrocal.pointmatch.fit_dropping_worst` with identification's normalisation.

    Returns (model, keep mask).
    """
    return fit_dropping_worst(kind, uv, xy, degree, _ORIGIN, 1.0 if kind == "similarity" else norm,
                              floor=floor, nsig=nsig)


def _assign(pred, tree, tol, k=4):
    """One-to-one greedy assignment of holes (pred) to spots (tree) within tol (per hole;
    negative: not a candidate), closest pairs first."""
    if len(pred) == 0 or float(np.max(tol)) <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    mh, ms, _ = assign(pred, tree, tol, tol_per="pred", rank="distance", k=k)
    return mh, ms


# ---------------------------------------------------------------------------------
# hypotheses by pair voting
# ---------------------------------------------------------------------------------
def _pairs(points, k):
    """Unique unordered nearest-neighbour pairs (i < j) of each point's k neighbours."""
    n = len(points)
    kk = min(k, n - 1)
    if kk < 1:
        return np.zeros((0, 2), dtype=np.int64)
    _, idx = cKDTree(points).query(points, k=kk + 1)
    i = np.repeat(np.arange(n), kk)
    j = idx[:, 1:].ravel()
    ok = j < n
    p = np.column_stack([np.minimum(i[ok], j[ok]), np.maximum(i[ok], j[ok])])
    return np.unique(p, axis=0)


def _hypotheses(uv, xy, s_lo, s_hi, max_rot, bin_px, n_peaks, k_holes=6, k_spots=6):
    """Candidate similarity poses (s, theta, tx, ty, votes) from pair voting."""
    hp = _pairs(uv, k_holes)
    hp = np.vstack([hp, hp[:, ::-1]])                     # both directions of hole pairs
    sp = _pairs(xy, k_spots)
    if len(hp) == 0 or len(sp) == 0:
        return np.zeros((0, 5)), 0
    D = uv[hp[:, 1]] - uv[hp[:, 0]]
    d = xy[sp[:, 1]] - xy[sp[:, 0]]
    LD = np.hypot(*D.T)
    Ld = np.hypot(*d.T)
    aD = np.arctan2(D[:, 1], D[:, 0])
    ad = np.arctan2(d[:, 1], d[:, 0])
    # keep spot pairs whose length can match some hole pair
    okd = (Ld >= LD.min() * s_lo) & (Ld <= LD.max() * s_hi)
    sp, d, Ld, ad = sp[okd], d[okd], Ld[okd], ad[okd]
    if len(sp) == 0:
        return np.zeros((0, 5)), 0
    ratio = Ld[:, None] / LD[None, :]
    dang = (ad[:, None] - aD[None, :] + np.pi) % (2 * np.pi) - np.pi
    ii, qq = np.nonzero((ratio >= s_lo) & (ratio <= s_hi) & (np.abs(dang) <= max_rot))
    if len(ii) == 0:
        return np.zeros((0, 5)), 0
    s = ratio[ii, qq]
    th = dang[ii, qq]
    ua = uv[hp[qq, 0]]
    pa = xy[sp[ii, 0]]
    c, sn = np.cos(th), np.sin(th)
    tx = pa[:, 0] - s * (c * ua[:, 0] - sn * ua[:, 1])
    ty = pa[:, 1] - s * (sn * ua[:, 0] + c * ua[:, 1])
    nvotes = len(s)
    # translation histogram
    ix = np.floor(tx / bin_px).astype(np.int64)
    iy = np.floor(ty / bin_px).astype(np.int64)
    x0, y0 = ix.min() - 1, iy.min() - 1
    nx, ny = ix.max() - x0 + 2, iy.max() - y0 + 2
    flat = (iy - y0) * nx + (ix - x0)
    hist = np.bincount(flat, minlength=nx * ny).reshape(ny, nx).astype(np.float32)
    sm = ndimage.uniform_filter(hist, size=3, mode="constant") * 9.0
    peaks = (sm == ndimage.maximum_filter(sm, size=5, mode="constant")) & (sm > 0)
    py, px = np.nonzero(peaks)
    vals = sm[py, px]
    order = np.argsort(-vals, kind="stable")
    out = []
    chosen = []
    for o in order:
        if len(out) >= n_peaks:
            break
        # non-maximum suppression: plateaus give several equal neighbouring maxima
        if any(abs(px[o] - cx) <= 2 and abs(py[o] - cy) <= 2 for cx, cy in chosen):
            continue
        chosen.append((px[o], py[o]))
        sel = (np.abs(ix - (px[o] + x0)) <= 1) & (np.abs(iy - (py[o] + y0)) <= 1)
        if not np.any(sel):
            continue
        out.append((np.median(s[sel]), np.median(th[sel]), np.median(tx[sel]), np.median(ty[sel]), vals[o]))
    return np.array(out, dtype=float).reshape(-1, 5), nvotes


# ---------------------------------------------------------------------------------
# refinement and scoring of one hypothesis
# ---------------------------------------------------------------------------------
@dataclass
class _Solution:
    hole_idx: np.ndarray
    spot_idx: np.ndarray
    model: PoseModel
    score: float
    n_missing: int
    missing: np.ndarray
    n_in_field: int
    marker_hit: bool
    marker_px: np.ndarray | None
    rms: float
    mirror: bool
    prior_chi2: float


def _robust_sigma(model, uv, xy):
    """Robust per-axis sigma (px) of the residuals of ``model``."""
    r = np.hypot(*(model(uv) - xy).T)
    if len(r) == 0:
        return 0.0
    return robust_sigma(r)


def _refine(hyp, uv, xy, tree, dnn, box, cfg, marker_uv, mirror):
    s, th, tx, ty = hyp[:4]
    A = s * rotation_matrix(th)
    model = PoseModel("similarity", np.array([A[0, 0], A[1, 0], tx, ty]), _ORIGIN, 1.0)
    norm = cfg["norm"]
    loose = np.minimum(cfg["alpha"] * dnn * s, cfg["cap_px"])

    def candidates(pred, tol):
        # holes predicted outside the detector by more than half their tolerance cannot
        # have a spot: leave them out so that a spurious spot near the edge is not taken
        return np.where(inside(pred, box, 0.5 * tol), tol, -1.0)

    mh = ms = np.zeros(0, np.int64)
    keep = None
    # stage A: similarity then affine; first a loose tolerance (a fraction of the hole
    # spacing, for the error of the starting pose far from the pair that proposed it),
    # then one from the residuals of the similarity fit
    tol = loose
    for kind in ("similarity", "similarity", "affine", "affine"):
        pred = model(uv)
        mh, ms = _assign(pred, tree, candidates(pred, tol))
        if len(mh) < 3:
            return None
        if kind == "affine" and len(mh) < 4:
            kind = "similarity"
        model, keep = _robust_fit(kind, uv[mh], xy[ms], 1, norm, floor=cfg["clip_floor_loose"])
        sig = _robust_sigma(model, uv[mh][keep], xy[ms][keep])
        tol = np.minimum(loose, max(cfg["anneal_nsig"] * sig, cfg["anneal_floor_px"]))
    # stage B: polynomial, tolerance from the affine residuals (distortion + noise)
    sig = _robust_sigma(model, uv[mh][keep], xy[ms][keep])
    grow = np.minimum(loose, max(cfg["grow_nsig"] * sig, cfg["grow_floor_px"]))
    for _ in range(2):
        pred = model(uv)
        mh, ms = _assign(pred, tree, candidates(pred, grow))
        n = len(mh)
        if n < 3:
            return None
        deg = cfg["degree"]
        while deg > 1 and n < 2 * n_terms(deg) + 2:
            deg -= 1
        kind = "poly" if deg > 1 else ("affine" if n >= 4 else "similarity")
        model, keep = _robust_fit(kind, uv[mh], xy[ms], deg, norm, floor=cfg["clip_floor_loose"] / 2)
    # stage C: tight tolerance from the polynomial residuals
    sig = _robust_sigma(model, uv[mh][keep], xy[ms][keep])
    tight = np.minimum(grow, max(cfg["tight_nsig"] * sig, cfg["tight_floor_px"]))
    for _ in range(2):
        pred = model(uv)
        mh, ms = _assign(pred, tree, candidates(pred, tight))
        if len(mh) < 3:
            return None
        kind, deg = model.kind, model.degree
        if kind == "poly" and len(mh) < 2 * n_terms(deg) + 2:
            kind, deg = "affine", 1
        model, keep = _robust_fit(kind, uv[mh], xy[ms], deg, norm, floor=cfg["tight_floor_px"] / 2)
    pred = model(uv)
    resid = np.hypot(*(pred[mh] - xy[ms]).T)
    rms = float(np.sqrt(np.mean(resid ** 2))) if len(resid) else np.inf
    in_field = inside(pred, box, -cfg["edge_margin_px"])
    matched = np.zeros(len(uv), bool)
    matched[mh] = True
    missing = np.nonzero(in_field & ~matched)[0]
    marker_hit = False
    marker_px = None
    if marker_uv is not None:
        marker_px = model(marker_uv[None, :])[0]
        if inside(marker_px[None, :], box)[0]:
            dm, _ = tree.query(marker_px)
            marker_hit = bool(dm <= float(np.max(tight)))
        else:
            marker_px = None
    chi2 = 0.0
    if cfg["center_guess"] is not None:
        t0 = model(np.zeros((1, 2)))[0]
        chi2 = float(np.sum(((t0 - cfg["center_guess"]) / cfg["center_sigma"]) ** 2))
    score = (len(mh) - 0.5 * len(missing) - (cfg["marker_penalty"] if marker_hit else 0.0)
             - 0.5 * chi2)
    return _Solution(mh, ms, model, float(score), len(missing), missing, int(in_field.sum()),
                     marker_hit, marker_px, rms, mirror, chi2)


def _converged_already(hyp, uv, xy, solutions, mirror, dnn) -> bool:
    """True if a starting pose already lies on a refined solution (it would converge
    to it): the pose maps that solution's holes onto its spots to within a quarter of
    the smallest hole spacing (median over the holes)."""
    if not solutions:
        return False
    s, th, tx, ty = hyp[:4]
    A = s * rotation_matrix(th)
    lim = 0.25 * float(np.min(dnn))
    for sol in solutions:
        if sol.mirror != mirror:
            continue
        pred = uv[sol.hole_idx] @ A.T + [tx, ty]
        if np.median(np.hypot(*(pred - xy[sol.spot_idx]).T)) < lim:
            return True
    return False


def _same(a: _Solution, b: _Solution) -> bool:
    pa = set(zip(a.hole_idx.tolist(), a.spot_idx.tolist()))
    pb = set(zip(b.hole_idx.tolist(), b.spot_idx.tolist()))
    return len(pa & pb) >= 0.5 * min(len(pa), len(pb))


# ---------------------------------------------------------------------------------
# public entry point
# ---------------------------------------------------------------------------------
def _spot_xy(spots, x_col, y_col):
    if isinstance(spots, Table):
        for c in (x_col, y_col):
            if c not in spots.colnames:
                raise IdentificationError(f"spot table has no column '{c}' (columns: {spots.colnames})")
        xy = np.column_stack([np.asarray(spots[x_col], float), np.asarray(spots[y_col], float)])
        table = Table(spots, copy=True)
    else:
        arr = np.asarray(spots, dtype=float)
        if arr.ndim != 2 or arr.shape[1] < 2:
            raise IdentificationError(f"spots must be a Table with '{x_col}', '{y_col}' or an (N, 2) array, "
                                      f"got shape {arr.shape}")
        xy = arr[:, :2].copy()
        table = Table({x_col: xy[:, 0], y_col: xy[:, 1]})
        if arr.shape[1] > 2:
            table["flux"] = arr[:, 2]
    bad = ~np.all(np.isfinite(xy), axis=1)
    if np.any(bad):
        raise IdentificationError(f"spot positions ('{x_col}', '{y_col}') are not finite in rows "
                                  f"{np.nonzero(bad)[0][:10].tolist()}")
    return xy, table


def identify_spots(spots: Table | ArrayLike, mask: Mask, pixel_scale: float | u.Quantity,
                   mask_scale: float | u.Quantity | None = None, *,
                   detector_shape: tuple[int, int] | None = None,
                   max_rotation: float | u.Quantity = 5 * u.deg, scale_tolerance: float = 0.06,
                   mirror: bool | None = False, center_guess: ArrayLike | u.Quantity | None = None,
                   center_sigma: float | u.Quantity | None = None,
                   fit_degree: int = 3, min_matched: int = 6, min_fraction: float = 0.5,
                   min_spot_fraction: float = 0.25, max_rms: float = 2.0,
                   ambiguity_margin: float = 3.0, n_candidates: int = 10, x_col: str = "x",
                   y_col: str = "y") -> Table:
    """Assign mask holes to detected spots.

    Parameters
    ----------
    spots : astropy Table or array
        Detected spots: a Table with columns ``x_col``, ``y_col`` (0-based pixels; any
        other columns, e.g. ``flux``, are carried along) or an (N, 2) / (N, 3) array
        of x, y (, flux).
    mask : Mask
        The mask table (:func:`astrocal.lab.mask.load_mask`).
    pixel_scale : Quantity
        Nominal pixel scale (mas/pix, or a float in mas); a prior only: the actual
        scale may differ by ``scale_tolerance``.
    mask_scale : Quantity, optional
        Plate scale at the mask (mm/arcsec); default the mask table's own.
    detector_shape : (ny, nx), optional
        Detector size, to know which holes should be visible; default the bounding
        box of the spots.
    max_rotation : Quantity
        Largest rotation of the mask pattern to consider (angle, default 5 deg).
    scale_tolerance : float
        Largest relative deviation of the scale from nominal (default 0.06).
    mirror : bool or None
        ``True`` if the image of the mask is mirrored (x -> -x), ``None`` to try both.
    center_guess, center_sigma : optional
        Expected pixel position (x, y) of the mask origin (e.g. detector centre plus the
        commanded chopper offset divided by the pixel scale) and its 1-sigma
        uncertainty in pixels (default 50 px); a Gaussian prior that breaks ties
        between poses one coarse pitch apart.
    fit_degree : int
        Degree of the polynomial used for the final assignment (absorbs distortion).
    min_matched, min_fraction, min_spot_fraction, max_rms :
        Acceptance: at least ``min_matched`` holes, ``min_fraction`` of the holes
        predicted inside the detector and ``min_spot_fraction`` of the spots must be
        matched, with rms residual of the final fit below ``max_rms`` pixels; the fitted
        scale and rotation must lie within ``scale_tolerance`` and ``max_rotation``.
    ambiguity_margin : float
        The best pose must score this much above any different pose.
    n_candidates : int
        Number of candidate poses taken from the vote histogram (per mirror parity).
    x_col, y_col : str
        Names of the spot position columns (pixels) in a spot Table.

    Returns
    -------
    Table
        The spot table with added columns ``hole_id`` (int, -1 for unmatched spots),
        ``x_pred``, ``y_pred`` (pixel position of the assigned hole predicted by the
        final polynomial fit; NaN if unmatched).  ``meta['identification']`` holds the
        fitted transform and quality measures: ``n_matched``, ``rms_px`` (final fit),
        ``n_unmatched_spots``, ``unmatched_rows``, ``missing_hole_ids`` (predicted in
        the field without a spot), ``similarity`` (offset_px, scale, rotation_deg,
        pixel_scale_mas, mirror, rms_px), ``affine`` (matrix_px_per_arcsec, offset_px,
        rms_px), ``marker`` (predicted position and whether it is clear), ``score``,
        ``runner_up_score``.

    Raises
    ------
    IdentificationError
        When no pose is acceptable (wrong mask, wrong scale, too few spots) or when two
        different poses are equally good (ambiguous); the message says what was tried.
    """
    xy, table = _spot_xy(spots, x_col, y_col)
    geo = _geometry(xy, mask, pixel_scale, mask_scale, detector_shape=detector_shape,
                    max_rotation=max_rotation, scale_tolerance=scale_tolerance,
                    center_guess=center_guess, center_sigma=center_sigma, fit_degree=fit_degree)
    # steps 1 and 2: candidate poses by pair voting, each refined and scored
    solutions, n_votes, n_hyp, n_out_of_bounds = _search(xy, geo, mirror, n_candidates)
    n_spots = len(xy)
    tried = (f"mask '{mask.name}' ({len(mask)} holes, {mask.source}), {n_spots} spots, nominal "
             f"pixel scale {geo.pix_mas:g} mas/px, mask scale {geo.scale_mm:g} mm/arcsec, scale within "
             f"+-{scale_tolerance:.0%}, rotation within +-{math.degrees(geo.max_rot):g} deg, mirror="
             f"{'both' if mirror is None else bool(mirror)}: {n_votes} pair votes, {n_hyp} candidate poses")
    if n_out_of_bounds:
        tried += f" ({n_out_of_bounds} refined to a scale or rotation out of bounds)"
    # step 3: the best pose, acceptance and uniqueness
    best, runner = _choose(solutions, n_spots, tried, min_matched=min_matched, min_fraction=min_fraction,
                           min_spot_fraction=min_spot_fraction, max_rms=max_rms,
                           ambiguity_margin=ambiguity_margin)
    return _output(table, xy, mask, geo, best, runner, n_hyp)


@dataclass
class _Geometry:
    """The mask in nominal pixels, the detector box and the search settings of one
    identification."""

    pix_mas: float
    scale_mm: float
    hole_uv0: np.ndarray        # (n_holes, 2) nominal px, not mirrored
    marker_uv0: np.ndarray | None
    dnn: np.ndarray             # each hole's distance to its nearest neighbour, nominal px
    max_rot: float              # rad
    s_lo: float
    s_hi: float
    box: tuple
    cfg: dict
    bin_px: float


def _geometry(xy, mask, pixel_scale, mask_scale, *, detector_shape, max_rotation, scale_tolerance,
              center_guess, center_sigma, fit_degree):
    """Validate the inputs; the mask in nominal pixels, the detector box, the settings."""
    n_spots = len(xy)
    pix_mas = pixel_scale_mas(pixel_scale)
    scale = mask.mask_scale if mask_scale is None else mask_scale
    if scale is None:
        raise IdentificationError(f"{mask.source}: no plate scale at the mask (meta "
                                  "'mask_scale_mm_per_arcsec' missing and mask_scale not given)")
    scale_mm = as_mm_per_arcsec(scale, what=f"{mask.source}: mask_scale")
    if n_spots < 3:
        raise IdentificationError(f"only {n_spots} spot(s) given; need at least 3 to identify "
                                  f"mask '{mask.name}'")
    if len(mask) < 3:
        raise IdentificationError(f"{mask.source}: mask '{mask.name}' has {len(mask)} hole(s); "
                                  "identification needs at least 3")
    hole_uv0 = mask.xy_mm / scale_mm * 1e3 / pix_mas          # nominal pixels
    marker_mm = mask.orientation_marker_mm
    marker_uv0 = None if marker_mm is None else marker_mm / scale_mm * 1e3 / pix_mas
    dnn = cKDTree(hole_uv0).query(hole_uv0, k=2)[0][:, 1] if len(hole_uv0) > 1 else np.array([np.inf])
    max_rot = float(u.Quantity(max_rotation, u.deg).to_value(u.rad))
    s_lo, s_hi = 1.0 - scale_tolerance, 1.0 + scale_tolerance

    if detector_shape is None:
        box = (xy[:, 0].min() - 0.5, xy[:, 0].max() + 0.5, xy[:, 1].min() - 0.5, xy[:, 1].max() + 0.5)
    else:
        ny, nx = (int(v) for v in detector_shape)
        box = (-0.5, nx - 0.5, -0.5, ny - 0.5)
    if center_guess is not None:
        cg = np.asarray(u.Quantity(center_guess).value if isinstance(center_guess, u.Quantity)
                        else center_guess, dtype=float).reshape(2)
        csig = float(u.Quantity(center_sigma).value if isinstance(center_sigma, u.Quantity)
                     else (center_sigma if center_sigma is not None else 50.0))
    else:
        cg, csig = None, None
    cfg = dict(alpha=0.35, cap_px=150.0, degree=int(fit_degree), clip_floor_loose=3.0,
               anneal_nsig=8.0, anneal_floor_px=20.0, grow_nsig=6.0, grow_floor_px=6.0, tight_nsig=6.0, tight_floor_px=3.0,
               edge_margin_px=3.0, marker_penalty=5.0,
               norm=max(float(np.max(np.abs(hole_uv0))), 1.0),
               center_guess=cg, center_sigma=csig)
    bin_px = max(0.25 * float(np.min(dnn)) * s_lo, 1.0)
    return _Geometry(pix_mas, scale_mm, hole_uv0, marker_uv0, dnn, max_rot, s_lo, s_hi, box, cfg, bin_px)


def _search(xy, geo, mirror, n_candidates):
    """Steps 1 and 2 for each parity: candidate poses by pair voting, refined and scored;
    refined poses outside the scale and rotation bounds are counted, not kept."""
    tree = cKDTree(xy)
    parities = [False, True] if mirror is None else [bool(mirror)]
    solutions: list[_Solution] = []
    n_votes = 0
    n_hyp = 0
    n_out_of_bounds = 0
    for par in parities:
        uv = geo.hole_uv0 * ([-1.0, 1.0] if par else [1.0, 1.0])
        muv = None if geo.marker_uv0 is None else geo.marker_uv0 * ([-1.0, 1.0] if par else [1.0, 1.0])
        hyps, nv = _hypotheses(uv, xy, geo.s_lo, geo.s_hi, geo.max_rot, geo.bin_px, n_candidates)
        n_votes += nv
        n_hyp += len(hyps)
        for h in hyps:
            if _converged_already(h, uv, xy, solutions, par, geo.dnn):
                continue
            sol = _refine(h, uv, xy, tree, geo.dnn, geo.box, geo.cfg, muv, par)
            if sol is None:
                continue
            # the refined pose must respect the same scale and rotation bounds
            sim = _fit("similarity", uv[sol.hole_idx], xy[sol.spot_idx])
            a, b = sim.coef[:2]
            if (geo.s_lo <= math.hypot(a, b) <= geo.s_hi) and abs(math.atan2(b, a)) <= geo.max_rot:
                solutions.append(sol)
            else:
                n_out_of_bounds += 1
    return solutions, n_votes, n_hyp, n_out_of_bounds


def _choose(solutions, n_spots, tried, *, min_matched, min_fraction, min_spot_fraction, max_rms,
            ambiguity_margin):
    """Step 3: the best-scoring pose and the best different one; :class:`IdentificationError`
    when none is acceptable, when the best puts a spot on the orientation marker, or when
    the runner-up scores within ``ambiguity_margin``."""
    if not solutions:
        raise IdentificationError(f"no pose of the mask matches the spots; tried {tried}; "
                                  "check the mask table, the pixel scale and the mask plate scale")
    # poses whose final fit is poor are not candidates (they would otherwise mask a good
    # pose with fewer holes); keep the best poor one for the error message
    solutions.sort(key=lambda sol: -sol.score)
    good = [sol for sol in solutions if sol.rms <= max_rms]
    if good:
        solutions = good
    best = solutions[0]
    need = max(int(min_matched), int(math.ceil(min_fraction * best.n_in_field)),
               int(math.ceil(min_spot_fraction * n_spots)))
    if len(best.hole_idx) < need or best.rms > max_rms:
        raise IdentificationError(
            f"no acceptable pose: the best matches {len(best.hole_idx)} holes of "
            f"{best.n_in_field} predicted in the field and of {n_spots} spots (need {need}) "
            f"with rms {best.rms:.2f} px (max {max_rms}); tried {tried}; is this the right "
            "mask table and pixel scale?")
    if best.marker_hit:
        raise IdentificationError(
            f"the best pose puts the mask's orientation marker (a position without a hole) on a "
            f"detected spot at pixel ({best.marker_px[0]:.1f}, {best.marker_px[1]:.1f}): the pose "
            f"is probably wrong (mirrored image? try mirror=None) or the mask table is not the "
            f"mask in the beam; tried {tried}")
    runner = next((sol for sol in solutions[1:] if not _same(sol, best)), None)
    if runner is not None and best.score - runner.score < ambiguity_margin:
        ta = best.model(np.zeros((1, 2)))[0]
        tb = runner.model(np.zeros((1, 2)))[0]
        raise IdentificationError(
            f"ambiguous identification: two poses score {best.score:.1f} and {runner.score:.1f} "
            f"(mask origin at pixel ({ta[0]:.1f}, {ta[1]:.1f}) or ({tb[0]:.1f}, {tb[1]:.1f})); "
            f"the orientation marker is {'not in the field' if best.marker_px is None else 'not decisive'}; "
            f"pass center_guess/center_sigma (from the chopper offset) to break the tie; tried {tried}")
    return best, runner


def _output(table, xy, mask, geo, best, runner, n_hyp):
    """The spot table with the hole ids and predicted positions, and the identification's
    meta (the fitted transforms and quality measures)."""
    n_spots = len(xy)
    pix_mas, scale_mm = geo.pix_mas, geo.scale_mm
    uv = geo.hole_uv0 * ([-1.0, 1.0] if best.mirror else [1.0, 1.0])
    hole_ids = mask.hole_id
    col = np.full(n_spots, -1, dtype=np.int64)
    col[best.spot_idx] = hole_ids[best.hole_idx]
    pred = best.model(uv)
    xp = np.full(n_spots, np.nan)
    yp = np.full(n_spots, np.nan)
    xp[best.spot_idx] = pred[best.hole_idx, 0]
    yp[best.spot_idx] = pred[best.hole_idx, 1]
    table["hole_id"] = col
    table["x_pred"] = xp
    table["y_pred"] = yp
    table["x_pred"].unit = table["y_pred"].unit = None
    table["hole_id"].description = "identified mask hole (-1: not a mask hole)"
    table["x_pred"].description = "hole position predicted by the final fit (0-based px)"
    table["y_pred"].description = "hole position predicted by the final fit (0-based px)"

    uvm, xym = uv[best.hole_idx], xy[best.spot_idx]
    sim = _fit("similarity", uvm, xym)
    a, b, tx, ty = sim.coef
    s_fit = math.hypot(a, b)
    rms_sim = float(np.sqrt(np.mean(np.sum((sim(uvm) - xym) ** 2, axis=1))))
    # affine in arcsec units: p = t + A_arcsec @ (mask arcsec, mirrored if so)
    aff = _fit("affine", uvm, xym) if len(uvm) >= 4 else None
    per_arcsec = 1e3 / pix_mas
    meta = {
        "mask": mask.name,
        "mask_source": mask.source,
        "n_spots": int(n_spots),
        "n_matched": int(len(best.hole_idx)),
        "n_unmatched_spots": int(n_spots - len(best.hole_idx)),
        "unmatched_rows": np.setdiff1d(np.arange(n_spots), best.spot_idx).tolist(),
        "n_holes_predicted_in_field": int(best.n_in_field),
        "missing_hole_ids": hole_ids[best.missing].tolist(),
        "rms_px": best.rms,
        "final_model": f"{best.model.kind} degree {best.model.degree}",
        "similarity": {
            "offset_px": [float(tx), float(ty)],
            "scale": s_fit,
            "rotation_deg": math.degrees(math.atan2(b, a)),
            "pixel_scale_mas": pix_mas / s_fit,
            "mirror": bool(best.mirror),
            "rms_px": rms_sim,
            "definition": "p = offset + scale * R(rotation) * M * u, u = mask position in nominal "
                          "pixels (arcsec * 1000 / nominal pixel scale), M = diag(-1, 1) if mirror",
        },
        "marker": None if best.marker_px is None else {
            "predicted_px": [float(best.marker_px[0]), float(best.marker_px[1])],
            "clear": not best.marker_hit,
        },
        "score": best.score,
        "runner_up_score": None if runner is None else runner.score,
        "n_candidate_poses": int(n_hyp),
        "nominal_pixel_scale_mas": pix_mas,
        "mask_scale_mm_per_arcsec": scale_mm,
    }
    if aff is not None:
        A, t = aff.affine_params()
        rms_aff = float(np.sqrt(np.mean(np.sum((aff(uvm) - xym) ** 2, axis=1))))
        Aas = A * per_arcsec
        if best.mirror:
            Aas = Aas @ np.diag([-1.0, 1.0])
        meta["affine"] = {
            "matrix_px_per_arcsec": Aas.tolist(),
            "offset_px": [float(t[0]), float(t[1])],
            "rms_px": rms_aff,
            "definition": "p = offset + matrix @ (x_arcsec, y_arcsec) of the hole in the mask",
        }
    table.meta["identification"] = meta
    return table
