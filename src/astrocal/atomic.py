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
from contextlib import contextmanager
from pathlib import Path

from .errors import AstrocalError


#: environment variable naming a file after whose write the process kills itself (SIGKILL):
#: the fault-injection point of the reliability tests (docs/reliability.md)
FAULT_KILL_AFTER = "ASTROCAL_FAULT_KILL_AFTER"


def fault_point(path):
    """Kill this process (SIGKILL, as the kernel or a user would) when ``path``'s name is the
    one :data:`FAULT_KILL_AFTER` names; a no-op otherwise."""
    name = os.environ.get(FAULT_KILL_AFTER)
    if name and Path(path).name == name:
        os.kill(os.getpid(), signal.SIGKILL)


class ProductExistsError(AstrocalError, FileExistsError):
    """A product already exists and overwriting was not asked for."""


def check_writable(path, overwrite=False):
    """Raise :class:`ProductExistsError` if ``path`` exists and ``overwrite`` is false."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise ProductExistsError(
            f"{path}: file exists; not overwritten (use overwrite=True or --overwrite)"
        )
    return path


@contextmanager
def atomic_path(path, overwrite=False):
    """Context manager yielding a temporary path that becomes ``path`` on success.

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


def atomic_write_text(path, text, overwrite=False):
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path, overwrite) as tmp:
        tmp.write_text(text)
    return Path(path)


def atomic_write_table(table, path, overwrite=False, **kwargs):
    """Write an astropy Table atomically (format from the destination's name)."""
    fmt = kwargs.pop("format", None)
    if fmt is None and str(path).endswith(".ecsv"):
        fmt = "ascii.ecsv"
    with atomic_path(path, overwrite) as tmp:
        table.write(tmp, format=fmt, **kwargs)
    return Path(path)
