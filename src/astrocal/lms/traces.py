"""The LMS optical model's trace polynomials, evaluated exactly as the reference implementation does.

Source: A. Glasse's ``lms_dist_poly.txt`` and ``lms_dist_wcal.txt`` (package data
``astrocal/data/lms``, copied from AstarVienna/irdb, see its README). Evaluation follows ScopeSim's
``MetisLMSSpectralTrace`` (checked against values computed with ScopeSim 0.11.4 in the tests).

Conventions
-----------
- ``sli``: the file's slice index 0..27 (0 = most negative focal-plane y). The public slice
  *number* used elsewhere in :mod:`astrocal.lms` is ``sli + 1`` (1..28, ScopeSim's "Slice k").
- ``xi``: position along the slice on the sky [arcsec]; ``u = xi / 0.303`` [mm in FP2].
- ``lam``: wavelength [um]; phase ``phi = order * lam / (2 * 18.2)``.
- ``x, y``: focal-plane position of the detector mosaic [mm], the frame of
  ``FPA_metis_lms_layout.dat`` (x = dispersion direction, wavelength increasing towards +x).
- Each matrix element is a cubic in the echelle angle ``theta`` [deg]:
  ``M[r, c] = P3 theta^3 + P2 theta^2 + P1 theta + P0``.
- Forward (A -> x, B -> y): ``x = sum_rc A[r, c] phi^c u^r``.
  Inverse (AI -> phi, BI -> u): ``phi = sum_rc AI[r, c] x^c y^r``. All 16 elements are used.

The forward (A, B) and inverse (AI, BI) sets are *not* exact inverses of each other (round trip
~0.13 px rms along the slice, ~0.57 px along the dispersion); :mod:`astrocal.lms.nominal` makes
one of them the truth.
"""
from __future__ import annotations

import gzip
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Union

import numpy as np
from numpy.typing import ArrayLike

from .errors import EchelleSettingError, SliceNumberError

__all__ = ["GRATING_SPACING_UM", "FP2_PLATESCALE_ARCSEC_PER_MM", "N_SLICES", "ORDERS",
           "SLICE_HALF_LENGTH_ARCSEC", "SLICE_WIDTH_ARCSEC", "LAMBDA_C_RANGE_UM",
           "EchelleSetting", "echelle_setting", "TraceMatrices", "trace_matrices",
           "PolyEvaluation", "evaluate_forward", "evaluate_inverse", "load_coefficients", "load_wcal",
           "predisperser_angle"]

GRATING_SPACING_UM = 18.2
"""Echelle grating constant [um] (ScopeSim ``grat_spacing``)."""
FP2_PLATESCALE_ARCSEC_PER_MM = 0.303
"""Plate scale in FP2 used by the polynomials [arcsec/mm] (``fp2_platescale``)."""
N_SLICES = 28
ORDERS = np.arange(21, 42)
"""Echelle orders in the model (21..41)."""
SLICE_HALF_LENGTH_ARCSEC = 0.4485
"""Half the slice length on the sky [arcsec] (109.4 px x 8.2 mas / 2; irdb Aperture List)."""
SLICE_WIDTH_ARCSEC = 0.0207
"""Width of one slice across the slice on the sky [arcsec]."""
LAMBDA_C_RANGE_UM = (2.70, 5.30)
"""Accepted central wavelengths [um] (template ``INS WLEN CEN`` range 2700..5300 nm)."""

MATRIX_NAMES = ("A", "B", "AI", "BI")


def _data(name):
    return resources.files("astrocal").joinpath(f"data/lms/{name}")


