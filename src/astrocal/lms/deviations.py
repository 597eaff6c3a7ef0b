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

4. **Residual beyond the polynomial** (optional, ``residual_m > 0``): per slice and axis a smooth
   field ``r_s(xi_n, w)`` that no polynomial of the per-slice degree holds, a reduced-rank
   Gaussian process of Matérn-5/2 covariance on the slice's normalised (xi_n, w) square
   (:class:`astrocal.field.residual.ResidualBasis` over ``(-1, 1, -1, 1)``: ``m x m`` Laplacian
   eigenfunctions with their projection on the degree-``degree`` Legendre polynomials removed, so
   the residual never absorbs the polynomial). Its coefficients are linear parameters whose prior
   widths follow from the residual's rms ``residual_rms_px`` [px] and correlation length
   ``residual_length`` (in the normalised units, the slice's length and the setting's range being
   2), hyperparameters the fit samples; the slices' residuals are independent draws (no shared
   mean). The same idea as the imager's residual field (:mod:`astrocal.field.residual`).

Parameter order: mean (col terms, then row terms), slices 1..28 (each col terms, row terms, then
with a residual the col residual coefficients and the row residual coefficients),
placement (chips in id order except the reference, each dcol, drow, rot), settings (each dx, dy,
dtheta). :attr:`DeviationLayout.names` names every parameter.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from numpy.typing import ArrayLike
from numpy.polynomial import legendre

from ..field.residual import ResidualBasis
from .errors import EchelleSettingError
from .mosaic import PLACEMENT_TERMS, load_mosaic
from .traces import N_SLICES, EchelleSetting

__all__ = ["DeviationLayout", "Hyperparameters", "SliceWaves", "legendre_basis"]

SETTING_TERMS = ("dx", "dy", "dtheta")
AXES = ("col", "row")


