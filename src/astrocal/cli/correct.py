"""``astrocal correct INPUT --solution PRODUCT --out OUTPUT``: apply a solution."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..correct.chunks import DEFAULT_CHUNK_ROWS
from ..correct.image import RESAMPLERS, correct_image, is_fits_image
from ..correct.solutions import ASTROMET_METHODS, open_solution
from ..correct.starlist import DEFAULT_MARGIN, correct_star_list_file

log = logging.getLogger(__name__)


def _column(value):
    """A column given on the command line: a 0-based index if it is a number, else a name."""
    if value is None:
        return None
    return int(value) if str(value).isdigit() else value


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``correct`` and its arguments to the ``astrocal`` parser.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        The parser's subcommands (:func:`astrocal.cli.build_parser`).
    """
    p = subparsers.add_parser(
        "correct",
        help="apply a distortion solution to star lists or images",
        description="Apply a distortion solution. A star list (ECSV, FITS table, CSV, plain "
        "text, DAOPHOT, IRAF) gets its undistorted linear-grid positions (x_lin, y_lin, in the "
        "list's pixel convention), their 1-sigma (the list's own errors through the "
        "correction's Jacobian plus the solution's map uncertainty at the position), arcsec "
        "offsets from a reference (plate scale x linear-grid offset) and a domain flag. An image "
        "(FITS, 2-D) is resampled onto the linear grid, conserving flux (reproject's bicubic "
        "interpolation times the pixel area, or drizzle), and written with a TAN WCS that has the correction folded in, plus a COVERAGE extension. "
        "PRODUCT is an AstroMet file (evaluated from its FILTER-<ID> table, bicubic, by "
        "default; see --method), a TAN-SIP header, a SIAF-style table, or an 'astrocal fit' "
        "result directory (the posterior draws: uncertainty and correlations between "
        "positions from the samples). See docs/correct.md. The input is never modified.",
    )
    p.add_argument("input", metavar="INPUT", help="star list or FITS image to correct")
    p.add_argument("--solution", required=True, metavar="PRODUCT",
                   help="AstroMet .fits, SIP .hdr/.fits, SIAF .ecsv, or a fit result directory")
    p.add_argument("--filter", dest="filter_id", help="filter to take from a multi-filter solution")
    p.add_argument("--out", required=True, metavar="OUTPUT",
                   help="output star list (.ecsv, .fits, .csv, .txt) or image (.fits); not "
                   "overwritten unless --overwrite")
    p.add_argument("--method", choices=ASTROMET_METHODS,
                   help="how to evaluate an AstroMet file: interpolate the FILTER-<ID> table "
                   "(table-bicubic, the default; table-bilinear) or use the POLYNOM_MAP "
                   "(forward) or POLYNOM_MAP2 (reverse) polynomial")
    p.add_argument("--input-type", choices=("auto", "stars", "image"), default="auto",
                   help="what INPUT is (default: a FITS file with a 2-D image and no table is an "
                   "image, anything else a star list)")
    s = p.add_argument_group("star lists")
    s.add_argument("--x-col", help="column of x (name, or 0-based index; default: x, x_0, "
                   "xcentroid, ...; plain text without header: 0)")
    s.add_argument("--y-col", help="column of y (default: y, y_0, ...; plain text: 1)")
    s.add_argument("--sigma-x-col", help="column of the x error, pixels (default: sigma_x, "
                   "x_err, ...)")
    s.add_argument("--sigma-y-col", help="column of the y error, pixels")
    s.add_argument("--cov-xy-col", help="column of the x-y covariance, pixels^2 (default: "
                   "cov_xy if present)")
    conv = s.add_mutually_exclusive_group()
    conv.add_argument("--one-based", dest="one_based", action="store_true", default=None,
                      help="the list counts pixels from 1 (FITS, DAOPHOT, SExtractor)")
    conv.add_argument("--zero-based", dest="one_based", action="store_false",
                      help="the list counts pixels from 0 (photutils, StarFinder)")
    s.add_argument("--format", dest="list_format",
                   choices=("ecsv", "fits", "csv", "text", "daophot", "iraf"),
                   help="star-list format (default: from the name and content)")
    s.add_argument("--margin", type=float, default=DEFAULT_MARGIN,
                   help=f"positions up to this many pixels outside the solution's detector are "
                   f"still corrected, flagged 1 (default {DEFAULT_MARGIN:g}); beyond, flagged 2 "
                   "and left NaN")
    s.add_argument("--extrapolate", action="store_true",
                   help="also correct positions beyond the margin (still flagged 2)")
    s.add_argument("--invalid-cov", choices=("error", "nan"), default="error",
                   help="rows whose given covariance is not positive semi-definite (|cov_xy| > "
                   "sigma_x sigma_y): refuse the list naming the rows (error, the default) or "
                   "correct them with a NaN uncertainty (nan)")
    s.add_argument("--chunk-rows", type=int, default=None, metavar="N",
                   help="ECSV, CSV and FITS lists are read and written N rows at a time, so "
                   "memory stays bounded for any length (default %d; fewer with a posterior)"
                   % DEFAULT_CHUNK_ROWS)
    s.add_argument("--plate-scale", type=float,
                   help="arcsec per linear-grid pixel for the arcsec offsets (default: the "
                   "solution's)")
    s.add_argument("--reference", type=float, nargs=2, metavar=("X", "Y"),
                   help="linear-grid position the arcsec offsets are measured from, in the "
                   "list's pixel convention (default: the boresight)")
    i = p.add_argument_group("images")
    i.add_argument("--resampler", choices=RESAMPLERS, default=RESAMPLERS[0],
                   help="interp (default): reproject's bicubic interpolation times the pixel "
                   "area, for images sampled at or above Nyquist; drizzle: exact area overlap "
                   "(square kernel, pixfrac 1), for undersampled images")
    i.add_argument("--hdu", help="image HDU (index or name; default: the first 2-D image)")
    i.add_argument("--pad", type=int, default=0,
                   help="output pixels added on each side of the linear grid (default 0)")
    i.add_argument("--crval", type=float, nargs=2, metavar=("RA", "DEC"),
                   help="world position of the boresight, degrees (default: the SIP header's "
                   "CRVAL, else 0 0)")
    p.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """``astrocal correct``: the correction of an image or a star list: prints what it wrote.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed arguments.

    Returns
    -------
    int
        The exit status: 0.
    """
    src = Path(args.input)
    if not src.exists():
        raise FileNotFoundError(f"{src}: no such input")
    kind = args.input_type
    if kind == "auto":
        kind = "image" if is_fits_image(src) else "stars"
    evaluator = open_solution(args.solution, filter_id=args.filter_id, method=args.method)
    if kind == "image":
        correct_image(src, evaluator, args.out, hdu=args.hdu, pad=args.pad, crval=args.crval,
                      resampler=args.resampler, overwrite=args.overwrite)
        print(f"wrote {args.out} (image resampled onto the linear grid with {args.resampler}; "
              f"{evaluator.describe()})")
        return 0
    n = correct_star_list_file(
        src, evaluator, args.out, x_col=_column(args.x_col), y_col=_column(args.y_col),
        sigma_x_col=_column(args.sigma_x_col), sigma_y_col=_column(args.sigma_y_col),
        cov_xy_col=_column(args.cov_xy_col), one_based=args.one_based, format=args.list_format,
        margin=args.margin, extrapolate=args.extrapolate, plate_scale=args.plate_scale,
        reference=args.reference, overwrite=args.overwrite, invalid_cov=args.invalid_cov,
        chunk_rows=args.chunk_rows)
    print(f"wrote {args.out} ({n['n']} stars: {n['n_inside']} inside the domain, "
          f"{n['n_margin']} within the margin, {n['n_outside']} beyond it; "
          f"{evaluator.describe()})")
    return 0
