"""The saved result: residual table per exposure with outlier flags, provenance, chain."""
import fcntl
import json
import os
import shutil

import numpy as np
import pytest
from astropy.table import Table, vstack

from astrocal import __version__
from astrocal.checksum import file_sha256
from astrocal.cli import main
from astrocal.lab.mask import load_mask
from astrocal.model.result import RESIDUAL_COLUMNS, residual_rms
from astrocal.products.result_files import load_chain, load_posterior, load_residuals
from astrocal.sim.points_campaign import write_points_campaign


@pytest.fixture(scope="module")
def small_fit(tmp_path_factory):
    """A small fitted campaign, made once per run (pytest-xdist workers share it)."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    out = root / "shared-result-fit"
    with open(root / "shared-result-fit.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not (out / ".done").exists():
                shutil.rmtree(out, ignore_errors=True)
                path, _, _ = write_points_campaign(out, seed=5, degree=3, fit_degree=3, n_exposures=5,
                                                   outlier_fraction=0.04)
                assert main(["-q", "fit", str(path), "--steps", "300", "--walkers", "12"]) == 0
                (out / ".done").touch()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    tables = vstack([Table.read(out / "tables" / f"grid_{e:02d}.ecsv") for e in range(5)])
    return out, out / "out" / "Lp", tables


def test_residual_table_against_the_truth(small_fit):
    _, res_dir, tables = small_fit
    t = load_residuals(res_dir)
    assert list(t.colnames) == list(RESIDUAL_COLUMNS)
    assert len(t) == len(tables)  # every measured point, outliers included
    assert np.array_equal(np.asarray(t["x"]), np.asarray(tables["x"]))
    assert set(t["dataset"]) == {"lab0"} and set(t["kind"]) == {"lab"}
    assert set(t["exposure"]) == {f"lab0:grid_{e:02d}" for e in range(5)}
    # the flags are the injected outliers
    assert np.array_equal(np.asarray(t["outlier"]), np.asarray(tables["injected_outlier"]))
    assert np.min(t["chi2"][t["outlier"]]) > 100
    # inliers: measured - predicted is, to the fit's accuracy, the centroid error (measured - true)
    ok = ~np.asarray(t["outlier"])
    ex = np.asarray(tables["x"] - tables["true_x"])[ok]
    ey = np.asarray(tables["y"] - tables["true_y"])[ok]
    dx, dy = np.asarray(t["dx_px"])[ok], np.asarray(t["dy_px"])[ok]
    noise = np.sqrt(np.mean(ex**2 + ey**2))
    miss = np.sqrt(np.mean((dx - ex) ** 2 + (dy - ey) ** 2))
    assert miss < 0.6 * noise
    assert np.corrcoef(dx, ex)[0, 1] > 0.8 and np.corrcoef(dy, ey)[0, 1] > 0.8
    # mas and pixels agree through the pixel scale (5.47 mas/px)
    ratio = np.hypot(t["dx_mas"], t["dy_mas"])[ok] / np.hypot(dx, dy)
    assert np.allclose(ratio, 5.47, rtol=0.02)
    # normalised residuals: the noise model describes the inliers (fitted, so a little narrower)
    z = np.concatenate([np.asarray(t["zx"])[ok], np.asarray(t["zy"])[ok]])
    assert 0.6 < np.std(z) < 1.2
    assert np.allclose(t["zx"], t["dx_mas"] / t["sigma_x_mas"])


def test_residuals_state_provenance_and_enter_fit_json(small_fit):
    out, res_dir, _ = small_fit
    t = load_residuals(res_dir)
    assert t.meta["astrocal_version"] == __version__
    assert len(t.meta["campaign_sha256"]) == 64
    # the campaign, the 5 measured tables and the mask table (the fit depends on its content)
    assert t.meta["inputs"][0].endswith("campaign.toml") and len(t.meta["inputs"]) == 7
    assert t.meta["inputs"][-1].endswith("mask.ecsv")
    info = json.loads((res_dir / "fit.json").read_text())
    # which mask, in which state, at which plate scale (what the LMS's hole prior reads)
    mask = out / "mask.ecsv"
    assert info["mask"] == {"file": str(mask.resolve()), "sha256": file_sha256(mask),
                            "name": load_mask(mask).short_name, "scale_mm_per_arcsec": pytest.approx(3.319, rel=0.01)}
    assert info["datasets"] == [{"name": "lab0", "kind": "lab", "n_points": len(t),
                                 "n_used": int((~t["outlier"]).sum()), "n_exposures": 5}]
    assert info["residual_rms_px"] == pytest.approx(residual_rms(t, "px"))
    summary = Table.read(res_dir / "summary.ecsv")
    assert summary.meta["inputs"] == t.meta["inputs"]
    post = load_posterior(res_dir)
    assert post.info["campaign_sha256"] == t.meta["campaign_sha256"]
    assert post.pixel_scale_samples().mean() * 1e3 == pytest.approx(info["pixel_scale_mas"]["mean"])
    # the data footprint: the hull of the points used (outliers left out) on the detector
    fp = info["footprint"]
    ok = ~np.asarray(t["outlier"])
    x, y = np.asarray(t["x"]), np.asarray(t["y"])
    assert post.inside_footprint(x[ok], y[ok]).all()
    assert 0.1 < fp["detector_fraction"] < 1.0
    vx, vy = post.footprint.T
    assert vx.min() == pytest.approx(x[ok].min(), abs=1e-3) and vy.max() == pytest.approx(y[ok].max(), abs=1e-3)
    assert not post.inside_footprint(np.array([-0.4, 2047.4]), np.array([-0.4, 2047.4])).any()


def test_residual_rms_definition():
    t = Table({"dx_px": [3.0, 0.0, 100.0], "dy_px": [4.0, 0.0, 0.0], "dx_mas": [1.0, 1.0, 1.0],
               "dy_mas": [0.0, 0.0, 0.0], "outlier": [False, False, True],
               "dataset": ["a", "b", "a"]})
    assert residual_rms(t, "px") == pytest.approx(np.sqrt(25 / 2))
    assert residual_rms(t, "px", datasets=["a"]) == pytest.approx(5.0)
    assert residual_rms(t, "px", include_outliers=True) == pytest.approx(np.sqrt((25 + 1e4) / 3))
    assert residual_rms(t, "mas") == pytest.approx(1.0)
    assert np.isnan(residual_rms(t, "px", datasets=["c"]))
    with pytest.raises(ValueError, match="unit"):
        residual_rms(t, "arcsec")


def test_chain_and_bad_residual_files(small_fit, tmp_path):
    _, res_dir, _ = small_fit
    chain = load_chain(res_dir)
    # hyperparameters: jitter, kappa, hole-error scale, field width and its decay ratio
    assert chain.shape[1:] == (12, 5) and chain.shape[0] >= 300
    assert np.isfinite(chain).all()
    with pytest.raises(FileNotFoundError, match="residuals.ecsv"):
        load_residuals(tmp_path)
    Table({"x": [1.0]}).write(tmp_path / "residuals.ecsv")
    with pytest.raises(ValueError, match="lacks column"):
        load_residuals(tmp_path)


def test_the_lms_reads_this_fits_hole_errors_through_its_mask_record(small_fit):
    """A real imager result (not hand-written): the LMS's hole prior finds its mask and plate
    scale in fit.json and turns the draws into um on the mask."""
    from astrocal.lms.hole_prior import read_imager_hole_posterior

    out, res_dir, _ = small_fit
    mask = load_mask(out / "mask.ecsv")
    post = read_imager_hole_posterior(res_dir, mask)
    info = json.loads((res_dir / "fit.json").read_text())
    assert post.record["mask"] == info["mask"]["file"]
    assert post.record["mask_scale_mm_per_arcsec"] == info["mask"]["scale_mm_per_arcsec"]
    assert post.mean_um.shape == (len(post.hole_ids), 2) and np.all(np.isfinite(post.cov_um2))
    # the hole errors are the fit's own draws (arcsec at the mask) in um
    summary = Table.read(res_dir / "summary.ecsv")
    row = summary[summary["name"] == f"hole_dx[{int(post.hole_ids[0])}]"]
    assert len(row) == 1 and post.mean_um[0, 0] == pytest.approx(float(row["mean"][0]), abs=1e-3)
