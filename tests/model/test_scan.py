"""The evidence scan's machinery: the Laplace Hessian, the scaled MAP search, the deferred
refinement of the residual basis, and the quick look's import path."""
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from astrocal.model import inference, laplace
from astrocal.model.laplace import curvature_scale, map_hyperparameters, numerical_hessian as _hessian
from astrocal.model.selection import refine_residual_rows as _refine_residual_rows

A = np.array([[3.0, 1.0, 0.5, 0.0], [1.0, 2.0, 0.2, 0.1], [0.5, 0.2, 1.0, 0.3], [0.0, 0.1, 0.3, 40.0]])


def logp(P):
    P = np.atleast_2d(P)
    return -0.5 * np.einsum("ni,ij,nj->n", P, A, P) + np.sin(P[:, 0]) * P[:, 1] ** 2 + 0.1 * P[:, 2] ** 3


def exact_hessian(x):
    h = -A.copy()
    h[0, 0] -= np.sin(x[0]) * x[1] ** 2
    h[0, 1] = h[1, 0] = h[0, 1] + 2 * np.cos(x[0]) * x[1]
    h[1, 1] += 2 * np.sin(x[0])
    h[2, 2] += 0.6 * x[2]
    return h


def four_point_hessian(f, x, lo, hi, step=1e-3):
    """The formula the scan used before: four points for every pair, the diagonal included."""
    n = x.size
    h = np.empty((n, n))
    for i in range(n):
        for j in range(i, n):
            v = []
            for si, sj in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
                p = x.copy()
                p[i] += si * step
                p[j] += sj * step
                v.append(f(np.clip(p, lo, hi)[None])[0])
            h[i, j] = h[j, i] = (v[0] - v[1] - v[2] + v[3]) / (4 * step**2)
    return h


def test_hessian_is_second_order_in_n_squared_plus_n_plus_one_points():
    x = np.array([0.3, -0.2, 0.1, 0.05])
    lo, hi = -np.full(4, 5.0), np.full(4, 5.0)
    rows = []

    def counting(P):
        rows.append(len(P))
        return logp(P)

    h = _hessian(counting, x, lo, hi)
    assert rows == [4 * 4 + 4 + 1]  # one batched call
    np.testing.assert_allclose(h, exact_hessian(x), atol=1e-5)
    np.testing.assert_allclose(h, four_point_hessian(logp, x, lo, hi), atol=1e-5)


def test_hessian_at_a_bound_is_the_four_point_formulas():
    # a hyperparameter at its bound (a width shrunk to its floor): its entries are one-sided
    # values there, not curvatures; they are the four-point formula's, as the scan's
    # evidence always took them
    x = np.array([0.3, -0.2, 0.1, 0.05])
    lo, hi = -np.full(4, 5.0), np.array([5.0, 5.0, 5.0, 0.05])
    h = _hessian(logp, x, lo, hi)
    ref = four_point_hessian(logp, x, lo, hi)
    np.testing.assert_allclose(h, ref, rtol=1e-6, atol=1e-5)
    assert abs(h[3, 3] - exact_hessian(x)[3, 3]) > 100  # one-sided, as before


class Quadratic:
    """A badly scaled concave log posterior with a box, in the model's interface."""

    ndim = 3
    hyper_names = ["a", "b", "c"]

    def __init__(self):
        self.calls = 0
        self.curv = np.array([1e4, 1.0, 25.0])
        self.centre = np.array([0.01, 2.0, -0.3])

    def bounds(self):
        return np.array([-5.0, -5.0, -0.2]), np.array([5.0, 5.0, 5.0])  # c's optimum is beyond its bound

    def log_posterior(self, P):
        self.calls += 1
        d = np.atleast_2d(P) - self.centre
        return -0.5 * np.sum(self.curv * d**2, axis=1)


