"""`astrocal report`: numbers against independent computations and known injected changes,
requirements, the command line, and the page rendered in headless Chromium."""
import json
import re

import numpy as np
import pytest

from astrocal.cli import main
from astrocal.field import design_matrix
from astrocal.products.result_files import load_posterior
from astrocal.products import posterior_solution
from astrocal.report.build import build_report, load_result
from astrocal.report.requirements import (
    METRICS, RequirementsError, evaluate, load_requirements,
)


def reseal(out):
    """Seal a result set edited by the test as complete (its manifest, rewritten)."""
    from astrocal.resultset import read_manifest, write_manifest

    write_manifest(out, list(read_manifest(out)["files"]))


def test_map_accuracy_is_the_spread_of_the_draws(fitted_result, report):
    _, rep = report
    post = load_posterior(fitted_result)
    sol = posterior_solution(post, "Lp")
    m, b, nt = sol.linear_matrix, sol.boresight, post.nt
    xs = np.linspace(0, 2047, 65)
    yy, xx = np.meshgrid(xs, xs, indexing="ij")
    x, y = xx.ravel(), yy.ravel()
    sig = np.empty(x.size)
    bb = design_matrix([b[0]], [b[1]], post.degree, post.domain)[0]
    for lo in range(0, x.size, 500):  # straight from the draws, point by point
        B = design_matrix(x[lo:lo + 500], y[lo:lo + 500], post.degree, post.domain) - bb
        du, dv = post.g[:, :nt] @ B.T, post.g[:, nt:2 * nt] @ B.T
        lx, ly = m[0, 0] * du + m[0, 1] * dv, m[1, 0] * du + m[1, 1] * dv
        sig[lo:lo + 500] = np.hypot(lx.std(axis=0, ddof=1), ly.std(axis=0, ddof=1))
    # plus the unresolved field (the smallest jitter per draw), white, through M
    jit = np.exp(post.phi[:, [k for k, n in enumerate(post.hyper_names) if n.startswith("log_jitter[")]].min(1))
    sig = np.sqrt(sig**2 + np.mean(jit**2) * np.sum(m**2))
    ma = rep["map_accuracy"]
    assert ma["max_px"] == pytest.approx(sig.max(), rel=1e-9)
    assert ma["rms_px"] == pytest.approx(np.sqrt(np.mean(sig**2)), rel=1e-9)
    assert ma["max_mas"] == pytest.approx(sig.max() * sol.plate_scale * 1e3, rel=1e-9)
    assert rep["metrics"]["map_sigma_max_mas"] == ma["max_mas"]
    # inside the data footprint (the hull of the positions used): the same, over fewer positions
    inside = post.inside_footprint(x, y)
    ins = ma["inside_footprint"]
    assert 0 < ins["n_positions"] == inside.sum() < x.size
    assert ins["max_px"] == pytest.approx(sig[inside].max(), rel=1e-9)
    assert ins["rms_px"] == pytest.approx(np.sqrt(np.mean(sig[inside] ** 2)), rel=1e-9)
    vx, vy = post.footprint.T  # shoelace area of the recorded hull
    area = 0.5 * abs(np.dot(vx, np.roll(vy, -1)) - np.dot(vy, np.roll(vx, -1)))
    assert ma["extrapolated_fraction"] == pytest.approx(1 - area / 2048**2, rel=1e-9)
    ps = post.pixel_scale_samples() * 1e3
    assert rep["pixel_scale"]["mean_mas"] == pytest.approx(ps.mean())
    assert rep["pixel_scale"]["mean_mas"] == pytest.approx(5.47, rel=2e-3)


