"""DistortionField (astrocal.field.core): construction, evaluation, Jacobian, bad input."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.polynomial import legendre as npleg

from astrocal.field import DistortionField, basis, design_matrix
from astrocal.field import core

DOMAIN = (-0.5, 2047.5, -0.5, 1023.5)  # a 2048 x 1024 detector, 0-based pixel centres


# ----------------------------------------------------------------------------- helpers
def direct_monomial(m, X, Y):
    out = np.zeros(np.broadcast(X, Y).shape)
    for p in range(m.shape[0]):
        for q in range(m.shape[1]):
            if m[p, q]:
                out += m[p, q] * X**p * Y**q
    return out


def random_monomials(rng, degree, domain, origin, amplitude=1.0):
    """Monomials about origin whose every term is ~amplitude at the domain edge."""
    xmin, xmax, ymin, ymax = domain
    hx, hy = (xmax - xmin) / 2, (ymax - ymin) / 2
    p, q = np.indices((degree + 1, degree + 1))
    scale = amplitude / (hx**p * hy**q)
    mask = p + q <= degree
    return (np.where(mask, rng.normal(size=p.shape) * scale, 0.0),
            np.where(mask, rng.normal(size=p.shape) * scale, 0.0))


def random_field(rng, degree, domain=DOMAIN):
    k = basis.n_terms(degree)
    return DistortionField.from_coefficients(rng.normal(size=k), rng.normal(size=k), degree, domain)


def legendre_reference(f, x, y):
    t, s = f.normalise(x, y)
    return npleg.legval2d(t, s, f.cx), npleg.legval2d(t, s, f.cy)


def legendre_jacobian_reference(f, x, y):
    xmin, xmax, ymin, ymax = f.domain
    hx, hy = (xmax - xmin) / 2, (ymax - ymin) / 2
    t, s = f.normalise(x, y)
    return np.array([
        [npleg.legval2d(t, s, npleg.legder(f.cx, axis=0)) / hx,
         npleg.legval2d(t, s, npleg.legder(f.cx, axis=1)) / hy],
        [npleg.legval2d(t, s, npleg.legder(f.cy, axis=0)) / hx,
         npleg.legval2d(t, s, npleg.legder(f.cy, axis=1)) / hy],
    ])


# ----------------------------------------------------------------------------- conventions
def test_domain_normalisation_convention():
    f = DistortionField.identity((-0.5, 99.5, -0.5, 49.5))
    t, s = f.normalise([-0.5, 49.5, 99.5], [-0.5, 24.5, 49.5])
    np.testing.assert_allclose(t, [-1, 0, 1])
    np.testing.assert_allclose(s, [-1, 0, 1])
    assert f.centre == (49.5, 24.5)
    assert f.in_domain(-0.5, -0.5) and f.in_domain(99.5, 49.5)
    assert not f.in_domain(-0.6, 0.0) and f.in_domain(-0.6, 0.0, margin=0.2)


def test_identity_and_scale():
    for degree in (1, 5, 12):
        f = DistortionField.identity(DOMAIN, degree=degree, scale=0.05, unit="arcsec")
        assert f.degree == degree and f.unit == "arcsec" and f.input_unit == "pixel"
        x = np.array([-0.5, 0.0, 17.25, 2047.5])
        y = np.array([-0.5, 1023.5, 3.0, 0.0])
        u, v = f(x, y)
        np.testing.assert_allclose(u, 0.05 * x, rtol=1e-15, atol=1e-13)
        np.testing.assert_allclose(v, 0.05 * y, rtol=1e-15, atol=1e-13)


# ----------------------------------------------------------------------------- evaluation
@pytest.mark.parametrize("degree", range(1, basis.MAX_DEGREE + 1))
def test_evaluation_against_direct_monomials(degree):
    rng = np.random.default_rng(100 + degree)
    origin = (1023.5 + 37.0, 511.5 - 20.0)
    mx, my = random_monomials(rng, degree, DOMAIN, origin)
    f = DistortionField.from_monomials(mx, my, DOMAIN, origin=origin)
    x = rng.uniform(-0.5, 2047.5, 2000)
    y = rng.uniform(-0.5, 1023.5, 2000)
    x[:4], y[:4] = [-0.5, 2047.5, -0.5, 2047.5], [-0.5, -0.5, 1023.5, 1023.5]  # corners
    u, v = f(x, y)
    ur = direct_monomial(mx, x - origin[0], y - origin[1])
    vr = direct_monomial(my, x - origin[0], y - origin[1])
    scale = max(np.abs(ur).max(), np.abs(vr).max())
    assert max(np.abs(u - ur).max(), np.abs(v - vr).max()) <= 1e-12 * scale
    # and against an independent Legendre evaluation of the stored coefficients
    ul, vl = legendre_reference(f, x, y)
    assert max(np.abs(u - ul).max(), np.abs(v - vl).max()) <= 1e-13 * scale


@pytest.mark.parametrize("degree", range(1, basis.MAX_DEGREE + 1))
def test_jacobian_against_finite_differences_and_legder(degree):
    rng = np.random.default_rng(200 + degree)
    f = random_field(rng, degree)
    x = rng.uniform(10, 2037, 500)
    y = rng.uniform(10, 1013, 500)
    u, v, jac = f.jacobian(x, y)
    assert jac.shape == (500, 2, 2)
    u0, v0 = f(x, y)
    np.testing.assert_array_equal(u, u0)
    np.testing.assert_array_equal(v, v0)
    ref = legendre_jacobian_reference(f, x, y)  # (2, 2, N)
    ref = np.moveaxis(ref, -1, 0)
    scale = np.abs(ref).max()
    assert np.abs(jac - ref).max() <= 1e-12 * scale
    # central finite differences (step 1e-3 pixel; truncation ~h^2 f''' is negligible)
    h = 1e-3
    for col, (dx, dy) in enumerate(((h, 0.0), (0.0, h))):
        up, vp = f(x + dx, y + dy)
        um, vm = f(x - dx, y - dy)
        fd = np.stack([(up - um) / (2 * h), (vp - vm) / (2 * h)], axis=-1)
        val_scale = max(np.abs(u).max(), np.abs(v).max())
        # rounding of the difference: ~eps * |field| / h
        assert np.abs(jac[:, :, col] - fd).max() <= 1e-10 * val_scale / h + 1e-6 * scale


def test_jacobian_of_monomials_known():
    # u = 2 + 3X + X*Y**2, v = -X**3 + 0.5 Y about origin (100, 50)
    mx = np.zeros((4, 4))
    my = np.zeros((4, 4))
    mx[0, 0], mx[1, 0], mx[1, 2] = 2.0, 3.0, 1.0
    my[3, 0], my[0, 1] = -1.0, 0.5
    f = DistortionField.from_monomials(mx, my, (-0.5, 199.5, -0.5, 99.5), origin=(100.0, 50.0))
    X, Y = 7.0, -3.0
    u, v, jac = f.jacobian(100.0 + X, 50.0 + Y)
    assert u == pytest.approx(2 + 3 * X + X * Y**2, rel=1e-13)
    assert v == pytest.approx(-(X**3) + 0.5 * Y, rel=1e-13)
    np.testing.assert_allclose(jac, [[3 + Y**2, 2 * X * Y], [-3 * X**2, 0.5]], rtol=1e-12)


@pytest.mark.parametrize("shape_x, shape_y, expected", [
    ((), (), ()),
    ((7,), (7,), (7,)),
    ((7,), (), (7,)),
    ((5, 1), (1, 4), (5, 4)),
    ((2, 3, 4), (4,), (2, 3, 4)),
    ((0,), (0,), (0,)),
])
def test_broadcasting_shapes(shape_x, shape_y, expected):
    rng = np.random.default_rng(5)
    f = random_field(rng, 4)
    x = rng.uniform(0, 2047, shape_x) if shape_x else 100.0
    y = rng.uniform(0, 1023, shape_y) if shape_y else 200.0
    u, v = f(x, y)
    assert np.shape(u) == np.shape(v) == expected
    u2, v2, jac = f.jacobian(x, y)
    assert np.shape(u2) == expected and jac.shape == expected + (2, 2)
    xb, yb = np.broadcast_arrays(x, y)
    if xb.size:
        # every point equals the point evaluated alone
        k = np.unravel_index(xb.size - 1, expected) if expected else ()
        ui, vi, ji = f.jacobian(float(xb[k]), float(yb[k]))
        assert u[k] == pytest.approx(ui, rel=1e-14) and v[k] == pytest.approx(vi, rel=1e-14)
        np.testing.assert_allclose(jac[k], ji, rtol=1e-13)


def test_many_points_chunked_and_threaded():
    """Inputs longer than several chunks (threaded path) give the same numbers as small calls."""
    rng = np.random.default_rng(6)
    f = random_field(rng, 7)
    n = 5 * core.CHUNK + 123
    x = rng.uniform(-0.5, 2047.5, n)
    y = rng.uniform(-0.5, 1023.5, n)
    u, v, jac = f.jacobian(x, y)
    uu, vv = f(x, y)
    np.testing.assert_array_equal(u, uu)
    pieces = [f.jacobian(x[k:k + 1000], y[k:k + 1000]) for k in range(0, n, 1000)]
    np.testing.assert_allclose(u, np.concatenate([p[0] for p in pieces]), rtol=0, atol=1e-12)
    np.testing.assert_allclose(v, np.concatenate([p[1] for p in pieces]), rtol=0, atol=1e-12)
    np.testing.assert_allclose(jac, np.concatenate([p[2] for p in pieces]), rtol=0, atol=1e-12)


def test_a_point_gives_the_same_bits_wherever_it_falls_in_a_batch():
    """Evaluation is per point: the same point gives bit-identical values and Jacobian
    alone, in a short batch, and at any offset of a long threaded batch (block and chunk
    boundaries included).  Round-trip checks (field.inverse) compare evaluations of the
    same points made in batches of different sizes."""
    rng = np.random.default_rng(61)
    for degree in (3, 12):
        f = random_field(rng, degree)
        n = 2 * core.CHUNK + 3 * core.BLOCK + 17
        x = rng.uniform(-0.5, 2047.5, n)
        y = rng.uniform(-0.5, 1023.5, n)
        u, v, jac = f.jacobian(x, y)
        uu, vv = f(x, y)
        np.testing.assert_array_equal(u, uu)
        np.testing.assert_array_equal(v, vv)
        picks = [0, 1, core.BLOCK - 1, core.BLOCK, core.CHUNK - 1, core.CHUNK + 5, n - 1]
        for k in picks:
            for width in (1, 4, 17, core.BLOCK - 1, core.CHUNK + 3):
                lo = max(0, k + 1 - width)
                ui, vi, ji = f.jacobian(x[lo:k + 1], y[lo:k + 1])
                assert ui[-1] == u[k] and vi[-1] == v[k]
                np.testing.assert_array_equal(ji[-1], jac[k])
        sub = np.array(picks)
        np.testing.assert_array_equal(f(x[sub], y[sub])[0], u[sub])


def test_design_matrix_consistent_with_evaluation():
    rng = np.random.default_rng(7)
    f = random_field(rng, 6)
    x = rng.uniform(-0.5, 2047.5, 300)
    y = rng.uniform(-0.5, 1023.5, 300)
    b = f.design_matrix(x, y)
    assert b.shape == (300, f.n_terms)
    u, v, jac = f.jacobian(x, y)
    np.testing.assert_allclose(b @ f.coefficients[0], u, atol=1e-12)
    np.testing.assert_allclose(b @ f.coefficients[1], v, atol=1e-12)
    b0, bx, by = design_matrix(x, y, 6, f.domain, derivatives=True)
    np.testing.assert_array_equal(b0, b)
    np.testing.assert_allclose(bx @ f.coefficients[0], jac[:, 0, 0], atol=1e-13)
    np.testing.assert_allclose(by @ f.coefficients[1], jac[:, 1, 1], atol=1e-13)


@settings(max_examples=30, deadline=None)
@given(degree=st.integers(1, 12), seed=st.integers(0, 2**32 - 1),
       fx=st.floats(-0.1, 0.1), fy=st.floats(-0.1, 0.1))
def test_monomial_round_trip_through_field(degree, seed, fx, fy):
    rng = np.random.default_rng(seed)
    origin = (1023.5 + fx * 1024, 511.5 + fy * 512)
    mx, my = random_monomials(rng, degree, DOMAIN, origin)
    f = DistortionField.from_monomials(mx, my, DOMAIN, origin=origin)
    bx, by = f.to_monomials(origin)
    X, Y = np.meshgrid(np.linspace(-0.5, 2047.5, 41) - origin[0], np.linspace(-0.5, 1023.5, 41) - origin[1])
    for m, b in ((mx, bx), (my, by)):
        ref = direct_monomial(m, X, Y)
        assert np.abs(direct_monomial(b, X, Y) - ref).max() <= 1e-12 * np.abs(ref).max()


# ----------------------------------------------------------------------------- fit, algebra
def test_fit_recovers_a_field_exactly():
    rng = np.random.default_rng(8)
    f = random_field(rng, 5)
    x = rng.uniform(-0.5, 2047.5, 400)
    y = rng.uniform(-0.5, 1023.5, 400)
    u, v = f(x, y)
    g = DistortionField.fit(x, y, u, v, 5, DOMAIN)
    np.testing.assert_allclose(g.cx, f.cx, atol=1e-11)
    np.testing.assert_allclose(g.cy, f.cy, atol=1e-11)
    w = rng.uniform(0.5, 2.0, 400)
    g = DistortionField.fit(x, y, u, v, 5, DOMAIN, weights=w)
    np.testing.assert_allclose(g.cx, f.cx, atol=1e-11)
    with pytest.raises(ValueError, match="at least 21 samples"):
        DistortionField.fit(x[:20], y[:20], u[:20], v[:20], 5, DOMAIN)
    with pytest.raises(ValueError, match="same number"):
        DistortionField.fit(x, y[:-1], u, v, 5, DOMAIN)


def test_with_degree_add_sub_mul():
    rng = np.random.default_rng(9)
    f = random_field(rng, 4)
    g = f.with_degree(9)
    x = rng.uniform(-0.5, 2047.5, 100)
    y = rng.uniform(-0.5, 1023.5, 100)
    np.testing.assert_allclose(g(x, y), f(x, y), atol=1e-12)
    h = random_field(rng, 6)
    s = f + h
    assert s.degree == 6
    np.testing.assert_allclose(s(x, y), np.add(f(x, y), h(x, y)), atol=1e-12)
    np.testing.assert_allclose((f - h)(x, y), np.subtract(f(x, y), h(x, y)), atol=1e-12)
    np.testing.assert_allclose((2.5 * f)(x, y), 2.5 * np.array(f(x, y)), atol=1e-12)
    other = DistortionField.identity((-0.5, 99.5, -0.5, 99.5))
    with pytest.raises(ValueError, match="same domain"):
        f + other


def test_coefficients_are_immutable():
    f = DistortionField.identity(DOMAIN, degree=3)
    with pytest.raises(ValueError):
        f.cx[0, 0] = 1.0
    src = np.zeros((2, 2))
    src[1, 0] = 1.0
    g = DistortionField(src, src.T.copy(), DOMAIN)
    src[1, 0] = 5.0  # the field keeps its own copy
    assert g.cx[1, 0] == 1.0


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("n", [0, 13, 20])
def test_degree_out_of_range(n):
    with pytest.raises(ValueError, match="between 1 and 12"):
        DistortionField(np.zeros((n + 1, n + 1)), np.zeros((n + 1, n + 1)), DOMAIN)
    with pytest.raises(ValueError, match="between 1 and 12"):
        DistortionField.from_monomials(np.zeros((n + 1, n + 1)), np.zeros((n + 1, n + 1)), DOMAIN)
    if n:
        with pytest.raises(ValueError, match="between 1 and 12"):
            DistortionField.from_coefficients(np.zeros(basis.n_terms(n)), np.zeros(basis.n_terms(n)),
                                              n, DOMAIN)
        with pytest.raises(ValueError, match="between 1 and 12"):
            DistortionField.identity(DOMAIN).with_degree(n)


@pytest.mark.parametrize("length", [0, 9, 11, 15])
def test_wrong_length_flat_coefficients(length):
    with pytest.raises(ValueError, match=f"degree-3 polynomial has 10 coefficients, got {length}"):
        DistortionField.from_coefficients(np.zeros(length), np.zeros(10), 3, DOMAIN)


def test_non_square_or_mismatched_arrays():
    with pytest.raises(ValueError, match="square"):
        DistortionField(np.zeros((3, 4)), np.zeros((3, 4)), DOMAIN)
    with pytest.raises(ValueError, match="square"):
        DistortionField(np.zeros((3, 3)), np.zeros((4, 4)), DOMAIN)
    with pytest.raises(ValueError, match="square"):
        DistortionField.from_monomials(np.zeros((3, 3)), np.zeros((4, 4)), DOMAIN)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_coefficients(bad):
    c = np.zeros((3, 3))
    c[1, 0] = 1.0
    c2 = c.copy()
    c2[0, 1] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        DistortionField(c, c2, DOMAIN)
    with pytest.raises(ValueError, match="NaN or infinite"):
        DistortionField.from_monomials(c2, c, DOMAIN)
    flat = np.zeros(6)
    flat[2] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        DistortionField.from_coefficients(flat, np.zeros(6), 2, DOMAIN)


def test_legendre_terms_above_degree_rejected():
    c = np.zeros((3, 3))
    c[2, 2] = 1.0
    with pytest.raises(ValueError, match="i \\+ j > 2 must be zero"):
        DistortionField(c, np.zeros((3, 3)), DOMAIN)


def test_monomial_terms_above_degree_rejected():
    """from_monomials documents that entries with p + q > n must be zero.  A non-zero one
    (here X**2 Y**2 in a 3x3 array, total degree 4) cannot be represented at degree 2; it
    must be refused, not silently mangled (masking its Legendre image leaves a wrong
    lower-degree remainder)."""
    mx = np.zeros((3, 3))
    mx[1, 0] = 1.0
    mx[2, 2] = 5.0
    with pytest.raises(ValueError):
        DistortionField.from_monomials(mx, mx.T.copy(), (-0.5, 99.5, -0.5, 99.5))


@pytest.mark.parametrize("domain", [(0, 0, 0, 10), (10, 0, 0, 10), (0, 10, 5, 5),
                                    (0, np.nan, 0, 10), (0, 10, 0), "abcd", None])
def test_bad_domain(domain):
    with pytest.raises(ValueError, match="domain"):
        DistortionField.identity(domain)
