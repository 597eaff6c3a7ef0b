"""Read star lists that users bring (StarFinder, DAOPHOT, photutils, SExtractor, hst1pass,
the JWST pipeline's source catalogues, plain text).

:func:`read_star_list` returns an astropy Table in astrocal's convention, ready for
:func:`astrocal.sky.match.match_stars`:

============  ====  ==================================================================
column        unit  meaning
============  ====  ==================================================================
``x, y``      pix   star position, **0-based** (centre of the first pixel = 0.0)
``flux``            flux (any linear unit; only ratios are used); from an instrumental
                    magnitude ``m`` as ``10**(-0.4 (m - 25))`` (DAOPHOT's zero point)
``sigma_x``   pix   position errors, when the list gives them
``sigma_y``   pix
``flux_err``        when the list gives a flux error (or a magnitude error)
``mag``             the instrumental magnitude, when the list gives one
``id``              the list's own star identifier, when it has one
============  ====  ==================================================================

``meta`` records the source file, the format, the columns used, whether the positions
were converted from 1-based, and a note.

Pixel conventions of the common tools
-------------------------------------
* **DAOPHOT** (Stetson's DAOPHOT II/ALLSTAR, and IRAF's ``daophot``/``apphot``) and
  **SExtractor** (``X_IMAGE``, ``XWIN_IMAGE``, ...) give **1-based** positions: the centre
  of the first pixel is 1.0, as in FITS.  They are converted to astrocal's 0-based
  positions by subtracting 1 (:func:`astrocal.pixels.from_fits`, the one place where
  that conversion lives).  This is the default for those formats and column names.
* **StarFinder** (IDL), **photutils** and numpy-based tools give **0-based** positions:
  the default for ECSV, FITS, CSV and plain-text lists, unless ``one_based=True``.

Always state ``one_based`` when in doubt: a list read with the wrong convention is off
by one pixel in x and y, which matching absorbs into the offset but which biases any
absolute position (e.g. the boresight) by one pixel.

Formats (``format=None`` guesses from the name and the first lines)
-------------------------------------------------------------------
* ``"ecsv"``, ``"fits"`` (the first table HDU), ``"csv"``: columns by name.  Default
  names, case-insensitive, in this order: x ``x, x_0, x_fit, xcentroid, x_centroid,
  xcenter, x_image, xwin_image, xpsf_image, x_init`` (photutils' finders, PSF photometry
  and ``SourceCatalog``, the JWST pipeline's source catalogue ``*_cat.ecsv``: 0-based);
  flux ``flux, flux_fit, flux_psf, f, aper_total_flux, segment_flux, kron_flux,
  isophotal_flux, aperture_sum, flux_init``; errors ``sigma_x, x_err, xerr, xe, ex, e_x,
  dx, x_error, sig_x, x_0_err, x_fit_err, xcentroid_err`` (same for y); magnitude ``mag,
  m, magnitude, mag_inst, instrumental_mag, mag_psf, mag_auto, aper_total_vegamag,
  aper_total_abmag, isophotal_vegamag, isophotal_abmag`` (or ``mag_col``: kept as
  ``mag``, the brightness ranks of the matching; the flux from it only when no flux
  column exists). A magnitude column is never read as a flux: ``flux_col = "m"`` is an
  error that says to give it as ``mag_col``.
* ``"text"``: whitespace-separated columns, ``#`` comments, with or without a header
  line.  Columns are chosen by name (a header line, or a comment line just before the
  data with one name per column, ``# x y m xe ye``) or by **0-based column
  index**: by default ``x_col=0, y_col=1`` and ``flux_col=2`` if a third column exists
  (unless ``mag_col`` is given). StarFinder lists saved as text usually hold ``x y flux
  sigma_x sigma_y sigma_flux correlation``: pass ``sigma_x_col=3, sigma_y_col=4``.
* ``"xym"`` (``.xym``, ``.xymu``...): hst1pass / img2xym lists (J. Anderson), ``x y m
  ...`` with the third column an instrumental magnitude and **1-based** pixels (the
  FITS convention of those FORTRAN codes) unless ``one_based=False``; names on a comment
  line are used as for text.
* ``"daophot"``: DAOPHOT II files (``.coo``, ``.lst``, ``.als``, ``.nst``): the
  three-line header (``NL NX NY ...``, its values, a blank line) then ``ID X Y MAG ...``
  (``.als``/``.nst``: ``ID X Y MAG MERR SKY NITER CHI SHARP``).
* ``"iraf"``: IRAF ``daophot``/``apphot`` text files (``#K``/``#N`` headers; columns
  ``XCENTER``, ``YCENTER``, ``MAG``, ``MERR``, ``ID``), read with astropy's ``daophot``
  reader.  Magnitudes ``INDEF`` give a NaN flux.
"""
from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import astropy.units as u
from astropy.table import MaskedColumn, Table

