"""Correcting star lists: formats, conventions, uncertainties, domain, bad input."""
import warnings

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from astrocal.cli import main
from astrocal.correct import correct_positions, correct_star_list, open_solution
from astrocal.correct.starlist import FLAG_INSIDE, FLAG_MARGIN, FLAG_OUTSIDE
from astrocal.sky.starlist import StarListError

DAO_HEADER = (" NL    NX    NY  LOWBAD HIGHBAD  THRESH     AP1  PH/ADU  RNOISE    FRAD\n"
              "  1   256   256   -50.0 30000.0   30.00    3.00    5.00    2.00    2.50\n"
              "\n")


@pytest.fixture
def stars(small_files):
    """30 stars inside a 256 x 256 detector, with errors and a covariance column."""
    rng = np.random.default_rng(5)
    n = 30
    t = Table({"name": [f"s{k}" for k in range(n)], "x_0": rng.uniform(0, 255, n),
               "y_0": rng.uniform(0, 255, n), "x_err": rng.uniform(0.01, 0.03, n),
               "y_err": rng.uniform(0.01, 0.03, n)})
    t["cov_xy"] = 0.3 * t["x_err"] * t["y_err"]
    return t


def test_uncertainty_combines_input_and_map(small_files, stars, tmp_path):
    stars.write(tmp_path / "in.ecsv")
    ev = open_solution(small_files["astromet"], filter_id="L")
    t = correct_star_list(tmp_path / "in.ecsv", ev, tmp_path / "out.ecsv")
    x, y = np.asarray(stars["x_0"]), np.asarray(stars["y_0"])
    e = ev.evaluate(x, y)
    cin = np.zeros((len(x), 2, 2))
    cin[:, 0, 0] = stars["x_err"] ** 2
    cin[:, 1, 1] = stars["y_err"] ** 2
    cin[:, 0, 1] = cin[:, 1, 0] = stars["cov_xy"]
    expect = e.jac @ cin @ np.swapaxes(e.jac, 1, 2) + e.map_cov
    assert np.allclose(t["sigma_x_lin"], np.sqrt(expect[:, 0, 0]), rtol=1e-12)
    assert np.allclose(t["sigma_y_lin"], np.sqrt(expect[:, 1, 1]), rtol=1e-12)
    assert np.allclose(t["cov_xy_lin"], expect[:, 0, 1], rtol=1e-12)
    assert np.allclose(t["sigma_x_map"], np.sqrt(e.map_cov[:, 0, 0]))
    assert np.allclose(t["x_lin"], e.lx) and np.allclose(t["y_lin"], e.ly)
    assert t.meta["astrocal_correct"]["input_cov_xy_column"] == "cov_xy"
    # arcsec offsets from the boresight, along the linear grid's axes
    b = ev.boresight
    assert np.allclose(t["dx_arcsec"], ev.plate_scale * (e.lx - b[0]))
    assert np.allclose(t["sigma_dy_arcsec"], ev.plate_scale * t["sigma_y_lin"])
    assert str(t["dx_arcsec"].unit) == "arcsec" and str(t["x_lin"].unit) == "pix"
    back = Table.read(tmp_path / "out.ecsv")
    assert np.allclose(back["x_lin"], t["x_lin"]) and list(back["name"]) == list(stars["name"])


def test_without_input_errors_only_the_map_counts(small_files, stars, tmp_path):
    stars.remove_columns(["x_err", "y_err", "cov_xy"])
    stars.write(tmp_path / "in.ecsv")
    ev = open_solution(small_files["astromet"], filter_id="L")
    t = correct_star_list(tmp_path / "in.ecsv", ev)
    assert np.allclose(t["sigma_x_lin"], t["sigma_x_map"]) and np.all(t["sigma_x_map"] > 0)
    assert not t.meta["astrocal_correct"]["input_has_errors"]


def test_plate_scale_and_reference(small_files, stars, tmp_path):
    stars.write(tmp_path / "in.ecsv")
    assert main(["correct", str(tmp_path / "in.ecsv"), "--solution", str(small_files["sip"]),
                 "--out", str(tmp_path / "o.ecsv"), "--plate-scale", "0.1",
                 "--reference", "100", "50"]) == 0
    t = Table.read(tmp_path / "o.ecsv")
    assert np.allclose(t["dx_arcsec"], 0.1 * (t["x_lin"] - 100.0))
    assert np.allclose(t["dy_arcsec"], 0.1 * (t["y_lin"] - 50.0))
    # a SIP header carries no uncertainty: only the input's, through the Jacobian
    assert np.all(t["sigma_x_map"] == 0)
    assert np.allclose(t["sigma_x_lin"], t["x_err"], rtol=0.05)


