"""The residual field's reduced-rank basis (astrocal.field.residual) against the exact
Matérn-5/2 covariance, projected on the complement of the polynomials by quadrature."""
import numpy as np
import pytest
from scipy.integrate import quad

from astrocal.field.basis import terms
from astrocal.field.core import design_matrix
from astrocal.field.residual import ResidualBasis, matern52, matern52_spectral_density

DOMAIN = (-0.5, 2047.5, -0.5, 2047.5)


@pytest.mark.parametrize("length", [0.3, 2.0, 100.0])
def test_spectral_density_is_normalised(length):
    v, _ = quad(lambda w: matern52_spectral_density(w, 1.7, length) * w, 0, np.inf, limit=500)
    assert v / (2 * np.pi) == pytest.approx(1.7**2, rel=1e-8)


def _quadrature(n=48):
    t, w = np.polynomial.legendre.leggauss(n)
    q = 1023.5 + 1024 * t
    qx, qy = (a.ravel() for a in np.meshgrid(q, q, indexing="ij"))
    return qx, qy, np.outer(w, w).ravel()


def test_basis_is_orthogonal_to_the_polynomials():
    b = ResidualBasis(DOMAIN, degree=4, m=8)
    qx, qy, qw = _quadrature(80)
    B = design_matrix(qx, qy, 4, DOMAIN)
    raw = np.abs((B * qw[:, None]).T @ b.raw_design(qx, qy)).max()
    assert raw > 1e-4  # the eigenfunctions themselves have polynomial parts
    assert np.abs((B * qw[:, None]).T @ b.design(qx, qy)).max() < 1e-12 * raw * 1e4
    assert b.design(np.zeros(3), np.zeros(3)).shape == (3, 64) and b.size == 64


def _exact_projected(deg, length, x, y):
    """Matérn-5/2 covariance with the L2 projection on the polynomials of degree <= deg
    removed from both sides (quadrature over the detector)."""
    qx, qy, qw = _quadrature()
    ii, jj = np.array(terms(deg)).T
    norms = (2 / (2 * ii + 1)) * (2 / (2 * jj + 1))
    Bq, Bx = design_matrix(qx, qy, deg, DOMAIN), design_matrix(x, y, deg, DOMAIN)
    kxx = matern52(np.hypot(x[:, None] - x[None], y[:, None] - y[None]), 1.0, length)
    kxq = matern52(np.hypot(x[:, None] - qx[None], y[:, None] - qy[None]), 1.0, length)
    kqq = matern52(np.hypot(qx[:, None] - qx[None], qy[:, None] - qy[None]), 1.0, length)
    cx = (kxq * qw) @ Bq / norms
    mm = (Bq * qw[:, None]).T @ kqq @ (Bq * qw[:, None]) / np.outer(norms, norms)
    return kxx - cx @ Bx.T - Bx @ cx.T + Bx @ mm @ Bx.T


@pytest.mark.parametrize("deg", [3, 5])
@pytest.mark.parametrize("length", [300.0, 800.0, 3000.0])
def test_projected_covariance_matches_the_matern(deg, length):
    """m = 8 functions per dimension, boundary 1.5: the residual's prior covariance is the
    projected Matérn-5/2 to under 10 per cent (2-8 % measured) (rms over pairs of 80 random pixels, relative to
    the rms variance), from correlation lengths of 15 % of the detector to 1.5 detectors."""
    rng = np.random.default_rng(2)
    x, y = rng.uniform(0, 2047, 80), rng.uniform(0, 2047, 80)
    exact = _exact_projected(deg, length, x, y)
    approx = ResidualBasis(DOMAIN, deg, m=8).covariance(x, y, x, y, 1.0, length)
    rel = np.sqrt(np.mean((approx - exact) ** 2)) / np.sqrt(np.mean(np.diag(exact) ** 2))
    assert rel < 0.1, rel


def test_prior_sd_broadcasts_and_bad_settings():
    b = ResidualBasis(DOMAIN, 3, m=6)
    s = b.prior_sd(np.array([1.0, 2.0]), np.array([500.0, 500.0]))
    assert s.shape == (2, 36) and np.allclose(s[1], 2 * s[0])
    assert b.prior_sd(1.0, 500.0).shape == (36,)
    assert b.min_length == pytest.approx(3.42 * 1.5 * 1024 / 6)
    with pytest.raises(ValueError, match="m >= 1"):
        ResidualBasis(DOMAIN, 3, m=0)
    with pytest.raises(ValueError, match="boundary"):
        ResidualBasis(DOMAIN, 3, boundary=1.0)


