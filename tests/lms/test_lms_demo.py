"""``astrocal demo --lms``: the LMS chain end to end, compared with its truth."""
import json

import pytest

from astrocal.cli import main
from astrocal.stages.demo_lms import run_lms_demo
from astrocal.sim.lms import LmsSimSettings


def test_lms_and_lab_only_do_not_go_together(tmp_path, capsys):
    assert main(["demo", "--lms", "--lab-only", "--out", str(tmp_path / "d")]) == 1
    assert "--lms and --lab-only" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


@pytest.mark.slow
def test_lms_demo_runs_the_chain_and_meets_its_truth(tmp_path, capsys):
    sim = LmsSimSettings(seed=8, settings_um=(4.73,), n_offsets=1, qcl_lines_um=(4.70, 4.74, 4.76))
    figures = run_lms_demo(tmp_path / "d", seed=8, progress=False, processes=1, sim=sim)
    printed = capsys.readouterr().out
    assert "[4/4] comparing with the simulated truth" in printed and "geometry vs truth" in printed
    # the result set, its products and its report
    info = json.loads((tmp_path / "d" / "out" / "lms" / "lms_fit.json").read_text())
    assert info["diagnostics"]["converged"]
    assert (tmp_path / "d" / "out" / "lms" / "IFU_DISTORTION_TABLE_4p730.fits").exists()
    assert (tmp_path / "d" / "out" / "lms" / "report" / "report.html").exists()
    # against the truth, over every slice (most without a laser spot in this one-offset
    # campaign: the hierarchical prior carries them): errors of tenths of a pixel, honest intervals
    assert figures["n_points"] > 500
    assert max(figures["rms_px"]) < 0.5
    assert 0 < figures["n_lit"] < figures["n_points"] and "slices with laser spots" in printed
    assert max(figures["rms_lit_px"]) < max(figures["rms_px"])
    assert 0.5 < min(figures["coverage68"]) and max(figures["coverage68"]) < 0.9
    assert min(figures["coverage95"]) > 0.85
    # a second run refuses to overwrite without --overwrite
    with pytest.raises(Exception, match="exists"):
        run_lms_demo(tmp_path / "d", seed=8, progress=False, processes=1, sim=sim)
