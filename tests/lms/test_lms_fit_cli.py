"""astrocal measure + fit on a simulated LMS campaign (frames from astrocal simulate lms), and their errors."""
import json
import shutil

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from astrocal.campaign import load_campaign
from astrocal.cli import main
from astrocal.lms.fit_campaign import LmsFitInputError, fit_lms_campaign, load_lms_fit
from astrocal.sim.lms import LmsSimSettings, simulate_lms
from astrocal.sim.lms_points import compare_with_truth
from astrocal.sim.lms_truth import load_lms_truth


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """4.73 um, one chopper offset, three QCL lines: laser + grid + slices + background; measured."""
    out = tmp_path_factory.mktemp("lmsfit") / "camp"
    simulate_lms(out, LmsSimSettings(seed=8, settings_um=(4.73,), n_offsets=1, qcl_lines_um=(4.70, 4.74, 4.76)))
    assert main(["measure", str(out / "campaign.toml")]) == 0
    return out


@pytest.mark.slow
def test_measure_writes_spot_trace_and_edge_tables(measured):
    summary = Table.read(measured / "measured" / "summary.ecsv")
    assert list(summary["kind"]) == ["lms_laser", "lms_grid", "lms_slices", "lms_background"]
    assert list(summary["status"]) == ["ok"] * 4
    spots = Table.read(measured / "measured" / "lms_laser_4p730_00.ecsv")
    for c in ("hole", "slice", "line_um", "det", "col", "row", "cov"):
        assert c in spots.colnames
    assert spots.meta["lms_table"] == "spots" and spots["cov"].shape[1:] == (2, 2)
    truth = Table.read(measured / "truth" / "spots.ecsv")
    t = truth[truth["main"]]
    good = spots[spots["flags"] == 0]
    assert len(good) > 20
    key = {(h, s, round(l, 6)): (c, r) for h, s, l, c, r in zip(t["hole_id"], t["slice"], t["lam_um"], t["col"], t["row"])}
    d = np.array([np.subtract((c, r), key[(h, s, round(l, 6))]) for h, s, l, c, r in
                  zip(good["hole"], good["slice"], good["line_um"], good["col"], good["row"])])
    assert np.sqrt(np.mean(d**2)) < 0.05
    assert Table.read(measured / "measured" / "lms_grid_4p730_00.ecsv").meta["lms_table"] == "traces"
    assert Table.read(measured / "measured" / "lms_slices_4p730.ecsv").meta["lms_table"] == "edges"


