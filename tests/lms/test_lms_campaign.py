"""The campaign's [lms] section: read, validated, named errors (astrocal.campaign, LMS part).

The campaigns here are written by the test (dummy frame files), not by the simulator."""
import shutil

import pytest

from astrocal.campaign import CampaignError, load_campaign
from astrocal.lab.mask import mask_path
from astrocal.lms import FieldOrientation, echelle_setting

GOOD = """
[lms]
mask = "mask.ecsv"
orientation = {{ angle_deg = 0.5, flip = true, offset_arcsec = ["1 mas", 0.0] }}
offset_sigma_mas = "2 mas"
degree = 1
reference_detector = "none"

[[lms.settings]]
lam_c_um = 4.73
order = 23

[[lms.settings]]
lam_c_um = "3400 nm"

[[lms.frames]]
file = "laser.fits"
kind = "laser"
lam_c_um = 4.73
offset_arcsec = [0.0, 0.0207]
lines_um = [4.70, 4.74]
background = "bg.fits"

[[lms.frames]]
file = "laser34.fits"
kind = "laser"
lam_c_um = 3.4
offset_arcsec = [0.0, 0.0]
lines_um = [{line34}]

[[lms.frames]]
file = "slices.fits"
kind = "slices"
lam_c_um = 4.73
background = "bg.fits"

[[lms.frames]]
file = "bg.fits"
kind = "background"
lam_c_um = 4.73
"""


def _write(tmp_path, line34="3.39"):
    shutil.copy(mask_path("metis_wcu_fp_mask5"), tmp_path / "mask.ecsv")
    for n in ("laser.fits", "laser34.fits", "slices.fits", "bg.fits"):
        (tmp_path / n).write_bytes(b"")
    p = tmp_path / "c.toml"
    p.write_text(GOOD.format(line34=line34))
    return p


def test_lms_section_is_read(tmp_path):
    c = load_campaign(_write(tmp_path))
    lms = c.lms
    assert c.lab == () and c.sky == () and c.instrument.name == "METIS LMS"
    assert lms.settings == (echelle_setting(4.73), echelle_setting(3.4))
    assert lms.orientation == FieldOrientation(0.5, True, (0.001, 0.0))
    assert lms.offset_sigma_mas == pytest.approx(2.0) and lms.degree == 1 and lms.reference_detector is None
    assert [f.kind for f in lms.frames] == ["laser", "laser", "slices", "background"]
    f = lms.frames[0]
    assert f.lines_um == (4.70, 4.74) and f.offset_arcsec == (0.0, 0.0207) and f.background == tmp_path / "bg.fits"
    assert lms.frames[3].background is None and lms.frames_of("laser") == lms.frames[:2]
    assert lms.across_px_per_mas == 0.05 and lms.mask_scale_mm_per_arcsec == 3.319
    assert lms.residual_m == 0
    p = _write(tmp_path)
    p.write_text(p.read_text().replace("degree = 1", "degree = 1\nresidual_m = 4", 1))
    lms = load_campaign(p).lms
    assert lms.residual_m == 4
    from astrocal.lms.measure import nominal_geometry
    assert nominal_geometry(lms).layout.residual_m == 4


@pytest.mark.parametrize("old, new, key, text", [
    ("degree = 1", "degree = 1\ncolour = 1", "lms.colour", "unknown key"),
    ("degree = 1", "degree = 9", "lms.degree", "0..5"),
    ("degree = 1", "degree = 1\nresidual_m = 11", "lms.residual_m", "0 \\(none\\) .. 10"),
    ("degree = 1", "degree = 1\nresidual_m = -1", "lms.residual_m", ""),
    ("reference_detector = \"none\"", "reference_detector = 5", "lms.reference_detector", "1..4"),
    ("offset_sigma_mas = \"2 mas\"", "offset_sigma_mas = \"2 s\"", "lms.offset_sigma_mas", "wrong unit"),
    ("degree = 1", "degree = 1\ntruth_direction = \"both\"", "lms.truth_direction", "must be one of"),
    ("flip = true", "flip = 1", "lms.orientation.flip", "true or false"),
])
def test_bad_lms_keys_are_named(tmp_path, old, new, key, text):
    p = _write(tmp_path)
    p.write_text(p.read_text().replace(old, new, 1))
    with pytest.raises(CampaignError, match=rf"key '{key}'.*{text}"):
        load_campaign(p)


def test_laser_line_outside_the_setting_is_named_with_its_line(tmp_path):
    p = _write(tmp_path, line34="4.70")
    with pytest.raises(CampaignError, match=r"line \d+: key 'lms.frames\[1\].lines_um': laser line\(s\) \[4.7\]"):
        load_campaign(p)
    lines = p.read_text().splitlines()
    line = int(str(pytest.raises(CampaignError, load_campaign, p).value).split("line ")[1].split(":")[0])
    assert lines[line - 1].startswith("lines_um = [4.70]")


@pytest.mark.parametrize("old, new, key, text", [
    ("lam_c_um = 4.73\norder = 23", "lam_c_um = 4.73\norder = 22", "lms.settings[0].order", "order 23"),
    ("lam_c_um = \"3400 nm\"", "lam_c_um = 6.0", "lms.settings[1].lam_c_um", "outside the LMS range"),
    ("file = \"slices.fits\"\nkind = \"slices\"\nlam_c_um = 4.73",
     "file = \"slices.fits\"\nkind = \"slices\"\nlam_c_um = 4.0", "lms.frames[2].lam_c_um", "not one of"),
    ("file = \"slices.fits\"", "file = \"nothere.fits\"", "lms.frames[2].file", "not found"),
    ("file = \"slices.fits\"", "file = \"laser.fits\"", "lms.frames[2].file", "listed twice"),
    ("kind = \"slices\"", "kind = \"flat\"", "lms.frames[2].kind", "must be one of"),
    ("offset_arcsec = [0.0, 0.0]\n", "", "lms.frames[1].offset_arcsec", "missing required key"),
])
def test_bad_settings_and_frames_are_named(tmp_path, old, new, key, text):
    p = _write(tmp_path)
    t = p.read_text()
    assert old in t
    p.write_text(t.replace(old, new, 1))
    with pytest.raises(CampaignError, match=rf"key '{key.replace('[', '.').replace(']', '.')}'.*{text}"):
        load_campaign(p)


def test_missing_frame_kept_when_asked(tmp_path):
    p = _write(tmp_path)
    p.write_text(p.read_text().replace('file = "slices.fits"', 'file = "gone.fits"'))
    c = load_campaign(p, missing_exposures="keep")
    assert c.lms.frames[2].file == tmp_path / "gone.fits"


def test_lab_datasets_with_lms_need_the_instrument(tmp_path):
    p = _write(tmp_path)
    p.write_text(p.read_text() + '\n[[lab]]\nname = "a"\nmask = "mask.ecsv"\nfilter = "L"\n'
                 'exposures = [{ file = "bg.fits" }]\n')
    with pytest.raises(CampaignError, match="key 'instrument'"):
        load_campaign(p)
