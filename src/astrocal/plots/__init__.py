"""Plots of a fit: maps over the detector, residuals, chains and posteriors.

One module per kind of figure:

- :mod:`astrocal.plots.maps`: distortion vector map, non-linear part, 1-sigma uncertainty
  map, pixel-scale map, year-to-year difference map;
- :mod:`astrocal.plots.residuals`: residual vectors and histograms per dataset, a sky
  dataset's residuals against the catalogue, lab versus sky comparison;
- :mod:`astrocal.plots.chains`: corner plot of hyperparameters and poses, chains and
  autocorrelation.

Every function takes plain data (a :class:`~astrocal.solution.Solution`, a
:class:`~astrocal.model.result.Posterior`, a residual table, a chain array) and returns a
:class:`matplotlib.figure.Figure` (no pyplot state, so it is safe in scripts and tests);
:func:`save_figure` writes it as PNG and PDF. Detector axes are 0-based pixels.
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from ..atomic import atomic_path

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: raster resolution of the PNG files (the PDF files are vector)
PNG_DPI = 110


def save_figure(fig: Figure, stem: str | os.PathLike, overwrite: bool = False, dpi: float = PNG_DPI,
                formats: Iterable[str] = ("png", "pdf")) -> dict[str, Path]:
    """Write ``fig`` to ``<stem>.png`` and ``<stem>.pdf`` (atomically, never over an
    existing file unless ``overwrite``).

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        The figure.
    stem : str or os.PathLike
        Output path without the suffix.
    overwrite : bool
        Replace existing files.
    dpi : float
        Resolution of the raster formats (:data:`PNG_DPI`).
    formats : iterable of str
        The formats (file suffixes) to write.

    Returns
    -------
    dict
        ``{format: path}`` of the files written.
    """
    stem = Path(stem)
    paths = {}
    for fmt in formats:
        path = stem.with_name(f"{stem.name}.{fmt}")
        with atomic_path(path, overwrite) as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi)
        paths[fmt] = path
    return paths


from .chains import autocorrelation_curve, chain_plot, corner_plot  # noqa: E402
from .maps import (  # noqa: E402
    difference_map, distortion_vector_map, nonlinear_map, pixel_scale_map, uncertainty_map,
)
from .residuals import catalog_residual_plot, lab_sky_comparison, residual_plot  # noqa: E402

__all__ = [
    "autocorrelation_curve", "catalog_residual_plot", "chain_plot", "corner_plot", "difference_map",
    "distortion_vector_map", "lab_sky_comparison", "nonlinear_map", "pixel_scale_map",
    "residual_plot", "save_figure", "uncertainty_map",
]
