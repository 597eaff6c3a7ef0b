"""Relative spectral response per slice and slit loss (astrocal.lms.response, the simulator's effects)."""
import json

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table, vstack

from astrocal.cli import main
from astrocal.lab.mask import load_mask
from astrocal.lms import DeviationLayout, LmsGeometry, echelle_setting
from astrocal.lms.frames import reduce_lms_frame
from astrocal.lms.mosaic import REFERENCE_BORDERS
from astrocal.lms.response import (NOT_GIVEN, estimate_rsrf, estimate_slit_throughput, extract_slice_spectra,
                                   planck_photon_radiance, read_response_products, write_rsrf_product,
                                   write_slit_product)
from astrocal.lms.spots import SPOT_FLAGS, measure_laser_spots
from astrocal.lms.traces import SLICE_HALF_LENGTH_ARCSEC, SLICE_WIDTH_ARCSEC
from astrocal.sim.lms import LmsSimSettings, simulate_lms
from astrocal.sim.lms_response import (LmsResponseTruth, SlitProfile, point_source_throughput, rsrf_truth,
                                       slit_truth)


# ------------------------------------------------------------------ the simulator's models
def test_slit_profile_and_point_source_throughput():
    p = SlitProfile(0.2, 4.0)
    assert p(0.0) == 1.0 and p(0.5) == pytest.approx(0.8) and p(-0.25) == pytest.approx(1 - 0.2 / 16)
    assert p.mean() == pytest.approx(1 - 0.2 / 5)
    with pytest.raises(ValueError):
        SlitProfile(1.0)
    u = np.array([-0.4, -0.2, 0.0, 0.2, 0.4])
    bare = point_source_throughput(u, 4.73)
    lossy = point_source_throughput(u, 4.73, p)
    assert bare == pytest.approx(bare[::-1], rel=1e-12)                  # symmetric about the centre
    assert np.all(np.diff(bare[2:]) < 0) and 0.5 < bare[2] < 0.6       # the slice cuts the PSF
    assert np.all(lossy < bare) and np.all(np.diff(lossy[2:] / bare[2:]) < 0)
    assert point_source_throughput(0.0, 3.39)[0] > bare[2]              # narrower PSF at shorter lambda


def test_response_truth_is_smooth_per_slice_and_round_trips_as_a_table():
    rng = np.random.default_rng(1)
    from astrocal.sim.lms_response import draw_response

    r = draw_response(rng)
    st = echelle_setting(4.73)
    lam = np.linspace(4.69, 4.77, 200)
    f = r.factor(np.full(lam.size, 7), lam, st.order)
    assert np.all(f > 0) and np.max(np.abs(np.diff(f, 2))) < 1e-4        # smooth in lambda
    assert not np.allclose(r.factor(np.full(5, 3), lam[:5], st.order), r.factor(np.full(5, 4), lam[:5], st.order))
    back = LmsResponseTruth.from_table(r.table())
    assert np.allclose(back.factor(np.full(lam.size, 7), lam, st.order), f, rtol=0, atol=0)


# ------------------------------------------------------------------ tables written by test code
def _spectra_table(rng, rel, temp, lam_lo=4.70, lam_hi=4.76, ncol=1500, counts=2e6):
    """Per slice and column: flux = A R_k(lam) B(lam) dlam/dcol + noise, with R_k = rel[k] (1 + 0.2 w)."""
    rows = []
    lam = np.linspace(lam_lo, lam_hi, ncol)
    dl = (lam_hi - lam_lo) / ncol * (1 + 0.05 * (lam - lam.mean()))
    b = planck_photon_radiance(lam, temp)
    w = (lam - lam.mean()) / (lam_hi - lam_lo)
    for k in range(1, 29):
        truth = rel[k - 1] * (1 + 0.2 * w)
        mu = counts * truth * b * dl / np.median(b * dl)
        var = mu + 70.0**2 * 110
        flux = mu + rng.normal(0, np.sqrt(var))
        rows.append(Table({"slice": np.full(ncol, k), "det": np.ones(ncol, int), "col": np.arange(ncol),
                           "lam_um": lam, "dlam_dcol": dl, "flux_e": flux, "var_e2": var,
                           "n_rows": np.full(ncol, 110)}))
    return vstack(rows)