def test_plain_text_with_column_choice_and_fits_output(small_files, tmp_path):
    sol = small_files["solution"]
    rng = np.random.default_rng(2)
    xy = rng.uniform(0, 255, (12, 2))
    rows = [f"{x:.4f} {y:.4f} {1000 + k} 0.02 0.03" for k, (x, y) in enumerate(xy)]
    (tmp_path / "list.txt").write_text("# StarFinder: x y flux sx sy\n" + "\n".join(rows) + "\n")
    out = tmp_path / "list_lin.fits"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no header warnings of any kind
        assert main(["correct", str(tmp_path / "list.txt"), "--solution",
                     str(small_files["siaf"]), "--out", str(out), "--x-col", "0", "--y-col", "1",
                     "--sigma-x-col", "3", "--sigma-y-col", "4"]) == 0
    t = Table.read(out)
    lx, ly = sol.linear_field()(xy[:, 0], xy[:, 1])
    assert np.allclose(t["x_lin"], lx, atol=1e-8) and np.allclose(t["y_lin"], ly, atol=1e-8)
    h = fits.getheader(out, 1)
    assert h["CORRKIND"] == "siaf" and h["PIXCONV"] == "0-based"
    assert np.allclose(t["sigma_x_lin"], 0.02, rtol=0.05)


def test_one_based_lists_stay_one_based(small_files, tmp_path):
    """A DAOPHOT list counts from 1: its x_lin, y_lin do too (and say so)."""
    sol = small_files["solution"]
    xy0 = np.array([[10.25, 20.5], [128.0, 99.75], [250.5, 3.25]])
    lines = [f"{k + 1:7d} {x + 1:8.3f} {y + 1:8.3f}   15.000    0.010   100.0  3  0.98  0.01"
             for k, (x, y) in enumerate(xy0)]
    (tmp_path / "f.als").write_text(DAO_HEADER + "\n".join(lines) + "\n")
    ev = open_solution(small_files["sip"])
    t = correct_star_list(tmp_path / "f.als", ev, tmp_path / "f_lin.ecsv")
    lx, ly = sol.linear_field()(xy0[:, 0], xy0[:, 1])
    assert np.allclose(t["x_lin"], lx + 1, atol=1e-6) and np.allclose(t["y_lin"], ly + 1, atol=1e-6)
    assert t.meta["astrocal_correct"]["pixel_convention"] == "1-based (FITS)"
    assert np.allclose(t["X"], xy0[:, 0] + 1, atol=1e-3)  # the input's columns untouched


def test_domain_flags_margin_and_extrapolation(small_files, tmp_path, caplog):
    ev = open_solution(small_files["astromet"], filter_id="L")
    x = np.array([10.0, -0.5, 255.5, -1.5, 257.0, -3.0, 300.0])
    y = np.array([10.0, 100.0, 100.0, 100.0, 100.0, 100.0, 100.0])
    c = correct_positions(ev, x, y, 0.01, 0.01)
    assert list(c.flag) == [FLAG_INSIDE] * 3 + [FLAG_MARGIN] * 2 + [FLAG_OUTSIDE] * 2
    assert np.isfinite(c.lx[:5]).all() and np.isnan(c.lx[5:]).all()
    assert "2 of 7 positions lie more than 2 px outside the domain" in caplog.text
    c = correct_positions(ev, x, y, 0.01, 0.01, margin=0.0)
    assert list(c.flag) == [0, 0, 0, 2, 2, 2, 2] and np.isnan(c.lx[3:]).all()
    c = correct_positions(ev, x, y, extrapolate=True)
    assert list(c.flag[5:]) == [2, 2] and np.isfinite(c.lx).all()
    with pytest.raises(ValueError, match=r"stars.txt: none of the 2 positions lies within the "
                                         r"domain of the solution .*margin of 2 px"):
        correct_positions(ev, [400.0, -50.0], [10.0, 10.0], source="stars.txt")
    # through the CLI: the error names the file
    Table({"x": [1000.0, 2000.0], "y": [5.0, 6.0]}).write(tmp_path / "far.ecsv")
    assert main(["correct", str(tmp_path / "far.ecsv"), "--solution", str(small_files["sip"]),
                 "--out", str(tmp_path / "o.ecsv")]) == 1
    assert not (tmp_path / "o.ecsv").exists()


