"""Star lists of any length (read and written in blocks) and input covariances that are not
positive semi-definite (issue #19)."""
import subprocess
import sys

import numpy as np
import pytest
from astropy.table import Table

from astrocal.correct import open_solution
from astrocal.correct.starlist import (InvalidCovarianceError, correct_positions,
                                       correct_star_list, correct_star_list_file)


def _list(n, seed=1, rho=0.3):
    rng = np.random.default_rng(seed)
    sx, sy = rng.uniform(0.01, 0.03, n), rng.uniform(0.01, 0.03, n)
    # names that grow longer down the list, some stars beyond the detector's margin
    t = Table({"name": [f"s{k}" for k in range(n)], "x": rng.uniform(-6.0, 262.0, n),
               "y": rng.uniform(0.0, 255.0, n), "sigma_x": sx, "sigma_y": sy,
               "cov_xy": rho * sx * sy, "flux": rng.uniform(1.0, 2.0, n)})
    t["x"].unit = "pix"
    t.meta["origin"] = "test list"
    return t


@pytest.mark.parametrize("fin", ["ecsv", "fits", "csv"])
def test_chunked_output_equals_the_one_shot_bit_for_bit(small_files, tmp_path, fin):
    ev = open_solution(small_files["astromet"], filter_id="L")
    src = tmp_path / f"in.{fin}"
    _list(5500).write(src)
    for fout in ("ecsv", "fits", "csv"):
        once, blocks = tmp_path / f"once.{fout}", tmp_path / f"blocks.{fout}"
        correct_star_list(src, ev, once)
        n = correct_star_list_file(src, ev, blocks, chunk_rows=1000)
        assert blocks.read_bytes() == once.read_bytes(), (fin, fout)
        t = Table.read(once)
        assert n["n"] == 5500 and n["chunks"] >= 6
        assert n["n_outside"] == int((t["domain_flag"] == 2).sum()) > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [src.name] + [f"{k}.{f}" for k in ("once", "blocks") for f in ("ecsv", "fits", "csv")])


def test_csv_whose_column_types_change_down_the_file(small_files, tmp_path):
    """Integers first, reals later (and longer names): read again with the widened types,
    so the output equals the one-shot one."""
    t = _list(3000)
    t["flux"] = np.where(np.arange(3000) < 2500, 7, 7.5)
    t.write(tmp_path / "in.csv")
    ev = open_solution(small_files["sip"])
    correct_star_list(tmp_path / "in.csv", ev, tmp_path / "once.fits")
    correct_star_list_file(tmp_path / "in.csv", ev, tmp_path / "blocks.fits", chunk_rows=1000)
    assert (tmp_path / "blocks.fits").read_bytes() == (tmp_path / "once.fits").read_bytes()


def test_not_positive_semidefinite_input_refused_with_rows_and_columns(small_files, tmp_path):
    t = _list(200, rho=0.0)
    bad = np.arange(200) % 3 == 1
    t["cov_xy"][bad] = 1.5 * t["sigma_x"][bad] * t["sigma_y"][bad]
    t.write(tmp_path / "in.ecsv")
    ev = open_solution(small_files["astromet"], filter_id="L")
    msg = (r"in.ecsv: 67 row\(s\) of data rows 0 to 199 have a position covariance that is not positive semi-definite "
           r"\(\|cov_xy\| > sigma_x \* sigma_y\), e.g. rows \[1, 4, 7, 10, 13\]")
    with pytest.raises(InvalidCovarianceError, match=msg):
        correct_star_list(tmp_path / "in.ecsv", ev, tmp_path / "a.ecsv")
    with pytest.raises(InvalidCovarianceError, match=r"in.ecsv: 20 row\(s\) of data rows 0 to 59 have a position covariance "
                       r"that is not positive semi-definite .*e.g. rows \[1, 4, 7, 10, 13\]"):
        correct_star_list_file(tmp_path / "in.ecsv", ev, tmp_path / "b.ecsv", chunk_rows=60)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.ecsv"]
    # asked for: those rows are corrected with a NaN uncertainty, the others as before
    out = correct_star_list(tmp_path / "in.ecsv", ev, invalid_cov="nan")
    ok = ~bad & (out["domain_flag"] < 2)
    inside = out["domain_flag"] < 2
    assert np.all(np.isnan(out["sigma_x_lin"][bad])) and np.all(np.isfinite(out["x_lin"][bad & inside]))
    assert np.all(np.isfinite(out["sigma_x_lin"][ok]))
    assert out.meta["astrocal_correct"]["n_invalid_input_cov"] == int((bad & inside).sum())


