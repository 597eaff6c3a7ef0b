"""Saving and loading a fit: the posterior in HDF5, the summary in ECSV and JSON.

A result directory holds

- ``posterior.h5``: group ``hyperparameters`` (the emcee HDF5 backend: the whole chain,
  written step by step, so a killed run resumes) and group ``linear`` (the exact draws of
  the linear parameters, one per kept hyperparameter sample: ``g`` (n, G) and, with hole
  errors, ``holes`` (n, H, 2), in arcsec; the kept hyperparameter samples ``phi``; names);
- ``summary.ecsv``: every parameter's mean, sd and 2.5/16/50/84/97.5 % quantiles;
- ``fit.json``: degree, evidence table, diagnostics, outliers, unconstrained directions,
  settings, software version and the campaign file's hash.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import h5py
import numpy as np
from astropy.table import Table

from .. import __version__
from ..plain import to_plain
from ..atomic import atomic_write_table, atomic_write_text, check_writable
from ..field import DistortionField, design_matrix
from ..field.basis import flat_to_square, n_terms, terms

QUANTILES = (2.5, 16, 50, 84, 97.5)


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


def save_fit(fit, out, campaign_sha256="", inputs=(), overwrite=False):
    """Write the linear draws into ``out/posterior.h5`` (next to the chain) and the summaries.

    The chain itself is already in ``posterior.h5`` when the fit ran with
    ``backend_path = out/posterior.h5``; otherwise it is written here too.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("summary.ecsv", "fit.json"):
        check_writable(out / name, overwrite)
    model = fit.model
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
        lin.attrs["param_names"] = json.dumps(model.param_names)
        lin.attrs["hyper_names"] = json.dumps(model.hyper_names)
        lin.attrs["hole_ids"] = json.dumps([int(h) for h in model.points.hole_ids])
        lin.attrs["degree"] = fit.degree
        lin.attrs["domain"] = json.dumps(list(model.points.domain))
        lin.attrs["units"] = "arcsec (field coefficients, translations, hole errors); radians; dimensionless"
    # summary of every parameter
    rows = [summary_table(model.hyper_names, fit.phi_samples)]
    rows.append(summary_table(model.param_names, fit.g_samples))
    if fit.hole_samples is not None:
        ids = model.points.hole_ids
        names = [f"hole_dx[{h}]" for h in ids] + [f"hole_dy[{h}]" for h in ids]
        um = fit.hole_samples * model.points.mask_scale * 1e3  # arcsec -> um at the mask
        rows.append(summary_table(names, np.concatenate([um[:, :, 0], um[:, :, 1]], axis=1)))
    ps = fit.pixel_scale_samples() * 1e3
    rows.append(summary_table(["pixel_scale_mas"], ps[:, None]))
    from astropy.table import vstack

    table = vstack(rows)
    table.meta.update({"astrocal_version": __version__, "campaign_sha256": campaign_sha256,
                       "note": "hole errors in um at the mask; field and pose translations in arcsec; "
                               "log_* hyperparameters are natural logs (jitter, hole sigma in arcsec)"})
    atomic_write_table(table, out / "summary.ecsv", overwrite=overwrite)
    d = fit.diagnostics
    info = {
        "astrocal_version": __version__,
        "campaign_sha256": campaign_sha256,
        "inputs": [str(p) for p in inputs],
        "degree": fit.degree,
        "evidence": fit.evidence,
        "phi_map": fit.phi_map,
        "hyper_names": model.hyper_names,
        "pixel_scale_mas": {"mean": float(ps.mean()), "sd": float(ps.std(ddof=1))},
        "diagnostics": {"tau": d.tau, "acceptance": d.acceptance, "steps": d.n_steps,
                        "burn": d.n_burn, "n_effective": d.n_effective, "converged": d.converged,
                        "warnings": d.warnings},
        "outliers": {"n": int(fit.outliers.sum()), "fraction_estimate": fit.outlier_fraction,
                     "point_ids": [int(i) for i in fit.points.point_ids[fit.outliers]]},
        "unconstrained": fit.unconstrained,
        "n_points": int(fit.points.n_points),
        "n_holes": int(model.points.n_holes),
        "n_exposures": int(fit.points.n_exposures),
        "settings": {k: v for k, v in asdict(fit.settings).items() if k != "priors"},
        "priors": asdict(fit.settings.priors),
    }
    atomic_write_text(out / "fit.json", json.dumps(to_plain(info, nan_as_none=True), indent=2) + "\n", overwrite=overwrite)
    return out


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

    @property
    def nt(self):
        return n_terms(self.degree)

    def field_samples(self, x, y):
        """Field samples at points: ``(u, v)`` of shape (n_samples, N) arcsec."""
        B = design_matrix(x, y, self.degree, self.domain)
        nt = self.nt
        return self.g[:, :nt] @ B.T, self.g[:, nt:2 * nt] @ B.T

    def mean_field(self):
        g = self.g.mean(axis=0)
        nt = self.nt
        return DistortionField(flat_to_square(g[:nt], self.degree), flat_to_square(g[nt:2 * nt], self.degree),
                               self.domain, unit="arcsec", input_unit="pixel")

    def map_uncertainty(self, x, y):
        u, v = self.field_samples(np.ravel(x), np.ravel(y))
        shape = np.shape(x)
        return u.std(axis=0, ddof=1).reshape(shape), v.std(axis=0, ddof=1).reshape(shape)


def load_posterior(out):
    """Read ``out/posterior.h5`` and ``out/fit.json``."""
    out = Path(out)
    h5 = out / "posterior.h5"
    if not h5.exists():
        raise FileNotFoundError(f"{h5}: no posterior (run astrocal fit first)")
    with h5py.File(h5, "r") as f:
        if "linear" not in f:
            raise ValueError(f"{h5}: has no 'linear' group (the fit did not finish)")
        lin = f["linear"]
        g = lin["g"][...]
        phi = lin["phi"][...]
        holes = lin["holes"][...] if "holes" in lin else None
        attrs = dict(lin.attrs)
    info = json.loads((out / "fit.json").read_text()) if (out / "fit.json").exists() else {}
    return Posterior(int(attrs["degree"]), tuple(json.loads(attrs["domain"])), g, phi, holes,
                     json.loads(attrs["param_names"]), json.loads(attrs["hyper_names"]),
                     json.loads(attrs["hole_ids"]), info)


__all__ = ["Posterior", "load_posterior", "save_fit", "summary_table", "terms"]
