"""Relative spectral response per slice and slit loss of the LMS, from the distortion/wavelength frames.

The seed procedure notes that LMS distortion mapping can be combined with slit-loss and RSRF
measurements. The same frames give two of them:

**Relative spectral response per slice (RSRF)**, from the ``slices`` frames (mask open, black
body: every slice filled by a uniform source). At each detector column the sum over the rows of a
slice (between the images of its ends, ``+-margin_px``; :func:`extract_slice_spectra`) is

``S_k(c) = L_BB(lam) W 2 xi_max |dlam/dcol| R_k(lam)``

with ``lam`` the wavelength of the column on the slice's centre line and ``|dlam/dcol|`` the
dispersion, both from the geometry (the fit's posterior mean), so
``R_k(lam) ~ S_k(c) / (B(lam, T) |dlam/dcol|)``, ``B`` the Planck photon radiance at the black
body's temperature ``T`` (``ESO SEQ WCU_BB_TEMP``). :func:`estimate_rsrf` averages this over
wavelength bins, normalises it to a mean of 1 over all slices and bins of the setting (``RSRF``)
and also gives each slice relative to the mean of all slices in the same bin (``REL_SLICE``), in
which the black body cancels.

**Slit loss**, from ``laser`` frames whose chopper offset puts the holes off their slice centres
(a slit-loss scan: offsets across the slices by fractions of a slice width). A spot's flux
(``flux_e`` of the measured spot table: the box sum) is ``A_hl T(u)`` with ``A_hl`` the hole's
light at the line (laser power, hole transmission, the slice's response) and ``T(u)`` the
fraction that the slice passes for a point source at ``u`` slice widths from its centre.
:func:`estimate_slit_throughput` fits ``ln F = a_g + ln T_rel(u)`` (one ``a_g`` per hole, slice
and line; ``T_rel = 1`` at the centred position) by weighted least squares, per setting and line.

**What these frames cannot give** (also written into the products' headers, :data:`NOT_GIVEN`):

- an absolute response or throughput: the WCU's radiance (sphere gain, pinhole area) and the laser
  power reaching a hole are not known absolutely: both tables are relative;
- the response's shape common to all slices beyond what the black body's spectrum is known: it is
  relative to a Planck spectrum at the header's temperature (``SIGMA_BB``: the change for a
  ``bb_temp_sigma_k`` error of it) and assumes the WCU's own transmission from the black body to
  the mask flat within a setting; ``REL_SLICE`` (slice over the mean of the slices) needs neither;
- the response of the telescope (the WCU bypasses it) and on-sky slit losses (the WCU's
  diffraction-limited PSF is not the AO-corrected PSF of a star);
- structure finer than a bin (a pixel flat, fringes) and the link between settings (each setting
  is normalised on its own);
- the slit loss at wavelengths other than the laser lines, at positions not scanned, and its
  absolute value (``T(u)/T(0)`` only; the light that goes into the neighbouring slices is not
  measured); laser power drifts between the exposures of a scan are indistinguishable from it,
  and the position ``u`` is the commanded one, uncertain by the chopper's accuracy (``SIGMA_U``).

Units: wavelengths um, ``u`` in slice widths (20.7 mas), fluxes electrons per DIT.
"""
from __future__ import annotations

import datetime as _dt
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike
from astropy.io import fits
from astropy.table import Table

from .. import __version__
from ..atomic import atomic_path
from ..image.headers import set_card
from .frames import ReducedLmsFrame, read_lms_frame, reduce_lms_frame
from .geometry import LmsGeometry
from .products import eso, setting_tag
from .spots import SPOT_FLAGS
from .traces import N_SLICES, SLICE_HALF_LENGTH_ARCSEC, SLICE_WIDTH_ARCSEC, EchelleSetting, SettingLike

if TYPE_CHECKING:  # hints only: astrocal.campaign imports astrocal.lms to resolve [lms]
    import astrocal.campaign

__all__ = ["NOT_GIVEN", "planck_photon_radiance", "extract_slice_spectra", "estimate_rsrf",
           "estimate_slit_throughput", "ResponseProducts", "write_rsrf_product", "write_slit_product",
           "lms_response_from_campaign", "read_response_products"]

NOT_GIVEN = (
    "absolute response and throughput: relative tables only (WCU radiance and laser power not known absolutely)",
    "RSRF shape common to all slices: relative to a Planck spectrum at the header's black-body temperature "
    "(SIGMA_BB) and a WCU transmission assumed flat; REL_SLICE needs neither",
    "telescope response and on-sky slit loss (the WCU bypasses the ELT; its PSF is not the AO PSF)",
    "structure finer than a wavelength bin (pixel flat, fringes) and the link between settings",
    "slit loss away from the laser lines and the scanned positions, its absolute value (T(u)/T(0) only) "
    "and the light lost into the neighbouring slices; laser power drifts look like slit loss",
)
"""What the distortion/wavelength frames cannot give (written into the products' headers)."""

