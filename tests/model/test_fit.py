"""End-to-end fits of point-level campaigns against their truth."""
import json
import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from astrocal.cli import main
from astrocal.products.result_files import load_posterior
from astrocal.sim.lab_truth import gauge_truth
from astrocal.sim.points_campaign import write_points_campaign


@pytest.fixture(scope="module")
def outlier_campaign(tmp_path_factory):
    out = tmp_path_factory.mktemp("pc")
    path, truth, points = write_points_campaign(out, seed=7, degree=3, fit_degree=3,
                                                outlier_fraction=0.05)
    assert main(["fit", str(path), "--steps", "1500"]) == 0
    return out, truth, points


def test_fit_recovers_truth_and_flags_outliers(outlier_campaign):
    out, truth, points = outlier_campaign
    post = load_posterior(out / "out" / "Lp")
    info = post.info
    assert info["degree"] == 3
    # >= 95 % of the injected outliers are flagged, and few good points with them
    from astropy.table import Table, vstack

    tables = vstack([Table.read(out / "tables" / f"grid_{e:02d}.ecsv") for e in range(10)])
    injected = np.asarray(tables["injected_outlier"], bool)
    flagged = np.zeros(len(tables), bool)
    ids = np.asarray(info["outliers"]["point_ids"])
    # point ids: row index + 1e6 * exposure
    counts = np.cumsum([0] + [len(Table.read(out / "tables" / f"grid_{e:02d}.ecsv")) for e in range(10)])
    for pid in ids:
        e, row = divmod(int(pid), 1_000_000)
        flagged[counts[e] + row] = True
    assert flagged[injected].mean() >= 0.95
    assert flagged[~injected].mean() < 0.01
    # the map agrees with the truth (in the fit's gauge) within its uncertainty
    gt = gauge_truth(truth, post.hole_ids)
    x = np.linspace(0, 2047, 7)
    xx, yy = np.meshgrid(x, x)
    u, v = post.field_samples(xx.ravel(), yy.ravel())
    ut, vt = gt.field(xx.ravel(), yy.ravel())
    z = np.concatenate([(u.mean(0) - ut) / u.std(0), (v.mean(0) - vt) / v.std(0)])
    assert np.sqrt(np.mean(z**2)) < 2.0
    assert info["diagnostics"]["n_effective"] and min(info["diagnostics"]["n_effective"]) >= 1000
    # outputs and provenance
    assert (out / "out" / "Lp" / "summary.ecsv").exists()
    assert len(info["campaign_sha256"]) == 64


def test_result_is_not_overwritten(outlier_campaign, capsys):
    out, _, _ = outlier_campaign
    before = (out / "out" / "Lp" / "fit.json").read_bytes()
    assert main(["fit", str(out / "campaign.toml")]) == 1
    assert "not overwritten" in capsys.readouterr().err
    assert (out / "out" / "Lp" / "fit.json").read_bytes() == before


def test_same_position_exposures_are_reported(tmp_path):
    """Exposures all taken at one chopper position (offsets zero, and the frames agree: each
    is the first one's positions with fresh noise): the hole errors are not separable."""
    path, truth, points = write_points_campaign(tmp_path, seed=3, degree=3, fit_degree=3,
                                                n_exposures=3)
    text = path.read_text()
    import re

    from astropy.table import Table

    text = re.sub(r"offset_arcsec = \[[^\]]*\]", "offset_arcsec = [0.0, 0.0]", text)
    path.write_text(text)
    first = Table.read(tmp_path / "tables" / "grid_00.ecsv")
    rng = np.random.default_rng(4)
    for e in (1, 2):
        t = first.copy()
        t["x"] = t["true_x"] + rng.normal(0, t["sigma_x"])
        t["y"] = t["true_y"] + rng.normal(0, t["sigma_y"])
        t.meta["offset_arcsec"] = [0.0, 0.0]
        t.write(tmp_path / "tables" / f"grid_{e:02d}.ecsv", overwrite=True)
    assert main(["fit", str(path), "--steps", "400", "--walkers", "12"]) == 0
    info = json.loads((tmp_path / "out" / "Lp" / "fit.json").read_text())
    assert any(name.startswith("hole_errors") for name in info["unconstrained"])
    assert info["quality"]["consistent"] is True


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_result(tmp_path):
    path, _, _ = write_points_campaign(tmp_path / "a", seed=11, degree=3, fit_degree=3)
    write_points_campaign(tmp_path / "b", seed=11, degree=3, fit_degree=3)
    args = ["--steps", "1200", "--walkers", "12"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    # uninterrupted
    assert main(["fit", str(tmp_path / "a" / "campaign.toml"), *args]) == 0
    # killed once the chain has some steps, then resumed
    h5 = tmp_path / "b" / "out" / "Lp" / "posterior.h5"
    proc = subprocess.Popen([sys.executable, "-m", "astrocal.cli", "fit",
                             str(tmp_path / "b" / "campaign.toml"), *args], env=env)
    deadline = time.time() + 300
    while time.time() < deadline:
        time.sleep(0.5)
        try:
            with h5py.File(h5, "r", locking=False) as f:
                if f["hyperparameters"].attrs["iteration"] >= 150:
                    break
        except Exception:
            continue
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "b" / "out" / "Lp" / "fit.json").exists()
    assert main(["fit", str(tmp_path / "b" / "campaign.toml"), *args, "--resume"]) == 0
    a = load_posterior(tmp_path / "a" / "out" / "Lp")
    b = load_posterior(tmp_path / "b" / "out" / "Lp")
    assert np.array_equal(a.phi, b.phi)
    assert np.array_equal(a.g, b.g)


def test_processes_split_the_walkers_without_changing_the_chain(tmp_path):
    """``--processes 2`` splits each step's walkers over a pool: the same chain and draws,
    bit for bit, as one process (so ``auto`` may depend on the machine's CPUs)."""
    args = ["--steps", "200", "--walkers", "12", "--degree", "3"]
    for name, n in (("one", "1"), ("two", "2")):
        path, _, _ = write_points_campaign(tmp_path / name, seed=5, degree=3, fit_degree=3)
        assert main(["-q", "fit", str(path), *args, "--processes", n]) == 0
    a = load_posterior(tmp_path / "one" / "out" / "Lp")
    b = load_posterior(tmp_path / "two" / "out" / "Lp")
    assert np.array_equal(a.phi, b.phi) and np.array_equal(a.g, b.g)


def test_auto_processes_only_for_large_fits(monkeypatch):
    from astrocal.model import sampling as inference

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5, 6, 7}, raising=False)
    assert inference.pool_size("auto", inference.AUTO_POOL_POINTS - 1) == 1
    assert inference.pool_size("auto", inference.AUTO_POOL_POINTS) == inference.AUTO_POOL_MAX
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert inference.pool_size("auto", 10**6) == 1
    assert inference.pool_size(3, 10) == 3 and inference.pool_size(0, 10**6) == 1


def test_processes_option_is_checked(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["fit", "campaign.toml", "--processes", "none"])
    assert exc.value.code == 2
    assert "--processes" in capsys.readouterr().err
