"""``astrocal convert``: the command's arguments, wired to
:func:`astrocal.formats.convert.convert`."""
from __future__ import annotations

import argparse

from ..formats.convert import FORMATS, convert


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``convert`` and its arguments to the ``astrocal`` parser.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        The parser's subcommands (:func:`astrocal.cli.build_parser`).
    """
    p = subparsers.add_parser(
        "convert",
        help="convert a distortion solution between formats",
        description="Convert a distortion solution between AstroMet FITS (XMM-OM CCF "
        "layout), a FITS WCS TAN-SIP header and a SIAF-style coefficient table (ECSV). "
        "Reads IN (format recognised from its content); writes OUT (format from its name: "
        ".fits = AstroMet, .hdr = SIP text header, .ecsv = SIAF; or --to).",
    )
    p.add_argument("input", metavar="IN", help="solution file to read")
    p.add_argument("output", metavar="OUT", help="file to write (not overwritten unless --overwrite)")
    p.add_argument("--to", choices=FORMATS, help="output format (default: from OUT's name; "
                   "--to sip with a .fits name writes the header in a primary HDU)")
    p.add_argument("--filter", dest="filter_id", help="filter to take from a multi-filter input")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """``astrocal convert``: the conversion: prints what it wrote.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed arguments.

    Returns
    -------
    int
        The exit status: 0.
    """
    fmt = convert(args.input, args.output, to=args.to, filter_id=args.filter_id,
                  overwrite=args.overwrite)
    print(f"wrote {args.output} ({fmt})")
    return 0
