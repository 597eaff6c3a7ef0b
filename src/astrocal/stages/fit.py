"""``astrocal fit``: the joint Bayesian fit of a campaign's points, per filter, and its
result set.

For each filter of the campaign (:func:`astrocal.stages.fit_inputs.fit_groups`) the
points are assembled (:mod:`astrocal.stages.fit_inputs`), fitted
(:func:`astrocal.model.inference.fit_joint`: the evidence scan, emcee over the
hyperparameters or the quick look's Laplace approximation, exact draws of the linear
parameters) and written with the calibration products into ``<fit.output>/<filter>/``
(:func:`fit_campaign`); :func:`describe` is the command's summary of one result.
"""
from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np

from .. import earth
from ..campaign import Campaign
from ..errors import AstrocalError
from ..field import design_matrix
from ..field.basis import n_terms, terms
from ..model.draws import affine_matrices
from ..model.quality import fit_quality
from ..resultset import check_result_dir as _check_result_dir
from ..resultset import confined, inputs_sha256, mark_incomplete, remove_partial_files, write_manifest, writer_lock
from ..model.data import DataError, join_points
from ..model.inference import Fit, FitSettings, fit_joint
from ..model.priors import Priors
from ..products import write_fit_products
from ..products.result_files import load_posterior, save_fit
from ..sky.sites import get_site
from .fit_inputs import fit_groups, lab_points_for, mask_affine_sigma, mask_record, sky_points_for

log = logging.getLogger(__name__)


def earth_orientation_record(costs: Sequence[dict]) -> dict:
    """What ``fit.json`` records of the Earth orientation of a fit's sky exposures.

    Parameters
    ----------
    costs : sequence of dict
        Each sky exposure's cost (:func:`astrocal.sky.astrometry.orientation_cost`).

    Returns
    -------
    dict
        The tables and policy (:func:`astrocal.earth.provenance`), the ``exposures``' costs
        and, with any, the largest (``worst``: ``centre_mas``, ``differential_mas``,
        ``stale_exposures``).
    """
    record = earth.provenance()
    record["exposures"] = list(costs)
    if costs:
        record["worst"] = {"centre_mas": max(float(c.get("centre_mas", 0.0)) for c in costs),
                           "differential_mas": max(float(c.get("differential_mas", 0.0)) for c in costs),
                           "stale_exposures": int(sum(bool(c.get("stale")) for c in costs))}
    return record


def fit_campaign(campaign: Campaign, degree: int | str | None = None, steps: int | None = None,
                 walkers: int | None = None, seed: int | None = None, hole_errors: bool = True,
                 resume: bool = False, overwrite: bool = False, progress: str | bool = "auto",
                 processes: int | str = 1, quick: bool = False) -> dict:
    """Fit every filter of a loaded campaign.

    Parameters
    ----------
    campaign : Campaign
        The loaded campaign.
    degree : int or "auto", optional
        Overrides ``[fit] degree``.
    steps, walkers, seed : int, optional
        Override ``[fit] steps``, ``walkers`` (at least 8), ``seed``.
    hole_errors : bool
        ``False`` switches the mask's hole errors off (else ``[fit] hole_errors`` decides).
    resume : bool
        Continue an interrupted chain in ``<fit.output>/<filter>/posterior.h5``.
    overwrite : bool
        Replace an existing result (else refused: ``ProductExistsError``).
    progress : str or bool
        The sampler's progress bar (``"auto"``: on a terminal).
    processes : int or "auto"
        With several filters, that many fits run in parallel; with one, the walkers of each
        emcee step are split over that many processes; ``"auto"``: the filters one after the
        other, each splitting its walkers as :func:`~astrocal.model.sampling.pool_size`
        decides (only fits of many points).
    quick : bool
        The quick look (no emcee chain: :func:`~astrocal.model.laplace.laplace_draws`),
        written into ``<fit.output>/quick/<filter>``.

    Returns
    -------
    dict
        ``{filter: (Fit, output dir, products)}``.
    """
    fs = campaign.fit
    if quick and resume:
        raise FitOptionError("--quick runs no chain: there is nothing to --resume")
    degree = degree if degree is not None else fs.degree
    if degree != "auto":
        degree = int(degree)
    groups = fit_groups(campaign)
    if campaign.sky:
        campaign.earth.apply(campaign.path)  # the campaign's Earth-orientation tables (astrocal.earth)
    outs = {}
    for filt in groups:  # refuse early, before any work
        out = _output_dir(fs, filt, quick)
        _check_result_dir(out, resume, overwrite)
        outs[filt] = out
    processes = "auto" if processes == "auto" else max(int(processes or 1), 1)
    parallel = processes != "auto" and processes > 1 and len(groups) > 1
    opts = dict(degree=degree, steps=steps, walkers=walkers, seed=seed, hole_errors=hole_errors,
                resume=resume, quick=quick, overwrite=overwrite, progress=False if parallel else progress,
                processes=1 if parallel else processes)
    jobs = [(campaign, filt, lab_sets, sky_sets, opts) for filt, (lab_sets, sky_sets) in groups.items()]
    if not parallel:
        return {job[1]: _fit_group(*job) for job in jobs}
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
    log.info("fitting %d filters in %d processes", len(jobs), min(processes, len(jobs)))
    with ProcessPoolExecutor(min(processes, len(jobs)), mp_context=ctx) as pool:
        futures = {job[1]: pool.submit(_fit_group, *job) for job in jobs}
        return {filt: f.result() for filt, f in futures.items()}


