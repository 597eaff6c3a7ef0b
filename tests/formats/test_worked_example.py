"""The worked example of docs/conventions.md, number by number."""
import numpy as np
import pytest

from astrocal.field import DistortionField
from astrocal.formats.astromet import read_astromet, write_astromet
from astrocal.solution import Solution


def test_barrel_example(tmp_path):
    s, k, b = 0.00547, -1e-9, (1023.5, 1023.5)
    mx = np.zeros((4, 4))
    my = np.zeros((4, 4))
    mx[1, 0] = my[0, 1] = s
    mx[3, 0] = mx[1, 2] = s * k
    my[0, 3] = my[2, 1] = s * k
    field = DistortionField.from_monomials(mx, my, (-0.5, 2047.5, -0.5, 2047.5), origin=b)
    sol = Solution(field, plate_scale=s, rotation=0.0)
    assert sol.boresight == b
    lx, ly = sol.linear_field()(0.0, 0.0)
    assert (lx, ly) == pytest.approx((2.1443, 2.1443), abs=1e-4)
    assert sol.reverse_offsets(0.0, 0.0) == pytest.approx((-2.1443, -2.1443), abs=1e-4)
    path = write_astromet(tmp_path / "barrel.fits", sol, precision="double")
    flt = read_astromet(path)["L"]
    assert flt.header["BORESX"] == 1024.5
    assert flt.poly2[0][21] == pytest.approx(1e-9, rel=1e-9)  # X**3
    assert flt.poly2[0][10] == pytest.approx(1e-9, rel=1e-9)  # X Y**2
    row = flt.table[0]
    assert (row["RAWX"], row["RAWY"]) == (1.0, 1.0)
    assert (row["RAWX_OFF"], row["RAWY_OFF"]) == pytest.approx((-2.1579, -2.1579), abs=1e-4)
