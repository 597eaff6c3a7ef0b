"""Reading and writing a solution in any of astrocal's formats, and ``astrocal convert``.

Formats: ``astromet`` (AstroMet FITS, several filters), ``sip`` (a FITS WCS header with
TAN-SIP: a ``.fits`` file whose primary header holds it, or a text header ``.hdr``),
``siaf`` (SIAF-style coefficient table, ``.ecsv``).  The format of an input is recognised
from its content; that of an output from its name unless ``--to`` says.
"""
from __future__ import annotations

import logging
from pathlib import Path

from astropy.io import fits

from ..resultset import require_complete_file
from .astromet import read_astromet, write_astromet
from .siaf import read_siaf, write_siaf
from .sip import read_sip_header, write_sip_header

log = logging.getLogger(__name__)

FORMATS = ("astromet", "sip", "siaf")


def detect_format(path):
    """Format of an existing solution file, from its content (and name)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".ecsv":
        return "siaf"
    if suffix in (".fits", ".fit", ".fts"):
        try:
            with fits.open(path) as hdul:
                names = {h.name.upper() for h in hdul}
                if "POLYNOM_MAP" in names or "POLYNOM_MAP2" in names:
                    return "astromet"
                if "CD1_1" in hdul[0].header or "A_ORDER" in hdul[0].header:
                    return "sip"
        except OSError as exc:
            raise ValueError(f"{path}: not a readable FITS file ({exc})") from None
        raise ValueError(f"{path}: neither an AstroMet file (no POLYNOM_MAP extension) nor a "
                         "SIP header (no CD1_1 / A_ORDER keyword in the primary header)")
    if suffix in (".hdr", ".txt", ".head", ".wcs"):
        return "sip"
    raise ValueError(f"{path}: cannot tell the format from the name; use one of .fits "
                     "(AstroMet or SIP), .hdr (SIP text header), .ecsv (SIAF table)")


def output_format(path, to=None):
    """Format to write ``path`` in: ``to`` if given, else from the name."""
    if to:
        to = to.lower()
        if to not in FORMATS:
            raise ValueError(f"unknown output format {to!r}; known: {', '.join(FORMATS)}")
        return to
    suffix = Path(path).suffix.lower()
    if suffix in (".fits", ".fit", ".fts"):
        return "astromet"
    if suffix == ".ecsv":
        return "siaf"
    if suffix in (".hdr", ".txt", ".head", ".wcs"):
        return "sip"
    raise ValueError(f"{path}: cannot tell the output format from the name; use --to")


def read_solutions(path, fmt=None):
    """All solutions in a file, as a dict ``filter id -> Solution``."""
    fmt = fmt or detect_format(path)
    if fmt == "astromet":
        am = read_astromet(path)
        return {fid: flt.solution() for fid, flt in am.filters.items()}
    if fmt == "sip":
        sol = read_sip_header(path)
        return {sol.filter: sol}
    if fmt == "siaf":
        sol = read_siaf(path)
        return {sol.filter: sol}
    raise ValueError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")


def write_solutions(path, solutions, fmt, filter_id=None, overwrite=False, instrument=""):
    """Write ``solutions`` (dict filter -> Solution) in ``fmt``; single-filter formats need
    ``filter_id`` when there are several."""
    if fmt == "astromet":
        chosen = list(solutions.values()) if filter_id is None else [_pick(solutions, filter_id, path)]
        return write_astromet(path, chosen, instrument=instrument, overwrite=overwrite)
    sol = _pick(solutions, filter_id, path)
    if fmt == "sip":
        return write_sip_header(path, sol, overwrite=overwrite)
    if fmt == "siaf":
        return write_siaf(path, sol, overwrite=overwrite)
    raise ValueError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")


def _pick(solutions, filter_id, path):
    if filter_id is None:
        if len(solutions) != 1:
            raise ValueError(f"{path}: the input holds filters {', '.join(solutions)}; "
                             "choose one with --filter")
        return next(iter(solutions.values()))
    if filter_id not in solutions:
        raise ValueError(f"filter {filter_id!r} not in the input; it holds {', '.join(solutions)}")
    return solutions[filter_id]


def convert(src, dst, to=None, filter_id=None, overwrite=False):
    """Convert a solution file ``src`` into ``dst``; returns the output format."""
    require_complete_file(src)  # a product of an interrupted fit is not a solution
    fmt_in = detect_format(src)
    fmt_out = output_format(dst, to)
    solutions = read_solutions(src, fmt_in)
    write_solutions(dst, solutions, fmt_out, filter_id=filter_id, overwrite=overwrite)
    log.info("converted %s (%s) -> %s (%s)", src, fmt_in, dst, fmt_out)
    return fmt_out


def register(subparsers):
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


def run(args):
    fmt = convert(args.input, args.output, to=args.to, filter_id=args.filter_id,
                  overwrite=args.overwrite)
    print(f"wrote {args.output} ({fmt})")
    return 0
