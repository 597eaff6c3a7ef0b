"""The quick look's evidence scan (``astrocal fit --quick``): the residual variant is fitted
at the polynomial's most probable degree first, and at its other degrees only when the data
ask for it; the model chosen is the full scan's."""
import logging
import os
import sys
import warnings
from types import SimpleNamespace

import numpy as np
import pytest

from astrocal.model import inference, selection
from astrocal.model.inference import FitSettings, fit_joint
from astrocal.model.priors import Priors
from astrocal.model.refinement import VariantFit

sys.path.insert(0, os.path.dirname(__file__))
from test_residual_model import _ripple  # noqa: E402


def _fake(logz, names=("a", "b")):
    return VariantFit({"log_evidence": float(logz)}, np.arange(len(names), dtype=float), np.eye(len(names)),
                      None, None, list(names))


@pytest.mark.parametrize("gap_low, gap_best, skipped", [(30.0, 8.0, True), (30.0, 3.0, False), (-20.0, 8.0, False),
                                                     (2.0, 30.0, False)])
def test_the_residual_variant_is_cut_short_only_far_below_the_polynomial(monkeypatch, gap_low, gap_best, skipped):
    degrees = [3, 4, 5, 6]
    poly = [(_fake(z), None) for z in (10.0, 40.0, 50.0, 49.0)]  # most probable: degree 5
    full_scans = []

    def scan_variant(points, settings, jac, excluded, degs, residual):
        full_scans.append(residual)
        return poly if not residual else [(_fake(60.0), None) for _ in degs]

    probes = []

    def fit_variant(points, degree, priors, settings, jac, excluded, start=None, curvature=None, refine=True):
        probes.append(dict(degree=degree, start=start, residual=priors.residual, refine=refine))
        return _fake(50.0 - (gap_low if degree == 3 else gap_best))

    monkeypatch.setattr(selection, "_scan_variant", scan_variant)
    monkeypatch.setattr(selection, "fit_variant", fit_variant)
    # one process: the probes' calls are seen here (two CPUs fork the first probe)
    settings = FitSettings(sampler="laplace", priors=Priors(residual="auto"), processes=1)
    out = selection.quick_scan_variants(SimpleNamespace(n_points=100), settings, None, None, degrees, [False, True])
    assert out[False] is poly
    # the residual at the lowest degree and at the polynomial's most probable one, each
    # started from the polynomial's MAP there, the basis refined later
    assert probes[0]["degree"] == 3
    assert all(p["residual"] == "matern52" and p["refine"] is False and p["start"] == {"a": 0.0, "b": 1.0}
               for p in probes)
    assert [p["degree"] for p in probes] == [3, 5]
    if skipped:
        assert full_scans == [False]
        rows = out[True]
        assert rows[0][0].row["log_evidence"] == 50.0 - gap_low and rows[0][1] is None
        assert rows[2][0].row["log_evidence"] == 50.0 - gap_best and rows[2][1] is None
        for j in (1, 3):
            assert rows[j][0] is None and "not fitted by the quick look" in rows[j][1]
            assert f"{gap_low:.1f} at degree 3, {gap_best:.1f} at degree 5" in rows[j][1]
    else:
        assert full_scans == [False, True]
        assert all(vf is not None for vf, _ in out[True])


def test_one_variant_one_degree_or_a_pooled_fit_is_the_full_scan(monkeypatch):
    calls = []
    monkeypatch.setattr(selection, "scan_variants", lambda *a: calls.append(a[-2:]) or {})
    settings = FitSettings(sampler="laplace")
    points = SimpleNamespace(n_points=100)
    selection.quick_scan_variants(points, settings, None, None, [3, 4], [False])
    selection.quick_scan_variants(points, settings, None, None, [5], [False, True])
    # its variants side by side in two processes, as the full scan runs them
    selection.quick_scan_variants(points, FitSettings(sampler="laplace", processes=2), None, None, [3, 4],
                                  [False, True])
    assert calls == [([3, 4], [False]), ([5], [False, True]), ([3, 4], [False, True])]


def _campaign(ripple_px):
    benchmarks = os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks")
    sys.path.insert(0, os.path.abspath(benchmarks))
    from bench_model_coverage import campaign_params, make_campaign

    p = campaign_params(3, degree=4)
    p["n_exposures"] = 5
    _, pts, _ = make_campaign(**p)
    if ripple_px:
        dx, dy = _ripple(pts.x, pts.y, ripple_px, 300.0, 8)
        pts.x[:] -= dx
        pts.y[:] -= dy
    return pts


