"""The numbers of the accuracy-budget report, computed from a fit's result directory.

A result directory is what ``astrocal fit`` writes per filter: ``posterior.h5``,
``fit.json``, ``summary.ecsv``, ``residuals.ecsv`` and the products. :func:`build_report`
returns a plain dict (written as ``report.json``; the HTML page shows the same numbers):

- ``case``: whether the field's affine part (position, rotation, scale) is measured
  (:func:`affine_gauge`): a result with lab exposures has the mask as its gauge; a
  **sky-only** result has none (every sky exposure has its own free pointing, position
  angle and plate scale), so its affine part is set by the priors only;
- ``map_accuracy``: the 1-sigma of the map, ``sigma(p) = sqrt(sigma_x**2 + sigma_y**2)``
  of the linear-grid position ``M (G(p) - G(b))`` (the AstroMet ``RAWX_OFF_ERR``,
  ``RAWY_OFF_ERR``), on a regular grid of ``n x n`` positions from corner to corner of the
  detector: its rms and maximum in mas and pixels, and the same inside the fit's data
  footprint (``inside_footprint``; beyond it, ``extrapolated_fraction`` of the detector,
  the map is extrapolated). Measured relative to the boresight,
  since the absolute position of the field is a gauge (the mask's position), not a
  property of the instrument. For a sky-only result it is the 1-sigma of the field's
  **non-linear part** (:func:`nonlinear_draws`), and ``map_accuracy_full_field`` keeps
  the full-field number (set by the priors, not a measurement);
- ``pixel_scale``: mean and sd of the areal pixel scale of the field's affine part
  (``measured: false`` with the reason for a sky-only result);
- ``on_sky``: with sky data, each sky dataset's on-sky pixel scale and position angle with
  their sd (``fit.json`` ``on_sky``, :mod:`astrocal.model.onsky`): measured with or without
  a lab gauge; with one, the ratio to the lab's scale (the telescope's);
- ``residuals``: per dataset, the rms of the posterior-mean residuals of the points used
  (mas, pixels), the mean chi-square and the sd of the normalised residuals;
- ``sky_residuals``: per sky dataset, the rms (mas, x / y and both axes) of its stars'
  residuals against the catalogue as given and after the stars' fitted catalogue errors
  (:func:`catalog_residuals`); empty without sky data;
- ``outliers``, ``evidence`` (degree and evidence table, each degree's posterior
  probability), ``degree_rule`` (how the degree was chosen), ``convergence``;
- ``stability`` (with an earlier result): relative change of the pixel scale, largest
  change of the distortion over the field (each result's offsets relative to its own
  linear grid) over the detector's half-diagonal, and the position change that the scale
  change causes at the detector's corners (mas); when either result is sky-only, the
  distortion change is that of the non-linear parts and the scale changes are not
  measured;
- ``requirements``: each requirement of the requirements file with pass, fail, not
  measured, not evaluated or not applicable.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
from astropy.io import fits
from astropy.table import Table
from numpy.typing import ArrayLike

from .. import __version__
from ..errors import AstrocalError
from ..field import DistortionField, design_matrix, nonlinear_part
from ..field.basis import flat_to_square, square_to_flat, triangle_mask
from ..model.draws import affine_matrices
from ..model.quality import fit_quality
from ..model.footprint import footprint_area, inside_footprint
from ..model.result import residual_rms, sky_residual_record
from ..plain import to_plain
from ..products import metis_band, posterior_solution
from ..products.result_files import load_chain, load_posterior, load_residuals
from ..resultset import require_complete
from .requirements import METRICS, NEEDS_AFFINE, NONLINEAR_WITHOUT_GAUGE, Requirement, evaluate, load_requirements

if TYPE_CHECKING:  # types of the hints only (the result files' readers return them)
    from ..model.result import Posterior
    from ..solution import Solution

#: positions per axis of the grid on which maps are evaluated for the numbers
GRID = 65


class ComparisonError(AstrocalError, ValueError):
    """Two results that cannot be compared (``astrocal report --against``: different
    detectors); the message names both."""


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
    def detector_shape(self) -> tuple:
        """``(ny, nx)`` of the detector (the posterior's)."""
        return self.posterior.detector_shape

    @cached_property
    def gauge(self) -> dict:
        """:func:`affine_gauge` of this result: is the field's affine part measured?"""
        return affine_gauge(self.info, self.residuals)

    @cached_property
    def nonlinear(self) -> NonlinearPart:
        """:class:`NonlinearPart` of this result (:func:`nonlinear_solution`)."""
        return nonlinear_solution(self.posterior, self.solution)


def is_result_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` holds a fit's result (a ``posterior.h5``).

    Parameters
    ----------
    path : str or os.PathLike
        A directory.

    Returns
    -------
    bool
    """
    return (Path(path) / "posterior.h5").exists()


def find_results(path: str | os.PathLike) -> list[Path]:
    """Result directories at ``path``: itself if it holds ``posterior.h5``, else its
    sub-directories that do (one per filter, as ``astrocal fit`` writes them).

    Parameters
    ----------
    path : str or os.PathLike
        A result directory, or a fit's output directory.

    Returns
    -------
    list of Path

    Raises
    ------
    FileNotFoundError
        No such directory, or no result in it.
    """
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


def load_result(path: str | os.PathLike, band: str | None = None) -> Result:
    """Load a result directory.

    Parameters
    ----------
    path : str or os.PathLike
        A complete result directory.
    band : str, optional
        Overrides the METIS band of its instrument.

    Returns
    -------
    Result
    """
    path = Path(path)
    require_complete(path)
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
                  posterior_solution(post, filt, sigma_part="full"))


# =========================================================================== gauge
#: why the affine metrics of a result without a lab gauge are not measured
NO_GAUGE_REASON = ("sky-only fit: scale, rotation and position are not constrained without a "
                   "lab gauge (every sky exposure has its own free pointing, position angle "
                   "and plate scale)")


def affine_gauge(info: dict, residuals: Table | None = None) -> dict:
    """Whether a result measures its field's affine part (position, rotation, scale).

    The criterion is structural: the affine part is measured when the fit had lab data,
    i.e. a dataset of kind ``"lab"`` with exposures and points used. The kinds come from
    ``fit.json`` (``datasets``: ``name``, ``kind``, ``n_exposures``, ``n_used``); a result
    without that list falls back on the residual table's ``kind`` column (points that are
    not outliers). The lab mask is then the gauge (its pitch sets the scale, the reference
    exposure position and rotation). Without lab data every sky exposure has its own free
    pointing, position angle and plate scale, so the field's constant and linear terms
    are told only by their priors (``fit.json`` names them in ``inseparable``).

    Parameters
    ----------
    info : dict
        The result's ``fit.json``.
    residuals : Table, optional
        Its ``residuals.ecsv`` (the fallback for the kinds).

    Returns
    -------
    dict
        ``case`` (``"lab"``, ``"joint"``, ``"sky-only"`` or ``"unknown"``), ``affine_measured`` (bool;
        ``True`` for ``"unknown"``, the behaviour of results that do not record their kinds),
        ``source`` (where the kinds came from), ``lab_datasets``, ``sky_datasets``, ``statement``
        (one sentence for the page) and ``reason`` (why the affine metrics are not measured, or
        ``None``).
    """
    datasets = info.get("datasets")
    lab, sky, source = [], [], None
    if isinstance(datasets, list) and datasets and all(isinstance(d, dict) and "kind" in d for d in datasets):
        source = "fit.json datasets"
        for d in datasets:
            name = str(d.get("name", ""))
            used = int(d.get("n_used", d.get("n_points", 1)) or 0) > 0
            exposures = int(d.get("n_exposures", 1) or 0) > 0
            if str(d["kind"]) == "lab" and used and exposures:
                lab.append(name)
            elif str(d["kind"]) == "sky":
                sky.append(name)
    elif residuals is not None and "kind" in residuals.colnames and len(residuals):
        source = "residuals.ecsv kind"
        names = np.asarray(residuals["dataset"], str)
        kinds = np.asarray(residuals["kind"], str)
        used = ~np.asarray(residuals["outlier"], bool)
        for name in dict.fromkeys(names):
            sel = names == name
            if np.any(sel & used & (kinds == "lab")):
                lab.append(str(name))
            elif np.any(sel & (kinds == "sky")):
                sky.append(str(name))
    out = {"lab_datasets": lab, "sky_datasets": sky, "source": source, "reason": None,
           "criterion": "the affine part is measured when the fit has a lab dataset with "
                        "exposures and points used (dataset kinds from fit.json, else from "
                        "residuals.ecsv)"}
    if source is None:
        out.update(case="unknown", affine_measured=True,
                   statement="The result does not record the kinds of its datasets (no 'datasets' "
                             "in fit.json, no residual table); it is reported as a result with a lab "
                             "gauge, every number for the full field.")
    elif lab:
        sets = f"lab dataset(s) {', '.join(lab)}" + (f" and sky dataset(s) {', '.join(sky)}" if sky else "")
        out.update(case="joint" if sky else "lab", affine_measured=True,
                   statement=(f"{'Joint lab and sky fit' if sky else 'Lab fit'} ({sets}): the mask "
                              "fixes the field's scale, rotation and position, so every number "
                              "below is for the full field."))
    else:
        out.update(case="sky-only", affine_measured=False, reason=NO_GAUGE_REASON,
                   statement=(f"Sky-only fit (sky dataset(s) {', '.join(sky) or '?'}, no lab "
                              "exposures): the field's scale, rotation and position (its affine "
                              "part) are not constrained without a lab gauge. The map accuracy and "
                              "the distortion stability are computed from the non-linear part of "
                              "the field (each posterior draw minus its own best affine map); the "
                              "pixel scale and the scale requirements are not measured."))
    return out


def nonlinear_keep(degree: int) -> np.ndarray:
    """Flat mask (:func:`astrocal.field.terms` order) of the Legendre terms that make up
    the non-linear part of a field of ``degree`` (those :func:`astrocal.field.nonlinear_part`
    keeps: total degree >= 2).

    Parameters
    ----------
    degree : int
        The field's degree.

    Returns
    -------
    np.ndarray of bool
    """
    ones = np.where(triangle_mask(degree), 1.0, 0.0)
    unit = DistortionField(ones, ones, (-1.0, 1.0, -1.0, 1.0))
    return square_to_flat(nonlinear_part(unit).cx) != 0


def nonlinear_draws(posterior: Posterior) -> np.ndarray:
    """Per posterior draw, the Legendre coefficients (pixels) of the non-linear part of
    the reverse offsets in that draw's own affine frame: ``-A_d^-1 N_d``.

    For draw ``d`` write the field ``G_d(p) = A_d p + c_d + N_d(p)``: ``A_d p + c_d`` is
    its best affine approximation over the detector in the least-squares sense (its
    degree <= 1 Legendre terms, the basis being orthogonal on the domain:
    :func:`astrocal.field.nonlinear_part`) and ``N_d`` the rest. Then
    ``A_d^-1 (G_d(p) - c_d) = p + A_d^-1 N_d(p)``: the linear-grid position of ``p`` in the
    draw's own affine frame, and ``D2_nl = -A_d^-1 N_d`` the offsets (measured minus
    linear-grid position, 0-based pixels, AstroMet sign) without any affine part. This is
    unchanged by any affine map of the focal plane applied to the draw, so the draw's
    unmeasured pointing, rotation and plate scale (of a sky-only fit) drop out exactly;
    subtracting the affine part alone would leave ``N_d`` scaled by the draw's own scale.

    Parameters
    ----------
    posterior : astrocal.model.result.Posterior
        The posterior's draws.

    Returns
    -------
    np.ndarray
        ``(n_draws, 2, n_terms)``: x and y coefficients on the posterior's domain.
    """
    nt = posterior.nt
    cu, cv = posterior.g[:, :nt], posterior.g[:, nt:2 * nt]
    a = affine_matrices(posterior.g, posterior.degree, posterior.domain)
    keep = nonlinear_keep(posterior.degree)
    n = np.stack([cu * keep, cv * keep], axis=1)
    return -np.linalg.solve(a, n)


@dataclass(frozen=True, eq=False)
class NonlinearPart:
    """The non-linear part of a posterior's field (:func:`nonlinear_draws`), with what the
    report's numbers and the maps of :mod:`astrocal.plots` (``nonlinear_map``,
    ``uncertainty_map``, ``difference_map``) read from a solution.

    ``field``: the posterior mean of ``D2_nl`` (0-based pixels -> pixels, AstroMet sign:
    measured minus linear-grid position); ``sigma(x, y)``: its posterior sd along x and y
    (pixels, exactly the sample sd over the draws, ``ddof=1``); ``plate_scale``
    (arcsec/pixel) of the posterior-mean field, used only to express pixels in mas: for a
    sky-only fit it is set by the priors (to about 1e-2), which is the relative accuracy
    of the mas figures, not of the pixel ones.
    """

    field: DistortionField
    sigma: object
    plate_scale: float
    detector_shape: tuple
    filter: str

    def reverse_offsets(self, x: ArrayLike, y: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """``D2_nl(p)`` at 0-based detector positions.

        Parameters
        ----------
        x, y : array_like
            0-based detector positions (pixels).

        Returns
        -------
        tuple of np.ndarray
            The x and y offsets (pixels).
        """
        return self.field(np.asarray(x, float), np.asarray(y, float))

    def reverse_offset_field(self) -> DistortionField:
        """The posterior mean of ``D2_nl`` (:attr:`field`).

        Returns
        -------
        DistortionField
        """
        return self.field


def nonlinear_solution(posterior: Posterior, solution: Solution) -> NonlinearPart:
    """The :class:`NonlinearPart` of ``posterior``.

    Parameters
    ----------
    posterior : astrocal.model.result.Posterior
        The posterior's draws.
    solution : astrocal.solution.Solution
        Its posterior-mean solution: gives the plate scale, detector and filter.

    Returns
    -------
    NonlinearPart
    """
    deg = posterior.degree
    d = nonlinear_draws(posterior)
    flat = d.reshape(len(d), -1)
    mean = flat.mean(axis=0)
    nt = posterior.nt
    cov = np.atleast_2d(np.cov(flat, rowvar=False)) if len(d) > 1 else np.zeros((2 * nt, 2 * nt))
    d2 = DistortionField(flat_to_square(mean[:nt], deg), flat_to_square(mean[nt:], deg),
                         posterior.domain, unit="pixel", input_unit="pixel")

    def sigma(x, y):
        x = np.ravel(np.asarray(x, float))
        y = np.ravel(np.asarray(y, float))
        out_x, out_y = np.empty(x.size), np.empty(x.size)
        for lo in range(0, x.size, 4096):
            B = design_matrix(x[lo:lo + 4096], y[lo:lo + 4096], deg, posterior.domain)
            for k, out in ((0, out_x), (1, out_y)):
                c = cov[k * nt:(k + 1) * nt, k * nt:(k + 1) * nt]
                out[lo:lo + 4096] = np.sqrt(np.maximum(np.einsum("na,ab,nb->n", B, c, B), 0.0))
        return out_x, out_y

    return NonlinearPart(d2, sigma, float(solution.plate_scale), tuple(solution.detector_shape),
                         solution.filter)


# =========================================================================== numbers
#: what ``map_accuracy`` measures for a result with a lab gauge
FULL_FIELD_DEFINITION = ("sqrt(sigma_x^2 + sigma_y^2) of the linear-grid position relative to "
                         "the boresight, on an n x n grid from corner to corner (0-based pixels)")
#: ... and without one
NONLINEAR_DEFINITION = ("sqrt(sigma_x^2 + sigma_y^2) of the non-linear part of the offsets: "
                        "each posterior draw's field minus its own best affine map (least "
                        "squares over the detector), in that draw's own pixels, on an n x n grid "
                        "from corner to corner (0-based pixels); mas = pixels x the mean plate scale")


def map_accuracy(solution: Solution | NonlinearPart, n: int = GRID, definition: str = FULL_FIELD_DEFINITION,
                 footprint: np.ndarray | None = None) -> dict:
    """rms and maximum over an ``n`` x ``n`` grid of the map's 1-sigma (mas and pixels)
    of ``solution`` (``solution.sigma``; for the non-linear part, pass
    :func:`nonlinear_solution` and :data:`NONLINEAR_DEFINITION`).

    With the fit's data ``footprint`` (vertices, pixels; :mod:`astrocal.model.footprint`),
    ``inside_footprint`` gives the same figures over the grid positions inside it, where the
    map interpolates, and ``extrapolated_fraction`` the fraction of the detector's area
    beyond it, where the map is a polynomial extrapolation on the learnt widths of its
    highest degrees (``docs/model.md``: its intervals are less well calibrated there).

    Parameters
    ----------
    solution : Solution or NonlinearPart
        Its ``sigma`` is evaluated.
    n : int
        Grid positions per axis.
    definition : str
        What is measured, recorded with the numbers.
    footprint : np.ndarray, optional
        The fit's data footprint (vertices, pixels).

    Returns
    -------
    dict
        ``rms_px``, ``max_px``, ``rms_mas``, ``max_mas``, ``max_at_px``, ``grid``, ``definition``;
        with a footprint ``inside_footprint`` and ``extrapolated_fraction``.
    """
    ny, nx = solution.detector_shape
    xs, ys = np.linspace(0, nx - 1, n), np.linspace(0, ny - 1, n)
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    x, y = xx.ravel(), yy.ravel()
    sx, sy = solution.sigma(x, y)
    sig = np.hypot(sx, sy)
    mas = solution.plate_scale * 1e3
    out = dict(_sigma_stats(sig, x, y, mas), grid=n, definition=definition)
    if footprint is not None:
        inside = inside_footprint(footprint, x, y)
        out["inside_footprint"] = (dict(_sigma_stats(sig[inside], x[inside], y[inside], mas),
                                        n_positions=int(inside.sum()))
                                   if inside.any() else None)
        out["extrapolated_fraction"] = float(max(1.0 - footprint_area(footprint) / (nx * ny), 0.0))
    return out


def _sigma_stats(sig, x, y, mas):
    """rms and maximum of the 1-sigma values ``sig`` (pixels) at ``x, y``, in pixels and mas."""
    k = int(np.argmax(sig))
    rms = float(np.sqrt(np.mean(sig**2)))
    return {"rms_px": rms, "max_px": float(sig[k]), "rms_mas": rms * mas, "max_mas": float(sig[k] * mas),
            "max_at_px": [float(x[k]), float(y[k])]}


def residual_summary(table: Table) -> list[dict]:
    """Per dataset: points, used, outliers, rms (mas, px, per axis), mean chi-square and the
    sd of the normalised residuals of the points used.

    Parameters
    ----------
    table : Table
        The result's ``residuals.ecsv``.

    Returns
    -------
    list of dict
        One per dataset.
    """
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


#: what the two kinds of sky residuals are (the report's ``sky_residuals_definition``)
SKY_RESIDUALS_DEFINITION = (
    "posterior-mean residuals of the star points used (a star in an exposure; outliers left out), "
    "in the focal plane: against the catalogue as given (residuals.ecsv dx_cat_mas, dy_cat_mas: "
    "what a comparison with the catalogue shows) and after the stars' fitted catalogue errors "
    "(dx_mas, dy_mas: each star's catalogue position has its own error term, with the "
    "catalogue's covariance as prior, which takes part of the scatter)")


def catalog_residuals(result: Result) -> list[dict]:
    """Per sky dataset of ``result``: ``dataset``, ``n_points`` (points used: a star in an exposure),
    ``against_catalog_mas`` and ``after_star_errors_mas`` (rms x, y in mas) and the same over
    both axes (``against_catalog_rms_mas``, ``after_star_errors_rms_mas``: sqrt of the mean
    of x**2 + y**2 over 2, i.e. per axis), and ``source``: computed from ``residuals.ecsv``
    (:func:`astrocal.model.result.sky_residual_record`), else copied from ``fit.json``
    ``sky_residuals``; ``[]`` when the result has neither (no sky data, or a fit written
    before the catalogue residuals were).

    Parameters
    ----------
    result : Result
        A loaded result.

    Returns
    -------
    list of dict
        One per sky dataset.
    """
    rows, source = [], None
    if result.residuals is not None and "dx_cat_mas" in result.residuals.colnames:
        rows, source = sky_residual_record(result.residuals), "residuals.ecsv"
    elif result.info.get("sky_residuals"):
        rows, source = [dict(r) for r in result.info["sky_residuals"]], "fit.json sky_residuals"
    out = []
    for r in rows:
        a, c = r["after_star_errors_mas"], r["against_catalog_mas"]
        out.append(dict(r, source=source,
                        after_star_errors_rms_mas=float(np.sqrt(0.5 * (a[0] ** 2 + a[1] ** 2))),
                        against_catalog_rms_mas=float(np.sqrt(0.5 * (c[0] ** 2 + c[1] ** 2)))))
    return out


def outlier_list(table: Table, limit: int = 100) -> list[dict]:
    """The points flagged as outliers, at most ``limit``.

    Parameters
    ----------
    table : Table
        The result's ``residuals.ecsv``.
    limit : int
        The most rows listed.

    Returns
    -------
    list of dict
        ``point_id``, ``dataset``, ``exposure``, ``source``, ``x``, ``y``, ``dx_px``, ``dy_px``.
    """
    out = np.asarray(table["outlier"], bool)
    rows = []
    for k in np.flatnonzero(out)[:limit]:
        rows.append({c: (table[c][k].item() if hasattr(table[c][k], "item") else table[c][k])
                     for c in ("point_id", "dataset", "exposure", "source", "x", "y", "dx_px", "dy_px")})
    return rows


def evidence_table(info: dict) -> list[dict]:
    """The degree and evidence table of ``fit.json``, each row's log evidence relative to
    the best.

    Parameters
    ----------
    info : dict
        The result's ``fit.json``.

    Returns
    -------
    list of dict
        ``degree``, ``residual``, ``log_evidence``, ``delta_log_evidence``, ``probability``,
        ``note`` (non-finite evidences as None).
    """
    ev = [e for e in info.get("evidence", []) if e]
    finite = [e["log_evidence"] for e in ev if e.get("log_evidence") is not None
              and np.isfinite(e["log_evidence"])]
    best = max(finite) if finite else None
    rows = []
    for e in ev:
        z = e.get("log_evidence")
        ok = z is not None and np.isfinite(z)
        rows.append({"degree": e.get("degree"), "residual": bool(e.get("residual", False)),
                     "log_evidence": z if ok else None,
                     "delta_log_evidence": (z - best) if ok and best is not None else None,
                     "probability": e.get("probability"), "note": e.get("note", "")})
    return rows


def field_model(info: dict) -> dict:
    """What the fit's field holds: the polynomial's degree, whether the evidence kept a
    residual field beyond it (with its amplitude and correlation length, posterior medians)
    and the unresolved field's sd that the map's 1-sigma includes.

    Parameters
    ----------
    info : dict
        The result's ``fit.json``.

    Returns
    -------
    dict
    """
    res = info.get("residual_field") or {}
    unres = info.get("unresolved_field") or {}
    dithers = info.get("dither_separation") or {}
    tried = {bool(e.get("residual", False)) for e in info.get("evidence", []) if e}
    return {"degree": info.get("degree"), "residual": bool(res), "residual_tried": True in tried,
            "residual_rms_mas": res.get("rms_arcsec_median", 0.0) * 1e3 if res else None,
            "residual_length_px": res.get("length_px_median") if res else None,
            "residual_lengths_px": ([res["length_x_px_median"], res["length_y_px_median"]]
                                    if res and "length_y_px_median" in res else None),
            "residual_functions": res.get("n_functions") if res else None,
            "unresolved_px": unres.get("sd_px_rms"),
            "dither_half_period_px": dithers.get("half_period_px"),
            "dither_span_px": dithers.get("offset_span_px"),
            "degree_at_top": bool((info.get("quality") or {}).get("degree_at_top_of_range", False))}


def convergence(info: dict, chain: np.ndarray | None) -> dict:
    """The sampler's diagnostics of ``fit.json``, with the largest autocorrelation time, the
    steps over it, the hyperparameters' names and what the data do not constrain or
    separate.

    Parameters
    ----------
    info : dict
        The result's ``fit.json``.
    chain : np.ndarray or None
        The chain ``(steps, walkers, ndim)``: gives the number of walkers.

    Returns
    -------
    dict
    """
    d = dict(info.get("diagnostics", {}))
    tau = [t for t in (d.get("tau") or []) if t is not None]
    d["tau_max"] = max(tau) if tau else None
    d["steps_over_tau"] = (d.get("steps") / max(tau)) if tau and d.get("steps") else None
    d["hyper_names"] = info.get("hyper_names", [])
    d["unconstrained"] = info.get("unconstrained", [])
    d["inseparable"] = info.get("inseparable", [])
    if chain is not None:
        d["walkers"] = int(chain.shape[1])
    return d


def stability(new: Result, old: Result, n: int = GRID) -> dict:
    """Changes between ``new`` and an earlier result ``old`` (both :class:`Result`).

    When both measure their affine part (:attr:`Result.gauge`), the scale change and the
    distortion change of the offsets relative to each result's own linear grid. When
    either does not (a sky-only result), the distortion change is that of the non-linear
    parts (:func:`nonlinear_solution` of each, ``part: "non-linear"``) and the scale
    metrics are ``None`` with the reason in ``not_measured``.

    Parameters
    ----------
    new : Result
        The result.
    old : Result
        An earlier result of the same detector.
    n : int
        Grid positions per axis.

    Returns
    -------
    dict

    Raises
    ------
    ComparisonError
        The results cover different detectors.
    """
    if tuple(new.detector_shape) != tuple(old.detector_shape):
        raise ComparisonError(f"{new.path} and {old.path} cover different detectors "
                         f"({new.detector_shape} and {old.detector_shape}); cannot compare")
    missing = [r for r in (new, old) if not r.gauge["affine_measured"]]
    nonlinear = bool(missing)
    ny, nx = new.detector_shape
    xs, ys = np.linspace(0, nx - 1, n), np.linspace(0, ny - 1, n)
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    x, y = xx.ravel(), yy.ravel()
    sol_new, sol_old = (new.nonlinear, old.nonlinear) if nonlinear else (new.solution, old.solution)
    dnx, dny = sol_new.reverse_offsets(x, y)
    dox, doy = sol_old.reverse_offsets(x, y)
    size = np.hypot(dnx - dox, dny - doy)
    snx, sny = sol_new.sigma(x, y)
    sox, soy = sol_old.sigma(x, y)
    sig = np.sqrt(snx**2 + sny**2 + sox**2 + soy**2)
    k = int(np.argmax(size))
    half_diag_px = 0.5 * float(np.hypot(nx, ny))
    out = {
        "against": str(old.path),
        "against_campaign_sha256": old.info.get("campaign_sha256", ""),
        "against_case": old.gauge["case"],
        "part": "non-linear" if nonlinear else "full field",
        "distortion_change_max_px": float(size[k]), "distortion_change_sd_px": float(sig[k]),
        "distortion_change_max_at_px": [float(x[k]), float(y[k])],
        "distortion_change_noise_max_px": float(sig.max()),
        "half_diagonal_px": half_diag_px,
        "distortion_change_rel": float(size[k] / half_diag_px),
        "distortion_change_rel_sd": float(sig[k] / half_diag_px),
        "not_measured": {},
    }
    if nonlinear:
        which = " and ".join(f"{'this' if r is new else 'the earlier'} result ({r.path})" for r in missing)
        reason = f"{NO_GAUGE_REASON}: {which}"
        out.update({"pixel_scale_mas": None, "scale_change_rel": None, "scale_change_rel_sd": None,
                    "plate_scale_change_edge_mas": None, "plate_scale_change_edge_sd_mas": None,
                    "not_measured": {m: reason for m in ("scale_change_rel", "plate_scale_change_edge_mas")},
                    "definition": ("distortion: largest |D2nl_new - D2nl_old| over the grid, D2nl "
                                   "the non-linear part of each result's offsets (each posterior "
                                   "draw minus its own best affine map, in its own pixels), over the "
                                   "detector's half-diagonal (pixels); scale: not measured (" + reason + ")")})
        return out
    sn, so = new.posterior.pixel_scale_samples(), old.posterior.pixel_scale_samples()
    mn, sdn, mo, sdo = sn.mean(), sn.std(ddof=1), so.mean(), so.std(ddof=1)
    rel = mn / mo - 1.0
    rel_sd = float(np.hypot(sdn / mo, mn * sdo / mo**2))
    mas_old = mo * 1e3
    out.update({
        "pixel_scale_mas": {"new": float(mn * 1e3), "new_sd": float(sdn * 1e3),
                            "old": float(mo * 1e3), "old_sd": float(sdo * 1e3)},
        "scale_change_rel": float(rel), "scale_change_rel_sd": rel_sd,
        "plate_scale_change_edge_mas": float(abs(rel) * half_diag_px * mas_old),
        "plate_scale_change_edge_sd_mas": float(rel_sd * half_diag_px * mas_old),
        "definition": ("scale: ratio of the areal pixel scales minus 1; distortion: largest "
                       "|D2_new - D2_old| over the grid (offsets relative to each result's own "
                       "linear grid, pixels) over the detector's half-diagonal (pixels); "
                       "plate scale at the edge: |scale change| x half-diagonal in mas"),
    })
    return out


def build_report(result: Result, against: Result | None = None,
                 requirements: Sequence[Requirement] | None = None, grid: int = GRID) -> dict:
    """The report's numbers (a JSON-ready dict) for a loaded :class:`Result`, optionally
    against an earlier one, with the requirements (default: the shipped file) checked.

    A result whose affine part is not measured (:func:`affine_gauge`: sky-only) gets its
    map accuracy from the non-linear part, its pixel scale and scale metrics marked not
    measured, and its requirements on the map flagged as evaluated on the non-linear part.

    Parameters
    ----------
    result : Result
        A loaded result.
    against : Result, optional
        An earlier result to compare with.
    requirements : sequence of Requirement, optional
        Default: the shipped file.
    grid : int
        Grid positions per axis of the map numbers.

    Returns
    -------
    dict
        JSON-ready (:func:`report_json`).
    """
    requirements = load_requirements() if requirements is None else requirements
    info = result.info
    post = result.posterior
    gauge = result.gauge
    affine = gauge["affine_measured"]
    ps = post.pixel_scale_samples() * 1e3
    report = {
        "astrocal_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "result": str(result.path),
        "filter": result.filter,
        "instrument": result.instrument,
        "band": result.band,
        "case": gauge,
        "campaign_sha256": info.get("campaign_sha256", ""),
        "fit_astrocal_version": info.get("astrocal_version", ""),
        "inputs": info.get("inputs", []),
        "detector_shape": list(result.detector_shape),
        "degree": post.degree,
        "n_draws": int(len(post.g)),
    }
    not_measured, nonlinear_metrics = {}, set()
    if affine:
        report["map_accuracy"] = dict(map_accuracy(result.solution, grid, footprint=post.footprint),
                                      part="full field")
        report["pixel_scale"] = {"measured": True, "mean_mas": float(ps.mean()), "sd_mas": float(ps.std(ddof=1)),
                                 "sd_rel": float(ps.std(ddof=1) / ps.mean())}
    else:
        report["map_accuracy"] = dict(map_accuracy(result.nonlinear, grid, NONLINEAR_DEFINITION,
                                                   footprint=post.footprint), part="non-linear")
        report["map_accuracy_full_field"] = dict(
            map_accuracy(result.solution, grid), part="full field",
            note="includes the affine part, which only the priors constrain (sky poses' pointing, "
                 "position angle and plate scale): not a measurement")
        report["pixel_scale"] = {
            "measured": False, "reason": gauge["reason"], "mean_mas": None, "sd_mas": None, "sd_rel": None,
            "prior_mean_mas": float(ps.mean()), "prior_sd_mas": float(ps.std(ddof=1)),
            "note": "set by the priors of the sky poses' plate scales, not by the data"}
        for m in NEEDS_AFFINE:
            not_measured[m] = gauge["reason"]
        if post.degree < 2:
            for m in NONLINEAR_WITHOUT_GAUGE:
                not_measured[m] = (f"{gauge['reason']}; and the field (degree {post.degree}) has no "
                                   "non-linear part")
        nonlinear_metrics.update(m for m in NONLINEAR_WITHOUT_GAUGE if m.startswith("map_"))
    report["on_sky"] = info.get("on_sky")  # what the sky measures (astrocal.model.onsky), or None
    report["sky_residuals"] = catalog_residuals(result)
    report["sky_residuals_definition"] = SKY_RESIDUALS_DEFINITION
    report["evidence"] = evidence_table(info)
    report["field_model"] = field_model(info)
    fs = info.get("settings", {})
    report["degree_rule"] = (("posterior median degree" if fs.get("degree_choice", "median") == "median"
                              else "degree of largest evidence") if fs.get("degree") == "auto"
                             else "degree asked for")
    report["convergence"] = convergence(info, result.chain)
    report["quality"] = fit_quality(info)
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
        for m, why in st["not_measured"].items():
            not_measured.setdefault(m, why)
        if st["part"] == "non-linear":
            nonlinear_metrics.add("distortion_change_rel")
    else:
        report["stability"] = None
        for m, (_, _, needs) in METRICS.items():
            if needs:
                reasons[m] = "needs an earlier result (--against OLDER_RESULT)"
    for m in METRICS:
        metrics.setdefault(m, None)
    for m in not_measured:
        metrics[m] = None
    report["metrics"] = metrics
    report["not_measured"] = not_measured
    report["requirements"] = evaluate(requirements, metrics, result.band, sds, reasons,
                                      not_measured=not_measured, nonlinear=nonlinear_metrics)
    return report


def report_json(report: dict) -> str:
    """``report`` as strict JSON text (NaN and infinities as null).

    Parameters
    ----------
    report : dict
        A report.

    Returns
    -------
    str
    """
    return json.dumps(to_plain(report, nan_as_none=True), indent=2) + "\n"
