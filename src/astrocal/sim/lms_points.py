"""Measured LMS tables drawn directly from a truth geometry (no images): fast fit validation.

:func:`simulate_lms_points` makes what :mod:`astrocal.lms.measure` would measure on a campaign of
``astrocal simulate lms`` — laser spots, pinhole-trace rows and slice-edge rows — from an
as-built :class:`~astrocal.lms.LmsGeometry` drawn from the prior
(:func:`~astrocal.sim.lms_truth.draw_lms_geometry`, or given), with Gaussian measurement noise
of stated sigmas, chopper errors per exposure (along the slice: the spots and traces move by
``d(col, row)/dxi``; across: the spots move along the dispersion by ``across_px_per_mas`` per
mas) and the commanded offsets in the tables, as the measurement gives them. It skips the
images, the PSF and the centroiding: it tests the fit's statistics, not the measurement.

The tables have the columns :func:`astrocal.lms.fit.fit_lms` reads (``setting``, ``exposure``,
``slice``, ``xi_arcsec``, ``det``, ``col``, ``row``, ``cov`` / ``sigma_row``,
``lam_nominal_um``, ``flags``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from astropy.table import Table

from ..lab.mask import load_mask, mask_path
from ..lms import FieldOrientation, Hyperparameters, LmsGeometry
from ..lms.fit import ExposureTerms, LmsFit
from ..lms.traces import SLICE_HALF_LENGTH_ARCSEC
from .lms_truth import chopper_offsets, draw_lms_geometry, holes_in_field

__all__ = ["LmsPointsCampaign", "simulate_lms_points", "compare_with_truth"]


@dataclass
class LmsPointsCampaign:
    """``data`` (the fit's tables), ``terms``, ``truth`` geometry, the true per-exposure chopper
    errors ``dxi_mas``/``deta_mas`` (by exposure index), ``across_px_per_mas``; ``hole_ids``
    (N,) the mask's holes and ``hole_errors_um`` (N, 2) their true manufacturing errors [um,
    mask frame] (zeros without)."""

    data: dict
    terms: ExposureTerms
    truth: LmsGeometry
    dxi_mas: np.ndarray
    deta_mas: np.ndarray
    across_px_per_mas: float
    hole_ids: np.ndarray = None
    hole_errors_um: np.ndarray = None


def _curves_points(truth, e, slices, xis, cols, det_ids=(1, 2, 3, 4)):
    """Where the true curves ``(slices[i], xis[i])`` cross the given columns of each chip: per curve
    a list of (det, col, row, lam, slope), ``slope`` = d row / d col along the curve. All curves'
    points are evaluated together (the truth's forward map and Newton's crossings act per point)."""
    lo, hi = truth.wavelength_range(e)
    lam = np.linspace(lo, hi, 600)
    n = len(slices)
    p = truth.forward(np.repeat(np.asarray(slices), lam.size), np.repeat(np.asarray(xis, float), lam.size),
                      np.tile(lam, n), e, on_gap="mask")
    pdet, pcol = p.det.reshape(n, lam.size), p.col.reshape(n, lam.size)
    starts = []                                     # (curve, det, columns inside, lam0)
    for i in range(n):
        for d in det_ids:
            on = pdet[i] == d
            if on.sum() < 4:
                continue
            c, l = pcol[i][on], lam[on]
            o = np.argsort(c)
            inside = (cols > c[o][0] + 2) & (cols < c[o][-1] - 2)
            if not inside.any():
                continue
            starts.append((i, d, cols[inside], np.interp(cols[inside], c[o], l[o])))
    out = [[] for _ in range(n)]
    if not starts:
        return out
    size = [len(c) for _, _, c, _ in starts]
    ss = np.concatenate([np.full(k, slices[i]) for (i, _, _, _), k in zip(starts, size)])
    xx = np.concatenate([np.full(k, float(xis[i])) for (i, _, _, _), k in zip(starts, size)])
    dd = np.concatenate([np.full(k, d) for (_, d, _, _), k in zip(starts, size)])
    cc0 = np.concatenate([c for _, _, c, _ in starts])
    lam0 = np.concatenate([l for _, _, _, l in starts])
    for _ in range(6):       # exact crossing by Newton on the truth
        cc, rr, jac = truth.chip_position(ss, xx, lam0, e, dd)
        lam0 = lam0 - (cc - cc0) / jac[:, 0, 1]
    slope = jac[:, 1, 1] / jac[:, 0, 1]
    for (i, d, c, _), part in zip(starts, np.split(np.arange(len(dd)), np.cumsum(size)[:-1])):
        keep = (rr[part] > 40) & (rr[part] < 2007)
        out[i].append((dd[part][keep], c[keep], rr[part][keep], lam0[part][keep], slope[part][keep]))
    return out


def simulate_lms_points(settings_um: Sequence[float] = (4.73,), *, seed: int = 0, n_offsets: int = 3,
                        max_along_arcsec: float = 0.08, max_across_slices: int = 3,
                        lines_um: Sequence[float] = (4.70, 4.74, 4.76), offset_sigma_mas: float = 1.0,
                        across_px_per_mas: float = 0.035, spot_sigma_px: float = 0.015,
                        trace_sigma_px: float = 0.02, edge_sigma_px: float = 0.004, grid_all_offsets: bool = False,
                        step_cols: int = 64, degree: int = 2, hyper: Hyperparameters = Hyperparameters(),
                        truth: LmsGeometry | None = None, extra_row_px: Callable | None = None,
                        orientation: FieldOrientation = FieldOrientation(), mask: str = "metis_wcu_fp_mask5",
                        edge_margin_arcsec: float = 0.1, hole_error_um: float = 0.0,
                        hole_errors_um: np.ndarray | None = None) -> LmsPointsCampaign:
    """Draw an LMS campaign's measured tables from a truth geometry.

    Parameters
    ----------
    settings_um : central wavelengths [um]; lines_um the laser lines lit (those in a setting's
        range are used there).
    truth : LmsGeometry, optional
        The as-built geometry (default: drawn from the prior with ``hyper`` and ``seed``).
    extra_row_px, extra_col_px :
        ``extra_row_px(slice, xi, lam) -> (dcol, drow)`` [px] added to every true position: a
        deviation the model's polynomials do not hold (None: none).
    across_px_per_mas : how far a spot moves along the dispersion per mas of chopper error across
        the slice (the truth; the fit has its own prior).
    hole_error_um, hole_errors_um :
        The mask's hole manufacturing errors [um, mask frame]: ``hole_errors_um`` (N, 2) per
        hole of the mask table, in its order, or drawn ``N(0, hole_error_um**2)`` per hole and
        axis from ``seed`` (a stream of its own: the other draws do not change); default none.
        They move the holes' true positions (plate scale: the mask table's), as the commanded
        ones (the tables' ``xi_arcsec``) stay nominal.

    Returns
    -------
    LmsPointsCampaign
    """
    rng = np.random.default_rng(seed)
    if truth is None:
        truth = draw_lms_geometry(settings_um, rng, degree=degree, hyper=hyper)
    m = load_mask(mask_path(mask))
    ab, ids = np.asarray(m.xy_arcsec(), float), np.asarray(m.hole_id)
    if hole_errors_um is not None:
        herr = np.asarray(hole_errors_um, float)
        if herr.shape != ab.shape:
            raise ValueError(f"hole_errors_um: shape {herr.shape}, the mask has {len(ab)} holes: ({len(ab)}, 2) needed")
    elif hole_error_um:
        herr = np.random.default_rng([int(seed), 7]).normal(0.0, float(hole_error_um), ab.shape)
    else:
        herr = np.zeros(ab.shape)
    ab_true = ab + herr / (m._scale_mm_per_arcsec() * 1e3) if herr.any() else ab      # um -> arcsec
    o0 = np.array(orientation.to_slicer(0.0, 0.0))
    across_of_b = float(np.array(orientation.to_slicer(0.0, 1.0))[1] - o0[1])        # d eta / d b
    across_of_a = float(np.array(orientation.to_slicer(1.0, 0.0))[1] - o0[1])        # d eta / d a
    herr_eta_mas = (ab_true - ab) @ np.array([across_of_a, across_of_b]) * 1e3      # per hole [mas]
    cmd = chopper_offsets(n_offsets, max_along_arcsec, max_across_slices)
    exposures, spots, traces, edges = [], [], [], []
    err = []

    def shift(s, xi, lam):
        if extra_row_px is None:
            return 0.0, 0.0
        return extra_row_px(s, xi, lam)

    for e, lam_c in enumerate(settings_um):
        lo, hi = truth.wavelength_range(e)
        lines = np.array([l for l in lines_um if lo <= l <= hi])
        for k in range(n_offsets):
            for kind in ("laser", "grid"):
                if kind == "laser" and not lines.size:
                    continue
                if kind == "grid" and k > 0 and not grid_all_offsets:
                    continue
                ex = len(exposures)
                exposures.append((f"{kind}_{lam_c:.3f}_{k:02d}", kind))
                d = rng.normal(0.0, offset_sigma_mas, 2)
                err.append(d)
                true_off = cmd[k] + d / 1e3
                hidx, sl_t, xi_t, _ = holes_in_field(ab_true, true_off, orientation)
                hidx_c, sl_c, xi_c, _ = holes_in_field(ab, cmd[k], orientation)
                common = np.intersect1d(hidx, hidx_c)
                it, ic = np.searchsorted(hidx, common), np.searchsorted(hidx_c, common)
                sl, xt, xc = sl_t[it], xi_t[it], xi_c[ic]
                if kind == "laser":
                    s = np.repeat(sl, lines.size)
                    x_t, x_c = np.repeat(xt, lines.size), np.repeat(xc, lines.size)
                    lam = np.tile(lines, len(sl))
                    p = truth.forward(s, x_t, lam, e, on_gap="mask")
                    on = (p.det > 0) & (np.abs(x_c) <= SLICE_HALF_LENGTH_ARCSEC - edge_margin_arcsec)
                    s, x_t, x_c, lam = s[on], x_t[on], x_c[on], lam[on]
                    det = p.det[on]
                    c, r, jac = truth.chip_position(s, x_t, lam, e, det)
                    along = np.stack([np.ones(len(s)), jac[:, 1, 1] / jac[:, 0, 1]], axis=1)
                    dc, dr = shift(s, x_t, lam)
                    h_eta = np.repeat(herr_eta_mas[common], lines.size)[on]       # a hole's own offset across
                    pos = np.stack([c + dc, r + dr], axis=1) + across_px_per_mas * (d[1] + h_eta)[:, None] * along
                    keep = (pos[:, 0] > 8) & (pos[:, 0] < 2040) & (pos[:, 1] > 40) & (pos[:, 1] < 2007)
                    n = int(keep.sum())
                    cov = np.tile(np.eye(2) * spot_sigma_px**2, (n, 1, 1))
                    pos = pos[keep] + rng.normal(0.0, spot_sigma_px, (n, 2))
                    spots.append(Table({"hole": np.repeat(ids[common], lines.size)[on][keep], "slice": s[keep],
                                        "line_um": lam[keep], "xi_arcsec": x_c[keep], "det": det[keep],
                                        "col": pos[:, 0], "row": pos[:, 1], "cov": cov,
                                        "flags": np.zeros(n, np.int32), "setting": np.full(n, e),
                                        "exposure": np.full(n, ex)}))
                else:
                    cols = np.arange(8.0 + step_cols / 2, 2040.0, step_cols)
                    use = np.abs(xc) <= SLICE_HALF_LENGTH_ARCSEC - edge_margin_arcsec
                    curves = _curves_points(truth, e, sl[use], xt[use], cols)
                    for h, s, x_t, x_c, curve in zip(ids[common][use], sl[use], xt[use], xc[use], curves):
                        for det, col, row, lam, slope in curve:
                            dc, dr = shift(np.full(len(col), s), np.full(len(col), x_t), lam)
                            row = row + dr - slope * dc + rng.normal(0.0, trace_sigma_px, len(col))
                            traces.append(_curve_table(h, s, x_c, det, col, row, trace_sigma_px, lam, e, ex))
        cols = np.arange(8.0 + step_cols / 2, 2040.0, step_cols)
        ends = [(s, side * SLICE_HALF_LENGTH_ARCSEC) for s in range(1, 29) for side in (1, -1)]
        curves = _curves_points(truth, e, [s for s, _ in ends], [xi for _, xi in ends], cols)
        for (s, xi), curve in zip(ends, curves):
            for det, col, row, lam, slope in curve:
                dc, dr = shift(np.full(len(col), s), np.full(len(col), xi), lam)
                row = row + dr - slope * dc + rng.normal(0.0, edge_sigma_px, len(col))
                edges.append(_curve_table(-1, s, xi, det, col, row, edge_sigma_px, lam, e, -1))
    from astropy.table import vstack

    data = {"spots": vstack(spots)}
    if traces:
        data["traces"] = vstack(traces)
    if edges:
        data["edges"] = vstack(edges)
    err = np.array(err)
    return LmsPointsCampaign(data, ExposureTerms.build(exposures), truth, err[:, 0], err[:, 1], across_px_per_mas,
                             ids, herr)


def _curve_table(hole, s, xi, det, col, row, sigma, lam, e, ex):
    n = len(col)
    return Table({"hole": np.full(n, hole), "slice": np.full(n, s), "xi_arcsec": np.full(n, float(xi)),
                  "det": det, "col": col, "row": row, "sigma_row": np.full(n, sigma),
                  "lam_nominal_um": lam + 1e-5, "flags": np.zeros(n, np.int32), "setting": np.full(n, e),
                  "exposure": np.full(n, ex)})


def compare_with_truth(fit: LmsFit, truth: LmsGeometry, *, n_per_slice: int = 100, seed: int = 0,
                       extra: Callable | None = None, xi_max: float = 0.44) -> dict:
    """The fitted geometry against the truth at random (slice, xi, lam) on the detectors.

    For ``n_per_slice`` points per slice and setting (xi uniform in +-``xi_max``, lam over the
    setting's range, kept where the truth puts them on a chip): the posterior draws of (col, row)
    (:meth:`~astrocal.lms.fit.LmsFit.position_samples`) against the truth's (plus ``extra``, as
    in :func:`simulate_lms_points`).

    Parameters
    ----------
    fit : LmsFit
        The fit.
    truth : LmsGeometry
        The true geometry.
    n_per_slice : int
        Points per slice and setting.
    seed : int
        Seed of the random points.
    extra : callable, optional
        The deviation added to the truth (``extra_row_px`` of :func:`simulate_lms_points`).
    xi_max : float
        Largest ``|xi|``, arcsec.

    Returns
    -------
    dict
        ``err`` (N, 2) posterior mean minus truth [px], ``sd`` (N, 2), ``in68``/``in95``
        (N, 2) bool (truth inside the central 68/95 % interval of the draws), ``slice``,
        ``setting``, ``rms`` (2,) and ``coverage68``/``95`` (2,).
    """
    rng = np.random.default_rng(seed)
    out = {k: [] for k in ("err", "sd", "in68", "in95", "slice", "setting")}
    for e in range(len(truth.layout.settings)):
        lo, hi = truth.wavelength_range(e)
        s = np.repeat(np.arange(1, 29), n_per_slice)
        xi = rng.uniform(-xi_max, xi_max, s.size)
        lam = rng.uniform(lo, hi, s.size)
        p = truth.forward(s, xi, lam, e, on_gap="mask")
        ok = p.det > 0
        s, xi, lam, det = s[ok], xi[ok], lam[ok], p.det[ok]
        tr = np.stack([p.col[ok], p.row[ok]], axis=1)
        if extra is not None:
            dc, dr = extra(s, xi, lam)
            tr = tr + np.stack([np.broadcast_to(dc, s.shape), np.broadcast_to(dr, s.shape)], axis=1)
        ps, _ = fit.position_samples(s, xi, lam, e, det=det)
        q = np.quantile(ps, [0.025, 0.16, 0.84, 0.975], axis=0)
        out["err"].append(ps.mean(axis=0) - tr)
        out["sd"].append(ps.std(axis=0, ddof=1))
        out["in68"].append((tr >= q[1]) & (tr <= q[2]))
        out["in95"].append((tr >= q[0]) & (tr <= q[3]))
        out["slice"].append(s)
        out["setting"].append(np.full(len(s), e))
    out = {k: np.concatenate(v) for k, v in out.items()}
    out["rms"] = np.sqrt(np.mean(out["err"] ** 2, axis=0))
    out["coverage68"] = out["in68"].mean(axis=0)
    out["coverage95"] = out["in95"].mean(axis=0)
    return out