from ..errors import AstrocalError
from ..pixels import from_fits

__all__ = ["StarListError", "read_star_list", "positional_columns", "DAOPHOT_ZERO_POINT"]

log = logging.getLogger(__name__)

#: magnitude zero point of DAOPHOT (mag = 25 - 2.5 log10(flux in ADU))
DAOPHOT_ZERO_POINT = 25.0

_X_NAMES = ("x", "x_0", "x_fit", "xcentroid", "x_centroid", "xcenter", "x_image", "xwin_image",
            "xpsf_image", "x_init")
_Y_NAMES = ("y", "y_0", "y_fit", "ycentroid", "y_centroid", "ycenter", "y_image", "ywin_image",
            "ypsf_image", "y_init")
#: fluxes: StarFinder, photutils (PSF photometry, DAOStarFinder, SourceCatalog, aperture
#: photometry), the JWST pipeline's source catalogue (aperture-corrected total, isophotal)
_FLUX_NAMES = ("flux", "flux_fit", "flux_psf", "f", "aper_total_flux", "segment_flux", "kron_flux",
               "isophotal_flux", "aperture_sum", "flux_init")
_FLUX_ERR_NAMES = ("flux_err", "flux_fit_err", "fluxerr", "e_flux", "flux_psf_err", "aper_total_flux_err",
                   "segment_fluxerr", "kron_fluxerr", "isophotal_flux_err", "aperture_sum_err")
_SX_NAMES = ("sigma_x", "x_err", "xerr", "xe", "ex", "e_x", "dx", "x_error", "sig_x", "x_0_err",
             "x_fit_err", "xcentroid_err")
_SY_NAMES = ("sigma_y", "y_err", "yerr", "ye", "ey", "e_y", "dy", "y_error", "sig_y", "y_0_err",
             "y_fit_err", "ycentroid_err")
#: magnitudes (any zero point; only differences are used): hst1pass/xym ``m``, DAOPHOT and
#: photutils ``mag``, SExtractor, the JWST source catalogue's total Vega / AB magnitudes
_MAG_NAMES = ("mag", "m", "magnitude", "mag_inst", "instrumental_mag", "mag_psf", "mag_auto",
              "aper_total_vegamag", "aper_total_abmag", "isophotal_vegamag", "isophotal_abmag")
_MERR_NAMES = ("merr", "mag_err", "e_mag", "me", "m_err", "sigma_m", "magerr", "mag_error",
               "magerr_auto", "aper_total_vegamag_err", "aper_total_abmag_err", "isophotal_vegamag_err",
               "isophotal_abmag_err")
_ID_NAMES = ("id", "star_id", "name", "label")
#: column names of tools that count pixels from 1 (SExtractor)
_ONE_BASED_X = {"x_image", "xwin_image", "xpsf_image", "xpeak_image", "xmodel_image"}

_FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fts.gz")
_DAOPHOT_SUFFIXES = (".coo", ".lst", ".als", ".nst", ".pk", ".mag")

_DAO_COLUMNS = {
    ".coo": ("ID", "X", "Y", "MAG", "SHARP", "ROUND", "ROUND2"),
    ".als": ("ID", "X", "Y", "MAG", "MERR", "SKY", "NITER", "CHI", "SHARP"),
    ".nst": ("ID", "X", "Y", "MAG", "MERR", "SKY", "NITER", "CHI", "SHARP"),
    ".lst": ("ID", "X", "Y", "MAG", "MERR"),
}


class StarListError(AstrocalError, ValueError):
    """A star list cannot be read (the message names the file and the column)."""


# ============================================================================ formats
def _first_lines(path, n=6):
    try:
        with open(path, "r", errors="replace") as fh:
            return [fh.readline() for _ in range(n)]
    except OSError as exc:
        raise StarListError(f"{path}: cannot read: {exc}") from exc


