"""The foreign-field campaign generator of ``benchmarks/foreign_fields.py`` and the peer of
``benchmarks/bench_foreign_coverage.py``: fast checks (no fit)."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

import foreign_fields as ff  # noqa: E402


@pytest.mark.parametrize("family,mask", [("poly+grf", "metis"), ("grid", "metis"), ("mask-affine", "metis"),
                                         ("grid", "dense")])
def test_noise_free_campaign_is_exact(tmp_path, family, mask):
    """Noise off: table positions map onto f_eh through G_true (< 1e-9 px), exposure 0 is
    the identity pose, the hole errors carry no translation/rotation, the mask-affine
    family's net scale and shears are the drawn ones; astrocal reads the campaign."""
    from astrocal.campaign import load_campaign
    from astrocal.stages.fit_inputs import lab_points_for, mask_affine_sigma

    info = ff.write_foreign_campaign(tmp_path, family, 3, mask=mask, noise=False)
    rep = ff.check_campaign(tmp_path)
    assert rep["forward_residual_px"] < 1e-9
    c = load_campaign(tmp_path / "campaign.toml")
    pts, _ = lab_points_for(c, c.lab)
    assert pts.n_points == info["n_points"] and pts.n_holes == info["n_observed_holes"]
    ppm = mask_affine_sigma(c.fit, c.lab)
    assert ppm == (info["params"]["affine_sigma_ppm"] if family == "mask-affine" else None)
    truth = ff.load_truth(tmp_path)
    if family == "mask-affine":
        assert np.allclose(truth.net_mask_affine(), truth.mask_affine, rtol=1e-9, atol=1e-13)
        assert np.any(np.abs(truth.mask_affine) > 1e-7)


def test_noise_is_as_stated(tmp_path):
    """With noise on, the table positions scatter about the truth by their stated sigmas,
    drawn within [0.004, 0.04] px."""
    from astropy.table import Table

    ff.write_foreign_campaign(tmp_path, "poly+grf", 4)
    truth = ff.load_truth(tmp_path)
    index = {int(h): k for k, h in enumerate(truth.hole_ids)}
    pulls, sig = [], []
    for e in range(len(truth.commanded)):
        t = Table.read(tmp_path / "tables" / f"grid_{e:02d}.ecsv", format="ascii.ecsv")
        k = np.array([index[int(h)] for h in t["hole_id"]])
        tp = truth.positions[e, k]
        pulls += list((np.asarray(t["x"]) - tp[:, 0]) / t["sigma_x"]) + list((np.asarray(t["y"]) - tp[:, 1]) / t["sigma_y"])
        sig += list(t["sigma_x"])
        assert np.all(np.asarray(t["cov_xy"]) == 0.0)
    pulls = np.asarray(pulls)
    assert 0.9 < np.std(pulls) < 1.1 and abs(np.mean(pulls)) < 0.1
    assert 0.004 <= min(sig) and max(sig) <= 0.04


def test_pixel_scale_definition_matches_legendre_coefficients():
    """For a polynomial field the L2 projection by quadrature gives exactly its degree-1
    Legendre coefficients (what ``pixel_scale_samples`` reads from a fit)."""
    from astrocal.field import design_matrix

    p = ff.draw_params("mask-affine", 5, poly_degree=5)
    truth, _ = ff.make_truth(p)
    g = np.linspace(-0.5, 2047.5, 40)
    xx, yy = np.meshgrid(g, g)
    B = design_matrix(xx.ravel(), yy.ravel(), 5, ff.DOMAIN)
    u, v = truth.field(xx.ravel(), yy.ravel())
    cu = np.linalg.lstsq(B, u, rcond=None)[0]
    cv = np.linalg.lstsq(B, v, rcond=None)[0]
    a = np.array([[cu[1], cu[2]], [cv[1], cv[2]]]) / 1024.0
    assert np.allclose(ff.gauss_legendre_affine(truth.field), a, rtol=1e-11, atol=1e-16)