_H, _C, _K = 6.62607015e-34, 2.99792458e8, 1.380649e-23


def planck_photon_radiance(lam_um: ArrayLike, temp_k: float) -> np.ndarray:
    """Black-body photon spectral radiance.

    Parameters
    ----------
    lam_um : array_like
        Wavelength [um].
    temp_k : float
        Temperature [K].

    Returns
    -------
    ndarray
        [photons s^-1 m^-2 sr^-1 um^-1].
    """
    lam = np.asarray(lam_um, float) * 1e-6
    with np.errstate(over="ignore"):
        return 2.0 * _C / lam**4 / np.expm1(_H * _C / (lam * _K * float(temp_k))) * 1e-6


# ====================================================================================== RSRF
def extract_slice_spectra(reduced: ReducedLmsFrame, geometry: LmsGeometry, setting: SettingLike, *,
                          margin_px: float = 3.0, n_lam: int = 600) -> Table:
    """Sum every slice over its rows at each detector column of a reduced ``slices`` frame.

    Parameters
    ----------
    reduced : ReducedLmsFrame
        The background-subtracted frame (electrons per DIT, with variance and valid mask).
    geometry : LmsGeometry
        Where the slices are (the fit's posterior mean; the nominal model is good to ~1e-3 in
        the dispersion).
    setting : int, float or EchelleSetting
        The frame's setting in ``geometry.layout``.
    margin_px : float
        Rows summed beyond the images of the slice ends (``xi = +-0.4485"``) [px].
    n_lam : int
        Wavelengths sampled over the setting's range to place the slices' windows.

    Returns
    -------
    Table
        One row per (slice, detector, column) where the slice's window lies on valid pixels:
        ``slice``, ``det``, ``col``, ``lam_um`` (centre line ``xi = 0``), ``dlam_dcol`` [um/px]
        (absolute), ``flux_e`` (sum), ``var_e2`` (its variance), ``n_rows``.
    """
    e = geometry.layout.setting_index(setting)
    lo, hi = geometry.wavelength_range(e)
    lam = np.linspace(lo, hi, n_lam)
    cols_out = {k: [] for k in ("slice", "det", "col", "lam_um", "dlam_dcol", "flux_e", "var_e2", "n_rows")}
    ny, nx = reduced.data.shape[1:]
    for s in range(1, N_SLICES + 1):
        ss = np.full(lam.size, s)
        pc = geometry.forward(ss, np.zeros(lam.size), lam, e, on_gap="mask")
        pa = geometry.forward(ss, np.full(lam.size, SLICE_HALF_LENGTH_ARCSEC), lam, e, on_gap="mask")
        pb = geometry.forward(ss, np.full(lam.size, -SLICE_HALF_LENGTH_ARCSEC), lam, e, on_gap="mask")
        for d in range(1, 5):
            on = (pc.det == d) & (pa.det == d) & (pb.det == d)
            if on.sum() < 4:
                continue
            c, l = pc.col[on], lam[on]
            o = np.argsort(c)
            c, l = c[o], l[o]
            cols = np.arange(int(np.ceil(c[0])), int(np.floor(c[-1])) + 1)
            cols = cols[(cols >= 0) & (cols < nx)]
            if cols.size < 2:
                continue
            lam_c = np.interp(cols, c, l)
            dl = np.abs(np.interp(cols, c, np.gradient(l, c)))
            ra = np.interp(cols, np.sort(pa.col[on]), pa.row[on][np.argsort(pa.col[on])])
            rb = np.interp(cols, np.sort(pb.col[on]), pb.row[on][np.argsort(pb.col[on])])
            r0 = np.floor(np.minimum(ra, rb) - margin_px).astype(int)
            r1 = np.ceil(np.maximum(ra, rb) + margin_px).astype(int)
            nr = int((r1 - r0).max()) + 1
            rr = r0[None, :] + np.arange(nr)[:, None]
            inwin = rr <= r1[None, :]
            inside = (rr >= 0) & (rr < ny)
            rri = np.clip(rr, 0, ny - 1)
            cc = np.broadcast_to(cols[None, :], rr.shape)
            ok_pix = reduced.valid[d - 1][rri, cc] & inside
            good = np.all(ok_pix | ~inwin, axis=0)
            data = np.where(inwin & inside, reduced.data[d - 1][rri, cc], 0.0).astype(float)
            var = np.where(inwin & inside, reduced.variance[d - 1][rri, cc], 0.0).astype(float)
            n = int(good.sum())
            if n == 0:
                continue
            cols_out["slice"].append(np.full(n, s))
            cols_out["det"].append(np.full(n, d))
            cols_out["col"].append(cols[good])
            cols_out["lam_um"].append(lam_c[good])
            cols_out["dlam_dcol"].append(dl[good])
            cols_out["flux_e"].append(data.sum(axis=0)[good])
            cols_out["var_e2"].append(var.sum(axis=0)[good])
            cols_out["n_rows"].append(inwin.sum(axis=0)[good])
    t = Table({k: (np.concatenate(v) if v else np.zeros(0)) for k, v in cols_out.items()})
    for k in ("slice", "det", "col", "n_rows"):
        t[k] = np.asarray(t[k], int)
    t["lam_um"].unit, t["dlam_dcol"].unit, t["flux_e"].unit, t["var_e2"].unit = "um", "um/pix", "electron", "electron2"
    t.meta.update({"setting": int(e), "lam_c_um": float(geometry.layout.settings[e].lam_c_um),
                   "margin_px": float(margin_px), "path": str(getattr(reduced, "path", ""))})
    return t


