"""The as-built LMS geometry: (slice, xi, lam) <-> (detector, col, row), and its design matrix.

:class:`LmsGeometry` combines the optical model (:mod:`astrocal.lms.nominal`, one direction the
truth), the mosaic (:mod:`astrocal.lms.mosaic`) and the as-built deviations
(:mod:`astrocal.lms.deviations`). The **forward** direction is the model's definition:

    (col, row) = nominal(s, xi, lam) + D(s, xi, lam) @ params       (exactly linear in params)

(plus, for a simulated instrument only, a per-slice term no parameter holds, :class:`SliceWaves`)

and :meth:`LmsGeometry.inverse` solves it by Newton iteration to 1e-6 px. Conventions: slice
numbers 1..28 (slice 1 at the most negative focal-plane y), xi along the slice [arcsec], lam [um],
detectors 1..4 and 0-based pixel-centre (col, row) on each chip (ScopeSim's "D" WCS).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from numpy.typing import ArrayLike
from scipy import sparse

from .deviations import DeviationLayout, SliceWaves
from .errors import OffDetectorError, OffSliceError, WavelengthRangeError
from .mosaic import Mosaic, load_mosaic, placement_design
from .nominal import NominalMap, newton_solve
from .slicer import check_slice_numbers
from .traces import N_SLICES, SLICE_HALF_LENGTH_ARCSEC, SettingLike, evaluate_inverse

__all__ = ["DetectorPoints", "SlicePoints", "LmsGeometry"]

_XI_TOL = 1e-6          # arcsec slack on the slice ends (1e-4 px; above the inverse's tolerance)
_PIX_TOL = 1e-6         # px, convergence of the inverse
_EDGE_SLACK = 1e-5      # px: a chip edge position found by the inverse maps forward onto the chip


@dataclass(frozen=True)
class DetectorPoints:
    """Points on the mosaic: ``det`` 1..4 (0 = none), 0-based pixel centres ``col``, ``row`` (NaN if none)."""

    det: np.ndarray
    col: np.ndarray
    row: np.ndarray


@dataclass(frozen=True)
class SlicePoints:
    """Points in the slicer: ``slice`` 1..28 (0 = none), ``xi`` [arcsec], ``lam`` [um] (NaN if none)."""

    slice: np.ndarray
    xi: np.ndarray
    lam: np.ndarray


def _flat(*arrays, dtypes):
    out = np.broadcast_arrays(*[np.atleast_1d(np.asarray(a)) for a in arrays])
    return [np.ravel(a).astype(t) for a, t in zip(out, dtypes)]


@dataclass(frozen=True, eq=False)
class LmsGeometry:
    """The as-built LMS map for the settings of one data set.

    Parameters
    ----------
    layout : DeviationLayout
        The settings and the deviation parameters that exist.
    params : ndarray, shape (layout.n_params,), optional
        Deviation values (default: all zero = the optical model).
    truth : {"forward", "inverse"}
        Which optical-model polynomials are exact (see :mod:`astrocal.lms.nominal`).
    waves : SliceWaves, optional
        A per-slice deviation beyond the model's parameters (simulated instruments only: the
        fit's geometries have none), added to every position; :meth:`design_matrix` is unchanged.

    Notes
    -----
    ``setting`` arguments accept an index into ``layout.settings``, an
    :class:`~astrocal.lms.traces.EchelleSetting` or its central wavelength [um].
    """

    layout: DeviationLayout
    params: np.ndarray | None = None
    truth: str = "forward"
    waves: SliceWaves | None = None

    def __post_init__(self):
        p = self.layout.zeros() if self.params is None else np.array(self.params, float)
        if p.shape != (self.layout.n_params,) or not np.all(np.isfinite(p)):
            raise ValueError(f"params must be {self.layout.n_params} finite numbers, got shape {p.shape}")
        p.setflags(write=False)
        object.__setattr__(self, "params", p)
        for s in self.layout.settings:
            NominalMap(s, self.truth)          # validates truth

    def with_params(self, params: ArrayLike) -> LmsGeometry:
        """The same model with other deviation values (sharing the cached optical model).

        Parameters
        ----------
        params : array_like, shape (layout.n_params,)
            Deviation values.

        Returns
        -------
        LmsGeometry
        """
        out = LmsGeometry(self.layout, params, self.truth, self.waves)
        object.__setattr__(out, "_nominal_maps", self._nominal_maps)
        return out

    @cached_property
    def mosaic(self) -> Mosaic:
        """The nominal chip layout (:func:`~astrocal.lms.mosaic.load_mosaic`)."""
        return load_mosaic()

    @cached_property
    def _nominal_maps(self) -> tuple:
        """One :class:`NominalMap` per setting, built once (its wavelength range and centre
        lines are cached on it)."""
        return tuple(NominalMap(s, self.truth) for s in self.layout.settings)

    def nominal(self, setting: SettingLike) -> NominalMap:
        """The optical model of a setting (the same object on every call).

        Parameters
        ----------
        setting : int, float or EchelleSetting
            The echelle setting (index into ``layout.settings``, central wavelength [um] or the
            setting).

        Returns
        -------
        NominalMap
        """
        return self._nominal_maps[self.layout.setting_index(setting)]

    def wavelength_range(self, setting: SettingLike) -> tuple[float, float]:
        """The setting's wavelength range [um] (:attr:`NominalMap.wavelength_range`).

        Parameters
        ----------
        setting : int, float or EchelleSetting
            The echelle setting (index into ``layout.settings``, central wavelength [um] or the
            setting).

        Returns
        -------
        lo, hi : float
            [um].
        """
        return self.nominal(setting).wavelength_range

    def _w(self, setting, lam):
        lo, hi = self.wavelength_range(setting)
        return (2.0 * lam - (lo + hi)) / (hi - lo), 2.0 / (hi - lo)

    # -- the forward model ---------------------------------------------------------------------
    def _parts(self, s, xi, lam, e):
        """Nominal focal-plane px, the per-point deviation pieces, and their derivatives."""
        nom = self.nominal(e)
        pix = self.mosaic.pixel_mm
        f = nom.forward(s - 1, xi, lam)
        fp_px = f.value / pix                                       # (N, 2)
        w, dw_dlam = self._w(e, lam)
        basis, dbx, dbw = self.layout.slice_basis(xi / SLICE_HALF_LENGTH_ARCSEC, w)
        coef = self.layout.slice_coefficients(self.params)[s - 1]   # (N, 2, T)
        shift_cols = self.layout.setting_columns(self.layout.setting_index(e))
        dx, dy, dth = self.params[shift_cols]
        corr = np.einsum("nkt,nt->nk", coef, basis) + np.array([dx, dy]) + dth * f.dtheta / pix
        jac = f.jacobian / pix
        dxi_n = np.einsum("nkt,nt->nk", coef, dbx)
        dw = np.einsum("nkt,nt->nk", coef, dbw)
        if self.waves is not None:
            wv, wx, ww = self.waves(s, xi / SLICE_HALF_LENGTH_ARCSEC, w)
            corr, dxi_n, dw = corr + wv, dxi_n + wx, dw + ww
        jac = jac + np.stack([dxi_n / SLICE_HALF_LENGTH_ARCSEC, dw * dw_dlam], axis=-1)
        return fp_px, corr, jac, basis, f.dtheta / pix

    def _chip(self, fp_px, corr, det):
        """(col, row) on chip ``det`` (array) of focal-plane px plus corrections, and nominal (col0, row0)."""
        i = self.mosaic.index(det)
        ccol, crow = self.mosaic.centre_px
        col0 = fp_px[:, 0] - self.mosaic.x_cen_mm[i] / self.mosaic.pixel_mm + ccol
        row0 = fp_px[:, 1] - self.mosaic.y_cen_mm[i] / self.mosaic.pixel_mm + crow
        cols = self.layout.placement_columns(det)                  # (N, 3), -1 = reference
        pp = np.where(cols >= 0, self.params[np.maximum(cols, 0)], 0.0)
        place = np.einsum("nkj,nj->nk", placement_design(col0, row0, (ccol, crow)), pp)
        return col0 + corr[:, 0] + place[:, 0], row0 + corr[:, 1] + place[:, 1], col0, row0

    def _validate(self, slice_number, xi, lam, setting):
        s, xi, lam = _flat(slice_number, xi, lam, dtypes=(np.asarray(slice_number).dtype, float, float))
        s = check_slice_numbers(s)
        e = self.layout.setting_index(setting)
        bad = ~np.isfinite(xi) | (np.abs(xi) > SLICE_HALF_LENGTH_ARCSEC + _XI_TOL)
        if bad.any():
            raise OffSliceError(f"xi must be within +-{SLICE_HALF_LENGTH_ARCSEC} arcsec (the slice length); "
                                f"{bad.sum()} point(s) are not, first index {int(np.argmax(bad))}: {xi[bad][0]}")
        lo, hi = self.wavelength_range(e)
        bad = ~np.isfinite(lam) | (lam < lo) | (lam > hi)
        if bad.any():
            st = self.layout.settings[e]
            raise WavelengthRangeError(
                f"wavelength outside the range {lo:.5f}..{hi:.5f} um of setting lam_c={st.lam_c_um} um "
                f"(order {st.order}): {bad.sum()} point(s), first index {int(np.argmax(bad))}: {lam[bad][0]}")
        return s, xi, lam, e

    def forward(self, slice_number: ArrayLike, xi: ArrayLike, lam: ArrayLike, setting: SettingLike = 0,
                on_gap: str = "raise") -> DetectorPoints:
        """(slice 1..28, xi [arcsec], lam [um]) at a setting -> detector points.

        Parameters
        ----------
        slice_number, xi, lam : array_like
            Slice 1..28, position along the slice [arcsec], wavelength [um].
        setting : int, float or EchelleSetting
            The echelle setting (index into ``layout.settings``, central wavelength [um] or the
            setting).
        on_gap : {"raise", "mask"}
            Points that land on no chip raise :class:`OffDetectorError`, or get det 0 and NaN.

        Returns
        -------
        DetectorPoints
            ``det`` 1..4 and 0-based pixel-centre ``col``, ``row`` [px].

        Raises
        ------
        SliceNumberError, OffSliceError (``|xi|`` beyond the slice end), WavelengthRangeError,
        EchelleSettingError, OffDetectorError
        """
        if on_gap not in ("raise", "mask"):
            raise ValueError(f"on_gap must be 'raise' or 'mask', got {on_gap!r}")
        s, xi, lam, e = self._validate(slice_number, xi, lam, setting)
        fp_px, corr, *_ = self._parts(s, xi, lam, e)
        det = np.zeros(len(s), int)
        col = np.full(len(s), np.nan)
        row = np.full(len(s), np.nan)
        for d in self.mosaic.det_ids:
            c, r, _, _ = self._chip(fp_px, corr, np.full(len(s), d))
            hit = self.mosaic.on_chip(c, r, _EDGE_SLACK) & (det == 0)
            det[hit], col[hit], row[hit] = d, c[hit], r[hit]
        if on_gap == "raise" and np.any(det == 0):
            k = int(np.argmax(det == 0))
            raise OffDetectorError(f"{int(np.sum(det == 0))} point(s) fall on no detector (gap or off the mosaic), "
                                   f"first index {k}: slice {s[k]}, xi {xi[k]}, lam {lam[k]}")
        return DetectorPoints(det, col, row)

    def chip_position(self, slice_number: ArrayLike, xi: ArrayLike, lam: ArrayLike, setting: SettingLike,
                      det: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(col, row) on given chips, with no bounds check, and d(col, row)/d(xi, lam).

        For points whose chip is known (a measured trace, a spot), also just off the chip or
        the slice end. The placement's rotation is applied to the derivatives only through the
        positions (its effect on them is below 1e-3 relative).

        Parameters
        ----------
        slice_number, xi, lam : array_like
            Slice 1..28, position along the slice [arcsec], wavelength [um].
        setting : int, float or EchelleSetting
            The echelle setting (index into ``layout.settings``, central wavelength [um] or the
            setting).
        det : array_like of int
            (N,) chips 1..4.

        Returns
        -------
        col, row : ndarray (N,)
            [px].
        jac : ndarray (N, 2, 2)
            [px/arcsec, px/um].
        """
        s, xi, lam = _flat(slice_number, xi, lam, dtypes=(np.asarray(slice_number).dtype, float, float))
        s = check_slice_numbers(s)
        e = self.layout.setting_index(setting)
        fp_px, corr, jac, _, _ = self._parts(s, xi, lam, e)
        col, row, _, _ = self._chip(fp_px, corr, np.broadcast_to(np.asarray(det, int), s.shape))
        return col, row, jac

    def design_matrix(self, slice_number: ArrayLike, xi: ArrayLike, lam: ArrayLike, setting: SettingLike = 0,
                      det: ArrayLike | None = None) -> np.ndarray:
        """d(col, row) / d(params) at the given points.

        Exact: the model is linear in ``params``.

        Parameters
        ----------
        slice_number, xi, lam : array_like
            Slice 1..28, position along the slice [arcsec], wavelength [um].
        setting : int, float or EchelleSetting
            The echelle setting (index into ``layout.settings``, central wavelength [um] or the
            setting).
        det : array_like of int, optional
            (N,) the chip of each point (default: where :meth:`forward` puts it; points on no
            chip raise OffDetectorError).

        Returns
        -------
        ndarray (N, 2, P)
            [px per parameter unit].
        """
        s, xi, lam, e = self._validate(slice_number, xi, lam, setting)
        if det is None:
            det = self.forward(s, xi, lam, e).det
        point, axis, column, value = self._design_entries(s, xi, lam, e, det)
        out = np.zeros((len(s), 2, self.layout.n_params))
        out[point, axis, column] = value
        return out

    def design_sparse(self, slice_number: ArrayLike, xi: ArrayLike, lam: ArrayLike, setting: SettingLike = 0,
                      det: ArrayLike | None = None) -> tuple[sparse.csr_matrix, sparse.csr_matrix]:
        """d(col)/d(params) and d(row)/d(params) as sparse matrices.

        The entries of :meth:`design_matrix` (a point involves its slice's coefficients, the
        shared mean, its chip's placement and its setting's shift: ~100 of the ~2400
        parameters with a residual of 6 x 6 functions), the same values.

        Parameters
        ----------
        slice_number, xi, lam : array_like
            Slice 1..28, position along the slice [arcsec], wavelength [um].
        setting : int, float or EchelleSetting
            The echelle setting (index into ``layout.settings``, central wavelength [um] or the
            setting).
        det : array_like of int, optional
            (N,) the chip of each point (default: where :meth:`forward` puts it).

        Returns
        -------
        d_col, d_row : scipy.sparse.csr_matrix (N, P)
            [px per parameter unit].
        """
        s, xi, lam, e = self._validate(slice_number, xi, lam, setting)
        if det is None:
            det = self.forward(s, xi, lam, e).det
        point, axis, column, value = self._design_entries(s, xi, lam, e, det)
        shape = (len(s), self.layout.n_params)
        return tuple(sparse.csr_matrix((value[axis == k], (point[axis == k], column[axis == k])), shape=shape)
                     for k in (0, 1))

    def _design_entries(self, s, xi, lam, e, det):
        """The entries of d(col, row)/d(params) of validated points: (point, axis, column, value),
        flat arrays, each (point, axis, column) once."""
        det = np.broadcast_to(np.asarray(det, int), s.shape)
        fp_px, corr, _, basis, dtheta_px = self._parts(s, xi, lam, e)
        _, _, col0, row0 = self._chip(fp_px, corr, det)
        n, lay = len(s), self.layout
        rows = np.arange(n)
        mc = lay.mean_columns()
        sc = lay.slice_columns(s)
        parts = []                                                  # (point, axis, column, value)
        for k in range(2):
            parts.append((np.repeat(rows, mc.shape[1]), k, np.tile(mc[k], n), basis[:, 1:lay.n_terms].ravel()))
            parts.append((np.repeat(rows, sc.shape[2]), k, sc[:, k, :].ravel(), basis.ravel()))
        pc = lay.placement_columns(det)
        pd = placement_design(col0, row0, self.mosaic.centre_px)
        has = pc[:, 0] >= 0
        for j in range(3):
            for k in range(2):
                parts.append((rows[has], k, pc[has, j], pd[has, k, j]))
        st = lay.setting_columns(e)
        parts += [(rows, 0, st[0], 1.0), (rows, 1, st[1], 1.0),
                  (rows, 0, st[2], dtheta_px[:, 0]), (rows, 1, st[2], dtheta_px[:, 1])]
        point = np.concatenate([p for p, _, _, _ in parts])
        axis = np.concatenate([np.full(len(p), k) for p, k, _, _ in parts])
        column = np.concatenate([np.broadcast_to(c, p.shape) for p, _, c, _ in parts])
        value = np.concatenate([np.broadcast_to(np.asarray(v, float), p.shape) for p, _, _, v in parts])
        return point, axis, column, value

    # -- the inverse -----------------------------------------------------------------------------
    def _candidate_slices(self, det, col, row, e):
        """Slice indices 0..27 of each point, nearest first: ordered by the distance in y from the
        slices' nominal centre lines at the point's x; also the nominal focal-plane (x, y) [mm]."""
        x, y = self.mosaic.chip_to_fp(det, col, row)
        cx, cy = self.nominal(e).centre_lines
        dist = np.stack([np.abs(y - np.interp(x, cx[k], cy[k])) for k in range(N_SLICES)], axis=1)
        return np.argsort(dist, axis=1), x, y

    def _solve(self, s, det, col, row, e, start):
        """Newton on (xi, lam) for known slice and chip; returns (N, 2) and convergence flag."""
        target = np.stack([col, row], axis=1)

        def func(args, idx):
            fp_px, corr, jac, _, _ = self._parts(s[idx], args[:, 0], args[:, 1], e)
            c, r, _, _ = self._chip(fp_px, corr, det[idx])
            return np.stack([c, r], axis=1), jac

        return newton_solve(func, target, start, _PIX_TOL, what="LMS inverse")

    def inverse(self, det: ArrayLike, col: ArrayLike, row: ArrayLike, setting: SettingLike = 0,
                slice_number: ArrayLike | None = None, on_miss: str = "raise") -> SlicePoints:
        """Detector points -> (slice 1..28, xi [arcsec], lam [um]) at a setting.

        Parameters
        ----------
        det, col, row : array_like
            Chip 1..4 and 0-based pixel-centre coordinates.
        setting : int, float or EchelleSetting
            The echelle setting (index into ``layout.settings``, central wavelength [um] or the
            setting).
        slice_number : array_like, optional
            The slice of each point if known; otherwise the slice whose image holds the point.
        on_miss : {"raise", "mask"}
            Points on no slice image raise :class:`OffSliceError`, or get slice 0 and NaN.

        Returns
        -------
        SlicePoints
            ``slice`` 1..28 (0 with ``on_miss="mask"``: none), ``xi`` [arcsec], ``lam`` [um].

        Raises
        ------
        OffDetectorError (det not 1..4 or position off the chip), OffSliceError, SliceNumberError,
        EchelleSettingError, InversionError
        """
        if on_miss not in ("raise", "mask"):
            raise ValueError(f"on_miss must be 'raise' or 'mask', got {on_miss!r}")
        det, col, row = _flat(det, col, row, dtypes=(np.asarray(det).dtype, float, float))
        self.mosaic.index(det)
        off = ~self.mosaic.on_chip(col, row) | ~np.isfinite(col) | ~np.isfinite(row)
        if off.any():
            k = int(np.argmax(off))
            raise OffDetectorError(f"{int(off.sum())} position(s) off the chip area -0.5..2047.5, "
                                   f"first index {k}: DET{det[k]} ({col[k]}, {row[k]})")
        det = det.astype(int)
        e = self.layout.setting_index(setting)
        n = len(det)
        x, y = self.mosaic.chip_to_fp(det, col, row)
        if slice_number is not None:
            cands = [check_slice_numbers(np.broadcast_to(np.ravel(slice_number), (n,))) - 1]
        else:
            order, x, y = self._candidate_slices(det, col, row, e)
            cands = [order[:, 0], order[:, 1]]
        result = np.full((n, 2), np.nan)
        found = np.zeros(n, int)
        todo = np.arange(n)
        for cand in cands:
            if todo.size == 0:
                break
            sl = cand[todo]
            start = evaluate_inverse(self.nominal(e).matrices, sl, x[todo], y[todo]).value
            sol = self._solve(sl + 1, det[todo], col[todo], row[todo], e, start)
            ok = np.abs(sol[:, 0]) <= SLICE_HALF_LENGTH_ARCSEC + _XI_TOL
            result[todo[ok]] = sol[ok]
            found[todo[ok]] = sl[ok] + 1
            todo = todo[~ok]
        if todo.size and on_miss == "raise":
            k = int(todo[0])
            raise OffSliceError(f"{todo.size} position(s) lie on no slice image (between slices or beyond a "
                                f"slice end), first index {k}: DET{det[k]} ({col[k]}, {row[k]})")
        return SlicePoints(found, result[:, 0], result[:, 1])
