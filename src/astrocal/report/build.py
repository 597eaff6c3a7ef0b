"""The numbers of the accuracy-budget report, computed from a fit's result directory.

A result directory is what ``astrocal fit`` writes per filter: ``posterior.h5``,
``fit.json``, ``summary.ecsv``, ``residuals.ecsv`` and the products. :func:`build_report`
returns a plain dict (written as ``report.json``; the HTML page shows the same numbers):

- ``map_accuracy``: the 1-sigma of the map, ``sigma(p) = sqrt(sigma_x**2 + sigma_y**2)``
  of the linear-grid position ``M (G(p) - G(b))`` (the AstroMet ``RAWX_OFF_ERR``,
  ``RAWY_OFF_ERR``), on a regular grid of ``n x n`` positions from corner to corner of the
  detector: its rms and maximum in mas and pixels. Measured relative to the boresight,
  since the absolute position of the field is a gauge (the mask's position), not a
  property of the instrument;
- ``pixel_scale``: mean and sd of the areal pixel scale of the field's affine part;
- ``residuals``: per dataset, the rms of the posterior-mean residuals of the points used
  (mas, pixels), the mean chi-square and the sd of the normalised residuals;
- ``outliers``, ``evidence`` (degree and evidence table), ``convergence``;
- ``stability`` (with an earlier result): relative change of the pixel scale, largest
  change of the distortion over the field (each result's offsets relative to its own
  linear grid) over the detector's half-diagonal, and the position change that the scale
  change causes at the detector's corners (mas);
- ``requirements``: each requirement of the requirements file with pass or fail.
"""
from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits

from .. import __version__
from ..model.result import load_chain, load_posterior, load_residuals, residual_rms
from ..products import metis_band, posterior_solution
from .requirements import METRICS, evaluate, load_requirements

#: positions per axis of the grid on which maps are evaluated for the numbers
GRID = 65


@dataclass
class Result:
    """A loaded result directory."""

    path: Path
    posterior: object
    residuals: object  # astropy Table or None
    chain: object  # (steps, walkers, ndim) or None
    info: dict
    filter: str
    instrument: str
    band: object  # "LM", "N" or None
    solution: object  # posterior-mean Solution with sigma

    @property
    def detector_shape(self):
        return self.posterior.detector_shape


def is_result_dir(path):
    return (Path(path) / "posterior.h5").exists()


def find_results(path):
    """Result directories at ``path``: itself if it holds ``posterior.h5``, else its
    sub-directories that do (one per filter, as ``astrocal fit`` writes them)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such result directory")
    if is_result_dir(path):
        return [path]
    found = sorted(p for p in path.iterdir() if p.is_dir() and is_result_dir(p))
    if not found:
        raise FileNotFoundError(f"{path}: no fit result here (no posterior.h5 in it or in its "
                                "sub-directories); run astrocal fit first")
    return found


def _filter_and_instrument(path, info):
    filt = info.get("filter")
    instrument = info.get("instrument") or ""
    files = sorted(Path(path).glob("astromet_*.fits"))
    if files:
        if not filt and len(files) == 1:
            filt = files[0].stem[len("astromet_"):]
        if not instrument:
            instrument = str(fits.getheader(files[0], 0).get("INSTRUME", ""))
    return filt or Path(path).name, instrument


def load_result(path, band=None):
    """Load a result directory; ``band`` overrides the METIS band of its instrument."""
    path = Path(path)
    post = load_posterior(path)
    info = post.info
    try:
        residuals = load_residuals(path)
    except FileNotFoundError:
        residuals = None
    try:
        chain = load_chain(path)
    except (FileNotFoundError, ValueError):
        chain = None
    filt, instrument = _filter_and_instrument(path, info)
    band = band or metis_band(instrument)
    return Result(path, post, residuals, chain, info, filt, instrument, band,
                  posterior_solution(post, filt))


# =========================================================================== numbers
def map_accuracy(solution, n=GRID):
    """rms and maximum over an ``n`` x ``n`` grid of the map's 1-sigma (mas and pixels)."""
    ny, nx = solution.detector_shape
    xs, ys = np.linspace(0, nx - 1, n), np.linspace(0, ny - 1, n)
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    sx, sy = solution.sigma(xx.ravel(), yy.ravel())
    sig = np.hypot(sx, sy)
    mas = solution.plate_scale * 1e3
    k = int(np.argmax(sig))
    return {"rms_px": float(np.sqrt(np.mean(sig**2))), "max_px": float(sig.max()),
            "rms_mas": float(np.sqrt(np.mean(sig**2)) * mas), "max_mas": float(sig.max() * mas),
            "max_at_px": [float(xx.ravel()[k]), float(yy.ravel()[k])], "grid": n,
            "definition": "sqrt(sigma_x^2 + sigma_y^2) of the linear-grid position relative to "
                          "the boresight, on an n x n grid from corner to corner (0-based pixels)"}


