"""Refinement of a star-match pose (step 3 of :func:`astrocal.sky.match.match_stars`).

Each candidate pose is refined by :class:`Refiner` by alternating one-to-one
nearest-neighbour assignment (:func:`astrocal.pointmatch.assign`) and a robust
least-squares fit (:func:`astrocal.pointmatch.fit_clipped`: similarity, affine, then a
polynomial that absorbs the distortion), with a tolerance shrinking from twice the
search tolerance to a multiple of the residual scatter (or, if larger, the radius at
which chance pairs would stay rare, capped at the blend radius).  Among candidates within
the tolerance the assignment prefers the closest and, with fluxes and magnitudes, the one
with the consistent flux (:func:`flux_zero_point`, :func:`flux_cost`).  The significance
of the refined similarity (:func:`astrocal.sky.match_significance.significance`) is
computed on the way, and a hopeless pose is given up early.

Stars are in detector pixels (0-based), reference sources in nominal pixels
(:class:`~astrocal.sky.match_blends.Sources`; the parity is applied here); poses are
``p = t + s R(theta) c``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.spatial import cKDTree

from ..pointmatch import PoseModel, assign, fit_clipped, inside, min_points, rotation_matrix
from .match_blends import Sources
from .match_significance import significance

__all__ = ["RefinedPose", "Refiner", "flux_cost", "flux_zero_point", "near_solution", "same_pose"]


@dataclass
class RefinedPose:
    """A refined pose and its pairs.

    ``src``, ``star``: matched source and star indices; ``model`` the final fit (affine or
    polynomial), ``sim``/``affine`` the similarity and affine fits to the same pairs;
    ``sigma_px`` the robust per-axis scatter, ``tol_px`` the final matching radius
    (median over stars); ``n_sig``, ``n_src_in``, ``log10_fap``, ``log10_tail``,
    ``expected_chance``: the significance test of the similarity; ``start``: the pose
    ``(s, theta, t)`` it started from; the flux zero point and scatter (mag), flux
    outliers and the (source, star) pairs rejected for their flux.
    """

    parity: int
    src: np.ndarray
    star: np.ndarray
    model: PoseModel
    sim: PoseModel
    affine: PoseModel | None
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


class Refiner:
    """Refines candidate poses of one star list against one reference.

    Parameters
    ----------
    xy : np.ndarray
        (N, 2) star positions, px.
    sig_star : np.ndarray
        (N,) star position errors, px (0 when unknown).
    mu : np.ndarray or None
        (N,) star instrumental magnitudes (``-2.5 log10 flux``).
    star_crowded : np.ndarray
        (N,) bool, stars with another star within the blend radius (not fitted).
    sources : Sources
        The reference sources.
    box : tuple of float
        Detector ``(xmin, xmax, ymin, ymax)``, px.
    cfg : dict
        ``tolerance_px``, ``min_tolerance_px``, ``final_nsigma``, ``degree``,
        ``anneal_nsig``, ``min_matched``, ``log10_max_fap``, ``early_exit_margin``,
        ``flux_check``, ``flux_nsigma``, ``flux_sigma_floor``, ``max_false_pairs``,
        ``blend_radius_px`` (see :func:`astrocal.sky.match.match_stars`).
    """

    def __init__(self, xy: np.ndarray, sig_star: np.ndarray, mu: np.ndarray | None,
                 star_crowded: np.ndarray, sources: Sources, box: tuple, cfg: dict) -> None:
        self.xy = xy
        self.sig_star = sig_star
        self.mu = mu
        self.tree = cKDTree(xy)
        self.crowded = star_crowded
        self.S = sources
        self.box = box
        self.cfg = cfg
        self.in_box = inside(xy, box)

    def _chance_radius(self, pred, src, star):
        """Radius (px) within which the stars left unmatched would make, by chance, at most
        ``max_false_pairs`` pairs with the sources left unmatched (expected number)."""
        area = (self.box[1] - self.box[0]) * (self.box[3] - self.box[2])
        in_src = inside(pred, self.box)
        in_src[src] = False
        in_star = self.in_box.copy()
        in_star[star] = False
        n_src, n_star = max(int(in_src.sum()), 1), max(int(in_star.sum()), 1)
        r = math.sqrt(self.cfg["max_false_pairs"] * area / (math.pi * n_src * n_star))
        # not beyond the blend radius: PSF artefacts (rings, spikes) of a star whose own
        # detection is missing sit about there and are not uniformly distributed
        return min(r, self.cfg["blend_radius_px"])

    def _cand(self, pred, tol):
        return inside(pred, self.box, 0.5 * tol)

    def refine(self, parity: int, s: float, th: float, t: np.ndarray, log10_trials: float) -> RefinedPose | None:
        """Refine one candidate pose.

        Parameters
        ----------
        parity : int
            1 or -1 (reference x flipped).
        s, th, t :
            The starting pose ``p = t + s R(th) c``: scale, rotation (rad), translation
            (px).
        log10_trials : float
            log10 of the number of independent poses searched (for the significance).

        Returns
        -------
        RefinedPose or None
            None when fewer than ``min_matched`` stars match along the way; a hopeless
            pose (false-alarm probability far above the limit) is returned early, with its
            significance, for the error message.
        """
        cfg = self.cfg
        c = self.S.c * [float(parity), 1.0]
        xy = self.xy
        use_src = ~self.S.is_blend
        model = PoseModel.from_pose(s, th, t)
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
            src, star, _ = assign(pred, self.tree, tol, candidates=self._cand(pred, tol))
            if len(src) < cfg["min_matched"]:
                return None
            use = use_src[src] & ~self.crowded[star]
            res = fit_clipped(kind, c[src], xy[star], use, floor=max(floor, 1.0) if kind == "similarity" else floor)
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
                src_s, _, _ = assign(pred, self.tree, tol_max, candidates=cand)
                n_sig = len(src_s)
                n_src_in = int(np.count_nonzero(inside(pred, self.box)))
                area = (self.box[1] - self.box[0]) * (self.box[3] - self.box[2])
                n_stars_in = int(np.count_nonzero(inside(xy, self.box)))
                lfap, ltail, expct = significance(n_sig, n_stars_in, n_src_in, area, tol_max,
                                                   log10_trials)
                if lfap > cfg["log10_max_fap"] + cfg["early_exit_margin"]:
                    # hopeless: keep only for the error message
                    return RefinedPose(parity, src, star, model, sim, None, sigma, tol, n_sig,
                                     n_src_in, lfap, ltail, expct, (s, th, t))
            tol = float(np.clip(cfg["anneal_nsig"] * sigma, max(floor, 2.0), tol_max))
        # polynomial stages (absorb the distortion)
        for _ in range(3):
            pred = model(c)
            src, star, _ = assign(pred, self.tree, tol, candidates=self._cand(pred, tol), extra=self.S.extent)
            use = use_src[src] & ~self.crowded[star]
            deg = cfg["degree"]
            while deg > 1 and use.sum() < min_points("poly", deg):
                deg -= 1
            kind = "affine" if deg == 1 else "poly"
            res = fit_clipped(kind, c[src], xy[star], use, degree=deg, floor=floor)
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
            src, star, _ = assign(pred, self.tree, tol_star, candidates=self._cand(pred, float(np.max(tol_star))),
                                   extra=self.S.extent)
            zp, fsig = flux_zero_point(mag[src], self.mu[star])
            if zp is not None:
                cost_extra = flux_cost(mag, self.mu, zp, max(fsig, cfg["flux_sigma_floor"]),
                                        cfg["flux_nsigma"])
        src, star, _ = assign(pred, self.tree, tol_star, candidates=self._cand(pred, float(np.max(tol_star))),
                               cost_extra=cost_extra, extra=self.S.extent)
        fl_out = np.zeros(len(src), bool)
        rejected = (np.zeros(0, np.int64), np.zeros(0, np.int64))
        if zp is not None:
            zp, fsig = flux_zero_point(mag[src], self.mu[star])
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
        while deg > 1 and use.sum() < min_points("poly", deg):
            deg -= 1
        res = fit_clipped("affine" if deg == 1 else "poly", c[src], xy[star], use, degree=deg,
                          nsig=cfg["final_nsigma"], floor=floor)
        if res is not None:
            model, keep, sigma = res
        r_sim = fit_clipped("similarity", c[src], xy[star], use, nsig=cfg["final_nsigma"], floor=1.0)
        if r_sim is not None:
            sim = r_sim[0]
        r_aff = fit_clipped("affine", c[src], xy[star], use, nsig=cfg["final_nsigma"], floor=1.0)
        affine = r_aff[0] if r_aff is not None else None
        return RefinedPose(parity, src, star, model, sim, affine, sigma, float(np.median(tol_star)),
                         n_sig, n_src_in, lfap, ltail, expct, (s, th, t), zp, fsig, fl_out, rejected)


def flux_cost(mag: np.ndarray, mu: np.ndarray, zp: float, sigma: float,
              nsig: float) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Assignment cost of the flux mismatch: 1 at ``nsig`` sigma (0 without a flux).

    Parameters
    ----------
    mag : np.ndarray
        (K,) source magnitudes.
    mu : np.ndarray
        (N,) star instrumental magnitudes.
    zp : float
        Zero point of ``mag - mu``, mag.
    sigma : float
        Scatter of ``mag - mu``, mag.
    nsig : float
        Mismatch (in sigma) that costs 1.

    Returns
    -------
    callable
        ``cost(src, star)`` of index arrays: ``((mag - mu - zp) / (nsig sigma))^2``,
        0 where not finite.
    """
    def cost(src, star):
        dm = mag[src] - mu[star] - zp
        return np.where(np.isfinite(dm), (dm / (nsig * sigma)) ** 2, 0.0)
    return cost


