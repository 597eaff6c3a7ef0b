"""LMS products (IFU_DISTORTION_TABLE, LMS_GEOMETRY) and report page from a hand-made fit result.

The fit result is written by hand (no simulator, no measurement, no sampler): deviation
parameters drawn once from the prior, posterior draws scattered about them with chosen widths,
and a residual table with known numbers. The products are read back with astropy and checked
against that result's geometry and draws.
"""
import json

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from astrocal.atomic import ProductExistsError
from astrocal.lms import DeviationLayout, echelle_setting
from astrocal.lms.fit import ExposureTerms, LmsFit, LmsFitSettings
from astrocal.lms.products import (evaluate_forward_poly, lms_qc, slice_polynomials, trace_table_rows,
                                   write_lms_products)
from astrocal.lms.report import write_lms_report
from astrocal.lms.spots import spot_widths
from astrocal.model.sampling import Diagnostics


def hand_fit(sd_px=0.01, n_draws=60, seed=3):
    lay = DeviationLayout((echelle_setting(4.73),))
    rng = np.random.default_rng(seed)
    p0 = rng.normal(0.0, 0.3 * lay.prior_sigma())
    sd = np.full(lay.n_params, sd_px)
    sd[lay.blocks["placement"]] = np.tile([sd_px, sd_px, 1e-6], 3)
    sd[lay.blocks["settings"]] = [sd_px, sd_px, 1e-5]
    theta = p0 + rng.normal(size=(n_draws, lay.n_params)) * sd
    diag = Diagnostics(np.array([20.0, 15.0]), 0.4, 2000, 200, np.array([800.0, 900.0]), True, [])
    return LmsFit(lay, "forward", ExposureTerms.build([]), theta, None, rng.normal(size=(n_draws, 2)) * 0.01,
                  np.zeros(2), ("log_tau_px", "log_scale_spots"), diag, None, None, None, LmsFitSettings())


#: three spots (col, row residuals) and a trace point, written as lms_residuals.ecsv would be
RESIDUALS = Table({"kind": ["spots"] * 6 + ["traces"], "row_index": [0, 0, 1, 1, 4, 4, 0],
                   "axis": ["col", "row"] * 3 + ["row"], "slice": [6, 6, 6, 6, 14, 14, 6],
                   "det": [3, 3, 4, 4, 3, 3, 3], "setting": [0] * 7,
                   "line_um": [4.70, 4.70, 4.74, 4.74, 4.70, 4.70, np.nan],
                   "normalised": [0.5, -1.0, 0.2, 0.1, -0.3, 1.2, 0.4],
                   "residual_px": [0.03, -0.04, 0.01, 0.0, -0.02, 0.05, 0.3]})


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    fit = hand_fit()
    out = tmp_path_factory.mktemp("lmsprod")
    spots = Table({"fwhm_col_px": [2.0, 3.0, 9.0, 9.0, 2.5], "fwhm_row_px": [2.0, 2.0, 9.0, 9.0, 3.5]})
    paths, qc = write_lms_products(fit, out, RESIDUALS, spots, {"campaign_sha256": "abc", "inputs": ["c.toml"]},
                                   step=8, sigma_step=32)
    return fit, out, paths, qc


def test_qc_from_a_hand_written_residual_table():
    qc = lms_qc(RESIDUALS, None, True)
    assert qc["nspots"] == 3
    assert qc["rms_px"] == pytest.approx(np.sqrt((0.03**2 + 0.04**2 + 0.01**2 + 0.02**2 + 0.05**2) / 3))
    assert qc["fwhm_px"] is None and qc["converged"] is True
    spots = Table({"fwhm_col_px": [2.0, 3.0, 9.0, 9.0, 2.5], "fwhm_row_px": [2.0, 2.0, 9.0, 9.0, 3.5]})
    assert lms_qc(RESIDUALS, spots)["fwhm_px"] == pytest.approx(2.5)       # spots 0, 1, 4: 2.0, 2.5, 3.0
    with pytest.raises(ValueError, match="residual_px"):
        lms_qc(Table({"kind": ["spots"], "row_index": [0], "axis": ["col"]}))


