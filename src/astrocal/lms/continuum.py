"""Slice edges and pinhole trace centre lines on LMS continuum frames.

* Lit-slice frames (mask open, black body; ``kind = "slices"``): every slice fills the rows between
  the images of its ends ``xi = +-0.4485"``. :func:`measure_slice_edges` measures, in bins of
  ``bin_cols`` columns, the row of each edge as the centroid of the profile's derivative (signed
  so that it is positive across the edge): exact for a symmetrically blurred step.
* Black-body grid frames (``kind = "grid"``): one continuum trace per hole at fixed ``xi``.
  :func:`measure_traces` measures, per column bin, the row of each trace's centre line as the
  Gaussian-windowed centroid of the row profile (the centre of symmetry of the PSF cut by the
  slice).

Both predict the curves with a geometry (nominal for a first measurement), take each detector's
common row shift from the profiles stacked about the predictions (searched within
``window_nsigma`` prior widths), and look for each point within ``search_px`` of the shifted
prediction. Uncertainties are the linear propagation of the per-pixel variance.

Units: 0-based pixel centres on each detector (``det`` 1..4), arcsec, um, electrons per DIT.
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from numpy.typing import ArrayLike
from astropy.table import Table
from scipy import ndimage

from .deviations import Hyperparameters
from .frames import ReducedLmsFrame
from .geometry import LmsGeometry
from .slicer import DEFAULT_ORIENTATION, FieldOrientation
from .spots import PIXEL_SCALE_ARCSEC, holes_in_slicer, prior_position_sigma
from .traces import N_SLICES, SLICE_HALF_LENGTH_ARCSEC, SettingLike

__all__ = ["CONTINUUM_FLAGS", "curve_rows", "measure_slice_edges", "measure_traces"]

CONTINUUM_FLAGS = {"slice_end": 1, "blend": 2, "chip_edge": 4, "saturated": 8, "low_snr": 16, "not_found": 32}
"""Flag bits of an edge or trace point."""
_XI_END = SLICE_HALF_LENGTH_ARCSEC - 1e-9
_ELT_D_M = 39.146


def curve_rows(geometry: LmsGeometry, setting: SettingLike, slice_number: int, xi: float, det: int,
               cols: ArrayLike, n_lam: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """Rows and wavelengths of curves of constant (slice, xi) at given columns of a detector.

    Parameters
    ----------
    geometry : LmsGeometry
        The map.
    setting : int, float or EchelleSetting
        The echelle setting in ``geometry.layout``.
    slice_number, xi : scalars
        The curve: slice 1..28 and position along the slice [arcsec] (``+-0.4485`` for the edges).
    det : int
        Detector 1..4.
    cols : array_like
        The columns [px] at which to evaluate.
    n_lam : int
        Wavelengths sampled over the setting's range.

    Returns
    -------
    row, lam : ndarray
        Row [px] and wavelength [um] of the curve at each column (NaN where it is not on the
        detector). Interpolated linearly between ``n_lam`` wavelengths over the setting's range
        (~5 px apart; the curves are smooth to < 1e-3 px over that).
    """
    cols = np.asarray(cols, float)
    lo, hi = geometry.wavelength_range(setting)
    lam = np.linspace(lo, hi, n_lam)
    p = geometry.forward(np.full(n_lam, int(slice_number)), np.full(n_lam, float(np.clip(xi, -_XI_END, _XI_END))),
                         lam, setting, on_gap="mask")
    on = p.det == det
    row = np.full(cols.shape, np.nan)
    lam_c = np.full(cols.shape, np.nan)
    if on.sum() < 2:
        return row, lam_c
    c, r, l = p.col[on], p.row[on], lam[on]
    o = np.argsort(c)
    c, r, l = c[o], r[o], l[o]
    inside = (cols >= c[0]) & (cols <= c[-1])
    row[inside] = np.interp(cols[inside], c, r)
    lam_c[inside] = np.interp(cols[inside], c, l)
    return row, lam_c


def _bins(bin_cols, step_cols, nx=2048):
    starts = np.arange(0, nx - bin_cols + 1, step_cols)
    return starts, starts + (bin_cols - 1) / 2.0


def _profiles(data, variance, valid, start, bin_cols, row0, half):
    """Column-binned row profiles: mean over ``bin_cols`` columns from ``start``, rows
    ``row0 - half .. row0 + half``. Returns (rows, p, var, n_bad)."""
    ny = data.shape[0]
    rows = np.asarray(row0, int)[:, None] + np.arange(-half, half + 1)[None, :]
    cols = np.asarray(start, int)[:, None] + np.arange(bin_cols)[None, :]
    inside = (rows >= 0) & (rows < ny)
    rr = np.clip(rows, 0, ny - 1)
    ok = valid[rr[:, :, None], cols[:, None, :]] & inside[:, :, None]
    d = np.where(ok, data[rr[:, :, None], cols[:, None, :]], 0.0)
    v = np.where(ok, variance[rr[:, :, None], cols[:, None, :]], 0.0)
    n = ok.sum(axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = d.sum(axis=2) / n
        var = v.sum(axis=2) / n**2
    n_bad = (n < bin_cols).sum(axis=1)
    return rows, np.where(n > 0, p, 0.0), np.where(n > 0, var, np.inf), n_bad


def _stack_shift(values, half, smooth=3):
    """Row shift [px] maximising the sum of normalised profiles (N, 2 half + 1) about the predictions."""
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = values / np.nanmax(np.abs(values), axis=1, keepdims=True)
    s = np.nansum(np.where(np.isfinite(norm), norm, 0.0), axis=0)
    s = ndimage.uniform_filter1d(s, 2 * smooth + 1, mode="constant")
    return int(np.argmax(s)) - half


def _edge_centroid(rows, p, var, sign):
    """Derivative centroid of profiles (N, K) with its standard deviation (exact linear propagation)."""
    g = sign[:, None] * np.diff(p, axis=1)
    m = rows[:, :-1] + 0.5
    den = g.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        e = (m * g).sum(axis=1) / den
    k = p.shape[1]
    dn = np.zeros_like(p)                 # d(sum m g)/dp_j = sign (m_{j-1} - m_j)
    dn[:, 1:] += m
    dn[:, :-1] -= m
    dd = np.zeros_like(p)
    dd[:, -1], dd[:, 0] = 1.0, -1.0
    with np.errstate(invalid="ignore", divide="ignore"):
        coef = sign[:, None] * (dn - e[:, None] * dd) / den[:, None]
    sig = np.sqrt(np.sum(coef**2 * np.where(np.isfinite(var), var, 0.0), axis=1))
    bad = ~(den > 0) | ~np.isfinite(var).all(axis=1) | (k < 2)
    return np.where(bad, np.nan, e), np.where(bad, np.nan, sig), den


def _window_centroid(rows, p, var, sigma, centre, n_iter=30):
    """Gaussian-windowed centroid of profiles (N, K) and its standard deviation."""
    c = centre.astype(float)
    for _ in range(n_iter):
        w = np.exp(-0.5 * ((rows - c[:, None]) / sigma) ** 2)
        with np.errstate(invalid="ignore", divide="ignore"):
            new = (w * p * rows).sum(axis=1) / (w * p).sum(axis=1)
        done = np.all(~np.isfinite(new - c) | (np.abs(new - c) < 1e-6))
        c = new
        if done:
            break
    w = np.exp(-0.5 * ((rows - c[:, None]) / sigma) ** 2)
    u = rows - c[:, None]
    j = (p * w * (u * u / sigma**2 - 1)).sum(axis=1)
    a = (w * w * u * u * np.where(np.isfinite(var), var, 0.0)).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        sig = np.sqrt(a) / np.abs(j)
    bad = ~np.isfinite(c) | (np.abs(c - centre) > rows.shape[1] / 2) | ~(j < 0)
    return np.where(bad, np.nan, c), np.where(bad, np.nan, sig)


def _curve_samples(geometry, setting, curves, bin_cols, step_cols, hyper):
    """All (curve, det, column bin) samples with predicted row, lambda and prior row width."""
    starts, centres = _bins(bin_cols, step_cols)
    out = []
    for ci, (s, xi) in enumerate(curves):
        for d in range(1, 5):
            row, lam = curve_rows(geometry, setting, s, xi, d, centres)
            ok = np.isfinite(row) & (row > 2) & (row < 2045)
            if ok.any():
                out.append((np.full(ok.sum(), ci), np.full(ok.sum(), d), starts[ok], centres[ok], row[ok], lam[ok]))
    if not out:
        return None
    ci, det, start, col, row, lam = (np.concatenate(a) for a in zip(*out))
    sl = np.array([curves[i][0] for i in ci])
    xi = np.clip(np.array([curves[i][1] for i in ci]), -_XI_END, _XI_END)
    _, sr = prior_position_sigma(geometry, sl, xi, lam, setting, det, hyper)
    return dict(curve=ci, det=det, start=start, col=col, row_pred=row, lam=lam, slice=sl, xi=xi, sigma_pred_row=sr)


def _measure(reduced, smp, kind, bin_cols, window_nsigma, search_px, sigma_w, sign):
    """Per detector: stacked shift, then per sample: peak within search_px, then the centroid."""
    n = len(smp["det"])
    row = np.full(n, np.nan)
    sig = np.full(n, np.nan)
    level = np.full(n, np.nan)
    flags = np.zeros(n, np.int32)
    shifts = {}
    for d in range(1, 5):
        on = np.flatnonzero(smp["det"] == d)
        if on.size == 0:
            continue
        data, var, valid = reduced.data[d - 1], reduced.variance[d - 1], reduced.valid[d - 1]
        wide = int(np.ceil(window_nsigma * np.nanmax(smp["sigma_pred_row"][on])))
        r0 = np.round(smp["row_pred"][on]).astype(int)
        rows, p, v, _ = _profiles(data, var, valid, smp["start"][on], bin_cols, r0, wide + search_px)
        vals = sign[on][:, None] * np.diff(p, axis=1) if kind == "edge" else p
        vals = vals[:, search_px:vals.shape[1] - search_px] if vals.shape[1] > 2 * search_px else vals
        shift = _stack_shift(vals, wide)
        shifts[f"DET{d}"] = shift
        rc = r0 + shift
        rows, p, v, _ = _profiles(data, var, valid, smp["start"][on], bin_cols, rc, search_px)
        vals = sign[on][:, None] * np.diff(p, axis=1) if kind == "edge" else p
        centre = rc + np.argmax(vals, axis=1) - search_px
        half = 3 if kind == "edge" else int(np.ceil(3 * sigma_w))
        rows, p, v, nbad = _profiles(data, var, valid, smp["start"][on], bin_cols, centre, half)
        if kind == "edge":
            r, s, den = _edge_centroid(rows.astype(float), p, v, sign[on])
            lev = den
        else:
            r, s = _window_centroid(rows.astype(float), p, v, sigma_w, centre)
            lev = p.sum(axis=1)
        row[on], sig[on], level[on] = r, s, lev
        flags[on[nbad > 0]] |= CONTINUUM_FLAGS["chip_edge"]
        sat = reduced.saturated[d - 1]
        rr = np.clip(centre, 0, data.shape[0] - 1)
        hit = np.array([sat[max(a - half, 0):a + half + 1, b:b + bin_cols].any() for a, b in zip(rr, smp["start"][on])])
        flags[on[hit]] |= CONTINUUM_FLAGS["saturated"]
    flags[~np.isfinite(row)] |= CONTINUUM_FLAGS["not_found"]
    return row, sig, level, flags, shifts


def _table(smp, row, sig, level, flags, extra):
    t = Table()
    for c in extra:
        t[c] = extra[c]
    t["det"] = smp["det"]
    t["col"] = smp["col"]
    t["row"] = row
    t["sigma_row"] = sig
    t["row_pred"] = smp["row_pred"]
    t["sigma_pred_row"] = smp["sigma_pred_row"]
    t["lam_nominal_um"] = smp["lam"]
    t["level_e"] = level
    t["flags"] = flags
    info = {"col": ("pix", "column: centre of the column bin (0-based)"), "row": ("pix", "measured row (0-based)"),
            "sigma_row": ("pix", "1-sigma of row"), "row_pred": ("pix", "row predicted by the geometry"),
            "sigma_pred_row": ("pix", "prior width of row_pred"),
            "lam_nominal_um": ("um", "the geometry's wavelength at (col, row_pred)"),
            "level_e": ("electron", "edge: step height; trace: profile sum (per DIT, column mean)"),
            "det": (None, "detector 1..4"),
            "flags": (None, "bits: " + ", ".join(f"{k}={v}" for k, v in CONTINUUM_FLAGS.items()))}
    for c, (u, d) in info.items():
        if u:
            t[c].unit = u
        t[c].description = d
    return t


def measure_slice_edges(reduced: ReducedLmsFrame, geometry: LmsGeometry, *, setting: SettingLike | None = None,
                        slices: Iterable[int] | None = None, bin_cols: int = 16, step_cols: int = 64,
                        hyper: Hyperparameters = Hyperparameters(), window_nsigma: float = 4.0,
                        search_px: int = 6, snr_min: float = 20.0) -> Table:
    """Rows of the slice edges (images of ``xi = +-0.4485"``) on a lit-slice frame.

    Parameters
    ----------
    reduced : ReducedLmsFrame
        A background-subtracted lit-slice frame.
    geometry : LmsGeometry
        Predicts the edges (nominal for a first measurement).
    setting : int, float or EchelleSetting, optional
        The frame's setting in ``geometry.layout`` (default: its ``ESO INS WLEN CEN``).
    slices : iterable of int, optional
        Slices to measure (default all 28).
    bin_cols, step_cols : int
        Columns averaged per point and the spacing of the points [px].
    hyper : Hyperparameters
        The deviation priors that give the prior widths of the predictions.
    window_nsigma : float
        Search window for each detector's shift, in prior widths of the predicted rows.
    search_px : int
        Half-width [px] of the search about the detector-shifted prediction.
    snr_min : float
        Points whose step height over its noise is below this are flagged ``low_snr``.

    Returns
    -------
    Table
        One row per (slice, edge, detector, column bin): ``slice``, ``side`` (+1: ``xi = +0.4485"``,
        -1: ``xi = -0.4485"``), ``xi_arcsec``, ``det``, ``col`` (bin centre), ``row``,
        ``sigma_row``, ``row_pred``, ``sigma_pred_row``, ``lam_nominal_um``, ``level_e``, ``flags``
        (:data:`CONTINUUM_FLAGS`). Meta: file, setting, the per-detector row shifts.
    """
    fr = reduced.frame
    setting = geometry.layout.setting_index(fr.lam_c_um if setting is None else setting)
    ks = list(range(1, N_SLICES + 1)) if slices is None else [int(k) for k in slices]
    curves = [(k, side * SLICE_HALF_LENGTH_ARCSEC) for k in ks for side in (1, -1)]
    smp = _curve_samples(geometry, setting, curves, bin_cols, step_cols, hyper)
    if smp is None:
        return _empty_edges()
    side = np.sign(smp["xi"]).astype(int)
    drow_dxi = np.sign(_drow_dxi(geometry, setting))
    # +xi goes to lower rows: the edge at +xi is an upward step in row when drow/dxi < 0
    sign = np.where(side * drow_dxi < 0, 1.0, -1.0)
    row, sig, level, flags, shifts = _measure(reduced, smp, "edge", bin_cols, window_nsigma, search_px, None, sign)
    with np.errstate(invalid="ignore", divide="ignore"):
        low = ~(level / np.sqrt(np.maximum(_noise_of_step(reduced, smp, bin_cols), 1e-30)) >= snr_min)
    flags[low] |= CONTINUUM_FLAGS["low_snr"]
    t = _table(smp, row, sig, level, flags, {"slice": smp["slice"], "side": side, "xi_arcsec": smp["xi"]})
    t["slice"].description = "slice 1..28"
    t["side"].description = "+1: edge at xi = +0.4485 arcsec; -1: at xi = -0.4485 arcsec"
    t["xi_arcsec"].unit, t["xi_arcsec"].description = "arcsec", "xi of the edge"
    t.meta.update({"file": reduced.path, "setting": int(setting), "lam_c_um": float(fr.lam_c_um),
                   "bin_cols": int(bin_cols), "detector_row_shift_px": shifts, "flag_bits": dict(CONTINUUM_FLAGS)})
    return t


def _noise_of_step(reduced, smp, bin_cols):
    """Variance [e^2] of a column-binned pixel near the predicted edge (for the step's S/N)."""
    out = np.empty(len(smp["det"]))
    for i, (d, s, r) in enumerate(zip(smp["det"], smp["start"], np.round(smp["row_pred"]).astype(int))):
        v = reduced.variance[d - 1][np.clip(r, 0, 2047), s:s + bin_cols]
        v = v[np.isfinite(v)]
        out[i] = 2 * v.sum() / max(len(v), 1) ** 2 if len(v) else np.inf
    return out


def _drow_dxi(geometry, setting):
    """Typical d row / d xi [px/arcsec] of the setting (median over slices and wavelengths on a chip)."""
    lo, hi = geometry.wavelength_range(setting)
    ks = np.repeat(np.arange(1, N_SLICES + 1), 3)
    lam = np.tile(lo + (hi - lo) * np.array([0.25, 0.5, 0.75]), N_SLICES)
    p1 = geometry.forward(ks, np.full(ks.size, -0.2), lam, setting, on_gap="mask")
    p2 = geometry.forward(ks, np.full(ks.size, 0.2), lam, setting, on_gap="mask")
    ok = (p1.det > 0) & (p1.det == p2.det)
    return float(np.median((p2.row[ok] - p1.row[ok]) / 0.4))


def _empty_edges():
    return Table(names=["slice", "side", "xi_arcsec", "det", "col", "row", "sigma_row", "row_pred", "sigma_pred_row",
                        "lam_nominal_um", "level_e", "flags"],
                 dtype=[int, int, float, int, float, float, float, float, float, float, float, np.int32])


def measure_traces(reduced: ReducedLmsFrame, geometry: LmsGeometry, hole_ab_arcsec: ArrayLike, *,
                   setting: SettingLike | None = None, offset_arcsec: ArrayLike | None = None,
                   orientation: FieldOrientation = DEFAULT_ORIENTATION, hole_id: ArrayLike | None = None,
                   bin_cols: int = 16, step_cols: int = 64, hyper: Hyperparameters = Hyperparameters(),
                   window_nsigma: float = 4.0, search_px: int = 6, row_window_sigma_px: float | None = None,
                   edge_margin_arcsec: float = 0.1, snr_min: float = 10.0) -> Table:
    """Rows of the pinhole traces' centre lines on a black-body grid frame.

    Parameters
    ----------
    reduced : ReducedLmsFrame
        A background-subtracted grid frame.
    geometry : LmsGeometry
        Predicts the traces (nominal for a first measurement).
    hole_ab_arcsec, hole_id : array_like
        The mask's holes in the field frame [arcsec] (N, 2) and their ids (default 1..N).
    setting : int, float or EchelleSetting, optional
        The frame's setting in ``geometry.layout`` (default: its ``ESO INS WLEN CEN``).
    offset_arcsec : (2,)
        Commanded chopper offset [arcsec] (default: from the header).
    orientation : FieldOrientation
        The mask's orientation in the slicer field.
    bin_cols, step_cols : int
        Columns averaged per point and the spacing of the points [px].
    hyper : Hyperparameters
        The deviation priors that give the prior widths of the predictions.
    window_nsigma : float
        Search window for each detector's shift, in prior widths of the predicted rows.
    search_px : int
        Half-width [px] of the search about the detector-shifted prediction.
    row_window_sigma_px : float
        Gaussian window along the rows [px] (default 0.8 lambda/D at the setting's centre).
    edge_margin_arcsec : float
        Holes within this of a slice end are flagged ``slice_end`` [arcsec].
    snr_min : float
        Points below this signal-to-noise are flagged ``low_snr``.

    Returns
    -------
    Table
        One row per (hole, detector, column bin): ``hole``, ``slice``, ``xi_arcsec``,
        ``eta_offset_arcsec``, ``det``, ``col`` (bin centre), ``row``, ``sigma_row``, ``row_pred``,
        ``sigma_pred_row``, ``lam_nominal_um``, ``level_e``, ``snr``, ``flags``
        (:data:`CONTINUUM_FLAGS`; ``slice_end``: the hole within ``edge_margin_arcsec`` of a slice
        end, ``blend``: another hole's trace within the window).
    """
    fr = reduced.frame
    setting = geometry.layout.setting_index(fr.lam_c_um if setting is None else setting)
    if offset_arcsec is None:
        offset_arcsec = fr.offset_arcsec if fr.offset_arcsec is not None else (0.0, 0.0)
    ab = np.asarray(hole_ab_arcsec, float).reshape(-1, 2)
    ids = np.arange(1, len(ab) + 1) if hole_id is None else np.asarray(hole_id)
    idx, sl, xi, deta = holes_in_slicer(ab, offset_arcsec, orientation)
    curves = list(zip(sl.tolist(), xi.tolist()))
    smp = _curve_samples(geometry, setting, curves, bin_cols, step_cols, hyper)
    if row_window_sigma_px is None:
        lam_mid = float(np.mean(geometry.wavelength_range(setting)))
        row_window_sigma_px = 0.8 * lam_mid * 1e-6 / _ELT_D_M * 206264.806 / PIXEL_SCALE_ARCSEC
    if smp is None:
        raise ValueError("no hole trace falls on the detectors")
    sign = np.ones(len(smp["det"]))
    row, sig, level, flags, shifts = _measure(reduced, smp, "trace", bin_cols, window_nsigma, search_px,
                                              row_window_sigma_px, sign)
    c = smp["curve"]
    flags[np.abs(xi[c]) > SLICE_HALF_LENGTH_ARCSEC - edge_margin_arcsec] |= CONTINUUM_FLAGS["slice_end"]
    # blends: another trace (main or neighbour-slice image of another hole) within the window
    for dk in (0, -1, 1):
        s_other = sl + dk
        for i in np.unique(c):
            near = (s_other == sl[i]) & (np.abs(xi - xi[i]) * abs(_drow_dxi(geometry, setting))
                                         < 3 * row_window_sigma_px + search_px)
            near[i] = near[i] and dk != 0
            if near.any():
                flags[c == i] |= CONTINUUM_FLAGS["blend"]
    t = _table(smp, row, sig, level, flags, {"hole": ids[idx[c]], "slice": smp["slice"], "xi_arcsec": xi[c],
                                             "eta_offset_arcsec": deta[c]})
    with np.errstate(invalid="ignore", divide="ignore"):
        t["snr"] = level / np.sqrt(_noise_of_step(reduced, smp, bin_cols) * (2 * 3 * row_window_sigma_px + 1) / 2)
    flags = np.asarray(t["flags"])
    flags[~(np.asarray(t["snr"]) >= snr_min)] |= CONTINUUM_FLAGS["low_snr"]
    t["flags"] = flags
    t["hole"].description = "mask hole id"
    t["slice"].description = "slice 1..28"
    t["xi_arcsec"].unit, t["xi_arcsec"].description = "arcsec", "hole along the slice (commanded)"
    t["eta_offset_arcsec"].unit = "arcsec"
    t["eta_offset_arcsec"].description = "hole across the slice from its centre (commanded)"
    t["snr"].description = "approximate signal-to-noise of the profile sum"
    t.meta.update({"file": reduced.path, "setting": int(setting), "lam_c_um": float(fr.lam_c_um),
                   "offset_arcsec": [float(v) for v in offset_arcsec], "bin_cols": int(bin_cols),
                   "row_window_sigma_px": float(row_window_sigma_px), "detector_row_shift_px": shifts,
                   "flag_bits": dict(CONTINUUM_FLAGS)})
    return t
