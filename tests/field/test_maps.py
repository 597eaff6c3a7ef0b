"""Derived maps (astrocal.field.maps): local scale, rotation, skew, parity; affine and
non-linear parts."""
import numpy as np
import pytest

from astrocal.field import DistortionField, affine_part, basis, local_geometry, nonlinear_part
from astrocal.field import maps

DOMAIN = (-0.5, 2047.5, -0.5, 1023.5)


def linear(a, b, c, d, e=0.0, f=0.0, domain=DOMAIN, degree=1):
    """u = e + a x + b y, v = f + c x + d y (x, y in pixels, origin 0), stored at degree."""
    mx = np.zeros((degree + 1, degree + 1))
    my = np.zeros_like(mx)
    mx[0, 0], mx[1, 0], mx[0, 1] = e, a, b
    my[0, 0], my[1, 0], my[0, 1] = f, c, d
    return DistortionField.from_monomials(mx, my, domain, unit="arcsec")


def points(n=50, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(-0.5, 2047.5, n), rng.uniform(-0.5, 1023.5, n)


def random_field(degree, seed):
    rng = np.random.default_rng(seed)
    k = basis.n_terms(degree)
    return DistortionField.from_coefficients(rng.normal(size=k), rng.normal(size=k), degree, DOMAIN)


# ----------------------------------------------------------------------------- local geometry
def test_rotation_by_30_degrees():
    s, r = 0.05, np.radians(30.0)
    f = linear(s * np.cos(r), -s * np.sin(r), s * np.sin(r), s * np.cos(r), e=3.0, f=-2.0, degree=4)
    g = local_geometry(f, *points())
    np.testing.assert_allclose(g.rotation, 30.0, atol=1e-9)
    np.testing.assert_allclose(g.scale, s, rtol=1e-12)
    np.testing.assert_allclose(g.scale_x, s, rtol=1e-12)
    np.testing.assert_allclose(g.scale_y, s, rtol=1e-12)
    np.testing.assert_allclose(g.skew, 0.0, atol=1e-9)
    np.testing.assert_array_equal(g.parity, 1.0)
    assert g.rotation.shape == (50,)


@pytest.mark.parametrize("angle", [-170.0, -90.0, -30.0, 0.0, 45.0, 120.0, 179.0])
def test_rotation_angles(angle):
    r = np.radians(angle)
    f = linear(np.cos(r), -np.sin(r), np.sin(r), np.cos(r))
    g = local_geometry(f, 100.0, 200.0)
    assert float(g.rotation) == pytest.approx(angle, abs=1e-9)
    assert float(g.skew) == pytest.approx(0.0, abs=1e-9)


def test_anisotropic_scale():
    f = linear(0.05, 0.0, 0.0, 0.07)
    g = local_geometry(f, *points())
    np.testing.assert_allclose(g.scale_x, 0.05, rtol=1e-12)
    np.testing.assert_allclose(g.scale_y, 0.07, rtol=1e-12)
    np.testing.assert_allclose(g.scale, np.sqrt(0.05 * 0.07), rtol=1e-12)
    np.testing.assert_allclose(g.rotation, 0.0, atol=1e-9)
    np.testing.assert_allclose(g.skew, 0.0, atol=1e-9)


@pytest.mark.parametrize("k", [0.01, 0.2, -0.1])
def test_shear(k):
    """u = x + k y, v = y: the imaged y axis leans by atan(k) from perpendicular; the area
    scale is unchanged.  Sign convention: skew = (angle of the y axis from +v) - (angle of
    the x axis from +u), so leaning towards +u (k > 0) is a negative skew."""
    f = linear(1.0, k, 0.0, 1.0)
    g = local_geometry(f, *points())
    np.testing.assert_allclose(g.skew, -np.degrees(np.arctan(k)), atol=1e-9)
    np.testing.assert_allclose(g.scale, 1.0, rtol=1e-12)
    np.testing.assert_allclose(g.scale_x, 1.0, rtol=1e-12)
    np.testing.assert_allclose(g.scale_y, np.hypot(1.0, k), rtol=1e-12)
    np.testing.assert_allclose(g.rotation, 0.0, atol=1e-9)
    np.testing.assert_array_equal(g.parity, 1.0)


@pytest.mark.parametrize("flip", ["x", "y"])
def test_parity_of_flipped_field(flip):
    sx, sy = (-1.0, 1.0) if flip == "x" else (1.0, -1.0)
    f = linear(0.05 * sx, 0.0, 0.0, 0.05 * sy)
    g = local_geometry(f, *points())
    np.testing.assert_array_equal(g.parity, -1.0)
    np.testing.assert_allclose(g.scale, 0.05, rtol=1e-12)
    np.testing.assert_allclose(g.skew, 0.0, atol=1e-9)  # a pure flip is not a skew
    np.testing.assert_allclose(np.cos(np.radians(g.rotation)), sx, atol=1e-12)


def test_rotated_and_flipped():
    r = np.radians(30.0)
    f = linear(np.cos(r), np.sin(r), np.sin(r), -np.cos(r))  # rotation 30 deg of (x, -y)
    g = local_geometry(f, *points())
    np.testing.assert_array_equal(g.parity, -1.0)
    np.testing.assert_allclose(g.rotation, 30.0, atol=1e-9)
    np.testing.assert_allclose(g.skew, 0.0, atol=1e-9)


def test_local_geometry_of_a_nonlinear_field_follows_its_jacobian():
    f = random_field(5, seed=1)
    x, y = points(200, seed=2)
    _, _, jac = f.jacobian(x, y)
    g = local_geometry(f, x, y)
    det = jac[:, 0, 0] * jac[:, 1, 1] - jac[:, 0, 1] * jac[:, 1, 0]
    np.testing.assert_allclose(g.scale, np.sqrt(np.abs(det)), rtol=1e-12)
    np.testing.assert_allclose(g.scale_x, np.hypot(jac[:, 0, 0], jac[:, 1, 0]), rtol=1e-12)
    np.testing.assert_array_equal(g.parity, np.sign(det))
    np.testing.assert_allclose(g.rotation, np.degrees(np.arctan2(jac[:, 1, 0], jac[:, 0, 0])), atol=1e-9)
    assert np.all(np.abs(g.skew) <= 180.0)


# ----------------------------------------------------------------------------- affine part
def nonlinear_test_field():
    rng = np.random.default_rng(3)
    n = 7
    k = basis.n_terms(n)
    return DistortionField.from_coefficients(rng.normal(size=k), rng.normal(size=k), n, DOMAIN)


def test_affine_part_is_least_squares_fit_on_dense_uniform_grid():
    """Compare with numpy lstsq of (1, x, y) on a dense uniform grid of cell centres
    (512 x 512 cells over the domain).  The grid sum approximates the integral over the
    domain to O(h**2): measured difference 1.8e-5 of the non-linear amplitude, so 1e-4 is
    asserted.  A Taylor expansion (linear monomials about the centre) would differ by the
    order of the non-linear amplitude itself."""
    f = nonlinear_test_field()
    aff = affine_part(f)
    assert aff.degree == 1 and aff.domain == f.domain and aff.unit == f.unit
    xmin, xmax, ymin, ymax = f.domain
    nx = ny = 512
    xs = xmin + (np.arange(nx) + 0.5) * (xmax - xmin) / nx
    ys = ymin + (np.arange(ny) + 0.5) * (ymax - ymin) / ny
    X, Y = (a.ravel() for a in np.meshgrid(xs, ys))
    u, v = f(X, Y)
    design = np.column_stack([np.ones_like(X), X, Y])
    sol, *_ = np.linalg.lstsq(design, np.column_stack([u, v]), rcond=None)
    ua, va = aff(X, Y)
    amplitude = max(np.abs(u - ua).max(), np.abs(v - va).max())
    diff = max(np.abs(design @ sol[:, 0] - ua).max(), np.abs(design @ sol[:, 1] - va).max())
    assert diff <= 1e-4 * amplitude
    # Taylor-style affine part (value and gradient at the centre) is NOT the answer
    xc, yc = f.centre
    u0, v0, jac = f.jacobian(xc, yc)
    taylor_u = u0 + jac[0, 0] * (X - xc) + jac[0, 1] * (Y - yc)
    assert np.abs(taylor_u - ua).max() > 100 * diff


def test_affine_part_is_exact_l2_projection():
    """Exact check with Gauss-Legendre quadrature (weights make the discrete least squares
    equal the continuous one over the rectangle for these polynomial degrees)."""
    f = nonlinear_test_field()
    aff = affine_part(f)
    xmin, xmax, ymin, ymax = f.domain
    t, w = np.polynomial.legendre.leggauss(12)
    X, Y = np.meshgrid((t + 1) / 2 * (xmax - xmin) + xmin, (t + 1) / 2 * (ymax - ymin) + ymin)
    W = np.sqrt(np.outer(w, w)).ravel()
    X, Y = X.ravel(), Y.ravel()
    u, v = f(X, Y)
    design = np.column_stack([np.ones_like(X), X, Y]) * W[:, None]
    sol, *_ = np.linalg.lstsq(design, np.column_stack([u, v]) * W[:, None], rcond=None)
    ua, va = aff(X, Y)
    fitted = np.column_stack([np.ones_like(X), X, Y]) @ sol
    scale = max(np.abs(u).max(), np.abs(v).max())
    assert np.abs(fitted[:, 0] - ua).max() <= 1e-12 * scale
    assert np.abs(fitted[:, 1] - va).max() <= 1e-12 * scale


def test_affine_matrix():
    f = linear(0.05, 0.01, -0.02, 0.06, e=3.0, f=-4.0, degree=3)
    a, b = maps.affine_matrix(f)
    np.testing.assert_allclose(a, [[0.05, 0.01], [-0.02, 0.06]], rtol=1e-12)
    np.testing.assert_allclose(b, [3.0, -4.0], rtol=1e-12)


# ----------------------------------------------------------------------------- non-linear part
@pytest.mark.parametrize("degree", [1, 3, 12])
def test_nonlinear_part_of_affine_field_is_zero(degree):
    r = np.radians(12.0)
    f = linear(0.05 * np.cos(r), -0.04 * np.sin(r), 0.05 * np.sin(r), 0.04 * np.cos(r),
               e=100.0, f=-50.0, degree=degree)
    nl = nonlinear_part(f)
    x, y = points(500)
    u, v = nl(x, y)
    assert np.abs(u).max() <= 1e-12 * 100 and np.abs(v).max() <= 1e-12 * 100
    a = affine_part(f)
    np.testing.assert_allclose(a(x, y), f(x, y), rtol=0, atol=1e-11)


def test_affine_plus_nonlinear_is_the_field():
    f = nonlinear_test_field()
    x, y = points(300)
    total = np.add(affine_part(f)(x, y), nonlinear_part(f)(x, y))
    np.testing.assert_allclose(total, f(x, y), rtol=0, atol=1e-12)
    # the non-linear part has no affine component left
    again = affine_part(nonlinear_part(f))
    np.testing.assert_allclose(again.cx, 0.0, atol=1e-15)
    np.testing.assert_allclose(again.cy, 0.0, atol=1e-15)


def test_sampled_grid():
    f = linear(0.05, 0.0, 0.0, 0.05, degree=2)
    xs, ys, scale = maps.sampled_grid(f, 25, "scale")
    assert xs[0] == 0.0 and xs[-1] == 2025.0 and ys[-1] == 1000.0
    assert scale.shape == (ys.size, xs.size)
    np.testing.assert_allclose(scale, 0.05, rtol=1e-12)
    _, _, nlu = maps.sampled_grid(f, 100, "nonlinear_u")
    np.testing.assert_allclose(nlu, 0.0, atol=1e-12)
    with pytest.raises(ValueError, match="unknown map"):
        maps.sampled_grid(f, 25, "banana")
