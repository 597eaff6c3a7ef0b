import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.wcs import WCS

from astrocal.formats.sip import SipFormatError, read_sip_header, sip_header, write_sip_header



@pytest.fixture(scope="module")
def header(metis_solution):
    return sip_header(metis_solution, crval=(266.41683, -29.00781))


def test_wcslib_evaluates_the_field_forward(metis_solution, header, dense_points):
    """all_pix2world agrees with the TAN projection of G(p) - G(b) to < 1e-3 px.

    The expected sky position is computed by wcslib too, from a plain TAN WCS (no SIP)
    fed with the field's own intermediate coordinates, so both sides share the projection.
    """
    sol = metis_solution
    w = WCS(header)
    x, y = dense_points(40000)
    # include the corners and centre explicitly
    x = np.concatenate([x, [-0.5, 2047.5, -0.5, 2047.5, 1023.5]])
    y = np.concatenate([y, [-0.5, -0.5, 2047.5, 2047.5, 1023.5]])
    world = w.all_pix2world(np.column_stack([x, y]), 0)

    plain = header.copy()
    for key in list(plain):
        if key.split("_")[0] in ("A", "B", "AP", "BP"):
            del plain[key]
    plain["CTYPE1"], plain["CTYPE2"] = "RA---TAN", "DEC--TAN"
    w_tan = WCS(plain)
    u, v = sol.field(x, y)
    u0, v0 = sol.reference_position
    iwc = np.column_stack([u - u0, v - v0]) / 3600.0
    cd = np.array([[plain["CD1_1"], plain["CD1_2"]], [plain["CD2_1"], plain["CD2_2"]]])
    q = np.linalg.solve(cd, iwc.T).T + [plain["CRPIX1"] - 1, plain["CRPIX2"] - 1]
    expected = w_tan.wcs_pix2world(q, 0)
    sep = SkyCoord(*world.T, unit="deg").separation(SkyCoord(*expected.T, unit="deg"))
    err_px = sep.to_value("arcsec") / sol.plate_scale
    assert err_px.max() < 1e-3
    assert err_px.max() < 1e-6  # in fact exact up to rounding: the conversion is exact


def test_wcslib_reverse(metis_solution, header, dense_points):
    """Both the AP/BP polynomial alone and wcslib's all_world2pix come back within 1e-3 px."""
    w = WCS(header)
    x, y = dense_points(40000, seed=1)
    pix = np.column_stack([x, y])
    foc = w.sip_pix2foc(pix, 0)
    back = w.sip_foc2pix(foc, 0)
    assert np.max(np.hypot(*(back - pix).T)) < 1e-3
    assert header["SIPRTERR"] < 1e-3
    world = w.all_pix2world(pix, 0)
    again = w.all_world2pix(world, 0, tolerance=1e-8)
    assert np.max(np.hypot(*(again - pix).T)) < 1e-3


def test_header_contents(metis_solution, header):
    assert header["CTYPE1"] == "RA---TAN-SIP"
    assert header["A_ORDER"] == metis_solution.field.degree
    assert header["CRPIX1"] == pytest.approx(1024.5)
    assert "A_1_0" not in header and "A_2_0" in header
    assert "AP_1_0" in header  # the reverse keeps its linear terms, as astropy writes them


def test_round_trip_through_files(tmp_path, metis_solution, dense_points):
    for name in ("sol.hdr", "sol.fits"):
        path = write_sip_header(tmp_path / name, metis_solution)
        back = read_sip_header(path)
        x, y = dense_points(10000)
        u1, v1 = metis_solution.field(x, y)
        u2, v2 = back.field(x, y)
        assert np.max(np.hypot(u1 - u2, v1 - v2)) / metis_solution.plate_scale < 1e-9
        assert back.filter == "L"
        assert back.detector_shape == (2048, 2048)


def test_bad_headers(tmp_path, header):
    h = header.copy()
    del h["CD2_1"]
    with pytest.raises(SipFormatError, match="missing keyword CD2_1"):
        read_sip_header(h)
    h = header.copy()
    del h["IMAGEW"]
    with pytest.raises(SipFormatError, match="IMAGEW"):
        read_sip_header(h)
    h = header.copy()
    h["CRPIX1"] = "abc"
    with pytest.raises(SipFormatError, match="CRPIX1"):
        read_sip_header(h)
    with pytest.raises(FileNotFoundError, match="none.hdr"):
        read_sip_header(tmp_path / "none.hdr")
