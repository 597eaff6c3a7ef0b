"""Calibration frames with generic headers (issue 18, item 1): a lab campaign whose raw,
background and flat frames carry only EXPTIME/GAIN/RDNOISE/FILTER/DATE-OBS, written by the
benchmarks' independent generator (``benchmarks/foreign_fields.py``: an obscured-Airy PSF
rendered without astrocal's simulators), is measured with its background and flat
applied; a calibration frame's missing keyword is named with its file."""
import os
import sys

import pytest
from astropy.io import fits
from astropy.table import Table

from astrocal.cli import main

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks")))
import foreign_fields as ff  # noqa: E402


@pytest.fixture(scope="module")
def generic_campaign(tmp_path_factory):
    out = tmp_path_factory.mktemp("generic")
    info = ff.write_foreign_campaign(out, "rendered", 3, calibration_frames=True, n_exposures=3)
    for name in ("background", "flat"):
        keys = set(fits.getheader(out / "raw" / f"{name}.fits"))
        assert not any(k.startswith("HIERARCH") or k == "ESO" for k in keys)  # generic only
    return out, info


def test_generic_calibration_frames_are_used(generic_campaign, capsys):
    out, info = generic_campaign
    assert main(["measure", str(info["campaign"])]) == 0
    summary = Table.read(out / "measured" / "summary.ecsv")
    assert len(summary) == 3
    assert all(str(s) == "ok" for s in summary["status"])
    for k in range(3):
        h = fits.getheader(out / "measured" / f"grid_{k:02d}_reduced.fits", 0)
        assert h["BKGFILE"] == "background.fits" and h["FLATFILE"] == "flat.fits"
        t = Table.read(out / "measured" / f"grid_{k:02d}.ecsv")
        assert len(t) >= 40


def test_a_calibration_frame_without_exposure_time_is_named(generic_campaign, tmp_path):
    from astrocal.image.headers import HeaderError
    from astrocal.image.frame import dataset_calibration

    out, _ = generic_campaign
    with fits.open(out / "raw" / "flat.fits") as f:
        del f[0].header["EXPTIME"]
        f.writeto(tmp_path / "flat.fits")
    with pytest.raises(HeaderError, match=r"flat\.fits: no exposure time: none of the keywords 'EXPTIME', "
                                          r"'EXPOSURE' \(exptime\) .* or set \[instrument\] exptime_s"):
        dataset_calibration(out / "raw" / "background.fits", tmp_path / "flat.fits", "metis-lm")


def test_frames_of_another_size_than_the_campaign_says_are_refused(generic_campaign, tmp_path, capsys):
    """Issue 19: a campaign whose detector_shape differs from its frames' is not measured
    with a warning (the fit would place the positions on the wrong detector): every exposure
    fails, naming its file and the key to set."""
    out, info = generic_campaign
    text = (out / "campaign.toml").read_text()
    assert 'preset = "metis-lm"' in text
    bad = out / "wrong_shape.toml"
    bad.write_text(text.replace('preset = "metis-lm"', 'preset = "metis-lm"\ndetector_shape = [1024, 1024]')
                   .replace('output = "measured/"', 'output = "measured_wrong/"'))
    status = main(["measure", str(bad)])
    printed = capsys.readouterr().out
    assert status != 0
    assert "grid_00.fits: frame shape (2048, 2048) (ny, nx) differs from the campaign's detector_shape (1024, 1024)" in printed
    assert "set [instrument] detector_shape" in printed
