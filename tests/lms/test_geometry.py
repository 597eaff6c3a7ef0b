"""The as-built LMS geometry: round trips, design matrix, placement and setting shifts, bad input."""
from __future__ import annotations

import numpy as np
import pytest

from astrocal.lms import (DeviationLayout, EchelleSettingError, Hyperparameters, LmsGeometry, OffDetectorError,
                          OffSliceError, SliceNumberError, WavelengthRangeError, echelle_setting)
from astrocal.lms.errors import LmsGeometryError

SETTINGS = tuple(echelle_setting(lc) for lc in (2.70, 2.95, 3.39, 3.555, 4.2, 4.73, 5.26, 5.30))
PX_UM = 1.2e-5          # ~ dispersion per px at 3.4 um; a conservative lambda tolerance unit


def _layout(settings=SETTINGS, **kw):
    return DeviationLayout(settings, **kw)


def _random_params(layout, scale=0.5, seed=1):
    rng = np.random.default_rng(seed)
    return rng.normal(size=layout.n_params) * layout.prior_sigma() * scale


def _grid(geo, e, n_xi=7, n_lam=25):
    lo, hi = geo.wavelength_range(e)
    s = np.repeat(np.arange(1, 29), n_xi * n_lam)
    xi = np.tile(np.repeat(np.linspace(-0.4485, 0.4485, n_xi), n_lam), 28)
    lam = np.tile(np.linspace(lo, hi, n_lam), 28 * n_xi)
    return s, xi, lam


@pytest.mark.parametrize("truth", ["forward", "inverse"])
@pytest.mark.parametrize("deviations", [False, True])
def test_inverse_of_forward_every_slice_and_setting(truth, deviations):
    lay = _layout()
    geo = LmsGeometry(lay, _random_params(lay) if deviations else None, truth)
    for e in range(len(SETTINGS)):
        s, xi, lam = _grid(geo, e)
        d = geo.forward(s, xi, lam, e, on_gap="mask")
        on = d.det > 0
        assert on.mean() > 0.85            # only the chip gaps are lost
        b = geo.inverse(d.det[on], d.col[on], d.row[on], e)
        assert np.array_equal(b.slice, s[on])
        # back in pixels: local scales 8.2 mas/px along the slice, PX_UM along the dispersion
        assert np.abs(b.xi - xi[on]).max() < 1e-3 * 0.0082
        assert np.abs(b.lam - lam[on]).max() < 1e-3 * PX_UM
        d2 = geo.forward(b.slice, b.xi, b.lam, e)
        assert np.abs(d2.col - d.col[on]).max() < 1e-3 and np.abs(d2.row - d.row[on]).max() < 1e-3


@pytest.mark.parametrize("truth", ["forward", "inverse"])
def test_forward_of_inverse_over_the_detector_area(truth):
    lay = _layout()
    geo = LmsGeometry(lay, _random_params(lay, seed=2), truth)
    g = np.linspace(-0.5, 2047.5, 41)
    col, row = (a.ravel() for a in np.meshgrid(g, g))
    for e in range(len(SETTINGS)):
        det = np.repeat([1, 2, 3, 4], col.size)
        c, r = np.tile(col, 4), np.tile(row, 4)
        b = geo.inverse(det, c, r, e, on_miss="mask")
        hit = b.slice > 0
        assert 0.6 < hit.mean() < 0.98            # slice images cover most of the chips, not the gaps between them
        assert np.all(np.abs(b.xi[hit]) <= 0.4485 + 1e-6)
        d = geo.forward(b.slice[hit], b.xi[hit], b.lam[hit], e)
        assert np.array_equal(d.det, det[hit])
        assert np.abs(d.col - c[hit]).max() < 1e-3 and np.abs(d.row - r[hit]).max() < 1e-3


def test_inverse_with_known_slice_matches():
    geo = LmsGeometry(_layout(SETTINGS[3:4]))
    s, xi, lam = _grid(geo, 0, 3, 9)
    d = geo.forward(s, xi, lam, on_gap="mask")
    on = d.det > 0
    b = geo.inverse(d.det[on], d.col[on], d.row[on], slice_number=s[on])
    assert np.abs(b.xi - xi[on]).max() < 1e-8 and np.abs(b.lam - lam[on]).max() < 1e-9
    with pytest.raises(OffSliceError):                # the wrong slice: the point is beyond its ends
        geo.inverse(d.det[on][:5], d.col[on][:5], d.row[on][:5], slice_number=np.clip(s[on][:5] + 2, 1, 28))