def estimate_rsrf(spectra: Table, bb_temp_k: float, *, bb_temp_sigma_k: float = 5.0, n_bins: int = 32,
                  lam_range: tuple[float, float] | None = None, clip: float = 0.05,
                  min_fill: float = 0.5) -> Table:
    """The relative spectral response per slice on a wavelength grid, with its uncertainties.

    Parameters
    ----------
    spectra : Table
        :func:`extract_slice_spectra`'s table (``slice``, ``lam_um``, ``dlam_dcol``, ``flux_e``,
        ``var_e2``).
    bb_temp_k, bb_temp_sigma_k : float
        The black body's temperature [K] and its assumed uncertainty (``SIGMA_BB``).
    n_bins : int
        Equal wavelength bins over ``lam_range``.
    lam_range : (2,), optional
        The wavelength range of the bins [um] (default: the columns' range).
    clip : float
        Columns whose ``S / (B |dlam/dcol|)`` departs from the median of their (slice, bin) by more
        than this fraction are left out (dead, vignetted or unlit columns, e.g. at the chip edges).
    min_fill : float
        A (slice, bin) needs at least this fraction of the median number of columns per bin (bins
        cut by a chip gap or the mosaic's ends are left out below it).

    Returns
    -------
    Table
        One row per (slice, bin) with data: ``SLICE``, ``LAM`` (mean wavelength of the columns
        used) [um], ``LAM_LO``, ``LAM_HI`` (the bin), ``RSRF`` (normalised: mean 1 over the rows),
        ``SIGMA`` (statistical 1-sigma, pixel noise, the normalisation's included),
        ``SIGMA_BB`` (change of ``RSRF`` for ``T + bb_temp_sigma_k``, a systematic common to all
        slices), ``REL_SLICE`` (``RSRF`` over the mean ``RSRF`` of the slices in that bin: free of
        the black body; NaN in bins that fewer than 90 % of the slices reach, e.g. at a chip gap,
        where the mean would be over another set of slices) and ``SIGMA_REL``, ``NCOL`` (columns
        averaged). Meta: ``bb_temp_k``,
        ``bb_temp_sigma_k``, ``norm`` (the normalisation), ``not_given``.
    """
    if not (np.isfinite(bb_temp_k) and bb_temp_k > 0):
        raise ValueError(f"RSRF: black-body temperature must be > 0 K, got {bb_temp_k}")
    lam = np.asarray(spectra["lam_um"], float)
    if lam.size == 0:
        raise ValueError("RSRF: no slice spectra (no slice lies on valid pixels)")
    sl = np.asarray(spectra["slice"], int)
    flux = np.asarray(spectra["flux_e"], float)
    var = np.asarray(spectra["var_e2"], float)
    dl = np.asarray(spectra["dlam_dcol"], float)
    lo, hi = (lam.min(), lam.max() + 1e-12) if lam_range is None else lam_range
    edges = np.linspace(lo, hi, int(n_bins) + 1)
    b = np.clip(np.searchsorted(edges, lam, side="right") - 1, 0, int(n_bins) - 1)
    inb = (lam >= lo) & (lam <= hi)
    key0 = (sl - 1) * int(n_bins) + b
    q0 = flux / (planck_photon_radiance(lam, bb_temp_k) * dl)
    for k in np.unique(key0[inb]):
        m = inb & (key0 == k)
        med = np.median(q0[m])
        inb[m] &= np.abs(q0[m] - med) <= clip * abs(med)

    def binned(temp):
        scale = 1.0 / (planck_photon_radiance(lam, temp) * dl)
        q, vq = flux * scale, var * scale**2
        key = (sl - 1) * n_bins + b
        nk = N_SLICES * n_bins
        cnt = np.bincount(key[inb], minlength=nk)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.bincount(key[inb], q[inb], nk) / cnt
            vmean = np.bincount(key[inb], vq[inb], nk) / cnt**2
            lmean = np.bincount(key[inb], lam[inb], nk) / cnt
        return mean.reshape(N_SLICES, n_bins), vmean.reshape(N_SLICES, n_bins), lmean.reshape(N_SLICES, n_bins), \
            cnt.reshape(N_SLICES, n_bins)

    m, v, lm, cnt = binned(bb_temp_k)
    have = cnt >= max(2, min_fill * np.median(cnt[cnt > 0])) if (cnt > 0).any() else cnt > 0
    if not have.any():
        raise ValueError("RSRF: too few columns in every wavelength bin: use fewer bins")
    nrm = m[have].mean()
    vn = v[have].sum() / have.sum() ** 2
    r = m / nrm
    sig = np.sqrt(v / nrm**2 + r**2 * vn / nrm**2)
    m2, _, _, _ = binned(bb_temp_k + bb_temp_sigma_k)
    r2 = m2 / m2[have].mean()
    # each slice over the mean of the slices in the same bin
    w = np.where(have, 1.0, 0.0)
    nsl = w.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mb = np.where(have, m, 0.0).sum(axis=0) / nsl
        vb = np.where(have, v, 0.0).sum(axis=0) / nsl**2
        rel = m / mb[None, :]
        srel = np.sqrt(v / mb[None, :] ** 2 + rel**2 * vb[None, :] / mb[None, :] ** 2
                       - 2 * rel * v / (mb[None, :] ** 2 * nsl[None, :]))
    full = nsl >= 0.9 * nsl.max()            # bins (nearly) all slices reach: the mean is over the same set
    rel[:, ~full], srel[:, ~full] = np.nan, np.nan
    ks, bs = np.nonzero(have)
    t = Table({"SLICE": ks + 1, "LAM": lm[ks, bs], "LAM_LO": edges[bs], "LAM_HI": edges[bs + 1],
               "RSRF": r[ks, bs], "SIGMA": sig[ks, bs], "SIGMA_BB": np.abs(r2 - r)[ks, bs],
               "REL_SLICE": rel[ks, bs], "SIGMA_REL": srel[ks, bs], "NCOL": cnt[ks, bs]})
    for k in ("LAM", "LAM_LO", "LAM_HI"):
        t[k].unit = "um"
    t["RSRF"].description = "relative spectral response, mean 1 over all slices and bins of the setting"
    t["SIGMA"].description = "statistical 1-sigma of RSRF (pixel noise)"
    t["SIGMA_BB"].description = "change of RSRF for a black-body temperature error of bb_temp_sigma_k (common)"
    t["REL_SLICE"].description = "RSRF of the slice / mean RSRF of the slices in the bin (black body cancels)"
    t["SIGMA_REL"].description = "statistical 1-sigma of REL_SLICE"
    t.meta.update({"bb_temp_k": float(bb_temp_k), "bb_temp_sigma_k": float(bb_temp_sigma_k), "norm": float(nrm),
                   "n_bins": int(n_bins), "lam_lo": float(lo), "lam_hi": float(hi), "clip": float(clip),
                   "n_clipped": int(((lam >= lo) & (lam <= hi)).sum() - inb.sum()), "not_given": list(NOT_GIVEN[:4])})
    return t


