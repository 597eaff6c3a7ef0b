"""Reverse fields (astrocal.field.inverse): invert, solve, check_one_to_one."""
import numpy as np
import pytest

from astrocal.field import (DistortionField, Inverse, NotOneToOneError, check_one_to_one, invert,
                            solve)

DETECTOR = (-0.5, 2047.5, -0.5, 2047.5)
SQUARE = (-1.0, 1.0, -1.0, 1.0)


def mono(terms_u, terms_v, degree, domain, origin=(0.0, 0.0), **kwargs):
    """Field from {(p, q): coefficient} monomials about origin."""
    mx = np.zeros((degree + 1, degree + 1))
    my = np.zeros_like(mx)
    for (p, q), c in terms_u.items():
        mx[p, q] = c
    for (p, q), c in terms_v.items():
        my[p, q] = c
    return DistortionField.from_monomials(mx, my, domain, origin=origin, **kwargs)


def instrument_like(parity=1):
    """0.05 arcsec/pixel, rotated by 0.3 degrees, with radial (cubic) and quadratic terms
    of a few pixels at the corners, about the detector centre."""
    s, r = 0.05, np.radians(0.3)
    a, b = s * np.cos(r), s * np.sin(r)
    k3 = 2e-9 * s  # ~2.2 pixels at the corners
    u = {(1, 0): a, (0, 1): -b * parity, (2, 0): 3e-7 * s, (1, 1): -2e-7 * s,
         (3, 0): k3, (1, 2): k3}
    v = {(1, 0): b, (0, 1): a * parity, (0, 2): 2e-7 * s, (2, 1): k3, (0, 3): k3}
    return mono(u, v, 3, DETECTOR, origin=(1023.5, 1023.5), unit="arcsec")


def independent_roundtrip(field, reverse, n=1025):
    """Max |reverse(field(p)) - p| on an n x n grid over the domain, edges included."""
    xmin, xmax, ymin, ymax = field.domain
    x, y = np.meshgrid(np.linspace(xmin, xmax, n), np.linspace(ymin, ymax, n))
    u, v = field(x, y)
    rx, ry = reverse(u, v)
    return float(np.hypot(rx - x, ry - y).max())


# ----------------------------------------------------------------------------- invert
@pytest.mark.parametrize("parity", [1, -1])
def test_invert_instrument_like_field(parity):
    f = instrument_like(parity)
    assert check_one_to_one(f) == parity
    inv = invert(f)
    assert isinstance(inv, Inverse)
    assert inv.meets_tolerance and inv.tolerance == 1e-4
    assert inv.max_roundtrip_error <= 1e-4
    assert 0 < inv.rms_roundtrip_error <= inv.max_roundtrip_error
    rev = inv.field
    assert rev.unit == "pixel" and rev.input_unit == "arcsec"
    # the reported maximum is honest: a denser grid (containing the 257x257 check grid)
    # finds at least as much, and not much more
    measured = independent_roundtrip(f, rev)
    assert measured <= 1e-4
    assert inv.max_roundtrip_error <= measured * (1 + 1e-9)
    assert measured <= 2 * inv.max_roundtrip_error
    # the reverse field's domain covers the image of the forward domain
    xmin, xmax, ymin, ymax = f.domain
    x, y = np.meshgrid(np.linspace(xmin, xmax, 101), np.linspace(ymin, ymax, 101))
    u, v = f(x, y)
    assert rev.in_domain(u, v).all()


def test_invert_identity_like_field_is_exact():
    f = DistortionField.identity(DETECTOR, degree=1, scale=0.1, unit="arcsec")
    inv = invert(f)
    assert inv.field.degree == 1
    assert inv.max_roundtrip_error <= 1e-9


def test_invert_fixed_degree_and_strict():
    f = instrument_like()
    low = invert(f, degree=3)
    assert low.field.degree == 3
    assert low.max_roundtrip_error > 1e-4  # a cubic cannot reverse this cubic to 1e-4 pixel
    assert not low.meets_tolerance
    with pytest.raises(ValueError, match="tolerance"):
        invert(f, degree=3, strict=True)
    # default search goes up in degree until the tolerance is met
    assert invert(f).field.degree > 3


# ----------------------------------------------------------------------------- not one-to-one
def test_fold_x_squared_refused():
    f = mono({(2, 0): 1.0}, {(0, 1): 1.0}, 2, SQUARE)  # u = x**2 on a domain symmetric about 0
    with pytest.raises(NotOneToOneError, match="not one-to-one"):
        check_one_to_one(f)
    with pytest.raises(NotOneToOneError, match="cannot be reversed"):
        invert(f)


def test_fold_on_a_detector_refused():
    # u = X**2 about the detector centre: folds along the middle column
    f = mono({(2, 0): 1e-3}, {(0, 1): 1.0}, 2, DETECTOR, origin=(1023.5, 1023.5))
    with pytest.raises(NotOneToOneError):
        invert(f)


