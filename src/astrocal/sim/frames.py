"""Writing the frames of a simulated campaign: raw FITS files written atomically, and the
frame-writing tasks run on threads (each frame has its own random stream, so the files do
not depend on the number of threads)."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence

import numpy as np
from astropy.io import fits

from ..atomic import atomic_path

__all__ = ["write_fits", "run_frame_tasks"]


def write_fits(path: str | os.PathLike, data: np.ndarray, header: fits.Header, overwrite: bool) -> None:
    """Write one raw frame as a primary HDU, atomically.

    Parameters
    ----------
    path : str or os.PathLike
        The FITS file.
    data : numpy.ndarray
        The frame (ADU, float32 in the simulators).
    header : astropy.io.fits.Header
        Its header.
    overwrite : bool
        Replace an existing file (else an existing file is an error).
    """
    with atomic_path(path, overwrite) as tmp:
        fits.PrimaryHDU(data=data, header=header).writeto(tmp)


def run_frame_tasks(tasks: Sequence[Callable[[], None]], threads: int | None = 1) -> None:
    """Run frame-writing callables, on up to ``threads`` threads (in order when 1).

    Each frame has its own random stream, so the result does not depend on the threads;
    an exception of any task is raised here.

    Parameters
    ----------
    tasks : sequence of callables
        Each writes one frame (no arguments, no result).
    threads : int or None
        Most tasks run at once (None or 0: one).
    """
    n_threads = max(1, min(int(threads or 1), len(tasks)))
    if n_threads == 1:
        for task in tasks:
            task()
        return
    with ThreadPoolExecutor(max_workers=n_threads) as pool:
        for fut in [pool.submit(task) for task in tasks]:
            fut.result()

