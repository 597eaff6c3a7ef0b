import numpy as np
import pytest
from astropy.io import fits

from astrocal.atomic import ProductExistsError
from astrocal.field.orderings import from_astromet
from astrocal.field.basis import evaluate_monomial
from astrocal.formats.astromet import AstroMetFormatError, read_astromet, write_astromet
from astrocal.pixels import from_fits



def _err_px(sol_a, sol_b, x, y):
    ua, va = sol_a.field(x, y)
    ub, vb = sol_b.field(x, y)
    return np.max(np.hypot(ua - ub, va - vb)) / sol_a.plate_scale


def test_layout_matches_ccf(tmp_path, metis_solution, high_degree_solution):
    path = write_astromet(tmp_path / "am.fits", [metis_solution, high_degree_solution], instrument="METIS")
    with fits.open(path) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "FILTER-L", "FILTER-M", "POLYNOM_MAP", "POLYNOM_MAP2"]
        assert hdul[0].header["FILTERS"] == "L,M"
        assert hdul[0].header["INSTRUME"] == "METIS"
        for name in ("POLYNOM_MAP", "POLYNOM_MAP2"):
            cols = hdul[name].columns
            assert cols.names == ["FILTER_ID", "PLTSCALE", "XPOLYCOEF", "YPOLYCOEF"]
            assert [c.format for c in cols] == ["9A", "E", "36E", "36E"]
            assert list(hdul[name].data["FILTER_ID"]) == ["L", "M"]
        t = hdul["FILTER-L"]
        assert t.columns.names == ["RAWX", "RAWY", "RAWX_OFF", "RAWY_OFF", "RAWX_OFF_ERR", "RAWY_OFF_ERR"]
        assert "RAWX_OFF_ERR" not in hdul["FILTER-M"].columns.names  # no uncertainties given
        # a grid every 25 pixels from pixel 1 (FITS) covering the detector: 83 x 83
        assert len(t.data) == 83 * 83
        assert t.header["STEP"] == 25
        assert t.header["BORESX"] == pytest.approx(1024.5)  # centre of a 2048 detector, 1-based
        assert np.allclose(np.unique(t.data["RAWX"])[:3], [1, 26, 51])
        assert t.header["PLTSCALE"] == pytest.approx(0.00547, rel=1e-3)


def test_sampled_offsets_are_measured_minus_linear(tmp_path, metis_solution):
    """Each table row: the detector position of linear-grid point RAWX is RAWX + RAWX_OFF."""
    sol = metis_solution
    path = write_astromet(tmp_path / "am.fits", sol)
    row = read_astromet(path)["L"].table
    lx, ly = from_fits(row["RAWX"]), from_fits(row["RAWY"])
    px, py = lx + row["RAWX_OFF"], ly + row["RAWY_OFF"]
    # the linear-grid position of the distorted point must be the grid point again
    gx, gy = sol.linear_field()(px, py)
    assert np.max(np.hypot(gx - lx, gy - ly)) < 1e-4  # float32 storage of ~1000 px values
    # offsets are a few pixels at the corners, as the field was built
    assert 1.0 < np.max(np.hypot(row["RAWX_OFF"], row["RAWY_OFF"])) < 20.0
    # uncertainties are those of the solution at the distorted positions
    sx, sy = sol.sigma(px, py)
    assert np.allclose(row["RAWX_OFF_ERR"], sx, rtol=1e-6)
    assert np.allclose(row["RAWY_OFF_ERR"], sy, rtol=1e-6)


def test_polynomials_reproduce_the_field(tmp_path, metis_solution, dense_points):
    sol = metis_solution
    path = write_astromet(tmp_path / "am.fits", sol, precision="double")
    flt = read_astromet(path)["L"]
    x, y = dense_points()
    b = flt.boresight
    # reverse: linear = measured - offset (POLYNOM_MAP2 at the measured position)
    m2x, m2y = flt.reverse_monomials()
    lx = x - evaluate_monomial(m2x, x - b[0], y - b[1])
    ly = y - evaluate_monomial(m2y, x - b[0], y - b[1])
    tx, ty = sol.linear_field()(x, y)
    assert np.max(np.hypot(lx - tx, ly - ty)) < 1e-9
    # forward: distorted = linear + offset (POLYNOM_MAP at the linear-grid position)
    mx, my = flt.forward_monomials()
    px = tx + evaluate_monomial(mx, tx - b[0], ty - b[1])
    py = ty + evaluate_monomial(my, tx - b[0], ty - b[1])
    err = np.max(np.hypot(px - x, py - y))
    # degree 7 is the layout's limit: the forward polynomial is a fit, stated in POLYERR
    assert err < 5e-4
    assert err <= flt.header["POLYERR"] * 1.05 + 1e-9
    assert flt.header["POLY2ERR"] < 1e-9


@pytest.mark.parametrize("precision, tol", [("single", 2e-4), ("double", 1e-8)])
def test_round_trip_through_file(tmp_path, metis_solution, precision, tol, dense_points):
    path = write_astromet(tmp_path / "am.fits", metis_solution, precision=precision)
    back = read_astromet(path)["L"].solution()
    x, y = dense_points()
    assert _err_px(metis_solution, back, x, y) < tol
    assert back.field.degree == metis_solution.field.degree
    assert back.plate_scale == pytest.approx(metis_solution.plate_scale, rel=1e-12)
    assert back.rotation == pytest.approx(metis_solution.rotation, abs=1e-9)
    assert back.reference_position == pytest.approx(metis_solution.reference_position, abs=1e-9)


