"""The as-built deviations from the optical model: explicit linear parameters and their prior.

The as-built detector position of (slice s, xi, lam) at setting e on chip d is

    (col, row) = nominal(s, xi, lam; e, d) + D(s, xi, lam; e, d) @ p

exactly (the model is *defined* linear in ``p``), with three groups of parameters, all shifts
as seen on the detector [px, 18 um]:

1. **Per-slice corrections** (shared by all settings): a polynomial of total degree
   ``degree`` in ``xi_n = xi / 0.4485`` and ``w`` (the wavelength normalised to -1..+1 over the
   setting's range), in a Legendre basis ``P_i(xi_n) P_j(w)``, added to (col, row). The coefficients
   of slice s are ``mean + delta_s``: a ``mean`` block shared by all slices and a slice-specific
   block. Prior: ``mean ~ N(0, sigma_mean^2)``, ``delta_s ~ N(0, tau^2)``; a small ``tau`` says the
   slices are alike unless the data say otherwise. The mean's constant term is left out: the
   per-setting shifts carry it (gauge).
2. **Detector placement** (:mod:`astrocal.lms.mosaic`): per chip ``dcol, drow`` [px] and ``rot``
   [rad]; the reference chip (default DET1) has none (it defines the focal-plane frame; gauge).
3. **Setting shifts**, per echelle/pre-disperser setting: a rigid shift ``dx, dy`` [px] of all
   slices and an echelle-angle offset ``dtheta`` [deg] acting through the optical model's angle
   dependence (first order).

Parameter order: mean (col terms, then row terms), slices 1..28 (each col terms then row terms),
placement (chips in id order except the reference, each dcol, drow, rot), settings (each dx, dy,
dtheta). :attr:`DeviationLayout.names` names every parameter.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from numpy.polynomial import legendre

from .mosaic import PLACEMENT_TERMS, load_mosaic
from .traces import N_SLICES, EchelleSetting

__all__ = ["DeviationLayout", "Hyperparameters", "legendre_basis"]

SETTING_TERMS = ("dx", "dy", "dtheta")
AXES = ("col", "row")


def legendre_basis(xi_n, w, terms):
    """Basis values and derivatives: ``P_i(xi_n) P_j(w)`` for ``(i, j)`` in ``terms``.

    Returns
    -------
    value, d_dxi_n, d_dw : ndarray, shape (N, T)
    """
    xi_n, w = np.atleast_1d(xi_n).astype(float), np.atleast_1d(w).astype(float)
    deg = max(max(i, j) for i, j in terms)
    eye = np.eye(deg + 1)
    px = np.stack([legendre.legval(xi_n, eye[k]) for k in range(deg + 1)], axis=-1)
    pw = np.stack([legendre.legval(w, eye[k]) for k in range(deg + 1)], axis=-1)
    dpx = np.stack([legendre.legval(xi_n, legendre.legder(eye[k])) if k else 0 * xi_n
                    for k in range(deg + 1)], axis=-1)
    dpw = np.stack([legendre.legval(w, legendre.legder(eye[k])) if k else 0 * w
                    for k in range(deg + 1)], axis=-1)
    i = np.array([t[0] for t in terms])
    j = np.array([t[1] for t in terms])
    return px[:, i] * pw[:, j], dpx[:, i] * pw[:, j], px[:, i] * dpw[:, j]


@dataclass(frozen=True)
class Hyperparameters:
    """Prior widths of the deviation parameters (the fit may sample ``tau`` and others).

    Attributes
    ----------
    tau_px : float
        Width of the slice-specific part of every per-slice coefficient [px].
    sigma_mean_px : float
        Width of the shared mean per-slice coefficients [px].
    sigma_offset_px : float
        Chip offsets ``dcol, drow`` [px].
    sigma_rotation_rad : float
        Chip rotations [rad].
    sigma_shift_px : float
        Setting shifts ``dx, dy`` [px].
    sigma_echelle_deg : float
        Echelle-angle offsets [deg] (1e-3 deg moves lines by ~1-2 px).
    """

    tau_px: float = 0.3
    sigma_mean_px: float = 2.0
    sigma_offset_px: float = 5.0
    sigma_rotation_rad: float = 1e-3
    sigma_shift_px: float = 5.0
    sigma_echelle_deg: float = 2e-3


@dataclass(frozen=True)
class DeviationLayout:
    """Which deviation parameters exist, in which order.

    Parameters
    ----------
    settings : tuple of EchelleSetting
        The settings of the data set, in parameter order.
    degree : int
        Total degree of the per-slice correction polynomials (default 2: 6 terms per axis).
    reference_detector : int or None
        Chip without placement parameters (default 1); None gives every chip parameters
        (then the mosaic's overall position is set by the prior only).
    """

    settings: tuple[EchelleSetting, ...]
    degree: int = 2
    reference_detector: int | None = 1

    def __post_init__(self):
        object.__setattr__(self, "settings", tuple(self.settings))
        if not self.settings or not all(isinstance(s, EchelleSetting) for s in self.settings):
            raise ValueError("DeviationLayout needs at least one EchelleSetting")
        if len({s.lam_c_um for s in self.settings}) != len(self.settings):
            raise ValueError("DeviationLayout: the same setting twice")
        if int(self.degree) != self.degree or self.degree < 0:
            raise ValueError(f"degree must be an integer >= 0, got {self.degree}")
        if self.reference_detector is not None and self.reference_detector not in load_mosaic().det_ids:
            raise ValueError(f"reference_detector must be one of 1..4 or None, got {self.reference_detector}")

    @cached_property
    def terms(self) -> tuple[tuple[int, int], ...]:
        """Legendre terms ``(i, j)``: degree i in xi_n, j in w, ``i + j <= degree``."""
        return tuple((i, t - i) for t in range(self.degree + 1) for i in range(t, -1, -1))

    @property
    def n_terms(self) -> int:
        return len(self.terms)

    @cached_property
    def placement_detectors(self) -> tuple[int, ...]:
        return tuple(int(d) for d in load_mosaic().det_ids if d != self.reference_detector)

    @cached_property
    def blocks(self) -> dict[str, slice]:
        """Parameter index ranges: 'mean', 'slices', 'placement', 'settings'."""
        t = self.n_terms
        sizes = {"mean": 2 * (t - 1), "slices": N_SLICES * 2 * t,
                 "placement": 3 * len(self.placement_detectors), "settings": 3 * len(self.settings)}
        out, start = {}, 0
        for k, n in sizes.items():
            out[k] = slice(start, start + n)
            start += n
        return out

    @property
    def n_params(self) -> int:
        return self.blocks["settings"].stop

    @cached_property
    def names(self) -> tuple[str, ...]:
        """One name per parameter, e.g. ``slice07.row.P1(xi)P0(w)``, ``DET2.rot``, ``setting1.dtheta``."""
        def term(i, j):
            return f"P{i}(xi)P{j}(w)"
        out = [f"mean.{a}.{term(*tr)}" for a in AXES for tr in self.terms[1:]]
        out += [f"slice{s:02d}.{a}.{term(*tr)}" for s in range(1, N_SLICES + 1) for a in AXES for tr in self.terms]
        out += [f"DET{d}.{p}" for d in self.placement_detectors for p in PLACEMENT_TERMS]
        out += [f"setting{e}.{p}" for e in range(len(self.settings)) for p in SETTING_TERMS]
        return tuple(out)

    def setting_index(self, setting) -> int:
        """Index of a setting given as index, :class:`EchelleSetting` or central wavelength [um]."""
        from .errors import EchelleSettingError
        if isinstance(setting, (int, np.integer)):
            if 0 <= setting < len(self.settings):
                return int(setting)
        elif isinstance(setting, EchelleSetting):
            if setting in self.settings:
                return self.settings.index(setting)
        else:
            lam = [s.lam_c_um for s in self.settings]
            if float(setting) in lam:
                return lam.index(float(setting))
        raise EchelleSettingError(f"setting {setting!r} is not one of the model's settings "
                                  f"{[s.lam_c_um for s in self.settings]}")

    def slice_columns(self, slice_number) -> np.ndarray:
        """Columns of the per-slice coefficients of slice numbers (N,) -> (N, 2, T) parameter indices."""
        t = self.n_terms
        s = np.asarray(slice_number) - 1
        base = self.blocks["slices"].start + s * 2 * t
        return base[:, None, None] + np.arange(2)[None, :, None] * t + np.arange(t)[None, None, :]

    def mean_columns(self) -> np.ndarray:
        """Columns of the shared mean, shape (2, T-1) (terms 1..T-1)."""
        t = self.n_terms
        return self.blocks["mean"].start + np.arange(2)[:, None] * (t - 1) + np.arange(t - 1)[None, :]

    def placement_columns(self, det) -> np.ndarray:
        """Columns (N, 3) of chips' placement; -1 for the reference chip."""
        det = np.asarray(det)
        out = np.full(det.shape + (3,), -1)
        for k, d in enumerate(self.placement_detectors):
            out[det == d] = self.blocks["placement"].start + 3 * k + np.arange(3)
        return out

    def setting_columns(self, index: int) -> np.ndarray:
        return self.blocks["settings"].start + 3 * index + np.arange(3)

    def slice_coefficients(self, params) -> np.ndarray:
        """Effective per-slice coefficients ``mean + delta_s``, shape (28, 2, T) [px]."""
        p = np.asarray(params, float)
        t = self.n_terms
        delta = p[self.blocks["slices"]].reshape(N_SLICES, 2, t)
        mean = np.zeros((2, t))
        mean[:, 1:] = p[self.blocks["mean"]].reshape(2, t - 1)
        return delta + mean[None]

    def prior_sigma(self, hyper: Hyperparameters = Hyperparameters()) -> np.ndarray:
        """Prior standard deviation of every parameter (zero-mean independent Gaussians), shape (P,)."""
        sig = np.empty(self.n_params)
        sig[self.blocks["mean"]] = hyper.sigma_mean_px
        sig[self.blocks["slices"]] = hyper.tau_px
        sig[self.blocks["placement"]] = np.tile([hyper.sigma_offset_px, hyper.sigma_offset_px,
                                                 hyper.sigma_rotation_rad], len(self.placement_detectors))
        sig[self.blocks["settings"]] = np.tile([hyper.sigma_shift_px, hyper.sigma_shift_px,
                                                hyper.sigma_echelle_deg], len(self.settings))
        return sig

    def zeros(self) -> np.ndarray:
        """The nominal instrument: all deviations zero."""
        return np.zeros(self.n_params)
