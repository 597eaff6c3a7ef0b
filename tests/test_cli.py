import json

import numpy as np
import pytest

from astrocal.cli import build_parser, main
from astrocal.formats.convert import read_solutions


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for command in ("simulate", "convert"):
        assert command in out


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "usage" in capsys.readouterr().out


def test_simulate_field(tmp_path, capsys):
    out = tmp_path / "truth"
    assert main(["simulate", "field", "--out", str(out), "--seed", "4", "--corner-px", "2.5"]) == 0
    printed = capsys.readouterr().out
    assert "non-linear distortion up to 2.50 px" in printed
    figures = json.loads((out / "distortion_truth.json").read_text())
    assert figures["plate_scale_mas_per_px"] == pytest.approx(5.47, rel=1e-3)
    assert figures["reverse_max_roundtrip_px"] < 1e-4
    for key in ("astromet_file_vs_truth_max_px", "sip_file_vs_truth_max_px", "siaf_file_vs_truth_max_px"):
        assert figures[key] < 1e-9
    sols = [next(iter(read_solutions(out / name).values()))
            for name in ("distortion_truth.fits", "distortion_truth.hdr", "distortion_truth.ecsv")]
    x = np.linspace(0, 2047, 50)
    ref = sols[0].field(x, x)
    for sol in sols[1:]:
        assert np.allclose(sol.field(x, x), ref, atol=1e-9)
    # existing products are kept unless --overwrite
    before = (out / "distortion_truth.fits").read_bytes()
    assert main(["simulate", "field", "--out", str(out), "--seed", "5"]) == 1
    assert "file exists" in capsys.readouterr().err
    assert (out / "distortion_truth.fits").read_bytes() == before
    assert main(["simulate", "field", "--out", str(out), "--seed", "5", "--overwrite"]) == 0


def test_metis_n_field(tmp_path):
    assert main(["simulate", "field", "--instrument", "metis-n", "--out", str(tmp_path)]) == 0
    figures = json.loads((tmp_path / "distortion_truth.json").read_text())
    assert figures["plate_scale_mas_per_px"] == pytest.approx(6.79, rel=1e-3)


def test_parser_builds():
    assert build_parser().prog == "astrocal"


def test_python_dash_m_runs_the_command_line():
    """``python -m astrocal`` is the same command line as the ``astrocal`` script."""
    import subprocess
    import sys

    import astrocal

    done = subprocess.run([sys.executable, "-m", "astrocal", "--version"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert astrocal.__version__ in done.stdout
    bad = subprocess.run([sys.executable, "-m", "astrocal", "no-such-command"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert "usage: astrocal" in bad.stderr
