"""Tests of astrocal.lab.identify on simulated spot lists with known truth."""
import time

import numpy as np
import pytest
import astropy.units as u
from astropy.table import Table

from astrocal.lab.identify import IdentificationError, identify_spots
from astrocal.lab.mask import get_mask, mask_from_arrays

SHAPE = (2048, 2048)
LM_MAS = 5.47
N_MAS = 6.79


@pytest.fixture(scope="module")
def mask5():
    return get_mask("metis_wcu_fp_mask5")


def simulate(mask, rng, *, pix_mas=LM_MAS, n_spurious=5, rot_deg=3.0, dscale=0.05,
             corner_px=4.0, noise_px=0.05, mirror=False, keep_fine_in_field=True, center=None):
    """A detected-spot list of the mask with a random pose, and the truth.

    Pose: rotation uniform in +-rot_deg, scale uniform in 1 +- dscale, mask origin uniform
    over the detector such that the whole fine grid is inside (or ``center``).
    Distortion: cubic radial term reaching ``corner_px`` at the detector corners.
    Holes falling outside the detector are missing; ``n_spurious`` extra detections are
    placed uniformly, at least 10 px from any hole image (closer ones would blend).
    Returns (xy (N, 2), true hole_id per spot (-1 spurious), pose dict).
    """
    ny, nx = SHAPE
    uv = mask.xy_arcsec() * 1e3 / pix_mas
    if mirror:
        uv = uv * [-1.0, 1.0]
    fine = np.asarray(mask.table["group"]) == "fine"
    th = np.radians(rng.uniform(-rot_deg, rot_deg))
    s = 1 + rng.uniform(-dscale, dscale)
    R = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    if center is not None:
        t = np.asarray(center, float)
    else:
        ext = (np.abs(uv[fine]).max() * 1.1 + 5) if (keep_fine_in_field and fine.any()) else 0.0
        t = rng.uniform([ext, ext], [nx - 1 - ext, ny - 1 - ext])
    p = t + s * uv @ R.T
    c = np.array([(nx - 1) / 2, (ny - 1) / 2])
    r = p - c
    rr = np.hypot(*r.T)
    p = p + corner_px * r * (rr[:, None] ** 2) / np.hypot(nx / 2, ny / 2) ** 3
    p = p + rng.normal(0, noise_px, p.shape)
    inside = (p[:, 0] >= 0) & (p[:, 0] <= nx - 1) & (p[:, 1] >= 0) & (p[:, 1] <= ny - 1)
    pts, ids = p[inside], mask.hole_id[inside]
    spur = []
    while len(spur) < n_spurious:
        q = rng.uniform([0, 0], [nx - 1, ny - 1])
        if len(pts) == 0 or np.min(np.hypot(*(pts - q).T)) > 10:
            spur.append(q)
    xy = np.vstack([pts, np.reshape(spur, (-1, 2))])
    truth = np.concatenate([ids, -np.ones(len(spur), int)])
    perm = rng.permutation(len(xy))
    return xy[perm], truth[perm], dict(t=t, s=s, theta_deg=np.degrees(th))


def _bar(mask, n, seed, pix_mas):
    rng = np.random.default_rng(seed)
    failures, times = [], []
    for k in range(n):
        xy, truth, pose = simulate(mask, rng, pix_mas=pix_mas)
        t0 = time.perf_counter()
        try:
            res = identify_spots(xy, mask, pix_mas * u.mas / u.pix, detector_shape=SHAPE)
            ok = np.array_equal(np.asarray(res["hole_id"]), truth)
        except IdentificationError as exc:
            ok, res = False, exc
        times.append(time.perf_counter() - t0)
        if not ok:
            failures.append((k, pose, res if isinstance(res, Exception) else None))
    return failures, times


def test_bar_100_poses_img_lm(mask5):
    """The bar: 100 % correct on 100 random poses (offset, +-3 deg, +-5 %, distortion,
    0.05 px noise, holes off the detector missing, 5 spurious detections)."""
    failures, times = _bar(mask5, 100, seed=2024, pix_mas=LM_MAS)
    assert not failures, f"{len(failures)}/100 failed: {failures[:3]}"
    print(f"IMG_LM: 100/100 correct, median {np.median(times) * 1e3:.0f} ms per frame")