@pytest.mark.parametrize("ripple_px", [0.0, 0.03])
def test_the_quick_look_chooses_the_full_scans_model(monkeypatch, caplog, ripple_px):
    """On a polynomial field the residual's other degrees are skipped, on a field with a
    ripple they are all fitted; either way the quick look's model and its evidence rows
    are those of the full scan at the same settings."""
    caplog.set_level(logging.ERROR, logger="astrocal")  # quiet; restored after the test
    pts = _campaign(ripple_px)
    settings = FitSettings(degree="auto", degree_range=(3, 6), seed=4, sampler="laplace", n_draws=50,
                           progress=False, priors=Priors(residual="auto"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quick = fit_joint(pts, settings)
        monkeypatch.setattr(inference, "quick_scan_variants", selection.scan_variants)
        full = fit_joint(pts, settings)
    assert (quick.degree, quick.residual is not None) == (full.degree, full.residual is not None)
    skipped = [e for e in quick.evidence if "not fitted by the quick look" in e.get("note", "")]
    if ripple_px:
        assert quick.residual is not None and not skipped
    else:
        assert quick.residual is None and len(skipped) == 2
    by_row = {(e["degree"], e.get("residual")): e for e in full.evidence}
    for e in quick.evidence:
        if np.isfinite(e["log_evidence"]):
            # the same model, each MAP search from its own start (the quick look's residual
            # probe from the polynomial's MAP, the full scan's from the degree below): where
            # the residual's rms sits at its floor its lengths are flat directions, along
            # which the search stops where its path leaves it and the Laplace evidence
            # varies by about a nat (measured: 1.1 at degree 4 on the polynomial field)
            assert e["log_evidence"] == pytest.approx(by_row[(e["degree"], e.get("residual"))]["log_evidence"],
                                                      abs=1.5)
    # the probabilities the choice came from: the rows skipped hold little of the full scan's
    best = max(e["log_evidence"] for e in full.evidence)
    lost = sum(np.exp(by_row[(e["degree"], True)]["log_evidence"] - best) for e in skipped)
    assert lost < 0.05


def test_the_two_residual_probes_side_by_side_are_the_probes_one_after_the_other(monkeypatch):
    """Two CPUs: the probe at the lowest degree runs in a forked process while this one fits
    the other; the models (MAP, Hessian, evidence) are the same bit for bit, and the
    processes setting decides (``1``: one after the other)."""
    pts = _campaign(0.0)
    degrees = [3, 4]
    settings = {p: FitSettings(degree="auto", degree_range=(3, 4), sampler="laplace", priors=Priors(residual="auto"),
                               processes=p) for p in (1, 2)}
    assert selection.probe_processes(1) == 1 and selection.probe_processes(2) == 2
    assert selection.probe_processes("auto") == min(2, len(os.sched_getaffinity(0)))
    import multiprocessing as mp

    with mp.get_context("fork").Pool(1) as pool:  # a pool's worker is daemonic: no children
        assert pool.apply(selection.probe_processes, (2,)) == 1
    excluded = np.zeros(pts.n_points, bool)
    poly = selection._scan_variant(pts, settings[1], None, excluded, degrees, False)
    forks = []
    import multiprocessing.context as mpc

    real = mpc.ForkContext.Pool
    monkeypatch.setattr(mpc.ForkContext, "Pool", lambda self, *a, **k: forks.append(a) or real(self, *a, **k))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        one = selection._residual_probes(pts, settings[1], None, excluded, degrees, poly, [0, 1])
        two = selection._residual_probes(pts, settings[2], None, excluded, degrees, poly, [0, 1])
    assert forks == [(1,)]
    assert list(two) == [0, 1]
    for k in (0, 1):
        assert one[k].row["log_evidence"] == two[k].row["log_evidence"]
        np.testing.assert_array_equal(one[k].phi, two[k].phi)
        np.testing.assert_array_equal(one[k].hess, two[k].hess)


def test_draw_counts_by_sampler():
    """4000 draws by default either way: the emcee chain's 1000 samples x 4, the quick look's
    Laplace approximation 250 x 16 (each sample costs a factorisation); a setting given wins."""
    assert inference.draw_counts(FitSettings()) == (1000, 4)
    assert inference.draw_counts(FitSettings(sampler="laplace")) == (250, 16)
    assert inference.draw_counts(FitSettings(sampler="laplace", n_draws=40, draws_per_phi=2)) == (40, 2)
    assert inference.draw_counts(FitSettings(n_draws=300)) == (300, 4)


def test_the_quick_looks_draws_are_16_per_hyperparameter_sample(caplog):
    caplog.set_level(logging.ERROR, logger="astrocal")
    pts = _campaign(0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = fit_joint(pts, FitSettings(degree=4, seed=4, sampler="laplace", progress=False))
    assert fit.g_samples.shape[0] == 4000 and fit.phi_samples.shape[0] == 4000
    phi = fit.phi_samples.reshape(250, 16, -1)
    assert np.all(phi == phi[:, :1]) and len(np.unique(phi[:, 0], axis=0)) == 250
    # the 16 draws of one sample differ (exact draws, not copies)
    g = fit.g_samples.reshape(250, 16, -1)
    assert np.all(g.std(axis=1).max(axis=1) > 0)