#: hst1pass / img2xym (J. Anderson) star lists: x y m ..., 1-based pixels, instrumental magnitudes
_XYM_SUFFIXES = (".xym", ".xymu", ".xymq", ".xymuvw")


def guess_format(path: Path) -> str:
    """The format of a star list, from its name and first lines.

    ``.ecsv``, hst1pass ``.xym*``, ``.csv`` and FITS suffixes by name; else IRAF
    (``#K``/``#N`` lines) or DAOPHOT II (an ``NL NX NY`` header) by content; else plain text.

    Parameters
    ----------
    path : pathlib.Path
        The star list.

    Returns
    -------
    str
        ``'ecsv'``, ``'xym'``, ``'csv'``, ``'fits'``, ``'iraf'``, ``'daophot'`` or ``'text'``.

    Raises
    ------
    StarListError
        A DAOPHOT name without a DAOPHOT or IRAF header.
    """
    low = path.name.lower()
    if low.endswith(".ecsv"):
        return "ecsv"
    if any(low.endswith(s) for s in _XYM_SUFFIXES):
        return "xym"
    if low.endswith(".csv"):
        return "csv"
    if any(low.endswith(s) for s in _FITS_SUFFIXES):
        return "fits"
    lines = _first_lines(path)
    first = next((ln for ln in lines if ln.strip()), "")
    if first.startswith("#K") or first.startswith("#N"):
        return "iraf"
    if first.split()[:3] == ["NL", "NX", "NY"]:
        return "daophot"
    if any(low.endswith(s) for s in _DAOPHOT_SUFFIXES):
        raise StarListError(f"{path}: the name looks like a DAOPHOT file but it has neither the "
                            "DAOPHOT II header ('NL NX NY ...') nor IRAF '#K'/'#N' lines; pass "
                            "format='text' with the column choice")
    return "text"


def _read_daophot(path: Path) -> Table:
    """DAOPHOT II (Stetson) file: 3 header lines, then ID X Y MAG ... columns."""
    lines = path.read_text(errors="replace").splitlines()
    start = next((k for k, ln in enumerate(lines) if ln.split()[:3] == ["NL", "NX", "NY"]), None)
    if start is None:
        raise StarListError(f"{path}: not a DAOPHOT II file (no 'NL NX NY' header line)")
    rows = [ln.split() for ln in lines[start + 3:] if ln.strip()]
    if not rows:
        raise StarListError(f"{path}: DAOPHOT file without stars")
    ncol = len(rows[0])
    if ncol < 4 or any(len(r) != ncol for r in rows):
        bad = next((k for k, r in enumerate(rows) if len(r) != ncol), 0)
        raise StarListError(f"{path}: DAOPHOT II lists need one star per line with the same number "
                            f"(>= 4) of columns (ID X Y MAG ...); data line {bad + 1} differs (the "
                            "two-line .ap format of PHOT is not supported: use ALLSTAR's .als)")
    names = list(_DAO_COLUMNS.get(path.suffix.lower(), ("ID", "X", "Y", "MAG")))
    names = (names + [f"col{k + 1}" for k in range(len(names), ncol)])[:ncol]
    try:
        data = np.array(rows, dtype=float)
    except ValueError as exc:
        raise StarListError(f"{path}: non-numeric value in the DAOPHOT star lines: {exc}") from None
    t = Table(data, names=names)
    t["ID"] = t["ID"].astype(np.int64)
    # DAOPHOT writes 99.999 (mag) / 9.999 (error) for failed photometry
    for name in ("MAG", "MERR"):
        if name in t.colnames:
            bad = t[name] >= (99.0 if name == "MAG" else 9.0)
            t[name] = MaskedColumn(t[name], mask=bad)
    return t


