"""The fit stage finds each exposure's measured table as the measure stage named it."""
from types import SimpleNamespace

import pytest
from astropy.table import Table

from astrocal.stages.fit_inputs import measured_table_kind, source_table_path


def campaign_in(tmp_path):
    out = tmp_path / "measured"
    out.mkdir()
    return SimpleNamespace(measure=SimpleNamespace(output=out), path=tmp_path / "campaign.toml"), out


def test_renamed_tables_are_found_through_the_summary(tmp_path):
    camp, out = campaign_in(tmp_path)
    a = tmp_path / "night1" / "frame_00.fits"
    b = tmp_path / "night2" / "frame_00.fits"
    for f in (a, b):
        f.parent.mkdir()
        f.write_bytes(b"")
    # two exposures with the same file name: the measure stage prefixes the dataset
    Table({"dataset": ["lab1", "lab2"], "file": [str(a), str(b)],
           "table": ["lab1_frame_00.ecsv", "lab2_frame_00.ecsv"]}).write(out / "summary.ecsv")
    for name in ("lab1_frame_00.ecsv", "lab2_frame_00.ecsv"):
        (out / name).write_text("")
    assert source_table_path(camp, a, "lab1") == out / "lab1_frame_00.ecsv"
    assert source_table_path(camp, b, "lab2") == out / "lab2_frame_00.ecsv"
    # a plain stem without a summary entry, and a missing table named in the error
    c = tmp_path / "other.fits"
    (out / "other.ecsv").write_text("")
    assert source_table_path(camp, c) == out / "other.ecsv"
    with pytest.raises(FileNotFoundError, match="missing.ecsv.*astrocal measure"):
        source_table_path(camp, tmp_path / "missing.fits")


def test_tables_listed_directly_are_used_as_they_are(tmp_path):
    """A measured table is recognised by its columns and metadata, whatever its name."""
    camp, _ = campaign_in(tmp_path)
    lab = tmp_path / "lab_table.ecsv"
    Table({"hole_id": [1, 2], "x": [1.0, 2.0], "y": [3.0, 4.0], "sigma_x": [0.1, 0.1],
           "sigma_y": [0.1, 0.1]}).write(lab)
    sky = tmp_path / "sky_table.ecsv"
    t = Table({"star": ["a", ""], "x": [1.0, 2.0], "y": [3.0, 4.0], "sigma_x": [0.1, 0.1],
               "sigma_y": [0.1, 0.1]})
    t.meta["kind"] = "sky"
    t.write(sky)
    assert measured_table_kind(lab) == "lab" and source_table_path(camp, lab) == lab
    assert measured_table_kind(sky) == "sky" and source_table_path(camp, sky) == sky


def test_star_lists_are_raw_input_whatever_their_extension(tmp_path):
    """An ECSV star list (no matched star names, no 'kind: sky') is raw input like an image:
    its measured table is the measure stage's, and without one the error says to measure."""
    camp, out = campaign_in(tmp_path)
    raw = tmp_path / "night" / "list.ecsv"
    raw.parent.mkdir()
    Table({"x": [1.0, 2.0], "y": [3.0, 4.0], "flux": [10.0, 20.0]}).write(raw)
    other = tmp_path / "stars.ecsv"  # a 'star' column of ids, but not a measured sky table
    Table({"star": ["s1", "s2"], "x": [1.0, 2.0], "y": [3.0, 4.0], "sigma_x": [0.1, 0.1],
           "sigma_y": [0.1, 0.1]}).write(other)
    for path in (raw, other):
        assert measured_table_kind(path) is None
        with pytest.raises(FileNotFoundError, match=f"no measured source table for {path.name}.*astrocal measure"):
            source_table_path(camp, path)
    # once measured, the summary names its table
    Table({"dataset": ["gc"], "file": [str(raw)], "table": ["list.ecsv"]}).write(out / "summary.ecsv")
    (out / "list.ecsv").write_text("")
    assert source_table_path(camp, raw, "gc") == out / "list.ecsv"
    # text, missing and non-table files are not measured tables
    (tmp_path / "list.txt").write_text("1 2 3\n")
    assert measured_table_kind(tmp_path / "list.txt") is None
    assert measured_table_kind(tmp_path / "absent.ecsv") is None