def test_ifu_distortion_table_is_the_pipeline_layout_and_the_centre_lines(written):
    fit, out, paths, qc = written
    geo = fit.geometry()
    lo, hi = geo.wavelength_range(0)
    with fits.open(paths["ifu_distortion_table_4p730"]) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "DET1", "DET2", "DET3", "DET4"]
        ph = hdul[0].header
        assert ph["HIERARCH ESO PRO CATG"] == "IFU_DISTORTION_TABLE"
        assert ph["HIERARCH ESO QC IFU DISTORT NSPOTS"] == 3
        assert ph["HIERARCH ESO QC IFU DISTORT RMS"] == pytest.approx(qc["rms_px"], abs=5e-4)
        assert ph["HIERARCH ESO QC IFU DISTORT FWHM"] == pytest.approx(2.5)
        assert ph["HIERARCH ASTROCAL QC CONVERGED"] is True
        assert ph["HIERARCH ESO INS WLEN CEN"] == 4.73
        for det in (1, 2, 3, 4):
            t = hdul[f"DET{det}"].data
            assert t.columns.names == ["orders", "column_range"]
            assert t["orders"].shape == (14, 5) and t["column_range"].shape == (14, 2)
            first = 1 if det in (3, 4) else 15
            assert hdul[f"DET{det}"].header["SLICE1"] == first
            for k in range(14):
                lam = np.linspace(lo, hi, 400)
                c, r, _ = geo.chip_position(np.full(lam.size, first + k), np.zeros(lam.size), lam, 0, det)
                a, b = t["column_range"][k]
                m = (c >= a) & (c < b)
                assert m.sum() > 150                         # the line crosses most of the chip (half the range)
                assert np.abs(np.polyval(t["orders"][k], c[m]) - r[m]).max() < 1e-4
            rows = [np.polyval(t["orders"][k], 1000.0) for k in range(14)]
            assert np.all(np.diff(rows) > 100)                         # 14 slices in increasing row


def test_forward_polynomials_and_their_covariance_match_the_draws(written):
    fit, out, paths, _ = written
    with fits.open(paths["lms_geometry_4p730"]) as hdul:
        t = Table(hdul["SLICES"].data)
        lam_range = (hdul["SLICES"].header["LAMLO"], hdul["SLICES"].header["LAMHI"])
    assert len(t) == 56 and set(t["DET"]) == {1, 2, 3, 4}
    rng = np.random.default_rng(0)
    for row in t[[0, 13, 30, 55]]:
        lam = rng.uniform(row["LAM_MIN"], row["LAM_MAX"], 20)
        xi = rng.uniform(-0.44, 0.44, 20)
        s = np.full(20, row["SLICE"])
        samples, _ = fit.position_samples(s, xi, lam, 0, det=np.full(20, row["DET"]))
        c, r = evaluate_forward_poly(row, xi, lam, lam_range)
        assert np.abs(c - samples.mean(axis=0)[:, 0]).max() < 1e-6
        assert np.abs(r - samples.mean(axis=0)[:, 1]).max() < 1e-6
        n = len(row["FWD_COL"])
        deg = int(np.sqrt(n)) - 1
        u, w = xi / 0.4485, (2 * lam - sum(lam_range)) / (lam_range[1] - lam_range[0])
        B = (u[:, None, None] ** np.arange(deg + 1)[:, None] * w[:, None, None] ** np.arange(deg + 1)).reshape(20, -1)
        sd_col = np.sqrt(np.einsum("nk,kl,nl->n", B, row["FWD_COV"][:n, :n], B))
        sd_row = np.sqrt(np.einsum("nk,kl,nl->n", B, row["FWD_COV"][n:, n:], B))
        assert sd_col == pytest.approx(samples.std(axis=0, ddof=1)[:, 0], rel=1e-6)
        assert sd_row == pytest.approx(samples.std(axis=0, ddof=1)[:, 1], rel=1e-6)


def test_pixel_images_match_the_inverse_geometry_and_its_sigma(written):
    fit, out, paths, _ = written
    geo = fit.geometry()
    with fits.open(paths["lms_geometry_4p730"]) as hdul:
        for det in (1, 4):
            xi = hdul[f"DET{det}.XI"].data
            dl = hdul[f"DET{det}.DLAM"]
            sl = hdul[f"DET{det}.SLICE"].data
            step = dl.header["CDELT1"]
            assert step == 8 and xi.shape == (256, 256)
            rng = np.random.default_rng(det)
            j, i = rng.integers(0, 256, 400), rng.integers(0, 256, 400)
            sp = geo.inverse(np.full(400, det), i * step, j * step, 0, on_miss="mask")
            assert np.array_equal(sl[j, i], sp.slice)
            on = sp.slice > 0
            assert on.sum() > 250
            assert np.abs(xi[j, i][on] - sp.xi[on]).max() < 1e-6                   # arcsec (1e-4 px)
            lam = dl.data[j, i][on].astype(float) + dl.header["LAMREF"]
            assert np.abs(lam - sp.lam[on]).max() < 1e-8                            # um (< 1e-3 px)
            sx, sls = hdul[f"DET{det}.SIGMA_XI"].data, hdul[f"DET{det}.SIGMA_LAM"].data
            s2 = hdul[f"DET{det}.SIGMA_XI"].header["CDELT1"]
            j2, i2 = np.nonzero(np.isfinite(sx))
            k = rng.choice(len(j2), 100, replace=False)
            pg = fit.pixel_geometry(np.full(100, det), i2[k] * s2, j2[k] * s2, 0)
            assert sx[j2[k], i2[k]] == pytest.approx(pg["sigma_xi"], rel=1e-3)
            assert sls[j2[k], i2[k]] == pytest.approx(pg["sigma_lam"], rel=1e-3)