@pytest.mark.slow
def test_fit_writes_a_result_that_matches_the_truth(measured, capsys):
    assert main(["fit", str(measured / "campaign.toml"), "--steps", "300", "--walkers", "12"]) == 0
    out = measured / "out" / "lms"
    for name in ("posterior.h5", "lms_params.ecsv", "lms_draws.fits", "lms_residuals.ecsv", "lms_fit.json",
                 "manifest.json"):
        assert (out / name).exists()
    printed = capsys.readouterr().out
    assert "normalised residual rms" in printed and "IFU_DISTORTION_TABLE_4p730.fits" in printed
    assert "with the mask tolerance prior 0.5 um (not joint)" in printed          # the campaign default
    manifest = json.loads((out / "manifest.json").read_text())
    for name in ("IFU_DISTORTION_TABLE_4p730.fits", "LMS_GEOMETRY_4p730.fits", "report/report.html",
                 "report/report.json"):
        assert name in manifest["files"] and (out / name).exists()
    with fits.open(out / "IFU_DISTORTION_TABLE_4p730.fits") as hdul:
        h = hdul[0].header
        spots = Table.read(out / "lms_residuals.ecsv")
        spots = spots[spots["kind"] == "spots"]
        assert h["HIERARCH ESO QC IFU DISTORT NSPOTS"] == len(spots) // 2 > 20
        rms = np.sqrt(np.sum(np.asarray(spots["residual_px"]) ** 2) / (len(spots) // 2))
        assert h["HIERARCH ESO QC IFU DISTORT RMS"] == pytest.approx(rms, abs=6e-4) and rms < 0.05
        assert 1.0 < h["HIERARCH ESO QC IFU DISTORT FWHM"] < 6.0
        assert isinstance(h["HIERARCH ASTROCAL QC CONVERGED"], bool)
        assert [len(hdul[f"DET{d}"].data) for d in (1, 2, 3, 4)] == [14] * 4
        assert h["HIERARCH ASTROCAL LMS HOLEPRIOR"] == "tolerance" and h["HIERARCH ASTROCAL LMS HOLESHARED"] == 0
    rep = json.loads((out / "report" / "report.json").read_text())
    assert {r["id"] for r in rep["requirements"]} == {"DRLD-IFU-DISTORT-COL", "DRLD-IFU-DISTORT-ROW"}
    html = (out / "report" / "report.html").read_bytes()
    assert main(["report", str(out)]) == 1                          # the page exists: kept
    assert (out / "report" / "report.html").read_bytes() == html
    assert main(["report", str(out), "--out", str(measured / "again")]) == 0
    again = json.loads((measured / "again" / "report.json").read_text())
    assert [r["value"] for r in again["requirements"]] == pytest.approx([r["value"] for r in rep["requirements"]])
    for k in ("rms_px", "fwhm_px"):                                # the products' header: 3 decimals
        assert again["qc"][k] == pytest.approx(rep["qc"][k], abs=6e-4)
    assert again["qc"]["nspots"] == rep["qc"]["nspots"] and again["qc"]["converged"] == rep["qc"]["converged"]
    # what the frames did not give (no slit-loss scan here), said again from the directory
    assert rep["response"]["notes"] and again["response"]["notes"] == rep["response"]["notes"]
    # the slices the laser spots do not reach: in the summary, on the page, and again from the directory
    assert "note: 4.73 um:" in printed and "have no laser spot" in printed
    assert rep["laser_coverage"]["notes"] and again["laser_coverage"] == rep["laser_coverage"]
    assert b'id="coverage-notes"' in html and b'id="laser-coverage"' in html
    info = json.loads((out / "lms_fit.json").read_text())
    assert set(info["n_points"]) == {"spots", "traces", "edges"}
    assert info["hole_errors"]["source"]["kind"] == "tolerance" and rep["hole_errors"]["kind"] == "tolerance"
    fit = load_lms_fit(out)
    truth = load_lms_truth(measured)
    r = compare_with_truth(fit, truth, n_per_slice=30)
    lit = np.isin(r["slice"], [6, 14, 22])                # the fine grid's slices at offset 0
    assert np.sqrt(np.mean(r["err"][lit, 1] ** 2)) < 0.02
    assert np.sqrt(np.mean(r["err"][lit, 0] ** 2)) < 0.15
    assert np.sqrt(np.mean((r["err"] / r["sd"]) ** 2)) < 2.5
    with pytest.raises(Exception, match="not overwritten"):        # a complete result is kept
        fit_lms_campaign(load_campaign(measured / "campaign.toml"), steps=100)


@pytest.mark.slow
def test_fit_joint_with_an_imager_posterior_says_so(measured, write_imager_result, capsys, tmp_path):
    """``[lms] hole_errors_from``: an imager result (hand-written) whose holes include those seen."""
    ids = load_campaign(measured / "campaign.toml").lms.mask
    ids = __import__("astrocal.lab.mask", fromlist=["load_mask"]).load_mask(ids).hole_id     # the imager sees all
    img, _ = write_imager_result(tmp_path / "imager" / "Lp", ids, np.zeros((len(ids), 2)), sd_um=0.05)
    text = (measured / "campaign.toml").read_text().replace('output = "out/"', 'output = "out_joint/"')
    joint = measured / "campaign_joint.toml"
    joint.write_text(text.replace("[lms]\n", f'[lms]\nhole_errors_from = "{img}"\n', 1))
    bad = measured / "campaign_bad.toml"
    bad.write_text(text.replace("[lms]\n", f'[lms]\nhole_errors_from = "{tmp_path / "absent"}"\n', 1))
    assert main(["fit", str(bad)]) == 1
    assert "absent" in capsys.readouterr().err
    assert main(["fit", str(joint), "--steps", "200", "--walkers", "12"]) == 0
    printed = capsys.readouterr().out
    assert "joint with the imager's lab fit through the shared mask: hole errors of" in printed
    out = measured / "out_joint" / "lms"
    he = json.loads((out / "lms_fit.json").read_text())["hole_errors"]
    seen = he["hole_ids"]
    assert he["source"]["kind"] == "imager" and he["source"]["n_shared"] == len(seen) >= 10
    assert he["source"]["n_imager_holes"] == len(ids)
    assert he["source"]["file"] == str((img / "posterior.h5").resolve())
    h = fits.getheader(out / "LMS_GEOMETRY_4p730.fits")
    assert h["HIERARCH ASTROCAL LMS HOLEPRIOR"] == "imager" and h["HIERARCH ASTROCAL LMS HOLESHARED"] == len(seen)
    assert h["HIERARCH ASTROCAL LMS HOLESHA"] == he["source"]["sha256"][:40]
    assert "joint with the imager" in (out / "report" / "report.html").read_text()
    post = np.array([he["posterior"][str(k)]["sd_um"] for k in seen])
    assert np.all(post < 0.2)                                      # the imager's 0.05 um (+ its affine part)


def test_fit_before_measure_is_a_named_error(tmp_path):
    shutil.copy(__import__("astrocal.lab.mask", fromlist=["mask_path"]).mask_path("metis_wcu_fp_mask5"),
                tmp_path / "mask.ecsv")
    (tmp_path / "laser.fits").write_bytes(b"")
    (tmp_path / "c.toml").write_text('[lms]\nmask = "mask.ecsv"\n[[lms.settings]]\nlam_c_um = 4.73\n'
                                     '[[lms.frames]]\nfile = "laser.fits"\nkind = "laser"\nlam_c_um = 4.73\n'
                                     'offset_arcsec = [0, 0]\nlines_um = [4.70]\n')
    with pytest.raises(LmsFitInputError, match="run 'astrocal measure"):
        fit_lms_campaign(load_campaign(tmp_path / "c.toml"))
    assert main(["fit", str(tmp_path / "c.toml")]) == 1
    assert not (tmp_path / "out").exists()
