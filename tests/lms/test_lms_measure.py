"""Measurement of LMS frames (astrocal.lms.frames, .spots, .continuum) against the simulator's truth."""
import json

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table, join

from astrocal.lab.mask import load_mask
from astrocal.lms import LmsGeometry
from astrocal.lms.continuum import curve_rows, measure_slice_edges, measure_traces
from astrocal.lms.errors import (FrameMismatchError, LineNotFoundError, LineOutsideSettingError, LmsMeasureError,
                                 MissingDetectorError)
from astrocal.lms.frames import read_lms_frame, reduce_lms_frame
from astrocal.lms.spots import SPOT_FLAGS, measure_laser_spots, predict_laser_spots
from astrocal.sim.lms import LmsSimSettings, simulate_lms

LINES = (4.70, 4.74, 4.76)


@pytest.fixture(scope="module")
def camp(tmp_path_factory):
    """4.73 um, two chopper offsets (with 1-mas errors), three QCL lines, noise on."""
    out = tmp_path_factory.mktemp("lmsmeas") / "camp"
    res = simulate_lms(out, LmsSimSettings(seed=3, settings_um=(4.73,), n_offsets=2, qcl_lines_um=LINES))
    mask = load_mask(out / "mask.ecsv")
    return dict(res=res, dir=out, nominal=LmsGeometry(res.geometry.layout), truth=res.geometry,
                ab=np.asarray(mask.xy_arcsec(), float), ids=np.asarray(mask.hole_id))


def _exposure(camp, kind, k=0):
    e = camp["res"].exposures
    return e[e["kind"] == kind][k]


def _reduced(camp, row):
    return reduce_lms_frame(camp["dir"] / row["file"], camp["dir"] / row["background"])


@pytest.fixture(scope="module")
def spot_tables(camp):
    out = []
    for r in camp["res"].exposures[camp["res"].exposures["kind"] == "laser"]:
        t = measure_laser_spots(_reduced(camp, r), camp["nominal"], camp["ab"], json.loads(r["lines_um"]),
                                hole_id=camp["ids"])
        s = camp["res"].spots
        s = s[(s["file"] == r["file"]) & s["main"]]
        truth = Table({"hole": s["hole_id"], "slice": s["slice"], "line_um": s["lam_um"], "det_true": s["det"],
                       "col_true": s["col"], "row_true": s["row"]})
        out.append(join(t, truth, keys=["hole", "slice", "line_um"], join_type="left"))
    return out


def test_spot_centroids_match_truth_within_stated_errors(spot_tables):
    zc, zr = [], []
    for j in spot_tables:
        good = j["flags"] == 0
        assert good.sum() >= 0.7 * len(j)
        for d in range(1, 5):
            g = good & (j["det"] == d)
            assert g.sum() >= 3
            dc, dr = j["col"][g] - j["col_true"][g], j["row"][g] - j["row_true"][g]
            assert np.sqrt(np.mean(dc**2)) < 0.05 and np.sqrt(np.mean(dr**2)) < 0.05
            zc.append(dc / j["sigma_col"][g])
            zr.append(dr / j["sigma_row"][g])
        cov = np.asarray(j["cov"][good])
        assert np.allclose(cov[:, 0, 1], cov[:, 1, 0]) and np.all(np.linalg.eigvalsh(cov) > 0)
        assert np.allclose(np.sqrt(cov[:, 0, 0]), j["sigma_col"][good])
    zc, zr = np.concatenate(zc), np.concatenate(zr)          # ~70 spots: the normalised rms within ~+-20 %
    assert 0.7 < np.sqrt(np.mean(zc**2)) < 1.4 and 0.7 < np.sqrt(np.mean(zr**2)) < 1.4


def test_spot_identification_is_complete_and_correct(spot_tables):
    for j in spot_tables:
        iso = (j["flags"] & (SPOT_FLAGS["slice_end"] | SPOT_FLAGS["blend"] | SPOT_FLAGS["chip_edge"])) == 0
        iso &= (j["det_true"] > 0)
        found = iso & ((j["flags"] & SPOT_FLAGS["not_found"]) == 0)
        assert found.sum() == iso.sum()                       # every isolated spot found ...
        assert np.all(j["det"][found] == j["det_true"][found])    # ... and identified: right hole, slice, line
        assert np.all(np.hypot(j["col"][found] - j["col_true"][found], j["row"][found] - j["row_true"][found]) < 0.3)
        assert j.meta["lines_um"] == list(LINES) and "DET1" in j.meta["detector_correction_px"]
        assert j["col"].unit == "pix" and "covariance" in j["cov"].description


