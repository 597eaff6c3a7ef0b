"""The LMS page of the report: written by ``astrocal fit`` beside an LMS fit's products.

``<fit.output>/<lms.name>/report/`` gets ``report.html`` (self-contained: figures embedded as
PNG), ``report.json`` (the same numbers) and ``plots/`` (PNG and PDF):

- the requirement: the DRLD expects the IFU distortion to 1/10 pixel
  (``metis_ifu_distortion``: "1/10th of a pixel after post-processing"); the page compares the
  geometry's posterior 1-sigma along the dispersion (columns) and along the slice (rows), on a
  grid over every slice of every setting, with it, and shows the laser spots' residual rms
  (``QC IFU DISTORT RMS``, which holds the centroid noise too) beside it;
- the QC parameters and the chain's convergence;
- per detector maps of the wavelength and of the 1-sigma of (xi, lam) in pixels, read from
  the ``LMS_GEOMETRY`` product;
- residuals per slice and per laser line (spots: col and row; traces and edges: row);
- the relative spectral response per slice and the slit loss (:mod:`astrocal.lms.response`)
  where the frames gave them, and what they cannot give.
"""
from __future__ import annotations

import datetime as _dt
import html
import os
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table
from matplotlib.figure import Figure

from .. import __version__
from ..atomic import atomic_write_text, check_writable
from ..model.sampling import Diagnostics
from ..model.quality import QC_CONVERGED
from ..plots import save_figure
from ..report.build import report_json
from ..report.html import STYLE, figure_html
from ..resultset import require_complete
from .fit_campaign import hole_prior_summary, load_lms_fit
from .products import DRLD_GOAL_PX, eso, setting_tag
from .fit import LmsFit
from .response import NOT_GIVEN, ResponseProducts, read_response_products
from .traces import N_SLICES, SLICE_HALF_LENGTH_ARCSEC, SettingLike

__all__ = ["position_sigma", "residual_summary", "response_summary", "build_lms_report", "write_lms_report",
           "is_lms_result",
           "write_lms_report_from_dir"]


def position_sigma(fit: LmsFit, setting: SettingLike, n_xi: int = 5,
                   n_lam: int = 9) -> tuple[np.ndarray, np.ndarray]:
    """Posterior 1-sigma [px] of (col, row) on a grid of every slice: ``n_xi`` positions along
    the slice by ``n_lam`` wavelengths over the part of the setting's range that reaches the
    mosaic.

    Parameters
    ----------
    fit : LmsFit
        The fit (its draws).
    setting : int, float or EchelleSetting
        Index, :class:`~astrocal.lms.EchelleSetting` or central wavelength [um].
    n_xi, n_lam : int
        The grid's size along the slice and in wavelength.

    Returns
    -------
    slice : ndarray (N,)
        Slice of each grid point on a detector.
    sd : ndarray (N, 2)
        Posterior 1-sigma of (col, row) [px].
    """
    g = fit.geometry()
    lo, hi = g.wavelength_range(setting)
    pad = 0.04 * (hi - lo)                               # the range is widened by 2 % each side
    xi = np.linspace(-SLICE_HALF_LENGTH_ARCSEC, SLICE_HALF_LENGTH_ARCSEC, n_xi)
    lam = np.linspace(lo + pad, hi - pad, n_lam)
    S, X, L = np.meshgrid(np.arange(1, N_SLICES + 1), xi, lam, indexing="ij")
    S, X, L = S.ravel(), X.ravel(), L.ravel()
    det = g.forward(S, X, L, setting, on_gap="mask").det
    on = det > 0
    pos, _ = fit.position_samples(S[on], X[on], L[on], setting, det=det[on])
    return S[on], pos.std(axis=0, ddof=1)


