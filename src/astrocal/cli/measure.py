"""``astrocal measure CAMPAIGN.toml``: the command's arguments, wired to
:func:`astrocal.stages.measure.measure_campaign`."""
from __future__ import annotations

import argparse
import sys

from ..image.frame import INTERNAL_ERROR
from . import EXIT_BUG
from ..stages.measure import measure_campaign


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``measure`` and its arguments to the ``astrocal`` parser.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        The parser's subcommands (:func:`astrocal.cli.build_parser`).
    """
    p = subparsers.add_parser(
        "measure",
        help="reduce lab frames and measure the identified pinhole positions (and the "
        "matched stars of sky exposures)",
        description="For every exposure of the campaign's [[lab]] datasets: subtract the "
        "background, flat-field, mask bad pixels, saturated pixels and cosmic rays (the "
        "reduced image is written), detect the spots, fit them with the PSF (the "
        "instrument's diffraction model or an ePSF built from the frames, [measure] psf) and "
        "the detector noise model, identify them with the mask holes, and write one ECSV "
        "source table per exposure and summary.ecsv into [measure] output. Exposures that "
        "are source tables are validated and passed on. For the [[sky]] datasets: the stars of "
        "each image are detected and fitted with an AO-star PSF (or read from a star list), "
        "matched to the catalogue's apparent positions for the exposure (time, pointing, "
        "weather from the campaign, else the FITS header, else the site's defaults) and written "
        "as one sky table per exposure. For an [lms] data set: every LMS frame is background-"
        "subtracted and its laser spots (with their covariance), pinhole traces or slice edges "
        "measured into one table per frame (docs/lms.md). The exit status is 1 if a frame failed (the others are "
        "measured and written).",
    )
    p.add_argument("campaign", help="campaign file (TOML)")
    p.add_argument("--overwrite", action="store_true", help="replace existing products")
    p.add_argument("--processes", type=int, default=1, metavar="N",
                   help="measure N frames in parallel (default 1)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """``astrocal measure``: the measure stage: prints one line per exposure.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed arguments.

    Returns
    -------
    int
        The exit status: 0; 1 if a frame failed or is saturated; :data:`~astrocal.cli.EXIT_BUG` if a frame
        met an internal error.
    """
    report = measure_campaign(args.campaign, overwrite=args.overwrite, processes=args.processes)
    n = len(report.results)
    for r in report.results:
        if r["status"] == "failed":
            print(f"FAILED {r['message']}")
        elif r["status"] == "saturated":
            print(f"SATURATED {r['exposure']}: {r['n_good']} good of {r['n_identified']} identified "
                  f"spots [{r['message']}]")
        elif str(r["kind"]).startswith("lms_"):
            what = {"lms_laser": "laser spots found", "lms_grid": "trace points found",
                    "lms_slices": "edge points found"}.get(r["kind"])
            print(f"ok     {r['exposure']}: " + (f"{r['n_identified']}/{r['n_detected']} {what}, {r['n_good']} "
                                                 f"good, median sigma {r['median_sigma_px']:.2g} px"
                                                 if what else r["message"]))
        else:
            extra = f"  [{r['message']}]" if r["message"] else ""
            print(f"ok     {r['exposure']}: {r['n_identified']}/{r['n_detected']} spots identified, "
                  f"{r['n_good']} good, median SNR {r['median_snr']:.0f}, median sigma "
                  f"{r['median_sigma_px']:.2g} px{extra}")
    print(f"{n - report.n_failed}/{n} exposures measured in {report.seconds:.1f} s; wrote "
          f"{report.summary_path}")
    flagged = [f"{r['exposure']} ({', '.join(r['flags'])})" for r in report.results if r.get("flags")]
    if flagged:
        print(f"flagged (see the summary's flags and message): {'; '.join(flagged)}")
    bugs = [r["exposure"] for r in report.results if str(r.get("message", "")).startswith(INTERNAL_ERROR)]
    if bugs:
        print(f"astrocal: internal error while measuring {', '.join(bugs)} -- a bug in astrocal; please "
              "report it with the traceback(s) above", file=sys.stderr)
        return EXIT_BUG
    return 1 if report.n_failed or report.n_saturated else 0
