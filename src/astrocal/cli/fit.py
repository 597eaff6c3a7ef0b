"""``astrocal fit CAMPAIGN.toml``: the command's arguments, wired to :mod:`astrocal.stages.fit`
(and, for a campaign's ``[lms]`` data set, to :mod:`astrocal.lms.fit_campaign`)."""
from __future__ import annotations

import argparse
import sys

from ..campaign import load_campaign
from ..stages.fit import EXIT_CONTRADICTED, contradicted, describe, fit_campaign


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``fit`` and its arguments to the ``astrocal`` parser.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        The parser's subcommands (:func:`astrocal.cli.build_parser`).
    """
    p = subparsers.add_parser(
        "fit",
        help="fit the joint Bayesian distortion model to a campaign",
        description="Fit the joint distortion model to the identified pinhole positions and "
        "matched stars of a campaign: lab and sky datasets of the same filter share one "
        "instrument field; sky exposures add their pointing, position-angle and scale terms "
        "and, at a ground site, the telescope flexure ([fit] flexure_degree, flexure_functions; an "
        "observatory in space has none). Reads "
        "CAMPAIGN.toml, the source tables of its exposures (the measure stage's "
        "<measure.output>/<exposure>.ecsv for images and star lists, or measured tables listed "
        "directly as exposures, recognised by their columns and metadata) and the "
        "sky datasets' catalogues. With sky data it reports each sky dataset's on-sky pixel "
        "scale and position angle over its stars (fit.json on_sky) and its residuals after the stars' "
        "fitted catalogue errors and against the catalogue (fit.json sky_residuals); without lab data the instrument's own "
        "pixel scale and the map 1-sigma in mas are not measured, and said so. "
        "Writes, per filter, into <fit.output>/<filter>/: posterior.h5 (emcee chain and exact "
        "draws of the linear parameters), summary.ecsv (every parameter's mean, sd, "
        "quantiles) and fit.json (degree and evidence table, diagnostics, outliers, "
        "unconstrained and inseparable directions), residuals.ecsv (per point residuals with "
        "outlier flags), astromet_<filter>.fits (AstroMet file of the posterior-mean "
        "field with its 1-sigma), wcs_sip_<filter>.hdr (TAN-SIP header), with a residual "
        "field beyond the polynomial ([fit] residual, chosen by the evidence by default) "
        "wcs_lookup_<filter>.fits (TAN-SIP plus distortion look-up tables) and, for METIS "
        "imagers, LM_/N_DISTORTION_TABLE and _MAP with QC keywords; manifest.json, written last, "
        "marks the set complete. A campaign's [lms] data set (the LM integral-field spectrograph) is "
        "fitted with its own model (docs/lms.md): <fit.output>/<lms name>/ gets posterior.h5, "
        "lms_params.ecsv, lms_draws.fits, lms_residuals.ecsv, lms_fit.json, per setting "
        "IFU_DISTORTION_TABLE_<tag>.fits and LMS_GEOMETRY_<tag>.fits with QC keywords, report/ and "
        "manifest.json. Exit status: 0 done; 1 an error of the input (nothing "
        "complete written); 3 done, but the data contradict the fit's assumptions (pixel scale "
        "far from nominal, residuals far above the centroid errors, poses far outside their "
        "priors): products written and marked QC CONSISTENT = F.",
    )
    p.add_argument("campaign", metavar="CAMPAIGN.toml")
    p.add_argument("--degree", help="total degree of the field, or 'auto' (evidence); "
                   "default: the campaign's [fit] degree")
    p.add_argument("--steps", type=int, help="most emcee steps (the chain stops once converged)")
    p.add_argument("--walkers", type=int, help="emcee walkers (default: the campaign's [fit] "
                   "walkers, 32; at least 8)")
    p.add_argument("--seed", type=int, help="random seed (default: the campaign's, else 1)")
    p.add_argument("--no-hole-errors", action="store_true",
                   help="do not fit the holes' manufacturing errors")
    p.add_argument("--resume", action="store_true", help="continue an interrupted chain")
    p.add_argument("--overwrite", action="store_true", help="replace an existing result")
    p.add_argument("--quick", action="store_true",
                   help="a quick look: the hyperparameters' MAP and the Laplace approximation over them "
                   "with exact draws of the linear parameters, no emcee chain; written into "
                   "<fit.output>/quick/<filter>/ and marked QC QUICK (fit.json quality, the report's and "
                   "the summary's first line); emcee stays the reference")
    p.add_argument("--processes", type=_processes, default="auto", metavar="N",
                   help="worker processes: several filters are fitted in parallel; a single "
                   "filter's emcee walkers are split over them. Default 'auto': one process, "
                   "except that a filter with at least 4000 points (a dense mask) splits its evidence scan's "
                   "variants and its walkers over the CPUs available (at most 4). The result is the same "
                   "either way")
    p.set_defaults(func=run)


def _processes(text):
    """``--processes``: a positive integer or ``auto``."""
    if text == "auto":
        return text
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'auto', got {text!r}")
    return n


def run(args: argparse.Namespace) -> int:
    """``astrocal fit``: the fit of every filter (and of an ``[lms]`` data set): prints each result's summary.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed arguments.

    Returns
    -------
    int
        The exit status: 0; :data:`~astrocal.stages.fit.EXIT_CONTRADICTED` when the data of a filter contradict
        the fit's assumptions.
    """
    campaign = load_campaign(args.campaign)
    if campaign.lms is not None:  # the LMS data set: its own model (astrocal.lms.fit)
        # lazy: only a campaign with an LMS data set needs its model, products and report (astrocal.lms)
        from ..lms.fit_campaign import describe_lms_fit, fit_lms_campaign

        lms_fit, lms_out = fit_lms_campaign(campaign, steps=args.steps, walkers=args.walkers, seed=args.seed,
                                            resume=args.resume, overwrite=args.overwrite)
        print("\n".join(describe_lms_fit(lms_fit, lms_out)))
        if not campaign.lab and not campaign.sky:
            return 0
    results = fit_campaign(campaign, degree=args.degree, steps=args.steps, walkers=args.walkers,
                           seed=args.seed, hole_errors=not args.no_hole_errors,
                           resume=args.resume, overwrite=args.overwrite, processes=args.processes,
                           quick=args.quick)
    refuted = []
    for filt, (fit, out, products) in results.items():
        print("\n".join(describe(filt, fit, out, products)))
        if contradicted(out):
            refuted.append(filt)
    if refuted:
        print(f"astrocal: error: the data of filter(s) {', '.join(refuted)} contradict the fit's "
              "assumptions (see the first lines above); products written and marked "
              "(QC CONSISTENT = F)", file=sys.stderr)
        return EXIT_CONTRADICTED
    return 0