def test_rsrf_from_a_spectra_table_written_by_test_code_recovers_truth_with_coverage():
    rng = np.random.default_rng(5)
    rel = 1 + 0.05 * rng.normal(size=28)
    z, zr = [], []
    for rep in range(8):
        t = estimate_rsrf(_spectra_table(rng, rel, 1000.0, counts=2e5), 1000.0, n_bins=24)
        truth = rel[t["SLICE"] - 1] * (1 + 0.2 * (np.asarray(t["LAM"]) - 4.73) / 0.06)
        z.append((t["RSRF"] - truth / truth.mean()) / t["SIGMA"])
        zr.append((t["REL_SLICE"] - rel[t["SLICE"] - 1] / rel.mean()) / t["SIGMA_REL"])
    z, zr = np.concatenate(z), np.concatenate(zr)
    assert len(t) == 28 * 24 and np.all(t["NCOL"] >= 60)
    assert np.mean(np.abs(z) < 1) == pytest.approx(0.683, abs=0.04)
    assert np.mean(np.abs(z) < 2) == pytest.approx(0.954, abs=0.02)
    assert np.mean(np.abs(zr) < 1) == pytest.approx(0.683, abs=0.04)
    assert np.sqrt(np.mean(zr**2)) == pytest.approx(1.0, abs=0.08)
    assert np.mean(t["RSRF"]) == pytest.approx(1.0, abs=1e-12)
    # a wrong black-body temperature tilts the common shape but not the slice ratios
    t2 = estimate_rsrf(_spectra_table(np.random.default_rng(9), rel, 1000.0), 1100.0, n_bins=24)
    t1 = estimate_rsrf(_spectra_table(np.random.default_rng(9), rel, 1000.0), 1000.0, n_bins=24)
    tilt = np.max(np.abs(t2["RSRF"] - t1["RSRF"]))
    assert tilt > 10 * np.median(t1["SIGMA"])
    assert np.max(t1["SIGMA_BB"]) == pytest.approx(tilt * 5.0 / 100.0, rel=0.15)    # SIGMA_BB: for 5 K
    assert np.allclose(t2["REL_SLICE"], t1["REL_SLICE"], rtol=0, atol=1e-6)
    assert np.all(t1["SIGMA_BB"] > 0) and t1.meta["bb_temp_sigma_k"] == 5.0


def test_rsrf_drops_dead_columns_and_partial_bins():
    rng = np.random.default_rng(2)
    t = _spectra_table(rng, np.ones(28), 1000.0)
    t["flux_e"][(t["slice"] == 4) & (t["col"] >= 100) & (t["col"] < 130)] = 0.0      # unlit columns
    r = estimate_rsrf(t, 1000.0, n_bins=24)
    assert r.meta["n_clipped"] == 30
    assert np.all(np.abs(r["RSRF"][r["SLICE"] == 4] - 1) < 0.25)
    with pytest.raises(ValueError, match="temperature"):
        estimate_rsrf(t, 0.0)


def _scan_spot_table(rng, t_of_u, u_positions, n_holes=14, lines=(4.70, 4.74), snr=150.0):
    rows = []
    amp = rng.uniform(0.5, 2.0, (n_holes, len(lines))) * 1e5
    for ex, u in enumerate([0.0] + list(u_positions)):
        for h in range(n_holes):
            for j, lam in enumerate(lines):
                f = amp[h, j] * t_of_u(u)
                rows.append({"hole": 100 + h, "slice": 6 + 8 * (h % 3), "line_um": lam,
                             "eta_offset_arcsec": u * SLICE_WIDTH_ARCSEC, "flux_e": f * (1 + rng.normal(0, 1 / snr)),
                             "snr": snr, "exposure": ex, "setting": 0,
                             "flags": SPOT_FLAGS["off_centre"] if abs(u) > 0.1 else 0})
    return Table(rows=rows)