def flux_zero_point(mag: np.ndarray, mu: np.ndarray) -> tuple[float | None, float | None]:
    """Robust zero point and scatter of ``mag - mu`` over its finite values.

    Parameters
    ----------
    mag : np.ndarray
        Reference magnitudes of the pairs.
    mu : np.ndarray
        Instrumental magnitudes of their stars.

    Returns
    -------
    zp : float or None
        Median of ``mag - mu``, mag (None with fewer than 5 finite values).
    sigma : float or None
        1.4826 times the median absolute deviation, mag.
    """
    dm = mag - mu
    dm = dm[np.isfinite(dm)]
    if len(dm) < 5:
        return None, None
    zp = float(np.median(dm))
    sig = float(1.4826 * np.median(np.abs(dm - zp)))
    return zp, sig


def near_solution(sol: RefinedPose, parity: int, s: float, th: float, t: np.ndarray, sources: Sources,
                  tol: float) -> bool:
    """True if the pose (s, th, t) predicts a refined solution's sources where it puts them.

    Parameters
    ----------
    sol : RefinedPose
        A refined solution.
    parity : int
        The pose's parity.
    s, th, t :
        The pose ``p = t + s R(th) c``: scale, rotation (rad), translation (px).
    sources : Sources
        The reference sources.
    tol : float
        Matching tolerance, px: the median distance must be below ``2 tol``.

    Returns
    -------
    bool
        True when refining the pose would find the solution again.
    """
    if sol.parity != parity or len(sol.src) == 0:
        return False
    c = sources.c[sol.src] * [float(parity), 1.0]
    p = t + s * c @ rotation_matrix(th).T
    return float(np.median(np.hypot(*(sol.sim(c) - p).T))) < 2.0 * tol


def same_pose(a: RefinedPose, b: RefinedPose, sources: Sources, tol: float) -> bool:
    """True if b's pose predicts a's matched sources where a puts them (same solution).

    Parameters
    ----------
    a, b : RefinedPose
        Two refined solutions.
    sources : Sources
        The reference sources.
    tol : float
        Largest median distance (px) of the two similarity predictions.

    Returns
    -------
    bool
        True for the same pose (same parity, median distance below ``tol``).
    """
    if a.parity != b.parity:
        return False
    c = sources.c[a.src] * [float(a.parity), 1.0]
    return float(np.median(np.hypot(*(a.sim(c) - b.sim(c)).T))) < tol
