"""Safe writing of products: never overwrite unless asked, never leave a truncated file.

Every writer in astrocal goes through :func:`atomic_write`: the content is written to a
temporary file in the destination's directory and renamed over the destination only once
complete (``os.replace`` is atomic on POSIX), so an interrupted write leaves either the
old file or nothing.
"""
from __future__ import annotations

import os
import signal
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import AstrocalError

if TYPE_CHECKING:
    from astropy.table import Table


#: environment variable naming a file after whose write the process kills itself (SIGKILL):
#: the fault-injection point of the reliability tests (docs/reliability.md)
FAULT_KILL_AFTER = "ASTROCAL_FAULT_KILL_AFTER"


def fault_point(path: str | os.PathLike) -> None:
    """Kill this process (SIGKILL, as the kernel or a user would) when ``path``'s name is the
    one :data:`FAULT_KILL_AFTER` names; a no-op otherwise.

    Parameters
    ----------
    path : str or os.PathLike
        The file just written.
    """
    name = os.environ.get(FAULT_KILL_AFTER)
    if name and Path(path).name == name:
        os.kill(os.getpid(), signal.SIGKILL)


class ProductExistsError(AstrocalError, FileExistsError):
    """A product already exists and overwriting was not asked for."""


def check_writable(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Raise :class:`ProductExistsError` if ``path`` exists and ``overwrite`` is false.

    Parameters
    ----------
    path : str or os.PathLike
        The file to be written.
    overwrite : bool, optional
        Whether an existing file may be replaced.

    Returns
    -------
    pathlib.Path
        ``path``, when it may be written.

    Raises
    ------
    ProductExistsError
        ``path`` exists and ``overwrite`` is false.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise ProductExistsError(
            f"{path}: file exists; not overwritten (use overwrite=True or --overwrite)"
        )
    return path


@contextmanager
def atomic_path(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Context manager yielding a temporary path that becomes ``path`` on success.

    The temporary file is in ``path``'s directory (created if missing) and does not exist
    when yielded (writers such as astropy refuse an existing file); on leaving the block
    without an error it is renamed over ``path``; it is removed in any case.

    Parameters
    ----------
    path : str or os.PathLike
        The destination.
    overwrite : bool, optional
        Whether an existing ``path`` may be replaced.

    Yields
    ------
    pathlib.Path
        The temporary path to write.

    Raises
    ------
    ProductExistsError
        ``path`` exists (or appeared during the write) and ``overwrite`` is false.

    Examples
    --------
    >>> with atomic_path("out.fits") as tmp:        # doctest: +SKIP
    ...     hdulist.writeto(tmp)
    """
    path = check_writable(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    os.unlink(tmp)  # writers (astropy) refuse an existing file
    try:
        yield Path(tmp)
        if path.exists() and not overwrite:  # appeared while we were writing
            raise ProductExistsError(f"{path}: file appeared during the write; not overwritten")
        os.replace(tmp, path)
        fault_point(path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: str | os.PathLike, text: str, overwrite: bool = False) -> Path:
    """Write ``text`` to ``path`` atomically (:func:`atomic_path`).

    Parameters
    ----------
    path : str or os.PathLike
        The destination.
    text : str
        The content.
    overwrite : bool, optional
        Whether an existing ``path`` may be replaced.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    with atomic_path(path, overwrite) as tmp:
        tmp.write_text(text)
    return Path(path)


def atomic_write_table(table: Table, path: str | os.PathLike, overwrite: bool = False, **kwargs: Any) -> Path:
    """Write an astropy Table atomically (:func:`atomic_path`).

    Parameters
    ----------
    table : astropy.table.Table
        The table.
    path : str or os.PathLike
        The destination; a name ending in ``.ecsv`` is written as ECSV unless ``format``
        says otherwise, any other format astropy guesses from the name.
    overwrite : bool, optional
        Whether an existing ``path`` may be replaced.
    **kwargs
        Passed to :meth:`astropy.table.Table.write` (``format`` among them).

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    fmt = kwargs.pop("format", None)
    if fmt is None and str(path).endswith(".ecsv"):
        fmt = "ascii.ecsv"
    with atomic_path(path, overwrite) as tmp:
        table.write(tmp, format=fmt, **kwargs)
    return Path(path)