def read_list_table(path: Path, fmt: str) -> Table:
    """The table of a star list in a given format, its columns as the file names them.

    Parameters
    ----------
    path : pathlib.Path
        The star list.
    fmt : str
        ``'ecsv'``, ``'csv'``, ``'fits'``, ``'iraf'``, ``'text'``, ``'xym'`` or ``'daophot'``
        (:func:`guess_format`).

    Returns
    -------
    astropy.table.Table
        The file's columns (plain text and xym: named from a comment line of names when
        there is one; DAOPHOT: 99.999 magnitudes and 9.999 errors masked).

    Raises
    ------
    StarListError
        The file cannot be read in that format, or the format is unknown.
    """
    try:
        if fmt == "ecsv":
            return Table.read(path, format="ascii.ecsv")
        if fmt == "csv":
            return Table.read(path, format="ascii.csv")
        if fmt == "fits":
            return Table.read(path, format="fits")
        if fmt == "iraf":
            return Table.read(path, format="ascii.daophot")
        if fmt in ("text", "xym"):
            return _named_from_comment(path, Table.read(path, format="ascii", comment="#"))
    except StarListError:
        raise
    except Exception as exc:  # astropy raises many kinds for malformed files
        raise StarListError(f"{path}: cannot read as a {fmt} star list: {exc}") from exc
    if fmt == "daophot":
        return _read_daophot(path)
    raise StarListError(f"{path}: unknown star-list format {fmt!r} (use 'ecsv', 'fits', 'csv', "
                        "'text', 'xym', 'daophot' or 'iraf')")


_NAME = __import__("re").compile(r"^[A-Za-z_][A-Za-z0-9_.()-]*$")


def _named_from_comment(path, t: Table) -> Table:
    """A text list whose names sit on a comment line (``# x y m xe ye ...``, as hst1pass and
    many scripts write them): the last comment line before the data with one name per
    column names the columns. A table that has names already is returned as it is."""
    if not all(n.startswith("col") for n in t.colnames):
        return t
    names = None
    with open(path, "r", errors="replace") as fh:
        for line in fh:
            text = line.strip()
            if not text:
                continue
            if not text.startswith("#"):
                break
            words = text.lstrip("#").split()
            if len(words) == len(t.colnames) and all(_NAME.match(w) for w in words) \
                    and len({w.lower() for w in words}) == len(words):
                names = words
    if names is not None:
        t.rename_columns(t.colnames, names)
        t.meta["names_from_comment"] = True
    return t


# ============================================================================ columns
def _find(t: Table, wanted, candidates, what, path, required):
    """Column name in t: the given one (name or 0-based index) or the first candidate.

    ``required``: False, or the argument name to suggest when no candidate exists."""
    names = t.colnames
    if wanted is not None:
        if isinstance(wanted, (int, np.integer)) and not isinstance(wanted, bool):
            if not 0 <= int(wanted) < len(names):
                raise StarListError(f"{path}: no column index {int(wanted)} for the {what} (0-based; "
                                    f"the file has {len(names)} columns: {', '.join(names)})")
            return names[int(wanted)]
        if wanted in names:
            return wanted
        low = {n.lower(): n for n in names}
        if str(wanted).lower() in low:
            return low[str(wanted).lower()]
        raise StarListError(f"{path}: no column '{wanted}' for the {what} (columns: {', '.join(names)})")
    low = {n.lower(): n for n in names}
    for cand in candidates:
        if cand in low:
            return low[cand]
    if required:
        raise StarListError(f"{path}: no column for the {what}: none of {', '.join(candidates)} "
                            f"(columns: {', '.join(names)}); name it with the {required} argument")
    return None


def _pixel_unit(unit) -> bool:
    """True for no unit, a dimensionless one or pixels (also IRAF's 'pixels', '##')."""
    if unit is None:
        return True
    text = str(unit).strip().lower()
    if text in ("", "pix", "pixel", "pixels", "px", "#", "##"):
        return True
    try:
        return u.Unit(text) in (u.pix, u.dimensionless_unscaled)
    except ValueError:
        return False


def _values(t, name, what, path):
    col = t[name]
    try:
        if hasattr(col, "mask") and np.any(col.mask):
            arr = np.ma.filled(np.ma.asarray(col, dtype=float), np.nan)
        else:
            arr = np.asarray(col, dtype=float)
    except (TypeError, ValueError):
        raise StarListError(f"{path}: column '{name}' ({what}) is not numeric (dtype {col.dtype})") from None
    unit = getattr(col, "unit", None)
    return np.asarray(arr, dtype=float), unit


