"""``astrocal fit`` for a campaign's ``[lms]`` data set: read the measured tables, fit, write the result.

Reads the tables ``astrocal measure`` wrote for the LMS frames (found through
``<measure.output>/summary.ecsv``), fits them (:func:`astrocal.lms.fit.fit_lms`) and writes,
into ``<fit.output>/<lms.name>/``:

- ``posterior.h5``: the emcee chain of the hyperparameters (resumable);
- ``lms_params.ecsv``: every linear parameter (deviations and per-exposure chopper terms) with
  its posterior mean, sd, 2.5/16/50/84/97.5 % quantiles and prior sigma;
- ``lms_draws.fits``: the exact posterior draws of all linear parameters (image, draws x
  parameters; a ``NAMES`` table) and of the hyperparameters (``PHI``);
- ``lms_residuals.ecsv``: per fitted point, its residual [px] and normalised residual;
- ``lms_fit.json``: layout, hyperparameters (MAP, mean, sd), diagnostics, counts, settings, and
  ``hole_errors``: the prior of the mask's hole errors (``source``: the tolerance, or the imager
  fit's posterior it was taken from: file, SHA-256, time, holes shared) with its mean and
  covariance, and the posterior of each hole;
- the products (:mod:`astrocal.lms.products`), the relative spectral response and slit-loss
  products (:mod:`astrocal.lms.response`: ``LMS_RSRF_<tag>.fits`` from the ``slices`` frames,
  ``LMS_SLIT_THROUGHPUT_<tag>.fits`` from laser frames of a slit-loss scan) and the report page;
- ``manifest.json`` last (the set is complete).

:func:`load_lms_fit` reads such a directory back into an :class:`~astrocal.lms.fit.LmsFit`
(without the data) whose :meth:`~astrocal.lms.fit.LmsFit.pixel_geometry` gives (slice, xi,
lam) with their sd at any detector pixel.
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike
from astropy.io import fits
from astropy.table import Table

from .. import __version__
from ..atomic import atomic_path, atomic_write_table, atomic_write_text
from ..errors import AstrocalError
from ..lab.mask import load_mask
from ..plain import to_plain
from ..resultset import (check_result_dir, confined, inputs_sha256, mark_incomplete, read_manifest,
                         remove_partial_files, write_manifest, writer_lock)
from .deviations import DeviationLayout, Hyperparameters
from .errors import LmsMeasureError
from .fit import (ACROSS_BOUNDS_PX_PER_MAS, ExposureTerms, HoleTerms, LmsFit, LmsFitSettings, data_holes, fit_lms,
                  stack_tables, usable)
from .hole_prior import HolePrior, lms_hole_prior, read_imager_hole_posterior
from .measure import TABLE_OF_KIND, nominal_geometry
from .products import write_lms_products
from .response import ResponseProducts, lms_response_from_campaign
from .traces import echelle_setting

if TYPE_CHECKING:  # hints only: astrocal.campaign imports astrocal.lms to resolve [lms]
    import astrocal.campaign

__all__ = ["LmsFitInputError", "measured_lms_tables", "hole_prior_of", "fit_lms_campaign", "save_lms_fit",
           "load_lms_fit", "describe_lms_fit", "hole_prior_summary"]

log = logging.getLogger(__name__)
RESULT_FILES = ("posterior.h5", "lms_params.ecsv", "lms_draws.fits", "lms_residuals.ecsv", "lms_fit.json")


class LmsFitInputError(AstrocalError, ValueError):
    """The measured LMS tables are missing, failed or do not belong to the campaign."""


def measured_lms_tables(campaign: astrocal.campaign.Campaign
                        ) -> list[tuple[astrocal.campaign.LmsFrameSpec, Path, Table]]:
    """The measured table of every LMS frame (not background).

    Parameters
    ----------
    campaign : Campaign
        The campaign (its ``[lms]`` data set, ``[measure]`` and ``[fit]`` settings).

    Returns
    -------
    list of (LmsFrameSpec, Path, Table)
        Per frame its spec, the measured table's path and the table.

    Raises
    ------
    LmsFitInputError
        No summary, a frame not measured (or failed), a table written for another campaign.
    """
    lms = campaign.lms
    out = Path(campaign.measure.output)
    summary_path = out / "summary.ecsv"
    if not summary_path.exists():
        raise LmsFitInputError(f"{summary_path}: not found; run 'astrocal measure {campaign.path}' first")
    summary = Table.read(summary_path, format="ascii.ecsv")
    rows = {(str(r["dataset"]), str(r["file"])): r for r in summary}
    found = []
    for f in lms.frames:
        if f.kind == "background":
            continue
        r = rows.get((lms.name, str(f.file)))
        if r is None:
            raise LmsFitInputError(f"{summary_path}: no row for the LMS frame {f.file}; run 'astrocal measure "
                                   f"{campaign.path}' again")
        if str(r["status"]) == "failed":
            raise LmsFitInputError(f"{f.file}: its measurement failed ({r['message']}); fix it or remove the frame "
                                   f"from {campaign.path}")
        path = confined(out / str(r["table"]), out) if not Path(str(r["table"])).is_absolute() else Path(str(r["table"]))
        if not path.exists():
            raise LmsFitInputError(f"{path}: the measured table of {f.file} is missing; measure again")
        t = Table.read(path, format="ascii.ecsv")
        kind = t.meta.get("lms_table")
        if kind != TABLE_OF_KIND[f.kind]:
            raise LmsFitInputError(f"{path}: a '{kind}' table where the {f.kind} frame {f.file} needs "
                                   f"'{TABLE_OF_KIND[f.kind]}'")
        if abs(float(t.meta.get("lam_c_um", np.nan)) - f.lam_c_um) > 1e-6:
            raise LmsFitInputError(f"{path}: measured at setting {t.meta.get('lam_c_um')} um, the campaign says "
                                   f"{f.lam_c_um} um for {f.file}; measure again")
        found.append((f, Path(path), t))
    return found


def _data_and_terms(campaign, tables):
    lms = campaign.lms
    lams = [s.lam_c_um for s in lms.settings]
    exposures = [(p.stem, f.kind) for f, p, _ in tables if f.kind in ("laser", "grid")]
    terms = ExposureTerms.build(exposures)
    groups = {"spots": [], "traces": [], "edges": []}
    for f, p, t in tables:
        stem = p.stem
        ex = [s for s, _ in exposures].index(stem) if f.kind in ("laser", "grid") else -1
        groups[TABLE_OF_KIND[f.kind]].append((t, lams.index(f.lam_c_um), ex))
    data = {k: stack_tables(v, k) for k, v in groups.items() if v}
    if "spots" not in data or not usable(data["spots"]).any():
        raise LmsFitInputError(f"{campaign.path}: no usable laser spot in the measured tables: the LMS fit needs "
                               "laser spots")
    return data, terms


def hole_prior_of(lms: astrocal.campaign.LmsDataset, data: dict[str, Table]) -> HolePrior | None:
    """The prior of the hole errors of the holes in ``data`` (:func:`astrocal.lms.fit.data_holes`)
    for a campaign's ``[lms]``.

    Parameters
    ----------
    lms : LmsDataset
        The campaign's ``[lms]`` (``hole_error_um``, ``hole_errors_from``, ``mask``).
    data : dict of Table
        The stacked measured tables by group (``spots``, ``traces``, ``edges``).

    Returns
    -------
    HolePrior or None
        None with ``hole_error_um = 0`` (or no hole seen and no ``hole_errors_from``); the imager
        fit's posterior of the shared holes with ``hole_errors_from`` (the others: the
        tolerance); else the tolerance ``hole_error_um``.

    Raises
    ------
    HolePriorFileError, MaskMismatchError, NoSharedHolesError
        (:mod:`astrocal.lms.errors`) a missing or unreadable imager result, another mask, no
        hole in common.
    """
    if not lms.hole_error_um:
        return None
    ids = data_holes(data)
    if not ids.size and lms.hole_errors_from is None:
        return None                                   # no hole seen: nothing to fit
    imager = None
    if lms.hole_errors_from is not None:
        imager = read_imager_hole_posterior(lms.hole_errors_from, load_mask(lms.mask))
    return lms_hole_prior(ids, lms.hole_error_um, imager)


def hole_prior_summary(fit: LmsFit) -> str:
    """One line saying where the fit's hole-error prior came from (terminal, report, headers).

    Parameters
    ----------
    fit : LmsFit
        The fit.

    Returns
    -------
    str
    """
    if fit.holes is None:
        return "hole errors not fitted: the mask table's positions taken as exact"
    src = fit.holes.prior.source
    n = fit.holes.prior.n_holes
    if src.get("kind") == "imager":
        return (f"joint with the imager's lab fit through the shared mask: hole errors of {n} holes, "
                f"{src['n_shared']} from the imager's posterior ({src['file']}, sha256 {src['sha256'][:12]}, "
                f"{src['modified_utc']}), {src['n_tolerance']} with the tolerance {src['sigma_um']:g} um")
    sigma = src.get("sigma_um", float("nan"))
    return f"hole errors of {n} holes with the mask tolerance prior {sigma:g} um (not joint)"


def fit_lms_campaign(campaign: astrocal.campaign.Campaign, *, steps: int | None = None,
                     walkers: int | None = None, seed: int | None = None, resume: bool = False,
                     overwrite: bool = False, progress: str | bool = "auto",
                     map_step: int = 1) -> tuple[LmsFit, Path]:
    """Fit a campaign's LMS data set and write its result set, its products
    (:func:`astrocal.lms.products.write_lms_products`) and its report page
    (:func:`astrocal.lms.report.write_lms_report`).

    Parameters
    ----------
    campaign : Campaign
        The campaign (its ``[lms]`` data set, ``[measure]`` and ``[fit]`` settings).
    steps, walkers, seed : int, optional
        The chain's length, walkers and seed (default: from ``[fit]``; steps at most 5000,
        walkers half the imager's, at least 16; seed 1 when none).
    resume : bool
        Continue the chain in an existing result directory.
    overwrite : bool
        Replace an existing result directory.
    progress : str or bool
        The chain's progress bar (``"auto"``: on a terminal).
    map_step : int
        The pixel maps' sampling [px].

    Returns
    -------
    fit : LmsFit
    out : Path
        The output directory (``<fit.output>/<lms.name>``).
    """
    lms = campaign.lms
    fs = campaign.fit
    out = confined(Path(fs.output) / lms.name, fs.output)
    check_result_dir(out, resume, overwrite)
    tables = measured_lms_tables(campaign)
    data, terms = _data_and_terms(campaign, tables)
    holes = hole_prior_of(lms, data)
    layout = nominal_geometry(lms).layout
    settings = LmsFitSettings(offset_sigma_mas=lms.offset_sigma_mas, across_px_per_mas=lms.across_px_per_mas,
                              walkers=walkers or max(fs.walkers // 2, 16), steps=steps or min(fs.steps, 5000),
                              seed=seed if seed is not None else (fs.seed if fs.seed is not None else 1),
                              progress=progress, backend_path=out / "posterior.h5", resume=resume,
                              holes=holes, mask_scale_mm_per_arcsec=lms.mask_scale_mm_per_arcsec,
                              orientation=lms.orientation)
    settings.chain_record = _chain_record(campaign, settings, [p for _, p, _ in tables])
    out.mkdir(parents=True, exist_ok=True)
    with writer_lock(out):
        check_result_dir(out, resume, overwrite, locked=True)
        mark_incomplete(out)
        remove_partial_files(out)
        h5 = out / "posterior.h5"
        if h5.exists() and overwrite and not resume:
            h5.unlink()
        fit = fit_lms(data, layout, terms, settings, truth=lms.truth_direction)
        rewrite = overwrite or resume
        response = lms_response(campaign, fit, tables, out, overwrite=rewrite)
        save_lms_fit(fit, out, campaign, overwrite=rewrite, response_notes=response.notes)
        written = write_lms_outputs(fit, out, [campaign.path, *(p for _, p, _ in tables)], campaign.sha256,
                                    overwrite=rewrite, map_step=map_step, response=response)
        write_manifest(out, list(RESULT_FILES) + written, {"campaign_sha256": campaign.sha256,
                                                           "seed": int(settings.seed), "kind": "lms"})
    return fit, out


def lms_response(campaign: astrocal.campaign.Campaign, fit: LmsFit,
                 tables: Sequence[tuple[astrocal.campaign.LmsFrameSpec, Path, Table]], out: str | os.PathLike,
                 overwrite: bool = False) -> ResponseProducts:
    """The response products (:func:`astrocal.lms.response.lms_response_from_campaign`) of a
    fitted campaign, with the posterior-mean geometry and the measured spot tables; a frame that
    cannot give them (e.g. a header without the black-body temperature) leaves a note instead of
    failing the fit.

    Parameters
    ----------
    campaign : Campaign
        The campaign (its ``[lms]`` data set, ``[measure]`` and ``[fit]`` settings).
    fit : LmsFit
        The fit.
    tables : sequence of (LmsFrameSpec, Path, Table)
        :func:`measured_lms_tables`.
    out : str or os.PathLike
        The result directory.
    overwrite : bool
        Replace existing products.

    Returns
    -------
    ResponseProducts
    """
    lams = [s.lam_c_um for s in campaign.lms.settings]
    spots = [(lams.index(f.lam_c_um), i, t) for i, (f, _, t) in enumerate(tables) if f.kind == "laser"]
    try:
        return lms_response_from_campaign(campaign, fit.geometry(), spots, out,
                                          provenance={"campaign_sha256": campaign.sha256}, overwrite=overwrite)
    except (KeyError, ValueError, OSError, LmsMeasureError) as exc:
        log.warning("LMS response products not written: %s", exc)
        return ResponseProducts(notes=[f"response products not written: {exc}"])


def write_lms_outputs(fit: LmsFit, out: str | os.PathLike, inputs: Iterable[str | os.PathLike] = (),
                      campaign_sha256: str = "", overwrite: bool = False, map_step: int = 1,
                      response: ResponseProducts | None = None) -> list[str]:
    """The products and the report page of a fit written by :func:`save_lms_fit` into ``out``
    (the QC from its ``lms_residuals.ecsv``).

    Parameters
    ----------
    fit : LmsFit
        The fit.
    out : str or os.PathLike
        The result directory.
    inputs : iterable of path
        The campaign and the measured tables (the products' provenance).
    campaign_sha256 : str
        The campaign file's SHA-256.
    overwrite : bool
        Replace existing files.
    map_step : int
        The pixel maps' sampling [px].
    response : ResponseProducts, optional
        The :class:`~astrocal.lms.response.ResponseProducts` already written, shown on the page.

    Returns
    -------
    list of str
        The names of all the files written, relative to ``out``.
    """
    # lazy: the report module imports this one (hole_prior_summary, load_lms_fit) and matplotlib
    from .report import write_lms_report

    out = Path(out)
    residuals = Table.read(out / "lms_residuals.ecsv", format="ascii.ecsv")
    provenance = {"campaign_sha256": campaign_sha256, "inputs": [str(p) for p in inputs],
                  "hole_prior": _hole_prior_header(fit)}
    spots = fit.data.get("spots") if fit.data else None
    paths, qc = write_lms_products(fit, out, residuals, spots, provenance, overwrite=overwrite, step=map_step)
    if response is not None:
        paths.update(response.paths)
    report = write_lms_report(fit, out, residuals, qc, paths, overwrite=overwrite, response=response)
    return [str(Path(p).relative_to(out)) for p in list(paths.values()) + list(report.values())]


def _hole_prior_header(fit: LmsFit) -> dict:
    """What the products' headers say of the hole-error prior: ``kind`` (none, tolerance,
    imager), ``n_holes``, ``n_shared``, ``sha256`` and ``file`` of the imager's posterior, the line."""
    if fit.holes is None:
        return {"kind": "none", "n_holes": 0, "n_shared": 0, "line": hole_prior_summary(fit)}
    src = fit.holes.prior.source
    return {"kind": src.get("kind", "tolerance"), "n_holes": fit.holes.prior.n_holes,
            "n_shared": int(src.get("n_shared", 0)), "sha256": src.get("sha256", ""), "file": src.get("file", ""),
            "line": hole_prior_summary(fit)}