def test_slice_end_spots_are_flagged(camp, spot_tables):
    j = spot_tables[1]                       # offset 1 moves holes to within 0.1" of the slice ends
    end = (j["flags"] & SPOT_FLAGS["slice_end"]) > 0
    assert end.any()
    assert np.all(np.abs(j["xi_arcsec"][end]) > 0.4485 - 0.1)
    assert np.all(np.abs(j["xi_arcsec"][~end]) <= 0.4485 - 0.1)


def test_predictions_carry_neighbour_images_and_prior_widths(camp):
    p = predict_laser_spots(camp["nominal"], 0, camp["ab"], LINES, hole_id=camp["ids"])
    main, nb = p[p["main"]], p[~p["main"]]
    assert len(nb) > len(main)
    assert np.all(np.abs(nb["slice"] - nb["hole_slice"]) == 1)
    assert np.all((main["sigma_pred_col"] > 1) & (main["sigma_pred_col"] < 20) & (main["sigma_pred_row"] > 1))


def test_missing_detector_extension_is_named(camp, tmp_path):
    src = camp["dir"] / _exposure(camp, "laser")["file"]
    with fits.open(src) as hdul:
        fits.HDUList([hdul[0], hdul["DET1.DATA"], hdul["DET2.DATA"], hdul["DET4.DATA"]]).writeto(tmp_path / "cut.fits")
    with pytest.raises(MissingDetectorError, match="DET3.DATA"):
        read_lms_frame(tmp_path / "cut.fits")
    assert issubclass(MissingDetectorError, LmsMeasureError) and issubclass(LmsMeasureError, ValueError)


def test_background_of_another_setting_is_refused(camp, tmp_path):
    r = _exposure(camp, "laser")
    with fits.open(camp["dir"] / r["background"]) as hdul:
        hdul[0].header["HIERARCH ESO INS WLEN CEN"] = 3.4
        hdul.writeto(tmp_path / "bg.fits")
    with pytest.raises(FrameMismatchError, match="3.4"):
        reduce_lms_frame(camp["dir"] / r["file"], tmp_path / "bg.fits")


def test_laser_line_outside_setting_and_line_not_lit_are_named(camp):
    r = _exposure(camp, "laser")
    red = _reduced(camp, r)
    with pytest.raises(LineOutsideSettingError, match="3.39"):
        measure_laser_spots(red, camp["nominal"], camp["ab"], [3.39, 4.70], hole_id=camp["ids"])
    with pytest.raises(LineNotFoundError, match="4.72"):      # in range, but not lit in this frame
        measure_laser_spots(red, camp["nominal"], camp["ab"], [4.70, 4.72, 4.74, 4.76], hole_id=camp["ids"])


def test_slice_edges_match_truth(camp):
    e = measure_slice_edges(_reduced(camp, _exposure(camp, "slices")), camp["nominal"])
    assert set(np.unique(e["slice"])) == set(range(1, 29)) and set(np.unique(e["side"])) == {-1, 1}
    tr = np.array([curve_rows(camp["truth"], 0, s, x, d, [c])[0][0]
                   for s, x, d, c in zip(e["slice"], e["xi_arcsec"], e["det"], e["col"])])
    g = (e["flags"] == 0) & np.isfinite(tr)
    assert g.sum() > 0.9 * len(e)
    err = e["row"][g] - tr[g]
    assert np.sqrt(np.mean(err**2)) < 0.02 and np.abs(err).max() < 0.1
    assert 0.6 < np.sqrt(np.mean((err / e["sigma_row"][g]) ** 2)) < 1.5


def test_trace_centre_lines_match_truth(camp):
    r = _exposure(camp, "grid")
    t = measure_traces(_reduced(camp, r), camp["nominal"], camp["ab"], hole_id=camp["ids"])
    x_true = t["xi_arcsec"] + (r["offset_true_a"] - r["offset_cmd_a"])
    tr = np.array([curve_rows(camp["truth"], 0, s, x, d, [c])[0][0]
                   for s, x, d, c in zip(t["slice"], x_true, t["det"], t["col"])])
    g = (t["flags"] == 0) & np.isfinite(tr)
    assert g.sum() > 0.8 * len(t)
    err = t["row"][g] - tr[g]
    assert np.sqrt(np.mean(err**2)) < 0.05 and np.abs(err).max() < 0.25
    assert 0.6 < np.sqrt(np.mean((err / t["sigma_row"][g]) ** 2)) < 1.5
    assert len(np.unique(t["hole"][g])) >= 10