def test_stability_finds_the_injected_changes(fitted_result, report, injected):
    _, rep = report
    SCALE_CHANGE, KICK_ARCSEC = injected["scale"], injected["kick_arcsec"]
    st = rep["stability"]
    assert st["scale_change_rel"] == pytest.approx(SCALE_CHANGE, rel=1e-9)
    # the kick on cu[2,0] changes the offsets by (1 + eps) k (P2(t) - P2(0)) / s pixels,
    # largest at the grid's edge column (t = -1023.5 / 1024)
    s = posterior_solution(load_posterior(fitted_result), "Lp").plate_scale
    t = -1023.5 / 1024.0
    expect = (1 + SCALE_CHANGE) * KICK_ARCSEC * ((3 * t**2 - 1) / 2 + 0.5) / s
    assert st["distortion_change_max_px"] == pytest.approx(expect, rel=1e-6)
    half_diag = 0.5 * np.hypot(2048, 2048)
    assert st["distortion_change_rel"] == pytest.approx(expect / half_diag, rel=1e-6)
    old_mas = st["pixel_scale_mas"]["old"]
    assert st["plate_scale_change_edge_mas"] == pytest.approx(SCALE_CHANGE * half_diag * old_mas, rel=1e-9)
    assert st["scale_change_rel_sd"] > 0 and st["distortion_change_sd_px"] > 0


def test_requirements_pass_and_fail(report):
    _, rep = report
    rows = {r["id"]: r for r in rep["requirements"]}
    assert list(rows) == [r.id for r in load_requirements()]
    # 4e-4 in scale and ~3.8e-4 in distortion: within 1e-3, not within the 1e-4 goal
    for rid in ("METIS-9920 scale LM", "METIS-9920 distortion LM"):
        assert rows[rid]["status"] == "pass" and rows[rid]["goal_met"] is False
    # 4e-4 x 1448 px x 5.47 mas = 3.2 mas > 2.3 mas
    assert rows["OPS plate-scale stability"]["status"] == "fail"
    assert rows["OPS plate-scale stability"]["value"] == pytest.approx(3.17, abs=0.02)
    for rid in ("METIS-9920 scale N", "METIS-9920 distortion N"):
        assert rows[rid]["status"] == "not applicable" and "band N" in rows[rid]["reason"]
    r = rows["METIS-3502"]
    assert r["status"] == ("pass" if r["value"] < 0.5 else "fail")
    assert r["value"] == rep["map_accuracy"]["max_mas"]
    assert rep["band"] == "LM" and rep["instrument"] == "METIS IMG_LM"


def test_numbers_residuals_outliers_and_files(report, fitted_result):
    out, rep = report
    (ds,) = rep["residuals"]
    assert ds["dataset"] == "lab0" and ds["kind"] == "lab"
    assert ds["n_points"] == ds["n_used"] + ds["n_outliers"]
    assert 0 < ds["rms_px"] < 0.1 and ds["rms_mas"] == pytest.approx(5.47 * ds["rms_px"], rel=0.02)
    info = json.loads((fitted_result / "fit.json").read_text())
    assert rep["outliers"]["n"] == info["outliers"]["n"] == ds["n_outliers"] > 0
    assert {p["point_id"] for p in rep["outliers"]["points"]} == set(info["outliers"]["point_ids"])
    # the degree asked for, with and without the residual field ([fit] residual = "auto")
    assert [(e["degree"], e["residual"]) for e in rep["evidence"]] == [(3, False), (3, True)]
    assert max(e["delta_log_evidence"] for e in rep["evidence"]) == 0
    assert sum(e["probability"] for e in rep["evidence"]) == pytest.approx(1.0)
    assert rep["degree_rule"] == "degree asked for"
    kept = max(rep["evidence"], key=lambda e: e["log_evidence"])["residual"]
    assert rep["field_model"]["residual"] == kept and rep["field_model"]["residual_tried"]
    assert rep["field_model"]["unresolved_px"] > 0
    if kept:  # one correlation length per detector axis (Priors.residual_lengths = "per_axis")
        res = info["residual_field"]
        assert rep["field_model"]["residual_lengths_px"] == [res["length_x_px_median"], res["length_y_px_median"]]
        assert res["length_px_median"] == pytest.approx(np.sqrt(res["length_x_px_median"] * res["length_y_px_median"]))
        assert "px along y" in (out / "report.html").read_text()
    # how far the mask offsets separate field structure from the hole errors
    sep = info["dither_separation"]
    assert rep["field_model"]["dither_half_period_px"] == sep["half_period_px"]
    assert 0.5 * sep["offset_span_px"] < sep["half_period_px"] < 20 * sep["offset_span_px"]
    beyond = np.array(sep["periods_px"]) > sep["half_period_px"]
    assert beyond.any() and np.all(np.array(sep["separable_fraction"])[beyond] < 0.5)
    html = (out / "report.html").read_text()
    assert 'id="dither-separation"' in html and f"{sep['half_period_px']:.0f} px" in html
    assert rep["convergence"]["tau"] == info["diagnostics"]["tau"]
    assert len(rep["campaign_sha256"]) == 64 and rep["inputs"][0].endswith("campaign.toml")
    figures = {f["name"]: f for f in rep["figures"]}
    for name in ("distortion_map", "nonlinear_map", "uncertainty_map", "pixel_scale_map",
                 "residuals_lab0", "corner_hyperparameters", "corner_poses", "chains", "difference_map"):
        assert (out / figures[name]["png"]).stat().st_size > 1000, name
        assert (out / figures[name]["pdf"]).read_bytes()[:5] == b"%PDF-", name
    assert "only lab" in figures["lab_vs_sky"]["skipped"]