def _chain_record(campaign, settings, inputs):
    """What the chain depends on (compared on resume): the campaign's and the measured tables'
    SHA-256 (:func:`astrocal.resultset.inputs_sha256`, as the imager's
    :func:`astrocal.stages.fit.chain_record`), the seed, the walkers and the LMS model's settings."""
    lms = campaign.lms
    return {"campaign_sha256": campaign.sha256, "inputs_sha256": inputs_sha256(inputs), "seed": int(settings.seed),
            "walkers": int(settings.walkers), "kind": "lms", "degree": int(lms.degree),
            "offset_sigma_mas": float(lms.offset_sigma_mas), "across_px_per_mas": float(lms.across_px_per_mas),
            **({"hole_prior": {"kind": settings.holes.source.get("kind"), "sigma_um": float(lms.hole_error_um),
                               "sha256": settings.holes.source.get("sha256", ""),
                               "holes": [int(h) for h in settings.holes.hole_ids]}}
               if settings.holes is not None else {})}


def save_lms_fit(fit: LmsFit, out: str | os.PathLike, campaign: astrocal.campaign.Campaign | None = None,
                 overwrite: bool = False, response_notes: Iterable[str] = ()) -> None:
    """Write the parameter table, the draws, the residuals and ``lms_fit.json`` into ``out``.

    Parameters
    ----------
    fit : LmsFit
        The fit.
    out : str or os.PathLike
        The result directory.
    campaign : Campaign, optional
        Its campaign (path and SHA-256 recorded in ``lms_fit.json``).
    overwrite : bool
        Replace existing files.
    response_notes : iterable of str
        What the response step did not make, and why (:class:`~astrocal.lms.response.ResponseProducts`
        ``notes``): ``lms_fit.json`` ``response_notes``, which the report page made again from the
        directory (``astrocal report``) shows.
    """
    out = Path(out)
    names = list(fit.names)
    th = fit.theta_samples
    prior = np.concatenate([fit.layout.prior_sigma(fit.settings.hyper),
                            fit.terms.prior_sigma(fit.settings.offset_sigma_mas, fit.settings.across_px_per_mas)]
                           + ([np.sqrt(np.diag(fit.holes.prior.cov_um2))] if fit.holes is not None else []))
    prior[fit.layout.blocks["slices"]] = np.nan          # tau (and the residual's rms, length): hyperparameters
    if "log_across_px_per_mas" in fit.hyper_names:     # the laser exposures' dcol: their scale is sampled too
        prior[[fit.layout.n_params + i for i in fit.terms.dcol if i >= 0]] = np.nan
    q = np.quantile(th, [0.025, 0.16, 0.5, 0.84, 0.975], axis=0)
    t = Table({"name": names, "mean": th.mean(axis=0), "sd": th.std(axis=0, ddof=1), "q025": q[0], "q16": q[1],
               "q50": q[2], "q84": q[3], "q975": q[4], "prior_sigma": prior})
    t["prior_sigma"].description = ("prior sd (NaN: sampled widths: the per-slice parts, tau; the laser exposures' "
                                    "dcol_px, log_across_px_per_mas)")
    t.meta["units"] = ("px; DETn.rot rad; settingN.dtheta deg; *.dxi_mas mas; *.dcol_px px; "
                       "holeN.dx_um, holeN.dy_um um at the mask (mask frame; prior mean in lms_fit.json hole_errors)")
    atomic_write_table(t, out / "lms_params.ecsv", overwrite, format="ascii.ecsv")
    hdus = fits.HDUList([fits.PrimaryHDU(th.astype(np.float64)),
                         fits.BinTableHDU(Table({"name": names}), name="NAMES"),
                         fits.ImageHDU(fit.phi_samples, name="PHI"),
                         fits.BinTableHDU(Table({"name": list(fit.hyper_names)}), name="PHI_NAMES")])
    hdus[0].header["EXTNAME"] = "THETA"
    hdus[0].header["TRUTHDIR"] = (fit.truth, "optical-model direction taken as exact")
    with atomic_path(out / "lms_draws.fits", overwrite) as tmp:
        hdus.writeto(tmp)
    res = fit.residuals()
    rows = []
    for g, r in res.items():
        idx = fit.observations.rows[g]
        tab = fit.data[g]
        kind = np.full(len(r), g)
        axis = np.tile(["col", "row"], len(r) // 2) if g == "spots" else np.full(len(r), "row")
        rows.append(Table({"kind": kind, "row_index": idx, "axis": axis, "slice": np.asarray(tab["slice"])[idx],
                           "det": np.asarray(tab["det"])[idx], "setting": np.asarray(tab["setting"])[idx],
                           "line_um": (np.asarray(tab["line_um"], float)[idx] if g == "spots"
                                       else np.full(len(r), np.nan)),
                           "normalised": r, "residual_px": pixel_residuals(fit, g, r)}))
    from astropy.table import vstack
    rt = vstack(rows)
    rt["normalised"].description = "residual / (stated sigma x the group's error scale at phi = 1), whitened"
    rt["residual_px"].unit = "pix"
    rt["residual_px"].description = "measured - predicted by the posterior mean (all linear parameters) [px]"
    rt["line_um"].description = "laser line of a spot [um] (NaN for traces and edges)"
    atomic_write_table(rt, out / "lms_residuals.ecsv", overwrite, format="ascii.ecsv")
    d = fit.diagnostics
    info = {
        "kind": "lms", "creator": f"astrocal {__version__} fit",
        "campaign": str(campaign.path) if campaign is not None else None,
        "campaign_sha256": campaign.sha256 if campaign is not None else None,
        "truth_direction": fit.truth,
        "layout": {"settings": [{"lam_c_um": s.lam_c_um, "order": s.order, "echelle_deg": s.echelle_deg}
                                for s in fit.layout.settings], "degree": fit.layout.degree,
                   "residual_m": fit.layout.residual_m, "residual_boundary": fit.layout.residual_boundary,
                   "reference_detector": fit.layout.reference_detector, "n_params": fit.layout.n_params},
        "exposure_terms": {"stems": list(fit.terms.stems), "names": list(fit.terms.names)},
        "hyperparameters": {n: {"map": float(np.exp(m)), "mean": float(np.exp(s).mean()),
                                "sd": float(np.exp(s).std(ddof=1))}
                            for n, m, s in zip(fit.hyper_names, fit.phi_map, fit.phi_samples.T)},
        "hyper_prior": {"tau_px": "log-uniform", "error scales": "log-uniform",
                        **({"across_px_per_mas": "log-uniform on [%g, %g]" % ACROSS_BOUNDS_PX_PER_MAS}
                           if "log_across_px_per_mas" in fit.hyper_names else {}),
                        **(({f"residual_{a}_{h}": "log-uniform" for a in ("col", "row")
                             for h in ("rms_px", "length_xi", "length_w")} if fit.settings.residual_ard else
                            {"residual_rms_px": "log-uniform", "residual_length": "log-uniform"})
                           if fit.layout.residual_m else {})},
        "residual_prior": (("ard: per axis an rms and a Matern-5/2 length per dimension (xi, w)"
                            if fit.settings.residual_ard else "isotropic: one rms and one Matern-5/2 length")
                           if fit.layout.residual_m else None),
        "residual_ard": bool(fit.settings.residual_ard),
        "fixed_prior_widths": to_plain(fit.settings.hyper.__dict__),
        "offset_sigma_mas": fit.settings.offset_sigma_mas, "across_px_per_mas": fit.settings.across_px_per_mas,
        "across_sampled": "log_across_px_per_mas" in fit.hyper_names,
        "n_points": {g: int(len(fit.observations.y[g])) for g in fit.observations.y},
        "residual_rms_normalised": {g: float(np.sqrt(np.mean(r**2))) if len(r) else None  # None: no point
                                    for g, r in res.items()},
        "diagnostics": {"tau": to_plain(d.tau), "acceptance": d.acceptance, "n_steps": d.n_steps,
                        "n_burn": d.n_burn, "n_effective": to_plain(d.n_effective), "converged": d.converged,
                        "warnings": list(d.warnings)},
        "n_draws": int(len(th)),
        "hole_errors": _hole_record(fit),
        "response_notes": [str(n) for n in response_notes],
        "coverage": to_plain(fit.coverage),
        "coverage_notes": [str(n) for n in fit.coverage_notes],
    }
    atomic_write_text(out / "lms_fit.json", json.dumps(to_plain(info), indent=1) + "\n", overwrite)


def _hole_record(fit: LmsFit):
    """``lms_fit.json`` ``hole_errors``: None without; else the prior's source and summary, its
    mean and covariance [um, mask frame], the map onto the slicer, and the posterior per hole."""
    if fit.holes is None:
        return {"fitted": False, "summary": hole_prior_summary(fit)}
    pr = fit.holes.prior
    hs = fit.hole_samples
    return {"fitted": True, "summary": hole_prior_summary(fit), "source": pr.source,
            "units": "um at the mask, mask frame (the mask table's x_mm, y_mm axes)",
            "hole_ids": [int(h) for h in pr.hole_ids], "prior_mean_um": np.asarray(pr.mean_um).tolist(),
            "prior_cov_um2": np.asarray(pr.cov_um2).tolist(), "to_slicer": np.asarray(fit.holes.to_slicer).tolist(),
            "across_px_per_mas": fit.holes.across_px_per_mas,
            "posterior": {str(int(h)): {"mean_um": hs[:, k].mean(axis=0).tolist(),
                                        "sd_um": hs[:, k].std(axis=0, ddof=1).tolist()}
                          for k, h in enumerate(pr.hole_ids)}}


def pixel_residuals(fit: LmsFit, group: str, normalised: ArrayLike) -> np.ndarray:
    """The residuals of one group in pixels from its whitened ones (:meth:`LmsFit.residuals`).

    Parameters
    ----------
    fit : LmsFit
        The fit (with its data).
    group : {"spots", "traces", "edges"}
        The group.
    normalised : array_like
        Its whitened residuals.

    Returns
    -------
    ndarray
        [px]: spots ``L r`` per spot (``L L^T`` its stated covariance; (col, row) pairs), traces
        and edges ``r sigma_row``.
    """
    idx = fit.observations.rows[group]
    tab = fit.data[group]
    r = np.asarray(normalised, float)
    if group == "spots":
        L = np.linalg.cholesky(np.asarray(tab["cov"], float)[idx[::2]])
        return np.einsum("nij,nj->ni", L, r.reshape(-1, 2)).ravel()
    return r * np.asarray(tab["sigma_row"], float)[idx]


def load_lms_fit(out: str | os.PathLike) -> LmsFit:
    """An :class:`LmsFit` from a result directory (draws and layout; no data or chain).

    Parameters
    ----------
    out : str or os.PathLike
        The result directory (``lms_fit.json``, ``lms_draws.fits``).

    Returns
    -------
    LmsFit

    Raises
    ------
    LmsFitInputError
        The draws' parameter names do not match the layout in ``lms_fit.json``.
    """
    out = Path(out)
    info = json.loads((out / "lms_fit.json").read_text())
    lay = info["layout"]
    layout = DeviationLayout(tuple(echelle_setting(s["lam_c_um"]) for s in lay["settings"]), degree=lay["degree"],
                             reference_detector=lay["reference_detector"], residual_m=lay.get("residual_m", 0),
                             residual_boundary=lay.get("residual_boundary", 1.3))
    with fits.open(out / "lms_draws.fits") as hdul:
        theta = np.array(hdul["THETA"].data, float)
        names = [str(n) for n in hdul["NAMES"].data["name"]]
        phi = np.array(hdul["PHI"].data, float)
        phi_names = tuple(str(n) for n in hdul["PHI_NAMES"].data["name"])
    ex = info["exposure_terms"]
    terms = ExposureTerms.build([(s, "laser" if f"{s}.dcol_px" in ex["names"] else "grid") for s in ex["stems"]])
    hr = info.get("hole_errors") or {}
    holes = None
    if hr.get("fitted"):
        prior = HolePrior(np.asarray(hr["hole_ids"], int), np.asarray(hr["prior_mean_um"], float).reshape(-1, 2),
                          np.asarray(hr["prior_cov_um2"], float), hr.get("source", {}))
        holes = HoleTerms(prior, np.asarray(hr["to_slicer"], float), float(hr["across_px_per_mas"]))
    if list(layout.names) + list(terms.names) + list(holes.names if holes else ()) != names:
        raise LmsFitInputError(f"{out / 'lms_draws.fits'}: parameter names do not match the layout in lms_fit.json")
    hyper = Hyperparameters(**info["fixed_prior_widths"])
    settings = LmsFitSettings(hyper=hyper, offset_sigma_mas=info["offset_sigma_mas"],
                              across_px_per_mas=info["across_px_per_mas"],
                              residual_ard=bool(info.get("residual_ard", False)),
                              sample_across=bool(info.get("across_sampled", False)))
    phi_map = np.log([info["hyperparameters"][n]["map"] for n in phi_names])
    return LmsFit(layout, info["truth_direction"], terms, theta, None, phi, phi_map, phi_names, None, None, None,
                  None, settings, holes, list(info.get("coverage") or []), list(info.get("coverage_notes") or []))


def describe_lms_fit(fit: LmsFit, out: str | os.PathLike) -> list[str]:
    """Lines for the terminal: hyperparameters, residuals, convergence, where it was written.

    Parameters
    ----------
    fit : LmsFit
        The fit.
    out : str or os.PathLike
        Its result directory (the files named from its manifest).

    Returns
    -------
    list of str
    """
    lines = []
    hp = ", ".join(f"{n.replace('log_', '')} {np.exp(s).mean():.3g} +/- {np.exp(s).std(ddof=1):.2g}"
                   for n, s in zip(fit.hyper_names, fit.phi_samples.T))
    lines.append(f"lms: {len(fit.layout.settings)} setting(s), {fit.layout.n_params} deviation parameters + "
                 f"{len(fit.terms.names)} exposure terms; {hp}")
    lines.append("lms: " + hole_prior_summary(fit))
    res = fit.residuals()
    lines.append("lms: normalised residual rms " + ", ".join(
        f"{g} {np.sqrt(np.mean(r**2)):.2f} ({len(r)})" if len(r) else f"{g}: no point used" for g, r in res.items()))
    d = fit.diagnostics
    if d is not None and not d.converged:
        lines += [f"warning: {w}" for w in d.warnings]
    lines += [f"note: {n}" for n in fit.coverage_notes]
    manifest = read_manifest(out)
    names = list(manifest["files"]) if manifest else list(RESULT_FILES)
    lines.append(f"wrote {out} ({', '.join(names)})")
    return lines