@lru_cache(maxsize=1)
def load_coefficients() -> np.ndarray:
    """All polynomial coefficients, shape (21 orders, 28 slices, 4 matrices, 4 rows, 4 cols, 4).

    The last axis holds the cubic's coefficients in the echelle angle [deg], highest power
    first (P3, P2, P1, P0). Matrix axis: 0 = A, 1 = B, 2 = AI, 3 = BI.

    Returns
    -------
    ndarray (21, 28, 4, 4, 4, 4)
        Read-only array.
    """
    with _data("lms_dist_poly.txt.gz").open("rb") as raw, gzip.open(raw, "rt") as fh:  # both closed
        table = np.loadtxt(fh, delimiter=",", skiprows=1)
    if table.shape != (21 * 28 * 4 * 16, 9):
        raise ValueError(f"lms_dist_poly.txt.gz: unexpected shape {table.shape}")
    idx = table[:, :5].astype(int)
    out = np.full((21, 28, 4, 4, 4, 4), np.nan)
    out[idx[:, 0] - ORDERS[0], idx[:, 1], idx[:, 2], idx[:, 3], idx[:, 4]] = table[:, 5:]
    if np.isnan(out).any():
        raise ValueError("lms_dist_poly.txt.gz: missing coefficients")
    out.setflags(write=False)
    return out


@lru_cache(maxsize=1)
def load_wcal() -> np.ndarray:
    """Per-order relation angle <-> wavelength, shape (21, 5): columns order, c0, c1, ic0, ic1.

    ``theta = c0 * lam + c1`` [deg, lam in um] and ``lam = ic0 * theta + ic1``.

    Returns
    -------
    ndarray (21, 5)
        Read-only array, sorted by order (21..41).
    """
    with _data("lms_dist_wcal.txt.gz").open("rb") as raw, gzip.open(raw, "rt") as fh:  # both closed
        lines = [ln for ln in fh if ln.strip() and not ln.startswith("#")]
    rows = np.array([[float(v) for v in ln.split(",")] for ln in lines[1:]])   # lines[0]: column names
    rows = rows[np.argsort(rows[:, 0])]
    if not np.array_equal(rows[:, 0], ORDERS):
        raise ValueError("lms_dist_wcal.txt.gz: orders are not 21..41")
    rows.setflags(write=False)
    return rows


def predisperser_angle(lam_um: ArrayLike) -> np.ndarray:
    """Pre-disperser angle [deg] for a wavelength [um] (E-REP-ATC-MET-1003_3-0 Fig. 3-15, irdb).

    Parameters
    ----------
    lam_um : array_like
        Wavelength [um].

    Returns
    -------
    ndarray
        Angle [deg] (a quartic in the wavelength).
    """
    lam = np.asarray(lam_um, float)
    return -6.0585 + 9.1657 * lam - 2.7017 * lam**2 + 0.3825 * lam**3 - 0.0205 * lam**4


@dataclass(frozen=True)
class EchelleSetting:
    """One echelle setting: the central wavelength and the order and angle it selects.

    Attributes
    ----------
    lam_c_um : float
        Central wavelength [um] (``ESO INS WLEN CEN``).
    order : int
        Echelle order (``ESO INS OPTI8 ORDER``).
    echelle_deg : float
        Echelle angle [deg] (``ESO INS OPTI8 POS``), used for every slice and wavelength.
    predisperser_deg : float
        Pre-disperser angle [deg] (``ESO INS OPTI7 POS``); informative only.
    """

    lam_c_um: float
    order: int
    echelle_deg: float
    predisperser_deg: float

    @classmethod
    def from_order_angle(cls, order: int, echelle_deg: float) -> "EchelleSetting":
        """The setting recorded in a header (order and echelle angle); ``lam_c = ic0 theta + ic1``.

        Parameters
        ----------
        order : int
            Echelle order (21..41).
        echelle_deg : float
            Echelle angle [deg].

        Returns
        -------
        EchelleSetting

        Raises
        ------
        EchelleSettingError
            An order outside the model.
        """
        if int(order) not in ORDERS:
            raise EchelleSettingError(f"echelle order {order} is not in the model (21..41)")
        row = load_wcal()[int(order) - ORDERS[0]]
        lam_c = float(row[3] * echelle_deg + row[4])
        return cls(lam_c, int(order), float(echelle_deg), float(predisperser_angle(lam_c)))


