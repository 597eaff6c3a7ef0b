"""Bad inputs at the measure and campaign stages, through the command line (subprocesses):
each is a clear refusal or an explicit flag naming the file, key or exposure, and nothing
is written outside the output directory (astrocal issue #19, "nothing lost, nothing
silent").

The frames are small campaigns of ``astrocal simulate lab`` (384 x 384 px, 3 exposures),
simulated once per module and copied for each test.
"""
import os
import re
import shutil
import sys

import numpy as np
import pytest
from astropy.table import Table

sys.path.insert(0, os.path.dirname(__file__))
from cli_helpers import astrocal, new_files_outside, snapshot  # noqa: E402

from astrocal.image.reduce import DetectorParams, reduce_frame
from astrocal.sim.points_campaign import write_points_campaign

SIM = ["--seed", "3", "--exposures", "3", "--detector-shape", "384", "384", "--max-offset", "0.1"]


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    root = tmp_path_factory.mktemp("sim") / "lab"
    run = astrocal("-q", "simulate", "lab", "--out", root, *SIM)
    assert run.returncode == 0, run.stderr
    return root


@pytest.fixture
def lab(simulated, tmp_path):
    """A fresh copy of the simulated campaign (without products)."""
    out = tmp_path / "lab"
    shutil.copytree(simulated, out)
    return out


def summary_of(camp):
    return Table.read(camp / "measured" / "summary.ecsv", format="ascii.ecsv")


