"""``astrocal fit CAMPAIGN.toml``: the joint Bayesian fit of a campaign's identified points."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from astropy.table import Table

from ..atomic import ProductExistsError
from ..campaign import load_campaign
from ..lab.mask import load_mask
from .data import DataError, lab_points_from_tables
from .inference import FitSettings, fit_lab
from .linear import Priors
from .result import save_fit

log = logging.getLogger(__name__)

#: commanded offsets with no stated accuracy get this prior width (i.e. barely known)
UNKNOWN_OFFSET_SIGMA_MAS = 1000.0


def source_table_path(campaign, exposure_file):
    """The measured source table of an exposure: the file itself if it is a table, else the
    measure stage's output ``<measure.output>/<stem>.ecsv``."""
    path = Path(exposure_file)
    if path.suffix.lower() == ".ecsv":
        return path
    candidate = Path(campaign.measure.output) / f"{path.stem}.ecsv"
    if not candidate.exists():
        raise FileNotFoundError(
            f"{candidate}: no measured source table for {path.name}; run "
            f"'astrocal measure {campaign.path}' first (or list source tables as exposures)")
    return candidate


def lab_points_for(campaign, datasets):
    """:class:`LabPoints` of lab datasets that share a filter (one field)."""
    mask_path = {str(d.mask) for d in datasets}
    if len(mask_path) != 1:
        raise DataError(f"datasets {[d.name for d in datasets]} use different masks; fit them "
                        "separately or give them the same mask table")
    mask = load_mask(datasets[0].mask)
    inst = campaign.instrument
    tables, offsets, sigmas, ds_index, names, inputs = [], [], [], [], [], []
    for k, d in enumerate(datasets):
        for e, exp in enumerate(d.exposures):
            path = source_table_path(campaign, exp.file)
            try:
                t = Table.read(path, format="ascii.ecsv")
            except Exception as exc:  # astropy raises several types for unreadable ECSV
                raise DataError(f"{path}: not a readable source table ({exc})") from None
            offset = exp.offset_arcsec
            if offset is None:
                offset = t.meta.get("offset_arcsec")
            if offset is None:
                raise DataError(f"{path}: no commanded offset (give offset_arcsec in the campaign "
                                "or in the table's metadata)")
            sigma = exp.offset_sigma_mas
            if sigma is None:
                log.warning("%s: no offset accuracy given; the offset is taken as barely known "
                            "(%g mas)", path, UNKNOWN_OFFSET_SIGMA_MAS)
                sigma = UNKNOWN_OFFSET_SIGMA_MAS
            tables.append(t)
            offsets.append(offset)
            sigmas.append(sigma / 1e3)
            ds_index.append(k)
            names.append(f"{d.name}:{Path(exp.file).stem}")
            inputs.append(path)
    ny, nx = inst.detector_shape
    points = lab_points_from_tables(
        tables, mask.xy_mm, mask.hole_id, inst.mask_scale_mm_per_arcsec,
        (-0.5, nx - 0.5, -0.5, ny - 0.5), inst.pixel_scale_mas / 1e3, offsets, sigmas,
        exposure_dataset=ds_index, dataset_names=[d.name for d in datasets], exposure_names=names)
    return points, inputs


def register(subparsers):
    p = subparsers.add_parser(
        "fit",
        help="fit the joint Bayesian distortion model to a campaign",
        description="Fit the joint distortion model to the identified pinhole positions of a "
        "campaign. Reads CAMPAIGN.toml and the source tables of its exposures (the measure "
        "stage's <measure.output>/<exposure>.ecsv, or tables listed directly as exposures). "
        "Writes, per filter, into <fit.output>/<filter>/: posterior.h5 (emcee chain and exact "
        "draws of the linear parameters), summary.ecsv (every parameter's mean, sd, "
        "quantiles) and fit.json (degree and evidence table, diagnostics, outliers, "
        "unconstrained directions), astromet_<filter>.fits (AstroMet file of the posterior-mean "
        "field with its 1-sigma) and wcs_sip_<filter>.hdr (TAN-SIP header).",
    )
    p.add_argument("campaign", metavar="CAMPAIGN.toml")
    p.add_argument("--degree", help="total degree of the field, or 'auto' (evidence); "
                   "default: the campaign's [fit] degree")
    p.add_argument("--steps", type=int, help="most emcee steps (the chain stops once converged)")
    p.add_argument("--walkers", type=int, help="emcee walkers (default 24)")
    p.add_argument("--seed", type=int, help="random seed (default: the campaign's, else 1)")
    p.add_argument("--no-hole-errors", action="store_true",
                   help="do not fit the holes' manufacturing errors")
    p.add_argument("--resume", action="store_true", help="continue an interrupted chain")
    p.add_argument("--overwrite", action="store_true", help="replace an existing result")
    p.set_defaults(func=run)