def test_output_covariances_are_positive_semidefinite(small_files):
    """Input correlations up to +-1 exactly (and rounding beyond it) give PSD outputs."""
    ev = open_solution(small_files["astromet"], filter_id="L")
    rng = np.random.default_rng(3)
    n = 2000
    x, y = rng.uniform(0, 255, n), rng.uniform(0, 255, n)
    sx, sy = rng.uniform(1e-3, 0.5, n), rng.uniform(1e-3, 0.5, n)
    rho = rng.choice([-1.0, 1.0, 0.999999], n) * (1 + rng.uniform(0, 1e-12, n))
    for sol in ("astromet", "sip"):
        res = correct_positions(open_solution(small_files[sol], filter_id="L") if sol == "astromet"
                                else open_solution(small_files[sol]), x, y, sx, sy, rho * sx * sy)
        c = res.cov
        assert np.all(c[:, 0, 0] >= 0) and np.all(c[:, 1, 1] >= 0)
        assert np.all(c[:, 0, 1] ** 2 <= c[:, 0, 0] * c[:, 1, 1]), sol
    assert ev.kind == "astromet"


def test_cli_refuses_bad_covariance_names_file_and_column(small_files, tmp_path):
    t = _list(200, rho=0.0)
    t.rename_column("cov_xy", "xy_cov")
    t["xy_cov"][[5, 9]] = 2.0 * t["sigma_x"][[5, 9]] * t["sigma_y"][[5, 9]]
    t.write(tmp_path / "in.fits")
    cmd = [sys.executable, "-c", "import sys; from astrocal.cli import main; sys.exit(main())",
           "correct", str(tmp_path / "in.fits"), "--solution", str(small_files["sip"]),
           "--out", str(tmp_path / "o" / "out.fits"), "--chunk-rows", "50"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 1
    assert ("in.fits: 2 row(s) of data rows 0 to 49 have a position covariance that is not positive semi-definite "
            "(|xy_cov| > sigma_x * sigma_y), e.g. rows [5, 9]") in proc.stderr
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["in.fits"]
    proc = subprocess.run(cmd + ["--invalid-cov", "nan"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "2 of 200 positions have a covariance (sigma_x, sigma_y, xy_cov)" in proc.stderr
    out = Table.read(tmp_path / "o" / "out.fits", mask_invalid=False)
    assert np.isnan(out["sigma_x_lin"][[5, 9]]).all() and np.isfinite(out["sigma_x_lin"][:5]).all()
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["in.fits", "o", "out.fits"]


@pytest.mark.parametrize("layout", ["ascii.commented_header", "ascii.basic", "ascii.no_header"])
def test_plain_text_lists_are_read_in_blocks_too(small_files, tmp_path, layout):
    """A plain text list (as StarFinder or HST users write them: names in a comment line, in
    a plain line, or none) is read in blocks like ECSV: the output equals the one-shot one."""
    ev = open_solution(small_files["astromet"], filter_id="L")
    src = tmp_path / "in.txt"
    t = _list(5500)
    t.meta = {}
    cols = {}
    if layout == "ascii.no_header":  # StarFinder's order: x y flux sigma_x sigma_y, then cov_xy
        t = t["x", "y", "flux", "sigma_x", "sigma_y", "cov_xy"]
        cols = dict(cov_xy_col="col6")
    t.write(src, format=layout)
    for fout in ("ecsv", "fits"):
        once, blocks = tmp_path / f"once.{fout}", tmp_path / f"blocks.{fout}"
        correct_star_list(src, ev, once, **cols)
        n = correct_star_list_file(src, ev, blocks, chunk_rows=1000, **cols)
        assert blocks.read_bytes() == once.read_bytes(), (layout, fout)
        assert n["n"] == 5500 and n["chunks"] >= 6