@pytest.mark.parametrize("residual_m", [0, 3])
def test_design_matrix_by_finite_differences(residual_m):
    lay = _layout(SETTINGS[1:4], residual_m=residual_m)
    p0 = _random_params(lay, seed=3)
    if residual_m:                                   # residual coefficients large enough to matter
        p0[lay.slice_columns(np.arange(1, 29))[:, :, lay.n_terms:]] *= 20
    geo = LmsGeometry(lay, p0)
    rng = np.random.default_rng(4)
    e = 2
    lo, hi = geo.wavelength_range(e)
    n = 300
    s, xi, lam = rng.integers(1, 29, n), rng.uniform(-0.44, 0.44, n), rng.uniform(lo, hi, n)
    d0 = geo.forward(s, xi, lam, e, on_gap="mask")
    on = d0.det > 0
    s, xi, lam = s[on], xi[on], lam[on]
    d0 = geo.forward(s, xi, lam, e)
    D = geo.design_matrix(s, xi, lam, e)
    assert D.shape == (on.sum(), 2, lay.n_params)
    used = np.flatnonzero(np.abs(D).max(axis=(0, 1)) > 0)
    # every column that can act at this setting does: all but the other settings' shifts
    other = np.r_[lay.setting_columns(0), lay.setting_columns(1)]
    assert set(used) == set(range(lay.n_params)) - set(other)
    sig = lay.prior_sigma()
    for k in used:
        h = 1e-3 * sig[k]
        p = p0.copy()
        p[k] += h
        d1 = LmsGeometry(lay, p).forward(s, xi, lam, e, on_gap="mask")
        same = d1.det == d0.det
        fd = np.stack([d1.col - d0.col, d1.row - d0.row], axis=1)[same] / h
        assert np.allclose(fd, D[same, :, k], rtol=1e-6, atol=1e-6 * np.abs(D[:, :, k]).max()), lay.names[k]
    # the model is linear: a big step equals D @ dp
    dp = _random_params(lay, seed=5)
    d2 = LmsGeometry(lay, p0 + dp).forward(s, xi, lam, e, on_gap="mask")
    same = d2.det == d0.det
    pred = np.einsum("nkp,p->nk", D, dp)
    got = np.stack([d2.col - d0.col, d2.row - d0.row], axis=1)
    assert np.abs(got[same] - pred[same]).max() < 1e-9


def test_detector_placement_moves_points_as_expected():
    lay = _layout(SETTINGS[3:4])
    geo = LmsGeometry(lay)
    s, xi, lam = _grid(geo, 0, 5, 15)
    d0 = geo.forward(s, xi, lam, on_gap="mask")
    names = list(lay.names)
    p = lay.zeros()
    p[names.index("DET3.dcol")] = 0.7
    p[names.index("DET3.drow")] = -0.4
    d1 = LmsGeometry(lay, p).forward(s, xi, lam, on_gap="mask")
    on3 = (d0.det == 3) & (d1.det == 3)
    assert on3.sum() > 100
    assert np.allclose(d1.col[on3] - d0.col[on3], 0.7) and np.allclose(d1.row[on3] - d0.row[on3], -0.4)
    other = (d0.det > 0) & (d0.det != 3)
    assert np.array_equal(d1.col[other], d0.col[other]) and np.array_equal(d1.row[other], d0.row[other])
    # a rotation about the chip centre: counter-clockwise, distances to the centre kept (to first order)
    p = lay.zeros()
    rot = 2e-4
    p[names.index("DET2.rot")] = rot
    d2 = LmsGeometry(lay, p).forward(s, xi, lam, on_gap="mask")
    on2 = (d0.det == 2) & (d2.det == 2)
    a0 = np.arctan2(d0.row[on2] - 1023.5, d0.col[on2] - 1023.5)
    a2 = np.arctan2(d2.row[on2] - 1023.5, d2.col[on2] - 1023.5)
    assert np.allclose(a2 - a0, rot, atol=1e-9)
    # the reference chip (DET1) has no placement parameters
    assert not any(n.startswith("DET1.") for n in names)
    assert any(n.startswith("DET1.") for n in _layout(SETTINGS[3:4], reference_detector=None).names)


