"""Tests of astrocal.sky.starlist: reading users' star lists into 0-based tables."""
import numpy as np
import pytest
import astropy.units as u
from astropy.io import fits
from astropy.table import Table

from astrocal.sky.starlist import DAOPHOT_ZERO_POINT, StarListError, read_star_list

DAO_HEADER = (" NL    NX    NY  LOWBAD HIGHBAD  THRESH     AP1  PH/ADU  RNOISE    FRAD\n"
              "  1  2048  2048   -50.0 30000.0   30.00    3.00    5.00    2.00    2.50\n"
              "\n")

IRAF_COO = """#K IRAF       = NOAO/IRAFV2.16          version    %-23s
#K TASK       = daofind                 name       %-23s
#N XCENTER   YCENTER   MAG      SHARPNESS   SROUND      GROUND      ID         \\
#U pixels    pixels    #        #           #           #           #          \\
#F %-13.3f   %-10.3f   %-9.3f   %-12.3f     %-12.3f     %-12.3f     %-6d       \\
#
   100.500   200.250   -1.234   0.512       0.01        0.02        1
   300.000   400.000   INDEF    0.512       0.01        0.02        2
"""

IRAF_ALS = """#K IRAF       = NOAO/IRAFV2.16          version    %-23s
#K TASK       = allstar                 name       %-23s
#N ID    XCENTER   YCENTER   MAG         MERR          MSKY           NITER    \\
#U ##    pixels    pixels    magnitudes  magnitudes    counts         ##       \\
#F %-9d  %-10.3f   %-10.3f   %-12.3f     %-14.3f       %-15.7g        %-6d     \\
#
#N         SHARPNESS    CHI         PIER  PERROR                                \\
#U         ##           ##          ##    perrors                               \\
#F         %-23.3f      %-12.3f     %-6d  %-13s
#
1        100.500   200.250   15.000       0.010         100.0           3       \\
         0.012        0.98        0     No_error
2        300.000   400.000   16.000       0.020         101.0           4       \\
         0.013        1.02        0     No_error
"""


def test_ecsv_zero_based_with_errors(tmp_path):
    t = Table({"x": [10.0, 20.5], "y": [5.0, 7.25], "flux": [100.0, 50.0],
               "sigma_x": [0.1, 0.2], "sigma_y": [0.15, 0.25]})
    p = tmp_path / "stars.ecsv"
    t.write(p)
    s = read_star_list(p)
    assert s["x"].unit == u.pix
    np.testing.assert_allclose(s["x"].value, [10.0, 20.5])
    np.testing.assert_allclose(s["y"].value, [5.0, 7.25])
    np.testing.assert_allclose(s["flux"], [100.0, 50.0])
    np.testing.assert_allclose(s["sigma_x"].value, [0.1, 0.2])
    np.testing.assert_allclose(s["sigma_y"].value, [0.15, 0.25])
    assert s.meta["one_based_input"] is False
    assert s.meta["format"] == "ecsv"
    assert s.meta["columns"]["x"] == "x"


def test_ecsv_one_based_converts(tmp_path):
    p = tmp_path / "stars.ecsv"
    Table({"x": [1.0, 2048.0], "y": [1.0, 10.0], "flux": [1.0, 2.0]}).write(p)
    s = read_star_list(p, one_based=True)
    np.testing.assert_allclose(s["x"].value, [0.0, 2047.0])
    np.testing.assert_allclose(s["y"].value, [0.0, 9.0])
    assert "1-based" in s.meta["note"]


def test_fits_photutils_names(tmp_path):
    t = Table({"id": [1, 2], "x_fit": [3.0, 4.0], "y_fit": [5.0, 6.0], "flux_fit": [7.0, 8.0],
               "x_err": [0.1, 0.1], "y_err": [0.2, 0.2]})
    p = tmp_path / "psfphot.fits"
    t.write(p)
    s = read_star_list(p)
    assert s.meta["columns"] == {"x": "x_fit", "y": "y_fit", "flux": "flux_fit", "sigma_x": "x_err",
                                 "sigma_y": "y_err"}
    np.testing.assert_allclose(s["x"].value, [3.0, 4.0])
    np.testing.assert_allclose(s["sigma_y"].value, [0.2, 0.2])
    assert list(s["id"]) == [1, 2]