SettingLike = Union[int, float, EchelleSetting]
"""An echelle setting as :meth:`~astrocal.lms.deviations.DeviationLayout.setting_index` takes it:
its index in the layout, its central wavelength [um] or the :class:`EchelleSetting`."""


def echelle_setting(lam_c_um: float) -> EchelleSetting:
    """The setting for a central wavelength, chosen as ScopeSim does.

    For every order ``theta_o = c0 lam_c + c1``; the order with the smallest ``|theta_o|`` wins.

    Parameters
    ----------
    lam_c_um : float
        Central wavelength [um].

    Returns
    -------
    EchelleSetting
        The order, its echelle angle and the pre-disperser angle.

    Raises
    ------
    EchelleSettingError
        ``lam_c_um`` outside :data:`LAMBDA_C_RANGE_UM` or not finite.
    """
    lam_c = float(lam_c_um)
    lo, hi = LAMBDA_C_RANGE_UM
    if not np.isfinite(lam_c) or not lo <= lam_c <= hi:
        raise EchelleSettingError(f"central wavelength {lam_c_um} um outside the LMS range {lo}..{hi} um")
    wcal = load_wcal()
    angles = wcal[:, 1] * lam_c + wcal[:, 2]
    i = int(np.argmin(np.abs(angles)))
    return EchelleSetting(lam_c, int(wcal[i, 0]), float(angles[i]), float(predisperser_angle(lam_c)))


@dataclass(frozen=True)
class TraceMatrices:
    """The four 4x4 matrices of every slice at one setting, and their derivative in the angle.

    Attributes
    ----------
    setting : EchelleSetting
    matrices : ndarray, shape (28, 4, 4, 4)
        ``[sli, mat, row, col]``, mat 0..3 = A, B, AI, BI at the setting's angle.
    dmatrices_dtheta : ndarray, shape (28, 4, 4, 4)
        Their derivative with respect to the echelle angle [per deg].
    """

    setting: EchelleSetting
    matrices: np.ndarray
    dmatrices_dtheta: np.ndarray


@lru_cache(maxsize=64)
def trace_matrices(setting: EchelleSetting) -> TraceMatrices:
    """Evaluate the cubics in the echelle angle for one setting (cached per setting).

    Parameters
    ----------
    setting : EchelleSetting
        Its order and echelle angle select the coefficients.

    Returns
    -------
    TraceMatrices
        The matrices A, B, AI, BI of every slice at the setting's angle and their derivatives in
        the angle.
    """
    coef = load_coefficients()[setting.order - ORDERS[0]]        # (28, 4, 4, 4, 4)
    t = float(setting.echelle_deg)
    p3, p2, p1, p0 = (coef[..., k] for k in range(4))
    mats = ((p3 * t + p2) * t + p1) * t + p0
    dmats = (3.0 * p3 * t + 2.0 * p2) * t + p1
    mats.setflags(write=False)
    dmats.setflags(write=False)
    return TraceMatrices(setting, mats, dmats)


@dataclass(frozen=True)
class PolyEvaluation:
    """A 2-D polynomial map evaluated at N points, with its derivatives.

    Attributes
    ----------
    value : ndarray, shape (N, 2)
        Forward: (x, y) [mm]. Inverse: (xi [arcsec], lam [um]).
    jacobian : ndarray, shape (N, 2, 2)
        ``d value[i] / d arg[j]``; forward args (xi [arcsec], lam [um]), inverse args (x, y) [mm].
    dtheta : ndarray, shape (N, 2)
        ``d value / d echelle angle`` [per deg] at fixed arguments.
    """

    value: np.ndarray
    jacobian: np.ndarray
    dtheta: np.ndarray


def _check_sli(sli, n):
    sli = np.broadcast_to(np.asarray(sli), (n,))
    if not np.issubdtype(sli.dtype, np.integer) or sli.size and (sli.min() < 0 or sli.max() >= N_SLICES):
        raise SliceNumberError(f"slice index must be an integer 0..27 (file 'Sli'), got {np.unique(sli)[:5]}")
    return sli


