"""Saving and loading a fit: the posterior in HDF5, the summary in ECSV and JSON.

A result directory holds

- ``posterior.h5``: group ``hyperparameters`` (the emcee HDF5 backend: the whole chain,
  written step by step, so a killed run resumes) and group ``linear`` (the exact draws of
  the linear parameters, one per kept hyperparameter sample: ``g`` (n, G) and, with hole
  errors, ``holes`` (n, H, 2), in arcsec; the kept hyperparameter samples ``phi``; names);
- ``summary.ecsv``: every parameter's mean, sd and 2.5/16/50/84/97.5 % quantiles;
- ``fit.json``: degree, evidence table, diagnostics, outliers, the data footprint (convex
  hull of the positions used, :mod:`astrocal.model.footprint`), unconstrained directions,
  datasets and their kinds, settings, software version, the campaign file's hash and the
  input files; the field's pixel scale (``measured: false`` without lab data) and, with sky
  data, ``on_sky``: each sky dataset's on-sky pixel scale and position angle
  (:mod:`astrocal.model.onsky`);
- ``residuals.ecsv``: one row per measured point of every exposure (outliers included and
  flagged) with its posterior-mean residual in mas and pixels and its normalised residual
  (:func:`residual_table`).

Every file states the astrocal version, the campaign file's sha256 and the input files
(``posterior.h5``: attributes of the ``linear`` group; ECSV: table metadata).
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import h5py
import numpy as np
from astropy.table import Table

from .. import __version__
from ..errors import AstrocalError
from ..pixels import detector_shape
from ..plain import to_plain
from ..atomic import atomic_write_table, atomic_write_text, check_writable
from ..field import DistortionField
from . import draws, onsky
from .consistency import check_consistency
from .dithers import dither_separation
from .quality import fit_quality
from .footprint import footprint_summary, inside_footprint
from ..field.basis import flat_to_square, n_terms, terms

QUANTILES = (2.5, 16, 50, 84, 97.5)

log = logging.getLogger(__name__)


class ResultFileError(AstrocalError, ValueError):
    """A result file (``residuals.ecsv``, ``posterior.h5``) that lacks what is asked of it
    (a column, a group, the data footprint); the message names the file."""


def summary_table(names, samples, units=None):
    """Table of mean, sd and quantiles of each column of ``samples``."""
    samples = np.asarray(samples, float)
    q = np.percentile(samples, QUANTILES, axis=0)
    t = Table()
    t["name"] = list(names)
    t["mean"] = samples.mean(axis=0)
    t["sd"] = samples.std(axis=0, ddof=1)
    for k, p in enumerate(QUANTILES):
        t[f"q{p:g}"] = q[k]
    if units is not None:
        t["unit"] = list(units)
    return t


def dataset_kinds(points):
    """Kind (``"lab"`` or ``"sky"``) of every dataset of ``points``, in dataset order."""
    kinds = tuple(getattr(points, "dataset_kinds", ()) or ())
    if len(kinds) != points.n_datasets:
        kinds = ("lab",) * points.n_datasets
    return [str(k) for k in kinds]


#: columns of the residual table, their units and meaning (also written into its metadata)
RESIDUAL_COLUMNS = {
    "point_id": ("", "point id (source table row + 1e6 x exposure index, as in fit.json outliers)"),
    "dataset": ("", "dataset name"),
    "kind": ("", "dataset kind: lab or sky"),
    "exposure": ("", "exposure name"),
    "source": ("", "pinhole id or star name"),
    "x": ("pix", "measured x, 0-based pixels"),
    "y": ("pix", "measured y, 0-based pixels"),
    "dx_mas": ("mas", "focal-plane residual G(p) - model position, x (posterior means)"),
    "dy_mas": ("mas", "focal-plane residual G(p) - model position, y"),
    "dx_px": ("pix", "residual in detector pixels, J^-1 (G(p) - model): measured - predicted x"),
    "dy_px": ("pix", "residual in detector pixels: measured - predicted y"),
    "sigma_x_mas": ("mas", "1-sigma of the point's noise model along x (median hyperparameters)"),
    "sigma_y_mas": ("mas", "1-sigma of the point's noise model along y"),
    "zx": ("", "normalised residual dx_mas / sigma_x_mas"),
    "zy": ("", "normalised residual dy_mas / sigma_y_mas"),
    "chi2": ("", "r^T C^-1 r with the full 2x2 noise covariance (2 degrees of freedom)"),
    "outlier": ("", "flagged as a gross outlier by the mixture model and left out of the fit"),
    "dx_cat_mas": ("mas", "sky points: the residual against the catalogue position (the star's fitted "
                          "catalogue error not applied), x; NaN for lab points"),
    "dy_cat_mas": ("mas", "sky points: the residual against the catalogue position, y"),
}


def _source_error_mean(fit):
    """Posterior mean of the per-source errors in the model's layout, or None.

    A model with source blocks (holes with errors and stars: ``hole_blocks``,
    ``star_blocks``) takes one array over all blocks; the lab-only model one per hole.
    """
    holes = getattr(fit, "hole_samples", None)
    stars = getattr(fit, "star_samples", None)
    model = fit.model
    if hasattr(model, "hole_blocks"):
        if holes is None and stars is None:
            return None
        mean = np.zeros((model.H, 2))
        if holes is not None:
            mean[model.hole_blocks] = np.asarray(holes, float).mean(axis=0)
        if stars is not None:
            mean[model.star_blocks] = np.asarray(stars, float).mean(axis=0)
        return mean
    return None if holes is None else np.asarray(holes, float).mean(axis=0)


def _hole_ids(fit):
    """Ids of the holes in ``fit.hole_samples`` (in its order)."""
    ids = getattr(fit, "hole_ids", None)
    return np.asarray(fit.model.points.hole_ids if ids is None else ids)


def residual_table(fit):
    """Posterior-mean residuals of every point of a fit, outliers included and flagged.

    ``fit`` is a :class:`astrocal.model.inference.Fit`. For every measured point ``p``
    (0-based pixels) the residual is ``G(p) - E(p)``: the posterior-mean field at the
    point minus the model's position of its source in that exposure (pose, offsets, hole
    error or catalogue position at their posterior means), in the focal plane (mas), and
    ``J^-1 (G(p) - E(p))`` in detector pixels (``J`` the posterior-mean field's Jacobian at
    ``p``): to first order the measured minus the predicted pixel position. The noise
    model (centroid covariance through the Jacobian, times ``kappa**2``, plus the dataset's
    jitter) is evaluated at the posterior median of the hyperparameters; ``zx``, ``zy``
    are the residuals in units of its per-axis sigma and ``chi2`` the 2-D Mahalanobis
    square (2 degrees of freedom for a point the model describes). Dataset names and kinds
    come from the fit's points. Columns and units: :data:`RESIDUAL_COLUMNS`.
    """
    from types import SimpleNamespace

    from .outliers import noise_covariance, residual_chi2

    points = fit.points
    g = np.asarray(fit.g_samples, float).mean(axis=0)
    phi = np.median(np.asarray(fit.phi_samples, float), axis=0)
    cond = SimpleNamespace(mean=g, hole_mean=_source_error_mean(fit), phi=phi)
    chi2, r = residual_chi2(fit.model, cond, points)
    cov = noise_covariance(fit.model, phi, points)
    _, _, jac = fit.mean_field().jacobian(points.x, points.y)
    r_px = np.linalg.solve(jac, r[:, :, None])[:, :, 0]
    kinds = dataset_kinds(points)
    ds = points.dataset
    t = Table()
    t["point_id"] = np.asarray(points.point_ids, dtype=np.int64)
    t["dataset"] = [str(points.dataset_names[d]) for d in ds]
    t["kind"] = [kinds[d] for d in ds]
    t["exposure"] = [str(points.exposure_names[e]) for e in points.exposure]
    t["source"] = [str(h) for h in np.asarray(points.hole_ids)[points.hole]]
    t["x"], t["y"] = points.x, points.y
    t["dx_mas"], t["dy_mas"] = r[:, 0] * 1e3, r[:, 1] * 1e3
    t["dx_px"], t["dy_px"] = r_px[:, 0], r_px[:, 1]
    sx, sy = np.sqrt(cov[:, 0, 0]), np.sqrt(cov[:, 1, 1])
    t["sigma_x_mas"], t["sigma_y_mas"] = sx * 1e3, sy * 1e3
    t["zx"], t["zy"] = r[:, 0] / sx, r[:, 1] / sy
    t["chi2"] = chi2
    t["outlier"] = np.asarray(fit.outliers, bool)
    r_cat = np.full_like(r, np.nan)
    sky = np.asarray(points.source_kind)[points.hole] == 1
    if sky.any():
        hole_mean = cond.hole_mean
        if hole_mean is not None and hasattr(fit.model, "star_blocks"):
            hole_mean = np.array(hole_mean, copy=True)
            hole_mean[fit.model.star_blocks] = 0.0  # the catalogue's positions as given
        r_cat[sky] = fit.model.residuals(g, hole_mean, points)[sky]
    t["dx_cat_mas"], t["dy_cat_mas"] = r_cat[:, 0] * 1e3, r_cat[:, 1] * 1e3
    for name, (unit, description) in RESIDUAL_COLUMNS.items():
        if unit:
            t[name].unit = unit
        t[name].description = description
    t.meta["hyperparameters_median"] = {n: float(v) for n, v in zip(fit.hyper_names, phi)}
    return t


def sky_residual_record(table):
    """Per sky dataset of a residual table, the rms (mas, per axis, outliers left out) of
    the residuals after the stars' fitted catalogue errors (``after_star_errors_mas``: the
    stars' own catalogue terms take part of the scatter) and against the catalogue as given
    (``against_catalog_mas``: what a comparison with the catalogue shows), with the number
    of points; ``[]`` without sky data."""
    if "dx_cat_mas" not in table.colnames:
        return []
    out = []
    kind = np.asarray(table["kind"]).astype(str)
    names = np.asarray(table["dataset"]).astype(str)
    keep = ~np.asarray(table["outlier"], bool) & (kind == "sky")
    for name in dict.fromkeys(names[keep]):
        k = keep & (names == name)

        def rms(a, b):
            return [float(np.sqrt(np.mean(np.asarray(table[a], float)[k] ** 2))),
                    float(np.sqrt(np.mean(np.asarray(table[b], float)[k] ** 2)))]

        out.append({"dataset": str(name), "n_points": int(k.sum()),
                    "after_star_errors_mas": rms("dx_mas", "dy_mas"),
                    "against_catalog_mas": rms("dx_cat_mas", "dy_cat_mas")})
    return out


def residual_rms(table, unit="px", datasets=None, include_outliers=False):
    """RMS length of the 2-D residuals ``sqrt(mean(dx**2 + dy**2))`` of a residual table.

    ``unit``: ``"px"`` or ``"mas"``; outliers are left out unless ``include_outliers``;
    ``datasets`` restricts to those dataset names. NaN when no point is left.
    """
    if unit not in ("px", "mas"):
        raise ValueError(f"unit must be 'px' or 'mas', got {unit!r}")
    keep = np.ones(len(table), bool)
    if not include_outliers:
        keep &= ~np.asarray(table["outlier"], bool)
    if datasets is not None:
        keep &= np.isin(np.asarray(table["dataset"], str), list(datasets))
    if not keep.any():
        return float("nan")
    dx = np.asarray(table[f"dx_{unit}"], float)[keep]
    dy = np.asarray(table[f"dy_{unit}"], float)[keep]
    return float(np.sqrt(np.mean(dx**2 + dy**2)))


def _provenance_meta(campaign_sha256, inputs):
    return {"astrocal_version": __version__, "campaign_sha256": campaign_sha256,
            "inputs": [str(p) for p in inputs]}


def _footprint(fit):
    """The fit's data footprint for ``fit.json`` (:func:`footprint_summary`), or None with a
    warning when the positions used span no area (fewer than 3, or on one line)."""
    try:
        return footprint_summary(fit.footprint, detector_shape(fit.points.domain))
    except ValueError as exc:
        log.warning("no data footprint recorded: %s", exc)
        return None


def _residual_spec(fit):
    """The residual field of a fit as plain data (``{}`` without one): its basis (``m``
    functions per dimension, ``boundary``, the polynomial ``degree`` it is orthogonal to),
    its first column in the draws, and the posterior medians of its rms over the detector
    (arcsec, per component) and correlation length (pixels)."""
    res = getattr(fit, "residual", None)
    if not res:
        return {}
    basis, r0 = res
    names = list(fit.model.hyper_names)
    phi = np.median(np.asarray(fit.phi_samples), axis=0)
    return {"kind": "matern52", "m": basis.m, "boundary": basis.boundary, "degree": basis.degree,
            "first_column": r0, "n_functions": basis.size,
            "rms_arcsec_median": float(np.exp(phi[names.index("log_residual_rms")])),
            "length_px_median": float(np.exp(phi[names.index("log_residual_length")]))}


def _unresolved_spec(fit):
    """The unresolved field (:mod:`astrocal.model.draws`) as plain data: its sd per
    component, the root mean square over the draws (arcsec and pixels at the nominal scale),
    which the map's 1-sigma includes in quadrature."""
    sd = fit.unresolved
    if sd is None:
        return {}
    rms = float(np.sqrt(draws.unresolved_variance(sd)))
    return {"sd_arcsec_rms": rms, "sd_px_rms": rms / float(fit.points.pixel_scale),
            "definition": "smallest per-dataset jitter and the residual field's spectral tail beyond its "
                          "basis, in quadrature; added to the map's 1-sigma in quadrature"}