def test_strong_cubic_that_reverses_refused():
    # u = x - 0.8 x**3: du/dx = 1 - 2.4 x**2 < 0 for |x| > 0.65, u runs backwards near the edges
    f = mono({(1, 0): 1.0, (3, 0): -0.8}, {(0, 1): 1.0}, 3, SQUARE)
    with pytest.raises(NotOneToOneError):
        invert(f)
    # same shape, milder: du/dx = 1 - 0.15 x**2 > 0, one-to-one and invertible
    g = mono({(1, 0): 1.0, (3, 0): -0.05}, {(0, 1): 1.0}, 3, SQUARE)
    assert check_one_to_one(g) == 1
    assert invert(g).meets_tolerance


def test_global_overlap_with_nonzero_jacobian_refused():
    """z -> z**3 on a wedge x in [0.5, 3]: the Jacobian |3 z**2|**2 never vanishes, but the
    argument range (-80..80 degrees) triples to more than a full turn, so the image overlaps
    itself: only the boundary-crossing check can see it."""
    f = mono({(3, 0): 1.0, (1, 2): -3.0}, {(2, 1): 3.0, (0, 3): -1.0}, 3, (0.5, 3.0, -3.0, 3.0))
    with pytest.raises(NotOneToOneError, match="boundary"):
        check_one_to_one(f)
    with pytest.raises(NotOneToOneError):
        invert(f)
    # z -> z**2 on a narrower wedge doubles the angle range to < 180 degrees: one-to-one
    g = mono({(2, 0): 1.0, (0, 2): -1.0}, {(1, 1): 2.0}, 2, (0.2, 3.0, -3.0, 3.0))
    assert check_one_to_one(g) == 1


def test_not_one_to_one_is_a_value_error():
    assert issubclass(NotOneToOneError, ValueError)


def test_degenerate_field_refused():
    f = mono({(1, 0): 1.0}, {(1, 0): 2.0}, 1, SQUARE)  # v = 2u: rank 1
    with pytest.raises(NotOneToOneError):
        check_one_to_one(f)


# ----------------------------------------------------------------------------- solve
def test_solve_exact_preimages():
    f = instrument_like()
    rng = np.random.default_rng(11)
    x = rng.uniform(-0.5, 2047.5, 2000)
    y = rng.uniform(-0.5, 2047.5, 2000)
    u, v = f(x, y)
    sx, sy = solve(f, u, v)
    assert np.hypot(sx - x, sy - y).max() <= 1e-8
    inv = invert(f)
    gx, gy = inv.field(u, v)
    sx2, sy2 = solve(f, u, v, guess=(gx, gy))
    assert np.hypot(sx2 - x, sy2 - y).max() <= 1e-8


def test_solve_keeps_nd_shape():
    """2-D input (e.g. an image grid), as the field itself accepts, keeps its shape."""
    f = instrument_like()
    y, x = np.mgrid[0:2048:64, 0:2048:32].astype(float)
    u, v = f(x, y)
    sx, sy = solve(f, u, v)
    assert sx.shape == sy.shape == x.shape
    assert np.hypot(sx - x, sy - y).max() <= 1e-8


def test_solve_scalar_point():
    """A single point given as scalars, as the field itself accepts (f(x, y) with floats)."""
    f = instrument_like()
    u, v = f(1234.5, 321.0)
    px, py = solve(f, float(u), float(v))
    assert float(px) == pytest.approx(1234.5, abs=1e-8)
    assert float(py) == pytest.approx(321.0, abs=1e-8)


def test_solve_reports_non_convergence():
    f = instrument_like()
    u, v = f(np.array([10.0, 2000.0]), np.array([5.0, 2040.0]))
    with pytest.raises(ValueError, match="did not converge"):
        solve(f, u, v, maxiter=1, tol=1e-15)


def test_segment_crossing_sweep_agrees_with_every_pair():
    # the sweep over bounding boxes finds what the test of every pair of edges finds
    from astrocal.field.inverse import _segments_cross

    def every_pair(x, y):
        x1, y1 = np.roll(x, -1), np.roll(y, -1)
        n = x.size
        i, j = np.triu_indices(n, k=2)
        keep = ~((i == 0) & (j == n - 1))
        i, j = i[keep], j[keep]

        def orient(ax, ay, bx, by, cx, cy):
            return np.sign((bx - ax) * (cy - ay) - (by - ay) * (cx - ax))

        d1, d2 = orient(x[i], y[i], x1[i], y1[i], x[j], y[j]), orient(x[i], y[i], x1[i], y1[i], x1[j], y1[j])
        d3, d4 = orient(x[j], y[j], x1[j], y1[j], x[i], y[i]), orient(x[j], y[j], x1[j], y1[j], x1[i], y1[i])
        return bool(np.any((d1 * d2 < 0) & (d3 * d4 < 0)))

    rng = np.random.default_rng(3)
    found = []
    for k in range(150):
        n = int(rng.integers(4, 50))
        if k % 3 == 0:  # random polygons: mostly self-crossing
            x, y = rng.random(n), rng.random(n)
        else:  # star-shaped ones: simple, unless the radius jumps make them cross (never: sorted angles)
            t = np.sort(rng.random(n)) * 2 * np.pi
            r = 1 + rng.random(n) * (0.05 if k % 3 == 1 else 0.5)
            x, y = r * np.cos(t), r * np.sin(t)
        found.append(_segments_cross(x, y))
        assert found[-1] == every_pair(x, y)
    assert 0 < sum(found) < len(found)