def test_bar_img_n_quick(mask5):
    failures, _ = _bar(mask5, 25, seed=7, pix_mas=N_MAS)
    assert not failures, failures[:3]


@pytest.mark.slow
def test_bar_img_n_100(mask5):
    failures, _ = _bar(mask5, 100, seed=8, pix_mas=N_MAS)
    assert not failures, failures[:3]


def test_output_table_and_transform(mask5):
    rng = np.random.default_rng(5)
    xy, truth, pose = simulate(mask5, rng, corner_px=0.0, noise_px=0.02)
    spots = Table({"x": xy[:, 0], "y": xy[:, 1], "flux": np.arange(len(xy), dtype=float)})
    res = identify_spots(spots, mask5, LM_MAS * u.mas / u.pix, detector_shape=SHAPE)
    assert res.colnames[:3] == ["x", "y", "flux"]
    np.testing.assert_array_equal(res["flux"], spots["flux"])
    np.testing.assert_array_equal(res["hole_id"], truth)
    meta = res.meta["identification"]
    sim = meta["similarity"]
    assert sim["scale"] == pytest.approx(pose["s"], abs=1e-4)
    assert sim["rotation_deg"] == pytest.approx(pose["theta_deg"], abs=0.01)
    np.testing.assert_allclose(sim["offset_px"], pose["t"], atol=0.1)
    assert sim["pixel_scale_mas"] == pytest.approx(LM_MAS / pose["s"], rel=1e-4)
    assert meta["n_matched"] == np.sum(truth >= 0)
    assert sorted(meta["unmatched_rows"]) == sorted(np.nonzero(truth < 0)[0].tolist())
    assert meta["rms_px"] < 0.1
    assert meta["marker"]["clear"] is True
    matched = truth >= 0
    np.testing.assert_allclose(res["x_pred"][matched], xy[matched, 0], atol=0.2)
    assert np.all(np.isnan(res["x_pred"][~matched]))
    # affine matrix in px per arcsec: ~ s / pixel scale * R
    A = np.array(meta["affine"]["matrix_px_per_arcsec"])
    th = np.radians(pose["theta_deg"])
    expect = pose["s"] * 1e3 / LM_MAS * np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    np.testing.assert_allclose(A, expect, atol=0.05)


def test_mirrored_image(mask5):
    rng = np.random.default_rng(11)
    for _ in range(5):
        xy, truth, _ = simulate(mask5, rng, mirror=True)
        res = identify_spots(xy, mask5, LM_MAS, detector_shape=SHAPE, mirror=None)
        np.testing.assert_array_equal(res["hole_id"], truth)
        assert res.meta["identification"]["similarity"]["mirror"] is True
        # assuming the wrong parity is caught by the orientation marker, not silently wrong
        with pytest.raises(IdentificationError, match="marker"):
            identify_spots(xy, mask5, LM_MAS, detector_shape=SHAPE, mirror=False)


def test_old_mask_without_marker_with_chopper_prior():
    old = get_mask("metis_wcu_fp_mask5_v20250114")
    rng = np.random.default_rng(3)
    for _ in range(10):
        xy, truth, pose = simulate(old, rng, keep_fine_in_field=False)
        guess = pose["t"] + rng.normal(0, 10, 2)
        res = identify_spots(xy, old, LM_MAS * u.mas / u.pix, detector_shape=SHAPE,
                             center_guess=guess, center_sigma=30.0)
        np.testing.assert_array_equal(res["hole_id"], truth)


