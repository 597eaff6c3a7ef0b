"""A fit's quality flags (astrocal.model.quality): read from fit.json, and the fit command's
summary (the products and the report: tests/report/test_quality_marks.py)."""
import pytest

from astrocal.model.quality import QC_CONSISTENT, QC_CONVERGED, QC_QUICK, fit_quality, quality_cards


def info(converged=True, degree=5, setting="auto", rng=(3, 8), warnings=()):
    return {"diagnostics": {"converged": converged, "warnings": list(warnings)}, "degree": degree,
            "settings": {"degree": setting, "degree_range": list(rng)}}


def test_a_good_fit_has_no_problem():
    q = fit_quality(info())
    assert q == {"converged": True, "degree_at_top_of_range": False, "consistent": None, "quick": False,
                 "problems": [], "ok": True}


def test_not_converged_says_why():
    q = fit_quality(info(converged=False, warnings=["ConvergenceWarning: chain of 300 steps is shorter "
                                                    "than 50 autocorrelation times (max tau 40.1)"]))
    assert not q["ok"] and q["converged"] is False
    assert q["problems"][0].startswith("NOT CONVERGED") and "max tau 40.1" in q["problems"][0]


@pytest.mark.parametrize("degree,setting,rng,flag", [
    (8, "auto", (3, 8), True),
    (7, "auto", (3, 8), False),
    (8, 8, (3, 8), False),        # asked for: no search, no edge
    (4, "auto", (4, 4), False),   # a range of one degree
])
def test_degree_at_the_top_of_the_range(degree, setting, rng, flag):
    q = fit_quality(info(degree=degree, setting=setting, rng=rng))
    assert q["degree_at_top_of_range"] is flag and q["ok"] is (not flag)
    if flag:
        assert "degree_range [3, 8]" in q["problems"][0]


def test_old_results_without_diagnostics():
    q = fit_quality({"degree": 3})
    assert q["converged"] is None and q["ok"]
    assert quality_cards(q)[0] == (QC_CONVERGED, "unknown", "emcee chain meets its rule")


def test_fit_summary_leads_with_the_problems():
    from types import SimpleNamespace

    import numpy as np

    from astrocal.stages.fit import describe

    class Fit:
        degree = 8
        settings = SimpleNamespace(degree="auto", degree_range=(3, 8))
        diagnostics = SimpleNamespace(converged=False, warnings=["ConvergenceWarning: chain too short"])
        points = SimpleNamespace(domain=(-0.5, 99.5, -0.5, 99.5))
        outliers = np.zeros(3, bool)
        unconstrained = []

        def pixel_scale_samples(self):
            return np.array([5.47e-3, 5.48e-3])

        def map_uncertainty(self, x, y):
            return np.full(x.shape, 1e-5), np.full(x.shape, 1e-5)

    lines = describe("Lp", Fit(), "out/Lp", {})
    assert lines[0].startswith("filter Lp: NOT CONVERGED") and "chain too short" in lines[0]
    assert lines[1].startswith("filter Lp: DEGREE AT THE TOP OF THE RANGE")
    assert not any(line.startswith("warning: ConvergenceWarning") for line in lines)


def test_a_degree_search_stopped_at_its_top_is_said(tmp_path, capsys):
    """A degree-5 field searched over degrees 2..3: the fit warns, fit.json and the AstroMet
    file flag it, and the command's summary says it first."""
    import json
    import re

    from astropy.io import fits

    from astrocal.cli import main
    from astrocal.model.inference import DegreeRangeWarning
    from astrocal.model.quality import QC_DEGREE_AT_TOP
    from astrocal.sim.points_campaign import write_points_campaign

    path, _, _ = write_points_campaign(tmp_path, seed=3, n_exposures=4, degree=5, corner_px=3.0)
    text = path.read_text()
    text = re.sub(r"(?m)^degree = .*$", 'degree = "auto"\ndegree_range = [2, 3]', text)
    path.write_text(text)
    with pytest.warns(DegreeRangeWarning, match=r"degree 3 is the highest of degree_range \[2, 3\]"):
        assert main(["fit", str(path), "--steps", "150", "--walkers", "8"]) == 0
    head = capsys.readouterr().out.splitlines()[:2]  # the problems come first
    assert any(line.startswith("filter Lp: DEGREE AT THE TOP OF THE RANGE") for line in head), head
    info = json.loads((tmp_path / "out" / "Lp" / "fit.json").read_text())
    assert info["degree"] == 3 and info["quality"]["degree_at_top_of_range"] is True
    assert fits.getheader(tmp_path / "out" / "Lp" / "astromet_Lp.fits")[QC_DEGREE_AT_TOP] is True


def test_contradicted_data_are_a_problem_named_first():
    checks = {"consistent": False, "problems": ["the fitted pixel scale 0.547 mas/px is 0.1 times the nominal"]}
    q = fit_quality({"diagnostics": {"converged": False, "warnings": []}, "consistency": checks})
    assert q["consistent"] is False and not q["ok"]
    assert q["problems"][0].startswith("DATA CONTRADICT THE FIT'S ASSUMPTIONS: the fitted pixel scale 0.547")
    assert q["problems"][1].startswith("NOT CONVERGED")
    cards = dict((k, v) for k, v, _ in quality_cards(q))
    assert cards[QC_CONSISTENT] is False


def test_a_quick_look_is_a_problem_named_first():
    q = fit_quality({"diagnostics": {"converged": None, "warnings": []}, "degree": 5,
                     "settings": {"degree": 5, "degree_range": [3, 8], "sampler": "laplace"}})
    assert q["quick"] is True and not q["ok"] and q["problems"][0].startswith("QUICK LOOK")
    assert (QC_QUICK, True, "quick look: Laplace, not emcee") in quality_cards(q)


def test_quick_fit_is_written_apart_and_marked(tmp_path, capsys):
    """``astrocal fit --quick``: no chain, products in <fit.output>/quick/<filter>, every
    product and fit.json marked, the summary's first line says it; the reference fit's
    directory is untouched; --quick --resume is refused."""
    import json

    import h5py
    from astropy.io import fits

    from astrocal.cli import main
    from astrocal.sim.points_campaign import write_points_campaign

    path, _, _ = write_points_campaign(tmp_path, seed=5, n_exposures=4, degree=3, fit_degree=3)
    assert main(["fit", str(path), "--quick"]) == 0
    head = capsys.readouterr().out.splitlines()
    assert head[0].startswith("filter Lp: QUICK LOOK"), head
    out = tmp_path / "out" / "quick" / "Lp"
    assert not (tmp_path / "out" / "Lp").exists()
    info = json.loads((out / "fit.json").read_text())
    assert info["settings"]["sampler"] == "laplace" and info["quality"]["quick"] is True
    assert info["diagnostics"]["steps"] == 0
    for product in out.glob("*.fits"):
        assert fits.getheader(product)[QC_QUICK] is True, product
    with h5py.File(out / "posterior.h5", "r") as f:
        assert f["linear/g"].shape[0] == f["linear/phi"].shape[0] > 100
    assert (out / "manifest.json").exists()
    assert main(["fit", str(path), "--quick", "--resume"]) == 1
    assert "nothing to --resume" in capsys.readouterr().err
