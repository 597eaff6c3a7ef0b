"""Pose candidates for star matching by voting (steps 1 and 2 of :func:`astrocal.sky.match.match_stars`).

1. *Rotation and scale by pair voting* (:func:`rotation_peaks`): pairs of stars within a
   separation range (:func:`pairs_within`) are compared with reference pairs whose length
   is compatible with the scale range; each compatible combination votes for the
   rotation (difference of the pair directions) and scale (ratio of lengths) in a 2-D
   histogram, optionally only when the magnitude differences of the two pairs agree.
2. *Translation by cross-correlation* (:func:`translation_peaks`): for a given rotation
   and scale every (star, reference star) combination votes for the translation; the
   strongest peaks of the 2-D translation histogram are candidate poses.

Stars are in detector pixels (0-based), reference stars in nominal pixels with the
parity applied; a pose maps the reference as ``p = t + s R(theta) c``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from ..pointmatch import rotation_matrix

__all__ = ["VoteConfig", "pairs_within", "rotation_peaks", "top_peaks", "translation_peaks"]


def pairs_within(p: np.ndarray, rmin: float,
                 rmax: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Unordered pairs (i < j) with ``rmin <= |p_j - p_i| <= rmax``.

    Parameters
    ----------
    p : np.ndarray
        (N, 2) positions, px.
    rmin, rmax : float
        Separation range, px.

    Returns
    -------
    i, j : np.ndarray
        The two points of each pair (int64).
    length : np.ndarray
        Their separations, px.
    angle : np.ndarray
        Direction of ``p_j - p_i`` (rad, from +x towards +y).
    """
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
class VoteConfig:
    """What the rotation-scale vote searches and its histogram's resolution.

    ``s_lo``, ``s_hi``: scale range (dimensionless); ``rot``: ``(centre, half width)`` of
    the rotations (rad) or None (any); ``dm_tol``: largest difference (mag) between the
    magnitude differences of a star pair and a reference pair, or None (no magnitude
    check); ``w_theta`` (rad) and ``w_lns`` (in log scale): bin widths; ``max_chunk``:
    votes processed at once.
    """

    s_lo: float
    s_hi: float
    rot: tuple | None
    dm_tol: float | None
    w_theta: float = math.radians(0.5)
    w_lns: float = 0.005
    max_chunk: int = 2_000_000


def rotation_peaks(xy: np.ndarray, mu: np.ndarray | None, c: np.ndarray, mag: np.ndarray | None,
                   rmin: float, rmax: float, cfg: VoteConfig,
                   n_peaks: int) -> tuple[list[tuple[float, float, float, float]], int]:
    """Candidate rotations and scales from pair voting.

    Votes are counted in bins of ``cfg.w_theta`` by ``cfg.w_lns``, smoothed over 3x3 bins
    (wrapping in angle); each of the strongest local maxima (at least 3 bins apart) is
    refined to the vote-weighted mean of its 3x3 neighbourhood.

    Parameters
    ----------
    xy : np.ndarray
        (N, 2) star positions, px.
    mu : np.ndarray or None
        (N,) star instrumental magnitudes (``-2.5 log10 flux``).
    c : np.ndarray
        (M, 2) reference positions, nominal px, parity applied.
    mag : np.ndarray or None
        (M,) reference magnitudes.
    rmin, rmax : float
        Separation range of the star pairs, px (the reference pairs' is divided by the
        scale range).
    cfg : VoteConfig
        Search range and resolution.
    n_peaks : int
        Largest number of candidates.

    Returns
    -------
    peaks : list of tuple
        ``(scale, theta (rad, in [0, 2 pi)), votes, peak_snr)``, strongest first;
        ``peak_snr`` is the smoothed peak above the median over the Poisson noise.
    n_votes : int
        The number of votes cast.
    """
    i, j, L, a = pairs_within(xy, rmin, rmax)
    k, l, Lc, ac = pairs_within(c, rmin / cfg.s_hi, rmax / cfg.s_lo)
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


def top_peaks(sm: np.ndarray, n_peaks: int, sep: int = 2, n_look: int = 64) -> list[tuple[int, int]]:
    """The highest positive bins of a 2-D array, at least ``sep + 1`` bins apart.

    Parameters
    ----------
    sm : np.ndarray
        2-D array (a smoothed histogram).
    n_peaks : int
        Largest number of peaks.
    sep : int
        A bin within ``sep`` bins (in both axes) of a higher peak is not a peak.
    n_look : int
        Only the ``n_look`` highest bins are looked at.

    Returns
    -------
    list of (int, int)
        Indices ``(iy, ix)``, highest first.
    """
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


def translation_peaks(xy: np.ndarray, c: np.ndarray, s: float, th: float, bin_px: float, n_peaks: int,
                      origin: np.ndarray, max_offset_px: float | None,
                      max_bins: int = 250_000) -> list[tuple[float, float, float]]:
    """Candidate translations for a given scale and rotation.

    Every (star, reference) combination votes for the translation that superposes them;
    votes are counted in bins of ``bin_px`` summed over 2x2 bins, and each peak is
    refined to the median of the votes within its 2x2 window, twice.

    Parameters
    ----------
    xy : np.ndarray
        (N, 2) star positions, px.
    c : np.ndarray
        (M, 2) reference positions, nominal px, parity applied.
    s : float
        Scale (dimensionless).
    th : float
        Rotation, rad.
    bin_px : float
        Bin width (px; widened so that the histogram has at most ``max_bins`` bins).
    n_peaks : int
        Largest number of candidates.
    origin : np.ndarray
        (2,) expected pixel position of the reference origin.
    max_offset_px : float or None
        Largest distance (px) of the translation from ``origin``; None: any.
    max_bins : int
        Largest number of histogram bins.

    Returns
    -------
    list of tuple
        ``(tx, ty, votes)``: translations (px) and the votes in their 2x2 window,
        strongest first.
    """
    q = s * c @ rotation_matrix(th).T
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
    for py, px in top_peaks(sm, n_peaks, sep=1):
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
