"""The source-table contract (:mod:`astrocal.sources`): every flag bit defined once, the
stages agree with it, and the readers name the file and the column at fault."""
import ast
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table

import astrocal
from astrocal import sources
from astrocal.errors import AstrocalError, MeasureError

SRC = Path(astrocal.__file__).resolve().parent

#: modules whose FLAG_* names are another table's own flag set, not the source tables'
OTHER_FLAG_SETS = {
    "correct/starlist.py",  # inside / margin / outside of a corrected star list
}


def test_flag_bits_are_distinct_powers_of_two_and_all_named():
    bits = {name: getattr(sources, name) for name in sources.__all__
            if name.startswith("FLAG_") and name != "FLAG_NAMES"}
    values = list(bits.values())
    assert len(set(values)) == len(values)
    assert all(v > 0 and v & (v - 1) == 0 for v in values)
    assert set(sources.FLAG_NAMES) == set(values)
    assert set(sources.CENTROID_FLAG_NAMES) < set(sources.LAB_FLAG_NAMES) < set(sources.FLAG_NAMES)
    assert sources.FLAGS_REJECT_SKY == sources.FLAGS_REJECT | sources.FLAG_BLEND
    assert sources.decode_flags(sources.FLAG_EDGE | sources.FLAG_BLEND) == ["near_edge", "blend"]


def test_stages_take_the_contract_from_one_place():
    from astrocal.image import centroid
    from astrocal.lab import measure as lab_measure
    from astrocal.model import data
    from astrocal.sky import measure as sky_measure

    assert data.DEFAULT_REJECT_FLAGS == lab_measure.FLAGS_REJECT == sources.FLAGS_REJECT
    assert data.SKY_BLEND_FLAG == sky_measure.FLAG_BLEND == sources.FLAG_BLEND
    assert sky_measure.FLAGS_REJECT == sources.FLAGS_REJECT_SKY
    assert sky_measure.FLAG_NAMES is sources.FLAG_NAMES
    assert lab_measure.FLAG_NAMES is sources.LAB_FLAG_NAMES
    assert centroid.FLAG_NAMES is sources.CENTROID_FLAG_NAMES
    assert lab_measure.SourceTableError is sources.SourceTableError
    assert issubclass(sources.SourceTableError, MeasureError) and issubclass(MeasureError, AstrocalError)


def test_no_flag_bit_is_defined_outside_the_contract():
    """A ``FLAG_<NAME> = <number>`` (or a sum or union of numbers) anywhere but in
    :mod:`astrocal.sources` is a second definition of a bit; so is a reject set written
    as literals."""
    found = []
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC).as_posix()
        if rel == "sources.py" or rel in OTHER_FLAG_SETS or rel.startswith("lms/"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Assign):
                continue
            names = [t.id for t in node.targets if isinstance(t, ast.Name)]
            if not any("FLAG" in n for n in names):
                continue
            literal = all(isinstance(n, (ast.Constant, ast.BinOp)) for n in ast.walk(node.value)
                          if not isinstance(n, (ast.operator,)))
            if literal:
                found.append(f"{rel}:{node.lineno} {', '.join(names)}")
    assert not found, f"flag bits defined outside astrocal.sources: {found}"


def test_read_sky_table_names_the_file_and_the_column(tmp_path):
    path = tmp_path / "hand_written.ecsv"
    Table({"star": ["a"], "x": [1.0], "y": [2.0], "sigma_x": [0.1], "sigma_y": [0.1],
           "flux": [3.0], "flags": [0]}, meta={"kind": "sky"}).write(path, format="ascii.ecsv")
    with pytest.raises(sources.SourceTableError, match=r"hand_written.ecsv: not a sky table: missing column\(s\) cov_xy"):
        sources.read_sky_table(path)
    t = Table.read(path, format="ascii.ecsv")
    t["cov_xy"] = [0.0]
    t.meta["kind"] = "lab"
    t.write(path, format="ascii.ecsv", overwrite=True)
    with pytest.raises(sources.SourceTableError, match=r"hand_written.ecsv: not a sky table: meta 'kind' is 'lab'"):
        sources.read_sky_table(path)
    t.meta["kind"] = "sky"
    t["star"] = [""]
    t.write(path, format="ascii.ecsv", overwrite=True)
    back = sources.read_sky_table(path)
    assert back["star"][0] == "" and back["star"].dtype.kind == "U"


def test_validate_source_table_fills_optional_columns_and_refuses_bad_covariance():
    t = Table({"hole_id": [3, -1], "x": [10.0, 20.0], "y": [5.0, 6.0], "sigma_x": [0.1, 0.1],
               "sigma_y": [0.2, 0.2]})
    out = sources.validate_source_table(t, "mine.ecsv")
    assert list(out.colnames[:len(sources.OUTPUT_COLUMNS)]) == list(sources.OUTPUT_COLUMNS)
    assert out.meta["filled_columns"] == list(sources.OPTIONAL_COLUMNS)
    assert np.all(out["flags"] == 0) and np.all(np.isnan(out["flux"]))
    t["cov_xy"] = [0.05, 0.0]  # |cov| >= sigma_x sigma_y = 0.02
    with pytest.raises(sources.SourceTableError, match=r"mine.ecsv: column 'cov_xy' .* rows \[0\]"):
        sources.validate_source_table(t, "mine.ecsv")