def legendre_basis(xi_n: ArrayLike, w: ArrayLike, terms: Sequence[tuple[int, int]]
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Basis values and derivatives: ``P_i(xi_n) P_j(w)`` for ``(i, j)`` in ``terms``.

    Parameters
    ----------
    xi_n, w : array_like
        Position along the slice and wavelength, both normalised to -1..1.
    terms : sequence of (int, int)
        The Legendre degrees ``(i, j)``.

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
    residual_rms_px : float
        Rms over a slice of the per-slice residual beyond the polynomial [px] (layouts with
        ``residual_m > 0``; the fit samples it).
    residual_length : float
        Its Matérn correlation length in the slice's normalised (xi_n, w) units (the slice is
        2 long, the setting's range 2 wide; the fit samples it).
    """

    tau_px: float = 0.3
    sigma_mean_px: float = 2.0
    sigma_offset_px: float = 5.0
    sigma_rotation_rad: float = 1e-3
    sigma_shift_px: float = 5.0
    sigma_echelle_deg: float = 2e-3
    residual_rms_px: float = 0.01
    residual_length: float = 1.0


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
    residual_m : int
        Eigenfunctions per dimension of the per-slice residual beyond the polynomial (0: none,
        the default; ``m * m`` coefficients per slice and axis).
    residual_boundary : float
        Boundary factor of the residual's eigenfunction box (> 1; the box extends this many
        half-sizes around the slice's square). Default 1.8: a residual that is nearly constant
        along one dimension (a long length there) needs a wide box (at 1.3 the functions fall to
        0.35 of their centre at the square's edges), while ``m`` functions over the box resolve
        frequencies up to ``pi m / (2 c)`` (5.2 per normalised unit at m = 6, c = 1.8). Measured on
        simulated per-slice waves (``docs/lms.md``, Validation; two campaigns, at the MAP
        hyperparameters of the ARD prior): 1.8 against 1.3 raised the log evidence by ~450 and
        the row intervals' 68 / 95 % coverage from ~45 / 76 to ~57 / 96 %; 2.5 at m = 6 no longer
        resolved the waves.
    """

    settings: tuple[EchelleSetting, ...]
    degree: int = 2
    reference_detector: int | None = 1
    residual_m: int = 0
    residual_boundary: float = 1.8

    def __post_init__(self):
        object.__setattr__(self, "settings", tuple(self.settings))
        if not self.settings or not all(isinstance(s, EchelleSetting) for s in self.settings):
            raise ValueError("DeviationLayout needs at least one EchelleSetting")
        if len({s.lam_c_um for s in self.settings}) != len(self.settings):
            raise ValueError("DeviationLayout: the same setting twice")
        if int(self.degree) != self.degree or self.degree < 0:
            raise ValueError(f"degree must be an integer >= 0, got {self.degree}")
        if int(self.residual_m) != self.residual_m or self.residual_m < 0:
            raise ValueError(f"residual_m must be an integer >= 0, got {self.residual_m}")
        if not float(self.residual_boundary) > 1.0:
            raise ValueError(f"residual_boundary must be > 1, got {self.residual_boundary}")
        object.__setattr__(self, "residual_m", int(self.residual_m))
        if self.reference_detector is not None and self.reference_detector not in load_mosaic().det_ids:
            raise ValueError(f"reference_detector must be one of 1..4 or None, got {self.reference_detector}")

    @cached_property
    def terms(self) -> tuple[tuple[int, int], ...]:
        """Legendre terms ``(i, j)``: degree i in xi_n, j in w, ``i + j <= degree``."""
        return tuple((i, t - i) for t in range(self.degree + 1) for i in range(t, -1, -1))

    @property
    def n_terms(self) -> int:
        """Number of Legendre terms T."""
        return len(self.terms)

    @cached_property
    def residual_basis(self) -> ResidualBasis | None:
        """The per-slice residual's basis on the normalised square (None without a residual)."""
        if not self.residual_m:
            return None
        return ResidualBasis((-1.0, 1.0, -1.0, 1.0), self.degree, self.residual_m, self.residual_boundary)

    @property
    def n_residual(self) -> int:
        """Residual coefficients per slice and axis (``residual_m**2``, 0 without a residual)."""
        return self.residual_m ** 2

    @property
    def slice_width(self) -> int:
        """Coefficients per slice and axis: the polynomial's terms plus the residual's."""
        return self.n_terms + self.n_residual

    def slice_basis(self, xi_n: ArrayLike, w: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-slice basis (polynomial terms, then the residual's functions) and its derivatives
        in ``xi_n`` and ``w``.

        Parameters
        ----------
        xi_n, w : array_like
            Position along the slice and wavelength, both normalised to -1..1.

        Returns
        -------
        value, d_dxi_n, d_dw : ndarray, shape (N, slice_width)
        """
        v, dx, dw = legendre_basis(xi_n, w, self.terms)
        if not self.residual_m:
            return v, dx, dw
        xi_n, w = np.atleast_1d(xi_n).astype(float), np.atleast_1d(w).astype(float)
        rb = self.residual_basis
        rv = rb.design(xi_n, w)
        rdx, rdw = rb.design_derivatives(xi_n, w)
        return np.hstack([v, rv]), np.hstack([dx, rdx]), np.hstack([dw, rdw])

    def slice_block_is_residual(self) -> np.ndarray:
        """Which parameters of one slice's block are residual coefficients.

        Returns
        -------
        ndarray of bool, shape (2 * slice_width,)
            Over the block's consecutive parameters (col terms, row terms, col residual, row
            residual).
        """
        return np.r_[np.zeros(2 * self.n_terms, bool), np.ones(2 * self.n_residual, bool)]

    def residual_prior_sd(self, rms_px: ArrayLike, length: ArrayLike) -> np.ndarray:
        """Prior sd of the residual coefficients (per axis, ``m * m``).

        Parameters
        ----------
        rms_px : float or array_like (W,)
            The residual's rms over the slice [px].
        length : float or array_like (W,)
            Its correlation length (normalised units).

        Returns
        -------
        ndarray (m*m,) or (W, m*m)
            [px].
        """
        return self.residual_basis.prior_sd_for_rms(rms_px, length)

    def residual_prior_sd_ard(self, rms_px: ArrayLike, length_xi: ArrayLike, length_w: ArrayLike) -> np.ndarray:
        """Prior sd of the residual coefficients (per axis, ``m * m``) with a correlation length
        per dimension (automatic relevance determination, ARD).

        The anisotropic Matérn-5/2 spectral density in two dimensions,
        ``S(omega) ~ l_xi l_w (5 + l_xi**2 omega_xi**2 + l_w**2 omega_w**2)**-3.5``, at the basis's
        frequencies, scaled so that a draw's mean square over the slice is ``rms_px**2`` (the
        projected functions' mean squares, as :meth:`residual_prior_sd`). With ``length_xi ==
        length_w`` it is :meth:`residual_prior_sd`.

        Parameters
        ----------
        rms_px : float or array_like (W,)
            The residual's rms over the slice [px].
        length_xi, length_w : float or array_like (W,)
            Its correlation lengths along the slice and along the dispersion (normalised units,
            the slice's length and the setting's range being 2).

        Returns
        -------
        ndarray (m*m,) or (W, m*m)
            [px].
        """
        rb = self.residual_basis
        scalar = all(np.ndim(v) == 0 for v in (rms_px, length_xi, length_w))
        rms, lx, lw = (np.atleast_1d(np.asarray(v, float))[:, None] for v in (rms_px, length_xi, length_w))
        bx, bw = rb.box
        j = np.arange(1, rb.m + 1)
        ox = np.repeat(np.pi * j / (2 * bx), rb.m)[None, :]        # basis order: j along xi slowest
        ow = np.tile(np.pi * j / (2 * bw), rb.m)[None, :]
        s = lx * lw * (5.0 + (lx * ox) ** 2 + (lw * ow) ** 2) ** -3.5
        sd = np.sqrt(s) * (rms / np.sqrt(s @ rb.mean_squares())[:, None])
        return sd[0] if scalar else sd

    @cached_property
    def placement_detectors(self) -> tuple[int, ...]:
        """The chips with placement parameters (all but the reference)."""
        return tuple(int(d) for d in load_mosaic().det_ids if d != self.reference_detector)

    @cached_property
    def blocks(self) -> dict[str, slice]:
        """Parameter index ranges: 'mean', 'slices', 'placement', 'settings'."""
        t = self.n_terms
        sizes = {"mean": 2 * (t - 1), "slices": N_SLICES * 2 * self.slice_width,
                 "placement": 3 * len(self.placement_detectors), "settings": 3 * len(self.settings)}
        out, start = {}, 0
        for k, n in sizes.items():
            out[k] = slice(start, start + n)
            start += n
        return out

    @property
    def n_params(self) -> int:
        """Number of parameters P."""
        return self.blocks["settings"].stop

    @cached_property
    def names(self) -> tuple[str, ...]:
        """One name per parameter, e.g. ``slice07.row.P1(xi)P0(w)``, ``DET2.rot``, ``setting1.dtheta``."""
        def term(i, j):
            return f"P{i}(xi)P{j}(w)"
        out = [f"mean.{a}.{term(*tr)}" for a in AXES for tr in self.terms[1:]]
        m = self.residual_m
        res = [f"R{j}_{k}" for j in range(1, m + 1) for k in range(1, m + 1)]
        out += [f"slice{s:02d}.{a}.{name}" for s in range(1, N_SLICES + 1)
                for a, names in ((AXES[0], [term(*tr) for tr in self.terms]), (AXES[1], [term(*tr) for tr in self.terms]),
                                 (AXES[0], res), (AXES[1], res)) for name in names]
        out += [f"DET{d}.{p}" for d in self.placement_detectors for p in PLACEMENT_TERMS]
        out += [f"setting{e}.{p}" for e in range(len(self.settings)) for p in SETTING_TERMS]
        return tuple(out)

    def setting_index(self, setting: int | float | EchelleSetting) -> int:
        """Index of a setting given as index, :class:`EchelleSetting` or central wavelength [um].

        Parameters
        ----------
        setting : int, float or EchelleSetting
            The setting.

        Returns
        -------
        int
            Its index in :attr:`settings`.

        Raises
        ------
        EchelleSettingError
            Not one of the model's settings.
        """
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

    def slice_columns(self, slice_number: ArrayLike) -> np.ndarray:
        """Columns of the per-slice coefficients of slice numbers.

        Parameters
        ----------
        slice_number : array_like of int (N,)
            Slices 1..28.

        Returns
        -------
        ndarray of int (N, 2, W)
            Parameter indices (``W`` = :attr:`slice_width`: the polynomial's terms, then the
            residual's, per axis).
        """
        t, r = self.n_terms, self.n_residual
        s = np.asarray(slice_number) - 1
        base = self.blocks["slices"].start + s * 2 * (t + r)
        k = np.arange(2)[None, :, None]
        j = np.arange(t + r)[None, None, :]
        return base[:, None, None] + np.where(j < t, k * t + j, 2 * t + k * r + (j - t))

    def mean_columns(self) -> np.ndarray:
        """Columns of the shared mean.

        Returns
        -------
        ndarray of int (2, T-1)
            Parameter indices of terms 1..T-1 per axis.
        """
        t = self.n_terms
        return self.blocks["mean"].start + np.arange(2)[:, None] * (t - 1) + np.arange(t - 1)[None, :]

    def placement_columns(self, det: ArrayLike) -> np.ndarray:
        """Columns of chips' placement.

        Parameters
        ----------
        det : array_like of int (N,)
            Chips 1..4.

        Returns
        -------
        ndarray of int (N, 3)
            Parameter indices of (dcol, drow, rot); -1 for the reference chip.
        """
        det = np.asarray(det)
        out = np.full(det.shape + (3,), -1)
        for k, d in enumerate(self.placement_detectors):
            out[det == d] = self.blocks["placement"].start + 3 * k + np.arange(3)
        return out

    def setting_columns(self, index: int) -> np.ndarray:
        """Columns of a setting's (dx, dy, dtheta).

        Parameters
        ----------
        index : int
            The setting's index.

        Returns
        -------
        ndarray of int (3,)
            Parameter indices.
        """
        return self.blocks["settings"].start + 3 * index + np.arange(3)

    def slice_coefficients(self, params: ArrayLike) -> np.ndarray:
        """Effective per-slice coefficients ``mean + delta_s``.

        Parameters
        ----------
        params : array_like (P,)
            Deviation values.

        Returns
        -------
        ndarray (28, 2, W)
            [px] (the residual's coefficients, if any, after the polynomial's, in
            :meth:`slice_basis` order).
        """
        p = np.asarray(params, float)
        t = self.n_terms
        delta = p[self.slice_columns(np.arange(1, N_SLICES + 1))]
        mean = np.zeros((2, self.slice_width))
        mean[:, 1:t] = p[self.blocks["mean"]].reshape(2, t - 1)
        return delta + mean[None]

    def prior_sigma(self, hyper: Hyperparameters = Hyperparameters()) -> np.ndarray:
        """Prior standard deviation of every parameter (zero-mean independent Gaussians).

        Parameters
        ----------
        hyper : Hyperparameters
            The prior widths.

        Returns
        -------
        ndarray (P,)
            In each parameter's unit (px, rad, deg).
        """
        sig = np.empty(self.n_params)
        sig[self.blocks["mean"]] = hyper.sigma_mean_px
        sig[self.blocks["slices"]] = hyper.tau_px
        if self.residual_m:
            rsd = self.residual_prior_sd(hyper.residual_rms_px, hyper.residual_length)
            cols = self.slice_columns(np.arange(1, N_SLICES + 1))[:, :, self.n_terms:]
            sig[cols] = rsd[None, None, :]
        sig[self.blocks["placement"]] = np.tile([hyper.sigma_offset_px, hyper.sigma_offset_px,
                                                 hyper.sigma_rotation_rad], len(self.placement_detectors))
        sig[self.blocks["settings"]] = np.tile([hyper.sigma_shift_px, hyper.sigma_shift_px,
                                                hyper.sigma_echelle_deg], len(self.settings))
        return sig

    def zeros(self) -> np.ndarray:
        """The nominal instrument: all deviations zero.

        Returns
        -------
        ndarray (P,)
        """
        return np.zeros(self.n_params)


@dataclass(frozen=True)
class SliceWaves:
    """A smooth per-slice deviation that no polynomial holds, for simulated as-built instruments.

    Slice ``s`` is moved by

        dcol = amp_px * a[s] * sin(freq_w * w + phase[s]),    drow = amp_px * b[s] * sin(freq_xi * xi_n)

    [px] (``w`` the wavelength normalised to -1..+1 over the setting's range, ``xi_n = xi /
    0.4485``): a wave along the dispersion and one along the slice, with per-slice amplitudes
    ``a, b ~ N(0, 1)`` and phases uniform (arrays of 29, index = slice number; 0 unused). It is
    not a draw from the fit's prior (no finite set of its parameters holds it); an
    :class:`~astrocal.lms.LmsGeometry` with ``waves`` adds it to every position. Defaults
    (0.75 and 0.8 waves over the range and the slice) as in ``benchmarks/bench_lms_coverage.py``.
    """

    amp_px: float
    a: tuple
    b: tuple
    phase: tuple
    freq_w: float = 1.5 * np.pi
    freq_xi: float = 5.0

    @classmethod
    def draw(cls, rng: np.random.Generator, amp_px: float, **kw: float) -> SliceWaves:
        """Per-slice amplitudes and phases from ``rng`` (normal a, normal b, uniform phase, 29 each).

        Parameters
        ----------
        rng : numpy.random.Generator
            The random numbers.
        amp_px : float
            Amplitude [px].
        **kw : float
            ``freq_w``, ``freq_xi``.

        Returns
        -------
        SliceWaves
        """
        a, b, ph = rng.normal(size=N_SLICES + 1), rng.normal(size=N_SLICES + 1), rng.uniform(0, 2 * np.pi, N_SLICES + 1)
        return cls(float(amp_px), tuple(map(float, a)), tuple(map(float, b)), tuple(map(float, ph)), **kw)

    def to_dict(self) -> dict:
        """The waves as plain data.

        Returns
        -------
        dict
            ``amp_px``, ``a``, ``b``, ``phase``, ``freq_w``, ``freq_xi`` (:meth:`from_dict` reads it back).
        """
        return {"amp_px": self.amp_px, "a": list(self.a), "b": list(self.b), "phase": list(self.phase),
                "freq_w": self.freq_w, "freq_xi": self.freq_xi}

    @classmethod
    def from_dict(cls, d: dict) -> SliceWaves:
        """The waves from :meth:`to_dict`'s plain data.

        Parameters
        ----------
        d : dict
            ``amp_px``, ``a``, ``b``, ``phase``, ``freq_w``, ``freq_xi``.

        Returns
        -------
        SliceWaves
        """
        return cls(float(d["amp_px"]), tuple(d["a"]), tuple(d["b"]), tuple(d["phase"]), float(d["freq_w"]),
                   float(d["freq_xi"]))

    def __call__(self, slice_number, xi_n, w):
        """``(value, d/dxi_n, d/dw)``, each (N, 2) [px] (col, row)."""
        s = np.asarray(slice_number, int)
        xi_n, w = np.asarray(xi_n, float), np.asarray(w, float)
        a, b, ph = (np.asarray(v)[s] for v in (self.a, self.b, self.phase))
        zero = np.zeros(s.shape)
        aw = self.freq_w * w + ph
        value = self.amp_px * np.stack([a * np.sin(aw), b * np.sin(self.freq_xi * xi_n)], axis=-1)
        dxi = self.amp_px * np.stack([zero, b * self.freq_xi * np.cos(self.freq_xi * xi_n)], axis=-1)
        dw = self.amp_px * np.stack([a * self.freq_w * np.cos(aw), zero], axis=-1)
        return value, dxi, dw