@pytest.mark.parametrize("kind", ["random", "rescaled", "jittered"])
def test_wrong_mask_raises(mask5, kind):
    rng = np.random.default_rng(12)
    xy, _, _ = simulate(mask5, rng)
    if kind == "random":
        wrong = mask_from_arrays(*rng.uniform(-20, 20, (2, 85)), mask_scale=3.319, name="random")
    elif kind == "rescaled":     # 25 % larger: outside the +-6 % scale search
        wrong = mask_from_arrays(*(mask5.xy_mm.T * 1.25), mask_scale=3.319, name="rescaled")
    else:                        # every hole moved by ~0.3 mm = ~17 px
        wrong = mask_from_arrays(*(mask5.xy_mm.T + rng.normal(0, 0.3, (2, 85))), mask_scale=3.319,
                                 name="jittered")
    with pytest.raises(IdentificationError) as err:
        identify_spots(xy, wrong, LM_MAS * u.mas / u.pix, detector_shape=SHAPE)
    msg = str(err.value)
    assert "tried" in msg and wrong.name in msg and "5.47 mas/px" in msg


def test_wrong_pixel_scale_raises(mask5):
    rng = np.random.default_rng(13)
    xy, _, _ = simulate(mask5, rng, pix_mas=N_MAS)
    with pytest.raises(IdentificationError, match="tried"):
        identify_spots(xy, mask5, LM_MAS * u.mas / u.pix, detector_shape=SHAPE)


def test_bad_input(mask5):
    with pytest.raises(IdentificationError, match="at least 3"):
        identify_spots(np.zeros((2, 2)), mask5, LM_MAS)
    with pytest.raises(IdentificationError, match="'xc'"):
        identify_spots(Table({"x": [1.0], "y": [2.0]}), mask5, LM_MAS, x_col="xc")
    with pytest.raises(IdentificationError, match="not finite"):
        identify_spots(np.array([[1.0, 2.0], [np.nan, 1.0], [3.0, 4.0]]), mask5, LM_MAS)
    plain = mask_from_arrays([0, 1, 2], [0, 0, 1], name="noscale")
    with pytest.raises(IdentificationError, match="mask_scale"):
        identify_spots(np.zeros((5, 2)), plain, LM_MAS)


@pytest.mark.slow
def test_fine_grid_off_the_detector_is_never_silently_wrong(mask5):
    """With the fine grid (and marker) outside the field, the answer is right or an error."""
    rng = np.random.default_rng(21)
    n_ok = n_err = 0
    for _ in range(100):
        while True:
            t = rng.uniform(-700, 2750, 2)
            if not (0 <= t[0] <= 2047 and 0 <= t[1] <= 2047):
                break
        xy, truth, _ = simulate(mask5, rng, center=t)
        if np.sum(truth >= 0) < 6:
            continue
        try:
            res = identify_spots(xy, mask5, LM_MAS, detector_shape=SHAPE)
        except IdentificationError:
            n_err += 1
            continue
        np.testing.assert_array_equal(res["hole_id"], truth)
        n_ok += 1
    assert n_ok >= 0.9 * (n_ok + n_err)


def test_periodic_pattern_is_ambiguous_without_prior():
    """A plain periodic grid larger than the field: poses one pitch apart explain the
    spots equally well, so the answer is an error unless the chopper prior decides."""
    g = np.arange(-7, 8) * 2.0 * 3.319                     # 15 x 15 holes, 2 arcsec pitch
    xx, yy = np.meshgrid(g, g)
    grid = mask_from_arrays(xx.ravel(), yy.ravel(), mask_scale=3.319, name="periodic")
    rng = np.random.default_rng(17)
    uv = grid.xy_arcsec() * 1e3 / LM_MAS
    t = np.array([1010.0, 1040.0])
    p = t + uv
    inside = np.all((p >= 0) & (p <= 2047), axis=1)
    xy = p[inside] + rng.normal(0, 0.05, (inside.sum(), 2))
    with pytest.raises(IdentificationError, match="ambiguous.*center_guess"):
        identify_spots(xy, grid, LM_MAS, detector_shape=SHAPE)
    res = identify_spots(xy, grid, LM_MAS, detector_shape=SHAPE, center_guess=t + [20, -15],
                         center_sigma=60.0)
    np.testing.assert_array_equal(res["hole_id"], grid.hole_id[inside])