def positional_columns(colnames: Sequence[str], x_col: str | int | None = None, y_col: str | int | None = None,
                       flux_col: str | int | None = None,
                       mag_col: str | int | None = None) -> tuple[str | int | None, str | int | None, str | int | None]:
    """The x, y and flux columns of a plain text list.

    Without a line of names (astropy's ``col1, col2...``) x, y and flux are its first
    three columns (0-based indices) unless named, flux only when there is a third column
    and no magnitude column is named; with names the given choices are returned as they
    are.

    Parameters
    ----------
    colnames : sequence of str
        The table's column names.
    x_col, y_col, flux_col, mag_col : str or int, optional
        The dataset's choices.

    Returns
    -------
    tuple
        ``(x_col, y_col, flux_col)``.
    """
    if all(n.startswith("col") for n in colnames):
        x_col = 0 if x_col is None else x_col
        y_col = 1 if y_col is None else y_col
        if flux_col is None and len(colnames) > 2 and mag_col is None:
            flux_col = 2
    return x_col, y_col, flux_col


def read_star_list(path: str | os.PathLike, *, x_col: str | int | None = None, y_col: str | int | None = None,
                   flux_col: str | int | None = None, sigma_x_col: str | int | None = None,
                   sigma_y_col: str | int | None = None, mag_col: str | int | None = None,
                   one_based: bool | None = None, format: str | None = None) -> Table:
    """Read a star list into a Table with 0-based ``x, y``, ``flux`` and errors.

    Parameters
    ----------
    path : str or Path
        The list (ECSV, FITS table, CSV, plain text, DAOPHOT II or IRAF DAOPHOT).
    x_col, y_col, flux_col, sigma_x_col, sigma_y_col, mag_col : str or int, optional
        Column names (case-insensitive) or, for any format, 0-based column indices.
        Defaults: see the module docstring (plain text: columns 0, 1 and 2).
    one_based : bool, optional
        True if the list counts pixels from 1 (DAOPHOT, IRAF, SExtractor, FITS
        convention): 1 is subtracted from x and y.  Default: True for DAOPHOT/IRAF files
        and SExtractor column names, False otherwise (StarFinder, photutils).
    format : str, optional
        ``'ecsv'``, ``'fits'``, ``'csv'``, ``'text'``, ``'xym'``, ``'daophot'`` or ``'iraf'``;
        default guessed from the file name and first lines.

    Returns
    -------
    Table
        Columns ``x``, ``y`` (pix, 0-based), ``flux``, and when available ``sigma_x``,
        ``sigma_y`` (pix), ``flux_err``, ``mag``, ``id``; ``meta`` holds ``source``,
        ``format``, ``one_based_input``, ``columns`` (what was used for what) and
        ``note``.

    Raises
    ------
    FileNotFoundError
        No such file.
    StarListError
        Unreadable file, missing or non-numeric column, non-finite positions, negative
        errors; the message names the file and the column.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"star list not found: {path}")
    fmt = guess_format(path) if format is None else str(format).lower()
    t = read_list_table(path, fmt)
    if len(t) == 0:
        raise StarListError(f"{path}: the star list has no rows")
    text_like = fmt in ("text", "xym")
    is_dao = fmt in ("daophot", "iraf")
    if fmt == "xym":  # x y m ...: the third column is a magnitude, the pixels 1-based
        if all(n.startswith("col") for n in t.colnames) and mag_col is None and flux_col is None \
                and len(t.colnames) > 2:
            mag_col = 2
        if one_based is None:
            one_based = True

    if is_dao:
        x_default, y_default = ("X",), ("Y",)
        if fmt == "iraf":
            x_default, y_default = ("xcenter",), ("ycenter",)
    else:
        x_default, y_default = _X_NAMES, _Y_NAMES
    if text_like:
        x_col, y_col, flux_col = positional_columns(t.colnames, x_col, y_col, flux_col, mag_col)
    xn = _find(t, x_col, tuple(n.lower() for n in x_default), "star x position", path, "x_col")
    yn = _find(t, y_col, tuple(n.lower() for n in y_default), "star y position", path, "y_col")
    if isinstance(flux_col, str) and flux_col.lower() in _MAG_NAMES:
        raise StarListError(f"{path}: flux_col = '{flux_col}' names a magnitude column; give it as mag_col "
                            "(magnitudes are brightness ranks, not fluxes)")
    fn = _find(t, flux_col, _FLUX_NAMES, "flux", path, False)
    fen = _find(t, None, _FLUX_ERR_NAMES, "flux error", path, False) if fn is not None else None
    mn = _find(t, mag_col, _MAG_NAMES, "magnitude", path, False)
    men = _find(t, None, _MERR_NAMES, "magnitude error", path, False) if mn is not None else None
    sxn = _find(t, sigma_x_col, _SX_NAMES, "x error", path, False)
    syn = _find(t, sigma_y_col, _SY_NAMES, "y error", path, False)
    idn = _find(t, None, _ID_NAMES, "id", path, False)
    if (sxn is None) != (syn is None):
        raise StarListError(f"{path}: position errors need both an x and a y column (found only "
                            f"'{sxn or syn}')")
    if len({xn, yn}) < 2:
        raise StarListError(f"{path}: x and y are the same column '{xn}'")

    x, ux = _values(t, xn, "star x position", path)
    y, uy = _values(t, yn, "star y position", path)
    for name, unit in ((xn, ux), (yn, uy)):
        if not _pixel_unit(unit):
            raise StarListError(f"{path}: column '{name}' has unit '{unit}'; expected pixels")
    bad = ~(np.isfinite(x) & np.isfinite(y))
    if np.any(bad):
        rows = np.nonzero(bad)[0][:10].tolist()
        raise StarListError(f"{path}: columns '{xn}', '{yn}': missing or non-finite positions in "
                            f"rows {rows} (0-based data rows)")
    if one_based is None:
        one_based = is_dao or xn.lower() in _ONE_BASED_X
    if one_based:
        x, y = from_fits(x), from_fits(y)

    out = Table()
    if idn is not None:
        out["id"] = np.asarray(t[idn])
    out["x"] = x * u.pix
    out["y"] = y * u.pix
    columns = {"x": xn, "y": yn}
    flux_note = ""
    if fn is not None:
        flux, _ = _values(t, fn, "flux", path)
        out["flux"] = flux
        columns["flux"] = fn
        if fen is not None:
            out["flux_err"] = _values(t, fen, "flux error", path)[0]
            columns["flux_err"] = fen
    elif mn is not None:
        mag, _ = _values(t, mn, "magnitude", path)
        out["flux"] = 10 ** (-0.4 * (mag - DAOPHOT_ZERO_POINT))
        columns["flux"] = f"10**(-0.4 ({mn} - {DAOPHOT_ZERO_POINT:g}))"
        flux_note = " Fluxes from the instrumental magnitudes (zero point 25)."
        if men is not None:
            merr, _ = _values(t, men, "magnitude error", path)
            out["flux_err"] = out["flux"] * merr * math.log(10) / 2.5
            columns["flux_err"] = f"from {men}"
    else:
        out["flux"] = np.full(len(t), np.nan)
        columns["flux"] = None
        flux_note = " No flux or magnitude column: flux is NaN (matching then uses positions only)."
    if mn is not None:
        out["mag"] = _values(t, mn, "magnitude", path)[0]
        columns["mag"] = mn
    if sxn is not None:
        for name, col in (("sigma_x", sxn), ("sigma_y", syn)):
            v, unit = _values(t, col, name, path)
            if not _pixel_unit(unit):
                raise StarListError(f"{path}: column '{col}' has unit '{unit}'; expected pixels")
            if np.any(v[np.isfinite(v)] < 0):
                rows = np.nonzero(np.isfinite(v) & (v < 0))[0][:10].tolist()
                raise StarListError(f"{path}: column '{col}' ({name}) is negative in rows {rows}")
            out[name] = v * u.pix
            columns[name] = col
    out.meta["source"] = str(path)
    out.meta["format"] = fmt
    out.meta["one_based_input"] = bool(one_based)
    out.meta["columns"] = columns
    conv = ("converted from 1-based (DAOPHOT/IRAF/SExtractor/FITS: first pixel centre = 1.0) by "
            "subtracting 1" if one_based else "taken as 0-based (first pixel centre = 0.0)")
    out.meta["note"] = f"Positions {conv}.{flux_note}"
    log.info("%s: read %d stars (%s; x=%s, y=%s, flux=%s; %s)", path, len(out), fmt, xn, yn,
             columns["flux"], "1-based input" if one_based else "0-based input")
    return out
