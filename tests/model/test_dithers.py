"""The separable fraction of field structure against the hole errors (astrocal.model.dithers)."""
import numpy as np
import pytest
from scipy.special import j0

from astrocal.model.data import Points
from astrocal.model.dithers import dither_separation

SCALE = 0.00547  # arcsec/px


def points(offsets_px, holes=3, seen=None, kinds=None):
    """Holes seen at the given mask offsets (px); ``seen[h]`` lists a hole's exposures."""
    offsets_px = np.asarray(offsets_px, float)
    e = len(offsets_px)
    seen = seen or [list(range(e))] * holes
    hole = np.concatenate([[h] * len(s) for h, s in enumerate(seen)])
    exposure = np.concatenate([list(s) for s in seen]).astype(int)
    n = len(hole)
    hole_xy = np.c_[np.arange(holes) * 1.0, np.zeros(holes)]
    x = 1000 + hole_xy[hole, 0] / SCALE + offsets_px[exposure, 0]
    y = 1000 + offsets_px[exposure, 1]
    return Points(x, y, np.broadcast_to(np.eye(2) * 1e-4, (n, 2, 2)).copy(), exposure, hole,
                     offsets_px * SCALE, np.full(e, 0.002), np.zeros(e, int),
                     np.array([f"H{k}" for k in range(holes)], dtype=object), hole_xy,
                     (-0.5, 2047.5, -0.5, 2047.5), SCALE, 0.1, ("lab",), tuple(f"e{k}" for k in range(e)),
                     source_kind=None if kinds is None else np.asarray(kinds),
                     source_cov=None if kinds is None else np.broadcast_to(np.eye(2) * 1e-6, (holes, 2, 2)).copy(),
                     dataset_kinds=("lab",) if kinds is None else ("sky",))


def test_two_offsets_match_the_closed_form():
    # offsets +-d along x: s(k) = sin^2(k d cos theta), averaged over theta: (1 - J0(2 k d)) / 2
    d = 100.0
    periods = np.array([150.0, 300.0, 628.0, 1000.0, 5000.0])
    out = dither_separation(points([[-d, 0], [d, 0]]), periods_px=periods)
    k = 2 * np.pi / periods
    assert out["separable_fraction"] == pytest.approx((1 - j0(2 * k * d)) / 2, abs=1e-9)
    # the worst direction is perpendicular to the offsets: nothing separable there
    assert out["separable_min"] == pytest.approx(np.zeros(5), abs=1e-12)
    assert out["offset_span_px"] == pytest.approx(d)
    assert out["n_holes"] == 3
    # the half period: first period from which the fraction stays below 0.5, in log P
    frac = np.array(out["separable_fraction"])
    hp = out["half_period_px"]
    i = int(np.argmax(periods >= hp))
    assert frac[i] < 0.5 <= frac[i - 1] and periods[i - 1] < hp <= periods[i]


def test_wider_offsets_separate_longer_periods():
    rng = np.random.default_rng(3)
    base = rng.uniform(-1, 1, (10, 2))
    narrow = dither_separation(points(base * 180))
    wide = dither_separation(points(base * 540))
    assert wide["half_period_px"] == pytest.approx(3 * narrow["half_period_px"], rel=0.02)
    assert np.all(np.diff(narrow["separable_fraction"][6:]) < 0)  # long periods: falls steadily


def test_holes_weighted_by_their_exposures_and_single_sightings_left_out():
    offs = [[0, 0], [200, 0], [0, 200]]
    # hole 0 in all three, hole 1 in two, hole 2 once (cannot separate anything)
    out = dither_separation(points(offs, seen=[[0, 1, 2], [0, 1], [2]]), periods_px=[400.0])
    a = dither_separation(points(offs, holes=1, seen=[[0, 1, 2]]), periods_px=[400.0])
    b = dither_separation(points(offs, holes=1, seen=[[0, 1]]), periods_px=[400.0])
    assert out["n_holes"] == 2
    want = (3 * a["separable_fraction"][0] + 2 * b["separable_fraction"][0]) / 5
    assert out["separable_fraction"][0] == pytest.approx(want, rel=1e-12)


def test_nothing_to_separate():
    assert dither_separation(points([[0, 0]], holes=2)) is None  # one exposure
    # stars (source_kind 1) have no free hole errors
    assert dither_separation(points([[0, 0], [100, 0]], holes=2, kinds=[1, 1])) is None
    # never below one half at the periods listed: no half period
    out = dither_separation(points([[-300, 0], [300, 0], [0, -300], [0, 300]]), periods_px=[200.0, 400.0])
    assert out["half_period_px"] is None