def test_setting_shifts_move_only_their_setting():
    lay = _layout(SETTINGS[2:4])
    names = list(lay.names)
    p = lay.zeros()
    p[names.index("setting1.dx")] = 1.5
    p[names.index("setting1.dy")] = -0.25
    geo0, geo1 = LmsGeometry(lay), LmsGeometry(lay, p)
    for e, moved in ((0, False), (1, True)):
        s, xi, lam = _grid(geo0, e, 3, 11)
        a = geo0.forward(s, xi, lam, e, on_gap="mask")
        b = geo1.forward(s, xi, lam, e, on_gap="mask")
        on = (a.det > 0) & (a.det == b.det)
        if moved:
            assert np.allclose(b.col[on] - a.col[on], 1.5) and np.allclose(b.row[on] - a.row[on], -0.25)
        else:
            assert np.array_equal(a.col[on], b.col[on])
    # an echelle-angle offset moves lines along the dispersion (col) by ~ a pixel per millidegree
    p = lay.zeros()
    p[names.index("setting1.dtheta")] = 1e-3
    s, xi, lam = _grid(geo0, 1, 3, 11)
    a = geo0.forward(s, xi, lam, 1, on_gap="mask")
    b = LmsGeometry(lay, p).forward(s, xi, lam, 1, on_gap="mask")
    on = (a.det > 0) & (a.det == b.det)
    dcol, drow = b.col[on] - a.col[on], b.row[on] - a.row[on]
    assert 0.3 < np.abs(np.median(dcol)) < 10 and np.abs(drow).max() < 0.2 * np.abs(np.median(dcol))


def test_per_slice_corrections_and_hierarchical_prior():
    lay = _layout(SETTINGS[3:4], degree=2)
    assert lay.n_terms == 6
    assert lay.n_params == 2 * 5 + 28 * 2 * 6 + 3 * 3 + 3
    names = list(lay.names)
    p = lay.zeros()
    p[names.index("mean.row.P1(xi)P0(w)")] = 0.5        # all slices: row shift proportional to xi
    p[names.index("slice07.col.P0(xi)P0(w)")] = -0.3     # slice 7 only: col shift
    eff = lay.slice_coefficients(p)
    assert eff[6, 0, 0] == -0.3 and np.all(eff[:, 1, 1] == 0.5) and eff[5, 0, 0] == 0.0
    geo0, geo1 = LmsGeometry(lay), LmsGeometry(lay, p)
    s = np.array([7, 7, 8, 8])
    xi = np.array([0.4485, 0.0, 0.4485, 0.0])
    lam = np.full(4, 3.54)
    a, b = geo0.forward(s, xi, lam), geo1.forward(s, xi, lam)
    assert np.allclose(b.col - a.col, [-0.3, -0.3, 0, 0]) and np.allclose(b.row - a.row, [0.5, 0, 0.5, 0])
    sig = lay.prior_sigma(Hyperparameters(tau_px=0.05, sigma_mean_px=3.0))
    assert np.all(sig[lay.blocks["slices"]] == 0.05) and np.all(sig[lay.blocks["mean"]] == 3.0)
    assert sig.shape == (lay.n_params,) and np.all(sig > 0)


@pytest.mark.parametrize("slice_number", [0, 29, -1, 2.5])
def test_bad_slice_number(slice_number):
    geo = LmsGeometry(_layout(SETTINGS[3:4]))
    with pytest.raises(SliceNumberError):
        geo.forward(slice_number, 0.0, 3.55)


def test_bad_wavelength_and_xi_and_setting():
    geo = LmsGeometry(_layout(SETTINGS[3:4]))
    lo, hi = geo.wavelength_range(0)
    for lam in (lo - 1e-4, hi + 1e-4, 4.73, np.nan):
        with pytest.raises(WavelengthRangeError):
            geo.forward(5, 0.0, lam)
    with pytest.raises(OffSliceError):
        geo.forward(5, 0.45, 3.55)
    with pytest.raises(EchelleSettingError):
        geo.forward(5, 0.0, 3.55, setting=4.2)
    assert issubclass(WavelengthRangeError, LmsGeometryError) and issubclass(LmsGeometryError, ValueError)


def test_point_on_no_detector():
    geo = LmsGeometry(_layout(SETTINGS[3:4]))
    lo, hi = geo.wavelength_range(0)
    lam = np.linspace(lo, hi, 4001)
    d = geo.forward(np.full(lam.size, 10), 0.0, lam, on_gap="mask")
    gap = d.det == 0
    assert gap.any() and (~gap).any() and np.all(np.isnan(d.col[gap]))
    with pytest.raises(OffDetectorError, match="no detector"):
        geo.forward(10, 0.0, lam[gap][0])
    for det, col, row in ((0, 100.0, 100.0), (5, 100.0, 100.0), (1, -0.6, 100.0), (2, 100.0, 2047.6), (3, np.nan, 1.0)):
        with pytest.raises(OffDetectorError):
            geo.inverse(det, col, row)


def test_point_between_slices():
    geo = LmsGeometry(_layout(SETTINGS[3:4]))
    a = geo.forward([10, 11], [-0.4485, 0.4485], [3.54, 3.54])     # slice 10's top (+y) end, slice 11's bottom end
    assert a.det[0] == a.det[1]
    mid_row = 0.5 * (a.row[0] + a.row[1])
    with pytest.raises(OffSliceError, match="no slice"):
        geo.inverse(a.det[0], 0.5 * (a.col[0] + a.col[1]), mid_row)