def fit_campaign(campaign, degree=None, steps=None, walkers=None, seed=None, hole_errors=True,
                 resume=False, overwrite=False, progress="auto"):
    """Fit every filter of a loaded campaign; returns ``{filter: (LabFit, output dir, products)}``.

    Refuses (``ProductExistsError``) to replace an existing result unless ``overwrite``;
    ``resume`` continues an interrupted chain in ``<fit.output>/<filter>/posterior.h5``.
    """
    from ..products import write_fit_products
    from .result import load_posterior

    if not campaign.lab:
        raise DataError(f"{campaign.path}: no [[lab]] dataset to fit (sky-only fits are not "
                        "supported yet)")
    fs = campaign.fit
    degree = degree if degree is not None else fs.degree
    if degree != "auto":
        degree = int(degree)
    by_filter = {}
    for d in campaign.lab:
        by_filter.setdefault(d.filter, []).append(d)
    results = {}
    for filt, datasets in by_filter.items():
        out = Path(fs.output) / filt
        h5 = out / "posterior.h5"
        if (out / "fit.json").exists() and not overwrite:
            raise ProductExistsError(f"{out / 'fit.json'}: a result exists; not overwritten "
                                     "(use --overwrite)")
        if h5.exists() and not (resume or overwrite):
            raise ProductExistsError(f"{h5}: a chain exists; use --resume to continue it or "
                                     "--overwrite to start again")
        if h5.exists() and overwrite and not resume:
            h5.unlink()
        out.mkdir(parents=True, exist_ok=True)
        points, inputs = lab_points_for(campaign, datasets)
        settings = FitSettings(
            degree=degree, degree_range=tuple(fs.degree_range),
            hole_errors=fs.hole_errors and hole_errors,
            walkers=walkers or max(fs.walkers, 8),
            steps=steps or fs.steps,
            seed=seed if seed is not None else (fs.seed if fs.seed is not None else 1),
            priors=Priors(), backend_path=h5, resume=resume, progress=progress,
        )
        log.info("fitting filter %s: %d points, %d holes, %d exposures", filt, points.n_points,
                 points.n_holes, points.n_exposures)
        fit = fit_lab(points, settings)
        save_fit(fit, out, campaign.sha256, inputs=[campaign.path, *inputs],
                 overwrite=overwrite or resume)
        products = write_fit_products(load_posterior(out), out, filt,
                                      instrument=campaign.instrument.name,
                                      campaign_sha256=campaign.sha256, inputs=[campaign.path],
                                      overwrite=overwrite or resume)
        results[filt] = (fit, out, products)
    return results


def describe(filt, fit, out, products):
    """Lines summarising a filter's fit for the terminal."""
    points = fit.points
    ps = fit.pixel_scale_samples() * 1e3
    x = np.linspace(points.domain[0], points.domain[1], 33)
    xx, yy = np.meshgrid(x, x)
    su, sv = fit.map_uncertainty(xx, yy)
    sig = np.hypot(su, sv) * 1e3
    lines = [f"filter {filt}: degree {fit.degree}, pixel scale {ps.mean():.6f} +/- "
             f"{ps.std(ddof=1):.6f} mas/px, map 1-sigma rms {np.sqrt(np.mean(sig**2)):.4f} mas "
             f"(max {sig.max():.4f}), {int(fit.outliers.sum())} outliers flagged"]
    lines += [f"warning: {note}" for note in fit.diagnostics.warnings]
    lines += [f"warning: not constrained by the data: {name}" for name in fit.unconstrained]
    lines.append(f"wrote {out} (posterior.h5, summary.ecsv, fit.json, "
                 f"{products['astromet'].name}, {products['sip'].name})")
    return lines


def run(args):
    campaign = load_campaign(args.campaign)
    results = fit_campaign(campaign, degree=args.degree, steps=args.steps, walkers=args.walkers,
                           seed=args.seed, hole_errors=not args.no_hole_errors,
                           resume=args.resume, overwrite=args.overwrite)
    for filt, (fit, out, products) in results.items():
        print("\n".join(describe(filt, fit, out, products)))
    return 0