def test_scaled_map_search_finds_the_same_optimum_in_fewer_steps():
    plain, scaled = Quadratic(), Quadratic()
    x0 = np.array([1.0, 0.0, 1.0])
    phi1, lp1 = map_hyperparameters(plain, x0)
    scale = curvature_scale(scaled, {"a": 100.0, "b": 1.0, "c": 5.0, "unknown": 3.0})
    assert scale.tolist() == [100.0, 1.0, 5.0]
    phi2, lp2 = map_hyperparameters(scaled, x0, scale)
    np.testing.assert_allclose(phi2, [0.01, 2.0, -0.2], atol=1e-4)
    np.testing.assert_allclose(phi1, phi2, atol=1e-4)
    assert lp2 == pytest.approx(lp1, abs=1e-6)
    assert scaled.calls < plain.calls
    assert curvature_scale(scaled, {"a": np.nan, "b": -1.0}).tolist() == [1.0, 1.0, 1.0]


def scan_table():
    evidence = [{"degree": 3, "residual": False, "log_evidence": 95.0},
                {"degree": 3, "residual": True, "log_evidence": 100.0, "residual_refinements": [[8, 1.5, 100.0]]},
                {"degree": 4, "residual": False, "log_evidence": 90.0},
                {"degree": 4, "residual": True, "log_evidence": 50.0, "residual_refinements": [[8, 1.5, 50.0]]},
                {"degree": 5, "residual": True, "log_evidence": 92.0, "residual_refinements": [[8, 1.5, 92.0]]}]
    rows = {(3, False): 0, (3, True): 1, (4, False): 2, (4, True): 3, (5, True): 4}
    fitted = {k: SimpleNamespace(row=dict(evidence[i]), key=k) for k, i in rows.items()}
    return evidence, fitted, rows


@pytest.mark.parametrize("rise", [5.0, 60.0])
def test_residual_rows_are_refined_most_probable_first_and_far_ones_skipped(monkeypatch, rise):
    calls = []

    def fake_refine(base, points, degree, settings, jac_field, excluded, baseline=None):
        calls.append((base.key, baseline))
        z = base.row["log_evidence"] + rise
        return SimpleNamespace(row={"log_evidence": z, "residual_refinements": [[8, 1.5, z - rise], [12, 1.2, z]]})

    monkeypatch.setattr("astrocal.model.refinement.refine_variant", fake_refine)
    evidence, fitted, rows = scan_table()
    _refine_residual_rows(None, None, None, None, evidence, fitted, rows)
    # degree 3 first (the best), with the polynomial's evidence at its degree as the baseline
    assert calls[0] == ((3, True), 95.0)
    assert evidence[1]["log_evidence"] == 100.0 + rise
    # 92 + rise + 10 reaches the best (100 + rise): refined; 50 + rise + 10 does not: skipped
    assert [c[0] for c in calls] == [(3, True), (5, True)]
    assert calls[1][1] is None  # no polynomial row at degree 5
    assert "not tried" in evidence[3]["residual_refinement"]
    assert evidence[3]["log_evidence"] == 50.0 and len(evidence[3]["residual_refinements"]) == 1
    assert all(isinstance(fitted[k], SimpleNamespace) for k in rows)


def test_the_quick_look_does_not_import_emcee():
    # emcee imports scipy.stats (about a second); only a chain needs it
    code = ("import sys, astrocal.cli.fit, astrocal.stages.fit, astrocal.model.result, astrocal.products, astrocal.model.inference;"
            "print('emcee' in sys.modules, 'scipy.stats' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]
    assert not hasattr(inference, "emcee")


def test_a_scaled_search_that_stops_short_starts_again(monkeypatch):
    # L-BFGS-B can stop after a failed first line search far from the optimum (relative
    # reduction of f below its tolerance); the estimate of what is left, from the scaled
    # gradient, sends the search round again unscaled
    from scipy import optimize

    real = optimize.minimize
    calls = []

    def stops_at_once(fun, x0, **kw):
        calls.append(kw.get("bounds"))
        if len(calls) == 1:
            f, g = fun(np.asarray(x0, float))
            return optimize.OptimizeResult(x=np.asarray(x0, float), fun=f, jac=g, nit=1)
        return real(fun, x0, **kw)

    monkeypatch.setattr(laplace.optimize, "minimize", stops_at_once)
    model = Quadratic()
    phi, lp = map_hyperparameters(model, np.array([1.0, 0.0, 1.0]), np.array([100.0, 1.0, 5.0]))
    assert len(calls) == 2
    np.testing.assert_allclose(phi, [0.01, 2.0, -0.2], atol=1e-4)
    assert lp == pytest.approx(-0.5 * 25.0 * 0.1**2, abs=1e-6)