def residual_summary(residuals: Table) -> list[dict]:
    """Rms residuals [px] per (kind, slice, line, axis) and per kind.

    Parameters
    ----------
    residuals : Table
        The fit's residual table (``kind``, ``slice``, ``axis``, ``residual_px``, ``normalised``,
        optionally ``line_um``).

    Returns
    -------
    list of dict
        ``kind``, ``slice``, ``line_um``, ``n``, ``rms_col_px``, ``rms_row_px``, ``rms_normalised``.
    """
    rows = []
    kind = np.asarray(residuals["kind"], str)
    sl = np.asarray(residuals["slice"], int)
    ax = np.asarray(residuals["axis"], str)
    line = np.asarray(residuals["line_um"], float) if "line_um" in residuals.colnames else np.full(len(kind), np.nan)
    d = np.asarray(residuals["residual_px"], float)
    z = np.asarray(residuals["normalised"], float)
    for k in dict.fromkeys(kind):
        for s in np.unique(sl[kind == k]):
            lines = np.unique(line[(kind == k) & (sl == s)]) if k == "spots" else [np.nan]
            for lam in lines:
                m = (kind == k) & (sl == s) & ((line == lam) if np.isfinite(lam) else True)
                entry = {"kind": k, "slice": int(s), "line_um": None if not np.isfinite(lam) else float(lam),
                         "n": int(np.sum(m & (ax == "row")))}
                for a in ("col", "row"):
                    ma = m & (ax == a)
                    entry[f"rms_{a}_px"] = float(np.sqrt(np.mean(d[ma] ** 2))) if ma.any() else None
                entry["rms_normalised"] = float(np.sqrt(np.mean(z[m] ** 2)))
                rows.append(entry)
    return rows


def response_summary(response: ResponseProducts | None) -> dict:
    """The response part of the report: per setting the RSRF's size and spread and the slit-loss
    rows, the notes (what was not made and why) and what the frames cannot give.

    Parameters
    ----------
    response : ResponseProducts or None
        The response products (None: none were made).

    Returns
    -------
    dict
        ``rsrf``, ``slit`` (by setting tag), ``notes``, ``not_given``.
    """
    out = {"rsrf": {}, "slit": {}, "notes": [], "not_given": list(NOT_GIVEN)}
    if response is None:
        return out
    for tag, t in response.rsrf.items():
        rel = np.asarray(t["REL_SLICE"], float)
        out["rsrf"][tag] = {"rows": int(len(t)), "slices": int(len(np.unique(np.asarray(t["SLICE"])))),
                            "rsrf_min": float(np.min(t["RSRF"])), "rsrf_max": float(np.max(t["RSRF"])),
                            "rel_slice_rms": float(np.sqrt(np.nanmean((rel - 1) ** 2))),
                            "median_sigma": float(np.median(t["SIGMA"])),
                            "median_sigma_bb": float(np.median(t["SIGMA_BB"])),
                            "bb_temp_k": float(t.meta.get("bb_temp_k", t.meta.get("BBTEMP", np.nan)))}
    for tag, t in response.slit.items():
        out["slit"][tag] = [{"line_um": float(r["LINE"]), "u": float(r["U"]), "t_rel": float(r["T_REL"]),
                             "sigma_t": float(r["SIGMA_T"]), "sigma_u": float(r["SIGMA_U"]), "nspot": int(r["NSPOT"])}
                            for r in t]
    out["notes"] = list(response.notes)
    return out


def build_lms_report(fit: LmsFit, residuals: Table, qc: dict, products: dict,
                     response: ResponseProducts | None = None) -> dict:
    """The report's numbers as a plain dict.

    Parameters
    ----------
    fit : LmsFit
        The fit.
    residuals : Table
        Its residual table (``lms_residuals.ecsv``).
    qc : dict
        The products' QC (:func:`~astrocal.lms.products.lms_qc`).
    products : dict
        ``{name: path}`` of the products.
    response : ResponseProducts, optional
        The response products.

    Returns
    -------
    dict
        The numbers the page shows (``report.json``).
    """
    d = fit.diagnostics
    settings = []
    worst = np.zeros(2)
    rms = []
    for e, st in enumerate(fit.layout.settings):
        s, sd = position_sigma(fit, e)
        worst = np.maximum(worst, sd.max(axis=0))
        rms.append(sd ** 2)
        per_slice = [{"slice": int(k), "max_col_px": float(sd[s == k, 0].max()),
                      "max_row_px": float(sd[s == k, 1].max())} for k in np.unique(s)]
        settings.append({"lam_c_um": st.lam_c_um, "order": st.order, "echelle_deg": st.echelle_deg,
                         "sigma_col_px": {"rms": float(np.sqrt(np.mean(sd[:, 0] ** 2))), "max": float(sd[:, 0].max())},
                         "sigma_row_px": {"rms": float(np.sqrt(np.mean(sd[:, 1] ** 2))), "max": float(sd[:, 1].max())},
                         "per_slice": per_slice})
    allrms = np.sqrt(np.mean(np.concatenate(rms), axis=0))
    requirements = []
    for k, axis, what in ((0, "col", "along the dispersion (columns)"), (1, "row", "along the slice (rows)")):
        requirements.append({"id": f"DRLD-IFU-DISTORT-{axis.upper()}",
                             "title": f"IFU geometry known to 1/10 pixel {what} (DRLD, metis_ifu_distortion)",
                             "metric": f"max over every slice and setting of the posterior 1-sigma of {axis}",
                             "value": float(worst[k]), "rms": float(allrms[k]), "max": DRLD_GOAL_PX, "unit": "pixel",
                             "status": "pass" if worst[k] < DRLD_GOAL_PX else "fail"})
    return {
        "kind": "lms", "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"),
        "astrocal_version": __version__, "truth_direction": fit.truth,
        "requirements": requirements,
        "qc": {"rms_px": qc["rms_px"], "fwhm_px": qc.get("fwhm_px"), "nspots": qc["nspots"],
               "converged": qc.get("converged"), "goal_px": DRLD_GOAL_PX},
        "settings": settings,
        "hyperparameters": {n.replace("log_", ""): {"mean": float(np.exp(s).mean()), "sd": float(np.exp(s).std(ddof=1))}
                            for n, s in zip(fit.hyper_names, fit.phi_samples.T)},
        "convergence": None if d is None else {"converged": d.converged, "tau": np.asarray(d.tau).tolist(),
                                               "n_steps": d.n_steps, "n_burn": d.n_burn,
                                               "acceptance": float(np.mean(d.acceptance)),
                                               "warnings": list(d.warnings)},
        "residuals": residual_summary(residuals),
        "products": {k: Path(p).name for k, p in products.items()},
        "n_draws": int(len(fit.theta_samples)),
        "response": response_summary(response),
        "hole_errors": hole_error_summary(fit),
        "laser_coverage": {"per_setting": list(fit.coverage), "notes": list(fit.coverage_notes)},
    }


