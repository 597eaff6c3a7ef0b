"""The fit stage finds each exposure's measured table as the measure stage named it."""
from types import SimpleNamespace

import pytest
from astropy.table import Table

from astrocal.model.cli import source_table_path


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
    camp, _ = campaign_in(tmp_path)
    t = tmp_path / "list.ecsv"
    assert source_table_path(camp, t) == t
