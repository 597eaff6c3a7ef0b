"""The LMS detector mosaic: four HAWAII-2RG chips in the focal plane, and their as-built placement.

Nominal layout: ``FPA_metis_lms_layout.dat`` (irdb; package data ``astrocal/data/lms``): chip
centres DET1 (+19.547, +19.547), DET2 (-19.547, +19.547), DET3 (-19.547, -19.547),
DET4 (+19.547, -19.547) mm, 2048 x 2048 pixels of 0.018 mm, no rotation.

Pixel convention (ScopeSim's "D" WCS): 0-based pixel-centre coordinates
``col = (x - x_cen) / 0.018 + 1023.5``, ``row = (y - y_cen) / 0.018 + 1023.5``; a chip covers
``-0.5 <= col, row <= 2047.5``. Detector ids 1..4 (0 = no detector).

As-built placement (what calibration measures), per chip and *as seen on the chip*: the image
is offset by ``(dcol, drow)`` [px] and rotated counter-clockwise by ``rot`` [rad] about the chip
centre (1023.5, 1023.5), in the small-angle form that keeps the model linear in the parameters:
``col = col0 + dcol - rot (row0 - 1023.5)``, ``row = row0 + drow + rot (col0 - 1023.5)``, where
``(col0, row0)`` is the nominal position. (The chip itself is displaced by ``-(dcol, drow)`` and
rotated by ``-rot``; the omitted second-order terms are below 1e-3 px for ``|rot| < 1e-3``.)
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np
from numpy.typing import ArrayLike

from .errors import OffDetectorError

__all__ = ["Mosaic", "load_mosaic", "PLACEMENT_TERMS", "placement_design", "REFERENCE_BORDERS"]

PLACEMENT_TERMS = ("dcol", "drow", "rot")
"""Names of the three placement parameters of a chip (px, px, rad)."""

REFERENCE_BORDERS = {1: (32, 0, 32, 64), 2: (32, 64, 32, 0), 3: (32, 64, 32, 0), 4: (32, 0, 32, 64)}
"""Unilluminated border per chip [px]: (bottom, left, top, right) rows/columns (irdb ``METIS_DET_IFU.yaml``)."""


@dataclass(frozen=True)
class Mosaic:
    """Nominal chip layout.

    Attributes
    ----------
    det_ids : ndarray of int, shape (4,)
    x_cen_mm, y_cen_mm : ndarray, shape (4,)
        Chip centres in the focal plane [mm].
    nx, ny : int
        Chip size [px] (2048).
    pixel_mm : float
        Pixel pitch [mm] (0.018).
    """

    det_ids: np.ndarray
    x_cen_mm: np.ndarray
    y_cen_mm: np.ndarray
    nx: int
    ny: int
    pixel_mm: float

    @property
    def centre_px(self) -> tuple[float, float]:
        """Chip centre in 0-based pixel coordinates (col, row) = (1023.5, 1023.5)."""
        return (self.nx - 1) / 2.0, (self.ny - 1) / 2.0

    @property
    def x_edge_mm(self) -> float:
        """Outer x edge of the mosaic [mm] (37.979): the mosaic spans -x_edge..+x_edge."""
        return float(np.max(np.abs(self.x_cen_mm)) + self.nx * self.pixel_mm / 2.0)

    def index(self, det: ArrayLike) -> np.ndarray:
        """Row index 0..3 of detector ids.

        Parameters
        ----------
        det : array_like of int
            Detector ids.

        Returns
        -------
        ndarray of int
            Their rows in :attr:`det_ids`.

        Raises
        ------
        OffDetectorError
            Another id.
        """
        det = np.asarray(det)
        bad = ~np.isin(det, self.det_ids)
        if bad.any():
            raise OffDetectorError(f"detector id must be one of {self.det_ids.tolist()}, got {np.unique(det[bad])[:5]}")
        return np.searchsorted(self.det_ids, det)

    def fp_to_chip(self, x_mm: ArrayLike, y_mm: ArrayLike, det: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """Focal-plane (x, y) [mm] -> nominal (col, row) [px] on chip ``det`` (no bounds check).

        Parameters
        ----------
        x_mm, y_mm : array_like
            Focal-plane position [mm].
        det : array_like of int
            Detector ids.

        Returns
        -------
        col, row : ndarray
            0-based pixel position [px].
        """
        i = self.index(det)
        ccol, crow = self.centre_px
        return ((np.asarray(x_mm) - self.x_cen_mm[i]) / self.pixel_mm + ccol,
                (np.asarray(y_mm) - self.y_cen_mm[i]) / self.pixel_mm + crow)

    def chip_to_fp(self, det: ArrayLike, col: ArrayLike, row: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """Nominal (col, row) [px] on chip ``det`` -> focal-plane (x, y) [mm].

        Parameters
        ----------
        det : array_like of int
            Detector ids.
        col, row : array_like
            0-based pixel position [px].

        Returns
        -------
        x_mm, y_mm : ndarray
            Focal-plane position [mm].
        """
        i = self.index(det)
        ccol, crow = self.centre_px
        return ((np.asarray(col) - ccol) * self.pixel_mm + self.x_cen_mm[i],
                (np.asarray(row) - crow) * self.pixel_mm + self.y_cen_mm[i])

    def on_chip(self, col: ArrayLike, row: ArrayLike, slack: float = 0.0) -> np.ndarray:
        """Where (col, row) lies on a chip's pixel area.

        Parameters
        ----------
        col, row : array_like
            0-based pixel position [px].
        slack : float
            Widening of the area on every side [px].

        Returns
        -------
        ndarray of bool
            True on -0.5..2047.5 (edges included), widened by ``slack``.
        """
        col, row = np.asarray(col), np.asarray(row)
        lo = -0.5 - slack
        return (col >= lo) & (col <= self.nx - 1 - lo) & (row >= lo) & (row <= self.ny - 1 - lo)

    def locate(self, x_mm: ArrayLike, y_mm: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Nominal detector and pixel of focal-plane points.

        Parameters
        ----------
        x_mm, y_mm : array_like
            Focal-plane position [mm].

        Returns
        -------
        det, col, row : ndarray
            Detector id and 0-based pixel [px]; det 0 and NaN in the gaps.
        """
        x, y = np.broadcast_arrays(np.asarray(x_mm, float), np.asarray(y_mm, float))
        det = np.zeros(x.shape, int)
        col = np.full(x.shape, np.nan)
        row = np.full(x.shape, np.nan)
        for d in self.det_ids:
            c, r = self.fp_to_chip(x, y, d)
            hit = self.on_chip(c, r) & (det == 0)
            det[hit], col[hit], row[hit] = d, c[hit], r[hit]
        return det, col, row

    def illuminated(self, det: ArrayLike, col: ArrayLike, row: ArrayLike) -> np.ndarray:
        """Where a pixel position is outside the chip's reference-pixel border (:data:`REFERENCE_BORDERS`).

        Parameters
        ----------
        det : array_like of int
            Detector ids.
        col, row : array_like
            0-based pixel position [px].

        Returns
        -------
        ndarray of bool
            True inside the illuminated area.
        """
        det, col, row = np.broadcast_arrays(np.asarray(det), np.asarray(col, float), np.asarray(row, float))
        out = np.zeros(det.shape, bool)
        for d, (bottom, left, top, right) in REFERENCE_BORDERS.items():
            m = det == d
            out[m] = ((col[m] >= left - 0.5) & (col[m] <= self.nx - right - 0.5)
                      & (row[m] >= bottom - 0.5) & (row[m] <= self.ny - top - 0.5))
        return out


