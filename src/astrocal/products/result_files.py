"""The fit's result files: writing them (:func:`save_fit`) and reading them back
(:func:`load_posterior`, :func:`load_chain`, :func:`load_residuals`).

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
  (:func:`astrocal.model.result.residual_table`).

Every file states the astrocal version, the campaign file's sha256 and the input files
(``posterior.h5``: attributes of the ``linear`` group; ECSV: table metadata).

The objects read back (:class:`astrocal.model.result.Posterior`) and the residual table
are the model's (:mod:`astrocal.model.result`); this module holds their files.
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import h5py
import numpy as np
from astropy.table import Table, vstack
from numpy.typing import ArrayLike

from .. import __version__
from ..atomic import atomic_write_table, atomic_write_text, check_writable
from ..model import draws, onsky
from ..model.consistency import check_consistency
from ..model.dithers import dither_separation
from ..model.footprint import footprint_summary
from ..model.quality import fit_quality
from ..model.result import RESIDUAL_COLUMNS, Posterior, ResultFileError, dataset_kinds, residual_rms, residual_table, sky_residual_record
from ..pixels import detector_shape
from ..plain import to_plain

if TYPE_CHECKING:
    from ..model.inference import Fit

QUANTILES = (2.5, 16, 50, 84, 97.5)

log = logging.getLogger(__name__)


def summary_table(names: Sequence[str], samples: ArrayLike, units: Sequence[str] | None = None) -> Table:
    """Table of mean, sd and quantiles of each column of ``samples``.

    Parameters
    ----------
    names : sequence of str
        One name per column of ``samples``.
    samples : array_like
        ``(n_draws, n_columns)``.
    units : sequence of str, optional
        One unit per column (a ``unit`` column).

    Returns
    -------
    astropy.table.Table
        One row per column: ``name``, ``mean``, ``sd`` (``ddof=1``) and the quantiles
        :data:`QUANTILES` (columns ``q2.5``, ``q16``, ``q50``, ``q84``, ``q97.5``), and
        ``unit`` when given.
    """
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


def _hole_ids(fit):
    """Ids of the holes in ``fit.hole_samples`` (in its order)."""
    ids = getattr(fit, "hole_ids", None)
    return np.asarray(fit.model.points.hole_ids if ids is None else ids)


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
            **_residual_lengths(phi, names)}


def _residual_lengths(phi, names):
    """The residual's correlation length(s) at the draws' median hyperparameters (px):
    ``length_px_median`` (with one length per axis, their geometric mean) and, per axis,
    ``length_x_px_median`` and ``length_y_px_median``."""
    out = {"length_px_median": float(np.exp(phi[names.index("log_residual_length")]))}
    _, *lengths = draws.residual_hyperparameters(phi, names)
    if len(lengths) == 2:
        out.update(length_x_px_median=float(lengths[0][0]), length_y_px_median=float(lengths[1][0]))
    return out


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


def save_fit(fit: Fit, out: str | os.PathLike, campaign_sha256: str = "", inputs: Iterable[str | os.PathLike] = (),
             overwrite: bool = False, instrument: str | None = None, earth_orientation: dict | None = None,
             sky_frames: Sequence[dict] | None = None, sites: Mapping[str, dict] | None = None,
             mask: dict | None = None) -> Path:
    """Write the linear draws into ``out/posterior.h5`` (next to the chain), the summaries
    and the residual table.

    The chain itself is already in ``posterior.h5`` when the fit ran with
    ``backend_path = out/posterior.h5``; otherwise it is written here too. The files and
    their contents are those of the module's description.

    Parameters
    ----------
    fit : astrocal.model.inference.Fit
        The fit.
    out : str or os.PathLike
        The result directory (created if missing).
    campaign_sha256 : str, optional
        The campaign file's sha256 (in every file).
    inputs : iterable of str or os.PathLike, optional
        The input files (in every file).
    overwrite : bool, optional
        Whether existing ``summary.ecsv``, ``fit.json``, ``residuals.ecsv`` may be replaced.
    instrument : str, optional
        The campaign's instrument name, recorded in ``fit.json``.
    earth_orientation : dict, optional
        The Earth-orientation tables and what their uncertainty costs the sky exposures
        (:func:`astrocal.stages.fit.earth_orientation_record`), recorded in ``fit.json``
        when there are sky data.
    sky_frames : sequence of dict, optional
        One dict per sky exposure (``exposure``: its name, and its pointing and projection
        as :mod:`astrocal.model.onsky` reads them): with them ``fit.json``'s
        ``on_sky`` records each sky dataset's on-sky pixel scale and position angle, and
        ``summary.ecsv`` their rows.
    sites : mapping of str to dict, optional
        ``{dataset name: Site.as_dict()}``, the observatory of each sky dataset (name,
        position, typical weather and provenance), in the datasets' entries.
    mask : dict, optional
        The lab datasets' mask (:func:`astrocal.stages.fit_inputs.mask_record`: file, sha256,
        name, plate scale in mm/arcsec), recorded as ``fit.json`` ``mask`` (null without).

    Returns
    -------
    pathlib.Path
        ``out``.

    Raises
    ------
    astrocal.atomic.ProductExistsError
        A file exists and ``overwrite`` is false.
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
        "mask": mask,
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


def load_residuals(out: str | os.PathLike) -> Table:
    """Read ``out/residuals.ecsv`` (see :func:`astrocal.model.result.residual_table`).

    Parameters
    ----------
    out : str or os.PathLike
        The result directory.

    Returns
    -------
    astropy.table.Table
        The residual table.

    Raises
    ------
    FileNotFoundError
        No residual table.
    astrocal.model.result.ResultFileError
        The table lacks a column of :data:`astrocal.model.result.RESIDUAL_COLUMNS`.
    """
    path = Path(out) / "residuals.ecsv"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no residual table (the result predates it, or the "
                                "fit did not finish)")
    t = Table.read(path, format="ascii.ecsv")
    missing = [c for c in RESIDUAL_COLUMNS if c not in t.colnames]
    if missing:
        raise ResultFileError(f"{path}: residual table lacks column(s) {', '.join(missing)}")
    return t


def load_chain(out: str | os.PathLike) -> np.ndarray:
    """The emcee chain of the hyperparameters from ``out/posterior.h5`` (group
    ``hyperparameters``: the emcee HDF5 backend).

    Parameters
    ----------
    out : str or os.PathLike
        The result directory.

    Returns
    -------
    np.ndarray
        ``(steps, walkers, ndim)``: the steps run so far (the backend's ``iteration``).

    Raises
    ------
    FileNotFoundError
        No ``posterior.h5``.
    astrocal.model.result.ResultFileError
        It has no ``hyperparameters`` group.
    """
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


def load_posterior(out: str | os.PathLike) -> Posterior:
    """Read ``out/posterior.h5`` and ``out/fit.json``.

    Parameters
    ----------
    out : str or os.PathLike
        The result directory.

    Returns
    -------
    astrocal.model.result.Posterior
        The draws and names of ``posterior.h5``'s ``linear`` group; ``info``: the contents
        of ``fit.json`` (empty without it) with ``result_dir``, and the provenance of the
        group's attributes where ``fit.json`` lacks it.

    Raises
    ------
    FileNotFoundError
        No ``posterior.h5``.
    astrocal.model.result.ResultFileError
        It has no ``linear`` group (the fit did not finish).
    """
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


__all__ = ["QUANTILES", "load_chain", "load_posterior", "load_residuals", "save_fit", "summary_table"]