def save_fit(fit, out, campaign_sha256="", inputs=(), overwrite=False, instrument=None,
             earth_orientation=None, sky_frames=None, sites=None):
    """Write the linear draws into ``out/posterior.h5`` (next to the chain), the summaries
    and the residual table.

    The chain itself is already in ``posterior.h5`` when the fit ran with
    ``backend_path = out/posterior.h5``; otherwise it is written here too. ``instrument``
    (the campaign's instrument name), when given, is recorded in ``fit.json``; so is
    ``earth_orientation`` (the Earth-orientation tables and what their uncertainty costs
    the sky exposures, :func:`astrocal.stages.fit.earth_orientation_record`) when there are
    sky data; ``sites`` (``{dataset name: Site.as_dict()}``, the observatory of each sky
    dataset: name, position, typical weather and provenance) goes into the datasets'
    entries.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("summary.ecsv", "fit.json", "residuals.ecsv"):
        check_writable(out / name, overwrite)
    model = fit.model
    provenance = _provenance_meta(campaign_sha256, inputs)
    residuals = residual_table(fit)
    footprint = _footprint(fit)  # before anything is written
    h5 = out / "posterior.h5"
    with h5py.File(h5, "a") as f:
        if "hyperparameters" not in f:
            g = f.create_group("hyperparameters")
            g.create_dataset("chain", data=fit.phi_chain)
        if "linear" in f:
            del f["linear"]
        lin = f.create_group("linear")
        lin.create_dataset("g", data=fit.g_samples)
        lin.create_dataset("phi", data=fit.phi_samples)
        if fit.hole_samples is not None:
            lin.create_dataset("holes", data=fit.hole_samples)
        stars = getattr(fit, "star_samples", None)
        if stars is not None:
            lin.create_dataset("stars", data=stars)
            lin.attrs["star_names"] = json.dumps([str(n) for n in fit.star_names])
        lin.attrs["param_names"] = json.dumps(model.param_names)
        lin.attrs["hyper_names"] = json.dumps(model.hyper_names)
        lin.attrs["hole_ids"] = json.dumps(to_plain(_hole_ids(fit).tolist()))
        lin.attrs["degree"] = fit.degree
        lin.attrs["residual"] = json.dumps(_residual_spec(fit))
        lin.attrs["domain"] = json.dumps(list(model.points.domain))
        lin.attrs["units"] = "arcsec (field coefficients, translations, hole errors); radians; dimensionless"
        lin.attrs["astrocal_version"] = __version__
        lin.attrs["campaign_sha256"] = campaign_sha256
        lin.attrs["inputs"] = json.dumps(provenance["inputs"])
    # summary of every parameter
    rows = [summary_table(model.hyper_names, fit.phi_samples)]
    rows.append(summary_table(model.param_names, fit.g_samples))
    if fit.hole_samples is not None:
        ids = _hole_ids(fit)
        names = [f"hole_dx[{h}]" for h in ids] + [f"hole_dy[{h}]" for h in ids]
        um = fit.hole_samples * model.points.mask_scale * 1e3  # arcsec -> um at the mask
        rows.append(summary_table(names, np.concatenate([um[:, :, 0], um[:, :, 1]], axis=1)))
    stars = getattr(fit, "star_samples", None)
    if stars is not None:
        ids = [str(n) for n in fit.star_names]
        names = [f"star_dxi[{n}]" for n in ids] + [f"star_deta[{n}]" for n in ids]
        mas = np.asarray(stars, float) * 1e3
        rows.append(summary_table(names, np.concatenate([mas[:, :, 0], mas[:, :, 1]], axis=1)))
    ps = fit.pixel_scale_samples() * 1e3
    kinds = dataset_kinds(fit.points)
    used = ~np.asarray(fit.outliers, bool)
    lab_gauge = any(kinds[k] == "lab" and np.any(used & (fit.points.dataset == k))
                    for k in range(fit.points.n_datasets))
    if lab_gauge:
        rows.append(summary_table(["pixel_scale_mas"], ps[:, None]))
        scale_info = {"measured": True, "mean": float(ps.mean()), "sd": float(ps.std(ddof=1))}
    else:
        scale_info = {"measured": False, "mean": None, "sd": None, "reason": onsky.NOT_MEASURED_SCALE,
                      "prior_mean": float(ps.mean()), "prior_sd": float(ps.std(ddof=1))}
    on_sky = None
    if sky_frames:  # the affine part where each exposure's stars are (astrocal.model.onsky)
        frames = onsky.with_footprints(sky_frames, fit.points, used)
        args = (fit.g_samples, model.param_names, fit.degree, fit.points.domain, frames)
        res = getattr(fit, "residual", None) or None
        on_sky = onsky.on_sky_record(*args, lab_gauge=lab_gauge, residual=res)
        rows.append(summary_table(*onsky.summary_rows(*args, residual=res)))
    from astropy.table import vstack

    table = vstack(rows)
    table.meta.update(provenance)
    table.meta["note"] = ("hole errors in um at the mask; star catalogue errors (true - catalogue, "
                          "standard coordinates) in mas; field and pose translations in arcsec; "
                          "log_* hyperparameters are natural logs (jitter, hole sigma in arcsec)")
    residuals.meta.update(provenance)
    residuals.meta["note"] = ("one row per measured point; residual = posterior-mean field at the "
                              "point minus the model position of its source; outliers are flagged "
                              "and were left out of the fit")
    atomic_write_table(residuals, out / "residuals.ecsv", overwrite=overwrite)
    atomic_write_table(table, out / "summary.ecsv", overwrite=overwrite)
    d = fit.diagnostics
    datasets = []
    for k, name in enumerate(fit.points.dataset_names):
        sel = fit.points.dataset == k
        datasets.append({"name": str(name), "kind": kinds[k], "n_points": int(sel.sum()),
                         "n_used": int((sel & used).sum()),
                         "n_exposures": int(np.sum(fit.points.exposure_dataset == k))})
        if sites and str(name) in sites:
            datasets[-1]["site"] = sites[str(name)]
    info = {
        "astrocal_version": __version__,
        "campaign_sha256": campaign_sha256,
        "inputs": provenance["inputs"],
        "instrument": instrument,
        "degree": fit.degree,
        "domain": list(fit.points.domain),
        "evidence": fit.evidence,
        "phi_map": fit.phi_map,
        "hyper_names": model.hyper_names,
        "pixel_scale_mas": scale_info,
        "on_sky": on_sky,
        "diagnostics": {"tau": d.tau, "acceptance": d.acceptance, "steps": d.n_steps,
                        "burn": d.n_burn, "n_effective": d.n_effective, "converged": d.converged,
                        "warnings": d.warnings},
        "outliers": {"n": int(fit.outliers.sum()), "fraction_estimate": fit.outlier_fraction,
                     "point_ids": [int(i) for i in fit.points.point_ids[fit.outliers]]},
        "footprint": footprint,
        "residual_field": _residual_spec(fit),
        "unresolved_field": _unresolved_spec(fit),
        "earth_orientation": earth_orientation,
        "unconstrained": fit.unconstrained,
        "inseparable": list(getattr(fit, "inseparable", []) or []),
        "dither_separation": dither_separation(fit.points),
        "datasets": datasets,
        "n_points": int(fit.points.n_points),
        "n_holes": int(model.points.n_holes),
        "n_exposures": int(fit.points.n_exposures),
        "residual_rms_px": residual_rms(residuals, "px"),
        "sky_residuals": sky_residual_record(residuals),
        "settings": {k: v for k, v in asdict(fit.settings).items() if k != "priors"},
        "priors": asdict(fit.settings.priors),
    }
    info["consistency"] = check_consistency(fit, residuals)
    info["quality"] = fit_quality(info)
    atomic_write_text(out / "fit.json", json.dumps(to_plain(info, nan_as_none=True), indent=2) + "\n", overwrite=overwrite)
    return out


def load_residuals(out):
    """Read ``out/residuals.ecsv`` (see :func:`residual_table`)."""
    path = Path(out) / "residuals.ecsv"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no residual table (the result predates it, or the "
                                "fit did not finish)")
    t = Table.read(path, format="ascii.ecsv")
    missing = [c for c in RESIDUAL_COLUMNS if c not in t.colnames]
    if missing:
        raise ResultFileError(f"{path}: residual table lacks column(s) {', '.join(missing)}")
    return t


def load_chain(out):
    """The emcee chain of the hyperparameters, ``(steps, walkers, ndim)``, from
    ``out/posterior.h5`` (group ``hyperparameters``: the emcee HDF5 backend)."""
    h5 = Path(out) / "posterior.h5"
    if not h5.exists():
        raise FileNotFoundError(f"{h5}: no posterior (run astrocal fit first)")
    with h5py.File(h5, "r") as f:
        if "hyperparameters" not in f:
            raise ResultFileError(f"{h5}: has no 'hyperparameters' group (no chain)")
        g = f["hyperparameters"]
        chain = g["chain"][...]
        it = int(g.attrs.get("iteration", chain.shape[0]))
    return chain[:it]


@dataclass
class Posterior:
    """A saved posterior: draws of the field coefficients (and hole errors)."""

    degree: int
    domain: tuple
    g: np.ndarray
    phi: np.ndarray
    holes: object
    param_names: list
    hyper_names: list
    hole_ids: list
    info: dict
    residual_spec: dict = None

    @property
    def nt(self):
        return n_terms(self.degree)

    @property
    def residual(self):
        """``(ResidualBasis, first column)`` of the fit's residual field, or None."""
        spec = self.residual_spec
        if not spec:
            return None
        from ..field.residual import ResidualBasis

        basis = ResidualBasis(self.domain, int(spec["degree"]), m=int(spec["m"]), boundary=float(spec["boundary"]))
        return basis, int(spec["first_column"])

    @property
    def unresolved(self):
        """The unresolved field's sd per draw (arcsec; :func:`astrocal.model.draws.unresolved_sd`)."""
        res = self.residual
        return draws.unresolved_sd(self.phi, self.hyper_names, res[0] if res else None)

    def field_samples(self, x, y):
        """Field samples at points: ``(u, v)`` of shape (n_samples, N) arcsec (polynomial, the
        residual field when the fit has one, the unresolved field)."""
        return draws.field_samples(self.g, self.degree, self.domain, x, y, self.residual, self.unresolved)

    def mean_residual_coefficients(self):
        """``(ResidualBasis, wu, wv)``: the residual field's basis and the posterior means of
        its coefficients (u, v; arcsec), or None for a polynomial fit."""
        res = self.residual
        if res is None:
            return None
        basis, r0 = res
        w = self.g[:, r0:r0 + 2 * basis.size].mean(axis=0)
        return basis, w[:basis.size], w[basis.size:]

    def mean_residual(self):
        """The posterior-mean residual field as a callable ``r(x, y) -> (ru, rv)`` (arcsec, at
        0-based detector pixels), or None for a polynomial fit."""
        coefficients = self.mean_residual_coefficients()
        if coefficients is None:
            return None
        basis, wu, wv = coefficients

        def residual(x, y):
            x = np.asarray(x, float)
            phi = basis.design(np.ravel(x), np.ravel(np.asarray(y, float)))
            return (phi @ wu).reshape(x.shape), (phi @ wv).reshape(x.shape)

        return residual

    def mean_field(self):
        g = self.g.mean(axis=0)
        nt = self.nt
        return DistortionField(flat_to_square(g[:nt], self.degree), flat_to_square(g[nt:2 * nt], self.degree),
                               self.domain, unit="arcsec", input_unit="pixel")

    def map_uncertainty(self, x, y):
        return draws.map_uncertainty(self.g, self.degree, self.domain, x, y, self.residual, self.unresolved)

    def pixel_scale_samples(self):
        """Samples of the areal pixel scale of the field's best affine part (arcsec/px)
        (:func:`astrocal.model.draws.pixel_scale_samples`)."""
        return draws.pixel_scale_samples(self.g, self.degree, self.domain)

    def param_samples(self, names):
        """Draws of the named linear parameters (columns of ``g``), shape (n, len(names))."""
        index = {n: k for k, n in enumerate(self.param_names)}
        missing = [n for n in names if n not in index]
        if missing:
            raise KeyError(f"posterior has no parameter(s) {missing[:5]}")
        return self.g[:, [index[n] for n in names]]

    @property
    def detector_shape(self):
        """``(ny, nx)`` of the detector domain."""
        return detector_shape(self.domain)

    @property
    def footprint(self):
        """Vertices (K, 2), pixels, of the fit's data footprint (``fit.json``; None for a
        result written before footprints were recorded)."""
        fp = self.info.get("footprint")
        return None if not fp else np.asarray(fp["vertices_px"], float)

    def inside_footprint(self, x, y):
        """True where pixel ``(x, y)`` is inside the data footprint (shape of ``x``)."""
        vertices = self.footprint
        if vertices is None:
            raise ResultFileError("this result records no data footprint (written by an earlier "
                             "astrocal, or its positions span no area)")
        return inside_footprint(vertices, x, y)


