import numpy as np
import pytest

from astrocal.cli import main
from astrocal.formats.astromet import write_astromet
from astrocal.formats.convert import detect_format, read_solutions



def test_cli_chain_of_conversions(tmp_path, metis_solution, high_degree_solution, capsys, dense_points):
    src = write_astromet(tmp_path / "in.fits", [metis_solution, high_degree_solution], precision="double")
    # several filters: a single-filter output needs --filter
    assert main(["convert", str(src), str(tmp_path / "a.hdr")]) == 1
    assert "choose one with --filter" in capsys.readouterr().err
    assert main(["convert", str(src), str(tmp_path / "a.hdr"), "--filter", "L"]) == 0
    assert main(["convert", str(tmp_path / "a.hdr"), str(tmp_path / "b.ecsv")]) == 0
    assert main(["convert", str(tmp_path / "b.ecsv"), str(tmp_path / "c.fits")]) == 0
    assert main(["convert", str(tmp_path / "c.fits"), str(tmp_path / "d.fits"), "--to", "sip"]) == 0
    assert [detect_format(tmp_path / n) for n in ("a.hdr", "b.ecsv", "c.fits", "d.fits")] == \
        ["sip", "siaf", "astromet", "sip"]
    x, y = dense_points(5000)
    u0, v0 = metis_solution.field(x, y)
    for name, tol in (("a.hdr", 1e-9), ("b.ecsv", 1e-9), ("c.fits", 2e-4), ("d.fits", 2e-4)):
        (sol,) = read_solutions(tmp_path / name).values()
        u, v = sol.field(x, y)
        assert np.max(np.hypot(u - u0, v - v0)) / metis_solution.plate_scale < tol, name
    # the output is never overwritten without --overwrite
    before = (tmp_path / "b.ecsv").read_bytes()
    assert main(["convert", str(tmp_path / "a.hdr"), str(tmp_path / "b.ecsv")]) == 1
    assert "file exists" in capsys.readouterr().err
    assert (tmp_path / "b.ecsv").read_bytes() == before
    assert main(["convert", str(tmp_path / "a.hdr"), str(tmp_path / "b.ecsv"), "--overwrite"]) == 0


def test_cli_bad_input(tmp_path, capsys):
    assert main(["convert", str(tmp_path / "missing.fits"), str(tmp_path / "o.ecsv")]) == 1
    assert "missing.fits" in capsys.readouterr().err
    (tmp_path / "x.dat").write_text("1 2 3")
    assert main(["convert", str(tmp_path / "x.dat"), str(tmp_path / "o.ecsv")]) == 1
    assert "cannot tell the format" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["convert", "a", "b", "--to", "nonsense"])