def test_sextractor_names_are_one_based(tmp_path):
    p = tmp_path / "sex.fits"
    Table({"X_IMAGE": [1.0, 11.0], "Y_IMAGE": [1.0, 21.0], "FLUX_AUTO": [5.0, 6.0]}).write(p)
    s = read_star_list(p, flux_col="FLUX_AUTO")
    np.testing.assert_allclose(s["x"].value, [0.0, 10.0])
    assert s.meta["one_based_input"] is True
    s0 = read_star_list(p, flux_col="FLUX_AUTO", one_based=False)
    np.testing.assert_allclose(s0["x"].value, [1.0, 11.0])


def test_plain_text_default_columns(tmp_path):
    p = tmp_path / "starfinder.txt"
    p.write_text("# StarFinder: x y flux sx sy sf corr\n"
                 "10.5 20.5 100 0.05 0.06 1 0.9\n"
                 "30 40 200 0.07 0.08 2 0.95\n")
    s = read_star_list(p)
    np.testing.assert_allclose(s["x"].value, [10.5, 30.0])
    np.testing.assert_allclose(s["flux"], [100.0, 200.0])
    assert "sigma_x" not in s.colnames
    s = read_star_list(p, sigma_x_col=3, sigma_y_col=4)
    np.testing.assert_allclose(s["sigma_x"].value, [0.05, 0.07])
    np.testing.assert_allclose(s["sigma_y"].value, [0.06, 0.08])
    # a stated column choice (0-based indices), 1-based positions
    s = read_star_list(p, x_col=1, y_col=0, flux_col=2, one_based=True)
    np.testing.assert_allclose(s["x"].value, [19.5, 39.0])
    np.testing.assert_allclose(s["y"].value, [9.5, 29.0])


def test_plain_text_with_header_names(tmp_path):
    p = tmp_path / "list.dat"
    p.write_text("xc yc counts\n1 2 3\n4 5 6\n")
    with pytest.raises(StarListError, match=r"list\.dat.*star x position.*x_col"):
        read_star_list(p)
    s = read_star_list(p, x_col="xc", y_col="yc", flux_col="counts")
    np.testing.assert_allclose(s["y"].value, [2.0, 5.0])
    np.testing.assert_allclose(s["flux"], [3.0, 6.0])


def test_daophot_ii_als(tmp_path):
    p = tmp_path / "frame.als"
    p.write_text(DAO_HEADER
                 + "      1  101.000  201.500   15.000   0.010   100.0      3.    0.98   0.012\n"
                 + "      2 1024.500    1.000   17.500   0.050   101.0      4.    1.02  -0.020\n"
                 + "      3   50.000   60.000   99.999   9.999   101.0      4.    1.02  -0.020\n")
    s = read_star_list(p)
    assert s.meta["format"] == "daophot"
    assert s.meta["one_based_input"] is True
    np.testing.assert_allclose(s["x"].value, [100.0, 1023.5, 49.0])
    np.testing.assert_allclose(s["y"].value, [200.5, 0.0, 59.0])
    np.testing.assert_allclose(s["flux"][:2], 10 ** (-0.4 * (np.array([15.0, 17.5]) - DAOPHOT_ZERO_POINT)))
    assert np.isnan(s["flux"][2])        # 99.999: failed photometry
    np.testing.assert_allclose(s["flux_err"][0], s["flux"][0] * 0.010 * np.log(10) / 2.5)
    assert list(s["id"]) == [1, 2, 3]
    # 0-based on request
    s0 = read_star_list(p, one_based=False)
    np.testing.assert_allclose(s0["x"].value, [101.0, 1024.5, 50.0])


