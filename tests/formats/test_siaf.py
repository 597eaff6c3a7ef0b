import numpy as np
import pytest
from astropy.table import Table

from astrocal.formats.siaf import SiafFormatError, read_siaf, siaf_table, write_siaf



def test_table_layout_and_reverse(metis_solution, dense_points):
    t = siaf_table(metis_solution)
    assert t.colnames == ["siaf_index", "exponent_x", "exponent_y", "Sci2IdlX", "Sci2IdlY",
                          "Idl2SciX", "Idl2SciY"]
    # k = i(i+1)/2 + j is x**(i-j) y**j
    assert list(t["siaf_index"][:6]) == ["00", "10", "11", "20", "21", "22"]
    assert list(t["exponent_x"][:6]) == [0, 1, 0, 2, 1, 0]
    assert list(t["exponent_y"][:6]) == [0, 0, 1, 0, 1, 2]
    assert t["Sci2IdlX"][0] == 0.0 and t["Sci2IdlY"][0] == 0.0
    assert t["Sci2IdlX"][1] == pytest.approx(0.00547, rel=0.02)
    # the reverse maps ideal arcsec back to pixel offsets within its stated round trip
    x, y = dense_points(5000)
    u, v = metis_solution.field(x, y)
    u0, v0 = metis_solution.reference_position
    U, V = u - u0, v - v0
    xr = sum(c * U**p * V**q for c, p, q in zip(t["Idl2SciX"], t["exponent_x"], t["exponent_y"]))
    yr = sum(c * U**p * V**q for c, p, q in zip(t["Idl2SciY"], t["exponent_x"], t["exponent_y"]))
    b = metis_solution.boresight
    err = np.max(np.hypot(xr - (x - b[0]), yr - (y - b[1])))
    assert err < 1e-4
    assert err <= t.meta["Idl2SciRoundTripError_pixel"] * 1.5


def test_round_trip_through_file(tmp_path, metis_solution, dense_points):
    path = write_siaf(tmp_path / "siaf.ecsv", metis_solution)
    back = read_siaf(path)
    x, y = dense_points()
    u1, v1 = metis_solution.field(x, y)
    u2, v2 = back.field(x, y)
    assert np.max(np.hypot(u1 - u2, v1 - v2)) / metis_solution.plate_scale < 1e-9


def test_bad_tables(tmp_path, metis_solution):
    t = siaf_table(metis_solution)
    t2 = t.copy()
    t2.remove_column("Sci2IdlY")
    with pytest.raises(SiafFormatError, match="missing column Sci2IdlY"):
        read_siaf(t2)
    t3 = t.copy()
    del t3.meta["XSciRef"]
    with pytest.raises(SiafFormatError, match="XSciRef"):
        read_siaf(t3)
    t4 = t.copy()
    t4["Sci2IdlX"][3] = np.nan
    with pytest.raises(SiafFormatError, match="NaN"):
        read_siaf(t4)
    t5 = t.copy()
    t5["siaf_index"][4] = "12"
    with pytest.raises(SiafFormatError, match="siaf_index 12"):
        read_siaf(t5)
    # any row order is read by the exponents
    t6 = Table(t[[0, 2, 1] + list(range(3, len(t)))], meta=t.meta)
    back = read_siaf(t6)
    assert np.allclose(back.field.cx, read_siaf(t).field.cx, atol=1e-15)