class FitOptionError(AstrocalError, ValueError):
    """Options of ``astrocal fit`` that cannot go together."""


def _output_dir(fs, filt, quick=False):
    """Where a filter's result goes: ``<fit.output>/<filter>``, or for a quick look
    ``<fit.output>/quick/<filter>`` (never over the reference fit)."""
    return confined(Path(fs.output) / "quick" / filt if quick else Path(fs.output) / filt, fs.output)


def chain_record(campaign: Campaign, settings: FitSettings, inputs: Sequence[str | os.PathLike]) -> dict:
    """What a chain depends on besides its walkers and hyperparameters (recorded with it,
    compared on resume).

    The number of steps is not part of it (``--resume --steps N`` continues a chain further).

    Parameters
    ----------
    campaign : Campaign
        The campaign.
    settings : astrocal.model.inference.FitSettings
        The fit's settings.
    inputs : sequence of path
        The input tables.

    Returns
    -------
    dict
        The campaign file's and the input tables' SHA-256, the seed and the model's settings.
    """
    pr = settings.priors
    return {"campaign_sha256": campaign.sha256, "inputs_sha256": inputs_sha256(inputs), "seed": int(settings.seed),
            "walkers": int(settings.walkers), "degree": settings.degree,
            "degree_range": [int(d) for d in settings.degree_range], "degree_choice": settings.degree_choice,
            "hole_errors": bool(settings.hole_errors), "field_prior": str(pr.field_prior),
            "residual": str(pr.residual), "mask_affine_sigma_ppm": pr.mask_affine_sigma_ppm}