def test_products_are_not_overwritten_unless_asked(written):
    fit, out, paths, _ = written
    before = paths["ifu_distortion_table_4p730"].read_bytes()
    with pytest.raises(ProductExistsError):
        write_lms_products(fit, out, RESIDUALS, step=64)
    assert paths["ifu_distortion_table_4p730"].read_bytes() == before


def test_trace_rows_follow_a_shifted_geometry():
    """A 0.5-px row shift of setting 0 moves every trace polynomial by 0.5 px."""
    fit = hand_fit(sd_px=1e-4)
    shifted = hand_fit(sd_px=1e-4)
    shifted.theta_samples[:, fit.layout.setting_columns(0)[1]] += 0.5
    for det in (2, 3):
        _, o0, r0, _ = trace_table_rows(fit, 0, det)
        _, o1, _, _ = trace_table_rows(shifted, 0, det)
        c = np.linspace(r0[:, 0].max(), r0[:, 1].min() - 1, 50)
        d = np.array([np.polyval(b, c) - np.polyval(a, c) for a, b in zip(o0, o1)])
        assert np.abs(d - 0.5).max() < 1e-6


def test_spot_widths_of_gaussian_spots():
    rows, cols = np.mgrid[0:64, 0:64]
    img = np.zeros((64, 64))
    centres = [(20.3, 30.6), (40.0, 12.25)]
    for c0, r0 in centres:
        img += 1e5 * np.exp(-0.5 * ((cols - c0) / 1.5) ** 2 - 0.5 * ((rows - r0) / 0.9) ** 2)
    fw = spot_widths(img, np.ones_like(img, bool), [c for c, _ in centres], [r for _, r in centres],
                     half_cols=6, half_rows=8, row_sigma=2.0)
    # columns: a flat box of +-6 px cuts the Gaussian's wings a little
    assert fw[:, 0] == pytest.approx(2.3548 * 1.5, rel=0.03)
    assert fw[:, 1] == pytest.approx(2.3548 * 0.9, rel=1e-3)
    assert np.isnan(spot_widths(img, np.ones_like(img, bool), [np.nan], [3.0])).all()


def test_report_page_states_the_requirement_and_the_qc(written, tmp_path):
    fit, out, paths, qc = written
    files = write_lms_report(fit, out, RESIDUALS, qc, paths)
    html = files["report.html"].read_text()
    assert 'id="requirements"' in html and "1/10" in html and "QC IFU DISTORT RMS" in html
    assert 'data-figure="lms_maps_4p730"' in html and 'data-figure="lms_residuals"' in html
    rep = json.loads(files["report.json"].read_text())
    req = {r["id"]: r for r in rep["requirements"]}
    # the hand-made draws scatter every parameter by 0.01 px: the position sigma is of that order
    for r in req.values():
        assert 0.005 < r["value"] < 0.1 and r["status"] == "pass"
    assert rep["qc"]["nspots"] == 3
    spots6 = [e for e in rep["residuals"] if e["kind"] == "spots" and e["slice"] == 6]
    assert sorted(e["line_um"] for e in spots6) == [4.70, 4.74]
    with pytest.raises(ProductExistsError):
        write_lms_report(fit, out, RESIDUALS, qc, paths)
    loose = hand_fit(sd_px=0.2)
    rep2 = write_lms_report(loose, tmp_path, RESIDUALS, qc, {})
    assert {r["status"] for r in json.loads(rep2["report.json"].read_text())["requirements"]} == {"fail"}


def _pipeline_placeholder():
    import csv
    from pathlib import Path

    path = Path(__file__).parents[1] / "data" / "lms" / "ifu_distortion_table_dummy_b75e7fa.csv"
    rows = list(csv.DictReader(line for line in path.read_text().splitlines() if not line.startswith("#")))
    out = {}
    for r in rows:
        out.setdefault(int(r["extname"][3:]), []).append(
            (int(r["slice_inferred"]), [float(r[f"orders_{k}"]) for k in range(5)],
             [float(r["column_range_0"]), float(r["column_range_1"])]))
    return out