def load_posterior(out):
    """Read ``out/posterior.h5`` and ``out/fit.json``."""
    out = Path(out)
    h5 = out / "posterior.h5"
    if not h5.exists():
        raise FileNotFoundError(f"{h5}: no posterior (run astrocal fit first)")
    with h5py.File(h5, "r") as f:
        if "linear" not in f:
            raise ResultFileError(f"{h5}: has no 'linear' group (the fit did not finish)")
        lin = f["linear"]
        g = lin["g"][...]
        phi = lin["phi"][...]
        holes = lin["holes"][...] if "holes" in lin else None
        attrs = dict(lin.attrs)
    info = json.loads((out / "fit.json").read_text()) if (out / "fit.json").exists() else {}
    info.setdefault("result_dir", str(out))
    for key in ("astrocal_version", "campaign_sha256"):
        if key in attrs and key not in info:
            info[key] = str(attrs[key])
    if "inputs" in attrs and "inputs" not in info:
        info["inputs"] = json.loads(attrs["inputs"])
    spec = json.loads(attrs["residual"]) if "residual" in attrs else None
    return Posterior(int(attrs["degree"]), tuple(json.loads(attrs["domain"])), g, phi, holes,
                     json.loads(attrs["param_names"]), json.loads(attrs["hyper_names"]),
                     json.loads(attrs["hole_ids"]), info, spec or None)


__all__ = ["Posterior", "RESIDUAL_COLUMNS", "dataset_kinds", "load_chain", "load_posterior",
           "load_residuals", "residual_rms", "residual_table", "save_fit", "sky_residual_record",
           "summary_table", "terms"]
