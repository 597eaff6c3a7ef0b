"""Data that contradict the fit's assumptions end with status 3 (products marked) or a named
error, never a quiet exit 0 (astrocal.model.consistency)."""
import json
import re
import shutil

import pytest
from astropy.io import fits
from astropy.table import Table

from astrocal.cli import main
from astrocal.model.consistency import PULL_LIMIT
from astrocal.model.quality import QC_CONSISTENT
from astrocal.resultset import require_complete
from astrocal.sim.points_campaign import write_points_campaign

ARGS = ["--steps", "300", "--walkers", "12"]


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    root = tmp_path_factory.mktemp("consistency")
    path, _, _ = write_points_campaign(root / "base", seed=21, degree=3, fit_degree=3, n_exposures=4)
    return path.parent


def copy_of(campaign, tmp_path):
    out = tmp_path / "c"
    shutil.copytree(campaign, out, ignore=shutil.ignore_patterns("out"))
    return out


def test_consistent_data_pass(campaign, tmp_path, capsys):
    c = copy_of(campaign, tmp_path)
    assert main(["-q", "fit", str(c / "campaign.toml"), *ARGS]) == 0
    info = json.loads((c / "out" / "Lp" / "fit.json").read_text())
    assert info["consistency"]["consistent"] and info["quality"]["consistent"] is True
    assert 0.3 < info["consistency"]["residuals"][0]["median_normalised"] < 1.5
    assert abs(info["consistency"]["scale"]["ratio"] - 1) < 0.01
    assert fits.getheader(c / "out" / "Lp" / "astromet_Lp.fits")[QC_CONSISTENT] is True


def test_a_mask_in_cm_is_refused_by_its_unit(campaign, tmp_path, capsys):
    """A mask table in cm: the hole distances are a tenth of the measured ones at the
    campaign's scales; refused before the fit, naming the likely unit."""
    c = copy_of(campaign, tmp_path)
    mask = Table.read(c / "mask.ecsv")
    mask["x_mm"] /= 10  # cm written where mm are expected
    mask["y_mm"] /= 10
    mask.write(c / "mask.ecsv", overwrite=True)
    assert main(["-q", "fit", str(c / "campaign.toml"), *ARGS]) == 1
    assert "cm" in capsys.readouterr().err
    assert not (c / "out" / "Lp" / "fit.json").exists()


def test_a_scale_far_from_nominal_ends_with_status_3_and_marked_products(campaign, tmp_path, capsys):
    """A mask 1.5 times larger than the campaign's scales say (not a unit: the unit check
    lets it pass): the fitted pixel scale is 1.5 times the nominal one; the fit writes its
    products, marked, and ends with status 3."""
    c = copy_of(campaign, tmp_path)
    mask = Table.read(c / "mask.ecsv")
    mask["x_mm"] *= 1.5
    mask["y_mm"] *= 1.5
    mask.write(c / "mask.ecsv", overwrite=True)
    assert main(["-q", "fit", str(c / "campaign.toml"), *ARGS]) == 3
    captured = capsys.readouterr()
    assert "contradict the fit's assumptions" in captured.err
    assert "8.205 mas/px is 1.5 times the nominal 5.47 mas/px" in captured.out
    out = c / "out" / "Lp"
    require_complete(out)  # the set is complete, and marked
    info = json.loads((out / "fit.json").read_text())
    assert info["quality"]["consistent"] is False and info["consistency"]["scale"]["contradicts"]
    for name in ("astromet_Lp.fits", "LM_DISTORTION_TABLE_Lp.fits"):
        assert fits.getheader(out / name)[QC_CONSISTENT] is False


def test_one_frame_listed_twice_with_two_offsets_is_flagged(campaign, tmp_path, capsys):
    """The same measured frame under a second name with its commanded offset 29 mas away
    (offsets stated to 2 mas): the two poses cannot both hold; the fit says so."""
    c = copy_of(campaign, tmp_path)
    shutil.copyfile(c / "tables" / "grid_01.ecsv", c / "tables" / "grid_01b.ecsv")
    text = (c / "campaign.toml").read_text()
    line = next(ln for ln in text.splitlines() if "grid_01.ecsv" in ln)
    ox, oy = map(float, re.search(r"offset_arcsec = \[([^,]+), ([^\]]+)\]", line).groups())
    twin = line.replace("grid_01.ecsv", "grid_01b.ecsv").replace(
        re.search(r"offset_arcsec = \[[^\]]+\]", line).group(0), f"offset_arcsec = [{ox + 0.029:.6f}, {oy:.6f}]")
    (c / "campaign.toml").write_text(text.replace(line, line + "\n" + twin))
    status = main(["-q", "fit", str(c / "campaign.toml"), *ARGS])
    captured = capsys.readouterr()
    assert status in (1, 3) and "contradict the fit's assumptions" in captured.err + captured.out
    info = json.loads((c / "out" / "Lp" / "fit.json").read_text())
    names = [p["name"] for p in info["consistency"]["poses"]]
    assert any("grid_01" in n for n in names)
    assert all(p["pull"] > PULL_LIMIT for p in info["consistency"]["poses"])


def test_offsets_all_zero_for_dithered_frames_is_refused(campaign, tmp_path, capsys):
    """Commanded offsets all zero while the frames were dithered by up to 3": the poses and
    residuals say so; the field made of such data is not even invertible, and the error says
    why (not only that an inversion failed)."""
    c = copy_of(campaign, tmp_path)
    text = re.sub(r"offset_arcsec = \[[^\]]*\]", "offset_arcsec = [0.0, 0.0]", (c / "campaign.toml").read_text())
    (c / "campaign.toml").write_text(text)
    status = main(["-q", "fit", str(c / "campaign.toml"), *ARGS])
    captured = capsys.readouterr()
    assert status in (1, 3)
    text = captured.err + captured.out
    assert "contradict the fit's assumptions" in text and "far outside their priors" in text
    assert "times the stated centroid errors" in text