def _fit_group(campaign, filt, lab_sets, sky_sets, opts):
    """Fit one filter's lab and sky datasets jointly and write its result set
    (:mod:`astrocal.resultset`). The inputs are read and checked first, so a refused input
    writes nothing; then, under the directory's lock, the chain, the draws, the products
    and, last, the manifest.

    Linear algebra runs on one thread throughout, the products' least-squares fits as well
    as the fit (:func:`~astrocal.model.inference.fit_joint`): their matrices (10^4 rows, tens
    of columns) gain nothing from threaded BLAS and lose several times over on a shared
    machine (the reverse SIP's fits: 0.3 s each threaded under load, 15 ms on one thread)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        return _fit_and_write(campaign, filt, lab_sets, sky_sets, opts)


def _fit_and_write(campaign, filt, lab_sets, sky_sets, opts):
    fs = campaign.fit
    quick = opts.get("quick", False)
    out = _output_dir(fs, filt, quick)
    h5 = out / "posterior.h5"
    overwrite, resume = opts["overwrite"], opts["resume"]
    parts, inputs, mask = [], [], None
    if lab_sets:
        lab, lab_inputs = lab_points_for(campaign, lab_sets)
        parts.append(lab)
        inputs += lab_inputs
        mask = mask_record(campaign, lab_sets)
    orientation = None
    frames = []
    sites = None
    if sky_sets:
        sites = {d.name: get_site(d.site).as_dict() for d in sky_sets}
        costs = []
        sky, sky_inputs = sky_points_for(campaign, sky_sets, orientation=costs, frames=frames)
        parts.append(sky)
        inputs += sky_inputs
        orientation = earth_orientation_record(costs)
    points = join_points(*parts)
    seed = opts["seed"]
    settings = FitSettings(
        degree=opts["degree"], degree_range=tuple(fs.degree_range), degree_choice=fs.degree_choice,
        hole_errors=fs.hole_errors and opts["hole_errors"],
        walkers=opts["walkers"] or max(fs.walkers, 8),
        steps=opts["steps"] or fs.steps,
        seed=seed if seed is not None else (fs.seed if fs.seed is not None else 1),
        priors=Priors(field_prior=fs.field_prior, mask_affine_sigma_ppm=mask_affine_sigma(fs, lab_sets),
                      residual=fs.residual),
        backend_path=None if quick else h5, resume=resume, progress=opts["progress"],
        sampler="laplace" if quick else "emcee",
        flexure=getattr(fs, "flexure", None), processes=opts["processes"],
    )
    settings.chain_record = chain_record(campaign, settings, inputs)
    with writer_lock(out):
        _check_result_dir(out, resume, overwrite, locked=True)  # again, now under the lock
        mark_incomplete(out)  # from here on the directory is not a complete result
        remove_partial_files(out)
        if h5.exists() and overwrite and not resume:
            h5.unlink()
        log.info("fitting filter %s: %d points, %d holes and stars, %d exposures (%d lab, %d sky)", filt,
                 points.n_points, points.n_holes, points.n_exposures, points.n_lab_exposures,
                 points.n_sky_exposures)
        fit = fit_joint(points, settings)
        rewrite = overwrite or resume
        save_fit(fit, out, campaign.sha256, inputs=[campaign.path, *inputs], overwrite=rewrite,
                 instrument=campaign.instrument.name, earth_orientation=orientation, sky_frames=frames,
                 sites=sites, mask=mask)
        try:
            products = write_fit_products(load_posterior(out), out, filt, instrument=campaign.instrument.name,
                                          campaign_sha256=campaign.sha256, inputs=[campaign.path],
                                          overwrite=rewrite)
        except ValueError as exc:
            if contradicted(out):  # the products fail because the data contradict the model: say that
                problems = json.loads((out / "fit.json").read_text())["consistency"]["problems"]
                raise DataError(f"filter {filt}: the data contradict the fit's assumptions: "
                                f"{'; '.join(problems)}; no products could be made from this fit ({exc}); "
                                f"{out} holds fit.json and residuals.ecsv to look at, and no manifest "
                                "(not a result)") from exc
            raise
        names = ["posterior.h5", "fit.json", "summary.ecsv", "residuals.ecsv",
                 *(Path(p).name for p in products.values())]
        write_manifest(out, names, {"campaign_sha256": campaign.sha256, "seed": int(settings.seed)})
    return fit, out, products


def describe(filt: str, fit: Fit, out: str | os.PathLike, products: dict) -> list[str]:
    """Lines summarising a filter's fit for the terminal.

    The field's pixel scale and its map 1-sigma are absolute figures only with a lab gauge;
    a sky-only fit states them as not measured and gives what the sky measures instead: each
    sky dataset's on-sky pixel scale and position angle (``fit.json`` ``on_sky``, written by
    :func:`~astrocal.products.result_files.save_fit`), and the map 1-sigma of the field's non-linear
    part in pixels.

    Parameters
    ----------
    filt : str
        The filter.
    fit : astrocal.model.inference.Fit
        Its fit.
    out : str or os.PathLike
        Its result directory (``fit.json`` is read from it).
    products : dict
        ``{name: path}`` of the products written.

    Returns
    -------
    list of str
    """

    points = fit.points
    ps = fit.pixel_scale_samples() * 1e3
    written = Path(out) / "fit.json"
    info_json = json.loads(written.read_text()) if written.exists() else {}
    measured = (info_json.get("pixel_scale_mas") or {}).get("measured", True)
    info = {"diagnostics": {"converged": fit.diagnostics.converged, "warnings": fit.diagnostics.warnings},
            "settings": {"degree": fit.settings.degree, "degree_range": list(fit.settings.degree_range),
                         "sampler": getattr(fit.settings, "sampler", "emcee")},
            "degree": fit.degree}
    quality = info_json.get("quality") or fit_quality(info)
    lines = [f"filter {filt}: {problem}" for problem in quality["problems"]]
    field = f"degree {fit.degree}" + (" + residual field" if getattr(fit, "residual", None) is not None else "")
    if measured:
        x = np.linspace(points.domain[0], points.domain[1], 33)
        xx, yy = np.meshgrid(x, x)
        su, sv = fit.map_uncertainty(xx, yy)
        sig = np.hypot(su, sv) * 1e3
        lines += [f"filter {filt}: {field}, pixel scale {ps.mean():.6f} +/- "
                  f"{ps.std(ddof=1):.6f} mas/px, map 1-sigma rms {np.sqrt(np.mean(sig**2)):.4f} mas "
                  f"(max {sig.max():.4f}), {int(fit.outliers.sum())} outliers flagged"]
    else:
        lines += [f"filter {filt}: {field}, sky only: instrument pixel scale not measured and map "
                  f"1-sigma in mas not measured (no lab gauge: the sky exposures' free scales take "
                  f"the field's); {_nonlinear_sigma_text(fit)}, {int(fit.outliers.sum())} outliers flagged"]
    on_sky = info_json.get("on_sky") or {}
    for d in on_sky.get("datasets", []):
        text = (f"sky {d['name']}: on-sky pixel scale {d['pixel_scale_mas']['mean']:.5f} +/- "
                f"{d['pixel_scale_mas']['sd']:.5f} mas/px")
        if d.get("position_angle_deg"):
            text += (f", position angle of detector +y {d['position_angle_deg']['mean']:.4f} +/- "
                     f"{d['position_angle_deg']['sd']:.4f} deg")
        else:
            text += (f", rotation from the nominal position angles {d['rotation_from_nominal_deg']['mean']:.4f}"
                     f" +/- {d['rotation_from_nominal_deg']['sd']:.4f} deg (per exposure in fit.json)")
        if d.get("sky_over_lab"):
            text += (f"; sky/lab scale ratio {d['sky_over_lab']['mean']:.6f} +/- "
                     f"{d['sky_over_lab']['sd']:.6f} (the telescope's)")
        lines.append(text)
    for r in info_json.get("sky_residuals") or []:
        a, c = r["after_star_errors_mas"], r["against_catalog_mas"]
        lines.append(f"sky {r['dataset']}: residual rms x/y {a[0]:.3g} / {a[1]:.3g} mas after the stars' fitted "
                     f"catalogue errors, {c[0]:.3g} / {c[1]:.3g} mas against the catalogue ({r['n_points']} points)")
    if fit.diagnostics.converged:  # else the notes are in the first line
        lines += [f"warning: {note}" for note in fit.diagnostics.warnings]
    lines += [f"warning: not constrained by the data: {name}" for name in fit.unconstrained]
    lines += [f"warning: not separated by the data: {desc}" for desc in getattr(fit, "inseparable", [])]
    names = ", ".join(Path(p).name for p in products.values())
    lines.append(f"wrote {out} (posterior.h5, summary.ecsv, fit.json, residuals.ecsv, {names})")
    return lines


def _nonlinear_sigma_text(fit):
    """The map 1-sigma of the field's non-linear part (each draw minus its own best affine
    map, in that draw's pixels; :func:`astrocal.report.build.nonlinear_draws`) as text."""
    g, deg, dom = fit.g_samples, fit.degree, fit.points.domain
    nt = n_terms(deg)
    keep = np.array([i + j >= 2 for i, j in terms(deg)])
    if not keep.any():
        return f"no non-linear part at degree {deg}"
    a = affine_matrices(g, deg, dom)
    n = np.stack([g[:, :nt] * keep, g[:, nt:2 * nt] * keep], axis=1)
    d = -np.linalg.solve(a, n)  # (draws, 2, nt): pixels
    x = np.linspace(dom[0], dom[1], 33)
    xx, yy = np.meshgrid(x, np.linspace(dom[2], dom[3], 33))
    B = design_matrix(xx.ravel(), yy.ravel(), deg, dom)
    sx, sy = (d[:, 0] @ B.T).std(axis=0, ddof=1), (d[:, 1] @ B.T).std(axis=0, ddof=1)
    sig = np.hypot(sx, sy)
    return f"map 1-sigma of the non-linear part rms {np.sqrt(np.mean(sig**2)):.4f} px (max {sig.max():.4f})"




#: exit status of ``astrocal fit`` when the data contradict the fit's assumptions
EXIT_CONTRADICTED = 3


def contradicted(out: str | os.PathLike) -> bool:
    """Whether the result in ``out`` records data that contradict the fit's assumptions.

    Parameters
    ----------
    out : str or os.PathLike
        A result directory.

    Returns
    -------
    bool
        True when its ``fit.json`` says ``quality.consistent = false``.
    """
    path = Path(out) / "fit.json"
    if not path.exists():
        return False
    return (json.loads(path.read_text()).get("quality") or {}).get("consistent") is False