def hole_error_summary(fit: LmsFit) -> dict:
    """The mask's hole errors for the page: where their prior came from (the joint with the
    imager's lab fit, or the tolerance) and per hole its prior and posterior [um].

    Parameters
    ----------
    fit : LmsFit
        The fit.

    Returns
    -------
    dict
        ``summary`` (text), ``kind``, ``holes`` (per hole).
    """
    out = {"summary": hole_prior_summary(fit), "kind": "none", "holes": []}
    if fit.holes is None:
        return out
    pr = fit.holes.prior
    out["kind"] = pr.source.get("kind", "tolerance")
    out["source"] = {k: v for k, v in pr.source.items() if k in ("file", "sha256", "modified_utc", "n_shared",
                                                                   "n_tolerance", "sigma_um", "mask_name")}
    hs = fit.hole_samples
    psd = np.sqrt(np.diag(pr.cov_um2)).reshape(-1, 2)
    for k, h in enumerate(pr.hole_ids):
        out["holes"].append({"hole": int(h), "prior_mean_um": np.asarray(pr.mean_um[k]).tolist(),
                             "prior_sd_um": psd[k].tolist(), "mean_um": hs[:, k].mean(axis=0).tolist(),
                             "sd_um": hs[:, k].std(axis=0, ddof=1).tolist()})
    return out