# ================================================================================= slit loss
def _offsets_fit(X, y, sigma, ng, min_dof_scale=20):
    """Weighted least squares of ``y = a_g + d_p`` (design ``X``: ``ng`` group columns, then one per
    position); returns the position terms ``d``, their 1-sigma and ``chi2/dof``.

    The 1-sigma is scaled by ``sqrt(chi2/dof)`` when ``dof >= min_dof_scale``: the stated errors of
    the spots hold the noise of the background frame, which is common to the exposures that
    share it and cancels in the ratios (measured: ``chi2/dof`` ~0.55 on simulated frames), and
    any scatter they do not hold; with fewer degrees of freedom only a significant excess
    (3 sigma of the chi2 distribution) scales them up."""
    Xw, yw = X / sigma[:, None], y / sigma
    cov = np.linalg.inv(Xw.T @ Xw)
    beta = cov @ (Xw.T @ yw)
    res = yw - Xw @ beta
    dof = len(y) - X.shape[1]
    chi2dof = float(res @ res / dof) if dof > 0 else float("nan")
    if dof >= min_dof_scale:
        scale = chi2dof
    elif dof >= 3 and chi2dof > 1.0 + 3.0 * math.sqrt(2.0 / dof):
        scale = chi2dof
    else:
        scale = 1.0
    return beta[ng:], np.sqrt(np.diag(cov)[ng:] * scale), chi2dof


