"""Star lists of any length in row blocks: chunked reading and incremental writing.

``astrocal correct`` on a list of millions of stars must not hold the list (and the dozen
columns it adds) in memory at once.  This module reads ECSV, CSV and FITS tables in blocks
of rows and writes a table block by block, so memory is bounded by the block size whatever
the length, and time is linear in it.

Reading (:func:`iter_chunks`): each block is parsed by astropy exactly as the whole file
would be (ECSV and CSV: the file's header lines followed by the block's data lines, read
with the same astropy reader; FITS: the rows of the first table HDU through a memory map,
converted by astropy's FITS table reader, masks and units included), so a block equals the
same rows of the one-shot ``Table.read``.

Writing (:class:`ChunkWriter`): the data part of each block, as astropy writes it, is
appended to a temporary body file in the destination's directory; :meth:`ChunkWriter.close`
writes the header (which may depend on every block: the row count, totals in the metadata)
followed by the body to a second temporary file there and renames it onto the destination
(see :mod:`astrocal.atomic`), so the output equals, byte for byte, the one-shot
``Table.write`` of the whole table, and an interrupted run leaves no partial output.

Every block of a table must have the same columns, types and masking for that to hold; a
text (CSV) list can change a column's type down the file (integers first, reals later).
:class:`Schema` records what the blocks hold; when a later block widens it,
:class:`SchemaChanged` is raised and the caller reads the file once more with the widened
schema (:meth:`Schema.conform` then casts every block to it).
"""
from __future__ import annotations

import io
import itertools
import os
import tempfile
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np
from astropy.io import ascii, fits
from astropy.table import MaskedColumn, Table

from ..atomic import atomic_path, check_writable
from ..sky.starlist import StarListError
from ..errors import CorrectionInputError

#: rows per block by default: ~ 0.2 GB of working memory for a list with a dozen columns
DEFAULT_CHUNK_ROWS = 200_000
#: the formats read in blocks (others, DAOPHOT and IRAF lists, are read whole)
CHUNKED_FORMATS = ("ecsv", "csv", "fits", "text")
_ASTROPY_READ = {"ecsv": "ascii.ecsv", "csv": "ascii.csv"}


class SchemaChanged(Exception):
    """A block's columns do not fit the schema of the blocks before it (``schema``: the
    widened one)."""

    def __init__(self, schema):
        super().__init__("the table's column types change down the file")
        self.schema = schema


# ============================================================================ reading
def _text_chunks(path, fmt, chunk_rows):
    """ECSV / CSV: the header lines (comments and the column names line), then each block
    of data lines read with them."""
    with open(path, "r", newline="") as fh:
        header = []
        for line in fh:
            header.append(line)
            if line.strip() and not line.lstrip().startswith("#"):
                break  # the column names line ends the header
        head = "".join(header)
        row0 = 0
        first = True
        while True:
            lines = list(itertools.islice(fh, chunk_rows))
            if not lines and not first:
                return
            first = False
            try:
                t = Table.read(head + "".join(lines), format=_ASTROPY_READ[fmt], guess=False)
            except Exception as exc:  # astropy raises many kinds for malformed files
                raise StarListError(f"{path}: cannot read data rows from {row0} on as a {fmt} "
                                    f"star list: {exc}") from exc
            yield row0, t
            row0 += len(t)
            if not lines:
                return