def test_result_without_a_footprint(fitted_result, tmp_path):
    # a result written before footprints were recorded: the report leaves the parts out
    import shutil

    from astrocal.cli.report import _footprint_text
    from astrocal.report.html import render

    old = tmp_path / "Lp"
    shutil.copytree(fitted_result, old, ignore=shutil.ignore_patterns("report"))
    info = json.loads((old / "fit.json").read_text())
    del info["footprint"]
    (old / "fit.json").write_text(json.dumps(info))
    reseal(old)  # the edited set is taken as complete
    rep = build_report(load_result(old))
    ma = rep["map_accuracy"]
    assert "inside_footprint" not in ma and "extrapolated_fraction" not in ma
    assert ma["max_px"] > 0 and _footprint_text(ma) == ""
    assert 'id="footprint"' not in render(rep, [])
    with pytest.raises(ValueError, match="no data footprint"):
        load_posterior(old).inside_footprint([0.0], [0.0])


def test_report_without_earlier_result(fitted_result):
    rep = build_report(load_result(fitted_result))
    assert rep["stability"] is None
    rows = {r["id"]: r for r in rep["requirements"]}
    for rid in ("METIS-9920 scale LM", "METIS-9920 distortion LM", "OPS plate-scale stability"):
        assert rows[rid]["status"] == "not evaluated" and "--against" in rows[rid]["reason"]
    assert rows["METIS-3502"]["status"] in ("pass", "fail")


def test_report_refuses_to_overwrite(report, fitted_result, older_result, capsys):
    out, _ = report
    before = (out / "report.html").read_bytes()
    assert main(["report", str(fitted_result), "--out", str(out)]) == 1
    assert "not overwritten" in capsys.readouterr().err
    assert (out / "report.html").read_bytes() == before


def test_requirements_file(tmp_path, fitted_result):
    path = tmp_path / "req.toml"
    path.write_text('[[requirement]]\nid = "tight"\nmetric = "map_sigma_max_mas"\nmax = 1e-6\n'
                    '[[requirement]]\nid = "loose"\nmetric = "residual_rms_px"\nmax = 1.0\ngoal = 0.5\n')
    reqs = load_requirements(path)
    rep = build_report(load_result(fitted_result), requirements=reqs)
    assert [(r["id"], r["status"], r["goal_met"]) for r in rep["requirements"]] == [
        ("tight", "fail", None), ("loose", "pass", True)]
    for text, message in (
        ('[[requirement]]\nid = "a"\nmetric = "nonsense"\nmax = 1\n', "unknown metric 'nonsense'"),
        ('[[requirement]]\nid = "a"\nmetric = "map_sigma_max_mas"\n', "missing key 'max'"),
        ('[[requirement]]\nid = "a"\nmetric = "map_sigma_max_mas"\nmax = -1\n', "'max' must be a positive"),
        ('[[requirement]]\nid = "a"\nmetric = "map_sigma_max_mas"\nmax = 1\nbands = ["K"]\n', "unknown band"),
        ('[[requirement]]\nid = "a"\nmetric = "map_sigma_max_mas"\nmax = 1\ncolour = 2\n', "unknown key"),
        ("requirement = 3\n", "no [[requirement]]"),
        ("[[requirement\n", "not valid TOML"),
    ):
        path.write_text(text)
        with pytest.raises(RequirementsError, match=re.escape(message)) as exc:
            load_requirements(path)
        assert str(path) in str(exc.value)
    with pytest.raises(FileNotFoundError, match="no such requirements file"):
        load_requirements(tmp_path / "missing.toml")