def estimate_slit_throughput(spots: Table, *, offset_sigma_mas: float = 1.0, reference_tolerance: float = 0.05,
                             position_decimals: int = 3, min_snr: float = 10.0) -> Table:
    """Throughput of a point source against its position across the slice, relative to the centre.

    Parameters
    ----------
    spots : Table
        Measured laser spots of one or more exposures (``astrocal measure``'s spot tables stacked,
        with ``exposure`` and ``setting`` columns, or one table): ``hole``, ``slice``,
        ``line_um``, ``eta_offset_arcsec`` (commanded position across the slice), ``flux_e``,
        ``snr``, ``flags``. Spots with any flag but ``off_centre`` are left out.
    offset_sigma_mas : float
        The chopper's accuracy [mas]: ``SIGMA_U`` of every position.
    reference_tolerance : float
        Positions within this many slice widths of the centre are the reference (``T_REL = 1``).

    Returns
    -------
    Table
        Per setting, line and scanned position (not the reference): ``SETTING``, ``LINE``
        [um], ``U`` (commanded position, slice widths), ``ETA`` [mas], ``T_REL``
        (``T(u)/T(0)``), ``SIGMA_T`` (1-sigma, the photometry's scaled by ``sqrt(chi2/dof)`` of the
        fit when it has >= 20 degrees of freedom, see :func:`_offsets_fit`),
        ``SIGMA_U`` [slice widths], ``DCOL``, ``SIGMA_DCOL`` (the spots' shift along the
        dispersion from the centred position [px], from ``col``/``sigma_col`` when the table has
        them: a measure of where the light sat across the slice, independent of the chopper),
        ``NSPOT``, ``NEXP``, ``CHI2DOF`` (of the photometry). Empty (with
        ``meta["reason"]``) when the spots hold no position off the centre linked to a centred one.
    """
    t = spots
    flags = np.asarray(t["flags"], np.int64) & ~np.int64(SPOT_FLAGS["off_centre"])
    flux = np.asarray(t["flux_e"], float)
    snr = np.asarray(t["snr"], float)
    ok = (flags == 0) & np.isfinite(flux) & (flux > 0) & np.isfinite(snr) & (snr >= min_snr)
    u_all = np.round(np.asarray(t["eta_offset_arcsec"], float) / SLICE_WIDTH_ARCSEC, position_decimals)
    setting = np.asarray(t["setting"], int) if "setting" in t.colnames else np.zeros(len(t), int)
    expo = np.asarray(t["exposure"], int) if "exposure" in t.colnames else np.zeros(len(t), int)
    line = np.asarray(t["line_um"], float)
    col = np.asarray(t["col"], float) if "col" in t.colnames and "sigma_col" in t.colnames else None
    scol = np.asarray(t["sigma_col"], float) if col is not None else None
    rows, reasons = [], []
    sigma_u = offset_sigma_mas / (SLICE_WIDTH_ARCSEC * 1e3)
    for e in np.unique(setting[ok]):
        for lam in np.unique(line[ok & (setting == e)]):
            m = np.flatnonzero(ok & (setting == e) & np.isclose(line, lam, rtol=0, atol=1e-9))
            u = u_all[m]
            ref = np.abs(u) <= reference_tolerance
            pos = np.unique(u[~ref])
            if not ref.any() or pos.size == 0:
                reasons.append(f"setting {e}, {lam:.4f} um: no off-centre position with a centred one")
                continue
            gkey = np.stack([np.asarray(t["hole"])[m], np.asarray(t["slice"])[m]], axis=1)
            _, g = np.unique(gkey, axis=0, return_inverse=True)
            g = g.ravel()
            p = np.where(ref, -1, np.searchsorted(pos, u))
            # keep groups seen at the reference and at another position, or at two positions
            keep = np.zeros(len(m), bool)
            for gi in np.unique(g):
                sel = g == gi
                if len(np.unique(p[sel])) >= 2:
                    keep |= sel
            if not keep.any():
                reasons.append(f"setting {e}, {lam:.4f} um: no hole seen at two positions")
                continue
            g, p, mm = g[keep], p[keep], m[keep]
            _, g = np.unique(g, return_inverse=True)
            ng, npos = g.max() + 1, pos.size
            X = np.zeros((len(mm), ng + npos))
            X[np.arange(len(mm)), g] = 1.0
            off = p >= 0
            X[np.flatnonzero(off), ng + p[off]] = 1.0
            used = X[:, ng:].any(axis=0)
            X = np.concatenate([X[:, :ng], X[:, ng:][:, used]], axis=1)
            pos_u = pos[used]
            tau, st, chi2dof = _offsets_fit(X, np.log(flux[mm]), 1.0 / snr[mm], ng)
            dcol, sdcol = np.full(len(pos_u), np.nan), np.full(len(pos_u), np.nan)
            if col is not None and np.all(np.isfinite(col[mm]) & (scol[mm] > 0)):
                dcol, sdcol, _ = _offsets_fit(X, col[mm], scol[mm], ng)
            for j, uj in enumerate(pos_u):
                at = X[:, ng + j] > 0
                rows.append({"SETTING": int(e), "LINE": float(lam), "U": float(uj),
                             "ETA": float(uj * SLICE_WIDTH_ARCSEC * 1e3), "T_REL": float(np.exp(tau[j])),
                             "SIGMA_T": float(np.exp(tau[j]) * st[j]), "SIGMA_U": float(sigma_u),
                             "DCOL": float(dcol[j]), "SIGMA_DCOL": float(sdcol[j]),
                             "NSPOT": int(at.sum()), "NEXP": int(len(np.unique(expo[mm][at]))),
                             "CHI2DOF": chi2dof})
    names = ["SETTING", "LINE", "U", "ETA", "T_REL", "SIGMA_T", "SIGMA_U", "DCOL", "SIGMA_DCOL", "NSPOT", "NEXP",
             "CHI2DOF"]
    out = Table(rows=rows, names=names) if rows else Table(names=names, dtype=[int] + [float] * 8 + [int, int, float])
    out["LINE"].unit, out["ETA"].unit, out["DCOL"].unit, out["SIGMA_DCOL"].unit = "um", "mas", "pix", "pix"
    out["DCOL"].description = ("shift of the spots' light centroid along the dispersion from the centred position "
                               "[px]: where the light sat across the slice, measured (not converted to U: that "
                               "needs the PSF)")
    out["U"].description = "commanded position of the hole across the slice from its centre [slice widths]"
    out["T_REL"].description = "point-source throughput of the slice at U over that at the centre"
    out["SIGMA_T"].description = "1-sigma of T_REL (spot photometry scaled by sqrt(CHI2DOF), dof >= 20)"
    out["SIGMA_U"].description = "1-sigma of U: the chopper's accuracy [slice widths]"
    out.meta.update({"offset_sigma_mas": float(offset_sigma_mas), "reference_tolerance": float(reference_tolerance),
                     "slice_width_mas": SLICE_WIDTH_ARCSEC * 1e3,
                     "not_given": [NOT_GIVEN[0], NOT_GIVEN[2], NOT_GIVEN[4]]})
    if not rows:
        out.meta["reason"] = ("the laser frames hold no hole off its slice centre (no slit-loss scan): "
                              + ("; ".join(reasons) if reasons else "no usable spot"))
    return out