def test_slit_throughput_from_a_spot_table_written_by_test_code():
    def t_of_u(u):
        return 0.55 - 0.6 * u**2

    rng = np.random.default_rng(3)
    u_pos = [-0.4, -0.2, 0.2, 0.4]
    z = []
    for rep in range(150):
        t = estimate_slit_throughput(_scan_spot_table(rng, t_of_u, u_pos), offset_sigma_mas=1.0)
        truth = t_of_u(np.asarray(t["U"])) / t_of_u(0.0)
        z.append((t["T_REL"] - truth) / t["SIGMA_T"])
    z = np.concatenate(z)
    assert len(t) == 8 and set(np.round(t["U"], 3)) == set(u_pos) and set(t["LINE"]) == {4.70, 4.74}
    assert np.all(t["NSPOT"] == 14) and np.allclose(t["SIGMA_U"], 1.0 / 20.7)
    assert np.all(np.isnan(t["DCOL"]))                                  # no col/sigma_col in the table
    assert np.mean(np.abs(z) < 1) == pytest.approx(0.683, abs=0.04)
    assert np.mean(np.abs(z) < 2) == pytest.approx(0.954, abs=0.02)
    # flagged spots (other than off_centre) are left out; no scan: an empty table that says why
    bad = _scan_spot_table(rng, t_of_u, u_pos)
    bad["flags"][bad["exposure"] == 2] |= SPOT_FLAGS["blend"]
    assert -0.2 not in np.round(estimate_slit_throughput(bad)["U"], 3)
    none = estimate_slit_throughput(_scan_spot_table(rng, t_of_u, []))
    assert len(none) == 0 and "no slit-loss scan" in none.meta["reason"]


def test_products_have_headers_and_read_back(tmp_path):
    rng = np.random.default_rng(4)
    st = echelle_setting(4.73)
    rsrf = estimate_rsrf(_spectra_table(rng, np.ones(28), 1000.0), 1000.0, n_bins=16)
    slit = estimate_slit_throughput(_scan_spot_table(rng, lambda u: 1 - u**2, [-0.3, 0.3]))
    p1 = write_rsrf_product(rsrf, st, tmp_path / "LMS_RSRF_4p730.fits", {"campaign_sha256": "abc", "inputs": ["x"]})
    p2 = write_slit_product(slit, st, tmp_path / "LMS_SLIT_THROUGHPUT_4p730.fits")
    with fits.open(p1) as hdul:
        h = hdul[0].header
        assert h["HIERARCH ESO PRO CATG"] == "LMS_RSRF" and h["HIERARCH ESO DPR TYPE"] == "RSRF"
        assert h["HIERARCH ESO INS WLEN CEN"] == 4.73 and h["CAMPHASH"] == "abc" and h["INPUT1"] == "x"
        assert 0 <= h["HIERARCH ASTROCAL QC RSRF SLICE RMS"] < 0.01
        assert sum("not given by these frames" in str(c) for c in h["COMMENT"]) == 4
        assert hdul["RSRF"].header["BBTEMP"] == 1000.0 and hdul["RSRF"].header["TUNIT2"] == "um"
    with fits.open(p2) as hdul:
        assert hdul[0].header["HIERARCH ESO PRO CATG"] == "LMS_SLIT_THROUGHPUT"
        assert hdul["THROUGHPUT"].header["SLWIDTH"] == pytest.approx(20.7)
    back = read_response_products(tmp_path, [p1.name, p2.name, "other.fits"])
    assert np.allclose(back.rsrf["4p730"]["RSRF"], rsrf["RSRF"]) and len(back.slit["4p730"]) == len(slit)
    assert len(NOT_GIVEN) == 5


def _write_frame(path, data_e, dpr_type, bb_temp=1000.0):
    """A raw LMS frame written with numpy + astropy only: 4 chips in ADU (gain 2), no noise keywords missing."""
    ph = fits.Header()
    ph["HIERARCH ESO DPR TYPE"] = dpr_type
    ph["HIERARCH ESO DPR CATG"] = "CALIB"
    ph["HIERARCH ESO DPR TECH"] = "IFU"
    ph["HIERARCH ESO INS WLEN CEN"] = 4.73
    ph["HIERARCH ESO INS OPTI8 ORDER"] = echelle_setting(4.73).order
    ph["HIERARCH ESO DET3 DIT"] = 5.0
    ph["HIERARCH ESO DET3 NDIT"] = 1
    ph["HIERARCH ESO SEQ WCU_BB_TEMP"] = bb_temp
    hdus = [fits.PrimaryHDU(header=ph)]
    for d in range(1, 5):
        h = fits.Header()
        h["HIERARCH ESO DET3 CHIP GAIN"] = 2.0
        h["HIERARCH ESO DET3 CHIP RON"] = 70.0
        h["HIERARCH ESO DET3 CHIP FULLWELL"] = 1e5
        h["HIERARCH ESO DET3 CHIP REFPIX"] = " ".join(map(str, REFERENCE_BORDERS[d]))
        hdus.append(fits.ImageHDU((data_e[d - 1] / 2.0).astype(np.float32), header=h, name=f"DET{d}.DATA"))
    fits.HDUList(hdus).writeto(path)