def _detector_maps_figure(path, step=16):
    """λ, σ_λ and σ_ξ in px per detector from an ``LMS_GEOMETRY`` file."""
    fig = Figure(figsize=(11, 12), layout="constrained")
    axes = fig.subplots(4, 3)
    with fits.open(path) as hdul:
        for i, det in enumerate((1, 2, 3, 4)):
            dl = hdul[f"DET{det}.DLAM"]
            lamref = dl.header["LAMREF"]
            s1 = int(dl.header["CDELT1"])
            k = max(step // s1, 1)
            lam = np.asarray(dl.data[::k, ::k], float) + lamref
            xi = np.asarray(hdul[f"DET{det}.XI"].data[::k, ::k], float)
            sl = np.asarray(hdul[f"DET{det}.SLICE"].data[::k, ::k])
            same = (sl[:, 1:] == sl[:, :-1]) & (sl[:, 1:] > 0)
            disp = np.nanmedian(np.abs(np.diff(lam, axis=1))[same]) / (k * s1) if same.any() else np.nan
            same_r = (sl[1:] == sl[:-1]) & (sl[1:] > 0)
            scale = np.nanmedian(np.abs(np.diff(xi, axis=0))[same_r]) / (k * s1) if same_r.any() else np.nan
            sh = hdul[f"DET{det}.SIGMA_LAM"]
            ss = float(sh.header["CDELT1"])
            sig_lam = np.asarray(sh.data, float) / disp
            sig_xi = np.asarray(hdul[f"DET{det}.SIGMA_XI"].data, float) / scale
            ext_main = [-0.5, 2047.5, -0.5, 2047.5]
            ext_sig = [-0.5 * ss, (sig_lam.shape[1] - 0.5) * ss, -0.5 * ss, (sig_lam.shape[0] - 0.5) * ss]
            for j, (img, ext, label) in enumerate(((lam, ext_main, "lambda [um]"),
                                                   (sig_lam, ext_sig, "1-sigma lambda [px]"),
                                                   (sig_xi, ext_sig, "1-sigma xi [px]"))):
                ax = axes[i, j]
                im = ax.imshow(img, origin="lower", extent=ext, interpolation="nearest",
                               cmap="viridis" if j == 0 else "magma")
                fig.colorbar(im, ax=ax, shrink=0.8, label=label)
                ax.set_title(f"DET{det}: {label}", fontsize=9)
                ax.tick_params(labelsize=7)
    return fig


def _residual_figure(residuals):
    fig = Figure(figsize=(11, 6), layout="constrained")
    axes = fig.subplots(2, 1, sharex=True)
    kind = np.asarray(residuals["kind"], str)
    ax_ = np.asarray(residuals["axis"], str)
    sl = np.asarray(residuals["slice"], float)
    d = np.asarray(residuals["residual_px"], float)
    line = np.asarray(residuals["line_um"], float)
    rng = np.random.default_rng(0)
    for ax, a in zip(axes, ("col", "row")):
        m = (kind == "spots") & (ax_ == a)
        for lam in np.unique(line[m]):
            mm = m & (line == lam)
            ax.plot(sl[mm] + rng.uniform(-0.25, 0.25, mm.sum()), d[mm], ".", ms=4, label=f"spots {lam:.4f} um")
        if a == "row":
            for k, c in (("traces", "0.4"), ("edges", "0.7")):
                mm = (kind == k)
                if mm.any():
                    ax.plot(sl[mm] + rng.uniform(-0.3, 0.3, mm.sum()), d[mm], ",", color=c, label=k)
        for y in (-DRLD_GOAL_PX, DRLD_GOAL_PX):
            ax.axhline(y, color="r", lw=0.8, ls="--")
        ax.set_ylabel(f"residual {a} [px]")
        ax.legend(fontsize=7, ncol=4, loc="upper right")
    axes[1].set_xlabel("slice")
    axes[1].set_xticks(range(1, N_SLICES + 1))
    return fig


def _rsrf_figure(table, title):
    """RSRF per slice against wavelength (top) and each slice over the mean of the slices (bottom)."""
    fig = Figure(figsize=(11, 7), layout="constrained")
    axes = fig.subplots(2, 1, sharex=True)
    sl = np.asarray(table["SLICE"], int)
    cmap = __import__("matplotlib").colormaps["viridis"]
    for k in np.unique(sl):
        m = sl == k
        lam = np.asarray(table["LAM"], float)[m]
        for ax, col, sig in ((axes[0], "RSRF", "SIGMA"), (axes[1], "REL_SLICE", "SIGMA_REL")):
            ax.errorbar(lam, np.asarray(table[col], float)[m], np.asarray(table[sig], float)[m], fmt=".-", ms=2, lw=0.6,
                        color=cmap((k - 1) / (N_SLICES - 1)), label=f"{k}" if k in (1, 7, 14, 15, 21, 28) else None)
    axes[0].set_ylabel("RSRF (mean 1)")
    axes[1].set_ylabel("slice / mean of slices")
    axes[1].set_xlabel("wavelength [um]")
    axes[0].set_title(title, fontsize=10)
    axes[0].legend(title="slice", fontsize=7, ncol=6)
    return fig


def _slit_figure(table, title):
    """Relative point-source throughput against the position across the slice, per laser line."""
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    for lam in np.unique(np.asarray(table["LINE"], float)):
        m = np.isclose(np.asarray(table["LINE"], float), lam)
        u = np.concatenate([[0.0], np.asarray(table["U"], float)[m]])
        tr = np.concatenate([[1.0], np.asarray(table["T_REL"], float)[m]])
        st = np.concatenate([[0.0], np.asarray(table["SIGMA_T"], float)[m]])
        su = np.concatenate([[0.0], np.asarray(table["SIGMA_U"], float)[m]])
        o = np.argsort(u)
        ax.errorbar(u[o], tr[o], st[o], su[o], fmt="o-", ms=3, lw=0.8, capsize=2, label=f"{lam:.4f} um")
    ax.set_xlabel("position across the slice u [slice widths] (0: centre, reference)")
    ax.set_ylabel("throughput T(u) / T(0)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    return fig


def _e(v):
    return html.escape("" if v is None else str(v))


def _f(v, fmt=".3g"):
    return "&ndash;" if v is None else format(v, fmt)


def _render(r, figures):
    q = r["qc"]
    conv = r.get("convergence") or {}
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>astrocal LMS geometry"
             f"</title><style>{STYLE}</style></head><body>"]
    if conv and not conv.get("converged"):
        parts.append('<p class="qc-fail" id="quality">NOT CONVERGED: the emcee chain does not meet its rule ('
                     + _e("; ".join(conv.get("warnings", []))) + "); the posterior may be too narrow: run longer "
                     "(--steps, --resume)</p>")
    parts.append("<h1>LMS geometry: distortion and wavelength solution</h1>")
    parts.append(f"<p class=\"small\">astrocal {_e(r['astrocal_version'])}, {_e(r['created'])}; optical-model "
                 f"direction taken as exact: {_e(r['truth_direction'])}; {r['n_draws']} posterior draws; products: "
                 + ", ".join(f"<code>{_e(v)}</code>" for v in r["products"].values()) + "</p>")
    parts.append("<h2>Requirements</h2><table id=\"requirements\"><thead><tr><th>id</th><th>requirement</th>"
                 "<th>metric</th><th>value</th><th>rms</th><th>pass if</th><th>status</th></tr></thead><tbody>")
    for q_ in r["requirements"]:
        cls = "pass" if q_["status"] == "pass" else "fail"
        parts.append(f"<tr class=\"req {cls}\"><td>{_e(q_['id'])}</td><td>{_e(q_['title'])}</td>"
                     f"<td>{_e(q_['metric'])}</td><td class=\"num\">{_f(q_['value'], '.4f')} px</td>"
                     f"<td class=\"num\">{_f(q_['rms'], '.4f')} px</td><td>&lt; {q_['max']} px</td>"
                     f"<td class=\"status\">{_e(q_['status'])}</td></tr>")
    parts.append("</tbody></table>")
    parts.append("<p class=\"small\">The DRLD expects the IFU distortion to 1/10 pixel "
                 "(metis_ifu_distortion) and the wavelength solution to 1/5 pixel (metis_ifu_wavecal; 1/10 in "
                 "the operations page). Columns are measured only in slices with laser spots; elsewhere they "
                 "follow the hierarchical prior over the slices.</p>")
    parts.append("<h2>QC</h2><table id=\"qc\"><tbody>"
                 f"<tr><td>QC IFU DISTORT RMS (laser spots, measured - predicted)</td><td class=\"num\">"
                 f"{_f(q['rms_px'], '.3f')} px</td></tr>"
                 f"<tr><td>QC IFU DISTORT FWHM (median of the spots)</td><td class=\"num\">"
                 f"{_f(q['fwhm_px'], '.3f')} px</td></tr>"
                 f"<tr><td>QC IFU DISTORT NSPOTS</td><td class=\"num\">{q['nspots']}</td></tr>"
                 f"<tr><td>converged (ASTROCAL QC CONVERGED)</td><td>{_e(q['converged'])}</td></tr></tbody></table>")
    parts.append("<h2>Per setting</h2><table id=\"settings\"><thead><tr><th>lam_c (um)</th><th>order</th>"
                 "<th>echelle (deg)</th><th>1-sigma col rms / max (px)</th><th>1-sigma row rms / max (px)</th>"
                 "</tr></thead><tbody>")
    for s in r["settings"]:
        parts.append(f"<tr><td>{s['lam_c_um']}</td><td>{s['order']}</td><td>{s['echelle_deg']:.4f}</td>"
                     f"<td class=\"num\">{s['sigma_col_px']['rms']:.4f} / {s['sigma_col_px']['max']:.4f}</td>"
                     f"<td class=\"num\">{s['sigma_row_px']['rms']:.4f} / {s['sigma_row_px']['max']:.4f}</td></tr>")
    parts.append("</tbody></table>")
    lc = r.get("laser_coverage") or {}
    if lc.get("per_setting"):
        parts.append("<h2>Laser coverage</h2><p class=\"small\">Laser exposures whose spots reach each slice "
                     "(slices 1&ndash;28); only spots fix a slice's columns (its wavelength zero point).</p>"
                     "<table id=\"laser-coverage\"><thead><tr><th>lam_c (um)</th><th>exposures per slice</th>"
                     "<th>slices without spots</th></tr></thead><tbody>")
        for c in lc["per_setting"]:
            parts.append(f"<tr><td>{c['lam_c_um']}</td><td><code>{' '.join(str(n) for n in c['exposures_per_slice'])}"
                         f"</code></td><td class=\"num\">{len(c['slices_without_spots'])}</td></tr>")
        parts.append("</tbody></table>")
    if lc.get("notes"):
        parts.append("<ul id=\"coverage-notes\">" + "".join(f"<li>{_e(n)}</li>" for n in lc["notes"]) + "</ul>")
    he = r.get("hole_errors")
    if he:
        parts.append("<h2>Mask hole errors</h2><p id=\"hole-prior\">" + _e(he["summary"]) + "</p>")
        if he["holes"]:
            parts.append("<table id=\"holes\"><thead><tr><th>hole</th><th>prior dx, dy (um)</th>"
                         "<th>posterior dx, dy (um)</th></tr></thead><tbody>")
            for h in he["holes"]:
                parts.append(f"<tr><td>{h['hole']}</td><td class=\"num\">{h['prior_mean_um'][0]:+.3f} &plusmn; "
                             f"{h['prior_sd_um'][0]:.3f}, {h['prior_mean_um'][1]:+.3f} &plusmn; {h['prior_sd_um'][1]:.3f}"
                             f"</td><td class=\"num\">{h['mean_um'][0]:+.3f} &plusmn; {h['sd_um'][0]:.3f}, "
                             f"{h['mean_um'][1]:+.3f} &plusmn; {h['sd_um'][1]:.3f}</td></tr>")
            parts.append("</tbody></table>")
    parts.append("<h2>Hyperparameters and convergence</h2><p>"
                 + "; ".join(f"{_e(n)} {v['mean']:.4g} &plusmn; {v['sd']:.2g}" for n, v in r["hyperparameters"].items())
                 + "</p>")
    if conv:
        parts.append(f"<p class=\"small\">steps {conv['n_steps']}, burn-in {conv['n_burn']}, autocorrelation times "
                     f"{', '.join(f'{t:.3g}' for t in conv['tau'])}, mean acceptance {conv['acceptance']:.3f}, "
                     f"converged: <b>{_e(conv['converged'])}</b></p>")
    parts.append("<h2>Residuals per slice and line</h2><table id=\"residuals\"><thead><tr><th>kind</th><th>slice</th>"
                 "<th>line (um)</th><th>points</th><th>rms col (px)</th><th>rms row (px)</th>"
                 "<th>rms normalised</th></tr></thead><tbody>")
    for e in r["residuals"]:
        parts.append(f"<tr><td>{_e(e['kind'])}</td><td>{e['slice']}</td><td>{_f(e['line_um'], '.4f')}</td>"
                     f"<td class=\"num\">{e['n']}</td><td class=\"num\">{_f(e['rms_col_px'], '.4f')}</td>"
                     f"<td class=\"num\">{_f(e['rms_row_px'], '.4f')}</td>"
                     f"<td class=\"num\">{_f(e['rms_normalised'], '.3f')}</td></tr>")
    parts.append("</tbody></table>")
    parts.append(_render_response(r.get("response") or {}))
    parts.append("<h2>Figures</h2>")
    parts.extend(figure_html(f) for f in figures)
    parts.append("<p class=\"small\">The same numbers are in <code>report.json</code>.</p></body></html>")
    return "\n".join(parts) + "\n"


def _render_response(rs):
    parts = ["<h2>Relative spectral response and slit loss</h2>",
             "<p class=\"small\">From the same frames (astrocal.lms.response): the RSRF per slice from the "
             "black-body slices frames (LMS_RSRF_&lt;tag&gt;.fits), the throughput of a point source against its "
             "position across the slice from laser frames of a slit-loss scan (LMS_SLIT_THROUGHPUT_&lt;tag&gt;.fits)."
             "</p>"]
    if rs.get("rsrf"):
        parts.append("<table id=\"rsrf\"><thead><tr><th>setting</th><th>slices</th><th>rows</th><th>RSRF min..max</th>"
                     "<th>rms(slice/mean - 1)</th><th>median sigma</th><th>median sigma_BB</th><th>T_BB (K)</th>"
                     "</tr></thead><tbody>")
        for tag, v in rs["rsrf"].items():
            parts.append(f"<tr><td>{_e(tag)}</td><td>{v['slices']}</td><td>{v['rows']}</td>"
                         f"<td class=\"num\">{v['rsrf_min']:.4f} .. {v['rsrf_max']:.4f}</td>"
                         f"<td class=\"num\">{v['rel_slice_rms']:.4f}</td>"
                         f"<td class=\"num\">{v['median_sigma']:.2e}</td>"
                         f"<td class=\"num\">{v['median_sigma_bb']:.2e}</td><td>{_f(v['bb_temp_k'], '.1f')}</td></tr>")
        parts.append("</tbody></table>")
    if rs.get("slit"):
        parts.append("<table id=\"slit\"><thead><tr><th>setting</th><th>line (um)</th><th>u (slice widths)</th>"
                     "<th>T(u)/T(0)</th><th>sigma</th><th>sigma_u</th><th>spots</th></tr></thead><tbody>")
        for tag, rows in rs["slit"].items():
            for v in rows:
                parts.append(f"<tr><td>{_e(tag)}</td><td>{v['line_um']:.4f}</td><td class=\"num\">{v['u']:+.3f}</td>"
                             f"<td class=\"num\">{v['t_rel']:.4f}</td><td class=\"num\">{v['sigma_t']:.4f}</td>"
                             f"<td class=\"num\">{v['sigma_u']:.3f}</td><td class=\"num\">{v['nspot']}</td></tr>")
        parts.append("</tbody></table>")
    if rs.get("notes"):
        parts.append("<p>Not made from these frames:</p><ul id=\"response-notes\">"
                     + "".join(f"<li>{_e(n)}</li>" for n in rs["notes"]) + "</ul>")
    if rs.get("not_given"):
        parts.append("<p>What these frames cannot give:</p><ul id=\"not-given\">"
                     + "".join(f"<li>{_e(n)}</li>" for n in rs["not_given"]) + "</ul>")
    return "\n".join(parts)


def write_lms_report(fit: LmsFit, out: str | os.PathLike, residuals: Table, qc: dict, products: dict,
                     overwrite: bool = False, report_dir: str | os.PathLike | None = None,
                     response: ResponseProducts | None = None) -> dict:
    """Write ``out/report/report.html``, ``report.json`` and ``plots/`` (or into ``report_dir``).

    Nothing is overwritten unless ``overwrite``.

    Parameters
    ----------
    fit : LmsFit
        The fit.
    out : str or os.PathLike
        The result directory.
    residuals : Table
        The fit's residual table.
    qc : dict
        The products' QC.
    products : dict
        ``{name: path}`` of the products (the geometry products give the maps).
    overwrite : bool
        Replace existing files.
    report_dir : str or os.PathLike, optional
        Where to write instead of ``out/report``.
    response : ResponseProducts, optional
        The :class:`~astrocal.lms.response.ResponseProducts` to show (None: none).

    Returns
    -------
    dict
        ``{name: path}`` of every file written.
    """
    rdir = Path(report_dir) if report_dir is not None else Path(out) / "report"
    for name in ("report.html", "report.json"):
        check_writable(rdir / name, overwrite)
    (rdir / "plots").mkdir(parents=True, exist_ok=True)
    report = build_lms_report(fit, residuals, qc, products, response)
    figures, written = [], {}

    def add(name, title, caption, make):
        paths = save_figure(make(), rdir / "plots" / name, overwrite=overwrite)
        figures.append({"name": name, "title": title, "caption": caption, "png": paths["png"], "pdf": paths["pdf"]})
        written.update({f"{name}.png": paths["png"], f"{name}.pdf": paths["pdf"]})

    for st in fit.layout.settings:
        tag = setting_tag(st.lam_c_um)
        path = products.get(f"lms_geometry_{tag}")
        if path is not None:
            add(f"lms_maps_{tag}", f"Maps per detector, {st.lam_c_um} um",
                "Wavelength of every pixel (posterior mean) and the posterior 1-sigma of lambda and xi at fixed "
                "pixel, in pixels (divided by the chip's median dispersion and along-slice scale), from the "
                f"LMS_GEOMETRY_{tag} product.", lambda path=path: _detector_maps_figure(path))
    add("lms_residuals", "Residuals per slice and line",
        "Posterior-mean residuals (measured - predicted) of the laser spots per slice, coloured by line (top: "
        "columns, bottom: rows, with the traces and edges); dashed: the DRLD's 1/10 pixel.",
        lambda: _residual_figure(residuals))
    if response is not None:
        for tag, t in response.rsrf.items():
            add(f"lms_rsrf_{tag}", f"Relative spectral response per slice, {tag.replace('p', '.')} um",
                "RSRF of every slice (top; mean 1 over the setting, relative to a black body at the header's "
                "temperature) and each slice over the mean of the slices in the bin (bottom; free of the black "
                f"body), with 1-sigma bars, from LMS_RSRF_{tag}.",
                lambda t=t, tag=tag: _rsrf_figure(t, f"LMS_RSRF_{tag}"))
        for tag, t in response.slit.items():
            add(f"lms_slit_{tag}", f"Slit loss, {tag.replace('p', '.')} um",
                "Throughput of a point source (a WCU pinhole) into its slice against its commanded position across "
                "the slice, relative to the centre, per laser line; vertical bars 1-sigma of the photometry, "
                f"horizontal bars the chopper's accuracy; from LMS_SLIT_THROUGHPUT_{tag}.",
                lambda t=t, tag=tag: _slit_figure(t, f"LMS_SLIT_THROUGHPUT_{tag}"))
    report["figures"] = [{"name": f["name"], "title": f["title"], "png": str(Path(f["png"]).relative_to(rdir)),
                          "pdf": str(Path(f["pdf"]).relative_to(rdir))} for f in figures]
    written["report.json"] = atomic_write_text(rdir / "report.json", report_json(report), overwrite=overwrite)
    written["report.html"] = atomic_write_text(rdir / "report.html", _render(report, figures), overwrite=overwrite)
    return written


def is_lms_result(path: str | os.PathLike) -> bool:
    """Whether a directory is one that ``astrocal fit`` wrote for an ``[lms]`` data set.

    Parameters
    ----------
    path : str or os.PathLike
        The directory.

    Returns
    -------
    bool
        True when it holds ``lms_fit.json``.
    """
    return (Path(path) / "lms_fit.json").exists()


def write_lms_report_from_dir(out: str | os.PathLike, report_dir: str | os.PathLike | None = None,
                              overwrite: bool = False) -> tuple[dict, dict]:
    """The report page of a complete LMS result directory (``astrocal report <fit.output>/lms``):
    the fit from its draws (:func:`~astrocal.lms.fit_campaign.load_lms_fit`), the convergence
    from ``lms_fit.json``, the residuals from ``lms_residuals.ecsv``, the QC from the
    ``IFU_DISTORTION_TABLE`` product's header and the response products with the notes of what
    they lack (``lms_fit.json`` ``response_notes``).

    Parameters
    ----------
    out : str or os.PathLike
        The result directory.
    report_dir : str or os.PathLike, optional
        Where to write instead of ``out/report``.
    overwrite : bool
        Replace existing files.

    Returns
    -------
    written : dict
        ``{name: path}`` of every file written.
    report : dict
        The report's numbers.
    """
    import json

    out = Path(out)
    manifest = require_complete(out)
    fit = load_lms_fit(out)
    d = json.loads((out / "lms_fit.json").read_text()).get("diagnostics") or {}
    if d:
        fit.diagnostics = Diagnostics(np.asarray(d.get("tau") or [], float), d.get("acceptance"), d.get("n_steps"),
                                      d.get("n_burn"), np.asarray(d.get("n_effective") or [], float),
                                      d.get("converged"), list(d.get("warnings") or []))
    residuals = Table.read(out / "lms_residuals.ecsv", format="ascii.ecsv")
    products = {}
    for name in manifest["files"]:
        for prefix in ("IFU_DISTORTION_TABLE_", "LMS_GEOMETRY_"):
            if name.startswith(prefix) and name.endswith(".fits"):
                products[prefix.lower() + name[len(prefix):-5]] = out / name
    response = read_response_products(out, manifest["files"])
    response.notes = list(json.loads((out / "lms_fit.json").read_text()).get("response_notes") or [])
    products.update(response.paths)
    tables = sorted(k for k in products if k.startswith("ifu_distortion_table_"))
    if not tables:
        raise FileNotFoundError(f"{out}: no IFU_DISTORTION_TABLE_<tag>.fits in the result: fit again with "
                                "this astrocal to write the products")
    h = fits.getheader(products[tables[0]])
    conv = h.get(QC_CONVERGED)
    qc = {"rms_px": float(h.get(eso("QC.IFU.DISTORT.RMS"), np.nan)), "nspots": int(h[eso("QC.IFU.DISTORT.NSPOTS")]),
          "fwhm_px": float(h[eso("QC.IFU.DISTORT.FWHM")]) if eso("QC.IFU.DISTORT.FWHM") in h else None,
          "converged": conv if isinstance(conv, bool) else None}
    written = write_lms_report(fit, out, residuals, qc, products, overwrite=overwrite, report_dir=report_dir,
                               response=response)
    return written, json.loads(written["report.json"].read_text())
