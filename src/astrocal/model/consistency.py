"""Do the data contradict the fit's assumptions? Checks made once a fit has run.

A fit can end with small error bars on data that contradict what it assumes: a mask table
in cm instead of mm (the pixel scale comes out ten times its nominal value), commanded
offsets that are not the ones the frames were taken at, a frame listed twice with two
offsets. The model absorbs such contradictions (the field's affine part, the per-dataset
jitter, the exposures' poses), so the posterior alone does not say it. Three checks say it:

* ``scale``: the fitted pixel scale against the campaign's nominal one
  (``[instrument] pixel_scale_mas``), lab data only (a sky-only fit does not measure
  it): off by more than :data:`SCALE_TOLERANCE` (relative) is a contradiction -- a design
  pixel scale is known to a few per cent, a unit error is a factor of 10 or 1000;
* ``residuals``: the lab points' residuals against their stated centroid errors: the
  median over the points of ``sqrt(chi2 / 2)`` with the centroid covariance alone (no
  jitter, no error scale) above :data:`RESIDUAL_LIMIT` is a contradiction (for a model
  that describes the data it is below 1: 0.83 for residuals as large as the errors,
  less as the holes' errors take a part; sky data are not judged, their jitter holds
  the atmosphere's image motion by design);
* ``poses``: every exposure's pose parameter (scale, rotation, offset error) whose
  posterior mean lies more than :data:`PULL_LIMIT` prior widths from its prior mean
  (zero): a commanded offset, rotator angle or plate scale that the frames contradict.

:func:`check_consistency` returns the measured figures and one sentence per
contradiction (``problems``); ``fit.json`` keeps them as ``consistency``,
:func:`astrocal.model.quality.fit_quality` turns them into the ``consistent`` flag (QC
keyword ``HIERARCH ASTROCAL QC CONSISTENT``), and ``astrocal fit`` ends with status 3.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from astropy.table import Table

    from .inference import Fit

__all__ = ["check_consistency", "SCALE_TOLERANCE", "RESIDUAL_LIMIT", "PULL_LIMIT"]

#: relative difference of the fitted and the nominal pixel scale that contradicts the data
SCALE_TOLERANCE = 0.10
#: median normalised residual (centroid errors alone) of a lab dataset that contradicts the model
RESIDUAL_LIMIT = 10.0
#: pose parameter's distance from its prior mean, in prior widths, that contradicts the data
PULL_LIMIT = 5.0
#: poses listed by name in a problem sentence (the rest are counted)
NAMED = 4


def _scale(fit):
    points = fit.points
    kinds = np.asarray(points.exposure_kind)
    if not np.any(kinds == 0):
        return None
    nominal = float(points.pixel_scale) * 1e3
    fitted = float(np.mean(fit.pixel_scale_samples())) * 1e3
    return {"nominal_mas": nominal, "fitted_mas": fitted, "ratio": fitted / nominal,
            "contradicts": bool(abs(fitted / nominal - 1.0) > SCALE_TOLERANCE)}


def _residuals(fit, residuals):
    """Per lab dataset: the median over its points of ``sqrt(chi2 / 2)``, the pixel
    residuals against the stated centroid covariance alone (``points.cov``, pixels)."""
    points = fit.points
    r = np.column_stack([np.asarray(residuals["dx_px"], float), np.asarray(residuals["dy_px"], float)])
    cov = np.asarray(points.cov, float)
    chi2 = np.einsum("ni,ni->n", r, np.linalg.solve(cov, r[:, :, None])[:, :, 0])
    z = np.sqrt(np.maximum(chi2, 0.0) / 2.0)
    kinds = tuple(getattr(points, "dataset_kinds", ()) or ()) or ("lab",) * points.n_datasets
    ds = np.asarray(points.dataset)
    out = []
    for k, name in enumerate(points.dataset_names):
        sel = ds == k
        if kinds[k] != "lab" or not sel.any():
            continue
        med = float(np.median(z[sel]))
        out.append({"dataset": str(name), "median_normalised": med, "contradicts": bool(med > RESIDUAL_LIMIT)})
    return out


def _poses(fit):
    model, points = fit.model, fit.points
    g = np.asarray(fit.g_samples, float)
    mean = g.mean(axis=0)
    sd = np.asarray(model.g_sd, float)
    out = []
    for e in range(points.n_exposures):
        slot = model.pose_slot[e]
        if slot < 0:
            continue
        s = model.p0 + 4 * slot
        for col in range(s, s + 4):
            if sd[col] <= 0:
                continue
            pull = abs(mean[col] - model.g0[col]) / sd[col]
            if pull > PULL_LIMIT:
                out.append({"name": model.param_names[col], "mean": float(mean[col]),
                            "prior_sd": float(sd[col]), "pull": float(pull)})
    return sorted(out, key=lambda p: -p["pull"])


def check_consistency(fit: Fit, residuals: Table) -> dict:
    """The checks of the module notes for a fit and its residual table.

    Parameters
    ----------
    fit : astrocal.model.inference.Fit
        The fit.
    residuals : astropy.table.Table
        Its residual table (:func:`astrocal.model.result.residual_table`).

    Returns
    -------
    dict
        ``{"scale", "residuals", "poses", "problems", "consistent"}``.
    """
    scale = _scale(fit)
    res = _residuals(fit, residuals)
    poses = _poses(fit)
    problems = []
    if scale is not None and scale["contradicts"]:
        problems.append(f"the fitted pixel scale {scale['fitted_mas']:.5g} mas/px is {scale['ratio']:.4g} times the "
                        f"nominal {scale['nominal_mas']:.5g} mas/px ([instrument] pixel_scale_mas): a unit error "
                        "in the mask table (mm expected) or in the campaign's scales?")
    for r in res:
        if r["contradicts"]:
            problems.append(f"dataset {r['dataset']}: the residuals are {r['median_normalised']:.3g} times the "
                            "stated centroid errors (median): the model does not describe these data (mask "
                            "table, hole identification, offsets?)")
    if poses:
        named = ", ".join(f"{p['name']} {p['mean']:.3g} ({p['pull']:.0f} prior widths)" for p in poses[:NAMED])
        more = f" and {len(poses) - NAMED} more" if len(poses) > NAMED else ""
        problems.append(f"{len(poses)} exposure pose parameter(s) far outside their priors: {named}{more} "
                        "(offsets in arcsec, scales and rotations relative): the commanded offsets, angles or "
                        "nominal scale contradict the frames")
    return {"scale": scale, "residuals": res, "poses": poses, "problems": problems, "consistent": not problems}