def test_slice_sums_of_a_frame_written_by_test_code(tmp_path):
    """A slices frame built with numpy: slice k's rows between its end images hold (k + 100) e per pixel
    at every column; the extraction's sums are that times the rows inside, within the edge pixels."""
    geo = LmsGeometry(DeviationLayout((echelle_setting(4.73),)))
    data = np.full((4, 2048, 2048), 0.0)
    lam = np.linspace(*geo.wavelength_range(0), 400)
    cols = np.arange(2048)
    rows = np.arange(2048)[:, None]
    for k in range(1, 29):
        for d in range(1, 5):
            a = geo.forward(np.full(lam.size, k), np.full(lam.size, SLICE_HALF_LENGTH_ARCSEC), lam, 0, on_gap="mask")
            b = geo.forward(np.full(lam.size, k), np.full(lam.size, -SLICE_HALF_LENGTH_ARCSEC), lam, 0, on_gap="mask")
            on = (a.det == d) & (b.det == d)
            if on.sum() < 4:
                continue
            ra = np.interp(cols, a.col[on], a.row[on])
            rb = np.interp(cols, b.col[on], b.row[on])
            lit = (rows >= np.minimum(ra, rb)[None, :]) & (rows <= np.maximum(ra, rb)[None, :])
            lit &= (cols >= a.col[on].min())[None, :] & (cols <= a.col[on].max())[None, :]
            data[d - 1][lit] += k + 100.0
    path = tmp_path / "slices.fits"
    _write_frame(path, data, "RSRF")
    red = reduce_lms_frame(path)
    sp = extract_slice_spectra(red, geo, 0)
    assert set(np.unique(sp["slice"])) == set(range(1, 29)) and set(np.unique(sp["det"])) == {1, 2, 3, 4}
    per_row = np.asarray(sp["flux_e"]) / (np.asarray(sp["slice"]) + 100.0)
    assert np.median(per_row) == pytest.approx(2 * SLICE_HALF_LENGTH_ARCSEC / 0.0084, rel=0.06)   # ~107 rows
    # neighbours never enter: every column's sum is a whole number of rows of its own slice
    assert np.allclose(per_row, np.round(per_row), atol=1e-3)
    assert np.all(sp["n_rows"] > per_row)
    assert np.all(np.asarray(sp["dlam_dcol"]) > 0) and np.all(np.diff(sp["lam_um"][:50]) > 0)


# ------------------------------------------------------------------ simulated campaign, truth recovery
@pytest.fixture(scope="module")
def scan_campaign(tmp_path_factory):
    """4.73 um, one offset plus a slit-loss scan at -0.3 and +0.3 slice widths, two QCL lines, a faint
    black body (efficiency 0.01: the RSRF's photon noise above the simulator's 1e-4 rendering accuracy)."""
    out = tmp_path_factory.mktemp("lmsresp") / "camp"
    res = simulate_lms(out, LmsSimSettings(seed=11, settings_um=(4.73,), n_offsets=1, qcl_lines_um=(4.70, 4.74),
                                           slit_scan=(-0.3, 0.3), efficiency=0.01))
    return res


def test_simulated_frames_carry_the_response_and_the_scan(scan_campaign):
    res = scan_campaign
    ex = res.exposures
    assert list(ex["kind"]) == ["laser"] * 3 + ["grid", "slices", "background"]
    assert list(ex["slit_scan"]) == [False, True, True, False, False, False]
    assert np.allclose(ex["offset_cmd_b"][1:3] / SLICE_WIDTH_ARCSEC, [-0.3, 0.3])
    assert (res.directory / "truth" / "response.ecsv").exists()
    info = json.loads((res.directory / "truth" / "truth.json").read_text())
    assert info["response"]["rsrf"] and info["response"]["slit_profile"] == {"edge_loss": 0.2, "power": 4.0}
    sp = res.spots[res.spots["main"]]
    assert np.all((sp["throughput"] > 0.3) & (sp["throughput"] < 0.7))
    # the truth's throughput is the sampled PSF x the slit profile at the true position
    one = sp[np.abs(sp["xi_arcsec"]) < 0.3][0]
    assert one["throughput"] == pytest.approx(
        point_source_throughput(one["u_true"], one["lam_um"], res.slit_profile)[0], rel=2e-3)