def residual_summary(table):
    """Per dataset: points, used, outliers, rms (mas, px, per axis), mean chi-square and the
    sd of the normalised residuals of the points used."""
    rows = []
    names = np.asarray(table["dataset"], str)
    kinds = np.asarray(table["kind"], str)
    out = np.asarray(table["outlier"], bool)
    for name in dict.fromkeys(names):
        sel = names == name
        used = sel & ~out
        z = np.concatenate([np.asarray(table["zx"], float)[used], np.asarray(table["zy"], float)[used]])
        rows.append({
            "dataset": str(name), "kind": str(kinds[sel][0]), "n_points": int(sel.sum()),
            "n_used": int(used.sum()), "n_outliers": int((sel & out).sum()),
            "rms_mas": residual_rms(table, "mas", [name]), "rms_px": residual_rms(table, "px", [name]),
            "rms_x_px": float(np.sqrt(np.mean(np.asarray(table["dx_px"], float)[used] ** 2))) if used.any() else None,
            "rms_y_px": float(np.sqrt(np.mean(np.asarray(table["dy_px"], float)[used] ** 2))) if used.any() else None,
            "chi2_mean": float(np.mean(np.asarray(table["chi2"], float)[used])) if used.any() else None,
            "z_sd": float(np.std(z)) if z.size else None,
        })
    return rows


def outlier_list(table, limit=100):
    out = np.asarray(table["outlier"], bool)
    rows = []
    for k in np.flatnonzero(out)[:limit]:
        rows.append({c: (table[c][k].item() if hasattr(table[c][k], "item") else table[c][k])
                     for c in ("point_id", "dataset", "exposure", "source", "x", "y", "dx_px", "dy_px")})
    return rows


def evidence_table(info):
    ev = [e for e in info.get("evidence", []) if e]
    finite = [e["log_evidence"] for e in ev if e.get("log_evidence") is not None
              and np.isfinite(e["log_evidence"])]
    best = max(finite) if finite else None
    rows = []
    for e in ev:
        z = e.get("log_evidence")
        ok = z is not None and np.isfinite(z)
        rows.append({"degree": e.get("degree"), "log_evidence": z if ok else None,
                     "delta_log_evidence": (z - best) if ok and best is not None else None,
                     "note": e.get("note", "")})
    return rows


def convergence(info, chain):
    d = dict(info.get("diagnostics", {}))
    tau = [t for t in (d.get("tau") or []) if t is not None]
    d["tau_max"] = max(tau) if tau else None
    d["steps_over_tau"] = (d.get("steps") / max(tau)) if tau and d.get("steps") else None
    d["hyper_names"] = info.get("hyper_names", [])
    d["unconstrained"] = info.get("unconstrained", [])
    if chain is not None:
        d["walkers"] = int(chain.shape[1])
    return d


def stability(new, old, n=GRID):
    """Changes between ``new`` and an earlier result ``old`` (both :class:`Result`)."""
    if tuple(new.detector_shape) != tuple(old.detector_shape):
        raise ValueError(f"{new.path} and {old.path} cover different detectors "
                         f"({new.detector_shape} and {old.detector_shape}); cannot compare")
    sn, so = new.posterior.pixel_scale_samples(), old.posterior.pixel_scale_samples()
    mn, sdn, mo, sdo = sn.mean(), sn.std(ddof=1), so.mean(), so.std(ddof=1)
    rel = mn / mo - 1.0
    rel_sd = float(np.hypot(sdn / mo, mn * sdo / mo**2))
    ny, nx = new.detector_shape
    xs, ys = np.linspace(0, nx - 1, n), np.linspace(0, ny - 1, n)
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    x, y = xx.ravel(), yy.ravel()
    dnx, dny = new.solution.reverse_offsets(x, y)
    dox, doy = old.solution.reverse_offsets(x, y)
    size = np.hypot(dnx - dox, dny - doy)
    snx, sny = new.solution.sigma(x, y)
    sox, soy = old.solution.sigma(x, y)
    sig = np.sqrt(snx**2 + sny**2 + sox**2 + soy**2)
    k = int(np.argmax(size))
    half_diag_px = 0.5 * float(np.hypot(nx, ny))
    mas_old = mo * 1e3
    return {
        "against": str(old.path),
        "against_campaign_sha256": old.info.get("campaign_sha256", ""),
        "pixel_scale_mas": {"new": float(mn * 1e3), "new_sd": float(sdn * 1e3),
                            "old": float(mo * 1e3), "old_sd": float(sdo * 1e3)},
        "scale_change_rel": float(rel), "scale_change_rel_sd": rel_sd,
        "distortion_change_max_px": float(size[k]), "distortion_change_sd_px": float(sig[k]),
        "distortion_change_max_at_px": [float(x[k]), float(y[k])],
        "distortion_change_noise_max_px": float(sig.max()),
        "half_diagonal_px": half_diag_px,
        "distortion_change_rel": float(size[k] / half_diag_px),
        "distortion_change_rel_sd": float(sig[k] / half_diag_px),
        "plate_scale_change_edge_mas": float(abs(rel) * half_diag_px * mas_old),
        "plate_scale_change_edge_sd_mas": float(rel_sd * half_diag_px * mas_old),
        "definition": ("scale: ratio of the areal pixel scales minus 1; distortion: largest "
                       "|D2_new - D2_old| over the grid (offsets relative to each result's own "
                       "linear grid, pixels) over the detector's half-diagonal (pixels); "
                       "plate scale at the edge: |scale change| x half-diagonal in mas"),
    }


