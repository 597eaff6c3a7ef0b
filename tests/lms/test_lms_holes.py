"""The mask's hole errors in the LMS: simulated, fitted with a prior, joint with the imager's posterior."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from astrocal.errors import SimulationOptionError
from astrocal.lab.mask import load_mask, mask_path
from astrocal.lms.errors import HolePriorError, HolePriorFileError, MaskMismatchError, NoSharedHolesError
from astrocal.lms.fit import LmsFitSettings, data_holes, fit_lms
from astrocal.lms.fit_campaign import hole_prior_of, hole_prior_summary, load_lms_fit, save_lms_fit
from astrocal.lms.hole_prior import (HolePrior, affine_basis, lms_hole_prior, read_imager_hole_posterior,
                                     tolerance_prior)
from astrocal.lms.products import write_ifu_distortion_table
from astrocal.sim.lms import LmsSimSettings, simulate_lms
from astrocal.sim.lms_points import compare_with_truth, simulate_lms_points

MASK = load_mask(mask_path("metis_wcu_fp_mask5"))
SCALE = 3.319                                   # mm/arcsec
FAST = dict(steps=300, min_steps=200, n_draws=200, across_px_per_mas=0.035)


@pytest.fixture(scope="module")
def campaign():
    """Measured tables drawn from a truth with 0.5-um hole errors: 12 offsets over every slice."""
    return simulate_lms_points((4.73,), seed=1, n_offsets=12, max_across_slices=6, grid_all_offsets=True,
                               lines_um=(4.70, 4.72, 4.74, 4.76), hole_error_um=0.5)


def _true_errors(c, ids):
    where = {int(h): k for k, h in enumerate(c.hole_ids)}
    return c.hole_errors_um[[where[int(h)] for h in ids]]


def _scores(fit, c):
    r = compare_with_truth(fit, c.truth, n_per_slice=30)
    z = np.sqrt(np.mean((r["err"] / r["sd"]) ** 2, axis=0))
    return r["rms"][1], z[1], r["coverage68"][1]                 # rows: along the slice, where holes act


def test_tolerance_prior_and_affine_basis():
    p = tolerance_prior([7, 3, 5], 0.5)
    assert p.names()[:2] == ("hole7.dx_um", "hole7.dy_um") and np.allclose(p.cov_um2, 0.25 * np.eye(6))
    Q = affine_basis(MASK.xy_mm[:10])
    assert Q.shape == (20, 6) and np.allclose(Q.T @ Q, np.eye(6), atol=1e-12)
    shift = np.tile([0.3, -0.2], 10)                              # a translation lies in the span
    assert np.allclose(Q @ (Q.T @ shift), shift)
    with pytest.raises(ValueError, match="sigma"):
        tolerance_prior([1], 0.0)


def test_hand_written_imager_posterior_is_read_matched_and_used(tmp_path, campaign, write_imager_result):
    c = campaign
    seen = data_holes(c.data)
    shared = seen[::2]                                            # the imager sees half of them ...
    others = np.setdiff1d(MASK.hole_id, seen)[:20]                # ... and 20 the LMS does not
    ids = np.concatenate([shared, others])
    truth = np.concatenate([_true_errors(c, shared), np.zeros((len(others), 2))])
    offset = np.random.default_rng(3).normal(0.0, 0.03, truth.shape)
    out, draws = write_imager_result(tmp_path / "img", ids, truth + offset, sd_um=0.05)
    post = read_imager_hole_posterior(out, MASK)
    assert np.array_equal(post.hole_ids, ids)
    assert np.allclose(post.mean_um, draws.mean(axis=0), atol=1e-9)        # arcsec -> um at 3.319 mm/arcsec
    assert np.allclose(post.cov_um2, np.cov(draws.reshape(len(draws), -1), rowvar=False), atol=1e-12)
    assert post.sigma_um == pytest.approx(0.5)
    assert post.record["n_imager_holes"] == len(ids) and len(post.record["sha256"]) == 64
    prior = lms_hole_prior(seen, 0.5, post)
    assert prior.source["kind"] == "imager" and prior.source["n_shared"] == len(shared)
    assert prior.source["shared_hole_ids"] == shared.tolist() and prior.source["n_tolerance"] == len(seen) - len(shared)
    k = np.searchsorted(seen, shared)
    assert np.allclose(prior.mean_um[k], post.mean_um[: len(shared)])
    sd = np.sqrt(np.diag(prior.cov_um2)).reshape(-1, 2)
    assert np.all(sd[k] < 0.15) and np.allclose(np.delete(sd, k, axis=0), 0.5)   # + the affine part's ~0.07 um
    # used: the fitted errors of the shared holes follow the imager's, far tighter than the tolerance allows
    fit = fit_lms(c.data, c.truth.layout, c.terms, LmsFitSettings(holes=prior, **FAST))
    hs = fit.hole_samples
    assert fit.names[-2:] == prior.names()[-2:]
    assert np.all(np.abs(hs[:, k].mean(axis=0) - prior.mean_um[k]) < 3 * sd[k])
    assert np.all(hs[:, k, 0].std(axis=0) < 0.15)
    line = hole_prior_summary(fit)
    assert "joint with the imager" in line and f"{len(shared)} from the imager" in line
    # written and read back: lms_fit.json records the source, the parameters are named
    save_lms_fit(fit, tmp_path / "res")
    info = json.loads((tmp_path / "res" / "lms_fit.json").read_text())
    he = info["hole_errors"]
    assert he["fitted"] and he["source"]["kind"] == "imager" and he["source"]["n_shared"] == len(shared)
    assert he["source"]["sha256"] == post.record["sha256"] and he["source"]["file"].endswith("posterior.h5")
    back = load_lms_fit(tmp_path / "res")
    assert back.names == fit.names and np.allclose(back.hole_samples, hs)
    params = Table.read(tmp_path / "res" / "lms_params.ecsv")
    assert np.allclose(params["prior_sigma"][-2 * len(seen):], np.sqrt(np.diag(prior.cov_um2)))
    # the products say it
    write_ifu_distortion_table(fit, 0, tmp_path / "t.fits", {"rms_px": 0.01, "nspots": 3},
                               {"hole_prior": {"kind": "imager", "n_holes": len(seen), "n_shared": len(shared),
                                               "sha256": post.record["sha256"], "line": hole_prior_summary(fit)}})
    h = fits.getheader(tmp_path / "t.fits")
    assert h["HIERARCH ASTROCAL LMS HOLEPRIOR"] == "imager" and h["HIERARCH ASTROCAL LMS HOLESHARED"] == len(shared)
    assert any("joint with the imager" in str(v) for v in h["HISTORY"])


def test_ignoring_hole_errors_biases_rows_the_tolerance_covers_the_imager_sharpens(campaign):
    """(a) the table's positions as exact, (b) the mask tolerance, (c) an imager-like posterior
    (truth + N(0, 0.1 um), sd 0.1 um) on a campaign whose holes are off by 0.5 um rms."""
    c = campaign
    ids = data_holes(c.data)
    truth = _true_errors(c, ids)
    rng = np.random.default_rng(11)
    imager = HolePrior(ids, truth + rng.normal(0.0, 0.1, truth.shape), 0.01 * np.eye(2 * len(ids)),
                       {"kind": "imager"})
    res = {}
    for name, prior in (("a", None), ("b", tolerance_prior(ids, 0.5)), ("c", imager)):
        fit = fit_lms(c.data, c.truth.layout, c.terms, LmsFitSettings(holes=prior, **FAST))
        res[name] = _scores(fit, c)
        if prior is not None:
            res[name + "_holes"] = np.sqrt(np.mean((fit.hole_samples.mean(axis=0) - truth)[:, 0] ** 2))
    (ea, za, ca), (eb, zb, cb), (ec, zc, _) = res["a"], res["b"], res["c"]
    assert ea > 3 * eb and za > 3 and ca < 0.4                   # ignored: rows biased, intervals fail
    assert 0.55 < cb < 0.85 and 0.6 < zb < 1.4                   # the tolerance: honest intervals
    assert ec < eb and abs(zc - 1) < 0.4                         # the imager's posterior: better, still honest
    assert res["c_holes"] < res["b_holes"]


# ------------------------------------------------------------------------- bad input
def test_bad_imager_results_are_named(tmp_path, campaign, write_imager_result):
    seen = data_holes(campaign.data)
    with pytest.raises(HolePriorFileError, match="missing"):
        read_imager_hole_posterior(tmp_path / "nowhere", MASK)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "posterior.h5").write_text("not hdf5")
    with pytest.raises(HolePriorFileError, match="cannot be read"):
        read_imager_hole_posterior(tmp_path / "junk" / "posterior.h5", MASK)
    out, _ = write_imager_result(tmp_path / "noholes", seen, np.zeros((len(seen), 2)), holes=False)
    with pytest.raises(HolePriorFileError, match="no hole errors"):
        read_imager_hole_posterior(out, MASK)
    out, _ = write_imager_result(tmp_path / "nocamp", seen, np.zeros((len(seen), 2)), record=False)
    with pytest.raises(HolePriorFileError, match="which mask"):
        read_imager_hole_posterior(out, MASK)
    # the mask table the imager fit read has changed since: its hole errors are not this mask's
    changed = tmp_path / "changed_mask.ecsv"
    changed.write_bytes(Path(mask_path("metis_wcu_fp_mask5")).read_bytes())
    out, _ = write_imager_result(tmp_path / "changed", seen, np.zeros((len(seen), 2)), mask_file=changed)
    changed.write_bytes(changed.read_bytes() + b"# edited\n")
    with pytest.raises(MaskMismatchError, match="changed since the imager fit"):
        read_imager_hole_posterior(out, MASK)
    changed.unlink()
    with pytest.raises(HolePriorFileError, match="missing"):
        read_imager_hole_posterior(out, MASK)
    others = np.setdiff1d(MASK.hole_id, seen)[:10]
    out, _ = write_imager_result(tmp_path / "disjoint", others, np.zeros((10, 2)))
    with pytest.raises(NoSharedHolesError, match="shares no hole"):
        lms_hole_prior(seen, 0.5, read_imager_hole_posterior(out, MASK))
    moved = Table.read(mask_path("metis_wcu_fp_mask5"), format="ascii.ecsv")
    moved["x_mm"] += 0.01                                         # another mask: same ids, 10 um off
    moved.write(tmp_path / "other_mask.ecsv", format="ascii.ecsv")
    out, _ = write_imager_result(tmp_path / "other", seen, np.zeros((len(seen), 2)),
                                 mask_file=tmp_path / "other_mask.ecsv")
    with pytest.raises(MaskMismatchError, match="different mask"):
        read_imager_hole_posterior(out, MASK)
    assert issubclass(MaskMismatchError, HolePriorError) and issubclass(HolePriorError, ValueError)


def test_the_mask_and_scale_come_from_the_fits_record(tmp_path, campaign, write_imager_result):
    """fit.json records the mask and the plate scale the imager fit used: the draws in arcsec
    become um at that scale (not at a campaign's, which is not read), and a fit.json without
    the record is refused by name."""
    seen = data_holes(campaign.data)
    mean = np.random.default_rng(2).normal(0, 0.3, (len(seen), 2))
    a, draws = write_imager_result(tmp_path / "record", seen, mean, campaign=False)
    ra = read_imager_hole_posterior(a, MASK)
    assert np.allclose(ra.mean_um, draws.mean(axis=0))
    assert ra.record["mask_scale_mm_per_arcsec"] == SCALE
    assert ra.record["imager_campaign"].endswith("imager_campaign.toml")  # inputs[0], not read
    info = json.loads((a / "fit.json").read_text())
    info["mask"]["scale_mm_per_arcsec"] = 2 * SCALE
    (a / "fit.json").write_text(json.dumps(info))
    assert np.allclose(read_imager_hole_posterior(a, MASK).mean_um, 2 * ra.mean_um)
    del info["mask"]["scale_mm_per_arcsec"]
    (a / "fit.json").write_text(json.dumps(info))
    with pytest.raises(HolePriorFileError, match="without a plate scale"):
        read_imager_hole_posterior(a, MASK)
    b, _ = write_imager_result(tmp_path / "older", seen, mean, record=False)  # a campaign, no record
    with pytest.raises(HolePriorFileError, match="records no mask.*fit the imager's campaign again"):
        read_imager_hole_posterior(b, MASK)


def test_campaign_keys_choose_the_prior(tmp_path, campaign, write_imager_result):
    seen = data_holes(campaign.data)
    lms = SimpleNamespace(hole_error_um=0.0, hole_errors_from=None, mask=mask_path("metis_wcu_fp_mask5"))
    assert hole_prior_of(lms, campaign.data) is None
    lms.hole_error_um = 0.4
    p = hole_prior_of(lms, campaign.data)
    assert p.source == {"kind": "tolerance", "sigma_um": 0.4, "n_holes": len(seen)}
    lms.hole_errors_from = tmp_path / "absent"
    with pytest.raises(HolePriorFileError):
        hole_prior_of(lms, campaign.data)
    out, _ = write_imager_result(tmp_path / "img", seen[:3], np.zeros((3, 2)))
    lms.hole_errors_from = out / "posterior.h5"
    p = hole_prior_of(lms, campaign.data)
    assert p.source["n_shared"] == 3 and p.source["n_tolerance"] == len(seen) - 3


# ------------------------------------------------------------------------- the simulators
def test_points_simulator_hole_errors_move_only_the_truth():
    base = dict(seed=4, n_offsets=2, lines_um=(4.74,))
    plain = simulate_lms_points((4.73,), **base)
    holed = simulate_lms_points((4.73,), hole_error_um=0.5, **base)
    assert np.all(plain.hole_errors_um == 0) and 0.3 < np.std(holed.hole_errors_um) < 0.7
    s0, s1 = plain.data["spots"], holed.data["spots"]
    assert np.array_equal(s0["xi_arcsec"], s1["xi_arcsec"])                  # commanded: nominal
    d = np.hypot(s1["col"] - s0["col"], s1["row"] - s0["row"])
    assert 0.003 < np.median(d) < 0.1                             # ~0.15 mas of 8 mas pixels


def test_frame_simulator_writes_and_shares_hole_errors(tmp_path):
    s = LmsSimSettings(seed=3, settings_um=(4.73,), n_offsets=1, qcl_lines_um=(4.74,), noise=False, continuum=False,
                       background=False, thermal=False)
    a = simulate_lms(tmp_path / "a", s)
    holes = Table.read(a.truth_files["holes"])
    assert list(holes["hole_id"]) == list(MASK.hole_id) and 0.3 < np.std(holes["dx_um"]) < 0.7
    info = json.loads(a.truth_files["truth_json"].read_text())
    assert info["hole_errors"]["on"] and info["hole_errors"]["rms_um"] == 0.5
    # the spots' true xi is the hole's position with its error (default orientation: mask x = xi)
    k = {int(h): i for i, h in enumerate(holes["hole_id"])}
    sp = a.spots[a.spots["main"]]
    exp = a.exposures[0]
    i = np.array([k[int(h)] for h in sp["hole_id"]])
    xi_true = MASK.xy_mm[i, 0] / SCALE + holes["dx_um"][i] / (SCALE * 1e3) + exp["offset_true_a"]
    assert np.allclose(sp["xi_arcsec"], xi_true, atol=1e-12)
    # another simulation takes the same realisation from the table (e.g. simulate lab's truth/holes.ecsv)
    shared = Table({"hole_id": holes["hole_id"][::-1], "x_mm": holes["x_mm"][::-1], "y_mm": holes["y_mm"][::-1],
                    "dx_um": holes["dx_um"][::-1], "dy_um": holes["dy_um"][::-1]})
    shared.write(tmp_path / "lab_holes.ecsv", format="ascii.ecsv")
    b = simulate_lms(tmp_path / "b", s.replace(seed=9, hole_errors_from=str(tmp_path / "lab_holes.ecsv")))
    hb = Table.read(b.truth_files["holes"])
    assert np.array_equal(hb["dx_um"], holes["dx_um"]) and np.array_equal(hb["dy_um"], holes["dy_um"])
    off = simulate_lms(tmp_path / "c", s.replace(hole_errors=False))
    assert np.all(Table.read(off.truth_files["holes"])["dx_um"] == 0)
    shared["x_mm"][0] += 0.01
    shared.write(tmp_path / "other.ecsv", format="ascii.ecsv", overwrite=True)
    with pytest.raises(SimulationOptionError, match="another mask"):
        simulate_lms(tmp_path / "d", s.replace(hole_errors_from=str(tmp_path / "other.ecsv")))
    with pytest.raises(SimulationOptionError, match="cannot be read"):
        simulate_lms(tmp_path / "e", s.replace(hole_errors_from=str(tmp_path / "absent.ecsv")))