def test_rsrf_and_slit_loss_recovered_from_simulated_frames(scan_campaign):
    res = scan_campaign
    d = res.directory
    bg = d / "raw" / "lms_background_4p730.fits"
    geo = res.geometry
    rsrf = estimate_rsrf(extract_slice_spectra(reduce_lms_frame(d / "raw" / "lms_slices_4p730.fits", bg), geo, 0),
                         1000.0)
    tr = rsrf_truth(rsrf, res.response, geo.layout.settings[0].order)
    z = (rsrf["RSRF"] - tr["rsrf"]) / rsrf["SIGMA"]
    ok = np.isfinite(rsrf["REL_SLICE"])
    zr = (rsrf["REL_SLICE"][ok] - tr["rel_slice"][ok]) / rsrf["SIGMA_REL"][ok]
    assert len(rsrf) > 25 * 28 and set(rsrf["SLICE"]) == set(range(1, 29))
    assert np.sqrt(np.mean(z**2)) < 1.3 and np.sqrt(np.mean(zr**2)) < 1.3
    assert np.max(np.abs(rsrf["RSRF"] / tr["rsrf"] - 1)) < 0.01
    nominal = geo.with_params(geo.layout.zeros())
    mask = load_mask(d / "mask.ecsv")
    tabs = []
    for i, row in enumerate(res.exposures):
        if row["kind"] == "laser":
            t = measure_laser_spots(reduce_lms_frame(d / row["file"], bg), nominal, np.asarray(mask.xy_arcsec()),
                                    json.loads(row["lines_um"]),
                                    offset_arcsec=(row["offset_cmd_a"], row["offset_cmd_b"]),
                                    hole_id=np.asarray(mask.hole_id))
            if row["slit_scan"]:                         # off-centre spots stay out of the geometry fit
                assert np.all(t["flags"] & SPOT_FLAGS["off_centre"])
            else:
                assert not np.any(t["flags"] & SPOT_FLAGS["off_centre"])
            t.meta = {}
            t["exposure"], t["setting"] = i, 0
            tabs.append(t)
    slit = estimate_slit_throughput(vstack(tabs))
    truth = slit_truth(slit, res.spots, res.exposures)
    assert len(slit) == 4 and np.all(np.isfinite(truth))
    assert np.all(slit["T_REL"] < 1) and np.all(slit["NSPOT"] >= 10)
    z = (slit["T_REL"] - truth) / slit["SIGMA_T"]
    assert np.all(np.abs(z) < 3.5)
    assert np.max(np.abs(slit["T_REL"] - truth)) < 0.02
    # the spots' shift along the dispersion: where the light sat across the slice (true offsets)
    sp = res.spots[res.spots["main"]]
    for row in slit:
        f = [r["file"] for r in res.exposures if r["kind"] == "laser"
             and abs(r["offset_cmd_b"] / SLICE_WIDTH_ARCSEC - row["U"]) < 1e-3][0]
        a = sp[(sp["file"] == f) & np.isclose(sp["lam_um"], row["LINE"])]
        b = sp[(sp["file"] == res.exposures["file"][0]) & np.isclose(sp["lam_um"], row["LINE"])]
        kb = {(h, s): c for h, s, c in zip(b["hole_id"], b["slice"], b["col"])}
        d = [c - kb[(h, s)] for h, s, c in zip(a["hole_id"], a["slice"], a["col"]) if (h, s) in kb]
        assert np.sign(row["DCOL"]) == np.sign(row["U"]) and abs(row["DCOL"] - np.nanmean(d)) < 0.03
        assert 0 < row["SIGMA_DCOL"] < 0.02


