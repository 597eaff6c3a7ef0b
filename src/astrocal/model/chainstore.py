"""The emcee chain of the hyperparameters: kept in memory, written to HDF5 in blocks.

emcee's :class:`~emcee.backends.HDFBackend` opens the HDF5 file several times at every
step (``save_step``, ``has_blobs``, ``iteration``): on a nominal lab fit a third of the
sampling time went to some 22,000 file opens. :class:`BlockBackend` is emcee's in-memory
:class:`~emcee.backends.Backend`; :meth:`BlockBackend.write` puts the chain so far into the
file once per block (``FitSettings.check_every`` steps), in the layout of emcee's
``HDFBackend`` (group ``hyperparameters``: datasets ``chain``, ``log_prob``, ``accepted``;
attrs ``nwalkers``, ``ndim``, ``has_blobs``, ``iteration``, ``random_state_*``), so
``emcee.backends.HDFBackend(path, name="hyperparameters")`` and
:func:`astrocal.products.result_files.load_chain` read it as before.

Each write is atomic: the whole file is built in memory (h5py on a ``BytesIO``), written
beside the old one with plain file writes, flushed to disk (``fsync``) and renamed over
it (:func:`astrocal.atomic.atomic_path`). A write that fails (disk full) or a process
killed mid-write therefore leaves the last complete block, random state included, and
:meth:`BlockBackend.load` resumes from there; the failure is raised as a
:class:`ChainWriteError` that names the file. (HDF5 writing to a disk that fills up can
crash the process: the HDF5 library segfaults closing a file whose write failed; building
the image in memory keeps the library away from the disk.) Rewriting the whole chain costs
O(steps) per block, milliseconds for a 10 MB chain against the seconds a block of steps
takes.
"""
from __future__ import annotations

import errno
import io
import os
from pathlib import Path

import emcee
import h5py
import numpy as np

from ..atomic import atomic_path
from ..errors import AstrocalError

#: group of ``posterior.h5`` that holds the chain
GROUP = "hyperparameters"

#: attrs of the group that emcee's HDFBackend writes itself (the others are carried over)
_EMCEE_ATTRS = ("version", "nwalkers", "ndim", "has_blobs", "iteration")

_REASONS = {errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded",
            errno.EFBIG: "file too large for the file-size limit"}


class ChainWriteError(AstrocalError, OSError):
    """A block of the chain could not be written; the file keeps the last complete block."""


def stored_iteration(path: str | os.PathLike, name: str = GROUP) -> int:
    """Steps of the chain stored in ``path``.

    Parameters
    ----------
    path : str or Path
        The HDF5 file.
    name : str
        Its group that holds the chain.

    Returns
    -------
    int
        The steps stored (0 without a file or a chain group).
    """
    reader = emcee.backends.HDFBackend(str(path), name=name, read_only=True)
    return int(reader.iteration) if reader.initialized else 0


def _reason(exc):
    """``"disk full"`` (or the like) for an OSError of a full disk, else ``"write failed"``.

    h5py raises the HDF5 library's errors without ``errno`` set; their message carries it
    (``errno = 28``)."""
    code = exc.errno
    if code is None:
        text = str(exc)
        code = next((c for c in _REASONS if f"errno = {c}," in text or os.strerror(c) in text), None)
    return _REASONS.get(code, "write failed")


class BlockBackend(emcee.backends.Backend):
    """emcee's in-memory backend that writes the chain to ``path`` (group ``name``) in blocks.

    Parameters
    ----------
    path : str or Path
        The HDF5 file (``posterior.h5``).
    name : str
        Its group that holds the chain.
    attrs : dict, optional
        Further attrs of the group (``hyper_names``, ``chain_record``), written with every
        block.

    Notes
    -----
    emcee calls :meth:`save_step` at every step (in memory only); the caller calls
    :meth:`write` at the end of each block. :attr:`written` is the number of steps in the
    file.
    """

    def __init__(self, path, name=GROUP, attrs=None):
        super().__init__()
        self.path = Path(path)
        self.name = name
        self.attrs = dict(attrs or {})
        self.written = 0
        self._others = []  # other top-level objects of the file, carried over by write()

    @classmethod
    def load(cls, path: str | os.PathLike, name: str = GROUP) -> BlockBackend:
        """The chain stored in ``path`` (as emcee's ``HDFBackend`` reads it), to continue.

        Parameters
        ----------
        path : str or Path
            The HDF5 file.
        name : str
            Its group that holds the chain.

        Returns
        -------
        BlockBackend
            Holding the whole stored chain, its acceptance counts, random state and attrs.
        """
        reader = emcee.backends.HDFBackend(str(path), name=name, read_only=True)
        self = cls(path, name)
        self.reset(*reader.shape)
        it = int(reader.iteration)
        if it > 0:
            self.grow(it, None)
            self.chain[:] = reader.get_chain()
            self.log_prob[:] = reader.get_log_prob()
            blobs = reader.get_blobs()
            if blobs is not None:
                self.blobs = np.array(blobs)
            self.accepted = np.asarray(reader.accepted, dtype=self.dtype)
            self.random_state = reader.random_state
            self.iteration = it
        with h5py.File(path, "r") as f:
            g = f[name]
            self.attrs = {k: v for k, v in g.attrs.items()
                          if k not in _EMCEE_ATTRS and not k.startswith("random_state_")}
            self._others = [k for k in f if k != name]
        self.written = it
        return self

    def write(self) -> None:
        """Write the chain so far to the file, atomically (see the module's notes).

        Raises
        ------
        ChainWriteError
            The write failed (e.g. disk full); the file keeps the last complete block
            (:attr:`written` steps).
        """
        it = int(self.iteration)
        try:
            with atomic_path(self.path, overwrite=True) as tmp:
                self._write_file(tmp, it)
        except OSError as exc:
            raise ChainWriteError(
                f"{self.path}: the chain's block up to step {it} could not be written "
                f"({_reason(exc)}: {exc}); the file keeps the last complete block ({self.written} "
                "steps): make room, then run again with --resume to continue from there") from exc
        self.written = it

    def _image(self, it):
        """The HDF5 file of the first ``it`` steps, built in memory (bytes)."""
        image = io.BytesIO()
        emcee.backends.HDFBackend(image, name=self.name, dtype=self.dtype).reset(self.nwalkers, self.ndim)
        with h5py.File(image, "a") as f:
            g = f[self.name]
            for key in ("chain", "log_prob"):
                g[key].resize(it, axis=0)
                g[key][...] = getattr(self, key)[:it]
            if self.blobs is not None:
                g.create_dataset("blobs", data=self.blobs[:it])
                g.attrs["has_blobs"] = True
            g["accepted"][...] = self.accepted
            for i, v in enumerate(self.random_state or ()):
                g.attrs[f"random_state_{i}"] = v
            for key, value in self.attrs.items():
                g.attrs[key] = value
            g.attrs["iteration"] = it
            if self._others:
                with h5py.File(self.path, "r") as old:
                    for key in self._others:
                        old.copy(old[key], f, name=key)
        return image.getbuffer()

    def _write_file(self, tmp, it):
        image = self._image(it)
        with open(tmp, "wb") as fh:
            fh.write(image)
            fh.flush()
            os.fsync(fh.fileno())  # on disk before the rename makes it the chain