# ================================================================================== products
@dataclass
class ResponseProducts:
    """What :func:`lms_response_from_campaign` found: ``rsrf`` and ``slit`` ({setting tag: Table}),
    ``paths`` ({name: path}) of the products written and ``notes`` (what the frames did not give)."""

    rsrf: dict = field(default_factory=dict)
    slit: dict = field(default_factory=dict)
    paths: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)


def _primary(pro_catg, setting, dpr_type, provenance, qc):
    h = fits.Header()
    h["INSTRUME"] = ("METIS", "instrument")
    h["TELESCOP"] = ("ESO-ELT", "telescope")
    set_card(h, eso("PRO.CATG"), pro_catg, "product category (astrocal)")
    set_card(h, eso("DRS.IFU"), "Nominal", "IFU mode (INS.OPTI6.NAME)")
    for key, value in (("CATG", "CALIB"), ("TECH", "IFU"), ("TYPE", dpr_type)):
        set_card(h, eso(f"DPR.{key}"), value, "of the input frames")
    set_card(h, eso("INS.WLEN.CEN"), float(setting.lam_c_um), "[um] central wavelength of the setting")
    set_card(h, "HIERARCH ASTROCAL LMS ORDER", int(setting.order), "echelle order")
    set_card(h, "HIERARCH ASTROCAL LMS ECHELLE", float(setting.echelle_deg), "[deg] echelle angle (model)")
    for key, (value, comment) in qc.items():
        set_card(h, f"HIERARCH ASTROCAL QC {key}", value, comment)
    set_card(h, "CREATOR", f"astrocal {__version__}", "software that wrote the file")
    set_card(h, "DATE", _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"), "UTC creation date")
    set_card(h, "CAMPHASH", str((provenance or {}).get("campaign_sha256") or ""), "sha256 of the campaign file")
    inputs = [str(p) for p in (provenance or {}).get("inputs", ())]
    h["NINPUTS"] = (len(inputs), "number of input files (INPUT<k>)")
    for k, path in enumerate(inputs, start=1):
        h[f"INPUT{k}"] = path
    return h


def _not_given(h, items):
    for item in items:
        h["COMMENT"] = "not given by these frames: " + item


def write_rsrf_product(table: Table, setting: EchelleSetting, path: str | os.PathLike,
                       provenance: dict | None = None, overwrite: bool = False) -> Path:
    """``LMS_RSRF_<tag>.fits``: primary header + binary table ``RSRF`` (:func:`estimate_rsrf`).

    Parameters
    ----------
    table : Table
        :func:`estimate_rsrf`'s table.
    setting : EchelleSetting
        Its setting (the header's ``ESO INS WLEN CEN``, order, angle).
    path : str or os.PathLike
        The file written.
    provenance : dict, optional
        Written into the primary header (the campaign's SHA-256, the input frames).
    overwrite : bool
        Replace an existing file.

    Returns
    -------
    Path
        ``path``.
    """
    rel = np.asarray(table["REL_SLICE"], float)
    qc = {"RSRF SLICE RMS": (float(f"{np.sqrt(np.nanmean((rel - 1) ** 2)):.5f}"), "rms of REL_SLICE - 1"),
          "RSRF MEDSIG": (float(f"{np.median(np.asarray(table['SIGMA'], float)):.3e}"), "median SIGMA of RSRF"),
          "RSRF NBINS": (int(len(table)), "rows (slice x bin)")}
    ph = _primary("LMS_RSRF", setting, "RSRF", provenance, qc)
    ph["COMMENT"] = ("relative spectral response per slice of the LMS from the black-body slices frame "
                     "(astrocal.lms.response, docs/lms.md); RSRF has mean 1 over the table")
    th = fits.table_to_hdu(Table(table, meta={}))
    th.name = "RSRF"
    h = th.header
    h["BBTEMP"] = (table.meta["bb_temp_k"], "[K] black body assumed (ESO SEQ WCU_BB_TEMP)")
    h["BBTEMPSG"] = (table.meta["bb_temp_sigma_k"], "[K] its uncertainty behind SIGMA_BB")
    h["NORM"] = (table.meta["norm"], "mean of S/(B |dlam/dcol|) over the table")
    h["NBINS"] = (table.meta["n_bins"], "wavelength bins between LAMLO and LAMHI")
    h["LAMLO"] = (table.meta["lam_lo"], "[um]")
    h["LAMHI"] = (table.meta["lam_hi"], "[um]")
    h["COMMENT"] = "RSRF(slice, LAM) ~ S / (B(LAM, BBTEMP) |dlam/dcol|), S the slice's row sum at a column"
    _not_given(ph, NOT_GIVEN[:4])
    with atomic_path(path, overwrite) as tmp:
        fits.HDUList([fits.PrimaryHDU(header=ph), th]).writeto(tmp)
    return Path(path)


def write_slit_product(table: Table, setting: EchelleSetting, path: str | os.PathLike,
                       provenance: dict | None = None, overwrite: bool = False) -> Path:
    """``LMS_SLIT_THROUGHPUT_<tag>.fits``: primary header + binary table ``THROUGHPUT``
    (:func:`estimate_slit_throughput`).

    Parameters
    ----------
    table : Table
        :func:`estimate_slit_throughput`'s table.
    setting : EchelleSetting
        Its setting (the header's ``ESO INS WLEN CEN``, order, angle).
    path : str or os.PathLike
        The file written.
    provenance : dict, optional
        Written into the primary header (the campaign's SHA-256).
    overwrite : bool
        Replace an existing file.

    Returns
    -------
    Path
        ``path``.
    """
    qc = {"SLIT NPOS": (int(len(np.unique(np.asarray(table["U"])))), "scanned positions off the centre"),
          "SLIT TMIN": (float(f"{np.min(np.asarray(table['T_REL'])):.4f}"), "lowest T_REL")}
    ph = _primary("LMS_SLIT_THROUGHPUT", setting, "WAVE", provenance, qc)
    ph["COMMENT"] = ("point-source throughput of a slice against the position across it, relative to the "
                     "centre, from laser spots of a slit-loss scan (astrocal.lms.response, docs/lms.md)")
    th = fits.table_to_hdu(Table(table, meta={}))
    th.name = "THROUGHPUT"
    th.header["SLWIDTH"] = (SLICE_WIDTH_ARCSEC * 1e3, "[mas] slice width: U = ETA / SLWIDTH")
    th.header["OFFSIGMA"] = (table.meta["offset_sigma_mas"], "[mas] chopper accuracy behind SIGMA_U")
    th.header["REFTOL"] = (table.meta["reference_tolerance"], "[slice widths] |U| of the reference")
    _not_given(ph, [NOT_GIVEN[0], NOT_GIVEN[2], NOT_GIVEN[4]])
    with atomic_path(path, overwrite) as tmp:
        fits.HDUList([fits.PrimaryHDU(header=ph), th]).writeto(tmp)
    return Path(path)


def _bb_temperature(header, source):
    for key in ("HIERARCH ESO SEQ WCU_BB_TEMP", "HIERARCH ESO SEQ WCU BB TEMP"):
        if key in header:
            return float(header[key])
    raise KeyError(f"{source}: header keyword 'ESO SEQ WCU_BB_TEMP' (black-body temperature) missing: the RSRF "
                   "needs it")


def lms_response_from_campaign(campaign: astrocal.campaign.Campaign, geometry: LmsGeometry,
                               spot_tables: Sequence[tuple[int, int, Table]], out: str | os.PathLike, *,
                               provenance: dict | None = None, overwrite: bool = False,
                               bb_temp_sigma_k: float = 5.0, n_bins: int = 32) -> ResponseProducts:
    """The RSRF of every setting with a ``slices`` frame and the slit loss of every setting whose
    laser frames hold a slit-loss scan, written as products into ``out``.

    Settings without such frames get a note in ``notes`` instead of a product.

    Parameters
    ----------
    campaign : Campaign
        The campaign; its ``lms`` frames, gain, read noise and chopper accuracy are used.
    geometry : LmsGeometry
        The fitted geometry (posterior mean).
    spot_tables : sequence of (int, int, Table)
        ``[(setting index, exposure index, Table), ...]`` the measured spot tables.
    out : str or os.PathLike
        The directory of the products.
    provenance : dict, optional
        Written into the products' primary headers.
    overwrite : bool
        Replace existing products.
    bb_temp_sigma_k : float
        The black body's temperature uncertainty [K] (:func:`estimate_rsrf`).
    n_bins : int
        Wavelength bins of the RSRF.

    Returns
    -------
    ResponseProducts
        The tables, the products' paths and the notes.
    """
    lms = campaign.lms
    res = ResponseProducts()
    out = Path(out)
    defaults = dict(gain_e_per_adu=lms.gain_e_per_adu, read_noise_e=lms.read_noise_e)
    for e, st in enumerate(geometry.layout.settings):
        tag = setting_tag(st.lam_c_um)
        frames = [f for f in lms.frames if f.kind == "slices" and abs(f.lam_c_um - st.lam_c_um) < 1e-6]
        if not frames:
            res.notes.append(f"{st.lam_c_um} um: no slices (black-body, mask open) frame: no RSRF")
        else:
            f = frames[0]
            raw = read_lms_frame(f.file, **defaults)
            bg = read_lms_frame(f.background, **defaults) if f.background is not None else None
            red = reduce_lms_frame(raw, bg)
            spectra = extract_slice_spectra(red, geometry, e)
            tab = estimate_rsrf(spectra, _bb_temperature(raw.header, f.file), bb_temp_sigma_k=bb_temp_sigma_k,
                                n_bins=n_bins)
            tab.meta["frame"] = str(f.file)
            res.rsrf[tag] = tab
            prov = dict(provenance or {}, inputs=[str(f.file)] + ([str(f.background)] if f.background else []))
            res.paths[f"lms_rsrf_{tag}"] = write_rsrf_product(tab, st, out / f"LMS_RSRF_{tag}.fits", prov, overwrite)
        mine = [t for se, _, t in spot_tables if se == e]
        if not mine:
            res.notes.append(f"{st.lam_c_um} um: no laser frames: no slit loss")
            continue
        from astropy.table import vstack

        stacked = vstack([Table({"hole": t["hole"], "slice": t["slice"], "line_um": t["line_um"],
                                 "eta_offset_arcsec": t["eta_offset_arcsec"], "flux_e": t["flux_e"], "snr": t["snr"],
                                 "flags": t["flags"], "setting": np.full(len(t), e), "exposure": np.full(len(t), ex),
                                 **({"col": t["col"], "sigma_col": t["sigma_col"]}
                                    if {"col", "sigma_col"} <= set(t.colnames) else {})})
                          for se, ex, t in spot_tables if se == e])
        slit = estimate_slit_throughput(stacked, offset_sigma_mas=lms.offset_sigma_mas)
        if len(slit) == 0:
            res.notes.append(f"{st.lam_c_um} um: no slit loss: {slit.meta['reason']}")
            continue
        res.slit[tag] = slit
        res.paths[f"lms_slit_throughput_{tag}"] = write_slit_product(
            slit, st, out / f"LMS_SLIT_THROUGHPUT_{tag}.fits", provenance, overwrite)
    return res


def read_response_products(out: str | os.PathLike, names: Iterable[str]) -> ResponseProducts:
    """The response products among ``names`` (files in ``out``) read back.

    Parameters
    ----------
    out : str or os.PathLike
        The result directory.
    names : iterable of str
        File names in it (e.g. the manifest's).

    Returns
    -------
    ResponseProducts
        The RSRF and slit-throughput tables by setting tag and their paths (no notes).
    """
    res = ResponseProducts()
    for name in names:
        for prefix, ext, store in (("LMS_RSRF_", "RSRF", res.rsrf), ("LMS_SLIT_THROUGHPUT_", "THROUGHPUT", res.slit)):
            if name.startswith(prefix) and name.endswith(".fits"):
                tag = name[len(prefix):-5]
                store[tag] = Table.read(Path(out) / name, hdu=ext)
                res.paths[prefix.lower() + tag] = Path(out) / name
    return res

