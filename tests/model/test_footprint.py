"""The data footprint: convex hull of the positions used, inside test, area, bad input."""
import numpy as np
import pytest

from astrocal.model.footprint import (
    convex_footprint, footprint_area, footprint_summary, inside_footprint,
)


def test_hull_of_a_grid_is_its_corners():
    x, y = np.meshgrid(np.linspace(100, 900, 9), np.linspace(200, 600, 5))
    v = convex_footprint(x, y)
    assert sorted(map(tuple, v)) == [(100, 200), (100, 600), (900, 200), (900, 600)]
    # counter-clockwise: positive signed area
    sx = np.sum(v[:, 0] * np.roll(v[:, 1], -1) - np.roll(v[:, 0], -1) * v[:, 1])
    assert sx > 0
    assert footprint_area(v) == pytest.approx(800 * 400)


def test_inside_beyond_and_on_the_edge():
    rng = np.random.default_rng(3)
    p = rng.uniform(0, 1000, size=(400, 2))
    v = convex_footprint(p[:, 0], p[:, 1])
    # every measured position is inside (vertices and edges included)
    assert inside_footprint(v, p[:, 0], p[:, 1]).all()
    assert inside_footprint(v, v[:, 0], v[:, 1]).all()
    mid = 0.5 * (v + np.roll(v, -1, axis=0))
    assert inside_footprint(v, mid[:, 0], mid[:, 1]).all()
    # beyond: pushed outward from the centroid
    c = p.mean(axis=0)
    out = c + 1.05 * (v - c)
    assert not inside_footprint(v, out[:, 0], out[:, 1]).any()
    assert not inside_footprint(v, np.array([-1.0, 2000.0]), np.array([500.0, 500.0])).any()
    # shape follows x
    xx, yy = np.meshgrid(np.linspace(0, 1000, 4), np.linspace(0, 1000, 3))
    assert inside_footprint(v, xx, yy).shape == (3, 4)


def test_summary_fraction_of_the_detector():
    x, y = np.meshgrid([0.0, 1023.5], [0.0, 2047.0])
    s = footprint_summary(convex_footprint(x, y), (2048, 2048))
    assert s["detector_fraction"] == pytest.approx(1023.5 * 2047.0 / 2048**2)
    assert len(s["vertices_px"]) == 4 and "extrapolated" in s["definition"]


def test_edges_within_a_tolerance_in_pixels():
    # a thin but real footprint: every position used counts as inside, a point 1e-3 px
    # beyond an edge does not
    rng = np.random.default_rng(5)
    x = rng.uniform(0, 2000, 300)
    y = 1000 + 0.01 * rng.standard_normal(300)
    v = convex_footprint(x, y)
    assert inside_footprint(v, x, y).all()
    assert not inside_footprint(v, np.array([1000.0]), np.array([y.max() + 1e-3 + 0.1])).any()
    square = np.array([[0.0, 0.0], [10.0, 0.0], [10.0, 10.0], [0.0, 10.0]])
    assert inside_footprint(square, np.array([10.0 + 5e-7]), np.array([5.0])).all()
    assert not inside_footprint(square, np.array([10.0 + 1e-3]), np.array([5.0])).any()
    assert not inside_footprint(square, np.array([10.0 + 1e-3]), np.array([5.0]), tol_px=0.0).any()


def test_labfit_footprint_leaves_the_outliers_out():
    from types import SimpleNamespace

    from astrocal.model.inference import Fit

    x = np.array([0.0, 100.0, 0.0, 100.0, 5000.0])
    y = np.array([0.0, 0.0, 100.0, 100.0, 50.0])
    fit = SimpleNamespace(points=SimpleNamespace(x=x, y=y), outliers=np.array([0, 0, 0, 0, 1], bool))
    fit.footprint = Fit.footprint.fget(fit)
    assert fit.footprint[:, 0].max() == 100.0
    assert not Fit.inside_footprint(fit, np.array([200.0]), np.array([50.0]))[0]
    fit.outliers[:] = False
    assert Fit.footprint.fget(fit)[:, 0].max() == 5000.0


def test_a_fit_without_area_saves_no_footprint(monkeypatch):
    from types import SimpleNamespace

    from astrocal.products import result_files as result
    from astrocal.products.result_files import _footprint

    said = []  # the module's logger, whatever other tests did to the handlers
    monkeypatch.setattr(result.log, "warning", lambda msg, *args: said.append(msg % args))

    class Flat(SimpleNamespace):
        @property
        def footprint(self):
            return convex_footprint([0.0, 1.0, 2.0], [5.0, 5.0, 5.0])

    assert _footprint(Flat(points=SimpleNamespace(domain=(-0.5, 99.5, -0.5, 99.5)))) is None
    assert len(said) == 1 and "no data footprint" in said[0] and "one line" in said[0]


def test_bad_positions():
    with pytest.raises(ValueError, match="at least 3"):
        convex_footprint([1.0, 2.0, np.nan], [1.0, 5.0, 3.0])
    with pytest.raises(ValueError, match="one line"):
        convex_footprint([0.0, 1.0, 2.0, 3.0], [0.0, 2.0, 4.0, 6.0])
    # NaN positions are left out, not propagated
    v = convex_footprint([0.0, 10.0, 0.0, np.nan], [0.0, 0.0, 10.0, 4.0])
    assert len(v) == 3
    with pytest.raises(ValueError, match="vertices"):
        inside_footprint(v[:2], [0.0], [0.0])