# ------------------------------------------------------------------ 1. truncated frame
def test_truncated_frame_is_named_with_its_sizes(lab):
    frame = lab / "raw" / "grid_01.fits"
    data = frame.read_bytes()
    frame.write_bytes(data[: len(data) // 2])
    before = snapshot(lab)
    run = astrocal("measure", lab / "campaign.toml")
    assert run.returncode == 1
    assert re.search(rf"{re.escape(str(frame))}: truncated FITS file .*{len(data) // 2} bytes", run.stdout)
    assert "cannot reshape" not in run.stdout + run.stderr
    s = summary_of(lab)
    row = s[s["exposure"] == "grid_01"][0]
    assert row["status"] == "failed" and "bytes missing" in row["message"]
    assert list(s["status"]).count("ok") == 2  # the others are measured
    assert new_files_outside(lab, before, lab / "measured") == []
    # 4. fit after that measure: names the exposure and why it failed (not a file called '--')
    before = snapshot(lab)
    fit = astrocal("fit", lab / "campaign.toml", "--steps", "20", "--walkers", "8")
    assert fit.returncode == 1
    assert "exposure 'grid_01' of dataset 'grid' failed in 'astrocal measure'" in fit.stderr
    assert "truncated FITS file" in fit.stderr and "/--" not in fit.stderr
    assert new_files_outside(lab, before, lab / "out") == []


def test_truncated_calibration_frame_fails_its_dataset(lab):
    flat = lab / "raw" / "flat.fits"
    flat.write_bytes(flat.read_bytes()[:10000])
    run = astrocal("measure", lab / "campaign.toml")
    assert run.returncode == 1
    assert f"{flat}: truncated FITS file (flat)" in run.stdout


# ------------------------------------------------------------------ 2. saturated frames
def test_saturated_frames_are_flagged(tmp_path):
    camp = tmp_path / "sat"
    sim = astrocal("-q", "simulate", "lab", "--out", camp, "--seed", "3", "--exposures", "2",
                   "--detector-shape", "384", "384", "--max-offset", "0.1", "--bb-aperture", "0.7")
    assert sim.returncode == 0, sim.stderr
    before = snapshot(tmp_path)
    run = astrocal("measure", camp / "campaign.toml")
    assert run.returncode == 1  # a saturated frame is no silent success
    assert "SATURATED grid_00" in run.stdout and "saturated frame:" in run.stderr
    s = summary_of(camp)
    assert "saturated" in s["status"] and set(s["status"]) <= {"saturated", "failed"}
    for row in s:
        if row["status"] == "failed":  # not identified: the failure says the frame is saturated
            assert re.search(r"the frame is saturated: \d+ pixels .* at or above the saturation level "
                             r"2\d+(\.\d+)? ADU \(the readout mode's full well\)", row["message"])
            continue
        assert row["flags"] == "saturated"
        m = re.search(r"(\d+) of (\d+) identified spots \((\d+)%\) have saturated pixels", row["message"])
        assert m and int(m.group(3)) >= 50 and "level 2" in row["message"]
        assert row["n_good"] < row["n_identified"] / 2
    assert new_files_outside(tmp_path, before, camp / "measured") == []


def test_plateau_is_saturation_without_a_full_well():
    """A frame clipped at an unknown level (no readout mode with a full well): the pixels of
    the plateau at its maximum are saturated; an unclipped frame has none."""
    rng = np.random.default_rng(1)
    params = DetectorParams(gain=4.0, read_noise=10.0, dit=1.0, ndit=1, saturation_adu=None)
    yy, xx = np.mgrid[:64, :64]
    spot = 5e4 * np.exp(-((xx - 30.3) ** 2 + (yy - 33.6) ** 2) / 8.0)
    frame = (100.0 + spot + rng.normal(0, 2.5, spot.shape)).astype(np.float32)
    clean = reduce_frame(frame, None, params, cosmic_rays=False)
    assert clean.meta["n_saturated_pixels"] == 0 and clean.meta["saturation_level_adu"] is None
    clipped = reduce_frame(np.minimum(frame, np.float32(2e4)), None, params, cosmic_rays=False)
    n = int(np.count_nonzero(frame >= 2e4))
    assert n >= 5 and clipped.meta["n_saturated_pixels"] == n
    assert clipped.meta["saturation_source"] == "a plateau at the frame's maximum"


# ------------------------------------------------------------------ 3. NaN offsets
@pytest.mark.parametrize("value", ["[nan, 0.0]", "[0.0, inf]", '["nan arcsec", 0.0]'])
def test_non_finite_offset_is_refused_at_load(lab, value):
    camp = lab / "campaign.toml"
    text = camp.read_text().replace("offset_arcsec = [0.0, 0.0]", f"offset_arcsec = {value}", 1)
    camp.write_text(text)
    line = next(i + 1 for i, t in enumerate(text.splitlines()) if value in t)
    before = snapshot(lab)
    for command in ("measure", "fit"):
        run = astrocal(command, camp)
        assert run.returncode == 1
        assert (f"{camp}, line {line}: key 'lab[0].exposures[0].offset_arcsec': expected a finite "
                "number in arcsec") in run.stderr
    assert snapshot(lab) == before


def test_non_finite_offset_in_a_table_is_refused_at_fit(tmp_path):
    path, _, _ = write_points_campaign(tmp_path, seed=21, degree=3, fit_degree=3, n_exposures=4)
    text = path.read_text()
    path.write_text(re.sub(r"offset_arcsec = \[[^\]]*\], ", "", text))  # offsets from the tables
    table = tmp_path / "tables" / "grid_02.ecsv"
    t = Table.read(table)
    t.meta["offset_arcsec"] = [float("nan"), 0.1]
    t.write(table, overwrite=True)
    before = snapshot(tmp_path)
    run = astrocal("fit", path, "--steps", "20", "--walkers", "8")
    assert run.returncode == 1
    assert f"{table}: meta 'offset_arcsec' must be a pair of finite numbers" in run.stderr
    assert new_files_outside(tmp_path, before, tmp_path / "out") == []


# ------------------------------------------------------------------ 5. mask in another unit
def test_mask_in_cm_is_refused_at_fit(tmp_path):
    path, _, _ = write_points_campaign(tmp_path, seed=21, degree=3, fit_degree=3, n_exposures=4)
    mask = tmp_path / "mask.ecsv"
    t = Table.read(mask)
    for c in ("x_mm", "y_mm"):
        t[c] = t[c] / 10.0  # the numbers in cm, the column still says mm
    t.meta["orientation_marker"] = None
    t.write(mask, overwrite=True)
    before = snapshot(tmp_path)
    run = astrocal("fit", path, "--steps", "20", "--walkers", "8")
    assert run.returncode == 1
    assert f"{mask}: the holes' spacings on the detector are 10 x" in run.stderr
    assert "the numbers look like cm, not mm" in run.stderr
    assert new_files_outside(tmp_path, before, tmp_path / "out") == []


def test_mask_declared_in_um_holding_mm_is_named(lab):
    mask = lab / "mask.ecsv"
    t = Table.read(mask)
    for c in ("x_mm", "y_mm"):
        t[c].unit = "um"
    t.write(mask, overwrite=True)
    before = snapshot(lab)
    run = astrocal("measure", lab / "campaign.toml")
    assert run.returncode == 1
    assert f"{mask}: columns 'x_mm','y_mm': holes at the same position" in run.stdout
    assert "declared in um" in run.stdout and "are the numbers in mm?" in run.stdout
    assert new_files_outside(lab, before, lab / "measured") == []


# ------------------------------------------------------------------ 6. the same frame twice
def test_same_file_twice_is_refused_at_load(lab):
    camp = lab / "campaign.toml"
    text = camp.read_text().replace("raw/grid_02.fits", "raw/grid_00.fits")
    camp.write_text(text)
    lines = [i + 1 for i, t in enumerate(text.splitlines()) if "raw/grid_00.fits" in t]
    before = snapshot(lab)
    run = astrocal("measure", camp)
    assert run.returncode == 1
    assert (f"line {lines[1]}: key 'lab[0].exposures[2].file': {lab / 'raw' / 'grid_00.fits'} is "
            f"listed twice: also as 'lab[0].exposures[0].file' (line {lines[0]})") in run.stderr
    assert snapshot(lab) == before


def test_same_content_under_two_names_is_refused(lab):
    shutil.copyfile(lab / "raw" / "grid_00.fits", lab / "raw" / "grid_copy.fits")
    camp = lab / "campaign.toml"
    camp.write_text(camp.read_text().replace("raw/grid_02.fits", "raw/grid_copy.fits"))
    before = snapshot(lab)
    run = astrocal("measure", camp)
    assert run.returncode == 1
    assert "lab[0].exposures[2] (dataset 'grid')" in run.stderr and "grid_copy.fits" in run.stderr
    assert "same content as lab[0].exposures[0]" in run.stderr and "grid_00.fits" in run.stderr
    assert snapshot(lab) == before  # refused before anything is written


# ------------------------------------------------------------------ 7. offsets vs measured shifts
def test_zero_offsets_of_dithered_frames_are_flagged(lab):
    camp = lab / "campaign.toml"
    camp.write_text(re.sub(r"offset_arcsec = \[[^\]]*\]", "offset_arcsec = [0.0, 0.0]", camp.read_text()))
    before = snapshot(lab)
    run = astrocal("measure", camp)
    assert run.returncode == 0, run.stdout + run.stderr  # measured; flagged, with warnings
    s = summary_of(lab)
    check = s.meta["offset_check"]["grid"]
    flagged = [r["exposure"] for r in s if r["flags"] == "offsets"]
    assert flagged and all(check[e]["mismatch"] for e in flagged)
    for e in flagged:
        assert (f"{e} moved by" in run.stderr and "relative to grid_00" in run.stderr
                and "give (0.00, 0.00) px" in run.stderr)
    assert "flagged (see the summary's flags and message)" in run.stdout
    assert new_files_outside(lab, before, lab / "measured") == []


def test_right_offsets_are_not_flagged(lab):
    run = astrocal("-q", "measure", lab / "campaign.toml")
    assert run.returncode == 0, run.stdout
    s = summary_of(lab)
    assert not any(s["flags"].filled("")) and "commanded offset disagrees" not in run.stderr
    check = s.meta["offset_check"]["grid"]
    assert len(check) == 2 and not any(c["mismatch"] for c in check.values())


# ------------------------------------------------------------------ 8. simulate options
@pytest.mark.parametrize("option, value, text", [
    ("--max-offset", "0", "--max-offset (the largest chopper offset) must be > 0"),
    ("--max-offset", "nan", "--max-offset: expected a finite number"),
    ("--hole-error-um", "-1", "--hole-error-um must be >= 0"),
])
def test_simulate_lab_options_are_validated(tmp_path, option, value, text):
    run = astrocal("simulate", "lab", "--out", tmp_path / "sim", *SIM, option, value)
    assert run.returncode == 1 and text in run.stderr
    assert "Traceback" not in run.stderr and not (tmp_path / "sim").exists()