@pytest.mark.parametrize("m,boundary", [(8, 1.5), (16, 1.2)])
@pytest.mark.parametrize("length", [60.0, 300.0, 1500.0])
def test_spectral_tail_is_the_matern_variance_beyond_the_band(m, boundary, length):
    """The tail's closed form is the integral of the spectral density beyond the band
    radius; it is a small part of sigma**2 for lengths well above the basis's resolution
    and most of it well below."""
    b = ResidualBasis(DOMAIN, 3, m=m, boundary=boundary)
    r = b.band_radius()
    lx, ly = b.box
    assert r**2 == pytest.approx(4 / np.pi * (np.pi * (m + 0.5)) ** 2 / (4 * lx * ly))
    v, _ = quad(lambda w: matern52_spectral_density(w, 1.3, length) * w / (2 * np.pi), r, np.inf, limit=500)
    assert b.tail_variance(1.3, length) == pytest.approx(v, rel=1e-8)
    frac = b.tail_variance(1.0, length)
    if length > 2 * b.min_length:
        assert frac < 0.01
    if length < 0.3 * b.min_length:
        assert frac > 0.3
    # per the resolved rms: the Matérn amplitude that gives that rms over the detector
    assert b.tail_variance_for_rms(2.0, length) == pytest.approx(
        b.tail_variance(2.0 / b.rms_per_sigma(length), length))
    assert b.tail_variance_for_rms(np.array([1.0, 2.0]), np.array([length, length])).shape == (2,)


def _exact_projected_ard(deg, lx, ly, x, y):
    """:func:`_exact_projected` for the anisotropic Matérn-5/2: distances scaled per axis."""
    qx, qy, qw = _quadrature()
    ii, jj = np.array(terms(deg)).T
    norms = (2 / (2 * ii + 1)) * (2 / (2 * jj + 1))
    Bq, Bx = design_matrix(qx, qy, deg, DOMAIN), design_matrix(x, y, deg, DOMAIN)
    k = lambda ax, ay, bx, by: matern52(np.hypot((ax[:, None] - bx[None]) / lx, (ay[:, None] - by[None]) / ly), 1.0, 1.0)
    kxx, kxq, kqq = k(x, y, x, y), k(x, y, qx, qy), k(qx, qy, qx, qy)
    cx = (kxq * qw) @ Bq / norms
    mm = (Bq * qw[:, None]).T @ kqq @ (Bq * qw[:, None]) / np.outer(norms, norms)
    return kxx - cx @ Bx.T - Bx @ cx.T + Bx @ mm @ Bx.T


@pytest.mark.parametrize("lx, ly", [(800.0, 1600.0), (1200.0, 600.0)])
def test_anisotropic_covariance_matches_the_matern(lx, ly):
    """One correlation length per axis (``length_y``): the basis's prior covariance is the
    projected anisotropic Matérn-5/2 (distances scaled by ``l_x``, ``l_y``) to under 10 per
    cent (8 % measured; like the isotropic one, the box's boundary limits the accuracy at
    lengths beyond the detector's half-size); with equal lengths it is the isotropic prior
    exactly; the tail uses ``l_x l_y`` for ``l**2``."""
    b = ResidualBasis(DOMAIN, degree=3, m=8, boundary=1.5)
    rng = np.random.default_rng(3)
    x, y = rng.uniform(0, 2047, 80), rng.uniform(0, 2047, 80)
    exact = _exact_projected_ard(3, lx, ly, x, y)
    approx = b.covariance(x, y, x, y, 1.0, lx, length_y=ly)
    assert np.sqrt(np.mean((approx - exact) ** 2)) < 0.1 * np.sqrt(np.mean(np.diag(exact) ** 2))
    # the isotropic covariance is the wrong one here
    iso = b.covariance(x, y, x, y, 1.0, np.sqrt(lx * ly))
    assert np.sqrt(np.mean((iso - exact) ** 2)) > 2 * np.sqrt(np.mean((approx - exact) ** 2))
    assert np.allclose(b.prior_sd(1.3, 700.0, 700.0), b.prior_sd(1.3, 700.0), rtol=1e-12)
    assert b.rms_per_sigma(700.0, 700.0) == pytest.approx(b.rms_per_sigma(700.0), rel=1e-12)
    assert b.tail_variance(1.3, lx, ly) == pytest.approx(b.tail_variance(1.3, np.sqrt(lx * ly)), rel=1e-12)
    assert b.prior_sd_for_rms(np.r_[1.0, 2.0], np.r_[lx, lx], np.r_[ly, ly]).shape == (2, b.size)
    assert b.rms_per_sigma(np.r_[lx, ly], np.r_[ly, lx]).shape == (2,)
    wx, wy = b.axis_frequencies()
    assert np.allclose(np.hypot(wx, wy), b.frequencies())