@lru_cache(maxsize=1)
def load_mosaic() -> Mosaic:
    """The nominal layout from the package's ``FPA_metis_lms_layout.dat``.

    Returns
    -------
    Mosaic
        The four chips (cached).
    """
    text = resources.files("astrocal").joinpath("data/lms/FPA_metis_lms_layout.dat").read_text()
    lines = [ln.split() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    names, rows = lines[0], np.array(lines[1:], float)
    col = {n: rows[:, names.index(n)] for n in names}
    if np.any(col["angle"] != 0.0):
        raise ValueError("FPA_metis_lms_layout.dat: rotated chips are not supported")
    if len(set(col["x_size"])) != 1 or len(set(col["y_size"])) != 1 or len(set(col["pixel_size"])) != 1:
        raise ValueError("FPA_metis_lms_layout.dat: chips of different sizes are not supported")
    order = np.argsort(col["id"])
    return Mosaic(col["id"][order].astype(int), col["x_cen"][order], col["y_cen"][order],
                  int(col["x_size"][0]), int(col["y_size"][0]), float(col["pixel_size"][0]))


def placement_design(col0: ArrayLike, row0: ArrayLike, centre: tuple[float, float] = (1023.5, 1023.5)
                     ) -> np.ndarray:
    """d(col, row) / d(dcol, drow, rot) at nominal chip positions.

    The placement is exactly linear in its parameters (see the module docstring), so
    ``(col, row) = (col0, row0) + placement_design(col0, row0) @ (dcol, drow, rot)``.

    Parameters
    ----------
    col0, row0 : array_like
        Nominal chip positions [px].
    centre : (2,)
        The chip's centre (col, row) [px], the rotation's pivot.

    Returns
    -------
    ndarray (N, 2, 3)
        [px/px, px/px, px/rad].
    """
    col0, row0 = np.atleast_1d(np.asarray(col0, float)), np.atleast_1d(np.asarray(row0, float))
    out = np.zeros(col0.shape + (2, 3))
    out[..., 0, 0] = 1.0
    out[..., 1, 1] = 1.0
    out[..., 0, 2] = -(row0 - centre[1])
    out[..., 1, 2] = col0 - centre[0]
    return out
