"""Tests of the shipped mask tables and of astrocal.lab.mask."""
from pathlib import Path

import numpy as np
import pytest
import astropy.units as u
from astropy.table import Table

from astrocal.instruments import get_instrument
from astrocal.lab.mask import (
    Mask, MaskError, get_mask, list_masks, load_mask, mask_from_arrays, mask_path, read_irdb_mask,
)

PROJECT = Path(__file__).resolve().parents[2]
SHIPPED = ["metis_wcu_fp_mask5", "metis_wcu_fp_mask5_v20250114"]

# Facts copied from AstarVienna/irdb METIS/wcu/fp_mask_grid_lm.dat (commit f0a5f306, GPL-3.0):
# (row in the file = hole_id, x arcsec, y arcsec)
SOURCE_ROWS = [
    (1, 1.36, 1.36), (4, 1.36, 0.00), (5, -0.320850, 0.320850), (16, -0.155250, -0.010350),
    (28, 0.341550, -0.341550), (29, -1.36, 0.00), (33, -6.44, 6.44), (72, -8.79, 0.00),
    (75, 12.88, 0.00), (85, 7.93, -9.78),
]
MARKER_ARCSEC = (-0.155250, -0.175950)
FINE_PITCH_ARCSEC = 0.1656


@pytest.fixture(scope="module")
def mask5():
    return get_mask("metis_wcu_fp_mask5")


def test_shipped_masks_listed_and_identical_to_lab_copies():
    names = list_masks()
    for name in SHIPPED:
        assert name in names
        lab = PROJECT / "lab" / f"{name}.ecsv"
        assert lab.is_file(), f"{lab} missing"
        assert lab.read_bytes() == mask_path(name).read_bytes(), f"{lab} differs from the package copy"


def test_mask5_columns_units_and_provenance(mask5):
    t = mask5.table
    assert len(mask5) == 85
    assert t["x_mm"].unit == u.mm and t["y_mm"].unit == u.mm and t["diameter_um"].unit == u.um
    assert t["hole_id"].dtype.kind == "i"
    assert sorted(t["hole_id"]) == list(range(1, 86))
    np.testing.assert_allclose(mask5.diameter_um, 25.0, atol=0.05)
    assert mask5.mask_scale == 3.319 * u.mm / u.arcsec
    prov = mask5.meta["provenance"]
    assert prov["repository"].startswith("AstarVienna/irdb")
    assert len(prov["commit"]) == 40 and int(prov["commit"], 16)
    assert prov["file"] == "METIS/wcu/fp_mask_grid_lm.dat"
    assert "GPL-3.0" in prov["licence"]
    assert "Czoske" in prov["authors"]
    groups = dict(zip(*np.unique(np.asarray(t["group"]), return_counts=True)))
    assert groups == {"fine": 24, "inner": 8, "coarse": 39, "outer": 14}


def test_mask5_positions_match_source(mask5):
    xy = mask5.xy_arcsec()
    ids = list(mask5.hole_id)
    for hid, x, y in SOURCE_ROWS:
        np.testing.assert_allclose(xy[ids.index(hid)], [x, y], atol=1e-6)
    # mm = arcsec * 3.319
    np.testing.assert_allclose(mask5.xy_mm[ids.index(1)], [1.36 * 3.319] * 2, atol=1e-6)
    q = mask5.positions_arcsec()
    assert q.unit == u.arcsec and q.shape == (85, 2)


def test_fine_grid_marker_is_the_missing_cell(mask5):
    fine = np.asarray(mask5.table["group"]) == "fine"
    xy = mask5.xy_arcsec()[fine]
    origin = xy.min(axis=0)
    cells = np.rint((xy - origin) / FINE_PITCH_ARCSEC).astype(int)
    np.testing.assert_allclose(origin + cells * FINE_PITCH_ARCSEC, xy, atol=1e-6)
    occupied = {tuple(c) for c in cells}
    assert len(occupied) == 24
    full = {(i, j) for i in range(5) for j in range(5)}
    (missing,) = full - occupied
    marker = np.asarray(MARKER_ARCSEC)
    np.testing.assert_allclose(origin + np.array(missing) * FINE_PITCH_ARCSEC, marker, atol=1e-6)
    np.testing.assert_allclose(mask5.marker_arcsec(), marker, atol=1e-6)
    np.testing.assert_allclose(mask5.orientation_marker_mm, marker * 3.319, atol=1e-6)
    pitches = mask5.meta["pitches"]
    assert pitches["fine_arcsec"] == FINE_PITCH_ARCSEC
    assert abs(pitches["fine_mm"] - 0.550) < 1e-3


def test_holes_in_imager_fields(mask5):
    # README facts: 48 holes in the IMG_LM field (24 fine), 71 in IMG_N
    lm = mask5.in_field(get_instrument("metis-lm").field_of_view)
    assert len(lm) == 48
    assert np.sum(np.asarray(lm.table["group"]) == "fine") == 24
    assert len(mask5.in_field(get_instrument("metis-n").field_of_view)) == 71
    # a field offset by the chopper: (10 x 10) arcsec centred on (4.29, 0)
    sub = mask5.in_field(10 * u.arcsec, center=[4.29, 0.0] * u.arcsec)
    assert np.all(np.abs(sub.xy_arcsec()[:, 0] - 4.29) <= 5.0 + 1e-9)
    assert 0 < len(sub) < 85
    # a field in the mask plane (mm)
    # +-1 mm holds the central 3x3 cells of the fine grid, one of which is the marker
    assert len(mask5.in_field(2 * u.mm)) == 8