def test_daophot_ii_coo(tmp_path):
    p = tmp_path / "frame.coo"
    p.write_text(DAO_HEADER + "      1  11.000  21.000   -2.500   0.600   0.010   0.020\n")
    s = read_star_list(p)
    np.testing.assert_allclose([s["x"].value[0], s["y"].value[0]], [10.0, 20.0])


def test_iraf_daophot(tmp_path):
    p = tmp_path / "frame.coo.1"
    p.write_text(IRAF_COO)
    s = read_star_list(p)
    assert s.meta["format"] == "iraf"
    np.testing.assert_allclose(s["x"].value, [99.5, 299.0])
    np.testing.assert_allclose(s["y"].value, [199.25, 399.0])
    assert np.isnan(s["flux"][1])        # INDEF magnitude
    p = tmp_path / "frame.als.1"
    p.write_text(IRAF_ALS)
    s = read_star_list(p)
    np.testing.assert_allclose(s["x"].value, [99.5, 299.0])
    np.testing.assert_allclose(s["flux"][0] / s["flux"][1], 10 ** 0.4)
    assert "flux_err" in s.colnames


def test_errors_name_file_and_column(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere"):
        read_star_list(tmp_path / "nothere.ecsv")
    p = tmp_path / "bad.ecsv"
    Table({"xpos": [1.0], "y": [2.0]}).write(p)
    with pytest.raises(StarListError, match=r"bad\.ecsv.*x position.*xpos"):
        read_star_list(p)
    with pytest.raises(StarListError, match=r"bad\.ecsv.*no column 'flux_psf'"):
        read_star_list(p, x_col="xpos", flux_col="flux_psf")
    p = tmp_path / "nan.ecsv"
    Table({"x": [1.0, np.nan, 3.0], "y": [2.0, 3.0, 4.0]}).write(p)
    with pytest.raises(StarListError, match=r"nan\.ecsv.*rows \[1\]"):
        read_star_list(p)
    p = tmp_path / "half.ecsv"
    Table({"x": [1.0], "y": [2.0], "sigma_x": [0.1]}).write(p)
    with pytest.raises(StarListError, match=r"half\.ecsv.*both an x and a y"):
        read_star_list(p)
    p = tmp_path / "neg.ecsv"
    Table({"x": [1.0], "y": [2.0], "sigma_x": [-0.1], "sigma_y": [0.1]}).write(p)
    with pytest.raises(StarListError, match=r"neg\.ecsv.*sigma_x.*negative"):
        read_star_list(p)
    p = tmp_path / "unit.ecsv"
    Table({"x": [1.0] * u.arcsec, "y": [2.0] * u.arcsec}).write(p)
    with pytest.raises(StarListError, match=r"unit\.ecsv.*unit 'arcsec'"):
        read_star_list(p)
    p = tmp_path / "short.txt"
    p.write_text("1 2\n3 4\n")
    with pytest.raises(StarListError, match=r"short\.txt.*column index 5"):
        read_star_list(p, flux_col=5)
    p = tmp_path / "empty.ecsv"
    Table({"x": np.zeros(0), "y": np.zeros(0)}).write(p)
    with pytest.raises(StarListError, match=r"empty\.ecsv.*no rows"):
        read_star_list(p)
    p = tmp_path / "frame.als"
    p.write_text("this is not daophot\n1 2 3\n")
    with pytest.raises(StarListError, match=r"frame\.als.*DAOPHOT"):
        read_star_list(p)
    p = tmp_path / "garbage.fits"
    p.write_bytes(b"not a fits file at all")
    with pytest.raises(StarListError, match=r"garbage\.fits"):
        read_star_list(p)


def test_fits_image_is_not_a_star_list(tmp_path):
    p = tmp_path / "image.fits"
    fits.PrimaryHDU(np.zeros((4, 4))).writeto(p)
    with pytest.raises(StarListError, match=r"image\.fits"):
        read_star_list(p)