def test_degree_above_seven_keeps_detail_in_table(tmp_path, high_degree_solution, dense_points):
    sol = high_degree_solution
    path = write_astromet(tmp_path / "am.fits", sol, precision="double")
    flt = read_astromet(path)["M"]
    assert flt.header["DEGREE"] == 9
    assert any("degree 9 > 7" in str(c) for c in flt.header["COMMENT"])
    # the header states the polynomial's largest difference from the field, honestly
    m2x, m2y = flt.reverse_monomials()
    x, y = dense_points(50000, seed=3)
    b = flt.boresight
    dx = x - evaluate_monomial(m2x, x - b[0], y - b[1])
    dy = y - evaluate_monomial(m2y, x - b[0], y - b[1])
    tx, ty = sol.linear_field()(x, y)
    err = np.max(np.hypot(dx - tx, dy - ty))
    assert err <= flt.header["POLY2ERR"] * 1.05
    assert flt.header["POLY2ERR"] < 1.05 * err + 1e-12 or err > 0.5 * flt.header["POLY2ERR"]
    # the table is exact (up to float precision) even though the polynomial is not
    t = flt.table
    lx, ly = from_fits(t["RAWX"]), from_fits(t["RAWY"])
    gx, gy = sol.linear_field()(lx + t["RAWX_OFF"], ly + t["RAWY_OFF"])
    assert np.max(np.hypot(gx - lx, gy - ly)) < 1e-8


def test_never_overwrites_and_writes_atomically(tmp_path, metis_solution, monkeypatch):
    path = tmp_path / "am.fits"
    write_astromet(path, metis_solution)
    before = path.read_bytes()
    with pytest.raises(ProductExistsError, match="am.fits"):
        write_astromet(path, metis_solution)
    assert path.read_bytes() == before
    write_astromet(path, metis_solution, overwrite=True)

    # an interrupted write leaves the old product and no temporary file behind
    def boom(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(fits.HDUList, "writeto", boom)
    with pytest.raises(KeyboardInterrupt):
        write_astromet(path, metis_solution, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["am.fits"]
    fits.open(path).close()


def test_bad_input(tmp_path, metis_solution):
    good = write_astromet(tmp_path / "good.fits", metis_solution)
    # missing extension
    with fits.open(good) as hdul:
        fits.HDUList([h for h in hdul if h.name != "POLYNOM_MAP2"]).writeto(tmp_path / "no_pm2.fits")
        fits.HDUList([h for h in hdul if h.name != "FILTER-L"]).writeto(tmp_path / "no_filter.fits")
    with pytest.raises(AstroMetFormatError, match=r"no_pm2.fits: missing extension POLYNOM_MAP2"):
        read_astromet(tmp_path / "no_pm2.fits")
    with pytest.raises(AstroMetFormatError, match=r"no_filter.fits: missing extension FILTER-L"):
        read_astromet(tmp_path / "no_filter.fits")
    # missing column
    with fits.open(good) as hdul:
        t = hdul["FILTER-L"]
        cols = [c for c in t.columns if c.name != "RAWY_OFF"]
        new = fits.BinTableHDU.from_columns(cols, header=t.header, name="FILTER-L")
        fits.HDUList([hdul[0], new, hdul["POLYNOM_MAP"], hdul["POLYNOM_MAP2"]]).writeto(tmp_path / "no_col.fits")
    with pytest.raises(AstroMetFormatError, match=r"no_col.fits: extension FILTER-L has no column RAWY_OFF"):
        read_astromet(tmp_path / "no_col.fits")
    with pytest.raises(FileNotFoundError, match="nothere.fits"):
        read_astromet(tmp_path / "nothere.fits")
    (tmp_path / "junk.fits").write_text("not fits")
    with pytest.raises(AstroMetFormatError, match="junk.fits"):
        read_astromet(tmp_path / "junk.fits")
    # bad filter ids and a filter not in the file
    with pytest.raises(ValueError, match="9 letters"):
        write_astromet(tmp_path / "x.fits", metis_solution.__class__(metis_solution.field, filter="TOOLONGNAME"))
    with pytest.raises(KeyError, match="filter 'N' not in the file"):
        read_astromet(good)["N"]


def test_coefficients_follow_astromet_order(tmp_path):
    """A field offset purely in Y**2 (reverse) lands in term 2 of POLYNOM_MAP2, X**7 in term 35."""
    from astrocal.field import DistortionField
    from astrocal.solution import Solution

    n = 7
    dom = (-0.5, 2047.5, -0.5, 2047.5)
    b = (1023.5, 1023.5)
    d2x = np.zeros((n + 1, n + 1))
    d2y = np.zeros_like(d2x)
    d2x[0, 2] = 1e-6  # Y**2
    d2y[7, 0] = 1e-21  # X**7
    d2 = DistortionField.from_monomials(d2x, d2y, dom, origin=b, unit="pixel")
    sol = Solution.from_reverse_offsets(d2, b, 0.00547, 0.0, filter="L")
    path = write_astromet(tmp_path / "am.fits", sol, precision="double")
    flt = read_astromet(path)["L"]
    assert flt.poly2[0][2] == pytest.approx(1e-6, rel=1e-9)
    assert flt.poly2[1][35] == pytest.approx(1e-21, rel=1e-6)
    others = np.delete(flt.poly2[0], 2)
    assert np.max(np.abs(others)) < 1e-12
    assert np.array_equal(from_astromet(flt.poly2[1])[7, 0], flt.poly2[1][35])