def _plain_chunks(path, chunk_rows):
    """Plain text (whitespace columns, ``#`` comments, optionally a line of column names,
    commented or not): the first block is read as :func:`astrocal.sky.starlist` reads a whole
    list (astropy's format guess), and every later block as headerless rows with the
    column names that guess found (``#`` lines skipped), so each block holds the same
    columns as those rows of the whole list."""
    def read(text, row0, **kw):
        try:
            return ascii.read(text, comment="#", **kw)
        except Exception as exc:  # astropy raises many kinds for malformed files
            raise StarListError(f"{path}: cannot read data rows from {row0} on as a text star list: "
                                f"{exc}") from exc

    with open(path, "r", newline="") as fh:
        first = list(itertools.islice(fh, chunk_rows))
        t = read("".join(first), 0)
        names = t.colnames
        yield 0, t
        row0 = len(t)
        while True:
            lines = list(itertools.islice(fh, chunk_rows))
            data = [ln for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
            if not lines:
                return
            if data:
                t = read("".join(data), row0, format="no_header", names=names, guess=False)
                yield row0, t
                row0 += len(t)


def _fits_table_index(hdul, path):
    tables = [k for k, h in enumerate(hdul) if isinstance(h, (fits.BinTableHDU, fits.TableHDU))]
    if not tables:
        raise StarListError(f"{path}: no table HDU in the FITS file")
    return tables[0]


def _fits_chunks(path, chunk_rows):
    """FITS: blocks of rows of the first table HDU (as ``Table.read`` picks it), through a
    memory map that is closed after every block so that resident memory stays bounded."""
    with fits.open(path, memmap=True) as hdul:
        idx = _fits_table_index(hdul, path)
        nrows = int(hdul[idx].header.get("NAXIS2", 0))
        header = hdul[idx].header.copy()
    if any(c in str(v).upper() for k, v in header.items() if k.startswith("TFORM")
           for c in "PQ"):
        whole = Table.read(path, format="fits", hdu=idx)  # variable-length arrays: no blocks
        yield 0, whole
        return
    for lo in itertools.chain(range(0, nrows, chunk_rows), [] if nrows else [0]):
        hi = min(lo + chunk_rows, nrows)
        with fits.open(path, memmap=True) as hdul:
            part = fits.BinTableHDU(data=hdul[idx].data[lo:hi], header=header) \
                if isinstance(hdul[idx], fits.BinTableHDU) else \
                fits.TableHDU(data=hdul[idx].data[lo:hi], header=header)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", fits.verify.VerifyWarning)
                t = Table.read(part)
            t = Table(t, copy=True)  # detach from the memory map before it is closed
            del part
        yield lo, t


def iter_chunks(path: str | os.PathLike, fmt: str, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[tuple[int, Table]]:
    """Yield ``(first_row, Table)`` blocks of at most ``chunk_rows`` rows of a star list.

    Parameters
    ----------
    path : path-like
        The list.
    fmt : str
        ``'ecsv'``, ``'csv'``, ``'fits'`` or ``'text'`` (:data:`CHUNKED_FORMATS`).
    chunk_rows : int
        Rows per block (>= 1).

    Yields
    ------
    int, astropy.table.Table
        The 0-based index of the block's first data row, and the block: the same columns,
        units, masks and metadata as those rows of ``Table.read(path)``.  A list without
        rows yields one empty block.
    """
    chunk_rows = int(chunk_rows)
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    if fmt == "fits":
        return _fits_chunks(Path(path), chunk_rows)
    if fmt == "text":
        return _plain_chunks(Path(path), chunk_rows)
    if fmt in _ASTROPY_READ:
        return _text_chunks(Path(path), fmt, chunk_rows)
    raise CorrectionInputError(f"{path}: format {fmt!r} is not read in blocks (only "
                     f"{', '.join(CHUNKED_FORMATS)})")


# ============================================================================ schema
class Schema:
    """Column names, types and masking that every block is cast to.

    ``columns``: name -> (dtype, masked); built from the first block, widened by
    :meth:`widen` (integers to reals, longer strings, masked).
    """

    def __init__(self, columns=None):
        self.columns = dict(columns or {})

    @staticmethod
    def _of(col):
        return col.dtype, isinstance(col, MaskedColumn)

    def widen(self, table: Table, source: str = "", row0: int = 0) -> Schema:
        """The schema widened to hold ``table`` too.

        Parameters
        ----------
        table : Table
            A block.
        source : str
            The list, named in errors.
        row0 : int
            The block's first data row, named in errors.

        Returns
        -------
        Schema
            A new schema, or ``self`` if it already holds ``table``.

        Raises
        ------
        CorrectionInputError
            (a ValueError) naming the column and row when the columns change or a column's type
            changes in a way no cast holds (a number column turning into text).
        """
        if not self.columns:
            return Schema({n: self._of(table[n]) for n in table.colnames})
        if list(table.colnames) != list(self.columns):
            raise CorrectionInputError(f"{source}: the columns change at data row {row0}: "
                             f"{', '.join(table.colnames)} instead of {', '.join(self.columns)}")
        out = dict(self.columns)
        for name in table.colnames:
            dt, masked = out[name]
            new, new_masked = self._of(table[name])
            if new != dt:
                if dt.kind in "biuf" and new.kind in "biuf" and dt.shape == new.shape:
                    dt = np.result_type(dt, new)
                elif dt.kind == new.kind and dt.kind in "SU" and dt.shape == new.shape:
                    dt = dt if dt.itemsize >= new.itemsize else new
                else:
                    raise CorrectionInputError(
                        f"{source}: column '{name}' holds {dt} before data row {row0} and {new} "
                        "from there on; a list this long is read in blocks, which needs one "
                        "type per column: write it as ECSV or FITS (types declared)")
            out[name] = (dt, masked or new_masked)
        return self if out == self.columns else Schema(out)

    def conform(self, table: Table) -> Table:
        """``table`` with every column cast to the schema (in place).

        Parameters
        ----------
        table : Table
            A block.

        Returns
        -------
        Table
            ``table``.
        """
        for name, (dt, masked) in self.columns.items():
            col = table[name]
            if col.dtype != dt:
                col = col.astype(dt)
            if masked and not isinstance(col, MaskedColumn):
                col = MaskedColumn(col, mask=np.zeros(col.shape, bool))
            if col is not table[name]:
                table.replace_column(name, col, copy=False)
        return table


# ============================================================================ writing
_FITS_FORMATS = ("fits",)


def _header_end(raw, start):
    """Offset of the end of the FITS header that begins at ``start`` (2880-byte blocks)."""
    pos = start
    while pos < len(raw):
        block = raw[pos:pos + 2880]
        for k in range(0, 2880, 80):
            if block[k:k + 8] == b"END     ":
                return pos + 2880
        pos += 2880
    raise RuntimeError("no END card in the FITS header written by astropy")


class ChunkWriter:
    """Write a table block by block; :meth:`close` makes the destination appear at once.

    Every block passed to :meth:`write` must have the same columns and types (see
    :class:`Schema`); the metadata is given once, to :meth:`close`.

    Parameters
    ----------
    out : path-like
        The destination; refused if it exists unless ``overwrite``.
    fmt : str
        An astropy writer: ``'ascii.ecsv'``, ``'ascii.csv'``, ``'ascii.commented_header'``
        or ``'fits'``.
    overwrite : bool
        Replace an existing destination.
    """

    def __init__(self, out, fmt, overwrite=False):
        self.out = check_writable(out, overwrite)
        self.fmt = fmt
        self.overwrite = overwrite
        self.nrows = 0
        self._template = None
        # directories made for the output are removed again if nothing is written
        self._made = [d for d in [self.out.parent, *self.out.parent.parents] if not d.exists()]
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self._done = False
        fd, body = tempfile.mkstemp(prefix=f".{self.out.name}.", suffix=".body", dir=self.out.parent)
        self._body_path = body
        self._body = os.fdopen(fd, "wb")

    # -- the data part of one block, as astropy writes it
    def _text_data(self, table):
        empty, full = io.StringIO(), io.StringIO()
        table[:0].write(empty, format=self.fmt)
        table.write(full, format=self.fmt)
        head, text = empty.getvalue(), full.getvalue()
        if not text.startswith(head):  # the header depends on the values: cannot append
            raise CorrectionInputError(f"{self.out}: astropy's {self.fmt} header of a block differs "
                               "from the empty table's; this table cannot be written in blocks")
        return text[len(head):].encode()

    @staticmethod
    def _fits_bytes(table):
        """The FITS file astropy writes for ``table`` and where its table HDU's header
        ends (the rows follow)."""
        buf = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", fits.verify.VerifyWarning)
            table.write(buf, format="fits")
        raw = buf.getvalue()
        start = _header_end(raw, 0)  # the empty primary HDU
        return raw, start, _header_end(raw, start)

    def _fits_data(self, table):
        raw, start, end = self._fits_bytes(table)
        hdr = fits.Header.fromstring(raw[start:end].decode("ascii"))
        if hdr.get("PCOUNT", 0):
            raise CorrectionInputError(f"{self.out}: variable-length columns cannot be written in blocks")
        return raw[end:end + hdr["NAXIS1"] * hdr["NAXIS2"]]

    def write(self, table: Table) -> None:
        """Append the rows of ``table`` (no metadata: see :meth:`close`).

        Parameters
        ----------
        table : Table
            A block of the output's columns.
        """
        meta = table.meta
        table = table.copy(copy_data=False)
        table.meta = {}
        if self._template is None:
            self._template = table[:0].copy()
            self._input_meta = meta
        data = self._fits_data(table) if self.fmt in _FITS_FORMATS else self._text_data(table)
        self._body.write(data)
        self.nrows += len(table)

    def template_meta(self) -> dict:
        """The metadata of the first block written (the input's, for a block read from it).

        Returns
        -------
        dict
        """
        return dict(self._input_meta) if self._template is not None else {}

    def close(self, meta: dict) -> Path:
        """Write the header (with ``meta``, and for FITS the row count) and the rows to the
        destination, atomically.

        Parameters
        ----------
        meta : dict
            The output's metadata.

        Returns
        -------
        Path
            The destination.
        """
        self._body.close()
        try:
            head = self._template.copy()
            head.meta = meta
            with atomic_path(self.out, self.overwrite) as tmp:
                with open(tmp, "wb") as fh:
                    if self.fmt in _FITS_FORMATS:
                        fh.write(self._fits_header(head))
                    else:
                        text = io.StringIO()
                        head.write(text, format=self.fmt)
                        fh.write(text.getvalue().encode())
                    with open(self._body_path, "rb") as body:
                        while True:
                            block = body.read(1 << 24)
                            if not block:
                                break
                            fh.write(block)
                    if self.fmt in _FITS_FORMATS:
                        pad = (-fh.tell()) % 2880
                        fh.write(b"\0" * pad)
            self._done = True
        finally:
            self.abort()
        return self.out

    def _fits_header(self, head):
        """Primary HDU and table header as astropy writes them for ``head`` (no rows),
        with NAXIS2 set to the rows written (the header keeps its length)."""
        raw, start, end = self._fits_bytes(head)
        hdr = fits.Header.fromstring(raw[start:end].decode("ascii"))
        hdr["NAXIS2"] = self.nrows
        text = hdr.tostring().encode("ascii")
        if len(text) != end - start:
            raise RuntimeError(f"{self.out}: the FITS header changed length when setting NAXIS2")
        return raw[:start] + text

    def abort(self) -> None:
        """Remove the temporary body (the destination is left untouched) and, unless the
        output was written, the directories made for it."""
        if not self._body.closed:
            self._body.close()
        if os.path.exists(self._body_path):
            os.unlink(self._body_path)
        if not self._done:
            for d in self._made:  # innermost first
                try:
                    d.rmdir()
                except OSError:
                    break


__all__ = ["CHUNKED_FORMATS", "ChunkWriter", "DEFAULT_CHUNK_ROWS", "Schema", "SchemaChanged",
           "iter_chunks"]