def build_report(result, against=None, requirements=None, grid=GRID):
    """The report's numbers (a JSON-ready dict) for a loaded :class:`Result`, optionally
    against an earlier one, with the requirements (default: the shipped file) checked."""
    requirements = load_requirements() if requirements is None else requirements
    info = result.info
    post = result.posterior
    ps = post.pixel_scale_samples() * 1e3
    report = {
        "astrocal_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "result": str(result.path),
        "filter": result.filter,
        "instrument": result.instrument,
        "band": result.band,
        "campaign_sha256": info.get("campaign_sha256", ""),
        "fit_astrocal_version": info.get("astrocal_version", ""),
        "inputs": info.get("inputs", []),
        "detector_shape": list(result.detector_shape),
        "degree": post.degree,
        "n_draws": int(len(post.g)),
        "map_accuracy": map_accuracy(result.solution, grid),
        "pixel_scale": {"mean_mas": float(ps.mean()), "sd_mas": float(ps.std(ddof=1)),
                        "sd_rel": float(ps.std(ddof=1) / ps.mean())},
        "evidence": evidence_table(info),
        "convergence": convergence(info, result.chain),
    }
    metrics = {
        "map_sigma_max_mas": report["map_accuracy"]["max_mas"],
        "map_sigma_rms_mas": report["map_accuracy"]["rms_mas"],
        "map_sigma_max_px": report["map_accuracy"]["max_px"],
        "map_sigma_rms_px": report["map_accuracy"]["rms_px"],
        "pixel_scale_sd_rel": report["pixel_scale"]["sd_rel"],
    }
    reasons = {}
    if result.residuals is not None:
        t = result.residuals
        report["residuals"] = residual_summary(t)
        out = np.asarray(t["outlier"], bool)
        report["outliers"] = {"n": int(out.sum()), "n_points": len(t),
                              "fraction": float(out.mean()) if len(t) else 0.0,
                              "fraction_estimate": info.get("outliers", {}).get("fraction_estimate"),
                              "points": outlier_list(t)}
        metrics["residual_rms_px"] = residual_rms(t, "px")
        metrics["residual_rms_mas"] = residual_rms(t, "mas")
        metrics["outlier_fraction"] = report["outliers"]["fraction"]
    else:
        report["residuals"] = []
        report["outliers"] = {"n": info.get("outliers", {}).get("n"), "points": []}
        for m in ("residual_rms_px", "residual_rms_mas", "outlier_fraction"):
            reasons[m] = f"{result.path}: no residuals.ecsv"
    sds = {}
    if against is not None:
        st = stability(result, against, grid)
        report["stability"] = st
        for m in ("scale_change_rel", "distortion_change_rel", "plate_scale_change_edge_mas"):
            metrics[m] = st[m]
        sds = {"scale_change_rel": st["scale_change_rel_sd"],
               "distortion_change_rel": st["distortion_change_rel_sd"],
               "plate_scale_change_edge_mas": st["plate_scale_change_edge_sd_mas"]}
    else:
        report["stability"] = None
        for m, (_, _, needs) in METRICS.items():
            if needs:
                reasons[m] = "needs an earlier result (--against OLDER_RESULT)"
    for m in METRICS:
        metrics.setdefault(m, None)
    report["metrics"] = metrics
    report["requirements"] = evaluate(requirements, metrics, result.band, sds, reasons)
    return report


def report_json(report):
    """``report`` as strict JSON text (NaN and infinities as null)."""
    from ..plain import to_plain

    return json.dumps(to_plain(report, nan_as_none=True), indent=2) + "\n"
