"""The fit's source tables are validated as the measure stage writes them (issue 19):
a negative or NaN sigma, a singular covariance, or a position off the detector is refused
with a named error (the table and its row), never fitted."""
import numpy as np
import pytest
from astropy.table import Table

from astrocal.model.data import DataError, lab_points_from_tables, sky_points_from_tables

DOMAIN = (-0.5, 767.5, -0.5, 767.5)


def tables(n=6):
    """Two plain source tables of a 768 x 768 detector and a 6-hole mask (written here, not
    by astrocal's measure stage)."""
    rng = np.random.default_rng(3)
    out = []
    for _ in range(2):
        out.append(Table({"hole_id": np.arange(n), "x": rng.uniform(50, 700, n), "y": rng.uniform(50, 700, n),
                          "sigma_x": np.full(n, 0.01), "sigma_y": np.full(n, 0.012), "cov_xy": np.zeros(n)}))
    return out


def assemble(tabs):
    xy = np.random.default_rng(1).uniform(-1, 1, (6, 2))
    return lab_points_from_tables(tabs, xy, np.arange(6), 3.3, DOMAIN, 5.47e-3, [(0.0, 0.0), (0.1, 0.0)],
                                  [2e-3, 2e-3], exposure_names=["g0", "g1"])


def test_good_tables_are_assembled():
    pts = assemble(tables())
    assert pts.n_points == 12


@pytest.mark.parametrize("column, row, value, message", [
    ("sigma_x", 2, -0.01, r"g1: row 2: sigma_x = -0.01 \(1 such row\(s\)\); sigmas must be finite and positive"),
    ("sigma_y", 4, np.nan, r"g1: row 4: sigma_y = nan"),
    ("cov_xy", 1, 0.5, r"g1: row 1: cov_xy = 0.5 .*positive definite"),
    ("x", 3, 5000.0, r"g1: row 3: position \(5000, .*\) px is not on the detector \(-0.5, 767.5, -0.5, 767.5\)"),
    ("y", 0, -300.0, r"g1: row 0: position \(.*, -300\) px is not on the detector"),
])
def test_bad_rows_are_named(column, row, value, message):
    tabs = tables()
    tabs[1][column][row] = value
    with pytest.raises(DataError, match=message):
        assemble(tabs)


def test_flagged_or_unidentified_rows_are_not_checked():
    """Rows the fit leaves out (unidentified, rejected by a flag) may hold anything."""
    tabs = tables()
    tabs[0]["hole_id"][1] = -1
    tabs[0]["sigma_x"][1] = -1.0
    tabs[0]["x"][1] = 9000.0
    assert assemble(tabs).n_points == 11


def test_sky_tables_are_checked_too():
    from types import SimpleNamespace

    t = Table({"star": ["a", "b"], "x": [100.0, 4000.0], "y": [100.0, 200.0], "sigma_x": [0.01, 0.01],
               "sigma_y": [0.01, 0.01]})
    fp = SimpleNamespace(names=["a", "b"], jacobian=np.eye(2), cov=np.broadcast_to(np.eye(2) * 1e-6, (2, 2, 2)))
    with pytest.raises(DataError, match=r"gc_00: row 1: position \(4000, 200\) px is not on the detector"):
        sky_points_from_tables([t], [fp], DOMAIN, 5.47e-3, exposure_names=["gc_00"])
