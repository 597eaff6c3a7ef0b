"""FITS WCS distortion look-up tables (astrocal.formats.lookup): a field beyond the SIP
polynomial, read back by astropy.wcs (its DistortionLookupTable, as for HST's NPOL files),
reproduces the full field within 1e-3 px in both directions."""
import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from astrocal.formats.lookup import table_nodes, write_wcs_lookup
from astrocal.formats.sip import sip_header

CRVAL = (266.41683, -29.00781)


def ripple(x, y):
    """A field no polynomial holds (arcsec): 0.03 px and 0.02 px ripples of a few hundred
    pixels."""
    s = 5.47e-3
    x, y = np.asarray(x, float), np.asarray(y, float)
    return (0.03 * s * np.sin(x / 170.0 + 0.3) * np.cos(y / 260.0),
            0.02 * s * np.cos(x / 230.0) * np.sin(y / 190.0 + 1.1))


def _expected_world(header, sol, x, y, residual):
    """Sky positions of the full field G + r through the plain TAN of the header (wcslib),
    independent of the SIP and look-up machinery."""
    plain = header.copy()
    for key in list(plain):
        if key.split("_")[0] in ("A", "B", "AP", "BP") or key.startswith(("CPDIS", "DP", "CPERR")):
            del plain[key]
    plain["CTYPE1"], plain["CTYPE2"] = "RA---TAN", "DEC--TAN"
    w_tan = WCS(plain)
    u, v = sol.field(x, y)
    if residual is not None:
        ru, rv = residual(x, y)
        u, v = u + ru, v + rv
    u0, v0 = sol.reference_position
    iwc = np.column_stack([u - u0, v - v0]) / 3600.0
    cd = np.array([[plain["CD1_1"], plain["CD1_2"]], [plain["CD2_1"], plain["CD2_2"]]])
    q = np.linalg.solve(cd, iwc.T).T + [plain["CRPIX1"] - 1, plain["CRPIX2"] - 1]
    return w_tan.wcs_pix2world(q, 0)


def _pixels_off(world_a, world_b, scale_arcsec):
    dra = (world_a[:, 0] - world_b[:, 0]) * np.cos(np.radians(world_b[:, 1]))
    ddec = world_a[:, 1] - world_b[:, 1]
    return np.hypot(dra, ddec) * 3600.0 / scale_arcsec


@pytest.mark.parametrize("step", [16, 32])
def test_astropy_reproduces_the_full_field_both_ways(metis_solution, dense_points, tmp_path, step):
    sol = metis_solution
    header = sip_header(sol, crval=CRVAL)
    path, errors = write_wcs_lookup(tmp_path / "wcs.fits", header, ripple, sol.detector_shape, step=step)
    assert max(errors) < 1e-3
    with fits.open(path) as f:
        assert [h.name for h in f[1:]] == ["WCSDVARR", "WCSDVARR"]
        assert f[0].header["CPDIS1"] == "Lookup" and f[0].header["DP2.EXTVER"] == 2.0
        assert f[0].header["CPERR1"] == pytest.approx(errors[0])
        assert f[1].data.shape == (len(table_nodes(2048, step)),) * 2
        w = WCS(f[0].header, f)
        assert w.cpdis1 is not None and w.cpdis2 is not None
        x, y = dense_points(20000)
        expected = _expected_world(header, sol, x, y, ripple)
        world = w.all_pix2world(np.column_stack([x, y]), 0)
        fwd = _pixels_off(world, expected, sol.plate_scale)
        assert fwd.max() < 1e-3
        back = w.all_world2pix(expected, 0, tolerance=1e-7, maxiter=50)
        assert np.max(np.hypot(back[:, 0] - x, back[:, 1] - y)) < 1e-3
    # the tables matter: the SIP header alone misses the ripple by its size
    sip_only = _pixels_off(WCS(header).all_pix2world(np.column_stack([x, y]), 0), expected, sol.plate_scale)
    assert sip_only.max() > 0.02


def test_overwrite_and_atomicity(metis_solution, tmp_path):
    from astrocal.atomic import ProductExistsError

    header = sip_header(metis_solution, crval=CRVAL)
    path, _ = write_wcs_lookup(tmp_path / "wcs.fits", header, ripple, metis_solution.detector_shape)
    with pytest.raises(ProductExistsError):
        write_wcs_lookup(path, header, ripple, metis_solution.detector_shape)
    write_wcs_lookup(path, header, ripple, metis_solution.detector_shape, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wcs.fits"]