def _powers(a):
    p = np.stack([np.ones_like(a), a, a * a, a * a * a], axis=-1)
    dp = np.stack([np.zeros_like(a), np.ones_like(a), 2.0 * a, 3.0 * a * a], axis=-1)
    return p, dp


def _poly2(mats, dmats, a, b):
    """sum_rc M[r, c] a^c b^r for each point; mats (N, 2, 4, 4) -> value, d/da, d/db, d/dtheta (N, 2)."""
    pa, dpa = _powers(a)
    pb, dpb = _powers(b)
    val = np.einsum("nkrc,nc,nr->nk", mats, pa, pb)
    da = np.einsum("nkrc,nc,nr->nk", mats, dpa, pb)
    db = np.einsum("nkrc,nc,nr->nk", mats, pa, dpb)
    dt = np.einsum("nkrc,nc,nr->nk", dmats, pa, pb)
    return val, da, db, dt


def evaluate_forward(tm: TraceMatrices, sli: ArrayLike, xi: ArrayLike, lam: ArrayLike) -> PolyEvaluation:
    """Matrices A, B: (slice, xi [arcsec], lam [um]) -> focal plane (x, y) [mm].

    Parameters
    ----------
    tm : TraceMatrices
        The setting's matrices (:func:`trace_matrices`).
    sli : array_like of int
        Slice file indices 0..27.
    xi, lam : array_like
        Position along the slice [arcsec] and wavelength [um]; arrays broadcast to one 1-D length.

    Returns
    -------
    PolyEvaluation
        (x, y) [mm], d(x, y)/d(xi, lam) and d(x, y)/d(echelle angle).
    """
    xi, lam = np.broadcast_arrays(np.atleast_1d(np.asarray(xi, float)), np.atleast_1d(np.asarray(lam, float)))
    xi, lam = xi.ravel(), lam.ravel()
    sli = _check_sli(sli, xi.size)
    u = xi / FP2_PLATESCALE_ARCSEC_PER_MM
    dphi_dlam = tm.setting.order / (2.0 * GRATING_SPACING_UM)
    phi = lam * dphi_dlam
    val, dphi, du, dt = _poly2(tm.matrices[sli, 0:2], tm.dmatrices_dtheta[sli, 0:2], phi, u)
    jac = np.stack([du / FP2_PLATESCALE_ARCSEC_PER_MM, dphi * dphi_dlam], axis=-1)
    return PolyEvaluation(val, jac, dt)


def evaluate_inverse(tm: TraceMatrices, sli: ArrayLike, x: ArrayLike, y: ArrayLike) -> PolyEvaluation:
    """Matrices AI, BI: focal plane (x, y) [mm] of a slice -> (xi [arcsec], lam [um]).

    Parameters
    ----------
    tm : TraceMatrices
        The setting's matrices (:func:`trace_matrices`).
    sli : array_like of int
        Slice file indices 0..27.
    x, y : array_like
        Focal-plane position [mm]; arrays broadcast to one 1-D length.

    Returns
    -------
    PolyEvaluation
        (xi [arcsec], lam [um]), d(xi, lam)/d(x, y) and d(xi, lam)/d(echelle angle).
    """
    x, y = np.broadcast_arrays(np.atleast_1d(np.asarray(x, float)), np.atleast_1d(np.asarray(y, float)))
    x, y = x.ravel(), y.ravel()
    sli = _check_sli(sli, x.size)
    # AI -> phase, BI -> u; reorder to (xi, lam)
    val, dx, dy, dt = _poly2(tm.matrices[sli, 2:4][:, ::-1], tm.dmatrices_dtheta[sli, 2:4][:, ::-1], x, y)
    scale = np.array([FP2_PLATESCALE_ARCSEC_PER_MM, 2.0 * GRATING_SPACING_UM / tm.setting.order])
    return PolyEvaluation(val * scale, np.stack([dx, dy], axis=-1) * scale[None, :, None], dt * scale)