def test_shipped_requirements_and_the_rule():
    reqs = load_requirements()
    assert {r.metric for r in reqs} <= set(METRICS)
    assert {r.id for r in reqs} >= {"METIS-3502", "METIS-9920 scale LM", "METIS-9920 distortion N"}
    r = [x for x in reqs if x.id == "METIS-3502"]
    assert evaluate(r, {"map_sigma_max_mas": 0.4999})[0]["status"] == "pass"
    assert evaluate(r, {"map_sigma_max_mas": 0.5})[0]["status"] == "fail"
    scale = [x for x in reqs if x.id == "METIS-9920 scale LM"]
    row = evaluate(scale, {"scale_change_rel": -5e-5}, band="LM", sds={"scale_change_rel": 1e-4})[0]
    assert row["status"] == "pass" and row["goal_met"] is True
    assert row["margin_sigma"] == pytest.approx((1e-3 - 5e-5) / 1e-4)
    assert evaluate(scale, {"scale_change_rel": 2e-3}, band="LM")[0]["status"] == "fail"
    assert evaluate(scale, {"scale_change_rel": 2e-3}, band=None)[0]["status"] == "not applicable"


def test_page_in_headless_chromium(report, browser):
    out, rep = report
    browser.get((out / "report.html").resolve().as_uri())
    images = browser.find_elements("tag name", "img")
    drawn = [f for f in rep["figures"] if "png" in f]
    assert len(images) == len(drawn) >= 9
    browser.set_script_timeout(30)
    # wait until every image has decoded, then read its natural width
    widths = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "Promise.all(Array.from(document.images).map(i => i.decode().catch(() => null)))"
        ".then(() => done(Array.from(document.images).map(i => [i.complete, i.naturalWidth])));")
    assert all(complete and width > 0 for complete, width in widths), widths
    table = browser.find_element("id", "requirements")
    rows = table.find_elements("css selector", "tbody tr")
    assert len(rows) == len(load_requirements())
    statuses = [r.find_element("css selector", "td.status").text for r in rows]
    assert statuses == [r["status"] for r in rep["requirements"]]
    assert "fail" in statuses and "pass" in statuses
    # the footprint: how much of the detector the data cover, the map's 1-sigma inside it
    fp = browser.find_element("id", "footprint").text
    assert f"{100 * (1 - rep['map_accuracy']['extrapolated_fraction']):.1f} % of the detector" in fp
    assert f"{rep['map_accuracy']['inside_footprint']['max_mas']:.4g} mas at most" in fp
    # the page names the skipped figure and why
    skipped = browser.find_element("css selector", '[data-figure="lab_vs_sky"]')
    assert "only lab" in skipped.text


def test_datasets_and_kinds_come_from_the_result(fitted_result):
    """A result with a sky dataset (names and kinds from its residual table) is reported
    per dataset without anything named in advance."""
    result = load_result(fitted_result)
    t = result.residuals.copy()
    sky = np.arange(len(t)) % 2 == 1
    t["dataset"] = np.where(sky, "gc_2026", "lab0")
    t["kind"] = np.where(sky, "sky", "lab")
    result.residuals = t
    rep = build_report(result)
    rows = {d["dataset"]: d for d in rep["residuals"]}
    assert set(rows) == {"lab0", "gc_2026"}
    assert rows["gc_2026"]["kind"] == "sky" and rows["lab0"]["kind"] == "lab"
    assert rows["gc_2026"]["n_points"] + rows["lab0"]["n_points"] == len(t)
    assert rows["gc_2026"]["n_outliers"] == int(np.sum(np.asarray(t["outlier"]) & sky))
