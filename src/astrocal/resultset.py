"""A fit's result set: complete or not, one writer at a time, nothing outside its directory.

A result directory (``<fit.output>/<filter>/``) fills in stages: the emcee chain grows in
``posterior.h5`` while the fit runs; then the linear draws, ``fit.json``, ``summary.ecsv``,
``residuals.ecsv`` and the products are written, each file atomically
(:mod:`astrocal.atomic`). The set as a whole becomes complete only when its manifest,
``manifest.json``, is written, last and atomically: it lists every file of the set with
its size and SHA-256. Every reader (``astrocal report``, ``correct``, ``convert``, a later
``fit``) checks the manifest (:func:`require_complete`), so a directory left by a run killed
halfway is recognised as such and never used as a result; ``astrocal fit --resume``
finishes it (the chain continues or, when it had finished, is only read again; the draws
and products are written anew and the manifest last).

A lock file, ``.astrocal.lock`` (holding the writer's process id), keeps a second
``astrocal fit`` from writing into the same directory at the same time; a lock left by a
process that no longer runs is taken over with a warning.

:func:`confined` checks that a path to be written lies under the directory it belongs to.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from . import __version__
from .atomic import ProductExistsError, atomic_write_text
from .checksum import file_sha256
from .errors import AstrocalError

log = logging.getLogger(__name__)

__all__ = ["MANIFEST", "LOCK", "IncompleteResultError", "ResultLockedError", "OutsideOutputError",
           "write_manifest", "read_manifest", "is_complete", "require_complete",
           "require_complete_file", "mark_incomplete", "remove_partial_files", "writer_lock",
           "confined", "check_result_dir", "inputs_sha256"]

#: name of the manifest, the result set's completion marker
MANIFEST = "manifest.json"
#: name of the lock file of a result directory being written
LOCK = ".astrocal.lock"
#: files that mark a directory as a fit's result directory (complete or not)
RESULT_MARKERS = ("posterior.h5", "fit.json", MANIFEST)


class IncompleteResultError(AstrocalError, ValueError):
    """A result directory whose set of files is not complete (no manifest, a file missing
    or of another size than the manifest records)."""


class ResultLockedError(AstrocalError, RuntimeError):
    """Another running process is writing the same result directory."""


class OutsideOutputError(AstrocalError, ValueError):
    """A path to be written does not lie under the directory it belongs to."""


def write_manifest(out: str | os.PathLike, names: Iterable[str | os.PathLike],
                   record: Mapping[str, Any] | None = None) -> dict:
    """Write ``out/manifest.json`` (atomically, last): the set's files with their sizes and
    SHA-256, the astrocal version and ``record``.

    Parameters
    ----------
    out : str or os.PathLike
        The result directory.
    names : iterable of str or os.PathLike
        The files of the set, relative to ``out`` (each must lie under ``out``).
    record : mapping, optional
        Further entries of the manifest (e.g. the campaign's hash and the seed).

    Returns
    -------
    dict
        The manifest: ``complete``, ``astrocal_version``, the entries of ``record`` and
        ``files`` (``{name: {"bytes": size, "sha256": hex}}``).

    Raises
    ------
    OutsideOutputError
        A name leads outside ``out``.
    """
    out = Path(out)
    files = {}
    for name in names:
        path = confined(out / name, out)
        files[str(name)] = {"bytes": path.stat().st_size, "sha256": file_sha256(path)}
    manifest = {"complete": True, "astrocal_version": __version__, **dict(record or {}), "files": files}
    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n", overwrite=True)
    return manifest


def read_manifest(out: str | os.PathLike) -> dict | None:
    """The manifest of ``out`` as a dict, or None when there is none.

    Parameters
    ----------
    out : str or os.PathLike
        The result directory.

    Returns
    -------
    dict or None
        The contents of ``out/manifest.json``; None without that file.

    Raises
    ------
    IncompleteResultError
        The manifest is unreadable or not an astrocal manifest (no ``files``).
    """
    path = Path(out) / MANIFEST
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise IncompleteResultError(f"{path}: unreadable manifest ({exc})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise IncompleteResultError(f"{path}: not an astrocal manifest (no 'files')")
    return manifest


def is_complete(out: str | os.PathLike) -> bool:
    """True when ``out`` holds a complete result set (:func:`require_complete` passes).

    Parameters
    ----------
    out : str or os.PathLike
        The result directory.

    Returns
    -------
    bool
        Whether the set is complete (False also for a missing directory).
    """
    try:
        require_complete(out)
    except (IncompleteResultError, FileNotFoundError):
        return False
    return True


def require_complete(out: str | os.PathLike, verify_hashes: bool = False) -> dict:
    """Raise :class:`IncompleteResultError` unless ``out`` holds a complete result set: its
    manifest exists and every file it lists exists with the recorded size (and SHA-256 with
    ``verify_hashes``).

    Parameters
    ----------
    out : str or os.PathLike
        The result directory.
    verify_hashes : bool, optional
        Also compare every file's SHA-256 with the manifest's (reads every file).

    Returns
    -------
    dict
        The manifest (:func:`read_manifest`).

    Raises
    ------
    FileNotFoundError
        ``out`` is not a directory.
    IncompleteResultError
        No manifest, a listed file missing, of another size or (``verify_hashes``) of
        another SHA-256.
    """
    out = Path(out)
    if not out.is_dir():
        raise FileNotFoundError(f"{out}: no such result directory")
    manifest = read_manifest(out)
    if manifest is None:
        present = [n for n in RESULT_MARKERS if (out / n).exists()]
        what = (f"it holds {', '.join(present)} but no {MANIFEST}" if present else f"no {MANIFEST}")
        raise IncompleteResultError(
            f"{out}: not a complete fit result ({what}): the fit that wrote it was interrupted "
            f"or is still running, or an astrocal older than this one wrote it; finish it with "
            f"'astrocal fit CAMPAIGN.toml --resume' (or start again with --overwrite)")
    for name, entry in manifest["files"].items():
        path = out / name
        if not path.exists():
            raise IncompleteResultError(f"{path}: listed in {out / MANIFEST} but missing: "
                                        "the result set is incomplete")
        size = path.stat().st_size
        if size != int(entry.get("bytes", -1)):
            raise IncompleteResultError(f"{path}: {size} bytes, the manifest records {entry.get('bytes')}: "
                                        "the file changed or was truncated after the fit wrote it")
        if verify_hashes and file_sha256(path) != entry.get("sha256"):
            raise IncompleteResultError(f"{path}: its SHA-256 differs from the manifest's: the file "
                                        "changed after the fit wrote it")
    return manifest


def require_complete_file(path: str | os.PathLike) -> None:
    """Raise :class:`IncompleteResultError` if ``path`` (a product file) lies in a fit's
    result directory whose set is not complete; a file elsewhere passes (a solution file
    can be used on its own).

    Parameters
    ----------
    path : str or os.PathLike
        The product file; its directory is a result directory when it holds
        ``posterior.h5``, ``fit.json`` or ``manifest.json``.
    """
    folder = Path(path).resolve().parent
    if any((folder / n).exists() for n in RESULT_MARKERS):
        require_complete(folder)


def mark_incomplete(out: str | os.PathLike) -> None:
    """Remove ``out``'s manifest (the first step of replacing or finishing a result).

    Parameters
    ----------
    out : str or os.PathLike
        The result directory.
    """
    path = Path(out) / MANIFEST
    if path.exists():
        path.unlink()


def remove_partial_files(out: str | os.PathLike) -> list[str]:
    """Delete the ``.part`` files that interrupted atomic writes left in ``out``.

    Parameters
    ----------
    out : str or os.PathLike
        The result directory (nothing is done when it does not exist).

    Returns
    -------
    list of str
        The names of the files removed.
    """
    out = Path(out)
    if not out.is_dir():
        return []
    removed = []
    for p in sorted(out.glob(".*.part")):
        if p.is_file():
            p.unlink()
            removed.append(p.name)
    if removed:
        log.info("%s: removed %d file(s) left by an interrupted write: %s", out, len(removed), ", ".join(removed))
    return removed


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


@contextmanager
def writer_lock(out: str | os.PathLike) -> Iterator[Path]:
    """Hold ``out/.astrocal.lock`` while writing ``out`` (a context manager).

    The lock file holds the writer's process id; it is removed on leaving the block. A
    lock whose process no longer runs (a killed run) is taken over with a warning.

    Parameters
    ----------
    out : str or os.PathLike
        The result directory (created if missing).

    Yields
    ------
    pathlib.Path
        The lock file.

    Raises
    ------
    ResultLockedError
        A running process holds the lock.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                pid = int(path.read_text().strip() or 0)
            except (OSError, ValueError):
                pid = 0
            if pid and pid != os.getpid() and _pid_alive(pid):
                raise ResultLockedError(
                    f"{out}: another astrocal process (pid {pid}) is writing this result; wait for it "
                    f"to finish (or, if it is not running, delete {path})") from None
            log.warning("%s: taking over the lock of a run that no longer runs (pid %s)", out, pid or "?")
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            continue
        with os.fdopen(fd, "w") as f:
            f.write(f"{os.getpid()}\n")
        break
    else:  # pragma: no cover - a race lost twice
        raise ResultLockedError(f"{out}: could not take the lock {path}")
    try:
        yield path
    finally:
        try:
            if path.read_text().strip() == str(os.getpid()):
                path.unlink()
        except FileNotFoundError:
            pass


def confined(path: str | os.PathLike, root: str | os.PathLike) -> Path:
    """``path`` resolved, after checking that it lies under ``root`` (both resolved, so
    ``..`` and symbolic links cannot lead out).

    Parameters
    ----------
    path : str or os.PathLike
        The path to be written.
    root : str or os.PathLike
        The directory it belongs to.

    Returns
    -------
    pathlib.Path
        ``path``, resolved.

    Raises
    ------
    OutsideOutputError
        ``path`` does not lie under ``root``.
    """
    root_r = Path(root).resolve()
    path_r = Path(path).resolve()
    if path_r != root_r and root_r not in path_r.parents:
        raise OutsideOutputError(f"{path}: would be written outside the output directory {root}; refused")
    return path_r


def check_result_dir(out: str | os.PathLike, resume: bool, overwrite: bool, locked: bool = False) -> None:
    """Refuse to fit into ``out`` what would replace or continue something not asked for:
    a complete result (unless ``overwrite``), an interrupted one (unless ``resume`` or
    ``overwrite``), a directory another process is writing (unless ``locked``: this
    process holds the lock).

    Parameters
    ----------
    out : str or os.PathLike
        The result directory.
    resume : bool
        An interrupted result may be continued.
    overwrite : bool
        An existing result, complete or not, may be replaced.
    locked : bool, optional
        This process holds the directory's lock.

    Raises
    ------
    astrocal.atomic.ProductExistsError
        A result exists, or an interrupted one, and neither is allowed.
    ResultLockedError
        Another running process holds the lock.
    """
    out = Path(out)
    if not locked and (out / LOCK).exists():
        with writer_lock(out):  # raises while its writer runs; a stale lock is taken over and freed
            pass
    if read_manifest(out) is not None:
        if not overwrite:
            raise ProductExistsError(f"{out / MANIFEST}: a result exists; not overwritten (use --overwrite)")
        return
    started = [n for n in ("posterior.h5", "fit.json") if (out / n).exists()]
    if started and not (resume or overwrite):
        raise ProductExistsError(
            f"{out}: an interrupted fit left {' and '.join(started)} but no {MANIFEST}; use --resume to "
            "finish it or --overwrite to start again")


def inputs_sha256(inputs: Iterable[str | os.PathLike]) -> str:
    """SHA-256 (hex) of the input files' names and their own SHA-256, in order (a path that is
    not a file contributes its name only): what a chain's record keeps of its inputs.

    Parameters
    ----------
    inputs : iterable of str or os.PathLike
        The input files, in order.

    Returns
    -------
    str
        The hex SHA-256 over, for each input, its name (without the directory) and, when it
        is a file, its content's SHA-256.
    """
    h = hashlib.sha256()
    for path in map(Path, inputs):
        h.update(path.name.encode())
        if path.is_file():
            h.update(file_sha256(path).encode())
    return h.hexdigest()