def test_old_version(mask5):
    old = get_mask("metis_wcu_fp_mask5_v20250114")
    assert len(old) == 62
    assert old.orientation_marker_mm is None
    assert np.any(np.all(np.abs(old.xy_mm) < 1e-9, axis=1)), "the 2025-01 version has a hole at (0, 0)"
    assert old.meta["provenance"]["commit"].startswith("118978c")
    # the coarse holes of the two versions coincide
    coarse_new = {tuple(p) for p in np.round(mask5.xy_mm[np.asarray(mask5.table["group"]) == "coarse"], 6)}
    coarse_old = {tuple(p) for p in np.round(old.xy_mm[np.asarray(old.table["group"]) == "coarse"], 6)}
    assert coarse_new == coarse_old


# ---- error handling -------------------------------------------------------------------
def _write(tmp_path, t, name="bad.ecsv"):
    path = tmp_path / name
    t.write(path, format="ascii.ecsv", overwrite=True)
    return path


def _good_table():
    t = Table()
    t["hole_id"] = [1, 2, 3]
    t["x_mm"] = [0.0, 1.0, 2.0] * u.mm
    t["y_mm"] = [0.0, 0.0, 1.0] * u.mm
    t["diameter_um"] = [25.0, 25.0, 25.0] * u.um
    t.meta["mask_scale_mm_per_arcsec"] = 3.319
    return t


def test_load_good_and_converted_units(tmp_path):
    t = _good_table()
    m = load_mask(_write(tmp_path, t, "good.ecsv"))
    assert isinstance(m, Mask) and len(m) == 3
    t["x_mm"] = [0.0, 1000.0, 2000.0] * u.um          # another length unit is converted
    m = load_mask(_write(tmp_path, t, "um.ecsv"))
    np.testing.assert_allclose(m.xy_mm[:, 0], [0, 1, 2])
    np.testing.assert_allclose(m.xy_arcsec()[1], [1 / 3.319, 0.0])


@pytest.mark.parametrize("change, words", [
    (lambda t: t.remove_column("diameter_um"), ["diameter_um", "missing"]),
    (lambda t: setattr(t["x_mm"], "unit", None), ["x_mm", "no unit"]),
    (lambda t: setattr(t["y_mm"], "unit", u.deg), ["y_mm", "deg"]),
    (lambda t: t.__setitem__("hole_id", [1, 2, 2]), ["hole_id", "duplicate", "[2]"]),
    (lambda t: t.__setitem__("x_mm", [0.0, 0.0, 2.0] * u.mm) or t.__setitem__("y_mm", [0.0, 0.0, 1.0] * u.mm),
     ["same position", "(1, 2)"]),
    (lambda t: t.__setitem__("hole_id", [1.5, 2, 3]), ["hole_id", "integer"]),
    (lambda t: t.__setitem__("diameter_um", [25.0, -1.0, 25.0] * u.um), ["diameter_um", "positive"]),
    (lambda t: t.meta.__setitem__("orientation_marker", {"x_mm": 1.0, "y_mm": 0.0}),
     ["orientation_marker", "hole_id 2"]),
])
def test_bad_tables_name_file_and_column(tmp_path, change, words):
    t = _good_table()
    change(t)
    path = _write(tmp_path, t)
    with pytest.raises(MaskError) as err:
        load_mask(path)
    msg = str(err.value)
    assert "bad.ecsv" in msg
    for w in words:
        assert w in msg


def test_missing_file_and_unknown_name(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.ecsv"):
        load_mask(tmp_path / "nope.ecsv")
    (tmp_path / "garbage.ecsv").write_text("not an ecsv file\n")
    with pytest.raises(MaskError, match="garbage.ecsv"):
        load_mask(tmp_path / "garbage.ecsv")
    with pytest.raises(KeyError, match="metis_wcu_fp_mask5"):
        get_mask("no_such_mask")


def test_no_mask_scale_is_a_named_error():
    m = mask_from_arrays([0.0, 1.0], [0.0, 0.0], name="plain")
    with pytest.raises(MaskError, match="mask_scale_mm_per_arcsec"):
        m.xy_arcsec()
    np.testing.assert_allclose(m.xy_arcsec(mask_scale=2 * u.mm / u.arcsec)[1], [0.5, 0.0])


def test_read_irdb_mask(tmp_path):
    src = tmp_path / "fp_mask_test.dat"
    src.write_text(
        "# name : test mask\n# x_unit : arcsec\n# y_unit : arcsec\n# diam_unit : arcsec\n#\n"
        " x   y   diam\n 1.0  0.0  0.007532\n\n-1.0  0.5  0.007532\n"
    )
    m = read_irdb_mask(src, 3.319)
    assert m.name == "test mask" and len(m) == 2
    np.testing.assert_allclose(m.xy_mm, [[3.319, 0.0], [-3.319, 1.6595]])
    np.testing.assert_allclose(m.diameter_um, 25.0, atol=0.01)
    bad = tmp_path / "fp_mask_bad.dat"
    bad.write_text("# x_unit : mm\n x y diam\n 1 0 0.1\n")
    with pytest.raises(MaskError, match="x_unit"):
        read_irdb_mask(bad)


def test_write_round_trip(tmp_path, mask5):
    out = tmp_path / "copy.ecsv"
    mask5.write(out)
    again = load_mask(out)
    np.testing.assert_array_equal(again.xy_mm, mask5.xy_mm)
    assert again.meta["provenance"] == mask5.meta["provenance"]