@pytest.mark.slow
def test_response_coverage_over_a_few_campaigns(tmp_path):
    """Three more campaigns (own seeds, own responses): the normalised errors of the RSRF and the
    slit loss are unit-width (the benchmark, benchmarks/bench_lms_response.py, runs 50)."""
    import importlib.util
    import pathlib

    spec = importlib.util.spec_from_file_location(
        "bench_lms_response", pathlib.Path(__file__).parents[2] / "benchmarks" / "bench_lms_response.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    import argparse

    a = argparse.Namespace(setting=4.73, lines=2, scan=[-0.3, 0.3], bins=32, efficiency=0.002)
    rows = [bench.run_campaign(seed, a, tmp_path) for seed in (21, 22, 23)]
    s = bench.summarise(rows)
    assert s["rsrf"]["rms_z"] == pytest.approx(1.0, abs=0.1) and s["rsrf"]["in1sigma"] == pytest.approx(0.683, abs=0.03)
    assert s["rel_slice"]["rms_z"] == pytest.approx(1.0, abs=0.1)
    assert s["slit"]["rms_z"] < 1.8 and s["slit"]["n"] >= 10


def test_bad_slit_scan_option_is_named(tmp_path, capsys):
    assert main(["simulate", "lms", "--out", str(tmp_path / "x"), "--slit-scan", "0.7"]) != 0
    assert "--slit-scan" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_settings_without_the_frames_get_notes_not_products(tmp_path):
    from types import SimpleNamespace

    from astrocal.lms.response import lms_response_from_campaign

    geo = LmsGeometry(DeviationLayout((echelle_setting(4.73),)))
    lms = SimpleNamespace(frames=[], gain_e_per_adu=2.0, read_noise_e=70.0, offset_sigma_mas=1.0)
    spots = _scan_spot_table(np.random.default_rng(0), lambda u: 1.0, [])          # centred holes only
    res = lms_response_from_campaign(SimpleNamespace(lms=lms), geo, [(0, 0, spots)], tmp_path)
    assert res.paths == {} and list(tmp_path.iterdir()) == []
    assert any("no slices" in n and "no RSRF" in n for n in res.notes)
    assert any("no slit loss" in n and "no slit-loss scan" in n for n in res.notes)


@pytest.mark.slow
@pytest.mark.filterwarnings("error:Mean of empty slice:RuntimeWarning")  # a group with no point used
def test_fit_command_writes_the_response_products_and_the_report_shows_them(scan_campaign, caplog):
    d = scan_campaign.directory
    camp = str(d / "campaign.toml")
    with caplog.at_level("INFO", logger="astrocal"):
        assert main(["measure", camp]) == 0
    # a scan exposure's spots are all off their slice's centre: said so, not just "0 good"
    scan = [r.getMessage() for r in caplog.records if "off their slice's centre" in r.getMessage()]
    assert len(scan) == 2 and all(", 0 good," in m for m in scan)
    assert main(["fit", camp, "--steps", "200", "--walkers", "12"]) == 0
    out = d / "out" / "lms"
    manifest = json.loads((out / "manifest.json").read_text())
    for name in ("LMS_RSRF_4p730.fits", "LMS_SLIT_THROUGHPUT_4p730.fits", "report/plots/lms_rsrf_4p730.png",
                 "report/plots/lms_slit_4p730.png"):
        assert name in manifest["files"] and (out / name).exists()
    with fits.open(out / "LMS_RSRF_4p730.fits") as hdul:
        assert hdul[0].header["HIERARCH ESO PRO CATG"] == "LMS_RSRF"
        assert str(d / "raw" / "lms_slices_4p730.fits") in hdul[0].header["INPUT1"]
        assert len(hdul["RSRF"].data) > 25 * 28
    slit = Table.read(out / "LMS_SLIT_THROUGHPUT_4p730.fits", hdu="THROUGHPUT")
    truth = slit_truth(slit, scan_campaign.spots, scan_campaign.exposures)
    assert len(slit) == 4 and np.all(np.abs(slit["T_REL"] - truth) < 4 * slit["SIGMA_T"])
    rep = json.loads((out / "report" / "report.json").read_text())
    assert set(rep["response"]["rsrf"]) == {"4p730"} and len(rep["response"]["slit"]["4p730"]) == 4
    assert len(rep["response"]["not_given"]) == 5 and rep["response"]["notes"] == []
    html = (out / "report" / "report.html").read_text()
    assert 'id="rsrf"' in html and 'id="slit"' in html and 'id="not-given"' in html
    assert main(["report", str(out), "--out", str(d / "again")]) == 0           # again from the directory
    again = json.loads((d / "again" / "report.json").read_text())
    assert again["response"]["slit"] == rep["response"]["slit"]
    assert again["response"]["rsrf"]["4p730"]["rows"] == rep["response"]["rsrf"]["4p730"]["rows"]