def test_optical_model_table_matches_the_pipelines_own_placeholder(tmp_path):
    """The pipeline's IFU_DISTORTION_TABLE (its fixed numbers, which follow the optical model at
    3.555 um through AI/BI): astrocal's table of the optical model at that setting, written and read
    back, has the same chips and row order and agrees to ~0.3 px (max 0.75 px measured)."""
    lay = DeviationLayout((echelle_setting(3.555),))
    theta = np.zeros((3, lay.n_params))
    theta[1] += 1e-9
    fit = LmsFit(lay, "inverse", ExposureTerms.build([]), theta, None, np.zeros((3, 1)), np.zeros(1), ("log_tau_px",),
                 None, None, None, None, LmsFitSettings())
    from astrocal.lms.products import write_ifu_distortion_table

    path = write_ifu_distortion_table(fit, 0, tmp_path / "t.fits", lms_qc(RESIDUALS))
    ref = _pipeline_placeholder()
    diffs = []
    with fits.open(path) as hdul:
        assert hdul[0].header["HIERARCH ASTROCAL QC CONVERGED"] == "unknown"
        for det in (1, 2, 3, 4):
            t = hdul[f"DET{det}"].data
            first = hdul[f"DET{det}"].header["SLICE1"]
            assert [s for s, _, _ in ref[det]] == list(range(first - 1, first + 13))   # 0-based in the CSV
            for k, (_, orders, (a, b)) in enumerate(ref[det]):
                lo, hi = max(a, t["column_range"][k][0]), min(b, t["column_range"][k][1])
                c = np.arange(lo, hi)
                assert len(c) > 1900
                diffs.append(np.polyval(t["orders"][k], c) - np.polyval(orders, c))
    d = np.concatenate(diffs)
    assert abs(d.mean()) < 0.5 and np.abs(d).max() < 1.0        # measured: +0.27 +- 0.14 px, max 0.75 px


def test_astrocal_report_on_a_hand_written_lms_result(written, tmp_path, capsys):
    """A complete LMS result directory written by hand (draws, lms_fit.json, residuals, the
    products, manifest): ``astrocal report`` gives it the LMS page, QC from the product header."""
    import shutil

    from astrocal.cli import main
    from astrocal.resultset import write_manifest

    fit, out, paths, qc = written
    d = tmp_path / "lms"
    d.mkdir()
    names = list(fit.layout.names)
    fits.HDUList([fits.PrimaryHDU(fit.theta_samples), fits.BinTableHDU(Table({"name": names}), name="NAMES"),
                  fits.ImageHDU(fit.phi_samples, name="PHI"),
                  fits.BinTableHDU(Table({"name": list(fit.hyper_names)}), name="PHI_NAMES")]).writeto(d / "lms_draws.fits")
    with fits.open(d / "lms_draws.fits", mode="update") as h:
        h[0].header["EXTNAME"] = "THETA"
    info = {"kind": "lms", "truth_direction": "forward",
            "layout": {"settings": [{"lam_c_um": 4.73}], "degree": 2, "reference_detector": 1},
            "exposure_terms": {"stems": [], "names": []},
            "hyperparameters": {n: {"map": 1.0} for n in fit.hyper_names},
            "fixed_prior_widths": {}, "offset_sigma_mas": 1.0, "across_px_per_mas": 0.05,
            "diagnostics": {"tau": [20.0, 15.0], "acceptance": 0.4, "n_steps": 2000, "n_burn": 200,
                            "n_effective": [800.0, 900.0], "converged": True, "warnings": []}}
    (d / "lms_fit.json").write_text(json.dumps(info))
    RESIDUALS.write(d / "lms_residuals.ecsv", format="ascii.ecsv")
    (d / "posterior.h5").write_bytes(b"chain")                # a fit's marker; the page does not read it
    for p in paths.values():
        shutil.copy(p, d / p.name)
    files = ["posterior.h5", "lms_draws.fits", "lms_fit.json", "lms_residuals.ecsv"] + [p.name for p in paths.values()]
    assert main(["report", str(d)]) == 1                      # not complete: no manifest
    assert "not a complete fit result" in capsys.readouterr().err
    write_manifest(d, files, {"kind": "lms"})
    assert main(["report", str(d)]) == 0
    printed = capsys.readouterr().out
    assert "DRLD-IFU-DISTORT-COL pass" in printed and "QC IFU DISTORT RMS" in printed
    rep = json.loads((d / "report" / "report.json").read_text())
    assert rep["qc"]["nspots"] == 3 and rep["qc"]["fwhm_px"] == pytest.approx(2.5)
    assert rep["convergence"]["converged"] is True
    assert main(["report", str(d)]) == 1                      # the page exists: not overwritten
    assert main(["report", str(d), "--overwrite"]) == 0
