"""The report's figures: every plot of :mod:`astrocal.plots` for a result, saved as PNG and PDF.

:func:`make_figures` returns one entry per figure, in the order of the page: ``name``,
``title``, ``caption`` and the ``png``/``pdf`` paths, or ``skipped`` with the reason when
the figure cannot be drawn for this result (no earlier result, a single data kind...).

For a result whose affine part is not measured (a sky-only fit,
:func:`astrocal.report.build.affine_gauge`), the non-linear map, the 1-sigma map and the
change against an earlier result are drawn for the non-linear part of the field
(:func:`astrocal.report.build.nonlinear_solution`), and the captions say so.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import numpy as np

from .. import plots
from .build import Result

#: most pose parameters in the poses' corner plot
MAX_POSE_DIMS = 8


def pose_selection(param_names: Sequence[str], max_dims: int = MAX_POSE_DIMS) -> tuple[list, list, list]:
    """Names of pose parameters grouped by exposure, whole exposures in order until
    ``max_dims``.

    Parameters
    ----------
    param_names : sequence of str
        Parameter names; pose parameters are those containing ``pose`` (e.g.
        ``pose_tx[...]``, ``sky_pose_scale[...]``), their exposure in the bracket.
    max_dims : int
        The most parameters chosen.

    Returns
    -------
    names : list of str
        The parameters chosen.
    shown : list of str
        The exposures shown.
    exposures : list of str
        Every exposure with a pose.
    """
    groups = {}
    for name in param_names:
        m = re.match(r"^([A-Za-z_]*pose[A-Za-z_]*)\[(.*)\]$", name)
        if m:
            groups.setdefault(m.group(2), []).append(name)
    chosen, shown = [], []
    for exposure, names in groups.items():
        if chosen and len(chosen) + len(names) > max_dims:
            break
        chosen += names[:max_dims]
        shown.append(exposure)
    return chosen, shown, list(groups)


def _safe(name):
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name)).strip("_") or "dataset"


def make_figures(result: Result, against: Result | None, outdir: Path, overwrite: bool = False) -> list[dict]:
    """Draw and save every figure of the report for ``result`` (and ``against``).

    Parameters
    ----------
    result : astrocal.report.build.Result
        The result.
    against : astrocal.report.build.Result or None
        An earlier result to compare with.
    outdir : Path
        Where the PNG and PDF files go (created).
    overwrite : bool
        Replace existing files.

    Returns
    -------
    list of dict
        One entry per figure, in the order of the page: ``name``, ``title``, ``caption``,
        ``png``, ``pdf``, or ``name``, ``title`` and ``skipped`` (the reason).
    """
    outdir.mkdir(parents=True, exist_ok=True)
    entries = []

    def add(name, title, caption, make):
        try:
            fig = make()
        except ValueError as exc:
            entries.append({"name": name, "title": title, "skipped": str(exc)})
            return
        paths = plots.save_figure(fig, outdir / name, overwrite=overwrite)
        entries.append({"name": name, "title": title, "caption": caption,
                        "png": paths["png"], "pdf": paths["pdf"]})

    sol = result.solution
    shape = result.detector_shape
    post = result.posterior
    sky_only = not result.gauge["affine_measured"]
    no_gauge = (" Sky-only fit: the affine part (scale, rotation, position) is not measured; "
                "only the priors set it." if sky_only else "")
    add("distortion_map", "Distortion vector map",
        "Offsets measured minus linear-grid position (AstroMet sign) of the posterior-mean "
        "field; arrows exaggerated, key in pixels and mas; colour: their length." + no_gauge,
        lambda: plots.distortion_vector_map(sol))
    if sky_only:
        add("nonlinear_map", "Non-linear distortion",
            "Posterior mean of the non-linear part: each draw's field minus its own best affine "
            "map over the detector (least squares), in that draw's pixels.",
            lambda: plots.nonlinear_map(result.nonlinear))
        add("uncertainty_map", "1-sigma uncertainty map (non-linear part)",
            "sqrt(sigma_x^2 + sigma_y^2) of the non-linear part of the offsets over the detector, "
            "from the exact posterior draws; + marks the maximum. The affine part is left out: a "
            "sky-only fit does not measure it.",
            lambda: plots.uncertainty_map(result.nonlinear))
    else:
        add("nonlinear_map", "Non-linear distortion",
            "The distortion minus its best affine approximation over the detector (least squares).",
            lambda: plots.nonlinear_map(sol))
        add("uncertainty_map", "1-sigma uncertainty map",
            "sqrt(sigma_x^2 + sigma_y^2) of the linear-grid position over the detector, from the "
            "exact posterior draws; + marks the maximum.",
            lambda: plots.uncertainty_map(sol))
    add("pixel_scale_map", "Pixel-scale map",
        "Areal local pixel scale sqrt|det J| of the posterior-mean field (the METIS "
        "DISTORTION_MAP product, sampled)."
        + (" Sky-only fit: its mean level is set by the priors, not measured; its relative "
           "variation over the field is." if sky_only else ""),
        lambda: plots.pixel_scale_map(post.mean_field(), shape))
    if result.residuals is not None:
        names = list(dict.fromkeys(np.asarray(result.residuals["dataset"], str)))
        for ds in names:
            add(f"residuals_{_safe(ds)}", f"Residuals: {ds}",
                "Posterior-mean residuals (measured minus predicted) of the points used, with "
                "outliers marked; normalised residuals against N(0, 1); residuals in mas.",
                lambda ds=ds: plots.residual_plot(result.residuals, ds, shape))
        sky = [ds for ds in names if "dx_cat_mas" in result.residuals.colnames
               and np.any(np.isfinite(np.asarray(result.residuals["dx_cat_mas"], float)
                                      [np.asarray(result.residuals["dataset"], str) == ds]))]
        for ds in sky:
            add(f"catalog_residuals_{_safe(ds)}", f"Residuals against the catalogue: {ds}",
                "Posterior-mean residuals of the star points used against their catalogue positions as "
                "given (what a comparison with the catalogue shows: residuals.ecsv dx_cat_mas, "
                "dy_cat_mas), in the focal plane (mas), over the detector; histograms of these and "
                "of the residuals after the stars' fitted catalogue errors (dx_mas, dy_mas), which "
                "take part of the scatter.",
                lambda ds=ds: plots.catalog_residual_plot(result.residuals, ds, shape))
        add("lab_vs_sky", "Lab versus sky",
            "Residuals of the lab and the sky datasets: lengths, rms against field radius, "
            "normalised residuals.",
            lambda: plots.lab_sky_comparison(result.residuals, shape))
    else:
        entries.append({"name": "residuals", "title": "Residuals",
                        "skipped": f"{result.path}: no residuals.ecsv"})
    add("corner_hyperparameters", "Corner plot: hyperparameters",
        "Posterior of the hyperparameters (natural logs of the jitters, centroid-error scale, "
        "hole-error scale, flexure and field widths and the widths' decay ratio; the field "
        "widths' curvature as is); lines at the 16, 50 and 84 % quantiles.",
        lambda: plots.corner_plot(post.phi, post.hyper_names))
    names, shown, every = pose_selection(post.param_names)

    def corner_poses():
        if not names:
            raise ValueError("the result has no pose parameters")
        return plots.corner_plot(post.param_samples(names), names)

    add("corner_poses", "Corner plot: poses",
        f"Posterior of the pose parameters of exposure(s) {', '.join(shown)} "
        f"({len(shown)} of the {len(every)} exposures with a free pose; the reference "
        "exposure's pose is the frame).",
        corner_poses)

    def chains():
        if result.chain is None:
            raise ValueError(f"{result.path}: the posterior has no chain")
        burn = int(result.info.get("diagnostics", {}).get("burn") or 0)
        return plots.chain_plot(result.chain, post.hyper_names, burn=burn)

    add("chains", "Chains and autocorrelation",
        "Every walker's trace per hyperparameter (burn-in shaded) and the integrated "
        "autocorrelation time against chain length, with the N/50 line of the stopping rule.",
        chains)

    compare_nonlinear = against is not None and (sky_only or not against.gauge["affine_measured"])

    def difference():
        if against is None:
            raise ValueError("no earlier result given (--against OLDER_RESULT)")
        if compare_nonlinear:
            return plots.difference_map(result.nonlinear, against.nonlinear)
        return plots.difference_map(sol, against.solution)

    add("difference_map", "Change against the earlier result",
        ("Non-linear part of the distortion of this result minus that of the earlier one (each "
         "draw's own affine map removed: a sky-only result does not measure it); right: the "
         "change over its 1-sigma." if compare_nonlinear else
         "Distortion of this result minus the earlier one, each relative to its own linear "
         "grid (position, rotation and scale left out); right: the change over its 1-sigma."),
        difference)
    return entries
