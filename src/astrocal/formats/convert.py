"""Reading and writing a solution in any of astrocal's formats, and ``astrocal convert``.

Formats: ``astromet`` (AstroMet FITS, several filters), ``sip`` (a FITS WCS header with
TAN-SIP: a ``.fits`` file whose primary header holds it, or a text header ``.hdr``),
``siaf`` (SIAF-style coefficient table, ``.ecsv``).  The format of an input is recognised
from its content; that of an output from its name unless ``--to`` says.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

from astropy.io import fits
from astropy.table import Table

from ..errors import AstrocalError
from ..resultset import require_complete_file
from .astromet import read_astromet, write_astromet
from .siaf import read_siaf, write_siaf
from ..solution import Solution
from .sip import load_header, read_sip_header, write_sip_header

log = logging.getLogger(__name__)

FORMATS = ("astromet", "sip", "siaf")


class ConversionError(AstrocalError, ValueError):
    """An input ``astrocal convert`` cannot read as a solution (not a readable FITS file,
    a format it cannot tell) or an output or ``--filter`` that does not fit it; the
    message names the file."""


def detect_format(path: str | os.PathLike) -> str:
    """Format of an existing solution file, from its content (and name).

    Parameters
    ----------
    path : str or os.PathLike
        The solution file.

    Returns
    -------
    str
        ``"astromet"``, ``"sip"`` or ``"siaf"``.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ConversionError
        If the file is not a readable FITS file or its format cannot be told (naming it).
    """
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
            raise ConversionError(f"{path}: not a readable FITS file ({exc})") from None
        raise ConversionError(f"{path}: neither an AstroMet file (no POLYNOM_MAP extension) nor a "
                         "SIP header (no CD1_1 / A_ORDER keyword in the primary header)")
    if suffix in (".hdr", ".txt", ".head", ".wcs"):
        return "sip"
    raise ConversionError(f"{path}: cannot tell the format from the name; use one of .fits "
                     "(AstroMet or SIP), .hdr (SIP text header), .ecsv (SIAF table)")


def output_format(path: str | os.PathLike, to: str | None = None) -> str:
    """Format to write ``path`` in: ``to`` if given, else from the name.

    Parameters
    ----------
    path : str or os.PathLike
        The output file.
    to : str, optional
        The format asked for (one of :data:`FORMATS`).

    Returns
    -------
    str
        ``"astromet"``, ``"sip"`` or ``"siaf"``.

    Raises
    ------
    ConversionError
        If ``to`` is unknown or the name does not tell the format.
    """
    if to:
        to = to.lower()
        if to not in FORMATS:
            raise ConversionError(f"unknown output format {to!r}; known: {', '.join(FORMATS)}")
        return to
    suffix = Path(path).suffix.lower()
    if suffix in (".fits", ".fit", ".fts"):
        return "astromet"
    if suffix == ".ecsv":
        return "siaf"
    if suffix in (".hdr", ".txt", ".head", ".wcs"):
        return "sip"
    raise ConversionError(f"{path}: cannot tell the output format from the name; use --to")


def read_solutions(path: str | os.PathLike, fmt: str | None = None) -> dict[str, Solution]:
    """All solutions in a file.

    Parameters
    ----------
    path : str or os.PathLike
        The solution file.
    fmt : str, optional
        Its format (default: :func:`detect_format`).

    Returns
    -------
    dict
        Filter id -> :class:`~astrocal.solution.Solution`.
    """
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


def write_solutions(path: str | os.PathLike, solutions: dict[str, Solution], fmt: str,
                    filter_id: str | None = None, overwrite: bool = False, instrument: str = "",
                    history: Sequence[str] = (), crval: tuple[float, float] = (0.0, 0.0), step: int = 25) -> Path:
    """Write ``solutions`` in ``fmt``.

    Parameters
    ----------
    path : str or os.PathLike
        The output file.
    solutions : dict
        Filter id -> :class:`~astrocal.solution.Solution`.
    fmt : str
        ``"astromet"``, ``"sip"`` or ``"siaf"``.
    filter_id : str, optional
        The filter to write; single-filter formats need it when there are several.
    overwrite : bool
        Replace an existing file.
    instrument : str
        An AstroMet file's ``INSTRUME``.
    history : sequence of str
        HISTORY lines of the output (metadata key ``history`` of a SIAF table).
    crval : tuple of float
        A SIP header's sky position of the boresight, degrees.
    step : int
        An AstroMet table's grid step, pixels.

    Returns
    -------
    pathlib.Path
        The path written.
    """
    if fmt == "astromet":
        chosen = list(solutions.values()) if filter_id is None else [_pick(solutions, filter_id, path)]
        return write_astromet(path, chosen, instrument=instrument, overwrite=overwrite,
                              history=history, step=step)
    sol = _pick(solutions, filter_id, path)
    if fmt == "sip":
        return write_sip_header(path, sol, overwrite=overwrite, history=history, crval=crval)
    if fmt == "siaf":
        return write_siaf(path, sol, overwrite=overwrite, history=history)
    raise ValueError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")


def _pick(solutions, filter_id, path):
    if filter_id is None:
        if len(solutions) != 1:
            raise ConversionError(f"{path}: the input holds filters {', '.join(solutions)}; "
                             "choose one with --filter")
        return next(iter(solutions.values()))
    if filter_id not in solutions:
        raise ConversionError(f"filter {filter_id!r} not in the input; it holds {', '.join(solutions)}")
    return solutions[filter_id]


#: an AstroMet table holds detail beyond POLYNOM_MAP2 when POLY2ERR exceeds this (pixels)
DETAIL_PX = 1e-3
#: keywords of a SIP header that the solution (or the SIP writer) accounts for
_SIP_KNOWN = ("SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "EXTEND", "WCSAXES", "CTYPE1",
              "CTYPE2", "CUNIT1", "CUNIT2", "CRPIX1", "CRPIX2", "CRVAL1", "CRVAL2", "CD1_1",
              "CD1_2", "CD2_1", "CD2_2", "IMAGEW", "IMAGEH", "FILTER", "PLTSCALE", "FPREFU",
              "FPREFV", "CREATOR", "A_ORDER", "B_ORDER", "AP_ORDER", "BP_ORDER", "SIPRTERR",
              "COMMENT", "HISTORY", "")
_NAMES = {"astromet": "AstroMet", "sip": "SIP header", "siaf": "SIAF table"}


def _source_content(src, fmt, chosen):
    """What the input holds beyond its solutions' polynomial field: ``(history, extra)``,
    with ``extra`` a list of ``(what, formats that hold it)``; ``chosen``: the filters
    converted."""
    history, extra = [], []
    if fmt == "astromet":
        am = read_astromet(src)
        history += [str(v) for v in am.header.get("HISTORY", [])]
        for fid in chosen:
            h = am.filters[fid].header
            if am.filters[fid].has_errors:
                extra.append((f"the map uncertainty of filter {fid} (columns RAWX_OFF_ERR, "
                              "RAWY_OFF_ERR)", ("astromet",)))
            p2 = float(h.get("POLY2ERR", 0.0) or 0.0)
            if p2 > DETAIL_PX or h.get("RESIDUAL") or int(h.get("DEGREE", 0) or 0) > 7:
                extra.append((f"the detail of table FILTER-{fid} beyond the degree-7 polynomial "
                              f"POLYNOM_MAP2 (POLY2ERR = {p2:.3g} px, DEGREE = {h.get('DEGREE')}, "
                              f"RESIDUAL = {h.get('RESIDUAL')}): the output is rebuilt from "
                              "POLYNOM_MAP2", ()))
        steps = {int(am.filters[f].header.get("STEP", 25)) for f in chosen}
        if len(steps) > 1:
            extra.append((f"the tables' own grid steps {sorted(steps)} (one step, the "
                          f"smallest, is written)", ()))
        return history, extra, {"instrument": str(am.header.get("INSTRUME", "")),
                                "step": min(steps) if steps else 25}
    if fmt == "sip":
        h = load_header(src)
        history += [str(v) for v in h.get("HISTORY", [])]
        crval = (float(h.get("CRVAL1", 0.0)), float(h.get("CRVAL2", 0.0)))
        if any(crval):
            extra.append((f"the sky position CRVAL1, CRVAL2 = {crval[0]:.8g}, {crval[1]:.8g} deg",
                          ("sip",)))
        other = [k for k in h.keys() if k not in _SIP_KNOWN
                 and not any(k.startswith(p) for p in ("A_", "B_", "AP_", "BP_"))]
        if other:
            extra.append((f"header keyword(s) {', '.join(other[:8])}"
                          f"{' ...' if len(other) > 8 else ''}", ()))
        return history, extra, {"crval": crval}
    if fmt == "siaf":
        meta = Table.read(src, format="ascii.ecsv").meta
        history += [str(v) for v in meta.get("history", [])]
        history += [f"{k} = {v}" for k, v in (meta.get("provenance") or {}).items()]
    return history, extra, {}


def convert(src: str | os.PathLike, dst: str | os.PathLike, to: str | None = None, filter_id: str | None = None,
            overwrite: bool = False) -> str:
    """Convert a solution file ``src`` into ``dst``.

    What the output format holds is carried (the map uncertainty AstroMet to AstroMet, a
    SIP header's CRVAL to SIP, the input's HISTORY); what it cannot hold is logged as a
    warning and listed in the output's HISTORY (SIAF: metadata ``history``), never dropped
    silently.

    Parameters
    ----------
    src : str or os.PathLike
        The input solution file (any format, told from its content).
    dst : str or os.PathLike
        The output file.
    to : str, optional
        The output format (default: from ``dst``'s name).
    filter_id : str, optional
        The filter to convert (needed when the input holds several and the output holds one).
    overwrite : bool
        Replace an existing output.

    Returns
    -------
    str
        The output format.
    """
    require_complete_file(src)  # a product of an interrupted fit is not a solution
    fmt_in = detect_format(src)
    fmt_out = output_format(dst, to)
    solutions = read_solutions(src, fmt_in)
    chosen = list(solutions) if filter_id is None or fmt_in != "astromet" else [filter_id]
    if fmt_out != "astromet" and filter_id is None:
        chosen = list(solutions)[:1] if len(solutions) == 1 else chosen
    history, extra, carry = _source_content(src, fmt_in, [c for c in chosen if c in solutions])
    lost = [what for what, holders in extra if fmt_out not in holders]
    for what in lost:
        log.warning("%s -> %s: the %s format cannot hold %s; not carried", src, dst,
                    _NAMES[fmt_out], what)
    history = history + [f"astrocal convert {Path(src).name} ({fmt_in}) -> {fmt_out}"]
    history += [f"not carried ({_NAMES[fmt_out]} cannot hold it): {what}" for what in lost]
    write_solutions(dst, solutions, fmt_out, filter_id=filter_id, overwrite=overwrite,
                    instrument=carry.get("instrument", ""), history=history,
                    crval=carry.get("crval", (0.0, 0.0)) if fmt_out == "sip" else (0.0, 0.0),
                    step=carry.get("step", 25))
    log.info("converted %s (%s) -> %s (%s)", src, fmt_in, dst, fmt_out)
    return fmt_out


# the command's arguments moved to astrocal.cli.convert (issue 20); their old names here
# forward, with a DeprecationWarning
from .._moved import moved_module  # noqa: E402

__getattr__ = moved_module(__name__, "astrocal.cli.convert")
