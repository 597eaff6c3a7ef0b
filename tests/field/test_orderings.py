"""External monomial orderings (astrocal.field.orderings): AstroMet, SIP, SIAF, IDCTAB.

Explicit checks of each published convention, then property-based round trips
field -> monomials -> ordering -> monomials -> field for every ordering, random degrees
(1..12; AstroMet <= 7) and coefficients, origins near the domain centre: relative error
<= 1e-12 on the evaluated field.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from astrocal.field import ORDERINGS, DistortionField, basis
from astrocal.field import orderings as o

REL = 1e-12


# ----------------------------------------------------------------------------- helpers
def grid(domain, n=65):
    xmin, xmax, ymin, ymax = domain
    return np.meshgrid(np.linspace(xmin, xmax, n), np.linspace(ymin, ymax, n))


def field_rel_err(f, g):
    x, y = grid(f.domain)
    u, v = f(x, y)
    u2, v2 = g(x, y)
    scale = max(np.abs(u).max(), np.abs(v).max(), 1e-300)
    return max(np.abs(u - u2).max(), np.abs(v - v2).max()) / scale


def single(p, q, n=None, value=1.0):
    n = max(p + q, 1) if n is None else n
    m = np.zeros((n + 1, n + 1))
    m[p, q] = value
    return m


coefficient = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False, allow_subnormal=False)


@st.composite
def fields(draw, max_degree=basis.MAX_DEGREE):
    """A random field on a detector domain and a monomial origin near the centre."""
    degree = draw(st.integers(1, max_degree))
    k = basis.n_terms(degree)
    cx = draw(st.lists(coefficient, min_size=k, max_size=k))
    cy = draw(st.lists(coefficient, min_size=k, max_size=k))
    nx = draw(st.integers(8, 4096))
    ny = draw(st.integers(8, 4096))
    domain = (-0.5, nx - 0.5, -0.5, ny - 0.5)
    f = DistortionField.from_coefficients(cx, cy, degree, domain)
    xc, yc = f.centre
    origin = (xc + draw(st.floats(-0.1, 0.1)) * nx / 2, yc + draw(st.floats(-0.1, 0.1)) * ny / 2)
    return f, origin


# ----------------------------------------------------------------------------- AstroMet
def test_astromet_term_order_explicit():
    t = o.astromet_terms()
    assert len(t) == 36
    # terms 0..7 are Y**0..Y**7 (power of X zero), term 35 is X**7
    assert t[:8] == [(0, q) for q in range(8)]
    assert t[35] == (7, 0)
    assert t[8] == (1, 0) and t[14] == (1, 6) and t[15] == (2, 0) and t[34] == (6, 1)
    # and the packer puts each monomial at that index
    for k, (p, q) in enumerate(t):
        vec = o.to_astromet(single(p, q, 7, value=k + 1.0))
        assert np.count_nonzero(vec) == 1 and vec[k] == k + 1.0
    vec = o.to_astromet(single(0, 7))
    assert vec[7] == 1.0
    vec = o.to_astromet(single(7, 0))
    assert vec[35] == 1.0


def test_astromet_pads_lower_degrees_and_unpacks_to_degree_7():
    m = np.array([[1.0, 2.0], [3.0, 0.0]])  # 1 + 2 Y + 3 X
    vec = o.to_astromet(m)
    assert vec.shape == (36,)
    assert vec[0] == 1.0 and vec[1] == 2.0 and vec[8] == 3.0 and np.count_nonzero(vec) == 3
    back = o.from_astromet(vec)
    assert back.shape == (8, 8)
    np.testing.assert_array_equal(back[:2, :2], m)
    assert np.count_nonzero(back) == 3


def test_astromet_refuses_degree_8():
    m = single(8, 0)  # X**8
    with pytest.raises(ValueError, match="degree 7"):
        o.to_astromet(m)
    m = single(3, 5)  # X**3 Y**5, total degree 8
    with pytest.raises(ValueError, match="degree"):
        o.to_astromet(m)
    # a degree-8 array whose degree-8 terms are zero is a degree-7 polynomial: accepted
    m = np.zeros((9, 9))
    m[7, 0] = 1.0
    assert o.to_astromet(m)[35] == 1.0


@pytest.mark.parametrize("length", [0, 28, 35, 37, 45])
def test_astromet_wrong_length(length):
    with pytest.raises(ValueError, match=f"exactly 36 coefficients, got {length}"):
        o.from_astromet(np.ones(length))


def test_astromet_nan():
    vec = np.zeros(36)
    vec[5] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        o.from_astromet(vec)
    with pytest.raises(ValueError, match="NaN"):
        o.to_astromet(single(1, 1, value=np.nan))


# ----------------------------------------------------------------------------- SIAF
def test_siaf_index_explicit():
    """k = i(i+1)/2 + j is the coefficient of x**(i-j) y**j."""
    for n in range(0, basis.MAX_DEGREE + 1):
        t = o.siaf_terms(n)
        assert len(t) == basis.n_terms(n)
        for i in range(n + 1):
            for j in range(i + 1):
                assert t[i * (i + 1) // 2 + j] == (i - j, j)
    # the published NIRCam table starts: 00 (1), 10 (x), 11 (y), 20 (x^2), 21 (xy), 22 (y^2)
    assert o.siaf_terms(2) == [(0, 0), (1, 0), (0, 1), (2, 0), (1, 1), (0, 2)]
    m = np.zeros((6, 6))
    m[4, 1] = 7.0  # x^4 y: i = 5, j = 1 -> k = 16
    vec = o.to_siaf(m)
    assert vec.shape == (21,) and vec[16] == 7.0 and np.count_nonzero(vec) == 1
    np.testing.assert_array_equal(o.from_siaf(vec), m)


@pytest.mark.parametrize("length", [2, 4, 20, 22, 92, 200])
def test_siaf_wrong_length(length):
    with pytest.raises(ValueError, match=f"{length} coefficients"):
        o.from_siaf(np.ones(length))


def test_siaf_nan():
    vec = np.zeros(21)
    vec[3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        o.from_siaf(vec)


# ----------------------------------------------------------------------------- IDCTAB
def test_idctab_naming_explicit():
    """CX{i}{j} multiplies x**j y**(i-j)."""
    m = np.zeros((4, 4))
    m[1, 0] = 0.05   # x      -> i = 1, j = 1: CX11
    m[0, 1] = -1e-6  # y      -> i = 1, j = 0: CX10
    m[2, 1] = 3e-9   # x^2 y  -> i = 3, j = 2: CX32
    m[0, 3] = 4e-10  # y^3    -> i = 3, j = 0: CX30
    d = o.to_idctab(m)
    assert d["CX11"] == 0.05 and d["CX10"] == -1e-6 and d["CX32"] == 3e-9 and d["CX30"] == 4e-10
    assert "CX00" not in d
    assert sum(1 for v in d.values() if v) == 4
    assert set(d) == {f"CX{i}{j}" for i in range(1, 4) for j in range(i + 1)}
    np.testing.assert_array_equal(o.from_idctab(d), m)
    dy = o.to_idctab(m, prefix="CY")
    assert dy["CY32"] == 3e-9
    # a table holding both prefixes: each read separately, others ignored
    both = {**d, **{k: 2 * v for k, v in dy.items()}, "XREF": 512.0}
    np.testing.assert_array_equal(o.from_idctab(both, prefix="CY"), 2 * m)


def test_idctab_constant_term():
    m = np.zeros((2, 2))
    m[0, 0] = 3.0
    with pytest.raises(ValueError, match="CX00"):
        o.to_idctab(m)
    d = o.to_idctab(m, constant=True)
    assert d["CX00"] == 3.0
    np.testing.assert_array_equal(o.from_idctab(d), m)


def test_idctab_bad_input():
    with pytest.raises(ValueError, match="j > i"):
        o.from_idctab({"CX12": 1.0})
    with pytest.raises(ValueError, match="no CXij"):
        o.from_idctab({"CY11": 1.0})
    with pytest.raises(ValueError, match="NaN"):
        o.from_idctab({"CX11": float("nan")})
    with pytest.raises(ValueError, match="above the requested degree"):
        o.from_idctab({"CX11": 1.0, "CX32": 1.0}, degree=2)


# ----------------------------------------------------------------------------- SIP
def test_sip_naming_explicit():
    m = np.zeros((4, 4))
    m[2, 0] = 1e-5
    m[1, 2] = 3e-7
    m[0, 3] = -2e-9
    d = o.to_sip(m)
    assert d["A_2_0"] == 1e-5 and d["A_1_2"] == 3e-7 and d["A_0_3"] == -2e-9
    assert set(d) == {f"A_{p}_{q}" for p in range(4) for q in range(4) if 2 <= p + q <= 3}
    np.testing.assert_array_equal(o.from_sip(d, order=3), m)
    ap = o.to_sip(m, prefix="AP")
    assert ap["AP_1_2"] == 3e-7
    mixed = {**d, **{k: -v for k, v in ap.items()}, "A_ORDER": 3, "CRPIX1": 1.0}
    np.testing.assert_array_equal(o.from_sip(mixed, prefix="AP", order=3), -m)


def test_sip_low_order_terms():
    m = np.zeros((3, 3))
    m[1, 0] = 1.0
    with pytest.raises(ValueError, match="A_1_0"):
        o.to_sip(m)
    d = o.to_sip(m, min_order=0)
    assert d["A_1_0"] == 1.0 and "A_0_0" in d
    with pytest.raises(ValueError, match="exceeds"):
        o.from_sip({"A_2_2": 1.0}, order=3)
    with pytest.raises(ValueError, match="NaN"):
        o.from_sip({"A_2_0": float("nan")})


# ----------------------------------------------------------------------------- names
@pytest.mark.parametrize("name", ["foo", "astromet7", "legendre", "", "SIP2"])
def test_unknown_ordering_names(name):
    m = single(1, 0)
    with pytest.raises(ValueError, match="unknown coefficient ordering") as err:
        o.pack(m, name)
    assert all(known in str(err.value) for known in ORDERINGS)
    with pytest.raises(ValueError, match="unknown coefficient ordering"):
        o.unpack(np.zeros(36), name)


def test_ordering_names_are_case_insensitive():
    m = single(7, 0, 7)
    assert o.pack(m, " AstroMet ")[35] == 1.0
    np.testing.assert_array_equal(o.unpack(o.pack(m, "SIAF"), "siaf"), m)


def test_non_square_input():
    with pytest.raises(ValueError, match="square"):
        o.to_siaf(np.zeros((3, 4)))


# ----------------------------------------------------------------------------- round trips
def round_trip(f, origin, ordering):
    mx, my = f.to_monomials(origin)
    if ordering == "astromet":
        bx, by = o.unpack(o.pack(mx, "astromet"), "astromet"), o.unpack(o.pack(my, "astromet"), "astromet")
    elif ordering == "siaf":
        bx, by = o.unpack(o.pack(mx, "siaf"), "siaf"), o.unpack(o.pack(my, "siaf"), "siaf")
    elif ordering == "idctab":
        kw = dict(constant=True)
        table = {**o.pack(mx, "idctab", prefix="CX", **kw), **o.pack(my, "idctab", prefix="CY", **kw)}
        bx = o.unpack(table, "idctab", prefix="CX", degree=f.degree)
        by = o.unpack(table, "idctab", prefix="CY", degree=f.degree)
    elif ordering == "sip":
        # SIP keeps the terms of order >= 2 in A/B (the linear part lives in CRPIX/CD): round trip
        # those with the default layout, and the full polynomial with min_order=0
        lin = np.zeros_like(mx)
        lin[0, 0] = lin[1, 0] = lin[0, 1] = 1.0
        nl_x, nl_y = np.where(lin == 1.0, 0.0, mx), np.where(lin == 1.0, 0.0, my)
        hx = {**o.pack(nl_x, "sip", prefix="A"), **o.pack(nl_y, "sip", prefix="B")}
        bx = o.unpack(hx, "sip", prefix="A", order=f.degree) + np.where(lin == 1.0, mx, 0.0)
        by = o.unpack(hx, "sip", prefix="B", order=f.degree) + np.where(lin == 1.0, my, 0.0)
        full = {**o.pack(mx, "sip", prefix="AP", min_order=0), **o.pack(my, "sip", prefix="BP", min_order=0)}
        fx = o.unpack(full, "sip", prefix="AP", order=f.degree)
        fy = o.unpack(full, "sip", prefix="BP", order=f.degree)
        np.testing.assert_array_equal(fx, mx)
        np.testing.assert_array_equal(fy, my)
    else:  # pragma: no cover
        raise AssertionError(ordering)
    n = f.degree
    return DistortionField.from_monomials(bx[: n + 1, : n + 1], by[: n + 1, : n + 1], f.domain,
                                          origin=origin)


@settings(max_examples=40, deadline=None)
@given(fields(max_degree=7))
def test_astromet_round_trip(case):
    f, origin = case
    assert field_rel_err(f, round_trip(f, origin, "astromet")) <= REL


@pytest.mark.parametrize("ordering", ["sip", "siaf", "idctab"])
@settings(max_examples=40, deadline=None)
@given(case=fields(max_degree=9))
def test_round_trip(ordering, case):
    f, origin = case
    assert field_rel_err(f, round_trip(f, origin, ordering)) <= REL


@pytest.mark.parametrize("ordering", ["sip", "siaf"])
@settings(max_examples=15, deadline=None)
@given(case=fields().filter(lambda c: c[0].degree >= 10))
def test_round_trip_high_degree(ordering, case):
    f, origin = case
    assert field_rel_err(f, round_trip(f, origin, ordering)) <= REL


@pytest.mark.parametrize("degree", [10, 11, 12])
def test_idctab_high_degree_is_exact_or_refused(degree):
    """CX{i}{j} uses one digit per index, so degrees >= 10 cannot be written unambiguously
    (CX111 is i=11, j=1 or i=1, j=11).  Writing such a polynomial must either round-trip
    exactly or raise a clear ValueError -- never silently drop or mix up terms."""
    rng = np.random.default_rng(degree)
    m = basis.flat_to_square(rng.normal(size=basis.n_terms(degree)), degree)
    try:
        table = o.to_idctab(m, constant=True)
    except ValueError:
        return
    back = o.from_idctab(table, degree=degree)
    np.testing.assert_array_equal(back, m)