def test_residual_beyond_the_polynomial():
    """The per-slice residual: its columns are named and placed in each slice's block, it holds no
    degree-<= n polynomial (orthogonal over the slice's square), its prior widths give the
    stated rms, and the Jacobian d(col, row)/d(xi, lam) includes it (finite differences)."""
    lay = _layout(SETTINGS[5:6], residual_m=4)
    assert lay.n_residual == 16 and lay.slice_width == lay.n_terms + 16
    assert lay.n_params == _layout(SETTINGS[5:6]).n_params + 28 * 2 * 16
    cols = lay.slice_columns([7])[0]
    assert [lay.names[c] for c in cols[:, lay.n_terms]] == ["slice07.col.R1_1", "slice07.row.R1_1"]
    assert len(set(cols.ravel())) == cols.size
    # orthogonal to the polynomials: Gauss-Legendre mean of (residual function x Legendre term) = 0
    t, wt = np.polynomial.legendre.leggauss(40)
    xx, ww = np.meshgrid(t, t, indexing="ij")
    v, _, _ = lay.slice_basis(xx.ravel(), ww.ravel())
    gram = (v[:, :lay.n_terms] * np.outer(wt, wt).ravel()[:, None]).T @ v[:, lay.n_terms:]
    assert np.abs(gram).max() < 1e-12
    # rms over the square of a draw from the prior, averaged over draws = residual_rms_px
    hyper = Hyperparameters(residual_rms_px=0.03, residual_length=1.2)
    sd = lay.residual_prior_sd(0.03, 1.2)
    ms = (np.outer(wt, wt).ravel() / 4) @ v[:, lay.n_terms:] ** 2
    assert np.sqrt(np.sum(sd**2 * ms)) == pytest.approx(0.03, rel=1e-9)
    assert np.allclose(lay.prior_sigma(hyper)[cols[:, lay.n_terms:]], sd[None, :])
    # with a length per dimension (ARD): the same for equal lengths, the stated rms for any, and the
    # variance where the length is short (many functions of xi, one of w: here xi)
    assert np.allclose(lay.residual_prior_sd_ard(0.03, 1.2, 1.2), sd, rtol=1e-12)
    for lx, lw in ((0.4, 3.0), (3.0, 0.4)):
        sa = lay.residual_prior_sd_ard(0.03, lx, lw)
        assert np.sqrt(np.sum(sa**2 * ms)) == pytest.approx(0.03, rel=1e-9)
        jx, jw = np.divmod(np.arange(lay.n_residual), lay.residual_m)    # basis order: xi slowest
        hi_xi, hi_w = (jx == 3) & (jw == 0), (jx == 0) & (jw == 3)
        assert (sa[hi_xi] > 10 * sa[hi_w]).all() if lx < lw else (sa[hi_w] > 10 * sa[hi_xi]).all()
    batch = lay.residual_prior_sd_ard([0.03, 0.01], [0.4, 1.2], [3.0, 1.2])
    assert batch.shape == (2, lay.n_residual) and np.allclose(batch[1], lay.residual_prior_sd(0.01, 1.2))
    # the Jacobian with a large residual, by finite differences in xi and lam
    p = np.zeros(lay.n_params)
    p[cols[:, lay.n_terms:]] = np.random.default_rng(2).normal(size=(2, 16)) * sd * 30
    geo = LmsGeometry(lay, p)
    lo, hi = geo.wavelength_range(0)
    s, xi, lam = np.full(6, 7), np.linspace(-0.4, 0.4, 6), np.r_[lo + np.array([0.005, 0.01, 0.02]),
                                                                 hi - np.array([0.02, 0.01, 0.005])]
    det = geo.forward(s, xi, lam, 0).det
    c0, r0, jac = geo.chip_position(s, xi, lam, 0, det)
    h = (1e-6, 1e-8)
    for k, (dx, dl) in enumerate(((h[0], 0.0), (0.0, h[1]))):
        c1, r1, _ = geo.chip_position(s, xi + dx, lam + dl, 0, det)
        fd = np.stack([c1 - c0, r1 - r0], axis=1) / (dx + dl)
        assert np.allclose(fd, jac[:, :, k], rtol=1e-5, atol=1e-3)
    # and the model with the residual zero is the model without one
    g0 = LmsGeometry(_layout(SETTINGS[5:6]))
    a = g0.forward(s, xi, lam, 0)
    b = LmsGeometry(lay).forward(s, xi, lam, 0)
    assert np.array_equal(a.col, b.col) and np.array_equal(a.row, b.row)
    with pytest.raises(ValueError, match="residual_m"):
        _layout(SETTINGS[5:6], residual_m=-1)