def test_peer_is_exact_on_its_own_model(tmp_path):
    """The peer (weighted LSQ, similarity poses, hole self-calibration with the six affine
    patterns fixed) recovers a noise-free polynomial field of its degree whose hole errors
    carry none of those patterns."""
    import bench_foreign_coverage as bf
    from astrocal.campaign import load_campaign
    from astrocal.stages.fit_inputs import lab_points_for

    info = ff.write_foreign_campaign(tmp_path, "mask-affine", 5, noise=False, affine_sigma_ppm=0.0, poly_degree=4)
    c = load_campaign(tmp_path / "campaign.toml")
    pts, _ = lab_points_for(c, c.lab)
    x, y, grid = bf.evaluation_pixels(205.0)
    peer = bf.peer_fit(pts.x, pts.y, pts.cov, pts.exposure, pts.hole, pts.hole_xy, pts.offsets, 4)
    u, v, su, sv = bf.peer_map(peer, x, y)
    ut, vt = info["truth"].field(x, y)
    assert np.max(np.hypot(u - ut, v - vt)) / ff.PIXEL_SCALE < 1e-6
    # its near-degeneracy (conformal quadratic modes) and the variant that removes it
    assert np.median(su[grid == 9]) / ff.PIXEL_SCALE > 0.5
    pq = bf.peer_fit(pts.x, pts.y, pts.cov, pts.exposure, pts.hole, pts.hole_xy, pts.offsets, 4,
                     conformal_quadratic=True)
    _, _, squ, _ = bf.peer_map(pq, x, y)
    assert np.median(squ[grid == 9]) / ff.PIXEL_SCALE < 0.05


def test_airy_pixel_fractions():
    """The rendered PSF: centred on the source, symmetric, most of the flux within 24 px."""
    off = np.arange(-24, 25)
    xx, yy = np.meshgrid(off, off)
    f = ff.airy_pixel_fractions(xx - 0.3, yy + 0.2)
    assert 0.9 < f.sum() < 1.0
    cx, cy = np.sum(f * xx) / f.sum(), np.sum(f * yy) / f.sum()
    assert abs(cx - 0.3) < 0.02 and abs(cy + 0.2) < 0.02
    g = ff.airy_pixel_fractions(np.array([0.5, -0.5]), np.array([0.0, 0.0]))
    assert g[0] == pytest.approx(g[1], rel=1e-12)


def test_generator_uses_no_astrocal_simulator(tmp_path):
    """Writing and reading a campaign imports nothing from astrocal but the mask module."""
    code = (f"import sys; sys.path.insert(0, {str(BENCH)!r}); import foreign_fields as ff; "
            f"ff.write_foreign_campaign({str(tmp_path)!r}, 'poly+grf', 1); ff.load_truth({str(tmp_path)!r}); "
            "bad = [m for m in sys.modules if m.startswith('astrocal.sim') or m.startswith('astrocal.field') "
            "or m.startswith('astrocal.model')]; print(bad); assert not bad")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_measured_pulls_count_only_the_spots_the_fit_uses(tmp_path):
    """``bench_foreign_coverage.measured_pulls``: flagged spots (``DEFAULT_REJECT_FLAGS``,
    e.g. partial spots at an edge) are apart from the pulls, counted and their error given."""
    from types import SimpleNamespace

    from astropy.table import Table

    import bench_foreign_coverage as bfc
    from astrocal.model.data import DEFAULT_REJECT_FLAGS

    rng = np.random.default_rng(2)
    truth = SimpleNamespace(hole_ids=np.arange(1, 41), commanded=np.zeros((2, 2)),
                            positions=rng.uniform(100, 1900, (2, 40, 2)))
    (tmp_path / "measured").mkdir()
    for e in range(2):
        sig = np.full(40, 0.01)
        xy = truth.positions[e] + rng.normal(0, 0.01, (40, 2))
        flags = np.zeros(40, int)
        flags[:3] = 256  # partial spots, 2 px off
        assert DEFAULT_REJECT_FLAGS & 256
        xy[:3] += 2.0
        Table({"hole_id": truth.hole_ids, "x": xy[:, 0], "y": xy[:, 1], "sigma_x": sig, "sigma_y": sig,
               "flags": flags}).write(tmp_path / "measured" / f"grid_{e:02d}.ecsv", format="ascii.ecsv")
    m = bfc.measured_pulls(tmp_path, truth)
    assert m["n_identified"] == m["n_visible"] == 80
    assert m["n_rejected"] == 6 and m["rejected_rms_px"] == pytest.approx(2.0, abs=0.05)
    assert 0.8 < m["pull_rms"] < 1.2 and m["rms_px"] < 0.02