def test_bad_input_gives_clear_errors(small_files, stars, tmp_path, capsys):
    sip = str(small_files["sip"])
    t = Table({"ra": [1.0], "dec": [2.0]})
    t.write(tmp_path / "nopos.ecsv")
    assert main(["correct", str(tmp_path / "nopos.ecsv"), "--solution", sip, "--out",
                 str(tmp_path / "o.ecsv")]) == 1
    err = capsys.readouterr().err
    assert "nopos.ecsv: no column for the star x position" in err
    assert main(["correct", str(tmp_path / "nopos.ecsv"), "--solution", sip, "--out",
                 str(tmp_path / "o.ecsv"), "--x-col", "xpix"]) == 1
    assert "nopos.ecsv: no column 'xpix' for the star x position" in capsys.readouterr().err
    stars.write(tmp_path / "in.ecsv")
    # a filter the file does not hold
    assert main(["correct", str(tmp_path / "in.ecsv"), "--solution",
                 str(small_files["astromet"]), "--filter", "Q", "--out",
                 str(tmp_path / "o.ecsv")]) == 1
    assert "astromet.fits: filter 'Q' not in the file; it holds L, M" in capsys.readouterr().err
    # a missing solution, an unknown output format
    assert main(["correct", str(tmp_path / "in.ecsv"), "--solution", str(tmp_path / "no.fits"),
                 "--out", str(tmp_path / "o.ecsv")]) == 1
    assert "no.fits: no such solution" in capsys.readouterr().err
    assert main(["correct", str(tmp_path / "in.ecsv"), "--solution", sip, "--out",
                 str(tmp_path / "o.xyz")]) == 1
    assert "o.xyz: cannot tell the star-list format" in capsys.readouterr().err
    # a list already corrected
    correct_star_list(tmp_path / "in.ecsv", open_solution(sip), tmp_path / "once.ecsv")
    with pytest.raises(StarListError, match="once.ecsv: already has column"):
        correct_star_list(tmp_path / "once.ecsv", open_solution(sip), tmp_path / "twice.ecsv")


def test_input_never_modified_and_outputs_never_overwritten(small_files, stars, tmp_path, capsys):
    path = tmp_path / "in.ecsv"
    stars.write(path)
    before = path.read_bytes()
    sip = str(small_files["sip"])
    assert main(["correct", str(path), "--solution", sip, "--out", str(path)]) == 1
    assert "is the input star list; the input is never modified in place" in capsys.readouterr().err
    assert main(["correct", str(path), "--solution", sip, "--out", str(path), "--overwrite"]) == 1
    assert path.read_bytes() == before
    out = tmp_path / "out.ecsv"
    assert main(["correct", str(path), "--solution", sip, "--out", str(out)]) == 0
    first = out.read_bytes()
    assert main(["correct", str(path), "--solution", sip, "--out", str(out),
                 "--plate-scale", "1"]) == 1
    assert "file exists; not overwritten" in capsys.readouterr().err
    assert out.read_bytes() == first
    assert main(["correct", str(path), "--solution", sip, "--out", str(out),
                 "--plate-scale", "1", "--overwrite"]) == 0
    assert out.read_bytes() != first
    assert path.read_bytes() == before


def test_posterior_lists_carry_the_correlations(fit_result, tmp_path, caplog):
    lt, pt, pm, s = fit_result.measured(40, seed=15)
    Table({"x": pm[:, 0], "y": pm[:, 1], "sigma_x": s[:, 0], "sigma_y": s[:, 1]}).write(
        tmp_path / "in.ecsv")
    ev = open_solution(fit_result.result)
    for name in ("out.ecsv", "out.fits"):
        correct_star_list(tmp_path / "in.ecsv", ev, tmp_path / name)
        t = Table.read(tmp_path / name)
        f = np.asarray(t["map_factor"])  # (N, 2, r)
        full = ev.map_covariance_matrix(pm[:, 0], pm[:, 1])
        flat = f.reshape(-1, f.shape[-1])
        white = ev.white_cov  # the fit's jitter: the unresolved field, per star
        assert white[0, 0] > 0
        if name.endswith(".ecsv"):
            assert np.allclose(t.meta["astrocal_correct"]["map_white_cov"], white)
        assert np.allclose(flat @ flat.T + np.kron(np.eye(len(t)), white), full, rtol=1e-6, atol=1e-16)
        assert np.allclose(t["sigma_x_map"] ** 2, np.diag(full)[0::2], rtol=1e-6)
    correct_star_list(tmp_path / "in.ecsv", ev, tmp_path / "out.csv")
    assert "cannot hold the posterior's map factor" in caplog.text
    t = Table.read(tmp_path / "out.csv")
    assert "map_factor" not in t.colnames and np.allclose(t["x_lin"], Table.read(tmp_path / "out.ecsv")["x_lin"])


def test_fits_table_input_is_a_star_list(small_files, stars, tmp_path):
    """A FITS file holding a table is read as a star list (auto), one holding a 2-D image
    as an image."""
    stars.write(tmp_path / "in.fits")
    assert main(["correct", str(tmp_path / "in.fits"), "--solution", str(small_files["sip"]),
                 "--out", str(tmp_path / "out.ecsv")]) == 0
    t = Table.read(tmp_path / "out.ecsv")
    assert len(t) == len(stars) and "x_lin" in t.colnames
    assert t.meta["astrocal_correct"]["input_columns"]["x"] == "x_0"
